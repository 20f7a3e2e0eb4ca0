"""A compiled model whose latent is drawn through torch's gamma sampler (Gamma, Beta) compiles each batch size once
(probe p461: torch's automatic dynamic shapes compiled the second size with symbolic shapes, where the backend fails
on the gamma gradient, and Dynamo then compiled one frame deeper at every change of size: 12 graphs and about 2 s
per change after 16 steps of batches 8, 8, 8, 5)."""
from __future__ import annotations

from typing import Any

import pytest
import torch
import torch._dynamo as dynamo
from torch import nn
from torch.nn import functional as F

from pyro_dgm.distributions import Bernoulli, Beta, Gamma, Laplace
from pyro_dgm.losses import KullbackLeibler
from pyro_dgm.models import VAE
from pyro_dgm.utils.compat import compiles

pytestmark = [pytest.mark.skipif(not compiles(), reason="torch.compile of pyro_dgm needs torch 2.10 or newer"),
              pytest.mark.usefixtures("reset_dynamo")]

SIZES = [8, 8, 5, 8, 8, 5, 8, 5]  # epochs of 21 rows in batches of 8


def _train(family: str, compile: Any) -> tuple[list[float], list[torch.Tensor], int]:
    """A VAE with a ``family`` latent ``s`` (Gamma prior and Laplace decoder, or Beta prior and Bernoulli decoder)
    trained on batches of ``SIZES``: the losses, the weights and how many graphs Dynamo compiled."""
    torch.manual_seed(0)

    class Q(Gamma if family == "gamma" else Beta):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(var=["s"], cond_var=["x"], name="q")
            self.net = nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> dict:
            o = F.softplus(self.net(x)) + 0.5
            names = ("concentration", "rate") if family == "gamma" else ("concentration1", "concentration0")
            return {names[0]: o[..., :1], names[1]: o[..., 1:]}

    class P(Laplace if family == "gamma" else Bernoulli):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["s"], name="p")
            self.net = nn.Linear(1, 6)

        def forward(self, s: torch.Tensor) -> dict:
            if family == "gamma":
                return {"loc": self.net(s), "scale": s.expand(*s.shape[:-1], 6) + 0.1}
            return {"probs": torch.sigmoid(self.net(s))}

    q, p = Q(), P()
    one = torch.tensor([2.0])
    prior = (Gamma(concentration=one, rate=one, var=["s"], name="p_{prior}") if family == "gamma" else
             Beta(concentration1=one, concentration0=one, var=["s"], name="p_{prior}"))
    model = VAE(q, p, regularizer=KullbackLeibler(q, prior), optimizer_params={"lr": 1e-2}, compile=compile)
    before = dynamo.utils.counters["stats"]["unique_graphs"]
    losses = []
    for i, n in enumerate(SIZES):
        g = torch.Generator().manual_seed(i)
        x = torch.randn(n, 6, generator=g) if family == "gamma" else (torch.rand(n, 6, generator=g) > 0.5).float()
        losses.append(float(model.train({"x": x})))
    graphs = dynamo.utils.counters["stats"]["unique_graphs"] - before
    return losses, [t.detach().clone() for t in (*q.parameters(), *p.parameters())], graphs


@pytest.mark.parametrize("family", ["gamma", "beta"])
def test_a_gamma_drawn_latent_compiles_each_batch_size_once_with_the_eager_values(family: str) -> None:
    """Two graphs for the two batch sizes (12 before for the Gamma, the number growing at each change of size), and
    the eager model's losses and weights: the static-shape graphs compute what the eager steps do."""
    losses, weights, graphs = _train(family, {"backend": "aot_eager"})
    dynamo.reset()
    eager_losses, eager_weights, _ = _train(family, False)
    assert graphs == 2
    assert losses == pytest.approx(eager_losses, rel=1e-5, abs=1e-6)
    for a, b in zip(weights, eager_weights):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
