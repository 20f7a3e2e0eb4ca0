r"""JMVAE (Suzuki, Nakayama and Matsuo 2016) on digits and their labels: two modalities, one latent z.

A joint encoder and one encoder per modality, decoders for both modalities, a prior:

    q(z|x,y)    Normal      the joint encoder (trained by the ELBO)
    q_x(z|x)    Normal      image only     } pulled towards q(z|x,y), so that one modality alone
    q_y(z|y)    Normal      label only     } can infer z when the other is missing
    p(x,y|z) = p(x|z)p(y|z)  Bernoulli image, Categorical label
    p_prior(z)  N(0, I)

The JMVAE-KL objective (to minimize):

    D_KL[q(z|x,y) || p_prior(z)] - E_{q(z|x,y)}[log p(x,y|z)]
        + α (D_KL[q(z|x,y) || q_x(z|x)] + D_KL[q(z|x,y) || q_y(z|y)])

Once trained, the unimodal encoders translate between modalities: a label y gives z ~ q_y(z|y) and images from
p(x|z) (conditional generation), and an image x gives z = mean of q_x(z|x) and a label from p(y|z) (classification,
although no loss term asked for it).

Usage::

    python examples/jmvae.py            # under a minute on one CPU core; writes out/jmvae.png
    python examples/jmvae.py --smoke

It prints the model and its loss, the test loss and the x -> y accuracy per epoch, and writes a PNG of images
generated from each label (z ~ q_y(z|y)) beside the 2-D latent space of the test digits under q_x(z|x).
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

from pyro_dgm.distributions import Bernoulli, Categorical, Normal  # noqa: E402
from pyro_dgm.losses import KullbackLeibler, LogProb  # noqa: E402
from pyro_dgm.losses import Expectation as E  # noqa: E402
from pyro_dgm.models import Model  # noqa: E402

METRIC = ("test_loss", "min")  # the test JMVAE-KL loss, nats per image


class Encoder(Normal):
    """A Normal over z from one or more inputs, concatenated: q(z|x,y), q_x(z|x) or q_y(z|y)."""

    def __init__(self, cond_var: list[str], in_dim: int, hidden: int, z_dim: int, name: str) -> None:
        super().__init__(var=["z"], cond_var=cond_var, name=name)
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.fc_loc = nn.Linear(hidden, z_dim)
        self.fc_scale = nn.Linear(hidden, z_dim)

    def forward(self, **inputs: Tensor) -> dict[str, Tensor]:  # forward(**kwargs) receives every cond_var by name
        h = self.net(torch.cat([inputs[v] for v in self.cond_var], dim=-1))
        return {"loc": self.fc_loc(h), "scale": F.softplus(self.fc_scale(h)) + 1e-4}


class ImageDecoder(Bernoulli):
    """p(x|z)"""

    def __init__(self, hidden: int, z_dim: int) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, _digits.X_DIM))

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        return {"logits": self.net(z)}


class LabelDecoder(Categorical):
    """p(y|z)"""

    def __init__(self, hidden: int, z_dim: int) -> None:
        super().__init__(var=["y"], cond_var=["z"], name="p")
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, _digits.N_CLASSES))

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        return {"probs": F.softmax(self.net(z), dim=-1)}


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Train, print the loss per epoch, write the figure; returns the history (a list per key, one per epoch)."""
    ap = _digits.parser(__doc__, epochs=60, lr=1e-3, out="out/jmvae.png", z_dim=2, hidden=256)
    ap.add_argument("--alpha", type=float, default=1.0, help="weight of the two unimodal KL terms")
    args = ap.parse_args(argv)
    _digits.setup(args.seed)
    x_train, y_train, x_test, labels_test = _digits.load_digits_split(args.seed)
    y_train, y_test = _digits.one_hot(y_train), _digits.one_hot(labels_test)
    epochs = args.epochs
    if args.smoke:
        x_train, y_train, epochs = x_train[:256], y_train[:256], 3

    x_dim, y_dim, h, zd = _digits.X_DIM, _digits.N_CLASSES, args.hidden, args.z_dim
    q = Encoder(["x", "y"], x_dim + y_dim, h, zd, name="q")
    q_x = Encoder(["x"], x_dim, h, zd, name="q_{x}")
    q_y = Encoder(["y"], y_dim, h, zd, name="q_{y}")
    p_x, p_y = ImageDecoder(h, zd), LabelDecoder(h, zd)
    p = p_x * p_y
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[zd], name="p_{prior}")
    print(p * prior)

    alpha = args.alpha
    loss_cls = (KullbackLeibler(q, prior) - E(q, LogProb(p))
                + alpha * (KullbackLeibler(q, q_x) + KullbackLeibler(q, q_y))).mean()
    model = Model(loss_cls, distributions=[q, q_x, q_y, p_x, p_y], optimizer=optim.Adam,
                  optimizer_params={"lr": args.lr})
    print(model)

    def accuracy_x_to_y() -> float:
        """Classify test images through the latent space: z = mean of q_x(z|x), y = the mode of p(y|z)."""
        with torch.no_grad():
            z = q_x.sample({"x": x_test}, sample_mean=True, return_all=False)["z"]
            pred = p_y.get_params({"z": z})["probs"].argmax(-1)
        return float((pred == labels_test).float().mean())

    test = {"x": x_test, "y": y_test}
    history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "test_loss": [], "test_accuracy_x_to_y": []}
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        total = 0.0
        for idx in _digits.minibatches(len(x_train), args.batch_size):
            total += float(model.train({"x": x_train[idx], "y": y_train[idx]})) * len(idx)
        test_loss, acc = float(model.test(test)), accuracy_x_to_y()
        for key, value in (("epoch", epoch), ("train_loss", total / len(x_train)), ("test_loss", test_loss),
                           ("test_accuracy_x_to_y", acc)):
            history[key].append(value)
        if epoch == 1 or epoch % 10 == 0 or epoch == epochs:
            print(f"epoch {epoch:3d}  train loss {total / len(x_train):7.3f}  test loss {test_loss:7.3f}  "
                  f"x -> y accuracy {acc:.4f}  ({time.perf_counter() - start:5.1f} s)")

    cols = 12
    with torch.no_grad():
        y_rows = torch.eye(y_dim).repeat_interleave(cols, dim=0)          # each label `cols` times
        z = q_y.sample({"y": y_rows}, return_all=False)["z"]              # z ~ q_y(z|y)
        generated = p_x.sample_mean({"z": z})
        z_test = q_x.sample({"x": x_test}, sample_mean=True, return_all=False)["z"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.6), gridspec_kw={"width_ratios": [1.15, 1]})
    _digits.show(axes[0], generated, cols, r"$y \to x$: mean of $p(x|z)$, $z \sim q_y(z|y)$",
                 row_labels=[f"y={c}" for c in range(y_dim)])
    ax = axes[1]
    pts = ax.scatter(z_test[:, 0].numpy(), z_test[:, 1].numpy(), c=labels_test.numpy(), cmap="tab10", s=10,
                     vmin=-0.5, vmax=9.5)
    fig.colorbar(pts, ax=ax, ticks=range(10), label="label")
    ax.set_title(f"$x$ only: mean of $q_x(z|x)$ on the test digits (dims 0, 1)\n"
                 f"$x \\to y$ accuracy via $p(y|z)$: {100 * history['test_accuracy_x_to_y'][-1]:.1f}%", fontsize=10)
    ax.set_xlabel("$z_0$")
    ax.set_ylabel("$z_1$")
    fig.suptitle(f"JMVAE-KL (α={alpha:g}) on digits + labels, {epochs} epochs: test loss "
                 f"{history['test_loss'][-1]:.2f} nats", fontsize=11)
    fig.tight_layout()
    _digits.save(fig, args.out)
    return history


if __name__ == "__main__":
    main()
