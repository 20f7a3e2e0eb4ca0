"""``torch.func`` transforms and swapped parameters over pyro_dgm programs (probe p165), under Pixyz and here
(:mod:`pixyz_harness`), against hand-written torch.

- Forward-mode derivatives (``jvp``) with respect to a standard N(0, I) prior's constants were 0: the standard-form
  shortcut, which reads no parameter, was taken (it is skipped for constants that require grad only).
- ``vmap`` over a constant distribution's buffers (an ensemble built by ``stack_module_state``) raised vmap's
  data-dependent control-flow error (the standard-form test reads the buffers' values).
- Per-example gradients (``vmap(grad(...))``) of a ``Categorical`` log-likelihood raised (a ``bool()`` of the
  value's finiteness check, where torch's own checks use ``torch._is_all_true``).
- ``grad``, ``jacfwd`` and ``vmap(grad)`` of any evaluation that runs a ``Deterministic`` raised "Cannot access data
  pointer" (the memoizer read the generators' states to see whether its forward drew).
- A constant swapped for an invalid value by ``functional_call`` scored NaN (the cached distribution was built
  without validation).
- Inside one evaluation, an eval-mode batch norm whose statistics ``functional_call`` swapped gave every swap the
  first one's output (the memoizer keyed on parameters, not buffers).
"""
from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from pixyz_harness import assert_same, run_both

_Z = 2


def _jvp_of_standard_prior() -> Any:
    import torch
    from torch.func import functional_call, jvp

    from pixyz.distributions import Normal
    from pixyz.losses import KullbackLeibler, LogProb

    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    m = torch.randn(3, 2, generator=torch.Generator().manual_seed(1))
    lp = LogProb(Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p")).sum()
    b0 = {"loss1.p.loc": torch.zeros(1, 2), "loss1.p.scale": torch.ones(1, 2)}
    t0 = {"loss1.p.loc": torch.ones(1, 2), "loss1.p.scale": torch.zeros(1, 2)}
    d_lp = jvp(lambda b: functional_call(lp, b, ({"z": z},))[0], (b0,), (t0,))[1]
    q = Normal(loc="m", scale=torch.tensor(0.5), var=["z"], cond_var=["m"], features_shape=[2], name="q")
    kl = KullbackLeibler(q, Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2],
                                   name="p")).sum()
    b1 = {"loss1.q.loc": torch.zeros(1, 2), "loss1.q.scale": torch.ones(1, 2)}
    t1 = {"loss1.q.loc": torch.ones(1, 2), "loss1.q.scale": torch.zeros(1, 2)}
    d_kl = jvp(lambda b: functional_call(kl, b, ({"m": m},))[0], (b1,), (t1,))[1]
    return {"d_lp": d_lp, "d_kl": d_kl}


def test_forward_mode_derivatives_through_a_standard_prior_are_the_closed_forms() -> None:
    """d/dloc sum log N(z; loc, 1) at loc = 0 is sum(z); d/dloc KL(N(m, .5) || N(loc, 1)) along ones is by autograd
    (both were 0)."""
    ref, ours = run_both(_jvp_of_standard_prior)
    assert_same(ref, ours)
    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    m = torch.randn(3, 2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours["d_lp"], z.sum())
    loc = torch.zeros(2, requires_grad=True)
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(m, 0.5), torch.distributions.Normal(loc, 1.))
    torch.testing.assert_close(ours["d_kl"], torch.autograd.grad(kl.sum(), loc)[0].sum())


def test_forward_ad_dual_constants_reach_the_log_density() -> None:
    """With ``torch.autograd.forward_ad`` (no torch.func): a dual scale of a standard prior gives d/dscale
    sum log N(z; 0, s) at s = 1, which is sum(z^2 - 1)."""
    import torch.autograd.forward_ad as fwad

    from pyro_dgm.distributions import Normal

    p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p")
    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(2))
    with fwad.dual_level():
        p.scale = fwad.make_dual(torch.ones(1, 2), torch.ones(1, 2))
        tangent = fwad.unpack_dual(p.get_log_prob({"z": z}).sum()).tangent
    torch.testing.assert_close(tangent, (z ** 2 - 1).sum())


def _vmap_over_prior_buffers() -> Any:
    import torch
    from torch.func import functional_call, stack_module_state, vmap

    from pixyz.distributions import Normal
    from pixyz.losses import LogProb

    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    terms = [LogProb(Normal(loc=torch.tensor(float(i)), scale=torch.tensor(1. + i), var=["z"], features_shape=[2],
                            name="p")) for i in range(2)]
    _, bufs = stack_module_state(terms)
    return vmap(lambda b: functional_call(terms[0], b, ({"z": z},))[0])(bufs)


def test_vmap_over_an_ensemble_of_priors_gives_each_priors_density() -> None:
    ref, ours = run_both(_vmap_over_prior_buffers)
    assert_same(ref, ours)
    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    expected = torch.stack([torch.distributions.Normal(float(i), 1. + i).log_prob(z).sum(-1) for i in range(2)])
    torch.testing.assert_close(ours, expected)


def test_vmap_over_an_ensemble_of_vaes_equals_each_vae() -> None:
    """Two whole VAEs (encoder, decoder, standard prior) stacked by ``stack_module_state``: the vmapped ELBO with the
    noise of one seed equals each model's ELBO with that seed's noise."""
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import ELBO

    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(5, 2 * _Z)

        def forward(self, x: torch.Tensor) -> dict:
            h = self.fc(x)
            return {"loc": h[..., :_Z], "scale": F.softplus(h[..., _Z:]) + 0.1}

    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(_Z, 5)

        def forward(self, z: torch.Tensor) -> dict:
            return {"loc": self.fc(z), "scale": torch.ones(5)}

    def member() -> Any:
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[_Z], name="prior")
        return ELBO(P() * prior, Q()).mean()

    torch.manual_seed(2)
    losses = [member() for _ in range(2)]
    expected = []
    for loss in losses:
        torch.manual_seed(3)
        expected.append(loss.eval({"x": x}).detach())
    template = member()
    params, bufs = stack_module_state(losses)
    torch.manual_seed(3)
    got = vmap(lambda pr, bu: functional_call(template, (pr, bu), ({"x": x},))[0],  # (forward: (loss, values))
               randomness="same")(params, bufs)
    torch.testing.assert_close(got.detach(), torch.stack(expected))


def _per_example_categorical_gradients() -> Any:
    import torch
    import torch.nn as nn
    from torch.func import grad, vmap
    from torch.nn.utils.stateless import _reparametrize_module

    from pixyz.distributions import Categorical

    class PC(Categorical):
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["z"], name="c")
            self.fc = nn.Linear(2, 3)

        def forward(self, z: Any) -> dict:
            return {"probs": torch.softmax(self.fc(z), -1)}

    pc = PC()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 2, generator=g)
    y = torch.nn.functional.one_hot(torch.randint(0, 3, (4,), generator=g), 3).float()
    prm = {k: v.detach() for k, v in pc.named_parameters()}

    def f(pp: Any, yi: Any, zi: Any) -> Any:
        with _reparametrize_module(pc, pp):
            return pc.get_log_prob({"y": yi[None], "z": zi[None]}).sum()

    per_example = vmap(grad(f), in_dims=(None, 0, 0))(prm, y, z)["fc.bias"]
    loop = []
    for i in range(4):
        pp = {k: t.clone().requires_grad_() for k, t in prm.items()}
        loop.append(torch.autograd.grad(f(pp, y[i], z[i]), pp["fc.bias"])[0])
    return {"vmap": per_example, "loop": torch.stack(loop)}


@pytest.mark.needs_validation
def test_per_example_gradients_of_a_categorical_equal_a_loop_of_single_examples() -> None:
    ref, ours = run_both(_per_example_categorical_gradients)
    assert_same(ref, ours)
    torch.testing.assert_close(ours["vmap"], ours["loop"])


def _gradients_through_a_deterministic() -> Any:
    import torch
    import torch.nn as nn
    from torch.func import grad, jacfwd, vmap

    from pixyz.distributions import Deterministic, Normal
    from pixyz.losses import Expectation, LogProb

    class Det(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["h"], cond_var=["x"], name="f")
            self.fc = nn.Linear(4, 2)

        def forward(self, x: Any) -> dict:
            return {"h": torch.tanh(self.fc(x))}

    class Qh(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["h"], name="q")

        def forward(self, h: Any) -> dict:
            return {"loc": h, "scale": torch.ones_like(h) * 0.5}

    torch.manual_seed(1)
    det, qh = Det(), Qh()
    loss = Expectation(det, LogProb(qh)).sum()
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(3, 4, generator=g), torch.randn(3, 2, generator=g)

    def f(xx: Any) -> Any:
        return loss.eval({"x": xx, "z": z})

    xr = x.clone().requires_grad_()
    ref = torch.autograd.grad(torch.distributions.Normal(torch.tanh(det.fc(xr)), 0.5).log_prob(z).sum(), xr)[0]
    return {"grad": grad(f)(x), "jacfwd": jacfwd(f)(x),
            "per_example": vmap(grad(lambda xi, zi: loss.eval({"x": xi[None], "z": zi[None]})))(x, z),
            "autograd": ref}


def test_gradients_through_a_deterministic_under_torch_func_equal_autograd() -> None:
    ref, ours = run_both(_gradients_through_a_deterministic)
    assert_same(ref, ours)
    for k in ("grad", "jacfwd", "per_example"):
        torch.testing.assert_close(ours[k], ours["autograd"])


@pytest.mark.needs_validation
def test_a_scale_swapped_for_a_negative_one_by_functional_call_is_refused() -> None:
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import LogProb

    lp = LogProb(Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p"))
    z = torch.ones(3, 2)
    with pytest.raises(ValueError, match="scale"):
        functional_call(lp, {"p.scale": torch.full((1, 2), -1.)}, ({"z": z},))
    torch.testing.assert_close(functional_call(lp, {"p.scale": torch.full((1, 2), 2.)}, ({"z": z},))[0],
                               torch.distributions.Normal(0., 2.).log_prob(z).sum(-1))


def test_swapped_statistics_of_an_eval_mode_batch_norm_are_seen_within_one_evaluation() -> None:
    """Per-domain batch-norm statistics swapped in turn inside one ``memoize()`` scope: each domain's log-density,
    as hand-written torch gives it (each was the first domain's)."""
    from torch.nn.utils.stateless import _reparametrize_module

    from pyro_dgm.distributions import Normal
    from pyro_dgm.poutine import memoize

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.bn, self.fc = nn.BatchNorm1d(4), nn.Linear(4, 2 * _Z)

        def forward(self, x: torch.Tensor) -> dict:
            h = self.fc(self.bn(x))
            return {"loc": h[..., :_Z], "scale": F.softplus(h[..., _Z:]) + 0.1}

    torch.manual_seed(0)
    q = Q().eval()
    domains = [{"bn.running_mean": torch.full((4,), float(d)), "bn.running_var": torch.full((4,), 1. + d)}
               for d in range(3)]
    x, z = torch.randn(3, 4), torch.randn(3, _Z)
    got = []
    with memoize():
        for bufs in domains:
            with _reparametrize_module(q, bufs):
                got.append(q.get_log_prob({"x": x, "z": z}).sum())
        with torch.no_grad():
            q.bn.running_mean.fill_(5.)  # (changed in place: seen too)
        got.append(q.get_log_prob({"x": x, "z": z}).sum())
    expected = []
    for mean, var in [(d["bn.running_mean"], d["bn.running_var"]) for d in domains] + [(torch.full((4,), 5.),
                                                                                          torch.ones(4))]:
        h = q.fc((x - mean) / (var + q.bn.eps).sqrt() * q.bn.weight + q.bn.bias)
        expected.append(torch.distributions.Normal(h[..., :_Z], F.softplus(h[..., _Z:]) + 0.1).log_prob(z).sum())
    torch.testing.assert_close(torch.stack(got), torch.stack(expected))


def test_the_checks_are_for_transforms_only() -> None:
    """The control: outside torch.func, a standard prior still takes its shortcut (the closed form of N(0, I), the
    same value) and a Deterministic is still run once per evaluation."""
    from pyro_dgm.distributions import Deterministic, Normal
    from pyro_dgm.losses import Expectation, LogProb
    from pyro_dgm.utils.compat import transformed

    assert not transformed()
    calls = []

    class Det(Deterministic):
        memoizable = True  # opts in to sharing one pass between uses (what this test is about)

        def __init__(self) -> None:
            super().__init__(var=["h"], cond_var=["x"], name="f")

        def forward(self, x: torch.Tensor) -> dict:
            calls.append(1)
            return {"h": x * 2}

    d = Det()
    qh = Normal(loc="h", scale=1., var=["z"], cond_var=["h"], features_shape=[2])
    loss = Expectation(d, LogProb(qh)) + Expectation(d, LogProb(qh))
    loss.eval({"x": torch.ones(3, 2), "z": torch.zeros(3, 2)})
    assert len(calls) == 1
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p")
    assert prior._dgm_is_standard()
