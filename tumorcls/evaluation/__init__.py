"""Evaluation: metrics, calibration, reports, figures, the one artifact writer and the standalone ``evaluate``
loop."""

from tumorcls.evaluation.artifacts import write_artifacts
from tumorcls.evaluation.calibration import calibrate_checkpoint, expected_calibration_error, fit_temperature
from tumorcls.evaluation.evaluate import evaluate_dataset
from tumorcls.evaluation.reports import classification_report, summary_metrics

__all__ = [
    "calibrate_checkpoint",
    "classification_report",
    "evaluate_dataset",
    "expected_calibration_error",
    "fit_temperature",
    "summary_metrics",
    "write_artifacts",
]
