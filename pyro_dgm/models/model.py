r"""The :class:`Model` class: a loss, the distributions it trains, an optimizer, and a training step.

``Model`` keeps Pixyz 0.3.3's constructor and its ``train``/``test``/``save``/``load`` API, and adds what a long run
needs: :meth:`Model.fit` (epochs over a data set, a progress bar, a history, callbacks, TensorBoard, early failure on a
non-finite loss; :mod:`.trainer`), checkpoints that resume exactly (:mod:`.checkpoint`) and data-parallel training
under ``torch.distributed`` (:mod:`.distributed`).

Subclasses (``VAE``, ``VI``, ``ML``, ``GAN``) only build a loss and call ``Model.__init__``; a subclass with an extra
step (a discriminator's) overrides :meth:`Model.train`/:meth:`Model.test` and calls ``super()``. A subclass written
for Pixyz that sets Pixyz's attributes itself (``loss_cls``, ``distributions``, ``optimizer``...) instead of calling
``Model.__init__`` works as under Pixyz: pyro_dgm's own state is made from them at its first use
(:meth:`Model.__getattr__`).

``fit`` (:mod:`.trainer`) asks a model only for :meth:`Model.train_step` and :meth:`Model.test_step` (one batch ->
the loss and its named terms) and reads or sets its public attributes (``loss_cls``/``test_loss_cls``, ``epoch``,
``history``, ``stop_training``, ``tb_writer``); what a step raises names the step, and ``fit`` adds the epoch.
"""
from __future__ import annotations

import math
import operator
import re
import warnings
from typing import Any, Callable, Iterable, Mapping, NoReturn, Sequence

import torch
from pyro.poutine.runtime import _PYRO_STACK
from torch import Tensor, nn
from torch.nn.utils import clip_grad_norm_, clip_grad_value_

from pyro_dgm.distributions.base import Distribution
from pyro_dgm.distributions.closed_forms import validating
from pyro_dgm.losses.steps import HALF_DTYPES, StepRandomState, WatchedBuffers, autograd_leaves, restore_buffers
from pyro_dgm.losses.steps import PARAMETERS_WATCHED, _ADDED, _watch_additions, needs_closure, optimizer_arguments
from pyro_dgm.losses.steps import noting_buffers
from pyro_dgm.losses.steps import SIGNALS as _SIGNALS
from pyro_dgm.losses.steps import finite_sum as _finite_sum  # (benchmarks/grad_check.py imports it from here)
from pyro_dgm.losses.base import Loss
from pyro_dgm.models import distributed as _dist
from pyro_dgm.models import trainer
from pyro_dgm.losses.compiled import CompiledEval, compile_options, eval_form, eval_with_terms, no_donated_buffers
from pyro_dgm.models.errors import ModelArgumentError, NonFiniteGradientError, NonFiniteLossError, RankFailedError
from pyro_dgm.utils.checks import ArgumentError, ShapeError, add_note, error_notes, error_text, keyed_values
from pyro_dgm.utils.compat import clip_grads_with_norm_, get_total_norm
from pyro_dgm.utils.latex import print_latex as _print_latex
from pyro_dgm.utils.modules import submodules
from pyro_dgm.utils import tolist  # noqa: F401  (helpers Pixyz's module namespace has)

__all__ = ["Model", "NonFiniteLossError", "NonFiniteGradientError", "RankFailedError", "build_optimizer"]


def check_distributions(owner: str, distributions: Any) -> list[nn.Module | None]:
    if distributions is None:
        return []
    if isinstance(distributions, (nn.Module, Distribution)):
        distributions = [distributions]
    if isinstance(distributions, (str, bytes, Mapping)) or not isinstance(distributions, Iterable):
        raise TypeError(f"{owner}: distributions must be a list of pyro_dgm distributions, got "
                        f"{type(distributions).__name__}")
    out: list[nn.Module | None] = []
    for i, d in enumerate(distributions):
        if isinstance(d, Distribution) or d is None:  # (None: Pixyz's ModuleList keeps it, trains nothing for it
            out.append(d)  # and prints it among the deterministic functions)
            continue
        # another library's distribution (Pixyz's, torch's, Pyro's); a torch module that only has a log_prob method
        # (nn.AdaptiveLogSoftmaxWithLoss) is a plain network
        foreign = (any((c.__module__ or "").split(".")[0] == "pixyz" for c in type(d).__mro__)
                   or isinstance(d, torch.distributions.Distribution))
        if isinstance(d, nn.Module) and not foreign:
            out.append(d)  # Pixyz also trains plain networks ("Deterministic functions (for training)")
            continue
        raise TypeError(f"{owner}: distributions[{i}] is a {type(d).__module__}.{type(d).__qualname__} ({d!r:.80}), "
                        "not a pyro_dgm distribution; build it with pyro_dgm.distributions (e.g. Normal(var=['x'], "
                        "...)) or pass a torch.nn.Module to train a plain network")
    return out


def check_loss(owner: str, loss: Any, arg: str) -> Loss:
    if not isinstance(loss, Loss):
        raise ArgumentError(f"{owner}: {arg} must be a pyro_dgm Loss (e.g. (-p.log_prob()).mean()), got "
                            f"{type(loss).__module__}.{type(loss).__qualname__}")
    return loss


def check_clip(owner: str, arg: str, value: Any) -> None:
    """Refuse a clipping option that torch's clipping cannot read as a number (``float(value)``, what Pixyz's step
    does with it): a :class:`~pyro_dgm.models.errors.ModelArgumentError` (a TypeError, and Pixyz's ValueError) when
    the model is built, instead of torch's error at the first step. A false value (``None``, ``0``) means no
    clipping, as in Pixyz.

    Examples
    --------
    >>> check_clip("Model", "clip_grad_norm", 1.0), check_clip("Model", "clip_grad_norm", None)
    (None, None)
    >>> check_clip("Model", "clip_grad_norm", "a")
    Traceback (most recent call last):
    ...
    pyro_dgm.models.errors.ModelArgumentError: Model: clip_grad_norm must be a number (or None for no clipping), \
got 'a'
    """
    if value is None:
        return
    try:
        number = float(value) if value else 0.0
    except (TypeError, ValueError) as e:
        raise ModelArgumentError(f"{owner}: {arg} must be a number (or None for no clipping), got {value!r:.80}") from e
    except RuntimeError as e:  # a tensor of several values (torch's RuntimeError, as under Pixyz)
        raise ShapeError(f"{owner}: {arg} must be a number (or None for no clipping), got a tensor of shape "
                         f"{tuple(value.shape) if isinstance(value, Tensor) else '?'}") from e
    if number < 0 or math.isnan(number):  # Pixyz takes the step: a negative norm turns the gradient around, a
        # negative value sets every element to it (torch's clamp(min=c, max=-c)): silently not a descent
        raise ModelArgumentError(f"{owner}: {arg} must be positive (or None or 0 for no clipping), got {value!r:.80}")


def build_optimizer(owner: str, optimizer: Any, params: Sequence[nn.Parameter],
                    optimizer_params: Mapping[str, Any] | None = None, held_by: str = "model.optimizer",
                    names: Mapping[int, str] | None = None) -> tuple[torch.optim.Optimizer, dict[str, float]]:
    """A torch optimizer over ``params`` from a torch optimizer class, a ``pyro.optim`` optimizer or a factory.

    Accepted: a subclass of :class:`torch.optim.Optimizer` (called with ``optimizer_params``), a
    :class:`pyro.optim.PyroOptim` instance such as ``pyro.optim.Adam({"lr": 1e-3})`` (its torch class and arguments
    are used; a callable ``optim_args`` gives each parameter its own group, called as Pyro calls it, with the name
    the parameter has in Pyro's param store (``names``, by ``id``: ``<pyro_name>$$$<parameter>`` for a
    distribution's, :func:`param_names`); its ``clip_args`` are returned), a
    ``pyro.optim`` factory such as ``pyro.optim.Adam`` (called with ``optimizer_params``), or any callable
    ``f(params, **optimizer_params)`` returning a torch optimizer.

    Returns
    -------
    (torch.optim.Optimizer, dict)
        The optimizer and the clipping arguments of a ``pyro.optim`` optimizer (``{"clip_norm": ...}``), else ``{}``.

    Raises
    ------
    ValueError
        If ``params`` is empty (nothing to optimize).
    TypeError
        If ``optimizer`` is none of the above.
    """
    from pyro.optim import PyroOptim
    from pyro.optim.lr_scheduler import PyroLRScheduler

    params = list(params)
    if not params:
        raise ValueError(f"{owner}: there are no parameters to optimize: the distributions given have no networks or "
                         "parameters; pass the trained distributions in distributions=[...]")
    kwargs = optimizer_arguments(owner, "optimizer_params", optimizer_params, ModelArgumentError)
    if isinstance(optimizer, PyroLRScheduler):
        raise TypeError(f"{owner}: a pyro.optim learning-rate scheduler ({type(optimizer).__name__}) is not "
                        f"supported; pass its optimizer and step a torch scheduler on {held_by}")
    if isinstance(optimizer, PyroOptim):
        if kwargs:
            raise ValueError(f"{owner}: optimizer_params={kwargs} cannot be combined with a pyro.optim optimizer, "
                             "which carries its own arguments")
        args = optimizer.pt_optim_args
        known = names or {}
        named = [(known.get(id(p), f"param_{i}"), p) for i, p in enumerate(params)]
        if callable(args):  # per-parameter arguments: one group per parameter, named as in Pyro's param store
            groups = pyro_optim_groups(owner, optimizer, named)
            torch_optim = _construct(owner, optimizer.pt_optim_constructor, groups, {})
            check_group_keys(owner, torch_optim, groups, named)
        else:
            torch_optim = _construct(owner, optimizer.pt_optim_constructor, params, dict(args))
        return torch_optim, pyro_clip_args(owner, optimizer, named)
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        return _construct(owner, optimizer, params, kwargs), {}
    if callable(optimizer) and (getattr(optimizer, "__module__", "") or "").startswith("pyro.optim"):
        made = optimizer(kwargs)  # pyro.optim.Adam: a factory taking one dict of arguments
        return build_optimizer(owner, made, params, held_by=held_by, names=names)
    if callable(optimizer) and not isinstance(optimizer, torch.optim.Optimizer):
        made = _construct(owner, optimizer, params, kwargs)
        if isinstance(made, torch.optim.Optimizer) or (callable(getattr(made, "step", None))
                                                       and callable(getattr(made, "zero_grad", None))):
            return made, {}  # (an object that steps and zeroes gradients, as Pixyz takes any)
    raise TypeError(f"{owner}: optimizer must be a torch.optim.Optimizer class (torch.optim.Adam), a pyro.optim "
                    f"optimizer (pyro.optim.Adam({{'lr': 1e-3}})) or a factory returning a torch optimizer, got "
                    f"{optimizer!r:.100}")


def _construct(owner: str, optimizer: Any, params: list[nn.Parameter], kwargs: dict[str, Any]) -> Any:
    """``optimizer(params, **kwargs)``; torch's refusal of an argument (an unknown name, ``lr="0.1"``, ``lr=-1``, a
    class that is no optimizer) keeps its type and names the model, the optimizer and the arguments."""
    try:
        return optimizer(params, **kwargs)
    except (TypeError, ValueError) as e:  # the same exception (its own class, which a caller may catch), named
        what = getattr(optimizer, "__name__", None) or repr(optimizer)
        prefix = f"{owner}: cannot build the optimizer {what:.80} with optimizer_params={kwargs!r:.200}"
        if type(e) in (TypeError, ValueError) and len(e.args) == 1 and isinstance(e.args[0], str):
            e.args = (f"{prefix}: {e.args[0]}",)  # torch's errors: one message
        else:  # a user's own exception (its arguments, its __str__, a read-only args): left as it is
            add_note(e, f"({prefix})")
        raise


def _names_step(e: BaseException, step: str, where: str) -> bool:
    """Whether ``e``'s text names ``step`` or one of its notes names ``where`` (read safely: an exception whose
    ``str`` or notes fail names nothing)."""
    named = re.compile(re.escape(step) + r"(?!\d)")  # ("step 1" is not named by "step 17")
    return bool(named.search(error_text(e))) or any(isinstance(n, str) and where in n for n in error_notes(e))


def _param_store() -> Any:
    import pyro

    return pyro.get_param_store()


def _pyro_side_terms(loss: Loss) -> list[Loss]:
    """The terms of ``loss`` that run plain Pyro code (``PyroELBO``, or a term class with ``pyro_side = True``),
    whose parameters live in Pyro's param store."""
    from pyro_dgm.losses.pyro_elbo import PyroELBO

    return [t for t in loss._dgm_walk()[0] if isinstance(t, PyroELBO) or getattr(t, "pyro_side", False)]


def _distribution_param_ids(model: "Model") -> set[int]:
    """Ids of the parameters of every pyro_dgm distribution the model's losses reach (trained or not: which of them
    are trained is ``distributions=[...]``'s decision, as in Pixyz)."""
    dists: list[Any] = list(model.loss_cls._dgm_distributions) + list(model.test_loss_cls._dgm_distributions)
    for term in model._dgm_pyro_terms:
        for fn in (getattr(term, "model", None), getattr(term, "guide", None)):
            owner = getattr(fn, "__self__", None)
            if isinstance(owner, Distribution):
                dists.append(owner)
    return {id(p) for d in dists for p in d.parameters()}


def loss_networks(loss: Any) -> list[nn.Module]:
    """The distributions a loss reads and the discriminators of its adversarial terms (which their own steps
    train), each once: what a failed step puts back and a test puts in eval mode besides the trained ones."""
    if not isinstance(loss, Loss):
        return []
    nodes, distributions = loss._dgm_walk()  # (one walk of the tree: Model.test lists them at each call)
    out: list[nn.Module] = list(distributions)
    seen = {id(d) for d in out}
    for term in nodes:
        d = term._dgm_d if hasattr(type(term), "_dgm_d") and term._modules.get("d") is not None else None  # (an
        # adversarial term's discriminator)
        if isinstance(d, nn.Module) and id(d) not in seen:
            seen.add(id(d))
            out.append(d)
    return out


def loss_plain_networks(loss: Any) -> list[nn.Module]:
    """The plain networks (torch modules that are neither losses nor distributions: a feature network a user's
    ``Loss`` subclass holds and calls itself) that the nodes of ``loss`` hold, each once: what a failed step puts back
    besides :func:`loss_networks` (their modes are left to the user, as Pixyz leaves them)."""
    if not isinstance(loss, Loss):
        return []
    out: dict[int, nn.Module] = {}
    for term in loss._dgm_walk()[0]:
        for child in term._dgm_children():
            if isinstance(child, nn.Module) and not isinstance(child, (Loss, Distribution)):
                out.setdefault(id(child), child)
    return list(out.values())


def pyro_optim_groups(owner: str, optimizer: Any, named: Sequence[tuple[str, Tensor]]) -> list[dict[str, Any]]:
    """One parameter group per ``(name, parameter)`` from a ``pyro.optim`` optimizer's callable ``optim_args``,
    called as Pyro's ``PyroOptim`` calls it: with one argument, the parameter's name in ``named_parameters()``'s
    form (``"p.fc.weight"``); with two, the module's name and the parameter's (``"p"``, ``"fc.weight"``)."""
    from pyro.params.param_store import module_from_param_with_module_name, normalize_param_name, user_param_name

    args, groups = optimizer.pt_optim_args, []
    one = getattr(optimizer, "pt_optim_args_argc", 2) == 1
    for name, p in named:
        got = args(normalize_param_name(name)) if one else args(module_from_param_with_module_name(name),
                                                                  user_param_name(name))
        if not isinstance(got, dict):
            raise TypeError(f"{owner}: the pyro.optim optimizer's per-parameter arguments must be a dict (of the "
                            f"optimizer's arguments), got {type(got).__name__} for {name!r}")
        groups.append(dict(got, params=[p]))
    return groups


def check_group_keys(owner: str, optimizer: torch.optim.Optimizer, groups: Sequence[Mapping[str, Any]],
                     named: Sequence[tuple[str, Tensor]]) -> None:
    """Refuse a key of a per-parameter group that the optimizer does not take: torch keeps any key of a group,
    while Pyro passes them as keywords, which torch refuses (a misspelt ``"learning_rate"`` would train at the
    default rate, silently)."""
    names = {id(p): n for n, p in named}
    for g in groups:
        unknown = sorted(set(g) - set(optimizer.defaults) - {"params"})
        if unknown:
            raise TypeError(f"{owner}: the pyro.optim optimizer's per-parameter arguments for "
                            f"{names.get(id(g['params'][0]), '?')!r} hold {', '.join(map(repr, unknown))}, which "
                            f"{type(optimizer).__name__} does not take (it takes "
                            f"{', '.join(sorted(optimizer.defaults))})")


def pyro_clip_args(owner: str, optimizer: Any, named: Sequence[tuple[str, Tensor]]) -> dict[str, float]:
    """A ``pyro.optim`` optimizer's ``clip_args`` as one dict for the model's clipping; a callable one is called
    as Pyro calls it (module's name, parameter's), and must give every parameter the same clipping."""
    clip = optimizer.pt_clip_args
    if not callable(clip):
        return _clip_dict(owner, dict(clip or {}), None)
    from pyro.params.param_store import module_from_param_with_module_name, user_param_name

    got = [(n, clip(module_from_param_with_module_name(n), user_param_name(n))) for n, _ in named]
    bad = next(((n, c) for n, c in got if not isinstance(c, dict)), None)
    if bad is not None:
        raise TypeError(f"{owner}: the pyro.optim optimizer's per-parameter clip_args must be a dict, got "
                        f"{type(bad[1]).__name__} for {bad[0]!r}")
    got = [(n, _clip_dict(owner, c, n)) for n, c in got]
    if len({tuple(sorted(c.items())) for _, c in got}) > 1:
        raise ValueError(f"{owner}: the pyro.optim optimizer's per-parameter clip_args differ between parameters "
                         f"({', '.join(f'{n!r}: {c}' for n, c in got[:4])}); a Model clips every parameter alike: "
                         "give clip_args as one dict, or clip_grad_norm= / clip_grad_value=")
    return dict(got[0][1]) if got else {}


def _clip_dict(owner: str, clip: Mapping[str, Any], name: str | None) -> dict[str, float]:
    """A ``pyro.optim`` optimizer's clipping, checked as Pyro's ``_clip_grad`` takes it (``clip_norm`` and
    ``clip_value`` only), with numbers (a 0-d tensor read), and positive: Pyro clips to 0 where a Model's 0 means no
    clipping."""
    where = f" for {name!r}" if name is not None else ""
    unknown = sorted(set(clip) - {"clip_norm", "clip_value"})
    if unknown:
        raise TypeError(f"{owner}: the pyro.optim optimizer's clip_args{where} hold {', '.join(map(repr, unknown))}; "
                        "Pyro's clipping takes clip_norm and clip_value")
    out = {}
    for k, v in clip.items():
        if v is None:  # (Pyro's "no clipping of this kind")
            continue
        try:
            out[k] = float(v)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{owner}: the pyro.optim optimizer's clip_args{where}: {k} must be a number, got "
                            f"{v!r:.80}") from None
        if not out[k] > 0:
            raise ValueError(f"{owner}: the pyro.optim optimizer's clip_args{where}: {k}={out[k]} clips every "
                             "gradient to 0 under Pyro, where a Model's 0 means no clipping; give a positive value, "
                             "or leave the key out for no clipping")
    return out


def is_pyro_optim(optimizer: Any) -> bool:
    """Whether ``optimizer`` is a ``pyro.optim`` optimizer (``pyro.optim.Adam({...})``) or one of its factories
    (``pyro.optim.Adam``), which :func:`build_optimizer` turns into the torch optimizer they wrap."""
    from pyro.optim import PyroOptim

    return isinstance(optimizer, PyroOptim) or (callable(optimizer) and not isinstance(optimizer, type) and (
        getattr(optimizer, "__module__", "") or "").startswith("pyro.optim"))


def per_parameter(optimizer: Any) -> bool:
    """Whether ``optimizer`` is a ``pyro.optim`` optimizer with per-parameter arguments or clipping (callables),
    which are called with the parameters' names (:func:`param_names`)."""
    from pyro.optim import PyroOptim

    return isinstance(optimizer, PyroOptim) and (callable(optimizer.pt_optim_args) or callable(optimizer.pt_clip_args))


def _callable_clip(optimizer: Any) -> bool:
    from pyro.optim import PyroOptim

    return isinstance(optimizer, PyroOptim) and callable(optimizer.pt_clip_args)


def init_eager_state(optimizer: Any, params: Sequence[Tensor]) -> None:
    """Give ``params``, just added with ``add_param_group``, the state that an optimizer which makes it in its
    ``__init__`` (Pyro's ``AdagradRMSProp``, whose ``step`` reads it) made for its first parameters."""
    from pyro.optim.adagrad_rmsprop import AdagradRMSProp

    if isinstance(optimizer, AdagradRMSProp):
        for p in params:
            optimizer.state[p].setdefault("step", 0)
            optimizer.state[p].setdefault("sum", torch.zeros_like(p.data))


def param_names(distributions: Iterable[nn.Module], loss: Any = None) -> dict[int, str]:
    """The names the distributions' parameters have in Pyro's param store (``<pyro_name>$$$<parameter>``, as
    ``pyro.module`` names them), by ``id``: what a ``pyro.optim`` optimizer's per-parameter arguments are called
    with. A product's, a marginal's or a renaming's factors register under their own names. A network shared by two
    factors or distributions is named as ``SVI`` with ``loss`` names it: after the last to register it, in the order
    the loss registers its distributions (and a product its factors); then the other distributions, in their order
    (the first to name a network keeps it); a plain module's parameters keep their own names."""
    from pyro_dgm.distributions.base import _store_name

    def registered(ds: Iterable[Any]) -> dict[int, str]:
        own: dict[int, str] = {}
        for d in ds:
            registering = getattr(d, "_dgm_registering", None)
            for f in registering() if registering is not None else ():
                name = _store_name(f)
                for n, p in f.named_parameters():
                    own[id(p)] = f"{name}$$${n}"
        return own

    try:
        out = registered(getattr(loss, "_dgm_distributions", None) or ())
        for term in _pyro_side_terms(loss) if isinstance(loss, Loss) else ():  # then a Pyro-side term's guide and
            for fn in (getattr(term, "guide", None), getattr(term, "model", None)):  # model, as SVI runs them: a
                owner = getattr(fn, "__self__", None)  # distribution's .model registers its factors in the order
                if isinstance(owner, Distribution):  # they are drawn
                    out.update(registered(owner._dgm_order))
    except Exception:  # noqa: BLE001 (a user's loss whose distributions cannot be listed: the list's order alone)
        out = {}
    for d in distributions:
        if not isinstance(d, nn.Module):  # (None among a Pixyz model's distributions)
            continue
        for k, v in registered([d]).items():
            out.setdefault(k, v)
        for n, p in d.named_parameters():  # (a plain module's: its own names)
            out.setdefault(id(p), n)
    return out


def _autoguides(terms: Sequence[Loss]) -> list[nn.Module]:
    """The Pyro autoguides (and the parts of an ``AutoGuideList``) that the Pyro-side terms' models and guides are."""
    if not terms:
        return []
    from pyro.infer.autoguide import AutoGuide

    out: dict[int, nn.Module] = {}
    for term in terms:
        for fn in (getattr(term, "model", None), getattr(term, "guide", None)):
            if isinstance(fn, nn.Module):
                out.update((id(m), m) for m in fn.modules() if isinstance(m, AutoGuide))
    return list(out.values())


class _PyroSideState:
    """What a training step of a loss with Pyro-side terms adds outside the networks and the optimizer's state:
    entries of Pyro's param store (an autoguide's parameters at its first call, initialized from random draws;
    ``pyro.param``), the structure an autoguide builds at its first call (its prototype trace, drawn from the model,
    and its parameter modules), and the optimizer's parameter groups for the new parameters. Taken before each step
    (a few reads: an autoguide's structure is copied only until its first call succeeded), put back when the step
    fails, so that a checkpoint saved then holds none of them: a run resumed from it (with the random states of the
    step's start) creates them with the draws of the uninterrupted run.

    The buffers of the networks that the Pyro-side terms run and the step does not list beforehand (a guide's network
    registered by ``pyro.module``, with a batch norm) are noted as each first runs in the step (``ran``, see
    :func:`~pyro_dgm.losses.steps.noting_buffers`; ``skip``: the modules the step lists), and put back too; a step
    that succeeds adds them to the model's ``_dgm_pyro_modules`` (weakly), whose buffers its checkpoints hold.

    Only for losses with Pyro-side terms, which train in one thread at a time (Pyro's param store is one per
    process): another thread's entries created meanwhile would be taken for this step's.
    """

    __slots__ = ("size", "n_params", "n_groups", "clip", "guides", "ran", "skip", "called")

    def __init__(self, model: "Model", watched: WatchedBuffers) -> None:
        self.ran: dict[int, Any] = {}
        self.called: dict[int, nn.Module] = {}
        self.skip = {id(m) for m, _, _ in watched.pairs}
        self.size = len(_param_store())
        self.n_params = len(model._dgm_params)
        self.n_groups = None if model.optimizer is None else len(model.optimizer.param_groups)
        self.clip = (model.clip_norm, model.clip_value, model._dgm_clip_each)
        self.guides = [(g, {k: v.copy() if isinstance(v, dict) else v for k, v in g.__dict__.items()})
                       for g in model.__dict__.get("_dgm_autoguides", ()) if g.prototype_trace is None]

    def restore(self, model: "Model", error: BaseException) -> None:
        if self.ran:
            restore_buffers([entry for _, entries in self.ran.values() for entry in entries], error)
        store = _param_store()
        for name in list(store.keys())[self.size:]:  # (the store keeps its entries in the order they were made)
            del store[name]
        new = model._dgm_params[self.n_params:]
        if new:  # adopted by the step: the optimizer forgets them (the step taken again adopts the new tensors)
            del model._dgm_params[self.n_params:]
            ids = {id(p) for p in new}
            model.__dict__.get("_dgm_known_ids", set()).difference_update(ids)
            for name in [n for n, p in model._dgm_pyro_named.items() if id(p) in ids]:
                del model._dgm_pyro_named[name]
            if self.n_groups is None:
                model.optimizer = None
            else:
                del model.optimizer.param_groups[self.n_groups:]
                for p in new:
                    model.optimizer.state.pop(p, None)
            model.clip_norm, model.clip_value, model._dgm_clip_each = self.clip
        for guide, state in self.guides:  # as before its first call: it traces the model again, drawing the same
            guide.__dict__.clear()
            guide.__dict__.update(state)


#: the public attributes that pyro_dgm's Model adds to Pixyz's (what fit() reads and sets), and how each starts
_PUBLIC_DEFAULTS: tuple[tuple[str, Callable[[], Any]], ...] = (
    ("check_gradients", lambda: True), ("epoch", lambda: 0), ("last_terms", dict), ("history", trainer.History),
    ("stop_training", lambda: False), ("tb_writer", lambda: None))
#: the state that Model.__init__ makes besides Pixyz's attributes: made at its first use when a subclass skipped it
_OWN_STATE = frozenset({"_dgm_ddp", "_dgm_compile", "_dgm_compiled", "_dgm_clip_each", "_dgm_optimizer_spec",
                        "_dgm_params", "_dgm_pyro_named", "_dgm_pyro_terms", "_dgm_autoguides", "_dgm_sharing", "step",
                        *(name for name, _ in _PUBLIC_DEFAULTS)})


def _state_follows_params(optimizer: Any) -> None:
    """Cast a torch optimizer's per-parameter state (Adam's moments) to its parameter's device and dtype, by the
    rule of ``Optimizer.load_state_dict``: every tensor, also inside lists and dicts, to the parameter's device, and
    to its dtype where the parameter is floating; a ``step`` count stays as it is (a fused or capturable
    optimizer's: float32 on the parameter's device). Anything but a torch optimizer is left alone."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        return
    special = {id(p) for g in optimizer.param_groups if g.get("fused") or g.get("capturable") for p in g["params"]}

    def cast(param: Tensor, value: Any, key: Any) -> Any:
        if isinstance(value, Tensor):
            if key == "step":
                return value.to(dtype=torch.float32, device=param.device) if id(param) in special else value
            if param.is_floating_point():
                return value.to(dtype=param.dtype, device=param.device)
            return value.to(device=param.device)
        if isinstance(value, dict):
            return {k: cast(param, v, k) for k, v in value.items()}
        if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
            return type(value)(cast(param, v, key) for v in value)
        return value

    for param, state in list(optimizer.state.items()):
        if isinstance(param, Tensor) and isinstance(state, dict):
            optimizer.state[param] = {k: cast(param, v, k) for k, v in state.items()}


def pyro_modules(model: Any) -> dict[str, nn.Module]:
    """The live modules with buffers that the Pyro-side terms of ``model``'s loss ran in its steps, by the names
    :func:`pyro_module_key` gave them when found (``Model._dgm_pyro_modules``: pairs of the name and a weak reference,
    or the module itself in a copy)."""
    out = {}
    for key, r in model.__dict__.get("_dgm_pyro_modules", ()):
        m = r if isinstance(r, nn.Module) else r()
        if m is not None:
            out[key] = m
    return out


def pyro_module_key(m: nn.Module, called: Iterable[nn.Module]) -> str | None:
    """A name for a module the Pyro-side terms ran that does not depend on the order a run finds the modules in:
    its place under the nearest module among ``m`` and the modules ``called`` that holds it and whose parameters
    Pyro's param store holds, all under one prefix (``"encoder$$$1"`` for ``encoder[1]`` after
    ``pyro.module("encoder", encoder)``, a batch norm with or without its own weights; of two such modules of one
    size, the first name); None if there is none."""
    from pyro.params.param_store import _MODULE_NAMESPACE_DIVIDER as divider

    store = _param_store()
    names: dict[int, set[str]] = {}
    for n in list(store.keys()):
        for t in (store._params.get(n), store.get_param(n)):
            try:
                names.setdefault(t.data_ptr(), set()).add(n)
            except (AttributeError, RuntimeError, ValueError):  # (a tensor without storage)
                continue
    holders = [a for a in called if a is not m and any(x is m for x in a.modules())]
    keys = []  # (the nearest holder's; of holders of one size, the first name: not the order they were called in)
    for a in [m, *holders]:
        prefixes: set[str] | None = None
        for path, p in a.named_parameters():
            try:
                held = names.get(p.data_ptr())
            except (RuntimeError, ValueError):
                continue
            if not held:  # (frozen: not in the store)
                continue
            ends = {n[:len(n) - len(path)] for n in held if n.endswith(path)}
            ends = {e for e in ends if e.endswith((".", divider))}
            prefixes = ends if prefixes is None else prefixes & ends
            if not prefixes:
                break
        if prefixes:
            if a is m:
                return min(prefixes).rstrip(".")
            place = next(name for name, x in a.named_modules() if x is m)
            keys.append((sum(1 for _ in a.modules()), (min(prefixes) + place).rstrip(".")))
    return min(keys)[1] if keys else None


def _check_values(model: Any, method: str, arg: str, values: Any) -> None:
    """Refuse data that is no dict of values (a tensor, a list), naming the model's method and the argument (the
    loss would name one of its inner terms)."""
    if (values is not None and type(values) is not dict and not isinstance(values, Mapping)
            and keyed_values(values) is None):  # (a home-made dict-like batch, which Pixyz reads by its keys, is taken)
        raise ArgumentError(f"{type(model).__name__}.{method}: {arg} must be a dict of values by variable name, e.g. "
                            f"{{'x': x}}, got {type(values).__name__}")


class Model:
    r"""Training and testing of a loss: Pixyz's Model API.

    Parameters
    ----------
    loss : Loss
        The loss minimized by :meth:`train` (a scalar: end it with ``.mean()`` or ``.sum()``).
    test_loss : Loss, optional
        The loss evaluated by :meth:`test`; defaults to ``loss``.
    distributions : list of Distribution, optional
        The distributions whose parameters are trained (plain ``torch.nn.Module`` networks are also accepted, as in
        Pixyz).
    optimizer : torch optimizer class or pyro.optim optimizer, default ``torch.optim.Adam``
        See :func:`build_optimizer`; ``pyro.optim.Adam({"lr": 1e-3})`` works as well as ``torch.optim.Adam``.
    optimizer_params : dict, optional
        Keyword arguments of a torch optimizer class, e.g. ``{"lr": 1e-3}``.
    clip_grad_norm : float, optional
        Clip the total gradient norm to this value before each step.
    clip_grad_value : float, optional
        Clip every gradient element to ``[-value, value]`` before each step.
    retain_graph : bool, default False
        Passed to ``backward``.
    compile : bool or dict, default False
        Compile the loss evaluation of :meth:`train` and :meth:`test` (and so of :meth:`fit`) with ``torch.compile``:
        ``True`` for torch's defaults, or a dict of ``torch.compile`` options (``{"mode": "max-autotune"}``,
        ``{"dynamic": True}``...). Compiled and eager steps give the same values and gradients (random draws aside: the
        compiler draws a network's random operations, e.g. dropout, from its own generator and may reorder draws;
        ``torch._inductor.config.fallback_random`` draws from the eager generator, though inductor may still reorder two
        independent draws; with ``{"backend": "aot_eager"}`` they are eager's; a flow with a batch norm in training mode
        scoring its own draw: the same values, not gradients, see ``docs/design.md``); the first step runs eagerly and
        the second compiles (seconds); later batches of the same shapes, dtypes and keys in the same order reuse the
        code (a dict listing its keys in another order, a last batch of another size, compile once more; see
        :mod:`pyro_dgm.losses.compiled`). A method or torch class set on a distribution's class after compiling is seen
        from the next step, which compiles again (for the distributions the loss holds as modules; one reached only
        through a plain attribute of a user's object is not looked at). On a GPU, ``{"mode": "reduce-overhead"}``
        replays CUDA graphs (the fastest step there, see ``benchmarks/README.md``); the losses returned stay valid after
        later steps. Under torch.distributed the compiled evaluation runs inside ``DistributedDataParallel``'s forward,
        which averages its gradients.

    Attributes
    ----------
    distributions : torch.nn.ModuleList
        The trained distributions.
    optimizer : torch.optim.Optimizer
    step, epoch : int
        Training steps taken by :meth:`train` and epochs completed by :meth:`fit` (both saved by :meth:`save`).
    last_terms : dict
        The named terms of the last :meth:`train` or :meth:`test` evaluation (``eval(..., return_terms=True)``).
    history : History
        Every epoch's numbers since the model was built or loaded (:meth:`fit` appends to it; saved by
        :meth:`save`).
    stop_training : bool
        Set it to True in a :meth:`fit` callback to end training after that epoch (``fit`` sets it to False when it
        starts).
    tb_writer : torch.utils.tensorboard.SummaryWriter or None
        The TensorBoard writer of the running :meth:`fit` (with ``log_dir``), for callbacks; None otherwise.
    check_gradients : bool, default True
        Before each optimizer step, check that every gradient is finite (one fused pass over the gradients, the
        norm that gradient clipping computes; see ``benchmarks/README.md`` for its cost) and raise
        :class:`NonFiniteGradientError` otherwise, leaving the weights unchanged. Pixyz does not check (a NaN
        gradient silently turns the weights into NaN); set it to False to skip the check.
    Raises
    ------
    TypeError
        If ``loss`` is not a Loss, if an entry of ``distributions`` is not a pyro_dgm distribution, or if the optimizer
        is not one of the accepted kinds.
    ValueError
        If the distributions have no parameters to optimize.

    Notes
    -----
    Parameters that the loss creates in Pyro's param store (an autoguide in a
    :class:`~pyro_dgm.losses.PyroELBO` term, ``pyro.param`` in a custom term) are trained too, as ``SVI`` trains
    them: with a ``PyroELBO`` term each step traces the parameters the loss touches (as ``SVI.step`` does); with
    other losses, parameters created during a step are added. They join the optimizer in a new parameter group when
    they first appear (a model whose only parameters are an autoguide's builds its optimizer at the first step), and
    checkpoints save them by name. Networks of pyro_dgm distributions are trained only when listed in
    ``distributions``, as in Pixyz.

    Under ``torch.distributed`` (launched with ``torchrun``), the process group is set up from the environment when
    it is not yet and the trained networks are wrapped in ``torch.nn.parallel.DistributedDataParallel``: rank 0's
    parameters are broadcast at construction and gradients are averaged across processes during ``backward`` (see
    :mod:`pyro_dgm.models.distributed`). Parameters that the loss creates in Pyro's param store are replicated too
    (rank 0's values broadcast when they appear, their gradients averaged); every process must create the same ones
    in the same step.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from pyro_dgm.distributions import Normal
    >>> from pyro_dgm.models import Model
    >>> class P(Normal):
    ...     def __init__(self):
    ...         super().__init__(var=["x"], cond_var=["y"], name="p")
    ...         self.net = nn.Linear(1, 1)
    ...     def forward(self, y):
    ...         return {"loc": self.net(y), "scale": torch.ones_like(y)}
    >>> p = P()
    >>> model = Model((-p.log_prob()).mean(), distributions=[p], optimizer_params={"lr": 0.1})
    >>> print(model)  # doctest: +ELLIPSIS
    Distributions (for training):
      p(x|y)
    Loss function:
      mean \left(- \log p(x|y) \right)
    Optimizer:
      Adam (
      Parameter Group 0
      ...
    >>> data = {"y": torch.linspace(-1, 1, 8)[:, None]}
    >>> data["x"] = 2 * data["y"]
    >>> first = model.train(data)
    >>> for _ in range(50):
    ...     _ = model.train(data)
    >>> bool(model.test(data) < first), model.step
    (True, 51)
    """

    _dgm_not_taken = "the step was not taken"  # (what a failed train's note says happened: a GAN's says more)

    def __init__(self, loss: Loss, test_loss: Loss | None = None, distributions: Sequence[nn.Module] | None = None,
                 optimizer: Any = torch.optim.Adam, optimizer_params: Mapping[str, Any] | None = None,
                 clip_grad_norm: float | None = None, clip_grad_value: float | None = None,
                 retain_graph: bool = False, compile: bool | Mapping[str, Any] = False) -> None:
        owner = type(self).__name__
        self.loss_cls: Loss
        self.test_loss_cls: Loss
        self.set_loss(loss, test_loss)
        check_clip(owner, "clip_grad_norm", clip_grad_norm)
        check_clip(owner, "clip_grad_value", clip_grad_value)
        optimizer_arguments(owner, "optimizer_params", optimizer_params, ModelArgumentError)  # (also when the
        # optimizer is built at the first step, for an autoguide's parameters)
        self.distributions = nn.ModuleList(check_distributions(owner, distributions))
        _dist.setup_from_env()
        # under torch.distributed: DistributedDataParallel around the networks (rank 0's weights broadcast now);
        # None in one process, where train() evaluates the loss directly
        self._dgm_ddp = _dist.wrap(self.distributions)
        # every parameter, as Pixyz gives the optimizer: one frozen now (requires_grad=False) is trained once unfrozen
        self._dgm_params = list(self.distributions.parameters())
        self._dgm_own_count = len(self._dgm_params)  # (the distributions' own, first; Pyro's adopted ones follow)
        self._dgm_share_trained()
        self._dgm_pyro_named: dict[str, Tensor] = {}
        self._dgm_optimizer_spec = (optimizer, optimizer_params)
        self.optimizer: Any
        clip: dict[str, float] = {}
        if not self._dgm_params and self._dgm_pyro_terms:  # an autoguide alone: its parameters appear at the first step
            self.optimizer = None
        else:
            names = param_names(self.distributions, self.loss_cls) if per_parameter(optimizer) else None
            self.optimizer, clip = build_optimizer(owner, optimizer, self._dgm_params, optimizer_params,
                                                   names=names)
            if _callable_clip(optimizer):  # (what it gave the distributions: the adopted parameters must get it)
                self.__dict__["_dgm_given_clip"] = clip
        # (a pyro.optim optimizer's clipping fills in what is not given; None or ML's False stays when it has none)
        self.clip_norm = (clip_grad_norm if clip_grad_norm not in (None, False)
                          else clip.get("clip_norm", clip_grad_norm))
        # a pyro.optim optimizer's clip_norm clips each parameter's gradient alone, as Pyro's (and SVI) clip it
        self._dgm_clip_each = clip_grad_norm in (None, False) and "clip_norm" in clip
        self.clip_value = (clip_grad_value if clip_grad_value not in (None, False)
                           else clip.get("clip_value", clip_grad_value))
        if retain_graph is not None and not isinstance(retain_graph, bool):  # torch's backward takes what has an
            try:  # integer value (1, numpy's, a 0-d tensor: Pixyz runs them); a string or 1.0 fails inside autograd
                operator.index(retain_graph)
            except (TypeError, RuntimeError, ValueError):
                raise ModelArgumentError(f"{owner}: retain_graph must be a bool, got {retain_graph!r:.80}") from None
        self.retain_graph = retain_graph
        self._dgm_compile = compile_options(owner, compile)  # torch.compile's options, or None: eager evaluation
        self._dgm_compiled: dict[int, CompiledEval] = {}
        self.step = 0
        self._dgm_public_defaults()
        _watch_additions()  # (torch's registration hooks, once per process: a layer replaced later is seen)
        self._dgm_take_containers()
        self._dgm_seen = self._dgm_params_key()

    def _dgm_public_defaults(self) -> None:
        """Set what fit() and its callbacks read and set (public; fit keeps its own per-call state to itself).
        Pixyz's Model has none of them: a subclass that set one before ``Model.__init__``, or defines one (a method, a
        property), keeps its own."""
        for name, make in _PUBLIC_DEFAULTS:
            if name not in self.__dict__ and not hasattr(type(self), name):
                setattr(self, name, make())

    def __getattr__(self, name: str) -> Any:
        """pyro_dgm's own state of a model whose subclass set Pixyz's attributes itself instead of calling
        ``Model.__init__`` (Pixyz's ``Model`` is a plain object whose whole state is ``loss_cls``, ``test_loss_cls``,
        ``distributions``, ``optimizer``, ``clip_norm``, ``clip_value`` and ``retain_graph``): made from them when
        first read (:meth:`_dgm_complete_state`). Only an attribute missing from the object comes here, so a model
        that ``Model.__init__`` built never does."""
        if name in _OWN_STATE and "_dgm_completed" not in self.__dict__:
            self._dgm_complete_state()
            return getattr(self, name)
        parent = getattr(super(), "__getattr__", None)  # (a subclass that is also an nn.Module)
        if parent is not None:
            return parent(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}", name=name, obj=self)

    def _dgm_complete_state(self) -> None:
        """Make pyro_dgm's state of a model whose subclass did not call ``Model.__init__`` from the attributes it set,
        as ``Model.__init__`` would with ``compile=False`` and without ``DistributedDataParallel`` (under
        torch.distributed each process trains alone, as under Pixyz); what the subclass set is kept."""
        distributions = self.distributions  # (missing: the AttributeError that Pixyz's train and test raise)
        loss = getattr(self, "loss_cls", None)
        if loss is not None:
            check_loss(type(self).__name__, loss, "loss_cls")
        state = self.__dict__
        state["_dgm_completed"] = True
        for name, value in (("_dgm_ddp", None), ("_dgm_compile", None), ("_dgm_clip_each", False), ("step", 0),
                            ("_dgm_optimizer_spec", (torch.optim.Adam, None))):
            state.setdefault(name, value)
        state.setdefault("_dgm_compiled", {})
        state.setdefault("_dgm_pyro_named", {})
        state.setdefault("_dgm_params", list(distributions.parameters()))
        state.setdefault("_dgm_pyro_terms", _pyro_side_terms(loss) if loss is not None else [])
        state.setdefault("_dgm_autoguides", _autoguides(self._dgm_pyro_terms))
        self._dgm_public_defaults()
        if "_dgm_sharing" not in state:
            self._dgm_share_trained()

    # ------------------------------------------------------------------ losses and text
    def set_loss(self, loss: Loss | None, test_loss: Loss | None = None) -> None:
        """Set the training loss and the test loss (``test_loss`` defaults to ``loss``, also when it is false, as in
        Pixyz). ``loss=None`` (a model built before its loss, as Pixyz allows) trains nothing until a loss is set."""
        owner = type(self).__name__
        self.loss_cls = check_loss(owner, loss, "loss") if loss is not None else None  # type: ignore[assignment]
        self.test_loss_cls = check_loss(owner, test_loss, "test_loss") if test_loss else self.loss_cls
        self._dgm_take_losses()

    def _dgm_take_losses(self) -> None:
        """Derive from ``loss_cls`` and ``test_loss_cls`` what the steps read: the Pyro-side terms, the adversarial
        terms told which parameters this model trains, how each loss's ``eval`` is called. Done by :meth:`set_loss`,
        and by the next :meth:`train` or :meth:`test` when either was assigned since (Pixyz's are plain attributes:
        ``model.loss_cls = loss`` replaces the loss as ``set_loss`` does; one identity check per step)."""
        owner = type(self).__name__
        loss, test_loss = getattr(self, "loss_cls", None), getattr(self, "test_loss_cls", None)  # (a subclass that
        # skipped Model.__init__ may set one only)
        for value, name in ((loss, "loss_cls"), (test_loss, "test_loss_cls")):
            if value is not None:
                check_loss(owner, value, name)
        # Parameters that the loss creates in Pyro's param store (an autoguide in a PyroELBO term) are trained too, as
        # SVI trains them: they are found by tracing the parameters each step when the loss has a Pyro-side term
        # (decided here, once), else when the param store grows during a step (one len() before and after).
        self._dgm_pyro_terms = _pyro_side_terms(loss) if loss is not None else []
        self._dgm_autoguides = _autoguides(self._dgm_pyro_terms)  # what a failed first step must put back
        for name in ("_dgm_known_ids", "_dgm_net_buffers"):  # (the losses' distributions and buffers, made again)
            self.__dict__.pop(name, None)
        if "_dgm_params" in self.__dict__:
            self._dgm_share_trained()
        # (a Pixyz-style class's own eval is called as Pixyz's Model calls it: eval_with_terms)
        self._dgm_losses = (loss, test_loss, eval_form(loss), eval_form(test_loss))

    def _dgm_follow_losses(self) -> None:
        """:meth:`_dgm_take_losses` when ``loss_cls`` or ``test_loss_cls`` is not the loss it was made from."""
        seen = self.__dict__.get("_dgm_losses")
        if seen is None or seen[0] is not getattr(self, "loss_cls", None) or seen[1] is not getattr(
                self, "test_loss_cls", None):
            self._dgm_take_losses()

    def _dgm_params_key(self) -> tuple[Any, ...]:
        """What tells that the trained parameters changed since the last step: the distributions list (replaced, a
        network appended or put in another's place), the optimizer (replaced, or a parameter group added), a module
        registered anywhere or a parameter registered on a module of the distributions (a layer replaced inside a
        network, ``net.weight = nn.Parameter(...)``, a new parameter: Pixyz clips ``self.distributions.parameters()``
        as they are at each step; torch's registration hooks count them, see
        :class:`~pyro_dgm.losses.steps.WatchedBuffers`), and the number of modules each container of the
        distributions holds (``nn.Sequential.insert``, which registers nothing). Not seen: a module put in a
        container's ``_modules`` by hand in another's place (a clipping step sees it: :meth:`_dgm_clip_current`)."""
        d = self.distributions
        opt = self.optimizer
        groups = getattr(opt, "param_groups", None) or ()
        sizes = tuple([len(m._modules) for m in self.__dict__.get("_dgm_containers", ())])
        return (id(d), *map(id, d), id(opt), len(groups), sum(len(g["params"]) for g in groups), _ADDED[0], sizes)

    def _dgm_take_containers(self) -> None:
        """The modules of the distributions that hold modules, whose numbers :meth:`_dgm_params_key` reads; and
        every module of them watched for a parameter registered on it (:data:`~pyro_dgm.losses.steps.
        PARAMETERS_WATCHED`: a network built elsewhere, not trained here, does not count)."""
        mods = [m for d in self.distributions if isinstance(d, nn.Module) for m in submodules(d)]
        PARAMETERS_WATCHED.update(mods)
        self._dgm_containers = [m for m in mods
                                if m._modules or isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict))]

    def _dgm_follow_changes(self) -> None:
        """Take the parameters of the distributions as they are now (Pixyz's steps clip
        ``self.distributions.parameters()`` at each call: a network appended to ``model.distributions`` is clipped
        and checked too), and check the gradients of the optimizer's parameters that are not among them (a group
        added with ``add_param_group``)."""
        known = {id(p) for p in self.distributions.parameters()}
        adopted = [p for p in self._dgm_pyro_named.values() if id(p) not in known]
        own = list(self.distributions.parameters())
        self._dgm_params = own + adopted
        self._dgm_own_count = len(own)
        ids = {id(p) for p in self._dgm_params}
        groups = getattr(self.optimizer, "param_groups", None) or ()
        self._dgm_extra_params = [p for g in groups for p in g["params"] if id(p) not in ids]
        for name in ("_dgm_known_ids", "_dgm_net_buffers"):
            self.__dict__.pop(name, None)
        self._dgm_share_trained()
        self._dgm_take_containers()
        self._dgm_seen = self._dgm_params_key()

    def _dgm_clip_current(self) -> None:
        """Before clipping: take the distributions' parameters again if they are not those listed (one walk of
        them, as Pixyz's clipping of ``self.distributions.parameters()`` at each step makes). The key of
        :meth:`_dgm_params_key` misses a parameter made by ``forward`` in this step, a module put back in a
        container (``pop`` then ``insert`` of one made earlier), parameters written into ``_parameters`` (by hand,
        or by a conversion under ``torch.__future__.set_overwrite_module_params_on_conversion(True)``) and a
        parameter deleted (``del net.b``)."""
        now = list(self.distributions.parameters())
        had = self._dgm_params
        if len(now) != self.__dict__.get("_dgm_own_count") or any(a is not b for a, b in zip(now, had)):
            self._dgm_follow_changes()  # (a parameter added, deleted, or another in its place)

    def _dgm_share_trained(self) -> None:
        """Tell the loss's adversarial terms which parameters this model trains (their ``_dgm_trained_with``); a
        training step tells them again when another model of the same terms told them last."""
        losses = (getattr(self, "loss_cls", None), getattr(self, "test_loss_cls", None))  # (a subclass that skipped
        # Model.__init__ may set one only)
        self._dgm_sharing = [term for loss in losses if loss is not None
                             for term in loss._dgm_walk()[0] if callable(getattr(term, "_dgm_trained_with", None))]
        for term in self._dgm_sharing:
            term._dgm_trained_with(self._dgm_params, self)

    def __str__(self) -> str:
        probs = [d.prob_text for d in self.distributions if isinstance(d, Distribution)]
        funcs = [str(d) for d in self.distributions if not isinstance(d, Distribution)]
        text = "Distributions (for training):\n  {}\n".format(", ".join(probs))
        if funcs:
            text += "Deterministic functions (for training):\n  {}\n".format(", ".join(funcs))
        text += "Loss function:\n  {}\n".format(self.loss_cls)
        text += "Optimizer:\n{}".format(re.sub("^", " " * 2, str(self.optimizer), flags=re.MULTILINE))
        return text

    def __repr__(self) -> str:
        return self.__str__()

    def _dgm_latex_text(self) -> str:
        return self.loss_cls.loss_text

    def print_latex(self) -> Any:
        """Show the training loss as LaTeX (rendered in a notebook, printed elsewhere)."""
        return _print_latex(self)

    # ------------------------------------------------------------------ one step
    def parameters(self) -> list[nn.Parameter]:
        """The trained parameters: those of :attr:`distributions` (also the frozen ones, ``requires_grad=False``,
        which the optimizer holds as Pixyz's does: unfrozen later, they are trained), and the Pyro parameters the loss
        created."""
        return list(self._dgm_params)

    def _dgm_check_finite(self, loss: Tensor, terms: Mapping[str, Any], what: str) -> bool:
        """Raise :class:`NonFiniteLossError` if ``loss`` is NaN or infinite, naming the step and the terms. Returns
        True (no error) when a training loss is infinite only because its float16/bfloat16 dtype overflowed (no NaN):
        Pixyz steps on it, and its gradients decide after ``backward`` (:meth:`_dgm_overflowed_step`)."""
        if loss.numel() == 1 and not _dist.is_distributed():
            value = loss.item()
            if math.isfinite(value):
                return False
            if what == "training" and loss.dtype in HALF_DTYPES and not math.isnan(value):
                return True
            bad_here, ranks = 1, []
        else:
            finite = bool(torch.isfinite(loss.detach()).all())
            overflow = (not finite and what == "training" and loss.dtype in HALF_DTYPES
                        and not bool(torch.isnan(loss.detach()).any()))
            bad_here = int(not finite and not overflow)  # (an overflow is decided by the averaged gradients)
            # the step's synchronization point under torch.distributed: every process says how its evaluation went
            # (a process whose evaluation raised says so from fail_together), and they all raise together
            outcomes = _dist.all_gather_int(_dist.STEP_NON_FINITE if bad_here else _dist.STEP_FINE)
            _dist.check_outcomes(outcomes, self._dgm_step_name(what))
            ranks = [r for r, o in enumerate(outcomes) if o == _dist.STEP_NON_FINITE]
            if not ranks:
                return overflow
        self._dgm_raise_non_finite(loss, terms, what, bool(bad_here), ranks)

    def _dgm_raise_non_finite(self, loss: Tensor, terms: Mapping[str, Any], what: str, here: bool,
                              ranks: Sequence[int] = ()) -> NoReturn:
        """The :class:`NonFiniteLossError` of a non-finite ``loss`` (``here``: on this process; ``ranks``: the
        processes where it is not finite, under torch.distributed)."""
        bad = [name for name, v in terms.items() if not bool(torch.isfinite(torch.as_tensor(v)).all())]
        which = (f"non-finite term(s): {', '.join(repr(b) for b in bad)}" if bad else
                 "every term is finite, the combination is not" if here else "see that process's error")
        if len(ranks) and (len(ranks) > 1 or not here):
            which += f"; non-finite on rank(s) {', '.join(map(str, ranks))}"
        formula = self.loss_cls if what == "training" else self.test_loss_cls
        value = (float(loss.detach().sum()) if here else
                 f"finite here (rank {_dist.rank()}) but non-finite on rank(s) {', '.join(map(str, ranks))}")
        raise NonFiniteLossError(f"{type(self).__name__}: the {what} loss is {value} at ",
                                 self.step + (what == "training"), f" ({which}); loss: {formula}")

    def train(self, train_x_dict: Mapping[str, Any] | None = None, **kwargs: Any) -> Tensor:
        """One optimization step: evaluate the loss, ``zero_grad``, ``backward``, clip, ``step``.

        Parameters
        ----------
        train_x_dict : dict, optional
            The data, by variable name (Pixyz's parameter name).
        **kwargs
            Passed to ``loss.eval`` (and on to the networks).

        Returns
        -------
        Tensor
            The loss value (detached; Pixyz returns it with its graph, the same value).

        Raises
        ------
        NonFiniteLossError
            If the loss is NaN or infinite (before any parameter changes); the message names the step and terms.
            A float16/bfloat16 loss that is infinite (not NaN) while every gradient is finite only overflowed its
            dtype: the step is taken, as under Pixyz, with a warning (once per model).
        NonFiniteGradientError
            If the loss is finite but a gradient is not (before the optimizer steps: the weights and the optimizer
            state are unchanged); the message names the step and the distributions and parameters concerned. With
            ``clip_grad_value`` alone, the gradients are checked after clipping, which turns an infinite element
            into a finite one as under Pixyz (a NaN still raises).
        ValueError
            If a variable of the batch has zero rows and the loss is not finite on it (a mean over no rows).
        RuntimeError
            If the loss has no gradient (it does not depend on the trained parameters).
        TypeError
            If the optimizer's ``step`` needs a closure (``torch.optim.LBFGS``), before any weight changes.

        RankFailedError
            Under ``torch.distributed``, if the evaluation of the loss raised on another process (that process raises
            its own error, with a note naming its rank): no process takes the step.

        Notes
        -----
        A step that raises (also Ctrl-C) leaves the weights, the optimizer and the networks' buffers (batch-norm running
        statistics, a flow's batch statistics; a non-persistent buffer that the step changed in place is not put back,
        nor one of more than 65,536 elements, whose change a note names, see
        :func:`~pyro_dgm.losses.steps.take_buffers`) as they were before it (a Ctrl-C, or a timer's signal handler,
        that comes while the optimizer updates the weights is raised once the step is taken and counted: see
        :class:`~pyro_dgm.losses.steps.SignalDeferral`; an error raised by the optimizer itself, a hook of it, may leave
        some weights updated, and its note says so), and a checkpoint saved before the next step records the random
        states of its start (see :class:`~pyro_dgm.losses.steps.StepRandomState`), so that it resumes as the
        uninterrupted run. The live random generators keep the failed step's draws: the step taken again in the same
        process draws anew, as under Pixyz. With Pyro-side terms (``PyroELBO``), the parameters the step created in
        Pyro's param store and an autoguide's first-call set-up are undone too.

        Under ``torch.distributed`` every process takes the step or none does: an error raised while the loss is
        evaluated on some processes (a network's error, a validation error on one process's slice) and a
        non-finite loss on some are told to every process after the evaluation, and every process raises (see
        :mod:`pyro_dgm.models.distributed`). An error after that point (in ``backward`` on one process only) is
        not covered: the others wait for it until the timeout.
        """
        try:
            _check_values(self, "train", "train_x_dict", train_x_dict)
            if kwargs and kwargs.get("return_dict"):
                raise TypeError(f"{type(self).__name__}.train: return_dict=True would make the loss a (loss, samples) "
                                "pair, and a training step needs the loss alone (Pixyz fails there too: 'tuple' object "
                                "has no attribute 'backward'); draw the samples with loss.eval(x, return_dict=True), "
                                "or model.test(x, return_dict=True)")
        except TypeError as e:  # (under torch.distributed: the other processes learn it where they synchronize,
            # after their evaluation copied rank 0's buffers, which this process takes part in first)
            if self._dgm_ddp is not None and _dist.is_distributed():
                self._dgm_ddp.sync_buffers_failing()
            _dist.fail_together(e, self._dgm_step_name("training"))
            raise
        if self._dgm_params_key() != self.__dict__.get("_dgm_seen"):
            self._dgm_follow_changes()
        self._dgm_follow_losses()
        if self._dgm_pyro_terms and self.optimizer is not None and not hasattr(self.optimizer, "add_param_group"):
            raise TypeError(f"{type(self).__name__}: the loss {self.loss_cls} has Pyro-side terms, whose parameters "
                            f"(an autoguide's) join the optimizer as they are made, so the optimizer must be a "
                            f"torch.optim.Optimizer; {type(self.optimizer).__name__} has no add_param_group")
        watched = self.__dict__.get("_dgm_net_buffers")
        if type(watched) is not WatchedBuffers:  # the networks' buffers (batch-norm statistics...), which a failed
            # step must not change: the trained ones', those the loss reads without training them (a fixed encoder, a
            # discriminator, a plain network a user's loss calls), listed again when a layer is added to one
            watched = self._dgm_net_buffers = WatchedBuffers(self.distributions, *loss_networks(self.loss_cls),
                                                             *loss_plain_networks(self.loss_cls))
        buffers = watched.take()
        ddp = self._dgm_ddp
        if ddp is not None:  # (under torch.distributed: these buffers are rank 0's after the step too, and a step
            ddp.watched, ddp.taken = watched, buffers  # run twice runs the second time from them)
        rng = StepRandomState()
        pyro_side = _PyroSideState(self, watched) if self._dgm_pyro_terms else None
        try:
            if pyro_side is None:
                return self._dgm_step(train_x_dict, kwargs)
            with noting_buffers(pyro_side.ran, pyro_side.skip, called=pyro_side.called):  # (the Pyro-side networks)
                loss = self._dgm_step(train_x_dict, kwargs)
            if pyro_side.ran:
                self._dgm_found_pyro_modules(pyro_side.ran, pyro_side.called)
            return loss
        except BaseException as e:  # a NaN batch, a network that raised, Ctrl-C: as if the step had not started
            if buffers:
                restore_buffers(buffers, e)
            if pyro_side is not None:
                pyro_side.restore(self, e)
            # a checkpoint saved before the next step (except KeyboardInterrupt: save) records the random states of
            # this step's start, so it resumes as the uninterrupted run; the live generators keep the draws made (the
            # step taken again draws anew, as under Pixyz)
            self._dgm_failed_rng = rng
            where = f"{type(self).__name__}.train (step {self.step + 1})"
            if isinstance(e, Exception) and not _names_step(e, f"step {self.step + 1}", where):  # (a network's or
                add_note(e, f"(raised in {where}; {self._dgm_not_taken})", ("train", id(self)))  # a loss term's
                # own error; raised again at a later step: this step's note only)
            lost = rng.numpy_note(e, where)
            if lost is not None:
                self._dgm_rng_lost = lost  # Model.save warns (until the next step)
            raise
        finally:  # a Ctrl-C (or a timer's handler) that came while the optimizer stepped: raised now, after the step
            if ddp is not None:
                ddp.taken = None
            _SIGNALS.release(self)

    def _dgm_found_pyro_modules(self, ran: Mapping[int, tuple[nn.Module, list]], called: Mapping[int, nn.Module]
                                ) -> None:
        """Keep the modules with buffers that the Pyro-side terms ran in a step (weakly: a guide that builds a
        network at each call holds none of them after it), by :func:`pyro_module_key` (else ``"#<k>"``, the k-th
        found without one), whose buffers checkpoints hold."""
        import weakref

        found = pyro_modules(self)
        known = {id(m) for m in found.values()}
        new = [m for m, entries in ran.values() if entries and id(m) not in known]
        if not new:
            if len(found) != len(self.__dict__.get("_dgm_pyro_modules", ())):
                self._dgm_pyro_modules = [(k, weakref.ref(m)) for k, m in found.items()]
            return
        unnamed = sum(k.startswith("#") for k in found)
        for m in new:
            key = pyro_module_key(m, called.values())
            if key is None or key in found:
                key, unnamed = f"#{unnamed}", unnamed + 1
            found[key] = m
        self._dgm_pyro_modules = [(k, weakref.ref(m)) for k, m in found.items()]

    def _dgm_step(self, x_dict: Any, kwargs: dict[str, Any]) -> Tensor:
        """The body of :meth:`train` (compiled with ``retain_graph``: without donated buffers, which torch's compiled
        backward would need to free: see :func:`~pyro_dgm.losses.compiled.no_donated_buffers`)."""
        if self.retain_graph and self._dgm_compile is not None:
            with no_donated_buffers():
                return self._dgm_step_taken(x_dict, kwargs)
        return self._dgm_step_taken(x_dict, kwargs)

    def _dgm_step_taken(self, x_dict: Any, kwargs: dict[str, Any]) -> Tensor:
        try:
            loss, terms = self._dgm_evaluate_step(x_dict, kwargs)
        except (Exception, SystemExit) as e:  # under torch.distributed: the other processes learn it at the check
            _dist.fail_together(e, self._dgm_step_name("training"))  # below, in its place
            raise
        self.last_terms = terms
        try:
            overflowed = self._dgm_check_finite(loss, terms, "training")  # (under torch.distributed: the processes
        except NonFiniteLossError as e:  # meet)
            non_finite = e
        else:
            return self._dgm_take_step(loss, terms, overflowed)
        if self._dgm_compile is not None and self._dgm_ddp is None:  # the eager evaluation's refusal, if any (a NaN
            self._dgm_compiled_eval(self.loss_cls).refuse(x_dict, kwargs)  # batch: see there), raised here
        raise non_finite

    def _dgm_step_name(self, what: str) -> str:
        return (f"{type(self).__name__}.train (step {self.step + 1})" if what == "training" else
                f"{type(self).__name__}.test_step")

    def _dgm_evaluate_step(self, x_dict: Any, kwargs: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """The first part of :meth:`train`'s step, up to the loss and its terms (with the Pyro parameters it created
        adopted): what may raise on one process only under torch.distributed, before the processes synchronize."""
        if "_dgm_failed_rng" in self.__dict__:  # (a failed step's: this one goes on from the live states)
            del self._dgm_failed_rng
            self.__dict__.pop("_dgm_rng_lost", None)
        for m in submodules(self.distributions):  # train mode (modules set since included), without the setattr walk
            if not m.training:
                self.distributions.train()
                break
        if self.optimizer is not None:
            self.optimizer.zero_grad()
        for term in self._dgm_sharing:  # (adversarial terms only; none for most models)
            if term.__dict__.get("_dgm_sharer") != id(self):
                term._dgm_trained_with(self._dgm_params, self)
        if self._dgm_pyro_terms:
            import pyro.poutine as poutine

            with poutine.trace(param_only=True) as capture:
                loss, terms = self._dgm_evaluate(x_dict, kwargs)
            self._dgm_adopt_pyro_params({name: site["value"].unconstrained()
                                         for name, site in capture.trace.nodes.items() if site["type"] == "param"})
        else:
            store = _param_store()
            size = len(store)
            loss, terms = self._dgm_evaluate(x_dict, kwargs)
            if len(store) > size:  # the loss created Pyro parameters (pyro.param in a custom term)
                names = list(store.keys())[size:]
                self._dgm_adopt_pyro_params({n: store.get_param(n).unconstrained() for n in names})
            if size and "_dgm_params_seen" not in self.__dict__:
                # this model's first step: also the Pyro parameters that existed before it and that the loss reads
                # (created by test(), or by another model in this process), as SVI collects them at every step;
                # found in the loss's autograd graph (a Pyro handler here would not be thread-safe)
                self._dgm_params_seen = True
                leaves = {id(p) for p in autograd_leaves(loss)}
                params = getattr(store, "_params", None)  # a copy in one step: another thread may add to it
                named = list(params.items()) if isinstance(params, dict) else list(store.named_parameters())
                self._dgm_adopt_pyro_params({n: p for n, p in named if id(p) in leaves})
        return loss, terms

    def _dgm_take_step(self, loss: Tensor, terms: Mapping[str, Any], overflowed: bool) -> Tensor:
        """The rest of :meth:`train`'s step, from a finite loss: ``backward``, the gradients' check, clipping and the
        optimizer's step."""
        if self.optimizer is None:
            raise ValueError(f"{type(self).__name__}: there are no parameters to optimize: distributions=[...] is "
                             f"empty and the Pyro terms of the loss {self.loss_cls} created no parameter")
        if not loss.requires_grad:
            if not torch.is_grad_enabled():
                raise RuntimeError(f"{type(self).__name__}: train() under torch.no_grad() (or inference_mode): the "
                                   f"loss {self.loss_cls} has no gradient to train with; call train() outside it "
                                   "(test() evaluates without training)")
            if any(p.requires_grad for term in self.loss_cls._dgm_walk()[0]
                   for p in term._dgm_method("frozen_parameters")()):
                # Pixyz's step runs: the loss reaches only an adversarial term's discriminator (which this
                # optimizer does not train), so its gradient changes nothing; so does ours, saying so
                warnings.warn(f"{type(self).__name__}: the loss {self.loss_cls} sends no gradient to the trained "
                              "parameters, only to the discriminator of its adversarial term (trained by that term's "
                              "loss_train), so this step changes nothing (as under Pixyz); check the order of the "
                              "term's distributions and that distributions=[...] holds the generator",
                              RuntimeWarning, stacklevel=4)
                self.step += 1
                return loss.detach()
            raise RuntimeError(f"{type(self).__name__}: the loss {self.loss_cls} does not depend on the trained "
                               "parameters (it has no gradient); check that distributions=[...] holds the "
                               "distributions the loss uses")
        if loss.numel() != 1:  # torch: "grad can be implicitly created only for scalar outputs"
            raise ShapeError(f"{type(self).__name__}: the training loss {self.loss_cls} has shape "
                             f"{tuple(loss.shape)}; it must be one number to train on: reduce it over the batch "
                             "(loss.mean() or loss.sum())")
        loss.backward(retain_graph=self.retain_graph)
        if self._dgm_ddp is not None and self.__dict__.get("_dgm_extra_params"):  # the optimizer's parameters
            _dist.average_gradients(self._dgm_extra_params)  # outside the wrapped networks (add_param_group)
        if overflowed:
            self._dgm_overflowed_step(loss, terms)
        if self.clip_norm or self.clip_value:
            self._dgm_clip_current()
        clipped = False
        if self.check_gradients:
            grads = [p.grad for p in self._dgm_params if p.grad is not None]
            if self.clip_norm and not self._dgm_clip_each:  # the norm clipping computes is also the finiteness check
                total = get_total_norm(grads, 2.0)
                if not math.isfinite(total.item()):
                    self._dgm_check_gradients(loss, grads)  # raises unless the norm overflowed from finite values
                clip_grads_with_norm_(self._dgm_params, self.clip_norm, total)
            elif self.clip_value and not self.clip_norm:
                # value clipping alone clamps an infinite element to +-clip_value, and Pixyz takes that finite step:
                # check after clipping (a NaN stays NaN and raises); a norm clipping turns an inf into NaNs, refused
                clip_grad_value_(self._dgm_params, self.clip_value)
                clipped = True
                if grads and not _finite_sum(grads):
                    self._dgm_check_gradients(loss, grads)
            elif grads and not _finite_sum(grads):  # one pass over the gradients; a NaN or inf in any makes the
                self._dgm_check_gradients(loss, grads)  # sum non-finite (a finite sum that overflowed is let through)
            extra = self.__dict__.get("_dgm_extra_params")
            if extra:  # the optimizer's parameters outside the distributions (add_param_group): checked, not clipped
                more = [p.grad for p in extra if p.grad is not None]
                if more and not _finite_sum(more):
                    self._dgm_check_gradients(loss, more)
        elif self.clip_norm and not self._dgm_clip_each:
            clip_grad_norm_(self._dgm_params, self.clip_norm)
        if self.clip_norm and self._dgm_clip_each:
            for p in self._dgm_params:
                if p.grad is not None:
                    clip_grad_norm_(p, self.clip_norm)
        if self.clip_value and not clipped:
            clip_grad_value_(self._dgm_params, self.clip_value)
        optimizer = self.optimizer
        if type(optimizer) is not self.__dict__.get("_dgm_stepper"):  # (the class: checkpoints save optimizers)
            self._dgm_check_stepper(optimizer)
        _SIGNALS.hold(self)  # the weights all new or all old: a Ctrl-C waits for the step's end (train's finally)
        try:
            optimizer.step()
        except BaseException as e:
            self._dgm_optimizer_failed(optimizer, e)
            raise
        self.step += 1
        return loss.detach()

    def _dgm_optimizer_failed(self, optimizer: Any, error: BaseException) -> None:
        """Say on ``error``, raised by the optimizer's own ``step`` (a hook of it, a custom optimizer), that its
        updates are not undone: the optimizer may have updated some weights before it raised (undoing that would
        mean a copy of every weight and of the optimizer's state at every step)."""
        note = (f"{type(self).__name__}.train (step {self.step + 1}): the optimizer {type(optimizer).__name__} raised "
                "during its step, which may have updated some weights and their optimizer state before it raised; "
                "they are left as it left them (the networks' buffers are put back, and the step is not counted)")
        add_note(error, note, ("optimizer", id(self)))

    def _dgm_check_stepper(self, optimizer: Any) -> None:
        """Refuse an optimizer whose ``step`` needs a closure (``torch.optim.LBFGS``), which ``train`` does not pass
        (it steps once per batch, as Pixyz's does: torch's ``TypeError`` there), before it changes a weight; checked
        once per optimizer class."""
        if needs_closure(optimizer):
            raise TypeError(f"{type(self).__name__}: the optimizer {type(optimizer).__name__} needs a closure "
                            "(step(closure) evaluates the loss again, several times per step), which Model.train "
                            "does not pass: it calls optimizer.step() once per batch, as Pixyz does (whose step "
                            "raises TypeError there too); use an optimizer without one (torch.optim.Adam, SGD...), "
                            "or write the loop yourself: model.optimizer.step(closure), with a closure that zeroes "
                            "the gradients, evaluates model.loss_cls and calls backward. No weight was changed")
        self._dgm_stepper = type(optimizer)

    def _dgm_overflowed_step(self, loss: Tensor, terms: Mapping[str, Any]) -> None:
        """After ``backward`` on a float16/bfloat16 loss that overflowed to an infinity (no NaN): step, as Pixyz
        does, when every gradient is finite (or will be, clamped by ``clip_grad_value``), warning once per model that
        the loss reported is infinite; otherwise raise the loss's :class:`NonFiniteLossError`, before the optimizer
        steps."""
        bad = [p.grad for p in self._dgm_params if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
        clamped = self.clip_value and not self.clip_norm  # value clipping alone makes an infinite element finite
        if bad and not (clamped and not any(bool(torch.isnan(g).any()) for g in bad)):
            self._dgm_raise_non_finite(loss, terms, "training", True)
        if not self.__dict__.get("_dgm_overflow_warned"):
            self._dgm_overflow_warned = True
            warnings.warn(f"{type(self).__name__}: the training loss overflowed its dtype {loss.dtype} at step "
                          f"{self.step + 1} (it is {float(loss.detach().float())}) while every gradient is finite: "
                          "the step is taken, as under Pixyz, and the loss reported is infinite; a wider dtype "
                          "(float32) or a mean instead of a sum avoids it (said once)", RuntimeWarning, stacklevel=5)

    def _dgm_evaluate(self, x_dict: Any, kwargs: Mapping[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """The training loss and its terms: evaluated eagerly or compiled, and under torch.distributed as the forward
        pass of ``DistributedDataParallel`` (which averages the gradients in ``backward``; a compiled evaluation runs
        inside that forward, so DDP's hooks see its backward graph's parameter gradients)."""
        if self.loss_cls is None:
            self._dgm_no_loss()
        if _PYRO_STACK:  # a Pyro handler around train() that would weight the sites: it cannot reach the formula
            self.loss_cls._dgm_refuse_weighting_around(f"{type(self).__name__}.train: the loss")
        if self._dgm_compile is None:
            form = self._dgm_losses[2]  # (None: pyro_dgm's Loss.eval; else a class's own, see eval_with_terms)
            if self._dgm_ddp is None:
                if form is None:
                    return self.loss_cls.eval(x_dict, return_terms=True, **kwargs)
                return eval_with_terms(self.loss_cls, x_dict, kwargs, form)
            if form is None:
                return self._dgm_ddp(self.loss_cls, x_dict, kwargs)
            return self._dgm_ddp.run(eval_with_terms, self.loss_cls, x_dict, kwargs, form)
        compiled = self._dgm_compiled_eval(self.loss_cls)
        return compiled(x_dict, kwargs) if self._dgm_ddp is None else self._dgm_ddp.run(compiled, x_dict, kwargs)

    def _dgm_no_loss(self) -> NoReturn:
        raise ModelArgumentError(f"{type(self).__name__}: the model was built with loss=None and has no loss to "
                                 "evaluate; call set_loss(loss) first")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_dgm_compiled"] = {}  # keyed by the losses' ids, which a copy does not keep: built again
        state.pop("_dgm_data_generators", None)  # the last fit's data loader's (torch.Generator does not pickle)
        if "_dgm_pyro_modules" in state:  # (weak references do not pickle: the copy holds its copies of them)
            state["_dgm_pyro_modules"] = list(pyro_modules(self).items())
        return state

    def _dgm_compiled_eval(self, loss: Loss) -> CompiledEval:
        """The compiled evaluation of ``loss`` (the training or the test loss), built at its first use."""
        compiled = self._dgm_compiled
        ev = compiled.get(id(loss))
        if ev is None or ev.loss is not loss:
            live = {id(self.loss_cls), id(self.test_loss_cls)}  # (a loss replaced by set_loss, or by assigning
            for key in [k for k, e in compiled.items() if k not in live or e.loss is not loss and k == id(loss)]:
                del compiled[key]  # loss_cls, is dropped with its compiled evaluation: probe p255)
            ev = compiled[id(loss)] = CompiledEval(loss, self._dgm_compile or {})
        return ev

    def _dgm_adopt_pyro_params(self, found: Mapping[str, Tensor]) -> None:
        """Add the Pyro parameters ``found`` (name -> unconstrained tensor) that the optimizer does not hold yet, as
        ``SVI`` trains every parameter its loss touches; networks of pyro_dgm distributions are left to
        ``distributions=[...]``."""
        known = self.__dict__.get("_dgm_known_ids")
        if known is None:
            known = self._dgm_known_ids = {id(p) for p in self._dgm_params} | _distribution_param_ids(self)
        new: dict[str, Tensor] = {}
        taken: set[int] = set()
        for n, p in found.items():  # (a tensor under two names, pyro.module of one network twice or an autoguide's
            if id(p) not in known and id(p) not in taken and p.requires_grad:  # prototype: one entry, under its
                taken.add(id(p))  # first name, as SVI steps each tensor once)
                new[n] = p
        if not new:
            return
        params = list(new.values())
        for p in params:  # evaluated before they were known: a gradient left from earlier use (a backward by hand,
            p.grad = None  # another model) is cleared, as zero_grad() clears the networks' before each step
        owner = type(self).__name__
        optimizer, optimizer_params = self._dgm_optimizer_spec
        if self.optimizer is None:
            self.optimizer, clip = build_optimizer(owner, optimizer, params, optimizer_params,
                                                   names={id(p): n for n, p in new.items()})
            if _callable_clip(optimizer):  # (the parameters adopted later must get the same)
                self.__dict__["_dgm_given_clip"] = clip
            if self.clip_norm in (None, False) and "clip_norm" in clip:
                self._dgm_clip_each = True
            self.clip_norm = self.clip_norm if self.clip_norm not in (None, False) else clip.get("clip_norm",
                                                                                                 self.clip_norm)
            self.clip_value = self.clip_value if self.clip_value not in (None, False) else clip.get("clip_value",
                                                                                                    self.clip_value)
        else:
            from pyro.optim import PyroOptim

            if isinstance(optimizer, PyroOptim) and callable(optimizer.pt_optim_args):  # (the optimizer built: the
                groups = pyro_optim_groups(owner, optimizer, list(new.items()))  # new ones as groups of their own)
                check_group_keys(owner, self.optimizer, groups, list(new.items()))
                for group in groups:
                    self.optimizer.add_param_group(group)
            else:
                self.optimizer.add_param_group({"params": params})
            init_eager_state(self.optimizer, params)
            if _callable_clip(optimizer):
                self._dgm_same_clipping(owner, optimizer, list(new.items()))
        self._dgm_params.extend(params)
        self._dgm_pyro_named.update(new)
        known.update(id(p) for p in params)

    def _dgm_same_clipping(self, owner: str, optimizer: Any, named: Sequence[tuple[str, Tensor]]) -> None:
        """Refuse, by name, a callable ``clip_args`` that gives the parameters adopted from Pyro's param store another
        clipping than the model's (which clips every parameter alike)."""
        clip = pyro_clip_args(owner, optimizer, named)
        now = self.__dict__.get("_dgm_given_clip")
        if now is not None and clip != now:
            raise ValueError(f"{owner}: the pyro.optim optimizer's per-parameter clip_args give the parameters of "
                             f"Pyro's param store ({', '.join(n for n, _ in named[:3])}) the clipping {clip}, and "
                             f"the parameters trained before them {now}; a Model clips every parameter alike: give "
                             "clip_args as one dict, or clip_grad_norm= / clip_grad_value=")

    def _dgm_check_gradients(self, loss: Tensor, grads: Sequence[Tensor]) -> None:
        """Raise :class:`NonFiniteGradientError` if a gradient holds a NaN or an infinity (the slow path, taken only
        when the fused check found a non-finite norm), naming the step and the distributions concerned."""
        if all(bool(torch.isfinite(g).all()) for g in grads):
            return  # a 2-norm that overflowed from finite gradients: clipping handles it, as in torch
        owners: dict[int, tuple[str, str]] = {}
        for i, d in enumerate(self.distributions):
            if d is None:
                continue
            label = d.prob_text if isinstance(d, Distribution) else f"distributions[{i}] ({type(d).__name__})"
            for name, p in d.named_parameters():
                owners.setdefault(id(p), (label, name))
        for name, p in getattr(self, "_dgm_pyro_named", {}).items():
            owners.setdefault(id(p), ("Pyro's param store", name))
        bad: dict[str, list[str]] = {}
        for p in (*self._dgm_params, *self.__dict__.get("_dgm_extra_params", ())):
            g = p.grad
            if g is None:
                continue
            n = int(g.numel() - torch.isfinite(g).sum())
            if n:
                label, name = owners.get(id(p), ("a parameter", f"shape {tuple(p.shape)}"))
                bad.setdefault(label, []).append(f"{name} ({n} of {g.numel()} values)")
        which = "; ".join(f"{label}: {', '.join(names)}" for label, names in bad.items())
        raise NonFiniteGradientError(
            f"{type(self).__name__}: non-finite gradients at ", self.step + 1, " with a finite training loss "
            f"{float(loss.detach().sum()):.6g}, in the parameters of {which}; the optimizer did not step, the weights "
            "are unchanged (look for an operation whose derivative is infinite at these values: sqrt(0), log(0), "
            f"x / 0...); loss: {self.loss_cls}")

    def test(self, test_x_dict: Mapping[str, Any] | None = None, **kwargs: Any) -> Tensor:
        """The test loss, under ``torch.no_grad`` with every network in eval mode.

        As in Pixyz, the trained distributions stay in eval mode after the call (samples drawn after a test, e.g. for a
        figure, use the running statistics of batch norms and no dropout) until the next :meth:`train`; the other
        distributions the test loss holds (and its adversarial terms' discriminators) are put in eval mode for the
        call only.

        Under ``torch.distributed`` each process evaluates the batch it is given, with no communication (so a test
        on one process only, ``if rank == 0: model.test(x)``, is fine), and returns its own loss: on its slice of a
        global batch, that slice's loss. For the global batch's value, call it on every process with its slice and
        average: ``pyro_dgm.models.distributed.all_reduce_mean(model.test(x))`` (for a mean over the rows, slices of
        equal size). :meth:`fit`'s ``test_loss`` is that global value, averaged weighted by rows.

        Returns
        -------
        Tensor
            The test loss value (this process's, under ``torch.distributed``).
        """
        _check_values(self, "test", "test_x_dict", test_x_dict)
        x_dict = test_x_dict
        self._dgm_follow_losses()
        if self.test_loss_cls is None:
            self._dgm_no_loss()
        if _PYRO_STACK:  # as in train()
            self.test_loss_cls._dgm_refuse_weighting_around(f"{type(self).__name__}.test: the test loss")
        self.distributions.eval()
        trained = {id(m) for m in self.distributions.modules()}  # (listed at each call: a layer inserted into a
        # network, or a distribution put in a plain list of a loss, registers nothing that a cache could watch)
        modules = [m for d in loss_networks(self.test_loss_cls) for m in d.modules() if id(m) not in trained]
        modes = [(m, m.training) for m in dict.fromkeys(modules)]
        try:
            for m, _ in modes:
                m.training = False
            with torch.no_grad():
                if kwargs.get("return_dict"):  # Pixyz's test returns what the loss's eval returns: (loss, samples)
                    return self._dgm_test_with_samples(x_dict, kwargs)
                if self._dgm_compile is not None:
                    compiled = self._dgm_compiled_eval(self.test_loss_cls)
                    loss, terms = compiled(x_dict, kwargs)
                    if (validating() and self._dgm_ddp is None and isinstance(loss, Tensor)
                            and not bool(torch.isfinite(loss).all())):
                        compiled.refuse(x_dict, kwargs)  # (the eager test's refusal of a NaN batch: see there)
                else:
                    loss, terms = eval_with_terms(self.test_loss_cls, x_dict, kwargs, self._dgm_losses[3])
        finally:
            for m, mode in modes:
                m.training = mode
        self.last_terms = terms
        return loss

    def _dgm_test_with_samples(self, x_dict: Any, kwargs: dict[str, Any]) -> Any:
        """``test(x, return_dict=True)``: the test loss's ``eval(x, **kwargs)`` as Pixyz's ``Model.test`` returns it
        (``(loss, samples)``), evaluated eagerly, with :attr:`last_terms` recorded where the loss is pyro_dgm's."""
        x_dict = {} if x_dict is None else x_dict
        if self._dgm_losses[3] is None:
            loss, samples, self.last_terms = self.test_loss_cls.eval(x_dict, return_terms=True, **kwargs)
            return loss, samples
        out = self.test_loss_cls.eval(x_dict, **kwargs)
        self.last_terms = {}
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Everything needed to resume training exactly (see :func:`pyro_dgm.models.checkpoint.model_state`).

        A subclass that is also an ``nn.Module`` (``class M(Model, nn.Module)``, Pixyz's ``Model`` being none) gets
        ``nn.Module``'s: its tensors by name, as under Pixyz (``save``/``load`` keep this checkpoint)."""
        if isinstance(self, torch.nn.Module):
            return torch.nn.Module.state_dict(self, *args, **kwargs)  # type: ignore[no-any-return]
        from pyro_dgm.models.checkpoint import model_state
        return model_state(self)

    def load_state_dict(self, state: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        """Restore :meth:`state_dict` (shapes checked first; a mismatch names the tensor and both shapes);
        ``nn.Module``'s for a subclass that is one."""
        if isinstance(self, torch.nn.Module):
            return torch.nn.Module.load_state_dict(self, state, *args, **kwargs)
        from pyro_dgm.models.checkpoint import load_model_state
        load_model_state(self, state)
        return None

    def save(self, path: Any) -> None:
        """Save a checkpoint that resumes exactly (``load(path, resume=True)``): networks and buffers of every
        distribution, the optimizers (loss terms' too), the step/epoch counters and the RNG states (torch, python,
        numpy); its ``"distributions"`` entry is Pixyz's, which ``load(path)`` and Pixyz's ``load`` read.

        The file is replaced atomically (written to a temporary file in the same folder, synced, then renamed), so
        a save that is interrupted, even by ``kill -9``, leaves the previous checkpoint intact."""
        from pyro_dgm.models.checkpoint import save
        save(self, path)

    def load(self, path: Any, resume: bool = False) -> None:
        """Load a checkpoint written by :meth:`save` (or by Pixyz's ``Model.save``) into this model.

        As Pixyz's ``load``, it loads the parameters and buffers of :attr:`distributions` and leaves the rest as it
        is: the optimizer (its moments and learning rate), the counters and the random states, so the numbers that
        follow are Pixyz's. ``resume=True`` restores everything :meth:`save` wrote (also the optimizers, the loss
        terms' states, the distributions the losses hold, the counters, the history and the random states), so a
        freshly built model continues the saved run exactly (a model whose loss creates Pyro parameters, a
        ``PyroELBO`` term's guide, needs one step first so that they exist: the error says so); a file written by
        Pixyz holds the distributions only, which are loaded, with a ``UserWarning`` that the rest is not restored.

        Raises
        ------
        ValueError
            If a tensor's shape differs from this model's (the message names it and both shapes), if the file is
            truncated or not a checkpoint (the message names it), or, with ``resume=True``, if an optimizer's class
            or parameter groups differ; nothing is changed then.
        """
        from pyro_dgm.models.checkpoint import load
        load(self, path, resume=resume)

    # ------------------------------------------------------------------ epochs
    def fit(self, train_data: Any, epochs: int = 1, test_data: Any = None, batch_size: int | None = None,
            callbacks: Sequence[Callable[..., Any]] | None = None, progress: bool = True,
            log_dir: Any = None, shuffle: bool = True, **kwargs: Any) -> trainer.History:
        """Train for ``epochs`` epochs; see :func:`pyro_dgm.models.trainer.fit` for the parameters."""
        return trainer.fit(self, train_data, epochs=epochs, test_data=test_data, batch_size=batch_size,
                           callbacks=callbacks, progress=progress, log_dir=log_dir, shuffle=shuffle, **kwargs)

    # What fit() asks of a model: train_step and test_step, each one batch -> (loss, named terms). fit adds the
    # epoch to a NonFiniteLossError they raise; the step number is the model's.
    def train_step(self, x_dict: Mapping[str, Any], **kwargs: Any) -> tuple[Tensor, Mapping[str, Any]]:
        """One training step as :meth:`fit` takes it: :meth:`train` on the batch, then the loss (one tensor) and
        the named terms of that evaluation (:attr:`last_terms`). A subclass whose :meth:`train` returns more
        (``GAN``) overrides this to return the loss it minimizes and puts the rest in the terms.

        Raises
        ------
        NonFiniteLossError
            As :meth:`train`.
        """
        return self.train(x_dict, **kwargs), self.last_terms

    def test_step(self, x_dict: Mapping[str, Any], **kwargs: Any) -> tuple[Tensor, Mapping[str, Any]]:
        """One test evaluation as :meth:`fit` takes it: :meth:`test` on the batch, checked to be finite, and its
        named terms (see :meth:`train_step`).

        Raises
        ------
        NonFiniteLossError
            If the test loss is NaN or infinite (every process raises together under ``torch.distributed``).
        RankFailedError
            Under ``torch.distributed``, if the evaluation raised on another process (that process raises its
            error).
        """
        try:
            loss = self.test(x_dict, **kwargs)
        except (Exception, SystemExit) as e:  # under torch.distributed: the other processes learn it at the check
            _dist.fail_together(e, self._dgm_step_name("test"))  # below
            raise
        self._dgm_check_finite(loss, self.last_terms, "test")
        return loss, self.last_terms

    def to(self, *args: Any, **kwargs: Any) -> "Model":
        """Move the distributions (those trained and those the losses hold, discriminators of adversarial terms
        included) like ``nn.Module.to``. The optimizers' state built by earlier steps (Adam's moments) follows its
        parameters' device and dtype, as ``torch.optim.Optimizer.load_state_dict`` casts it."""
        self.distributions.to(*args, **kwargs)
        for d in self.loss_cls._dgm_distributions + self.test_loss_cls._dgm_distributions:
            d.to(*args, **kwargs)
        optimizers = [self.optimizer]
        for term in self.loss_cls._dgm_walk()[0] + self.test_loss_cls._dgm_walk()[0]:
            move = getattr(term, "to", None)
            if callable(move):
                move(*args, **kwargs)
            optimizers.append(getattr(term, "d_optimizer", None))
        for opt in optimizers:
            _state_follows_params(opt)
        return self
