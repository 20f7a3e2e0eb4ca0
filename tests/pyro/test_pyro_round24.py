"""Pyro's ``pyro.optim`` optimizers with per-parameter arguments (a callable ``optim_args``) in pyro_dgm's models,
called as Pyro's ``PyroOptim`` calls them (probe p233): with one argument, the parameter's name in
``named_parameters()``'s form; with two, the module's name and the parameter's, both strings. pyro_dgm called them
with a made-up name (``"param_0"``) and the parameter tensor: a one-argument function was refused, and a
two-argument one that reads the names got a tensor or the wrong name. The reference is Pyro's own ``SVI`` on the
same distribution's model, whose param store names the parameters ``<pyro_name>$$$<parameter>``.
"""
from __future__ import annotations

from typing import Any

import pyro
import pyro.optim
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import LogProb
from pyro_dgm.models import Model


class P(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["y"], name="p")
        self.loc = torch.nn.Linear(2, 2)
        self.sc = torch.nn.Linear(2, 2)

    def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.loc(y), "scale": torch.nn.functional.softplus(self.sc(y))}


def _rates(calls: list[tuple[str, ...]]) -> Any:
    def one(param_name: str) -> dict[str, float]:
        calls.append((param_name,))
        return {"lr": 0.1 if param_name.split(".")[-2:-1] == ["loc"] else 0.01}

    def two(module_name: str, param_name: str) -> dict[str, float]:
        calls.append((module_name, param_name))
        return {"lr": 0.1 if param_name.startswith("loc.") else 0.01}

    return one, two


@pytest.mark.parametrize("argc", [1, 2])
def test_per_parameter_arguments_get_the_names_pyros_svi_gives_them(argc: int) -> None:
    """The same function, given to ``Model`` and to Pyro's ``SVI`` over the distribution's ``model``/``guide``: it
    is called with the same strings for the same parameters, and each parameter gets the same learning rate."""
    ours: list[tuple[str, ...]] = []
    torch.manual_seed(0)
    p = P()
    model = Model(-LogProb(p).mean(), distributions=[p], optimizer=pyro.optim.Adam(_rates(ours)[argc - 1]))
    lr_ours = {ours[i]: g["lr"] for i, g in enumerate(model.optimizer.param_groups)}

    theirs: list[tuple[str, ...]] = []
    pyro.clear_param_store()
    svi = SVI(p.model, lambda **kw: None, pyro.optim.Adam(_rates(theirs)[argc - 1]), Trace_ELBO())
    svi.step(x=torch.randn(5, 2), y=torch.randn(5, 2))
    lr_pyro = {theirs[i]: o.param_groups[0]["lr"] for i, o in enumerate(svi.optim.optim_objs.values())}

    assert all(isinstance(a, str) for call in ours for a in call)
    assert sorted(lr_ours.items()) == sorted(lr_pyro.items())
    assert sorted(lr_ours.values()) == [0.01, 0.01, 0.1, 0.1]
    pyro.clear_param_store()
