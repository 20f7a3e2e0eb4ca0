"""A distribution written by overriding ``sample`` / ``get_log_prob`` (or ``set_dist`` / ``get_sample``) works in
products, renamings and losses as in Pixyz, whose graph calls each factor's public methods (programs run under both
libraries, :mod:`pixyz_harness`).

Before, a product drew and scored such a factor with the family's own formulas (the override was ignored: silently
different numbers), and a distribution that only defines ``sample`` and ``get_log_prob`` could not be sampled in a
product at all.
"""
from __future__ import annotations

import pytest
from pixyz_harness import assert_same, run_both


def _custom_distribution_in_a_product():
    import torch
    from pixyz.distributions import Distribution, Normal
    from pixyz.losses import Expectation, LogProb

    class Shift(Distribution):
        """x = z + 1 (a deterministic draw) with an unnormalized Gaussian score."""

        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")

        @property
        def distribution_name(self):
            return "Shift"

        def sample(self, x_dict={}, batch_n=None, sample_shape=torch.Size(), return_all=True, reparam=False,
                   **kwargs):  # noqa: B006
            out = {"x": x_dict["z"] + 1.0}
            if return_all:
                return {**x_dict, **out}
            return out

        def get_log_prob(self, x_dict, sum_features=True, feature_dims=None, **kwargs):
            return -((x_dict["x"] - x_dict["z"] - 1.0) ** 2).sum(-1)

    prior = Normal(var=["z"], loc=torch.tensor(0.0), scale=torch.tensor(1.0), features_shape=[2], name="p_z")
    joint = Shift() * prior
    s = joint.sample(batch_n=3)
    x = torch.randn(3, 2)
    renamed = Shift().replace_var(z="w") * prior.replace_var(z="w")
    return {
        "sample": s, "log_prob": joint.get_log_prob(s), "log_prob_given": joint.get_log_prob({"x": x, "z": x}),
        "loss": LogProb(joint).eval(s), "expectation": Expectation(prior, LogProb(Shift())).eval({"x": x}),
        "renamed": renamed.sample(batch_n=2), "renamed_log_prob": renamed.get_log_prob({"x": x, "w": x}),
    }


def _overridden_family_methods():
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import KullbackLeibler, LogProb

    class Clamped(Normal):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, z):
            return {"loc": self.lin(z), "scale": torch.ones_like(z)}

        def sample(self, x_dict={}, *args, **kwargs):  # noqa: B006
            out = super().sample(x_dict, *args, **kwargs)
            out["x"] = out["x"].clamp(-0.1, 0.1)
            return out

        def get_log_prob(self, x_dict, *args, **kwargs):
            return 0.5 * super().get_log_prob(x_dict, *args, **kwargs)

    p = Clamped()
    prior = Normal(var=["z"], loc=torch.tensor(0.0), scale=torch.tensor(1.0), features_shape=[2], name="p_z")
    q = Normal(var=["z"], cond_var=["x"], loc="x", scale=torch.tensor(1.0), features_shape=[2], name="q")
    joint = p * prior
    s = joint.sample(batch_n=4)
    x = torch.randn(4, 2)
    return {
        "direct": p.sample({"z": x})["x"], "direct_log_prob": p.get_log_prob({"x": x, "z": x}),
        "sample": s, "log_prob": joint.get_log_prob(s), "renamed": p.replace_var(z="y").sample({"y": x}),
        "renamed_log_prob": p.replace_var(z="y").get_log_prob({"x": x, "y": x}),
        "nll": (-LogProb(joint)).mean().eval(s),
        "elbo": ((LogProb(p) + LogProb(prior)).expectation(q) - LogProb(q).expectation(q)).mean().eval({"x": x}),
        "kl": KullbackLeibler(q, prior).eval({"x": x}),
    }


def _training_with_an_overridden_density():
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import LogProb
    from pixyz.models import Model

    class Tempered(Normal):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, z):
            return {"loc": self.lin(z), "scale": torch.ones_like(z)}

        def get_log_prob(self, x_dict, *args, **kwargs):
            return 0.25 * super().get_log_prob(x_dict, *args, **kwargs)

    p = Tempered()
    prior = Normal(var=["z"], loc=torch.tensor(0.0), scale=torch.tensor(1.0), features_shape=[2], name="p_z")
    model = Model((-LogProb(p * prior)).mean(), distributions=[p], optimizer=torch.optim.SGD,
                  optimizer_params={"lr": 0.1})
    # a new batch each step: Pixyz's cache would hand back the freed graph of the same tensors (docs/porting.md)
    batches = [{"x": torch.randn(8, 2), "z": torch.randn(8, 2)} for _ in range(3)]
    return {"losses": [model.train(b) for b in batches], "weight": p.lin.weight}


def _overridden_set_dist_and_get_sample():
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import Expectation, LogProb

    calls = []

    class Rounded(Normal):
        """Pixyz's atomic sample is set_dist, then get_sample: both overridden."""

        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, z):
            return {"loc": self.lin(z), "scale": torch.ones_like(z)}

        def set_dist(self, x_dict={}, batch_n=None, **kwargs):  # noqa: B006
            calls.append(sorted(x_dict))
            super().set_dist(x_dict, batch_n=batch_n, **kwargs)

        def get_sample(self, reparam=False, sample_shape=torch.Size()):
            out = super().get_sample(reparam=reparam, sample_shape=sample_shape)
            return {"x": torch.round(out["x"] * 4) / 4}

    p = Rounded()
    prior = Normal(var=["z"], loc=torch.tensor(0.0), scale=torch.tensor(1.0), features_shape=[2], name="p_z")
    joint = p * prior
    s = joint.sample(batch_n=3)
    z = torch.randn(3, 2)
    return {
        "sample": s, "direct": p.sample({"z": z}), "mean": p.sample({"z": z}, sample_mean=True),
        "mean_shape": p.sample({"z": z}, sample_mean=True, sample_shape=torch.Size([2]))["x"],
        "log_prob": joint.get_log_prob(s), "expectation": Expectation(p, LogProb(prior)).eval({"z": z}),
        "set_dist_calls": calls,
    }


def _set_dist_that_changes_the_parameters():
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import Entropy, KullbackLeibler

    class Doubled(Normal):
        def set_dist(self, x_dict={}, batch_n=None, **kwargs):  # noqa: B006
            super().set_dist({"z": 2 * x_dict["z"]}, batch_n=batch_n, **kwargs)

    p = Doubled(var=["x"], cond_var=["z"], loc="z", scale=torch.tensor(1.5), features_shape=[2], name="p")
    prior = Normal(var=["x"], loc=torch.tensor(0.0), scale=torch.tensor(1.0), features_shape=[2], name="p_x")
    z = torch.randn(3, 2)
    return {
        "kl": KullbackLeibler(p, prior).eval({"z": z}), "kl_reversed": KullbackLeibler(prior, p).eval({"z": z}),
        "mean": p.sample_mean({"z": z}), "variance": p.sample_variance({"z": z}),
        "entropy": Entropy(p).eval({"z": z}), "sample_mean": p.sample({"z": z}, sample_mean=True)["x"],
        "log_prob": p.get_log_prob({"x": z, "z": z}),
    }


PROGRAMS = [_custom_distribution_in_a_product, _overridden_family_methods, _training_with_an_overridden_density,
            _overridden_set_dist_and_get_sample, _set_dist_that_changes_the_parameters]


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda f: f.__name__.strip("_"))
def test_same_as_pixyz(program):
    ref, ours = run_both(program)
    assert_same(ref, ours)


def test_the_override_runs_once_and_pyro_sees_one_site_per_variable():
    """``super().sample`` inside the override draws with the family's own hook (no recursion, no second draw),
    and a trace of the product holds each variable once."""
    import torch
    from pyro import poutine

    from pyro_dgm.distributions import Normal

    runs = []

    class Counted(Normal):
        def sample(self, x_dict={}, *args, **kwargs):  # type: ignore[no-untyped-def]  # noqa: B006
            runs.append(1)
            return super().sample(x_dict, *args, **kwargs)

    p = Counted(var=["x"], cond_var=["z"], loc="z", scale=1.0)
    prior = Normal(var=["z"], loc=0.0, scale=1.0, features_shape=[2])
    tr = poutine.trace(lambda: (p * prior).sample(batch_n=3)).get_trace()
    assert len(runs) == 1
    assert [n for n, s in tr.nodes.items() if s["type"] == "sample"] == ["z", "x"]
    p.sample({"z": torch.zeros(3, 2)})
    assert len(runs) == 2


def test_a_sample_override_that_forgets_the_variable_is_named():
    import torch

    from pyro_dgm.distributions import Normal

    class Wrong(Normal):
        def sample(self, x_dict={}, *args, **kwargs):  # type: ignore[no-untyped-def]  # noqa: B006
            return {"y": torch.zeros(1)}

    p = Wrong(var=["x"], cond_var=["z"], loc="z", scale=1.0, name="p")
    prior = Normal(var=["z"], loc=0.0, scale=1.0)
    with pytest.raises(ValueError, match=r"p\(x\|z\).*returned \['y'\], without 'x'"):
        (p * prior).sample()
