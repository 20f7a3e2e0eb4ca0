r"""A planar normalizing flow (Rezende & Mohamed, 2015) fitted to a 2-D unnormalized density :math:`e^{-U(z)}`.

The target is one of the paper's test energies (Table 1, Figure 3): ``U1`` (a ring with two modes), ``U2`` (a sine
wave), ``U3`` and ``U4`` (two branches). The model, as in the seed paper's normalizing-flow distributions:

    q_0(z_0) = Normal(0, I)                                 the base distribution
    q(z) = q(z = f_K o ... o f_1(z_0))                      TransformedDistribution(q_0, [PlanarFlow] * K)
    f_k(z) = z + u_k tanh(w_k^T z + b_k)                    planar flows (u constrained so each is invertible)
    p(z) = e^{-U(z)}                                        CustomProb: a density known up to its normalizer Z

and the loss is the reverse KL divergence, estimated from samples of ``q``, with the paper's annealing of the target
(an inverse temperature :math:`\beta` that rises from 0.01 to 1 over the first half of training, so that ``q``
spreads over both modes before it is asked to fit them; a ``Parameter`` of the loss)::

    loss = E_{q(z)}[log q(z) - beta log p(z)]               (log p unnormalized)
    KL[q(z) || p(z)] = E_{q(z)}[log q(z) - log p(z)]        the same at beta = 1: the test loss, KL - log Z

``q`` scores its own samples from the flows' memory of the forward pass (no inverse is needed to train). The
metric is the true divergence :math:`D_{KL}[q\|p/Z]` in nats (lower is better), with :math:`\log Z` computed once on a
fine grid. The PNG shows the target density, the flow's density (exact, by inverting the flows on the grid) and
samples of ``q``.

Usage::

    python examples/planar_flow.py                 # U1 with 16 flows, under a minute on one CPU core
    python examples/planar_flow.py --energy U2 --flows 32
    python examples/planar_flow.py --smoke         # a few seconds: checks that everything runs
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (no display for matplotlib, pyro_dgm from a checkout, command line, figures)
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from pyro_dgm.distributions import CustomProb, Normal, TransformedDistribution  # noqa: E402
from pyro_dgm.flows import PlanarFlow  # noqa: E402
from pyro_dgm.losses import E, KullbackLeibler, LogProb, Parameter  # noqa: E402
from pyro_dgm.models import Model  # noqa: E402

METRIC = ("kl", "min")
LIM = 4.0  # the plotted square [-LIM, LIM]^2 (the densities' mass lies inside it)


# ----------------------------------------------------------------------------------------------------------- targets
def _w1(z: Tensor) -> Tensor:
    return torch.sin(2 * math.pi * z[..., 0] / 4)


def U1(z: Tensor) -> Tensor:
    z1 = z[..., 0]
    ring = 0.5 * ((z.norm(dim=-1) - 2) / 0.4) ** 2
    return ring - torch.logaddexp(-0.5 * ((z1 - 2) / 0.6) ** 2, -0.5 * ((z1 + 2) / 0.6) ** 2)


def U2(z: Tensor) -> Tensor:
    return 0.5 * ((z[..., 1] - _w1(z)) / 0.4) ** 2


def U3(z: Tensor) -> Tensor:
    w2 = 3 * torch.exp(-0.5 * ((z[..., 0] - 1) / 0.6) ** 2)
    a, b = z[..., 1] - _w1(z), z[..., 1] - _w1(z) + w2
    return -torch.logaddexp(-0.5 * (a / 0.35) ** 2, -0.5 * (b / 0.35) ** 2)


def U4(z: Tensor) -> Tensor:
    w3 = 3 * torch.sigmoid((z[..., 0] - 1) / 0.3)
    a, b = z[..., 1] - _w1(z), z[..., 1] - _w1(z) + w3
    return -torch.logaddexp(-0.5 * (a / 0.4) ** 2, -0.5 * (b / 0.35) ** 2)


ENERGIES = {"U1": U1, "U2": U2, "U3": U3, "U4": U4}


def grid(n: int) -> tuple[Tensor, float]:
    """An ``[n*n, 2]`` grid over the plotted square and the area of one cell."""
    t = torch.linspace(-LIM, LIM, n)
    gx, gy = torch.meshgrid(t, t, indexing="xy")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], 1), float((t[1] - t[0]) ** 2)


def log_normalizer(energy: Tensor) -> float:
    """:math:`\\log Z = \\log \\int e^{-U}`, by a Riemann sum on a fine grid (the wave energies are integrated over
    the plotted square, where the paper draws them)."""
    pts, cell = grid(801)
    return float(torch.logsumexp(-energy(pts), 0) + math.log(cell))


# ----------------------------------------------------------------------------------------------------------- use
def save_figure(path: Path, energy: Any, q: TransformedDistribution, title: str) -> None:
    pts, _ = grid(200)
    with torch.no_grad():
        target = torch.exp(-energy(pts)).reshape(200, 200)
        log_q = q.get_log_prob({"z": pts}).reshape(200, 200)
        samples = q.sample(batch_n=2000)["z"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.3))
    extent = (-LIM, LIM, -LIM, LIM)
    axes[0].imshow(target.numpy(), origin="lower", extent=extent, cmap="magma")
    axes[0].set_title(r"target $e^{-U(z)}$", fontsize=10)
    axes[1].imshow(log_q.exp().numpy(), origin="lower", extent=extent, cmap="magma")
    axes[1].set_title(r"flow density $q(z)$ (exact)", fontsize=10)
    axes[2].scatter(*samples.T.numpy(), s=2, alpha=0.5)
    axes[2].set_xlim(-LIM, LIM)
    axes[2].set_ylim(-LIM, LIM)
    axes[2].set_title(r"samples $z \sim q(z)$", fontsize=10)
    for ax in axes:
        ax.set_aspect("equal")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _common.save(fig, path, dpi=90)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = _common.parser(__doc__, "out/planar_flow.png",
                        helps={"seed": "seed of the networks and the draws",
                               "smoke": "a few seconds: 3 short epochs"})
    ap.add_argument("--energy", choices=sorted(ENERGIES), default="U1", help="the target")
    ap.add_argument("--flows", type=int, default=16, help="number of planar flows K")
    ap.add_argument("--epochs", type=int, default=20, help="epochs of --steps steps each")
    ap.add_argument("--steps", type=int, default=200, help="optimization steps per epoch")
    ap.add_argument("--batch-size", type=int, default=256, help="samples of q per step")
    ap.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Train, print the metric per epoch, write the figure; returns the per-epoch history."""
    args = parse_args(argv)
    _common.setup(args.seed, args.threads)
    if args.smoke:
        args.epochs, args.steps = 3, 30
    energy = ENERGIES[args.energy]
    log_z = log_normalizer(energy)

    # 1. the distributions: the flow q(z) and the unnormalized target p(z)
    q0 = Normal(loc=torch.zeros(2), scale=1.0, var=["z_0"], name="q_0")
    q = TransformedDistribution(q0, [PlanarFlow(2, constraint_u=True) for _ in range(args.flows)], var=["z"],
                                name="q")
    p = CustomProb(lambda z: -energy(z), var=["z"], name="p", distribution_name=f"exp(-{args.energy})")

    # 2. the losses: the annealed reverse KL divergence for training, the KL itself for testing
    beta = Parameter("beta")
    loss = E(q, LogProb(q) - beta * LogProb(p)).mean()
    kl = KullbackLeibler(q, p, analytical=False).mean()

    # 3. the model; q has no inputs, so each step draws batch_n samples (passed on to the sampler)
    model = Model(loss, test_loss=kl, distributions=[q], optimizer=torch.optim.Adam,
                  optimizer_params={"lr": args.lr})
    print(model)
    print(q.prob_joint_factorized_and_text, "  with", len(q.flow), "planar flows;  target", p.prob_text,
          f"= exp(-{args.energy}(z)) / Z,  log Z = {log_z:.4f}")

    history: dict[str, list[float]] = {"kl": [], "train_loss": []}
    total_steps, step = args.epochs * args.steps, 0
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        total = 0.0
        for _ in range(args.steps):
            b = min(1.0, 0.01 + step / (0.5 * total_steps))  # the inverse temperature: 0.01 -> 1, then 1
            total += float(model.train({"beta": b}, batch_n=args.batch_size))
            step += 1
        history["train_loss"].append(total / args.steps)
        history["kl"].append(float(model.test({}, batch_n=8192)) + log_z)
        print(f"epoch {epoch:3d}  beta {b:.2f}  loss {history['train_loss'][-1]:8.4f}  KL[q||p] "
              f"{history['kl'][-1]:.4f} nats  ({time.perf_counter() - start:5.1f} s)")

    save_figure(args.out, energy, q, f"{args.flows} planar flows fitted to {args.energy}: "
                                     f"KL[q||p] = {history['kl'][-1]:.3f} nats")
    print(f"final KL[q||p] {history['kl'][-1]:.4f} nats; wrote {args.out}")
    return history


if __name__ == "__main__":
    main()
