"""Sixty-first round (probe p418: Pixyz's ``DistGraph`` and ``pixyz.utils``), under Pixyz and here
(:mod:`pixyz_harness`):

* ``graph.set_option(opts, var)`` on a renamed single distribution (``Normal(...).replace_var(z="h")``) was ignored:
  Pixyz's renaming runs through its graph, so the options apply (``batch_n``, ``sample_mean``, ``sum_features``);
* options changed in place (a factor's ``option`` dict, ``graph.global_option``, the dict given to ``set_option``)
  were ignored: Pixyz's graph keeps the dicts themselves;
* ``set_option`` of an input variable (nothing to set in Pixyz) or of a string of one-letter names (``"zx"``,
  iterated by Pixyz) raised;
* the graph was not callable (``graph("sample", kwargs)``, Pixyz's ``nn.Module`` call of ``forward``);
* ``graph.name = "q"`` on a single distribution did not reach ``graph.prob_text``;
* ``get_dict_values`` of a list returned ``[]`` (Pixyz: ``AttributeError``) and of an unhashable key raised
  (Pixyz: skipped).
"""
from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

from pixyz_harness import assert_same, run_both


def _shapes(d: dict) -> dict:
    return {k: tuple(v.shape) for k, v in d.items()}


def _renamed(kind: str) -> Callable[[], Any]:
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        if kind == "batch_n":
            r = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"]).replace_var(z="h")
            r.graph.set_option({"batch_n": 3}, ["h"])
            return _shapes(r.sample())
        if kind == "factor_option":
            r = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"]).replace_var(z="h")
            for f in r.graph.factors():
                f.option = {"batch_n": 3}
            return _shapes(r.sample())
        r = Normal(loc="z", scale=torch.ones(2), var=["x"], cond_var=["z"]).replace_var(z="h")
        if kind == "sample_mean":
            r.graph.set_option({"sample_mean": True}, ["x"])
            return r.sample({"h": torch.ones(1, 2)})["x"]
        r.graph.set_option({"sum_features": False}, ["x"])
        return r.get_log_prob({"h": torch.zeros(3, 2), "x": torch.ones(3, 2)})
    return program


@pytest.mark.parametrize("kind", ["batch_n", "factor_option", "sample_mean", "sum_features"])
def test_options_of_a_renamed_single_distribution_apply(kind: str) -> None:
    """Pixyz's results, and by hand: 3 rows; the mean ``h`` = 1 itself; the unsummed log-density of N(1; 0, 1),
    -0.5 log(2 pi) - 0.5 = -1.4189 per feature."""
    ref, ours = run_both(_renamed(kind))
    assert_same(ref, ours)
    if kind in ("batch_n", "factor_option"):
        assert ours == {"h": (3, 2)}
    elif kind == "sample_mean":
        assert torch.equal(ours, torch.ones(1, 2))
    else:
        torch.testing.assert_close(ours, torch.full((3, 2), -0.5 * float(torch.log(torch.tensor(2 * torch.pi))) - .5))


def _in_place(kind: str) -> Callable[[], Any]:
    def program() -> Any:
        import torch

        from pixyz.distributions import Categorical, Normal
        from pixyz.distributions.mixture_distributions import MixtureModel

        j = Normal(loc="z", scale=torch.ones(2), var=["x"], cond_var=["z"], name="p") * Normal(
            loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
        if kind == "factor_option":
            for f in j.graph.factors():
                if "z" in f.var:
                    f.option["batch_n"] = 3
            return _shapes(j.sample())
        if kind == "given_dict":
            opt = {"batch_n": 3}
            j.graph.set_option(opt, ["z"])
            opt["batch_n"] = 5
            first = _shapes(j.sample())
            opt.clear()
            return first, _shapes(j.sample())
        comps = [Normal(loc=torch.randn(2), scale=torch.ones(2), var=["y"], name=f"p_{i}") for i in range(3)]
        mix = MixtureModel(distributions=comps, prior=Categorical(probs=torch.ones(3) / 3, var=["c"], name="pi"))
        d = Normal(loc=torch.zeros(1), scale=torch.ones(1), var=["x"]) * mix
        d.graph.global_option["return_hidden"] = True
        return sorted(d.sample()), d.graph.global_option
    return program


@pytest.mark.parametrize("kind", ["factor_option", "given_dict", "global_option"])
def test_options_changed_in_place_apply(kind: str) -> None:
    """A factor's ``option`` changed in place gives 3 rows; the dict given to ``set_option`` changed to 5 rows
    gives 5, cleared gives the call's 1; ``global_option["return_hidden"] = True`` hands the mixture's ``c``
    back. Each as Pixyz's."""
    ref, ours = run_both(_in_place(kind))
    assert_same(ref, ours)
    expected = {"factor_option": {"z": (3, 2), "x": (3, 2)},
                "given_dict": ({"z": (5, 2), "x": (5, 2)}, {"z": (1, 2), "x": (1, 2)}),
                "global_option": (["c", "x", "y"], {"return_hidden": True})}[kind]
    assert ours == expected


def test_set_option_of_an_input_variable_or_a_string_of_names() -> None:
    """An input variable has no factor: nothing is set (``x`` still drawn at the given ``z``'s batch of 1); a
    string ``"zx"`` names ``z`` and ``x`` (2 rows each); a name the graph lacks still raises Pixyz's ``KeyError``."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        c = Normal(loc="z", scale=torch.ones(2), var=["x"], cond_var=["z"])
        c.graph.set_option({"batch_n": 2}, ["z"])
        one = c.sample({"z": torch.zeros(1, 2)})
        j = Normal(loc="z", scale=torch.ones(2), var=["x"], cond_var=["z"]) * Normal(
            loc="u", scale=torch.ones(2), var=["w"], cond_var=["u"])
        j.graph.set_option({"sample_mean": True}, ["x", "u"])
        two = j.sample({"z": torch.full((1, 2), 3.), "u": torch.zeros(1, 2)})
        k = Normal(loc="z", scale=torch.ones(2), var=["x"], cond_var=["z"]) * Normal(
            loc=torch.zeros(2), scale=torch.ones(2), var=["z"])
        k.graph.set_option({"batch_n": 2}, "zx")
        try:
            k.graph.set_option({"batch_n": 2}, ["q"])
            caught = None
        except KeyError:
            caught = "KeyError"
        return one, two, _shapes(k.sample()), caught

    ref, ours = run_both(program)
    assert_same(ref, ours)
    one, two, shapes, caught = ours
    assert one["x"].shape == (1, 2) and torch.equal(two["x"], torch.full((1, 2), 3.))
    assert shapes == {"z": (2, 2), "x": (2, 2)} and caught == "KeyError"


def test_graph_call_name_and_prob_text() -> None:
    """``graph("sample", {...})`` and ``graph("get_log_prob", {...})`` as ``forward``; ``graph.name = "q"`` on a
    single distribution: ``graph.prob_text`` is ``q(z)`` (the distribution's own ``p(z)`` unchanged, Pixyz's);
    an empty graph's text is ``()``."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal
        from pixyz.distributions.distributions import DistGraph

        j = Normal(loc="z", scale=torch.ones(2), var=["x"], cond_var=["z"]) * Normal(
            loc=torch.zeros(2), scale=torch.ones(2), var=["z"])
        s = j.graph("sample", {"batch_n": 2})
        lp = j.graph("get_log_prob", {"x_dict": s})
        single = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"])
        single.graph.name = "q"
        texts = (single.graph.prob_text, single.prob_text, single.graph.prob_joint_factorized_and_text,
                 DistGraph().prob_text)
        return _shapes(s), lp, texts

    ref, ours = run_both(program)
    assert_same(ref, ours)
    shapes, lp, texts = ours
    assert shapes == {"z": (2, 2), "x": (2, 2)} and lp.shape == (2,)
    assert texts == ("q(z)", "p(z)", "q(z) = p(z)", "()")


def test_get_dict_values_of_a_list_and_of_an_unhashable_key() -> None:
    def program() -> Any:
        from pixyz.utils import get_dict_values

        try:
            get_dict_values([1, 2], ["a"])
            caught = None
        except AttributeError:
            caught = "AttributeError"
        return caught, get_dict_values({"a": 1}, [["a"], "a"]), get_dict_values({"a": 1}, [["a"]], True)

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert ours == ("AttributeError", [1], {})


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch_save", "copy"])
def test_a_copy_keeps_the_graphs_options(how: str) -> None:
    """Options set on a joint's graph (``batch_n`` 3 for ``z``, global ``sample_mean``) and on a renamed single
    distribution's, then the distributions copied: Pixyz's copy keeps its graph, so the copy draws 3 rows (the
    options were keyed by the factors' ids here, which a copy does not keep: it drew 1). Changing the copy's
    options leaves the original's."""
    def program() -> Any:
        import copy
        import io
        import pickle

        import torch

        from pixyz.distributions import Normal

        j = Normal(loc="z", scale=torch.ones(2), var=["x"], cond_var=["z"], name="p") * Normal(
            loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="q")
        j.graph.set_option({"batch_n": 3}, ["z"])
        j.graph.set_option({"sample_mean": True})
        r = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"]).replace_var(z="h")
        r.graph.set_option({"batch_n": 4}, ["h"])

        def copied(d: Any) -> Any:
            if how == "deepcopy":
                return copy.deepcopy(d)
            if how == "copy":
                return copy.copy(d)
            if how == "pickle":
                return pickle.loads(pickle.dumps(d))
            buf = io.BytesIO()
            torch.save(d, buf)
            buf.seek(0)
            return torch.load(buf, weights_only=False)

        cj, cr = copied(j), copied(r)
        out = {"joint": _shapes(cj.sample()), "renamed": _shapes(cr.sample()), "global": cj.graph.global_option}
        if how != "copy":  # (a shallow copy shares the graph's dicts, in both)
            cj.graph.set_option({"batch_n": 5}, ["z"])
            out["original_after"] = _shapes(j.sample())
        return out

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert ours["joint"] == {"z": (3, 2), "x": (3, 2)} and ours["renamed"] == {"h": (4, 2)}
    assert ours["global"] == {"sample_mean": True}
    if how != "copy":
        assert ours["original_after"] == {"z": (3, 2), "x": (3, 2)}
