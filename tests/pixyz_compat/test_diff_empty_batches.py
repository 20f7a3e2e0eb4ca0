"""Per-element values of an empty batch, under Pixyz 0.3.3 and here (:mod:`pixyz_harness`).

A batch of no rows has per-element results of no rows: Pixyz returns empty tensors for the analytic entropy and the
analytic KL of every family whose torch objects accept an empty batch, and a sum over no rows is 0. We computed both
through torch's ``Independent``, whose sum over the event dims reshapes with ``-1`` and cannot reshape no elements,
so they raised where Pixyz's (which sums the element-wise values itself) ran. (The *mean* of no rows stays an error
here: see ``tests/models/test_reliability_training.py``.)
"""
from __future__ import annotations

from typing import Any

import pytest
import torch
from pixyz_harness import run_both, same

# families whose torch objects take a batch of no rows (torch's Categorical, Beta and Dirichlet do not: both libraries
# raise for those); the parameters each network gives, and how they are kept in range
FAMILIES = {
    "Normal": {"loc": "real", "scale": "positive"},
    "Laplace": {"loc": "real", "scale": "positive"},
    "Bernoulli": {"probs": "unit"},
    "FactorizedBernoulli": {"probs": "unit"},
    "RelaxedBernoulli": {"probs": "unit"},
    "Gamma": {"concentration": "positive", "rate": "positive"},
}


def _program(family: str, rows: int) -> Any:
    def program() -> Any:
        import torch
        from torch import nn
        from torch.nn import functional as F
        import pixyz.distributions as pd
        from pixyz.losses import Entropy, KullbackLeibler, LogProb

        params = FAMILIES[family]

        class Q(getattr(pd, family)):
            def __init__(self, name: str) -> None:
                extra = {"temperature": torch.tensor(0.5)} if family.startswith("Relaxed") else {}
                super().__init__(var=["z"], cond_var=["x"], name=name, **extra)
                self.net = nn.Linear(4, 3 * len(params))

            def forward(self, x):
                out = {}
                for (key, kind), h in zip(params.items(), self.net(x).chunk(len(params), -1)):
                    out[key] = {"real": h, "positive": F.softplus(h) + 0.1, "unit": torch.sigmoid(h)}[kind]
                return out

        q, r = Q("q"), Q("r")
        x = torch.rand(rows, 4)
        z = q.sample({"x": torch.rand(2, 4)})["z"][:rows]
        return {
            "entropy": q.get_entropy({"x": x}),
            "entropy per feature": q.get_entropy({"x": x}, sum_features=False),
            "Entropy": Entropy(q).eval({"x": x}),
            "KL": KullbackLeibler(q, r).eval({"x": x}),
            "KL summed": KullbackLeibler(q, r).sum().eval({"x": x}),
            "log-density": q.get_log_prob({"x": x, "z": z}),
            "LogProb summed": LogProb(q).sum().eval({"x": x, "z": z}),
        }
    return program


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_an_empty_batch_has_empty_entropies_and_divergences_as_under_pixyz(family: str) -> None:
    ref, _ = same(_program(family, 0))
    assert ref["entropy"].shape == ref["KL"].shape == (0,)  # the programs did what the test means: no rows
    assert float(ref["KL summed"].detach()) == 0.0


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_batch_of_two_agrees_with_pixyz_and_torch(family: str) -> None:
    """The same programs on two rows: Pixyz's numbers, and the per-element values summed over the three features
    (torch's element-wise entropy of the same parameters), so the sums the fix writes out are checked against an
    independent computation."""
    ref, ours = run_both(_program(family, 2))
    assert ref.keys() == ours.keys()
    for key in ref:
        torch.testing.assert_close(ours[key].detach(), ref[key].detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours["entropy"], ours["entropy per feature"].sum(-1))
    assert ours["KL"].shape == (2,) and bool((ours["KL"] >= -1e-6).all())
