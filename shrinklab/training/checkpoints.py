"""training.checkpoints."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shrinklab.training.config import TrainConfig

__all__ = [
    "atomic_save",
    "checkpoint_path",
    "restore_training_state",
    "rng_state",
    "set_rng_state",
    "training_state",
]


CHECKPOINT_NAME = "checkpoint.pt"


def checkpoint_path(out_dir: str | Path) -> Path:
    """``out_dir/checkpoint.pt``, the per-epoch checkpoint of :func:`train`."""
    return Path(out_dir) / CHECKPOINT_NAME


def rng_state() -> dict[str, Any]:
    """The global torch, CUDA, numpy and python RNG states, as a ``weights_only``-loadable
    dict (for checkpoints)."""
    np_state = np.random.get_state()  # noqa: NPY002 (global state is what we save)
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": torch.as_tensor(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the global RNG states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            "MT19937",
            npst["key"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a kill never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def training_state(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    history: dict[str, Any],
    state: dict[str, Any],
    best_state: dict[str, torch.Tensor] | None,
    stopped_early: bool,
    cfg: TrainConfig,
) -> dict[str, Any]:
    """The checkpoint dict of a training loop: model, optimiser, scheduler, grad scaler,
    RNG states, history, early-stopping ``state``, best weights and config; restored by
    :func:`restore_training_state`."""
    return {
        "model": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_state(),
        "history": history,
        "state": dict(state),
        "best_state": best_state,
        "stopped_early": stopped_early,
        "config": cfg.to_dict(),
    }


def restore_training_state(
    ckpt: dict[str, Any],
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
) -> None:
    """Load a :func:`training_state` checkpoint's model, optimiser, scheduler and scaler
    states (the caller restores the RNG states and the loop's bookkeeping)."""
    module.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])


def write_checkpoint(out: Path, ckpt: dict[str, Any], rank: int, world: int) -> None:
    """Rank 0 writes ``ckpt`` (a :func:`training_state` plus the data fingerprint); under
    DDP every rank also writes its own RNG states, then all ranks meet at a barrier."""
    import torch.distributed as dist

    if world > 1:
        atomic_save(rng_state(), out / f"rng_rank{rank}.pt")
    if rank == 0:
        atomic_save(ckpt, checkpoint_path(out))
    if world > 1:
        dist.barrier()
