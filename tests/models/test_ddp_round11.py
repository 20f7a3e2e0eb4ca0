"""Under ``torch.distributed`` (2 CPU processes, gloo): a training call that one process refuses before its
evaluation starts, because its batch is no dict of values (a list) or because it asks for ``return_dict=True``,
is told to the other process, which raises ``RankFailedError`` at once instead of waiting for the collective
timeout; neither takes the step, and the next valid step leaves both with the weights of one process that never
met the refused call."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_ddp import _free_port, needs_gloo, worker_env, worker_output

pytestmark = pytest.mark.other_processes  # (workers: not rerun under --validate-args=off)

WORKER = Path(__file__).with_name("ddp_round11_worker.py")
sys.path.insert(0, str(WORKER.parent))
TIMEOUT_S = 40  # the workers' collective timeout: a process left waiting would take this long, then fail otherwise


def run(tmp_path: Path, scenario: str) -> list[tuple]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(WORKER), str(tmp_path), scenario]
    done = subprocess.run(cmd, env=worker_env(TIMEOUT_S), capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, worker_output(done.stdout + done.stderr)
    return [torch.load(tmp_path / f"round11_{scenario}_rank{r}.pt") for r in (0, 1)]


@needs_gloo
@pytest.mark.parametrize("scenario, bad_rank, error, call", [("list_first", 1, "ArgumentError", 0),
                                                             ("list_later", 1, "ArgumentError", 1),
                                                             ("return_dict", 0, "TypeError", 1)])
def test_a_call_one_process_refuses_is_refused_on_every_process_at_once(tmp_path: Path, scenario: str, bad_rank: int,
                                                                        error: str, call: int) -> None:
    """The refusing process raises its error and the other ``RankFailedError``, well before the timeout (before:
    the other process waited 40 s and raised gloo's timeout error); the other calls train on both processes, and
    the weights after them are equal on both and equal to one process that took only those steps on the whole
    batch (the data-parallel average)."""
    import ddp_round11_worker as worker

    ranks = run(tmp_path, scenario)
    for r in (0, 1):
        calls, _ = ranks[r]
        expected = error if r == bad_rank else "RankFailedError"
        assert [c[0] for c in calls] == ["ok" if i != call else expected for i in range(3)], calls
        assert calls[call][1] < TIMEOUT_S / 2, calls
    one = worker.build()
    for i in range(3):
        if i != call:
            one.train({"x": worker.X8, "y": worker.Y8})
    for r in (0, 1):
        for k, v in one.distributions.state_dict().items():
            torch.testing.assert_close(ranks[r][1][k], v, rtol=1e-5, atol=1e-6)


@needs_gloo
def test_a_refused_call_is_told_at_once_also_when_the_networks_have_buffers(tmp_path: Path) -> None:
    """With a batch norm, the other process's evaluation copies rank 0's buffers before it synchronizes: the
    refusing process takes part in that copy first (probe p394: it announced its refusal into the copy, and both
    waited for the timeout, then raised gloo's error); both raise at once, and the weights and statistics after
    the valid calls are equal on both."""
    ranks = run(tmp_path, "list_later_bn")
    for r in (0, 1):
        calls, _ = ranks[r]
        assert [c[0] for c in calls] == ["ok", "ArgumentError" if r == 1 else "RankFailedError", "ok"], calls
        assert calls[1][1] < TIMEOUT_S / 2, calls
    for k, v in ranks[0][1].items():
        torch.testing.assert_close(ranks[1][1][k], v)
