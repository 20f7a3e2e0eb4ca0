"""Run by test_ddp*.py under ``torchrun`` (2 processes in all, on one or two "nodes"), on CPU with gloo.

``ddp_worker.py OUT``: trains an ML classifier with ``Model.fit`` (every process seeds its own random state, so the
replicas start from different weights unless the model broadcasts rank 0's), then the VAE, GAN and IterativeLoss
scenarios of ddp_scenarios.py; each rank writes its weights and history to ``OUT/rank<r>.pt``.

``ddp_worker.py OUT fail``: rank 1 raises in its second training step; rank 0 must not wait for it.

``ddp_worker.py OUT hang``: rank 1 sleeps after its first step (for longer than the test waits); rank 0's next
collective must time out and name rank 1.
"""
import os
import sys
import time

import pyro
import torch
import torch.distributed as tdist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ddp_scenarios import SCENARIOS, train_rank, weights  # noqa: E402
from dgm_model_helpers import make_ml  # noqa: E402

from pyro_dgm.models import distributed as dist_utils  # noqa: E402


def main(out: str, mode: str) -> None:
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    pyro.set_rng_seed(rank)
    model = make_ml(lr=0.1)  # sets up the process group from torchrun's environment
    assert tdist.is_initialized() and tdist.get_world_size() == 2 and tdist.get_backend() == "gloo"
    assert model._dgm_ddp is not None
    data = torch.load(os.path.join(out, "data.pt"))
    if mode in ("fail", "hang"):
        model.train(data)
        if rank == 1 and mode == "fail":
            raise RuntimeError("rank 1 fails on purpose")
        if rank == 1:
            time.sleep(1000)
        for _ in range(100):
            model.train(data)
        return
    history = model.fit(data, epochs=2, batch_size=32, shuffle=True, test_data=data, progress=False)
    result = {"state": model.distributions.state_dict(), "history": dict(history), "step": model.step}
    for name in SCENARIOS:
        result[name] = weights(train_rank(name, rank))
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    dist_utils.shutdown()  # a barrier, then destroy_process_group: no rank tears down while another communicates


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "train")
