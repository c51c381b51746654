"""Supervised multi-corpus pre-finetuning (Paper A's "PFT"): one backbone, one linear head per corpus.

- :mod:`config`: the recipe (:class:`PretuneConfig`) and its presets;
- :mod:`data`: per-corpus train/dev/test splits and label sets, audio batches;
- :mod:`grouping`: speaker-independent splits (IEMOCAP by session, others by speaker), sentence-disjoint train;
- :mod:`sampler`: :class:`ProportionalCorpusSampler` (one corpus per batch, DDP-aware);
- :mod:`model`: :class:`MultiHeadClassifier` (a state or a learned mix, truncated forward, cached frozen trunk),
  the scaled loss, layer freezing;
- :mod:`schedule`: linear warmup/decay and early stopping (Hugging Face Trainer semantics);
- :mod:`evaluate`: accuracy per corpus, sharded over DDP ranks;
- :mod:`distributed`: process group from torchrun's variables, rank helpers;
- :mod:`train`: the training loop (accumulation, best-state restore, DDP);
- :mod:`subsets`: every subset of the source corpora as a saved checkpoint (:func:`~subsets.ensure_variants`);
- :mod:`fit`: one variant trained beside its frozen probe; :mod:`probe`: the probe (logistic regression);
- :mod:`records`: each variant's record, a run's ``pretune.json`` / ``pretune.md``;
- :mod:`fingerprint`: what made a variant; a finished folder is reused only on a match;
- :mod:`cli`: ``python -m metalearn pretune``.
"""
