r"""Volume-preserving reshapes and permutations, and the dequantize-and-logit preprocessing of images."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import constraints

from pyro_dgm.flows.base import ChannelOrFeatureFlow, Flow, positive_int, sum_rightmost, zero_logdet
from pyro_dgm.utils.checks import ShapeError
from pyro_dgm.utils.modules import PlainBuffers
from pyro_dgm.utils.random import uniform
from pyro_dgm.utils import sum_samples  # noqa: F401  (helpers Pixyz's module namespace has)

__all__ = ["Squeeze", "Unsqueeze", "Permutation", "Shuffle", "Reverse", "Flatten", "Preprocess"]


def _squeeze(x: Tensor) -> Tensor:
    *lead, c, h, w = x.shape
    n = len(lead)
    x = x.reshape(*lead, c, h // 2, 2, w // 2, 2)
    x = x.permute(*range(n), n, n + 2, n + 4, n + 1, n + 3)
    return x.reshape(*lead, c * 4, h // 2, w // 2)


def _unsqueeze(z: Tensor) -> Tensor:
    *lead, c, h, w = z.shape
    n = len(lead)
    z = z.reshape(*lead, c // 4, 2, 2, h, w)
    z = z.permute(*range(n), n, n + 3, n + 1, n + 4, n + 2)
    return z.reshape(*lead, c // 4, h * 2, w * 2)


class Squeeze(Flow):
    r"""Space-to-depth: ``(..., C, H, W) -> (..., 4C, H/2, W/2)``; each 2x2 block of a channel becomes 4 channels.

    Raises
    ------
    ValueError
        When the height or width is odd.

    Examples
    --------
    >>> a = torch.arange(1, 17).view(1, 1, 4, 4)
    >>> f = Squeeze()
    >>> f.forward(a)[0, :2]
    tensor([[[ 1,  3],
             [ 9, 11]],
    <BLANKLINE>
            [[ 2,  4],
             [10, 12]]])
    >>> bool(torch.equal(f.inverse(f.forward(a)), a))
    True
    >>> f.forward(torch.zeros(1, 1, 3, 4))
    Traceback (most recent call last):
     ...
    pyro_dgm.utils.checks.ShapeError: Squeeze(): expected an even height and width, ... got shape (1, 1, 3, 4)
    """

    _dgm_feature_name = "channels"
    _dgm_constant_logdet = True
    _dgm_volume_preserving = True

    def __init__(self, cache_size: int = 1) -> None:
        super().__init__(None, event_dim=3, cache_size=cache_size)

    def _dgm_check(self, x: Tensor, inverse: bool) -> None:
        super()._dgm_check(x, inverse)
        if self._dgm_squeezes(inverse):
            if x.shape[-1] % 2 or x.shape[-2] % 2:
                raise ShapeError(f"{self._dgm_describe()}: expected an even height and width, i.e. shape "
                                 f"(..., C, 2H, 2W), got shape {tuple(x.shape)}")
        elif x.shape[-3] % 4:
            raise ShapeError(f"{self._dgm_describe()}: expected a number of channels divisible by 4, i.e. shape "
                             f"(..., 4C, H, W), got shape {tuple(x.shape)}")

    def _dgm_squeezes(self, inverse: bool) -> bool:
        return not inverse

    def forward_shape(self, shape: Sequence[int]) -> torch.Size:
        *lead, c, h, w = self._dgm_image_shape(shape)
        if h % 2 or w % 2:
            raise ShapeError(f"{self._dgm_describe()}: expected an even height and width, i.e. shape "
                             f"(..., C, 2H, 2W), got shape {tuple(shape)}")
        return torch.Size([*lead, c * 4, h // 2, w // 2])

    def inverse_shape(self, shape: Sequence[int]) -> torch.Size:
        *lead, c, h, w = self._dgm_image_shape(shape)
        if c % 4:
            raise ShapeError(f"{self._dgm_describe()}: expected a number of channels divisible by 4, i.e. shape "
                             f"(..., 4C, H, W), got shape {tuple(shape)}")
        return torch.Size([*lead, c // 4, h * 2, w * 2])

    def _dgm_image_shape(self, shape: Sequence[int]) -> Sequence[int]:
        if len(shape) < 3:
            raise ShapeError(f"{self._dgm_describe()}: expected an image shape (..., C, H, W), got shape "
                             f"{tuple(shape)}")
        return shape

    def _dgm_forward_logdet(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return _squeeze(x), zero_logdet(x, 3)

    def _dgm_inverse_logdet(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return _unsqueeze(z), zero_logdet(z, 3)


class Unsqueeze(Squeeze):
    r"""Depth-to-space, the inverse of :class:`Squeeze`: ``(..., 4C, H, W) -> (..., C, 2H, 2W)``.

    Examples
    --------
    >>> a = torch.arange(1, 17).view(1, 4, 2, 2)
    >>> Unsqueeze().forward(a)
    tensor([[[[ 1,  5,  2,  6],
              [ 9, 13, 10, 14],
              [ 3,  7,  4,  8],
              [11, 15, 12, 16]]]])
    """

    def _dgm_squeezes(self, inverse: bool) -> bool:
        return inverse

    def forward_shape(self, shape: Sequence[int]) -> torch.Size:
        return super().inverse_shape(shape)

    def inverse_shape(self, shape: Sequence[int]) -> torch.Size:
        return super().forward_shape(shape)

    def _dgm_forward_logdet(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return super()._dgm_inverse_logdet(x, context)

    def _dgm_inverse_logdet(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return super()._dgm_forward_logdet(z, context)


class Permutation(PlainBuffers, ChannelOrFeatureFlow):
    r"""Permute the features of a vector (``event_dim=1``) or the channels of an image (``event_dim=3``).

    Parameters
    ----------
    permute_indices : sequence of int
        A permutation of ``range(n)``: output feature ``i`` is input feature ``permute_indices[i]``.
    event_dim : {1, 3}, optional
        By default decided from each input, as Pixyz does: the channels of images ``(N, C, H, W)``, the features of
        vectors ``(N, D)``.
    cache_size : {1, 0}

    Examples
    --------
    >>> f = Permutation([0, 3, 1, 2])
    >>> a = torch.arange(4.).view(1, 4, 1, 1)
    >>> f.forward(a).flatten().tolist(), f.inverse(f.forward(a)).flatten().tolist()
    ([0.0, 3.0, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0])
    """

    _dgm_constant_logdet = True
    _dgm_volume_preserving = True
    _dgm_plain_buffers = ("permute_indices", "inv_permute_indices")  # numpy arrays in Pixyz, which a program sets

    def __init__(self, permute_indices: Sequence[int] | Tensor, event_dim: int | None = None,
                 cache_size: int = 1) -> None:
        try:
            perm = torch.as_tensor(np.asarray(permute_indices) if not isinstance(permute_indices, Tensor)
                                   else permute_indices, dtype=torch.long).flatten()
        except (TypeError, ValueError, RuntimeError):  # (None, strings, objects)
            raise TypeError(f"{type(self).__name__}: permute_indices must be a permutation of range(n), a sequence "
                            f"of ints, got {permute_indices!r:.60}") from None
        n = perm.numel()
        if n == 0 or not torch.equal(torch.sort(perm).values, torch.arange(n)):
            raise ValueError(f"{type(self).__name__}: permute_indices must be a permutation of range(n), got "
                             f"{perm.tolist()}")
        if event_dim not in (None, 1, 3):
            raise ValueError(f"{type(self).__name__}: event_dim must be 1 (vectors) or 3 (images), got {event_dim!r}")
        super().__init__(n, event_dim=event_dim, cache_size=cache_size)
        self._dgm_feature_name = "channels" if event_dim == 3 else "features"
        self.register_buffer("permute_indices", perm)
        self.register_buffer("inv_permute_indices", torch.argsort(perm))

    def _dgm_details(self) -> str:
        return f"in_features={self.in_features}, event_dim={'auto' if self._dgm_auto else self._dgm_domain_event_dim}"

    def _load_from_state_dict(self, state_dict: Any, prefix: str, local_metadata: Any, strict: bool,
                              missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
        for name in ("permute_indices", "inv_permute_indices"):  # a state dict saved by Pixyz has no indices:
            state_dict.setdefault(prefix + name, getattr(self, name))  # keep the ones drawn at construction
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _dgm_permute(self, v: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        ev = self._dgm_domain_event_dim
        out = v.index_select(v.dim() - ev, idx)
        return out, zero_logdet(v, ev)

    def _dgm_forward_logdet(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._dgm_permute(x, self.permute_indices)

    def _dgm_inverse_logdet(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._dgm_permute(z, self.inv_permute_indices)


class Shuffle(Permutation):
    """A random permutation of the features (or channels), kept in the state dict. It is drawn from NumPy's global
    generator, as Pixyz draws it, so a program seeded as before gets the same permutation.

    Examples
    --------
    >>> np.random.seed(0)
    >>> f = Shuffle(5)
    >>> f.permute_indices.tolist() == np.random.RandomState(0).permutation(5).tolist()
    True
    """

    def __init__(self, in_features: int, event_dim: int | None = None, cache_size: int = 1) -> None:
        if isinstance(in_features, (list, tuple, np.ndarray, Tensor)) and len(np.asarray(in_features).reshape(-1)) > 1:
            order = np.random.permutation(np.asarray(in_features))  # (NumPy's permutation of the indices given, as
        else:  # Pixyz's: Permutation checks that they are a permutation)
            order = np.random.permutation(positive_int("Shuffle", "in_features", in_features))
        super().__init__(order, event_dim=event_dim, cache_size=cache_size)


class Reverse(Permutation):
    """Reverse the order of the features (or channels).

    Examples
    --------
    >>> Reverse(3).forward(torch.tensor([[1., 2., 3.]]))
    tensor([[3., 2., 1.]])
    """

    def __init__(self, in_features: int, event_dim: int | None = None, cache_size: int = 1) -> None:
        in_features = positive_int("Reverse", "in_features", in_features)
        super().__init__(torch.arange(in_features - 1, -1, -1), event_dim=event_dim, cache_size=cache_size)


def _all_but_batch(shape: Sequence[int]) -> int:
    """Pixyz's event dims of an input that a flow reads whole: every dim but the batch dim 0; the last 3 (an image)
    when there are more batch dims (more than 4 dims)."""
    return 3 if len(shape) >= 4 else max(len(shape) - 1, 0)


class Flatten(Flow):
    r"""Flatten each input of a batch into a vector: images ``(..., C, H, W)`` into ``(..., C*H*W)``.

    As Pixyz's ``x.view(x.size(0), -1)``, every dim but the batch dim 0 is flattened (``(N, H, W) -> (N, H*W)``,
    ``(N, D)`` is kept, ``(N,) -> (N, 1)``); with more than 4 dims, the last 3 (images with several batch dims).

    Parameters
    ----------
    in_size : tuple of int, optional
        The shape of one input, e.g. ``(C, H, W)``; needed by :meth:`inverse`. Each :meth:`forward` records the shape
        of its input (as Pixyz).
    cache_size : int, default 1
        torch's ``Transform`` cache: 1 keeps the last input and output pair, so the inverse of the last output is
        that input without computing it; 0 keeps none.

    Examples
    --------
    >>> f = Flatten((2, 3, 3))
    >>> x = torch.randn(4, 2, 3, 3)
    >>> tuple(f.forward(x).shape), bool(torch.equal(f.inverse(f.forward(x)), x))
    ((4, 18), True)
    >>> tuple(f.forward(torch.zeros(4, 3, 3)).shape), f.in_size
    ((4, 9), torch.Size([3, 3]))
    >>> Flatten().inverse(torch.zeros(4, 18))
    Traceback (most recent call last):
     ...
    ValueError: Flatten(in_size=None): the image shape is unknown until forward() has run; pass in_size=(C, H, W)
    """

    _dgm_constant_logdet = True
    _dgm_volume_preserving = True

    def __init__(self, in_size: Sequence[int] | None = None, cache_size: int = 1) -> None:
        super().__init__(None, event_dim=None, cache_size=cache_size)
        try:
            self.in_size = tuple(int(s) for s in in_size) if in_size is not None else None
        except (TypeError, ValueError):
            raise TypeError(f"Flatten: in_size must be the shape of one input, a tuple of ints such as (C, H, W), "
                            f"got {in_size!r:.60}") from None
        self._dgm_domain_event_dim = 3 if in_size is None else len(self.in_size)
        self._dgm_codomain_event_dim = 1

    def _dgm_details(self) -> str:
        return f"in_size={None if self.in_size is None else tuple(self.in_size)}"

    def _dgm_size(self) -> tuple[int, ...]:
        if self.in_size is None:
            raise ValueError(f"{self._dgm_describe()}: the image shape is unknown until forward() has run; pass "
                             "in_size=(C, H, W)")
        return tuple(self.in_size)

    def _dgm_adapt(self, shape: torch.Size, inverse: bool) -> None:
        # the input side: every dim but the batch (forward), or the recorded in_size (inverse); the output: vectors
        if inverse:
            ev = len(self.in_size) if self.in_size is not None else 3
        else:
            ev = _all_but_batch(shape)
        d = self.__dict__
        if d.get("_dgm_domain_event_dim") != ev:
            d["_dgm_domain_event_dim"] = ev

    def _dgm_check(self, x: Tensor, inverse: bool) -> None:
        super()._dgm_check(x, inverse)
        if inverse:
            n = math.prod(self._dgm_size())
            if x.shape[-1] != n:
                raise ShapeError(f"{self._dgm_describe()}: expected {n} features at dim -1 of the input, i.e. shape "
                                 f"(..., {n}), got shape {tuple(x.shape)}")

    def _dgm_sizes_from(self, shape: Sequence[int]) -> None:
        """Take the image shape from an input of ``shape`` that the flow will be run forward on (a value scored by
        an ``InverseTransformedDistribution``): Pixyz's scoring runs ``forward``, which sets it at every call, as
        ours does."""
        if len(shape) >= 1:
            ev = _all_but_batch(shape)  # (Pixyz's: x.shape[1:], a torch.Size)
            self.in_size = torch.Size(int(s) for s in shape[len(shape) - ev:])

    def forward_shape(self, shape: Sequence[int]) -> torch.Size:
        n = len(shape) - self._dgm_domain_event_dim
        return torch.Size([*shape[:n], math.prod(shape[n:])])

    def inverse_shape(self, shape: Sequence[int]) -> torch.Size:
        return torch.Size([*shape[:-1], *self._dgm_size()])

    def _dgm_forward_logdet(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        n = x.dim() - self._dgm_domain_event_dim
        self.in_size = x.shape[n:]
        return x.reshape(*x.shape[:n], -1), zero_logdet(x, self._dgm_domain_event_dim)

    def _dgm_inverse_logdet(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return z.reshape(*z.shape[:-1], *self._dgm_size()), zero_logdet(z, 1)


class Preprocess(Flow):
    r"""Dequantize pixel values in :math:`[0, 1]` and map them to the real line with a logit (Real NVP's input map).

    Forward: :math:`x \to \tilde x = (x (n-1) + u)/n` with :math:`u \sim U[0, 1)` (if ``dequantize``), then
    :math:`s = \alpha/2 + (1 - \alpha)\tilde x` and :math:`z = \mathrm{logit}(s)`. The log-determinant is exact for the
    map applied: :math:`\sum \log\frac{n-1}{n} + \log(1-\alpha) + \mathrm{softplus}(z) + \mathrm{softplus}(-z)`
    (Pixyz leaves out the constant :math:`\log\frac{n-1}{n}`).

    Inverse: :math:`\tilde x = (\sigma(z) - \alpha/2)/(1 - \alpha)`; with ``dequantize`` it is rounded down to the
    pixel level :math:`\lfloor \tilde x n\rfloor/(n-1)`, so ``inverse(forward(x)) == x`` for quantized pixels (Pixyz's
    inverse returns :math:`\sigma(z)`, which undoes only the logit: its pixels lie in
    :math:`[\alpha/2, 1 - \alpha/2]`, off by up to :math:`\alpha/2`).

    Parameters
    ----------
    dequantize : bool, default True
        Add uniform noise within each pixel level (forward) and round to the level (inverse).
    alpha : float, default 0.05
        Keeps :math:`s` in :math:`[\alpha/2, 1-\alpha/2]` (Pixyz's ``data_constraint``).
    num_levels : int, default 256
        The number of pixel levels of the data (256 for 8-bit images).
    event_dim : int, optional
        The event dims the log-determinant is summed over (3 for images, 1 for vectors). By default decided from each
        input, as Pixyz does: every dim but the batch dim 0 (``(N, C, H, W)``, ``(N, H, W)``, ``(N, D)``; a 1-D
        input ``(N,)`` is N values, each with its own log-det); with more than 4 dims, the last 3 (images with
        several batch dims). Within a flow distribution, the prior's event shape decides.
    cache_size : int, default 1
        torch's ``Transform`` cache: 1 keeps the last input and output pair, 0 keeps none.

    Examples
    --------
    >>> f = Preprocess()
    >>> x = torch.randint(0, 256, (2, 1, 4, 4)) / 255.
    >>> z, logdet = f.forward_with_logdet(x)
    >>> bool(torch.allclose(f.inverse(z), x)), tuple(logdet.shape)
    (True, (2,))
    """

    def __init__(self, dequantize: bool = True, alpha: float = 0.05, num_levels: int = 256,
                 event_dim: int | None = None, cache_size: int = 1) -> None:
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"Preprocess: alpha must be in [0, 1), got {alpha!r}")
        if num_levels < 2:
            raise ValueError(f"Preprocess: num_levels must be at least 2, got {num_levels!r}")
        super().__init__(None, event_dim=event_dim, cache_size=cache_size)
        self.dequantize = dequantize
        self.num_levels = int(num_levels)
        self.register_buffer("data_constraint", torch.tensor([float(alpha)]))

    def _dgm_details(self) -> str:
        return (f"dequantize={self.dequantize}, alpha={float(self.data_constraint):g}, num_levels={self.num_levels}, "
                f"event_dim={'auto' if self._dgm_auto else self._dgm_domain_event_dim}")

    def _dgm_auto_event_dim(self, shape: torch.Size) -> int:
        return _all_but_batch(shape)

    @staticmethod
    def logit(x: Tensor) -> Tensor:
        r""":math:`\log x - \log(1 - x)` (Pixyz's helper)."""
        return x.log() - (1. - x).log()

    @property
    def domain(self) -> constraints.Constraint:  # type: ignore[override]
        ev = self._dgm_domain_event_dim
        return constraints.unit_interval if ev == 0 else constraints.independent(constraints.unit_interval, ev)

    def _dgm_logdet(self, z: Tensor) -> Tensor:
        alpha = self.data_constraint.to(z.dtype)
        ld = F.softplus(z) + F.softplus(-z) + torch.log1p(-alpha)
        if self.dequantize:
            ld = ld + math.log((self.num_levels - 1) / self.num_levels)
        return sum_rightmost(ld, self._dgm_domain_event_dim)

    def _dgm_forward_logdet(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        n = self.num_levels
        if self.dequantize:
            noise = uniform(x.shape, x)
            x = (x * (n - 1) + noise) / n
        alpha = self.data_constraint.to(x.dtype)
        s = alpha / 2 + (1 - alpha) * x
        z = torch.log(s) - torch.log1p(-s)
        return z, self._dgm_logdet(z)

    def _dgm_inverse_logdet(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        alpha = self.data_constraint.to(z.dtype)
        x = (torch.sigmoid(z) - alpha / 2) / (1 - alpha)
        if self.dequantize:
            n = self.num_levels
            x = torch.floor(x * n).clamp(0, n - 1) / (n - 1)
        return x, self._dgm_logdet(z)
