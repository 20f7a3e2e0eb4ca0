r"""A small Glow (Kingma & Dhariwal, 2018) on scikit-learn's 8x8 digits, trained by maximum likelihood.

As in the seed paper's Figure 8, the flow maps an image to the latent space and the model samples through its
inverse (``InverseTransformedDistribution``). The flow, from data to latent:

    Preprocess        dequantize the 17 grey levels (uniform noise within a level) and map [0, 1] to the real
                      line with a logit
    Squeeze           [1, 8, 8] -> [4, 4, 4]
    K steps of flow   ActNorm2d (per-channel affine, data-initialized), ChannelConv (invertible 1x1 convolution, LU
                      form), AffineCoupling (half of the channels scale and shift the other half, through a small
                      convolutional network)
    Squeeze           [4, 4, 4] -> [16, 2, 2]
    K steps of flow
    p_{prior}(z)      Normal(0, I) over [16, 2, 2]

    log p(x) = log p_{prior}(f(x)) + log |det df/dx|,   loss = -mean log p(x)   (the ML model)

The metric is the test negative log-likelihood in bits per dimension (lower is better) of the discrete images: with
dequantization, :math:`-\log_2 P(v) \le -\log_2 p(x) + D \log_2 16` for pixel levels :math:`v = 16 x`. The PNG shows
test digits and samples at temperatures 0.7 and 1 (:math:`x = f^{-1}(T z)`, :math:`z \sim N(0, I)`).

Usage::

    python examples/glow_digits.py              # about a minute on one CPU core
    python examples/glow_digits.py --smoke      # a few seconds: checks that everything runs
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
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from pyro_dgm.distributions import InverseTransformedDistribution, Normal  # noqa: E402
from pyro_dgm.flows import ActNorm2d, AffineCoupling, ChannelConv, Flow, FlowList, Preprocess, Squeeze  # noqa: E402
from pyro_dgm.layers import ScaleTranslate  # noqa: E402
from pyro_dgm.models import ML  # noqa: E402

METRIC = ("test_bpd", "min")
LEVELS = 17  # the digits' grey levels 0..16
D = 64  # dimensions per image


def load_data(n_test: int, seed: int) -> tuple[Tensor, Tensor]:
    """The 1797 digits as ``[N, 1, 8, 8]`` in [0, 1] (levels ``v / 16``), shuffled and split."""
    images = load_digits().data.astype(np.float32) / (LEVELS - 1)
    perm = np.random.default_rng(seed).permutation(len(images))
    x = torch.from_numpy(images[perm]).reshape(-1, 1, 8, 8)
    return x[n_test:], x[:n_test]


class CouplingNet(nn.Module):
    """Glow's coupling network: 3x3 conv, ReLU, 1x1 conv, ReLU, 3x3 conv (zero-initialized, so the coupling starts
    as the identity) to twice the channels, split into a log-scale and a shift by ``ScaleTranslate``."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        last = nn.Conv2d(hidden, 2 * channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, hidden, 1),
                                 nn.ReLU(), last)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def flow_step(channels: int, hidden: int, i: int) -> list[Flow]:
    """One step of flow: actnorm, invertible 1x1 convolution, affine coupling (alternating halves)."""
    net = ScaleTranslate(CouplingNet(channels, hidden), channels, event_dim=3)
    return [ActNorm2d(channels), ChannelConv(channels, decomposed=True),
            AffineCoupling(channels, mask_type="channel_wise", event_dim=3, inverse_mask=bool(i % 2),
                           scale_translate_net=net)]


def glow(steps: int, hidden: int) -> FlowList:
    flows: list[Flow] = [Preprocess(dequantize=True, alpha=0.05, num_levels=LEVELS), Squeeze()]
    for i in range(steps):
        flows += flow_step(4, hidden, i)
    flows.append(Squeeze())
    for i in range(steps):
        flows += flow_step(16, hidden, i)
    return FlowList(flows)


def bits_per_dim(nll: Tensor) -> float:
    """Bits per dimension of the discrete images from the mean negative log-density of ``x`` (nats per image)."""
    return float(nll) / (D * math.log(2)) + math.log2(LEVELS - 1)


def tile(images: Tensor, cols: int) -> np.ndarray:
    n = images.shape[0]
    rows = -(-n // cols)
    grid = np.ones((rows * 9 + 1, cols * 9 + 1), dtype=np.float32) * 0.5
    for i, img in enumerate(images.reshape(n, 8, 8).numpy()):
        r, c = divmod(i, cols)
        grid[1 + r * 9:9 + r * 9, 1 + c * 9:9 + c * 9] = img
    return grid


def save_figure(path: Path, x: Tensor, p: InverseTransformedDistribution, title: str) -> None:
    cols = 16
    panels = [("test digits", x[:2 * cols])]
    with torch.no_grad():
        for temperature in (0.7, 1.0):
            z = temperature * torch.randn(2 * cols, 16, 2, 2)
            panels.append((f"samples, temperature {temperature}", p.inverse(z).clamp(0, 1)))
    fig, axes = plt.subplots(len(panels), 1, figsize=(cols * 0.55, 1.5 * len(panels) + 0.6))
    for ax, (name, imgs) in zip(axes, panels):
        ax.imshow(tile(imgs, cols), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _common.save(fig, path, dpi=90)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = _common.parser(__doc__, "out/glow_digits.png",
                        helps={"seed": "seed of the data split, the networks and the draws",
                               "smoke": "a few seconds: 2 epochs on 256 images"})
    ap.add_argument("--epochs", type=int, default=40, help="passes over the training set")
    ap.add_argument("--steps", type=int, default=4, help="steps of flow per scale")
    ap.add_argument("--hidden", type=int, default=64, help="channels of the coupling networks")
    ap.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default 2e-3, cosine decay)")
    ap.add_argument("--batch-size", type=int, default=64, help="minibatch size")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Train, print the metric per epoch, write the figure; returns the per-epoch history."""
    args = parse_args(argv)
    _common.setup(args.seed, args.threads)
    x_train, x_test = load_data(n_test=297, seed=args.seed)
    if args.smoke:
        args.epochs, args.steps, args.hidden, x_train = 2, 2, 32, x_train[:256]

    # 1. the distribution: the prior pushed through the inverse of the Glow flow
    prior = Normal(loc=torch.zeros(16, 2, 2), scale=1.0, var=["z"], name="p_{prior}")
    p = InverseTransformedDistribution(prior, glow(args.steps, args.hidden), var=["x"], name="p")

    # 2-3. maximum likelihood
    model = ML(p, optimizer=torch.optim.Adam, optimizer_params={"lr": args.lr}, clip_grad_norm=50.0)
    print(model)
    print(p.prob_joint_factorized_and_text, f"  ({len(p.flow)} flows)")

    decay = torch.optim.lr_scheduler.CosineAnnealingLR(model.optimizer, T_max=args.epochs)
    history: dict[str, list[float]] = {"train_bpd": [], "test_bpd": []}
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        total = 0.0
        batches = torch.randperm(len(x_train)).split(args.batch_size)
        for idx in batches:
            total += float(model.train({"x": x_train[idx]}))
        decay.step()
        history["train_bpd"].append(bits_per_dim(torch.tensor(total / len(batches))))
        history["test_bpd"].append(bits_per_dim(model.test({"x": x_test})))
        print(f"epoch {epoch:3d}  train {history['train_bpd'][-1]:.4f}  test {history['test_bpd'][-1]:.4f} "
              f"bits/dim  ({time.perf_counter() - start:5.1f} s)")

    save_figure(args.out, x_test, p, f"Glow on sklearn digits: test {history['test_bpd'][-1]:.3f} bits/dim")
    print(f"final test {history['test_bpd'][-1]:.4f} bits per dimension; wrote {args.out}")
    return history


if __name__ == "__main__":
    main()
