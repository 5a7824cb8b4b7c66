"""Fitting: the population rule (truncated BPTT, Adam, L-BFGS), per-animal adaptation, cohorts."""
