"""Pixyz 0.3.3's ``tests/distributions/test_expornential_distributions.py`` (sic), re-written as differential
programs: each family built from numbers, tensors, conditioning variables (one variable for two parameters
included) and networks, sampled, scored, printed, under Pixyz 0.3.3 and under pyro_dgm from the same seed.

Known, deliberate differences (RelaxedCategorical's score, Multinomial's ``total_count``) are shown in
``test_diff_distributions.py`` and not repeated here.
"""
from __future__ import annotations

import pytest

from pixyz_harness import same


# ================================================================================================ TestNormal
def normal_init_with_same_param():
    import torch
    from pixyz.distributions.exponential_distributions import Normal
    n = Normal(var=["x"], cond_var=["y"], loc="y", scale="y")
    y = torch.ones(2, 3)
    result = n.sample({"y": y})
    return result["x"].shape, result, n.get_log_prob(result), n.get_params({"y": y}), str(n)


def normal_moments_and_entropy():
    import torch
    from pixyz.distributions.exponential_distributions import Normal
    n = Normal(var=["x"], cond_var=["y"], loc="y", scale=torch.full((3,), 2.))
    y = {"y": torch.randn(4, 3)}
    return (n.sample_mean(y), n.sample_variance(y), n.get_entropy(y), n.get_entropy(y, sum_features=False),
            n.sample(y, sample_mean=True), n.sample(y, reparam=True)["x"].requires_grad, n.has_reparam)


def normal_with_a_network():
    import torch
    from torch import nn
    from torch.nn import functional as F
    from pixyz.distributions.exponential_distributions import Normal

    class Inference(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x", "y"], name="q")
            self.fc1 = nn.Linear(5, 8)
            self.fc21 = nn.Linear(8, 2)
            self.fc22 = nn.Linear(8, 2)

        def forward(self, x, y):
            h = F.relu(self.fc1(torch.cat([x, y], 1)))
            return {"loc": self.fc21(h), "scale": F.softplus(self.fc22(h))}

    q = Inference()
    xy = {"x": torch.randn(4, 3), "y": torch.randn(4, 2)}
    s = q.sample(xy, reparam=True)
    lp = q.get_log_prob(s)
    lp.sum().backward()
    return (s, lp, q.fc1.weight.grad, str(q), q.get_params(xy), q.sample(xy, sample_shape=[2])["z"].shape,
            q.input_var, q.features_shape)


@pytest.mark.parametrize("program", [normal_init_with_same_param, normal_moments_and_entropy,
                                     normal_with_a_network])
def test_normal(program) -> None:  # type: ignore[no-untyped-def]
    same(program)


# =========================================================================================== every family
def _family_program(build_src: str, value_src: str, entropy: bool = True,  # type: ignore[no-untyped-def]
                    moments: bool = True):
    def program():  # type: ignore[no-untyped-def]
        import torch
        import pixyz.distributions.exponential_distributions as ed
        p = eval(build_src, {"torch": torch, "ed": ed})
        x = eval(value_src, {"torch": torch})
        s = p.sample(batch_n=3)
        out = {"text": (str(p), p.prob_text, p.distribution_name, p.features_shape, p.var, p.has_reparam),
               "sample": s, "log_prob": p.get_log_prob({"x": x}),
               "elementwise": p.get_log_prob({"x": x}, sum_features=False),
               "params": p.get_params(), "shapes": p.sample(batch_n=2, sample_shape=[4])["x"].shape}
        if entropy:
            out["entropy"] = p.get_entropy()
        if moments:
            out["moments"] = (p.sample_mean(), p.sample_variance())
        return out
    return program


FAMILIES = {
    "Normal": ("ed.Normal(loc=torch.tensor([0., 1.]), scale=torch.tensor([1., 2.]), var=['x'])",
               "torch.randn(4, 2)"),
    "Normal-scalars": ("ed.Normal(loc=0, scale=1, var=['x'], features_shape=[3])", "torch.randn(4, 3)"),
    "Bernoulli": ("ed.Bernoulli(probs=torch.tensor([0.2, 0.7]), var=['x'])",
                  "torch.bernoulli(torch.full((4, 2), 0.5))"),
    "Bernoulli-grey": ("ed.Bernoulli(probs=torch.tensor([0.2, 0.7]), var=['x'])", "torch.rand(4, 2)"),
    "Bernoulli-real": ("ed.Bernoulli(probs=torch.tensor([0.2, 0.7]), var=['x'])", "torch.randn(4, 2)"),
    "FactorizedBernoulli": ("ed.FactorizedBernoulli(probs=torch.tensor([0.2, 0.7, 0.4]), var=['x'])",
                            "torch.tensor([[0., 1., 1.], [1., 0., 0.]])"),
    "Categorical": ("ed.Categorical(probs=torch.tensor([0.2, 0.3, 0.5]), var=['x'])", "torch.eye(3)"),
    "Dirichlet": ("ed.Dirichlet(concentration=torch.tensor([1., 2., 3.]), var=['x'])",
                  "torch.tensor([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])"),
    "Beta": ("ed.Beta(concentration1=torch.tensor([2., 3.]), concentration0=torch.tensor([1., 4.]), var=['x'])",
             "torch.rand(4, 2) * 0.9 + 0.05"),
    "Laplace": ("ed.Laplace(loc=torch.tensor([0., 1.]), scale=torch.tensor([1., 0.5]), var=['x'])",
                "torch.randn(4, 2)"),
    "Gamma": ("ed.Gamma(concentration=torch.tensor([1., 2.]), rate=torch.tensor([1., 0.5]), var=['x'])",
              "torch.rand(4, 2) + 0.1"),
}
NO_ENTROPY = {"FactorizedBernoulli"}  # Pixyz's FactorizedBernoulli entropy is the Bernoulli's; compared elsewhere


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family(family: str) -> None:
    build, value = FAMILIES[family]
    same(_family_program(build, value, entropy=family not in NO_ENTROPY), rtol=1e-5, atol=1e-5)


def relaxed_families():
    import torch
    from pixyz.distributions.exponential_distributions import RelaxedBernoulli, RelaxedCategorical
    rb = RelaxedBernoulli(temperature=torch.tensor(0.5), probs=torch.tensor([0.3, 0.6]), var=["x"])
    rc = RelaxedCategorical(temperature=torch.tensor(0.5), probs=torch.tensor([0.2, 0.3, 0.5]), var=["y"])
    s = rb.sample(batch_n=3)
    t = rc.sample(batch_n=3)
    return (s, t, rb.get_log_prob(s), rb.get_log_prob({"x": torch.tensor([[0., 1.]])}), str(rb), str(rc),
            rb.distribution_name, rc.distribution_name, rb.has_reparam, rc.has_reparam,
            rb.sample(batch_n=2, reparam=True)["x"].requires_grad, rb.sample_mean(), rb.sample_variance())


def relaxed_with_scalar_temperature():
    import torch
    from pixyz.distributions import RelaxedBernoulli
    rb = RelaxedBernoulli(var=["x"], cond_var=["z"], probs="z", temperature=0.1)
    z = torch.full((2, 3), 0.4)
    return rb.sample({"z": z}), rb.get_params({"z": z}), str(rb)


def categorical_with_a_network():
    import torch
    from torch import nn
    from pixyz.distributions import Categorical

    class Classifier(Categorical):
        def __init__(self):
            super().__init__(var=["y"], cond_var=["x"], name="q")
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return {"probs": torch.softmax(self.fc(x), dim=1)}

    q = Classifier()
    x = torch.randn(5, 4)
    s = q.sample({"x": x})
    return s, q.get_log_prob(s), q.get_entropy({"x": x}), q.sample_mean({"x": x}), str(q)


@pytest.mark.parametrize("program", [relaxed_families, relaxed_with_scalar_temperature,
                                     categorical_with_a_network])
def test_other_families(program) -> None:  # type: ignore[no-untyped-def]
    same(program)
