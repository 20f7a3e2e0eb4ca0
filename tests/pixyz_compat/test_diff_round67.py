"""Sixty-seventh round, under Pixyz and here (:mod:`pixyz_harness`):

* an ``ActNorm2d`` whose subclass, or the flow itself, overrides Pixyz's ``_center``/``_scale`` was refused (the
  hooks were not called here): they are called now where overridden, as Pixyz's ``forward`` and ``inverse`` call
  them, and a Glow-style model trained with a softplus-scaled ``_scale`` gives Pixyz's numbers.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, run_both


def _hooked_actnorm_program(where: str) -> Any:
    def program() -> Any:
        import torch
        import torch.nn.functional as F
        from torch import optim

        from pixyz.distributions import InverseTransformedDistribution, Normal
        from pixyz.flows import ActNorm2d, FlowList
        from pixyz.losses import LogProb
        from pixyz.models import Model

        def soft_scale(self, x, compute_jacobian=True, inverse=False):  # (a softplus scale, its own log-det)
            s = F.softplus(self.logs) + 0.5
            x = x / s if inverse else x * s
            if compute_jacobian:
                return x, torch.log(s).sum() * x.shape[2] * x.shape[3]
            return x, None

        def shifted_center(self, x, inverse=False):
            return x - 2 * self.bias if inverse else x + 2 * self.bias

        if where == "subclass":
            class SoftActNorm(ActNorm2d):
                _scale = soft_scale
            first = SoftActNorm(2)
        else:
            first = ActNorm2d(2)
            first._center = shifted_center.__get__(first)
        f = FlowList([first, ActNorm2d(2)])
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2, 3, 3],
                       name="p_prior")
        p = InverseTransformedDistribution(prior=prior, flow=f, var=["x"])
        torch.manual_seed(0)
        x = torch.randn(5, 2, 3, 3) * 3 + 1
        model = Model(loss=-LogProb(p).mean(), distributions=[p], optimizer=optim.SGD, optimizer_params={"lr": 0.05})
        out = {"log_prob": p.get_log_prob({"x": x}), "losses": [model.train({"x": x}).item() for _ in range(3)],
               "params": [t.detach().clone() for t in f.parameters()]}
        with torch.no_grad():
            z = f.forward(x)
            out["z"], out["logdet"] = z, f.logdet_jacobian
            out["inverse"] = f.inverse(z)
        return out

    return program


@pytest.mark.parametrize("where", ["subclass", "instance"])
def test_actnorm_hooks_overridden_are_called_as_in_pixyz(where: str) -> None:
    ref, ours = run_both(_hooked_actnorm_program(where))
    assert_same(ref["z"], ours["z"], atol=1e-5)
    assert_same(ref["inverse"], ours["inverse"], atol=1e-5)
    assert_same(ref["logdet"], ours["logdet"], atol=1e-4)  # (one number: ActNorm2d's is constant over the batch)
    assert_same(ref["log_prob"], ours["log_prob"], atol=1e-4)
    assert_same(ref["losses"], ours["losses"], atol=1e-4)
    assert_same(ref["params"], ours["params"], atol=1e-5)


def test_an_actnorm_scale_hook_gives_the_log_det_of_its_own_map() -> None:
    """The hooked map's log-det, forward and (through the forward at x) inverse, equals the autograd Jacobian's."""
    import torch.nn.functional as F

    from pyro_dgm.flows import ActNorm2d

    class SoftActNorm(ActNorm2d):
        def _scale(self, x, compute_jacobian=True, inverse=False):  # type: ignore[no-untyped-def]
            s = F.softplus(self.logs) + 0.5
            x = x / s if inverse else x * s
            return (x, torch.log(s).sum() * x.shape[2] * x.shape[3]) if compute_jacobian else (x, None)

    f = SoftActNorm(2).eval()
    with torch.no_grad():
        f.logs.copy_(torch.tensor([0.3, -1.2]).reshape(1, 2, 1, 1))
        f.bias.copy_(torch.tensor([0.5, 2.0]).reshape(1, 2, 1, 1))
    x = torch.randn(3, 2, 2, 2, dtype=torch.float64)
    f = f.double()
    z, ld = f.forward_with_logdet(x)
    jac = torch.autograd.functional.jacobian(lambda v: f.forward(v.reshape(1, 2, 2, 2)).reshape(-1), x[0].reshape(-1))
    expected = torch.linalg.slogdet(jac)[1]
    torch.testing.assert_close(ld, expected.expand(3))
    back, ld_inv = f.inverse_with_logdet(z)
    torch.testing.assert_close(back, x)
    torch.testing.assert_close(ld_inv, expected.expand(3))


def test_an_actnorm_scale_hook_returning_no_log_det_is_named() -> None:
    from pyro_dgm.flows import ActNorm2d

    class Bad(ActNorm2d):
        def _scale(self, x, compute_jacobian=True, inverse=False):  # type: ignore[no-untyped-def]
            return x, None

    with pytest.raises(TypeError, match=r"Bad\(.*_scale\(x, compute_jacobian=True\) must return \(x, logdet\)"):
        Bad(2).eval().forward_with_logdet(torch.randn(1, 2, 2, 2))
