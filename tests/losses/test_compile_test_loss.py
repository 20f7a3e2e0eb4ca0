"""A loss evaluated only without gradients (``Model.test``'s) compiles like the training loss, also when it has a
user's term or after the user's code changed (probe p466: such a loss's first call waited for a call with gradients
to be watched, which a test loss never makes, and stayed eager for good). The reference is the same model run
eagerly from the same seed."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import pytest
import sympy
import torch
from torch import nn

from pyro_dgm.distributions import Bernoulli, Deterministic, Normal
from pyro_dgm.losses import Expectation, KullbackLeibler, LogProb, compiled
from pyro_dgm.losses.losses import Loss
from pyro_dgm.models import Model
from pyro_dgm.utils.compat import compiles

pytestmark = [pytest.mark.skipif(not compiles(), reason="torch.compile of pyro_dgm needs torch 2.10 or newer"),
              pytest.mark.usefixtures("reset_dynamo")]


class _Enc(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def act(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(h)

    def forward(self, x: torch.Tensor) -> dict:
        h = self.fc(x)
        return {"loc": self.act(h[..., :2]), "scale": nn.functional.softplus(h[..., 2:]) + 0.1}


_PLAIN_ACT = _Enc.act


class _Reconstruction(Loss):
    """A user's term: the negative expected log-likelihood of ``x``."""

    def __init__(self, q: Any, p: Any) -> None:
        super().__init__(input_var=["x"])
        self.inner = -Expectation(q, LogProb(p))

    @property
    def _symbol(self) -> Any:
        return sympy.Symbol("R")

    def forward(self, x_dict: dict, **kwargs: Any) -> Any:
        return self.inner.eval(x_dict), x_dict


def _run(compile: Any, patch_at: int | None) -> tuple[list[float], list[float], Any]:
    torch.manual_seed(0)
    enc = _Enc()
    q = _Q(enc)
    p = _P()
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
    loss = (KullbackLeibler(q, prior) - Expectation(q, LogProb(p))).mean()
    model = Model(loss, test_loss=_Reconstruction(q, p).mean(), distributions=[q, p],
                  optimizer_params={"lr": 0.05}, compile=compile)
    x = (torch.rand(8, 4, generator=torch.Generator().manual_seed(7)) > 0.5).float()
    train, test = [], []
    try:
        for step in range(6):
            if step == patch_at:
                _Enc.act = lambda self, h: torch.sigmoid(h)  # type: ignore[method-assign]
            torch.manual_seed(10 + step)
            train.append(float(model.train({"x": x})))
            test.append(float(model.test({"x": x})))
    finally:
        _Enc.act = _PLAIN_ACT  # type: ignore[method-assign]
    return train, test, model


class _Q(Normal):
    def __init__(self, enc: nn.Module) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.enc = enc

    def forward(self, x: torch.Tensor) -> dict:
        return self.enc(x)


class _P(Bernoulli):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = nn.Linear(2, 4)

    def forward(self, z: torch.Tensor) -> dict:
        return {"probs": torch.sigmoid(self.net(z))}


@pytest.mark.parametrize("patch_at", [None, 3])
def test_a_test_loss_with_a_users_term_compiles_and_compiles_again_after_a_change(patch_at: int | None) -> None:
    """Its compiled evaluation is built by the last step (before: its calls never counted), and the test and
    training losses equal the eager model's at every step."""
    eager = _run(False, patch_at)
    ours = _run({"backend": "aot_eager"}, patch_at)
    assert ours[0] == pytest.approx(eager[0], rel=1e-6, abs=1e-6)
    assert ours[1] == pytest.approx(eager[1], rel=1e-6, abs=1e-6)
    ev = ours[2]._dgm_compiled_eval(ours[2].test_loss_cls)
    assert ev._dgm_fn is not None and ev._dgm_fn is not compiled._EAGER_ONLY and ev.calls >= 2


def test_a_penalty_run_only_with_gradients_after_tests_first_is_seen_at_the_first_training_step() -> None:
    """A term whose gradient penalty runs only when gradients are on, evaluated by ``test()`` twice first (the second
    compiles, without gradients): the first ``train()`` is watched, sees the penalty, and the loss is evaluated
    eagerly from then on, with the warning (a compiled step would fail: AOT autograd has no double backward)."""

    class GP(Loss):
        def __init__(self, d: Any) -> None:
            super().__init__(input_var=["x"])
            self.d = d

        @property
        def _symbol(self) -> Any:
            return sympy.Symbol("GP")

        def forward(self, x_dict: dict, **kwargs: Any) -> Any:
            out = self.d.sample({"x": x_dict["x"]})["t"].mean()
            if torch.is_grad_enabled():
                xh = x_dict["x"].clone().requires_grad_(True)
                g, = torch.autograd.grad(self.d.sample({"x": xh})["t"].sum(), xh, create_graph=True)
                out = out + ((g.norm(dim=1) - 1) ** 2).mean()
            return out, x_dict

    runs = []
    for compile in (False, {"backend": "aot_eager"}):
        torch.manual_seed(3)
        d = Deterministic(var=["t"], cond_var=["x"], name="d")
        d.net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1))
        d.forward = lambda x, d=d: {"t": d.net(x)}  # type: ignore[method-assign]
        model = Model(GP(d), distributions=[d], optimizer=torch.optim.SGD, optimizer_params={"lr": 0.05},
                      compile=compile)
        x = torch.randn(4, 3, generator=torch.Generator().manual_seed(4))
        with pytest.warns(RuntimeWarning, match="ran a backward pass inside") if compile else nullcontext():
            runs.append([float(model.test({"x": x})) for _ in range(2)]
                        + [float(model.train({"x": x})) for _ in range(3)])
    assert runs[1] == pytest.approx(runs[0], rel=1e-6)
