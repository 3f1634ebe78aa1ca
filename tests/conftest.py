"""Shared test settings: one intra-op thread (tiny tensors; 2-core CI oversubscribes)."""

import torch

torch.set_num_threads(1)
