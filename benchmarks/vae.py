"""The VAE of the seed paper's Table 1: Pyro's ``examples/vae/vae.py`` architecture, trained one step at a time.

Encoder 784 -> h (softplus) -> (loc, exp(.)) of z; decoder z -> h (softplus) -> 784 (sigmoid); Bernoulli likelihood;
standard normal prior; batch 128; Adam (lr 1e-3). Every contender builds these same two modules with the same seed
(the same initial weights) and minimizes the same objective, the negative ELBO summed over the batch (Pyro's SVI
convention), with one reparameterized sample of z per data point:

* analytic: ``-E_q[log p(x|z)] + KL[q(z|x) || p(z)]`` (closed-form KL);
* MC: ``-E_q[log p(x|z) + log p(z) - log q(z|x)]`` (the KL estimated with the same sample).

The data are binarized random 784-dim vectors (MNIST cannot be downloaded here): a fixed random probability per
pixel, drawn once, then Bernoulli samples; 32 batches of 128, cycled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import BatchCycle, Built, make_optimizer, pixyz_set_cache, unique
from benchmarks.harness import Contender

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class VAEConfig:
    z_dim: int = 10
    h_dim: int = 400
    x_dim: int = 784
    batch: int = 128
    n_batches: int = 32
    lr: float = 1e-3
    seed: int = 0

    @property
    def label(self) -> tuple[str, str]:
        return str(self.z_dim), str(self.h_dim)


# ------------------------------------------------------------------------------------------------ the networks
class Encoder(nn.Module):
    def __init__(self, x_dim: int, z_dim: int, h_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(x_dim, h_dim)
        self.fc21 = nn.Linear(h_dim, z_dim)
        self.fc22 = nn.Linear(h_dim, z_dim)
        self.softplus = nn.Softplus()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.softplus(self.fc1(x))
        return self.fc21(hidden), torch.exp(self.fc22(hidden))


class Decoder(nn.Module):
    def __init__(self, x_dim: int, z_dim: int, h_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(z_dim, h_dim)
        self.fc21 = nn.Linear(h_dim, x_dim)
        self.softplus = nn.Softplus()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc21(self.softplus(self.fc1(z))))


def build_nets(cfg: VAEConfig, device: torch.device) -> tuple[Encoder, Decoder]:
    torch.manual_seed(cfg.seed)
    return Encoder(cfg.x_dim, cfg.z_dim, cfg.h_dim).to(device), Decoder(cfg.x_dim, cfg.z_dim, cfg.h_dim).to(device)


def make_data(cfg: VAEConfig, device: torch.device) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    probs = torch.rand(cfg.x_dim, generator=g)
    return [torch.bernoulli(probs.expand(cfg.batch, cfg.x_dim), generator=g).to(device) for _ in range(cfg.n_batches)]


# ------------------------------------------------------------------------------------------------ raw PyTorch
def build_torch(cfg: VAEConfig, data: list[torch.Tensor], device: torch.device, mc: bool, compile: Any = False) -> Built:
    enc, dec = build_nets(cfg, device)
    opt = make_optimizer([*enc.parameters(), *dec.parameters()], cfg.lr)
    batches = BatchCycle(data)

    def objective(x: torch.Tensor) -> torch.Tensor:
        loc, scale = enc(x)
        eps = torch.randn_like(loc)
        z = loc + scale * eps
        rec = F.binary_cross_entropy(dec(z), x, reduction="sum")  # -sum log p(x|z)
        if mc:  # log q(z|x) - log p(z) at the sample
            log_q = (-0.5 * eps.pow(2) - scale.log() - LOG_SQRT_2PI).sum()
            log_p = (-0.5 * z.pow(2) - LOG_SQRT_2PI).sum()
            return rec + log_q - log_p
        kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1.0).sum() - scale.log().sum()
        return rec + kl

    if compile:  # the hand-written compiled step: the objective compiled, backward and Adam as usual
        objective = torch.compile(objective, **(compile if isinstance(compile, dict) else {}))

    def step() -> torch.Tensor:
        loss = objective(batches())
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    def value(x: torch.Tensor) -> float:
        with torch.no_grad():
            return float(objective(x))

    return Built(step, value)


# ------------------------------------------------------------------------------------------------ Pyro
def build_pyro(cfg: VAEConfig, data: list[torch.Tensor], device: torch.device, mean_field: bool) -> Built:
    import pyro
    import pyro.distributions as dist
    from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
    from pyro.optim import Adam

    enc, dec = build_nets(cfg, device)
    enc_name, dec_name = unique("encoder"), unique("decoder")
    zeros = torch.zeros(1, device=device)  # the prior's parameters are expanded per batch, as in vae.py
    ones = torch.ones(1, device=device)

    def model(x: torch.Tensor) -> None:
        pyro.module(dec_name, dec)
        with pyro.plate("data", x.shape[0]):
            z_loc = zeros.expand(x.shape[0], cfg.z_dim)
            z_scale = ones.expand(x.shape[0], cfg.z_dim)
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            pyro.sample("obs", dist.Bernoulli(dec(z), validate_args=False).to_event(1), obs=x)

    def guide(x: torch.Tensor) -> None:
        pyro.module(enc_name, enc)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = enc(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))

    elbo = TraceMeanField_ELBO() if mean_field else Trace_ELBO()
    svi = SVI(model, guide, Adam({"lr": cfg.lr}), loss=elbo)
    batches = BatchCycle(data)
    return Built(lambda: svi.step(batches()), lambda x: float(svi.evaluate_loss(x)))


# ------------------------------------------------------------------------------------------------ Pixyz 0.3.3
def build_pixyz(cfg: VAEConfig, data: list[torch.Tensor], device: torch.device, mc: bool, cache: bool) -> Built:
    from pixyz.distributions import Bernoulli, Normal
    from pixyz.losses import ELBO, Expectation, KullbackLeibler, LogProb
    from pixyz.models import Model

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

    q, p = Q(), P()
    prior = Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["z"], features_shape=[cfg.z_dim],
                   name="p_{prior}").to(device)
    pixyz_set_cache([q, p, prior], cache)
    if mc:
        loss = -ELBO(p * prior, q).sum()
    else:
        loss = (KullbackLeibler(q, prior) - Expectation(q, LogProb(p))).sum()
    model = Model(loss, distributions=[p, q], optimizer=torch.optim.Adam, optimizer_params={"lr": cfg.lr})
    batches = BatchCycle(data)

    def value(x: torch.Tensor) -> float:
        with torch.no_grad():
            return float(loss.eval({"x": x}))

    return Built(lambda: model.train({"x": batches()}), value)


# ------------------------------------------------------------------------------------------------ the contenders
Builder = Callable[[VAEConfig, list, torch.device], Built]


def builders() -> dict[str, tuple[str, Builder]]:
    """name -> (estimator, builder); the estimator picks the raw-PyTorch baseline of the row."""
    out: dict[str, tuple[str, Builder]] = {
        "torch (analytic KL)": ("analytic", lambda c, d, dev: build_torch(c, d, dev, mc=False)),
        "torch (MC KL)": ("mc", lambda c, d, dev: build_torch(c, d, dev, mc=True)),
        "pyro Trace_ELBO": ("mc", lambda c, d, dev: build_pyro(c, d, dev, mean_field=False)),
        "pyro TraceMeanField_ELBO": ("analytic", lambda c, d, dev: build_pyro(c, d, dev, mean_field=True)),
    }
    for mc in (False, True):
        for cache in (False, True):
            name = f"pixyz {'MC' if mc else 'analytic'} {'w/' if cache else 'w/o'} cache"
            out[name] = ("mc" if mc else "analytic",
                         lambda c, d, dev, mc=mc, cache=cache: build_pixyz(c, d, dev, mc=mc, cache=cache))
    from benchmarks import pyro_dgm_contenders as hooks

    for name, (estimator, fn) in hooks.vae_builders().items():
        out[name] = (estimator, fn)
    return out


BASELINE = {"analytic": "torch (analytic KL)", "mc": "torch (MC KL)"}


def contenders(cfg: VAEConfig, device: torch.device, only: Callable[[str], bool] = lambda n: True
               ) -> list[Contender]:
    data = make_data(cfg, device)
    out = []
    for name, (estimator, fn) in builders().items():
        if not only(name):
            continue
        group = name.split()[0]
        out.append(Contender(name, lambda fn=fn: fn(cfg, data, device).step, BASELINE[estimator], group))
    return out


def check(cfg: VAEConfig, device: torch.device, n: int = 200, log: Callable[[str], None] = print) -> bool:
    """Every contender's objective at the same weights on the same batch: the means agree within MC noise."""
    data = make_data(cfg, device)
    x = data[0]
    rows = []
    for name, (estimator, fn) in builders().items():
        try:
            built = fn(cfg, data, device)
            torch.manual_seed(1)
            vals = torch.tensor([built.loss(x) for _ in range(n)], dtype=torch.float64)
            rows.append((name, float(vals.mean()), float(vals.std() / math.sqrt(n)),
                         after_steps(fn(cfg, data, device), data[-1], Encoder)))
        except Exception as e:  # noqa: BLE001
            log(f"  {name}: could not evaluate ({type(e).__name__}: {e})")
    return compare_means(rows, log)


def after_steps(built: Built, batch: Any, counted: type, steps: int = 3) -> tuple[float, float]:
    """The loss on ``batch`` after ``steps`` training steps from the same seed, and how many times per step a module of
    type ``counted`` (the encoder) ran. Informative: when the libraries draw their noise in the same order, equal
    losses mean equal gradients and updates too; one encoder run per step means memoization worked."""
    runs = [0]

    def hook(module: nn.Module, args: Any, out: Any) -> None:
        if isinstance(module, counted):
            runs[0] += 1

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        torch.manual_seed(2)
        for _ in range(steps):
            built.step()
    finally:
        handle.remove()
    torch.manual_seed(3)
    return built.loss(batch), runs[0] / steps


def compare_means(rows: list[tuple[str, float, float, tuple[float, float]]], log: Callable[[str], None],
                  runs_label: str = "encoder runs/step") -> bool:
    """Each row's mean within 4 standard errors of the first row's (or equal to 1e-5 relative)."""
    ok = True
    ref_name, ref, ref_se, _ = rows[0]
    w = max(len(r[0]) for r in rows)
    log(f"  {'contender':{w}s} {'mean loss':>14s} {'s.e.':>9s} {'diff/σ':>7s}      {'after 3 steps':>14s}  "
        f"{runs_label}")
    for name, mean, se, (after, runs) in rows:
        sigma = math.sqrt(se ** 2 + ref_se ** 2) or 1e-12
        z = (mean - ref) / sigma
        good = abs(z) < 4.0 or abs(mean - ref) <= 1e-5 * abs(ref)
        ok &= good
        log(f"  {name:{w}s} {mean:14.4f} {se:9.4f} {z:7.2f} {'ok      ' if good else 'MISMATCH'} {after:14.4f}  "
            f"{runs:g}")
    return ok
