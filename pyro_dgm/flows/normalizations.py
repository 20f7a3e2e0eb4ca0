r"""Normalizing layers as flows: batch normalization (Dinh et al. 2017) and activation normalization (Glow)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pyro_dgm.flows.base import Flow, positive_int
from pyro_dgm.poutine.memoize_messenger import active_memo
from pyro_dgm.utils.compat import is_compiling
from pyro_dgm.utils.settings import epsilon
from pyro_dgm.utils.attributes import refuse_pixyz_hooks
from pyro_dgm.utils.checks import ShapeError

__all__ = ["BatchNorm1d", "BatchNorm2d", "ActNorm2d"]


class BatchNorm1d(Flow):
    r"""Batch normalization with an inverse: :math:`z = e^{\log\gamma} (x - \mu)/\sqrt{v} + \beta`.

    In training mode :math:`\mu` and :math:`v = \sigma^2 + \epsilon` are the statistics of the batch (over every dim
    but the features; :math:`\sigma^2` is the biased variance) and the inverse uses those of the last forward batch; in
    eval mode both use the running statistics (which include :math:`\epsilon`, as in Pixyz). The log-determinant
    treats the statistics as constants, :math:`\sum \log\gamma - \tfrac12 \log v`, exact in eval mode.

    Parameters
    ----------
    in_features : int
    momentum : float, default 0.0
        The weight of the old running statistics: ``running = momentum * running + (1 - momentum) * batch`` (Pixyz's
        convention, the opposite of ``torch.nn.BatchNorm1d``'s; 0 keeps the last batch's statistics).
    eps : float, optional
        Added to the batch variance; by default Pixyz's ``epsilon()`` (1e-7), read at each call as Pixyz reads it
        (``set_epsilon`` after the flow is built takes effect).
    cache_size : {1, 0}

    Examples
    --------
    >>> f = BatchNorm1d(3)
    >>> x = torch.randn(20, 3) * 4 + 1
    >>> z = f.forward(x)
    >>> bool(torch.allclose(z.mean(0), torch.zeros(3), atol=1e-5)), bool(torch.allclose(f.inverse(z), x, atol=1e-5))
    (True, True)
    """

    _dgm_feature_name = "features"
    _dgm_constant_logdet = True
    _dgm_batch_statistics = True  # in training mode it maps with its batch's statistics (see flows.base._apply)

    def __init__(self, in_features: int, momentum: float = 0.0, eps: float | None = None,
                 cache_size: int = 1) -> None:
        in_features = positive_int(type(self).__name__, "in_features", in_features)
        if isinstance(momentum, (Tensor, np.ndarray)) and (momentum.numel() if isinstance(momentum, Tensor)
                                                          else momentum.size) > 1:  # per feature, as Pixyz runs it
            momentum = torch.as_tensor(momentum, dtype=torch.get_default_dtype())
        else:
            try:  # (a NumPy number or array, or a tensor, of one element too)
                momentum = float(momentum.reshape(()) if isinstance(momentum, (Tensor, np.ndarray)) else momentum)
            except (TypeError, ValueError):
                raise TypeError(f"{type(self).__name__}: momentum must be a number (or one per feature), got "
                                f"{momentum!r:.40}") from None
        super().__init__(in_features, event_dim=self._dgm_event_dim(), cache_size=cache_size)
        shape = self._dgm_param_shape(in_features)
        if isinstance(momentum, Tensor):  # one per feature (channel): in the running statistics' shape
            if momentum.numel() != in_features:
                raise ValueError(f"{type(self).__name__}: momentum must be a number or one per feature ("
                                 f"{in_features}), got {momentum.numel()} values")
            momentum = momentum.reshape(shape)
        self.log_gamma = nn.Parameter(torch.zeros(shape))
        self.beta = nn.Parameter(torch.zeros(shape))
        self.momentum = momentum
        self._dgm_eps = None if eps is None else float(eps)
        self.register_buffer("running_mean", torch.zeros(shape))
        self.register_buffer("running_var", torch.ones(shape))
        self.register_buffer("batch_mean", None, persistent=False)
        self.register_buffer("batch_var", None, persistent=False)

    @property
    def eps(self) -> float:
        """What is added to the batch variance: the ``eps`` given, else ``epsilon()`` now."""
        return epsilon() if self._dgm_eps is None else self._dgm_eps

    @eps.setter
    def eps(self, value: float | None) -> None:
        self._dgm_eps = None if value is None else float(value)

    def __setstate__(self, state: dict) -> None:
        if "_dgm_eps" not in state:  # pickled when eps was an attribute (the epsilon() of construction): kept
            state["_dgm_eps"] = state.pop("eps", None)
        super().__setstate__(state)

    @staticmethod
    def _dgm_event_dim() -> int:
        return 1

    @staticmethod
    def _dgm_param_shape(n: int) -> tuple[int, ...]:
        return (n,)

    def _dgm_reduce_dims(self, v: Tensor) -> list[int]:
        return list(range(v.dim() - 1))

    def _dgm_pixels(self, v: Tensor) -> int:
        return 1

    def _dgm_details(self) -> str:
        return f"in_features={self.in_features}, momentum={self.momentum}"

    def _dgm_stats(self, x: Tensor | None) -> tuple[Tensor, Tensor]:
        if x is None:  # inverse: the last batch's statistics in training mode, else the running ones
            if self.training and self.batch_mean is not None:
                memo = _eager_memo()
                got = memo.noted(self._dgm_stats_owner()) if memo is not None else None
                if got is not None:  # computed in this evaluation: with their graph, as Pixyz keeps them, so that
                    return got  # the inverse of a draw is the draw, also for the gradients (probe p349)
                return self.batch_mean, self.batch_var
            return self.running_mean, self.running_var
        if not self.training:
            return self.running_mean, self.running_var
        dims = self._dgm_reduce_dims(x)
        mean = x.mean(dim=dims, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=dims) + self.eps
        mean, var = mean.reshape(self.running_mean.shape), var.reshape(self.running_var.shape)
        memo = _eager_memo()
        if memo is not None:
            memo.note(self._dgm_stats_owner(), (mean, var))
        with torch.no_grad():
            self.batch_mean, self.batch_var = mean.detach(), var.detach()
            m = self.momentum
            self.running_mean = m * self.running_mean + (1 - m) * self.batch_mean
            self.running_var = m * self.running_var + (1 - m) * self.batch_var
        return mean, var

    def _dgm_stats_owner(self) -> Any:
        """What the batch statistics of a training-mode forward pass are noted under in the evaluation's memoizing
        scope (:meth:`~pyro_dgm.poutine.memoize_messenger.MemoizeMessenger.note`), with their graph; the buffers hold
        them detached, for calls after the evaluation."""
        owner = self.__dict__.get("_dgm_stats_key")
        if owner is None:
            owner = self.__dict__["_dgm_stats_key"] = _StatsKey()
        return owner

    def _dgm_logdet(self, v: Tensor, var: Tensor) -> Tensor:
        ld = (self.log_gamma - 0.5 * torch.log(var)).sum() * self._dgm_pixels(v)
        return ld.to(v.dtype).expand(v.shape[:v.dim() - self._dgm_domain_event_dim])

    def _dgm_forward_logdet(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        mean, var = self._dgm_stats(x)
        z = torch.exp(self.log_gamma) * ((x - mean) / var.sqrt()) + self.beta
        return z, self._dgm_logdet(x, var)

    def _dgm_inverse_logdet(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        mean, var = self._dgm_stats(None)
        x = (z - self.beta) / torch.exp(self.log_gamma) * var.sqrt() + mean
        return x, self._dgm_logdet(z, var)


def _eager_memo() -> Any:
    """The memoizing scope of an eager evaluation, where a batch norm notes its batch statistics (see
    ``BatchNorm1d._dgm_stats_owner``); ``None`` in a compiled one (probe p351: with a graph break between two batch
    norms, a compiled evaluation read the wrong statistics), which inverts with the buffers' detached copies."""
    memo = active_memo()
    return None if memo is None or memo._compiled or is_compiling() else memo


class _StatsKey:
    """An identity for :meth:`BatchNorm1d._dgm_stats_owner` (copied with the flow: ``deepcopy`` gives a new one)."""

    __slots__ = ()


class BatchNorm2d(BatchNorm1d):
    r"""Batch normalization of the channels of images ``(..., C, H, W)``, with an inverse (see :class:`BatchNorm1d`).

    The statistics are per channel and the log-determinant counts every pixel:
    :math:`H W \sum_c \log\gamma_c - \tfrac12\log v_c`. Pixyz's differs: in training it normalizes each
    (channel, pixel) by its own batch statistics (``x.mean(0)``), and its log-determinant sums over the wrong dim,
    giving a ``(C, H)`` tensor instead of one number per image (see ``tests/pixyz_compat/test_diff_flows.py``).

    Examples
    --------
    >>> f = BatchNorm2d(2).eval()
    >>> x = torch.randn(5, 2, 3, 3)
    >>> z, logdet = f.forward_with_logdet(x)
    >>> bool(torch.allclose(f.inverse(z), x, atol=1e-5)), tuple(logdet.shape)
    (True, (5,))
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        refuse_pixyz_hooks(cls, BatchNorm2d, ("_unsqueeze",), ("forward", "inverse"), "override forward and inverse")

    _dgm_feature_name = "channels"

    @staticmethod
    def _dgm_event_dim() -> int:
        return 3

    @staticmethod
    def _dgm_param_shape(n: int) -> tuple[int, ...]:
        return (n, 1, 1)

    def _dgm_reduce_dims(self, v: Tensor) -> list[int]:
        return [d for d in range(v.dim()) if d != v.dim() - 3]

    def _dgm_pixels(self, v: Tensor) -> int:
        return v.shape[-1] * v.shape[-2]


class ActNorm2d(Flow):
    r"""Activation normalization (Glow): a per-channel affine map :math:`z = (x + b) e^{\log s}`.

    The first call in training mode (forward, or inverse as in Pixyz) sets :math:`b` and :math:`\log s` so that the
    output of that batch has zero mean and standard deviation ``scale`` per channel; afterwards both are trained as
    parameters. Whether this has happened is a buffer, so it survives ``state_dict``/``load_state_dict`` (Pixyz keeps a
    plain attribute, so a loaded model re-initializes and overwrites its trained values); a state dict without it
    (saved by Pixyz) counts as initialized. Log-determinant: :math:`H W \sum \log s`.

    Parameters
    ----------
    in_features : int
        The number of channels.
    scale : float, default 1.0
    cache_size : {1, 0}

    Examples
    --------
    >>> f = ActNorm2d(3)
    >>> x = torch.randn(8, 3, 4, 4) * 5 + 2
    >>> z = f.forward(x)
    >>> bool(torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)), bool(f.initialized)
    (True, True)
    >>> bool(torch.allclose(f.inverse(z), x, atol=1e-4))
    True
    """

    _dgm_feature_name = "channels"
    _dgm_constant_logdet = True
    _dgm_hook_names = ("_center", "_scale")

    def __init__(self, in_features: int, scale: float = 1.0, cache_size: int = 1) -> None:
        super().__init__(in_features, event_dim=3, cache_size=cache_size)
        self.bias = nn.Parameter(torch.zeros(1, in_features, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, in_features, 1, 1))
        self.scale = float(scale)
        self.register_buffer("initialized", torch.tensor(False))
        # True once the buffer is known to be set (by a first batch, the inited setter or a loaded state): what a
        # call tests before it reads the buffer, whose value would split a compiled graph
        self._dgm_known_initialized = False

    def _dgm_details(self) -> str:
        return f"in_features={self.in_features}, scale={self.scale}"

    @property
    def inited(self) -> bool:
        """Whether the parameters have been set from a batch (Pixyz's name)."""
        return bool(self.initialized)

    @inited.setter
    def inited(self, value: bool) -> None:
        self.initialized.fill_(bool(value))
        self._dgm_known_initialized = bool(value)

    def _dgm_needs_init(self) -> bool:
        """Whether this (training-mode) call sets the parameters from its batch: once the flag is known to be set,
        the buffer is not read again (reading it is a synchronization on a GPU, and a graph break when traced)."""
        if self.__dict__.get("_dgm_known_initialized", False):
            return False
        done = bool(self.initialized)
        if done:
            self.__dict__["_dgm_known_initialized"] = True
        return not done

    def _load_from_state_dict(self, state_dict: Any, prefix: str, local_metadata: Any, strict: bool,
                              missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
        key = prefix + "initialized"
        logs, bias = state_dict.get(prefix + "logs"), state_dict.get(prefix + "bias")
        if key not in state_dict and logs is not None:  # saved by Pixyz: its values are trained ones, unless they
            # are its construction's zeros (saved before the first batch), which a layer not yet initialized then
            # initializes from its first batch, as Pixyz's (whose flag a load leaves as it was)
            fresh = not bool(logs.any()) and (bias is None or not bool(bias.any()))
            state_dict[key] = torch.tensor(not fresh or bool(self.initialized))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._dgm_known_initialized = bool(self.initialized)

    def initialize_parameters(self, x: Tensor) -> None:
        """Set the bias and log-scale from the batch ``x`` (zero mean, standard deviation ``scale`` per channel);
        only in training mode, as Pixyz."""
        if not self.training:
            return
        dims = [d for d in range(x.dim()) if d != x.dim() - 3]
        with torch.no_grad():
            mean = x.mean(dim=dims, keepdim=True)
            std = torch.sqrt(((x - mean) ** 2).mean(dim=dims, keepdim=True))
            self.bias.copy_(-mean.reshape(self.bias.shape))
            self.logs.copy_(torch.log(self.scale / (std + epsilon())).reshape(self.logs.shape))
            self.initialized.fill_(True)
        self._dgm_known_initialized = True

    def _dgm_logdet(self, v: Tensor) -> Tensor:
        return (self.logs.sum() * v.shape[-1] * v.shape[-2]).to(v.dtype).expand(v.shape[:-3])

    # ------------------------------------------------------------------ Pixyz's hooks
    def _center(self, x: Tensor, inverse: bool = False) -> Tensor:
        """Pixyz's hook: :math:`x + b` (:math:`x - b` for the inverse). Called, with :meth:`_scale`, where a subclass
        or the flow itself overrides either, as Pixyz's ``forward`` and ``inverse`` call them; the map is computed
        otherwise without them (the same numbers)."""
        return x - self.bias if inverse else x + self.bias

    def _scale(self, x: Tensor, compute_jacobian: bool = True, inverse: bool = False) -> tuple[Tensor, Tensor | None]:
        r"""Pixyz's hook: :math:`x e^{\log s}` (:math:`x e^{-\log s}` for the inverse) and, with
        ``compute_jacobian``, the log-determinant :math:`H W \sum \log s` (one number), else ``None``."""
        x = x * torch.exp(-self.logs if inverse else self.logs)
        return x, self.logs.sum() * x.shape[-1] * x.shape[-2] if compute_jacobian else None

    def _dgm_hooked(self) -> bool:
        """Whether this flow's class or the flow itself overrides Pixyz's hooks (read at each call: a later cell may
        set one; Pixyz calls ``self``'s)."""
        cls, d = type(self), self.__dict__
        return (cls._center is not ActNorm2d._center or cls._scale is not ActNorm2d._scale
                or "_center" in d or "_scale" in d)

    def _dgm_hooked_logdet(self, logdet: Any, x: Tensor) -> Tensor:
        """The log-det a user's ``_scale`` gave, as one per sample of ``x``."""
        if not isinstance(logdet, Tensor):
            raise TypeError(f"{self._dgm_describe()}: _scale(x, compute_jacobian=True) must return (x, logdet) with "
                            f"logdet a tensor, got {type(logdet).__name__}")
        try:
            return logdet.to(x.dtype).expand(x.shape[:-3])
        except RuntimeError as e:
            raise ShapeError(f"{self._dgm_describe()}: the log-det that _scale returned, of shape "
                             f"{tuple(logdet.shape)}, must be one number or one per sample of the batch "
                             f"{tuple(x.shape[:-3])}") from e

    def _dgm_forward_logdet(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.training and self._dgm_needs_init():
            self.initialize_parameters(x)
        if self._dgm_hooked():  # Pixyz's forward
            z, logdet = self._scale(self._center(x, inverse=False), True, inverse=False)
            return z, self._dgm_hooked_logdet(logdet, x)
        return (x + self.bias) * torch.exp(self.logs), self._dgm_logdet(x)

    def inverse(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        r"""Return :math:`f^{-1}(x)` (Pixyz names the argument ``x`` here)."""
        return super().inverse(x, y)

    def _dgm_inverse_logdet(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.training and self._dgm_needs_init():  # Pixyz initializes from whichever side comes first
            self.initialize_parameters(z)
        if self._dgm_hooked():  # Pixyz's inverse; the log-det, where one is wanted, from the forward at x
            x, _ = self._scale(z, compute_jacobian=False, inverse=True)
            return self._center(x, inverse=True), None  # type: ignore[return-value]
        return z * torch.exp(-self.logs) - self.bias, self._dgm_logdet(z)
