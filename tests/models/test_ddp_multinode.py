"""Data-parallel training across two "nodes": two ``torchrun`` launchers on this machine (``--nnodes 2
--node-rank 0/1``, static rendezvous on 127.0.0.1), one process each, equal one process (within 1e-5) for an ML
classifier trained by ``fit``, a VAE, a GAN and an ``IterativeLoss`` model (see ddp_scenarios.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from test_ddp import (WORKER, _free_port, check_ranks_match_one_process, needs_gloo, worker_env, worker_output,
                      write_data)

pytestmark = pytest.mark.other_processes  # (workers: not rerun under --validate-args=off)


@needs_gloo
def test_two_nodes_equal_one_process(tmp_path: Path) -> None:
    data = write_data(tmp_path)
    port = _free_port()
    launchers = []
    for node_rank in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node_rank),
               "--nproc-per-node", "1", "--rdzv-backend", "static", "--rdzv-endpoint", f"127.0.0.1:{port}",
               str(WORKER), str(tmp_path)]
        launchers.append(subprocess.Popen(cmd, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True))
    outputs = []
    try:
        for launcher in launchers:
            outputs.append(launcher.communicate(timeout=480)[0])
    finally:
        for launcher in launchers:  # bounded: a launcher still running after the timeout is killed
            if launcher.poll() is None:
                launcher.kill()
                launcher.communicate()
    for node_rank, (launcher, text) in enumerate(zip(launchers, outputs)):
        assert launcher.returncode == 0, f"node {node_rank}:\n{worker_output(text)}"
    check_ranks_match_one_process(tmp_path, data)
