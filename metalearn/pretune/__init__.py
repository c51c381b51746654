"""Supervised multi-corpus pre-finetuning (Paper A's "PFT"): one backbone, one linear head per corpus.

- :mod:`config`: the recipe (:class:`PretuneConfig`) and its presets;
- :mod:`data`: per-corpus train/dev/test splits and label sets, audio batches;
- :mod:`sampler`: :class:`ProportionalCorpusSampler` (one corpus per batch, DDP-aware);
- :mod:`model`: :class:`MultiHeadClassifier`, the scaled loss, layer freezing;
- :mod:`schedule`: linear warmup/decay and early stopping (Hugging Face Trainer semantics);
- :mod:`evaluate`: accuracy per corpus, sharded over DDP ranks;
- :mod:`distributed`: process group from torchrun's variables, rank helpers;
- :mod:`train`: the training loop (accumulation, best-state restore, DDP);
- :mod:`variants`: every subset of the source corpora as a saved checkpoint;
- :mod:`cli`: ``python -m metalearn pretune``.
"""
