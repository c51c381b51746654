"""Fixtures and helpers shared by several test modules: the tiny synthetic corpora (:func:`tiny_corpora`), the
tiny-run overrides every run test builds its config from (:func:`overrides`) and the kill-and-resume check of the
runners (:func:`kill_and_resume`)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from metalearn.data.synth.generate import generate

_TINY: list[Path] = []  # the session's one generated copy of the tiny corpora


def tiny_corpora(dest: Path) -> Path:
    """The tiny synthetic corpora (preset "tiny", seed 0) in ``dest``, as ``generate("tiny", dest, seed=0)`` writes
    them: generated once per test session (about 8 s), copied after (the synthesiser is byte-identical for a seed
    whatever runs it: tests/test_synth.py); files already in ``dest`` are overwritten with the same bytes."""
    if not _TINY:
        source = Path(tempfile.mkdtemp(prefix="metalearn-tiny-"))
        atexit.register(shutil.rmtree, source, True)
        generate("tiny", source, seed=0)
        _TINY.append(source)
    shutil.copytree(_TINY[0], dest, dirs_exist_ok=True)
    return dest


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add synchronisation (100x slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Small sizes for the algorithms of a tiny few-shot run (finetune and texthead take ``steps``).
SMALL = {"fomaml": ("hidden=[8]",), "protonet_proj": ("proj_dim=8",), "transfer": ("hidden=[8]",)}
STEPPED = ("finetune", "texthead")  # fine-tuned for ``steps`` full-batch steps per episode
CLAP = ("pretune.clap.losses=[emo,sl]", "pretune.clap.model.text_source=tiny", "pretune.clap.model.embed_dim=8",
        "pretune.clap.heads.steps=20", "pretune.clap.heads.eval_every=10", "pretune.clap.heads.batch_size=8")


def overrides(base: Path, out: str | Path, *extra: str, kind: str = "fewshot", algorithms: Sequence[str] = (),
              steps: int = 10, ks: Sequence[int] = (1, 2), repetitions: int = 2, folds: int = 2,
              validation: int = 1, seeds: Sequence[int] = (0,), meta_train: bool = True, chunk: int | None = None,
              trials: int | None = None, clap: bool = False, target: Path | None = None) -> list[str]:
    """The ``key=value`` overrides of a tiny run in ``base / out`` (an absolute ``out`` is used as it is), then
    ``extra`` (later keys win).

    ``kind="fewshot"``: the tiny random Whisper on the synthetic corpus ``base/data/esd`` (``generate("tiny")``;
    or the corpus at ``target``), one untouched variant, manifests, caches and pre-finetuned variants under
    ``base``; ``ks`` x ``repetitions`` episodes per speaker, ``folds`` folds with ``validation`` validation
    speakers each, ``seeds``; 3 meta-training steps of 1 query (``meta_train``); ``algorithms`` at small sizes
    (:data:`SMALL`; finetune and texthead for ``steps`` steps); ``chunk`` episodes per batch (None: the default);
    ``trials`` Optuna trials per tuned method over meta steps 2 and 4 (None: tune left at its defaults); ``clap``:
    CLAP variants (emo, sl) trained on the synthetic IEMOCAP and MSP-Podcast with the tiny text tower.

    ``kind="loso"``: the tiny Whisper and text tower on an IEMOCAP tree at ``target`` (default
    ``base/iemocap``), on the CPU, heads trained for 20 steps; ``seeds``. The other arguments do not apply.
    """
    common = [f"out={base / out}", f"data.manifests_dir={base / 'manifests'}"]
    if kind == "loso":
        return [*common, f"data.target.root={target or base / 'iemocap'}", "backbone.family=whisper",
                "backbone.source=tiny", f"embeddings.cache_dir={base / 'cache'}", "embeddings.device=cpu",
                "device=cpu", "model.text_source=tiny", "model.embed_dim=8", "heads.steps=20", "heads.eval_every=10",
                "heads.batch_size=8", "heads.lr=0.01", f"seeds={list(seeds)}".replace(" ", ""),
                "tracking.wandb=false", *extra]
    if kind != "fewshot":
        raise ValueError(f"kind {kind!r}: expected fewshot or loso")
    items = [*common, f"data.target.root={target or base / 'data/esd'}"]
    if clap:
        items += [f"data.sources.iemocap={{corpus: iemocap, root: {base / 'data/iemocap'}}}",
                  f"data.sources.msp_podcast={{corpus: msp_podcast, root: {base / 'data/msp_podcast'}}}"]
    items += ["backbone.source=tiny", "backbone.family=whisper", f"pretune.out={base / 'pretune'}",
              "pretune.subsets=[none]", *(CLAP if clap else ()), f"embeddings.cache_dir={base / 'cache'}",
              f"episodes.ks={list(ks)}".replace(" ", ""), f"episodes.repetitions={repetitions}",
              f"speakers.folds={folds}", f"speakers.validation={validation}",
              f"seeds={list(seeds)}".replace(" ", "")]
    if meta_train:
        items += ["meta_train.steps=3", "meta_train.queries=1"]
    if algorithms:
        items.append(f"algorithms.run=[{','.join(algorithms)}]")
    for name in algorithms:
        items += [f"algorithms.{name}.steps={steps}"] if name in STEPPED else []
        items += [f"algorithms.{name}.{setting}" for setting in SMALL.get(name, ())]
    if trials is not None:
        items += ["tune.meta_steps=[2,4]", f"tune.trials={trials}"]
    items.append("tracking.wandb=false")
    if chunk is not None:
        items.append(f"chunk={chunk}")
    return [*items, *extra]


@dataclass
class Resumed:
    """What :func:`kill_and_resume` saw: each call that went through before the kill (its argument), the log's
    lines after the kill, what the rerun returned, and the log's lines after it."""

    calls: list[Any]
    kept: list[str]
    resumed: Any
    lines: list[str]


def kill_and_resume(run: Callable[[], Any], log: Path, writer: type, method: str, calls_before_kill: int,
                    monkeypatch: pytest.MonkeyPatch) -> Resumed:
    """Run ``run()`` until it is killed between two writes: ``writer.method`` (the log's append or extend) raises
    ``KeyboardInterrupt`` on its call after ``calls_before_kill`` ones went through. Then kill it again in the
    middle of a write (a torn half of the first line at the end of ``log``) and run ``run()`` once more."""
    real, calls = getattr(writer, method), []

    def dying(self, arg):
        if len(calls) == calls_before_kill:
            raise KeyboardInterrupt  # killed between two writes
        calls.append(arg)
        real(self, arg)

    monkeypatch.setattr(writer, method, dying)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(writer, method, real)
    kept = log.read_text().splitlines()
    with open(log, "a") as f:  # ... and killed again in the middle of a write: a torn last line
        f.write(kept[0][: len(kept[0]) // 2])
    resumed = run()
    return Resumed(calls, kept, resumed, log.read_text().splitlines())
