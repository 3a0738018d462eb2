"""``python -m tumorcls.cli``: the ``tumorcls`` console command without its installed script."""

import sys

from tumorcls.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
