r"""Real NVP (Dinh et al., 2017) on scikit-learn's two moons, trained by maximum likelihood.

The model maps data to a latent space with a stack of affine couplings, as the seed paper's flow-based models do
(section 5.2):

    p_{prior}(z) = Normal(0, I)
    f = f_K o ... o f_1                       affine couplings: each keeps one coordinate and scales and shifts the
                                              other by networks of the kept one, alternating which is kept
    p(x) = p(x = f^{-1}(z)),  z ~ p_{prior}   InverseTransformedDistribution(prior, flows, var=["x"])
    log p(x) = log p_{prior}(f(x)) + log |det df/dx|

and the loss is the negative log-likelihood ``-p.log_prob().mean()``, trained by the ``ML`` model. The metric is the
test log-likelihood per point (nats, higher is better). The PNG shows the data, the model's density on a grid, its
samples, and the test points mapped to the latent space (``p.inference``), where they should look like
:math:`N(0, I)`.

Usage::

    python examples/realnvp_moons.py              # under a minute on one CPU core
    python examples/realnvp_moons.py --smoke      # a few seconds: checks that everything runs
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
from sklearn.datasets import make_moons  # noqa: E402
from torch import Tensor  # noqa: E402

from pyro_dgm.distributions import InverseTransformedDistribution, Normal  # noqa: E402
from pyro_dgm.flows import AffineCoupling, FlowList  # noqa: E402
from pyro_dgm.layers import MLP, ScaleTranslate  # noqa: E402
from pyro_dgm.models import ML  # noqa: E402

METRIC = ("test_loglik", "max")


def moons(n: int, seed: int, noise: float) -> Tensor:
    x, _ = make_moons(n, noise=noise, random_state=seed)
    return torch.from_numpy(x.astype(np.float32))


def couplings(n: int, hidden: int) -> FlowList:
    """``n`` affine couplings on 2-D points, alternating which coordinate is kept; each network starts at zero, so
    the flow starts as the identity."""
    return FlowList([AffineCoupling(2, mask_type="channel_wise", inverse_mask=bool(i % 2),
                                    scale_translate_net=ScaleTranslate(MLP(2, hidden, 4), features=2))
                     for i in range(n)])


def save_figure(path: Path, x: Tensor, p: InverseTransformedDistribution, title: str) -> None:
    lo, hi = np.array([-1.5, -1.0]), np.array([2.5, 1.5])
    n = 200
    gx, gy = torch.meshgrid(torch.linspace(lo[0], hi[0], n), torch.linspace(lo[1], hi[1], n), indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    with torch.no_grad():
        density = p.get_log_prob({"x": pts}).exp().reshape(n, n)
        samples = p.sample(batch_n=2000)["x"]
        z = p.inference({"x": x}, return_all=False)["z"]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    axes[0].scatter(*x.T.numpy(), s=2)
    axes[0].set_title("test data $x$", fontsize=10)
    axes[1].imshow(density.numpy(), origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), cmap="magma")
    axes[1].set_title("model density $p(x)$", fontsize=10)
    axes[2].scatter(*samples.T.numpy(), s=2, color="tab:orange")
    axes[2].set_title(r"samples $x = f^{-1}(z)$, $z \sim p_{prior}$", fontsize=10)
    for ax in axes[:3]:
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal")
    axes[3].scatter(*z.T.numpy(), s=2, color="tab:green")
    axes[3].set_xlim(-4, 4)
    axes[3].set_ylim(-4, 4)
    axes[3].set_aspect("equal")
    axes[3].set_title("test data in the latent space $z = f(x)$", fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _common.save(fig, path, dpi=90)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = _common.parser(__doc__, "out/realnvp_moons.png")
    ap.add_argument("--epochs", type=int, default=40, help="passes over the training set")
    ap.add_argument("--n-train", type=int, default=8192, help="training points")
    ap.add_argument("--n-test", type=int, default=2048, help="test points")
    ap.add_argument("--noise", type=float, default=0.05, help="make_moons noise")
    ap.add_argument("--couplings", type=int, default=8, help="affine coupling layers")
    ap.add_argument("--hidden", type=int, default=64, help="hidden units of the coupling networks")
    ap.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    ap.add_argument("--batch-size", type=int, default=256, help="minibatch size")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Train, print the metric per epoch, write the figure; returns the per-epoch history."""
    args = parse_args(argv)
    _common.setup(args.seed, args.threads)
    if args.smoke:
        args.epochs, args.n_train, args.n_test = 3, 1024, 512
    x_train, x_test = moons(args.n_train, args.seed, args.noise), moons(args.n_test, args.seed + 1, args.noise)

    # 1. the distribution: a prior pushed through the inverse of the flow
    prior = Normal(loc=torch.zeros(2), scale=1.0, var=["z"], name="p_{prior}")
    p = InverseTransformedDistribution(prior, couplings(args.couplings, args.hidden), var=["x"], name="p")

    # 2-3. maximum likelihood: the loss -log p(x), averaged over the batch
    model = ML(p, optimizer=torch.optim.Adam, optimizer_params={"lr": args.lr})
    print(model)
    print(p.prob_joint_factorized_and_text)

    decay = torch.optim.lr_scheduler.CosineAnnealingLR(model.optimizer, T_max=args.epochs)
    history: dict[str, list[float]] = {"train_loglik": [], "test_loglik": []}
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        total = 0.0
        batches = torch.randperm(args.n_train).split(args.batch_size)
        for idx in batches:
            total += float(model.train({"x": x_train[idx]}))
        decay.step()
        history["train_loglik"].append(-total / len(batches))
        history["test_loglik"].append(-float(model.test({"x": x_test})))
        print(f"epoch {epoch:3d}  train log-likelihood {history['train_loglik'][-1]:7.4f}  test "
              f"{history['test_loglik'][-1]:7.4f} nats/point  ({time.perf_counter() - start:5.1f} s)")

    save_figure(args.out, x_test, p, f"Real NVP ({args.couplings} affine couplings) on two moons: test "
                                     f"log-likelihood {history['test_loglik'][-1]:.3f} nats/point")
    print(f"final test log-likelihood {history['test_loglik'][-1]:.4f} nats per point; wrote {args.out}")
    return history


if __name__ == "__main__":
    main()
