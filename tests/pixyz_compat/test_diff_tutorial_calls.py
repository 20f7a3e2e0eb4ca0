"""The calls of Pixyz's tutorials, one program per API, under Pixyz 0.3.3 and under pyro_dgm (import renamed).

Distribution API: constants given as numbers, ints, float64 tensors; ``sample`` with ``batch_n``/``sample_shape``/
``return_all``/``reparam``; ``get_log_prob`` with ``sum_features``/``feature_dims``; moments and entropies; the
texts; joints, renamings and marginals; ``get_params`` and calling a distribution; state dicts. Loss API: ``eval``
with ``return_dict``/``return_all``, the operators, the texts. Model API: a ``Model`` subclass with a learning-rate
scheduler on ``model.optimizer``, dropout under train/eval, a convolutional VAE. Each program runs from the same seed
under both libraries (``pixyz_harness``); results are compared in value, shape, dtype and text.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, run_both


# ---------------------------------------------------------------------------------------------- Distribution API
def prog_distribution_calls() -> Any:
    import torch
    from pixyz.distributions import Normal

    p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[3], name="p")
    s = p.sample(batch_n=2)
    out = {"s": s["x"], "s_shape": p.sample(sample_shape=[4, 2])["x"], "lp": p.get_log_prob(s),
           "lp_per_feature": p.get_log_prob(s, sum_features=False), "lp_loss": p.log_prob().eval(s),
           "prob_loss": p.prob().eval(s), "texts": [p.prob_text, p.prob_factorized_text, p.distribution_name, str(p)],
           "entropy": p.get_entropy(), "mean": p.sample_mean(), "variance": p.sample_variance()}
    q = Normal(loc="x", scale=torch.tensor(2.), var=["y"], cond_var=["x"], name="q")
    joint = q * p
    drawn = joint.sample(batch_n=3)
    out.update({"joint": drawn, "joint_lp": joint.get_log_prob(drawn), "joint_lp_loss": joint.log_prob().eval(drawn),
                "joint_texts": [joint.prob_text, joint.prob_factorized_text, str(joint),
                                joint.prob_joint_factorized_and_text],
                "not_all": sorted(q.sample({"x": torch.zeros(2, 3)}, return_all=False)),
                "all": q.sample({"x": torch.zeros(2, 3), "w": torch.ones(1)}),
                "renamed": str(q.replace_var(x="a", y="b")), "marginal": str(joint.marginalize_var("x")),
                "marginal_draw": sorted(joint.marginalize_var("x").sample(batch_n=2))})
    return out


def prog_constants_of_every_kind() -> Any:
    import torch
    from pixyz.distributions import Normal

    floats = Normal(loc=0., scale=1., var=["x"], features_shape=[2])
    ints = Normal(loc=0, scale=1, var=["x"])
    f64 = Normal(loc=torch.zeros(2, dtype=torch.float64), scale=torch.ones(2, dtype=torch.float64), var=["x"])
    to_f64 = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"]).double()
    out = {"floats": (floats.sample(batch_n=2)["x"], floats.get_log_prob({"x": torch.ones(3, 2)})),
           "ints": ints.get_log_prob({"x": torch.ones(3, 1)})}
    for name, d in (("f64", f64), ("to_f64", to_f64)):
        s = d.sample(batch_n=2)
        out[name] = (s["x"], d.get_log_prob(s))
    return out


def prog_shapes_of_draws_and_scores() -> Any:
    import torch
    from pixyz.distributions import Bernoulli, Categorical, Normal

    rows = []
    for d in (Normal(loc=0, scale=1, features_shape=[2]), Normal(loc=0, scale=1),
              Normal(loc=torch.tensor(0.), scale=torch.tensor(1.)), Normal(loc=torch.zeros(1), scale=1.),
              Bernoulli(probs=0.3), Categorical(probs=torch.tensor([0.5, 0.5]))):
        row = [d.features_shape]
        for kw in ({}, {"batch_n": 3}, {"sample_shape": [2]}, {"batch_n": 3, "sample_shape": [2]},
                   {"sample_shape": torch.Size([2, 5])}):
            s = d.sample(**kw)
            row.append((tuple(s[d.var[0]].shape), tuple(d.get_log_prob(s).shape)))
        rows.append(row)
    cond = Normal(loc="y", scale=1., var=["x"], cond_var=["y"])
    for y in (torch.zeros(3), torch.zeros(3, 1), torch.zeros(3, 2), torch.zeros(1, 2)):
        row = []
        for kw in ({}, {"batch_n": 3}, {"sample_shape": [2]}):
            s = cond.sample({"y": y}, **kw)
            row.append((tuple(s["x"].shape), tuple(cond.get_log_prob(s).shape)))
        rows.append(row)
    return rows


def prog_discrete_families() -> Any:
    import torch
    from pixyz.distributions import Bernoulli, Beta, Categorical, Dirichlet, Gamma, Laplace

    out = []
    for d in (Categorical(probs=torch.tensor([0.2, 0.3, 0.5]), var=["a"]),
              Bernoulli(probs=torch.tensor([0.2, 0.3, 0.5]), var=["a"])):
        s = d.sample(batch_n=4)
        out.append((s["a"], d.get_log_prob(s), d.sample_mean(), d.get_entropy()))
    for d in (Dirichlet(concentration=torch.tensor([1., 2., 3.]), var=["a"]),
              Beta(concentration1=torch.tensor([1., 2.]), concentration0=torch.tensor([2., 1.]), var=["a"]),
              Laplace(loc=torch.zeros(2), scale=torch.ones(2), var=["a"]),
              Gamma(concentration=torch.tensor([1., 2.]), rate=torch.tensor([2., 1.]), var=["a"])):
        s = d.sample(batch_n=3)
        out.append((s["a"], d.get_log_prob(s), str(d)))
    return out


def prog_parameters_and_calls() -> Any:
    import torch
    from pixyz.distributions import Bernoulli, Normal

    class Q(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = torch.nn.Linear(2, 4)

        def forward(self, x):
            h = self.fc(x)
            return {"loc": h[:, :2], "scale": torch.nn.functional.softplus(h[:, 2:])}

    q, x = Q(), torch.randn(3, 2)
    c = Normal(loc="x", scale=torch.tensor(2.), var=["z"], cond_var=["x"])
    k = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"])
    p = Normal(loc=torch.zeros(2, 3), scale=torch.ones(2, 3), var=["z"])
    z = torch.randn(4, 2, 3)
    return {"call": q(x), "params": q.get_params({"x": x}), "named": c.get_params({"x": x}), "const": k.get_params(),
            "const_dict": k.get_params({}), "probs": Bernoulli(probs=torch.tensor([0.3, 0.6]), var=["x"]).get_params(),
            "features": (p.get_log_prob({"z": z}), p.get_log_prob({"z": z}, feature_dims=[-1]),
                         p.get_log_prob({"z": z}, sum_features=False).shape, p.get_entropy(),
                         p.get_entropy(sum_features=False), p.sample(batch_n=2)["z"].shape, p.features_shape),
            "state": dict(k.state_dict()), "names": [n for n, _ in (k * p.replace_var(z="w")).named_buffers()]}


def prog_moments_of_renamed_and_joint() -> Any:
    import torch
    from pixyz.distributions import Normal

    prior = Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["z"], name="pz")
    p = Normal(loc="z", scale=torch.tensor(0.5), var=["x"], cond_var=["z"], name="px")
    joint, renamed, w = p * prior, p.replace_var(z="w"), torch.ones(2, 3)
    return {"drawn_means": joint.sample(batch_n=2, sample_mean=True),
            "variance": renamed.sample_variance({"w": w}), "entropy": renamed.get_entropy({"w": w}),
            "params": renamed.get_params({"w": w}), "marginal": joint.marginalize_var("z").sample(batch_n=2)}


# ---------------------------------------------------------------------------------------------- Loss API
def prog_loss_calls() -> Any:
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import ELBO, CrossEntropy, Entropy, Expectation, KullbackLeibler, LogProb

    p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p")
    q = Normal(loc="x", scale=torch.tensor(0.5), var=["z"], cond_var=["x"], name="q")
    px = Normal(loc="z", scale=torch.tensor(1.), var=["x"], cond_var=["z"], name="px")
    x = torch.randn(4, 2)
    kl = KullbackLeibler(q, p)
    loss = kl.mean() + 2 * (-Expectation(q, LogProb(px))).sum() / 3
    value, samples = loss.eval({"x": x}, return_dict=True)
    return {"kl": kl.eval({"x": x}), "kl_texts": [kl.loss_text, str(kl)], "loss_text": loss.loss_text,
            "value": value, "samples": sorted(samples), "not_all": loss.eval({"x": x}, return_all=False),
            "elbo": ELBO(px * p, q).eval({"x": x}), "elbo_text": ELBO(px * p, q).loss_text,
            "entropy": Entropy(q).eval({"x": x}), "cross_entropy": CrossEntropy(q, p).eval({"x": x}),
            "cross_entropy_text": CrossEntropy(q, p).loss_text, "kl_dim": KullbackLeibler(q, p, dim=1).eval({"x": x}),
            "abs": (kl - 5).abs().eval({"x": x}), "neg": (-kl).eval({"x": x})}


# ---------------------------------------------------------------------------------------------- Model API
def prog_model_subclass_with_a_scheduler() -> Any:
    import torch
    from torch import optim
    from pixyz.distributions import Bernoulli, Normal
    from pixyz.losses import Expectation, KullbackLeibler, LogProb
    from pixyz.models import Model

    class Q(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x):
            h = self.fc(x)
            return {"loc": h[:, :2], "scale": torch.nn.functional.softplus(h[:, 2:])}

    class P(Bernoulli):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = torch.nn.Linear(2, 4)
            self.drop = torch.nn.Dropout(0.5)

        def forward(self, z):
            return {"probs": torch.sigmoid(self.drop(self.fc(z)))}

    q, p = Q(), P()
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="prior")
    loss = (KullbackLeibler(q, prior) - Expectation(q, LogProb(p))).mean()

    class Scheduled(Model):
        def __init__(self):
            super().__init__(loss, distributions=[q, p], optimizer=optim.SGD, optimizer_params={"lr": 0.5})
            self.scheduler = optim.lr_scheduler.StepLR(self.optimizer, step_size=1, gamma=0.5)

        def train(self, train_x_dict={}, **kwargs):
            out = super().train(train_x_dict, **kwargs)
            self.scheduler.step()
            return out

    model = Scheduled()
    xs = [torch.bernoulli(torch.full((8, 4), 0.5)) for _ in range(4)]
    steps = [model.train({"x": x}) for x in xs]
    model.distributions.eval()
    return {"steps": steps, "test": model.test({"x": xs[0].clone()}), "lr": model.optimizer.param_groups[0]["lr"],
            "training": p.training, "keys": sorted(model.distributions.state_dict()), "text": str(model)}


def prog_convolutional_vae() -> Any:
    import torch
    from torch import nn, optim
    from pixyz.distributions import Bernoulli, Normal
    from pixyz.losses import Expectation, KullbackLeibler, LogProb
    from pixyz.models import Model

    class Q(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.fc = nn.Linear(2 * 6 * 6, 6)

        def forward(self, x):
            h = self.fc(torch.relu(self.conv(x)).view(x.shape[0], -1))
            return {"loc": h[:, :3], "scale": nn.functional.softplus(h[:, 3:])}

    class P(Bernoulli):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(3, 36)

        def forward(self, z):
            return {"probs": torch.sigmoid(self.fc(z)).view(-1, 1, 6, 6)}

    q, p = Q(), P()
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[3], name="prior")
    model = Model((KullbackLeibler(q, prior) - Expectation(q, LogProb(p))).mean(), distributions=[q, p],
                  optimizer=optim.Adam, optimizer_params={"lr": 1e-2})
    xs = [torch.bernoulli(torch.full((5, 1, 6, 6), 0.4)) for _ in range(3)]
    steps = [model.train({"x": x}) for x in xs]
    given = {"x": xs[0], "z": torch.zeros(5, 3)}
    return {"steps": steps, "generated": (p * prior).sample(batch_n=2)["x"].shape, "lp": p.get_log_prob(given),
            "lp_per_pixel": p.get_log_prob(given, sum_features=False).shape,
            "lp_rows": p.get_log_prob(given, feature_dims=[-1, -2]).shape,
            "reconstruction": p.sample_mean(q.sample({"x": xs[0]}, return_all=False)).shape}


PROGRAMS = [prog_distribution_calls, prog_constants_of_every_kind, prog_shapes_of_draws_and_scores,
            prog_discrete_families, prog_parameters_and_calls, prog_moments_of_renamed_and_joint, prog_loss_calls,
            prog_model_subclass_with_a_scheduler, prog_convolutional_vae]


@pytest.mark.parametrize("program", PROGRAMS, ids=[p.__name__[5:] for p in PROGRAMS])
def test_same_as_pixyz(program: Any) -> None:
    ref, ours = run_both(program)
    assert_same(ref, ours)
