"""Twenty-fourth round: a product's ``sample(return_all=False)`` under Pixyz 0.3.3 and here (:mod:`pixyz_harness`).

Pixyz's graph returns, under ``return_all=False``, every value its pass wrote but the inputs and the marginalized
variables: a ``MixtureModel``'s component ``z`` (``return_hidden=True``, given to the call or by
``graph.set_option``) and a ``TransformedDistribution``'s prior sample among them. Here they were left out: only the
product's own variables came back (``['x', 'w']`` where Pixyz gives ``['x', 'z', 'w']``).

And ``get_log_prob(feature_dims=[-1])`` of a product of a Normal and a Categorical drawn with ``sample_shape=[L]``:
the Categorical's log-density, summed over its batch (it has no feature dim), has shape ``[L]``, the Normal's
``[L, B]``. Pixyz refuses the different sizes; here ``L == B`` (or ``L == 1``) let them broadcast, and each row got
the other factor's sums over the batch added across it.

And ``graph.set_option({"sum_features": False}, var)`` (or ``feature_dims``) on a product's factors: Pixyz sums each
factor as its own options say, so ``get_log_prob`` and ``LogProb`` give the element-wise ``(4, 2)``; here the call's
``sum_features=True`` summed the result again to ``(4,)``, and options on one factor only (sizes that differ, which
Pixyz refuses) were added.

The attack round on these fixes (probe p93) added: a flow's or mixture's hidden value given to a product's
``sample`` (drawn anew, as Pixyz's pass starts from the inputs only), a factor option equal to the call's (no
change), ``feature_dims`` summing a batch of one, and ``batch_n`` for a conditional flow given a batch of one.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, raises_same, run_both, run_pyro_dgm


def _mixture_product(how: str) -> Any:
    import torch

    from pixyz.distributions import Categorical, MixtureModel, Normal

    class Noisy(Normal):
        def __init__(self) -> None:
            super().__init__(var=["w"], cond_var=["x"], name="q")

        def forward(self, x: torch.Tensor) -> dict:
            return {"loc": 2 * x, "scale": torch.ones_like(x)}

    components = [Normal(loc=torch.tensor([float(k)]), scale=torch.ones(1), var=["x"], name=f"c{k}")
                  for k in range(2)]
    joint = Noisy() * MixtureModel(components, Categorical(probs=torch.tensor([0.3, 0.7]), var=["z"], name="r"))
    if how == "set_option":
        joint.graph.set_option({"return_hidden": True}, var=["x"])
        out = joint.sample(batch_n=3, return_all=False)
    else:
        out = joint.sample({"unused": torch.ones(1)}, batch_n=3, return_all=False, return_hidden=True)
    return list(out), out


@pytest.mark.parametrize("how", ["keyword", "set_option"])
def test_a_mixtures_component_comes_back_under_return_all_false(how: str) -> None:
    ref, ours = run_both(lambda: _mixture_product(how))
    assert_same(ref, ours)  # was: ['x', 'w'], the component z left out
    assert ours[0] == ["x", "z", "w"]


def _flow_product(how: str) -> Any:
    import torch

    from pixyz.distributions import Normal, TransformedDistribution
    from pixyz.flows import FlowList, PlanarFlow

    class Noisy(Normal):
        def __init__(self) -> None:
            super().__init__(var=["w"], cond_var=["y"], name="q")

        def forward(self, y: torch.Tensor) -> dict:
            return {"loc": y, "scale": torch.ones_like(y)}

    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], features_shape=[2], name="p")
    joint = Noisy() * TransformedDistribution(prior, FlowList([PlanarFlow(2)]), var=["y"])
    if how == "marginal":
        joint = joint.marginalize_var("y")
    elif how == "renamed":
        joint = joint.replace_var(w="v")
    out = joint.sample(batch_n=3, return_all=False, return_hidden=True)
    return list(out), out


@pytest.mark.parametrize("how", ["product", "marginal", "renamed"])
def test_a_flows_prior_sample_comes_back_under_return_all_false(how: str) -> None:
    ref, ours = run_both(lambda: _flow_product(how))
    assert_same(ref, ours)  # was: the prior's z left out
    assert "z" in ours[0]


def _chain(given: str) -> Any:
    import torch

    from pixyz.distributions import Normal

    p = Normal(loc="y", scale=1., var=["w"], cond_var=["y"], name="p")
    q = Normal(loc="u", scale=1., var=["y"], cond_var=["u"], name="q")
    values = {"u": torch.zeros(2, 2), "b": torch.ones(1)}
    if given == "own variable":
        values["y"] = torch.ones(2, 2)  # drawn anew by Pixyz's pass
    out = (p * q).sample(values, return_all=False)
    return list(out), out


@pytest.mark.parametrize("given", ["extra key", "own variable"])
def test_given_values_stay_out_under_return_all_false(given: str) -> None:
    ref, ours = run_both(lambda: _chain(given))
    assert_same(ref, ours)
    assert ours[0] == ["y", "w"]


def _feature_dims_after_sample_shape(n_samples: int) -> Any:
    import torch

    from pixyz.distributions import Categorical, Normal

    n = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"], features_shape=[2], name="p")
    c = Categorical(probs=torch.tensor([0.2, 0.3, 0.5]), var=["y"], name="p")
    joint = n * c
    values = joint.sample(batch_n=3, sample_shape=[n_samples])
    return joint.get_log_prob(values, feature_dims=[-1])


@pytest.mark.parametrize("n_samples", [3, 1, 4])
def test_feature_dims_that_sum_a_categoricals_batch_are_refused_after_sample_shape(n_samples: int) -> None:
    ref, ours = raises_same(lambda: _feature_dims_after_sample_shape(n_samples))
    assert issubclass(ours, ref)  # was: a (3, 3) tensor for n_samples = 3 and (1, 3) for 1, each row wrong


def test_a_value_without_sample_dims_still_adds_to_one_drawn_with_them() -> None:
    import torch

    from pyro_dgm.distributions import Normal

    p = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"], features_shape=[2], name="p")
    q = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["y"], features_shape=[2], name="q")
    values = {"x": torch.randn(4, 3, 2), "y": torch.randn(3, 2)}  # x drawn with sample_shape [4], y given
    lp = (p * q).get_log_prob(values, feature_dims=[-1])
    torch.testing.assert_close(lp, p.get_log_prob(values, feature_dims=[-1]) + q.get_log_prob(values,
                                                                                          feature_dims=[-1]))
    assert lp.shape == (4, 3)


def _factor_options(option: dict, var: list, how: str) -> Any:
    import torch

    from pixyz.distributions import Normal
    from pixyz.losses import LogProb

    a = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p_a")
    b = Normal(loc="z", scale=torch.tensor(1.), var=["y"], cond_var=["z"], name="p_b")
    joint = b * a
    joint.graph.set_option(option, var)
    values = {"z": torch.randn(4, 2), "y": torch.randn(4, 2)}
    return joint.get_log_prob(values) if how == "get_log_prob" else LogProb(joint).eval(values)


@pytest.mark.parametrize("how", ["get_log_prob", "LogProb"])
@pytest.mark.parametrize("option", [{"sum_features": False}, {"feature_dims": []}], ids=["sum_features", "dims"])
def test_factor_options_set_by_graph_set_option_sum_the_factors(option: dict, how: str) -> None:
    ref, ours = run_both(lambda: _factor_options(option, ["z", "y"], how))
    assert_same(ref, ours)
    assert ours.shape == (4, 2)  # was (4,): the call's sum_features=True summed the factors' element-wise values


@pytest.mark.parametrize("how", ["get_log_prob", "LogProb"])
def test_a_factor_option_on_one_factor_makes_sizes_differ(how: str) -> None:
    ref, ours = raises_same(lambda: _factor_options({"sum_features": False}, ["y"], how))
    assert issubclass(ours, ref)  # was: the two summed and added


# ---------------------------------------------------------------- the attack round on the fixes above (probe p93)
def _flow_given_its_hidden(return_all: bool) -> Any:
    import torch

    from pixyz.distributions import Normal, TransformedDistribution
    from pixyz.flows import PlanarFlow

    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p0")
    flow = TransformedDistribution(prior, PlanarFlow(2), var=["x"], name="pf")
    joint = Normal(loc="x", scale=torch.ones(2), var=["o"], cond_var=["x"], name="po") * flow
    joint.graph.set_option({"return_hidden": True}, var=["x"])
    out = joint.sample({"z": torch.zeros(1, 2)}, return_all=return_all)
    return list(out), out


@pytest.mark.parametrize("return_all", [True, False])
def test_a_products_flow_given_its_hidden_value_returns_the_one_it_drew(return_all: bool) -> None:
    """Pixyz's pass starts from the inputs only: the flow draws z anew, and x = f(z) comes back with that z. Here
    the given z came back beside an x it did not make (return_all=True), or was left out (False)."""
    ref, ours = run_both(lambda: _flow_given_its_hidden(return_all))
    assert_same(ref, ours)
    assert not torch.equal(ours[1]["z"], torch.zeros(1, 2))


def _mixture_given_its_component(return_all: bool, hidden: bool) -> Any:
    import torch

    from pixyz.distributions import Categorical, MixtureModel, Normal

    components = [Normal(loc=torch.tensor([float(k)]), scale=torch.ones(1), var=["y"], name=f"c{k}") for k in (0, 3)]
    mixture = MixtureModel(components, Categorical(probs=torch.tensor([0.5, 0.5]), var=["k"], name="r"))
    joint = Normal(loc="y", scale=1., var=["o"], cond_var=["y"], name="po") * mixture
    options = {"return_hidden": True} if hidden else {}
    out = joint.sample({"k": torch.tensor([[1., 0.]]), "extra": torch.ones(1)}, batch_n=1, return_all=return_all,
                       **options)
    return list(out), out


@pytest.mark.parametrize("return_all", [True, False])
@pytest.mark.parametrize("hidden", [True, False])
def test_a_products_mixture_given_its_component_keeps_pixyzs_keys(return_all: bool, hidden: bool) -> None:
    ref, ours = run_both(lambda: _mixture_given_its_component(return_all, hidden), seed=4)
    assert_same(ref, ours)  # was: ['k', 'y', 'o'] where Pixyz draws k after y (return_all=False, return_hidden)


def _factor_options_after_sample_shape(option: dict) -> Any:
    import torch

    from pixyz.distributions import Normal
    from pixyz.losses import LogProb

    pz = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="pz")
    px = Normal(loc="z", scale=1., var=["x"], cond_var=["z"], name="px")
    joint = px * pz
    joint.graph.set_option(option, var=["x"])
    values = {"z": torch.randn(3, 4, 2), "x": torch.randn(3, 4, 2)}  # a sample_shape [3] draw of batch 4
    return joint.get_log_prob(values), LogProb(joint).eval(values)


def test_a_factor_option_that_is_the_calls_own_changes_nothing_after_sample_shape() -> None:
    ref, ours = run_both(lambda: _factor_options_after_sample_shape({"sum_features": True}))
    assert_same(ref, ours)
    assert ours[0].shape == (3,)  # was (3, 4): a factor option skipped the final sum


def test_a_factor_option_summing_features_only_is_refused_after_sample_shape() -> None:
    ref, ours = raises_same(lambda: _factor_options_after_sample_shape({"feature_dims": [-1]}))
    assert issubclass(ours, ref)  # was: a (3, 4) tensor (Pixyz's factors without options give (3,))


def _feature_dims_with_batch_1() -> Any:
    import torch

    from pixyz.distributions import Categorical, Normal

    pc = Categorical(probs=torch.tensor([0.2, 0.3, 0.5]), var=["c"], name="pc")
    px = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"], name="px")
    c = torch.eye(3)[torch.randint(3, (3, 1))]  # sample_shape 3, batch 1
    return (px * pc).get_log_prob({"c": c, "x": torch.randn(3, 1, 2)}, feature_dims=[-1])


def test_feature_dims_that_sum_a_categoricals_batch_of_one_are_refused() -> None:
    ref, ours = raises_same(_feature_dims_with_batch_1)
    assert issubclass(ours, ref)  # was: a (3, 3) outer sum of log p(x_i) + log p(c_j)


def _conditional_flow_batch_n() -> Any:
    import torch

    from pixyz.distributions import Normal, TransformedDistribution
    from pixyz.flows import PlanarFlow

    prior = Normal(loc="h", scale=1., var=["z"], cond_var=["h"], name="p")
    out = TransformedDistribution(prior, PlanarFlow(1), var=["x"]).sample({"h": torch.ones(1, 1)}, batch_n=5)
    return {k: tuple(v.shape) for k, v in out.items()}, out


def test_a_flow_with_a_conditional_prior_takes_batch_n_for_a_batch_of_one() -> None:
    ref, ours = run_both(_conditional_flow_batch_n)
    assert_same(ref, ours)  # was: x and z of shape (1, 1)
    assert ours[0]["x"] == (5, 1)


def _renamed_flow_given_its_hidden() -> Any:
    import torch

    from pixyz.distributions import Normal, TransformedDistribution
    from pixyz.flows import PlanarFlow

    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p0")
    flow = TransformedDistribution(prior, PlanarFlow(2), var=["x"], name="pf").replace_var(x="y")
    joint = Normal(loc="y", scale=torch.ones(2), var=["o"], cond_var=["y"], name="po") * flow
    out = joint.sample({"z": torch.zeros(1, 2)}, return_hidden=True)
    return list(out), out


def test_a_renamed_flow_given_its_hidden_value_returns_the_one_it_drew() -> None:
    """(the attack round on the fix above, p96: a renaming hid the flow's hidden name)"""
    ref, ours = run_both(_renamed_flow_given_its_hidden)
    assert_same(ref, ours)
    assert not torch.equal(ours[1]["z"], torch.zeros(1, 2))


def _conditional_flow_contradicting_batch_n() -> Any:
    import torch

    from pixyz.distributions import Normal, TransformedDistribution
    from pixyz.flows import PlanarFlow

    prior = Normal(loc="h", scale=1., var=["z"], cond_var=["h"], name="p")
    return TransformedDistribution(prior, PlanarFlow(2), var=["x"]).sample({"h": torch.ones(3, 2)}, batch_n=5)


def test_a_flow_with_a_conditional_prior_refuses_a_batch_n_its_inputs_contradict() -> None:
    """(p96) it drew 3 values silently, where Pixyz raises "Batch shape mismatch" and a family in its place a
    ShapeError"""
    ref, ours = raises_same(_conditional_flow_contradicting_batch_n)
    assert issubclass(ours, ref)
    with pytest.raises(ValueError, match=r"TransformedDistribution p\(x\|h\): batch_n=5 does not match the batch "
                                         r"size 3"):
        run_pyro_dgm(_conditional_flow_contradicting_batch_n)


def _conditional_flow_without_a_batch_dim() -> Any:
    import torch

    from pixyz.distributions import Normal, TransformedDistribution
    from pixyz.flows import PlanarFlow

    prior = Normal(loc="h", scale=1., var=["z"], cond_var=["h"], name="p")
    out = TransformedDistribution(prior, PlanarFlow(2), var=["x"]).sample({"h": torch.ones(2)})
    return {k: tuple(v.shape) for k, v in out.items()}, out


def test_a_flow_with_a_conditional_prior_given_an_input_without_a_batch_dim() -> None:
    """(p96) a raw AttributeError ('Independent' object has no attribute 'event_dim')"""
    ref, ours = run_both(_conditional_flow_without_a_batch_dim)
    assert_same(ref, ours)
