"""Run by test_ddp_svi.py under ``torchrun`` (2 processes, CPU, gloo): every scenario of ddp_svi_scenarios.py;
rank ``r`` writes its weights to ``OUT/svi_rank<r>.pt``."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ddp_svi_scenarios import SCENARIOS, run_rank  # noqa: E402

from pyro_dgm.models import distributed as dist_utils  # noqa: E402


def main(out: str) -> None:
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    result = {name: run_rank(name, rank) for name in SCENARIOS}
    assert dist_utils.is_distributed() and dist_utils.world_size() == 2  # set up by the first DistributedELBO
    torch.save(result, os.path.join(out, f"svi_rank{rank}.pt"))
    dist_utils.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
