"""``python -m tumorcls.bench``: the training/evaluation throughput benchmark."""

import sys

from tumorcls.openmp_policy import prefer_passive_openmp_wait
from tumorcls.update_checks import skip_update_checks

if __name__ == "__main__":
    # before torch loads OpenMP (why: tumorcls.openmp_policy); here, not when a benchmark module is imported,
    # so that importing one changes no process-wide state
    prefer_passive_openmp_wait()
    skip_update_checks()
    from tumorcls.bench.train_eval import main

    sys.exit(main())
