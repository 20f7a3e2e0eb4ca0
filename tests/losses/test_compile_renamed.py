"""A compiled analytic KL of renamed distributions (``replace_var``) is one graph, as the KL of distributions built
over the new names is (probe p461: once an eager evaluation had left Pixyz's ``dist`` record, the KL built that
record's object, which makes a class, and the compiled step split into six graphs at every step)."""
from __future__ import annotations

from typing import Any

import pyro
import pytest
import torch
import torch._dynamo as dynamo
from torch import nn
from torch.nn import functional as F

from pyro_dgm.distributions import Bernoulli, Normal
from pyro_dgm.losses import KullbackLeibler
from pyro_dgm.models import Model
from pyro_dgm.utils.compat import compiles

pytestmark = [pytest.mark.skipif(not compiles(), reason="torch.compile of pyro_dgm needs torch 2.10 or newer"),
              pytest.mark.usefixtures("reset_dynamo")]


def _vae(renamed: str) -> tuple[Any, list[Any]]:
    """``KL(q(w|x) || prior(w)) - E_q[log p(x|w)]``, with the prior (``"prior"``) or q (``"q"``) built over
    another name and renamed to ``w`` by ``replace_var``, or neither (``"none"``)."""
    torch.manual_seed(0)

    class Q(Normal):
        def __init__(self, var: str) -> None:
            super().__init__(var=[var], cond_var=["x"], name="q")
            self.net = nn.Linear(6, 4)

        def forward(self, x: torch.Tensor) -> dict:
            h = self.net(x)
            return {"loc": h[..., :2], "scale": F.softplus(h[..., 2:]) + 1e-3}

    class P(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["w"], name="p")
            self.net = nn.Linear(2, 6)

        def forward(self, w: torch.Tensor) -> dict:
            return {"probs": torch.sigmoid(self.net(w))}

    q = Q("z").replace_var(z="w") if renamed == "q" else Q("w")
    p = P()
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z" if renamed == "prior" else "w"],
                   name="p_{prior}")
    if renamed == "prior":
        prior = prior.replace_var(z="w")
    return (KullbackLeibler(q, prior) - p.log_prob().expectation(q)).mean(), [q, p]


def _batch(seed: int) -> dict[str, torch.Tensor]:
    return {"x": (torch.rand(8, 6, generator=torch.Generator().manual_seed(seed)) > 0.5).float()}


@pytest.mark.parametrize("renamed", ["prior", "q"])
def test_the_kl_of_a_renamed_distribution_traces_into_one_graph_after_an_eager_evaluation(renamed: str) -> None:
    """``torch._dynamo.explain`` of the evaluation after an eager one (as a compiled model's first step runs):
    one graph, no break (5 graphs and 4 breaks before; ``fullgraph=True`` refused the model)."""
    loss, _ = _vae(renamed)
    validation = pyro.infer.util.is_validation_enabled()
    pyro.enable_validation(False)  # (as the compiled step evaluates)
    try:
        loss.eval(_batch(0))
        explained = dynamo.explain(lambda d: loss.eval(d))(_batch(1))
    finally:
        pyro.enable_validation(validation)
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    assert explained.graph_count == 1


@pytest.mark.parametrize("renamed", ["prior", "q"])
def test_a_compiled_model_with_a_renamed_kl_operand_trains_in_one_graph_as_eagerly(renamed: str) -> None:
    """Four steps with ``fullgraph=True`` (which refuses a graph break): one graph, and the eager model's losses and
    weights (the losses equal the model built over ``w`` directly, from the same seed)."""
    def run(compile: Any, which: str) -> tuple[list[float], list[torch.Tensor]]:
        loss, dists = _vae(which)
        model = Model(loss, distributions=dists, optimizer_params={"lr": 1e-2}, compile=compile)
        losses = [float(model.train(_batch(s))) for s in range(4)]
        return losses, [t.detach().clone() for d in dists for t in d.parameters()]

    before = dynamo.utils.counters["stats"]["unique_graphs"]
    compiled = run({"backend": "aot_eager", "fullgraph": True}, renamed)
    assert dynamo.utils.counters["stats"]["unique_graphs"] - before == 1
    eager = run(False, renamed)
    direct = run(False, "none")
    assert compiled[0] == pytest.approx(eager[0], rel=1e-6, abs=1e-6)
    assert compiled[0] == pytest.approx(direct[0], rel=1e-6, abs=1e-6)
    for a, b in zip(compiled[1], eager[1]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
