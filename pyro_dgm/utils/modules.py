"""Walking a network's modules on the hot path; buffers that Pixyz keeps as plain attributes."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pyro_dgm.utils.checks import ArgumentError, describe

__all__ = ["PlainBuffers", "submodules", "hook_ends", "hooks_state", "register_registration_hooks"]


def register_registration_hooks(**hooks: Any) -> bool:
    """Register torch's global registration hooks, by kind (``module=``, ``buffer=``, ``parameter=``: torch's
    ``register_module_<kind>_registration_hook``), for the rest of the process; False (nothing registered) on a torch
    that lacks one of them.

    Examples
    --------
    >>> register_registration_hooks()
    True
    """
    g = nn.modules.module
    registers = [getattr(g, f"register_module_{kind}_registration_hook", None) for kind in hooks]
    if any(r is None for r in registers):
        return False
    for register, hook in zip(registers, hooks.values()):
        register(hook)
    return True


def hook_ends(hooks: Any) -> tuple[Any, Any]:
    """The first and last keys of a non-empty dict of hooks (``m._forward_hooks``). Its keys are the handles' ids,
    which increase with each hook registered anywhere, and a hook is added at one end of the dict (``prepend=True``:
    the front): so a dict of the same length and the same two ends holds the same hooks (a hook removed and another
    added puts the new, larger id at an end).

    Examples
    --------
    >>> from torch import nn
    >>> m = nn.Linear(2, 2)
    >>> a = m.register_forward_hook(lambda *_: None); before = (len(m._forward_hooks), hook_ends(m._forward_hooks))
    >>> a.remove(); b = m.register_forward_hook(lambda *_: None)
    >>> (len(m._forward_hooks), hook_ends(m._forward_hooks)) == before
    False
    """
    return next(iter(hooks)), next(reversed(hooks))


def hooks_state(modules: list[nn.Module]) -> tuple[Any, ...]:
    """Which forward hooks and forward pre-hooks ``modules`` and the global ones (``register_module_forward_hook``)
    hold (:func:`hook_ends`): another value after a hook is added, removed or replaced."""
    g = nn.modules.module
    dicts = [g._global_forward_hooks, g._global_forward_pre_hooks, *[m._forward_hooks for m in modules],
             *[m._forward_pre_hooks for m in modules]]
    return tuple(map(len, dicts)), tuple([hook_ends(d) for d in dicts if d])


def submodules(root: nn.Module) -> list[nn.Module]:
    """``root`` and every module under it, each once, in the order of ``root.modules()``, without building their
    dotted names (``modules()`` goes through ``named_modules()``: for a small network most of its time, which a
    training step would pay at every call).

    Examples
    --------
    >>> from torch import nn
    >>> shared = nn.Linear(2, 2)
    >>> net = nn.Sequential(shared, nn.Sequential(nn.ReLU(), shared))
    >>> submodules(net) == list(net.modules())
    True
    """
    out: list[nn.Module] = []
    seen: set[int] = set()
    stack: list[nn.Module | None] = [root]
    while stack:
        m = stack.pop()
        if m is None or id(m) in seen:
            continue
        seen.add(id(m))
        out.append(m)
        children = m._modules
        if children:
            stack.extend(reversed(children.values()))
    for m in out:
        cls = type(m)
        if cls.named_modules is not _NAMED_MODULES or cls.modules is not _MODULES:  # a class's own walk (one
            return list(root.modules())  # that lists a module held in a plain list): what torch's methods give
    return out


_NAMED_MODULES, _MODULES = nn.Module.named_modules, nn.Module.modules


class PlainBuffers:
    """A module mixin for buffers that Pixyz keeps as plain attributes (a list of weights, an array of indices):
    assigning a list, a tuple or a numpy array to one sets the buffer to that value as a tensor of the buffer's
    dtype and device, as long as the old one (a tensor is taken as it is, as for any buffer).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> class Weighted(PlainBuffers, nn.Module):
    ...     _dgm_plain_buffers = ("weights",)
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.register_buffer("weights", torch.ones(3))
    >>> m = Weighted()
    >>> m.weights = [1, 0, 2]
    >>> m.weights
    tensor([1., 0., 2.])
    """

    _dgm_plain_buffers: tuple[str, ...] = ()

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._dgm_plain_buffers and value is not None and not isinstance(value, Tensor):
            old = self._buffers.get(name)  # type: ignore[attr-defined]
            what = f"{describe(self)}: {name}"
            try:
                new = torch.as_tensor(np.asarray(value), dtype=None if old is None else old.dtype,
                                      device=None if old is None else old.device)
            except (TypeError, ValueError, RuntimeError) as e:  # (also Pixyz's ValueError: an ArgumentError is both)
                raise ArgumentError(f"{what}: expected a list, an array or a tensor of numbers, got {value!r} "
                                    f"({e})") from e
            if old is not None and new.shape != old.shape:
                raise ValueError(f"{what}: expected {old.numel()} values (shape {tuple(old.shape)}), got "
                                 f"{new.numel()} (shape {tuple(new.shape)})")
            value = new
        super().__setattr__(name, value)
