"""Evaluation: metrics, calibration, reports, figures, the one artifact writer and the standalone ``evaluate``
loop. Public names are re-exported lazily (see tumorcls.lazy_exports)."""

from tumorcls.lazy_exports import lazy_exports

_EXPORTS = {
    "write_artifacts": "artifacts",
    "evaluate_dataset": "evaluate",
    "expected_calibration_error": "calibration",
    "fit_temperature": "calibration",
    "calibrate_checkpoint": "calibration",
    "summary_metrics": "reports",
    "classification_report": "reports",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
