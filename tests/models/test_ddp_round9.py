"""Data-parallel training under torchrun (2 CPU processes, gloo; see ddp_round9_worker.py), probe p232:

- a parameter trained through ``model.optimizer.add_param_group`` (a learned weight of the loss) was never averaged
  across the processes: each took its own step with it, and the networks' weights followed (WRONG, silent);
- ``fit`` given the standard ``DataLoader(..., sampler=DistributedSampler(...))`` cut each process's batch again,
  so half of the rows were never trained on (WRONG, silent);
- ``sys.exit()`` inside one process's forward left the other waiting at the step's synchronization until the
  process group's timeout.

References: one process trained on the whole batch (the rows of both processes), and the rows of the data set.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_ddp import _free_port, needs_gloo, worker_env, worker_output

pytestmark = pytest.mark.other_processes  # (workers: not rerun under --validate-args=off)

WORKER = Path(__file__).with_name("ddp_round9_worker.py")
sys.path.insert(0, str(WORKER.parent))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("round9")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(WORKER), str(out)]
    run = subprocess.run(cmd, env=worker_env(45), capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, worker_output(run.stdout + run.stderr)
    return [torch.load(out / f"round9_rank{r}.pt") for r in (0, 1)]


@needs_gloo
def test_a_parameter_added_to_the_optimizer_is_averaged_across_processes(ranks: list[dict]) -> None:
    """``alpha`` (the loss's learned weight) and the network after 3 steps on 4 rows per process are one process's
    after 3 steps on the 8 rows, on both processes (a loss that is a mean over the batch). Before: rank 0's alpha
    was -0.730 and rank 1's -0.514 where one process gives -0.621."""
    import ddp_round9_worker as worker

    alpha, weights = worker.extra(slice(0, 8))
    for r in (0, 1):
        assert ranks[r]["extra"][0] == pytest.approx(alpha, rel=1e-5), r
        for k in weights:
            torch.testing.assert_close(ranks[r]["extra"][1][k], weights[k], rtol=1e-5, atol=1e-6)


@needs_gloo
def test_fit_with_a_distributed_sampler_trains_on_every_row_once_per_epoch(ranks: list[dict]) -> None:
    """16 rows, batches of 4 per process, 2 epochs: each epoch, the two processes' networks saw every row exactly
    once between them (before: 8 of the 16, each process's batch cut in two again), the sampler's ``set_epoch`` was
    called (its epoch is the last one's), and the two processes end with the same weights and history."""
    seen = [ranks[r]["sampler"][0] for r in (0, 1)]
    per_epoch = [sorted(seen[0][8 * e:8 * e + 8] + seen[1][8 * e:8 * e + 8]) for e in (0, 1)]
    assert per_epoch == [list(range(16))] * 2
    assert seen[0][:8] != seen[0][8:], "the shuffled order did not change with the epoch"
    assert ranks[0]["sampler"][3] == ranks[1]["sampler"][3] == 2
    assert ranks[0]["sampler"][1] == ranks[1]["sampler"][1]
    for k, v in ranks[0]["sampler"][2].items():
        torch.testing.assert_close(ranks[1]["sampler"][2][k], v)


@needs_gloo
def test_sys_exit_in_one_processs_forward_makes_the_other_raise_at_once(ranks: list[dict]) -> None:
    """Rank 1's forward calls ``sys.exit()`` at the second step: rank 1 raises its ``SystemExit``, rank 0 a
    ``RankFailedError`` within a second (not the 45 s timeout), and both take the third step."""
    zero, one = ranks[0]["exit"], ranks[1]["exit"]
    assert [k for k, _ in one] == ["ok", "SystemExit", "ok"]
    assert [k for k, _ in zero] == ["ok", "RankFailedError", "ok"]
    assert zero[1][1] < 10.0


@needs_gloo
def test_fit_warns_that_a_padding_samplers_repeated_test_rows_count_in_the_metrics(ranks: list[dict]) -> None:
    """Test data of 7 rows through a ``DistributedSampler`` on 2 processes: the sampler repeats a row to give each
    process 4, and that row counts in the test metrics, which one process would not count (26.39 for the 7 rows'
    30.01 in probe p235's case). ``fit`` says so on every process, naming the counts."""
    for r in (0, 1):
        assert len(ranks[r]["padded"]) == 1, ranks[r]["padded"]
        assert "pads its 7 rows with 1 repeated row(s)" in ranks[r]["padded"][0]
