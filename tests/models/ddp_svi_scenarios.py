"""Pyro's SVI and Pyro-side parameters under DistributedDataParallel: scenarios run by ddp_svi_worker.py on 2 ranks
and replayed in one process by test_ddp_svi.py.

* ``svi_loss``: a pyro_dgm VAE loss (a batch mean) as the loss of ``pyro.infer.SVI``, through
  ``DistributedELBO(loss)``.
* ``svi_trace``: ``SVI(joint.model, q.guide, ..., DistributedELBO(Trace_ELBO(), global_loss="sum"))``: Pyro's own
  ELBO, a sum over the batch; the networks are found in the param store at the first step (``pyro.module``).
* ``model_autoguide``: a ``Model`` whose loss mixes the VAE with ``PyroELBO(probe, AutoNormal(probe))``: the
  autoguide's parameters appear in Pyro's param store at the first step, initialized at random (each rank its own),
  and must be broadcast from rank 0 and averaged.

Step ``s`` on rank ``r`` draws its noise after ``pyro.set_rng_seed(noise_seed(s, r))``; the reference replays both
ranks' slices in one process: the mean of their losses (DDP's average of the gradients), or their sum for
``global_loss="sum"``, and one optimizer step.
"""
from __future__ import annotations

from typing import Any, Callable

import pyro
import pyro.distributions as pdist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import E, KullbackLeibler, LogProb, PyroELBO
from pyro_dgm.models import Model
from pyro_dgm.models.distributed import DistributedELBO

STEPS = 3
INIT_SEED = 100
LR = 1e-2


def noise_seed(step: int, rank: int) -> int:
    return 2000 + 10 * step + rank


def batches() -> list[dict[str, torch.Tensor]]:
    from dgm_model_helpers import digits
    x = digits()[0][:64]
    return [{"x": x[32 * (s % 2):32 * (s % 2) + 32]} for s in range(STEPS)]


def half(batch: dict[str, torch.Tensor], r: int) -> dict[str, torch.Tensor]:
    return {"x": batch["x"].tensor_split(2)[r]}


def vae(seed: int) -> tuple[Any, Any, Any]:
    """q(z|x), p(x|z) and p(z), the networks initialized from ``seed``; an empty param store."""
    from dgm_model_helpers import digits_nets
    pyro.clear_param_store()
    torch.manual_seed(seed)
    q, p = digits_nets(3, 16)
    prior = Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["z"], name="p_{prior}")
    return q, p, prior


def vae_loss(q: Any, p: Any, prior: Any) -> Any:
    return (KullbackLeibler(q, prior) - E(q, LogProb(p))).mean()


def probe(x: torch.Tensor) -> None:
    """A Bayesian linear regression of pixel 2 on pixels 0 and 1 (plain Pyro)."""
    w = pyro.sample("w", pdist.Normal(torch.zeros(2), 1.).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", pdist.Normal(x[:, :2] @ w, 1.), obs=x[:, 2])


def weights(*modules: Any) -> dict[str, torch.Tensor]:
    """The networks' tensors and every parameter of Pyro's param store (unconstrained, by name)."""
    out = {f"net{i}.{k}": v.detach().clone() for i, m in enumerate(modules) for k, v in m.state_dict().items()}
    out.update({f"store.{n}": t.detach().clone() for n, t in pyro.get_param_store().named_parameters()
                if not any(t is p for m in modules for p in m.parameters())})
    return out


# ------------------------------------------------------------------------------------------------------ the ranks
def rank_svi(name: str, rank: int) -> dict[str, torch.Tensor]:
    q, p, prior = vae(INIT_SEED + rank)  # each rank its own weights: DDP broadcasts rank 0's
    joint = p * prior
    if name == "svi_loss":
        elbo = DistributedELBO(vae_loss(q, p, prior))
    else:
        elbo = DistributedELBO(Trace_ELBO(), global_loss="sum")
    svi = SVI(joint.model, q.guide, pyro.optim.Adam({"lr": LR}), elbo)
    for s, batch in enumerate(batches()):
        pyro.set_rng_seed(noise_seed(s, rank))
        svi.step(**half(batch, rank))
    return weights(q, p)


def build_autoguide_model(seed: int) -> tuple[Model, Any, Any]:
    q, p, prior = vae(seed)
    guide = AutoNormal(probe)
    loss = vae_loss(q, p, prior) + PyroELBO(probe, guide, input_var=["x"])
    return Model(loss, distributions=[p, q], optimizer_params={"lr": LR}), q, p


def rank_model(rank: int) -> dict[str, torch.Tensor]:
    model, q, p = build_autoguide_model(INIT_SEED + rank)
    for s, batch in enumerate(batches()):
        pyro.set_rng_seed(noise_seed(s, rank))
        model.train(half(batch, rank))
    return weights(q, p)


def run_rank(name: str, rank: int) -> dict[str, torch.Tensor]:
    return rank_model(rank) if name == "model_autoguide" else rank_svi(name, rank)


# ------------------------------------------------------------------------------------------------------ one process
def _replay(step: int, fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
            batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """``fn`` on each rank's slice, with that rank's noise."""
    out = []
    for r in (0, 1):
        pyro.set_rng_seed(noise_seed(step, r))
        out.append(fn(half(batch, r)))
    return out


def reference_svi(name: str) -> dict[str, torch.Tensor]:
    """One process, plain SVI: per step the mean (``svi_loss``) or the sum (``svi_trace``) of the two slices'
    losses, each with its rank's noise."""
    q, p, prior = vae(INIT_SEED)
    joint = p * prior
    elbo = vae_loss(q, p, prior) if name == "svi_loss" else Trace_ELBO()

    def both(model: Any, guide: Any, batch: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        losses = _replay(step, lambda h: elbo.differentiable_loss(model, guide, **h), batch)
        return (losses[0] + losses[1]) / (2 if name == "svi_loss" else 1)

    svi = SVI(joint.model, q.guide, pyro.optim.Adam({"lr": LR}), both)
    for s, batch in enumerate(batches()):
        svi.step(batch, s)
    return weights(q, p)


def reference_model() -> dict[str, torch.Tensor]:
    """One process: the autoguide's parameters created by an evaluation on rank 0's first slice (rank 0's initial
    values, the draws then discarded, as the ranks discard that evaluation), then per step the mean of the two
    slices' losses, one backward, one Adam step (the autoguide's parameters in a second group, as Model adds them)."""
    model, q, p = build_autoguide_model(INIT_SEED)
    first = batches()[0]
    pyro.set_rng_seed(noise_seed(0, 0))
    model.loss_cls.eval(half(first, 0))
    created = [t for _, t in pyro.get_param_store().named_parameters()
               if not any(t is w for w in model.distributions.parameters())]
    optimizer = model.optimizer
    optimizer.add_param_group({"params": created})
    for s, batch in enumerate(batches()):
        losses = _replay(s, model.loss_cls.eval, batch)
        optimizer.zero_grad(set_to_none=True)
        ((losses[0] + losses[1]) / 2).backward()
        optimizer.step()
    return weights(q, p)


def reference(name: str) -> dict[str, torch.Tensor]:
    return reference_model() if name == "model_autoguide" else reference_svi(name)


def start(name: str) -> dict[str, torch.Tensor]:
    """The weights before training (rank 0's), for checking that training moved them."""
    q, p, _ = vae(INIT_SEED)
    return weights(q, p)


SCENARIOS = ["svi_loss", "svi_trace", "model_autoguide"]
