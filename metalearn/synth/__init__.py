"""The embedded default: synthetic multi-speaker emotional speech corpora, generated offline.

``generate(preset, out, seed)`` writes an ESD-layout target corpus and four source corpora in the
layouts of IEMOCAP, MSP-Podcast, CREMA-D and RAVDESS, read back by the real loaders.
"""

from metalearn.synth.generate import generate

__all__ = ["generate"]
