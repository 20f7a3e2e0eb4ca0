"""A compiled flow model whose Pixyz-style ``Flow`` class is defined again at every run of a notebook cell (probe
p479: the fifth compiled model raised ``IndexError: list index out of range`` at its first compiled step: Dynamo
guarded on the keys of a process-wide weak dictionary of the flows' signatures by their place, and the classes of
earlier runs, freed meanwhile, took their keys with them). The reference is the same cell run eagerly."""
from __future__ import annotations

import gc
from typing import Any

import pytest
import torch
from torch import nn

from pyro_dgm.distributions import InverseTransformedDistribution, Normal
from pyro_dgm.flows import Flow, FlowList
from pyro_dgm.models import ML
from pyro_dgm.utils.compat import compiles

pytestmark = [pytest.mark.skipif(not compiles(), reason="torch.compile of pyro_dgm needs torch 2.10 or newer"),
              pytest.mark.usefixtures("reset_dynamo")]


def _cell(compile: Any) -> list[float]:
    class Affine(Flow):  # (defined anew at each run, as a notebook cell does)
        def __init__(self) -> None:
            super().__init__(2)
            self.a = nn.Parameter(torch.tensor([0.3, -0.2]))
            self.b = nn.Parameter(torch.tensor([0.1, 0.5]))

        def forward(self, x: torch.Tensor, y: Any = None, compute_jacobian: bool = True) -> torch.Tensor:
            if compute_jacobian:
                self._logdet_jacobian = self.a.sum().expand(x.shape[0])
            return x * torch.exp(self.a) + self.b

        def inverse(self, z: torch.Tensor, y: Any = None) -> torch.Tensor:
            return (z - self.b) * torch.exp(-self.a)

    torch.manual_seed(0)
    prior = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2), name="pz")
    p = InverseTransformedDistribution(prior=prior, flow=FlowList([Affine(), Affine()]), var=["x"], name="px")
    model = ML(p, optimizer=torch.optim.Adam, optimizer_params={"lr": 0.05}, compile=compile)
    x = torch.randn(16, 2) * 2 + 1
    return [float(model.train({"x": x.clone()})) for _ in range(3)]


def test_a_flow_class_defined_again_at_each_run_trains_compiled() -> None:
    """The cell run eagerly, then compiled, six times over (as the probe ran it: its classes freed by the garbage
    collector's own passes, which the compilations' allocations start)."""
    gc.collect()
    for _ in range(6):
        eager = _cell(False)
        assert _cell({"backend": "aot_eager"}) == pytest.approx(eager, rel=1e-6, abs=1e-6)
