"""Fifty-ninth round (probe p404, generated programs), under Pixyz and here (:mod:`pixyz_harness`): a graph's
``set_option`` naming a variable the graph does not have raises the KeyError Pixyz's lookup raises (it was a
plain ValueError: a program catching ``KeyError`` broke)."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, run_both, run_pyro_dgm


@pytest.mark.parametrize("renamed", [True, False])
def test_set_option_of_a_variable_the_graph_lacks_raises_pixyzs_key_error(renamed: bool) -> None:
    """``j.graph.set_option({"batch_n": 2}, ["x"])`` on ``p(x2)`` (``x`` renamed) or on ``p(z) p(y|z)``: a
    ``KeyError`` whose ``args[0]`` is ``"x"`` in both; here also a ValueError whose text names the distribution and
    its variables."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[2], name="p")
        if renamed:
            j = p.replace_var(x="x2")
        else:
            j = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], name="p") * Normal(
                loc="z", scale=torch.tensor(1.), var=["y"], cond_var=["z"], name="q")
        try:
            j.graph.set_option({"batch_n": 2}, ["x"])
        except KeyError as e:
            return {"caught": "KeyError", "key": e.args[0]}
        return {"caught": None}

    ref, ours = run_both(program)
    assert_same(ref, ours)
    assert ref["caught"] == "KeyError"

    def raw() -> Any:
        from pixyz.distributions import Normal

        p = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["x"], features_shape=[2], name="p")
        j = p.replace_var(x="x2")
        try:
            j.graph.set_option({"batch_n": 2}, ["x"])
        except ValueError as e:
            return str(e)
    text = run_pyro_dgm(raw)
    assert "'x'" in text and "x2" in text and "set_option" in text
