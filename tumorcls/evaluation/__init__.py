"""Evaluation: metrics, calibration, reports, figures, and the standalone ``evaluate`` loop."""
