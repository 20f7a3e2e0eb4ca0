"""Sixteenth round: a differential fuzzer of graph operations on joints (6,385 random graphs: products in random
orders and groupings, chains of ``replace_var``/``marginalize_var``/relabels), under Pixyz 0.3.3 and here
(:mod:`pixyz_harness`). Everything computed matched; four things about the objects did not:

- a marginal of a marginal merged the two into one, so its state dict lacked Pixyz's ``p.p._graph.<i>`` keys (a
  Pixyz checkpoint did not load with ``strict=True``), and a marginal times a distribution held its joint as a
  module ``p`` beside ``_graph`` (Pixyz's product is one graph: only ``_graph.<i>``);
- ``graph.visible_graph()`` of a marginal left out the integrated factors, which Pixyz draws;
- a relabelled marginal (``m.name = "q"``) lost its label when renamed or marginalized again;
- a cyclic product is refused when it is built (Pixyz builds it and raises at its first use): documented.

Also, a ``RelaxedBernoulli`` (a Bernoulli from logits) scoring integer values (Pixyz raises torch's cast error).
"""
from __future__ import annotations

from typing import Any

import networkx as nx
import pytest
import torch

from pixyz_harness import renamed_import, run_both, run_pixyz, run_pyro_dgm


def _three_factors() -> tuple[Any, Any, Any]:
    import torch
    from pixyz.distributions import Normal
    pz = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"])
    pw = Normal(loc=torch.zeros(2) + 1, scale=torch.ones(2), var=["w"])
    px = Normal(loc="z", scale=torch.ones(2) * 2, var=["x"], cond_var=["z"])
    return px, pz, pw


def prog_state_dict_keys_of_chains() -> Any:
    import torch
    from pixyz.distributions import Normal
    px, pz, pw = _three_factors()
    j = px * pz * pw
    k = Normal(loc=torch.zeros(1), scale=torch.ones(1), var=["k"])
    chains = {
        "marg.marg": j.marginalize_var(["w"]).marginalize_var(["z"]),
        "marg.replace": j.marginalize_var(["w"]).replace_var(x="s"),
        "replace.marg": j.replace_var(x="s").marginalize_var(["w"]),
        "(marg)*atom": j.marginalize_var(["w"]) * k,
        "atom*(marg)": k * j.marginalize_var(["w"]),
        "(replace.marg)*atom": j.replace_var(x="s").marginalize_var(["w"]) * k,
        "(marg.marg)*atom": j.marginalize_var(["w"]).marginalize_var(["z"]) * k,
        "(marg.replace)*its own atom": (px * pz).marginalize_var(["z"]).replace_var(x="s") * px,  # px twice
    }
    return {name: (sorted(d.state_dict()), sorted(n for n, _ in d.named_children()), d.prob_text)
            for name, d in chains.items()}


def test_state_dict_keys_of_chained_marginals_are_pixyzs() -> None:
    ref, ours = run_both(prog_state_dict_keys_of_chains)
    assert ours == ref


def prog_marginal_of_a_marginal_from_a_checkpoint() -> Any:
    px, pz, pw = _three_factors()
    return (px * pz * pw).marginalize_var(["w"]).marginalize_var(["z"])


def test_a_pixyz_checkpoint_of_a_marginal_of_a_marginal_loads_and_samples_the_same() -> None:
    theirs = run_pixyz(prog_marginal_of_a_marginal_from_a_checkpoint)
    with torch.no_grad():  # trained constants, unlike a fresh model's (each tensor once: the keys share them)
        for t in {t.data_ptr(): t for t in theirs.state_dict().values()}.values():
            t.add_(0.25)
    ours = run_pyro_dgm(prog_marginal_of_a_marginal_from_a_checkpoint, seed=1)
    assert ours.load_state_dict(theirs.state_dict()).missing_keys == []
    for name, t in ours.state_dict().items():
        torch.testing.assert_close(t, theirs.state_dict()[name])
    torch.manual_seed(3)
    x = ours.sample(batch_n=4000)["x"]
    # the loaded constants: z ~ N(0.25, 1.25^2) and x ~ N(z, 2.25^2)
    assert abs(float(x.mean()) - 0.25) < 0.15  # 4000 draws of sd sqrt(1.25^2 + 2.25^2) = 2.57: se 0.041
    assert abs(float(x.std()) - (1.25 ** 2 + 2.25 ** 2) ** 0.5) < 0.15


def prog_visible_graph() -> Any:
    px, pz, pw = _three_factors()
    out = {}
    for label, d in {"joint": px * pz * pw, "marginal": (px * pz * pw).marginalize_var(["z"]),
                     "marginal, renamed": (px * pz * pw).marginalize_var(["z"]).replace_var(x="s"),
                     "marginal of a marginal": (px * pz * pw).marginalize_var(["z"]).marginalize_var(["w"])}.items():
        for dot in (False, True):
            g = d.graph.visible_graph(dotmode=dot)
            out[f"{label} {dot}"] = (sorted(map(str, g.nodes)), sorted(map(str, g.edges)))
    return out


def test_visible_graph_of_a_marginal_draws_its_integrated_factors_as_pixyz() -> None:
    ref, ours = run_both(prog_visible_graph)
    assert ours == ref
    assert ref["marginal False"][1] == ["('$z$', '$x$')"]


def prog_names_of_wrapped_marginals() -> Any:
    px, pz, pw = _three_factors()
    m = (px * pz * pw).marginalize_var(["z"])
    m.name = "q"
    return {"renamed": m.replace_var(w="s").name, "marginalized": m.marginalize_var(["w"]).name,
            "texts": (m.replace_var(w="s").prob_text, m.marginalize_var(["w"]).prob_text),
            "unnamed": (px * pz * pw).marginalize_var(["z"]).replace_var(w="s").name}


def test_a_relabelled_marginal_keeps_its_label_when_renamed_or_marginalized_again() -> None:
    ref, ours = run_both(prog_names_of_wrapped_marginals)
    assert ours == ref
    assert ref["renamed"] == "q"


def prog_cyclic_product() -> Any:
    from pixyz.distributions import Normal
    a = Normal(loc="z", scale=1., var=["x"], cond_var=["z"])
    b = Normal(loc="x", scale=1., var=["z"], cond_var=["x"])
    return str(a * b)


def test_a_cyclic_product_is_refused_with_the_error_type_pixyz_raises_at_its_first_use() -> None:
    with pytest.raises(nx.NetworkXUnfeasible):  # Pixyz: at print (and sample, get_log_prob, formulas)
        run_pixyz(prog_cyclic_product)
    with pytest.raises(nx.NetworkXUnfeasible) as e:  # here: at the product, naming the factors and the cycle
        run_pyro_dgm(prog_cyclic_product)
    assert isinstance(e.value, ValueError)
    assert "x -> z -> x" in str(e.value) or "z -> x -> z" in str(e.value), str(e.value)


def prog_relaxed_bernoulli_of_integers() -> Any:
    import torch
    from pixyz.distributions import RelaxedBernoulli
    p = RelaxedBernoulli(temperature=torch.tensor(.5), probs=torch.tensor([.2, .3, .5]), var=["x"])
    return p.get_log_prob({"x": torch.tensor([[1, 0, 1], [0, 0, 1]])})


def test_a_relaxed_bernoulli_scores_integer_values_in_its_float_dtype() -> None:
    with pytest.raises(RuntimeError, match="can't be cast"):
        run_pixyz(prog_relaxed_bernoulli_of_integers)
    ours = run_pyro_dgm(prog_relaxed_bernoulli_of_integers)
    p = torch.tensor([.2, .3, .5])
    x = torch.tensor([[1., 0., 1.], [0., 0., 1.]])
    torch.testing.assert_close(ours, torch.distributions.Bernoulli(probs=p).log_prob(x).sum(-1))
    with renamed_import():  # the float value scores the same
        torch.testing.assert_close(prog_relaxed_bernoulli_of_integers(), ours)


def prog_training_flags_of_wrapped_marginals() -> Any:
    import torch
    from pixyz.distributions import Normal
    px, pz, pw = _three_factors()
    k = Normal(loc=torch.zeros(1), scale=torch.ones(1), var=["k"])
    chains = {"renamed marginal": (px * pz * pw).marginalize_var(["z"]).replace_var(x="s"),
              "marginal of a marginal": (px * pz * pw).marginalize_var(["z"]).marginalize_var(["w"]),
              "marginal times k": (px * pz).marginalize_var(["z"]) * k}
    out = {}
    for name, d in chains.items():
        d.eval()
        joint = getattr(d, "p", d)  # (Pixyz's product has no p)
        out[name] = (d.training, joint.training, sorted({m.training for m in joint.modules()}))
        d.train()
        out[name + ", train again"] = sorted({m.training for m in getattr(d, "p", d).modules()})
    return out


def test_eval_reaches_the_joint_a_wrapped_marginal_integrates() -> None:
    """The joint of a renamed marginal (a marginal times a distribution) is its attribute p, not a module of it."""
    ref, ours = run_both(prog_training_flags_of_wrapped_marginals)
    assert ours == ref


def prog_complex_value() -> Any:
    import torch
    from pixyz.distributions import Laplace, Normal
    x = torch.tensor([[0.5 + 1.0j, -0.2 + 0.0j]])
    out = {}
    for name, d in (("Normal", Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"])),
                    ("Laplace", Laplace(loc=torch.zeros(2), scale=torch.ones(2), var=["x"]))):
        try:
            out[name] = d.get_log_prob({"x": x})
        except Exception as e:  # noqa: BLE001
            out[name] = e
    return out


def test_a_complex_value_is_refused_where_pixyz_scores_it_complex() -> None:
    from pyro_dgm.utils.checks import DTypeError
    ref, ours = run_pixyz(prog_complex_value), run_pyro_dgm(prog_complex_value)
    assert ref["Normal"].is_complex()  # a complex "log-density"
    for name in ("Normal", "Laplace"):
        assert isinstance(ours[name], DTypeError)
        assert f"{name} p(x): cannot score 'x' of dtype torch.complex64" in str(ours[name])


def prog_bool_value_under_a_standard_normal() -> Any:
    import torch
    from pixyz.distributions import Normal
    return Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"]).get_log_prob({"x": torch.ones(1, 2).bool()})


def prog_complex_value_under_a_mixture() -> Any:
    import torch
    from pixyz.distributions import Categorical, MixtureModel, Normal
    m = MixtureModel([Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"]),
                      Normal(loc=torch.ones(2), scale=torch.ones(2), var=["x"])],
                     Categorical(probs=torch.tensor([0.4, 0.6]), var=["z"]))
    return m.get_log_prob({"x": torch.tensor([[0.5 + 1j, 0.0 + 0j]])})


def test_a_bool_value_under_a_standard_normal_is_refused_as_under_any_other_normal() -> None:
    """Its standard form scored True as 1 (docs/porting.md: a bool value under a continuous family is refused;
    Pixyz raises torch's raw error on the subtraction)."""
    from pyro_dgm.utils.checks import DTypeError
    with pytest.raises(RuntimeError, match="bool"):
        run_pixyz(prog_bool_value_under_a_standard_normal)
    with pytest.raises(DTypeError, match=r"Normal p\(x\): cannot score 'x' of dtype torch.bool.*x.float\(\)"):
        run_pyro_dgm(prog_bool_value_under_a_standard_normal)


def test_a_complex_value_under_a_mixture_is_refused_where_pixyz_scores_it_complex() -> None:
    from pyro_dgm.utils.checks import DTypeError
    assert run_pixyz(prog_complex_value_under_a_mixture).is_complex()
    with pytest.raises(DTypeError, match=r"MixtureModel p\(x\): cannot score 'x' of dtype torch.complex64"):
        run_pyro_dgm(prog_complex_value_under_a_mixture)
