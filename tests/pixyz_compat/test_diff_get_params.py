"""A subclass's ``get_params`` gives the parameters everything else uses, and ``lru_cache_for_sample_dict`` memoizes
it, as in Pixyz (programs run under both libraries, :mod:`pixyz_harness`).

Pixyz's ``set_dist`` calls ``self.get_params``, so a Pixyz program can change a distribution's parameters by
overriding it (or memoize an expensive encoder, with the decorator of ``pixyz.utils``). Where Pixyz's memo returns
values that recomputing would not (after an optimizer step, ...), ours recomputes: ``tests/utils/test_lru_cache.py``.
"""
from __future__ import annotations

from typing import Any

import pytest
from pixyz_harness import assert_same, run_both


def _overridden_get_params():
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import KullbackLeibler

    class Shifted(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["y"], name="q")
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, y):
            return {"loc": self.lin(y), "scale": torch.ones_like(y)}

        def get_params(self, params_dict={}, **kwargs):  # noqa: B006  (Pixyz's signature)
            out = super().get_params(params_dict, **kwargs)
            return {"loc": out["loc"] + 3.0, "scale": out["scale"] * 2.0}

    q = Shifted()
    prior = Normal(var=["z"], loc=torch.tensor(0.0), scale=torch.tensor(1.0), features_shape=[2], name="p")
    p_y = Normal(var=["y"], loc=torch.tensor(0.0), scale=torch.tensor(1.0), features_shape=[2], name="p_y")
    y, z = torch.randn(4, 2), torch.randn(4, 2)
    renamed = q.replace_var(y="w")
    return {
        "params": q.get_params({"y": y}),
        "mean": q.sample_mean({"y": y}),
        "variance": q.sample_variance({"y": y}),
        "log_prob": q.get_log_prob({"z": z, "y": y}),
        "entropy": q.get_entropy({"y": y}),
        "sample": q.sample({"y": y})["z"],
        "kl": KullbackLeibler(q, prior).eval({"y": y}),
        "kl_reversed": KullbackLeibler(prior, q).eval({"y": y}),
        "joint": (q * p_y).get_log_prob({"z": z, "y": y}),
        "renamed": renamed.get_log_prob({"z": z, "w": y}),
        "dist_mean": (q.set_dist({"y": y}), q.dist.mean)[1],
    }


def _overridden_get_params_of_a_constant_distribution():
    import torch
    from pixyz.distributions import Normal

    class Tempered(Normal):
        def get_params(self, params_dict={}, **kwargs):  # noqa: B006
            out = super().get_params(params_dict, **kwargs)
            return {"loc": out["loc"], "scale": out["scale"] * 0.5}

    p = Tempered(var=["x"], loc=torch.tensor(1.0), scale=torch.tensor(2.0), features_shape=[3])
    x = torch.randn(5, 3)
    return {"log_prob": p.get_log_prob({"x": x}), "sample": p.sample(batch_n=4)["x"], "mean": p.sample_mean(),
            "variance": p.sample_variance()}


def _memoized_encoder():
    import torch
    import pixyz.utils as utils
    from pixyz.distributions import Normal
    from pixyz.utils import lru_cache_for_sample_dict

    utils.set_cache_maxsize(2)
    calls = []

    class Encoder(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.lin = torch.nn.Linear(3, 2)

        def forward(self, x):
            calls.append(x.shape)
            return {"loc": self.lin(x), "scale": torch.ones(x.shape[0], 2)}

        @lru_cache_for_sample_dict()
        def get_params(self, params_dict={}, **kwargs):  # noqa: B006
            return super().get_params(params_dict, **kwargs)

    q = Encoder()
    x, other = torch.randn(4, 3), torch.randn(4, 3)
    z = q.sample({"x": x})["z"]
    out = {"z": z, "log_prob": q.get_log_prob({"z": z, "x": x}), "calls_same_input": len(calls)}
    out["again"] = q.sample({"x": x})["z"]
    out["calls_after_again"] = len(calls)
    out["other"] = q.sample_mean({"x": other})
    out["calls_other_input"] = len(calls)
    out["mean_first"] = q.sample_mean({"x": x})
    out["calls_back_to_first"] = len(calls)
    return out


def _overridden_get_params_of_an_expert():
    import torch
    from pixyz.distributions import Normal, ProductOfNormal

    class Doubled(Normal):
        def get_params(self, params_dict={}, **kwargs):  # noqa: B006
            out = super().get_params(params_dict, **kwargs)
            return {"loc": out["loc"] * 2, "scale": out["scale"]}

    a = Doubled(var=["z"], cond_var=["x"], loc="x", scale=torch.tensor(1.0), features_shape=[2], name="q_a")
    b = Normal(var=["z"], cond_var=["y"], loc="y", scale=torch.tensor(2.0), features_shape=[2], name="q_b")
    x, y = torch.randn(3, 2), torch.randn(3, 2)
    return {"params": ProductOfNormal([a, b]).get_params({"x": x, "y": y})}


PROGRAMS = [_overridden_get_params, _overridden_get_params_of_a_constant_distribution, _memoized_encoder,
            _overridden_get_params_of_an_expert]


@pytest.fixture(autouse=True)
def _restore_cache_size():  # type: ignore[no-untyped-def]
    """The memo program sets the cache size in both libraries: put both back."""
    import pixyz.utils as theirs

    import pyro_dgm.utils as ours

    saved = theirs.cache_maxsize(), ours.cache_maxsize()
    yield
    theirs.set_cache_maxsize(saved[0])
    ours.set_cache_maxsize(saved[1])


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda f: f.__name__.strip("_"))
def test_same_as_pixyz(program):
    ref, ours = run_both(program)
    assert_same(ref, ours)


def test_the_override_is_what_scores():
    """Not only the same numbers as Pixyz: the numbers of the overridden parameters (torch.distributions)."""
    import torch

    from pyro_dgm.distributions import Normal

    class Shifted(Normal):
        def get_params(self, params_dict={}, **kwargs):  # noqa: B006
            out = super().get_params(params_dict, **kwargs)
            return {"loc": out["loc"] + 3.0, "scale": out["scale"] * 2.0}

    q = Shifted(var=["z"], cond_var=["m"], loc="m", scale=torch.tensor(1.0), features_shape=[2])
    m, z = torch.randn(4, 2), torch.randn(4, 2)
    want = torch.distributions.Normal(m + 3.0, 2.0).log_prob(z).sum(-1)
    torch.testing.assert_close(q.get_log_prob({"z": z, "m": m}), want)
    torch.testing.assert_close(q.sample_mean({"m": m}), m + 3.0)


def prog_get_params_given_an_input_no_parameter_reads() -> Any:
    import torch
    from pixyz.distributions import Normal
    dist_1 = Normal(loc=0, scale=1, var=["x"])
    dist_2 = Normal(loc="z", scale=1., var=["x"], cond_var=["z"])
    return {"dist_1": dist_1.get_params({"z": 1}),
            "dist_2": dist_2.get_params({"z": torch.ones(2, 1), "w": torch.zeros(1)})}


def test_get_params_returns_the_parameters_only_pixyz_echoes_other_inputs() -> None:
    """The API reference's own example ``dist_1.get_params({"z": 1})`` shows ``{"loc": 0, "scale": 1}``; Pixyz's
    default ``forward`` returns its keyword arguments, so its dict also holds the input ``z`` (and ``w``) that no
    parameter reads (porting.md). The parameters themselves are equal."""
    ref, ours = run_both(prog_get_params_given_an_input_no_parameter_reads)
    assert ref["dist_1"].pop("z") == 1 and "w" in ref["dist_2"] and "z" not in ref["dist_2"]
    del ref["dist_2"]["w"]
    assert sorted(ours["dist_1"]) == sorted(ours["dist_2"]) == ["loc", "scale"]
    assert_same(ref, ours)
