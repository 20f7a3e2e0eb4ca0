"""The early API reference's names (the seeds' ``002``) compute what the Pixyz 0.3.3 API computes.

The seeds' README: "where names differ between these documents, the later Pixyz API is the one to implement, and the
earlier names are kept working as aliases". Each test compares an early name's result with the modern computation
(or with a closed form, or with autograd), and checks that the 0.3.3 meaning of the same call is unchanged where the
two could meet (an early keyword never overrides a 0.3.3 argument, a network's own keyword, or a loss's options).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import pyro_dgm.distributions as D
from pyro_dgm.distributions import (CustomLikelihoodDistribution, CustomProb, Deterministic, Normal, NormalPoE,
                                    PlanarFlowDistribution, ProductOfNormal, RealNVP)
from pyro_dgm.distributions.poe import product_of_experts
from pyro_dgm.losses import (ELBO, NLL, CrossEntropy, Entropy, Expectation, KullbackLeibler, LogProb,
                             StochasticReconstructionLoss)


def _jacobian_logdets(f, x: torch.Tensor) -> torch.Tensor:
    """``log|det df/dx|`` of a map of vectors, one per row of ``x``, by autograd."""
    out = []
    for row in x:
        jac = torch.autograd.functional.jacobian(lambda v: f(v.unsqueeze(0)).squeeze(0), row)
        out.append(torch.linalg.slogdet(jac).logabsdet)
    return torch.stack(out)


# ---------------------------------------------------------------------------------------------------------------
# Distribution API


def test_planar_flow_is_the_early_name_of_the_planar_flow_distribution() -> None:
    """``pyro_dgm.distributions.PlanarFlow(prior, dim, num_layers)`` (the early name; ``pyro_dgm.flows.PlanarFlow`` is
    the flow) scores by the change of variables: log p(x) = log p(z) - log|det df/dz| (autograd's Jacobian)."""
    from pyro_dgm.distributions import PlanarFlow
    from pyro_dgm.flows import PlanarFlow as PlanarFlowLayer

    assert PlanarFlow is PlanarFlowDistribution
    assert "PlanarFlow" not in D.__all__  # a star import must not shadow pyro_dgm.flows.PlanarFlow (0.3.3's flow)
    assert PlanarFlowLayer is not PlanarFlow
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{0}")
    q = PlanarFlow(prior, 2, num_layers=3, var=["x"], name="q")
    torch.manual_seed(1)
    with torch.no_grad():
        for prm in q.flow.parameters():
            prm.normal_(0, 0.8)
    s = q.sample(batch_n=4)
    expected = prior.get_log_prob({"z": s["z"]}) - _jacobian_logdets(lambda v: q.flow.forward(v), s["z"])
    assert not torch.allclose(s["x"], s["z"])
    assert torch.allclose(q.get_log_prob(s), expected, atol=1e-5)


def test_custom_likelihood_distribution_scores_as_custom_prob() -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        return -0.5 * x ** 2 + x

    x = torch.randn(5, 3)
    ref = CustomProb(f, var=["x"], name="p_{c}")
    early = CustomLikelihoodDistribution(var=["x"], likelihood=f, name="p_{c}")
    positional = CustomLikelihoodDistribution(["x"], f, name="p_{c}")
    legacy = CustomLikelihoodDistribution(f, ["x"], name="p_{c}")  # CustomProb's order, which the alias took
    for d in (early, positional, legacy):
        assert isinstance(d, CustomProb) and d.input_var == ["x"] and d.prob_text == "p_{c}(x)"
        assert torch.equal(d.log_likelihood({"x": x}), ref.get_log_prob({"x": x}))
        assert torch.equal(d.get_log_prob({"x": x}, sum_features=False), f(x))
    q = Normal(loc="z", scale=1.0, var=["x"], cond_var=["z"], name="q")  # in a product too: the same density
    z = torch.randn(5, 3)
    assert torch.equal((q * early.replace_var(x="z")).get_log_prob({"x": x, "z": z}),
                       (q * ref.replace_var(x="z")).get_log_prob({"x": x, "z": z}))
    with pytest.raises(ValueError, match="likelihood=f"):
        CustomLikelihoodDistribution(var=["x"])


def test_normal_poe_experts_is_the_list_and_the_early_closed_form() -> None:
    """``poe.experts`` stays the list of experts; called, it is the early ``experts(loc, scale, eps)``: the
    precision-weighted product, equal (eps=0) to the product the distribution computes from the same experts."""
    prior = Normal(loc=torch.tensor([0.5, -1.0]), scale=torch.tensor([2.0, 0.5]), var=["z"], name="p_{prior}")
    a = Normal(loc="x", scale=torch.tensor([1.0, 0.3]), var=["z"], cond_var=["x"], name="a")
    b = Normal(loc="y", scale=torch.tensor([0.7, 1.5]), var=["z"], cond_var=["y"], name="b")
    poe = NormalPoE(prior, [a, b])
    assert isinstance(poe.experts, list) and list(poe.experts) == [a, b] and poe.experts[1] is b
    assert isinstance(ProductOfNormal([a]).experts, list)

    inputs = {"x": torch.randn(4, 2), "y": torch.randn(4, 2)}
    parts = [prior.get_params({}), a.get_params(inputs), b.get_params(inputs)]
    loc = torch.stack([torch.broadcast_to(p["loc"], (4, 2)) for p in parts])
    scale = torch.stack([torch.broadcast_to(p["scale"], (4, 2)) for p in parts])
    got_loc, got_scale = poe.experts(loc, scale, eps=0)
    want = poe.get_params(inputs)
    assert torch.allclose(got_loc, want["loc"], atol=1e-6) and torch.allclose(got_scale, want["scale"], atol=1e-6)

    eps = 0.1  # the closed form with eps, written out expert by expert
    prec = [1 / (s ** 2 + eps) for s in scale]
    exp_loc = sum(t * m for t, m in zip(prec, loc)) / sum(prec)
    exp_scale = (1 / sum(prec)).sqrt()
    got_loc, got_scale = poe.experts(loc, scale, eps=eps)
    assert torch.allclose(got_loc, exp_loc) and torch.allclose(got_scale, exp_scale)
    default = poe.experts(loc, scale)  # eps=1e-8, as the reference
    assert torch.allclose(default[0], product_of_experts(loc, scale, 1e-8)[0])
    zero = product_of_experts(torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [1.0]]))  # a scale-0 expert: finite
    assert torch.isfinite(zero[0]).all() and torch.allclose(zero[0], torch.tensor([1.0]), atol=1e-6)


@pytest.fixture
def real_nvp() -> RealNVP:
    prior = Normal(loc=torch.zeros(4), scale=torch.ones(4), var=["z"], name="p_{prior}")
    p = RealNVP(prior, 4, num_multiscale_layers=1, var=["x"], hidden_features=8)
    with torch.no_grad():  # away from the identity it starts at
        for prm in p.flow.parameters():
            prm.normal_(0, 0.3)
    return p


def test_real_nvp_forward_inverse_and_jacobian(real_nvp: RealNVP) -> None:
    p, x = real_nvp, torch.randn(3, 4)

    def f(v: torch.Tensor) -> torch.Tensor:
        return p.flow.forward(v, compute_jacobian=False)  # (autograd's runs store nothing)
    z = p.forward(x)  # Pixyz 0.3.3's InverseTransformedDistribution.forward: f(x), the log-det stored
    assert torch.equal(z, p.flow.forward(x)) and not torch.allclose(z, x, atol=1e-2)
    stored = p.logdet_jacobian.clone()
    assert torch.allclose(stored, _jacobian_logdets(f, x), atol=1e-4)

    z2, logdet = p.forward(x, jacobian=True)
    assert torch.equal(z2, z) and torch.allclose(logdet, stored)
    x_back = p.forward(z, inverse=True)
    assert torch.allclose(x_back, p.flow.inverse(z)) and torch.allclose(x_back, x, atol=1e-5)
    x_inv, logdet_inv = p.forward(z, inverse=True, jacobian=True)
    assert torch.allclose(x_inv, x, atol=1e-5)
    assert torch.allclose(logdet_inv, _jacobian_logdets(p.flow.inverse, z), atol=1e-4)
    assert torch.allclose(logdet_inv, -logdet, atol=1e-5)

    x_other = torch.randn(3, 4)  # compute_jacobian=False (0.3.3's) keeps the stored log-det; jacobian= returns one
    _, ld_other = p.forward(x_other, compute_jacobian=False, jacobian=True)
    assert torch.equal(p.logdet_jacobian, stored)
    assert torch.allclose(ld_other, _jacobian_logdets(f, x_other), atol=1e-4)
    p.forward(z, inverse=True, jacobian=True)  # the inverse stores nothing, as 0.3.3's
    assert torch.equal(p.logdet_jacobian, stored)
    with pytest.raises(TypeError, match="inverse=True"):
        p.forward(x, True)  # the early positional order: y is 0.3.3's context


def test_real_nvp_sample_inv_and_only_flow(real_nvp: RealNVP) -> None:
    p = real_nvp
    s = p.sample(batch_n=5)
    inv = p.sample_inv({"x": s["x"]})
    assert set(inv) == {"x", "z"} and torch.allclose(inv["z"], s["z"], atol=1e-5)
    assert torch.allclose(inv["z"], p.flow.forward(s["x"]))
    assert torch.equal(p.sample_inv(s["x"], return_all=False)["z"], p.inference({"x": s["x"]})["z"])
    assert list(p.sample_inv(s["x"], return_all=False)) == ["z"]
    z = torch.randn(5, 4)
    drawn = p.sample({"z": z}, only_flow=True)
    assert torch.equal(drawn["x"], p.inverse(z)) and drawn["z"] is z
    assert torch.allclose(p.log_likelihood(drawn), p.get_log_prob({"x": drawn["x"]}))


def test_sample_batch_size_and_shape_are_batch_n_and_sample_shape() -> None:
    prior = Normal(loc=torch.zeros(4), scale=torch.ones(4), var=["z"], name="p_{prior}")
    p = Normal(loc="z", scale=1.0, var=["x"], cond_var=["z"], name="p")
    scalar = Normal(loc=0.0, scale=1.0, var=["y"])

    def same(early: dict, **modern) -> None:
        torch.manual_seed(3)
        a = dist.sample(**early)
        torch.manual_seed(3)
        b = dist.sample(**modern)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (early, modern)

    for dist in (prior, p * prior):
        same({"batch_size": 3}, batch_n=3)
        same({"shape": (3, 4)}, batch_n=3)
        same({"shape": (2, 3, 4)}, batch_n=3, sample_shape=(2,))
        same({"batch_n": 2, "batch_size": 3}, batch_n=2)  # 0.3.3's names win
        same({"sample_shape": (2,), "shape": (5, 4)}, sample_shape=(2,))
    dist = scalar  # the early reference's scalar parameters: shape is the samples' shape
    same({"shape": (2, 3)}, batch_n=3, sample_shape=(2,))
    assert scalar.sample(shape=(2, 3))["y"].shape == (2, 3)
    with pytest.raises(ValueError, match="batch dims then the features"):
        prior.sample(shape=(2, 3))
    with pytest.raises(ValueError, match="every factor .* has inputs"):
        p.sample({"z": torch.zeros(2, 4)}, shape=(2, 4))


def test_a_networks_own_batch_size_or_shape_keyword_keeps_its_meaning() -> None:
    """Pixyz 0.3.3 passes ``batch_size=``/``shape=`` to a network whose ``forward`` takes them: they stay its."""

    class Shifted(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")

        def forward(self, z: torch.Tensor, batch_size: int = 0) -> dict:
            return {"loc": z + batch_size, "scale": torch.ones_like(z)}

    class Reshape(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["x"], name="f")

        def forward(self, x: torch.Tensor, shape: tuple = (-1,)) -> dict:
            return {"y": x.reshape(shape)}

    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"])
    joint = Reshape() * Shifted() * prior
    out = joint.sample(batch_n=3, batch_size=100, shape=(3, 2), sample_mean=True)
    assert out["z"].shape == (3, 2) and torch.equal(out["x"], torch.full((3, 2), 100.0))
    assert torch.equal(out["y"], out["x"])
    assert prior.sample(batch_size=4)["z"].shape == (4, 2)  # elsewhere the early meaning


def test_loss_options_keep_pixyz_033_meaning() -> None:
    """Inside a loss's evaluation ``batch_size=``/``shape=`` are ``eval``'s options, as under Pixyz 0.3.3 (which
    ignores them when no network takes them; ``VI.train(x, batch_size=4)`` is such a program): the same numbers and
    samples as Pixyz. A direct ``sample(batch_size=3)`` is where the early meaning applies (Pixyz: one row)."""
    sys.path.insert(0, str(Path(__file__).parent / "pixyz_compat"))
    harness = pytest.importorskip("pixyz_harness")

    def program():
        import torch
        from pixyz.distributions import Normal

        q = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="q")
        p = Normal(loc="z", scale=torch.tensor(1.0), var=["x"], cond_var=["z"], name="p")
        loss = p.log_prob().expectation(q).mean()
        x = {"x": torch.ones(3, 2)}
        return {"plain": loss.eval(x, return_dict=True), "batch_size": loss.eval(x, return_dict=True, batch_size=5),
                "shape": loss.eval(x, return_dict=True, shape=(5, 2)), "direct": q.sample(batch_size=3)["z"].shape}

    ref, ours = harness.run_both(program)
    assert ref.pop("direct") == (1, 2) and ours.pop("direct") == (3, 2)  # the early meaning, here only
    harness.assert_same(ref, ours)


# ---------------------------------------------------------------------------------------------------------------
# Loss API


def test_estimate_is_eval() -> None:
    q = Normal(loc="x", scale=1.0, var=["z"], cond_var=["x"], name="q")
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
    p = Normal(loc="z", scale=1.0, var=["x"], cond_var=["z"], name="p")
    x = torch.randn(4, 2)
    for loss in (KullbackLeibler(q, prior), ELBO(p * prior, q), NLL(prior), (ELBO(p * prior, q) * 2).mean()):
        values = {"x": x, "z": torch.randn(4, 2)}
        torch.manual_seed(5)
        a = loss.estimate(values)
        torch.manual_seed(5)
        b = loss.eval(values)
        assert torch.equal(a, b)
    torch.manual_seed(5)
    a, drawn = ELBO(p * prior, q).estimate({"x": x}, return_dict=True)
    assert torch.equal(drawn["x"], x) and drawn["z"].shape == (4, 2)


def test_input_var_of_the_early_loss_constructors() -> None:
    q = Normal(loc="x", scale=1.0, var=["z"], cond_var=["x"], name="q")
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
    p = Normal(loc="z", scale=1.0, var=["x"], cond_var=["z"], name="p")
    x = torch.randn(4, 2)
    pairs = [(CrossEntropy(q, prior, input_var=["x"]), CrossEntropy(q, prior)),
             (CrossEntropy(q, prior, analytical=True, input_var=["x"]), CrossEntropy(q, prior, analytical=True)),
             (Entropy(q, input_var=["x"]), Entropy(q)),
             (Entropy(q, analytical=False, input_var=["x"]), Entropy(q, analytical=False)),
             (StochasticReconstructionLoss(q, p, input_var=["x"]), StochasticReconstructionLoss(q, p)),
             (ELBO(p * prior, q, input_var=["x"]), ELBO(p * prior, q)),
             (NLL(p, input_var=["z", "x"]), NLL(p)), (NLL(p, ["z", "x"]), NLL(p))]
    for early, modern in pairs:
        assert early.input_var == (["z", "x"] if "z" in early.input_var else ["x"])
        assert sorted(early.input_var) == sorted(modern.input_var) and str(early) == str(modern)
        values = {"x": x, "z": torch.randn(4, 2)}
        torch.manual_seed(2)
        a = early.eval(values)
        torch.manual_seed(2)
        assert torch.equal(a, modern.eval(values))
    assert type(Entropy(q, input_var=["x"])).__name__ == "AnalyticalEntropy"  # 0.3.3's class, as without
    wider = CrossEntropy(q, prior, input_var=["x", "y"])  # eval asks for what input_var names
    assert wider.input_var == ["x", "y"]
    with pytest.raises(ValueError, match="'y'"):
        wider.eval({"x": x})
    with pytest.raises(ValueError, match="leaves out 'x'"):
        StochasticReconstructionLoss(q, p, input_var=["z"])


def test_input_var_never_takes_a_pixyz_033_positional_place() -> None:
    """Early positional orders meet 0.3.3's arguments only in NLL, which 0.3.3 lacks: elsewhere 0.3.3's win."""
    q = Normal(loc="x", scale=1.0, var=["z"], cond_var=["x"], name="q")
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
    assert str(CrossEntropy(q, prior, True)) == str(CrossEntropy(q, prior, analytical=True))
    assert str(Entropy(q, False)) == str(Entropy(q, analytical=False))
    p = Normal(loc="z", scale=1.0, var=["x"], cond_var=["z"], name="p")
    x = torch.randn(3, 2)
    torch.manual_seed(0)
    a = StochasticReconstructionLoss(q, p, [4]).eval({"x": x})  # 0.3.3's third argument: sample_shape
    torch.manual_seed(0)
    assert torch.equal(a, -Expectation(q, LogProb(p), sample_shape=[4]).eval({"x": x}))
