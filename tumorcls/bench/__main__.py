"""``python -m tumorcls.bench``: the training/evaluation throughput benchmark."""

import sys

from tumorcls.bench.train_eval import main

if __name__ == "__main__":
    sys.exit(main())
