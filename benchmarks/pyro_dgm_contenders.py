"""pyro_dgm contenders: the registry where they plug into the VAE and DMM benchmarks.

=====================================================================================================================
REGISTRY. A contender is a function ``build(cfg, data, device) -> Built`` (see ``benchmarks/common.py``): it builds
the networks with ``benchmarks.vae.build_nets`` / ``benchmarks.dmm.build_nets`` (same seed: the same initial weights
as every other contender), wraps them in pyro_dgm distributions, and returns ``Built(step, loss)``: ``step()`` one
training step on the next batch of ``data``, ``loss(batch)`` the objective's value (negative ELBO summed over the
batch) without an update. Register it with ``@vae_hook(name, estimator)`` or ``@dmm_hook(name, estimator)``;
``estimator`` is ``"analytic"`` or ``"mc"`` and picks the raw-PyTorch row its ratio is taken against.

A hook whose API is missing is skipped with a note (``missing_api()``); one that raises while building is reported
in the table as "skipped: build failed ..." and the other rows still run.
=====================================================================================================================
"""
from __future__ import annotations

import itertools
from typing import Any, Callable

import torch

from benchmarks.common import BatchCycle, Built

Build = Callable[[Any, Any, torch.device], Built]
_VAE: dict[str, tuple[str, Build]] = {}
_DMM: dict[str, tuple[str, Build]] = {}


def vae_hook(name: str, estimator: str) -> Callable[[Build], Build]:
    def deco(fn: Build) -> Build:
        _VAE[name] = (estimator, fn)
        return fn
    return deco


def dmm_hook(name: str, estimator: str) -> Callable[[Build], Build]:
    def deco(fn: Build) -> Build:
        _DMM[name] = (estimator, fn)
        return fn
    return deco


# ------------------------------------------------------------------------------------------------ what exists now
def _probe() -> dict[str, str]:
    """The pyro_dgm API each group of hooks needs, and what is missing (empty when all is there)."""
    missing: dict[str, str] = {}
    try:
        import pyro_dgm.losses as L
    except Exception as e:  # noqa: BLE001
        return {"losses": f"pyro_dgm.losses does not import ({type(e).__name__}: {e})",
                "model": "pyro_dgm.losses does not import", "iterative": "pyro_dgm.losses does not import"}
    need = [n for n in ("KullbackLeibler", "Expectation", "LogProb", "ELBO") if not hasattr(L, n)]
    if need:
        missing["losses"] = f"pyro_dgm.losses has no {', '.join(need)}"
    if not hasattr(getattr(L, "Loss", None), "loss_and_grads"):
        missing["svi"] = "pyro_dgm.losses.Loss is not a pyro.infer.ELBO (no loss_and_grads)"
    try:
        from pyro_dgm.models import Model  # noqa: F401
    except Exception:  # noqa: BLE001
        missing["model"] = "pyro_dgm.models.Model does not exist yet"
    try:
        from pyro_dgm.losses.iteration import IterativeLoss  # noqa: F401
    except Exception:  # noqa: BLE001
        missing["iterative"] = "pyro_dgm.losses.iteration.IterativeLoss does not exist yet"
    try:
        from pyro_dgm.poutine import set_cache_maxsize  # noqa: F401
    except Exception:  # noqa: BLE001
        missing["memo"] = "pyro_dgm.poutine.set_cache_maxsize does not exist yet"
    return missing


MISSING = _probe()


def missing_api(*groups: str) -> str | None:
    """A note naming what is missing for these groups, or None when they can run."""
    notes = [MISSING[g] for g in groups if g in MISSING]
    return "; ".join(notes) if notes else None


def _memo_switch(on: bool) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Run a step with pyro_dgm's memoization on or off (the knob is global; set it around each step)."""
    from pyro_dgm.poutine import get_cache_maxsize, set_cache_maxsize

    def wrap(step: Callable[[], Any]) -> Callable[[], Any]:
        if on:
            return step
        default = get_cache_maxsize() or 128

        def off() -> Any:
            set_cache_maxsize(0)
            try:
                return step()
            finally:
                set_cache_maxsize(default)
        return off
    return wrap


# ------------------------------------------------------------------------------------------------ VAE
def _vae_dists(cfg: Any, device: torch.device) -> tuple[Any, Any, Any]:
    from pyro_dgm.distributions import Bernoulli, Normal

    from benchmarks.vae import build_nets

    enc, dec = build_nets(cfg, device)

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.enc = enc

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            loc, scale = self.enc(x)
            return {"loc": loc, "scale": scale}

    class P(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.dec = dec

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"probs": self.dec(z)}

    prior = Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[cfg.z_dim], name="p_{prior}").to(device)
    return Q(), P(), prior


def _vae_loss(q: Any, p: Any, prior: Any, mc: bool) -> Any:
    from pyro_dgm.losses import ELBO, Expectation, KullbackLeibler, LogProb

    if mc:
        return -ELBO(p * prior, q).sum()
    return (KullbackLeibler(q, prior) - Expectation(q, LogProb(p))).sum()


def _vae_model_train(cfg: Any, data: Any, device: torch.device, mc: bool, memo: bool, compile: Any = False
                     ) -> Built:
    from pyro_dgm.models import Model

    q, p, prior = _vae_dists(cfg, device)
    loss = _vae_loss(q, p, prior, mc)
    model = Model(loss, distributions=[p, q], optimizer=torch.optim.Adam, optimizer_params={"lr": cfg.lr},
                  compile=compile)
    batches = BatchCycle(data)
    step = _memo_switch(memo)(lambda: model.train({"x": batches()}))

    def value(x: torch.Tensor) -> float:
        with torch.no_grad():
            return float(loss.eval({"x": x}))
    return Built(step, value)


_SVI_BUILDS = itertools.count()


def _vae_svi(cfg: Any, data: Any, device: torch.device, mc: bool, memo: bool) -> Built:
    from pyro.infer import SVI
    from pyro.optim import Adam

    q, p, prior = _vae_dists(cfg, device)
    n = next(_SVI_BUILDS)  # several contenders live in one process: each registers under its own Pyro names
    for d in (q, p, prior):
        d.pyro_name = f"{d.prob_text}#{n}"
    loss = _vae_loss(q, p, prior, mc)
    svi = SVI(p.model, q.guide, Adam({"lr": cfg.lr}), loss=loss)  # the loss evaluates its own formula
    batches = BatchCycle(data)
    first = [True]

    def svi_step() -> float:
        if not first[0]:
            return svi.step(x=batches())
        first[0] = False  # the first step checks that SVI updates the networks at all
        w0 = q.enc.fc1.weight.detach().clone()
        out = svi.step(x=batches())
        if torch.equal(w0, q.enc.fc1.weight.detach()):
            raise RuntimeError("svi.step did not update the encoder: the loss's networks are not registered with "
                               "Pyro")
        return out

    return Built(_memo_switch(memo)(svi_step), lambda x: float(svi.evaluate_loss(x=x)))


def _register_vae() -> None:
    for entry, needs, build in (("Model.train", ("losses", "model", "memo"), _vae_model_train),
                                ("SVI", ("losses", "svi", "memo"), _vae_svi)):
        if missing_api(*needs) is not None:
            continue
        for mc in (False, True):
            for memo in (True, False):
                tag = f"{'MC' if mc else 'analytic'}{'' if memo else ', no memo'}"
                vae_hook(f"pyro_dgm {entry} ({tag})", "mc" if mc else "analytic")(
                    lambda c, d, dev, mc=mc, memo=memo, build=build: build(c, d, dev, mc, memo))


# ------------------------------------------------------------------------------------------------ DMM
def _dmm_dists(cfg: Any, device: torch.device) -> tuple[Any, Any, Any, Any]:
    """q(z_t|z_{t-1}, h_t) (combiner), p(z_t|z_{t-1}) (gated transition), p(x_t|z_t) (emitter), and the nets."""
    from pyro_dgm.distributions import Bernoulli, Normal

    from benchmarks.dmm import build_nets

    nets = build_nets(cfg, device)

    class Combiner(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z_t"], cond_var=["z_t_1", "h_rnn"], name="q")
            self.net = nets.combiner

        def forward(self, z_t_1: torch.Tensor, h_rnn: torch.Tensor) -> dict[str, torch.Tensor]:
            loc, scale = self.net(z_t_1, h_rnn)
            return {"loc": loc, "scale": scale}

    class Transition(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z_t"], cond_var=["z_t_1"], name="p")
            self.net = nets.trans

        def forward(self, z_t_1: torch.Tensor) -> dict[str, torch.Tensor]:
            loc, scale = self.net(z_t_1)
            return {"loc": loc, "scale": scale}

    class Emitter(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x_t"], cond_var=["z_t"], name="p")
            self.net = nets.emitter

        def forward(self, z_t: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"probs": self.net(z_t)}

    return Combiner(), Transition(), Emitter(), nets


def dmm_loss(cfg: Any, device: torch.device, mc: bool) -> tuple[Any, list[Any], Any, Callable[[Any], dict]]:
    """The DMM's negative ELBO as an ``IterativeLoss``: ``(loss, distributions, nets, values)``, where ``values(b)``
    turns a batch ``(x, x reversed)`` into the loss's inputs (the RNN runs outside the loss)."""
    from pyro_dgm.losses import Expectation, KullbackLeibler, LogProb
    from pyro_dgm.losses.iteration import IterativeLoss

    from benchmarks.dmm import rnn_features

    q, trans, emit, nets = _dmm_dists(cfg, device)
    if mc:
        step_loss = Expectation(q, LogProb(q) - LogProb(trans) - LogProb(emit)).sum()
    else:
        step_loss = (KullbackLeibler(q, trans) - Expectation(q, LogProb(emit))).sum()
    loss = IterativeLoss(step_loss, max_iter=cfg.T, series_var=["x_t", "h_rnn"], update_value={"z_t": "z_t_1"})

    def values(b: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, x_rev = b
        h = rnn_features(nets, x_rev)  # [B, T, rnn]
        return {"x_t": x.transpose(0, 1), "h_rnn": h.transpose(0, 1), "z_t_1": nets.z_0.expand(x.shape[0], cfg.z_dim)}

    return loss, [q, trans, emit, nets.rnn_enc], nets, values


def _dmm_model_train(cfg: Any, data: Any, device: torch.device, mc: bool, memo: bool, compile: Any = False
                     ) -> Built:
    from pyro_dgm.models import Model

    loss, distributions, _, values = dmm_loss(cfg, device, mc)
    model = Model(loss, distributions=distributions, optimizer=torch.optim.Adam,
                  optimizer_params={"lr": cfg.lr}, compile=compile)
    batches = BatchCycle(data)

    step = _memo_switch(memo)(lambda: model.train(values(batches())))

    def value(b: tuple[torch.Tensor, torch.Tensor]) -> float:
        with torch.no_grad():
            return float(loss.eval(values(b)))
    return Built(step, value)


def _register_dmm() -> None:
    if missing_api("losses", "model", "iterative", "memo") is None:
        for mc in (False, True):
            est = "mc" if mc else "analytic"
            for memo in (True, False):
                tag = f"{'MC' if mc else 'analytic'}{'' if memo else ', no memo'}"
                dmm_hook(f"pyro_dgm Model.train IterativeLoss ({tag})", est)(
                    lambda c, d, dev, mc=mc, memo=memo: _dmm_model_train(c, d, dev, mc, memo))


_register_vae()
_register_dmm()


def vae_builders() -> dict[str, tuple[str, Build]]:
    return dict(_VAE)


def dmm_builders() -> dict[str, tuple[str, Build]]:
    return dict(_DMM)


def notes() -> list[str]:
    """Why pyro_dgm rows are absent, for the README / the run's output."""
    out = []
    if m := missing_api("losses", "model", "memo"):
        out.append(f"pyro_dgm Model.train (VAE) skipped: {m}")
    if m := missing_api("losses", "svi", "memo"):
        out.append(f"pyro_dgm SVI (VAE) skipped: {m}")
    if m := missing_api("losses", "model", "iterative", "memo"):
        out.append(f"pyro_dgm DMM skipped: {m}")
    return out
