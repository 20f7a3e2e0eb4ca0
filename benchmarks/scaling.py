"""How the per-step cost grows: with the number of factors in a joint, and with the DMM's sequence length.

Factors: a chain ``x0 ~ N(0, 1)``, ``x_i | x_{i-1} ~ N(W_i x_{i-1} + b_i, 1)`` for ``i = 1..n-1`` (``n`` factors,
8 features, a ``Linear(8, 8)`` per link, batch 128). One step: draw every variable ancestrally (no grad), score the
draw under the joint (``get_log_prob``), backpropagate ``-sum log p``, Adam step. Contenders: hand-written PyTorch, the
pyro_dgm product of ``n`` distributions (``p_{n-1} * ... * p_1 * p_0``, a ``MultiplyDistribution``) through
``sample`` / ``get_log_prob``, and the same in Pixyz 0.3.3. The overhead per factor is
``(ms(contender) - ms(torch)) / n``: it should stay flat as ``n`` grows.

Sequence length: the DMM of :mod:`benchmarks.dmm` for ``T`` in 10..80; overhead per time step
``(ms(contender) - ms(torch)) / T``.
"""
from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from benchmarks.common import Built, make_optimizer, pixyz_set_cache
from benchmarks.harness import Contender, Result

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class ChainConfig:
    n: int = 8
    d: int = 8
    batch: int = 128
    lr: float = 1e-3
    seed: int = 0


def build_links(cfg: ChainConfig, device: torch.device) -> nn.ModuleList:
    torch.manual_seed(cfg.seed)
    return nn.ModuleList(nn.Linear(cfg.d, cfg.d) for _ in range(cfg.n - 1)).to(device)


def build_torch(cfg: ChainConfig, device: torch.device) -> Built:
    links = build_links(cfg, device)
    opt = make_optimizer(links.parameters(), cfg.lr)

    def log_prob(xs: list[torch.Tensor]) -> torch.Tensor:
        lp = (-0.5 * xs[0].pow(2) - LOG_SQRT_2PI).sum(-1)
        for i, lin in enumerate(links, start=1):
            lp = lp + (-0.5 * (xs[i] - lin(xs[i - 1])).pow(2) - LOG_SQRT_2PI).sum(-1)
        return lp

    def step() -> torch.Tensor:
        with torch.no_grad():
            xs = [torch.randn(cfg.batch, cfg.d, device=device)]
            for lin in links:
                xs.append(lin(xs[-1]) + torch.randn(cfg.batch, cfg.d, device=device))
        loss = -log_prob(xs).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    def value(xs: list[torch.Tensor]) -> float:
        with torch.no_grad():
            return float(-log_prob(xs).sum())

    return Built(step, value)


def _pyro_dgm_chain(cfg: ChainConfig, device: torch.device) -> tuple[Any, nn.ModuleList]:
    from pyro_dgm.distributions import Normal

    links = build_links(cfg, device)

    class Link(Normal):
        def __init__(self, i: int, lin: nn.Module) -> None:
            super().__init__(var=[f"x{i}"], cond_var=[f"x{i - 1}"], scale=1.0, name=f"p_{{{i}}}")
            self.lin = lin

        def forward(self, **prev: torch.Tensor) -> dict[str, torch.Tensor]:
            (x,) = prev.values()
            return {"loc": self.lin(x)}

    factors = [Link(i, lin) for i, lin in enumerate(links, start=1)][::-1]
    factors.append(Normal(loc=0.0, scale=1.0, var=["x0"], features_shape=[cfg.d], name="p_{0}").to(device))
    return functools.reduce(operator.mul, factors), links


def build_pyro_dgm(cfg: ChainConfig, device: torch.device) -> Built:
    joint, links = _pyro_dgm_chain(cfg, device)
    opt = make_optimizer(links.parameters(), cfg.lr)

    def step() -> torch.Tensor:
        with torch.no_grad():
            values = joint.sample(batch_n=cfg.batch)
        loss = -joint.get_log_prob(values).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    def value(xs: list[torch.Tensor]) -> float:
        with torch.no_grad():
            return float(-joint.get_log_prob({f"x{i}": x for i, x in enumerate(xs)}).sum())

    return Built(step, value)


def build_pixyz(cfg: ChainConfig, device: torch.device, cache: bool = True) -> Built:
    from pixyz.distributions import Normal

    links = build_links(cfg, device)

    class Link(Normal):
        def __init__(self, i: int, lin: nn.Module) -> None:
            super().__init__(var=[f"x{i}"], cond_var=[f"x{i - 1}"], scale=torch.tensor(1.0), name=f"p_{{{i}}}")
            self.lin = lin

        def forward(self, **prev: torch.Tensor) -> dict[str, torch.Tensor]:
            (x,) = prev.values()
            return {"loc": self.lin(x)}

    factors = [Link(i, lin).to(device) for i, lin in enumerate(links, start=1)][::-1]
    factors.append(Normal(loc=torch.tensor(0.0), scale=torch.tensor(1.0), var=["x0"], features_shape=[cfg.d],
                          name="p_{0}").to(device))
    pixyz_set_cache(factors, cache)
    joint = functools.reduce(operator.mul, factors)
    opt = make_optimizer(links.parameters(), cfg.lr)

    def step() -> torch.Tensor:
        # not under no_grad: Pixyz's cache would answer the scoring pass with the no-grad parameters of the
        # sampling pass (keyed by tensor id, not grad mode) and backward would fail; Pixyz's sample() detaches
        # the draw itself, and with the cache on the scoring pass reuses the sampling pass's forward.
        values = joint.sample(batch_n=cfg.batch)
        loss = -joint.get_log_prob(values).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    def value(xs: list[torch.Tensor]) -> float:
        with torch.no_grad():
            return float(-joint.get_log_prob({f"x{i}": x for i, x in enumerate(xs)}).sum())

    return Built(step, value)


def chain_builders() -> dict[str, Callable[[ChainConfig, torch.device], Built]]:
    out: dict[str, Callable[[ChainConfig, torch.device], Built]] = {"torch": build_torch}
    try:
        from pyro_dgm.distributions import MultiplyDistribution, Normal  # noqa: F401
        out["pyro_dgm MultiplyDistribution"] = build_pyro_dgm
    except Exception:  # noqa: BLE001 - reported as a missing column
        pass
    out["pixyz MultiplyDistribution (cache on)"] = build_pixyz
    return out


def chain_contenders(cfg: ChainConfig, device: torch.device) -> list[Contender]:
    return [Contender(name, lambda fn=fn: fn(cfg, device).step, "torch", name.split()[0])
            for name, fn in chain_builders().items()]


def check_chain(cfg: ChainConfig, device: torch.device, log: Callable[[str], None] = print) -> bool:
    """The three log-densities agree exactly on the same draw (no MC noise: the same values are scored)."""
    torch.manual_seed(7)
    xs = [torch.randn(cfg.batch, cfg.d, device=device) for _ in range(cfg.n)]
    vals = {name: fn(cfg, device).loss(xs) for name, fn in chain_builders().items()}
    ref = vals["torch"]
    ok = True
    for name, v in vals.items():
        good = abs(v - ref) <= 1e-4 * abs(ref)
        ok &= good
        log(f"  chain n={cfg.n}: {name:38s} -log p = {v:.4f} {'ok' if good else 'MISMATCH'}")
    return ok


# ------------------------------------------------------------------------------------------------ tables
def scaling_table(per_size: dict[int, dict[str, Result]], size_name: str, unit: str, base: str) -> str:
    """Rows: sizes. Columns: ms/step of each contender, and its overhead over ``base`` per factor / per time step."""
    names = list(next(iter(per_size.values())).keys())
    others = [n for n in names if n != base]
    head = [size_name] + [f"{n} ms/step" for n in names] + [f"{n}: overhead/{unit} (ms)" for n in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for size, results in per_size.items():
        row = [str(size)]
        for n in names:
            r = results[n]
            row.append(f"{r.median:.2f}" if r.ms else f"skipped ({r.error})")
        b = results[base]
        for n in others:
            r = results[n]
            row.append(f"{(r.median - b.median) / size:.3f}" if r.ms and b.ms else "–")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
