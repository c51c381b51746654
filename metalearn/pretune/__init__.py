"""Supervised multi-corpus pre-finetuning (Paper A's "PFT"): one backbone, one linear head per corpus.

- :mod:`config`: the recipe (:class:`PretuneConfig`) and its presets;
- :mod:`data`: per-corpus train/dev/test splits and label sets, audio batches;
- :mod:`grouping`: speaker-independent splits (IEMOCAP by session, others by speaker), sentence-disjoint train;
- :mod:`model`: :class:`MultiHeadClassifier` (a state or a learned mix, truncated forward, cached frozen trunk),
  the scaled loss, layer freezing;
- :mod:`schedule`: :class:`ProportionalCorpusSampler` (one corpus per batch, DDP-aware), linear warmup/decay and
  early stopping (Hugging Face Trainer semantics);
- :mod:`distributed`: process group from torchrun's variables, rank helpers;
- :mod:`train`: the training loop (accumulation, best-state restore, DDP), accuracy per corpus (sharded over
  ranks) and the untouched pass the probe reads;
- :mod:`subsets`: every subset of the source corpora as a saved checkpoint (:func:`~subsets.ensure_variants`);
- :mod:`fit`: one variant trained beside its frozen probe (logistic regression, pure functions);
- :mod:`records`: what made a variant (its fingerprint: reused only on a match), its accuracy record, a run's
  ``pretune.json`` / ``pretune.md``;
- :mod:`cli`: ``python -m metalearn pretune``.
"""
