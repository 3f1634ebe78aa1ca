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


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`make test` runs under pytest-xdist (``-n 2``). The notebook snapshots form one work
    unit that runs in one worker, in file order (notebook 02 reads what notebook 01 wrote
    under build/smoke, and so on down the pipeline); every other test is a unit of its own,
    as with ``--dist load``. (The ``xdist_group`` mark does not group with pytest 9.2, whose
    node ids no longer come from the ``_nodeid`` that pytest-xdist 3.8 rewrites.)"""
    from xdist.scheduler import LoadScopeScheduling

    class NotebooksTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith("tests/notebook_snapshots/"):
                return "tests/notebook_snapshots"
            return nodeid

    return NotebooksTogether(config, log)
