r"""The two ready-made models of the Model API on digits: maximum likelihood (``ML``) and amortized VI (``VI``).

* ``ML(p)`` minimizes the negative log-likelihood mean(-log p). Here p is a classifier p(y|x) (a Categorical whose
  probabilities a network computes from the image), so ML is the usual cross-entropy training.
* ``VI(p, q)`` minimizes the negative ELBO -mean(E_{q(z|x)}[log p(x,z) - log q(z|x)]), with the joint written as a
  product, p(x,z) = p(x|z)p_prior(z), and an amortized approximate posterior q(z|x) (one network for every image).

The two meet at the end: the classifier trained by ML labels the images that the VAE trained by VI generates from
its prior.

Usage::

    python examples/vi_ml.py            # about 40 s on one CPU core; writes out/vi_ml.png
    python examples/vi_ml.py --smoke

It prints both models and their losses, per epoch the classifier's test accuracy and the VAE's test negative ELBO,
and writes a PNG of the learning curves and of prior samples, each titled with the classifier's label.
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
from pyro_dgm.models import ML, VI  # noqa: E402

METRIC = ("test_nelbo", "min")  # the VAE's test negative ELBO, nats per image (the accuracy is in the history too)


class Classifier(Categorical):
    """p(y|x)"""

    def __init__(self, hidden: int) -> None:
        super().__init__(var=["y"], cond_var=["x"], name="p")
        self.net = nn.Sequential(nn.Linear(_digits.X_DIM, hidden), nn.ReLU(), nn.Dropout(0.2),
                                 nn.Linear(hidden, _digits.N_CLASSES))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"probs": F.softmax(self.net(x), dim=-1)}


class Inference(Normal):
    """q(z|x)"""

    def __init__(self, hidden: int, z_dim: int) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.net = nn.Sequential(nn.Linear(_digits.X_DIM, hidden), nn.ReLU())
        self.fc_loc = nn.Linear(hidden, z_dim)
        self.fc_scale = nn.Linear(hidden, z_dim)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.net(x)
        return {"loc": self.fc_loc(h), "scale": F.softplus(self.fc_scale(h)) + 1e-4}


class Generator(Bernoulli):
    """p(x|z)"""

    def __init__(self, hidden: int, z_dim: int) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, _digits.X_DIM))

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        return {"logits": self.net(z)}


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Train both models, print their metrics per epoch, write the figure; returns the history."""
    args = _digits.parser(__doc__, epochs=100, lr=1e-3, out="out/vi_ml.png", z_dim=8, hidden=256).parse_args(argv)
    _digits.setup(args.seed)
    x_train, y_train, x_test, labels_test = _digits.load_digits_split(args.seed)
    y_train = _digits.one_hot(y_train)
    epochs = args.epochs
    if args.smoke:
        x_train, y_train, epochs = x_train[:256], y_train[:256], 3

    # maximum likelihood: a classifier p(y|x)
    classifier = Classifier(args.hidden)
    ml = ML(classifier, optimizer=optim.Adam, optimizer_params={"lr": args.lr})
    print(ml)

    # amortized variational inference: p(x,z) = p(x|z)p_prior(z), q(z|x)
    q, p = Inference(args.hidden, args.z_dim), Generator(args.hidden, args.z_dim)
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[args.z_dim],
                   name="p_{prior}")
    vi = VI(p * prior, q, optimizer=optim.Adam, optimizer_params={"lr": args.lr})
    print(vi)

    def accuracy() -> float:
        classifier.eval()
        with torch.no_grad():
            pred = classifier.get_params({"x": x_test})["probs"].argmax(-1)
        classifier.train()
        return float((pred == labels_test).float().mean())

    history: dict[str, list[float]] = {"epoch": [], "train_nll": [], "test_accuracy": [], "train_nelbo": [],
                                       "test_nelbo": []}
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        nll = nelbo = 0.0
        for idx in _digits.minibatches(len(x_train), args.batch_size):
            nll += float(ml.train({"x": x_train[idx], "y": y_train[idx]})) * len(idx)
            nelbo += float(vi.train({"x": x_train[idx]})) * len(idx)
        acc, test_nelbo = accuracy(), float(vi.test({"x": x_test}))
        for key, value in (("epoch", epoch), ("train_nll", nll / len(x_train)), ("test_accuracy", acc),
                           ("train_nelbo", nelbo / len(x_train)), ("test_nelbo", test_nelbo)):
            history[key].append(value)
        if epoch == 1 or epoch % 10 == 0 or epoch == epochs:
            print(f"epoch {epoch:3d}  ML: train -log p(y|x) {nll / len(x_train):6.3f}  test accuracy {acc:.4f}   "
                  f"VI: train -ELBO {nelbo / len(x_train):7.3f}  test -ELBO {test_nelbo:7.3f}  "
                  f"({time.perf_counter() - start:5.1f} s)")

    # the VAE's samples, labelled by the classifier
    rows, cols = 4, 10
    with torch.no_grad():
        classifier.eval()
        samples = p.sample_mean(prior.sample(batch_n=rows * cols))
        probs = classifier.get_params({"x": samples})["probs"]
    fig = plt.figure(figsize=(12, 5.4))
    grid = fig.add_gridspec(rows, cols + 4)
    ax = fig.add_subplot(grid[:2, :4])
    ax.plot(history["epoch"], [100 * a for a in history["test_accuracy"]])
    ax.set_ylabel("ML: test accuracy (%)")
    ax.grid(alpha=0.3)
    ax = fig.add_subplot(grid[2:, :4])
    ax.plot(history["epoch"], history["train_nelbo"], label="train")
    ax.plot(history["epoch"], history["test_nelbo"], label="test")
    ax.set_ylabel("VI: -ELBO (nats per image)")
    ax.set_xlabel("epoch")
    ax.legend()
    ax.grid(alpha=0.3)
    for i in range(rows * cols):
        ax = fig.add_subplot(grid[i // cols, 4 + i % cols])
        ax.imshow(samples[i].reshape(8, 8).numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        conf, label = probs[i].max(-1)
        ax.set_title(f"{int(label)} ({100 * float(conf):.0f}%)", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"ML classifier: test accuracy {100 * history['test_accuracy'][-1]:.1f}%;  VI (VAE): test -ELBO "
                 f"{history['test_nelbo'][-1]:.2f} nats;  right: VAE samples labelled by the classifier", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    _digits.save(fig, args.out)
    return history


if __name__ == "__main__":
    main()
