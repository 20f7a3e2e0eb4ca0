"""A batch that the eager evaluation refuses through validation (a NaN value: the encoder's parameters are not
finite) gets the same error from a compiled model, with the eager model's random state, weights and later steps
(probe p469: the compiled call, run without validation, scored it, and the step raised ``NonFiniteLossError``
after drawing, so that every later step differed from the eager model's). Validation off, both raise
``NonFiniteLossError``. The reference is the same model run eagerly from the same seed."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import pyro
import pytest
import torch
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import Expectation, KullbackLeibler, LogProb
from pyro_dgm.models import Model, NonFiniteLossError
from pyro_dgm.utils.compat import compiles

pytestmark = [pytest.mark.skipif(not compiles(), reason="torch.compile of pyro_dgm needs torch 2.10 or newer"),
              pytest.mark.usefixtures("reset_dynamo")]


class _Q(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.net = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> dict:
        h = self.net(x)
        return {"loc": h[..., :2], "scale": nn.functional.softplus(h[..., 2:]) + 0.1}


class _NoisyQ(_Q):
    """``_Q`` with input noise drawn from numpy's and Python's global random streams."""

    def forward(self, x: torch.Tensor) -> dict:
        noise = torch.from_numpy(np.random.randn(*x.shape).astype(np.float32)) * random.random()
        return super().forward(x + 0.1 * noise)


class _P(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = nn.Linear(2, 3)

    def forward(self, z: torch.Tensor) -> dict:
        return {"loc": self.net(z), "scale": torch.ones_like(z[..., :1]).expand(*z.shape[:-1], 3)}


def _batch(seed: int, nan: bool = False) -> dict:
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(seed))
    if nan:
        x[2, 1] = float("nan")
    return {"x": x}


def _run(compile: Any, where: str, q_class: type = _Q) -> tuple[list[Any], list[torch.Tensor]]:
    """Three steps, a NaN batch to ``train`` or ``test``, then two steps: what each call gave (a loss, or the error's
    type and first line), and ``torch.rand(1)``, ``np.random.rand()`` and ``random.random()`` right after the NaN
    batch."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    q, p = q_class(), _P()
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
    loss = (KullbackLeibler(q, prior) - Expectation(q, LogProb(p))).mean()
    model = Model(loss, distributions=[q, p], optimizer_params={"lr": 0.05}, compile=compile)
    out: list[Any] = [float(model.train(_batch(s))) for s in (1, 2, 3)] + [float(model.test(_batch(4)))]
    try:
        getattr(model, where)(_batch(5, nan=True))
        out.append("no error")
    except (ValueError, FloatingPointError) as e:
        out.append((type(e).__name__, str(e).splitlines()[0]))
    out += [float(torch.rand(1)), float(np.random.rand()), random.random()]
    out += [float(model.train(_batch(s))) for s in (6, 7)]
    return out, [t.detach().clone() for t in (*q.parameters(), *p.parameters())]


def _same(a: list[Any], b: list[Any]) -> None:
    assert [type(v) for v in a] == [type(v) for v in b]
    for u, v in zip(a, b):
        assert u == (pytest.approx(v, rel=1e-6, abs=1e-6) if isinstance(v, float) else v)


@pytest.mark.needs_validation
@pytest.mark.parametrize("where", ["train", "test"])
@pytest.mark.parametrize("q_class", [_Q, _NoisyQ], ids=["plain", "numpy noise"])
def test_a_nan_batch_gets_the_eager_models_validation_error_and_random_state(where: str, q_class: type) -> None:
    """(With numpy noise in the encoder, p472: the eager evaluation run on the refused batch drew numpy's and
    Python's streams a second time.)"""
    eager = _run(False, where, q_class)
    ours = _run({"backend": "aot_eager"}, where, q_class)
    assert eager[0][4][0] == "ValueError" and "q(z|x)" in eager[0][4][1]
    _same(ours[0], eager[0])
    for a, b in zip(ours[1], eager[1]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_validation_off_both_raise_the_non_finite_loss_error() -> None:
    with pyro.validation_enabled(False):
        eager = _run(False, "train")
        ours = _run({"backend": "aot_eager"}, "train")
    assert eager[0][4][0] == NonFiniteLossError.__name__
    _same(ours[0], eager[0])
