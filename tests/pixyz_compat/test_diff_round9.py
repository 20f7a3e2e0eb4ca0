"""Ninth round: distributions and losses as torch modules, and documented parameters, under Pixyz 0.3.3 and here
(:mod:`pixyz_harness`).

- Pixyz runs a distribution's network as ``self(**inputs)``: a forward pre-hook (``with_kwargs=True``) or forward
  hook gets the inputs as keywords and may edit them there. The network was called with them by position here, so
  such a hook saw no inputs and its edit was dropped (a silently different density). A distribution without a
  network runs ``forward()`` under Pixyz too, so its hooks run.
- A loss called with Pixyz's keyword, ``loss(x_dict={...})``, or with no values, ``loss()`` (the operators' default
  ``x_dict={}``), raised a ``TypeError``.
- ``KullbackLeibler(q, p, dim=[])``: Pixyz tests ``if self.dim:``, so an empty list counts as not given (the sum over
  the feature dims); it gave the element-wise divergence here. That is now ``sum_features=False``, an opt-in.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, run_both


def prog_pre_hook_edits_the_inputs_by_name() -> Any:
    import torch
    from torch import nn

    from pixyz.distributions import Normal

    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z", "y"], name="p")
            self.fc = nn.Linear(2, 1)

        def forward(self, z: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": self.fc(torch.cat([z, y], -1)), "scale": torch.ones_like(z)}

    p = P()
    seen = []

    def pre(module: Any, args: tuple, kwargs: dict) -> Any:
        seen.append((len(args), sorted(kwargs)))
        return args, {**kwargs, "z": kwargs["z"] * 10}

    def post(module: Any, args: tuple, kwargs: dict, out: dict) -> dict:
        return {**out, "loc": out["loc"] + 1}

    p.register_forward_pre_hook(pre, with_kwargs=True)
    p.register_forward_hook(post, with_kwargs=True)
    z, y = torch.randn(3, 1), torch.randn(3, 1)
    x = torch.randn(3, 1)
    renamed = p.replace_var(z="w")  # the hook sees forward's own names
    out = {"mean": p.sample_mean({"z": z, "y": y}), "lp": p.get_log_prob({"x": x, "z": z, "y": y}),
           "renamed": renamed.get_log_prob({"x": x, "w": z, "y": y})}
    return out, seen[0]


def test_forward_hooks_see_the_inputs_by_name() -> None:
    (ref, ref_seen), (ours, ours_seen) = run_both(prog_pre_hook_edits_the_inputs_by_name)
    assert ref_seen == ours_seen == (0, ["y", "z"])
    assert_same(ref, ours)


def prog_hooks_of_a_distribution_without_network() -> Any:
    import torch

    from pixyz.distributions import Normal

    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
    calls = []
    prior.register_forward_pre_hook(lambda m, a: calls.append("pre"))
    prior.register_forward_hook(lambda m, a, o: calls.append("post"))
    lp = prior.get_log_prob({"z": torch.zeros(1, 2)})
    return lp, calls


def test_hooks_of_a_distribution_without_network_run() -> None:
    ref, ours = run_both(prog_hooks_of_a_distribution_without_network)
    assert ref[1] == ["pre", "post"]
    assert_same(ref, ours)


def test_a_deterministic_s_hooks_see_its_inputs_by_name() -> None:
    # Pixyz calls a Deterministic's forward directly (its hooks never run); here they run, as every network's
    from pyro_dgm.distributions import Deterministic

    class F(Deterministic):
        def __init__(self) -> None:
            super().__init__(var=["h"], cond_var=["x"], name="f")

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"h": x * 2}

    f, seen = F(), []
    f.register_forward_pre_hook(lambda m, a, kw: seen.append((a, float(kw["x"].sum()))), with_kwargs=True)
    assert torch.equal(f.sample({"x": torch.ones(2, 1)})["h"], torch.full((2, 1), 2.0))
    assert seen == [((), 2.0)]


def prog_loss_called_with_x_dict_keyword_or_nothing() -> Any:
    import torch

    from pixyz.distributions import Normal
    from pixyz.losses import KullbackLeibler

    q = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="q")
    prior = Normal(loc=torch.tensor(0.5), scale=torch.tensor(2.), var=["z"], features_shape=[1])
    x = {"x": torch.tensor([[1.0], [-1.0]])}
    kl = KullbackLeibler(q, prior)
    constant = KullbackLeibler(prior, Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"],
                                             features_shape=[1]))
    return {"keyword": kl.mean()(x_dict=x), "keyword_kl": kl(x_dict=x), "sum": kl.sum()(x),
            "none_mean": constant.mean()(), "none_plus": (constant.sum() + 1.0)(), "none_neg": (-constant)()}


def test_a_loss_called_with_x_dict_by_keyword_or_with_nothing() -> None:
    ref, ours = run_both(prog_loss_called_with_x_dict_keyword_or_nothing)
    assert_same(ref, ours)


def prog_loss_pre_hook_edits_x_dict() -> Any:
    import torch

    from pixyz.distributions import Normal
    from pixyz.losses import KullbackLeibler

    q = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="q", features_shape=[2])
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
    kl = KullbackLeibler(q, prior)
    seen = []

    def pre(module: Any, args: tuple, kwargs: dict) -> Any:
        seen.append((len(args), sorted(kwargs)))
        return args, {**kwargs, "x_dict": {"x": kwargs["x_dict"]["x"] * 0}} if "x_dict" in kwargs else kwargs

    kl.register_forward_pre_hook(pre, with_kwargs=True)
    x = torch.ones(3, 2)
    value = kl(x_dict={"x": x})[0]
    try:
        kl({"x": x}, x_dict={"x": x})
        both = "ran"
    except TypeError:
        both = "TypeError"
    return value, seen, both


def test_a_loss_s_pre_hook_sees_x_dict_by_keyword() -> None:
    (ref, ref_seen, ref_both), (ours, ours_seen, ours_both) = run_both(prog_loss_pre_hook_edits_x_dict)
    assert ref_seen == ours_seen == [(0, ["x_dict"]), (1, ["x_dict"])]
    assert ref_both == ours_both == "TypeError"  # values given twice: neither library picks one
    torch.testing.assert_close(ref, torch.zeros(3))
    assert_same(ref, ours)


def prog_kl_with_an_empty_dim() -> Any:
    import torch

    from pixyz.distributions import Normal
    from pixyz.losses import KullbackLeibler

    q = Normal(var=["z"], cond_var=["x"], loc="x", scale=torch.tensor(2.0), name="q", features_shape=[3])
    p = Normal(var=["z"], loc=torch.tensor(0.5), scale=torch.tensor(1.5), features_shape=[3])
    x = {"x": torch.tensor([[1.0, 0.0, 3.0], [2.0, -1.0, 0.0]])}
    return [KullbackLeibler(q, p, dim=d).eval(x) for d in (None, [], (), torch.Size([]), False, 1)]


def test_kl_with_an_empty_dim_sums_over_the_features_as_pixyz() -> None:
    ref, ours = run_both(prog_kl_with_an_empty_dim)
    assert ref[1].shape == (2,)
    assert_same(ref, ours)
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import KullbackLeibler

    q = Normal(var=["z"], cond_var=["x"], loc="x", scale=torch.tensor(2.0), name="q", features_shape=[3])
    p = Normal(var=["z"], loc=torch.tensor(0.5), scale=torch.tensor(1.5), features_shape=[3])
    x = torch.tensor([[1.0, 0.0, 3.0], [2.0, -1.0, 0.0]])
    empty = KullbackLeibler(q, p, dim=torch.tensor([])).eval({"x": x})  # (Pixyz: "Boolean value of Tensor with no
    torch.testing.assert_close(empty, ref[0])  # values is ambiguous"): as an empty list
    elementwise = KullbackLeibler(q, p, sum_features=False).eval({"x": x})  # the opt-in: one value per element
    N = torch.distributions.Normal
    expected = torch.distributions.kl_divergence(N(x, 2.0), N(0.5, 1.5))
    torch.testing.assert_close(elementwise, expected)
    torch.testing.assert_close(elementwise.sum(-1), ref[0])


def test_a_flow_scoring_a_value_of_another_dtype_names_it() -> None:
    # Pixyz scores its cached draw (stale: of the float32 flow); torch's matmul refuses the value here
    from pyro_dgm.distributions import Normal, TransformedDistribution
    from pyro_dgm.flows import FlowList, PlanarFlow
    from pyro_dgm.utils.checks import DTypeError

    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
    f = TransformedDistribution(prior, FlowList([PlanarFlow(2), PlanarFlow(2)]), var=["x"])
    s = f.sample(batch_n=3)
    f.double()
    with pytest.raises(DTypeError, match=r"TransformedDistribution p\(x\): cannot score 'x' of dtype torch.float32: "
                                         r"its parameters are torch.float64; convert the value with x.to"):
        f.get_log_prob(s)
    assert torch.isfinite(f.get_log_prob({"x": s["x"].double()})).all()


def prog_product_of_normals_with_constant_scales() -> Any:
    import torch

    from pixyz.distributions import Normal, ProductOfNormal

    a = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="a")
    b = Normal(loc="y", scale=torch.tensor(2.), var=["z"], cond_var=["y"], name="b")
    params = ProductOfNormal([a, b]).get_params({"x": torch.ones(1, 1), "y": torch.full((1, 1), 3.)})
    return params["loc"], params["scale"]


def test_a_product_of_normals_with_constant_scales_is_the_product() -> None:
    """Pixyz broadcasts the experts' means, of shape (1, 1), against their constant scales, of shape (1,), and gives
    two rows that are no product of the experts (porting.md); the product of N(0, 1) (the prior expert), N(1, 1)
    and N(3, 2^2) has precision 1 + 1 + 1/4 and mean (0 + 1 + 3/4) / 2.25."""
    (ref_loc, ref_scale), (loc, scale) = run_both(prog_product_of_normals_with_constant_scales)
    assert ref_loc.shape == (2, 1)
    torch.testing.assert_close(loc, torch.tensor([[1.75 / 2.25]]))
    torch.testing.assert_close(scale.expand_as(loc), torch.tensor([[2.25 ** -0.5]]))


def test_the_element_wise_kl_of_a_product_is_refused() -> None:
    """The element-wise divergences of two factors' variables cannot be one tensor (their features are different
    variables' features): each factor's is asked for separately."""
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import KullbackLeibler

    qa = Normal(var=["a"], cond_var=["x"], loc="x", scale=torch.tensor(1.0), name="q", features_shape=[3])
    qb = Normal(var=["b"], cond_var=["x"], loc="x", scale=torch.tensor(2.0), name="q", features_shape=[3])
    pa = Normal(var=["a"], loc=torch.tensor(0.0), scale=torch.tensor(1.0), features_shape=[3])
    pb = Normal(var=["b"], loc=torch.tensor(0.0), scale=torch.tensor(1.0), features_shape=[3])
    with pytest.raises(ValueError, match=r"sum_features=False gives the element-wise divergence of one variable; "
                                         r"q\(a,b\|x\) and p\(a,b\) are products"):
        KullbackLeibler(qa * qb, pa * pb, sum_features=False).eval({"x": torch.zeros(2, 3)})
    with pytest.raises(TypeError, match="sum_features must be True or False, got 'no'"):
        KullbackLeibler(qa, pa, sum_features="no")


def prog_a_hook_on_the_flow_of_an_inverse_flow_distribution() -> Any:
    import torch

    from pixyz.distributions import InverseTransformedDistribution, Normal
    from pixyz.flows import FlowList, PlanarFlow

    torch.manual_seed(1)
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="pz")
    flows = FlowList([PlanarFlow(2), PlanarFlow(2)])
    flows.register_forward_hook(lambda m, a, o: o * 2)
    d = InverseTransformedDistribution(prior=prior, flow=flows, var=["x"])
    return d.get_log_prob({"x": torch.randn(4, 2)})


def test_a_hook_on_the_flow_of_an_inverse_flow_distribution_does_not_run() -> None:
    """Pixyz runs the flow's forward directly (its module hooks never run there); scoring ran ``flow(x)`` here, so a
    hook's edit changed z but not the log-det: a density of nothing."""
    ref, ours = run_both(prog_a_hook_on_the_flow_of_an_inverse_flow_distribution)
    assert_same(ref, ours)


def prog_values_by_forward_s_own_name() -> Any:
    import torch

    from pixyz.distributions import Normal
    from pixyz.losses import LogProb
    from pixyz.losses.losses import Loss

    p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[2])

    class M(Loss):  # a Pixyz-style term whose forward names its values x
        def __init__(self) -> None:
            super().__init__(input_var=["x"])

        @property
        def _symbol(self) -> Any:
            import sympy
            return sympy.Symbol("m")

        def forward(self, x: dict = {}, **kwargs: Any) -> Any:  # noqa: B006 (Pixyz's signature)
            return p.get_log_prob(x), {}

    x = torch.zeros(3, 2)
    return LogProb(p)(x={"x": x})[0], M()(x={"x": x})[0]


def test_the_values_go_by_the_name_forward_gives_them() -> None:
    """Pixyz's ``LogProb.forward(x={}, ...)`` names the values ``x``, as may a user's term: ``loss(x={...})``."""
    ref, ours = run_both(prog_values_by_forward_s_own_name)
    assert_same(ref, ours)


def prog_data_paralleled_loss_returns_no_inputs() -> Any:
    import torch

    from pixyz.distributions import Normal
    from pixyz.losses import DataParalleledLoss, KullbackLeibler

    q = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="q", features_shape=[2])
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
    dp = DataParalleledLoss(KullbackLeibler(q, prior))
    d = {"x": torch.ones(3, 2)}
    return dp(d)[0], sorted(dp(d)[1]), sorted(dp.eval(d, return_dict=True, return_all=False)[1])


def test_a_data_paralleled_loss_returns_its_loss_s_samples_not_the_inputs() -> None:
    ref, ours = run_both(prog_data_paralleled_loss_returns_no_inputs)
    assert ref[1] == ref[2] == []
    assert_same(ref, ours)


def test_a_loss_called_without_its_inputs_names_them() -> None:
    # (Pixyz: a raw TypeError or IndexError; here it was a KeyError from deep inside the term)
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import MMD, IterativeLoss, LogProb
    from pyro_dgm.utils.checks import MissingVariableError

    q = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="q", features_shape=[2])
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2])
    p = Normal(loc="z", scale=torch.tensor(1.), var=["x"], cond_var=["z"], features_shape=[2])
    for loss in (MMD(q, prior), IterativeLoss(LogProb(p), max_iter=2, series_var=["x"])):
        for call in (lambda: loss(), lambda: loss({}), lambda: loss(x_dict={"y": 1})):
            with pytest.raises(MissingVariableError, match=r"missing input variable"):
                call()


def prog_user_terms_that_take_their_values_their_own_way() -> Any:
    import sympy
    import torch

    from pixyz.distributions import Normal
    from pixyz.losses.losses import Loss

    p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[2])
    default = {"x": torch.ones(3, 2)}

    class ByKeywords(Loss):  # forward(**kwargs): Pixyz's x_dict= reaches it as a keyword, loss() with nothing
        def __init__(self) -> None:
            super().__init__(input_var=["x"])

        @property
        def _symbol(self) -> Any:
            return sympy.Symbol("m")

        def forward(self, **kwargs: Any) -> Any:
            return p.get_log_prob(kwargs.get("x_dict", default)), {}

    class WithDefault(ByKeywords):  # declares x, reads it only if given: called, it is not checked (eval checks)
        def forward(self, x_dict: dict = {}, **kwargs: Any) -> Any:  # noqa: B006 (Pixyz's signature)
            return p.get_log_prob({"x": x_dict.get("x", default["x"] * 2)}), {}

    d = {"x": torch.full((3, 2), 0.5)}
    return (ByKeywords()(x_dict=d)[0], ByKeywords()()[0],
            torch.func.functional_call(ByKeywords(), {}, (), {"x_dict": d})[0],
            WithDefault()({})[0], WithDefault()()[0])


def test_user_terms_that_take_their_values_their_own_way() -> None:
    ref, ours = run_both(prog_user_terms_that_take_their_values_their_own_way)
    assert_same(ref, ours)


def prog_mixture_value_with_an_extra_leading_dim() -> Any:
    import torch

    from pixyz.distributions import Categorical, MixtureModel, Normal

    comps = [Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"], name="p0"),
             Normal(loc=torch.ones(2), scale=torch.ones(2), var=["x"], name="p1")]
    d = MixtureModel(comps, Categorical(probs=torch.tensor([.3, .7]), var=["z"], name="pz"))
    return d.get_log_prob({"x": torch.full((3, 4, 2), 0.3)})


def test_a_mixture_scores_each_point_of_an_extra_leading_dim() -> None:
    """Pixyz picks one component for a whole (4, 2) block (porting.md); each of the 4 points is a mixture point of
    its own here, as the leading sample dims of every family's value are."""
    ref, ours = run_both(prog_mixture_value_with_an_extra_leading_dim)
    N = torch.distributions.Normal
    x = torch.full((2,), 0.3, dtype=torch.float64)
    w = {0.0: torch.tensor(0.3, dtype=torch.float64).log(), 1.0: torch.tensor(0.7, dtype=torch.float64).log()}
    point = torch.logsumexp(torch.stack([w[m] + N(m, 1.0).log_prob(x).sum() for m in w]), 0)
    torch.testing.assert_close(ours, (4 * point).float().expand(3))
    block = torch.logsumexp(torch.stack([w[m] + 4 * N(m, 1.0).log_prob(x).sum() for m in w]), 0)
    torch.testing.assert_close(ref, block.float().expand(3))


def test_errors_raised_in_a_network_or_by_a_series_without_time_name_their_owner() -> None:
    # a network's own error keeps its type and gains a note naming the distribution (Pixyz adds nothing)
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import IterativeLoss, LogProb

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": {}["h"], "scale": x}

    with pytest.raises(KeyError) as info:
        Q().sample({"x": torch.zeros(2, 1)})
    assert info.value.__notes__ == ["while Q q(z|x) ran forward() on 'x': (2, 1)"]
    p = Normal(loc="z", scale=torch.tensor(1.0), var=["x"], cond_var=["z"])
    loss = IterativeLoss(LogProb(p), series_var=["x", "z"])
    with pytest.raises(TypeError, match=r"IterativeLoss: series_var 'x' has no time dim \(got \(\)\); its first dim "
                                        r"is time"):
        loss.eval({"x": torch.tensor(0.5), "z": torch.tensor(0.5)})


def prog_junk_names_and_options() -> Any:
    import torch

    from pixyz.distributions import Normal

    renamed = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="q").replace_var(z="")
    q = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="q")
    q.graph.set_option(3, ["z"])
    return renamed.prob_text, q.get_log_prob({"x": torch.zeros(2, 1), "z": torch.zeros(2, 1)})


def test_junk_names_and_options_are_refused() -> None:
    """Pixyz builds a distribution over a variable named '' and ignores options that are not a dict (porting.md)."""
    from pixyz_harness import run_pixyz

    assert run_pixyz(prog_junk_names_and_options)[0] == "q(|x)"
    from pyro_dgm.distributions import Normal

    q = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="q")
    with pytest.raises(TypeError, match=r"Normal q\(z\|x\)\.replace_var: the new name of 'z' must be a non-empty "
                                        r"string"):
        q.replace_var(z=3)
    with pytest.warns(UserWarning, match="is empty"):  # an empty name runs, as under Pixyz (test_diff_round14.py)
        assert q.replace_var(z="").prob_text == "q(|x)"
    with pytest.raises(TypeError, match=r"q\(z\|x\): set_option expects a dict of options, got int"):
        q.graph.set_option(3, ["z"])
