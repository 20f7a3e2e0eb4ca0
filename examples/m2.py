r"""The M2 semi-supervised VAE (Kingma et al. 2014) on digits with 10% of the labels, as in the seed paper's Appendix A.

The generative model and the two inference models:

    p(x,y,z) = p(x|z,y) p(z) p(y)      p(x|z,y) a network, p(z) = N(0, I), p(y) uniform over the 10 classes
    q(z|x,y)                           Normal, a network
    q(y|x)                             Categorical, a network: the classifier

and the objective (Appendix A, Figure A1(a)), maximized:

    sum over labelled (x, y):   E_{q(z|x,y)}[log p(x,y,z) / q(z|x,y)] + α log q(y|x)
    + sum over unlabelled x_u:  E_{q(z|x_u,y) q(y|x_u)}[log p(x_u,y,z) / (q(z|x_u,y) q(y|x_u))]

The unlabelled data are a second variable ``x_u``: the same networks renamed with ``replace_var(x="x_u")``. The
expectation over the label in the unlabelled term is taken exactly, a sum over the 10 classes weighted by q(y|x_u)
(Kingma et al.'s U(x)), with a small Loss subclass written here, :class:`SumOverLabels`; z is sampled. α is a
``Parameter`` given with the data. The figure is test accuracy of q(y|x) after each epoch; ``--supervised-only``
trains the same classifier on the labelled 10% alone (the α term only), for comparison.

p(x|z,y) is a Normal with a fixed pixel scale σ = 0.1 (as in beta_vae.py). With a Bernoulli on these grey levels a
label is worth only about 3 nats per image, little more than the entropy bonus of q(y|x_u) (log 10 = 2.3 nats), and
the unlabelled term barely teaches the classifier: it stayed at the supervised-only 92-93% when we tried it. A small z
(2 dimensions) leaves the class to y, so a digit's z decoded with each y writes every class in its style.

Usage::

    python examples/m2.py                     # about a minute on one CPU core; writes out/m2.png
    python examples/m2.py --supervised-only   # the classifier on the 150 labelled digits alone
    python examples/m2.py --smoke
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _digits  # noqa: E402  (data, command line and pictures shared by the examples; finds pyro_dgm in a checkout)

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn, optim  # noqa: E402

from pyro_dgm.distributions import Categorical, Distribution, Normal  # noqa: E402
from pyro_dgm.losses import ELBO, LogProb, Loss, Parameter  # noqa: E402
from pyro_dgm.losses import Expectation as E  # noqa: E402
from pyro_dgm.losses.base import ordered_union  # noqa: E402
from pyro_dgm.models import Model  # noqa: E402

METRIC = ("test_accuracy", "max")  # accuracy of the classifier q(y|x) on the 297 test digits


class Classifier(Categorical):
    """q(y|x)"""

    def __init__(self, hidden: int) -> None:
        super().__init__(var=["y"], cond_var=["x"], name="q")
        self.net = nn.Sequential(nn.Linear(_digits.X_DIM, hidden), nn.ReLU(), nn.Linear(hidden, _digits.N_CLASSES))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"probs": F.softmax(self.net(x), dim=-1)}


class Inference(Normal):
    """q(z|x,y)"""

    def __init__(self, hidden: int, z_dim: int) -> None:
        super().__init__(var=["z"], cond_var=["x", "y"], name="q")
        self.net = nn.Sequential(nn.Linear(_digits.X_DIM + _digits.N_CLASSES, hidden), nn.ReLU())
        self.fc_loc = nn.Linear(hidden, z_dim)
        self.fc_scale = nn.Linear(hidden, z_dim)

    def forward(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        h = self.net(torch.cat([x, y], dim=-1))
        return {"loc": self.fc_loc(h), "scale": F.softplus(self.fc_scale(h)) + 1e-4}


class Generator(Normal):
    """p(x|z,y), with a fixed pixel scale (a constant parameter)"""

    def __init__(self, hidden: int, z_dim: int, sigma: float) -> None:
        super().__init__(var=["x"], cond_var=["z", "y"], name="p", scale=sigma)
        self.net = nn.Sequential(nn.Linear(z_dim + _digits.N_CLASSES, hidden), nn.ReLU(),
                                 nn.Linear(hidden, _digits.X_DIM))

    def forward(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        return {"loc": torch.sigmoid(self.net(torch.cat([z, y], dim=-1)))}


class SumOverLabels(Loss):
    r"""The expectation of ``f`` over a one-hot Categorical ``q(y|x)``, summed exactly over its classes:
    :math:`\sum_y q(y|x) f(x, y)`, one value per batch element.

    ``f`` is evaluated once on the batch repeated for every class (class-major), and the values are weighted by the
    probabilities of ``q``, so gradients reach ``q`` through the weights (no sampling of ``y``).
    """

    def __init__(self, q: Distribution, f: Loss) -> None:
        super().__init__(ordered_union(q.input_var, [v for v in f.input_var if v not in q.var]))
        self.q, self.f = q, f

    @property
    def latex(self) -> str:
        return rf"\sum_{{{self.q.var[0]}}} {self.q.prob_text} \left[{self.f.latex} \right]"

    def forward(self, values: dict[str, Any], **kwargs: Any) -> Tensor:
        probs = self.q.get_params(values, **kwargs)["probs"]            # [B, K]
        batch, k = probs.shape
        labels = torch.eye(k, dtype=probs.dtype, device=probs.device).repeat_interleave(batch, dim=0)
        repeated = {name: v.repeat(k, *([1] * (v.dim() - 1))) if isinstance(v, Tensor) and v.dim() else v
                    for name, v in values.items()}
        repeated[self.q.var[0]] = labels                                # [K * B, K]
        f = self.f.eval(repeated, **kwargs).reshape(k, batch)           # f(x, y = class c) in row c
        return (probs.T * f).sum(dim=0)


def split_labels(y: Tensor, fraction: float, seed: int) -> Tensor:
    """Indices of a class-balanced labelled subset: ``fraction`` of each class."""
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in range(_digits.N_CLASSES):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        picked.append(idx[:max(1, round(fraction * len(idx)))])
    return torch.cat(picked)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Train, print the accuracy per epoch, write the figure; returns the history (a list per key, one per epoch)."""
    ap = _digits.parser(__doc__, epochs=40, lr=1e-3, out="out/m2.png", z_dim=2, hidden=256)
    ap.add_argument("--labelled", type=float, default=0.1, help="fraction of the training labels kept")
    ap.add_argument("--alpha", type=float, default=50.0, help="weight of the classification term log q(y|x)")
    ap.add_argument("--sigma", type=float, default=0.1, help="pixel scale of the Normal p(x|z,y)")
    ap.add_argument("--supervised-only", action="store_true", help="train q(y|x) on the labelled data alone")
    args = ap.parse_args(argv)
    _digits.setup(args.seed)
    x_train, y_train, x_test, y_test = _digits.load_digits_split(args.seed)
    epochs = args.epochs
    if args.smoke:
        x_train, y_train, epochs = x_train[:512], y_train[:512], 3
    labelled = split_labels(y_train, args.labelled, args.seed)
    x_l, y_l = x_train[labelled], _digits.one_hot(y_train[labelled])
    print(f"{len(x_train)} training digits, {len(x_l)} of them labelled; {len(x_test)} test digits")

    # the distributions: p(x|z,y), p(z), p(y), q(z|x,y), q(y|x)
    p_x_zy = Generator(args.hidden, args.z_dim, args.sigma)
    p_z = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[args.z_dim],
                 name="p_{prior}")
    p_y = Categorical(probs=torch.full((_digits.N_CLASSES,), 1.0 / _digits.N_CLASSES), var=["y"], name="p_{prior}")
    q_z_xy = Inference(args.hidden, args.z_dim)
    q_y_x = Classifier(args.hidden)

    # labelled data (x, y) and unlabelled data x_u: the same networks under another variable name
    p_xyz = p_x_zy * p_z * p_y
    pu_xyz = p_x_zy.replace_var(x="x_u") * p_z * p_y
    qu_z_xy, qu_y_x = q_z_xy.replace_var(x="x_u"), q_y_x.replace_var(x="x_u")
    qu_zy_x = qu_z_xy * qu_y_x
    print(p_xyz)
    print(qu_zy_x)

    alpha = Parameter("alpha")
    elbo = ELBO(p_xyz, q_z_xy)
    elbo_u = SumOverLabels(qu_y_x, E(qu_z_xy, LogProb(pu_xyz) - LogProb(qu_zy_x)))
    if args.supervised_only:
        loss_cls = -(alpha * LogProb(q_y_x)).mean()
        distributions = [q_y_x]
    else:
        loss_cls = -(elbo + alpha * LogProb(q_y_x)).mean() - elbo_u.mean()
        distributions = [p_x_zy, q_z_xy, q_y_x]
    model = Model(loss_cls, distributions=distributions, optimizer=optim.Adam, optimizer_params={"lr": args.lr})
    print(model)

    def accuracy() -> float:
        q_y_x.eval()
        with torch.no_grad():
            pred = q_y_x.get_params({"x": x_test})["probs"].argmax(-1)
        q_y_x.train()
        return float((pred == y_test).float().mean())

    history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "test_accuracy": []}
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        total, steps = 0.0, 0
        for idx in _digits.minibatches(len(x_train), args.batch_size):  # an epoch is a pass over the unlabelled
            lab = torch.randint(len(x_l), (len(idx),))                     # a labelled batch of the same size
            total += float(model.train({"x": x_l[lab], "y": y_l[lab], "x_u": x_train[idx], "alpha": args.alpha}))
            steps += 1
        acc = accuracy()
        history["epoch"].append(epoch)
        history["train_loss"].append(total / steps)
        history["test_accuracy"].append(acc)
        print(f"epoch {epoch:3d}  train loss {total / steps:9.3f}  test accuracy {acc:.4f}  "
              f"({time.perf_counter() - start:5.1f} s)")

    # the picture: the accuracy curve, and test digits' style z ~ q(z|x,y) written as every class
    fig = plt.figure(figsize=(11.5, 4.6))
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(history["epoch"], [100 * a for a in history["test_accuracy"]], marker="o", ms=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy of q(y|x) (%)")
    ax.grid(alpha=0.3)
    ax.set_title(f"{len(x_l)} labelled + {len(x_train) - len(x_l)} unlabelled digits", fontsize=10)
    ax2 = fig.add_subplot(1, 2, 2)
    if args.supervised_only:
        ax2.axis("off")
    else:
        with torch.no_grad():
            shown, labels = x_test[:8], _digits.one_hot(y_test[:8])
            z = q_z_xy.sample({"x": shown, "y": labels}, sample_mean=True, return_all=False)["z"]
            eye = torch.eye(_digits.N_CLASSES)
            analogies = p_x_zy.sample_mean({"z": z.repeat_interleave(_digits.N_CLASSES, 0),
                                            "y": eye.repeat(len(shown), 1)}).clamp(0, 1)
            grid = torch.cat([shown[:, None], analogies.reshape(len(shown), _digits.N_CLASSES, -1)], dim=1)
        _digits.show(ax2, grid.reshape(-1, _digits.X_DIM), _digits.N_CLASSES + 1,
                     "test digit (left); its z = mean of q(z|x,y) decoded with y = 0..9")
    kind = "classifier on the labelled digits alone" if args.supervised_only else "M2"
    fig.suptitle(f"{kind}: test accuracy {100 * history['test_accuracy'][-1]:.1f}% after {epochs} epochs",
                 fontsize=11)
    fig.tight_layout()
    _digits.save(fig, args.out)
    return history


if __name__ == "__main__":
    main()
