"""``tumorcls predict`` as a subprocess whose batches each take at least ``TUMORCLS_TEST_BATCH_S`` seconds longer, so
that a test can stop it half way (SIGTERM, SIGINT) at a moment it chooses.

    python -m tests.helpers.slow_predict predict IMAGES --model m.onnx --csv --out preds.csv
"""

from __future__ import annotations

import os
import sys
import time

from tumorcls.cli.main import main
from tumorcls.inference import predict

_real_predict_batch = predict.predict_batch


def _slow_predict_batch(*args, **kwargs):
    time.sleep(float(os.environ.get("TUMORCLS_TEST_BATCH_S", "0.2")))
    return _real_predict_batch(*args, **kwargs)


if __name__ == "__main__":
    predict.predict_batch = _slow_predict_batch  # predict_batches looks it up in its module at every batch
    sys.exit(main(sys.argv[1:]))
