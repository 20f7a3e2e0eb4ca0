"""Thirty-first round: a flow distribution scoring a batch of no rows (probe p135, a generator of random Pixyz
programs), under Pixyz 0.3.3 and here (:mod:`pixyz_harness`).

``TransformedDistribution`` and ``InverseTransformedDistribution`` refused a value of shape ``(0, D)`` with torch's
"cannot reshape tensor of 0 elements into shape [0, -1]" (torch's ``Independent`` sums its event dims by a reshape);
Pixyz gives the empty log-density, as a plain family does here. It is now the empty value of the batch shape, and a
sum over it has a zero gradient for the flow's parameters (the derivative of a sum over no rows).
"""
from __future__ import annotations

from typing import Any

import pytest

from pixyz_harness import assert_same, run_both

FLOWS = ["Reverse", "Permutation", "BatchNorm1d"]  # (layers that take 0 rows; a batch norm's own parameters)


def _empty(flow_name: str, cls_name: str) -> Any:
    import torch

    from pixyz import distributions as D
    from pixyz import flows as F

    flow = {"Reverse": lambda: F.Reverse(2), "Permutation": lambda: F.FlowList([F.Permutation([1, 0])]),
            "BatchNorm1d": lambda: F.BatchNorm1d(2).eval()}[flow_name]()
    prior = D.Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2), name="prior")
    p = getattr(D, cls_name)(prior, flow, var=["x"])
    kw = {"compute_jacobian": True} if cls_name == "TransformedDistribution" else {}
    lp = p.get_log_prob({"x": torch.randn(0, 2)}, **kw)
    params = [q for q in flow.parameters() if q.requires_grad]
    grads = torch.autograd.grad(lp.sum(), params, allow_unused=True) if params and lp.requires_grad else ()
    return {"log_prob": lp.detach(), "grads": [None if g is None else g.abs().sum() for g in grads]}


@pytest.mark.parametrize("cls_name", ["TransformedDistribution", "InverseTransformedDistribution"])
@pytest.mark.parametrize("flow_name", FLOWS)
def test_a_flow_distribution_scores_an_empty_batch_as_pixyz(flow_name: str, cls_name: str) -> None:
    ref, ours = run_both(lambda: _empty(flow_name, cls_name))
    assert ref["log_prob"].shape == (0,)
    assert_same(ref["log_prob"], ours["log_prob"])
    for g in ours["grads"]:  # a sum over no rows: every gradient is 0 (or no gradient at all, as under Pixyz)
        assert g is None or float(g) == 0.0
