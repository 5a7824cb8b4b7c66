"""Analyses of data and twins: criteria, psychometrics, evaluation, Δw maps, forecasts, predictions."""
