r"""A conditional VAE (Sohn et al. 2015; Kingma et al. 2014's M1+label decoder) on digits and their labels.

Both networks see the label :math:`y` (one-hot):

    q(z|x,y)      Normal encoder
    p(x|z,y)      Bernoulli decoder
    p_prior(z)    Normal(0, I)

and the loss is the negative conditional ELBO,
``(KullbackLeibler(q, prior) - E(q, LogProb(p))).mean()``: the same formula as the plain VAE, with the label as one
more conditioning variable. Because the label carries the class, :math:`z` is free to carry the style, so one
:math:`z \sim p_{prior}(z)` decoded with each label writes the ten digits in one style.

Usage::

    python examples/cvae.py             # about 30 s on one CPU core; writes out/cvae.png
    python examples/cvae.py --smoke

It prints the distributions and the loss, the test negative ELBO per epoch, and writes a PNG with one row per class:
a column per draw of :math:`z` from the prior (the same draw down a column).
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

from pyro_dgm.distributions import Bernoulli, Normal  # noqa: E402
from pyro_dgm.losses import KullbackLeibler, LogProb  # noqa: E402
from pyro_dgm.losses import Expectation as E  # noqa: E402
from pyro_dgm.models import Model  # noqa: E402

METRIC = ("test_loss", "min")  # the test negative conditional ELBO, nats per image


class Inference(Normal):
    """q(z|x,y)"""

    def __init__(self, hidden: int, z_dim: int) -> None:
        super().__init__(var=["z"], cond_var=["x", "y"], name="q")
        self.fc1 = nn.Linear(_digits.X_DIM + _digits.N_CLASSES, hidden)
        self.fc_loc = nn.Linear(hidden, z_dim)
        self.fc_scale = nn.Linear(hidden, z_dim)

    def forward(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        h = F.relu(self.fc1(torch.cat([x, y], dim=-1)))
        return {"loc": self.fc_loc(h), "scale": F.softplus(self.fc_scale(h)) + 1e-4}


class Generator(Bernoulli):
    """p(x|z,y)"""

    def __init__(self, hidden: int, z_dim: int) -> None:
        super().__init__(var=["x"], cond_var=["z", "y"], name="p")
        self.fc1 = nn.Linear(z_dim + _digits.N_CLASSES, hidden)
        self.fc2 = nn.Linear(hidden, _digits.X_DIM)

    def forward(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        return {"logits": self.fc2(F.relu(self.fc1(torch.cat([z, y], dim=-1))))}


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Train, print the loss per epoch, write the figure; returns the history (a list per key, one value per epoch)."""
    args = _digits.parser(__doc__, epochs=100, lr=1e-3, out="out/cvae.png", z_dim=4, hidden=256).parse_args(argv)
    _digits.setup(args.seed)
    x_train, y_train, x_test, y_test = _digits.load_digits_split(args.seed)
    y_train, y_test = _digits.one_hot(y_train), _digits.one_hot(y_test)
    epochs = args.epochs
    if args.smoke:
        x_train, y_train, epochs = x_train[:256], y_train[:256], 3

    q, p = Inference(args.hidden, args.z_dim), Generator(args.hidden, args.z_dim)
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[args.z_dim],
                   name="p_{prior}")
    print(p * prior)
    print(q)

    loss_cls = (KullbackLeibler(q, prior) - E(q, LogProb(p))).mean()
    model = Model(loss_cls, distributions=[p, q], optimizer=optim.Adam, optimizer_params={"lr": args.lr})
    print(model)

    test = {"x": x_test, "y": y_test}
    history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "test_loss": []}
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        total = 0.0
        for idx in _digits.minibatches(len(x_train), args.batch_size):
            total += float(model.train({"x": x_train[idx], "y": y_train[idx]})) * len(idx)
        test_loss = float(model.test(test))
        history["epoch"].append(epoch)
        history["train_loss"].append(total / len(x_train))
        history["test_loss"].append(test_loss)
        if epoch == 1 or epoch % 10 == 0 or epoch == epochs:
            print(f"epoch {epoch:3d}  train loss {total / len(x_train):7.3f}  test loss {test_loss:7.3f}  "
                  f"(-ELBO, nats per image; {time.perf_counter() - start:5.1f} s)")

    # one row per class, one column per z ~ p_prior(z): the same z (style) down each column
    cols = 12
    with torch.no_grad():
        z = prior.sample(batch_n=cols)["z"]
        labels = torch.eye(_digits.N_CLASSES)
        zz = z.repeat(_digits.N_CLASSES, 1)                        # [10 * cols, z_dim]: row-major, class by class
        yy = labels.repeat_interleave(cols, dim=0)                 # [10 * cols, 10]
        samples = p.sample_mean({"z": zz, "y": yy})
        # and the other way round: the style of a test digit (z from q(z|x,y)) written as every class
        shown = x_test[:6]
        z_style = q.sample({"x": shown, "y": y_test[:6]}, sample_mean=True, return_all=False)["z"]
        analogies = p.sample_mean({"z": z_style.repeat_interleave(_digits.N_CLASSES, 0),
                                   "y": labels.repeat(len(shown), 1)})
        grid = torch.cat([shown[:, None], analogies.reshape(len(shown), _digits.N_CLASSES, -1)], dim=1)
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 5.4), gridspec_kw={"width_ratios": [cols, 11]})
    _digits.show(axes[0], samples, cols, r"mean of $p(x|z,y)$: row $y$, column $z \sim p_{prior}(z)$",
                 row_labels=[f"y={c}" for c in range(_digits.N_CLASSES)])
    _digits.show(axes[1], grid.reshape(-1, _digits.X_DIM), 11,
                 "a test digit (left), its $z$ = mean of $q(z|x,y)$,\nwritten as $y$ = 0..9")
    fig.suptitle(f"Conditional VAE on digits, z_dim={args.z_dim}, {epochs} epochs: test -ELBO "
                 f"{history['test_loss'][-1]:.2f} nats per image", fontsize=11)
    fig.tight_layout()
    _digits.save(fig, args.out)
    return history


if __name__ == "__main__":
    main()
