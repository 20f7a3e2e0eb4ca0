r"""pyro_dgm and plain Pyro in one model: a VAE written with pyro_dgm, a Bayesian probe written in Pyro, one SVI.

Four pieces meet here:

1. **pyro_dgm distributions**: the VAE's q(z|x) (Normal), p(x|z) (Bernoulli) and p_prior(z), and the joint
   ``p * prior``, whose ``.model``/``.guide`` are ordinary Pyro callables;
2. **a plain Pyro model**: a Bayesian softmax regression of the label on the VAE's code (a "probe" of how linearly
   the classes separate in z), ``y ~ Categorical(softmax(W z + b))`` with Normal priors on ``W`` and ``b``, z the mean
   of q(z|x) (detached: the probe reads the code, it does not shape it);
3. **Pyro's AutoNormal**: the probe's guide, a mean-field Normal posterior over ``W`` and ``b``;
4. **our loss terms**, added into one objective:

       PyroELBO(p_joint.model, q.guide)    Pyro's Trace_ELBO of the VAE (negative ELBO, summed over the batch)
     + PyroELBO(probe, AutoNormal(probe))  Pyro's Trace_ELBO of the probe
     + λ · MMD(q, prior)                   InfoVAE's extra pull of the aggregate q(z) towards p_prior(z)

   and that sum, itself a ``pyro.infer.ELBO``, is the loss of **Pyro's SVI** with ``pyro.optim.Adam``.

``SVI.step`` collects the parameters of all three terms (the VAE's networks through ``pyro.module``, the probe's
through AutoNormal's ``pyro.param``), so one optimizer trains them together. Afterwards Pyro's ``Predictive`` draws
the probe's weights from the AutoNormal posterior to classify the test digits by Bayesian model averaging.

Usage::

    python examples/mixed_pyro.py          # about 40 s on one CPU core; writes out/mixed_pyro.png
    python examples/mixed_pyro.py --smoke

It prints the VAE, the combined loss, per epoch the VAE's test negative ELBO and the probe's test accuracy, and writes
a PNG of both curves and of the test digits the probe is least sure about, with its posterior predictive label.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _digits  # noqa: E402  (data, command line and pictures shared by the examples; finds pyro_dgm in a checkout)

import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import pyro.poutine as poutine  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from pyro.infer import SVI, Predictive  # noqa: E402
from pyro.infer.autoguide import AutoNormal  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from pyro_dgm.distributions import Bernoulli, Normal  # noqa: E402
from pyro_dgm.losses import MMD, PyroELBO  # noqa: E402

METRIC = ("test_nelbo", "min")  # the VAE's test negative ELBO, nats per image


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
    """Train with SVI, print the metrics per epoch, write the figure; returns the history."""
    ap = _digits.parser(__doc__, epochs=40, lr=3e-3, out="out/mixed_pyro.png", z_dim=8, hidden=256)
    ap.add_argument("--lam", type=float, default=1000.0, help="λ, the weight of the MMD term")
    args = ap.parse_args(argv)
    _digits.setup(args.seed)
    x_train, y_train, x_test, y_test = _digits.load_digits_split(args.seed)
    epochs = args.epochs
    if args.smoke:
        x_train, y_train, epochs = x_train[:256], y_train[:256], 3
    n_train, z_dim, n_classes = len(x_train), args.z_dim, _digits.N_CLASSES

    # 1. pyro_dgm: the VAE
    q, p = Inference(args.hidden, z_dim), Generator(args.hidden, z_dim)
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[z_dim],
                   name="p_{prior}")
    p_joint = p * prior
    print(p_joint)

    # 2. plain Pyro: a Bayesian softmax regression of y on the code z = mean of q(z|x)
    def probe(x: Tensor, y: Tensor | None = None) -> Tensor:
        code = q.get_params({"x": x})["loc"].detach()
        w = pyro.sample("w", dist.Normal(0., 1.).expand([z_dim, n_classes]).to_event(2))
        b = pyro.sample("b", dist.Normal(0., 1.).expand([n_classes]).to_event(1))
        with pyro.plate("data", len(x)), poutine.scale(scale=n_train / len(x)):  # a minibatch stands for all
            return pyro.sample("y", dist.Categorical(logits=code @ w + b), obs=y)

    # 3. Pyro's AutoNormal guide for it
    probe_guide = AutoNormal(probe)

    # 4. our loss terms, added, as the loss of Pyro's SVI
    vae_term = PyroELBO(p_joint.model, q.guide, input_var=["x"])
    probe_term = PyroELBO(probe, probe_guide, input_var=["x", "y"])
    loss = vae_term + probe_term + args.lam * MMD(q, prior, kernel="gaussian", sigma_sqr=2.0 * z_dim)
    print(f"loss: {loss}")
    svi = SVI(p_joint.model, q.guide, pyro.optim.Adam({"lr": args.lr}), loss=loss)

    def probe_probs(x: Tensor, num_samples: int = 200) -> Tensor:
        """Posterior predictive class probabilities: the softmax averaged over W, b drawn from the AutoNormal."""
        draws = Predictive(probe, guide=probe_guide, num_samples=num_samples, return_sites=["w", "b"])(x)
        w = draws["w"].reshape(num_samples, z_dim, n_classes)  # Predictive adds a dim for its own plate
        b = draws["b"].reshape(num_samples, 1, n_classes)
        code = q.get_params({"x": x})["loc"]
        return F.softmax(code @ w + b, dim=-1).mean(0)

    history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "test_nelbo": [], "test_probe_accuracy": []}
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        total = 0.0
        for idx in _digits.minibatches(n_train, args.batch_size):
            total += svi.step(x=x_train[idx], y=y_train[idx])
        with torch.no_grad():
            test_nelbo = float(vae_term.eval({"x": x_test})) / len(x_test)
            acc = float((probe_probs(x_test).argmax(-1) == y_test).float().mean())
        for key, value in (("epoch", epoch), ("train_loss", total / n_train), ("test_nelbo", test_nelbo),
                           ("test_probe_accuracy", acc)):
            history[key].append(value)
        if epoch == 1 or epoch % 10 == 0 or epoch == epochs:
            print(f"epoch {epoch:3d}  SVI loss {total / n_train:8.3f}  VAE test -ELBO {test_nelbo:7.3f}  "
                  f"probe test accuracy {acc:.4f}  ({time.perf_counter() - start:5.1f} s)")
    params = sorted(pyro.get_param_store().keys())
    print(f"SVI trained {len(params)} parameters of the param store, e.g. {params[0]!r} and {params[-1]!r}")

    # the picture: learning curves, and the test digits the Bayesian probe is least sure about
    with torch.no_grad():
        probs = probe_probs(x_test, num_samples=500)
    conf, pred = probs.max(-1)
    unsure = torch.argsort(conf)[:24]
    fig = plt.figure(figsize=(12, 5.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(history["epoch"], history["test_nelbo"], color="C0")
    ax.set_xlabel("epoch")
    ax.set_ylabel("VAE: test -ELBO (nats per image)", color="C0")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(history["epoch"], [100 * a for a in history["test_probe_accuracy"]], color="C1")
    ax2.set_ylabel("probe: test accuracy (%)", color="C1")
    for i, j in enumerate(unsure.tolist()):
        a = fig.add_axes((0.50 + 0.062 * (i % 8), 0.6 - 0.27 * (i // 8), 0.05, 0.18))
        a.imshow(x_test[j].reshape(8, 8).numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ok = int(pred[j]) == int(y_test[j])
        a.set_title(f"{int(pred[j])}: {100 * float(conf[j]):.0f}%\n(true {int(y_test[j])})", fontsize=7,
                    color="black" if ok else "red")
        a.axis("off")
    fig.text(0.73, 0.9, "the 24 test digits the probe is least sure about: posterior predictive label and "
             "probability", ha="center", fontsize=9)
    accuracy = 100 * history["test_probe_accuracy"][-1]
    fig.suptitle(f"SVI on PyroELBO(VAE) + PyroELBO(probe, AutoNormal) + {args.lam:g} MMD, {epochs} epochs: VAE "
                 f"test -ELBO {history['test_nelbo'][-1]:.2f} nats, probe {accuracy:.1f}% correct", fontsize=10)
    fig.subplots_adjust(left=0.06, right=0.40, bottom=0.1, top=0.88)
    _digits.save(fig, args.out)
    return history


if __name__ == "__main__":
    main()
