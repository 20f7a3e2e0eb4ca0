"""Flow posteriors with layers written for Pixyz, compiled (probe p496). (1) A batch norm in training mode before a
layer without an inverse: the compiled evaluation, which does not map a draw back from the flow's memory where a
batch norm renormalizes, ran the list's inverse, in which Pixyz's default (the identity) stands for the missing
one, and scored the draw at that value: the first compiled step's loss differed from eager's (and from the closed
form) by 0.06. (2) A layer with Pixyz's inverse before a planar layer: ours ran that inverse and the planar layer's
numerical one on each score of the draw (Pixyz's list inverts from the last layer and raises at the planar one
first), which split the compiled step into 9 graphs. The references: the eager twin from the same seed, a
hand-written closed form of the loss, and ``torch._dynamo.explain``."""
from __future__ import annotations

from typing import Any

import pyro
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pyro_dgm.distributions import Bernoulli, Normal, TransformedDistribution
from pyro_dgm.flows import BatchNorm1d, Flow, FlowList, PlanarFlow
from pyro_dgm.losses import Expectation, LogProb
from pyro_dgm.models import Model
from pyro_dgm.utils.compat import compiles

pytestmark = [pytest.mark.skipif(not compiles(), reason="torch.compile of pyro_dgm needs torch 2.10 or newer"),
              pytest.mark.usefixtures("reset_dynamo")]


class _NoInverse(Flow):
    """z = x + 0.3 tanh(a x), written for Pixyz without an inverse."""

    def __init__(self) -> None:
        super().__init__(4)
        self.a = nn.Parameter(torch.linspace(-0.3, 0.3, 4))

    def forward(self, x: torch.Tensor, y: Any = None, compute_jacobian: bool = True) -> torch.Tensor:
        t = torch.tanh(x * self.a)
        if compute_jacobian:
            self._logdet_jacobian = torch.log(1 + 0.3 * self.a * (1 - t ** 2)).sum(-1)
        return x + 0.3 * t


class _Affine(Flow):
    """z = x exp(a) + b, written for Pixyz with its inverse."""

    def __init__(self) -> None:
        super().__init__(4)
        self.a = nn.Parameter(torch.linspace(-0.2, 0.2, 4))
        self.b = nn.Parameter(torch.linspace(0.1, -0.1, 4))

    def forward(self, x: torch.Tensor, y: Any = None, compute_jacobian: bool = True) -> torch.Tensor:
        if compute_jacobian:
            self._logdet_jacobian = self.a.sum().expand(x.shape[0])
        return x * torch.exp(self.a) + self.b

    def inverse(self, z: torch.Tensor, y: Any = None) -> torch.Tensor:
        return (z - self.b) * torch.exp(-self.a)


class _Q0(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z0"], cond_var=["x"], name="q_0")
        self.fc = nn.Linear(5, 8)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.fc(x)
        return {"loc": h[:, :4], "scale": F.softplus(h[:, 4:]) + 0.05}


class _Decoder(Bernoulli):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.fc = nn.Linear(4, 5)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"probs": torch.sigmoid(self.fc(z))}


def _vae(layers: list) -> tuple:
    torch.manual_seed(0)
    q0 = _Q0()
    q = TransformedDistribution(prior=q0, flow=FlowList(layers), var=["z"], name="q")
    p = _Decoder()
    prior = Normal(loc=torch.zeros(4), scale=torch.ones(4), var=["z"], name="p_z")
    return q0, q, p, -Expectation(q, LogProb(p * prior) - LogProb(q)).mean()


def _closed_form(q0: _Q0, bn: BatchNorm1d, layer: _NoInverse, p: _Decoder, x: torch.Tensor) -> torch.Tensor:
    """The loss at the draw torch's generator gives next: z0 ~ q0, z = layer(bn(z0)) with z0's batch statistics."""
    h = q0.fc(x)
    loc, scale = h[:, :4], F.softplus(h[:, 4:]) + 0.05
    z0 = loc + scale * torch.randn_like(loc)
    mean, var = z0.mean(0), (z0 - z0.mean(0)).pow(2).mean(0) + 1e-7
    u = torch.exp(bn.log_gamma) * (z0 - mean) / var.sqrt() + bn.beta
    t = torch.tanh(u * layer.a)
    z = u + 0.3 * t
    log_det = (bn.log_gamma - 0.5 * torch.log(var)).sum() + torch.log(1 + 0.3 * layer.a * (1 - t ** 2)).sum(-1)
    log_q = torch.distributions.Normal(loc, scale).log_prob(z0).sum(-1) - log_det
    log_p = (torch.distributions.Bernoulli(torch.sigmoid(p.fc(z))).log_prob(x).sum(-1)
             + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1))
    return -(log_p - log_q).mean()


@pytest.mark.parametrize("compile", [None, {"backend": "aot_eager"}], ids=["eager", "aot_eager"])
def test_a_batch_norm_before_a_layer_without_inverse_scores_its_draw(compile: Any) -> None:
    bn, layer = BatchNorm1d(4), _NoInverse()
    q0, q, p, loss = _vae([bn, layer])
    model = Model(loss, distributions=[q, p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.05},
                  **({} if compile is None else {"compile": compile}))
    x = torch.bernoulli(torch.full((8, 5), 0.4), generator=torch.Generator().manual_seed(3))
    for step in range(3):  # the first step runs eagerly; the second compiles
        seed = 10 + step
        torch.manual_seed(seed)
        with torch.no_grad():
            want = _closed_form(q0, bn, layer, p, x)
        torch.manual_seed(seed)
        got = model.train({"x": x})
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_layer_with_pixyz_inverse_before_a_planar_layer_compiles_into_one_graph() -> None:
    planar_inverses = []
    planar = PlanarFlow(4)
    original = planar._dgm_inverse_logdet
    planar._dgm_inverse_logdet = lambda *a: planar_inverses.append(1) or original(*a)  # counted (eager calls)
    q0, q, p, loss = _vae([_Affine(), planar])
    x = torch.bernoulli(torch.full((8, 5), 0.4), generator=torch.Generator().manual_seed(3))
    torch.manual_seed(1)
    eager = loss.eval({"x": x})
    assert planar_inverses == []  # Pixyz's list raises at the planar layer: no inverse runs, its stored draw answers
    del planar._dgm_inverse_logdet
    with pyro.validation_enabled(False):  # (the data's support check reads a number: a break of its own)
        explained = torch._dynamo.explain(lambda d: loss.eval(d))({"x": x})
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    assert explained.graph_count == 1
    compiled = torch.compile(lambda d: loss.eval(d), backend="aot_eager")
    torch.manual_seed(1)
    torch.testing.assert_close(compiled({"x": x}), eager)
