"""Run by test_ddp_round4.py under ``torchrun`` (2 CPU processes, gloo).

``ddp_round4_worker.py OUT batchnorm``: ``fit`` (2 epochs, global batches of 8 rows, unshuffled) trains a model whose
decoder holds a ``BatchNorm1d``; each rank writes its weights, buffers and test loss to ``OUT/bn_rank<r>.pt``.

``ddp_round4_worker.py OUT pyro_param``: ``fit`` (2 epochs, shuffled) trains a model whose loss creates a Pyro
parameter with a random initial value at its first step; each rank writes its weights, the parameter and its random
state to ``OUT/param_rank<r>.pt``.

``ddp_round4_worker.py OUT iterative``: ``fit`` trains an RNN (an ``IterativeLoss``) on a list of batches of
time-first series ([T, B, X]): each process gets half of every batch's sequences (dim 1), not half of the time steps.

``ddp_round4_worker.py OUT uneven``: rank 0 is given 8 batches, rank 1 only 7: fit must refuse at the start of the
epoch, naming both counts.

``ddp_round4_worker.py OUT save_rank0``: ``Model.save`` under ``if rank == 0:``; rank 1 goes on training, so rank 0
must raise, naming rank 1, within the collective timeout.
"""
import os
import sys

import torch
import torch.distributed as tdist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ddp_round4_models import (batches, build_bn_model, build_iterative_model, build_param_model,  # noqa: E402
                               series_batches)

from pyro_dgm.models import distributed as dist_utils  # noqa: E402


def main(out: str, mode: str) -> None:
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    torch.manual_seed(rank)  # different initial weights on each rank: the model broadcasts rank 0's
    build = {"pyro_param": build_param_model, "iterative": build_iterative_model}.get(mode, build_bn_model)
    model = build(seed=None)
    assert tdist.is_initialized() and tdist.get_world_size() == 2
    data = batches()
    if mode == "pyro_param":
        import pyro
        whole = {k: torch.cat([b[k] for b in data]) for k in ("x", "y")}
        model.fit(whole, epochs=2, batch_size=8, shuffle=True, progress=False)
        state = {k: v.clone() for k, v in model.distributions[0].state_dict().items()}
        state["b"] = pyro.param("b").detach().clone()
        torch.save({"state": state, "rng": torch.get_rng_state()}, os.path.join(out, f"param_rank{rank}.pt"))
    elif mode == "iterative":
        history = model.fit(series_batches(), epochs=2, test_data=series_batches(), progress=False)
        state = {k: v.clone() for k, v in model.distributions.state_dict().items()}
        torch.save({"state": state, "history": dict(history)}, os.path.join(out, f"iter_rank{rank}.pt"))
    elif mode == "batchnorm":
        whole = {k: torch.cat([b[k] for b in data]) for k in ("x", "y")}
        model.fit(whole, epochs=2, batch_size=8, shuffle=False, progress=False)
        state = {k: v.clone() for k, v in model.distributions[0].state_dict().items()}
        test = float(model.test(whole))
        torch.save({"state": state, "test": test}, os.path.join(out, f"bn_rank{rank}.pt"))
    elif mode == "uneven":
        model.fit(data if rank == 0 else data[:-1], epochs=1, progress=False)
    elif mode == "save_rank0":
        model.train(data[0])
        if rank == 0:
            model.save(os.path.join(out, "ckpt.pt"))
        for batch in data:
            model.train(batch)
    dist_utils.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
