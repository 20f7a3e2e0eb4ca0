"""A compiled step under ``backend="aot_eager"`` draws what the eager step draws (probe p482): AOT autograd's
common-subexpression pass merged two draws of one shape (two Monte Carlo expectations over one Laplace encoder: the
reconstruction and the KL drew one ``z``), and torch's dead-code pass dropped a draw whose value is not used (an
outer expectation's ``z``, which a nested expectation over the same ``q`` draws again), so the losses and the random
stream after the step differed from the eager model's from the first compiled step. The reference is the eager
twin from the same seed: losses, weights and the next draw of torch's generator."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from pyro_dgm.distributions import Bernoulli, Laplace, Normal
from pyro_dgm.losses import Expectation, LogProb
from pyro_dgm.models import Model
from pyro_dgm.utils.compat import compiles

pytestmark = [pytest.mark.skipif(not compiles(), reason="torch.compile of pyro_dgm needs torch 2.10 or newer"),
              pytest.mark.usefixtures("reset_dynamo")]


def _encoder(family: type) -> Any:
    class Q(family):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(3, 4)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = self.fc(x)
            return {"loc": h[:, :2], "scale": nn.functional.softplus(h[:, 2:]) + 0.1}

    return Q()


class _Decoder(Bernoulli):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.fc = nn.Linear(2, 3)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"probs": torch.sigmoid(self.fc(z))}


def _run(kind: str, compile: Any) -> tuple[list[float], list[torch.Tensor], float]:
    torch.manual_seed(0)
    p = _Decoder()
    if kind == "two expectations over a Laplace q":
        q = _encoder(Laplace)
        prior = Laplace(var=["z"], loc=torch.zeros(2), scale=torch.ones(2), name="p_z")
        loss = (Expectation(q, LogProb(q) - LogProb(prior)) - Expectation(q, LogProb(p))).mean()
    else:  # nested expectations over one Normal q: the outer z is drawn and not used
        q = _encoder(Normal)
        loss = Expectation(q, -Expectation(q, LogProb(p))).mean()
    model = Model(loss, distributions=[q, p], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.1},
                  compile=compile)
    x = torch.bernoulli(torch.full((5, 3), 0.4))
    losses = [float(model.train({"x": x.clone()})) for _ in range(4)]
    return losses, [t.detach().clone() for t in model.parameters()], float(torch.rand(()))


@pytest.mark.parametrize("kind", ["two expectations over a Laplace q", "nested expectations over a Normal q"])
def test_compiled_steps_draw_what_eager_steps_draw(kind: str) -> None:
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    settings = functorch_config.cse, inductor_config.fallback_random
    eager = _run(kind, False)
    compiled = _run(kind, {"backend": "aot_eager"})
    assert compiled[0] == pytest.approx(eager[0], rel=1e-5, abs=1e-6)
    for a, b in zip(compiled[1], eager[1]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert compiled[2] == eager[2]  # (the generator moved on by as much: the same next draw)
    assert (functorch_config.cse, inductor_config.fallback_random) == settings  # (the user's, after the steps)
