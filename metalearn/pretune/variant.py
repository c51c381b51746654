"""A pretune variant as a typed value: what a trial starts from, read once from its folder and passed down.

A variant folder (written by :mod:`metalearn.pretune.subsets` or :mod:`metalearn.clap.variant`) holds
``config.json`` and, once finished, ``done.json`` (with the SHA-256 of each checkpoint, checked on loading).
:class:`PretuneVariant` is the supervised kind (and the untouched backbone, ``none``); CLAP variants subclass it
(:class:`metalearn.clap.variant.ClapVariant`) and give their projected embeddings and a prompt prior. Consumers
call methods; they never re-read the folder's kind.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from metalearn.features.backbones import BackboneConfig, SpeechBackbone
from metalearn.features.featurize import select_features
from metalearn.pretune.subsets import HEADS, backbone_for_variant, load_checkpoint, verify_variant
from metalearn.util.errors import MetalearnError


@dataclass(frozen=True)
class PretuneVariant:
    """A finished pretune variant: name, folder, kind, backbone config, fine-tuned weights, training corpora."""

    name: str
    folder: Path
    kind: str                         # "none", "supervised" or "clap"
    backbone: BackboneConfig
    weights: Path | None              # the fine-tuned backbone's state dict; None: the untouched backbone
    trained_on: tuple[str, ...]       # the source corpora it was pre-finetuned on
    config: dict = field(repr=False, compare=False, default_factory=dict)  # its config.json

    has_prior = False                 # whether it gives a prompt prior (CLAP variants)

    @classmethod
    def read(cls, folder: str | Path) -> PretuneVariant:
        """The variant in ``folder`` (its ``config.json``); one line naming the folder when it is not one."""
        folder = Path(folder)
        path = folder / "config.json"
        if not path.is_file():
            raise MetalearnError(f"{folder} is not a pretune variant (no config.json)")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
            weights = config.get("weights")
            kind = config.get("kind") or ("supervised" if weights else "none")
            return cls(str(config.get("variant", folder.name)), folder, kind, BackboneConfig(**config["backbone"]),
                       folder / weights if weights else None, tuple(config.get("corpora") or ()), config)
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise MetalearnError(f"{path}: not a pretune variant config ({type(e).__name__}: {e})") from None

    @property
    def done(self) -> bool:
        return (self.folder / "done.json").is_file()

    @property
    def encoder_identity(self) -> str:
        """Variants with equal identities embed identically (e.g. "none" and frozen-encoder CLAP variants)."""
        return json.dumps({"backbone": self.config["backbone"], "weights": str(self.weights) if self.weights else None},
                          sort_keys=True)

    def verify(self) -> None:
        """Check every checkpoint its ``done.json`` records (size and SHA-256); one line naming a damaged one.

        Each file is hashed once per process, so a later :meth:`load_backbone` does not hash it again.
        """
        verify_variant(self.folder)

    def load_backbone(self) -> SpeechBackbone:
        """A fresh backbone holding the variant's weights (verified against ``done.json``), in eval mode."""
        return backbone_for_variant(self.folder)

    @property
    def head_layer(self) -> int | str | None:
        """The feature its pre-finetuning trained: the hidden state its head read, or "mix" (a learned softmax mix
        of every state); None for the untouched backbone and for variants that record none."""
        return None if self.kind == "none" else self.config.get("head_layer")

    @cached_property
    def mix(self) -> dict[str, np.ndarray]:
        """Its learned mix (``feature.*`` in ``heads.safetensors``, verified against ``done.json``): ``weights``
        [L + 1] (softmax) and the fixed per-state z-score ``shift``, ``scale`` [L + 1, D] applied before mixing."""
        if self.head_layer != "mix":
            raise MetalearnError(f"pretune variant {self.name} has no learned mix of states (its head read "
                                 f"state {self.head_layer}); use a state index as its feature")
        tensors = load_checkpoint(self.folder, HEADS)
        missing = {"feature.mix_weights", "feature.shift", "feature.scale"} - set(tensors)
        if missing:
            raise MetalearnError(f"{self.folder / HEADS}: lacks {sorted(missing)}; delete {self.folder} to retrain it")
        return {k: tensors[f"feature.{name}"].double().numpy()
                for k, name in (("weights", "mix_weights"), ("shift", "shift"), ("scale", "scale"))}

    def features(self, values: np.ndarray, layer: int | str) -> Tensor:
        """Few-shot features [N, D] from cached embeddings [N, L + 1, D]: hidden state ``layer``, "mean", or
        "mix" (each state z-scored as pre-finetuning did, then weighted by the learned mix weights: exactly the
        feature its heads read)."""
        n_states = values.shape[1]
        if layer == "mix":
            mix = self.mix
            if mix["scale"].shape != values.shape[1:]:
                raise MetalearnError(f"pretune variant {self.name}: its mix is over states {mix['scale'].shape} "
                                     f"[L + 1, D]; these embeddings are {values.shape[1:]}")
            z = (values.astype(np.float64) - mix["shift"]) / mix["scale"]
            mixed = np.einsum("s,nsd->nd", mix["weights"], z)
            return torch.from_numpy(np.ascontiguousarray(mixed, dtype=np.float32))
        if layer != "mean" and not -n_states <= int(layer) < n_states:
            raise MetalearnError(f"config key 'features.layer': {layer} is outside this backbone's "
                                 f"{n_states} hidden states (0..{n_states - 1}, or negative from the end)")
        return select_features(values, layer)

    def feature_name(self, layer: int | str, states: int) -> str:
        """What :meth:`features` reads for ``layer`` of ``states`` hidden states, as trial records name it: the
        state's index (0..states-1, a negative ``layer`` counted from the end), "mean" or "mix"."""
        return layer if layer in ("mean", "mix") else str(int(layer) % states)

    def prompt_prior(self, classes: Sequence[str]) -> dict[str, Tensor]:
        """A prompt head over :meth:`features`: weight [D, W], bias [W] (only variants with ``has_prior``)."""
        raise MetalearnError(f"pretune variant {self.name} has no prompt prior (only CLAP variants do)")
