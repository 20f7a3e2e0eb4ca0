"""Run by test_ddp_round6.py under ``torchrun`` (2 CPU processes, gloo): a step that raises on one process only, which
the script catches (``try: model.train(batch) except ...``).

``ddp_round6_worker.py OUT``: four training steps of a VAE whose encoder holds a ``BatchNorm1d``, with

* ``Model.train``: rank 1's step 2 raises, in its decoder (``"raise"``) or in torch's validation of the encoder's
  parameters on a NaN in rank 1's slice (``"badval"``); the reference (``"skip"``) skips step 2 on both ranks. After
  the ``"raise"`` run, ``Model.test_step`` raises on rank 1 (its decoder), then one more training step is taken.
  ``"timeout_text"`` is ``"raise"`` with an error whose text says "timed out" (a CUDA kernel's), which is not a
  broken collective.
* a ``GAN`` whose discriminator step raises on rank 1 (``"raise"``), or whose discriminator gives NaN there
  (``"nan"``), against ``"skip"``.
* ``SVI`` with ``DistributedELBO``: the same (``"raise"``, ``"skip"``), and ``"nan"``: a NaN in rank 1's slice with
  validation off (the loss is NaN on rank 1 only).

Each rank writes what every step returned or raised (the error's class, message, notes and ``ranks``), its weights and
buffers to ``OUT/round6_rank<r>.pt``.
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import pyro
import torch
from pyro.infer import SVI
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import E, KullbackLeibler, LogProb
from pyro_dgm.models import Model
from pyro_dgm.models import distributed as dist_utils
from pyro_dgm.models.distributed import DistributedELBO

STEPS = 4
DATA = torch.randn(64, 6, generator=torch.Generator().manual_seed(1))


class Encoder(Normal):
    def __init__(self) -> None:
        super().__init__(var=["z"], cond_var=["x"], name="q")
        self.net = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4))  # buffers: copied from rank 0 after each step

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = self.net(x)
        return {"loc": h[:, :2], "scale": nn.functional.softplus(h[:, 2:]) + 1e-3}


class Decoder(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["z"], name="p")
        self.net = nn.Linear(2, 6)
        self.fail = False
        self.message = ""

    def forward(self, z):  # type: ignore[no-untyped-def]
        if self.fail:
            self.fail = False
            raise RuntimeError(self.message or f"the decoder fails on rank {dist_utils.rank()}")
        h = self.net(z)
        return {"loc": h, "scale": torch.ones_like(h)}


def build(rank: int) -> tuple[Encoder, Decoder, Normal, Any]:
    pyro.clear_param_store()
    torch.manual_seed(100 + rank)  # different initial weights on each rank: rank 0's are broadcast
    q, p = Encoder(), Decoder()
    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["z"], name="p_{prior}")
    return q, p, prior, (KullbackLeibler(q, prior) - E(q, LogProb(p))).mean()


def batch(step: int, rank: int, nan: bool = False) -> dict[str, torch.Tensor]:
    x = DATA[16 * step:16 * step + 16].tensor_split(2)[rank].clone()
    if nan:
        x[2, 3] = float("nan")
    return {"x": x}


def describe(error: BaseException) -> tuple[Any, ...]:
    return (type(error).__name__, str(error), list(getattr(error, "__notes__", ())), getattr(error, "ranks", None))


def state(*modules: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": v.detach().clone() for i, m in enumerate(modules) for k, v in m.state_dict().items()}


def run_model(mode: str, rank: int) -> dict[str, Any]:
    q, p, _, loss = build(rank)
    model = Model(loss, distributions=[q, p], optimizer_params={"lr": 0.05})
    out: list[Any] = []
    for s in range(STEPS):
        pyro.set_rng_seed(1000 + 10 * s + rank)
        failing = s == 1 and rank == 1
        if s == 1 and mode == "skip":
            out.append(None)
            continue
        p.fail = failing and mode in ("raise", "timeout_text")
        if mode == "timeout_text":  # a user's (or CUDA's) error whose text says "timed out": not torch.distributed's
            p.message = "CUDA error: the launch timed out and was terminated"
        try:
            out.append(("ok", float(model.train(batch(s, rank, nan=failing and mode == "badval")))))
        except Exception as e:
            out.append(describe(e))
    result = {"steps": out, "state": state(q, p), "step": model.step}
    if mode == "raise":  # then a test step that raises on rank 1, and a training step after it
        p.fail = rank == 1
        try:
            model.test_step(batch(0, rank))
            result["test"] = ("ok",)
        except Exception as e:
            result["test"] = describe(e)
        p.fail = False
        model.train(batch(0, rank))
        result["after_test"] = state(q, p)
    return result


def run_svi(mode: str, rank: int) -> dict[str, Any]:
    q, p, prior, loss = build(rank)
    svi = SVI((p * prior).model, q.guide, pyro.optim.Adam({"lr": 0.05}), DistributedELBO(loss))
    out: list[Any] = []
    for s in range(STEPS if mode != "nan" else 2):
        pyro.set_rng_seed(1000 + 10 * s + rank)
        failing = s == 1 and rank == 1
        if s == 1 and mode == "skip":
            out.append(None)
            continue
        p.fail = failing and mode == "raise"
        with warnings.catch_warnings(record=True) as caught, pyro.validation_enabled(mode != "nan"):
            warnings.simplefilter("always")
            try:
                value = svi.step(**batch(s, rank, nan=failing and mode == "nan"))
                out.append(("ok", value, [str(w.message) for w in caught]))
            except Exception as e:
                out.append(describe(e))
    return {"steps": out, "params": {k: v for k, v in state(q, p).items() if "running" not in k
                                     and "num_batches" not in k}}


def run_gan(mode: str, rank: int) -> dict[str, Any]:
    """A GAN whose discriminator raises on rank 1 in the discriminator step of step 2 (``"raise"``), or gives NaN
    there (``"nan"``: pyro_dgm's range check raises on that rank only); ``"skip"`` skips step 2 on both ranks."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from ddp_scenarios import build_gan

    model = build_gan(0)
    disc = model.discriminator
    forward = disc.forward
    fail = {"now": False}

    def failing_forward(x):  # type: ignore[no-untyped-def]
        if fail["now"]:
            fail["now"] = False
            if mode == "raise":
                raise RuntimeError(f"the discriminator fails on rank {rank}")
            return {"t": forward(x)["t"] * float("nan")}
        return forward(x)

    disc.forward = failing_forward
    data = torch.randn(64, 2, generator=torch.Generator().manual_seed(3))
    out: list[Any] = []
    for s in range(STEPS):
        pyro.set_rng_seed(1000 + 10 * s + rank)
        if s == 1 and mode == "skip":
            out.append(None)
            continue
        fail["now"] = s == 1 and rank == 1
        try:
            out.append(("ok", [float(v) for v in model.train({"x": data[16 * s:16 * s + 16].tensor_split(2)[rank]})]))
        except Exception as e:
            out.append(describe(e))
    return {"steps": out, "state": state(*model.distributions, disc), "d_steps": model.adversarial_loss.d_steps}


def main(out: str) -> None:
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    dist_utils.setup_from_env()
    assert dist_utils.is_distributed() and dist_utils.world_size() == 2
    with pyro.validation_enabled(True):
        result = {f"model_{m}": run_model(m, rank) for m in ("skip", "raise", "badval", "timeout_text")}
        result.update({f"gan_{m}": run_gan(m, rank) for m in ("skip", "raise", "nan")})
        result.update({f"svi_{m}": run_svi(m, rank) for m in ("skip", "raise", "nan")})
    torch.save(result, os.path.join(out, f"round6_rank{rank}.pt"))
    dist_utils.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
