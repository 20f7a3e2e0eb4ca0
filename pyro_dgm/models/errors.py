r"""The errors a training step raises when a number stops being finite, and where they say it happened.

A step knows its step number, not the epoch: :class:`NonFiniteLossError` keeps the place it names apart from the
rest of its message, so :func:`~pyro_dgm.models.trainer.fit`, which knows the epoch, adds it where it catches the
error (:meth:`NonFiniteLossError.add_epoch`) before letting it go on. Under ``torch.distributed``, the processes
whose step did not raise raise :class:`RankFailedError` when another's did (see
:func:`pyro_dgm.models.distributed.fail_together`).
"""
from __future__ import annotations

__all__ = ["NonFiniteLossError", "NonFiniteGradientError", "ModelArgumentError", "RankFailedError",
           "CheckpointPathError"]


class ModelArgumentError(TypeError, ValueError):
    """An option of a model of the wrong type (``clip_grad_norm="a"``), refused when the model is built: a
    TypeError, and also the ValueError that Pixyz raises for it at the first training step (torch's ``float()`` of
    the option), so Pixyz code that catches either still catches it."""


class CheckpointPathError(FileNotFoundError, RuntimeError):
    """``Model.save`` to a path whose folder does not exist, or that is a folder: a FileNotFoundError naming the
    path, and also the RuntimeError that ``torch.save`` raises for it under Pixyz, so Pixyz code that catches that
    still catches it."""


class NonFiniteLossError(FloatingPointError):
    r"""A training or test loss became NaN or infinite; the message names the step, the epoch and the terms.

    Parameters
    ----------
    head : str
        The message up to the place (``"... the training loss is nan at "``), or the whole message.
    step : int, optional
        The step the error happened at (printed as ``"step 3"`` after ``head``).
    tail : str, default ""
        The message after the place.
    epoch : int, optional
        The epoch (1-based); :meth:`add_epoch` sets it when the error passes through ``fit``.

    Examples
    --------
    >>> err = NonFiniteLossError("Model: the training loss is nan at ", step=3, tail=" (non-finite term(s): 'kl')")
    >>> str(err)
    "Model: the training loss is nan at step 3 (non-finite term(s): 'kl')"
    >>> str(err.add_epoch(2))
    "Model: the training loss is nan at epoch 2, step 3 (non-finite term(s): 'kl')"
    """

    def __init__(self, head: str, step: int | None = None, tail: str = "", epoch: int | None = None) -> None:
        self.head, self.step, self.tail, self.epoch = head, step, tail, epoch
        super().__init__(self._text())

    def _text(self) -> str:
        if self.step is None:
            return self.head + self.tail
        where = f"step {self.step}" if self.epoch is None else f"epoch {self.epoch}, step {self.step}"
        return f"{self.head}{where}{self.tail}"

    def add_epoch(self, epoch: int) -> "NonFiniteLossError":
        """Name ``epoch`` in the message (once: an epoch already named, or a message with no step, is kept);
        returns the error itself, for ``raise``."""
        if self.epoch is None and self.step is not None:
            self.epoch = epoch
            self.args = (self._text(),)
        return self

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return type(self), (self.head, self.step, self.tail, self.epoch)


class NonFiniteGradientError(NonFiniteLossError):
    """A gradient became NaN or infinite while the loss was finite; raised before the optimizer steps (the weights
    are unchanged), naming the step and the distributions whose parameters have the non-finite gradients."""


class RankFailedError(RuntimeError):
    """Under ``torch.distributed``: another process's step raised before the processes synchronized, so this
    process did not take the step either (its weights, optimizer and buffers are as before it); the original error is
    raised on the process(es) named, and shown in their output.

    Parameters
    ----------
    message : str
        The whole message.
    ranks : list of int
        The processes whose step raised.
    """

    def __init__(self, message: str, ranks: list[int]) -> None:
        super().__init__(message)
        self.ranks = list(ranks)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return type(self), (self.args[0], self.ranks)
