"""Tuning: every method gets the same Optuna budget per fold, scored on that fold's validation speakers only."""
