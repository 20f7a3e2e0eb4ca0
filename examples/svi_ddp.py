r"""Pyro's own SVI, data-parallel on several processes: a VAE on 8x8 digits trained under ``torchrun``.

The VAE is ``vae_digits.py``'s (``q(z|x)``, ``p(x|z)``, ``p_{prior}(z)``, ``joint = p * prior``) and so is the
training loop, ``SVI(joint.model, q.guide, pyro.optim.Adam(...), loss)``, with one change: the loss is wrapped in
``pyro_dgm.models.distributed.DistributedELBO``, which evaluates it inside torch's ``DistributedDataParallel`` over
the networks. Launched with ``torchrun --nproc-per-node N``, every process

* builds the same model (DDP broadcasts rank 0's weights when the ``DistributedELBO`` is built),
* cuts every global batch of ``--batch-size`` rows, shuffled the same way on every process, into its own slice,
* calls ``svi.step`` on its slice: the gradients are averaged across the processes during ``backward``, so every
  replica takes the same step: the step one process takes on the whole global batch (``--loss trace``:
  ``Trace_ELBO`` sums over the rows, hence ``global_loss="sum"``; ``--loss pyro_dgm``: the pyro_dgm formula
  ``KL(q||prior) - E_q[log p(x|z)]``, a mean over the rows, hence ``"mean"``),
* draws its own Monte Carlo noise (seeded by ``--seed`` plus its rank).

Only rank 0 prints and writes the figure. Without ``torchrun`` it runs in one process, exactly as ``SVI`` with the
unwrapped loss.

Usage::

    torchrun --nproc-per-node 2 examples/svi_ddp.py          # 2 processes, about 30 s on 2 CPU cores
    torchrun --nproc-per-node 2 examples/svi_ddp.py --smoke  # a few seconds
    python examples/svi_ddp.py --smoke                       # one process
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (command line, seeding, figures; finds pyro_dgm in a checkout)

import pyro  # noqa: E402
import torch  # noqa: E402
from pyro.infer import SVI, Trace_ELBO  # noqa: E402
from vae_digits import Generator, Inference, load_data, save_figure  # noqa: E402

from pyro_dgm.distributions import Normal  # noqa: E402
from pyro_dgm.losses import E, KullbackLeibler, LogProb  # noqa: E402
from pyro_dgm.models import distributed as dist  # noqa: E402

METRIC = ("test_elbo", "max")  # the test ELBO per image, nats (see tests/examples/test_examples.py)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    """Train data-parallel (or in one process), print the ELBO per epoch on rank 0, write the figure; returns the
    history (``"epoch"``, ``"train_elbo"``, ``"test_elbo"``, per image, the same on every process)."""
    ap = _common.parser(__doc__, "out/svi_ddp.png", epochs=60, lr=3e-3, batch_size=128)
    ap.add_argument("--loss", choices=["trace", "pyro_dgm"], default="trace",
                    help="Pyro's Trace_ELBO on joint.model/q.guide, or the pyro_dgm formula")
    ap.add_argument("--z-dim", type=int, default=8, help="latent dimension")
    ap.add_argument("--hidden", type=int, default=256, help="hidden units of encoder and decoder")
    args = ap.parse_args(argv)
    dist.setup_from_env()  # the process group, from torchrun's environment (nothing without torchrun)
    rank, world = dist.rank(), dist.world_size()
    _common.setup(args.seed, args.threads)

    x_train, x_test = load_data(n_test=297, seed=args.seed)
    epochs = args.epochs
    if args.smoke:
        x_train, epochs = x_train[:256], 3
    q, p = Inference(args.z_dim, args.hidden), Generator(args.z_dim, args.hidden)
    prior = Normal(loc=0.0, scale=1.0, var=["z"], features_shape=[args.z_dim], name="p_{prior}")
    joint = p * prior
    if args.loss == "trace":
        elbo = dist.DistributedELBO(Trace_ELBO(), [p, q], global_loss="sum")  # rank 0's networks broadcast now
    else:
        elbo = dist.DistributedELBO((KullbackLeibler(q, prior) - E(q, LogProb(p))).mean())
    svi = SVI(joint.model, q.guide, pyro.optim.Adam({"lr": args.lr}), elbo)
    pyro.set_rng_seed(args.seed + rank)  # each process its own Monte Carlo noise
    if rank == 0:
        print(f"{world} process(es); {joint.prob_joint_factorized_and_text}, guide {q.prob_text}; loss: "
              f"{'Trace_ELBO' if args.loss == 'trace' else elbo.elbo}")

    n = len(x_train)
    order = torch.Generator().manual_seed(args.seed)  # the same shuffles on every process
    history: dict[str, list[float]] = {"epoch": [], "train_elbo": [], "test_elbo": []}
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        total = torch.zeros(())
        for idx in torch.randperm(n, generator=order).split(args.batch_size):
            mine = dist.shard({"x": x_train[idx]})  # this process's slice of the global batch
            value = svi.step(**mine)  # this process's loss: a sum over its rows, or a mean
            total += value if args.loss == "trace" else value * len(mine["x"])
        train_elbo = -float(dist.all_reduce_mean(total)) * world / n
        with torch.no_grad():  # the whole test set on every process (the same value everywhere)
            test_elbo = -Trace_ELBO().loss(joint.model, q.guide, x=x_test) / len(x_test)
        history["epoch"].append(epoch)
        history["train_elbo"].append(train_elbo)
        history["test_elbo"].append(test_elbo)
        if rank == 0:
            print(f"epoch {epoch:3d}  train ELBO {train_elbo:8.3f}  test ELBO {test_elbo:8.3f}  per image  "
                  f"({time.perf_counter() - start:5.1f} s)")

    if rank == 0:
        cols = 16
        with torch.no_grad():
            shown = x_test[:3 * cols]
            recon = p.sample_mean(q.sample({"x": shown}, sample_mean=True, return_all=False))
            samples = p.sample_mean(prior.sample(batch_n=3 * cols))
        save_figure(args.out, shown, recon, samples, cols,
                    f"SVI on {world} process(es): {epochs} epochs, test ELBO {test_elbo:.2f} nats/image")
        print(f"final test ELBO {test_elbo:.3f} nats per image; wrote {args.out}")
    dist.shutdown()  # a barrier, then the process group is destroyed (nothing without torchrun)
    return history


if __name__ == "__main__":
    main()
