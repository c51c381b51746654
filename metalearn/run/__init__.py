"""The few-shot grid: its config, three-way speaker folds, planning, the feature choice, scoring, reuse, the run."""
