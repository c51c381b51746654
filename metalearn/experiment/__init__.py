"""Experiments: the config, speaker folds, the grid, the runner and its stages, GEmo-CLAP's
leave-one-session-out protocol.
"""
