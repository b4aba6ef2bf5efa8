"""Faust wiring: dedup, (later) sampling, and running the pure folds from ``projections``."""
