"""Shared plumbing of the digits examples: the data split, one-hot labels, minibatches, command line and image grids.

Nothing here is about a model; each example's model and loss are written out in the example itself. The data are
scikit-learn's 1797 8x8 digits (shipped with scikit-learn: nothing downloads), grey levels scaled to [0, 1].
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator, Sequence

import _common  # matplotlib without a display, pyro_dgm from a checkout
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

setup = _common.setup  # one CPU thread, every seed, an empty parameter store

X_DIM = 64      # 8x8 pixels
N_CLASSES = 10  # digits 0-9
N_TEST = 297    # 1500 training images, 297 test images (as examples/vae_digits.py)
HELP = {"z_dim": "latent dimension", "hidden": "hidden units per layer",
        "iw_samples": "importance samples of the IWELBO estimate of log p(x)"}


def load_digits_split(seed: int = 0, n_test: int = N_TEST) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``x_train, y_train, x_test, y_test``: images ``[n, 64]`` in [0, 1] and integer labels, shuffled with ``seed``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = data.data.astype(np.float32) / 16.0
    perm = np.random.default_rng(seed).permutation(len(images))
    x = torch.from_numpy(images[perm])
    y = torch.from_numpy(data.target[perm].astype(np.int64))
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def one_hot(y: Tensor, k: int = N_CLASSES) -> Tensor:
    """Integer labels as float one-hot rows (the values of a one-hot ``Categorical``)."""
    return torch.nn.functional.one_hot(y, k).to(torch.get_default_dtype())


def minibatches(n: int, batch_size: int) -> Iterator[Tensor]:
    """Shuffled index batches covering ``range(n)`` once (torch's generator, so ``--seed`` fixes the order)."""
    yield from torch.randperm(n).split(batch_size)


def parser(doc: str, epochs: int, lr: float, batch_size: int = 64, out: str = "out/example.png",
           **defaults: int) -> argparse.ArgumentParser:
    """The arguments every example takes; ``defaults`` adds integer options such as ``z_dim=8`` (``--z-dim``)."""
    ap = _common.parser(doc, out, epochs=epochs, lr=lr, batch_size=batch_size, threads=False,
                        helps={"seed": "seed of the data split, the networks and the draws",
                               "smoke": "a few seconds on a small subset: checks that it runs"})
    for name, value in defaults.items():
        ap.add_argument("--" + name.replace("_", "-"), type=type(value), default=value, help=HELP.get(name, " "))
    return ap


def tile(images: Tensor, cols: int) -> np.ndarray:
    """Images ``[n, 64]`` as one array of 8x8 tiles with 1-pixel gaps, ``cols`` per row."""
    n = images.shape[0]
    rows = -(-n // cols)
    grid = np.zeros((rows * 9 + 1, cols * 9 + 1), dtype=np.float32)
    for i, img in enumerate(images.detach().cpu().float().numpy().reshape(n, 8, 8)):
        r, c = divmod(i, cols)
        grid[1 + r * 9:1 + r * 9 + 8, 1 + c * 9:1 + c * 9 + 8] = img
    return grid


def show(ax: plt.Axes, images: Tensor, cols: int, title: str, row_labels: Sequence[str] | None = None) -> None:
    """Draw ``images`` as a grid on ``ax`` (dark ink on white), with optional labels left of the rows."""
    ax.imshow(tile(images, cols), cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    if row_labels is None:
        ax.set_yticks([])
    else:
        ax.set_yticks([5 + 9 * i for i in range(len(row_labels))], list(row_labels), fontsize=8)
        ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)


def save(fig: plt.Figure, path: Path) -> None:
    """Write the figure (110 dpi, cropped to its content), as every digits example does."""
    _common.save(fig, path, dpi=110, bbox_inches="tight")
