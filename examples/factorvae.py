r"""FactorVAE (Kim & Mnih, 2018) on generated images of a disc with three independent factors.

Each 16x16 binary image is a disc whose horizontal position, vertical position and radius are drawn independently.
The model is a VAE plus a penalty on the total correlation of the aggregate posterior, :math:`D_{KL}[q(z)||\prod_j
q(z_j)]`, estimated by a discriminator (the density-ratio trick). As the seed paper writes it (section 5.1)::

    reconst = -E_{q(z|x)}[log p(x|z)]
    kl      = KL[q(z|x) || p_{prior}(z)]
    tc      = AdversarialKullbackLeibler(q, q_shuffle, discriminator=d)
    loss    = (reconst + kl).mean() + gamma * tc

``q_shuffle`` draws ``z`` from ``q(z|x)`` for the batch and permutes each dimension across the batch separately: its
samples follow :math:`\prod_j q(z_j)`. ``d(t|z)`` is the probability that ``z`` comes from ``q`` rather than from
``q_shuffle``; the term trains it with its own optimizer (``tc.loss_train``), and the VAE minimizes
:math:`\mathbb{E}_q[\log d/(1-d)]`.

The metric is the test negative ELBO (nats per image, lower is better). The script also reports the total
correlation estimate and a disentanglement score: for each true factor, the gap between the two largest absolute
correlations with the latent means (1: one latent per factor; 0: a factor spread over latents). The PNG shows latent
traversals: each row decodes a test image's ``z`` with one coordinate swept from -2.5 to 2.5, and names the factor
that coordinate correlates with most.

Usage::

    python examples/factorvae.py              # about a minute on one CPU core
    python examples/factorvae.py --gamma 0    # the same VAE without the total-correlation penalty, to compare
    python examples/factorvae.py --smoke      # a few seconds: checks that everything runs
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (no display for matplotlib, pyro_dgm from a checkout, command line, figures)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from pyro_dgm.distributions import Bernoulli, Deterministic, Normal  # noqa: E402
from pyro_dgm.losses import AdversarialKullbackLeibler, E, KullbackLeibler, LogProb  # noqa: E402
from pyro_dgm.models import Model  # noqa: E402

METRIC = ("test_nelbo", "min")
SIZE = 16
X_DIM = SIZE * SIZE
FACTORS = ["x position", "y position", "radius"]


# ----------------------------------------------------------------------------------------------------------- data
def discs(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` binary images ``[n, 256]`` of a disc, and their factors ``[n, 3]`` (x, y, radius), all independent."""
    factors = torch.rand(n, 3, generator=generator)
    cx, cy = 3.5 + 8 * factors[:, 0], 3.5 + 8 * factors[:, 1]
    r = 1.5 + 2 * factors[:, 2]
    grid = torch.arange(SIZE, dtype=torch.float32)
    d2 = (grid[None, None, :] - cx[:, None, None]) ** 2 + (grid[None, :, None] - cy[:, None, None]) ** 2
    return (d2 <= r[:, None, None] ** 2).float().reshape(n, X_DIM), factors


# ----------------------------------------------------------------------------------------------------------- model
class Inference(Normal):
    """The encoder :math:`q(z|x)`."""

    def __init__(self, z_dim: int, hidden: int) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.net = nn.Sequential(nn.Linear(X_DIM, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.fc_loc = nn.Linear(hidden, z_dim)
        self.fc_scale = nn.Linear(hidden, z_dim)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.net(x)
        return {"loc": self.fc_loc(h), "scale": F.softplus(self.fc_scale(h)) + 1e-4}


class InferenceShuffle(Deterministic):
    r""":math:`q_{shuffle}(z|x)`: a draw of ``z`` from ``q(z|x)`` for the whole batch with each dimension permuted
    across the batch on its own, so its samples follow the product of the marginals :math:`\prod_j q(z_j)`."""

    def __init__(self, q: Inference) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q_{shuffle}")
        self.q = q

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        z = self.q.sample({"x": x}, return_all=False)["z"]
        return {"z": torch.stack([column[torch.randperm(len(column))] for column in z.T], dim=1)}


class Generator(Bernoulli):
    """The decoder :math:`p(x|z)`: a Bernoulli per pixel."""

    def __init__(self, z_dim: int, hidden: int) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, X_DIM))

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        return {"logits": self.net(z)}


class Discriminator(Deterministic):
    r"""The discriminator :math:`d(t|z)`: the probability that ``z`` comes from :math:`q(z|x)` (not the shuffle)."""

    def __init__(self, z_dim: int, hidden: int) -> None:
        super().__init__(var=["t"], cond_var=["z"], name="d")
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                                 nn.LeakyReLU(0.2), nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        return {"t": self.net(z)}


# ----------------------------------------------------------------------------------------------------------- use
def correlations(q: Inference, x: Tensor, factors: Tensor) -> Tensor:
    """Absolute correlations ``[n_factors, z_dim]`` between the true factors and the latent means."""
    with torch.no_grad():
        z = q.sample_mean({"x": x})
    zc, fc = z - z.mean(0), factors - factors.mean(0)
    cov = fc.T @ zc / len(x)
    return (cov / (fc.std(0, unbiased=False)[:, None] * zc.std(0, unbiased=False)[None, :] + 1e-8)).abs()


def gap_score(corr: Tensor) -> float:
    """The mean over factors of the gap between the two largest absolute correlations with a latent."""
    top = corr.topk(2, dim=1).values
    return float((top[:, 0] - top[:, 1]).mean())


def save_figure(path: Path, q: Inference, p: Generator, x: Tensor, corr: Tensor, title: str) -> None:
    z_dim = corr.shape[1]
    sweep = torch.linspace(-2.5, 2.5, 9)
    with torch.no_grad():
        z0 = q.sample_mean({"x": x[:1]})
        rows = []
        for j in range(z_dim):
            z = z0.repeat(len(sweep), 1)
            z[:, j] = sweep
            rows.append(p.sample_mean({"z": z}))
    fig, axes = plt.subplots(z_dim, 1, figsize=(7.5, 0.95 * z_dim + 0.8), squeeze=False)
    for j, imgs in enumerate(rows):
        strip = np.ones((SIZE, len(sweep) * (SIZE + 1) - 1), dtype=np.float32) * 0.5
        for i, img in enumerate(imgs):
            strip[:, i * (SIZE + 1):i * (SIZE + 1) + SIZE] = img.reshape(SIZE, SIZE).numpy()
        ax = axes[j, 0]
        ax.imshow(strip, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        k = int(corr[:, j].argmax())
        ax.set_ylabel(f"$z_{j}$: {FACTORS[k]}\n|corr| {float(corr[k, j]):.2f}", rotation=0, ha="right",
                      va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _common.save(fig, path, dpi=90)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = _common.parser(__doc__, "out/factorvae.png")
    ap.add_argument("--epochs", type=int, default=30, help="passes over the training set")
    ap.add_argument("--n-train", type=int, default=8192, help="training images")
    ap.add_argument("--n-test", type=int, default=1024, help="test images")
    ap.add_argument("--z-dim", type=int, default=5, help="latent dimension (default 5: 3 factors and 2 spare)")
    ap.add_argument("--hidden", type=int, default=256, help="hidden units of encoder and decoder")
    ap.add_argument("--gamma", type=float, default=10.0, help="weight of the total correlation")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the VAE")
    ap.add_argument("--d-lr", type=float, default=1e-4, help="Adam learning rate of the discriminator")
    ap.add_argument("--batch-size", type=int, default=128, help="minibatch size")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Train, print the metric per epoch, write the figure; returns the per-epoch history."""
    args = parse_args(argv)
    _common.setup(args.seed, args.threads)
    if args.smoke:
        args.epochs, args.n_train, args.n_test = 3, 1024, 256
    gen = torch.Generator().manual_seed(args.seed)
    x_train, _ = discs(args.n_train, gen)
    x_test, f_test = discs(args.n_test, gen)

    # 1. the distributions
    q = Inference(args.z_dim, args.hidden)
    q_shuffle = InferenceShuffle(q)
    p = Generator(args.z_dim, args.hidden)
    prior = Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[args.z_dim], name="p_{prior}")
    d = Discriminator(args.z_dim, args.hidden)

    # 2. the loss: the VAE's negative ELBO plus gamma times the adversarial total correlation
    reconst = -E(q, LogProb(p))
    kl = KullbackLeibler(q, prior)
    tc = AdversarialKullbackLeibler(q, q_shuffle, discriminator=d, optimizer=torch.optim.Adam,
                                    optimizer_params={"lr": args.d_lr, "betas": (0.5, 0.9)})
    loss = (reconst + kl).mean() + args.gamma * tc
    nelbo = (reconst + kl).mean()  # the test metric

    # 3. the model trains q and p; the discriminator is trained by tc.loss_train
    model = Model(loss, test_loss=nelbo, distributions=[q, p], optimizer=torch.optim.Adam,
                  optimizer_params={"lr": args.lr})
    print(model)
    print("discriminator (trained by tc.loss_train):", d.prob_text)

    history: dict[str, list[float]] = {"train_loss": [], "test_nelbo": [], "tc": [], "d_loss": [], "gap": []}
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        total = d_total = 0.0
        batches = torch.randperm(args.n_train).split(args.batch_size)
        for idx in batches:
            batch = {"x": x_train[idx]}
            total += float(model.train(batch))
            d_total += float(tc.loss_train(batch))
        history["train_loss"].append(total / len(batches))
        history["d_loss"].append(d_total / len(batches))
        history["test_nelbo"].append(float(model.test({"x": x_test})))
        with torch.no_grad():
            history["tc"].append(float(tc.eval({"x": x_test})))
        corr = correlations(q, x_test, f_test)
        history["gap"].append(gap_score(corr))
        print(f"epoch {epoch:3d}  train loss {history['train_loss'][-1]:8.3f}  test -ELBO "
              f"{history['test_nelbo'][-1]:7.3f} nats/image  TC estimate {history['tc'][-1]:6.3f}  "
              f"discriminator loss {history['d_loss'][-1]:.3f}  disentanglement gap {history['gap'][-1]:.2f}  "
              f"({time.perf_counter() - start:5.1f} s)")

    corr = correlations(q, x_test, f_test)
    save_figure(args.out, q, p, x_test, corr,
                f"FactorVAE (gamma={args.gamma:g}) on discs: test -ELBO {history['test_nelbo'][-1]:.1f} nats, "
                f"gap {history['gap'][-1]:.2f}; latent traversals -2.5..2.5")
    print(f"final test -ELBO {history['test_nelbo'][-1]:.3f} nats per image, disentanglement gap "
          f"{history['gap'][-1]:.3f}; wrote {args.out}")
    return history


if __name__ == "__main__":
    main()
