"""A network part frozen when the ``Model`` is built and unfrozen later, under DistributedDataParallel (2 CPU
processes, torchrun, gloo; see ddp_round7_worker.py).

The optimizer holds every parameter, as Pixyz's does, so an unfrozen part is trained. A probe found that under DDP
its gradient was not averaged (DDP averages the parameters that required grad when it was built): each process
stepped on its own slice's gradient and the replicas drifted apart silently. The wrapper is now rebuilt when the
networks' ``requires_grad`` flags change, and the processes take the step one process takes on the whole batch.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_ddp import _free_port, needs_gloo, worker_env

pytestmark = pytest.mark.other_processes  # (workers: not rerun under --validate-args=off)

WORKER = Path(__file__).with_name("ddp_round7_worker.py")
sys.path.insert(0, str(WORKER.parent))


@needs_gloo
def test_a_part_unfrozen_after_the_model_is_built_is_averaged_over_the_processes(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(WORKER), str(tmp_path)]
    run = subprocess.run(cmd, env=worker_env(45), capture_output=True, text=True, timeout=110)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    ranks = [torch.load(tmp_path / f"round7_rank{r}.pt") for r in (0, 1)]
    import ddp_round7_worker as worker

    one = worker.train(slice(0, 16)).state_dict()  # one process on the whole batch (the loss is a mean over rows)
    assert ranks[0].keys() == ranks[1].keys() == one.keys()
    for k in one:
        assert torch.equal(ranks[0][k], ranks[1][k]), k
        torch.testing.assert_close(ranks[0][k], one[k], rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    assert not torch.equal(one["b.weight"], worker.P().b.weight)  # (the program trains the unfrozen part)
