r"""A generative adversarial network (Goodfellow et al., 2014) on a 2-D mixture of eight Gaussians.

The model, as the seed paper writes it (section 5.1, Figure 7):

    p_{prior}(z)     Normal(0, I), z_dim dimensions
    p(x|z)           the generator, a Deterministic network
    p(x) = \int p(x|z) p_{prior}(z) dz      (generator * prior).marginalize_var("z"): it samples, it has no density
    p_{data}(x)      EmpiricalDistribution: returns the data it is given
    d(t|x)           the discriminator, a Deterministic network ending in a sigmoid: the probability that x is data

The loss is ``AdversarialJensenShannon(p_data, p, discriminator=d)``: the generator minimizes the (non-saturating)
Jensen-Shannon objective, while the term trains the discriminator with its own optimizer (``loss_train``).
``pyro_dgm.models.GAN`` bundles the two steps: each ``model.train({"x": batch})`` takes one discriminator step, then
one generator step.

The metric is the squared maximum mean discrepancy between generated samples and held-out data (pyro_dgm's ``MMD``
term between ``p_data`` and ``p``, Gaussian kernel), lower is better; the script also reports how many of the eight
modes the samples cover and the fraction of samples within 3 standard deviations of a mode. The PNG shows data and
samples over the discriminator's output, and the metric per epoch.

Usage::

    python examples/gan.py              # under a minute on one CPU core
    python examples/gan.py --smoke      # a few seconds: checks that everything runs
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (no display for matplotlib, pyro_dgm from a checkout, command line, figures)
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from pyro_dgm.distributions import Deterministic, EmpiricalDistribution, Normal  # noqa: E402
from pyro_dgm.losses import MMD  # noqa: E402
from pyro_dgm.models import GAN  # noqa: E402

METRIC = ("mmd", "min")
N_MODES, RADIUS, MODE_STD = 8, 2.0, 0.1


# ----------------------------------------------------------------------------------------------------------- data
def mode_centers() -> Tensor:
    angles = torch.arange(N_MODES) * (2 * math.pi / N_MODES)
    return RADIUS * torch.stack([angles.cos(), angles.sin()], dim=1)


def eight_gaussians(n: int, generator: torch.Generator) -> Tensor:
    """``n`` points from an equal mixture of eight Gaussians (std ``MODE_STD``) on a circle of radius ``RADIUS``."""
    k = torch.randint(N_MODES, (n,), generator=generator)
    return mode_centers()[k] + MODE_STD * torch.randn(n, 2, generator=generator)


def mode_stats(x: Tensor) -> tuple[int, float]:
    """The number of modes with at least 1% of the samples near them, and the fraction of samples near a mode
    (within 3 standard deviations)."""
    d = torch.cdist(x, mode_centers())
    dist, nearest = d.min(dim=1)
    good = dist < 3 * MODE_STD
    counts = torch.bincount(nearest[good], minlength=N_MODES)
    return int((counts >= 0.01 * len(x)).sum()), float(good.float().mean())


# ----------------------------------------------------------------------------------------------------------- model
class Generator(Deterministic):
    """The generator :math:`p(x|z)`: an MLP from the latent ``z`` to a point ``x``."""

    def __init__(self, z_dim: int, hidden: int) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2))

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        return {"x": self.net(z)}


class Discriminator(Deterministic):
    """The discriminator :math:`d(t|x)`: the probability that ``x`` comes from the data."""

    def __init__(self, hidden: int) -> None:
        super().__init__(var=["t"], cond_var=["x"], name="d")
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                                 nn.LeakyReLU(0.2), nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"t": self.net(x)}


# ----------------------------------------------------------------------------------------------------------- use
def save_figure(path: Path, data: Tensor, samples: Tensor, d: Discriminator, history: dict[str, list[float]],
                title: str) -> None:
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 5), gridspec_kw={"width_ratios": [1.1, 1]})
    lim = RADIUS + 1.0
    grid = torch.linspace(-lim, lim, 150)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    with torch.no_grad():
        t = d.sample_mean({"x": torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)}).reshape(150, 150)
    im = ax.imshow(t.numpy(), origin="lower", extent=(-lim, lim, -lim, lim), cmap="RdBu", vmin=0, vmax=1, alpha=0.5)
    fig.colorbar(im, ax=ax, fraction=0.046, label="discriminator d(x): P(x is data)")
    ax.scatter(*data[:1000].T.numpy(), s=3, c="black", label="data")
    ax.scatter(*samples[:1000].T.numpy(), s=3, c="tab:orange", label="generated")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8, markerscale=3)
    ax2.plot(range(1, len(history["mmd"]) + 1), history["mmd"], marker=".")
    ax2.set_yscale("log")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("MMD^2 to held-out data (lower is better)")
    ax2.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _common.save(fig, path, dpi=90)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = _common.parser(__doc__, "out/gan.png", helps={"smoke": "a few seconds: 3 short epochs"})
    ap.add_argument("--epochs", type=int, default=40, help="passes over the training set")
    ap.add_argument("--n-train", type=int, default=8192, help="training points")
    ap.add_argument("--n-test", type=int, default=2048, help="held-out points for the metric")
    ap.add_argument("--z-dim", type=int, default=4, help="latent dimension")
    ap.add_argument("--hidden", type=int, default=128, help="hidden units of both networks")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the generator")
    ap.add_argument("--d-lr", type=float, default=1e-3, help="Adam learning rate of the discriminator")
    ap.add_argument("--batch-size", type=int, default=256, help="minibatch size")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Train, print the metric per epoch, write the figure; returns the per-epoch history."""
    args = parse_args(argv)
    _common.setup(args.seed, args.threads)
    if args.smoke:
        args.epochs, args.n_train, args.n_test = 3, 2048, 512
    gen = torch.Generator().manual_seed(args.seed)
    x_train, x_test = eight_gaussians(args.n_train, gen), eight_gaussians(args.n_test, gen)

    # 1. the distributions: p(x) is the generator's marginal, p_data(x) the data
    prior = Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[args.z_dim], name="p_{prior}")
    generator = Generator(args.z_dim, args.hidden)
    p = (generator * prior).marginalize_var("z")
    p_data = EmpiricalDistribution(["x"])
    d = Discriminator(args.hidden)

    # 2-3. the model: GAN builds AdversarialJensenShannon(p_data, p, discriminator=d) and its two optimizers
    adam = {"betas": (0.5, 0.999)}
    model = GAN(p, d, optimizer=torch.optim.Adam, optimizer_params={"lr": args.lr, **adam},
                d_optimizer=torch.optim.Adam, d_optimizer_params={"lr": args.d_lr, **adam}, p_data=p_data)
    print(model)
    print(p.prob_joint_factorized_and_text)

    mmd = MMD(p_data, p, kernel="gaussian", sigma_sqr=0.5)  # the metric, a loss term too
    print("metric:", mmd)

    history: dict[str, list[float]] = {"mmd": [], "modes": [], "near_mode": [], "g_loss": [], "d_loss": []}
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        g_total = d_total = 0.0
        batches = torch.randperm(args.n_train).split(args.batch_size)
        for idx in batches:
            g_loss, d_loss = model.train({"x": x_train[idx]})
            g_total, d_total = g_total + float(g_loss), d_total + float(d_loss)
        with torch.no_grad():
            history["mmd"].append(float(mmd.eval({"x": x_test})))
            samples = p.sample(batch_n=args.n_test)["x"]
        modes, near = mode_stats(samples)
        history["modes"].append(modes)
        history["near_mode"].append(near)
        history["g_loss"].append(g_total / len(batches))
        history["d_loss"].append(d_total / len(batches))
        print(f"epoch {epoch:3d}  generator loss {history['g_loss'][-1]:.3f}  discriminator loss "
              f"{history['d_loss'][-1]:.3f}  MMD^2 {history['mmd'][-1]:.5f}  modes {modes}/{N_MODES}  "
              f"near a mode {near:.1%}  ({time.perf_counter() - start:5.1f} s)")

    with torch.no_grad():
        samples = p.sample(batch_n=args.n_test)["x"]
    save_figure(args.out, x_test, samples, d, history,
                f"GAN on eight Gaussians: {args.epochs} epochs, MMD^2 {history['mmd'][-1]:.4f}, "
                f"{history['modes'][-1]}/{N_MODES} modes, {history['near_mode'][-1]:.0%} of samples near a mode")
    print(f"final MMD^2 {history['mmd'][-1]:.5f}; wrote {args.out}")
    return history


if __name__ == "__main__":
    main()
