"""Data-parallel step time on this machine: 1 and 2 processes, the share spent communicating, and the hand-written
per-tensor gradient averaging that ``DistributedDataParallel`` replaced (issue 14).

The model is the VAE of ``vae.py`` (#z=10, #h=400, analytic KL) trained by ``Model.train`` with Adam, on a global
batch of 128 rows (64 per process with 2). Each process uses one torch thread. Two engines run interleaved in rounds
in the same processes, on the same batches:

* **DDP**: ``Model`` as it is (the networks wrapped in ``DistributedDataParallel``, gradients bucketed and averaged
  during ``backward``). The communication share is ``1 - t(no_sync) / t(step)``: the step with DDP's ``no_sync``
  (no gradient all-reduce) against the full step, per round.
* **hand-written**: the same ``Model`` without the DDP wrapper, its gradients averaged after ``backward`` by one
  ``all_reduce`` per gradient tensor (the engine before issue 14); the communication share is the time of those
  all-reduces over the step.

With one process there is no process group: both rows are the plain single-process ``Model.train`` step.

Usage::

    .venv/bin/python benchmarks/ddp.py [--rounds 20] [--steps 5] [--nprocs 1,2]

prints a markdown table; each worker count runs under ``torchrun --nproc_per_node N`` (gloo, 127.0.0.1).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rounds: int, steps: int) -> None:
    import torch
    import torch.distributed as tdist

    from benchmarks.pyro_dgm_contenders import _vae_dists, _vae_loss
    from benchmarks.vae import VAEConfig, make_data
    from pyro_dgm.models import Model
    from pyro_dgm.models import distributed as dist_utils

    torch.set_num_threads(1)
    cfg = VAEConfig()
    device = torch.device("cpu")
    data = make_data(cfg, device)

    def build() -> Model:
        q, p, prior = _vae_dists(cfg, device)
        return Model(_vae_loss(q, p, prior, mc=False), distributions=[p, q], optimizer_params={"lr": cfg.lr})

    ddp_model, hand_model = build(), build()
    n, r = dist_utils.world_size(), dist_utils.rank()
    hand_model._dgm_ddp = None  # the pre-issue-14 engine: plain loss evaluation, per-tensor averaging before the step
    comm = [0.0]
    if n > 1:
        dist_utils.broadcast_module(hand_model.distributions)
        step_fn = hand_model.optimizer.step

        def averaged_step(*args, **kwargs):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            for prm in hand_model._dgm_params:
                if prm.grad is None:
                    prm.grad = torch.zeros_like(prm)
                tdist.all_reduce(prm.grad, op=tdist.ReduceOp.SUM)
                prm.grad.div_(n)
            comm[0] += time.perf_counter() - t0
            return step_fn(*args, **kwargs)

        hand_model.optimizer.step = averaged_step  # type: ignore[method-assign]
    i = [0]

    def batch() -> dict:
        x = data[i[0] % len(data)]
        i[0] += 1
        return {"x": x.tensor_split(n)[r]}

    def timed(fn) -> float:  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        return (time.perf_counter() - t0) / steps

    def ddp_nosync() -> None:
        with ddp_model._dgm_ddp.no_sync():
            ddp_model.train(batch())

    for _ in range(5):  # warm-up
        ddp_model.train(batch())
        hand_model.train(batch())
    out: dict[str, list[float]] = {"ddp": [], "ddp_share": [], "hand": [], "hand_share": []}
    for k in range(rounds):
        for which in (("ddp", "hand") if k % 2 == 0 else ("hand", "ddp")):
            if which == "ddp":
                t = timed(lambda: ddp_model.train(batch()))
                out["ddp"].append(t)
                if n > 1:
                    out["ddp_share"].append(max(0.0, 1 - timed(ddp_nosync) / t))
            else:
                comm[0] = 0.0
                t = timed(lambda: hand_model.train(batch()))
                out["hand"].append(t)
                out["hand_share"].append(comm[0] / steps / t)
    if n > 1:
        dist_utils.shutdown()
    if r == 0:
        print("RESULT " + json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--nprocs", default="1,2")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.rounds, args.steps)
        return
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    rows = []
    for nproc in [int(v) for v in args.nprocs.split(",")]:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), os.path.abspath(__file__),
               "--worker", "--rounds", str(args.rounds), "--steps", str(args.steps)]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
        line = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
        if run.returncode != 0 or not line:
            raise SystemExit(f"{nproc} process(es) failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
        res = json.loads(line[0][len("RESULT "):])
        med = {k: statistics.median(v) if v else float("nan") for k, v in res.items()}
        rows.append((nproc, med))
    import torch
    print(f"VAE #z=10 #h=400, global batch 128, Model.train, CPU ({os.cpu_count()} cores), 1 thread per process, "
          f"torch {torch.__version__}, gloo; median of {args.rounds} rounds x {args.steps} steps")
    print()
    print("| processes | DDP ms/step | DDP communication share | hand-written ms/step | hand-written communication "
          "share | DDP / hand-written |")
    print("|---|---|---|---|---|---|")
    for nproc, med in rows:
        share = "–" if nproc == 1 else f"{100 * med['ddp_share']:.0f} %"
        hshare = "–" if nproc == 1 else f"{100 * med['hand_share']:.0f} %"
        print(f"| {nproc} | {1e3 * med['ddp']:.2f} | {share} | {1e3 * med['hand']:.2f} | {hshare} | "
              f"{med['ddp'] / med['hand']:.2f} |")


if __name__ == "__main__":
    main()
