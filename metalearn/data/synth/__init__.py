"""The embedded default: synthetic multi-speaker emotional speech corpora, generated offline.

:func:`metalearn.data.synth.generate.generate` writes an ESD-layout target corpus and four source
corpora in the layouts of IEMOCAP, MSP-Podcast, CREMA-D and RAVDESS, read back by the real loaders.
"""
