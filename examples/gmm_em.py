r"""A Gaussian mixture fitted by expectation-maximization with ``MixtureModel`` and its posterior over the component.

The model, for 2-D points :math:`x` and a component :math:`z \in \{1..K\}`:

    p(z) = Categorical(pi)                        the prior over the component
    p_k(x|z=k) = Normal(mu_k, diag(sigma_k^2))    one distribution per component
    p(x) = sum_k p_k(x|z=k) p(z=k)                MixtureModel(components, prior): z marginalized exactly
    p(z|x) = p(x,z) / p(x)                        p.posterior(): the responsibilities

EM alternates two closed-form steps (Dempster et al., 1977; Bishop, PRML section 9.2):

* E-step: :math:`r_{nk} = p(z=k|x_n)`, read from ``p.posterior().get_params({"x": x})["probs"]``;
* M-step: :math:`N_k = \sum_n r_{nk}`, :math:`\pi_k = N_k/N`, :math:`\mu_k = \sum_n r_{nk} x_n / N_k`,
  :math:`\sigma_k^2 = \sum_n r_{nk} (x_n - \mu_k)^2 / N_k`, written into the distributions' parameters (they are
  constants, i.e. buffers: no optimizer is involved).

Each iteration cannot lower the training log-likelihood :math:`\frac{1}{N}\sum_n \log p(x_n)` (``p.log_prob()``
evaluated on the data). The data are drawn from a known diagonal mixture, so the script also prints the
log-likelihood of the true mixture and of scikit-learn's ``GaussianMixture(covariance_type="diag")`` for reference.

The metric is the test log-likelihood per point (nats, higher is better). The PNG shows the test points colored by
their most probable component, the fitted components (2-standard-deviation ellipses) against the true ones, and the
log-likelihood per iteration.

Usage::

    python examples/gmm_em.py              # a few seconds
    python examples/gmm_em.py --smoke      # the same, fewer points and iterations
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (no display for matplotlib, pyro_dgm from a checkout, command line, figures)
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402
from torch import Tensor  # noqa: E402

from pyro_dgm.distributions import Categorical, MixtureModel, Normal  # noqa: E402

METRIC = ("test_loglik", "max")

# the true mixture: weights, means and standard deviations (diagonal) of 4 components
TRUE_PI = torch.tensor([0.35, 0.25, 0.25, 0.15])
TRUE_MU = torch.tensor([[-2.5, -1.0], [0.0, 2.0], [2.5, -0.5], [0.5, -2.5]])
TRUE_SIGMA = torch.tensor([[0.9, 0.4], [0.5, 0.8], [0.4, 1.0], [0.6, 0.3]])


def true_mixture(n: int, generator: torch.Generator) -> Tensor:
    k = torch.multinomial(TRUE_PI, n, replacement=True, generator=generator)
    return TRUE_MU[k] + TRUE_SIGMA[k] * torch.randn(n, 2, generator=generator)


def build_mixture(pi: Tensor, mu: Tensor, sigma: Tensor) -> MixtureModel:
    """:math:`p(x) = \\sum_k p_k(x|z=k)p(z=k)` with constant parameters (buffers, updated in place by EM)."""
    components = [Normal(loc=mu[k], scale=sigma[k], var=["x"], name=f"p_{{{k}}}") for k in range(len(pi))]
    prior = Categorical(probs=pi, var=["z"], name="p")
    return MixtureModel(components, prior, name="p")


@torch.no_grad()
def em_step(p: MixtureModel, x: Tensor, min_std: float = 1e-3) -> None:
    """One EM iteration on ``x``: responsibilities from the posterior, then the closed-form M-step in place."""
    r = p.posterior().get_params({"x": x})["probs"]  # E-step: [N, K]
    nk = r.sum(0) + 1e-10
    mu = (r.T @ x) / nk[:, None]
    var = (r.T @ x ** 2) / nk[:, None] - mu ** 2
    for k, component in enumerate(p.distributions):  # M-step: the buffers loc, scale (shape [1, 2]) and probs
        component.loc.copy_(mu[k:k + 1])
        component.scale.copy_(var[k:k + 1].clamp_min(min_std ** 2).sqrt())
    p.prior.probs.copy_((nk / nk.sum())[None])


def params(p: MixtureModel) -> tuple[Tensor, Tensor, Tensor]:
    mu = torch.cat([c.loc for c in p.distributions])
    sigma = torch.cat([c.scale for c in p.distributions])
    return p.prior.probs[0], mu, sigma


def save_figure(path: Path, x: Tensor, p: MixtureModel, history: dict[str, list[float]], truth: float,
                title: str) -> None:
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.8), gridspec_kw={"width_ratios": [1.1, 1]})
    with torch.no_grad():
        k = p.posterior().get_params({"x": x})["probs"].argmax(1)
    ax.scatter(*x.T.numpy(), c=k.numpy(), cmap="tab10", vmin=0, vmax=9, s=5, alpha=0.6)
    pi, mu, sigma = params(p)
    for j in range(len(TRUE_PI)):
        ax.add_patch(Ellipse(tuple(TRUE_MU[j].tolist()), 4 * float(TRUE_SIGMA[j, 0]), 4 * float(TRUE_SIGMA[j, 1]),
                             fill=False, ls="--", color="black", lw=1, label="true" if j == 0 else None))
    for j in range(len(pi)):
        ax.add_patch(Ellipse(tuple(mu[j].tolist()), 4 * float(sigma[j, 0]), 4 * float(sigma[j, 1]), fill=False,
                             color=plt.cm.tab10(j), lw=2, label="fitted" if j == 0 else None))
        ax.annotate(f"$\\pi$={float(pi[j]):.2f}", tuple(mu[j].tolist()), fontsize=8, ha="center")
    ax.set_aspect("equal")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("test points by most probable component; 2-sigma ellipses", fontsize=9)
    it = range(1, len(history["test_loglik"]) + 1)
    ax2.plot(it, history["train_loglik"], marker=".", label="train")
    ax2.plot(it, history["test_loglik"], marker=".", label="test")
    ax2.axhline(truth, color="black", ls="--", lw=1, label="true mixture (test)")
    ax2.set_xlabel("EM iteration")
    ax2.set_ylabel("log-likelihood per point (nats)")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _common.save(fig, path, dpi=90)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = _common.parser(__doc__, "out/gmm_em.png",
                        helps={"seed": "seed of the data and the initialization",
                               "smoke": "5 iterations on 500 points"})
    ap.add_argument("--epochs", type=int, default=30, help="EM iterations")
    ap.add_argument("--components", type=int, default=4, help="number of components K")
    ap.add_argument("--n-train", type=int, default=2000, help="training points")
    ap.add_argument("--n-test", type=int, default=2000, help="test points")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Fit by EM, print the log-likelihood per iteration, write the figure; returns the per-iteration history."""
    args = parse_args(argv)
    _common.setup(args.seed, args.threads)
    if args.smoke:
        args.epochs, args.n_train, args.n_test = 5, 500, 500
    gen = torch.Generator().manual_seed(args.seed)
    x_train, x_test = true_mixture(args.n_train, gen), true_mixture(args.n_test, gen)

    # initialization: K training points as means, the data's spread as every scale, equal weights
    k = args.components
    start_idx = torch.randperm(args.n_train, generator=gen)[:k]
    p = build_mixture(torch.full((k,), 1.0 / k), x_train[start_idx], x_train.std(0).expand(k, 2))
    posterior = p.posterior()
    loglik = p.log_prob().mean()  # the objective EM increases, as a loss term
    print(p)
    print(posterior.prob_joint_factorized_and_text)
    print("objective:", loglik)

    truth = float(build_mixture(TRUE_PI, TRUE_MU, TRUE_SIGMA).log_prob().mean().eval({"x": x_test}))
    history: dict[str, list[float]] = {"train_loglik": [], "test_loglik": []}
    start = time.perf_counter()
    for it in range(1, args.epochs + 1):
        em_step(p, x_train)
        with torch.no_grad():
            history["train_loglik"].append(float(loglik.eval({"x": x_train})))
            history["test_loglik"].append(float(loglik.eval({"x": x_test})))
        print(f"iteration {it:3d}  train log-likelihood {history['train_loglik'][-1]:8.4f}  test "
              f"{history['test_loglik'][-1]:8.4f} nats/point  ({time.perf_counter() - start:4.1f} s)")

    pi, mu, sigma = params(p)
    print("fitted weights", [round(v, 3) for v in pi.tolist()])
    print("fitted means  ", [[round(v, 2) for v in m] for m in mu.tolist()])
    try:
        from sklearn.mixture import GaussianMixture

        gm = GaussianMixture(k, covariance_type="diag", random_state=args.seed).fit(x_train.numpy())
        sk = float(gm.score(x_test.numpy()))
        print(f"reference: scikit-learn GaussianMixture(diag) test log-likelihood {sk:.4f}; true mixture {truth:.4f}")
    except ImportError:  # pragma: no cover
        print(f"reference: true mixture test log-likelihood {truth:.4f}")
    save_figure(args.out, x_test, p, history, truth,
                f"Gaussian mixture by EM (K={k}): test log-likelihood {history['test_loglik'][-1]:.4f} nats/point "
                f"(true mixture {truth:.4f})")
    print(f"final test log-likelihood {history['test_loglik'][-1]:.4f} nats per point; wrote {args.out}")
    return history


if __name__ == "__main__":
    main()
