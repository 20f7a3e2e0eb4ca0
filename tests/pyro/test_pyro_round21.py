"""Pyro round 21: a network whose ``forward`` calls ``pyro.sample`` itself (not through ``PyroSample``).

The memoizer shared such a network's output across Pyro's particles, as any deterministic network's: ``PyroELBO``
with ``num_particles=3`` scored particles 2 and 3 without their weight sites (7.34 where Pyro's
``differentiable_loss`` gives 9.24). The first pass under a Pyro handler now sees the site and marks the network as
drawing, so it keys on the handlers (as dropout and ``PyroSample`` weights do).
"""
from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from test_pyro_round20 import assert_particles_match_pyro


def _regression() -> tuple[Any, torch.Tensor, torch.Tensor]:
    from pyro_dgm.distributions import Normal

    class PY(Normal):
        def __init__(self) -> None:
            super().__init__(var=["y"], cond_var=["x"], name="p")

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            w = pyro.sample("w", dist.Normal(torch.zeros(3, 1), 1.).to_event(2))
            return {"loc": x @ w, "scale": torch.full((1,), 0.5)}

    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    y = torch.randn(5, 1, generator=torch.Generator().manual_seed(3))
    return PY(), x, y


def test_pyro_elbo_particles_run_a_forward_that_calls_pyro_sample_anew() -> None:
    p, x, y = _regression()
    assert_particles_match_pyro(p, x, y)
    assert p.__dict__.get("_dgm_makes_sites") is True


def test_one_trace_shares_the_pass_and_two_traces_record_the_site_twice() -> None:
    """Within one model run the network's two uses are one pass (one ``w`` site, no duplicate-site error); inside
    ``memoize()`` a second trace runs it again and records its own ``w``."""
    from pyro_dgm.poutine import memoize

    p, x, y = _regression()

    def model() -> Any:
        a = p.dist({"x": x}).mean
        b = p.get_log_prob({"x": x, "y": y})
        return a, b

    with memoize():
        tr1 = poutine.trace(model).get_trace()
        tr2 = poutine.trace(model).get_trace()
    for tr in (tr1, tr2):
        sites = [n for n, s in tr.nodes.items() if s["type"] == "sample" and n == "w"]
        assert sites == ["w"]
        w = tr.nodes["w"]["value"]
        loc, _ = tr.nodes["_RETURN"]["value"]
        torch.testing.assert_close(loc, x @ w)
    assert not torch.equal(tr1.nodes["w"]["value"], tr2.nodes["w"]["value"])


def test_a_network_that_makes_no_site_is_still_shared_across_handlers() -> None:
    """The control: a deterministic encoder seen under a trace is not marked, and one ``memoize()`` scope shares its
    pass between two traces."""
    from pyro_dgm.distributions import Normal
    from pyro_dgm.poutine import memoize

    calls = []

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            calls.append(1)
            return {"loc": self.fc(x), "scale": torch.ones(2)}

    q, x = Q(), torch.randn(4, 3)
    with memoize():
        poutine.trace(lambda: q.dist({"x": x}).mean).get_trace()
        poutine.trace(lambda: q.dist({"x": x}).mean).get_trace()
    assert len(calls) == 1 and "_dgm_makes_sites" not in q.__dict__
