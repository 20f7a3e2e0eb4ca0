r"""A VAE on scikit-learn's 8x8 digits, trained by Pyro's own SVI on pyro_dgm distributions.

The model is written as its formulas (Pixyz's Distribution API):

    q(z|x)       encoder, Normal, a network
    p(x|z)       decoder, Bernoulli (scores grey levels in [0, 1] by cross-entropy), a network
    p_{prior}(z) Normal(0, 1) with features_shape [z_dim]
    p(x,z) = p(x|z)p_{prior}(z)

and trained with ``SVI(joint.model, q.guide, pyro.optim.Adam(...), Trace_ELBO())``: ``joint.model`` and ``q.guide``
are ordinary Pyro callables (networks registered with ``pyro.module``, ``x`` observed, ``z`` sampled inside a
``pyro.plate`` over the batch), so nothing here is specific to pyro_dgm but the three class definitions.

Usage::

    python examples/vae_digits.py              # under a minute on 2 CPU cores
    python examples/vae_digits.py --smoke      # a few seconds: checks that everything runs

It prints the model, the ELBO per image for each epoch (train and test), and writes a PNG of test digits, their
reconstructions and samples from the prior to ``--out``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from pyro.infer import SVI, Trace_ELBO  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from torch import Tensor, nn  # noqa: E402

try:
    from pyro_dgm.distributions import Bernoulli, Normal
except ImportError:  # run from a source checkout without installing: python examples/vae_digits.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pyro_dgm.distributions import Bernoulli, Normal

X_DIM = 64  # 8x8 pixels
METRIC = ("test_elbo", "max")  # the test ELBO per image, nats (see tests/examples/test_examples.py)


class Inference(Normal):
    """The encoder :math:`q(z|x)`: a Normal whose loc and scale are computed from ``x``."""

    def __init__(self, z_dim: int, hidden: int) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.fc1 = nn.Linear(X_DIM, hidden)
        self.fc_loc = nn.Linear(hidden, z_dim)
        self.fc_scale = nn.Linear(hidden, z_dim)

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # the argument is named after cond_var
        h = F.relu(self.fc1(x))
        return {"loc": self.fc_loc(h), "scale": F.softplus(self.fc_scale(h)) + 1e-4}


class Generator(Bernoulli):
    """The decoder :math:`p(x|z)`: a Bernoulli per pixel whose logits are computed from ``z``."""

    def __init__(self, z_dim: int, hidden: int) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.fc1 = nn.Linear(z_dim, hidden)
        self.fc2 = nn.Linear(hidden, X_DIM)

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        return {"logits": self.fc2(F.relu(self.fc1(z)))}


def load_data(n_test: int, seed: int) -> tuple[Tensor, Tensor]:
    """The 1797 digits scaled to [0, 1], shuffled with ``seed`` and split into train and test."""
    images = load_digits().data.astype(np.float32) / 16.0
    perm = np.random.default_rng(seed).permutation(len(images))
    x = torch.from_numpy(images[perm])
    return x[n_test:], x[:n_test]


def tile(images: Tensor, cols: int) -> np.ndarray:
    """Images of shape [n, 64] as one [rows*9, cols*9] array (8x8 digits with a 1-pixel gap)."""
    n = images.shape[0]
    rows = -(-n // cols)
    grid = np.zeros((rows * 9 + 1, cols * 9 + 1), dtype=np.float32)  # white gaps
    for i, img in enumerate(images.detach().cpu().numpy().reshape(n, 8, 8)):
        r, c = divmod(i, cols)
        grid[1 + r * 9:1 + r * 9 + 8, 1 + c * 9:1 + c * 9 + 8] = img
    return grid


def save_figure(path: Path, x_test: Tensor, recon: Tensor, samples: Tensor, cols: int, title: str) -> None:
    panels = [("test digits $x$", x_test), (r"reconstructions $E_{p(x|z)}[x]$, $z = E_{q(z|x)}[z]$", recon),
              (r"samples: $E_{p(x|z)}[x]$, $z \sim p_{prior}(z)$", samples)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(cols * 0.6, 0.6 * 3 * len(panels) + 1.0))
    for ax, (name, imgs) in zip(axes, panels):
        ax.imshow(tile(imgs, cols), cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=100, help="passes over the training set (default 100)")
    ap.add_argument("--z-dim", type=int, default=8, help="latent dimension (default 8)")
    ap.add_argument("--hidden", type=int, default=256, help="hidden units of encoder and decoder (default 256)")
    ap.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    ap.add_argument("--batch-size", type=int, default=64, help="minibatch size (default 64)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the data split, the networks and the draws")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: the networks are small, and extra threads only wait on each "
                         "other, badly so on a busy machine)")
    ap.add_argument("--out", type=Path, default=Path("out/vae_digits.png"), help="where to write the PNG")
    ap.add_argument("--smoke", action="store_true", help="a few seconds: 2 epochs on a small subset")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Train, print the ELBO per epoch, write the figure; returns the history: ``"epoch"``, ``"train_elbo"`` and
    ``"test_elbo"`` (per image), one value per epoch."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()

    x_train, x_test = load_data(n_test=297, seed=args.seed)
    epochs = args.epochs
    if args.smoke:
        x_train, epochs = x_train[:256], 2

    # 1. the distributions, written as the formulas
    q = Inference(args.z_dim, args.hidden)
    p = Generator(args.z_dim, args.hidden)
    prior = Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[args.z_dim], name="p_{prior}")
    joint = p * prior
    print(joint)
    print(q)

    # 2. Pyro's own stochastic variational inference: the loss is -ELBO summed over the minibatch
    svi = SVI(joint.model, q.guide, pyro.optim.Adam({"lr": args.lr}), Trace_ELBO())
    n = len(x_train)
    start = time.perf_counter()
    test_elbo = float("nan")
    history: dict[str, list[float]] = {"epoch": [], "train_elbo": [], "test_elbo": []}
    for epoch in range(1, epochs + 1):
        total = 0.0
        for idx in torch.randperm(n).split(args.batch_size):
            total += svi.step(x=x_train[idx])
        test_elbo = -svi.evaluate_loss(x=x_test) / len(x_test)
        history["epoch"].append(epoch)
        history["train_elbo"].append(-total / n)
        history["test_elbo"].append(test_elbo)
        print(f"epoch {epoch:3d}  train ELBO {-total / n:8.3f}  test ELBO {test_elbo:8.3f}  per image  "
              f"({time.perf_counter() - start:5.1f} s)")

    # 3. pictures: reconstructions through the means of q(z|x) and p(x|z), and samples from the prior
    cols = 16
    with torch.no_grad():
        shown = x_test[:3 * cols]
        z = q.sample({"x": shown}, sample_mean=True, return_all=False)
        recon = p.sample_mean(z)
        z_prior = prior.sample(batch_n=3 * cols)
        samples = p.sample_mean(z_prior)
    save_figure(args.out, shown, recon, samples, cols,
                f"VAE on sklearn digits: z_dim={args.z_dim}, {epochs} epochs, test ELBO {test_elbo:.2f} nats/image")
    print(f"final test ELBO {test_elbo:.3f} nats per image; wrote {args.out}")
    return history


if __name__ == "__main__":
    main()
