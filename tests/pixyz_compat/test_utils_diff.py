"""``pixyz.utils``'s helpers give Pixyz's results here (programs run under both libraries, :mod:`pixyz_harness`)."""
from __future__ import annotations

import pytest
from pixyz_harness import assert_same, run_both


def _dict_helpers():
    import torch
    from pixyz.utils import (delete_dict_values, detach_dict, get_dict_values, replace_dict_keys,
                             replace_dict_keys_split)

    d = {"a": 1, "b": 2, "c": 3}
    x = torch.ones(2, requires_grad=True)
    detached = detach_dict({"x": x * 2, "y": x + 1})
    return {
        "get": get_dict_values(d, ["b"]),
        "get_order": get_dict_values(d, ["c", "a", "zz"]),
        "get_dict": get_dict_values(d, ["c", "b", "d"], True),
        "get_dict_keys": list(get_dict_values(d, ["c", "b"], return_dict=True)),
        "get_none": get_dict_values(d, []),
        "delete": delete_dict_values(d, ["b", "d"]),
        "delete_keys": list(delete_dict_values(d, ["a"])),
        "detach": detached, "detach_grad": [v.requires_grad for v in detached.values()],
        "replace": replace_dict_keys(d, {"a": "x", "b": "y"}),
        "replace_keys": list(replace_dict_keys(d, {"c": "x", "e": "y"})),
        "split": replace_dict_keys_split({"a": 0, "b": 1, "c": 2}, {"a": "loc", "c": "scale"}),
    }


def _tolist_and_sums():
    import torch
    from pixyz.utils import sum_samples, tolist

    t = torch.arange(24.0).reshape(2, 3, 4)
    return {
        "tolist": [tolist(2), tolist([1, 2]), tolist([]), tolist((1, 2)), tolist("x"), tolist(None)],
        "sum_default_3d": sum_samples(t), "sum_default_2d": sum_samples(t[0]), "sum_default_1d": sum_samples(t[0, 0]),
        "sum_dims": sum_samples(t, [1]), "sum_dims_2": sum_samples(t, [0, 2]), "sum_empty": sum_samples(t, []),
        "sum_size": sum_samples(t, torch.Size([1, 2])),
    }


def _latex_names():
    from pixyz.utils import convert_latex_name

    return [convert_latex_name(n) for n in ("x", "z_prev", "alpha", "x1", "p_{prior}", "mu_1", "h_t", "beta2")]


def _settings():
    import torch
    from pixyz.utils import cache_maxsize, epsilon, set_cache_maxsize, set_epsilon

    default_eps = epsilon()
    before = torch.log(torch.tensor(0.0) + epsilon())
    set_epsilon(1e-3)
    changed = epsilon()
    after = torch.log(torch.tensor(0.0) + epsilon())
    set_epsilon(default_eps)
    old = cache_maxsize()
    set_cache_maxsize(100)
    size = cache_maxsize()
    set_cache_maxsize(old)
    return {"eps": default_eps, "changed": changed, "log_before": before, "log_after": after, "size": size,
            "restored": epsilon()}


def _frozen_sample_dict():
    import torch
    from pixyz.utils import FrozenSampleDict

    a = FrozenSampleDict({"x": torch.ones(2), "n": 3})
    return {"eq": a == FrozenSampleDict({"x": torch.ones(2), "n": 3}),
            "eq_order": a == FrozenSampleDict({"n": 3, "x": torch.ones(2)}),
            "ne_value": a == FrozenSampleDict({"x": torch.zeros(2), "n": 3}),
            "ne_keys": a == FrozenSampleDict({"x": torch.ones(2)}),
            "hash_same_objects": hash(a) == hash(FrozenSampleDict(a.dict)), "dict": a.dict}


def _lru_cache_decorator():
    import torch
    from pixyz.distributions import Normal
    from pixyz.utils import lru_cache_for_sample_dict

    class Encoder(Normal):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["y"])
            self.lin = torch.nn.Linear(1, 1)

        def forward(self, y):
            return {"loc": self.lin(y), "scale": torch.ones(1, 1)}

        @lru_cache_for_sample_dict()
        def get_params(self, params_dict={}, **kwargs):  # noqa: B006  (Pixyz's own example)
            return super().get_params(params_dict, **kwargs)

    e = Encoder()
    y = torch.tensor([[0.5]])
    first = e.get_params({"y": y})
    second = e.get_params({"y": y})
    return {"first": first, "second": second, "lp": e.get_log_prob({"x": y, "y": y})}


def _print_latex():
    import torch
    from pixyz.distributions import Normal
    from pixyz.utils import print_latex

    p = Normal(var=["x"], cond_var=["z"], loc="z", scale=torch.tensor(1.0))
    prior = Normal(var=["z"], loc=torch.tensor(0.0), scale=torch.tensor(1.0), name="p_{prior}")
    joint = p * prior
    # a distribution's graph too (Pixyz's DistGraph branch; it raised AttributeError here)
    return {"dist": print_latex(joint).data, "loss": print_latex(p.log_prob()).data,
            "graph": print_latex(joint.graph).data, "one factor's graph": print_latex(p.graph).data}


PROGRAMS = [_dict_helpers, _tolist_and_sums, _latex_names, _settings, _frozen_sample_dict, _lru_cache_decorator,
            _print_latex]


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda f: f.__name__.strip("_"))
def test_same_as_pixyz(program):
    ref, ours = run_both(program)
    assert_same(ref, ours)


def test_print_latex_of_something_else_is_a_type_error_naming_what_it_takes():
    """Pixyz fails on ``print_latex(3)`` with an UnboundLocalError; ours said that an int has no
    ``_dgm_latex_text``."""
    from pyro_dgm.utils import print_latex

    with pytest.raises(TypeError, match="print_latex: expected a distribution, its graph, a loss or a model, got int"):
        print_latex(3)


def test_cache_maxsize_default_is_ours():
    """Deliberate difference: Pixyz's global cache holds 20 entries by default; our memoizing scope 128 network
    results per loss evaluation (different things counted; no value depends on it, only how often networks run)."""
    import pixyz.utils

    import pyro_dgm.utils

    assert pixyz.utils.cache_maxsize() == 20
    assert pyro_dgm.utils.cache_maxsize() == 128
