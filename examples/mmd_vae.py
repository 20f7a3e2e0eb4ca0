r"""MMD-VAE (InfoVAE, Zhao, Song and Ermon 2017) on digits: the KL term replaced by an MMD between q(z) and p(z).

The per-image KL term of the VAE, D_KL[q(z|x) || p_prior(z)], pulls every q(z|x) towards the prior, which can blur
the code or switch dimensions off. The MMD-VAE drops it and instead matches the *aggregate* posterior
q(z) = E_{p_data(x)}[q(z|x)] to the prior with the maximum mean discrepancy, estimated on each minibatch:

    L = mean_x( -E_{q(z|x)}[log p(x|z)] ) + λ D_MMD^2[q(z) || p_prior(z)]

written ``(-E(q, LogProb(p))).mean() + lam * MMD(q, prior, kernel="gaussian", sigma_sqr=...)``. ``MMD`` takes one
z from q(z|x) per image of the batch and as many z ~ p_prior(z), and compares them with a Gaussian kernel (an unbiased
estimate, so near 0 it can dip below 0).

The encoder is deterministic, z = f(x) (a ``Deterministic`` distribution), as in Zhao's MMD-VAE tutorial (and the
WAE-MMD of Tolstikhin et al. 2018). With a Normal q(z|x) and no KL term nothing keeps q(z|x) narrow: on these digits,
whose Bernoulli likelihood rewards a precise code little, every q(z|x) spread out over the prior (MMD 0, the code
ignored) when we tried it. With a 2-D z the latent space can be drawn: the codes of the test digits fill the prior's
disc class by class, and decoding a grid over it walks through the digits.

Usage::

    python examples/mmd_vae.py           # about 30 s on one CPU core; writes out/mmd_vae.png
    python examples/mmd_vae.py --smoke

It prints the model and its loss, the test loss per epoch with its two terms, and writes a PNG of the test digits'
codes and of images decoded on a grid of z.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _digits  # noqa: E402  (data, command line and pictures shared by the examples; finds pyro_dgm in a checkout)

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn, optim  # noqa: E402

from pyro_dgm.distributions import Bernoulli, Deterministic, Normal  # noqa: E402
from pyro_dgm.losses import MMD, LogProb  # noqa: E402
from pyro_dgm.losses import Expectation as E  # noqa: E402
from pyro_dgm.models import Model  # noqa: E402

METRIC = ("test_loss", "min")  # the test InfoVAE loss (reconstruction + λ MMD), nats per image


class Encoder(Deterministic):
    """q(z|x): z = f(x)"""

    def __init__(self, hidden: int, z_dim: int) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.net = nn.Sequential(nn.Linear(_digits.X_DIM, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, z_dim))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"z": self.net(x)}


class Generator(Bernoulli):
    """p(x|z)"""

    def __init__(self, hidden: int, z_dim: int) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, _digits.X_DIM))

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        return {"logits": self.net(z)}


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Train, print the losses per epoch, write the figure; returns the history (a list per key, one per epoch)."""
    ap = _digits.parser(__doc__, epochs=80, lr=1e-3, out="out/mmd_vae.png", z_dim=2, hidden=256)
    ap.add_argument("--lam", type=float, default=100.0, help="λ, the weight of the MMD term")
    args = ap.parse_args(argv)
    _digits.setup(args.seed)
    x_train, _, x_test, labels_test = _digits.load_digits_split(args.seed)
    epochs = args.epochs
    if args.smoke:
        x_train, epochs = x_train[:256], 3

    q, p = Encoder(args.hidden, args.z_dim), Generator(args.hidden, args.z_dim)
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[args.z_dim],
                   name="p_{prior}")
    print(p * prior)

    lam = args.lam
    reconstruction = E(q, LogProb(p))
    mmd = MMD(q, prior, kernel="gaussian", sigma_sqr=2.0 * args.z_dim)
    loss_cls = (-reconstruction).mean() + lam * mmd
    model = Model(loss_cls, distributions=[p, q], optimizer=optim.Adam, optimizer_params={"lr": args.lr})
    print(model)

    history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "test_loss": [], "test_mmd": [],
                                       "test_reconstruction": []}
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        total = 0.0
        for idx in _digits.minibatches(len(x_train), args.batch_size):
            total += float(model.train({"x": x_train[idx]})) * len(idx)
        test_loss = float(model.test({"x": x_test}))
        test_mmd = float(model.last_terms[mmd.term_name])
        test_rec = -float(model.last_terms[reconstruction.term_name].mean())  # -log p(x|z), nats per image
        for key, value in (("epoch", epoch), ("train_loss", total / len(x_train)), ("test_loss", test_loss),
                           ("test_mmd", test_mmd), ("test_reconstruction", test_rec)):
            history[key].append(value)
        if epoch == 1 or epoch % 10 == 0 or epoch == epochs:
            print(f"epoch {epoch:3d}  train loss {total / len(x_train):7.3f}  test loss {test_loss:7.3f}  "
                  f"test -log p(x|z) {test_rec:7.3f}  test MMD {test_mmd:7.4f}  ({time.perf_counter() - start:5.1f} s)")

    n = 15
    with torch.no_grad():
        z_test = q.sample({"x": x_test}, return_all=False)["z"]
        ticks = torch.linspace(-2.0, 2.0, n)
        grid_z = torch.zeros(n * n, args.z_dim)
        grid_z[:, 0] = ticks.repeat(n)                      # z_0 left to right
        grid_z[:, 1] = ticks.flip(0).repeat_interleave(n)   # z_1 bottom to top
        decoded = p.sample_mean({"z": grid_z})
    fig, axes = plt.subplots(1, 2, figsize=(12, 6.0))
    ax = axes[0]
    circle = plt.Circle((0, 0), 2.0, fill=False, ls="--", color="grey", lw=0.8)
    ax.add_patch(circle)
    pts = ax.scatter(z_test[:, 0].numpy(), z_test[:, 1].numpy(), c=labels_test.numpy(), cmap="tab10", s=10,
                     vmin=-0.5, vmax=9.5)
    fig.colorbar(pts, ax=ax, ticks=range(10), label="label")
    ax.set_aspect("equal")
    ax.set_xlabel("$z_0$")
    ax.set_ylabel("$z_1$")
    ax.set_title("$z = f(x)$ of the test digits (dashed: radius 2 under $p_{prior}(z)$)", fontsize=10)
    _digits.show(axes[1], decoded, n, r"mean of $p(x|z)$ on a grid $z \in [-2, 2]^2$")
    fig.suptitle(f"MMD-VAE (λ={lam:g}), {epochs} epochs: test loss {history['test_loss'][-1]:.2f}: "
                 f"-log p(x|z) {history['test_reconstruction'][-1]:.2f} nats, MMD {history['test_mmd'][-1]:.4f}",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    _digits.save(fig, args.out)
    return history


if __name__ == "__main__":
    main()
