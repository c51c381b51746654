"""Leaf helpers every layer may use: errors, durable file writes, the append-only JSONL log, devices,
progress bars, metrics.
"""
