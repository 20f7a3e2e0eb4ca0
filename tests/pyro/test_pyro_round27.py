"""Variables whose names are also the keywords of the functions a network call goes through (probe p313): ``module``
(the network's own parameter name in pyro_dgm's call path) and ``name``, ``infer``, ``obs`` (the keywords of Pyro's
``effectful`` wrapper, which took them as its own under any Pyro handler). The reference is the same program with
the variable named ``x`` (and, for ``module``, Pixyz: ``test_diff_round48.py``)."""
from __future__ import annotations

from typing import Any

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from torch import nn

from pyro_dgm.distributions import Normal


def _program(name: str, by_keyword: bool) -> dict[str, Any]:
    """An encoder ``q(z|<name>)`` whose ``forward`` reads its input by ``name`` (``forward(self, **kw)``, as Pixyz
    code may write it, or a named argument with a forward hook, which makes the call pass it by name), a decoder, and
    what the Pyro side gives: the guide's trace and three SVI losses."""
    pyro.clear_param_store()
    torch.manual_seed(0)

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=[name], name="q")
            self.fc = nn.Linear(3, 4)

        def forward(self, **kw: Any) -> dict[str, torch.Tensor]:
            h = self.fc(kw[name])
            return {"loc": h[:, :2], "scale": nn.functional.softplus(h[:, 2:]) + 0.1}

    class P(Normal):
        def __init__(self) -> None:
            super().__init__(var=[name], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 3)

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": self.fc(z), "scale": torch.ones(1)}

    q, p = Q(), P()
    if not by_keyword:
        q.register_forward_hook(lambda *a: None)
    prior = Normal(var=["z"], loc=torch.zeros(2), scale=torch.ones(2), name="p_{prior}", features_shape=[2])
    x = torch.randn(4, 3)
    torch.manual_seed(1)
    z = q.sample({name: x})["z"]
    lp = q.get_log_prob({name: x, "z": z})
    trace = poutine.trace(q.guide).get_trace(**{name: x})
    svi = SVI((p * prior).model, q.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    torch.manual_seed(2)
    losses = [svi.step(**{name: x}) for _ in range(3)]
    return {"z": z, "log_prob": lp, "trace_z": trace.nodes["z"]["value"], "losses": losses}


@pytest.mark.parametrize("by_keyword", [True, False], ids=["forward(**kw)", "named, with a hook"])
@pytest.mark.parametrize("name", ["module", "name", "infer", "obs"])
def test_a_variable_named_as_a_keyword_of_the_call_path_reaches_the_network(name: str, by_keyword: bool) -> None:
    """Probe p313: a variable named ``module`` failed every call (``run_network() got multiple values for argument
    'module'``); ``name`` and ``infer`` failed under any Pyro handler with a ``KeyError`` raised in the user's
    ``forward`` (Pyro's ``effectful`` took them as its own keywords), and ``obs`` made Pyro hand the input back as
    the network's output. Each gives the numbers of the program with the variable named ``x``."""
    ours, ref = _program(name, by_keyword), _program("x", by_keyword)
    for key in ("z", "log_prob", "trace_z"):
        torch.testing.assert_close(ours[key], ref[key])
    assert ours["losses"] == pytest.approx(ref["losses"], rel=1e-6)
