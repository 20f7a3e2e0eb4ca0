r"""The Pixyz README's quick start, line for line in pyro_dgm: a VAE on scikit-learn's 8x8 digits.

A VAE has an inference model :math:`q(z|x)` (Normal), a generative model :math:`p(x,z) = p(x|z)p_{prior}(z)`
(Bernoulli decoder, standard Normal prior) and the loss (negative ELBO)

    L(x) = D_KL[q(z|x) || p_prior(z)] - E_{q(z|x)}[log p(x|z)]

written with the Loss API as ``(KullbackLeibler(q, prior) - E(q, LogProb(p))).mean()`` and trained with the Model API:
``Model(loss_cls, distributions=[p, q], optimizer=optim.Adam, optimizer_params={"lr": 1e-3})`` and
``model.train({"x": x})`` per minibatch. After training, the test log-likelihood is estimated with the
importance-weighted bound ``IWELBO(p * prior, q, k)`` (Burda et al. 2016), which is at most log p(x) and tighter than
the ELBO.

Usage::

    python examples/vae.py              # about a minute on one CPU core; writes out/vae.png
    python examples/vae.py --smoke      # a few seconds

It prints the distributions, the model and its loss, the test negative ELBO per epoch (nats per image), the IWELBO at
the end, and writes a PNG of test digits, their reconstructions and samples from the prior.
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
from torch import nn, optim  # noqa: E402

from pyro_dgm.distributions import Bernoulli, Normal  # noqa: E402
from pyro_dgm.losses import IWELBO, KullbackLeibler, LogProb  # noqa: E402
from pyro_dgm.losses import Expectation as E  # noqa: E402
from pyro_dgm.models import Model  # noqa: E402

METRIC = ("test_loss", "min")  # the test negative ELBO, nats per image


# 1. Distribution API: inherit a family instead of nn.Module; forward takes cond_var by name, returns the parameters
class Inference(Normal):
    """q(z|x)"""

    def __init__(self, x_dim: int, hidden: int, z_dim: int) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.fc1 = nn.Linear(x_dim, hidden)
        self.fc21 = nn.Linear(hidden, z_dim)
        self.fc22 = nn.Linear(hidden, z_dim)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        return {"loc": self.fc21(h), "scale": F.softplus(self.fc22(h))}


class Generator(Bernoulli):
    """p(x|z)"""

    def __init__(self, z_dim: int, hidden: int, x_dim: int) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.fc1 = nn.Linear(z_dim, hidden)
        self.fc2 = nn.Linear(hidden, x_dim)

    def forward(self, z):
        h = F.relu(self.fc1(z))
        return {"probs": torch.sigmoid(self.fc2(h))}


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Train, print the loss per epoch, write the figure; returns the history (a list per key, one value per epoch)."""
    args = _digits.parser(__doc__, epochs=150, lr=1e-3, out="out/vae.png", z_dim=8, hidden=256,
                          iw_samples=1000).parse_args(argv)
    _digits.setup(args.seed)
    x_train, _, x_test, _ = _digits.load_digits_split(args.seed)
    epochs, k = args.epochs, args.iw_samples
    if args.smoke:
        x_train, epochs, k = x_train[:256], 3, 10

    p, q = Generator(args.z_dim, args.hidden, _digits.X_DIM), Inference(_digits.X_DIM, args.hidden, args.z_dim)
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[args.z_dim],
                   name="p_{prior}")
    p_joint = p * prior
    print(p_joint)
    print(q)

    # 2. Loss API: the negative ELBO as the paper writes it
    loss_cls = (KullbackLeibler(q, prior) - E(q, LogProb(p))).mean()

    # 3. Model API: the loss, the distributions to train, the optimizer
    model = Model(loss_cls, distributions=[p, q], optimizer=optim.Adam, optimizer_params={"lr": args.lr})
    print(model)

    history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "test_loss": []}
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        total = 0.0
        for idx in _digits.minibatches(len(x_train), args.batch_size):
            total += float(model.train({"x": x_train[idx]})) * len(idx)
        test_loss = float(model.test({"x": x_test}))
        history["epoch"].append(epoch)
        history["train_loss"].append(total / len(x_train))
        history["test_loss"].append(test_loss)
        if epoch == 1 or epoch % 10 == 0 or epoch == epochs:
            print(f"epoch {epoch:3d}  train loss {total / len(x_train):7.3f}  test loss {test_loss:7.3f}  "
                  f"(-ELBO, nats per image; {time.perf_counter() - start:5.1f} s)")

    # the test log-likelihood: log p(x) >= IWELBO_k >= ELBO
    iwelbo = IWELBO(p_joint, q, k=k, chunk_size=100)
    print(f"log p(x) >= {iwelbo}")
    with torch.no_grad():
        log_lik = float(iwelbo.eval({"x": x_test}).mean())
    history["test_log_likelihood"] = [log_lik]
    print(f"test: -ELBO {history['test_loss'][-1]:.3f}, IWELBO (k={k}) {log_lik:.3f} nats per image")

    # generation and inference by sampling p(x,z) and q(z|x)
    cols = 16
    with torch.no_grad():
        shown = x_test[:2 * cols]
        z = q.sample({"x": shown}, sample_mean=True, return_all=False)["z"]
        recon = p.sample_mean({"z": z})
        samples = p.sample_mean(prior.sample(batch_n=3 * cols))
    fig, axes = plt.subplots(3, 1, figsize=(cols * 0.55, 6.4), gridspec_kw={"height_ratios": [2, 2, 3]})
    _digits.show(axes[0], shown, cols, "test digits $x$")
    _digits.show(axes[1], recon, cols, r"reconstructions: mean of $p(x|z)$ at $z$ = mean of $q(z|x)$")
    _digits.show(axes[2], samples, cols, r"samples: mean of $p(x|z)$, $z \sim p_{prior}(z)$")
    fig.suptitle(f"VAE (the Pixyz quick start) on digits, {epochs} epochs: test -ELBO "
                 f"{history['test_loss'][-1]:.2f}, log p(x) $\\geq$ {log_lik:.2f} nats", fontsize=11)
    fig.tight_layout()
    _digits.save(fig, args.out)
    return history


if __name__ == "__main__":
    main()
