"""Fifty-third round (probes p382, p384), under Pixyz and here (:mod:`pixyz_harness`): ``batch_n`` given to an
analytic divergence's ``eval`` (Pixyz's analytic terms build their distributions without it), the Bernoulli's
gradient in float64 where a sigmoid nearly saturates, and categorical probabilities that no softmax made, scored
with validation off."""
from __future__ import annotations

from typing import Any

import pyro
import pytest
import torch

from pixyz_harness import assert_same, run_both, run_pixyz, run_pyro_dgm


def test_batch_n_given_to_an_analytic_kl_changes_nothing_as_under_pixyz() -> None:
    """``KullbackLeibler(q, prior).eval({"x": x}, batch_n=B)`` with a prior of 0-d parameters: the prior was
    expanded to ``(B,)``, which broadcast with ``q``'s ``(B, 1)`` to ``(B, B)`` and was summed: B times 0.5 x^2
    (and other ``batch_n``, or two features, raised); two constant distributions got a batch dim. Pixyz ignores
    ``batch_n`` there; the closed form is 0.5 x^2 (q = N(x, 1) against N(0, 1))."""
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Bernoulli, Categorical, Normal
        from pixyz.losses import CrossEntropy, Entropy, KullbackLeibler

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.net = nn.Linear(1, 2)

            def forward(self, x: torch.Tensor) -> dict:
                return {"loc": self.net(x), "scale": torch.ones(x.shape[0], 2)}

        x = torch.tensor([[1.0], [2.0], [3.0]])
        q = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="q")
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], name="p")
        kl = KullbackLeibler(q, prior)
        out = {f"kl_{n}": kl.eval({"x": x}, batch_n=n) for n in (None, 1, 2, 3, 5)}
        out["kl_mean_3"] = kl.mean().eval({"x": x}, batch_n=3)
        out["ce_3"] = CrossEntropy(q, prior, analytical=True).eval({"x": x}, batch_n=3)
        out["h_3"] = Entropy(q, analytical=True).eval({"x": x}, batch_n=3)
        out["net_3"] = KullbackLeibler(Q(), prior).eval({"x": x}, batch_n=3)
        a = Bernoulli(probs=torch.tensor([0.3, 0.2]), var=["y"])
        b = Bernoulli(probs=torch.tensor([0.5, 0.5]), var=["y"])
        c = Categorical(probs=torch.tensor([0.3, 0.7]), var=["y"])
        d = Categorical(probs=torch.tensor([0.5, 0.5]), var=["y"])
        out["bern_2"] = KullbackLeibler(a, b).eval({}, batch_n=2)
        out["cat_2"] = KullbackLeibler(c, d).eval({}, batch_n=2)
        return out

    ref, ours = run_both(program)
    assert_same(ref, ours)
    for n in (None, 1, 2, 3, 5):
        torch.testing.assert_close(ours[f"kl_{n}"], torch.tensor([0.5, 2.0, 4.5]))
    assert ours["bern_2"].shape == (1,) and ours["cat_2"].shape == ()


def test_a_kl_term_trained_with_batch_n_trains_as_under_pixyz() -> None:
    """``Model.train({"x": x}, batch_n=B)`` passes ``batch_n`` to the loss: a VAE-style KL against a prior of 0-d
    parameters trained B times the divergence's gradient; Pixyz's weights after 3 SGD steps."""
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Normal
        from pixyz.losses import KullbackLeibler
        from pixyz.models import Model

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.net = nn.Linear(2, 1)

            def forward(self, x: torch.Tensor) -> dict:
                return {"loc": self.net(x), "scale": torch.ones(x.shape[0], 1)}

        q = Q()
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], name="p")
        model = Model(KullbackLeibler(q, prior).mean(), distributions=[q], optimizer=torch.optim.SGD,
                      optimizer_params={"lr": 0.1})
        losses = [model.train({"x": torch.randn(4, 2)}, batch_n=4) for _ in range(3)]  # (the same x at each step
        # fails under Pixyz: its cache of the network's output keeps the first step's graph)
        return [float(loss.detach()) for loss in losses], q.net.weight.detach().clone()

    ref, ours = run_both(program)
    assert_same(ref, ours)


@pytest.mark.parametrize("logit", [-30.0, -33.0, 30.0])
def test_the_float64_bernoulli_gradient_is_exact_where_a_sigmoid_nearly_saturates(logit: float) -> None:
    """A float64 decoder's sigmoid of -30 gives p = 9.4e-14: the gradient of log p(x=1) for the logit is 1 - p
    (Pixyz's, finite differences'), where ``binary_cross_entropy``'s floor of p (1 - p) at 1e-12 gave 0.094."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Bernoulli

        class P(Bernoulli):
            def __init__(self) -> None:
                super().__init__(var=["x"], cond_var=["h"], name="p")

            def forward(self, h: torch.Tensor) -> dict:
                return {"probs": torch.sigmoid(h)}

        h = torch.full((2, 3), logit, dtype=torch.float64, requires_grad=True)
        x = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
        lp = P().get_log_prob({"h": h, "x": x})
        return lp.detach(), torch.autograd.grad(lp.sum(), h)[0]

    ref, ours = run_both(program)
    assert_same(ref, ours)
    p = torch.sigmoid(torch.tensor(logit, dtype=torch.float64))
    x = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(ours[1], x - p, rtol=1e-9, atol=0)  # d/dh [x log s(h) + (1-x) log(1-s(h))]


def test_the_float64_bernoulli_site_trains_as_plain_pyro() -> None:
    """The Bernoulli as a Pyro site (``Trace_ELBO`` of the joint's model conditioned on x): the gradient for the
    logit is plain Pyro's ``dist.Bernoulli``'s, -(x - p) per pixel, in float64 at a logit of -30 (0.094 before)."""
    import pyro.distributions as dist
    from pyro import poutine

    from pyro_dgm.distributions import Bernoulli

    class P(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["h"], name="p")

        def forward(self, h: torch.Tensor) -> dict:
            return {"probs": torch.sigmoid(h)}

    x = torch.ones(2, 3, dtype=torch.float64)
    h = torch.full((2, 3), -30.0, dtype=torch.float64, requires_grad=True)
    trace = poutine.trace(P().model).get_trace(x=x, h=h)
    ours = torch.autograd.grad(-trace.log_prob_sum(), h)[0]

    def plain() -> None:
        with pyro.plate("data", 2):
            pyro.sample("x", dist.Bernoulli(probs=torch.sigmoid(h)).to_event(1), obs=x)

    ref = torch.autograd.grad(-poutine.trace(plain).get_trace().log_prob_sum(), h)[0]
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=0)
    torch.testing.assert_close(ours, torch.full((2, 3), -1.0, dtype=torch.float64), rtol=1e-9, atol=0)


def test_negative_categorical_probs_unvalidated_are_named_where_pixyz_scores_a_number() -> None:
    """A categorical network without its softmax, with torch's validation off: Pixyz scores the negative probability
    as log(eps) = -15.94 (a number); here it scored -100. Both are wrong: it is an ``OutOfRangeError`` naming the
    distribution (for a mixture, also its prior), as the Bernoulli's probabilities outside [0, 1] are."""
    from pyro_dgm.utils.checks import OutOfRangeError

    def program(kind: str) -> Any:
        import torch

        from pixyz.distributions import Categorical, MixtureModel, Normal, RelaxedCategorical

        pyro.enable_validation(False)
        try:
            if kind == "categorical":
                d = Categorical(probs=torch.tensor([-0.2, 0.3, 0.9]), var=["y"], name="c")
                return d.get_log_prob({"y": torch.tensor([[1.0, 0.0, 0.0]])})
            if kind == "relaxed":
                d = RelaxedCategorical(probs=torch.tensor([-0.2, 0.3, 0.9]), temperature=torch.tensor(0.5),
                                       var=["y"], name="c")
                return d.get_log_prob({"y": torch.tensor([[0.2, 0.3, 0.5]])})
            comps = [Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], name="a"),
                     Normal(loc=torch.tensor(1.), scale=torch.tensor(1.), var=["x"], name="b")]
            m = MixtureModel(comps, Categorical(probs=torch.tensor([-0.3, 1.3]), var=["z"], name="c"))
            return m.get_log_prob({"x": torch.tensor([[0.5]])})
        finally:
            pyro.enable_validation(True)

    ref = run_pixyz(lambda: program("categorical"))
    assert torch.isfinite(ref).all()  # Pixyz: a number
    for kind in ("categorical", "relaxed", "mixture"):
        with pytest.raises(OutOfRangeError, match=r"(?s)c\(.*negative value \(e\.g\. -0\.[23]\)"):
            run_pyro_dgm(lambda: program(kind))


@pytest.mark.parametrize("p", [1e-300, 1e-200, 1e-20, 1e-13])
def test_the_float64_bernoulli_derivatives_of_a_zero_pixel_are_exact_at_tiny_probabilities(p: float) -> None:
    """log(1 - p) for x = 0 at a tiny float64 probability: first derivative -1/(1 - p), second -1/(1 - p)^2, both
    about -1 (probe p385: with one quotient over a floored p (1 - p) they were -6.7e-147 and -6.7e153 at 1e-300,
    and the second -0.998 at 1e-13)."""
    from pyro_dgm.distributions import Bernoulli

    probs = torch.tensor([p], dtype=torch.float64, requires_grad=True)
    lp = Bernoulli(probs=probs, var=["x"]).get_log_prob({"x": torch.zeros(1, 1, dtype=torch.float64)})
    (d1,) = torch.autograd.grad(lp.sum(), probs, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), probs)
    torch.testing.assert_close(d1.detach(), torch.tensor([-1 / (1 - p)], dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(d2, torch.tensor([-1 / (1 - p) ** 2], dtype=torch.float64), rtol=1e-12, atol=0)


def test_a_constant_categorical_first_used_without_validation_is_still_refused_with_it() -> None:
    """A constant ``Categorical`` with a negative probability, scored once with torch's validation off (refused),
    then with it on: refused again, as Pixyz refuses it (probe p397: with the sign check limited to validation off,
    the distribution of constants built once without validation was reused and scored -1.5606)."""
    from torch.distributions import Distribution as TorchDistribution

    def program() -> Any:
        import torch

        from pixyz.distributions import Categorical

        TorchDistribution.set_default_validate_args(False)
        try:
            k = Categorical(probs=torch.tensor([[-0.2, 0.7, 0.5], [0.3, 0.3, 0.4]]), var=["z"], name="k")
            k.get_log_prob({"z": torch.eye(3)[[1, 0]]})
        except ValueError:
            pass
        finally:
            TorchDistribution.set_default_validate_args(True)
        return k.get_log_prob({"z": torch.eye(3)[[1, 0]]})

    before = TorchDistribution._validate_args
    try:
        with pytest.raises(ValueError):
            run_pixyz(program)
        with pytest.raises(ValueError, match=r"k\(z\)"):
            run_pyro_dgm(program)
    finally:
        TorchDistribution.set_default_validate_args(before)
