"""The deep Markov model of the seed paper's Table 2: Pyro's ``examples/dmm.py`` architecture, one step at a time.

Generative model: ``z_t ~ Normal(GatedTransition(z_{t-1}))``, ``x_t ~ Bernoulli(Emitter(z_t))`` over 88 binary notes.
Guide: an RNN (ReLU, 600 units) runs over the *reversed* sequence, and ``z_t ~ Normal(Combiner(z_{t-1}, h_t))``.
Sizes as in dmm.py: emission 100, transition 200, rnn 600, batch 20; Adam (lr 1e-3). Every contender builds the same
modules with the same seed and minimizes the negative ELBO summed over time and batch, with reparameterized ``z_t``:
analytic (``KL[q(z_t|z_{t-1},h_t) || p(z_t|z_{t-1})]`` per step, at the guide's ``z_{t-1}``) or MC.

Differences from dmm.py, the same for every contender: all sequences have the same length ``T`` (no masks, no packed
sequences: the reversed batch is ``flip``-ped, and the RNN's output flipped back); one learned initial state ``z_0``
is used by both the model and the guide (dmm.py has ``z_0`` and ``z_q_0``, so a Pixyz/pyro_dgm ``IterativeLoss``
with one ``update_value`` can express the same model); no KL annealing (factor 1, no ``poutine.scale``); no IAFs.

Data: random binary 88-dim sequences with temporal structure: each note keeps its value with probability 0.9 and is
otherwise redrawn as on with probability 0.1 (a sparse "piano roll"); 8 batches of 20, cycled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import BatchCycle, Built, make_optimizer, pixyz_set_cache, unique
from benchmarks.harness import Contender

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class DMMConfig:
    z_dim: int = 100
    T: int = 32
    x_dim: int = 88
    emission_dim: int = 100
    transition_dim: int = 200
    rnn_dim: int = 600
    batch: int = 20
    n_batches: int = 8
    lr: float = 1e-3
    seed: int = 0


# ------------------------------------------------------------------------------------------------ the networks
class Emitter(nn.Module):
    """p(x_t | z_t): z -> emission (ReLU) -> emission (ReLU) -> 88 (sigmoid)."""

    def __init__(self, x_dim: int, z_dim: int, emission_dim: int) -> None:
        super().__init__()
        self.lin_z_to_hidden = nn.Linear(z_dim, emission_dim)
        self.lin_hidden_to_hidden = nn.Linear(emission_dim, emission_dim)
        self.lin_hidden_to_input = nn.Linear(emission_dim, x_dim)

    def forward(self, z_t: torch.Tensor) -> torch.Tensor:
        h1 = torch.relu(self.lin_z_to_hidden(z_t))
        h2 = torch.relu(self.lin_hidden_to_hidden(h1))
        return torch.sigmoid(self.lin_hidden_to_input(h2))


class GatedTransition(nn.Module):
    """p(z_t | z_{t-1}): a gate mixes a linear (identity-initialized) and a nonlinear proposed mean."""

    def __init__(self, z_dim: int, transition_dim: int) -> None:
        super().__init__()
        self.lin_gate_z_to_hidden = nn.Linear(z_dim, transition_dim)
        self.lin_gate_hidden_to_z = nn.Linear(transition_dim, z_dim)
        self.lin_proposed_mean_z_to_hidden = nn.Linear(z_dim, transition_dim)
        self.lin_proposed_mean_hidden_to_z = nn.Linear(transition_dim, z_dim)
        self.lin_sig = nn.Linear(z_dim, z_dim)
        self.lin_z_to_loc = nn.Linear(z_dim, z_dim)
        with torch.no_grad():
            self.lin_z_to_loc.weight.copy_(torch.eye(z_dim))
            self.lin_z_to_loc.bias.zero_()

    def forward(self, z_t_1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate = torch.sigmoid(self.lin_gate_hidden_to_z(torch.relu(self.lin_gate_z_to_hidden(z_t_1))))
        proposed_mean = self.lin_proposed_mean_hidden_to_z(torch.relu(self.lin_proposed_mean_z_to_hidden(z_t_1)))
        loc = (1 - gate) * self.lin_z_to_loc(z_t_1) + gate * proposed_mean
        scale = F.softplus(self.lin_sig(torch.relu(proposed_mean)))
        return loc, scale


class Combiner(nn.Module):
    """q(z_t | z_{t-1}, h_t): h = (tanh(W z_{t-1}) + h_rnn) / 2 -> (loc, softplus scale)."""

    def __init__(self, z_dim: int, rnn_dim: int) -> None:
        super().__init__()
        self.lin_z_to_hidden = nn.Linear(z_dim, rnn_dim)
        self.lin_hidden_to_loc = nn.Linear(rnn_dim, z_dim)
        self.lin_hidden_to_scale = nn.Linear(rnn_dim, z_dim)

    def forward(self, z_t_1: torch.Tensor, h_rnn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h_combined = 0.5 * (torch.tanh(self.lin_z_to_hidden(z_t_1)) + h_rnn)
        return self.lin_hidden_to_loc(h_combined), F.softplus(self.lin_hidden_to_scale(h_combined))


class RNNEncoder(nn.Module):
    """The guide's RNN over the reversed sequence, its initial hidden state, and the initial latent state z_0."""

    def __init__(self, x_dim: int, z_dim: int, rnn_dim: int) -> None:
        super().__init__()
        self.rnn = nn.RNN(input_size=x_dim, hidden_size=rnn_dim, nonlinearity="relu", batch_first=True,
                          bidirectional=False, num_layers=1)
        self.h_0 = nn.Parameter(torch.zeros(1, 1, rnn_dim))
        self.z_0 = nn.Parameter(torch.zeros(z_dim))


class DMMNets(nn.Module):
    def __init__(self, cfg: DMMConfig) -> None:
        super().__init__()
        self.emitter = Emitter(cfg.x_dim, cfg.z_dim, cfg.emission_dim)
        self.trans = GatedTransition(cfg.z_dim, cfg.transition_dim)
        self.combiner = Combiner(cfg.z_dim, cfg.rnn_dim)
        self.rnn_enc = RNNEncoder(cfg.x_dim, cfg.z_dim, cfg.rnn_dim)

    @property
    def z_0(self) -> torch.Tensor:
        return self.rnn_enc.z_0


def build_nets(cfg: DMMConfig, device: torch.device) -> DMMNets:
    torch.manual_seed(cfg.seed)
    return DMMNets(cfg).to(device)


def rnn_features(nets: DMMNets, x_rev: torch.Tensor) -> torch.Tensor:
    """The RNN's output over the reversed sequence, flipped back to forward time: ``[B, T, rnn_dim]``."""
    enc = nets.rnn_enc
    h0 = enc.h_0.expand(1, x_rev.shape[0], enc.rnn.hidden_size).contiguous()
    return torch.flip(enc.rnn(x_rev, h0)[0], [1])


def make_data(cfg: DMMConfig, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n_batches`` pairs ``(x, x reversed in time)``, each ``[batch, T, 88]``."""
    g = torch.Generator().manual_seed(4321)
    out = []
    for _ in range(cfg.n_batches):
        x = torch.empty(cfg.batch, cfg.T, cfg.x_dim)
        x[:, 0] = torch.bernoulli(torch.full((cfg.batch, cfg.x_dim), 0.1), generator=g)
        for t in range(1, cfg.T):
            keep = torch.rand(cfg.batch, cfg.x_dim, generator=g) < 0.9
            fresh = torch.bernoulli(torch.full((cfg.batch, cfg.x_dim), 0.1), generator=g)
            x[:, t] = torch.where(keep, x[:, t - 1], fresh)
        out.append((x.to(device), torch.flip(x, [1]).contiguous().to(device)))
    return out


# ------------------------------------------------------------------------------------------------ raw PyTorch
def torch_objective(cfg: DMMConfig, nets: DMMNets, mc: bool) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The hand-written negative ELBO of a batch ``(x, x reversed)``, summed over the batch and time."""

    def objective(x: torch.Tensor, x_rev: torch.Tensor) -> torch.Tensor:
        h = rnn_features(nets, x_rev)
        z_prev = nets.z_0.expand(x.shape[0], cfg.z_dim)
        total = x.new_zeros(())
        for t in range(cfg.T):
            q_loc, q_scale = nets.combiner(z_prev, h[:, t])
            p_loc, p_scale = nets.trans(z_prev)
            eps = torch.randn_like(q_loc)
            z = q_loc + q_scale * eps
            rec = F.binary_cross_entropy(nets.emitter(z), x[:, t], reduction="sum")
            if mc:  # log q(z_t) - log p(z_t | z_{t-1}) at the sample
                log_q = -0.5 * eps.pow(2) - q_scale.log()
                log_p = -0.5 * ((z - p_loc) / p_scale).pow(2) - p_scale.log()
                kl = (log_q - log_p).sum()
            else:
                var_ratio = (q_scale / p_scale).pow(2)
                kl = 0.5 * (var_ratio + ((q_loc - p_loc) / p_scale).pow(2) - 1 - var_ratio.log()).sum()
            total = total + rec + kl
            z_prev = z
        return total

    return objective


def build_torch(cfg: DMMConfig, data: list, device: torch.device, mc: bool, compile: Any = False) -> Built:
    nets = build_nets(cfg, device)
    opt = make_optimizer(nets.parameters(), cfg.lr)
    batches = BatchCycle(data)
    objective = torch_objective(cfg, nets, mc)
    if compile:  # the hand-written compiled step: the objective compiled, backward and Adam as usual
        objective = torch.compile(objective, **(compile if isinstance(compile, dict) else {}))

    def step() -> torch.Tensor:
        loss = objective(*batches())
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    def value(b: tuple[torch.Tensor, torch.Tensor]) -> float:
        with torch.no_grad():
            return float(objective(*b))

    return Built(step, value)


# ------------------------------------------------------------------------------------------------ Pyro
def build_pyro(cfg: DMMConfig, data: list, device: torch.device, mean_field: bool) -> Built:
    import pyro
    import pyro.distributions as dist
    from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
    from pyro.optim import Adam

    nets = build_nets(cfg, device)
    name = unique("dmm")

    def model(x: torch.Tensor, x_rev: torch.Tensor) -> None:
        pyro.module(name, nets)
        z_prev = nets.z_0.expand(x.size(0), cfg.z_dim)
        with pyro.plate("z_minibatch", x.size(0)):
            for t in pyro.markov(range(1, cfg.T + 1)):
                z_loc, z_scale = nets.trans(z_prev)
                z_t = pyro.sample(f"z_{t}", dist.Normal(z_loc, z_scale).to_event(1))
                probs = nets.emitter(z_t)
                pyro.sample(f"obs_x_{t}", dist.Bernoulli(probs).to_event(1), obs=x[:, t - 1, :])
                z_prev = z_t

    def guide(x: torch.Tensor, x_rev: torch.Tensor) -> None:
        pyro.module(name, nets)
        h = rnn_features(nets, x_rev)
        z_prev = nets.z_0.expand(x.size(0), cfg.z_dim)
        with pyro.plate("z_minibatch", x.size(0)):
            for t in pyro.markov(range(1, cfg.T + 1)):
                z_loc, z_scale = nets.combiner(z_prev, h[:, t - 1, :])
                z_prev = pyro.sample(f"z_{t}", dist.Normal(z_loc, z_scale).to_event(1))

    elbo = TraceMeanField_ELBO() if mean_field else Trace_ELBO()
    svi = SVI(model, guide, Adam({"lr": cfg.lr}), loss=elbo)
    batches = BatchCycle(data)
    return Built(lambda: svi.step(*batches()), lambda b: float(svi.evaluate_loss(*b)))


# ------------------------------------------------------------------------------------------------ Pixyz 0.3.3
def build_pixyz(cfg: DMMConfig, data: list, device: torch.device, mc: bool, cache: bool) -> Built:
    """The paper's Figure 9 (lower half): one step's loss, summed over time by ``IterativeLoss``."""
    from pixyz.distributions import Bernoulli, Normal
    from pixyz.losses import Expectation, IterativeLoss, KullbackLeibler, LogProb
    from pixyz.models import Model

    nets = build_nets(cfg, device)

    class Q(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z_t"], cond_var=["z_t_1", "h_rnn"], name="q")
            self.net = nets.combiner

        def forward(self, z_t_1: torch.Tensor, h_rnn: torch.Tensor) -> dict[str, torch.Tensor]:
            loc, scale = self.net(z_t_1, h_rnn)
            return {"loc": loc, "scale": scale}

    class Trans(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z_t"], cond_var=["z_t_1"], name="p")
            self.net = nets.trans

        def forward(self, z_t_1: torch.Tensor) -> dict[str, torch.Tensor]:
            loc, scale = self.net(z_t_1)
            return {"loc": loc, "scale": scale}

    class Emit(Bernoulli):
        def __init__(self) -> None:
            super().__init__(var=["x_t"], cond_var=["z_t"], name="p")
            self.net = nets.emitter

        def forward(self, z_t: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"probs": self.net(z_t)}

    q, trans, emit = Q(), Trans(), Emit()
    pixyz_set_cache([q, trans, emit], cache)
    if mc:
        step_loss = Expectation(q, LogProb(q) - LogProb(trans) - LogProb(emit)).sum()
    else:
        step_loss = (KullbackLeibler(q, trans) - Expectation(q, LogProb(emit))).sum()
    loss = IterativeLoss(step_loss, max_iter=cfg.T, series_var=["x_t", "h_rnn"], update_value={"z_t": "z_t_1"})
    model = Model(loss, distributions=[q, trans, emit, nets.rnn_enc], optimizer=torch.optim.Adam,
                  optimizer_params={"lr": cfg.lr})
    batches = BatchCycle(data)

    def values(b: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, x_rev = b
        h = rnn_features(nets, x_rev)  # the RNN runs outside the loss, as in Figure 9
        return {"x_t": x.transpose(0, 1), "h_rnn": h.transpose(0, 1), "z_t_1": nets.z_0.expand(x.shape[0], cfg.z_dim)}

    def value(b: tuple[torch.Tensor, torch.Tensor]) -> float:
        with torch.no_grad():
            return float(loss.eval(values(b)))

    return Built(lambda: model.train(values(batches())), value)


# ------------------------------------------------------------------------------------------------ the contenders
Builder = Callable[[DMMConfig, list, torch.device], Built]
BASELINE = {"analytic": "torch (analytic KL)", "mc": "torch (MC KL)"}


def builders() -> dict[str, tuple[str, Builder]]:
    out: dict[str, tuple[str, Builder]] = {
        "torch (analytic KL)": ("analytic", lambda c, d, dev: build_torch(c, d, dev, mc=False)),
        "torch (MC KL)": ("mc", lambda c, d, dev: build_torch(c, d, dev, mc=True)),
        "pyro Trace_ELBO": ("mc", lambda c, d, dev: build_pyro(c, d, dev, mean_field=False)),
        "pyro TraceMeanField_ELBO": ("analytic", lambda c, d, dev: build_pyro(c, d, dev, mean_field=True)),
    }
    for mc in (False, True):
        for cache in (False, True):
            name = f"pixyz IterativeLoss {'MC' if mc else 'analytic'} {'w/' if cache else 'w/o'} cache"
            out[name] = ("mc" if mc else "analytic",
                         lambda c, d, dev, mc=mc, cache=cache: build_pixyz(c, d, dev, mc=mc, cache=cache))
    from benchmarks import pyro_dgm_contenders as hooks

    for name, (estimator, fn) in hooks.dmm_builders().items():
        out[name] = (estimator, fn)
    return out


def contenders(cfg: DMMConfig, device: torch.device, only: Callable[[str], bool] = lambda n: True
               ) -> list[Contender]:
    data = make_data(cfg, device)
    return [Contender(name, lambda fn=fn: fn(cfg, data, device).step, BASELINE[est], name.split()[0])
            for name, (est, fn) in builders().items() if only(name)]


def check(cfg: DMMConfig, device: torch.device, n: int = 100, log: Callable[[str], None] = print) -> bool:
    """Every contender's objective at the same weights on the same batch agrees within MC noise."""
    from benchmarks.vae import after_steps, compare_means

    data = make_data(cfg, device)
    rows = []
    for name, (_, fn) in builders().items():
        try:
            built = fn(cfg, data, device)
            torch.manual_seed(1)
            vals = torch.tensor([built.loss(data[0]) for _ in range(n)], dtype=torch.float64)
            rows.append((name, float(vals.mean()), float(vals.std() / math.sqrt(n)),
                         after_steps(fn(cfg, data, device), data[-1], Combiner)))
        except Exception as e:  # noqa: BLE001
            log(f"  {name}: could not evaluate ({type(e).__name__}: {e})")
    return compare_means(rows, log, runs_label=f"combiner runs/step (T={cfg.T})")
