r"""Data-parallel training under ``torch.distributed`` (what Pixyz's ``DataParalleledLoss`` did, with DDP's scheme).

Launch a training script with ``torchrun --nproc_per_node N script.py``: the first :class:`~pyro_dgm.models.Model`
built sets up the process group from the environment torchrun exports (``gloo`` on CPU, ``nccl`` when CUDA is
available), broadcasts rank 0's parameters, and after every ``backward`` averages the gradients over the processes
(one ``all_reduce`` per gradient, as ``DistributedDataParallel`` does without bucketing), so every replica takes the
same step. :meth:`Model.fit <pyro_dgm.models.Model.fit>` gives each process its slice of every global batch, so a
step over a batch of ``B`` rows on ``N`` processes is the step one process takes over the ``B`` rows, when the loss is
a mean over the batch and ``N`` divides ``B``.

Without a process group (or with one process) every function here does nothing.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

import torch
import torch.distributed as tdist
from torch import Tensor, nn

from pyro_dgm.losses.base import Loss

__all__ = ["is_distributed", "rank", "world_size", "setup_from_env", "broadcast_module",
           "broadcast_tensor", "average_gradients", "all_reduce_mean", "all_reduce_max", "shard", "DataParalleledLoss"]


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return tdist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return tdist.get_world_size() if is_distributed() else 1


def setup_from_env(backend: str | None = None) -> bool:
    """Initialize the default process group from torchrun's environment (``WORLD_SIZE`` > 1), if not done yet.

    ``backend`` defaults to ``nccl`` when CUDA is available, else ``gloo``. Returns whether a group is running.
    """
    if not tdist.is_available():
        return False
    if not tdist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1 and "MASTER_ADDR" in os.environ:
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl" and "LOCAL_RANK" in os.environ:
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        tdist.init_process_group(backend=backend)
    return is_distributed()


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


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Replace every gradient by its mean over the processes (a parameter without gradient counts as zero)."""
    if not is_distributed():
        return
    n = tdist.get_world_size()
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        tdist.all_reduce(p.grad, op=tdist.ReduceOp.SUM)
        p.grad.div_(n)


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
    done by :class:`~pyro_dgm.models.Model` under ``torch.distributed`` (gradients averaged after ``backward``,
    batches sharded by ``fit``; see this module), so the wrapper only evaluates the loss it holds. Extra keyword
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
