"""A network that draws with numpy's global random functions inside ``forward`` (input-noise augmentation) trains
compiled as it does eagerly: the same noise, from numpy's stream, which advances as eagerly, and torch's stream
untouched by it (probe p471: Dynamo traced ``np.random.randn`` into a torch random operation, drawn from torch's
generator: other noise from the first compiled step, losses up to 0.105 away, both streams moved)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pyro_dgm.distributions import Bernoulli, Normal
from pyro_dgm.losses import Expectation, KullbackLeibler, LogProb
from pyro_dgm.models import Model
from pyro_dgm.utils.compat import compiles

pytestmark = [pytest.mark.skipif(not compiles(), reason="torch.compile of pyro_dgm needs torch 2.10 or newer"),
              pytest.mark.usefixtures("reset_dynamo")]


class _Q(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> dict:
        noise = torch.from_numpy(np.random.randn(*x.shape).astype(np.float32))
        h = self.fc2(F.relu(self.fc1(x + 0.1 * noise)))
        return {"loc": h[..., :2], "scale": F.softplus(h[..., 2:])}


class _P(Bernoulli):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.fc = nn.Linear(2, 6)

    def forward(self, z: torch.Tensor) -> dict:
        return {"probs": torch.sigmoid(self.fc(z))}


def _run(compile: Any) -> tuple[list[float], float, float, list[torch.Tensor]]:
    torch.manual_seed(0)
    np.random.seed(0)
    q, p = _Q(), _P()
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
    model = Model((KullbackLeibler(q, prior) - Expectation(q, LogProb(p))).mean(), distributions=[q, p],
                  optimizer_params={"lr": 1e-2}, compile=compile)
    g = torch.Generator().manual_seed(123)
    losses = [float(model.train({"x": (torch.rand(n, 6, generator=g) < 0.4).float()})) for n in (5, 5, 5, 5, 3)]
    return losses, float(torch.rand(1)), float(np.random.rand()), [t.detach().clone() for t in model.parameters()]


def test_numpy_draws_in_a_network_are_numpys_compiled_too() -> None:
    eager = _run(False)
    ours = _run({"backend": "aot_eager"})
    assert ours[0] == pytest.approx(eager[0], rel=1e-6, abs=1e-6)
    assert ours[1:3] == eager[1:3]
    for a, b in zip(ours[3], eager[3]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
