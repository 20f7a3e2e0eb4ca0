r"""A variational recurrent neural network (VRNN; Chung et al., 2015) on a generated moving-dot video.

Each sequence is ``--steps`` frames of ``--size`` x ``--size`` binary pixels: a dot that moves at a constant speed
and bounces off the walls. The model, at each step :math:`t`, with :math:`h_{t-1}` the RNN state so far:

    p_{prior}(z_t|h_{t-1})            prior, Normal, a network
    q(z_t|x_t, h_{t-1})               inference, Normal, a network
    p(x_t|z_t, h_{t-1})               generation, Bernoulli per pixel, a network
    f(h_t|x_t, z_t, h_{t-1})          the recurrence, a GRU cell (a Deterministic distribution)

The feature extractors :math:`\varphi_x, \varphi_z` of the paper are shared by the networks that read ``x`` and ``z``.
The negative ELBO is the sum over time of one step's loss (``IterativeLoss``)::

    step = KL[q(z|x,h_prev) || p_{prior}(z|h_prev)] - E_{f(h|x,z,h_prev) q(z|x,h_prev)}[log p(x|z,h_prev)]
    loss = sum_t step                            series_var=["x"], update_value={"h": "h_prev"}

The expectation is over the joint ``f * q``: drawing from it samples ``z`` and then computes the next state ``h``,
which ``IterativeLoss`` renames to ``h_prev`` for the next step.

The metric is the test negative ELBO per frame (nats). The PNG shows test sequences, their reconstructions, and
predictions: the model sees the first ``--observe`` frames and then generates the rest from its prior.

Usage::

    python examples/vrnn.py              # about a minute on one CPU core
    python examples/vrnn.py --smoke      # a few seconds: checks that everything runs
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
from pyro_dgm.losses import E, IterativeLoss, KullbackLeibler, LogProb  # noqa: E402
from pyro_dgm.models import Model  # noqa: E402

METRIC = ("test_nelbo", "min")


# ----------------------------------------------------------------------------------------------------------- data
def moving_dots(n: int, steps: int, size: int, seed: int, radius: float = 1.3) -> Tensor:
    """``n`` sequences of ``steps`` binary frames ``[size, size]``, flattened: ``[steps, n, size * size]``.

    A dot of ``radius`` pixels starts at a random place with a random velocity (0.5 to 1.5 pixels per step on each
    axis) and bounces off the walls.
    """
    rng = np.random.default_rng(seed)
    lo, hi = radius - 0.5, size - radius - 0.5
    pos = rng.uniform(lo, hi, size=(n, 2))
    vel = rng.uniform(0.5, 1.5, size=(n, 2)) * rng.choice([-1.0, 1.0], size=(n, 2))
    grid = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), axis=-1)  # [size, size, 2]
    frames = np.zeros((steps, n, size, size), dtype=np.float32)
    for t in range(steps):
        d2 = ((grid[None] - pos[:, None, None, :]) ** 2).sum(-1)
        frames[t] = d2 <= radius ** 2
        pos = pos + vel
        for k in range(2):  # reflect at the walls
            low, high = pos[:, k] < lo, pos[:, k] > hi
            pos[low, k] = 2 * lo - pos[low, k]
            pos[high, k] = 2 * hi - pos[high, k]
            vel[low | high, k] *= -1
    return torch.from_numpy(frames.reshape(steps, n, size * size))


# ----------------------------------------------------------------------------------------------------------- model
class Prior(Normal):
    r""":math:`p_{prior}(z_t|h_{t-1})`."""

    def __init__(self, z_dim: int, hidden: int) -> None:
        super().__init__(var=["z"], cond_var=["h_prev"], name="p_{prior}")
        self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())
        self.fc_loc = nn.Linear(hidden, z_dim)
        self.fc_scale = nn.Linear(hidden, z_dim)

    def forward(self, h_prev: Tensor) -> dict[str, Tensor]:
        g = self.net(h_prev)
        return {"loc": self.fc_loc(g), "scale": F.softplus(self.fc_scale(g)) + 1e-3}


class Inference(Normal):
    r""":math:`q(z_t|x_t, h_{t-1})`, reading :math:`\varphi_x(x_t)`."""

    def __init__(self, phi_x: nn.Module, z_dim: int, hidden: int) -> None:
        super().__init__(var=["z"], cond_var=["x", "h_prev"], name="q")
        self.phi_x = phi_x
        self.net = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU())
        self.fc_loc = nn.Linear(hidden, z_dim)
        self.fc_scale = nn.Linear(hidden, z_dim)

    def forward(self, x: Tensor, h_prev: Tensor) -> dict[str, Tensor]:
        g = self.net(torch.cat([self.phi_x(x), h_prev], dim=-1))
        return {"loc": self.fc_loc(g), "scale": F.softplus(self.fc_scale(g)) + 1e-3}


class Generator(Bernoulli):
    r""":math:`p(x_t|z_t, h_{t-1})`, reading :math:`\varphi_z(z_t)`: a Bernoulli per pixel."""

    def __init__(self, phi_z: nn.Module, x_dim: int, hidden: int) -> None:
        super().__init__(var=["x"], cond_var=["z", "h_prev"], name="p")
        self.phi_z = phi_z
        self.net = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, x_dim))

    def forward(self, z: Tensor, h_prev: Tensor) -> dict[str, Tensor]:
        return {"logits": self.net(torch.cat([self.phi_z(z), h_prev], dim=-1))}


class Recurrence(Deterministic):
    r"""The deterministic :math:`f(h_t|x_t, z_t, h_{t-1})`: a GRU cell on :math:`[\varphi_x(x_t), \varphi_z(z_t)]`."""

    def __init__(self, phi_x: nn.Module, phi_z: nn.Module, hidden: int) -> None:
        super().__init__(var=["h"], cond_var=["x", "z", "h_prev"], name="f")
        self.phi_x, self.phi_z = phi_x, phi_z
        self.cell = nn.GRUCell(2 * hidden, hidden)

    def forward(self, x: Tensor, z: Tensor, h_prev: Tensor) -> dict[str, Tensor]:
        return {"h": self.cell(torch.cat([self.phi_x(x), self.phi_z(z)], dim=-1), h_prev)}


# ----------------------------------------------------------------------------------------------------------- use
@torch.no_grad()
def reconstruct_and_predict(q: Inference, prior: Prior, p: Generator, f: Recurrence, x: Tensor, observe: int,
                            hidden: int) -> tuple[Tensor, Tensor]:
    """Reconstructions of every frame (``z`` from ``q``) and predictions after ``observe`` frames (``z`` from the
    prior, the next state computed from a sampled frame); both as pixel probabilities ``[T, B, X]``."""
    steps, batch = x.shape[0], x.shape[1]
    h = torch.zeros(batch, hidden)
    recon = []
    for t in range(steps):
        z = q.sample({"x": x[t], "h_prev": h}, sample_mean=True, return_all=False)["z"]
        recon.append(p.sample_mean({"z": z, "h_prev": h}))
        h = f.sample({"x": x[t], "z": z, "h_prev": h}, return_all=False)["h"]
    h = torch.zeros(batch, hidden)
    pred = []
    for t in range(steps):
        if t < observe:
            z = q.sample({"x": x[t], "h_prev": h}, return_all=False)["z"]
            x_t = x[t]
            pred.append(x_t)
        else:
            z = prior.sample({"h_prev": h}, return_all=False)["z"]
            pred.append(p.sample_mean({"z": z, "h_prev": h}))
            x_t = p.sample({"z": z, "h_prev": h}, return_all=False)["x"]
        h = f.sample({"x": x_t, "z": z, "h_prev": h}, return_all=False)["h"]
    return torch.stack(recon), torch.stack(pred)


def save_figure(path: Path, x: Tensor, recon: Tensor, pred: Tensor, observe: int, size: int, title: str) -> None:
    """For each shown sequence, three rows: the frames, the reconstructions, the predictions after ``observe``."""
    steps, batch = x.shape[0], x.shape[1]
    names = ["data", "reconstruction", f"prediction ({observe} seen)"]
    fig, axes = plt.subplots(3 * batch, 1, figsize=(steps * 0.55 + 1.5, 3 * batch * 0.75 + 0.6), squeeze=False)
    for b in range(batch):
        for r, imgs in enumerate((x, recon, pred)):
            strip = np.ones((size, steps * (size + 1) - 1), dtype=np.float32) * 0.5
            for t in range(steps):
                strip[:, t * (size + 1):t * (size + 1) + size] = imgs[t, b].reshape(size, size).numpy()
            ax = axes[3 * b + r, 0]
            ax.imshow(strip, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            if r == 2:
                ax.axvline(observe * (size + 1) - 1, color="tab:red", lw=1.5)
            ax.set_yticks([])
            ax.set_xticks([])
            ax.set_ylabel(names[r], rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _common.save(fig, path, dpi=90)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = _common.parser(__doc__, "out/vrnn.png")
    ap.add_argument("--epochs", type=int, default=30, help="passes over the training set")
    ap.add_argument("--n-train", type=int, default=1024, help="training sequences")
    ap.add_argument("--n-test", type=int, default=256, help="test sequences")
    ap.add_argument("--steps", type=int, default=16, help="frames per sequence")
    ap.add_argument("--size", type=int, default=12, help="frame height and width in pixels")
    ap.add_argument("--observe", type=int, default=6, help="frames seen before predicting, in the figure")
    ap.add_argument("--z-dim", type=int, default=8, help="latent dimension")
    ap.add_argument("--hidden", type=int, default=128, help="RNN state and hidden units")
    ap.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    ap.add_argument("--batch-size", type=int, default=64, help="sequences per minibatch")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Train, print the metric per epoch, write the figure; returns the per-epoch history."""
    args = parse_args(argv)
    _common.setup(args.seed, args.threads)
    if args.smoke:
        args.epochs, args.n_train, args.n_test, args.steps, args.observe = 3, 192, 64, 8, 4

    data = moving_dots(args.n_train + args.n_test, args.steps, args.size, args.seed)  # [T, N, X]: time first
    x_train, x_test = data[:, :args.n_train], data[:, args.n_train:]
    x_dim, hidden = args.size * args.size, args.hidden

    # 1. the distributions; the feature extractors phi_x and phi_z are shared
    phi_x = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU())
    phi_z = nn.Sequential(nn.Linear(args.z_dim, hidden), nn.ReLU())
    prior = Prior(args.z_dim, hidden)
    q = Inference(phi_x, args.z_dim, hidden)
    p = Generator(phi_z, x_dim, hidden)
    f = Recurrence(phi_x, phi_z, hidden)

    # 2. the loss: one step's negative ELBO, summed over time; E over f * q draws z, then the next state h
    fq = f * q
    fq.graph.name = "q"  # q(h,z|x,h_prev) = f(h|x,z,h_prev)q(z|x,h_prev)
    step_loss = KullbackLeibler(q, prior) - E(fq, LogProb(p))
    loss = IterativeLoss(step_loss, max_iter=args.steps, series_var=["x"], update_value={"h": "h_prev"}).mean()

    # 3. the model
    model = Model(loss, distributions=[prior, q, p, f], optimizer=torch.optim.Adam,
                  optimizer_params={"lr": args.lr}, clip_grad_norm=10.0)
    print(model)
    print(fq.prob_joint_factorized_and_text)

    def batch(x: Tensor) -> dict[str, Tensor]:
        return {"x": x, "h_prev": torch.zeros(x.shape[1], hidden)}

    history: dict[str, list[float]] = {"train_nelbo": [], "test_nelbo": []}
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        total = 0.0
        for idx in torch.randperm(args.n_train).split(args.batch_size):
            total += float(model.train(batch(x_train[:, idx]))) * len(idx)
        history["train_nelbo"].append(total / args.n_train / args.steps)
        history["test_nelbo"].append(float(model.test(batch(x_test))) / args.steps)
        print(f"epoch {epoch:3d}  train -ELBO {history['train_nelbo'][-1]:7.3f}  test -ELBO "
              f"{history['test_nelbo'][-1]:7.3f} nats/frame  ({time.perf_counter() - start:5.1f} s)")

    shown = x_test[:, :3]
    recon, pred = reconstruct_and_predict(q, prior, p, f, shown, args.observe, hidden)
    save_figure(args.out, shown, recon, pred, args.observe, args.size,
                f"VRNN on a moving dot: {args.epochs} epochs, test -ELBO {history['test_nelbo'][-1]:.2f} nats/frame")
    print(f"final test -ELBO {history['test_nelbo'][-1]:.3f} nats per frame; wrote {args.out}")
    return history


if __name__ == "__main__":
    main()
