"""Plain fine-tuning's hyperparameters (:mod:`.finetune`) and its tuning space.

Apart from the fitting code so that :mod:`.finetune_fast` (which :mod:`.finetune` calls) can read them without
an import circle; ``finetune`` re-exports every name here, and the registry looks them up there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from metalearn.util.errors import MetalearnError
from metalearn.util.ranges import Rule, check_fields

STANDARDIZE = ("none", "global", "per_dim")
HEADS = ("linear", "mlp")
KERNELS = ("torch", "numba")


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 100  # full-batch Adam steps per episode
    lr: float = 1e-2
    weight_decay: float = 0.0  # L2 added to the gradient, as torch.optim.Adam(weight_decay=...)
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    init_std: float = 0.0  # 0: zero head; > 0: weights ~ N(0, init_std^2) from the method's seed
    standardize: str = "global"  # none | global | per_dim (support-set statistics, see the module doc)
    eval_every: int = 10  # model-selection period in steps, used when validation data is given
    vectorized: bool = True  # False: the per-episode loop (fit_heads_loop)
    head: str = "linear"  # linear | mlp (the MLP of MAML: hidden sizes ``mlp_hidden``)
    mlp_hidden: tuple[int, ...] = (256,)  # the MLP head's hidden sizes (head=mlp only)
    kernel: str = "torch"  # torch | numba: two-class linear heads on the CPU through a compiled kernel (head_kernel.py;
                           # float32 rounding apart from torch's, so a run's records name it); other heads: torch

    # steps 0: the initial head (texthead: its prompt prior); eval_every 0: select at every step
    RANGES: ClassVar[dict[str, Rule]] = {
        "steps": ">= 0", "lr": "> 0", "weight_decay": ">= 0", "beta1": ">= 0", "beta2": ">= 0", "eps": "> 0",
        "init_std": ">= 0", "standardize": STANDARDIZE, "eval_every": ">= 0", "head": HEADS, "mlp_hidden": ">= 1",
        "kernel": KERNELS}

    def __post_init__(self) -> None:
        check_fields(self)
        if self.kernel != "torch" and not (self.vectorized and self.head == "linear"):
            raise MetalearnError(f"{type(self).__name__}: kernel {self.kernel!r} trains the vectorised linear heads: "
                                 "expected head linear and vectorized true, or kernel torch")


def is_checkpoint(step: int, cfg: FinetuneConfig) -> bool:
    """Whether model selection compares the head after ``step``: every ``eval_every``-th step and the last (every
    step when ``eval_every`` is 0). The one rule of every fine-tuning path."""
    return step % max(cfg.eval_every, 1) == 0 or step == cfg.steps


def search_space(trial: Any) -> dict:
    """Fine-tuning's tuning space (an Optuna trial -> FinetuneConfig fields); the head stays as configured."""
    return {"lr": trial.suggest_float("lr", 1e-3, 1e-1, log=True),
            "steps": trial.suggest_categorical("steps", [25, 50, 100, 200]),
            "weight_decay": trial.suggest_categorical("weight_decay", [0.0, 1e-4, 1e-3, 1e-2]),
            "standardize": trial.suggest_categorical("standardize", ["global", "per_dim"])}
