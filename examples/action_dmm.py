r"""An action-conditional deep Markov model on CartPole trajectories: the transition sees the action taken.

The seed tutorial's model (Pixyz's "deep Markov model on CartPole"): the same DMM as ``dmm.py`` with the action
:math:`a_{t-1}` that moved the cart from :math:`x_{t-1}` to :math:`x_t` as an input of the transition (and of the
inference model). States and actions are generated with gymnasium by a noisy balancing policy.

    p(z_t|z_{t-1}, a_{t-1})          transition, Normal, a network (z_0 = 0; a_0 is "no action", zeros)
    p(x_t|z_t)                       emission, Normal, a network
    f(h|x, a_prev)                   a backward GRU over (x_t, a_{t-1}): h_t summarizes the rest of the sequence
    q(z_t|h_t, z_{t-1}, a_{t-1})     inference, Normal

The negative ELBO is one step's loss summed over time by ``IterativeLoss``; the actions are one more series::

    step = KL[q(z|h,z_prev,a_prev) || p(z|z_prev,a_prev)] - E_{q(z|h,z_prev,a_prev)}[log p(x|z)]
    loss = E_{f(h|x,a_prev)}[ sum_t step ]     series_var=["x", "h", "a_prev"], update_value={"z": "z_prev"}

The metric is the test negative ELBO per time step (nats, states standardized). The PNG shows test trajectories:
the model sees the first ``--observe`` steps, infers ``z``, then predicts the rest from the actions alone by running
the transition forward (samples and their mean) against the true states. Compare with ``dmm.py``, whose transition
does not know the actions.

Usage::

    python examples/action_dmm.py              # about a minute on one CPU core
    python examples/action_dmm.py --smoke      # a few seconds: checks that everything runs
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (no display for matplotlib, pyro_dgm from a checkout, command line, figures)
from pyro_dgm.distributions import Deterministic, Normal  # noqa: E402
from pyro_dgm.losses import E, IterativeLoss, KullbackLeibler, LogProb  # noqa: E402
from pyro_dgm.models import Model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the data, the emission, the figure and the command line are dmm.py's: only the transition and inference change
from dmm import X_DIM, Emission, cartpole_rollouts, parse_args, save_figure  # noqa: E402

METRIC = ("test_nelbo", "min")
A_DIM = 2  # the action, one-hot: push left, push right



# ----------------------------------------------------------------------------------------------------------- model
class BackwardRNN(Deterministic):
    r"""The deterministic :math:`f(h|x, a_{prev})`: a GRU run backwards over time on :math:`(x_t, a_{t-1})`, so
    :math:`h_t` summarizes the states and actions from :math:`t` on."""

    def __init__(self, hidden: int) -> None:
        super().__init__(var=["h"], cond_var=["x", "a_prev"], name="f")
        self.rnn = nn.GRU(X_DIM + A_DIM, hidden)

    def forward(self, x: Tensor, a_prev: Tensor) -> dict[str, Tensor]:  # [T, B, X] and [T, B, A], time first
        h, _ = self.rnn(torch.cat([x, a_prev], dim=-1).flip(0))
        return {"h": h.flip(0)}


class Combiner(Normal):
    r"""The inference model :math:`q(z_t|h_t, z_{t-1}, a_{t-1})`: the combiner of the RNN state, the last ``z`` and
    the last action."""

    def __init__(self, z_dim: int, hidden: int) -> None:
        super().__init__(var=["z"], cond_var=["h", "z_prev", "a_prev"], name="q")
        self.fc_z = nn.Linear(z_dim + A_DIM, hidden)
        self.fc_loc = nn.Linear(hidden, z_dim)
        self.fc_scale = nn.Linear(hidden, z_dim)

    def forward(self, h: Tensor, z_prev: Tensor, a_prev: Tensor) -> dict[str, Tensor]:
        g = 0.5 * (torch.tanh(self.fc_z(torch.cat([z_prev, a_prev], dim=-1))) + h)
        return {"loc": self.fc_loc(g), "scale": F.softplus(self.fc_scale(g)) + 1e-3}


class Transition(Normal):
    r"""The transition :math:`p(z_t|z_{t-1}, a_{t-1})`: the gated transition of ``dmm.py`` with the action as an
    input (a gate between a linear and a nonlinear proposal for the mean)."""

    def __init__(self, z_dim: int, hidden: int) -> None:
        super().__init__(var=["z"], cond_var=["z_prev", "a_prev"], name="p")
        za = z_dim + A_DIM
        self.gate = nn.Sequential(nn.Linear(za, hidden), nn.ReLU(), nn.Linear(hidden, z_dim), nn.Sigmoid())
        self.proposal = nn.Sequential(nn.Linear(za, hidden), nn.ReLU(), nn.Linear(hidden, z_dim))
        self.linear = nn.Linear(z_dim, z_dim)
        self.action = nn.Linear(A_DIM, z_dim, bias=False)
        nn.init.eye_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.fc_scale = nn.Linear(z_dim, z_dim)

    def forward(self, z_prev: Tensor, a_prev: Tensor) -> dict[str, Tensor]:
        za = torch.cat([z_prev, a_prev], dim=-1)
        gate, proposal = self.gate(za), self.proposal(za)
        loc = (1 - gate) * (self.linear(z_prev) + self.action(a_prev)) + gate * proposal
        return {"loc": loc, "scale": F.softplus(self.fc_scale(F.relu(proposal))) + 1e-3}


# ----------------------------------------------------------------------------------------------------------- use
@torch.no_grad()
def predict(rnn: BackwardRNN, q: Combiner, transition: Transition, emission: Emission, x: Tensor, a_prev: Tensor,
            observe: int, z_dim: int, n_samples: int) -> tuple[Tensor, Tensor]:
    """Filter the first ``observe`` steps of ``x`` ([T, B, X]) with ``q``, then run the transition forward on the
    actions ``a_prev`` ([T, B, A]).

    Returns the means of :math:`p(x_t|z_t)` for the inferred ``z`` of the observed steps, ``[observe, B, X]``, and
    the predicted means for ``t >= observe``, ``[n_samples, T - observe, B, X]``. The RNN sees only the observed
    prefix, so no future state leaks into the prediction.
    """
    steps, batch = x.shape[0], x.shape[1]
    h = rnn.sample({"x": x[:observe], "a_prev": a_prev[:observe]})["h"]
    z = torch.zeros(batch, z_dim)
    filtered = []
    for t in range(observe):
        z = q.sample({"h": h[t], "z_prev": z, "a_prev": a_prev[t]}, return_all=False)["z"]
        filtered.append(emission.sample_mean({"z": z}))
    z = z.expand(n_samples, batch, z_dim).reshape(n_samples * batch, z_dim)
    out = []
    for t in range(observe, steps):
        a = a_prev[t].expand(n_samples, batch, A_DIM).reshape(n_samples * batch, A_DIM)
        z = transition.sample({"z_prev": z, "a_prev": a}, return_all=False)["z"]
        out.append(emission.sample_mean({"z": z}).reshape(n_samples, batch, X_DIM))
    return torch.stack(filtered), torch.stack(out, dim=1)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Train, print the metric per epoch, write the figure; returns the per-epoch history."""
    args = parse_args(argv, __doc__.splitlines()[0], "out/action_dmm.png")
    _common.setup(args.seed, args.threads)
    if args.smoke:
        args.epochs, args.n_train, args.n_test, args.steps, args.observe = 3, 128, 32, 15, 5

    states, actions = cartpole_rollouts(args.n_train + args.n_test, args.steps, args.seed)
    mean, std = states[:args.n_train].reshape(-1, X_DIM).mean(0), states[:args.n_train].reshape(-1, X_DIM).std(0)
    data = torch.from_numpy((states - mean) / std).transpose(0, 1).contiguous()  # [T, N, X]: time first
    # a_prev[t] is the action a_{t-1} that led to x_t (one-hot); at t = 0 no action has been taken (zeros)
    onehot = F.one_hot(torch.from_numpy(actions).transpose(0, 1), A_DIM).float()  # [T, N, A]
    acts = torch.cat([torch.zeros_like(onehot[:1]), onehot[:-1]])
    x_train, x_test = data[:, :args.n_train], data[:, args.n_train:]
    a_train, a_test = acts[:, :args.n_train], acts[:, args.n_train:]

    # 1. the distributions
    rnn = BackwardRNN(args.hidden)
    q = Combiner(args.z_dim, args.hidden)
    transition = Transition(args.z_dim, args.hidden)
    emission = Emission(args.z_dim, args.hidden)

    # 2. the loss: one step's negative ELBO, summed over time by IterativeLoss (seed paper, Figure 9)
    step_loss = KullbackLeibler(q, transition) - E(q, LogProb(emission))
    loss = E(rnn, IterativeLoss(step_loss, max_iter=args.steps, series_var=["x", "h", "a_prev"],
                                update_value={"z": "z_prev"})).mean()

    # 3. the model: the loss, the distributions it trains, an optimizer
    model = Model(loss, distributions=[rnn, q, transition, emission], optimizer=torch.optim.Adam,
                  optimizer_params={"lr": args.lr}, clip_grad_norm=10.0)
    print(model)
    print(rnn.prob_text, q.prob_text, transition.prob_text, emission.prob_text, sep="   ")

    def batch(x: Tensor, a_prev: Tensor) -> dict[str, Tensor]:
        return {"x": x, "a_prev": a_prev, "z_prev": torch.zeros(x.shape[1], args.z_dim)}

    decay = torch.optim.lr_scheduler.ExponentialLR(model.optimizer, gamma=0.1 ** (1 / args.epochs))
    history: dict[str, list[float]] = {"train_nelbo": [], "test_nelbo": [], "pred_rmse": []}
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        total = 0.0
        for idx in torch.randperm(args.n_train).split(args.batch_size):
            total += float(model.train(batch(x_train[:, idx], a_train[:, idx]))) * len(idx)
        decay.step()
        test = float(model.test(batch(x_test, a_test))) / args.steps
        _, pred = predict(rnn, q, transition, emission, x_test, a_test, args.observe, args.z_dim, n_samples=8)
        rmse = float((pred.mean(0) - x_test[args.observe:]).pow(2).mean().sqrt())
        history["train_nelbo"].append(total / args.n_train / args.steps)
        history["test_nelbo"].append(test)
        history["pred_rmse"].append(rmse)
        print(f"epoch {epoch:3d}  train -ELBO {history['train_nelbo'][-1]:7.3f}  test -ELBO {test:7.3f} nats/step  "
              f"prediction RMSE {rmse:.3f} (std units)  ({time.perf_counter() - start:5.1f} s)")

    shown = x_test[:, :3]
    filtered, pred = predict(rnn, q, transition, emission, shown, a_test[:, :3], args.observe, args.z_dim, n_samples=16)
    save_figure(args.out, shown, filtered, pred, args.observe, mean, std,
                f"action-conditional DMM on CartPole: {args.epochs} epochs, test -ELBO "
                f"{history['test_nelbo'][-1]:.3f} nats/step; {args.observe} steps observed, then predicted from the "
                "actions")
    print(f"final test -ELBO {history['test_nelbo'][-1]:.3f} nats per step; wrote {args.out}")
    return history


if __name__ == "__main__":
    main()
