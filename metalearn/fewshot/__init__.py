"""Few-shot adaptation on tensors and index lists: episodes, meta-training tasks, the algorithm
registry, the trial engine.
"""
