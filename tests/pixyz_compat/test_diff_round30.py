"""Names, graphs and experts against Pixyz 0.3.3 and closed forms (round 30, probes p116 and p118).

- A product's, renaming's or marginal's formula name was typeset by SymPy a second time: a name set through the
  setter changed (``p_1`` -> ``p_{1}``, ``alpha`` -> ``\\alpha``) and ``name="hbar"`` became ``\\bar{\\h}``. Pixyz
  typesets a name once, when the distribution is built, and a product uses its first factor's graph's name as it is.
- ``a.graph.name = "r"`` on a single distribution renamed the distribution itself; in Pixyz only its graph's name
  changes, which products and renamings built afterwards print.
- ``replace_var`` refused to rename a variable a marginal integrates out; Pixyz renames it inside the integral.
- ``visible_graph()`` listed nodes and edges in sampling order; Pixyz's walks its factors in the order they were added.
- A product of experts one of whose experts is itself a product refused a subset of that inner product's inputs;
  Pixyz passes the inputs given to it (the exact product of the experts present).
- A renamed GMM posterior (``post.replace_var(x="u")``) could not be scored.
- ``MixtureOfNormal`` with weights that do not sum to 1 printed the raw weights but computed with normalized ones.
"""
from __future__ import annotations

import pytest
import torch

from pixyz_harness import run_pyro_dgm, same


def _names_program():
    from pixyz.distributions import Deterministic, Normal, TransformedDistribution
    from pixyz.flows import PlanarFlow
    from pixyz.losses import Expectation, KullbackLeibler, LogProb

    out = []
    prior = Normal(loc=0., scale=1., var=["z"], name="p")
    a = Normal(loc="z", scale=1., var=["x"], cond_var=["z"], name="hbar")  # typeset at construction: \hbar
    out.append(((a * prior).prob_joint_factorized_and_text, (a * prior).graph.name))
    for name in ("p_1", "alpha"):  # set after construction: stored as given
        d = Normal(loc="z", scale=1., var=["x"], cond_var=["z"], name="p")
        d.name = name
        j = d * prior
        m = j.marginalize_var("z")
        r = d.replace_var(z="w")
        out.append((j.prob_joint_factorized_and_text, m.prob_joint_factorized_and_text, m.name, m.graph.name,
                    r.prob_joint_factorized_and_text, r.name, r.graph.name, str(r),
                    (r * prior.replace_var(z="w")).prob_joint_factorized_and_text,
                    j.replace_var(z="w").prob_text, j.replace_var(z="w").name, str(j),
                    str(LogProb(j)), str(Expectation(prior, LogProb(d)))))
    q = Normal(loc="x", scale=1., var=["z"], cond_var=["x"], name="q")
    q.name = "q_1"
    out.append(str(KullbackLeibler(q, prior)))

    class F(Deterministic):
        def __init__(self):
            super().__init__(var=["y"], cond_var=["x"], name="f")

        def forward(self, x):
            return {"y": 2 * x}

    f = F()
    f.name = "f_1"
    out.append((f.prob_text, (f * Normal(loc=0., scale=1., var=["x"])).prob_joint_factorized_and_text))
    flow = TransformedDistribution(prior=Normal(loc=0., scale=1., var=["z"], features_shape=[2]), flow=PlanarFlow(2),
                                   var=["y"])
    flow.name = "gamma"
    g = Normal(loc="y", scale=1., var=["w"], cond_var=["y"], name="p")
    out.append(((flow * g).prob_joint_factorized_and_text, (g * flow).prob_joint_factorized_and_text))
    h = Normal(loc="z", scale=1., var=["x"], cond_var=["z"], name="hbar").replace_var(z="w").replace_var(w="u")
    out.append((h.name, h.graph.name, h.prob_joint_factorized_and_text, (h * prior.replace_var(z="u")).prob_text))
    return out


def test_a_name_is_typeset_once_when_given_and_composites_keep_it():
    _, ours = same(_names_program)
    assert ours[0] == ("\\hbar(x,z) = \\hbar(x|z)p(z)", "\\hbar")
    assert ours[1][0] == "p_1(x,z) = p_1(x|z)p(z)"
    assert ours[2][:2] == ("alpha(x,z) = alpha(x|z)p(z)", "alpha(x) = \\int alpha(x|z)p(z)dz")


def test_a_single_distributions_graph_name_is_what_products_built_later_print():
    def program():
        import torch
        from pixyz.distributions import Normal
        prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], name="p")
        a = Normal(loc="z", scale=1., var=["x"], cond_var=["z"], name="p")
        a.graph.name = "r"
        out = [(a.prob_text, a.prob_joint_factorized_and_text, a.name, a.graph.name, str(a),
                (a * prior).prob_joint_factorized_and_text, (prior * a).prob_text)]
        ra = a.replace_var(z="w")
        out.append((ra.prob_joint_factorized_and_text, ra.name, ra.graph.name))
        a.name = "s"  # Pixyz's setter renames a single distribution's graph too
        out.append((a.prob_joint_factorized_and_text, a.graph.name, (a * prior).prob_joint_factorized_and_text))
        j = a * prior  # a product's graph.name renames its formulas; its own name is a label
        j.graph.name = "t"
        out.append((j.prob_joint_factorized_and_text, j.name, j.graph.name))
        j.name = "u"
        out.append((j.prob_joint_factorized_and_text, j.name, j.graph.name))
        return out

    _, ours = same(program)
    assert ours[0][:2] == ("p(x|z)", "p(x|z) = r(x|z)")
    assert ours[0][5] == "r(x,z) = p(x|z)p(z)"


def test_replace_var_renames_a_variable_the_marginal_integrates_out():
    def program():
        import torch
        from pixyz.distributions import Normal
        p = Normal(loc="z", scale=1., var=["x"], cond_var=["z"], name="p")
        pz = Normal(loc="y", scale=1., var=["z"], cond_var=["y"], name="p")
        py = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["y"], name="p")
        out = []
        m = (p * pz).marginalize_var("z")
        r = m.replace_var(z="w", y="v")
        out.append((r.prob_joint_factorized_and_text, r.var, r.cond_var, r.input_var, sorted(r.graph.all_var),
                    r.sample({"v": torch.ones(2, 1)})))
        m2 = (p * pz * py).marginalize_var(["z", "y"])
        r2 = m2.replace_var(z="w", x="z")  # (x takes the integrated variable's old name)
        out.append((r2.var, r2.cond_var, sorted(r2.graph.marginalize_list), r2.sample(batch_n=3),
                    sorted(r2.state_dict())))
        r3 = m2.replace_var(y="a").replace_var(z="b")
        out.append((r3.prob_factorized_text.startswith("\\int \\int p(x|b)p(b|a)p(a)"), r3.sample(batch_n=2)))
        c = Normal(loc="x", scale=1., var=["u"], cond_var=["x"], name="c")
        r4 = m.replace_var(z="w") * c
        out.append((r4.prob_joint_factorized_and_text, r4.sample({"y": torch.zeros(2, 1)})))
        return out

    _, ours = same(program)
    assert ours[0][0] == "p(x|v) = \\int p(x|w)p(w|v)dw"


def test_replace_var_of_a_marginal_still_refuses_unknown_and_clashing_names():
    from pyro_dgm.distributions import Normal

    p = Normal(loc="z", scale=1., var=["x"], cond_var=["z"], name="p")
    m = (p * Normal(loc=0., scale=1., var=["z"], name="p")).marginalize_var("z")
    with pytest.raises(ValueError, match=r"p\(x\).*no variable 'q'.*\['x', 'z'\]"):
        m.replace_var(q="w")
    with pytest.raises(ValueError, match=r"p\(x\).*'x'.*marginalized variable"):
        m.replace_var(z="x")


def _graph(which):
    from pixyz.distributions import Normal
    a = Normal(loc="z", scale=1., var=["x"], cond_var=["z", "y"], name="p")
    b = Normal(loc="y", scale=1., var=["z"], cond_var=["y"], name="p")
    c = Normal(loc=0., scale=1., var=["y"], name="p")
    e = Normal(loc="x", scale=1., var=["u"], cond_var=["s", "x"], name="q")
    build = {"abc": lambda: a * b * c, "cba": lambda: c * (b * a), "bac": lambda: b * a * c,
             "renamed": lambda: (a * b * c).replace_var(y="w", z="v"),
             "renamed_atoms": lambda: a.replace_var(y="k", z="j") * c.replace_var(y="k"),
             "marginal": lambda: (a * b * c).marginalize_var("z"),
             "marginal_times": lambda: (a * b).marginalize_var("z") * e,
             "marginal_renamed": lambda: (a * b * c).marginalize_var(["y"]).replace_var(z="m", x="n"),
             "single": lambda: e, "single_renamed": lambda: e.replace_var(s="k", x="j")}
    return build[which]()


@pytest.mark.parametrize("which", ["abc", "cba", "bac", "renamed", "renamed_atoms", "marginal", "marginal_times",
                                   "marginal_renamed", "single", "single_renamed"])
def test_visible_graph_lists_nodes_and_edges_in_pixyzs_order(which):
    def program():
        import networkx as nx
        d = _graph(which)
        g, dot = d.graph.visible_graph(), d.graph.visible_graph(dotmode=True)
        pos = nx.spring_layout(g, seed=0)
        return (list(g.nodes), list(g.edges), list(dot.nodes(data=True)), list(dot.edges),
                {k: [round(float(t), 4) for t in v] for k, v in pos.items()})

    same(program)


class _Expert:
    """``E(c, s, name)``: a Normal expert q(z|c) with mean c and scale s (the probe's)."""

    @staticmethod
    def make(Normal):
        class E(Normal):
            def __init__(self, c, s, name):
                super().__init__(var=["z"], cond_var=[c], name=name)
                self.c, self.s = c, s

            def forward(self, **kw):
                v = kw[self.c]
                return {"loc": v, "scale": self.s * torch.ones_like(v)}
        return E


def test_a_product_expert_of_a_product_of_normals_takes_a_subset_of_its_inputs():
    def program():
        import torch
        from pixyz.distributions import Normal, ProductOfNormal
        E = _Expert.make(Normal)
        qx, qy, qw = E("x", 1., "q_x"), E("y", .5, "q_y"), E("w", 2., "q_w")
        q = ProductOfNormal([ProductOfNormal([qx, qy], name="r"), qw], name="q")
        x, y, w = torch.tensor([[3.]]), torch.tensor([[-1.]]), torch.tensor([[1.]])
        return [q.get_params({"x": x, "y": y, "w": w}), q.get_params({"x": x, "w": w}), q.get_params({"y": y})]

    _, ours = same(program)
    # closed form, x and w given: N(0, 1) * [N(0, 1) N(3, 1)] * N(1, 4): precisions 1 + 2 + 1/4, mean 3.25 / 3.25
    torch.testing.assert_close(ours[1]["loc"], torch.tensor([[1.0]]))
    torch.testing.assert_close(ours[1]["scale"], torch.tensor([[3.25 ** -0.5]]))


def test_a_mixture_expert_that_is_a_product_takes_a_subset_and_ordinary_experts_are_still_refused():
    from pyro_dgm.distributions import MixtureOfNormal, Normal, ProductOfNormal

    E = _Expert.make(Normal)
    qx, qy, qw = E("x", 1., "q_x"), E("y", .5, "q_y"), E("w", 2., "q_w")
    m = MixtureOfNormal([ProductOfNormal([qx, qy], name="r"), qw], weight_modalities=[1., 3.], name="m")
    x, w, z = torch.tensor([[3.]]), torch.tensor([[1.]]), torch.tensor([[0.5]])
    N = torch.distributions.Normal
    inner = N(1.5, 2 ** -0.5)  # N(0, 1) N(3, 1): precision 2, mean 1.5
    want = torch.log(0.25 * inner.log_prob(z).exp() + 0.75 * N(1., 2.).log_prob(z).exp()).reshape(1)
    torch.testing.assert_close(m.get_log_prob({"x": x, "w": w, "z": z}), want)
    two = Normal(loc="a", scale="b", var=["z"], cond_var=["a", "b"], name="q_{ab}")
    for mix in (ProductOfNormal([two, qw], name="q"), MixtureOfNormal([two, qw], name="q")):
        with pytest.raises(ValueError, match=r"q\(z\|.*expert q_\{ab\}\(z\|a,b\) is given only some of its inputs; "
                                             r"missing \['b'\]"):
            mix.get_log_prob({"a": x, "w": w, "z": z})


def test_a_renamed_gmm_posterior_scores_pixyzs_table():
    def program():
        import torch
        from pixyz.distributions import Categorical, Normal
        from pixyz.distributions.mixture_distributions import MixtureModel
        comps = [Normal(loc=torch.tensor([float(i)]), scale=torch.tensor([1.]), var=["x"], name="p_%d" % i)
                 for i in range(2)]
        post = MixtureModel(comps, Categorical(probs=torch.tensor([.25, .75]), var=["z"], name="\\pi")).posterior()
        x = torch.tensor([[0.], [1.], [3.]])
        r = post.replace_var(x="u")
        rr = r.replace_var(u="v")
        out = [post.get_log_prob({"x": x}), r.get_log_prob({"u": x}), r.prob().eval({"u": x}),
               r.log_prob().eval({"u": x}), rr.get_log_prob({"v": x}),
               (r.prob_text, r.var, r.cond_var, r.input_var)]
        try:
            r.sample({"u": x})
        except NotImplementedError:
            out.append("NotImplementedError")
        return out

    _, ours = same(program)
    torch.testing.assert_close(ours[1], ours[0])
    assert ours[1].shape == (2, 3)


def test_mixture_of_normal_prints_the_normalized_weights_it_computes_with():
    def program():
        import torch
        from pixyz.distributions import MixtureOfNormal, Normal
        qx = Normal(loc="x", scale=torch.tensor(1.), var=["z"], cond_var=["x"], name="q_x")
        qy = Normal(loc="y", scale=torch.tensor(1.), var=["z"], cond_var=["y"], name="q_y")
        out = []
        for w in ([1., 3.], [0.5, 0.7], [2., 2.]):
            q = MixtureOfNormal([qx, qy], weight_modalities=w, name="q")
            v = {"x": torch.tensor([[0.]]), "y": torch.tensor([[3.]]), "z": torch.tensor([[0.]])}
            out.append((q.prob_factorized_text, q.get_log_prob(v)))
        return out

    ours = run_pyro_dgm(program)
    N = torch.distributions.Normal
    a, b = N(0., 1.).log_prob(torch.tensor(0.)).exp(), N(3., 1.).log_prob(torch.tensor(0.)).exp()
    assert ours[0][0] == "0.25q_{x}(z|x) + 0.75q_{y}(z|y)"
    torch.testing.assert_close(ours[0][1], torch.log(0.25 * a + 0.75 * b).reshape(1))
    assert ours[1][0] == "0.417q_{x}(z|x) + 0.583q_{y}(z|y)"
    torch.testing.assert_close(ours[1][1], torch.log((0.5 * a + 0.7 * b) / 1.2).reshape(1))
    assert ours[2][0] == "\\frac{1}{2}q_{x}(z|x) + \\frac{1}{2}q_{y}(z|y)"
