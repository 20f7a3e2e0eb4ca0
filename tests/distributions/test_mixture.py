"""Mixtures against brute force: log-sum-exp over the components, Bayes' rule for the component posterior, EM."""
from __future__ import annotations

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch import nn

from pyro_dgm.distributions import Categorical, Normal
from pyro_dgm.distributions.mixture import MixtureModel, MixtureOfNormal

LOCS = torch.tensor([[-2.0, 0.0], [1.0, 1.0], [3.0, -1.0]])
SCALES = torch.tensor([[0.5, 1.0], [1.0, 0.3], [0.8, 0.8]])
PROBS = torch.tensor([0.2, 0.5, 0.3])


def _gmm(one_hot: bool = True) -> MixtureModel:
    comps = [Normal(loc=LOCS[k], scale=SCALES[k], var=["x"], name=f"p_{k}") for k in range(3)]
    return MixtureModel(comps, Categorical(probs=PROBS, var=["z"], name="p_{z}", one_hot=one_hot))


def _brute_joint(x: torch.Tensor) -> torch.Tensor:
    """log p(x, z=k) = log pi_k + sum_d log N(x_d; mu_kd, sigma_kd), shape (N, K), by hand."""
    out = []
    for k in range(3):
        lp = -0.5 * ((x - LOCS[k]) / SCALES[k]) ** 2 - torch.log(SCALES[k]) - 0.5 * math.log(2 * math.pi)
        out.append(lp.sum(-1) + math.log(PROBS[k]))
    return torch.stack(out, -1)


@pytest.mark.parametrize("one_hot", [True, False])
def test_log_prob_is_logsumexp_over_components(one_hot) -> None:
    torch.manual_seed(0)
    p = _gmm(one_hot)
    x = torch.randn(7, 2) * 2
    joint = _brute_joint(x)
    assert torch.allclose(p.get_log_prob({"x": x}), torch.logsumexp(joint, -1), atol=1e-5)
    assert torch.allclose(p.get_log_prob({"x": x}, return_hidden=True), joint.T, atol=1e-5)  # Pixyz's (K, N)


def test_posterior_is_bayes_rule() -> None:
    torch.manual_seed(0)
    p = _gmm()
    post = p.posterior()
    x = torch.randn(5, 2) * 2
    joint = _brute_joint(x)
    bayes = joint.exp() / joint.exp().sum(-1, keepdim=True)
    assert torch.allclose(post.get_params({"x": x})["probs"], bayes, atol=1e-5)
    z = torch.eye(3)[torch.tensor([0, 2, 1, 1, 0])]
    assert torch.allclose(post.get_log_prob({"z": z, "x": x}), torch.log((bayes * z).sum(-1)), atol=1e-5)
    assert post.prob_text == "p(z|x)" and post.sample({"x": x})["z"].shape == (5, 3)


def test_samples_follow_prior_weights_and_components() -> None:
    torch.manual_seed(0)
    p = _gmm()
    n = 20000
    s = p.sample(batch_n=n, return_hidden=True)
    assert s["x"].shape == (n, 2) and s["z"].shape == (n, 3)
    freq = s["z"].mean(0)
    assert torch.allclose(freq, PROBS, atol=4 * math.sqrt(0.25 / n))  # 4 standard errors
    # (x, z) is a draw from the joint: x given z = k is N(mu_k, sigma_k^2)
    for k in range(3):
        xk = s["x"][s["z"][:, k] == 1]
        assert torch.allclose(xk.mean(0), LOCS[k], atol=4 * float(SCALES[k].max()) / math.sqrt(len(xk)))
    assert torch.allclose(p.sample_mean(), (PROBS[:, None] * LOCS).sum(0), atol=1e-6)
    assert p.sample(batch_n=4, sample_shape=[2])["x"].shape == (2, 4, 2)


def test_em_on_a_gaussian_mixture_increases_the_likelihood_and_finds_the_clusters() -> None:
    """EM with the posterior as the E-step and closed-form M-steps on the component buffers."""
    torch.manual_seed(0)
    true = _gmm()
    x = true.sample(batch_n=1500)["x"]
    comps = [Normal(loc=x[k], scale=torch.ones(2), var=["x"]) for k in range(3)]  # start at three data points
    model = MixtureModel(comps, Categorical(probs=torch.ones(3) / 3, var=["z"]))
    post = model.posterior()
    lls = []
    for _ in range(40):
        lls.append(float(model.get_log_prob({"x": x}).mean()))
        r = post.get_params({"x": x})["probs"]  # E-step: responsibilities (N, K)
        nk = r.sum(0)
        for k, c in enumerate(model.distributions):  # M-step
            mu = (r[:, k:k + 1] * x).sum(0) / nk[k]
            var = (r[:, k:k + 1] * (x - mu) ** 2).sum(0) / nk[k]
            c.loc.copy_(mu[None])
            c.scale.copy_(var.sqrt()[None])
        model.prior.probs.copy_((nk / len(x))[None])
    assert all(b >= a - 1e-4 for a, b in zip(lls, lls[1:]))  # EM never decreases the likelihood
    found = torch.stack([c.loc[0] for c in model.distributions])
    dist = torch.cdist(LOCS, found)
    assert float(dist.min(1).values.max()) < 0.2  # every true center has a fitted one nearby
    assert lls[-1] >= float(true.get_log_prob({"x": x}).mean()) - 0.01


def test_mixture_model_as_a_pyro_model() -> None:
    p = _gmm()
    x = torch.randn(6, 2)
    tr = poutine.trace(p.model).get_trace(x=x)
    assert tr.nodes["x"]["is_observed"] and "z" not in tr.nodes  # the component is summed out exactly
    assert torch.allclose(tr.log_prob_sum(), p.get_log_prob({"x": x}).sum())


def test_conditional_mixture_with_a_gating_network() -> None:
    """A mixture of experts whose prior p(z|c) is a network: inputs flow to the prior and the components."""
    torch.manual_seed(0)

    class Gate(Categorical):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["c"], name="g")
            self.net = nn.Linear(1, 2)

        def forward(self, c):
            return {"logits": self.net(c)}

    comps = [Normal(loc="c", scale=1.0, var=["x"], cond_var=["c"]), Normal(loc=torch.tensor([5.0]), scale=1.0,
                                                                             var=["x"])]
    gate = Gate()
    p = MixtureModel(comps, gate)
    assert p.prob_text == "p(x|c)"
    c, x = torch.randn(4, 1), torch.randn(4, 1)
    w = torch.softmax(gate.net(c), -1)
    lp0 = torch.distributions.Normal(c, 1.0).log_prob(x).squeeze(-1)
    lp1 = torch.distributions.Normal(5.0, 1.0).log_prob(x).squeeze(-1)
    expected = torch.logsumexp(torch.stack([lp0, lp1], -1) + torch.log(w), -1)
    assert torch.allclose(p.get_log_prob({"x": x, "c": c}), expected, atol=1e-5)
    assert p.sample({"c": c})["x"].shape == (4, 1)


def _experts() -> tuple[Normal, Normal]:
    qx = Normal(loc="x", scale=torch.tensor([1.0, 2.0]), var=["z"], cond_var=["x"], name="q_x")
    qy = Normal(loc="y", scale=0.5, var=["z"], cond_var=["y"], name="q_y")
    return qx, qy


@pytest.mark.parametrize("weights", [None, [0.25, 0.75]])
def test_mixture_of_normal_against_brute_force(weights) -> None:
    torch.manual_seed(0)
    qx, qy = _experts()
    q = MixtureOfNormal([qx, qy], weight_modalities=weights, name="q")
    w = weights or [0.5, 0.5]
    v = {"x": torch.randn(5, 2), "y": torch.randn(5, 2), "z": torch.randn(5, 2)}
    brute = torch.logsumexp(torch.stack([math.log(w[0]) + qx.get_log_prob(v), math.log(w[1]) + qy.get_log_prob(v)]),
                            0)
    assert torch.allclose(q.get_log_prob(v), brute, atol=1e-5)
    # a missing expert is left out (the other has all the weight)
    assert torch.allclose(q.get_log_prob({"x": v["x"], "z": v["z"]}), qx.get_log_prob(v), atol=1e-5)
    mean = w[0] * v["x"] + w[1] * v["y"]
    assert torch.allclose(q.sample_mean({"x": v["x"], "y": v["y"]}), mean, atol=1e-6)


def test_mixture_of_normal_samples_pick_an_expert_per_sample() -> None:
    torch.manual_seed(0)
    qx, qy = _experts()
    q = MixtureOfNormal([qx, qy])
    x, y = torch.full((1, 2), -50.0), torch.full((1, 2), 50.0)
    z = q.sample({"x": x, "y": y}, sample_shape=[4000])["z"]
    assert z.shape == (4000, 1, 2)
    from_x = (z[:, 0, 0] < 0).float().mean()
    assert abs(float(from_x) - 0.5) < 4 * math.sqrt(0.25 / 4000)


def test_mixture_of_normal_as_a_pyro_guide() -> None:
    pyro.clear_param_store()
    qx, qy = _experts()
    q = MixtureOfNormal([qx, qy], name="q")
    model = Normal(loc="z", scale=1.0, var=["w"], cond_var=["z"]) * Normal(loc=torch.zeros(2), scale=1.0, var=["z"])
    torch.manual_seed(0)
    data = {"w": torch.randn(3, 2), "x": torch.randn(3, 2)}  # y missing: q(z|x) is the expert q_x(z|x)
    n = 4000
    loss = Trace_ELBO(num_particles=n, vectorize_particles=True).differentiable_loss(model.model, q.guide, **data)
    # -ELBO in closed form for q = N(x, s^2), p(z) = N(0, 1), p(w|z) = N(z, 1), summed over batch and features:
    # E[-log p(w|z)] + E[-log p(z)] - H[q] = log(2 pi)/2 + ((w - x)^2 + x^2)/2 + s^2 - log s - 1/2
    x, w, s = data["x"], data["w"], torch.tensor([1.0, 2.0])
    exact = (0.5 * math.log(2 * math.pi) + 0.5 * ((w - x) ** 2 + x ** 2) + s ** 2 - s.log() - 0.5).sum()
    # one particle's -ELBO has a standard deviation of about 10.5 here (measured over 20000 draws): 4 sigma of the mean
    assert abs(float(loss) - float(exact)) < 4 * 10.5 / math.sqrt(n)
    r = q.replace_var(x="a")
    renamed = [v for v in q.cond_var if v != "x"] + ["a"]  # (Pixyz's order: a renamed variable moves to the end)
    assert r.prob_text == f"q(z|{','.join(renamed)})" and r.sample({"a": data["x"]})["z"].shape == (3, 2)


def test_printing() -> None:
    p = _gmm()
    # Pixyz typesets the names: p_0 -> p_{0}
    assert "p(x) = p_{0}(x|z=0)p_{z}(z=0) + p_{1}(x|z=1)p_{z}(z=1) + p_{2}(x|z=2)p_{z}(z=2)" in str(p)
    assert p.posterior().prob_joint_factorized_and_text == r"p(z|x) = \frac{p(z,x)}{p(x)}"
    q = MixtureOfNormal(list(_experts()), weight_modalities=[0.25, 0.75], name="q")
    # (the inputs in the order of Python's set of them, as Pixyz's: it depends on the hash seed)
    assert sorted(q.cond_var) == ["x", "y"]
    assert q.prob_joint_factorized_and_text == f"q(z|{','.join(q.cond_var)}) = 0.25q_{{x}}(z|x) + 0.75q_{{y}}(z|y)"


def test_errors() -> None:
    a = Normal(loc=torch.zeros(2), scale=1.0, var=["x"])
    b = Normal(loc=torch.zeros(2), scale=1.0, var=["y"])
    prior = Categorical(probs=torch.ones(2) / 2, var=["z"])
    with pytest.raises(ValueError, match="must generate the same one variable"):
        MixtureModel([a, b], prior)
    with pytest.raises(ValueError, match="must be a Categorical"):
        MixtureModel([a, a], Normal(loc=0.0, scale=1.0, var=["z"]))
    with pytest.raises(ValueError, match="has 2 categories but there are 3 components"):
        MixtureModel([a, a, a], prior)
    with pytest.warns(UserWarning, match="log-density of a mixture does not factorize"):  # ignored, as by Pixyz
        per_feature = MixtureModel([a, a], prior).get_log_prob({"x": torch.zeros(1, 2)}, sum_features=False)
    assert torch.equal(per_feature, MixtureModel([a, a], prior).get_log_prob({"x": torch.zeros(1, 2)}))
    with pytest.raises(ValueError, match=r"expected 'x' of shape \(\.\.\., 2\), got \(1, 3\)"):
        MixtureModel([a, a], prior).get_log_prob({"x": torch.zeros(1, 3)})
    qx, qy = _experts()
    with pytest.raises(ValueError, match="no expert has its inputs"):
        MixtureOfNormal([qx, qy]).get_log_prob({"z": torch.zeros(1, 2)})
    with pytest.raises(ValueError, match="expected 2 finite non-negative weights"):
        MixtureOfNormal([qx, qy], weight_modalities=[1.0])
