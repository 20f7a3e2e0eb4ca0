r"""β-VAE (Higgins et al. 2017) on digits: the VAE loss with the KL term weighted by β > 1.

    L(x) = β D_KL[q(z|x) || p_prior(z)] - E_{q(z|x)}[log p(x|z)]

written ``(beta * KullbackLeibler(q, prior) - E(q, LogProb(p))).mean()``. A larger β presses q(z|x) towards the
factorized prior: fewer latent dimensions stay in use, and those that do tend to vary one factor of the image each.
The element-wise KL, ``KullbackLeibler(q, prior, sum_features=False)``, shows which dimensions are in use (their KL
is above about 0.1 nats; the others have collapsed to the prior).

p(x|z) is a Normal with a fixed pixel scale σ = 0.1, a constant parameter (``scale=sigma`` in the constructor; the
network returns only ``loc``). A Bernoulli on these grey levels is too weak a likelihood for this: the plain VAE with
one spends under 3 nats of KL in all, and β = 4 collapses every dimension to the prior.

Usage::

    python examples/beta_vae.py              # about 30 s on one CPU core; writes out/beta_vae.png
    python examples/beta_vae.py --beta 1     # the plain VAE, for comparison
    python examples/beta_vae.py --smoke

It prints the loss, the test loss and the test negative ELBO (the β = 1 value) per epoch, the KL of each latent
dimension, and writes a PNG of latent traversals: one row per latent dimension in use (sorted by KL), decoding the
mean of q(z|x) of a test digit with that one coordinate swept over [-2.5, 2.5].
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _digits  # noqa: E402  (data, command line and pictures shared by the examples; finds pyro_dgm in a checkout)

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn, optim  # noqa: E402

from pyro_dgm.distributions import Normal  # noqa: E402
from pyro_dgm.losses import KullbackLeibler, LogProb  # noqa: E402
from pyro_dgm.losses import Expectation as E  # noqa: E402
from pyro_dgm.models import Model  # noqa: E402

METRIC = ("test_loss", "min")  # the test β-VAE loss, nats per image


class Inference(Normal):
    """q(z|x)"""

    def __init__(self, hidden: int, z_dim: int) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.net = nn.Sequential(nn.Linear(_digits.X_DIM, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.fc_loc = nn.Linear(hidden, z_dim)
        self.fc_scale = nn.Linear(hidden, z_dim)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.net(x)
        return {"loc": self.fc_loc(h), "scale": F.softplus(self.fc_scale(h)) + 1e-4}


class Generator(Normal):
    """p(x|z): a Normal around the decoded image, with a fixed pixel scale ``sigma`` (a constant parameter)."""

    def __init__(self, hidden: int, z_dim: int, sigma: float) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p", scale=sigma)
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, _digits.X_DIM))

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        return {"loc": torch.sigmoid(self.net(z))}


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Train, print the losses per epoch, write the figure; returns the history (a list per key, one per epoch)."""
    ap = _digits.parser(__doc__, epochs=100, lr=1e-3, out="out/beta_vae.png", z_dim=10, hidden=256)
    ap.add_argument("--beta", type=float, default=4.0, help="the weight of the KL term")
    ap.add_argument("--sigma", type=float, default=0.1, help="the pixel scale of the Normal p(x|z)")
    args = ap.parse_args(argv)
    _digits.setup(args.seed)
    x_train, _, x_test, _ = _digits.load_digits_split(args.seed)
    epochs = args.epochs
    if args.smoke:
        x_train, epochs = x_train[:256], 3

    q, p = Inference(args.hidden, args.z_dim), Generator(args.hidden, args.z_dim, args.sigma)
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[args.z_dim],
                   name="p_{prior}")
    print(p * prior)

    beta = args.beta
    kl = KullbackLeibler(q, prior)
    reconstruction = E(q, LogProb(p))
    loss_cls = (beta * kl - reconstruction).mean()
    model = Model(loss_cls, distributions=[p, q], optimizer=optim.Adam, optimizer_params={"lr": args.lr})
    print(model)

    history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "test_loss": [], "test_nelbo": [],
                                       "test_kl": []}
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        total = 0.0
        for idx in _digits.minibatches(len(x_train), args.batch_size):
            total += float(model.train({"x": x_train[idx]})) * len(idx)
        test_loss = float(model.test({"x": x_test}))
        terms = model.last_terms  # this evaluation's terms: the KL and the reconstruction, per image
        test_kl = float(terms[kl.term_name].mean())
        nelbo = test_kl - float(terms[reconstruction.term_name].mean())
        for key, value in (("epoch", epoch), ("train_loss", total / len(x_train)), ("test_loss", test_loss),
                           ("test_nelbo", nelbo), ("test_kl", test_kl)):
            history[key].append(value)
        if epoch == 1 or epoch % 10 == 0 or epoch == epochs:
            print(f"epoch {epoch:3d}  train loss {total / len(x_train):7.3f}  test loss {test_loss:7.3f}  "
                  f"test -ELBO {nelbo:7.3f}  test KL {test_kl:6.3f}  ({time.perf_counter() - start:5.1f} s)")

    # which latent dimensions are in use: the element-wise KL, averaged over the test set
    kl_dims = KullbackLeibler(q, prior, sum_features=False)
    with torch.no_grad():
        per_dim = kl_dims.eval({"x": x_test}).mean(0)
    order = torch.argsort(per_dim, descending=True)
    active = [int(d) for d in order if per_dim[d] > 0.1] or [int(order[0])]
    print(f"KL per latent dimension (nats): {[round(float(v), 2) for v in per_dim]}; in use: {len(active)}")
    history["active_dims"] = [float(len(active))]

    # latent traversals around the mean of q(z|x) of one test digit
    steps = torch.linspace(-2.5, 2.5, 11)
    with torch.no_grad():
        base = q.sample({"x": x_test[:1]}, sample_mean=True, return_all=False)["z"]  # [1, z_dim]
        rows = []
        for d in active:
            z = base.repeat(len(steps), 1)
            z[:, d] = steps
            rows.append(p.sample_mean({"z": z}))
        grid = torch.cat(rows)
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 0.55 * len(active) + 1.6), gridspec_kw={"width_ratios": [1, 11]})
    _digits.show(axes[0], x_test[:1], 1, "$x$")
    axes[0].set_anchor("N")
    _digits.show(axes[1], grid, len(steps), r"mean of $p(x|z)$, $z_d$ swept over $[-2.5, 2.5]$",
                 row_labels=[f"z{d} ({float(per_dim[d]):.1f})" for d in active])
    fig.suptitle(f"β-VAE, β={beta:g}, {epochs} epochs: test -ELBO {history['test_nelbo'][-1]:.2f}, "
                 f"{len(active)} of {args.z_dim} dims in use (KL in nats)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    _digits.save(fig, args.out)
    return history


if __name__ == "__main__":
    main()
