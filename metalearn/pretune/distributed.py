"""torch.distributed in one place: start from torchrun's variables, who am I, sum counts, agree on values.

Every helper works unchanged without a process group (one process: world 1, rank 0).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.distributed as dist

from metalearn.util.devices import resolve_device


def world() -> tuple[int, int]:
    """(world_size, rank) of the current process group, (1, 0) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def is_main() -> bool:
    """True on rank 0 (the only rank that writes files)."""
    return world()[1] == 0


def init_from_env(device_spec: str = "auto") -> torch.device:
    """The device of this process; initialise the process group when torchrun set WORLD_SIZE > 1.

    Backend nccl on CUDA (one GPU per rank: cuda:LOCAL_RANK), gloo on CPU.
    """
    device = resolve_device(device_spec)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return device


def shutdown() -> None:
    """Destroy the process group if this process has one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: Sequence[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64); identity on one process."""
    if world()[0] == 1:
        return [float(v) for v in values]
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def from_main(value: object) -> object:
    """Rank 0's ``value`` on every rank (a picklable object)."""
    if world()[0] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank (no-op on one process)."""
    if world()[0] > 1:
        dist.barrier()
