"""A Normal scoring the value it has just drawn takes the log-density from the draw's noise
(``closed_forms.NOISE_FORM``): the same value and parameter gradients as torch's formula, and the general formula
wherever the value or the parameters changed since the draw, or the value is not differentiated as they are.

Each case compares with ``torch.distributions.Normal`` at the parameters the network gives, and with the general
path (``closed_forms.disabled()``) for the gradients. Tolerances: float32 rounding of a handful of operations on
O(1) numbers (the noise form skips ``(x - loc) / scale``, which rounds differently from the noise it stands for).
"""
from __future__ import annotations

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pyro_dgm.distributions import Normal, closed_forms
from pyro_dgm.losses import Expectation, LogProb
from pyro_dgm.poutine import memoize


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.counts[str(func).split(".")[1]] += 1
        return func(*args, **(kwargs or {}))


def _encoder(seed: int = 0, constant_scale: bool = False) -> tuple[Normal, torch.nn.Linear]:
    torch.manual_seed(seed)
    net = torch.nn.Linear(3, 4)

    if constant_scale:
        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], scale=torch.full((4,), 0.7), name="q")
                self.net = net

            def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
                return {"loc": self.net(x)}
    else:
        class Q(Normal):  # type: ignore[no-redef]
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.net = net

            def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
                h = self.net(x)
                return {"loc": h, "scale": torch.nn.functional.softplus(h) + 0.1}
    return Q(), net


def _torch_log_prob(q: Normal, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    params = q.get_params({"x": x})
    return torch.distributions.Normal(params["loc"], params["scale"]).log_prob(z).sum(-1)


def _grads(net: torch.nn.Module, value: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(value, list(net.parameters())))


def test_own_draw_is_scored_from_its_noise_with_torchs_value_and_gradients() -> None:
    q, net = _encoder()
    x = torch.randn(5, 3)
    with memoize():
        z = q.sample({"x": x}, reparam=True)["z"]
        with _Ops() as ops:
            lp = q.get_log_prob({"x": x, "z": z})
    assert ops.counts["div"] == 0 and ops.counts["sub"] <= 1  # the distance (z - loc) / scale is not recomputed
    torch.testing.assert_close(lp, _torch_log_prob(q, x, z), rtol=1e-5, atol=1e-5)
    # the gradients of the Monte Carlo objective E_q[log q] (the reparameterized path and the density's own
    # dependence on the parameters) are those of the general formula under the same noise
    torch.manual_seed(3)
    ours = _grads(net, Expectation(q, LogProb(q)).eval({"x": x}).sum())
    torch.manual_seed(3)
    with closed_forms.disabled():
        general = _grads(net, Expectation(q, LogProb(q)).eval({"x": x}).sum())
    for a, b in zip(ours, general):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_a_value_written_in_place_after_its_draw_is_scored_by_the_formula() -> None:
    q, _ = _encoder()
    x = torch.randn(5, 3)
    with memoize():
        z = q.sample({"x": x}, reparam=True)["z"]
        z.add_(0.5)
        lp = q.get_log_prob({"x": x, "z": z})
    torch.testing.assert_close(lp, _torch_log_prob(q, x, z.detach()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("how", ["detach_", "no_grad_draw"])
def test_a_value_without_its_draws_graph_keeps_the_score_function_gradient(how: str) -> None:
    # z is then a constant: log q(z) depends on the parameters through (z - loc) / scale as well, which the noise
    # form would drop
    q, net = _encoder()
    x = torch.randn(5, 3)

    def run() -> list[torch.Tensor]:
        torch.manual_seed(4)
        with memoize():
            if how == "detach_":
                z = q.sample({"x": x}, reparam=True)["z"]
                z.detach_()
            else:
                with torch.no_grad():
                    z = q.sample({"x": x}, reparam=True)["z"]
            return _grads(net, q.get_log_prob({"x": x, "z": z}).sum())

    ours = run()
    with closed_forms.disabled():
        general = run()
    for a, b in zip(ours, general):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert any(bool(g.abs().sum() > 1e-3) for g in ours)


def test_a_constant_parameter_changed_in_place_after_the_draw_is_read_anew() -> None:
    q, _ = _encoder(constant_scale=True)
    x = torch.randn(5, 3)
    with memoize():
        z = q.sample({"x": x}, reparam=True)["z"]
        with torch.no_grad():
            q.scale.mul_(3.0)
        lp = q.get_log_prob({"x": x, "z": z})
    torch.testing.assert_close(lp, _torch_log_prob(q, x, z.detach()), rtol=1e-5, atol=1e-5)


def test_another_value_or_other_parameters_are_scored_by_the_formula() -> None:
    q, _ = _encoder()
    x, x2 = torch.randn(5, 3), torch.randn(5, 3)
    with memoize():
        z = q.sample({"x": x}, reparam=True)["z"]
        lp_other_inputs = q.get_log_prob({"x": x2, "z": z})
        lp_copy = q.get_log_prob({"x": x, "z": z.clone()})
    torch.testing.assert_close(lp_other_inputs, _torch_log_prob(q, x2, z.detach()), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lp_copy, _torch_log_prob(q, x, z.detach()), rtol=1e-5, atol=1e-5)
