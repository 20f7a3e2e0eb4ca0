"""Data-parallel training under torchrun (2 CPU processes, gloo; see ddp_round10_worker.py), probe p366:

- the first step of a model whose loss creates a Pyro parameter runs twice (the wrapper is rebuilt over the new
  parameter), and a batch norm in its network updated its running statistics at both runs (``num_batches_tracked``
  2 after one step; WRONG, silent);
- ``DistributedELBO`` over Pyro's ``Trace_ELBO`` with a network that the model registers with ``pyro.module`` never
  copied that network's buffers from rank 0, so the processes' batch-norm statistics drifted apart (WRONG, silent);

and probe p368's: buffers that the network rebinds were updated twice at that step (the fix restored the old
objects), and the buffers of networks the loss reads without training them (a distribution left out of
``distributions``, a GAN's discriminator run by the generator's step) were never copied from rank 0, so ``test``
gave each process another number (WRONG, silent).

References: one process (plain Pyro for the SVI scenario) stepping on rank 0's rows, whose buffers the processes
keep (``design.md``); every process holds the same buffers.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_ddp import _free_port, needs_gloo, worker_env, worker_output

pytestmark = pytest.mark.other_processes  # (workers: not rerun under --validate-args=off)

WORKER = Path(__file__).with_name("ddp_round10_worker.py")
sys.path.insert(0, str(WORKER.parent))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("round10")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(WORKER), str(out)]
    run = subprocess.run(cmd, env=worker_env(45), capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, worker_output(run.stdout + run.stderr)
    return [torch.load(out / f"round10_rank{r}.pt") for r in (0, 1)]


@needs_gloo
def test_a_first_step_that_creates_a_pyro_parameter_updates_the_batch_norm_once(ranks: list[dict]) -> None:
    """After one step, each process's batch norm holds one update (``num_batches_tracked`` 1, not 2) and the
    running statistics of one process stepping on rank 0's rows (before: [-0.174, -0.268, ...] against
    [-0.116, -0.179, ...])."""
    import ddp_round10_worker as worker

    expected = worker.model_step(slice(0, 4))
    for r in (0, 1):
        got = ranks[r]["model"]
        assert int(got["1.num_batches_tracked"]) == 1
        for k in ("1.running_mean", "1.running_var"):
            torch.testing.assert_close(got[k], expected[k], rtol=1e-5, atol=1e-6)


@needs_gloo
def test_a_pyro_module_networks_buffers_are_rank_zeros_on_every_process(ranks: list[dict]) -> None:
    """The network registered by ``pyro.module`` (not given as ``networks``): after the first step its statistics
    are plain Pyro's on rank 0's rows (one update), and after each of 3 steps both processes hold the same buffers
    (before: rank 0 [-0.481, -0.038, ...] and rank 1 [-0.958, -0.300, ...] after 3 steps)."""
    import ddp_round10_worker as worker

    plain = worker.svi_steps(slice(0, 4), distributed=False, steps=1)[0]
    first = ranks[0]["svi"][0]
    assert int(first["1.num_batches_tracked"]) == 1
    for k in ("1.running_mean", "1.running_var"):
        torch.testing.assert_close(first[k], plain[k], rtol=1e-5, atol=1e-6)
    for step in range(3):
        for k, v in ranks[0]["svi"][step].items():
            torch.testing.assert_close(ranks[1]["svi"][step][k], v, rtol=0, atol=0)
    assert int(ranks[0]["svi"][2]["1.num_batches_tracked"]) == 3


@needs_gloo
def test_buffers_that_the_network_rebinds_are_updated_once_at_the_first_step(ranks: list[dict]) -> None:
    """``self.avg = 0.5 * self.avg + 0.5 * mean`` at the step that runs twice: one update, as one process on rank 0's
    rows (before: count 2, avg [-0.552, ...] against [-0.368, ...])."""
    import ddp_round10_worker as worker

    expected = worker.ema_step(slice(0, 4))
    for r in (0, 1):
        assert int(ranks[r]["ema"]["count"]) == 1
        torch.testing.assert_close(ranks[r]["ema"]["avg"], expected["avg"], rtol=1e-5, atol=1e-6)


@needs_gloo
@pytest.mark.parametrize("scenario", ["untrained", "gan"])
def test_the_buffers_of_networks_the_loss_reads_are_rank_zeros_on_every_process(ranks: list[dict],
                                                                                 scenario: str) -> None:
    """A distribution the loss reads that ``distributions`` leaves out, and a GAN's discriminator (which the
    generator's step runs in training mode on each process's rows): the same buffers on both processes after the
    steps, and the same test loss of the same batch (before: rank 0 [0.025, 0.156, ...] and rank 1 [0.213, 0.344,
    ...]; the GAN's test 1.1703 against 1.1657). For the untrained distribution they are one process's on rank 0's
    rows."""
    import ddp_round10_worker as worker

    for k, v in ranks[0][scenario][0].items():
        torch.testing.assert_close(ranks[1][scenario][0][k], v, rtol=0, atol=0)
    assert ranks[0][scenario][1] == ranks[1][scenario][1]
    if scenario == "untrained":
        expected = worker.untrained_steps(slice(0, 4))[0]
        for k in ("1.running_mean", "1.running_var"):
            torch.testing.assert_close(ranks[0][scenario][0][k], expected[k], rtol=1e-5, atol=1e-6)


@needs_gloo
def test_the_second_run_of_a_first_step_computes_with_the_buffers_the_step_found(ranks: list[dict]) -> None:
    """Probe p371: a network that reads the buffer it has just updated (``y - self.avg``) computed the second run of
    the first step with the buffer the first run had updated: with rank 0's rows on both processes (the step must
    be one process's exactly), loss 3.690 and other weights where one process gives 3.716. The second run starts
    from the buffers as the step found them now: the loss, the weights and the buffers are one process's."""
    import ddp_round10_worker as worker

    expected = worker.ema_step(slice(0, 4))
    for r in (0, 1):
        got = ranks[r]["ema_same"]
        for k, v in expected.items():
            torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6)
