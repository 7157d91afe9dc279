"""Evaluation: predictions, metrics, membership inference, reports."""
