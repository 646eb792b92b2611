"""Evaluation: RCA metrics, predictors, reports."""
