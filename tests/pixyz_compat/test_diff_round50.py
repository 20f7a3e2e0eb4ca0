"""Fiftieth round: a network runs once per call of ``get_log_prob`` and ``sample`` outside a loss, as in Pixyz, also
where the closed forms decline its parameters (probe p343), under Pixyz and here (:mod:`pixyz_harness`)."""
from __future__ import annotations

from typing import Any

import pytest

from pixyz_harness import assert_same, run_both


def test_a_network_returning_a_number_runs_once_per_call_as_under_pixyz() -> None:
    """Probe p343: a network returning a Python number as a parameter (``"scale": 1.0``) made the closed forms
    decline its parameters, and the general path ran the network again: with dropout, ``get_log_prob`` scored the
    second mask and ``sample`` drew from it, so the values and the random numbers after them differed from
    Pixyz's. The network now runs once per call (the general path takes the parameters the closed forms
    declined)."""
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Normal

        calls = []

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.a = nn.Linear(6, 2)
                self.drop = nn.Dropout(0.5)

            def forward(self, x: torch.Tensor) -> dict:
                calls.append(1)
                return {"loc": self.drop(self.a(x)), "scale": 1.0}

        q = Q()
        x, z = torch.rand(5, 6), torch.zeros(5, 2)
        lp = q.get_log_prob({"x": x.clone(), "z": z}).detach()
        after = (len(calls), torch.rand(2))
        draw = q.sample({"x": x.clone()})["z"]
        return lp, after, draw, len(calls)

    ref, ours = run_both(program)
    assert ref[1][0] == 1 and ref[3] == 2  # Pixyz: one forward pass per call
    assert_same(ref, ours)


@pytest.mark.parametrize("bad", ["negative scale", "text"])
def test_parameters_refused_once_are_refused_not_asked_of_the_network_again(bad: str) -> None:
    """Probe p343: a network whose output breaks its constraint once (a negative scale, a string) and is valid at
    the next call: the closed forms declined the output and the general path ran the network again, scoring the
    second, valid output without a word. Pixyz raises torch's ``ValueError`` after one pass; so does ours."""
    def program() -> Any:
        import torch
        from torch import nn

        from pixyz.distributions import Normal

        calls = []

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.a = nn.Linear(6, 2)

            def forward(self, x: torch.Tensor) -> dict:
                calls.append(1)
                loc = self.a(x)
                if len(calls) == 1:  # only the first pass is bad
                    if bad == "text":
                        return {"loc": "abc", "scale": torch.ones_like(loc)}
                    return {"loc": loc, "scale": -torch.ones_like(loc)}
                return {"loc": loc, "scale": torch.ones_like(loc)}

        q = Q()
        try:
            q.get_log_prob({"x": torch.rand(5, 6), "z": torch.zeros(5, 2)})
        except ValueError as e:
            return "ValueError", len(calls), str(e)
        return "no error", len(calls), ""

    ref, ours = run_both(program)
    assert ref[:2] == ours[:2] == ("ValueError", 1)
    assert ours[2].startswith("Q q(z|x): invalid parameters")
