"""Twenty-fifth round: the relaxed families' closed forms at probabilities 0 and 1 (probe p89), under Pixyz 0.3.3
and here (:mod:`pixyz_harness`), with torch's Bernoulli and one-hot categorical as the reference.

A ``RelaxedBernoulli``'s (``RelaxedCategorical``'s) analytic KL, entropy, mean and variance are its hard
distribution's, as Pixyz's. That distribution was built from the logits torch derives from ``probs``, which it clamps
to ``[eps, 1 - eps]``: a probability 0 became 1.19e-7, so the KL to a prior that puts probability 0 where the
posterior does not came out finite (8.66 where torch and Pixyz give ``inf``), a saturated encoder's KL had a zero
gradient (where the true one is ``log(p / (1 - p))``, -15.9 at 1e-9), and the moments were off by 1.19e-7 at 0 and 1.
The hard distribution is now built from the probabilities when those were given.

And a network whose ``forward`` fails with torch's ``IndexError`` ("Dimension out of range") on inputs given without
their batch dim (probe p88) now raises a ``DimensionError`` naming them.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, run_both


def _kl(family: str, p_probs: list[float], q_probs: list[float]) -> Any:
    import torch

    from pixyz.distributions import RelaxedBernoulli, RelaxedCategorical
    from pixyz.losses import KullbackLeibler

    cls = {"Bernoulli": RelaxedBernoulli, "Categorical": RelaxedCategorical}[family]
    kw = {"features_shape": [3]} if family == "Bernoulli" else {}
    p = cls(var=["z"], cond_var=["a"], probs="a", name="p", **kw)
    q = cls(var=["z"], cond_var=["b"], probs="b", name="q", **kw)
    a = torch.tensor([p_probs], requires_grad=True)
    kl = KullbackLeibler(p, q, analytical=True).eval({"a": a, "b": torch.tensor([q_probs])})
    grad, = torch.autograd.grad(kl.sum(), a, allow_unused=True)
    return kl.detach(), grad


def _torch_kl(family: str, p_probs: list[float], q_probs: list[float]) -> torch.Tensor:
    hard = {"Bernoulli": torch.distributions.Bernoulli, "Categorical": torch.distributions.OneHotCategorical}[family]
    kl = torch.distributions.kl_divergence(hard(probs=torch.tensor([p_probs])), hard(probs=torch.tensor([q_probs])))
    return kl.sum(-1) if family == "Bernoulli" else kl


@pytest.mark.parametrize("family, p_probs, q_probs", [
    ("Bernoulli", [0.5, 0.0, 1e-9], [0.0, 0.5, 0.5]),
    ("Categorical", [0.5, 0.5, 0.0], [0.0, 0.5, 0.5]),
])
def test_a_relaxed_kl_to_a_zero_probability_is_infinite(family: str, p_probs: list[float],
                                                        q_probs: list[float]) -> None:
    ref, ours = run_both(lambda: _kl(family, p_probs, q_probs))
    if family == "Bernoulli":  # (Pixyz's RelaxedCategorical KL is one of per-class Bernoullis: docs/porting.md)
        assert_same(ref[0], ours[0])
    torch.testing.assert_close(ours[0].sum(), _torch_kl(family, p_probs, q_probs).sum())  # inf; was 8.66, 7.62


def test_a_saturated_relaxed_bernoullis_kl_has_the_bernoullis_gradient() -> None:
    probs, prior = [1e-9, 1e-7, 0.3, 1 - 1e-8, 1.0], [0.5] * 5

    def program() -> Any:
        import torch

        from pixyz.distributions import RelaxedBernoulli
        from pixyz.losses import KullbackLeibler

        q = RelaxedBernoulli(var=["z"], cond_var=["a"], probs="a", features_shape=[5], name="q")
        p = RelaxedBernoulli(var=["z"], probs=torch.tensor(prior), features_shape=[5], name="p")
        a = torch.tensor([probs], requires_grad=True)
        kl = KullbackLeibler(q, p, analytical=True).eval({"a": a})
        return kl.detach(), torch.autograd.grad(kl.sum(), a)[0]

    ref, ours = run_both(program)
    assert_same(ref, ours)
    a = torch.tensor([probs], requires_grad=True)
    kl = torch.distributions.kl_divergence(torch.distributions.Bernoulli(probs=a),
                                           torch.distributions.Bernoulli(probs=torch.tensor([prior]))).sum()
    torch.testing.assert_close(ours[1], torch.autograd.grad(kl, a)[0])  # was 0 at 1e-9, 1e-7, 1 - 1e-8 and 1


@pytest.mark.parametrize("family", ["Bernoulli", "Categorical"])
def test_relaxed_moments_and_entropy_at_probabilities_0_and_1_are_the_hard_ones(family: str) -> None:
    probs = [0.0, 1e-30, 1e-9, 1.0] if family == "Bernoulli" else [0.0, 1e-30, 1.0 - 1e-30]

    def program() -> Any:
        import torch

        from pixyz.distributions import RelaxedBernoulli, RelaxedCategorical

        cls = RelaxedBernoulli if family == "Bernoulli" else RelaxedCategorical
        d = cls(var=["z"], cond_var=["a"], probs="a", name="q")
        a = {"a": torch.tensor([probs])}
        return d.sample_mean(a), d.sample_variance(a), d.get_entropy(a, sum_features=False) \
            if family == "Bernoulli" else d.get_entropy(a)

    ref, ours = run_both(program)
    assert_same(ref, ours)
    p = torch.tensor([probs])
    torch.testing.assert_close(ours[0], p)  # was 1.19e-7 at 0 and 1e-30, 1 - 1.19e-7 at 1
    torch.testing.assert_close(ours[1], p * (1 - p))


# ---------------------------------------------------------------- a network given one example without its batch dim
def _cvae_encoder_on_one_example() -> Any:
    import torch
    from torch import nn
    from torch.nn import functional as F

    from pixyz.distributions import Normal

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x", "y"], name="q")
            self.fc = nn.Linear(6 + 3, 4)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict:
            o = self.fc(torch.cat([x, y], 1))
            return {"loc": o[..., :2], "scale": F.softplus(o[..., 2:])}

    return Q().sample({"x": torch.rand(6), "y": torch.rand(3)})


def test_an_index_error_of_a_network_on_inputs_without_a_batch_dim_names_them() -> None:
    """Pixyz raises torch's raw ``IndexError: Dimension out of range``; here a ``DimensionError`` (an IndexError
    and a ValueError) naming the distribution and the inputs without a batch dim (was: the raw error, with a
    note)."""
    from pixyz_harness import raises_same, run_pyro_dgm

    ref, ours = raises_same(_cvae_encoder_on_one_example)
    assert issubclass(ours, ref) and issubclass(ours, ValueError)
    with pytest.raises(ValueError, match=r"q\(z\|x,y\).*'x', 'y' have no batch dim.*unsqueeze\(0\)"):
        run_pyro_dgm(_cvae_encoder_on_one_example)


def _empty_batch(family: str, what: str) -> Any:
    import torch

    import pixyz.distributions as dists

    p = getattr(dists, family)(var=["x"], cond_var=["h"], probs="h", name="p")
    h = {"h": torch.full((0, 3), 1 / 3)}
    if what == "get_log_prob":
        return p.get_log_prob({"x": torch.zeros(0, 3), **h})
    return p.get_entropy(h) if what == "get_entropy" else p.sample(h)["x"]


@pytest.mark.parametrize("what", ["get_log_prob", "get_entropy", "sample"])
@pytest.mark.parametrize("family", ["Categorical", "RelaxedCategorical"])
def test_a_categorical_of_an_empty_batch(family: str, what: str) -> None:
    """torch's check of a one-hot categorical's parameters cannot reshape 0 rows, and refused an empty batch (a
    last minibatch left empty by a filter) with the message "invalid parameters". Pixyz scores a
    RelaxedCategorical's (per-class Bernoullis there, docs/porting.md) and fails on a Categorical's and on drawing;
    here each gives its empty result (the allowed direction where Pixyz fails)."""
    from pixyz_harness import run_pixyz, run_pyro_dgm

    ours = run_pyro_dgm(lambda: _empty_batch(family, what))
    assert ours.shape == ((0, 3) if what == "sample" else (0,))  # was: a ShapeError, "invalid parameters"
    if family == "RelaxedCategorical" and what != "sample":
        assert_same(run_pixyz(lambda: _empty_batch(family, what)), ours)


def test_an_empty_batch_of_parameters_that_do_not_broadcast_names_the_distribution() -> None:
    """The unchecked retry for an empty batch let torch's raw error out (the attack round on it, p96)."""
    from pyro_dgm.distributions import Normal
    from pyro_dgm.utils.checks import ShapeError

    class Bad(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")

        def forward(self, x: torch.Tensor) -> dict:
            return {"loc": torch.zeros(x.shape[0], 2), "scale": torch.ones(3, 2)}

    with pytest.raises(ShapeError, match=r"q\(z\|x\): invalid parameters \(loc: \(0, 2\), scale: \(3, 2\)\)"):
        Bad().sample({"x": torch.zeros(0, 2)})
