"""Bad inputs raise with clear messages; MMD, Wasserstein, REINFORCE and the Distribution shortcuts."""
from __future__ import annotations

import math
import warnings

import pyro
import pytest
import torch
import torch.nn.functional as F

from pyro_dgm.distributions import Bernoulli, Normal
from pyro_dgm.losses import (MMD, NLL, REINFORCE, E, Expectation, KullbackLeibler, LogProb, Parameter, Prob,
                             StochasticReconstructionLoss, WassersteinDistance)


def test_missing_variable_is_named(vae) -> None:  # type: ignore[no-untyped-def]
    q, p, prior, x = vae
    loss = (KullbackLeibler(q, prior) - E(q, LogProb(p))).mean()
    with pytest.raises(ValueError, match=r"missing input variable 'x'.*got \['y'\]"):
        loss.eval({"y": x})
    with pytest.raises(ValueError, match=r"missing input variables 'x', 'z'"):
        LogProb(p).eval({})


def test_kl_between_different_vars_names_both(vae) -> None:  # type: ignore[no-untyped-def]
    """q(z|x) against p(x|z) is computed as Pixyz computes it (``test_diff_losses.py``), with a warning naming both;
    a product over other variables raises when evaluated, naming both and their variables."""
    q, p, prior, x = vae
    with pytest.warns(UserWarning, match=r"q\(z\|x\) and p\(x\|z\) are over different variables.*\['z'\] and "
                                         r"\['x'\]"):
        KullbackLeibler(q, p)
    kl = KullbackLeibler(q * prior.replace_var(z="w"), prior)
    with pytest.raises(ValueError, match=r"q\(z,w\|x\) and p_\{prior\}\(z\) must be over the same variables.*has "
                                         r"var \['z', 'w'\] and p_\{prior\}\(z\) has var \['z'\]"):
        kl.eval({"x": x})


def test_kl_against_an_unnormalized_density_of_the_same_variable_does_not_warn() -> None:
    """A ``CustomProb`` over z takes z as its input: that is not a distribution conditioned on q's variable (the
    warning above said "q(z) and p(z) are over different variables (['z'] and ['z'])"). Pixyz warns nothing."""
    from pyro_dgm.distributions import CustomProb
    q = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="q")
    p = CustomProb(lambda z: -0.5 * (z ** 2).sum(-1), var=["z"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        KullbackLeibler(q, p, analytical=False)
        KullbackLeibler(p, q, analytical=False)


def test_kl_with_incompatible_shapes_is_a_value_error() -> None:
    q = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q")
    p = Normal(loc=0., scale=1., var=["z"], features_shape=[3])
    with pytest.raises(ValueError, match="cannot compare"):
        KullbackLeibler(q, p).eval({"x": torch.zeros(2, 4)})


@pytest.mark.parametrize("bad", ["string", [1, 2], None, object()])
def test_arithmetic_with_unsupported_type_names_it(vae, bad) -> None:  # type: ignore[no-untyped-def]
    q, p, prior, x = vae
    if bad is None:  # Pixyz: a missing second operand counts as 0 (its VAE adds regularizer=None so)
        assert torch.equal((LogProb(p) + bad).eval({"x": x, "z": torch.zeros(x.shape[0], 2)}),
                           LogProb(p).eval({"x": x, "z": torch.zeros(x.shape[0], 2)}))
    else:
        with pytest.raises(TypeError, match=type(bad).__name__):
            LogProb(p) + bad
    with pytest.raises(TypeError, match=type(bad).__name__):
        bad * LogProb(p)


def test_expectation_argument_types(vae) -> None:  # type: ignore[no-untyped-def]
    q, p, prior, x = vae
    with pytest.raises(TypeError, match="f must be a Loss"):
        Expectation(q, p)
    with pytest.raises(TypeError, match="Distribution"):
        Expectation(LogProb(p), LogProb(p))


def test_expectation_averages_num_samples(vae) -> None:  # type: ignore[no-untyped-def]
    q, p, prior, x = vae
    pyro.set_rng_seed(1)
    many = E(q, LogProb(p), num_samples=3).eval({"x": x})
    pyro.set_rng_seed(1)
    single = [E(q, LogProb(p)).eval({"x": x}) for _ in range(3)]
    assert torch.allclose(many, torch.stack(single).mean(0), atol=1e-6)


def test_expectation_sample_shape_forms(vae) -> None:  # type: ignore[no-untyped-def]
    # Pixyz's attribute sample_shape, and the number of draws averaged, for each way of giving them
    q, p, prior, x = vae
    forms = {"default": ({}, (1,)), "none": ({"sample_shape": None}, (1,)), "int": ({"sample_shape": 3}, (3,)),
             "shape": ({"sample_shape": (2, 3)}, (2, 3)), "num_samples": ({"num_samples": 4}, (4,))}
    for name, (kw, shape) in forms.items():
        e = E(q, LogProb(p), **kw)
        assert e.sample_shape == torch.Size(shape), name
        assert e.num_samples == torch.Size(shape).numel(), name
    with pytest.raises(ValueError, match="holds no sample"):
        E(q, LogProb(p), sample_shape=(0,))


def test_expectation_is_reparameterized(vae) -> None:  # type: ignore[no-untyped-def]
    q, p, prior, x = vae
    loss, values = E(q, LogProb(p)).mean().eval({"x": x}, return_dict=True)
    loss.backward()
    # by hand with the same noise: z = mu(x) + sigma(x) * eps, the gradient goes through mu and sigma (pathwise)
    # (q: linear heads, sigma = softplus(x W_s + b_s) + 1e-3)
    w_loc = q.loc.weight.detach().clone().requires_grad_()
    w_scale = q.scale.weight.detach().clone().requires_grad_()
    with torch.no_grad():
        eps = (values["z"] - q.loc(x)) / (F.softplus(q.scale(x)) + 1e-3)
    z = (x @ w_loc.T + q.loc.bias) + (F.softplus(x @ w_scale.T + q.scale.bias) + 1e-3) * eps
    lp = torch.distributions.Bernoulli(probs=torch.sigmoid(p.net(z))).log_prob(x).sum(-1).mean()
    g_loc, g_scale = torch.autograd.grad(lp, [w_loc, w_scale])
    assert g_loc.abs().sum() > 0
    assert torch.allclose(q.loc.weight.grad, g_loc, atol=1e-5)
    assert torch.allclose(q.scale.weight.grad, g_scale, atol=1e-5)


def test_aliases(vae) -> None:  # type: ignore[no-untyped-def]
    q, p, prior, x = vae
    values = {"x": x, "z": torch.zeros(8, 2)}
    assert torch.allclose(NLL(p).eval(values), -p.get_log_prob(values))
    assert torch.allclose(Prob(p).eval(values), p.get_log_prob(values).exp())
    assert torch.allclose(p.log_prob().eval(values), p.get_log_prob(values))  # Distribution.log_prob() shortcut
    assert torch.allclose(p.prob().eval(values), p.get_log_prob(values).exp())
    pyro.set_rng_seed(2)
    a = StochasticReconstructionLoss(q, p).eval({"x": x})
    pyro.set_rng_seed(2)
    assert torch.allclose(a, -E(q, LogProb(p)).eval({"x": x}))


def test_mmd_equals_hand_computed_unbiased_estimate() -> None:
    q = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q")
    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[2], name="p_{prior}")
    x = torch.randn(16, 2)
    pyro.set_rng_seed(9)
    value = MMD(q, prior, kernel="inv-multiquadratic", sigma_sqr=1.5).eval({"x": x})
    pyro.set_rng_seed(9)
    a = q.sample({"x": x})["z"]
    b = prior.sample(batch_n=16)["z"]

    def k(u, v):  # type: ignore[no-untyped-def]
        return 1.5 / (((u[:, None] - v[None]) ** 2).sum(-1) + 1.5)

    n = 16
    off = ~torch.eye(n, dtype=torch.bool)
    expected = k(a, a)[off].mean() + k(b, b)[off].mean() - 2 * k(a, b).mean()
    assert torch.allclose(value, expected, atol=1e-6)


def test_mmd_separates_different_distributions() -> None:
    same = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q")
    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[2], name="p")
    x = torch.zeros(400, 2)
    near = float(MMD(same, prior).eval({"x": x}))
    far = float(MMD(same, prior).eval({"x": x + 3}))
    assert abs(near) < 0.02 < far
    with pytest.raises(ValueError, match="unknown kernel"):
        MMD(same, prior, kernel="cosine")


def test_wasserstein_is_the_distance_between_samples() -> None:
    p = Normal(loc="x", scale=1e-6, var=["z"], cond_var=["x"])
    q = Normal(loc=0., scale=1e-6, var=["z"], features_shape=[2], name="q")
    x = torch.tensor([[3., 4.], [6., 8.]])
    assert torch.allclose(WassersteinDistance(p, q).eval({"x": x}), torch.tensor([5., 10.]), atol=1e-4)


def test_reinforce_gradient_is_the_score_function_estimate() -> None:
    # E_{a ~ Bernoulli(u)}[a] = u, so d/du = 1; each batch element gives a one-sample estimate a/u with variance
    # 1/u - 1; their mean must be within 5 standard errors of 1.
    n, u0 = 20000, 0.3
    u = torch.full((n,), u0, requires_grad=True)  # no feature dim: the reward a and log p(a|u) both have shape (n,)
    p = Bernoulli(probs="u", var=["a"], cond_var=["u"])
    loss = REINFORCE(p, Parameter("a"))
    value = loss.eval({"u": u})
    value.sum().backward()
    se = math.sqrt((1 / u0 - 1) / n)
    assert abs(float(u.grad.mean()) - 1.0) < 5 * se
    # the surrogate's value is a log p(a) + a: 0 for a = 0, log(u) + 1 for a = 1
    expected = torch.where(value.detach() == 0, 0.0, math.log(u0) + 1)
    assert torch.allclose(value.detach(), expected, atol=1e-5)


@pytest.mark.parametrize("option", ["num_particles", "vectorize_particles", "max_plate_nesting"])
def test_pyro_elbo_options_given_to_a_loss_say_what_to_use_instead(option: str) -> None:
    q = Normal(loc="x", scale=1.0, var=["z"], cond_var=["x"])
    prior = Normal(loc=0.0, scale=1.0, var=["z"])
    for build in (lambda **kw: KullbackLeibler(q, prior, **kw), lambda **kw: LogProb(prior, **kw)):
        with pytest.raises(TypeError, match=rf"got '{option}', an option of Pyro's ELBOs.*sample_shape.*PyroELBO"):
            build(**{option: 4})
    assert float(KullbackLeibler(q, prior).eval({"x": torch.zeros(1, 1)})) == 0.0  # the plain constructor still works
