"""``dist.graph`` (Pixyz's ``DistGraph`` and ``Factor``), the families' torch-object API (``params_keys``,
``distribution_torch_class``, ``set_dist``, ``dist``, ``get_sample``) and the positional options of ``sample`` of the
special distributions and mixtures, under Pixyz 0.3.3 and under pyro_dgm (only the import renamed).

Each program runs from the same seed under both libraries (``pixyz_harness.run_both``); results are compared in
value, shape, dtype and text. The last section shows where Pixyz 0.3.3 is wrong and we are not (both values, and why).
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, raises_same, renamed_import, run_both, run_pixyz, run_pyro_dgm, same


def _factor_view(f):  # type: ignore[no-untyped-def]
    """What a program reads of a Factor (all public). Of ``name_dict`` (global -> local names) only the entries of
    the factor's own variables: Pixyz also records, in every factor a renaming touches, the entries of the other
    factors' variables, which its factor never uses."""
    own = set(f.var) | set(f.cond_var) | set(f.input_var)
    return (f.prob_text, f.var, f.cond_var, f.input_var, {k: v for k, v in f.name_dict.items() if k in own},
            dict(f.option), str(f), f.dist.prob_text, f.dist.var)


def _graph_view(g):  # type: ignore[no-untyped-def]
    return dict(name=g.name, var=g.var, cond_var=g.cond_var, input_var=g.input_var, all_var=g.all_var,
                marginalize_list=sorted(g.marginalize_list), has_reparam=g.has_reparam, prob_text=g.prob_text,
                prob_factorized_text=g.prob_factorized_text, text=g.prob_joint_factorized_and_text, str=str(g),
                repr=repr(g), factors=[_factor_view(f) for f in g.factors()],
                sorted_factors=[f.prob_text for f in g.factors(sorted=True)])


# ---------------------------------------------------------------------------------------------- DistGraph queries
def prog_graph_of_an_atomic_distribution():
    import torch
    from pixyz.distributions import Normal
    p = Normal(var=["x"], cond_var=["y"], loc="y", scale=torch.ones(2), name="q")
    g = p.graph
    return _graph_view(g), g.distribution("x").prob_text


def prog_graph_of_a_joint():
    import torch
    from pixyz.distributions import Bernoulli, Normal
    prior = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2), name="p_{prior}")
    px = Bernoulli(var=["x"], cond_var=["z", "y"], probs="z", name="p")
    py = Normal(var=["y"], loc=torch.zeros(2), scale=1.)
    joint = px * prior * py
    return _graph_view(joint.graph), joint.graph.distribution("z").name


def prog_graph_of_a_renamed_joint():
    import torch
    from pixyz.distributions import Normal
    p = Normal(var=["x"], cond_var=["z"], loc="z", scale=1.) * Normal(var=["z"], loc=torch.zeros(2), scale=1.)
    r = p.replace_var(z="w", x="a")
    d = r.graph.distribution("w")  # Pixyz's factor holds the atomic distribution under its own names
    return _graph_view(r.graph), d.var, d.prob_text


def prog_graph_of_a_marginal():
    import torch
    from pixyz.distributions import Normal
    p = Normal(var=["x"], cond_var=["z"], loc="z", scale=1.) * Normal(var=["z"], loc=torch.zeros(2), scale=1.)
    m = p.marginalize_var(["z"])
    return _graph_view(m.graph)


def test_graph_of_an_atomic_distribution():
    same(prog_graph_of_an_atomic_distribution)


def test_graph_of_a_joint():
    same(prog_graph_of_a_joint)


def test_graph_of_a_renamed_joint():
    same(prog_graph_of_a_renamed_joint)


def test_graph_of_a_marginal():
    same(prog_graph_of_a_marginal)


def prog_factor_option_set_through_the_graph():
    import torch
    from pixyz.distributions import Normal
    dist = Normal(var=["x"], cond_var=["y"], loc="y", scale=1.) * Normal(var=["y"], loc=torch.zeros(2), scale=1.)
    g = dist.graph
    g.set_option({"batch_n": 3}, ["y"])
    options = [dict(f.option) for f in g.factors()]
    shapes = {k: v.shape for k, v in dist.sample().items()}
    g.set_option({}, ["y"])
    reset = {k: v.shape for k, v in dist.sample().items()}
    g.set_option({"sum_features": False})  # global options
    return options, shapes, reset, g.global_option, dist.get_log_prob(dist.sample(batch_n=2))


def test_factor_option_set_through_the_graph():
    same(prog_factor_option_set_through_the_graph)


# ---------------------------------------------------------------------------------------------- DistGraph computations
def prog_graph_sample_and_log_prob():
    import torch
    from pixyz.distributions import Normal
    dist = Normal(var=["x"], cond_var=["y"], loc="y", scale=1.) * Normal(var=["y"], loc=torch.zeros(2), scale=1.)
    g = dist.graph
    s = g.sample(batch_n=3)
    s2 = g.sample({"y": torch.ones(3, 2)}, return_all=False)
    s3 = g.forward("sample", {"batch_n": 2})
    return (s, s2, s3, g.get_log_prob(s), g.get_log_prob(s, sum_features=False),
            g.forward("get_log_prob", {"x_dict": s}))


def prog_graph_moments_of_one_variable():
    import torch
    from pixyz.distributions import Normal
    p = Normal(var=["x"], cond_var=["y"], loc="y", scale=torch.full((2,), 3.))
    y = {"y": torch.ones(4, 2)}
    g = p.graph
    return g.get_params(y), g.sample_variance(y), g.get_entropy(y), g.get_entropy(y, sum_features=False)


def prog_graph_moments_of_a_joint():
    import torch
    from pixyz.distributions import Normal
    dist = Normal(var=["x"], cond_var=["y"], loc="y", scale=1.) * Normal(var=["y"], loc=torch.zeros(2), scale=1.)
    return dist.graph.sample_variance({"y": torch.zeros(1, 2)})


def test_graph_sample_and_log_prob():
    same(prog_graph_sample_and_log_prob)


def test_graph_moments_of_one_variable():
    same(prog_graph_moments_of_one_variable)


def test_graph_moments_of_a_joint_raise():
    assert raises_same(prog_graph_moments_of_a_joint) == (NotImplementedError, NotImplementedError)


# ---------------------------------------------------------------------------------------------- DistGraph operations
def prog_graph_operations():
    import torch
    from pixyz.distributions import Normal
    from pixyz.distributions.distributions import DistGraph
    px = Normal(var=["x"], cond_var=["y"], loc="y", scale=1.)
    py = Normal(var=["y"], loc=torch.zeros(2), scale=1.)
    pz = Normal(var=["z"], loc=torch.zeros(2), scale=1.)
    empty = DistGraph()
    g = empty.appended(atom_dist=py)
    united = px.graph.united(g)
    copied = DistGraph(original=united)
    marg = united.marginalized(["y"])
    renamed = united.var_replaced({"y": "w"})
    appended = united.appended(pz)
    return (empty.var, empty.all_var, _graph_view(g), _graph_view(united), _graph_view(copied),
            _graph_view(marg), _graph_view(renamed), _graph_view(appended))


def test_graph_operations():
    same(prog_graph_operations)


def _raises_with_message(program):  # type: ignore[no-untyped-def]
    out = []
    for run in (run_pixyz, run_pyro_dgm):
        try:
            run(program)
        except ValueError as e:
            out.append(str(e))
        else:  # pragma: no cover - the assertion below reports it
            out.append(None)
    return out


def prog_united_conflict():
    from pixyz.distributions import Normal
    Normal(var=["x"], loc=0., scale=1.).graph.united(Normal(var=["x"], loc=0., scale=1.).graph)


def prog_united_with_a_renamed_self():
    import torch
    from pixyz.distributions import Normal
    p = Normal(var=["x"], loc=0., scale=1.)
    q = Normal(var=["y"], cond_var=["z"], loc="z", scale=1.)
    g = (p * q).graph.united(p.replace_var(x="a").graph)  # the same network under two names
    return _graph_view(g), g.sample({"z": torch.zeros(2, 1)})


def test_united_with_a_renamed_self():
    same(prog_united_with_a_renamed_self)


def prog_marginalized_empty():
    from pixyz.distributions import Normal
    (Normal(var=["x"], loc=0., scale=1.) * Normal(var=["y"], loc=0., scale=1.)).graph.marginalized([])


def prog_marginalized_everything():
    from pixyz.distributions import Normal
    (Normal(var=["x"], loc=0., scale=1.) * Normal(var=["y"], loc=0., scale=1.)).graph.marginalized(["x", "y"])


def prog_var_replaced_unknown():
    from pixyz.distributions import Normal
    Normal(var=["x"], loc=0., scale=1.).graph.var_replaced({"a": "b"})


def prog_var_replaced_conflict():
    from pixyz.distributions import Normal
    (Normal(var=["x"], loc=0., scale=1.) * Normal(var=["y"], loc=0., scale=1.)).graph.var_replaced({"x": "y"})


def prog_appended_existing_variable():
    from pixyz.distributions import Normal
    Normal(var=["x"], cond_var=["y"], loc="y", scale=1.).graph.appended(Normal(var=["y"], loc=0., scale=1.))


def test_graph_operation_errors_are_pixyz_s():
    for program in (prog_united_conflict, prog_marginalized_empty,
                    prog_marginalized_everything, prog_var_replaced_unknown, prog_var_replaced_conflict,
                    prog_appended_existing_variable):
        ref, ours = _raises_with_message(program)
        assert ref is not None and ref == ours, (program.__name__, ref, ours)


# ---------------------------------------------------------------------------------------------- the torch-object API
def prog_torch_object_api():
    import torch
    from pixyz.distributions import (Bernoulli, Beta, Categorical, Dirichlet, Gamma, Laplace, Multinomial, Normal,
                                     RelaxedBernoulli)
    families = [Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["x"]),
                Bernoulli(probs=torch.full((3,), .3), var=["x"]),
                RelaxedBernoulli(probs=torch.full((3,), .3), var=["x"]),
                Categorical(probs=torch.tensor([.2, .3, .5]), var=["x"]),
                Beta(concentration1=torch.full((3,), 2.), concentration0=torch.ones(3), var=["x"]),
                Gamma(concentration=torch.full((3,), 2.), rate=torch.ones(3), var=["x"]),
                Laplace(loc=torch.zeros(3), scale=torch.ones(3), var=["x"]),
                Dirichlet(concentration=torch.ones(3), var=["x"]),
                Multinomial(probs=torch.tensor([.2, .3, .5]), var=["x"])]
    out = {}
    for p in families:
        p.set_dist(batch_n=2)
        d = p.dist
        s = p.get_sample(sample_shape=[4])["x"]
        out[p.distribution_name] = (p.params_keys, d.batch_shape, d.event_shape, s, d.log_prob(s), d.mean,
                                    issubclass(p.distribution_torch_class, torch.distributions.Distribution),
                                    isinstance(d, p.distribution_torch_class))
    relaxed = families[2]
    relaxed.set_dist({}, sampling=True)  # the relaxed distribution Pixyz samples from
    out["relaxed"] = (relaxed.dist.batch_shape, relaxed.get_sample(reparam=True)["x"])
    return out


def prog_set_dist_of_a_conditional():
    import torch
    from torch import nn
    from torch.distributions import kl_divergence
    from pixyz.distributions import Normal

    class Q(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(3, 4)

        def forward(self, x):
            h = self.fc(x)
            return {"loc": h[:, :2], "scale": nn.functional.softplus(h[:, 2:])}

    q = Q()
    prior = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2))
    x = torch.randn(5, 3)
    q.set_dist({"x": x})
    prior.set_dist(batch_n=5)
    return (q.dist.loc, q.dist.scale, kl_divergence(q.dist, prior.dist), q.get_sample(reparam=True)["z"],
            q.dist.rsample().requires_grad)


def prog_set_dist_batch_mismatch():
    import torch
    from pixyz.distributions import Normal
    Normal(loc=torch.zeros(3), scale=1., var=["x"], cond_var=["y"]).set_dist({"y": torch.zeros(2, 3)}, batch_n=4)


def test_torch_object_api():
    same(prog_torch_object_api)


def test_set_dist_of_a_conditional():
    same(prog_set_dist_of_a_conditional)


def test_set_dist_batch_mismatch_raises():
    assert raises_same(prog_set_dist_batch_mismatch) == (ValueError, ValueError)


def test_dist_stays_our_builder_after_set_dist():
    """Our ``dist(x_dict, batch_n)`` (feature dims as event dims) still answers calls after a Pixyz-style
    ``set_dist``: the object ``set_dist`` stores is callable as the builder and remains a torch Normal."""
    from pyro_dgm.distributions import Normal

    p = Normal(loc=torch.zeros(3), scale=torch.full((3,), 2.), var=["x"])
    before = p.dist(batch_n=2)
    p.set_dist(batch_n=4)
    assert isinstance(p.dist, torch.distributions.Normal) and p.dist.batch_shape == (4, 3)
    after = p.dist(batch_n=2)
    assert before.batch_shape == after.batch_shape == (2,) and after.event_shape == (3,)
    x = torch.ones(2, 3)
    expected = torch.distributions.Normal(0., 2.).log_prob(x).sum(-1)
    torch.testing.assert_close(after.log_prob(x), expected)


# ---------------------------------------------------------------------------------------------- positional options
def prog_positional_options():
    import torch
    from pixyz.distributions import (Categorical, CustomProb, Deterministic, EmpiricalDistribution, MixtureModel,
                                     Normal)

    class F(Deterministic):
        def __init__(self):
            super().__init__(var=["y"], cond_var=["x"])

        def forward(self, x):
            return {"y": 2 * x}

    x = torch.randn(3, 2)
    det = F().sample({"x": x}, False)  # return_all=False, positionally
    data = EmpiricalDistribution(var=["x"]).sample({"x": x, "c": x}, False)
    comps = [Normal(loc=torch.full((2,), float(k)), scale=torch.ones(2), var=["x"], name=f"p_{k}") for k in range(2)]
    mix = MixtureModel(comps, Categorical(probs=torch.tensor([.3, .7]), var=["z"], name="prior"))
    hidden = mix.sample({}, 4, torch.Size(), True, True)  # return_hidden=True, positionally
    joint = mix.get_log_prob({"x": x}, True)  # return_hidden=True, positionally
    CustomProb(lambda y: -y ** 2, var=["x"])  # built: Pixyz calls the function only when scoring
    return det, data, sorted(hidden), hidden["x"].shape, joint


def prog_custom_prob_sample():
    from pixyz.distributions import CustomProb
    CustomProb(lambda x: -x ** 2, var=["x"]).sample({})


def prog_deterministic_forward_differs_from_cond_var():
    import torch
    from pixyz.distributions import Deterministic

    class F(Deterministic):
        def __init__(self):
            super().__init__(var=["y"], cond_var=["x"], name="f")

        def forward(self, w):
            return {"y": w}

    f = F()  # Pixyz builds it; it fails at the first call
    built = (f.prob_text, str(f))
    try:
        f.sample({"x": torch.zeros(1)})
    except (TypeError, ValueError):
        return built, "raised"
    return built, "ran"


def test_positional_options():
    same(prog_positional_options)


def test_custom_prob_cannot_sample():
    assert raises_same(prog_custom_prob_sample) == (NotImplementedError, NotImplementedError)


def test_deterministic_forward_differs_from_cond_var():
    same(prog_deterministic_forward_differs_from_cond_var)


# ---------------------------------------------------------------------------------------------- where Pixyz is wrong
def prog_graph_sample_mean():
    import torch
    from pixyz.distributions import Normal
    p = Normal(var=["x"], loc=torch.full((2,), 1.), scale=torch.full((2,), 3.))
    return p.graph.sample_mean({})


def test_graph_sample_mean_is_the_mean():
    """Pixyz's ``DistGraph.sample_mean`` returns each factor's ``sample_variance`` (9 for N(1, 3^2)); the mean of
    N(1, 3^2) is 1, which we return."""
    ref, ours = run_both(prog_graph_sample_mean)
    assert_same(ref, torch.full((1, 2), 9.))
    assert_same(ours, torch.full((1, 2), 1.))


def prog_relaxed_categorical_hard_dist():
    import torch
    from pixyz.distributions import RelaxedCategorical
    p = RelaxedCategorical(probs=torch.tensor([.2, .3, .5]), var=["x"])
    p.set_dist(batch_n=2)
    one_hot = torch.tensor([[0., 0., 1.], [1., 0., 0.]])
    return p.dist.batch_shape, p.dist.log_prob(one_hot)


def test_relaxed_categorical_scores_as_the_categorical():
    """Pixyz's ``RelaxedCategorical.set_dist()`` (not sampling) builds per-class Bernoullis, so a one-hot value of
    class c scores ``log p_c + sum_{k != c} log(1 - p_k)`` per class (shape [2, 3]); its probabilities over the
    classes do not sum to one. The categorical it relaxes scores ``log p_c`` (shape [2]), as our family does (see
    test_diff_distributions for sampling and scoring)."""
    ref, ours = run_both(prog_relaxed_categorical_hard_dist)
    p = torch.tensor([.2, .3, .5])
    one_hot = torch.tensor([[0., 0., 1.], [1., 0., 0.]])
    assert ref[0] == (2, 3)
    assert_same(ref[1], torch.distributions.Bernoulli(probs=p).log_prob(one_hot))
    assert ours[0] == (2,)
    assert_same(ours[1], p.log()[[2, 0]])


def prog_renamed_distribution_forwards_to_the_original():
    import torch
    from pixyz.distributions import Normal
    p = Normal(var=["x"], cond_var=["z"], loc="z", scale=torch.ones(2)).replace_var(x="y", z="w")
    p.set_dist({"z": torch.zeros(1, 2)})  # Pixyz forwards what the renamed distribution lacks, under the old names
    out = (p.params_keys, p.distribution_torch_class.__name__, p.dist.batch_shape, p.get_sample(sample_shape=[2]))
    try:
        p.set_dist({"w": torch.zeros(1, 2)})
    except ValueError:
        return out, "ValueError"
    return out, "ran"  # pragma: no cover - the comparison reports it


def test_renamed_distribution_forwards_to_the_original():
    same(prog_renamed_distribution_forwards_to_the_original)


def test_renamed_dist_stays_our_builder_after_set_dist():
    """After ``p.set_dist``, ``p.replace_var(...).dist`` is Pixyz's object and, called, builds under the new names."""
    from pyro_dgm.distributions import Normal

    p = Normal(var=["x"], cond_var=["z"], loc="z", scale=torch.ones(2))
    r = p.replace_var(x="y", z="w")
    p.set_dist({"z": torch.zeros(3, 2)})
    assert isinstance(r.dist, torch.distributions.Normal) and r.dist.batch_shape == (3, 2)
    built = r.dist({"w": torch.ones(4, 2)})
    assert built.batch_shape == (4,) and built.event_shape == (2,)
    torch.testing.assert_close(built.mean, torch.ones(4, 2))


def prog_graph_of_other_kinds():
    import torch
    from pixyz.distributions import (Categorical, Deterministic, MixtureModel, Normal, ProductOfNormal,
                                     TransformedDistribution)
    from pixyz.flows import PlanarFlow

    class F(Deterministic):
        def __init__(self):
            super().__init__(var=["y"], cond_var=["x"])

        def forward(self, x):
            return {"y": 2 * x}

    comps = [Normal(loc=torch.full((2,), float(k)), scale=torch.ones(2), var=["x"], name=f"p_{k}") for k in range(2)]
    mix = MixtureModel(comps, Categorical(probs=torch.tensor([.3, .7]), var=["z"], name="prior"))
    joint = F() * mix
    poe = ProductOfNormal([Normal(var=["z"], cond_var=["a"], loc="a", scale=1.)], name="q")
    flow = TransformedDistribution(prior=Normal(var=["w"], loc=torch.zeros(2), scale=1.), flow=PlanarFlow(2),
                                   var=["u"])
    return [_graph_view(d.graph) for d in (mix, joint, joint.replace_var(x="k"), poe, flow, poe * F())]


def test_graph_of_other_kinds():
    """Atomic distributions whose own formula is not their left side (mixture, product of experts, flow): the
    graph's text lists the factor's left side, as Pixyz's."""
    same(prog_graph_of_other_kinds)


def test_a_distribution_after_set_dist_pickles_and_copies():
    """``torch.save``/``copy.deepcopy`` of a distribution whose ``dist`` was set (as Pixyz's, which pickles)."""
    import copy
    import io

    from pyro_dgm.distributions import Normal

    p = Normal(loc=torch.zeros(2), scale=torch.full((2,), 2.), var=["x"])
    p.set_dist(batch_n=3)
    buf = io.BytesIO()
    torch.save(p, buf)
    buf.seek(0)
    for q in (torch.load(buf, weights_only=False), copy.deepcopy(p)):
        assert isinstance(q.dist, torch.distributions.Normal) and q.dist.batch_shape == (3, 2)
        torch.testing.assert_close(q.dist.scale, torch.full((3, 2), 2.))
        assert q.dist(batch_n=4).batch_shape == (4,)  # still our builder, now of the copy
        assert q.dist._dgm_owner is q


def prog_mixture_of_normal_set_dist():
    import torch
    from pixyz.distributions import MixtureOfNormal, Normal
    qx = Normal(loc="x", scale=torch.ones(2), var=["z"], cond_var=["x"], name="q_x")
    qy = Normal(loc="y", scale=torch.ones(2), var=["z"], cond_var=["y"], name="q_y")
    q = MixtureOfNormal([qx, qy], name="q")
    q.set_dist({"x": torch.zeros(4, 2), "y": torch.ones(4, 2)})
    return q.dist.mean, q.params_keys


def test_mixture_of_normal_set_dist_is_the_mixture():
    """q(z|x,y) = 1/2 N(x, 1) + 1/2 N(y, 1) with x = 0, y = 1 has mean 1/2 for every element. Pixyz's ``set_dist``
    builds one Normal whose rows are split between the experts (rows 0-1 from q_x, rows 2-3 from q_y: means 0 and 1),
    which is not the distribution its own ``get_log_prob`` scores; ours is the mixture (mean 1/2 everywhere)."""
    ref, ours = run_both(prog_mixture_of_normal_set_dist)
    assert ref[1] == ours[1] == ["loc", "scale"]
    assert_same(ref[0], torch.tensor([[0., 0.], [0., 0.], [1., 1.], [1., 1.]]))
    assert_same(ours[0], torch.full((4, 2), .5))


# ---------------------------------------------------------------------------------------------- sizes of a joint's terms
def prog_per_feature_log_prob_of_factors_with_other_features():
    import torch
    from pixyz.distributions import Normal
    joint = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["a"]) * Normal(
        loc=torch.zeros(3), scale=torch.ones(3), var=["b"])
    return joint.get_log_prob(joint.sample(batch_n=4), sum_features=False)


def prog_per_feature_log_prob_that_torch_would_broadcast():
    import torch
    from pixyz.distributions import Categorical, Gamma
    joint = Categorical(probs=torch.ones(2) / 2, var=["a"]) * Gamma(
        concentration=torch.ones(2), rate=torch.ones(2), var=["b"])
    return joint.get_log_prob(joint.sample(batch_n=1), sum_features=False)  # shapes (1,) and (1, 2)


@pytest.mark.parametrize("program", [prog_per_feature_log_prob_of_factors_with_other_features,
                                     prog_per_feature_log_prob_that_torch_would_broadcast],
                         ids=["other_features", "broadcastable"])
def test_factors_whose_log_densities_differ_in_size_are_refused_as_in_pixyz(program: Any) -> None:
    """Pixyz refuses to add two factors' log-densities of different sizes ("Two PDFs ... have different sizes");
    here the sum had raised torch's RuntimeError, or (batch 1) broadcast a categorical's one value per draw over the
    other factor's features. Now: Pixyz's ValueError, naming the factors, their variables and shapes."""
    ref, ours = raises_same(program)
    assert ref is ours is ValueError
    with renamed_import(), pytest.raises(ValueError, match=r"p\(a\) and p\(b\), have different sizes: the "
                                                           r"log-density of p\(a\) has shape .* \(variable b\)"):
        program()


def test_a_per_feature_log_prob_of_factors_with_one_feature_shape_is_pixyz_s() -> None:
    def program():
        import torch
        from pixyz.distributions import Laplace, Normal
        joint = Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["a"]) * Laplace(
            loc="a", scale=torch.ones(3), var=["b"], cond_var=["a"])
        return joint.get_log_prob(joint.sample(batch_n=4), sum_features=False)
    same(program)


def test_a_query_a_deterministic_map_lacks_is_named() -> None:
    """Pixyz's Deterministic recurses until Python stops it (RecursionError) on sample_variance; here the error says
    which query the distribution lacks (it had said "a product of 1 factors")."""
    def program():
        import torch
        from pixyz.distributions import Deterministic

        class Double(Deterministic):
            def __init__(self):
                super().__init__(var=["a"], cond_var=["x"])

            def forward(self, x):
                return {"a": 2 * x}
        return Double().sample_variance({"x": torch.ones(2, 1)})
    assert raises_same(program) == (RecursionError, NotImplementedError)
    with renamed_import(), pytest.raises(NotImplementedError, match=r"Double p\(a\|x\): sample_variance is not "
                                                                      r"defined for Double"):
        program()


def _sample_shape_draw_of_a_scalar_and_a_vector(batch_n: int) -> Any:
    def program():
        import torch
        from pixyz.distributions import Laplace, Normal
        y = Laplace(var=["y"], loc=torch.tensor(0.3), scale=1.2, name="p")  # scalar: its draws are [L, B]
        a = Normal(var=["a"], loc=torch.full((2,), 0.3), scale=1.2, name="p")  # features [2]: [L, B, 2]
        joint = a * y
        drawn = joint.sample(batch_n=batch_n, sample_shape=[2])
        return drawn, joint.get_log_prob(drawn), (y * a).get_log_prob(drawn), a.get_log_prob(drawn), y.get_log_prob(
            drawn)
    return program


@pytest.mark.parametrize("batch_n", [1, 2, 3], ids=lambda n: f"batch_{n}")
def test_a_sample_shape_draw_of_factors_of_other_ranks_scores_as_in_pixyz(batch_n: int) -> None:
    """A scalar factor's ``[L, B]`` draw scores to ``[L]`` (every dim but the first is summed, as in Pixyz), a vector
    factor's to ``[L, B]``. The sum had broadcast them from the right: with B = 1 or B = L it added each draw's
    scalar term to every batch element (silently other numbers: -14.8 for Pixyz's -11.3), with other B it raised.
    Now it is Pixyz's sum of the two factors' log-densities, each summed over every dim but the first."""
    ref, ours = same(_sample_shape_draw_of_a_scalar_and_a_vector(batch_n))
    drawn, joint, reversed_order, lp_a, lp_y = ours
    a_terms = torch.distributions.Normal(0.3, 1.2).log_prob(drawn["a"]).sum((1, 2))
    y_terms = torch.distributions.Laplace(0.3, 1.2).log_prob(drawn["y"]).sum(1)
    torch.testing.assert_close(joint, a_terms + y_terms)
    torch.testing.assert_close(reversed_order, a_terms + y_terms)


def test_parameters_that_do_not_broadcast_raise_a_value_error_that_is_pixyzs_runtime_error() -> None:
    """torch raises RuntimeError (so Pixyz does) where parameters do not broadcast; ours names the distribution and
    the shapes, and is also a RuntimeError, so a Pixyz program's ``except RuntimeError`` still catches it."""
    def program():
        import torch
        from pixyz.distributions import Normal
        p = Normal(var=["b"], cond_var=["z"], loc="z", scale=torch.ones(3), name="p")
        return p.sample({"z": torch.zeros(2, 2)})
    assert raises_same(program)[0] is RuntimeError
    with renamed_import(), pytest.raises(RuntimeError, match=r"Normal p\(b\|z\): invalid parameters \(loc: "
                                                             r"\(2, 2\), scale: \(1, 3\)\)") as info:
        program()
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------------------------------------- moments of a marginal
def _marginal_program(order: str, query: str) -> Any:
    """p(x|y) q(w) with w integrated out: q(w) reads nothing of p's and nothing reads w, so it integrates to one
    and the marginal is p(x|y). Pixyz answers a marginal's ``get_params`` with its *last* factor's (``order``:
    whether that is p or the integrated q), and raises ``NotImplementedError`` for its other moments."""
    def program() -> Any:
        import torch
        from pixyz.distributions import Gamma, Normal

        p = Normal(var=["x"], cond_var=["y"], loc="y", scale=torch.full((2,), 3.), name="p")
        q = Gamma(concentration=torch.full((2,), 2.), rate=torch.ones(2), var=["w"], name="q")
        marginal = (q * p if order == "p last" else p * q).marginalize_var(["w"])
        y = {"y": torch.ones(4, 2)}
        of_p = {"params": p.get_params(y), "entropy": p.get_entropy(y), "mean": p.sample_mean(y),
                "variance": p.sample_variance(y)}
        answer = {"params": lambda: marginal.get_params(y), "entropy": lambda: marginal.get_entropy(y),
                  "mean": lambda: marginal.sample_mean(y), "variance": lambda: marginal.sample_variance(y)}[query]
        return answer(), of_p[query], q.get_params()
    return program


def test_the_parameters_of_a_marginal_are_those_of_the_factor_it_is_as_pixyz() -> None:
    ref, ours = run_both(_marginal_program("p last", "params"))
    assert_same(ref, ours)
    assert_same(ours[1], ours[0])  # p's parameters: the right answer, Pixyz's too when p is its last factor


@pytest.mark.parametrize("order", ["p last", "q last"])
@pytest.mark.parametrize("query", ["params", "entropy", "mean", "variance"])
def test_the_moments_of_a_marginal_are_those_of_the_factor_it_is(order: str, query: str) -> None:
    """Here every moment is p's, whatever the order of the product. Pixyz raises for the entropy, mean and variance
    (they go to the joint); its ``get_params`` answers with q's when q comes last (documented in porting.md)."""
    answer, of_p, of_q = run_pyro_dgm(_marginal_program(order, query))
    assert_same(of_p, answer)
    if query != "params":
        with pytest.raises(NotImplementedError):
            run_pixyz(_marginal_program(order, query))
    elif order == "q last":
        answer, _, of_q = run_pixyz(_marginal_program(order, query))
        assert_same(of_q, answer)


def _marginal_mean_and_log_prob(query: str) -> Any:
    import torch
    from pixyz.distributions import Gamma, Normal

    p = Normal(var=["x"], cond_var=["y"], loc="y", scale=torch.full((2,), 3.), name="p")
    q = Gamma(concentration=torch.full((2,), 2.), rate=torch.ones(2), var=["w"], name="q")
    marginal = (q * p).marginalize_var(["w"])
    values = {"x": torch.zeros(4, 2), "y": torch.ones(4, 2)}
    if query == "mean":
        return marginal.sample_mean(values), p.sample_mean(values)
    return marginal.get_log_prob(values)


def test_the_mean_of_a_marginal_is_its_factors_and_its_log_density_is_not_computed() -> None:
    """Pixyz's marginal ``sample_mean`` raises (it asks the joint), ours is p(x|y)'s; the log-density of a marginal is
    not computed in either (Pixyz's docstring of ``DistGraph._get_log_prob`` says so), even where it is p's."""
    with pytest.raises(NotImplementedError):
        run_pixyz(lambda: _marginal_mean_and_log_prob("mean"))
    mean, mean_of_p = run_pyro_dgm(lambda: _marginal_mean_and_log_prob("mean"))
    assert_same(mean_of_p, mean)
    torch.testing.assert_close(mean, torch.ones(4, 2))  # the loc, y
    assert raises_same(lambda: _marginal_mean_and_log_prob("log_prob")) == (NotImplementedError, NotImplementedError)


def _marginal_of_a_mixture() -> Any:
    import torch
    from pixyz.distributions import Normal

    p = Normal(var=["x"], cond_var=["z"], loc="z", scale=1., name="p")
    prior = Normal(var=["z"], loc=torch.zeros(2), scale=1., name="p_{prior}")
    return (p * prior).marginalize_var(["z"]).get_params({})


def test_the_parameters_of_a_true_mixture_are_refused_as_by_pixyz() -> None:
    """p(x) = ∫ p(x|z) p(z) dz is no Normal with parameters: both raise a ValueError (ours also a
    NotImplementedError, naming the factor that reads z)."""
    from pyro_dgm.utils.checks import NoClosedFormError

    pixyz_error, ours = raises_same(_marginal_of_a_mixture)
    assert pixyz_error is ValueError and issubclass(ours, NoClosedFormError) and issubclass(ours, ValueError)
    with pytest.raises(NoClosedFormError, match=r"p\(x\|z\) depends on the marginalized \['z'\]"):
        run_pyro_dgm(_marginal_of_a_mixture)


def prog_mixture_of_normal_log_prob():
    import torch
    from pixyz.distributions import MixtureOfNormal, Normal
    qx = Normal(loc="x", scale=torch.ones(2), var=["z"], cond_var=["x"], name="q_x")
    qy = Normal(loc="y", scale=torch.full((2,), 2.), var=["z"], cond_var=["y"], name="q_y")
    values = {"x": torch.zeros(3, 2), "y": torch.ones(3, 2), "z": torch.linspace(-1, 2, 6).reshape(3, 2)}
    return MixtureOfNormal([qx, qy], name="q").get_log_prob(values), values


def test_mixture_of_normal_log_prob_is_the_mixtures_pixyz_weights_the_log_densities():
    """Pixyz's MixtureOfNormal scores logsumexp_k(w_k log q_k(z)): the weight multiplies the log-density, so the value
    is not the log-density of any mixture (documented in docs/porting.md). Ours is log sum_k w_k q_k(z)."""
    (ref, values), (ours, _) = run_both(prog_mixture_of_normal_log_prob)
    z = values["z"]
    lx = torch.distributions.Normal(values["x"], 1.).log_prob(z).sum(-1)
    ly = torch.distributions.Normal(values["y"], 2.).log_prob(z).sum(-1)
    torch.testing.assert_close(ours, torch.logsumexp(torch.stack([lx, ly]) + torch.tensor(0.5).log(), 0))
    torch.testing.assert_close(ref, torch.logsumexp(torch.stack([0.5 * lx, 0.5 * ly]), 0))


def prog_product_with_a_marginal():
    """(∫ q(b|z) r(z) dz) * c(s|b), and the same factors the other way round: Pixyz unites the graphs, so the product
    holds every factor, draws them in its topological order and prints the integral over the whole product. We drew
    the marginal as one factor (other draws from the same seed) and printed r(b,s) = c(s|b)r(b)."""
    import torch
    import pixyz.distributions as pd

    r = pd.Bernoulli(probs=torch.full((2,), 0.3), var=["z"], name="r")
    q = pd.Normal(loc="z", scale=1., var=["b"], cond_var=["z"], name="q")
    c = pd.Normal(loc="b", scale=0.5, var=["s"], cond_var=["b"], name="c")
    w = pd.Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["w"], name="w")
    m = (r * q).marginalize_var(["z"])
    out = {}
    for name, joint in [("m * c", m * c), ("c * m", c * m), ("w * m", w * m), ("m * w", m * w)]:
        out[name] = (str(joint), repr(joint), joint.prob_text, list(joint.var), list(joint.cond_var),
                     joint.sample(batch_n=3))
    return out


def test_a_product_with_a_marginal_unites_the_graphs_as_pixyz():
    ref, _ = same(prog_product_with_a_marginal)
    assert ref["m * c"][0].splitlines()[1].strip() == r"r(b,s) = \int c(s|b)q(b|z)r(z)dz"


def prog_options_of_a_marginal():
    """Options on a marginal's graph reach its factors, the integrated one too (``set_option(..., ["z"])``), options
    set on the joint before marginalizing hold, and both carry into a product with the marginal, as Pixyz's graphs
    keep their factors' options. Ours ignored them: one draw where Pixyz drew three."""
    import torch
    import pixyz.distributions as pd

    r = pd.Bernoulli(probs=torch.full((2,), 0.3), var=["z"], name="r")
    q = pd.Normal(loc="z", scale=1., var=["b"], cond_var=["z"], name="q")
    c = pd.Normal(loc="b", scale=0.5, var=["s"], cond_var=["b"], name="c")
    m = (r * q).marginalize_var(["z"])
    m.graph.set_option({"batch_n": 3}, ["z"])
    out = {"marginal": m.sample(), "product": (m * c).sample()}
    joint = r * q
    joint.graph.set_option({"batch_n": 2}, ["z"])
    out["set on the joint"] = joint.marginalize_var(["z"]).sample()
    return out


def test_options_of_a_marginal_hold_as_in_pixyz():
    ref, _ = same(prog_options_of_a_marginal)
    assert ref["marginal"]["b"].shape == ref["product"]["s"].shape == (3, 2)
    assert ref["set on the joint"]["b"].shape == (2, 2)


def prog_global_options_carry():
    """Global options (``graph.set_option(opts)``, no variables) carry into products, renamings and marginals, as
    Pixyz's graphs copy them; a single distribution's own calls ignore its global options (Pixyz's run outside its
    graph) and they reach it as a factor. ``return_hidden`` is the option that shows: a mixture's component ``z``."""
    import torch
    import pixyz.distributions as pd

    experts = [pd.Normal(loc=torch.tensor([float(i)]), scale=torch.ones(1), var=["y"], name=f"p_{i}")
               for i in range(2)]
    prior = pd.Categorical(probs=torch.tensor([0.4, 0.6]), var=["z"], name="prior")
    mix = pd.MixtureModel(distributions=experts, prior=prior)
    c = pd.Normal(loc="y", scale=1., var=["x"], cond_var=["y"], name="r")
    mix.graph.set_option({"return_hidden": True})
    out = {"alone": mix.sample(batch_n=2), "product": (c * mix).sample(), "renamed": mix.replace_var(y="w").sample()}
    joint = c * mix
    out["product's"] = joint.graph.global_option
    out["marginal"] = joint.marginalize_var(["y"]).sample()
    mix.graph.set_option({})
    joint.graph.set_option({"return_hidden": True})
    out["marginal, set on the joint"] = joint.marginalize_var(["y"]).sample()
    out["renamed joint"] = joint.replace_var(x="a").sample()
    return out


def test_global_options_carry_into_products_renamings_and_marginals_as_in_pixyz():
    ref, _ = same(prog_global_options_carry)
    assert sorted(ref["alone"]) == ["y"] and sorted(ref["product"]) == ["x", "y", "z"]
    assert sorted(ref["marginal"]) == ["x", "z"] and sorted(ref["renamed"]) == ["w", "z"]


def prog_integrals_of_marginals():
    """The formulas of marginals over several variables: Pixyz writes the d's in the order of its set of them (which
    depends on the strings' hashes), also for marginals of marginals, renamed marginals and products with one. We
    wrote them in the order given, so most formulas differed from Pixyz's in the same process."""
    import itertools

    import torch
    import pixyz.distributions as pd

    names = list("abcdefg")
    joint = pd.Normal(loc=torch.zeros(1), scale=torch.ones(1), var=["a"], name="p")
    for parent, v in zip(names, names[1:]):
        joint = joint * pd.Normal(loc=parent, scale=1., var=[v], cond_var=[parent], name="p")
    out = []
    for k in (2, 3, 4):
        for chosen in itertools.combinations(names[:-1], k):
            m = joint.marginalize_var(list(chosen))
            out.append(m.prob_joint_factorized_and_text)
            if k == 2:
                twice = joint.marginalize_var([chosen[0]]).marginalize_var([chosen[1]])
                out.append(twice.prob_joint_factorized_and_text)
                out.append(m.replace_var(g="y").prob_joint_factorized_and_text)
                child = pd.Normal(loc="g", scale=1., var=["z"], cond_var=["g"], name="q")
                out.append((m * child).prob_joint_factorized_and_text)
    return out


def prog_inputs_of_mixtures_of_experts():
    """A mixture of experts lists its inputs in the order of Python's set of them, as Pixyz's: its formula and
    ``cond_var`` (we listed them in the experts' order: p(z|x,y) where Pixyz printed p(z|y,x) in the same process)."""
    import torch
    import pixyz.distributions as pd

    names = ["x", "y", "w", "u", "image", "text", "a", "b"]
    out = []
    for i in range(len(names) - 2):
        experts = [pd.Normal(loc=v, scale=torch.tensor(1.), var=["z"], cond_var=[v], name=f"q_{v}")
                   for v in names[i:i + 3]]
        m = pd.MixtureOfNormal(experts, name="q")
        out.append((m.cond_var, m.input_var, m.prob_text, m.replace_var(z="s").prob_text))
    return out


def test_the_integrals_of_a_marginal_are_in_pixyzs_order() -> None:
    same(prog_integrals_of_marginals)


def test_the_inputs_of_a_mixture_of_experts_are_in_pixyzs_order() -> None:
    same(prog_inputs_of_mixtures_of_experts)


def test_the_orders_of_pixyzs_sets_whatever_the_hash_seed() -> None:
    """The orders change with the process's hash seed: the same comparisons in processes of other seeds."""
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    code = ("import sys; sys.path.insert(0, %r); import test_diff_distgraph as t; "
            "t.test_the_integrals_of_a_marginal_are_in_pixyzs_order(); "
            "t.test_the_inputs_of_a_mixture_of_experts_are_in_pixyzs_order()" % here)
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", code], env=env, cwd=here, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
