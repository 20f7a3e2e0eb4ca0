r"""Products of distributions and the graph operations on them (replace_var, marginalize_var).

Most factors below are "shift" Normals: :math:`v \sim \mathcal{N}(\sum \mathrm{parents} + \mathrm{offset}, \sigma)`
with a tiny :math:`\sigma` and offsets of different magnitudes (1, 10, 100, 1000), so each sampled value tells which
parents it was computed from: a factor drawn before its parents fails (KeyError) or gets the wrong offset sum.
"""
from __future__ import annotations

import itertools
import textwrap
from functools import reduce

import pytest
import torch
import torch.distributions as td
from torch import nn

from pyro_dgm.distributions import (CustomLikelihoodDistribution, CustomProb, DataDistribution, Deterministic,
                                    EmpiricalDistribution, MarginalizeVarDistribution, MultiplyDistribution, Normal,
                                    ReplaceVarDistribution)

SIGMA = 1e-3
FEAT = 2


class Shift(Normal):
    """:math:`p(v|\\mathrm{parents}) = \\mathcal{N}(\\sum \\mathrm{parents} + \\mathrm{offset}, \\mathrm{scale})`."""

    def __init__(self, var: str, cond_var: list[str], offset: float, name: str = "p", scale: float = SIGMA):
        super().__init__(var=[var], cond_var=cond_var, name=name)
        self.offset, self.s = offset, scale

    def forward(self, **parents):
        loc = sum(parents[v] for v in self.cond_var) + self.offset
        return {"loc": loc, "scale": torch.full_like(loc, self.s)}


def root(var: str, loc: float, name: str = "p", scale: float = SIGMA) -> Normal:
    return Normal(loc=loc, scale=scale, var=[var], features_shape=[FEAT], name=name)


def prod(factors):
    return reduce(lambda a, b: a * b, factors)


def paper(scale: float = SIGMA):
    """The paper's collider p1(x|y,a) p2(z|x,y) p3(a) p4(y), and the means of its variables."""
    fs = [Shift("x", ["y", "a"], 100., "p_{1}", scale), Shift("z", ["x", "y"], 1000., "p_{2}", scale),
          root("a", 1., "p_{3}", scale), root("y", 10., "p_{4}", scale)]
    return fs, {"a": 1., "y": 10., "x": 111., "z": 1121.}


def chain(scale: float = SIGMA):  # p(x|z) p(z|w) p(w)
    fs = [Shift("x", ["z"], 100., "p", scale), Shift("z", ["w"], 10., "q", scale), root("w", 1., "r", scale)]
    return fs, {"w": 1., "z": 11., "x": 111.}


def fork(scale: float = SIGMA):  # p(x|z) p(y|z) p(z)
    fs = [Shift("x", ["z"], 100., "p", scale), Shift("y", ["z"], 1000., "q", scale), root("z", 1., "r", scale)]
    return fs, {"z": 1., "x": 101., "y": 1001.}


def collider(scale: float = SIGMA):  # p(x|y,a) p(y) p(a)
    fs = [Shift("x", ["y", "a"], 100., "p", scale), root("y", 10., "q", scale), root("a", 1., "r", scale)]
    return fs, {"a": 1., "y": 10., "x": 111.}


def pair(scale: float = SIGMA):  # p(x|z) p_{prior}(z)
    fs = [Shift("x", ["z"], 100., "p", scale), root("z", 1., "p_{prior}", scale)]
    return fs, {"z": 1., "x": 101.}


GRAPHS = {"pair": pair, "chain": chain, "fork": fork, "collider": collider, "paper": paper}
CASES = [(g, perm) for g, make in GRAPHS.items() for perm in itertools.permutations(range(len(make()[0])))]


def check_means(values, means, atol=0.05):
    assert set(values) == set(means)
    for k, m in means.items():
        assert values[k].shape == (3, FEAT), k
        assert torch.allclose(values[k], torch.full_like(values[k], m), atol=atol), (k, values[k], m)


# ---------------------------------------------------------------------------------------------- sampling order
@pytest.mark.parametrize("graph,perm", CASES, ids=[f"{g}-{''.join(map(str, p))}" for g, p in CASES])
def test_sampling_is_topological_whatever_the_multiplication_order(graph, perm):
    factors, means = GRAPHS[graph]()
    joint = prod([factors[i] for i in perm])
    assert joint.input_var == [] and joint.cond_var == []
    check_means(joint.sample(batch_n=3), means)
    # the order is also topological for the factor list actually walked
    seen: set[str] = set()
    for f in joint.sampling_order:
        assert set(f.input_var) <= seen
        seen |= set(f.var)


@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_grouping_does_not_matter(graph):
    factors, means = GRAPHS[graph]()
    n = len(factors)
    left = prod(factors)
    right = reduce(lambda a, b: b * a, reversed(factors))  # f0 * (f1 * (f2 * ...))
    assert left.prob_factorized_text == right.prob_factorized_text
    assert left.var == right.var
    check_means(right.sample(batch_n=3), means)
    if n == 4:
        nested = (factors[0] * factors[1]) * (factors[2] * factors[3])
        assert nested.factors == tuple(factors)
        check_means(nested.sample(batch_n=3), means)


def test_sample_mean_gives_the_ancestral_means_exactly():
    factors, means = paper(scale=1.0)
    joint = factors[2] * factors[0] * factors[3] * factors[1]
    s = joint.sample(batch_n=3, sample_mean=True)
    for k, m in means.items():
        assert torch.equal(s[k], torch.full((3, FEAT), m)), k


def test_sample_mean_propagates_given_inputs():
    factors, _ = paper(scale=1.0)
    p12 = factors[0] * factors[1]  # p1(x,z|y,a)
    y, a = torch.full((2, FEAT), 3.), torch.full((2, FEAT), 5.)
    s = p12.sample({"y": y, "a": a}, sample_mean=True)
    assert torch.equal(s["x"], y + a + 100.)
    assert torch.equal(s["z"], s["x"] + y + 1000.)
    assert s["y"] is y and s["a"] is a


# ---------------------------------------------------------------------------------------------- log-densities
def _values(var_names, batch=4):
    g = torch.Generator().manual_seed(0)
    return {v: torch.randn(batch, FEAT, generator=g) * 3 for v in var_names}


@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_log_prob_is_the_sum_of_the_factors(graph):
    factors, _ = GRAPHS[graph](scale=0.7)
    joint = prod(factors[::-1])
    values = _values(joint.var)
    lp = joint.get_log_prob(values)
    assert lp.shape == (4,)
    assert torch.allclose(lp, sum(f.get_log_prob(values) for f in factors))
    # by hand with torch.distributions
    by_hand = torch.zeros(4)
    for f in factors:
        loc = sum((values[c] for c in f.cond_var), torch.zeros(4, FEAT)) + (f.offset if isinstance(f, Shift) else 0.)
        if not isinstance(f, Shift):
            loc = loc + f.loc
        by_hand += td.Normal(loc, 0.7).log_prob(values[f.var[0]]).sum(-1)
    assert torch.allclose(lp, by_hand)


def test_log_prob_of_the_paper_collider_by_hand():
    factors, _ = paper(scale=0.5)
    joint = factors[0] * factors[1] * factors[2] * factors[3]
    v = _values(["x", "y", "a", "z"])
    N = lambda loc, x: td.Normal(loc, 0.5).log_prob(x).sum(-1)  # noqa: E731
    expected = (N(v["y"] + v["a"] + 100., v["x"]) + N(v["x"] + v["y"] + 1000., v["z"])
                + N(torch.ones(4, FEAT), v["a"]) + N(torch.full((4, FEAT), 10.), v["y"]))
    assert torch.allclose(joint.get_log_prob(v), expected)
    # unsummed: one value per feature
    elem = joint.get_log_prob(v, sum_features=False)
    assert elem.shape == (4, FEAT)
    assert torch.allclose(elem.sum(-1), expected)


def test_log_prob_of_a_conditional_joint_needs_only_its_inputs():
    factors, _ = paper(scale=0.5)
    p12 = factors[1] * factors[0]  # p2(z|x,y) p1(x|y,a): x is generated, y and a are inputs
    assert p12.var == ["z", "x"] and p12.cond_var == ["y", "a"] and p12.input_var == ["y", "a"]
    v = _values(["x", "y", "a", "z"])
    assert torch.allclose(p12.get_log_prob(v), factors[0].get_log_prob(v) + factors[1].get_log_prob(v))


# ---------------------------------------------------------------------------------------------- text and graph
def test_text_of_the_paper_joint():
    factors, _ = paper()
    joint = prod(factors)
    # Pixyz 0.3.3's texts: variables in the order its graph holds them, factors from the last drawn to the first
    assert joint.var == ["x", "y", "a", "z"]
    assert joint.cond_var == [] and joint.input_var == []
    assert joint.name == "p"  # Pixyz's: a product's own label; its formulas use the graph's name, the first factor's
    assert joint.graph.name == "p_{1}"
    assert joint.prob_text == "p_{1}(x,y,a,z)"
    assert joint.prob_factorized_text == "p_{2}(z|x,y)p_{1}(x|y,a)p_{4}(y)p_{3}(a)"
    assert joint.prob_joint_factorized_and_text == "p_{1}(x,y,a,z) = p_{2}(z|x,y)p_{1}(x|y,a)p_{4}(y)p_{3}(a)"
    assert joint.distribution_name == ""  # Pixyz's MultiplyDistribution has no family name
    p12 = factors[0] * factors[1]
    assert p12.prob_joint_factorized_and_text == "p_{1}(x,z|y,a) = p_{2}(z|x,y)p_{1}(x|y,a)"
    # a single distribution has no factorization
    assert factors[0].prob_joint_factorized_and_text == "p_{1}(x|y,a)" == factors[0].prob_factorized_text


def readme_models():
    class Generator(Normal):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc1 = nn.Linear(4, 3)

        def forward(self, z):
            return {"loc": self.fc1(z), "scale": torch.ones(1)}

    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[4], name="p_{prior}")
    return Generator(), prior


PRIOR_TEXT = """\
Normal(
  name=p_{prior}, distribution_name=Normal,
  var=['z'], cond_var=[], input_var=[], features_shape=torch.Size([4])
  (loc): torch.Size([1, 4])
  (scale): torch.Size([1, 4])
)"""
GENERATOR_TEXT = """\
Generator(
  name=p, distribution_name=Normal,
  var=['x'], cond_var=['z'], input_var=['z'], features_shape=torch.Size([])
  (fc1): Linear(in_features=4, out_features=3, bias=True)
)"""


def _ind(text):
    return textwrap.indent(text, "  ")


def test_print_is_shaped_like_the_pixyz_readme():
    p, prior = readme_models()
    assert str(p) == f"Distribution:\n  p(x|z)\nNetwork architecture:\n{_ind(GENERATOR_TEXT)}"
    # networks are listed in the order they run (the prior first), as Pixyz prints them
    expected = ("Distribution:\n  p(x,z) = p(x|z)p_{prior}(z)\nNetwork architecture:\n"
                f"  p_{{prior}}(z):\n{_ind(PRIOR_TEXT)}\n  p(x|z):\n{_ind(GENERATOR_TEXT)}")
    assert str(p * prior) == expected
    # the factorization lists the factors from the last drawn to the first, as Pixyz does; the networks do not
    # depend on the multiplication order either
    reverse = str(prior * p)
    assert reverse.startswith("Distribution:\n  p_{prior}(z,x) = p(x|z)p_{prior}(z)\nNetwork architecture:\n")
    assert reverse.split("Network architecture:\n")[1] == expected.split("Network architecture:\n")[1]


def test_print_matches_pixyz():
    pixyz = pytest.importorskip("pixyz.distributions")

    class PGenerator(pixyz.Normal):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc1 = nn.Linear(4, 3)

        def forward(self, z):
            return {"loc": self.fc1(z), "scale": torch.ones(1)}

    PGenerator.__name__ = PGenerator.__qualname__ = "Generator"
    pp = PGenerator()
    pprior = pixyz.Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[4],
                          name="p_{prior}")
    p, prior = readme_models()
    pairs = [(p * prior, pp * pprior), (p.replace_var(z="w"), pp.replace_var(z="w")),
             ((p * prior).replace_var(z="w"), (pp * pprior).replace_var(z="w")),
             ((p * prior).marginalize_var(["z"]), (pp * pprior).marginalize_var(["z"])),
             (p.replace_var(z="w").replace_var(w="v"), pp.replace_var(z="w").replace_var(w="v"))]
    for ours, theirs in pairs:
        assert str(ours) == str(theirs)


def test_graph_nodes_and_edges():
    factors, _ = paper()
    g = prod(factors[::-1]).graph
    assert set(g.nodes) == {"x", "y", "a", "z"}
    edges = {(u, v): d["factor"] for u, v, d in g.edges(data=True)}
    assert edges == {("y", "x"): "p_{1}(x|y,a)", ("a", "x"): "p_{1}(x|y,a)",
                     ("x", "z"): "p_{2}(z|x,y)", ("y", "z"): "p_{2}(z|x,y)"}
    single = factors[0].graph
    assert set(single.nodes) == {"x", "y", "a"} and set(single.edges) == {("y", "x"), ("a", "x")}
    assert set(root("z", 0.).graph.nodes) == {"z"} and not root("z", 0.).graph.edges


# ---------------------------------------------------------------------------------------------- sample() options
def test_return_all_and_extra_keys():
    p, prior = pair()[0]
    joint = p * prior
    extra = torch.arange(3.)
    out = joint.sample({"extra": extra}, batch_n=3)
    assert set(out) == {"extra", "x", "z"} and out["extra"] is extra
    only = joint.sample({"extra": extra}, batch_n=3, return_all=False)
    assert set(only) == {"x", "z"}
    z = torch.zeros(3, FEAT)
    assert set(p.sample({"z": z, "extra": extra}, return_all=False)) == {"x"}
    assert p.sample({"z": z, "extra": extra})["extra"] is extra


def test_inputs_as_tensor_or_list():
    factors, _ = paper(scale=1.0)
    p12 = factors[0] * factors[1]
    y, a = torch.full((2, FEAT), 3.), torch.full((2, FEAT), 5.)
    as_list = p12.sample([y, a], sample_mean=True)
    as_dict = p12.sample({"y": y, "a": a}, sample_mean=True)
    assert as_list.keys() == as_dict.keys()
    for k in as_dict:
        assert torch.equal(as_list[k], as_dict[k])
    q = Shift("x", ["z"], 100., scale=1.0)
    z = torch.full((2, FEAT), 7.)
    assert torch.equal(q.sample(z, sample_mean=True)["x"], z + 100.)
    assert torch.equal(q.sample([z], sample_mean=True)["x"], z + 100.)
    full = {"y": y, "a": a, "x": y + a + 100., "z": y + a + 100. + y + 1000.}
    assert torch.allclose(p12.get_log_prob(full), factors[0].get_log_prob(full) + factors[1].get_log_prob(full))


def test_a_value_given_for_a_joints_own_variable_is_drawn_again():
    p, prior = pair()[0]
    z = torch.full((3, FEAT), -50.)
    assert torch.allclose(p.sample({"z": z})["x"], z + 100., atol=0.05)  # an input of p(x|z) is used
    s = (p * prior).sample({"z": z})  # z is a variable of p(x,z): drawn from the prior (batch 1), as Pixyz does
    assert s["z"].shape == s["x"].shape == (1, FEAT)
    assert torch.allclose(s["z"], torch.ones(1, FEAT), atol=0.05)
    assert torch.allclose(s["x"], torch.full((1, FEAT), 101.), atol=0.05)


# ---------------------------------------------------------------------------------------------- parameters
def test_joint_holds_its_factors_parameters_and_moves_them():
    p, prior = readme_models()
    joint = p * prior
    assert {id(t) for t in joint.parameters()} == {id(t) for t in p.parameters()}
    keys = set(joint.state_dict())
    assert {k.rsplit(".", 1)[-1] for k in keys} == {"weight", "bias", "loc", "scale"}
    assert len(keys) == 4
    joint.to(torch.float64)
    assert p.fc1.weight.dtype == torch.float64 and prior.loc.dtype == torch.float64
    s = joint.sample(batch_n=2)
    assert s["x"].dtype == s["z"].dtype == torch.float64
    assert joint.get_log_prob(s).dtype == torch.float64
    # a renamed joint shares the same tensors
    renamed = joint.replace_var(z="w")
    assert {id(t) for t in renamed.parameters()} == {id(t) for t in p.parameters()}
    assert {k.rsplit(".", 1)[-1] for k in renamed.state_dict()} == {"weight", "bias", "loc", "scale"}


# ---------------------------------------------------------------------------------------------- replace_var
def test_replace_var_on_a_single_distribution():
    p, _ = readme_models()
    r = p.replace_var(z="w", x="y")
    assert isinstance(r, ReplaceVarDistribution) and r.p is p
    assert r.var == ["y"] and r.cond_var == ["w"] and r.input_var == ["w"] and r.prob_text == "p(y|w)"
    assert str(r) == f"Distribution:\n  p(y|w)\nNetwork architecture:\n  p(y|w) -> p(x|z):\n{_ind(GENERATOR_TEXT)}"
    w = torch.randn(5, 4)
    torch.manual_seed(1)
    new = r.sample({"w": w})
    torch.manual_seed(1)
    old = p.sample({"z": w})
    assert set(new) == {"w", "y"} and torch.equal(new["y"], old["x"])
    assert torch.equal(r.get_log_prob({"w": w, "y": new["y"]}), p.get_log_prob({"z": w, "x": new["y"]}))
    assert torch.equal(r.sample_mean({"w": w}), p.sample_mean({"z": w}))
    # the network is shared: changing it changes both
    with torch.no_grad():
        p.fc1.bias += 10.
    assert torch.equal(r.sample({"w": w}, sample_mean=True)["y"], p.sample({"z": w}, sample_mean=True)["x"])
    assert list(r.parameters())[0] is p.fc1.weight


def test_replace_var_of_a_parameter_given_by_name_and_a_swap():
    p = Normal(loc="z", scale=0.5, var=["x"], cond_var=["z"])
    swapped = p.replace_var(x="z", z="x")
    assert swapped.prob_text == "p(z|x)"
    v = torch.randn(3, 2)
    assert torch.equal(swapped.sample({"x": v}, sample_mean=True)["z"], v)
    assert torch.equal(swapped.get_log_prob({"x": v, "z": v + 1}), p.get_log_prob({"z": v, "x": v + 1}))


def test_replace_var_of_a_renaming_wraps_it_again_as_pixyz():
    p, _ = readme_models()
    rr = p.replace_var(z="w").replace_var(w="v")
    assert isinstance(rr, ReplaceVarDistribution) and rr.p.p is p and rr.replace_dict == {"w": "v"}
    assert str(rr).split("Network architecture:\n")[1].startswith("  p(x|v) -> p(x|z):\n")
    assert [k.split(".")[:2] for k in rr.state_dict()][:3] == [["_graph", "0"]] * 2 + [["p", "_graph"]]
    back = p.replace_var(z="w").replace_var(w="z")
    assert back.prob_text == p.prob_text and back.p.p is p


def test_replace_var_on_a_joint():
    p, prior = readme_models()
    joint = p * prior
    r = joint.replace_var(z="w")
    assert isinstance(r, MultiplyDistribution)
    assert r.var == ["x", "w"] and r.prob_joint_factorized_and_text == "p(x,w) = p(x|w)p_{prior}(w)"
    assert [f.p for f in r.factors] == [p, prior]
    expected = ("Distribution:\n  p(x,w) = p(x|w)p_{prior}(w)\nNetwork architecture:\n"
                f"  p_{{prior}}(w) -> p_{{prior}}(z):\n{_ind(PRIOR_TEXT)}\n  p(x|w) -> p(x|z):\n{_ind(GENERATOR_TEXT)}")
    assert str(r) == expected
    torch.manual_seed(2)
    new = r.sample(batch_n=3)
    torch.manual_seed(2)
    old = joint.sample(batch_n=3)
    assert set(new) == {"x", "w"}
    assert torch.equal(new["w"], old["z"]) and torch.equal(new["x"], old["x"])
    assert torch.equal(r.get_log_prob(new), joint.get_log_prob({"x": new["x"], "z": new["w"]}))
    # renaming only the factor that mentions the variable
    factors, _ = chain(scale=1.0)
    j = prod(factors)
    rj = j.replace_var(w="u")
    assert rj.prob_factorized_text == "p(x|z)q(z|u)r(u)"
    assert rj.factors[0] is factors[0]
    assert torch.equal(rj.sample(batch_n=2, sample_mean=True)["x"], torch.full((2, FEAT), 111.))


def test_replace_var_on_a_conditional_joint():
    factors, _ = paper(scale=1.0)
    p12 = factors[0] * factors[1]
    r = p12.replace_var(y="b", z="c")
    # Pixyz renames in place: the renamed nodes move to the end of its graph (a before b)
    assert r.prob_joint_factorized_and_text == "p_{1}(x,c|a,b) = p_{2}(c|x,b)p_{1}(x|b,a)"
    assert r.input_var == ["a", "b"]
    s = r.sample({"b": torch.ones(2, FEAT), "a": torch.ones(2, FEAT)}, sample_mean=True)
    assert torch.equal(s["c"], torch.full((2, FEAT), 1103.))


# ---------------------------------------------------------------------------------------------- marginalize_var
def test_marginalize_var():
    p, prior = pair()[0]  # x ~ N(z + 100), z ~ N(1)
    joint = p * prior
    m = joint.marginalize_var(["z"])
    assert isinstance(m, MarginalizeVarDistribution)
    assert m.var == ["x"] and m.cond_var == [] and m.input_var == [] and m.marginalize_list == ["z"]
    assert m.prob_joint_factorized_and_text == r"p(x) = \int p(x|z)p_{prior}(z)dz"
    assert str(m).startswith("Distribution:\n  p(x) = \\int p(x|z)p_{prior}(z)dz\nNetwork architecture:\n")
    assert joint.marginalize_var("z").prob_text == "p(x)"
    s = m.sample(batch_n=3)
    assert set(s) == {"x"}
    assert torch.allclose(s["x"], torch.full((3, FEAT), 101.), atol=0.05)
    with pytest.raises(NotImplementedError, match=r"p\(x\)"):
        m.get_log_prob({"x": s["x"]})
    assert {id(t) for t in m.buffers()} == {id(t) for t in joint.buffers()}


def test_marginalized_variable_given_from_outside_passes_through():
    p, prior = pair()[0]
    m = (p * prior).marginalize_var(["z"])
    z = torch.full((3, FEAT), 50.)
    s = m.sample({"z": z})
    assert s["z"] is z  # an extra key: untouched
    assert torch.allclose(s["x"], torch.full((3, FEAT), 101.), atol=0.05)  # x was drawn from the internal z


def test_marginal_of_a_marginal_and_inside_a_product():
    factors, _ = chain(scale=1.0)  # p(x|z) q(z|w) r(w)
    joint = prod(factors)
    m = joint.marginalize_var(["w"]).marginalize_var(["z"])
    assert m.var == ["x"] and m.marginalize_list == ["w", "z"]
    # Pixyz: one \int per variable; the d's in the order of Python's set of them, which depends on the hash seed
    # (test_diff_distgraph.py::test_the_integrals_of_a_marginal_are_in_pixyzs_order_whatever_the_hash_seed)
    assert m.prob_joint_factorized_and_text in (r"p(x) = \int \int p(x|z)q(z|w)r(w)dwdz",
                                                r"p(x) = \int \int p(x|z)q(z|w)r(w)dzdw")
    assert torch.equal(m.sample(batch_n=2, sample_mean=True)["x"], torch.full((2, FEAT), 111.))
    child = Shift("y", ["x"], 1000., name="s", scale=1.0)
    both = child * joint.marginalize_var(["z", "w"])
    assert both.var == ["y", "x"]
    s = both.sample(batch_n=2, sample_mean=True)
    assert set(s) == {"x", "y"} and torch.equal(s["y"], torch.full((2, FEAT), 1111.))


def test_replace_var_on_a_marginal():
    p, prior = pair(scale=1.0)[0]
    m = (p * prior).marginalize_var(["z"])
    r = m.replace_var(x="u")
    assert isinstance(r, MarginalizeVarDistribution)
    assert r.prob_joint_factorized_and_text == r"p(u) = \int p(u|z)p_{prior}(z)dz"
    s = r.sample(batch_n=2, sample_mean=True)
    assert set(s) == {"u"} and torch.equal(s["u"], torch.full((2, FEAT), 101.))


# ---------------------------------------------------------------------------------------------- special factors
class Double(Deterministic):
    def __init__(self, var="y", cond_var="x", name="f"):
        super().__init__(var=[var], cond_var=[cond_var], name=name)

    def forward(self, x):
        return {self.var[0]: 2 * x}


def test_deterministic_alone_and_in_a_product():
    f = Double()
    x = torch.randn(3, FEAT)
    assert torch.equal(f.sample({"x": x})["y"], 2 * x)
    assert torch.equal(f.sample_mean({"x": x}), 2 * x)
    p, prior = pair()[0]
    joint = f * p * prior  # y = 2x, x ~ N(z + 100), z ~ N(1)
    assert joint.prob_joint_factorized_and_text == "f(y,x,z) = f(y|x)p(x|z)p_{prior}(z)"
    s = joint.sample(batch_n=3)
    assert torch.equal(s["y"], 2 * s["x"])
    assert torch.allclose(s["x"], torch.full((3, FEAT), 101.), atol=0.05)
    m = joint.sample(batch_n=3, sample_mean=True)
    assert torch.equal(m["y"], torch.full((3, FEAT), 202.))
    with pytest.raises(NotImplementedError, match=r"f\(y\|x\)"):
        joint.get_log_prob(s)
    r = f.replace_var(x="u", y="v")
    assert r.prob_text == "f(v|u)" and torch.equal(r.sample({"u": x})["v"], 2 * x)


def test_empirical_distribution_alone_and_in_a_product():
    assert DataDistribution is EmpiricalDistribution
    data = DataDistribution(var=["x"])
    assert data.prob_text == "p_{data}(x)" and data.input_var == ["x"] and data.distribution_name == "Data distribution"
    x = torch.randn(3, FEAT)
    assert data.sample({"x": x})["x"] is x
    assert data.sample_mean({"x": x}) is x
    q = Shift("z", ["x"], 100., name="q")
    joint = q * data  # q(z|x) p_{data}(x)
    assert joint.var == ["z", "x"] and joint.input_var == ["x"] and joint.cond_var == []
    assert joint.prob_joint_factorized_and_text == "q(z,x) = q(z|x)p_{data}(x)"
    s = joint.sample({"x": x})
    assert s["x"] is x and torch.allclose(s["z"], x + 100., atol=0.05)
    s = (data * q).sample(x)  # a bare tensor stands for the single input
    assert torch.allclose(s["z"], x + 100., atol=0.05)
    with pytest.raises(NotImplementedError, match=r"p_\{data\}\(x\)"):
        joint.get_log_prob(s)
    r = data.replace_var(x="u")
    assert r.prob_text == "p_{data}(u)" and r.sample({"u": x})["u"] is x


def test_custom_prob_alone_and_in_a_product():
    assert issubclass(CustomLikelihoodDistribution, CustomProb)  # the early name, with its (var, likelihood) order
    c = CustomProb(lambda x: -0.5 * x ** 2, var=["x"], name="p_{c}")
    x = torch.randn(3, FEAT)
    assert torch.allclose(c.get_log_prob({"x": x}), (-0.5 * x ** 2).sum(-1))
    assert torch.allclose(c.get_log_prob({"x": x}, sum_features=False), -0.5 * x ** 2)
    assert c.distribution_name == "Custom PDF"
    with pytest.raises(NotImplementedError, match=r"p_\{c\}\(x\)"):
        c.sample({"x": x})
    q = Shift("z", ["x"], 0., name="q", scale=0.5)
    joint = q * c
    assert joint.prob_joint_factorized_and_text == "q(z,x) = q(z|x)p_{c}(x)"
    assert joint.input_var == ["x"]
    z = torch.randn(3, FEAT)
    expected = (-0.5 * x ** 2).sum(-1) + td.Normal(x, 0.5).log_prob(z).sum(-1)
    assert torch.allclose(joint.get_log_prob({"x": x, "z": z}), expected)
    r = c.replace_var(x="u")
    assert torch.allclose(r.get_log_prob({"u": x}), c.get_log_prob({"x": x}))


def test_log_prob_of_a_joint_sample_drawn_with_sample_shape():
    factors, _ = chain(scale=1.0)  # p(x|z) q(z|w) r(w)
    joint = prod(factors)
    s = joint.sample(batch_n=2, sample_shape=[5])
    assert all(v.shape == (5, 2, FEAT) for v in s.values())
    lp = joint._dgm_get_log_prob(s)
    N = lambda loc, x: td.Normal(loc, 1.0).log_prob(x).sum(-1)  # noqa: E731
    expected = N(s["z"] + 100., s["x"]) + N(s["w"] + 10., s["z"]) + N(torch.ones(FEAT), s["w"])
    assert lp.shape == (5, 2) and torch.allclose(lp, expected)
    assert torch.allclose(joint.get_log_prob(s), expected.sum(1))  # Pixyz sums every dim but the first


def test_sample_shape_keeps_feature_dims_as_event_dims():
    """With sample_shape, a root factor's feature dims stay event dims, and its children see them so."""
    import pyro.poutine as poutine

    prior = Normal(loc=torch.zeros(2), scale=1., var=["z"])
    p = Normal(loc="z", scale=1., var=["x"], cond_var=["z"])
    tr = poutine.trace(lambda: (p * prior).sample(batch_n=4, sample_shape=[3], reparam=True)).get_trace()
    for name in ("z", "x"):
        site = tr.nodes[name]
        assert site["value"].shape == (3, 4, 2)
        assert site["fn"].event_shape == (2,) and site["fn"].batch_shape == (3, 4)
