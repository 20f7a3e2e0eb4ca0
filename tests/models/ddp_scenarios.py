"""Three small models trained data-parallel by ddp_worker.py and, by hand in one process, by test_ddp*.py.

Each scenario builds its model from a seed (rank 0's seed gives the weights every rank starts from), gives its
global batches, and the per-process slice of a batch. Step ``s`` on rank ``r`` draws its Monte Carlo noise after
``pyro.set_rng_seed(noise_seed(s, r))``, so one process can replay exactly what the two ranks drew: the reference
step averages the two slices' losses (what ``DistributedDataParallel`` does to their gradients) and steps once.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import pyro
import torch
from torch import nn

from pyro_dgm.distributions import Deterministic, Normal
from pyro_dgm.losses import E, IterativeLoss, KullbackLeibler, LogProb
from pyro_dgm.models import GAN, Model
from pyro_dgm.utils.compat import compiles

STEPS = 3
INIT_SEED = 100
# the "*_compiled" scenarios: Model(..., compile=COMPILED) on every rank; aot_eager keeps torch's own random ops (the
# draws equal the eager reference's) and the autograd graph that DistributedDataParallel's hooks see, and compiles
# in about a second
COMPILED = {"backend": "aot_eager"}


def noise_seed(step: int, rank: int) -> int:
    return 1000 + 10 * step + rank


# ------------------------------------------------------------------------------------------------------ VAE
def build_vae(seed: int, compile: Any = False) -> Model:
    from dgm_model_helpers import make_vae
    torch.manual_seed(seed)
    return make_vae(z_dim=3, h=16, lr=1e-2, compile=compile)


def vae_batches() -> list[dict[str, torch.Tensor]]:
    from dgm_model_helpers import digits
    x = digits()[0][:64]
    return [{"x": x[32 * (s % 2):32 * (s % 2) + 32]} for s in range(STEPS)]


def vae_half(batch: dict[str, torch.Tensor], r: int) -> dict[str, torch.Tensor]:
    return {"x": batch["x"].tensor_split(2)[r]}


# ------------------------------------------------------------------------------------------------------ GAN
class Generator(Deterministic):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 2))

    def forward(self, z):  # type: ignore[no-untyped-def]
        return {"x": self.net(z)}


class Discriminator(Deterministic):
    def __init__(self) -> None:
        super().__init__(var=["t"], cond_var=["x"], name="d")
        self.net = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1), nn.Sigmoid())

    def forward(self, x):  # type: ignore[no-untyped-def]
        return {"t": self.net(x)}


def build_gan(seed: int, compile: Any = False) -> GAN:
    torch.manual_seed(seed)
    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[2], name="p_{prior}")
    p = (Generator() * prior).marginalize_var("z")
    adam = {"lr": 5e-3, "betas": (0.5, 0.999)}
    return GAN(p, Discriminator(), optimizer_params=adam, d_optimizer_params=adam, compile=compile)


def gan_batches() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    return [{"x": torch.randn(16, 2, generator=g) + torch.tensor([3.0, -2.0])} for _ in range(STEPS)]


# ------------------------------------------------------------------------------------------------------ IterativeLoss
T, X, Z = 3, 4, 2


class Trans(Normal):  # p(z|z_prev)
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["z_prev"], name="p")
        self.fc = nn.Linear(Z, 2 * Z)

    def forward(self, z_prev):  # type: ignore[no-untyped-def]
        h = self.fc(z_prev)
        return {"loc": h[:, :Z], "scale": nn.functional.softplus(h[:, Z:]) + 0.1}


class Emit(Normal):  # p(x|z)
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.fc = nn.Linear(Z, X)

    def forward(self, z):  # type: ignore[no-untyped-def]
        return {"loc": self.fc(z), "scale": torch.ones(z.shape[0], X)}


class Comb(Normal):  # q(z|x, z_prev)
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x", "z_prev"], name="q")
        self.fc = nn.Linear(X + Z, 2 * Z)

    def forward(self, x, z_prev):  # type: ignore[no-untyped-def]
        h = self.fc(torch.cat([x, z_prev], -1))
        return {"loc": h[:, :Z], "scale": nn.functional.softplus(h[:, Z:]) + 0.1}


def build_dmm(seed: int, compile: Any = False) -> Model:
    torch.manual_seed(seed)
    trans, emit, comb = Trans(), Emit(), Comb()
    step = -E(comb, LogProb(emit)) + KullbackLeibler(comb, trans)
    loss = IterativeLoss(step, max_iter=T, series_var=["x"], update_value={"z": "z_prev"}).mean()
    return Model(loss, distributions=[trans, emit, comb], optimizer_params={"lr": 1e-2}, compile=compile)


def dmm_batches() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(4)
    return [{"x": torch.randn(T, 8, X, generator=g), "z_prev": torch.zeros(8, Z)} for _ in range(STEPS)]


def dmm_half(batch: dict[str, torch.Tensor], r: int) -> dict[str, torch.Tensor]:
    return {"x": batch["x"].tensor_split(2, dim=1)[r], "z_prev": batch["z_prev"].tensor_split(2)[r]}


SCENARIOS: dict[str, tuple[Callable[[int], Any], Callable[[], list], Callable[[dict, int], dict]]] = {
    "vae": (build_vae, vae_batches, vae_half),
    "gan": (build_gan, gan_batches, vae_half),
    "dmm": (build_dmm, dmm_batches, dmm_half),
    # the compiled evaluation inside DistributedDataParallel's forward (the first step eager, the next two compiled)
    "vae_compiled": (partial(build_vae, compile=COMPILED), vae_batches, vae_half),
    "gan_compiled": (partial(build_gan, compile=COMPILED), gan_batches, vae_half),
    "dmm_compiled": (partial(build_dmm, compile=COMPILED), dmm_batches, dmm_half),
}
if not compiles():  # (an older torch refuses compile=: tests/test_torch_compat.py)
    SCENARIOS = {k: v for k, v in SCENARIOS.items() if not k.endswith("_compiled")}


def train_rank(name: str, rank: int) -> Any:
    """What rank ``rank`` runs: the model from its own seed (DDP broadcasts rank 0's), STEPS steps on its slices; a
    compiled scenario checks that Dynamo compiled a graph (an ignored compile= would otherwise match eager too)."""
    from torch._dynamo.utils import counters

    build, batches, half = SCENARIOS[name]
    model = build(INIT_SEED + rank)
    graphs = counters["stats"]["unique_graphs"]
    for s, batch in enumerate(batches()):
        pyro.set_rng_seed(noise_seed(s, rank))
        model.train(half(batch, rank))
    if name.endswith("_compiled"):
        assert counters["stats"]["unique_graphs"] > graphs, f"{name}: nothing was compiled"
    return model


def _mean(values: list[torch.Tensor]) -> torch.Tensor:
    return sum(values) / len(values)  # type: ignore[return-value]


def train_reference(name: str) -> Any:
    """One process replaying the two ranks: per step, the mean of the two slices' losses (each slice with its rank's
    noise), one backward, one optimizer step; for the GAN, the discriminator's step first, as ``GAN.train``."""
    build, batches, half = SCENARIOS[name]
    model = build(INIT_SEED)
    for s, batch in enumerate(batches()):
        halves = [half(batch, r) for r in (0, 1)]
        states = []
        for r in (0, 1):
            pyro.set_rng_seed(noise_seed(s, r))
            states.append(torch.get_rng_state())
        if isinstance(model, GAN):
            adv = model.adversarial_loss
            d_losses = []
            for r in (0, 1):
                torch.set_rng_state(states[r])
                d_losses.append(adv.eval(halves[r], discriminator=True))
                states[r] = torch.get_rng_state()
            adv.d_optimizer.zero_grad(set_to_none=True)
            _mean(d_losses).backward()
            adv.d_optimizer.step()
        losses = []
        for r in (0, 1):
            torch.set_rng_state(states[r])
            losses.append(model.loss_cls.eval(halves[r]))
        model.optimizer.zero_grad(set_to_none=True)
        _mean(losses).backward()
        model.optimizer.step()
    return model


def weights(model: Any) -> dict[str, torch.Tensor]:
    """Every trained tensor: the distributions' and, for a GAN, the discriminator's."""
    out = {f"dist.{k}": v.detach().clone() for k, v in model.distributions.state_dict().items()}
    if isinstance(model, GAN):
        out.update({f"disc.{k}": v.detach().clone() for k, v in model.discriminator.state_dict().items()})
    return out
