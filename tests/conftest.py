"""Shared test settings: one intra-op thread (tiny tensors; 2-core CI oversubscribes)."""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def one_thread():
    """One intra-op thread during a test (tiny tensors: faster, and no oversubscription of
    the 2-core CI box), the previous setting restored afterwards. A module that needs
    it for every test says ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
