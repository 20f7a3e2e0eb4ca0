"""Model API tests: a fresh Pyro state and one torch thread per test (the CPU is shared)."""
import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def _fresh_state():  # type: ignore[no-untyped-def]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()
    torch.set_num_threads(threads)
