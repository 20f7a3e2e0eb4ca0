r"""A deep Markov model (Krishnan et al., 2017) on CartPole trajectories, trained with ``IterativeLoss``.

The model, for a sequence of CartPole states :math:`x_{1:T}` (cart position and velocity, pole angle and angular
velocity; generated here with gymnasium by a noisy balancing policy):

    p(z_t|z_{t-1})           transition, Normal, a network (z_0 = 0)
    p(x_t|z_t)               emission, Normal, a network
    f(h|x)                   a backward GRU over x_{1:T}: h_t summarizes x_{t:T} (a Deterministic distribution)
    q(z_t|h_t, z_{t-1})      the "combiner" of the paper's structured inference network, Normal

The negative ELBO is a sum over time of one step's loss (seed paper, Figure 9, written with ``IterativeLoss``)::

    step = KL[q(z|h,z_prev) || p(z|z_prev)] - E_{q(z|h,z_prev)}[log p(x|z)]
    loss = E_{f(h|x)}[ sum_t step ]        series_var=["x", "h"], update_value={"z": "z_prev"}

At each step ``IterativeLoss`` slices ``x`` and ``h`` at ``t``, draws ``z`` from ``q``, scores it, and renames the
sample ``z`` to ``z_prev`` for the next step; no variable needs a per-step name (``z_1``, ``z_2``, ...).

The metric is the test negative ELBO per time step (nats, states standardized). The PNG shows test trajectories:
the model sees the first ``--observe`` steps, infers ``z`` with ``q``, then predicts the rest by running the
transition forward from the last inferred state (samples and their mean) against the true states. The unobserved
actions make the future uncertain; ``action_dmm.py`` conditions the transition on them.

Usage::

    python examples/dmm.py              # about a minute on one CPU core
    python examples/dmm.py --smoke      # a few seconds: checks that everything runs
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (no display for matplotlib, pyro_dgm from a checkout, command line, figures)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from pyro_dgm.distributions import Deterministic, Normal  # noqa: E402
from pyro_dgm.losses import E, IterativeLoss, KullbackLeibler, LogProb  # noqa: E402
from pyro_dgm.models import Model  # noqa: E402

METRIC = ("test_nelbo", "min")
X_DIM = 4  # CartPole's state: cart position, cart velocity, pole angle, pole angular velocity
STATE_NAMES = ["cart position", "cart velocity", "pole angle", "pole angular velocity"]


# ----------------------------------------------------------------------------------------------------------- data
def cartpole_rollouts(n: int, steps: int, seed: int, eps: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """``n`` CartPole trajectories of ``steps`` states each, and the actions taken (0: push left, 1: push right).

    The policy pushes the cart under the pole (``a = 1`` when ``angle + 0.5 * angular velocity > 0``) and takes a
    random action with probability ``eps``, so the pole wobbles but mostly stays up. Episodes are not cut when
    the pole falls (the unwrapped environment keeps integrating), so every trajectory has the same length.
    """
    import gymnasium as gym

    env = gym.make("CartPole-v1").unwrapped
    rng = np.random.default_rng(seed)
    states = np.zeros((n, steps, X_DIM), dtype=np.float32)
    actions = np.zeros((n, steps), dtype=np.int64)
    with warnings.catch_warnings():  # stepping on after the pole fell: gymnasium warns, the physics is fine
        warnings.simplefilter("ignore")
        for i in range(n):
            obs, _ = env.reset(seed=seed * 100_003 + i)
            for t in range(steps):
                a = int(obs[2] + 0.5 * obs[3] > 0) if rng.random() > eps else int(rng.integers(2))
                states[i, t], actions[i, t] = obs, a
                obs, *_ = env.step(a)
    env.close()
    return states, actions


# ----------------------------------------------------------------------------------------------------------- model
class BackwardRNN(Deterministic):
    r"""The deterministic :math:`f(h|x)`: a GRU run backwards over time, so :math:`h_t` summarizes :math:`x_{t:T}`."""

    def __init__(self, hidden: int) -> None:
        super().__init__(var=["h"], cond_var=["x"], name="f")
        self.rnn = nn.GRU(X_DIM, hidden)

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # x: [T, B, X], time first
        h, _ = self.rnn(x.flip(0))
        return {"h": h.flip(0)}


class Combiner(Normal):
    r"""The inference model :math:`q(z_t|h_t, z_{t-1})`: the paper's combiner of the RNN state and the last ``z``."""

    def __init__(self, z_dim: int, hidden: int) -> None:
        super().__init__(var=["z"], cond_var=["h", "z_prev"], name="q")
        self.fc_z = nn.Linear(z_dim, hidden)
        self.fc_loc = nn.Linear(hidden, z_dim)
        self.fc_scale = nn.Linear(hidden, z_dim)

    def forward(self, h: Tensor, z_prev: Tensor) -> dict[str, Tensor]:
        g = 0.5 * (torch.tanh(self.fc_z(z_prev)) + h)
        return {"loc": self.fc_loc(g), "scale": F.softplus(self.fc_scale(g)) + 1e-3}


class Transition(Normal):
    r"""The transition :math:`p(z_t|z_{t-1})`: the paper's gated transition (a gate between a linear and a
    nonlinear proposal for the mean)."""

    def __init__(self, z_dim: int, hidden: int) -> None:
        super().__init__(var=["z"], cond_var=["z_prev"], name="p")
        self.gate = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, z_dim), nn.Sigmoid())
        self.proposal = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, z_dim))
        self.linear = nn.Linear(z_dim, z_dim)
        nn.init.eye_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.fc_scale = nn.Linear(z_dim, z_dim)

    def forward(self, z_prev: Tensor) -> dict[str, Tensor]:
        gate, proposal = self.gate(z_prev), self.proposal(z_prev)
        loc = (1 - gate) * self.linear(z_prev) + gate * proposal
        return {"loc": loc, "scale": F.softplus(self.fc_scale(F.relu(proposal))) + 1e-3}


class Emission(Normal):
    r"""The emission :math:`p(x_t|z_t)`: a Normal over the (standardized) state."""

    def __init__(self, z_dim: int, hidden: int) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.fc_loc = nn.Linear(hidden, X_DIM)
        self.fc_scale = nn.Linear(hidden, X_DIM)

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        g = self.net(z)
        return {"loc": self.fc_loc(g), "scale": F.softplus(self.fc_scale(g)) + 1e-3}


# ----------------------------------------------------------------------------------------------------------- use
@torch.no_grad()
def predict(rnn: BackwardRNN, q: Combiner, transition: Transition, emission: Emission, x: Tensor, observe: int,
            z_dim: int, n_samples: int) -> tuple[Tensor, Tensor]:
    """Filter the first ``observe`` steps of ``x`` ([T, B, X]) with ``q``, then run the transition forward.

    Returns the means of :math:`p(x_t|z_t)` for the inferred ``z`` of the observed steps, ``[observe, B, X]``, and
    the predicted means for ``t >= observe``, ``[n_samples, T - observe, B, X]``. The RNN sees only the observed
    prefix, so no future state leaks into the prediction.
    """
    steps, batch = x.shape[0], x.shape[1]
    h = rnn.sample({"x": x[:observe]})["h"]
    z = torch.zeros(batch, z_dim)
    filtered = []
    for t in range(observe):
        z = q.sample({"h": h[t], "z_prev": z}, return_all=False)["z"]
        filtered.append(emission.sample_mean({"z": z}))
    z = z.expand(n_samples, batch, z_dim).reshape(n_samples * batch, z_dim)
    out = []
    for _ in range(observe, steps):
        z = transition.sample({"z_prev": z}, return_all=False)["z"]
        out.append(emission.sample_mean({"z": z}).reshape(n_samples, batch, X_DIM))
    return torch.stack(filtered), torch.stack(out, dim=1)


def save_figure(path: Path, x: Tensor, filtered: Tensor, pred: Tensor, observe: int, mean: np.ndarray,
                std: np.ndarray, title: str) -> None:
    """Rows: test trajectories; columns: the four state variables; truth (black), the states inferred from the
    observed steps (orange) and predictions (blue)."""
    rows = x.shape[1]
    steps = x.shape[0]
    xs = x.numpy() * std + mean
    fs = filtered.numpy() * std + mean  # [observe, B, X]
    ps = pred.numpy() * std + mean  # [S, T - observe, B, X]
    t_all, t_obs, t_pred = np.arange(steps), np.arange(observe), np.arange(observe, steps)
    fig, axes = plt.subplots(rows, X_DIM, figsize=(3.2 * X_DIM, 2.2 * rows + 0.6), squeeze=False)
    for r in range(rows):
        for c in range(X_DIM):
            ax = axes[r, c]
            for s in range(ps.shape[0]):
                ax.plot(t_pred, ps[s, :, r, c], color="tab:blue", alpha=0.15, lw=0.8)
            ax.plot(t_pred, ps[:, :, r, c].mean(0), color="tab:blue", lw=1.5, label="predicted (mean of samples)")
            ax.plot(t_obs, fs[:, r, c], color="tab:orange", lw=1.5, label="inferred (observed steps)")
            ax.plot(t_all, xs[:, r, c], color="black", lw=1.2, label="true")
            ax.axvline(observe - 0.5, color="gray", ls=":", lw=1)
            if r == 0:
                ax.set_title(STATE_NAMES[c], fontsize=9)
            if r == rows - 1:
                ax.set_xlabel("t")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _common.save(fig, path, dpi=90)


def parse_args(argv: list[str] | None = None, description: str | None = None,
               out: str = "out/dmm.png") -> argparse.Namespace:
    """The command line of the DMM examples (``action_dmm.py`` shares it)."""
    ap = _common.parser(description or __doc__, out)
    ap.add_argument("--epochs", type=int, default=60, help="passes over the training set")
    ap.add_argument("--n-train", type=int, default=512, help="training trajectories")
    ap.add_argument("--n-test", type=int, default=128, help="test trajectories")
    ap.add_argument("--steps", type=int, default=30, help="time steps per trajectory")
    ap.add_argument("--observe", type=int, default=10, help="steps seen before predicting, in the figure")
    ap.add_argument("--z-dim", type=int, default=4, help="latent dimension (default 4, as the state)")
    ap.add_argument("--hidden", type=int, default=64, help="hidden units of the networks")
    ap.add_argument("--lr", type=float, default=1e-2,
                    help="Adam learning rate at the start (default 1e-2; it decays to a tenth by the end)")
    ap.add_argument("--batch-size", type=int, default=64, help="trajectories per minibatch")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Train, print the metric per epoch, write the figure; returns the per-epoch history."""
    args = parse_args(argv)
    _common.setup(args.seed, args.threads)
    if args.smoke:
        args.epochs, args.n_train, args.n_test, args.steps, args.observe = 3, 128, 32, 15, 5

    states, _ = cartpole_rollouts(args.n_train + args.n_test, args.steps, args.seed)
    mean, std = states[:args.n_train].reshape(-1, X_DIM).mean(0), states[:args.n_train].reshape(-1, X_DIM).std(0)
    data = torch.from_numpy((states - mean) / std).transpose(0, 1).contiguous()  # [T, N, X]: time first
    x_train, x_test = data[:, :args.n_train], data[:, args.n_train:]

    # 1. the distributions
    rnn = BackwardRNN(args.hidden)
    q = Combiner(args.z_dim, args.hidden)
    transition = Transition(args.z_dim, args.hidden)
    emission = Emission(args.z_dim, args.hidden)

    # 2. the loss: one step's negative ELBO, summed over time by IterativeLoss (seed paper, Figure 9)
    step_loss = KullbackLeibler(q, transition) - E(q, LogProb(emission))
    loss = E(rnn, IterativeLoss(step_loss, max_iter=args.steps, series_var=["x", "h"],
                                update_value={"z": "z_prev"})).mean()

    # 3. the model: the loss, the distributions it trains, an optimizer
    model = Model(loss, distributions=[rnn, q, transition, emission], optimizer=torch.optim.Adam,
                  optimizer_params={"lr": args.lr}, clip_grad_norm=10.0)
    print(model)
    print(rnn.prob_text, q.prob_text, transition.prob_text, emission.prob_text, sep="   ")

    def batch(x: Tensor) -> dict[str, Tensor]:
        return {"x": x, "z_prev": torch.zeros(x.shape[1], args.z_dim)}

    decay = torch.optim.lr_scheduler.ExponentialLR(model.optimizer, gamma=0.1 ** (1 / args.epochs))
    history: dict[str, list[float]] = {"train_nelbo": [], "test_nelbo": [], "pred_rmse": []}
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        total = 0.0
        for idx in torch.randperm(args.n_train).split(args.batch_size):
            total += float(model.train(batch(x_train[:, idx]))) * len(idx)
        decay.step()
        test = float(model.test(batch(x_test))) / args.steps
        _, pred = predict(rnn, q, transition, emission, x_test, args.observe, args.z_dim, n_samples=8)
        rmse = float((pred.mean(0) - x_test[args.observe:]).pow(2).mean().sqrt())
        history["train_nelbo"].append(total / args.n_train / args.steps)
        history["test_nelbo"].append(test)
        history["pred_rmse"].append(rmse)
        print(f"epoch {epoch:3d}  train -ELBO {history['train_nelbo'][-1]:7.3f}  test -ELBO {test:7.3f} nats/step  "
              f"prediction RMSE {rmse:.3f} (std units)  ({time.perf_counter() - start:5.1f} s)")

    shown = x_test[:, :3]
    filtered, pred = predict(rnn, q, transition, emission, shown, args.observe, args.z_dim, n_samples=16)
    save_figure(args.out, shown, filtered, pred, args.observe, mean, std,
                f"DMM on CartPole: {args.epochs} epochs, test -ELBO {history['test_nelbo'][-1]:.3f} nats/step; "
                f"{args.observe} steps observed, then predicted (actions unknown)")
    print(f"final test -ELBO {history['test_nelbo'][-1]:.3f} nats per step; wrote {args.out}")
    return history


if __name__ == "__main__":
    main()
