"""Speech backbones, the cached per-layer embeddings, the shared trunk, and featurize (layer choice,
standardisation).
"""
