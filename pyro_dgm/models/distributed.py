r"""Data-parallel training under ``torch.distributed``, on torch's ``DistributedDataParallel`` (what Pixyz's
``DataParalleledLoss`` did).

Launch a training script with ``torchrun --nproc_per_node N script.py`` (on several machines: ``torchrun`` on each,
see the README): the first :class:`~pyro_dgm.models.Model` built sets up the process group from the environment
torchrun exports (``gloo`` on CPU, ``nccl`` when CUDA is available) with a bounded timeout (:data:`DEFAULT_TIMEOUT`,
settable), and wraps the networks it trains in :class:`torch.nn.parallel.DistributedDataParallel`: the evaluation of
the loss runs as the forward of a module holding them (:class:`Replicated`, built by :func:`wrap`), so DDP
broadcasts rank 0's weights when it is built and averages the gradients during ``backward`` (bucketed, overlapped
with the backward pass), and every replica takes the same step. :meth:`Model.fit <pyro_dgm.models.Model.fit>` gives
each process its slice of every global batch, so a step over a batch of ``B`` rows on ``N`` processes is the step
one process takes over the ``B`` rows, when the loss is a mean over the batch and ``N`` divides ``B``.

The same engine covers what a Model trains besides its networks: the discriminators of adversarial terms (each in
its own wrapper, for its own optimizer) and the parameters of Pyro's param store the loss creates (``pyro.param``,
autoguides, ``pyro.module``; :class:`PyroParams`), broadcast from rank 0 and averaged as they appear. For Pyro's
own ``SVI``, :class:`DistributedELBO` wraps an ELBO (a pyro_dgm loss or one of Pyro's) the same way.

A collective that waits longer than the timeout raises; at exit, a process that timed out names the processes that
did not time out with it (they hang or died).

**A step that raises on some processes only** (a network's error, a validation ``ValueError`` on a NaN in one
process's slice), caught by the script (``try: model.train(batch) except ...``), would leave the processes one
collective apart: the others' step would average its gradients with the failed process's *next* step, silently. Each
step of ``Model.train`` (and ``Model.test_step``, an adversarial term's discriminator step, and ``SVI.step`` with
:class:`DistributedELBO`) therefore has one synchronization point after the loss is evaluated, where every process
says how its evaluation went (:func:`all_gather_int`: finite, non-finite, raised): a process whose evaluation raised
takes part in it as a failure (:func:`fail_together`) and raises its error, the others raise
:class:`~pyro_dgm.models.errors.RankFailedError` naming it (:func:`check_outcomes`), and no process takes the step.
Not covered: an error after that point (in ``backward``, whose gradient averaging the other processes then wait for,
or in the optimizer's step), an error in the first call that creates Pyro parameters on the other processes (they
broadcast them while the failed one does not), and an error in torch.distributed itself (a timeout, known by its
type or its backend's message): those still end in a timeout, which names the processes that did not reach the
collective.

Without a process group (or with one process) nothing is wrapped and every function here does nothing.

End a script with :func:`shutdown` (or let the exit handler that :func:`setup_from_env` registers do it): every
process waits for the others at a barrier before the process group is destroyed, so no process tears down its
connections while another still uses them.
"""
from __future__ import annotations

import atexit
import datetime
import itertools
import math
import os
import warnings
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as tdist
from pyro.infer import ELBO
from pyro.util import warn_if_nan
from torch import Tensor, nn

from pyro_dgm.losses.base import Loss
from pyro_dgm.losses.steps import _buffer, clear_grads, noting_buffers
from pyro_dgm.utils.checks import ArgumentError, add_note

__all__ = ["is_distributed", "rank", "world_size", "setup_from_env", "shutdown", "DEFAULT_TIMEOUT",
           "wrap", "broadcast_module", "broadcast_coalesced", "broadcast_tensor", "all_reduce_mean", "all_reduce_max",
           "average_gradients",
           "all_gather_int", "gather_to_rank0", "shard", "fail_together", "check_outcomes",
           "DataParalleledLoss", "Replicated", "PyroParams", "DistributedELBO"]

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
        bound = _timeout(timeout)
        store = _restart_store(bound)
        if store is None:
            tdist.init_process_group(backend=backend, timeout=bound)
        else:
            tdist.init_process_group(backend=backend, timeout=bound, store=store, rank=int(os.environ["RANK"]),
                                     world_size=int(os.environ["WORLD_SIZE"]))
        atexit.register(_shutdown_at_exit)
    return is_distributed()


def _restart_store(timeout: datetime.timedelta) -> Any:
    """After ``torchrun --max-restarts`` restarted the processes, a fresh namespace of the launcher's store for the
    process group (None otherwise).

    The launcher keeps one store for all its attempts, and the process group's keys (each process's address) are the
    same in every attempt, so a restarted process could read the address of a process of the previous attempt and
    fail to connect (``Gloo connectFullMesh failed ... Connection refused``), depending on which process writes first.
    A prefix naming the attempt (``TORCHELASTIC_RESTART_COUNT``) keeps the attempts apart.
    """
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or attempt in ("", "0"):
        return None
    client = tdist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                            int(os.environ["WORLD_SIZE"]), is_master=False, timeout=timeout)
    return tdist.PrefixStore(f"pyro_dgm/attempt_{attempt}", client)


def _shutdown_at_exit() -> None:
    import sys

    error = getattr(sys, "last_value", None) or getattr(sys, "last_exc", None)
    if error is not None:
        # the script ended on an uncaught exception: the other processes will not come to the barrier
        if tdist.is_available() and tdist.is_initialized():
            if _timed_out(error):
                _report_missing_ranks(error)
            tdist.destroy_process_group()
        return
    shutdown()


def _timed_out(error: BaseException) -> bool:
    """Whether ``error`` is a collective that waited past the timeout (a process hung or died)."""
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("timed out" in text or "timeout" in text)


def _report_missing_ranks(error: BaseException) -> None:
    """After a collective timed out, name the processes that hang or died: every process that times out says so in
    the rendezvous store (the connections between the processes are closed by then), waits up to 15 seconds (or
    the timeout, if shorter) for the others to say so too, and prints the ranks that did not to stderr, after the
    traceback. A process blocked in a collective times out as well; one that hangs elsewhere or died does not."""
    import sys
    import time

    try:
        store = tdist.distributed_c10d._get_default_store()
    except Exception:  # pragma: no cover - a process group without a store
        return
    me, n = tdist.get_rank(), tdist.get_world_size()
    prefix = f"pyro_dgm/timed_out/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
    bound = min(_timeout(None), datetime.timedelta(seconds=15)).total_seconds()
    try:
        store.set(f"{prefix}{me}", "1")
        deadline = time.monotonic() + bound
        missing = [r for r in range(n) if r != me]
        while missing and time.monotonic() < deadline:
            time.sleep(0.1)
            missing = [r for r in missing if not _has_key(store, f"{prefix}{r}")]
    except Exception:  # the store is gone (rank 0's agent stopped): nothing more to learn
        return
    if missing:
        print(f"pyro_dgm.models.distributed: a collective timed out on rank {me} ({type(error).__name__}); "
              f"rank(s) {', '.join(map(str, missing))} did not reach it within the timeout nor time out within "
              f"{bound:g} s after: they hang or died", file=sys.stderr, flush=True)


STEP_FINE, STEP_NON_FINITE, STEP_RAISED = 0, 1, 2
"""What a process tells the others of its step at the step's synchronization point (:func:`all_gather_int`)."""


#: Marks of the messages of torch.distributed's backends (their errors are not all ``DistError``s): the source
#: files and classes that raise them, not words a user's error may hold ("timed out" is also a CUDA kernel's).
_BACKEND_MARKS = ("gloo/", "unbound_buffer", "ProcessGroupGloo", "ProcessGroupNCCL", "NCCL error",
                  "Connection closed by peer", "pair closure")


def _collective_broke(error: BaseException) -> bool:
    """Whether ``error`` came from torch.distributed itself (a collective that timed out, a closed connection): then
    another collective would only wait for the timeout again. Judged by its type (``DistError``) or by the marks of
    the backends' messages, not by words a user's error may hold too: an error taken for a broken collective is not
    told to the other processes, which would then step against this one's next step."""
    if isinstance(error, getattr(tdist, "DistError", ())):
        return True
    text = str(error)
    return any(s in text for s in _BACKEND_MARKS)


def fail_together(error: BaseException, what: str) -> None:
    """Under a process group: tell the other processes, at the synchronization point of the step ``what`` (e.g.
    ``"Model.train (step 3)"``), that it raised ``error`` on this process, so that they raise
    :class:`~pyro_dgm.models.errors.RankFailedError` there instead of taking the step, then note on ``error`` that
    they did; the caller raises ``error`` again. Without a process group, for Ctrl-C (``KeyboardInterrupt`` reaches
    every process: none waits for another) or for an error of torch.distributed itself (another collective would
    wait for the timeout), nothing is done; a ``SystemExit`` (``sys.exit()`` in a network's forward on one process) is
    told as an error is.

    Call it only where the step's own synchronization (:func:`all_gather_int` of :data:`STEP_FINE`...) has not been
    reached yet: in its place.
    """
    if not isinstance(error, (Exception, SystemExit)) or not is_distributed() or _collective_broke(error):
        return
    try:
        outcomes = all_gather_int(STEP_RAISED)
    except Exception:  # the others are gone: the error itself is what to show
        return
    me = rank()
    also = [r for r, o in enumerate(outcomes) if o == STEP_RAISED and r != me]
    add_note(error, f"{what} raised on rank {me} (of {len(outcomes)}) before the processes synchronized; the other "
             "processes were told there and raised RankFailedError, so none took the step"
             + (f" (rank(s) {', '.join(map(str, also))} raised too)" if also else ""))


def check_outcomes(outcomes: Sequence[int], what: str) -> None:
    """Raise :class:`~pyro_dgm.models.errors.RankFailedError` if another process's step ``what`` raised
    (``outcomes``: every process's :data:`STEP_RAISED`... by rank, from :func:`all_gather_int`), naming it; the
    original error is raised on that process (:func:`fail_together`)."""
    failed = [r for r, o in enumerate(outcomes) if o == STEP_RAISED]
    if failed:
        from pyro_dgm.models.errors import RankFailedError

        ranks = ", ".join(map(str, failed))
        raise RankFailedError(f"{what} raised on rank(s) {ranks} (of {len(outcomes)}) before the processes "
                              f"synchronized, so rank {rank()} did not take the step either; the original error is "
                              f"on rank(s) {ranks}: see that process's output", failed)


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


def wrap(networks: nn.Module, watch_param_store: bool = True, **ddp_kwargs: Any) -> "Replicated | None":
    """The data-parallel evaluation of a loss over ``networks`` (a :class:`Replicated`) under a process group of more
    than one process, else None.

    Building it broadcasts rank 0's parameters and buffers to every process (and the Pyro-side parameters already in
    the param store, when ``watch_param_store``). ``ddp_kwargs`` are passed to ``DistributedDataParallel`` and
    override the defaults (``find_unused_parameters=True``: a network listed for training that a step does not use
    gets no gradient on any process, as in a single process).
    """
    if not is_distributed():
        return None
    return Replicated(networks, watch_param_store=watch_param_store, **ddp_kwargs)


class PyroParams(nn.Module):
    """Parameters of Pyro's param store (unconstrained, by name) as the parameters of a module, so that
    ``DistributedDataParallel`` broadcasts them and averages their gradients.

    The module holds the store's tensors themselves, not copies: the gradients the loss produces land on them, and
    rank 0's values broadcast into them are the values ``pyro.param`` returns. Their module names are ``p0``,
    ``p1``... (a param-store name may hold dots); :attr:`names` gives the store's names in the same order.

    Examples
    --------
    >>> import pyro, torch
    >>> pyro.clear_param_store()
    >>> w = pyro.param("guide.w", torch.zeros(2))
    >>> held = PyroParams(dict(pyro.get_param_store().named_parameters()))
    >>> held.names, next(held.parameters()) is pyro.get_param_store().get_param("guide.w").unconstrained()
    (['guide.w'], True)
    """

    def __init__(self, params: Mapping[str, Tensor]) -> None:
        super().__init__()
        self.names = list(params)
        for i, t in enumerate(params.values()):
            if not isinstance(t, Tensor):
                raise TypeError(f"PyroParams: {self.names[i]!r} must be a tensor, got {type(t).__name__}")
            self._parameters[f"p{i}"] = t  # type: ignore[assignment]  # the store's own tensor (no nn.Parameter copy)


class _Call(nn.Module):
    """What ``DistributedDataParallel`` wraps: the networks (and the covered Pyro parameters) as submodules, and a
    forward that calls the function it is given (a loss evaluation), so DDP sees the forward pass."""

    def __init__(self, networks: nn.Module, pyro_params: PyroParams | None) -> None:
        super().__init__()
        self.networks = networks
        self.pyro_params = pyro_params

    def forward(self, fn: Any, args: Any, kwargs: Mapping[str, Any]) -> Any:
        return fn(*args, **kwargs)


def _no_buffer_sync_option() -> str:
    """DistributedDataParallel's keyword that turns off its copy of rank 0's buffers at each forward (the wrapper
    copies them after each training evaluation itself): ``forward_sync_buffers`` where torch has it (it deprecates
    ``broadcast_buffers``, with a warning), else ``broadcast_buffers``."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    try:
        names = inspect.signature(DistributedDataParallel.__init__).parameters
    except (TypeError, ValueError):
        return "broadcast_buffers"
    return "forward_sync_buffers" if "forward_sync_buffers" in names else "broadcast_buffers"


_NO_BUFFER_SYNC = _no_buffer_sync_option()


class Replicated:
    """A loss evaluated as the forward of ``DistributedDataParallel`` over the networks it trains and the Pyro-side
    parameters it creates: what :class:`~pyro_dgm.models.Model`, the adversarial terms' discriminators and
    :class:`DistributedELBO` train with under a process group.

    * ``replicated(loss, x_dict, kwargs)`` is ``loss.eval(x_dict, return_terms=True, **kwargs)`` (what ``Model``
      calls); ``replicated.run(fn, *args, **kwargs)`` is ``fn(*args, **kwargs)``. Both run inside DDP's forward, so
      the ``backward`` of the result averages the gradients over the processes (bucketed, during the backward pass).
    * **Pyro-side parameters** (``pyro.param`` in a custom term, an autoguide in a ``PyroELBO`` term, networks that
      ``joint.model``/``guide`` register with ``pyro.module``): with ``watch_param_store``, every parameter of Pyro's
      param store is covered too (:class:`PyroParams`). Those present when this is built are broadcast from rank 0
      then; when a call creates new ones (their first step), the wrapper is rebuilt over them (rank 0's initial
      values broadcast), the random state is put back to what it was before the call and the call runs again, so the
      step is the one every process would have taken had the parameters existed before it, with rank 0's values
      (once per new set of parameters); after it the random state is the first run's, as in one process, whose
      call drew the initial values too, and so are the buffers of the modules that ran (a batch norm's statistics
      are updated once); those not among ``networks`` (a network that ``model`` registers with ``pyro.module``) are
      copied from rank 0 with the networks' from then on. Every process must create the same parameters in the
      same call, as it runs the same program; a process that does not hangs the others until the timeout.
    * ``watch_param_store=False`` (the discriminators' steps) skips that: one attribute check per call.
    * **Buffers** (a batch norm's running statistics): each process updates them from its own slice of the batch, as
      under DDP; after every evaluation with gradients, rank 0's are copied to every process (one broadcast per
      dtype), so the replicas stay identical between steps, and a test, a sample or a checkpoint on any process sees
      the same statistics (DDP itself copies them only at the start of the next training forward). Batch statistics
      over the global batch need ``torch.nn.SyncBatchNorm`` (GPUs).

    Without a process group :func:`wrap` returns None and the caller evaluates directly: nothing here runs.
    """

    def __init__(self, networks: nn.Module, watch_param_store: bool = True, **ddp_kwargs: Any) -> None:
        self.networks = networks
        no_sync = {} if "broadcast_buffers" in ddp_kwargs else {_NO_BUFFER_SYNC: False}  # (the user's own kept)
        self._options: dict[str, Any] = {"find_unused_parameters": True, **no_sync, **ddp_kwargs}
        self._watch = watch_param_store
        self._covered: dict[str, Tensor] = {}
        self._extra: list[nn.Module] = []  # modules with buffers that ran in a call that covered new parameters,
        # not among the networks (see _run): their buffers are copied from rank 0 too
        self.watched: Any = None  # a Model's WatchedBuffers (losses.steps): the buffers of the networks its loss
        # reads without training them (a discriminator, a fixed encoder) are copied from rank 0 too
        self.taken: Any = None  # what its take() found at the start of the training step being taken (or None):
        # put back before a second run of the step (see _run)
        self._store: Any = None
        self._seen = -1
        self.ddp: nn.Module | None = None
        self._trainable = self._trainable_now()
        if watch_param_store:
            import pyro

            self._store = pyro.get_param_store()
            self._seen = len(self._store)
            self._covered = self._uncovered()
        self._build()

    # ------------------------------------------------------------------ building
    def _uncovered(self) -> dict[str, Tensor]:
        """The param store's parameters that neither the networks nor the covered set hold (by identity)."""
        held = {id(t) for t in self.networks.parameters()} | {id(t) for t in self._covered.values()}
        return {n: t for n, t in self._store.named_parameters() if id(t) not in held and t.requires_grad}

    def _build(self) -> None:
        self.ddp = None  # the previous wrapper (and its reducer's gradient hooks) goes first
        module = _Call(self.networks, PyroParams(self._covered) if self._covered else None)
        if not any(p.requires_grad for p in module.parameters()):
            broadcast_module(module)  # nothing to average (yet): the replicas still start identical
            return
        from torch.nn.parallel import DistributedDataParallel

        options = dict(self._options)
        if torch.cuda.is_available() and tdist.get_backend() == "nccl" and "device_ids" not in options:
            device = next(module.parameters()).device
            if device.type == "cuda":
                options["device_ids"] = [device.index if device.index is not None else torch.cuda.current_device()]
        self.ddp = DistributedDataParallel(module, **options)
        self.sync_buffers()  # DDP copies rank 0's buffers only with broadcast_buffers=True

    def sync_buffers(self) -> None:
        """Copy rank 0's buffers of the networks (of the modules found by :meth:`_run`, and those of
        :attr:`watched`) to every process (a no-op for networks without buffers)."""
        buffers = [b for b in self.networks.buffers()]
        extra = [b for m in self._extra for b in m.buffers()]
        if self.watched is not None:
            extra += [m._buffers[n] for m, n, _ in self.watched.pairs if n in m._buffers]
        if extra:
            known = {id(b) for b in buffers}
            for b in extra:
                if b is not None and id(b) not in known:
                    known.add(id(b))
                    buffers.append(b)
        if buffers:
            broadcast_coalesced(buffers)

    def sync_buffers_failing(self) -> None:
        """:meth:`sync_buffers` from a process whose training call failed (its evaluation raised, or the call was
        refused before it): the others' evaluation copies rank 0's buffers before they meet at the step's
        synchronization point, so this process takes part in the copy before it tells them (:func:`fail_together`);
        if the others are gone, nothing (the call's own error is the one to show)."""
        try:
            self.sync_buffers()
        except Exception:  # noqa: BLE001
            pass

    def _cover(self, new: Mapping[str, Tensor]) -> None:
        """Cover ``new`` parameters too: the wrapper is rebuilt (rank 0's values of every covered parameter are
        broadcast); covered parameters that left the store (``pyro.clear_param_store()``) are dropped."""
        import gc

        kept = {id(t) for t in self._covered.values()}
        self._covered = {n: t for n, t in self._store.named_parameters() if id(t) in kept or n in new}
        self.ddp = None
        gc.collect()  # the previous wrapper's reducer (and its gradient hooks) must be gone before the next backward
        self._build()

    # ------------------------------------------------------------------ calls
    def _forward(self, fn: Any, args: Any, kwargs: Mapping[str, Any]) -> Any:
        ddp = self.ddp
        return fn(*args, **kwargs) if ddp is None else ddp(fn, args, kwargs)

    def _trainable_now(self) -> tuple[bool, ...]:
        return tuple(p.requires_grad for p in self.networks.parameters())

    def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` as the forward of the wrapper (see the class notes).

        DDP averages the gradients of the parameters that required grad when it was built: when the networks'
        ``requires_grad`` flags changed since (a part frozen for a warm-up, then unfrozen; every process runs the
        same program, so they change together), the wrapper is rebuilt first, over the parameters that require
        grad now (rank 0's values of every parameter broadcast)."""
        if torch.is_grad_enabled():
            trainable = self._trainable_now()
            if trainable != self._trainable:
                import gc

                self._trainable = trainable
                self.ddp = None
                gc.collect()  # the previous wrapper's reducer (and its gradient hooks) goes first
                self._build()
        try:
            out = self._run(fn, args, kwargs)
        except (Exception, SystemExit) as e:
            # the other processes' evaluation may have gone well: they copy rank 0's buffers next, then meet at the
            # caller's synchronization point; this process takes part in the copy too, so that its report of the
            # failure there (fail_together) meets theirs, not the copy
            if torch.is_grad_enabled() and not _collective_broke(e):
                self.sync_buffers_failing()
            raise
        if torch.is_grad_enabled():  # a training evaluation: the buffers it updated become rank 0's everywhere
            self.sync_buffers()
        return out

    def _run(self, fn: Any, args: Any, kwargs: Mapping[str, Any]) -> Any:
        if not self._watch:
            return self._forward(fn, args, kwargs)
        store = self._store
        if len(store) != self._seen:  # created between two calls (a guide run by hand): covered before this one
            self._seen = len(store)
            new = self._uncovered()
            if new:
                self._cover(new)
        state = _rng_state()
        out = self._forward(fn, args, kwargs)
        if len(store) != self._seen:  # created by this call: cover them, then run the call again
            self._seen = len(store)
            new = self._uncovered()
            if new:
                out = None  # the first evaluation's graph goes before the wrapper is rebuilt
                after = _rng_state()  # what one process's generator holds after the call (initial values drawn)
                self._cover(new)
                _set_rng_state(state)
                taken, restored = self.taken, set()
                if taken:  # (a Model's step: its networks' buffers as the step found them, so that the second
                    from pyro_dgm.losses.steps import restore_buffers  # run computes with them and updates them once)

                    restore_buffers(taken)
                    restored = {(id(m), n) for m, n, _, values in taken if values is not None}
                ran: dict[int, tuple[nn.Module, list[tuple[nn.Module, str, Tensor, Tensor]]]] = {}
                with noting_buffers(ran, whole=True):
                    out = self._forward(fn, args, kwargs)
                _set_rng_state(after)  # the second run does not draw the initial values again, nor update the
                known = {id(b) for b in self.networks.buffers()}  # buffers again (a batch norm's statistics)
                with torch.no_grad():
                    for module, first in ran.values():
                        for _, name, b, value in first:
                            if (id(module), name) in restored:
                                continue  # (put back before the second run, which updated it once)
                            if _buffer(module, name) is b:  # (a TorchScript module's wrapper has no get)
                                b.data.copy_(value)  # (not counted as a change: the second run's graph saved
                                # them; a training batch norm's backward reads its batch statistics, not these)
                            else:  # (rebound by the second run, self.avg = ...: the first run's value)
                                module._buffers[name] = value
                        if (any(id(b) not in known for _, _, b, _ in first)
                                and all(m is not module for m in self._extra)):
                            self._extra.append(module)
        return out

    def __call__(self, loss: Any, x_dict: Any, kwargs: Mapping[str, Any]) -> Any:
        return self.run(loss.eval, x_dict, return_terms=True, **kwargs)

    def no_sync(self) -> Any:
        """DDP's ``no_sync()`` context (gradients accumulate locally, not averaged), or a null context."""
        import contextlib

        return self.ddp.no_sync() if self.ddp is not None else contextlib.nullcontext()  # type: ignore[operator]

    @property
    def covered(self) -> list[str]:
        """The names of the param-store parameters this wrapper broadcasts and averages."""
        return list(self._covered)


class DistributedELBO(ELBO):
    r"""An ELBO for Pyro's ``SVI`` under ``torchrun``: ``elbo``'s loss evaluated inside ``DistributedDataParallel``
    over the networks it trains, so every process takes the same step.

    ``SVI(model, guide, pyro.optim.Adam(...), DistributedELBO(elbo, networks))`` works for a pyro_dgm loss
    (``SVI(p.model, q.guide, optim, DistributedELBO(loss_cls))``) and for ``joint.model``/``q.guide`` with a Pyro
    ELBO (``DistributedELBO(Trace_ELBO(), [joint, q], global_loss="sum")``). The first one sets up the process group
    from torchrun's environment (:func:`setup_from_env`). Parameters of Pyro's param store (networks registered by
    ``pyro.module``, ``pyro.param``, an autoguide's) are broadcast from rank 0 and averaged too, as they appear
    (see :class:`Replicated`). Without a process group it is ``elbo`` itself: the same numbers as ``SVI(...,
    elbo)``.

    Parameters
    ----------
    elbo : pyro.infer.ELBO
        A pyro_dgm loss (a ``pyro.infer.ELBO``) or one of Pyro's (``Trace_ELBO()``...).
    networks : nn.Module or sequence of nn.Module, optional
        The networks the ELBO trains (broadcast when this is built). Default: a pyro_dgm loss's
        :attr:`~pyro_dgm.losses.base.Loss.distributions`; for a Pyro ELBO none, the networks that ``model`` and
        ``guide`` register with ``pyro.module`` being covered at the first step (which then runs twice, see
        :class:`Replicated`).
    global_loss : {"mean", "sum"}, default "mean"
        How the loss of the global batch relates to the processes' losses. ``"mean"``: each process's loss is a mean
        over its rows (a pyro_dgm ``loss.mean()``), and DDP's average of the gradients is the gradient of the global
        batch's mean. ``"sum"``: each process's loss is a sum over its rows (Pyro's ELBOs over a ``pyro.plate``):
        it is multiplied by the number of processes before ``backward``, so the average is the gradient of the
        global batch's sum, the step ``SVI`` takes on the whole batch in one process.
    **ddp_kwargs
        Passed to ``DistributedDataParallel``.

    Notes
    -----
    ``svi.step`` returns this process's loss (unscaled); average it with :func:`all_reduce_mean` for a global
    value. When the loss is not finite on some process, it is NaN (or that process's infinity) on every process,
    with Pyro's warning; when the evaluation raises on some process, every process raises before ``backward``
    (see :meth:`loss_and_grads`). ``svi.evaluate_loss`` evaluates ``elbo`` alone (no gradient, nothing to
    average).

    Examples
    --------
    >>> import pyro, torch
    >>> from pyro.infer import SVI, Trace_ELBO
    >>> def model(x):
    ...     mu = pyro.param("mu", torch.zeros(1))
    ...     with pyro.plate("data", x.shape[0]):
    ...         pyro.sample("x", pyro.distributions.Normal(mu, 1.), obs=x)
    >>> pyro.clear_param_store()
    >>> svi = SVI(model, lambda x: None, pyro.optim.SGD({"lr": 0.1}), DistributedELBO(Trace_ELBO(), global_loss="sum"))
    >>> loss = svi.step(torch.full((4,), 2.0))  # one process: the step of SVI(..., Trace_ELBO())
    >>> round(pyro.param("mu").item(), 4)  # 0.1 * d/dmu sum_i log N(2 | mu, 1) at mu = 0
    0.8
    """

    def __init__(self, elbo: Any, networks: nn.Module | Any = None, global_loss: str = "mean",
                 **ddp_kwargs: Any) -> None:
        if not callable(getattr(elbo, "differentiable_loss", None)):
            raise TypeError("DistributedELBO: elbo must be a pyro.infer.ELBO (Trace_ELBO(), a pyro_dgm loss...), got "
                            f"{type(elbo).__name__}")
        if global_loss not in ("mean", "sum"):
            raise ValueError(f"DistributedELBO: global_loss must be 'mean' or 'sum', got {global_loss!r}")
        if networks is None:
            networks = nn.ModuleList(list(elbo._dgm_distributions) if isinstance(elbo, Loss) else [])
        elif not isinstance(networks, nn.Module):
            networks = list(networks)
            bad = [type(m).__name__ for m in networks if not isinstance(m, nn.Module)]
            if bad:
                raise TypeError(f"DistributedELBO: networks must be torch modules, got {', '.join(bad)}")
            networks = nn.ModuleList(networks)
        super().__init__()
        self.elbo = elbo
        self.global_loss = global_loss
        setup_from_env()
        self.replicated = wrap(networks, **ddp_kwargs)
        self._scale = float(world_size()) if global_loss == "sum" else 1.0

    def loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        """``elbo.loss``: this process's loss, without gradient (``SVI.evaluate_loss``)."""
        return self.elbo.loss(model, guide, *args, **kwargs)

    def differentiable_loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> Tensor:
        """This process's loss, evaluated inside ``DistributedDataParallel`` (unscaled by ``global_loss``)."""
        if self.replicated is None:
            return self.elbo.differentiable_loss(model, guide, *args, **kwargs)
        return self.replicated.run(self.elbo.differentiable_loss, model, guide, *args, **kwargs)

    def loss_and_grads(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        """Backpropagate this process's loss (times the number of processes with ``global_loss="sum"``), the
        gradients averaged over the processes; return this process's loss (``SVI.step``).

        Before ``backward`` the processes tell each other how their evaluation went (one small collective): when it
        raised on some, they raise its error and the others :class:`~pyro_dgm.models.errors.RankFailedError`, with
        no gradient computed (``SVI`` takes no step); when the loss is NaN or infinite on some, every process
        returns a non-finite loss (NaN where its own is finite) and warns as Pyro's ELBOs do (``Encountered NaN:
        loss``), then steps on it as they do (the averaged gradients are not finite: the weights become NaN on every
        process).
        """
        if self.replicated is None:
            return self.elbo.loss_and_grads(model, guide, *args, **kwargs)
        what = f"SVI.step with DistributedELBO({type(self.elbo).__name__})"
        try:
            value = self.differentiable_loss(model, guide, *args, **kwargs)
            loss = float(value.detach())
        except (Exception, SystemExit) as e:
            fail_together(e, what)
            raise
        outcomes = all_gather_int(STEP_FINE if math.isfinite(loss) else STEP_NON_FINITE)
        check_outcomes(outcomes, what)
        bad = [r for r, o in enumerate(outcomes) if o == STEP_NON_FINITE]
        if bad and math.isfinite(loss):  # the global loss is not finite: every process says so, as one process would
            loss = math.nan
        if bad:  # on every process: Pyro's text, where the loss is NaN
            text = (f"loss (non-finite on rank(s) {', '.join(map(str, bad))} of {len(outcomes)}; this step averages "
                    "their gradients, as Pyro's ELBOs step on a NaN loss)")
            if math.isnan(loss):
                warn_if_nan(loss, text)
            else:
                warnings.warn(f"Encountered {loss}: {text}", UserWarning, stacklevel=3)
        if value.requires_grad:
            scaled = value * self._scale if self._scale != 1.0 else value
            try:
                scaled.backward()
            except BaseException:
                clear_grads(scaled)
                raise
        return loss

    def _get_trace(self, model: Any, guide: Any, args: Any, kwargs: Any) -> Any:
        raise NotImplementedError("DistributedELBO evaluates the ELBO it wraps; it does not trace model and guide")


def _rng_state() -> Any:
    cuda = (torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None)
    return torch.get_rng_state(), cuda


def _set_rng_state(state: Any) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1])


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every process (so the replicas start identical)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            tdist.broadcast(t.data, src=src)


_GATHERS = itertools.count()


def _has_key(store: Any, key: str) -> bool:
    """Whether the rendezvous ``store`` holds ``key`` now (``Store.check``; torch 2.1's ``PrefixStore`` has none, and
    waits for it a moment instead)."""
    check = getattr(store, "check", None)
    if check is not None:
        return bool(check([key]))
    try:
        store.wait([key], datetime.timedelta(milliseconds=50))
    except Exception:  # noqa: BLE001 (torch raises its own timeout error)
        return False
    return True


def gather_to_rank0(value: Any, what: str) -> list[Any] | None:
    """Every process's ``value`` (any picklable object), by rank, on rank 0; None on the other processes.

    It goes through the rendezvous store, not a collective, so a process that does not call it (a ``Model.save``
    under ``if rank == 0:``) cannot pair rank 0's gather with another collective: rank 0 raises a ``RuntimeError``
    naming the processes and ``what`` after the timeout. Every process must call it the same number of times.
    Without a process group: ``[value]``.
    """
    if not is_distributed():
        return [value]
    import pickle

    store = tdist.distributed_c10d._get_default_store()
    prefix = f"pyro_dgm/gather/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/{next(_GATHERS)}/"
    me, n = tdist.get_rank(), tdist.get_world_size()
    if me != 0:
        store.set(f"{prefix}{me}", pickle.dumps(value))
        return None
    keys = [f"{prefix}{r}" for r in range(1, n)]
    try:
        store.wait(keys)
    except Exception as err:
        missing = [r for r in range(1, n) if not _has_key(store, f"{prefix}{r}")]
        raise RuntimeError(
            f"{what} under torch.distributed: rank(s) {', '.join(map(str, missing))} did not call it within "
            f"{store.timeout.total_seconds():g} s; every process calls {what} (each adds its random state; only "
            "rank 0 writes), so call it on every process, not under `if rank == 0:`") from err
    out = [value] + [pickle.loads(store.get(k)) for k in keys]
    for k in keys:
        store.delete_key(k)
    return out


def broadcast_coalesced(tensors: list[Tensor], src: int = 0) -> None:
    """Copy rank ``src``'s ``tensors`` to every process in place: one broadcast per dtype and device."""
    if not is_distributed():
        return
    groups: dict[tuple[Any, Any], list[Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    with torch.no_grad():
        for group in groups.values():
            flat = torch.cat([t.detach().reshape(-1) for t in group])
            tdist.broadcast(flat, src=src)
            for t, part in zip(group, flat.split([t.numel() for t in group])):
                t.data.copy_(part.view_as(t))


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


def average_gradients(params: Sequence[Tensor]) -> None:
    """Average the gradients of ``params`` over the processes, in place: parameters that
    ``DistributedDataParallel`` does not hold (a group added to a model's optimizer with ``add_param_group``), so
    that every process takes the same step with them. A parameter with a gradient on some process gets the mean
    (the others' counted as 0); one with none anywhere keeps none. No-op without a process group."""
    if not params or not is_distributed():
        return
    has = all_reduce_max(torch.tensor([float(p.grad is not None) for p in params]))
    kept = [p for p, h in zip(params, has.tolist()) if h]
    if not kept:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in kept]
    parts = [torch.view_as_real(g) if g.is_complex() else g for g in grads]  # (a complex one: both parts)
    nccl = tdist.get_backend() == "nccl"
    with torch.no_grad():
        flat = torch.cat([g.detach().reshape(-1).to(device="cpu", dtype=torch.float64) for g in parts])
        if nccl:
            flat = flat.cuda()
        tdist.all_reduce(flat, op=tdist.ReduceOp.SUM)
        flat = flat / tdist.get_world_size()
        for p, g, r, part in zip(kept, grads, parts, flat.split([r.numel() for r in parts])):
            mean = part.view_as(r).to(device=p.device, dtype=r.dtype)
            p.grad = (torch.view_as_complex(mean.contiguous()) if g.is_complex() else mean).clone()


def all_gather_int(value: int) -> list[int]:
    """Every process's ``value``, by rank (``[value]`` without a process group)."""
    if not is_distributed():
        return [value]
    device = "cuda" if tdist.get_backend() == "nccl" else "cpu"
    mine = torch.tensor([value], dtype=torch.int64, device=device)
    out = [torch.empty_like(mine) for _ in range(tdist.get_world_size())]
    tdist.all_gather(out, mine)
    return [int(t) for t in out]


def all_reduce_max(value: Tensor) -> Tensor:
    """The maximum of ``value`` over the processes (``value`` itself without a process group)."""
    if not is_distributed():
        return value
    out = value.detach().clone()
    if tdist.get_backend() == "nccl":
        out = out.cuda()
    tdist.all_reduce(out, op=tdist.ReduceOp.MAX)
    return out.to(value.device)


def shard(batch: Mapping[str, Any], n: int | None = None, r: int | None = None,
          dims: Mapping[str, int] | None = None) -> dict[str, Any]:
    """This process's contiguous slice (along dim 0, or ``dims[name]``: 1 for the time-first series of an
    ``IterativeLoss``) of every tensor of ``batch``; other values are kept.

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
        d = dims.get(k, 0) if dims else 0
        if isinstance(v, Tensor) and v.dim() > d:
            if v.shape[d] < n:
                raise ValueError(f"shard: the batch of {k!r} has {v.shape[d]} rows, fewer than the {n} processes "
                                 f"(cut along its dim {d})")
            out[k] = v.tensor_split(n, dim=d)[r]
        else:
            out[k] = v
    return out


class _Paralleled(nn.Module):
    """Stands where Pixyz's ``DataParalleledLoss`` keeps ``nn.DataParallel(loss)``: the loss as ``module``."""

    def __init__(self, module: Loss) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)


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
            raise ArgumentError(f"DataParalleledLoss: loss must be a pyro_dgm Loss, got {type(loss).__name__}")
        super().__init__(input_var=loss.input_var)
        self.paralleled = _Paralleled(loss)  # where Pixyz keeps nn.DataParallel(loss): Pixyz's state-dict keys
        self._dgm_prec = loss._dgm_prec

    @property
    def loss(self) -> Loss:
        """The wrapped loss (``paralleled.module``, as in Pixyz)."""
        return self.paralleled.module

    @property
    def latex(self) -> str:
        return self.loss.latex

    @property
    def _symbol(self) -> Any:
        return self.loss._symbol

    def forward(self, x_dict: dict[str, Any], **kwargs: Any) -> Any:
        # (value, the samples the loss drew): Pixyz's wrapper returns its loss's forward, which holds no inputs
        return self.loss.eval(x_dict, return_dict=True, return_all=False, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # as Pixyz's wrapper: what the wrapper lacks is the wrapped loss's (``DataParalleledLoss(kl).p``)
        try:
            return super().__getattr__(name)
        except AttributeError:
            paralleled = self.__dict__.get("_modules", {}).get("paralleled")
            if paralleled is None:
                raise
            return getattr(paralleled.module, name)
