r"""Data-parallel training under ``torch.distributed``, on torch's ``DistributedDataParallel`` (what Pixyz's
``DataParalleledLoss`` did).

Launch a training script with ``torchrun --nproc_per_node N script.py`` (on several machines: ``torchrun`` on each,
see the README): the first :class:`~pyro_dgm.models.Model` built sets up the process group from the environment
torchrun exports (``gloo`` on CPU, ``nccl`` when CUDA is available) with a bounded timeout (:data:`DEFAULT_TIMEOUT`,
settable), and wraps the networks it trains in :class:`torch.nn.parallel.DistributedDataParallel`: the evaluation of
the loss runs as the forward of a module holding them (:class:`LossForward`), so DDP broadcasts rank 0's weights
when it is built and averages the gradients during ``backward`` (bucketed, overlapped with the backward pass), and
every replica takes the same step. :meth:`Model.fit <pyro_dgm.models.Model.fit>` gives each process its slice of
every global batch, so a step over a batch of ``B`` rows on ``N`` processes is the step one process takes over the
``B`` rows, when the loss is a mean over the batch and ``N`` divides ``B``.

Without a process group (or with one process) nothing is wrapped and every function here does nothing.

End a script with :func:`shutdown` (or let the exit handler that :func:`setup_from_env` registers do it): every
process waits for the others at a barrier before the process group is destroyed, so no process tears down its
connections while another still uses them.
"""
from __future__ import annotations

import atexit
import datetime
import os
from typing import Any, Mapping

import torch
import torch.distributed as tdist
from torch import Tensor, nn

from pyro_dgm.losses.base import Loss

__all__ = ["is_distributed", "rank", "world_size", "setup_from_env", "shutdown", "DEFAULT_TIMEOUT", "LossForward",
           "wrap", "broadcast_module", "broadcast_tensor", "all_reduce_mean", "all_reduce_max", "shard",
           "DataParalleledLoss"]

DEFAULT_TIMEOUT = datetime.timedelta(minutes=5)
"""How long a collective (and the set-up) waits for the other processes before raising; overridden by the
environment variable ``PYRO_DGM_DIST_TIMEOUT`` (seconds) or the ``timeout`` argument of :func:`setup_from_env`."""


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return tdist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return tdist.get_world_size() if is_distributed() else 1


def _timeout(timeout: float | datetime.timedelta | None) -> datetime.timedelta:
    if timeout is None:
        env = os.environ.get("PYRO_DGM_DIST_TIMEOUT")
        if not env:
            return DEFAULT_TIMEOUT
        try:
            timeout = float(env)
        except ValueError:
            raise ValueError("setup_from_env: PYRO_DGM_DIST_TIMEOUT must be a number of seconds, "
                             f"got {env!r}") from None
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        timeout = datetime.timedelta(seconds=float(timeout))
    if not isinstance(timeout, datetime.timedelta) or timeout.total_seconds() <= 0:
        raise ValueError("setup_from_env: timeout must be a positive number of seconds or a timedelta, "
                         f"got {timeout!r}")
    return timeout


def setup_from_env(backend: str | None = None, timeout: float | datetime.timedelta | None = None) -> bool:
    """Initialize the default process group from torchrun's environment (``WORLD_SIZE`` > 1), if not done yet.

    Parameters
    ----------
    backend : str, optional
        ``nccl`` when CUDA is available, else ``gloo``.
    timeout : float (seconds) or timedelta, optional
        How long the set-up and every collective wait for the other processes before raising (so a process that
        died or hangs ends the job within that bound, not torch's 30 minutes). Default: ``PYRO_DGM_DIST_TIMEOUT``
        (seconds) when set, else :data:`DEFAULT_TIMEOUT` (5 minutes).

    Returns
    -------
    bool
        Whether a process group of more than one process is running. A group created here is shut down at exit
        (:func:`shutdown`) unless the script did it.

    Examples
    --------
    >>> setup_from_env()  # without torchrun's environment: nothing to do
    False
    """
    if not tdist.is_available():
        return False
    if not tdist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1 and "MASTER_ADDR" in os.environ:
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl" and "LOCAL_RANK" in os.environ:
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        tdist.init_process_group(backend=backend, timeout=_timeout(timeout))
        atexit.register(_shutdown_at_exit)
    return is_distributed()


def _shutdown_at_exit() -> None:
    import sys

    if getattr(sys, "last_value", None) is not None or getattr(sys, "last_exc", None) is not None:
        # the script ended on an uncaught exception: the other processes will not come to the barrier
        if tdist.is_available() and tdist.is_initialized():
            tdist.destroy_process_group()
        return
    shutdown()


def shutdown(timeout: float | datetime.timedelta | None = None) -> None:
    """Wait for every process at a barrier, then destroy the default process group (no-op without one).

    Destroying the group closes this process's connections; a process that did it while another was still in its
    last collective made that one abort at teardown (``terminate called without an active exception``). The
    barrier (gloo's ``monitored_barrier``, which names the ranks that did not arrive) removes that race; a process
    that does not arrive within ``timeout`` makes the others raise, naming it.
    """
    if not (tdist.is_available() and tdist.is_initialized()):
        return
    try:
        if tdist.get_world_size() > 1:
            if tdist.get_backend() == "gloo":
                tdist.monitored_barrier(timeout=_timeout(timeout), wait_all_ranks=True)
            else:
                tdist.barrier()
    finally:
        tdist.destroy_process_group()


class LossForward(nn.Module):
    """The evaluation of a loss as the forward of a module that holds the trained networks, so that
    ``DistributedDataParallel`` wrapping it sees the forward pass (its hooks prepare the gradient reduction).

    ``forward(loss, x_dict, kwargs)`` returns ``loss.eval(x_dict, return_terms=True, **kwargs)``.
    """

    def __init__(self, networks: nn.Module) -> None:
        super().__init__()
        self.networks = networks

    def forward(self, loss: Any, x_dict: Any, kwargs: Mapping[str, Any]) -> Any:
        return loss.eval(x_dict, return_terms=True, **kwargs)


def wrap(networks: nn.Module, **ddp_kwargs: Any) -> nn.Module | None:
    """``DistributedDataParallel(LossForward(networks))`` under a process group of more than one process, else None.

    Building it broadcasts rank 0's parameters and buffers to every process. ``find_unused_parameters`` defaults to
    True (a network listed for training that a step does not use gets a zero gradient on every process, as in a
    single process); ``ddp_kwargs`` are passed to ``DistributedDataParallel`` and override the defaults.
    """
    if not is_distributed() or not any(p.requires_grad for p in networks.parameters()):
        if is_distributed():
            broadcast_module(networks)
        return None
    from torch.nn.parallel import DistributedDataParallel

    options: dict[str, Any] = {"find_unused_parameters": True}
    if torch.cuda.is_available() and tdist.get_backend() == "nccl":
        device = next(networks.parameters()).device
        if device.type == "cuda":
            options["device_ids"] = [device.index if device.index is not None else torch.cuda.current_device()]
    options.update(ddp_kwargs)
    return DistributedDataParallel(LossForward(networks), **options)


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every process (so the replicas start identical)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            tdist.broadcast(t.data, src=src)


def broadcast_tensor(value: Tensor, src: int = 0) -> Tensor:
    """Rank ``src``'s ``value`` on every process (``value`` itself without a process group)."""
    if not is_distributed():
        return value
    out = value.clone()
    if tdist.get_backend() == "nccl":
        out = out.cuda()
    tdist.broadcast(out, src=src)
    return out.to(value.device)


def all_reduce_mean(value: Tensor) -> Tensor:
    """The mean of ``value`` over the processes (``value`` itself without a process group)."""
    if not is_distributed():
        return value
    out = value.detach().clone()
    tdist.all_reduce(out, op=tdist.ReduceOp.SUM)
    return out / tdist.get_world_size()


def all_reduce_max(value: Tensor) -> Tensor:
    """The maximum of ``value`` over the processes (``value`` itself without a process group)."""
    if not is_distributed():
        return value
    out = value.detach().clone()
    if tdist.get_backend() == "nccl":
        out = out.cuda()
    tdist.all_reduce(out, op=tdist.ReduceOp.MAX)
    return out.to(value.device)


def shard(batch: Mapping[str, Any], n: int | None = None, r: int | None = None) -> dict[str, Any]:
    """This process's contiguous slice (along dim 0) of every tensor of ``batch``; other values are kept.

    Raises
    ------
    ValueError
        If the batch has fewer rows than processes.
    """
    n = world_size() if n is None else n
    r = rank() if r is None else r
    if n == 1:
        return dict(batch)
    out: dict[str, Any] = {}
    for k, v in batch.items():
        if isinstance(v, Tensor) and v.dim() > 0:
            if v.shape[0] < n:
                raise ValueError(f"shard: the batch of {k!r} has {v.shape[0]} rows, fewer than the {n} processes")
            out[k] = v.tensor_split(n, dim=0)[r]
        else:
            out[k] = v
    return out


class DataParalleledLoss(Loss):
    r"""Pixyz's name for a data-parallel loss, kept working: here a transparent wrapper.

    Pixyz wrapped the loss in ``nn.DataParallel``/``DistributedDataParallel``. In pyro_dgm, data parallelism is
    done by :class:`~pyro_dgm.models.Model` under ``torch.distributed`` (the trained networks wrapped in
    ``DistributedDataParallel``, batches sharded by ``fit``; see this module), so the wrapper only evaluates the loss
    it holds. Extra keyword
    arguments (Pixyz's ``distributed=``, ``device_ids=``...) are accepted and ignored.

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> from pyro_dgm.models import DataParalleledLoss
    >>> loss = (-Normal(loc=0., scale=1., var=["x"]).log_prob()).mean()
    >>> wrapped = DataParalleledLoss(loss, distributed=True)
    >>> print(wrapped)
    mean \left(- \log p(x) \right)
    >>> bool(wrapped.eval({"x": torch.zeros(2, 1)}) == loss.eval({"x": torch.zeros(2, 1)}))
    True
    """

    def __init__(self, loss: Loss, distributed: bool = False, **kwargs: Any) -> None:
        if not isinstance(loss, Loss):
            raise TypeError(f"DataParalleledLoss: loss must be a pyro_dgm Loss, got {type(loss).__name__}")
        super().__init__(input_var=loss.input_var)
        self.loss = loss
        self._prec = loss._prec

    @property
    def latex(self) -> str:
        return self.loss.latex

    @property
    def _symbol(self) -> Any:
        return self.loss._symbol

    def forward(self, values: dict[str, Any], **kwargs: Any) -> Any:
        return self.loss.eval(values, return_dict=True, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # as Pixyz's wrapper: what the wrapper lacks is the wrapped loss's (``DataParalleledLoss(kl).p``)
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("loss") or self.__dict__.get("_modules", {}).get("loss")
            if inner is None:
                raise
            return getattr(inner, name)
