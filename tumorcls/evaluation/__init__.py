"""Evaluation: metrics, calibration, reports, figures, the one artifact writer and the standalone ``evaluate``
loop. Public names are re-exported lazily (see tumorcls.lazy_exports)."""

from tumorcls.lazy_exports import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "artifacts": ("write_artifacts",),
        "evaluate": ("evaluate_dataset",),
        "calibration": ("expected_calibration_error", "fit_temperature", "calibrate_checkpoint"),
        "reports": ("summary_metrics", "classification_report"),
    },
)
