"""GEmo-CLAP: the contrastive loss, the audio and text towers, training, heads on cached features,
CLAP pretune variants.
"""
