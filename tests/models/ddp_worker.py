"""Run by test_ddp.py under ``torchrun --nproc_per_node 2``: trains an ML classifier with Model.fit on CPU (gloo).

Every process seeds its own random state (rank), so the replicas start from different weights unless Model broadcasts
rank 0's. Each writes its final weights and history to ``<out>/rank<r>.pt``.
"""
import os
import sys

import pyro
import torch
import torch.distributed as tdist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dgm_model_helpers import make_ml  # noqa: E402


def main(out: str) -> None:
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    pyro.set_rng_seed(rank)
    model = make_ml(lr=0.1)  # sets up the process group from torchrun's environment
    assert tdist.is_initialized() and tdist.get_world_size() == 2 and tdist.get_backend() == "gloo"
    data = torch.load(os.path.join(out, "data.pt"))
    history = model.fit(data, epochs=2, batch_size=32, shuffle=True, test_data=data, progress=False)
    torch.save({"state": model.distributions.state_dict(), "history": dict(history), "step": model.step},
               os.path.join(out, f"rank{rank}.pt"))
    tdist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
