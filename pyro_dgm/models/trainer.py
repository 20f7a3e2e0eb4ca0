r"""Epochs over a data set: :func:`fit` (``Model.fit``), its :class:`History`, and ready-made callbacks.

``fit`` runs ``model.train`` on every batch of an epoch and ``model.test`` on the test batches, shows a tqdm progress
bar with the running loss (when tqdm is installed), records per epoch the train and test loss and every named term of
the objective (``loss.eval(..., return_terms=True)``), writes them to TensorBoard when ``log_dir`` is given and
tensorboard is installed, and calls the callbacks. A NaN or infinite loss stops training with
:class:`~pyro_dgm.models.NonFiniteLossError` naming the epoch, the step and the non-finite terms.

Data
----
``train_data``/``test_data`` may be

- a dict of tensors (the whole data set, rows along dim 0), cut into batches of ``batch_size`` rows (all rows when
  ``batch_size`` is None), shuffled each epoch with torch's random generator when ``shuffle`` (so checkpoints
  resume the same order; one batch of all rows is used in its order, and draws nothing);
- a tensor (for a loss with one input variable), treated like ``{input_var[0]: tensor}``;
- a map-style ``torch.utils.data.Dataset`` (items collated with ``default_collate``), batched and shuffled the same
  way;
- any re-iterable of batches (a ``DataLoader``, a list): each batch a dict by variable name, a tensor, or a
  tuple/list of tensors matched in order to the loss's ``input_var`` (``TensorDataset`` gives these).

Under ``torch.distributed`` every batch is a global batch, cut as ``DistributedSampler`` would: each process trains on
its contiguous slice of it (:func:`pyro_dgm.models.distributed.shard`; for a dict of tensors or a Dataset only that
slice is read; the time-first series ``[T, B, ...]`` of an ``IterativeLoss`` in the batches of a list or a DataLoader
are cut along their batch dim, dim 1, and a dict of tensors holding them is refused, since its rows would be time steps:
pass it as a list of batches); the shuffled order changes every epoch and is the same on every process (rank 0 draws it
from torch's generator, as one process would, and broadcasts it, so a run on ``N`` processes sees the batches of a run
on one); the epoch's numbers (history, test metrics, the named terms) are averaged over the processes, weighted by rows.
Uneven batches: when ``N`` does not divide a batch, the first processes get one row more (``tensor_split``) and
``DistributedDataParallel`` still averages the gradients with equal weights, so that step differs slightly from one
process's (exact equality needs ``N`` to divide the batch size and the data size, and a loss that is a mean over the
batch: a sum over the batch gets gradients ``1/N`` of one process's, as under plain DDP); a last batch with fewer rows
than processes is dropped (on every process, for the training data: one step fewer than one process takes, and for the
test data: those rows do not count in the test metrics; a data set with fewer rows than processes raises). Only rank 0
shows the progress bar and writes TensorBoard events and checkpoints (``Model.save`` is still called on every process:
each adds its random state). A ``DataLoader`` you pass must give the same batches on every process (``shuffle=False``,
or a seeded ``generator``), except one whose sampler is a ``DistributedSampler``, which gives each process its own
rows: its batches are used as they are (each process's batch is its part of the global batch, not cut again), and
``fit`` calls the sampler's ``set_epoch`` at each epoch, as a training loop over it does (a sampler that pads the
data, whose size the number of processes does not divide, repeats rows, which then count in the metrics: for test
data ``fit`` warns); loaders whose lengths differ between processes raise a ``ValueError`` naming each rank's
count at the start of the epoch. A batch norm normalizes with the statistics of each process's slice, as under DDP
(``torch.nn.SyncBatchNorm`` on GPUs for the global batch's); its running statistics are rank 0's on every process after
each step.
"""
from __future__ import annotations

import math
import operator
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import Tensor

from pyro_dgm.utils.checks import add_note, drop_notes
from pyro_dgm.losses.steps import SIGNALS
from pyro_dgm.models import distributed as _dist
from pyro_dgm.models.errors import NonFiniteLossError
from pyro_dgm.utils.random import current_generator

if TYPE_CHECKING:  # pragma: no cover
    from pyro_dgm.models.model import Model

__all__ = ["fit", "History"]


class History(dict):
    r"""Per-epoch numbers: ``history[key]`` is a list with one float per epoch.

    Keys: ``"epoch"`` (1-based, counting across ``fit`` calls), ``"train_loss"``, ``"test_loss"`` (with test data),
    ``"train/<term>"`` and ``"test/<term>"`` for each named term of the objective, ``"time"`` (seconds).

    Examples
    --------
    >>> h = History()
    >>> h.append({"epoch": 1, "train_loss": 2.0})
    >>> h.append({"epoch": 2, "train_loss": 1.5})
    >>> h["train_loss"], h.last["epoch"]
    ([2.0, 1.5], 2)
    """

    def append(self, record: Mapping[str, float]) -> None:
        """Add one epoch's numbers (a key missing in earlier epochs is padded with NaN)."""
        n = len(self.get("epoch", []))
        for key, value in record.items():
            self.setdefault(key, [math.nan] * n).append(value)
        for key, values in self.items():
            if len(values) < n + 1:
                values.append(math.nan)

    @property
    def last(self) -> dict[str, float]:
        """The last epoch's numbers."""
        return {k: v[-1] for k, v in self.items() if v}


# ------------------------------------------------------------------------------------------------------------- batches
def _as_dict(batch: Any, input_var: Sequence[str], what: str) -> dict[str, Any]:
    if isinstance(batch, Mapping):
        return dict(batch)
    if isinstance(batch, Tensor):
        batch = [batch]
    if isinstance(batch, (list, tuple)) and all(isinstance(b, Tensor) for b in batch):
        if len(batch) != len(input_var):
            raise ValueError(f"fit: a batch of {what} holds {len(batch)} tensor(s) but the loss takes the variables "
                             f"{list(input_var)}; give batches as dicts by variable name, e.g. {{'x': x}}")
        return dict(zip(input_var, batch))
    raise TypeError(f"fit: a batch of {what} must be a dict of tensors by variable name, a tensor or a tuple of "
                    f"tensors, got {type(batch).__name__}")


def _loader_batch_size(data: Any, input_var: Sequence[str], what: str,
                       series: Mapping[str, int] | None = None) -> int | None:
    """The batch size of a DataLoader, or the rows of a list's first batch; None when it cannot be told."""
    size = getattr(data, "batch_size", None)
    if isinstance(size, int):
        return size
    if isinstance(data, (list, tuple)) and data:
        try:
            return _rows(_as_dict(data[0], input_var, what), series)
        except (TypeError, ValueError):
            return None
    return None


def _count(value: Any, arg: str, what: str, least: int) -> int:
    """``value`` as an int (Python's or numpy's) of at least ``least``; else a ValueError naming ``arg``."""
    try:
        if isinstance(value, bool):
            raise TypeError
        n = operator.index(value)
    except TypeError:
        n = None
    if n is None or n < least:
        raise ValueError(f"fit: {arg} must be {what}, got {value!r}")
    return n


def _rows(batch: Mapping[str, Any], series: Mapping[str, int] | None = None) -> int:
    """The rows of a batch: the first dim of its first tensor, or the batch dim of a time-first series
    (``series``: ``[T, B, ...]``, dim 1), whatever the order of its keys."""
    for k, v in batch.items():
        if isinstance(v, Tensor) and v.dim() > 0:
            d = series.get(k, 0) if series else 0
            if v.dim() > d:
                return int(v.size(d))  # (size(): a nested tensor has no shape, but its rows)
    return 1


def _distributed_sampler(loader: Any) -> Any:
    """The ``DistributedSampler`` of a ``DataLoader`` (its sampler, or its batch sampler's), or ``None``."""
    from torch.utils.data.distributed import DistributedSampler

    for s in (getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        if isinstance(s, DistributedSampler):
            return s
    return None


def _warn_padding(sampler: Any) -> None:
    """Warn when the test data's ``DistributedSampler`` pads the data set (its size is not a multiple of the number
    of processes): the copies it adds count in the test metrics, which one process would not count."""
    try:
        pad = 0 if sampler.drop_last else int(sampler.total_size) - len(sampler.dataset)
    except (AttributeError, TypeError):
        return
    if pad > 0:
        warnings.warn(f"fit: test_data's DistributedSampler pads its {len(sampler.dataset)} rows with {pad} "
                      f"repeated row(s) (its first ones), to give each of the {sampler.num_replicas} processes as "
                      "many, and they count in the test metrics (one process would not count them); pass the test "
                      "data without a sampler (a Dataset, a dict of tensors or a loader that gives every process the "
                      "same batches: fit cuts them), or a number of rows that the number of processes divides",
                      UserWarning, stacklevel=6)


class _Batches:
    """The batches of one data argument of ``fit``, as dicts of this process's rows; iterable once per epoch."""

    def __init__(self, data: Any, input_var: Sequence[str], batch_size: int | None, shuffle: bool, what: str,
                 series: Mapping[str, int] | None = None):
        from torch.utils.data import Dataset, IterableDataset

        self.what, self.input_var = what, list(input_var)
        self.series = dict(series or {})  # the dim to cut each time-first series along under torch.distributed
        self.table: dict[str, Any] | None = None
        self.dataset: Any = None
        self.iterable: Iterable[Any] | None = None
        self.sampler: Any = None  # a DataLoader's DistributedSampler (its batches are this process's rows)
        if batch_size is not None:
            batch_size = _count(batch_size, "batch_size", "a positive integer or None", 1)
        self.batch_size, self.shuffle = batch_size, shuffle
        if type(data).__module__ == "numpy" and hasattr(data, "shape"):  # an array: a tensor, as in a dict
            data = torch.as_tensor(data)
        if isinstance(data, (Tensor, Mapping)):
            table = _as_dict(data, input_var, what)
            nested = [k for k, v in table.items() if isinstance(v, Tensor) and v.is_nested]
            if nested:
                raise ValueError(f"fit: {nested[0]!r} in {what} is a nested tensor, which fit cannot cut into "
                                 "batches of rows; pass the data as a list of batches (dicts), or a DataLoader")
            sizes = {k: v.shape[0] for k, v in table.items() if isinstance(v, Tensor) and v.dim() > 0}
            timed = [k for k in sizes if k in self.series]
            steps = next(iter(sizes.values()), 0)
            if (timed and len(set(sizes.values())) == 1
                    and ((batch_size is not None and batch_size < steps) or _dist.is_distributed())):
                raise ValueError(f"fit: {timed} in {what} are time-first series ([T, B, ...]) of an IterativeLoss, "
                                 "whose dim 0 is time: cutting them into batches (batch_size, or one slice per "
                                 "process) would cut time; pass such data as a list of batches (dicts), or a "
                                 "DataLoader")
            if len(set(sizes.values())) > 1:
                hint = (f"; {timed} are time-first series ([T, B, ...]) of an IterativeLoss, whose dim 0 is time, "
                        "not rows: pass such data as a list of batches (dicts), or a DataLoader" if timed else "")
                raise ValueError(f"fit: the tensors of {what} have different numbers of rows (dim 0): {sizes}"
                                 f"{hint}")
            self.table, self.n = table, next(iter(sizes.values()), 1)
            if self.n == 0:
                raise ValueError(f"fit: {what} is empty: " + ", ".join(f"variable {k!r} has 0 rows (shape "
                                 f"{tuple(table[k].shape)})" for k in sizes) + "; pass at least one row")
        elif isinstance(data, Dataset) and not isinstance(data, IterableDataset) and _has_len(data):
            self.dataset, self.n = data, len(data)
            if self.n == 0:
                raise ValueError(f"fit: {what} is an empty Dataset (0 items) for the variables {self.input_var}; "
                                 "pass at least one item")
        elif isinstance(data, Iterator):
            raise TypeError(f"fit: {what} is an iterator, which is used up after one epoch; pass a DataLoader, a "
                            "list of batches or a dict of tensors")
        elif isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
            self.iterable = data
            self.sampler = _distributed_sampler(data)
            if self.sampler is not None and what == "test_data":
                _warn_padding(self.sampler)
            if batch_size is not None and _loader_batch_size(data, input_var, what, self.series) not in (None,
                                                                                                    batch_size):
                warnings.warn(f"fit: batch_size={batch_size} applies to a dict of tensors, a tensor or a Dataset; "
                              f"{what} is a {type(data).__name__}, whose batches are used as they are (set the "
                              "DataLoader's batch_size instead)", UserWarning, stacklevel=5)
        else:
            raise TypeError(f"fit: {what} must be a DataLoader, an iterable of batches, a Dataset, a dict of tensors "
                            f"or a tensor, got {type(data).__name__}")

    def set_epoch(self, epoch: int) -> None:
        """Tell a loader's ``DistributedSampler`` the epoch (its shuffled order changes with it), as a training loop
        over such a loader calls ``sampler.set_epoch(epoch)``."""
        if self.sampler is not None and callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        if self.iterable is None:
            return math.ceil(self.n / (self.batch_size or self.n or 1))
        return len(self.iterable)  # type: ignore[arg-type]

    def _dgm_order(self) -> Tensor | None:
        size = self.batch_size or self.n
        if not self.shuffle or size >= self.n:
            return None
        order = torch.randperm(self.n, generator=current_generator())  # a thread's own generator, if set
        return _dist.broadcast_tensor(order)  # every process cuts the same global batches

    def _dgm_check_same_length(self) -> None:
        """Under torch.distributed, every process must take as many steps: refuse loaders of different lengths
        (otherwise the longer one's extra step meets another collective and gloo aborts)."""
        counts = _dist.all_gather_int(len(self.iterable))  # type: ignore[arg-type]
        if len(set(counts)) > 1:
            each = ", ".join(f"{c} on rank {r}" for r, c in enumerate(counts))
            raise ValueError(f"fit: {self.what} gives a different number of batches on each process ({each}); under "
                             "torch.distributed fit cuts every batch into one slice per process, so each process "
                             "must be given the same batches (the same loader, with shuffle=False or a seeded "
                             "generator)")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.iterable is not None:
            if _dist.is_distributed() and _has_len(self.iterable):
                self._dgm_check_same_length()
            n, first = _dist.world_size(), True
            for batch in self.iterable:
                batch = _as_dict(batch, self.input_var, self.what)
                if self.sampler is not None:  # (a DistributedSampler's loader: this process's rows already)
                    yield batch
                    continue
                if n > 1 and not first and _rows(batch, self.series) < n:
                    continue  # a (last) batch with fewer rows than processes is dropped, as for a dict of tensors
                    # (every process is given the same batches: the same on every process)
                first = False
                yield _dist.shard(batch, dims=self.series)
            return
        size = self.batch_size or self.n
        order = self._dgm_order()
        n, r = _dist.world_size(), _dist.rank()
        for start in range(0, self.n, size):
            idx = order[start:start + size] if order is not None else torch.arange(start, min(start + size, self.n))
            if n > 1:
                if len(idx) < n:
                    if start == 0:
                        raise ValueError(f"fit: a batch of {self.what} has {len(idx)} rows, fewer than the {n} "
                                         "processes")
                    break  # a last batch with fewer rows than processes is dropped (the same on every process)
                idx = idx.tensor_split(n)[r]
            if self.table is not None:
                yield {k: v[idx] if isinstance(v, Tensor) and v.dim() > 0 else v for k, v in self.table.items()}
            else:
                from torch.utils.data import default_collate
                yield _as_dict(default_collate([self.dataset[int(i)] for i in idx]), self.input_var, self.what)


def _series_dims(loss: Any) -> dict[str, int]:
    """The time-first series of the ``IterativeLoss`` terms of ``loss`` that index them (``x[t]``): their batch dim
    is dim 1, the one ``shard`` cuts under torch.distributed."""
    from pyro_dgm.losses.iteration import IterativeLoss, indexes_series

    out: dict[str, int] = {}
    for term in loss._dgm_walk()[0] if callable(getattr(loss, "_dgm_walk", None)) else []:
        if isinstance(term, IterativeLoss) and indexes_series(term):
            out.update({v: 1 for v in term.series_var})
    return out


def _has_len(obj: Any) -> bool:
    try:
        len(obj)
    except TypeError:
        return False
    return True


# ------------------------------------------------------------------------------------------------------------- writers
def _writer(log_dir: Any) -> Any:
    if log_dir is None or _dist.rank() != 0:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn("fit: log_dir was given but tensorboard is not installed (pip install tensorboard); "
                      "training goes on without TensorBoard logs", RuntimeWarning, stacklevel=3)
        return None
    return SummaryWriter(log_dir=str(log_dir))


class _Accumulator:
    """Row-weighted sums of the loss and of each term over an epoch (summed over processes at the end)."""

    def __init__(self) -> None:
        self.rows = 0.0
        self.sums: dict[str, float] = {}
        self.batches = 0

    def add(self, loss: Tensor, terms: Mapping[str, Any], rows: int) -> None:
        self.batches += 1
        self.rows += rows
        for key, value in [("loss", loss), *terms.items()]:
            v = torch.as_tensor(value).detach()
            self.sums[key] = self.sums.get(key, 0.0) + float(v.float().mean()) * rows

    @property
    def running(self) -> float:
        return self.sums.get("loss", math.nan) / max(self.rows, 1)

    def means(self) -> dict[str, float]:
        keys = sorted(self.sums)
        values = torch.tensor([self.rows] + [self.sums[k] for k in keys], dtype=torch.float64)
        if _dist.is_distributed():
            import torch.distributed as tdist
            device = "cuda" if tdist.get_backend() == "nccl" else "cpu"
            values = values.to(device)
            tdist.all_reduce(values, op=tdist.ReduceOp.SUM)
            values = values.cpu()
        rows = float(values[0]) or 1.0
        return {k: float(v) / rows for k, v in zip(keys, values[1:].tolist())}


# ------------------------------------------------------------------------------------------------------------- fit
def fit(model: "Model", train_data: Any, epochs: int = 1, test_data: Any = None, batch_size: int | None = None,
        callbacks: Sequence[Callable[..., Any]] | None = None, progress: bool = True, log_dir: Any = None,
        shuffle: bool = True, **kwargs: Any) -> History:
    r"""Train ``model`` for ``epochs`` more epochs; return the history of this call.

    Parameters
    ----------
    model : Model
        Trained through :meth:`Model.train_step <pyro_dgm.models.Model.train_step>` and evaluated through
        :meth:`Model.test_step <pyro_dgm.models.Model.test_step>` (one batch -> the loss and its named terms); fit
        also reads ``loss_cls.input_var``, ``test_loss_cls.input_var`` and ``epoch``, appends to ``history`` and
        sets ``epoch``, ``stop_training`` and ``tb_writer``. Its own state (the epoch running, the writer, this
        call's history) stays in fit.
    train_data : DataLoader, iterable of batches, Dataset, dict of tensors or tensor
        See the module docstring.
    epochs : int, default 1
        Epochs to run now (``model.epoch`` counts on from where it is, so a loaded checkpoint continues). An epoch
        that an earlier call left unfinished (Ctrl-C, an error) is not continued by the next call, which may be
        given other data: that call begins the epoch of the same number again from its first batch (the steps the
        interrupted call took stay taken). To continue it where it stopped, as the uninterrupted run, save the model
        then and load the checkpoint with ``resume=True`` (into this model or a new one) before calling ``fit``.
    test_data : same kinds as ``train_data``, optional
        Evaluated with ``model.test_step`` (``model.test``, checked to be finite) after each epoch.
    batch_size : int, optional
        Rows per batch for a dict of tensors, a tensor or a Dataset (default: all rows); the global batch under
        ``torch.distributed``.
    callbacks : list of callables, optional
        Each called after every epoch as ``callback(model, epoch, logs)`` with that epoch's numbers; setting
        ``model.stop_training = True`` ends training after the epoch. See
        :mod:`pyro_dgm.models.callbacks`.
    progress : bool, default True
        Show a tqdm bar with the running loss (when tqdm is installed; rank 0 only).
    log_dir : str or path, optional
        Write the history to TensorBoard there (``torch.utils.tensorboard``; skipped with a warning when
        tensorboard is not installed). ``model.tb_writer`` holds the writer during ``fit``.
    shuffle : bool, default True
        Shuffle the rows of a dict of tensors, a tensor or a Dataset every epoch (when they make more than one
        batch: a batch of all rows is used in its order, and no permutation is drawn).
    **kwargs
        Passed to ``model.train`` and ``model.test``.

    Returns
    -------
    History
        This call's epochs (``model.history`` holds every epoch since the model was built or loaded).

    Raises
    ------
    NonFiniteLossError
        If a loss is NaN or infinite; it names the epoch, the step and the non-finite terms
        (:class:`~pyro_dgm.models.NonFiniteGradientError` if a gradient is, with a finite loss). The step raises it
        naming the step; fit adds the epoch (:meth:`~pyro_dgm.models.errors.NonFiniteLossError.add_epoch`).
    ValueError
        If ``train_data`` or ``test_data`` has zero rows (the message names the variable), or a batch is empty and
        the loss is not finite on it.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from pyro_dgm.distributions import Normal
    >>> from pyro_dgm.losses import KullbackLeibler
    >>> from pyro_dgm.models import Model
    >>> class P(Normal):
    ...     def __init__(self):
    ...         super().__init__(var=["x"], name="p")
    ...         self.loc = nn.Parameter(torch.zeros(1))
    ...     def forward(self):
    ...         return {"loc": self.loc, "scale": torch.ones(1)}
    >>> p = P()
    >>> prior = Normal(loc=0., scale=1., var=["x"], name="r")
    >>> loss = (-p.log_prob()).mean().named("nll") + 0.1 * KullbackLeibler(p, prior).named("kl")
    >>> model = Model(loss, distributions=[p], optimizer_params={"lr": 0.1})
    >>> data = {"x": 3 + torch.randn(64, 1)}
    >>> history = model.fit(data, epochs=5, test_data=data, batch_size=16, progress=False)
    >>> history["epoch"], sorted(history)  # doctest: +NORMALIZE_WHITESPACE
    ([1, 2, 3, 4, 5], ['epoch', 'test/kl', 'test/nll', 'test_loss', 'time', 'train/kl', 'train/nll',
                       'train_loss'])
    >>> history["train_loss"][-1] < history["train_loss"][0]
    True
    """
    epochs = _count(epochs, "epochs", "a non-negative integer", 0)
    if getattr(model, "loss_cls", 0) is None:
        model._dgm_no_loss()  # built with loss=None and no set_loss since
    from pyro_dgm.models.model import check_loss

    for arg in ("loss_cls", "test_loss_cls"):  # (a subclass that set Pixyz's attributes itself: named as train names
        held = getattr(model, arg, None)  # them, before the batches read their input_var)
        if held is not None:
            check_loss(type(model).__name__, held, arg)
        elif arg == "test_loss_cls" and test_data is not None:  # (set to None since: as test says)
            model._dgm_no_loss()
    from pyro_dgm.models.callbacks import AFTER_CALLBACKS

    # a fit run by a callback of a fit of this model: the outer one goes on as it was afterwards (its stop request,
    # its writer, its data loaders' generators, which its checkpoints save; no unfinished epoch of this one)
    outer = (getattr(model, "stop_training", False), getattr(model, "tb_writer", None),
             model.__dict__.get("_dgm_data_generators")) if id(model) in AFTER_CALLBACKS else None
    state = _FitState.start(model, train_data, test_data, batch_size, callbacks, progress, log_dir, shuffle, kwargs)
    _data_generators(model, train_data, test_data)
    model.stop_training = False
    model.tb_writer = state.writer
    try:
        for _ in range(epochs):
            state.epoch = model.epoch + 1
            # what a checkpoint saved before the epoch ends needs to resume it where it stopped (checkpoint.save)
            model._dgm_epoch_start = EpochStart.now(model)
            record = _run_epoch(model, state)
            del model._dgm_epoch_start
            model.epoch = state.epoch
            _log_epoch(model, state, record)
            if model.stop_training:
                break
    except BaseException:  # the epoch left unfinished: a save before the next step resumes it (a Ctrl-C's handler)
        begun = model.__dict__.get("_dgm_epoch_start")
        if begun is not None and begun.ended is None:  # (not one an earlier fit left, raising before its epoch)
            begun.ended = model.step
        raise
    finally:
        model.tb_writer = None
        if state.writer is not None:
            state.writer.close()
        if outer is not None:
            model.stop_training, model.tb_writer = outer[0], outer[1]
            if outer[2] is None:
                model.__dict__.pop("_dgm_data_generators", None)
            else:
                model.__dict__["_dgm_data_generators"] = outer[2]
            model.__dict__.pop("_dgm_epoch_start", None)
    return state.history


@dataclass
class EpochStart:
    """Where the epoch ``fit`` is running began: the step, the random states (torch's and the data loader's
    generators') before the epoch drew its order, and the epoch's running sums (:class:`_Accumulator`)."""

    step: int
    rng: Any  # checkpoint.rng_state(), or None under torch.distributed (each process has its own)
    data_rng: list[Tensor]
    acc: Any = None
    test_rng: Any = None  # the random states when the epoch's test batches began
    batches: int | None = None  # the number of training batches (None for data without a length)
    ended: int | None = None  # the step at which fit raised (steps taken after it are not the epoch's)

    @classmethod
    def now(cls, model: "Model") -> "EpochStart":
        from pyro_dgm.models.checkpoint import rng_state

        rng = None if _dist.is_distributed() else rng_state()
        return cls(model.step, rng, [g.get_state() for g in model.__dict__.get("_dgm_data_generators", ())])

    def resume_state(self, model: "Model") -> dict[str, Any] | None:
        """What a checkpoint saved now holds to resume this epoch where it stopped (``None`` where it cannot: under
        torch.distributed, or when the steps and the batches counted differ, a step interrupted midway)."""
        steps = model.step - self.step
        acc = self.acc
        if self.rng is None or acc is None or acc.batches != steps:
            return None
        return {"steps": steps, "rng": self.rng, "data_rng": list(self.data_rng), "rows": acc.rows,
                "sums": dict(acc.sums), "test_rng": self.test_rng, "batches": self.batches}


def _data_generators(model: "Model", *data: Any) -> None:
    """Keep the random generators of the ``DataLoader``s' shuffling (``generator=`` of a loader or of its sampler;
    training data, then test data) on ``model``, so checkpoints save their states; a checkpoint loaded with
    ``resume=True`` gives them back here, and the resumed run draws the orders the uninterrupted run would have
    drawn. (A loader with ``persistent_workers`` draws its workers' seed once per iterator: a resumed run cannot
    draw it as the uninterrupted one did, which a warning says.)"""
    found: list[torch.Generator] = []
    for d in data:
        sampler = getattr(d, "sampler", None)
        batch_sampler = getattr(d, "batch_sampler", None)
        for g in (getattr(d, "generator", None), getattr(sampler, "generator", None),
                  getattr(getattr(batch_sampler, "sampler", None), "generator", None)):
            if isinstance(g, torch.Generator) and all(g is not h for h in found):
                found.append(g)
    resumed = model.__dict__.pop("_dgm_resumed", False)
    if resumed and any(getattr(d, "persistent_workers", False) and getattr(d, "num_workers", 0) for d in data):
        warnings.warn("fit: a DataLoader with persistent_workers=True draws its workers' seed once, when its "
                      "iterator is made: this resumed run makes a new one, so its orders and draws differ from "
                      "the uninterrupted run's (use persistent_workers=False for an exact resume)", UserWarning,
                      stacklevel=3)
    if found:
        model._dgm_data_generators = found
    else:
        model.__dict__.pop("_dgm_data_generators", None)
    pending = model.__dict__.pop("_dgm_pending_data_rng", None)
    if pending is None:
        return
    if len(pending) != len(found):
        warnings.warn(f"fit: the checkpoint loaded with resume=True holds the states of {len(pending)} data-loader "
                      f"random generator(s), train_data has {len(found)}; its shuffling starts afresh, so the "
                      "resumed run draws other orders than the uninterrupted one", UserWarning, stacklevel=3)
        return
    for g, st in zip(found, pending):
        g.set_state(st)


@dataclass
class _FitState:
    """What one ``fit`` call owns: its data, callbacks and writers, the epoch it is running and its history (the
    model holds only what outlives the call: ``epoch``, ``step``, ``history``)."""

    train: _Batches
    test: _Batches | None
    callbacks: list[Callable[..., Any]]
    kwargs: dict[str, Any]
    writer: Any  # a SummaryWriter, or None
    show: bool  # rank 0 with progress=True: prints each epoch's line
    tqdm: Any  # tqdm's class when the progress bar is shown, else None
    history: History = field(default_factory=History)
    epoch: int = 0  # the epoch running (1-based, counting across fit calls)

    @classmethod
    def start(cls, model: "Model", train_data: Any, test_data: Any, batch_size: int | None,
              callbacks: Sequence[Callable[..., Any]] | None, progress: bool, log_dir: Any, shuffle: bool,
              kwargs: dict[str, Any]) -> "_FitState":
        """Check the arguments and open the writer (in this order, so the errors come as they always did)."""
        train = _Batches(train_data, model.loss_cls.input_var, batch_size, shuffle, "train_data",
                         _series_dims(model.loss_cls))
        test = (None if test_data is None else
                _Batches(test_data, model.test_loss_cls.input_var, batch_size, False, "test_data",
                         _series_dims(model.test_loss_cls)))
        if test is not None and _has_len(test) and len(test) == 0:
            raise ValueError(f"fit: test_data holds no batch ({type(test_data).__name__} of length 0); pass test "
                             "data with rows, or test_data=None")
        callbacks = [callbacks] if callable(callbacks) else list(callbacks or [])  # one callable: a list of one
        for cb in callbacks:
            if not callable(cb):
                raise TypeError(f"fit: callbacks must be callables f(model, epoch, logs), got {type(cb).__name__}")
        writer = _writer(log_dir)
        show = progress and _dist.rank() == 0
        tqdm: Any = None
        if show:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # pragma: no cover
                tqdm = None
        return cls(train, test, callbacks, kwargs, writer, show, tqdm)


def _run_epoch(model: "Model", state: _FitState) -> dict[str, Any]:
    """Train on every batch, then test; the epoch's record. A non-finite loss is re-raised naming the epoch."""
    start = time.perf_counter()
    record: dict[str, Any] = {"epoch": state.epoch}
    try:
        means = _train_epoch(model, state).means()
        record["train_loss"] = means.pop("loss")
        record.update({f"train/{k}": v for k, v in means.items()})
        if state.test is not None:
            begun = model.__dict__.get("_dgm_epoch_start")
            if begun is not None and begun.rng is not None:  # a save during the test batches resumes them from here
                from pyro_dgm.models.checkpoint import rng_state

                begun.test_rng = rng_state()
            tmeans = _test_epoch(model, state.test, state.kwargs, state.epoch).means()
            if "loss" not in tmeans:
                raise ValueError(f"fit: test_data gave no batch in epoch {state.epoch}; pass a re-iterable (a "
                                 "DataLoader, a list of batches) or a dict of tensors")
            record["test_loss"] = tmeans.pop("loss")
            record.update({f"test/{k}": v for k, v in tmeans.items()})
    except NonFiniteLossError as err:
        err.add_epoch(state.epoch)  # the model knows its step, fit knows the epoch
        raise
    record["time"] = time.perf_counter() - start
    return record


def _train_epoch(model: "Model", state: _FitState) -> _Accumulator:
    """``model.train_step`` on every training batch, under the progress bar."""
    acc = _Accumulator()
    start = model.__dict__.get("_dgm_epoch_start")
    total = len(state.train) if _has_len(state.train) else None
    if start is not None:
        start.acc, start.batches = acc, total
    state.train.set_epoch(state.epoch)
    batches: Iterable[dict[str, Any]] = state.train
    bar = None
    if state.tqdm is not None:
        total = len(state.train) if _has_len(state.train) else None
        bar = batches = state.tqdm(state.train, total=total, desc=f"epoch {state.epoch}", leave=False)
    try:
        numbered = _numbered(batches, state.epoch, "training")
        _resume_epoch(model, numbered, acc, total)
        main = threading.current_thread() is threading.main_thread()
        for i, batch in numbered:
            if main:  # a Ctrl-C while the optimizer steps is raised once the batch is counted here too (a checkpoint
                SIGNALS.keep += 1  # saved then resumes after it)
            try:
                try:
                    loss, terms = model.train_step(batch, **state.kwargs)
                except Exception as e:
                    _note(e, f"in fit: epoch {state.epoch}, training batch {i} (step {model.step + 1})")
                    raise
                acc.add(loss, terms, _rows(batch, state.train.series))
            finally:
                if main:
                    SIGNALS.keep -= 1
                    SIGNALS.end_keep()
            if bar is not None:
                bar.set_postfix(loss=f"{acc.running:.4g}")
    finally:  # a batch that raises (or Ctrl-C) leaves no half-drawn bar behind
        if bar is not None:
            bar.close()
    if acc.rows == 0:
        raise ValueError(f"fit: train_data gave no batch in epoch {state.epoch}; pass a re-iterable (a DataLoader, a "
                         "list of batches) or a dict of tensors")
    return acc


def _test_epoch(model: "Model", batches: _Batches, kwargs: dict[str, Any], epoch: int) -> _Accumulator:
    """``model.test_step`` on every test batch."""
    acc = _Accumulator()
    for i, batch in _numbered(batches, epoch, "test"):
        try:
            loss, terms = model.test_step(batch, **kwargs)
        except Exception as e:
            _note(e, f"in fit: epoch {epoch}, test batch {i}")
            raise
        acc.add(loss, terms, _rows(batch, batches.series))
    return acc


def _resume_epoch(model: "Model", numbered: Iterator[tuple[int, dict[str, Any]]], acc: _Accumulator,
                  total: int | None) -> None:
    """Continue an epoch that a checkpoint loaded with ``resume=True`` stopped in (``Model.save`` after an
    interrupted ``fit``): the random states of the epoch's start are put back to draw its order again, the batches
    already trained on are read and skipped, then the checkpoint's random state (or, if its test batches had begun,
    the state they began with) and running sums are restored. Interrupted while skipping, it leaves the checkpoint's
    state pending as it was, so a save then still resumes exactly."""
    pending = model.__dict__.pop("_dgm_pending_epoch", None)
    if pending is None:
        return
    from pyro_dgm.models.checkpoint import rng_state, set_rng_state

    saved_total = pending.get("batches")
    if saved_total is not None and total is not None and saved_total != total:
        warnings.warn(f"fit: the checkpoint was saved {pending['steps']} training step(s) into an epoch of "
                      f"{saved_total} batches, train_data has {total}: the epoch goes on from there on other "
                      "batches, so the run differs from an uninterrupted one (resume with the data and batch_size "
                      "it was saved with)", UserWarning, stacklevel=4)
    now = rng_state()
    generators = model.__dict__.get("_dgm_data_generators", [])
    set_rng_state(pending["rng"])
    if len(generators) == len(pending["data_rng"]):
        for g, st in zip(generators, pending["data_rng"]):
            g.set_state(st)
    else:
        warnings.warn(f"fit: the checkpoint loaded with resume=True holds the epoch's start states of "
                      f"{len(pending['data_rng'])} data-loader random generator(s), train_data has "
                      f"{len(generators)}; the epoch's order is drawn afresh, so the resumed run trains on other "
                      "batches than the uninterrupted one", UserWarning, stacklevel=4)
    try:
        for _ in range(pending["steps"]):
            if next(numbered, None) is None:
                raise ValueError(f"fit: the checkpoint was saved {pending['steps']} training steps into the epoch, "
                                 "but train_data has fewer batches; resume with the data it was saved with")
    except BaseException:  # (Ctrl-C while reading the batches to skip): as loaded
        set_rng_state(now)
        model._dgm_pending_epoch = pending
        raise
    if pending["steps"]:  # (with none skipped, the epoch's order is drawn at the first batch, from its start)
        set_rng_state(pending.get("test_rng") or now)
    acc.batches, acc.rows, acc.sums = pending["steps"], pending["rows"], dict(pending["sums"])
    start = model.__dict__.get("_dgm_epoch_start")
    if start is not None:  # a checkpoint saved later in this epoch resumes it from the same start
        start.step, start.rng, start.data_rng = model.step - pending["steps"], pending["rng"], pending["data_rng"]


def _numbered(batches: Iterable[dict[str, Any]], epoch: int, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``enumerate(batches, 1)``; an error raised while reading a batch (a wrong shape or a missing variable in
    the data, a loader that fails) is noted with the epoch and the batch's number."""
    it = iter(batches)
    i = 0
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except Exception as e:
            _note(e, f"in fit: epoch {epoch}, while reading {what} batch {i + 1}")
            raise
        i += 1
        yield i, batch


def _note(e: BaseException, text: str) -> None:
    """Add ``text`` to what ``e`` says (a non-finite loss names its epoch in its message already), in place of
    ``Model.train``'s note naming the step (``text`` names it with the epoch and batch)."""
    if "(step " in text:
        drop_notes(e, lambda n: n.startswith("(raised in ") and ".train (step " in n)
    if not isinstance(e, NonFiniteLossError):
        add_note(e, text, "fit")  # (raised again at a later batch: this one's note only)


def _log_epoch(model: "Model", state: _FitState, record: dict[str, Any]) -> None:
    """Record the epoch in both histories, TensorBoard and the progress line, then call the callbacks."""
    state.history.append(record)
    model.history.append(record)
    if state.writer is not None:
        for key, value in record.items():
            if key not in ("epoch", "time"):
                state.writer.add_scalar(key, value, state.epoch)
        state.writer.flush()
    if state.show:
        text = ", ".join(f"{k} {record[k]:.4g}" for k in ("train_loss", "test_loss") if k in record)
        (state.tqdm.write if state.tqdm is not None else print)(f"epoch {state.epoch}: {text}")
    if not state.callbacks:
        return
    from pyro_dgm.models.callbacks import AFTER_CALLBACKS

    outer = AFTER_CALLBACKS.get(id(model))  # (a fit that a callback of another fit of this model runs)
    AFTER_CALLBACKS[id(model)] = after = []  # checkpoints are written once every callback has run
    try:
        for i, cb in enumerate(state.callbacks, 1):
            try:
                cb(model, state.epoch, dict(record))
            except Exception as e:  # named as a step's error is (the epoch is recorded: model.epoch is E)
                _note(e, f"in fit: epoch {state.epoch}, callback {i} of {len(state.callbacks)} "
                         f"({getattr(cb, '__qualname__', None) or type(cb).__name__}), after the epoch ended")
                raise
    finally:
        if outer is None:
            AFTER_CALLBACKS.pop(id(model), None)
        else:
            AFTER_CALLBACKS[id(model)] = outer
        for save in after:
            save()
