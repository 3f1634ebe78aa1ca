"""training.device."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
from torch import nn

from shrinklab.models.network import SyncableBatchNorm1d

__all__ = [
    "autocast",
    "resolve_amp_dtype",
    "resolve_device",
]


def resolve_device(spec: str, local_rank: int) -> torch.device:
    """The device of ``TrainConfig.device`` (``"auto"``: CUDA if available); a bare
    ``"cuda"`` means this process's ``local_rank`` GPU. ValueError if CUDA is asked
    for but absent."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
    return dev


def resolve_amp_dtype(amp: str | None, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``TrainConfig.amp`` on ``device``: ``None`` on CPU or without
    amp; ``"auto"`` is bf16 where supported, else fp16."""
    if amp is None or device.type != "cuda":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def dist_setup(device_type: str) -> tuple[int, int, bool]:
    """(rank, world_size, owns_group): join torchrun's group when WORLD_SIZE > 1."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        return dist.get_rank(), dist.get_world_size(), True
    return 0, 1, False


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` to ``dtype`` on ``device``, or a no-op context for ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_bn_sync(module: nn.Module, on: bool) -> None:
    for m in module.modules():
        if isinstance(m, SyncableBatchNorm1d):
            m.sync = on
