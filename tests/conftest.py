"""Shared fixtures.

Every test starts from the same random state and an empty Pyro param store (sampling tests are reproducible), on
one torch thread (small networks run faster so, and the CPU may be shared), and the ``vae`` fixture gives the small
encoder/decoder/prior the Loss API tests share.
"""
from __future__ import annotations

import pyro
import pytest
import torch
from torch import nn

from pyro_dgm.distributions import Bernoulli, Normal


def pytest_addoption(parser):  # type: ignore[no-untyped-def]
    parser.addoption("--validate-args", choices=("on", "off"), default="on",
                     help="torch/Pyro distribution argument validation during the tests (pyro.enable_validation); "
                          "'off' runs the closed-form hot paths of pyro_dgm.distributions.closed_forms")


def pytest_configure(config):  # type: ignore[no-untyped-def]
    config.addinivalue_line("markers", "needs_validation: asserts an error that only torch's argument validation "
                                       "raises (skipped under --validate-args=off)")


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    if config.getoption("--validate-args") == "off":
        skip = pytest.mark.skip(reason="checks torch's argument validation, which --validate-args=off turns off")
        for item in items:
            if "needs_validation" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_state(request):  # type: ignore[no-untyped-def]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)  # seeds torch, random and numpy
    validate = request.config.getoption("--validate-args") == "on"
    pyro.enable_validation(validate)
    yield
    pyro.enable_validation(validate)
    pyro.clear_param_store()
    torch.set_num_threads(threads)


class Encoder(Normal):
    """q(z|x) with a linear network."""

    def __init__(self, x_dim: int = 4, z_dim: int = 2) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.loc = nn.Linear(x_dim, z_dim)
        self.log_scale = nn.Linear(x_dim, z_dim)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return {"loc": self.loc(x), "scale": self.log_scale(x).exp()}


class Decoder(Bernoulli):
    """p(x|z) with a linear network."""

    def __init__(self, x_dim: int = 4, z_dim: int = 2) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.fc = nn.Linear(z_dim, x_dim)

    def forward(self, z):  # type: ignore[no-untyped-def]
        return {"probs": torch.sigmoid(self.fc(z))}


@pytest.fixture
def vae():  # type: ignore[no-untyped-def]
    torch.manual_seed(1)
    q, p = Encoder(), Decoder()
    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[2], name="p_{prior}")
    x = torch.bernoulli(torch.full((8, 4), 0.5))
    return q, p, prior, x
