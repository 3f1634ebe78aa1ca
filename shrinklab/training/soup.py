"""Weight averaging of fine-tuned networks (decision 0042).

A uniform "model soup" (Wortsman, Ilharco, Gadre, Roelofs, Gontijo-Lopes, Morcos,
Namkoong, Farhadi, Carmon, Kornblith & Schmidt 2022, "Model soups: averaging weights of
multiple fine-tuned models improves accuracy without increasing inference time", ICML):
networks fine-tuned from one pretrained network, e.g. with several seeds, averaged
parameter by parameter into one network of the same structure.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["weight_soup"]


def weight_soup(models: Sequence[nn.Module]) -> nn.Module:
    """The uniform soup of ``models`` (module docstring): a copy of ``models[0]`` whose
    floating-point parameters and buffers are the mean of the ``models``' (fine-tunings of
    one pretrained network, e.g. with several seeds). One network, so the deployed model's structure and speed do not change. Every model
    must have the same state keys and shapes; non-float buffers must be equal."""
    models = list(models)
    if not models:
        raise ValueError("weight_soup needs at least one model")
    states = [m.state_dict() for m in models]
    keys = list(states[0])
    for st in states[1:]:
        if list(st) != keys or any(st[k].shape != states[0][k].shape for k in keys):
            raise ValueError("weight_soup: the models' state keys or shapes differ")
    soup = {}
    for k in keys:
        values = [st[k] for st in states]
        if values[0].is_floating_point():
            soup[k] = torch.stack([v.to(torch.float64) for v in values]).mean(0).to(values[0].dtype)
        elif all(torch.equal(values[0], v) for v in values[1:]):
            soup[k] = values[0].clone()
        elif k.endswith("num_batches_tracked"):  # batch-norm step counts: members trained
            soup[k] = torch.stack(values).max()  # for different numbers of epochs
        else:
            raise ValueError(f"weight_soup: the non-float buffer {k!r} differs between models")
    out = copy.deepcopy(models[0])
    out.load_state_dict(soup)
    return out.eval()
