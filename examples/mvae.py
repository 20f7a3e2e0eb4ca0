r"""MVAE (Wu and Goodman 2018) on digits and labels: a product of experts infers z from whichever modalities are given.

One Normal expert per modality and the prior as an expert:

    q(z|x,y) ∝ p(z) q_x(z|x) q_y(z|y)        ProductOfNormal([q_x, q_y]): precisions add up
    p(x|z) Normal with a fixed pixel scale σ = 0.1, p(y|z) Categorical, p_prior(z) = N(0, I)

An expert whose input is missing is left out of the product, so the same q answers q(z|x,y), q(z|x) and q(z|y) (and
the prior when nothing is given): ``q.sample({"x": x})`` uses the image expert alone. The loss is the MVAE's sum of
ELBOs over the subsets of modalities, with the unimodal posteriors written as the products they are,
``ProductOfNormal([q_x])`` and ``ProductOfNormal([q_y])`` (the same networks):

    - ELBO(x, y) - ELBO(x) - ELBO(y),    ELBO(s) = E_{q(z|s)}[log p(s|z)] - D_KL[q(z|s) || p_prior(z)]

with log p(y|z) weighted by λ_y = 10, as the MVAE paper weights its label modality: a label is worth at most
log 10 = 2.3 nats against hundreds for an image, and unweighted it leaves q(z|y) too broad to draw the right digit.

Missing modalities in training: only ``--paired`` of the training images (20% by default) come with their label. A
per-image indicator ``paired`` (a ``Parameter`` given with the data, 1 or 0) switches off the two terms that need the
label for the others: ``(-elbo_x + paired * (-elbo_xy - elbo_y)).mean()``.

Usage::

    python examples/mvae.py               # under a minute on one CPU core; writes out/mvae.png
    python examples/mvae.py --paired 1    # every label given
    python examples/mvae.py --smoke

It prints the product of experts and the loss, the test loss and the x -> y accuracy per epoch (z = mean of q(z|x),
the label expert left out; y the mode of p(y|z)), and writes a PNG of images generated from labels alone
(z ~ q(z|y)) beside the confusion matrix of that x -> y prediction.
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

from pyro_dgm.distributions import Categorical, Normal  # noqa: E402
from pyro_dgm.distributions.poe import ProductOfNormal  # noqa: E402
from pyro_dgm.losses import KullbackLeibler, LogProb, Parameter  # noqa: E402
from pyro_dgm.losses import Expectation as E  # noqa: E402
from pyro_dgm.models import Model  # noqa: E402

METRIC = ("test_loss", "min")  # the test MVAE loss (all three ELBO terms, labels given), nats per image


class Expert(Normal):
    """A Normal expert q_v(z|v) over z from one modality v."""

    def __init__(self, v: str, in_dim: int, hidden: int, z_dim: int) -> None:
        super().__init__(var=["z"], cond_var=[v], name=f"q_{{{v}}}")
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.fc_loc = nn.Linear(hidden, z_dim)
        self.fc_scale = nn.Linear(hidden, z_dim)

    def forward(self, **inputs: Tensor) -> dict[str, Tensor]:  # the one cond_var, by name
        h = self.net(inputs[self.cond_var[0]])
        return {"loc": self.fc_loc(h), "scale": F.softplus(self.fc_scale(h)) + 1e-3}


class ImageDecoder(Normal):
    """p(x|z), with a fixed pixel scale (a constant parameter)"""

    def __init__(self, hidden: int, z_dim: int, sigma: float) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p", scale=sigma)
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, _digits.X_DIM))

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        return {"loc": torch.sigmoid(self.net(z))}


class LabelDecoder(Categorical):
    """p(y|z)"""

    def __init__(self, hidden: int, z_dim: int) -> None:
        super().__init__(var=["y"], cond_var=["z"], name="p")
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, _digits.N_CLASSES))

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        return {"probs": F.softmax(self.net(z), dim=-1)}


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Train, print the loss per epoch, write the figure; returns the history (a list per key, one per epoch)."""
    ap = _digits.parser(__doc__, epochs=60, lr=1e-3, out="out/mvae.png", z_dim=8, hidden=256)
    ap.add_argument("--paired", type=float, default=0.2, help="fraction of training images that come with a label")
    ap.add_argument("--sigma", type=float, default=0.1, help="pixel scale of the Normal p(x|z)")
    ap.add_argument("--label-weight", type=float, default=10.0, help="λ_y, the weight of log p(y|z)")
    args = ap.parse_args(argv)
    _digits.setup(args.seed)
    x_train, y_train, x_test, labels_test = _digits.load_digits_split(args.seed)
    y_train, y_test = _digits.one_hot(y_train), _digits.one_hot(labels_test)
    epochs = args.epochs
    if args.smoke:
        x_train, y_train, epochs = x_train[:256], y_train[:256], 3
    paired = (torch.rand(len(x_train)) < args.paired).to(x_train.dtype)   # 1: the label is given, 0: missing
    placeholder = _digits.one_hot(torch.zeros(len(x_train), dtype=torch.long))  # stands in for a missing label:
    y_train = torch.where(paired[:, None] > 0, y_train, placeholder)              # its terms are multiplied by 0
    print(f"{len(x_train)} training images, {int(paired.sum())} with their label")

    h, zd = args.hidden, args.z_dim
    q_x, q_y = Expert("x", _digits.X_DIM, h, zd), Expert("y", _digits.N_CLASSES, h, zd)
    q = ProductOfNormal([q_x, q_y], name="q", features_shape=[zd])   # q(z|x,y) ∝ p(z) q_x(z|x) q_y(z|y)
    q_only_x = ProductOfNormal([q_x], name="q", features_shape=[zd])  # q(z|x) ∝ p(z) q_x(z|x)
    q_only_y = ProductOfNormal([q_y], name="q", features_shape=[zd])  # q(z|y) ∝ p(z) q_y(z|y)
    p_x, p_y = ImageDecoder(h, zd, args.sigma), LabelDecoder(h, zd)
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[zd], name="p_{prior}")
    print(q)
    print(p_x * p_y * prior)

    lam = args.label_weight  # λ_y: the weight of log p(y|z) (the MVAE paper weights its label modality too)
    elbo_xy = E(q, LogProb(p_x) + lam * LogProb(p_y)) - KullbackLeibler(q, prior)
    elbo_x = E(q_only_x, LogProb(p_x)) - KullbackLeibler(q_only_x, prior)
    elbo_y = E(q_only_y, lam * LogProb(p_y)) - KullbackLeibler(q_only_y, prior)
    loss_cls = (-elbo_x + Parameter("paired") * (-elbo_xy - elbo_y)).mean()
    model = Model(loss_cls, distributions=[q_x, q_y, p_x, p_y], optimizer=optim.Adam,
                  optimizer_params={"lr": args.lr})
    print(model)

    def predict_x_to_y() -> Tensor:
        with torch.no_grad():
            z = q.sample({"x": x_test}, sample_mean=True, return_all=False)["z"]  # y missing: its expert left out
            return p_y.get_params({"z": z})["probs"].argmax(-1)

    def accuracy_x_to_y() -> float:
        return float((predict_x_to_y() == labels_test).float().mean())

    test = {"x": x_test, "y": y_test, "paired": torch.ones(len(x_test))}
    history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "test_loss": [], "test_accuracy_x_to_y": []}
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        total = 0.0
        for idx in _digits.minibatches(len(x_train), args.batch_size):
            batch = {"x": x_train[idx], "y": y_train[idx], "paired": paired[idx]}
            total += float(model.train(batch)) * len(idx)
        test_loss, acc = float(model.test(test)), accuracy_x_to_y()
        for key, value in (("epoch", epoch), ("train_loss", total / len(x_train)), ("test_loss", test_loss),
                           ("test_accuracy_x_to_y", acc)):
            history[key].append(value)
        if epoch == 1 or epoch % 10 == 0 or epoch == epochs:
            print(f"epoch {epoch:3d}  train loss {total / len(x_train):7.3f}  test loss {test_loss:7.3f}  "
                  f"x -> y accuracy {acc:.4f}  ({time.perf_counter() - start:5.1f} s)")

    cols = 12
    with torch.no_grad():
        y_rows = torch.eye(_digits.N_CLASSES).repeat_interleave(cols, dim=0)
        z = q.sample({"y": y_rows}, return_all=False)["z"]            # x missing: z ~ q(z|y) ∝ p(z) q_y(z|y)
        z_mean = q.sample({"y": torch.eye(_digits.N_CLASSES)}, sample_mean=True, return_all=False)["z"]
        z = torch.cat([z_mean[:, None], z.reshape(_digits.N_CLASSES, cols, -1)], dim=1).reshape(-1, zd)
        generated = p_x.sample_mean({"z": z})
        confusion = torch.zeros(_digits.N_CLASSES, _digits.N_CLASSES)
        confusion.index_put_((labels_test, predict_x_to_y()), torch.ones(len(x_test)), accumulate=True)
    fig, axes = plt.subplots(1, 2, figsize=(12, 6.0), gridspec_kw={"width_ratios": [1.15, 1]})
    _digits.show(axes[0], generated, cols + 1,
                 "$y$ only: mean of $p(x|z)$ at the mean of $q(z|y) \\propto p(z)q_y(z|y)$"
                 "\n(left), and at 12 draws $z \\sim q(z|y)$",
                 row_labels=[f"y={c}" for c in range(_digits.N_CLASSES)])
    ax = axes[1]
    ax.imshow(confusion.numpy(), cmap="Blues")
    for i in range(_digits.N_CLASSES):
        for j in range(_digits.N_CLASSES):
            if (n := int(confusion[i, j])) > 0:
                ax.text(j, i, n, ha="center", va="center", fontsize=7, color="white" if n > 15 else "black")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted: mode of $p(y|z)$, $z$ = mean of $q(z|x) \\propto p(z)q_x(z|x)$", fontsize=9)
    ax.set_ylabel("true label")
    ax.set_title(f"$x$ only $\\to y$ on the test digits: {100 * history['test_accuracy_x_to_y'][-1]:.1f}% correct",
                 fontsize=10)
    fig.suptitle(f"MVAE (product of experts), {int(paired.sum())} of {len(x_train)} training images labelled, "
                 f"{epochs} epochs: test loss {history['test_loss'][-1]:.2f} nats", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    _digits.save(fig, args.out)
    return history


if __name__ == "__main__":
    main()
