"""Pyro round 19 (probe p142: Pyro's less used handlers and inference algorithms against plain-Pyro twins).

``PyroELBO(joint.model, q.guide, elbo=JitTrace_ELBO())`` (and the other JIT ELBOs) failed at the first step: Pyro
runs the model and guide once before its TorchScript trace, and inside the trace the memoizing scope of the loss's
evaluation answered the encoder's call with that first run's output, which the trace cannot take ("Cannot insert a
Tensor that requires grad as a constant"). The memoizer's key now tells traced calls apart.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import SVI, JitTrace_ELBO, JitTraceEnum_ELBO, JitTraceMeanField_ELBO
from torch import nn

ELBOS: dict[str, Callable[[], Any]] = {
    "JitTrace_ELBO": lambda: JitTrace_ELBO(ignore_jit_warnings=True),
    "JitTraceMeanField_ELBO": lambda: JitTraceMeanField_ELBO(ignore_jit_warnings=True),
    "JitTraceEnum_ELBO": lambda: JitTraceEnum_ELBO(max_plate_nesting=1, ignore_jit_warnings=True),
}


def _vae(cached: bool = False) -> tuple[Any, Any, nn.Module, nn.Module]:
    from pyro_dgm.distributions import Normal
    from pyro_dgm.utils import lru_cache_for_sample_dict

    class PX(Normal):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 3)

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"loc": self.fc(z), "scale": torch.ones(3)}

    class QZ(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(3, 4)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = self.fc(x)
            return {"loc": h[..., :2], "scale": F.softplus(h[..., 2:]) + 0.1}

    class CachedQZ(QZ):  # Pixyz's idiom: the parameters cached by the decorator
        @lru_cache_for_sample_dict()
        def get_params(self, params_dict: dict = {}, **kwargs: Any) -> dict:  # noqa: B006 (Pixyz's signature)
            return super().get_params(params_dict, **kwargs)

    torch.manual_seed(0)
    px, qz = PX(), (CachedQZ() if cached else QZ())
    joint = px * Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p")
    return joint, qz, px, qz


def _twin(px: nn.Module, qz: nn.Module) -> tuple[Callable[..., None], Callable[..., None]]:
    def model(x: torch.Tensor) -> None:
        pyro.module(px.pyro_name, px)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.).to_event(1))
            pyro.sample("x", dist.Normal(px.fc(z), 1.).to_event(1), obs=x)

    def guide(x: torch.Tensor) -> None:
        pyro.module(qz.pyro_name, qz)
        with pyro.plate("data", len(x)):
            h = qz.fc(x)
            pyro.sample("z", dist.Normal(h[..., :2], F.softplus(h[..., 2:]) + 0.1).to_event(1))

    return model, guide


def _train(use_dgm: bool, elbo: str, cached: bool = False) -> tuple[list[float], list[torch.Tensor]]:
    from pyro_dgm.losses import PyroELBO

    joint, q, px, qz = _vae(cached)
    model, guide = (joint.model, q.guide) if use_dgm else _twin(px, qz)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), PyroELBO(model, guide, elbo=ELBOS[elbo]()))
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (TorchScript's tracer warnings)
        losses = [svi.step(x=x) for _ in range(3)]
    return losses, [t.detach().clone() for t in (*px.parameters(), *qz.parameters())]


@pytest.mark.parametrize("cached", [False, True], ids=["plain", "lru_cache_for_sample_dict"])
@pytest.mark.parametrize("elbo", list(ELBOS))
def test_pyro_elbo_with_a_jit_elbo_trains_as_the_plain_pyro_twin(elbo: str, cached: bool) -> None:
    ours, ours_params = _train(True, elbo, cached)  # (was: a ShapeError at the first step)
    ref, ref_params = _train(False, elbo)
    assert ours == pytest.approx(ref, rel=1e-6)
    assert len(set(ours)) == 3  # the parameters moved between the steps
    for a, b in zip(ours_params, ref_params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_memoizer_still_reuses_an_encoder_within_one_trace() -> None:
    from pyro_dgm.losses import Expectation, LogProb
    from pyro_dgm.poutine import memoize

    _, q, _, qz = _vae()
    qz.requires_grad_(False)  # (a plain trace takes the weights as constants)
    calls: list[int] = []
    qz.fc.register_forward_hook(lambda *a: calls.append(1))
    loss = (LogProb(q) + Expectation(q, LogProb(q))).mean()  # q's network at two places
    x = torch.randn(5, 3)

    def traced(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        with memoize():
            return loss.eval({"x": x, "z": z})

    z = torch.randn(5, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fn = torch.jit.trace(traced, (x, z), check_trace=False)
    assert len(calls) == 1  # one forward pass while tracing (the two uses shared it)
    torch.manual_seed(3)
    eager = loss.eval({"x": x, "z": z})
    torch.manual_seed(3)
    torch.testing.assert_close(fn(x, z), eager)


def test_two_traces_made_with_one_example_do_not_share_an_encoder_output() -> None:
    import contextlib

    from pyro_dgm.poutine import memoize

    x, new = torch.randn(3, 3), torch.randn(3, 3)  # the example both traces are made with; other data
    for cached, scope in [(True, contextlib.nullcontext), (False, memoize)]:  # Pixyz's decorator; a memoize() scope
        _, q, _, _ = _vae(cached)
        q.requires_grad_(False)  # (a plain trace takes the weights as constants)

        def loc(x: torch.Tensor, q: Any = q) -> torch.Tensor:
            return q.get_params({"x": x})["loc"]

        with warnings.catch_warnings(), scope():
            warnings.simplefilter("ignore")
            first = torch.jit.trace(loc, (x,), check_trace=False)
            second = torch.jit.trace(lambda x: 2 * loc(x), (x,), check_trace=False)
        torch.testing.assert_close(first(new), q.fc(new)[..., :2])
        torch.testing.assert_close(second(new), 2 * q.fc(new)[..., :2])  # (was: the example's, a constant)
