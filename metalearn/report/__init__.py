"""Append-only trial records, summaries and tables, plots, and the W&B mirror."""
