"""Run by test_ddp_resume.py under ``torchrun`` (2 processes, CPU, gloo). Each rank seeds itself differently, so its
Monte Carlo draws are its own (a checkpoint must give each rank back its own random state).

``ddp_resume_worker.py OUT load``: a VAE trained 3 steps is saved (rank 0 writes); every rank then builds a fresh
model, loads the checkpoint and trains 2 more steps, while the saved model, its random state put back to the one at
the save, trains the same 2 steps; each rank writes ``OUT/load_rank<r>.pt``.

``ddp_resume_worker.py OUT resume [kill]``: ``fit`` for 4 epochs in all (3 steps each) with a checkpoint after every
epoch, resuming from the checkpoint when one exists; with ``kill``, rank 1 dies (``os._exit``) after step 7 (in
epoch 3) unless ``OUT/killed`` exists, which it writes first, so ``torchrun --max-restarts 1`` restarts both
ranks once. Each rank writes ``OUT/resume_rank<r>.pt``: its weights, the epoch it resumed from and torchrun's
restart count.
"""
import os
import sys

import pyro
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dgm_model_helpers import digits, make_vae  # noqa: E402

from pyro_dgm.models import distributed as dist_utils  # noqa: E402
from pyro_dgm.models.callbacks import ModelCheckpoint  # noqa: E402

EPOCHS = 4


def build(seed: int):  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    return make_vae(z_dim=3, h=16, lr=1e-2)


def state(model) -> dict:  # type: ignore[no-untyped-def]
    return {k: v.detach().clone() for k, v in model.distributions.state_dict().items()}


def load_mode(out: str, rank: int) -> None:
    x = digits()[0][:64]
    pyro.set_rng_seed(10 + rank)
    model = build(100 + rank)
    for s in range(3):
        model.train({"x": x[32 * (s % 2):32 * (s % 2) + 32].tensor_split(2)[rank]})
    rng = torch.get_rng_state()
    path = os.path.join(out, "ckpt.pt")
    model.save(path)
    fresh = build(200 + rank)  # other weights on every rank (rank 0's broadcast), then the checkpoint's
    fresh.load(path, resume=True)
    result = {"loaded": state(fresh), "rng_restored": torch.equal(torch.get_rng_state(), rng),
              "optimizer_step": [s["step"].item() for s in fresh.optimizer.state_dict()["state"].values()]}
    batch = {"x": x[:32].tensor_split(2)[rank]}
    for _ in range(2):
        fresh.train(batch)
    torch.set_rng_state(rng)
    for _ in range(2):
        model.train(batch)
    result["continued"], result["original"] = state(fresh), state(model)
    torch.save(result, os.path.join(out, f"load_rank{rank}.pt"))


def resume_mode(out: str, rank: int, kill: bool) -> None:
    pyro.set_rng_seed(10 + rank)
    model = build(100 + rank)
    path = os.path.join(out, "ckpt.pt")
    resumed_from = 0
    if os.path.exists(path):
        model.load(path, resume=True)
        resumed_from = model.epoch
    marker = os.path.join(out, "killed")
    if kill and rank == 1 and not os.path.exists(marker):
        train = model.train

        def train_or_die(*args, **kwargs):  # type: ignore[no-untyped-def]
            if model.step == 7:
                open(marker, "w").close()
                os._exit(1)  # no clean-up, no exception: as a killed process
            return train(*args, **kwargs)

        model.train = train_or_die
    data = {"x": digits()[0][:96]}
    model.fit(data, epochs=EPOCHS - model.epoch, batch_size=32, shuffle=True, progress=False,
              callbacks=[ModelCheckpoint(path)])
    torch.save({"state": state(model), "resumed_from": resumed_from, "step": model.step,
                "restarts": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))},
               os.path.join(out, f"resume_rank{rank}.pt"))


def main(out: str, mode: str, kill: bool) -> None:
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    if mode == "load":
        load_mode(out, rank)
    else:
        resume_mode(out, rank, kill)
    assert dist_utils.world_size() == 2
    dist_utils.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], len(sys.argv) > 3 and sys.argv[3] == "kill")
