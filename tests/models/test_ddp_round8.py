"""``fit`` under torchrun given a ``DataLoader`` or a list of batches whose last batch has fewer rows than processes
(2 CPU processes, gloo; see ddp_round8_worker.py). Probe p160: a dict of tensors dropped that batch, as the docs say,
but the other forms raised "shard: ... has 1 rows, fewer than the 2 processes" after the epoch's earlier steps.

And the history of an ``IterativeLoss`` model (batches of time-first series ``[T, B, ...]``) weighted each batch by
``T``, or by ``B``, depending on the order of the batch dict's keys.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_ddp import _free_port, needs_gloo, worker_env

pytestmark = pytest.mark.other_processes  # (workers: not rerun under --validate-args=off)

WORKER = Path(__file__).with_name("ddp_round8_worker.py")
sys.path.insert(0, str(WORKER.parent))


@needs_gloo
def test_a_last_batch_with_fewer_rows_than_processes_is_dropped_for_every_form(tmp_path: Path) -> None:
    """Each form trains 2 epochs of 2 steps; the three forms give the same history and weights, on both ranks, and
    they are one process's on the two full batches (the mean over rows)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(WORKER), str(tmp_path)]
    run = subprocess.run(cmd, env=worker_env(45), capture_output=True, text=True, timeout=110)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    ranks = [torch.load(tmp_path / f"round8_rank{r}.pt") for r in (0, 1)]
    import ddp_round8_worker as worker

    one = worker.fit([{"x": worker.X[s:s + 16], "y": worker.Y[s:s + 16]} for s in (0, 16)], {})
    for name in ("dict", "loader", "list"):
        for r in (0, 1):
            history, weights = ranks[r][name]
            assert history == pytest.approx(one[0], rel=1e-5), (name, r)
            for k in one[1]:
                torch.testing.assert_close(weights[k], one[1][k], rtol=1e-5, atol=1e-6)


def test_the_history_of_time_first_series_weights_each_batch_by_its_rows() -> None:
    """Two batches of 4 and 12 sequences of 3 steps: the epoch's loss is the row-weighted mean of the two steps'
    losses (a hand-written loop's), whatever the order of the batch dict's keys (it weighted by T when 'x' came
    first)."""
    from ddp_scenarios import X, Z, build_dmm

    g = torch.Generator().manual_seed(4)
    b1 = {"x": torch.randn(3, 4, X, generator=g), "z_prev": torch.zeros(4, Z)}
    b2 = {"x": torch.randn(3, 12, X, generator=g), "z_prev": torch.zeros(12, Z)}
    model = build_dmm(0)
    torch.manual_seed(1)
    steps = [float(model.train(b)) for b in (b1, b2)]
    expected = (4 * steps[0] + 12 * steps[1]) / 16
    for batches in ([b1, b2], [{"z_prev": b["z_prev"], "x": b["x"]} for b in (b1, b2)]):
        model = build_dmm(0)
        torch.manual_seed(1)
        history = model.fit(batches, epochs=1, progress=False)
        assert history["train_loss"][0] == pytest.approx(expected, rel=1e-6)
