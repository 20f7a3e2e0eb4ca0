"""Pixyz programs under torch's grad modes and autocast, run under Pixyz 0.3.3 and here (:mod:`pixyz_harness`).

- ``torch.inference_mode()``: tensors made inside it keep no version counter, and reading ``_version`` raises. The
  memoizer's keys, the flows' and the constants' caches read it, so ``loss.eval``, ``Model.test``, a draw or a
  flow's log-density inside inference mode raised "Inference tensors do not track version counter" here, while
  Pixyz computes them. Distributions and flows built inside inference mode (their buffers are inference tensors)
  too.
- ``torch.autocast("cpu", dtype=torch.bfloat16)``: the networks' outputs are bfloat16. The analytic KL against a
  standard Normal prior took the shortcut that reads the posterior's parameters alone, so it lost the prior's
  float32 in the type promotion: a bfloat16 KL where Pixyz's (and torch's general formula's) is float32. The Normal
  log-density and the KL are also written as torch writes them, so that their rounding is torch's: the same
  bfloat16 numbers as Pixyz, not only close ones.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

from pixyz_harness import assert_same, docstring_vae, run_both


def _vae_terms() -> tuple[Any, ...]:
    from pixyz.losses import Expectation as E
    from pixyz.losses import KullbackLeibler, LogProb
    q, p, prior, x = docstring_vae()
    kl = KullbackLeibler(q, prior)
    return q, p, prior, x, kl, (kl - E(q, LogProb(p))).mean()


def prog_inference_mode_evaluations() -> Any:
    import torch
    from torch import optim
    from pixyz.models import VAE
    q, p, prior, x, kl, loss = _vae_terms()
    model = VAE(q, p, regularizer=kl, optimizer=optim.Adam, optimizer_params={"lr": 1e-2})
    out = {"step": model.train({"x": x.clone()})}
    with torch.inference_mode():
        xi = torch.bernoulli(torch.full((4, 6), 0.5))
        out.update(loss=loss.eval({"x": xi}), again=loss.eval({"x": xi}), test=model.test({"x": xi}),
                   kl=kl.eval({"x": xi}, return_dict=True), draw=(p * prior).sample(batch_n=3),
                   post=q.sample({"x": xi}, return_all=False))
        out["mean"] = p.sample_mean({"z": out["post"]["z"]})
        out["lp"] = (p * prior).get_log_prob({"x": xi, **out["post"]})
    out["step_after"] = model.train({"x": x.clone()})  # training goes on outside
    return out


def prog_built_inside_inference_mode() -> Any:
    import torch
    from pixyz.distributions import Categorical, MixtureModel, Normal, TransformedDistribution
    from pixyz.flows import FlowList, PlanarFlow
    from pixyz.losses import CrossEntropy, Entropy, KullbackLeibler
    with torch.inference_mode():
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="prior")
        q = Normal(loc="x", scale=torch.tensor(1.5), var=["z"], cond_var=["x"], name="q")
        x = torch.randn(4, 2)
        flow = TransformedDistribution(prior, FlowList([PlanarFlow(2), PlanarFlow(2)]), var=["y"])
        y = flow.sample(batch_n=3, return_all=False)
        components = [Normal(loc=torch.tensor([float(i), 0.]), scale=torch.ones(2), var=["x"], name=f"p_{i}")
                      for i in range(3)]
        mixture = MixtureModel(distributions=components,
                               prior=Categorical(probs=torch.tensor([.2, .3, .5]), var=["z"], name="pz"))
        return {"kl": KullbackLeibler(q, prior).eval({"x": x}), "kl_again": KullbackLeibler(q, prior).eval({"x": x}),
                "entropy": Entropy(q).eval({"x": x}), "ce": CrossEntropy(q, prior).eval({"x": x}),
                "joint": (q * prior.replace_var(z="x")).sample(batch_n=3), "flow": (y, flow.get_log_prob(y)),
                "mixture": mixture.get_log_prob({"x": torch.randn(5, 2)})}


def prog_no_grad_evaluations() -> Any:
    import torch
    q, p, prior, x, kl, loss = _vae_terms()
    with torch.no_grad():
        value = loss.eval({"x": x})
        with torch.enable_grad():
            tracked = loss.eval({"x": x})
    return {"value": value, "tracks": (value.requires_grad, tracked.requires_grad), "tracked": tracked}


@pytest.mark.parametrize("program", [prog_inference_mode_evaluations, prog_built_inside_inference_mode,
                                     prog_no_grad_evaluations], ids=lambda f: f.__name__[5:])
def test_same_as_pixyz_under_grad_modes(program: Callable[[], Any]) -> None:
    assert_same(*run_both(program))


def prog_autocast_vae() -> Any:
    import torch
    from pixyz.losses import CrossEntropy, Entropy
    from pixyz.losses import Expectation as E
    from pixyz.losses import LogProb
    q, p, prior, x, kl, loss = _vae_terms()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = q.sample({"x": x}, return_all=False)
        return {"z": z, "kl": kl.eval({"x": x}), "log_q": q.get_log_prob({"x": x, **z}),
                "log_prior": prior.get_log_prob(z), "entropy": Entropy(q).eval({"x": x}),
                "ce": CrossEntropy(q, prior).eval({"x": x}), "e_log_q": E(q, LogProb(q)).eval({"x": x})}


def test_autocast_gives_pixyzs_dtypes_and_bfloat16_numbers() -> None:
    ref, ours = run_both(prog_autocast_vae)
    assert ref["kl"].dtype == torch.float32 and ref["z"]["z"].dtype == torch.bfloat16  # the cases the test is about
    assert_same(ref, ours)


def test_the_standard_prior_kl_promotes_as_the_general_formula() -> None:
    """The shortcut's value and dtype are those of torch's ``kl_divergence`` against N(0, 1) given as float32."""
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import KullbackLeibler
    q = Normal(loc="m", scale="s", var=["z"], cond_var=["m", "s"], features_shape=[3])
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[3])
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.bfloat16, torch.float16, torch.float64):
        m, s = torch.randn(4, 3, generator=gen).to(dtype), (torch.rand(4, 3, generator=gen) + 0.2).to(dtype)
        expected = torch.distributions.kl_divergence(torch.distributions.Normal(m, s),
                                                     torch.distributions.Normal(torch.zeros(3), torch.ones(3)))
        got = KullbackLeibler(q, prior).eval({"m": m, "s": s})
        assert got.dtype == expected.dtype == torch.promote_types(dtype, torch.float32)
        torch.testing.assert_close(got, expected.sum(-1), rtol=0, atol=0)
