"""Nineteenth round: a differential fuzz of the Distribution API (probe p85), under Pixyz 0.3.3 and here
(:mod:`pixyz_harness`).

- ``batch_n`` against inputs of another batch was refused (Pixyz: "Batch shape mismatch") only by a factor that read
  a given value directly: a factor reading it through a ``Deterministic`` (or reading a parent drawn under its own
  ``batch_n`` option, or an ``EmpiricalDistribution``'s value) drew the inputs' batch while the parentless factors
  drew ``batch_n``: one sample dict of two batch sizes.
- ``get_log_prob(feature_dims=[-1])`` of a product holding a Categorical (Dirichlet, Multinomial), whose element-wise
  log-density has no feature dim, summed that factor over its batch and added the sum to every row of the other
  factors' (Pixyz: "Two PDFs ... have different sizes").
- The keys of a product's ``sample()`` dict came in another order than Pixyz's when the values given held one of the
  product's own variables (Pixyz starts its pass from the inputs only), and ``inference()`` of a flow put the latent
  last, where Pixyz puts it first.
"""
from __future__ import annotations

from typing import Any

import pytest

from pixyz_harness import assert_same, raises_same, run_both


# ---------------------------------------------------------------- batch_n through a Deterministic

def prog_batch_n_through(kind: str, rows: int, batch_n: int) -> Any:
    import torch

    from pixyz.distributions import Deterministic, EmpiricalDistribution, Normal

    class Double(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["h"], cond_var=["z"], name="f")

        def forward(self, z: torch.Tensor) -> dict:
            return {"h": z * 2}

    q = Normal(loc="h", scale=1., var=["x"], cond_var=["h"], name="q")
    r = Normal(loc=0., scale=1., var=["s"], features_shape=[2], name="r")
    z = torch.randn(rows, 2)
    if kind == "deterministic":
        return (r * q * Double()).sample({"z": z}, batch_n=batch_n)
    px = Normal(loc="z", scale=1., var=["x"], cond_var=["z"], name="p")
    if kind == "empirical":
        return (px * EmpiricalDistribution(["z"])).sample({"z": z}, batch_n=batch_n)
    joint = px * Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p")
    joint.graph.set_option(dict(batch_n=rows), ["z"])  # the parent drawn with its own batch_n
    return joint.sample(batch_n=batch_n)


@pytest.mark.parametrize("kind", ["deterministic", "empirical", "parent option"])
def test_batch_n_against_another_batch_is_refused_through_a_deterministic_too(kind: str) -> None:
    # inputs of batch 1 are drawn batch_n times, inputs of batch_n once each: as before, as in Pixyz
    for rows, batch_n in [(1, 2), (3, 3)]:
        ref, ours = run_both(lambda: prog_batch_n_through(kind, rows, batch_n))
        assert_same(ref, ours)
    # was: a dict mixing batch 2 (s) and 3 (h, x) here, Pixyz's ValueError there
    ref, ours = raises_same(lambda: prog_batch_n_through(kind, rows=3, batch_n=2))
    assert issubclass(ref, ValueError) and issubclass(ours, ValueError), (ref, ours)


# ---------------------------------------------------------------- feature_dims over a factor without feature dims

def prog_feature_dims(family: str, order: str, **options: Any) -> Any:
    import torch

    from pixyz.distributions import Categorical, Dirichlet, Multinomial, Normal

    onehot = torch.eye(3)[[0, 2, 1]]
    other = {"Categorical": lambda: Categorical(var=["y"], probs=torch.tensor([0.2, 0.3, 0.5]), name="p"),
             "Dirichlet": lambda: Dirichlet(var=["y"], concentration=torch.tensor([1., 2., 3.]), name="p"),
             "Multinomial": lambda: Multinomial(var=["y"], probs=torch.tensor([0.2, 0.3, 0.5]), total_count=1,
                                                name="p")}[family]()
    n = Normal(var=["x"], loc=torch.tensor(0.), scale=torch.tensor(1.), features_shape=[2], name="p")
    data = {"y": (onehot + 1) / 4 if family == "Dirichlet" else onehot, "x": torch.randn(3, 2)}
    joint = n * other if order == "normal first" else other * n
    return joint.get_log_prob(data, **options)


@pytest.mark.parametrize("family", ["Categorical", "Dirichlet", "Multinomial"])
@pytest.mark.parametrize("order", ["normal first", "normal last"])
@pytest.mark.parametrize("feature_dims", [[-1], [0]])
def test_feature_dims_that_sum_a_factor_over_its_batch_are_refused(family: str, order: str,
                                                                   feature_dims: list[int]) -> None:
    # was: the factor's batch-summed log-density added to every row (or feature) of the Normal's
    ref, ours = raises_same(lambda: prog_feature_dims(family, order, feature_dims=feature_dims))
    assert issubclass(ref, ValueError) and issubclass(ours, ValueError), (ref, ours)


def test_feature_dims_that_sum_a_factor_over_its_batch_names_both_factors_and_shapes() -> None:
    import torch

    from pyro_dgm.distributions import Categorical, Normal

    c = Categorical(var=["y"], probs=torch.tensor([0.2, 0.3, 0.5]), name="p")
    n = Normal(var=["x"], loc=torch.tensor(0.), scale=torch.tensor(1.), features_shape=[2], name="p")
    with pytest.raises(ValueError, match=r"p\(x\) and p\(y\).*shape \(3,\).*shape \(\).*feature_dims=\[-1\] summed "
                                         r"the log-density of p\(y\) over its batch \('y' of shape \(3, 3\)"):
        (n * c).get_log_prob({"y": torch.eye(3), "x": torch.zeros(3, 2)}, feature_dims=[-1])


def prog_feature_dims_kept() -> Any:
    import torch

    from pixyz.distributions import Categorical, Normal

    c = Categorical(var=["y"], probs=torch.tensor([0.2, 0.3, 0.5]), name="p")
    w = Categorical(var=["w"], probs=torch.tensor([0.6, 0.4]), name="p")
    n = Normal(var=["x"], loc=torch.tensor(0.), scale=torch.tensor(1.), features_shape=[2], name="p")
    data = {"y": torch.eye(3), "w": torch.eye(2)[[0, 1, 0]], "x": torch.randn(3, 2)}
    return {"two categoricals": (c * w).get_log_prob(data, feature_dims=[-1]),
            "two categoricals, per element": (c * w).get_log_prob(data, sum_features=False),
            "summed": (n * c).get_log_prob(data)}


def test_feature_dims_refused_only_where_a_factor_was_summed_over_its_batch() -> None:
    # sizes that agree add, as in Pixyz; per-element log-densities of other sizes are refused, as before
    ref, ours = run_both(prog_feature_dims_kept)
    assert_same(ref, ours)
    ref, ours = raises_same(lambda: prog_feature_dims("Categorical", "normal first", sum_features=False))
    assert issubclass(ref, ValueError) and issubclass(ours, ValueError), (ref, ours)
    # was: a tensor of three equal values (log p(x_i) + sum_j log p(y_j))
    ref, ours = raises_same(lambda: prog_feature_dims("Categorical", "normal first", feature_dims=[-1]))
    assert issubclass(ref, ValueError) and issubclass(ours, ValueError), (ref, ours)


# ---------------------------------------------------------------- key order of sample() given a variable

def prog_sample_given_variables() -> dict[str, Any]:
    import torch

    from pixyz.distributions import Deterministic, Normal

    class Double(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["d"], cond_var=["z"], name="f")

        def forward(self, z: torch.Tensor) -> dict:
            return {"d": z * 2}

    o = torch.ones(1, 1)
    pz = Normal(var=["z"], loc=torch.tensor(0.), scale=torch.tensor(1.), features_shape=[1], name="p")
    px = Normal(var=["x"], cond_var=["z"], loc="z", scale=1., name="p")
    py = Normal(var=["y"], cond_var=["z"], loc="z", scale=1., name="p")
    qh = Normal(var=["h"], cond_var=["s"], loc="s", scale=1., name="q")
    qt = Normal(var=["h"], cond_var=["s", "t"], loc="s", scale="t", name="q")
    calls = {"p(x|z)p(z) x": lambda ra: (px * pz).sample({"x": o}, return_all=ra),
             "p(x|z)p(z) e, x": lambda ra: (px * pz).sample({"e": o, "x": o}, return_all=ra),
             "three factors y, x": lambda ra: (px * pz * py).sample({"y": o, "x": o}, return_all=ra),
             "q(h|s)p(z) s, z": lambda ra: (qh * pz).sample({"s": o, "z": o}, return_all=ra),
             "q(h|s)p(z) e, z, s": lambda ra: (qh * pz).sample({"e": o, "z": o, "s": o}, return_all=ra),
             "p(z)q(h|s) s, h, z": lambda ra: (pz * qh).sample({"s": o, "h": o, "z": o}, return_all=ra),
             "q(h|s,t)p(z) t, z, s": lambda ra: (qt * pz).sample({"t": o, "z": o, "s": o}, return_all=ra),
             "marginal z": lambda ra: (px * pz * py).marginalize_var("z").sample({"z": o}, return_all=ra),
             "marginal x, z": lambda ra: (px * pz * py).marginalize_var("z").sample({"x": o, "z": o},
                                                                                   return_all=ra),
             "marginal y": lambda ra: (px * pz * py).marginalize_var("z").sample({"y": o}, return_all=ra),
             "renamed joint x": lambda ra: (px * pz).replace_var(z="w").sample({"x": o}, return_all=ra),
             "deterministic d": lambda ra: (px * Double() * pz).sample({"d": o}, return_all=ra),
             "deterministic x, d": lambda ra: (px * Double() * pz).sample({"x": o, "d": o}, return_all=ra)}
    return {f"{name}, return_all={ra}": call(ra) for name, call in calls.items() for ra in (True, False)}


def test_sample_keys_in_pixyz_order_when_a_variable_is_given() -> None:
    # was, e.g.: p(x|z)p(z).sample({"x": ...}, return_all=False) -> ['x', 'z'] (Pixyz: ['z', 'x']);
    # q(h|s)p(z).sample({"s": ..., "z": ...}) -> ['s', 'z', 'h'] (Pixyz: ['z', 's', 'h'])
    ref, ours = run_both(prog_sample_given_variables)
    assert_same(ref, ours)
    assert {k: list(v) for k, v in ours.items()} == {k: list(v) for k, v in ref.items()}


def prog_flow_inference() -> dict[str, Any]:
    import torch
    from torch import nn

    from pixyz.distributions import InverseTransformedDistribution, Normal
    from pixyz.flows import AffineCoupling, FlowList

    prior = Normal(var=["z"], loc=torch.tensor(0.), scale=torch.tensor(1.), features_shape=[2], name="p")
    p = InverseTransformedDistribution(prior=prior, var=["x"], flow=FlowList(
        [AffineCoupling(2, scale_net=nn.Linear(2, 2), translate_net=nn.Linear(2, 2))]))
    x = torch.randn(3, 2)
    return {"x": p.inference({"x": x}), "e, x": p.inference({"e": x, "x": x}),
            "x only": p.inference({"x": x}, return_all=False)}


def test_flow_inference_puts_the_latent_first() -> None:
    ref, ours = run_both(prog_flow_inference)
    assert_same(ref, ours)
    assert {k: list(v) for k, v in ours.items()} == {k: list(v) for k, v in ref.items()}  # was ['x', 'z']
