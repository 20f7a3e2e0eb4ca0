r"""Checkpoints that resume exactly: :func:`save` / :func:`load` for a :class:`~pyro_dgm.models.Model`.

A checkpoint holds

- the parameters and buffers of every trained distribution (``model.distributions``) and of every other distribution
  the losses hold (priors with buffers, discriminators...);
- every optimizer: ``model.optimizer``, any other optimizer or learning-rate scheduler stored as an attribute of the
  model (a GAN's ``d_optimizer``), and the state of loss terms that own some (``term.term_state_dict()`` for each
  node of ``loss.loss_terms()``: an adversarial term's discriminator optimizer);
- the ``step`` and ``epoch`` counters and the history of :meth:`~pyro_dgm.models.Model.fit`;
- the random states of torch (CPU and CUDA), Python's ``random`` and numpy, so the Monte Carlo draws after loading
  are those an uninterrupted run would have made.

- the Pyro-side parameters the model trains (an autoguide's, by param-store name; see
  :class:`~pyro_dgm.models.Model`), and the persistent buffers of the networks its Pyro-side terms run (a guide's
  network registered by ``pyro.module``, with a batch norm), each by its place under the network registered
  (:func:`~pyro_dgm.models.model.pyro_module_key`);
- for a :class:`~pyro_dgm.models.GAN` whose generator step failed after the discriminator's (Ctrl-C), that this
  batch's discriminator step is done (``d_step_done``: the batch's digest, the discriminator's loss and the random
  states that followed its step), so the resumed run takes the generator's step only on that batch, as the
  uninterrupted run did.

``Model.load(path)`` reads the distributions alone, as Pixyz's ``load`` does (the optimizer, counters and random
states stay as they are); ``Model.load(path, resume=True)`` reads everything.

It is written atomically (a temporary file in the same folder, flushed and synced, then ``os.replace``: a save killed
midway leaves the previous checkpoint intact) and read with ``torch.load(weights_only=True)``: only tensors,
numbers, strings and containers, so loading a checkpoint runs no pickled code. A file that is truncated or not a
checkpoint raises ``ValueError`` naming it.

Loading checks everything before changing anything: every tensor's shape (a mismatch raises ``ValueError`` naming
the tensor and both shapes), each optimizer's class, its parameter-group layout and the shapes of its state.
"""
from __future__ import annotations

import contextlib
import os
import random
import warnings
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from pyro_dgm.losses.steps import StepRandomState
from pyro_dgm.models import distributed as _dist
from pyro_dgm.utils.random import current_generator

if TYPE_CHECKING:  # pragma: no cover
    from pyro_dgm.models.model import Model

__all__ = ["save", "load", "model_state", "load_model_state", "rng_state", "set_rng_state", "atomic_torch_save"]

FORMAT = 1


# ---------------------------------------------------------------------------------------------------------------- RNG
def rng_state(at: StepRandomState | None = None) -> dict[str, Any]:
    """The random states of torch (CPU, and CUDA when initialized), Python's ``random``, numpy, and the generator
    of :func:`pyro_dgm.utils.generator` when one is set; those that ``at`` took (the start of a training step that
    failed), where given (numpy's is always the current one)."""
    if at is not None:
        state: dict[str, Any] = {"torch": at.cpu}
        if at.own is not None:
            state["generator"] = at.own_state
        if at.cuda is not None:
            state["cuda"] = at.cuda
        version, internal, gauss = at.python
    else:
        state = {"torch": torch.get_rng_state()}
        own = current_generator()
        if own is not None:
            state["generator"] = own.get_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        version, internal, gauss = random.getstate()
    state["python"] = {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state["numpy"] = {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore :func:`rng_state` (the state of a :func:`pyro_dgm.utils.generator` into the one set now, if any)."""
    torch.set_rng_state(state["torch"])
    own = current_generator()
    if "generator" in state and own is not None:
        own.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "python" in state:
        py = state["python"]
        random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    if "numpy" in state:
        import numpy as np

        nps = state["numpy"]
        np.random.set_state((nps["kind"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"],
                             nps["cached_gaussian"]))


# ---------------------------------------------------------------------------------------------------------------- model
def _other_distributions(model: "Model") -> list[nn.Module]:
    """Distributions the losses hold that are not trained by ``model.optimizer`` (each once)."""
    trained = {id(d) for d in model.distributions}
    out: list[nn.Module] = []
    for d in model.loss_cls._dgm_distributions + model.test_loss_cls._dgm_distributions:
        if id(d) not in trained and all(d is not o for o in out):
            out.append(d)
    return out


def _loss_terms(model: "Model") -> list[Any]:
    terms = model.loss_cls._dgm_walk()[0]
    seen = {id(t) for t in terms}
    terms += [t for t in model.test_loss_cls._dgm_walk()[0] if id(t) not in seen]
    return terms


def _optimizers(model: "Model") -> dict[str, Any]:
    """``model.optimizer`` and every other optimizer or scheduler among the model's attributes, by attribute name."""
    out: dict[str, Any] = {}
    for name, value in vars(model).items():
        if isinstance(value, torch.optim.Optimizer) or isinstance(value, torch.optim.lr_scheduler.LRScheduler):
            out[name] = value
    return out


def _history_state(model: "Model") -> dict[str, list[Any]]:
    """The history of ``fit`` (a subclass's own ``history``, a list or a method, is not saved: ``{}``)."""
    history = getattr(model, "history", None)
    return {k: list(v) for k, v in history.items()} if isinstance(history, Mapping) else {}


def model_state(model: "Model") -> dict[str, Any]:
    """Everything :func:`load_model_state` needs to resume ``model`` exactly (see the module docstring)."""
    terms = {}
    for i, term in enumerate(_loss_terms(model)):
        st = term._dgm_method("term_state_dict")()
        if st:
            terms[str(i)] = {"type": type(term).__name__, "state": st}
    return {
        "format": FORMAT,
        "model": type(model).__name__,
        "distributions": model.distributions.state_dict(),
        "other_distributions": {str(i): d.state_dict() for i, d in enumerate(_other_distributions(model))},
        "optimizers": {name: opt.state_dict() for name, opt in _optimizers(model).items()},
        "optimizer_types": {name: _type_name(opt) for name, opt in _optimizers(model).items()},
        "pyro_params": {name: p.detach().clone() for name, p in getattr(model, "_dgm_pyro_named", {}).items()},
        "loss_terms": terms,
        "step": model.step,
        "epoch": model.epoch,
        "history": _history_state(model),
        "rng": rng_state(model.__dict__.get("_dgm_failed_rng")),  # a failed step: the states at its start
        "data_rng": [g.get_state() for g in model.__dict__.get("_dgm_data_generators", ())],
        **_epoch_state(model),
        **_d_step_state(model),
        **_pyro_modules_state(model),
    }


def _own_buffers(m: nn.Module) -> dict[str, Tensor]:
    passing = getattr(m, "_non_persistent_buffers_set", ())
    out = {}
    for n in m._buffers.keys():  # (keys(): a TorchScript module's wrapper)
        b = m._buffers[n]
        if b is not None and n not in passing:
            out[n] = b
    return out


def _pyro_modules_state(model: "Model") -> dict[str, Any]:
    """``pyro_modules``: the persistent buffers of the networks the loss's Pyro-side terms ran (found by the steps),
    by their names (:func:`~pyro_dgm.models.model.pyro_module_key`), where there are any."""
    from pyro_dgm.models.model import pyro_modules

    found = pyro_modules(model)
    if not found:
        return {}
    return {"pyro_modules": {k: {n: b.detach().clone() for n, b in _own_buffers(m).items()} for k, m in found.items()}}


def _check_pyro_modules(model: "Model", saved: Any) -> list[tuple[Tensor, Tensor]]:
    """The buffers of the networks the Pyro-side terms ran (:func:`_pyro_modules_state`) against the checkpoint's:
    the same networks by name, the same buffers, the same shapes. Returns ``(buffer, saved value)`` pairs to copy."""
    from pyro_dgm.models.model import pyro_modules

    found = pyro_modules(model)
    if saved is None:  # (written before these were saved: they stay as they are)
        if found:
            warnings.warn(f"Model.load: the checkpoint holds no buffers of the networks the loss's Pyro-side terms "
                          f"run ({sorted(found)}: written by an earlier pyro_dgm); their batch-norm statistics stay "
                          "as they are, so the resumed run differs from the uninterrupted one there", UserWarning,
                          stacklevel=4)
        return []
    if not isinstance(saved, Mapping) or sorted(saved) != sorted(found):
        names = sorted(saved) if isinstance(saved, Mapping) else saved
        lacking = [k for k in names if k not in found] if isinstance(saved, Mapping) else []
        hint = (f"; this model finds them as its training steps run them and has not run {lacking} yet: take "
                "training steps that run each of them (the guide's branches that call them), then load"
                if lacking and all(k in saved for k in found) else "")
        raise ValueError(f"Model.load: the checkpoint holds the buffers of the networks {names} that the loss's "
                         f"Pyro-side terms run (registered by pyro.module), this model of {sorted(found)}{hint}")
    unnamed = [k for k in found if k.startswith("#")]
    if len(unnamed) > 1:
        warnings.warn(f"Model.load: {len(unnamed)} networks the loss's Pyro-side terms run hold no parameter of "
                      "Pyro's param store (a batch norm without weights, outside any network registered with "
                      "pyro.module), so the checkpoint matches them by the order the runs found them in: this run "
                      "must have run them in the saving run's order (register each with pyro.module, or call it "
                      "inside a registered network, to match it by name)", UserWarning, stacklevel=4)
    out = []
    for key, m in found.items():
        own, theirs = _own_buffers(m), saved[key]
        if not isinstance(theirs, Mapping) or sorted(own) != sorted(theirs):
            names = sorted(theirs) if isinstance(theirs, Mapping) else theirs
            raise ValueError(f"Model.load: the checkpoint's network {key!r} of the Pyro-side terms "
                             f"({type(m).__name__}) holds the buffers {names}, this model's {sorted(own)}")
        for n, b in own.items():
            value = theirs[n]
            if not isinstance(value, Tensor) or value.shape != b.shape:
                raise ValueError(f"Model.load: buffer {n!r} of the Pyro-side terms' network {key!r} "
                                 f"({type(m).__name__}) has shape {_shape_text(value)} in the checkpoint but "
                                 f"{_shape_text(b)} in this model")
            out.append((b, value))
    return out


def _d_step_state(model: "Model") -> dict[str, Any]:
    """``d_step_done``: a GAN's discriminator step taken on the batch whose generator step failed (see
    :meth:`pyro_dgm.models.GAN.train`), where there is one (not under torch.distributed, see :func:`save`)."""
    done = model.__dict__.get("_dgm_d_done_pending") or model.__dict__.get("_dgm_d_done")
    if done is None or _dist.is_distributed():
        return {}
    rng = done["rng"]
    return {"d_step_done": {"batch": str(done["batch"]), "d_loss": done["d_loss"].detach().clone(),
                            "rng": rng_state(rng) if isinstance(rng, StepRandomState) else rng}}


def _check_d_step_done(done: Any) -> None:
    if done is None:
        return
    if (not isinstance(done, Mapping) or set(done) != {"batch", "d_loss", "rng"} or not isinstance(done["batch"], str)
            or not isinstance(done["d_loss"], Tensor)):
        raise ValueError("Model.load: the checkpoint's d_step_done is not what Model.save writes; it is damaged")
    _check_rng(done["rng"])


def _epoch_state(model: "Model") -> dict[str, Any]:
    """``epoch_steps``: the training steps taken in an epoch that ``fit`` began and did not finish (0 at an epoch's
    end); and, where it can, ``epoch_resume``: what ``fit`` needs to continue that epoch where it stopped
    (:class:`~pyro_dgm.models.trainer.EpochStart`)."""
    start = model.__dict__.get("_dgm_epoch_start")
    if start is not None and start.ended is not None and start.ended != model.step:
        # fit raised in the epoch and steps were taken since, outside fit: that epoch cannot be resumed any more
        del model.__dict__["_dgm_epoch_start"]
        start = None
    pending = model.__dict__.get("_dgm_pending_epoch")
    if pending is not None:  # loaded, not continued yet (or stopped while skipping): saved again as it was loaded
        return {"epoch_steps": pending["steps"], "epoch_resume": pending}
    steps = model.step - start.step if start is not None else 0
    resume = start.resume_state(model) if start is not None else None  # (at 0 steps too: its order is drawn)
    return {"epoch_steps": steps, "epoch_resume": resume} if resume is not None else {"epoch_steps": steps}


def _shape_text(t: Any) -> str:
    return str(tuple(t.shape)) if isinstance(t, Tensor) else repr(t)


class NotAStateDictError(TypeError, ValueError):
    """A checkpoint's entry that should be a state dict and is not: a ValueError, and the TypeError torch's
    ``load_state_dict`` raises there ("Expected state_dict to be dict-like")."""


class StateDictError(ValueError, RuntimeError):
    """A checkpoint's state dict that does not fit the model (tensors missing, unexpected, of another shape, or
    not tensors): a ValueError that names them, and the RuntimeError torch's ``load_state_dict`` raises there (what
    a Pixyz program's ``Model.load`` meets)."""


def _check_module(where: str, module: nn.Module, saved: Mapping[str, Any]) -> None:
    if not isinstance(saved, Mapping):  # (torch's load_state_dict: "Expected state_dict to be dict-like")
        raise NotAStateDictError(f"Model.load: {where} of the checkpoint is a {type(saved).__name__}, not a state "
                                 "dict (module.state_dict()'s dict of tensors)")
    own = module.state_dict()
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    if missing or unexpected:
        raise StateDictError(f"Model.load: {where} of the checkpoint does not match this model: "
                             + (f"missing tensors {missing}" if missing else "")
                             + ("; " if missing and unexpected else "")
                             + (f"unexpected tensors {unexpected}" if unexpected else "")
                             + "; was the checkpoint saved from a model built the same way?")
    for key, value in own.items():
        other = saved[key]
        if isinstance(value, Tensor) and not isinstance(other, Tensor):
            shape = "uninitialized (a lazy layer)" if is_lazy(value) else f"of shape {_shape_text(value)}"
            raise StateDictError(f"Model.load: {where}.{key} is a {type(other).__name__} ({other!r:.60}) in the "
                                 f"checkpoint, not a tensor (this model's is {shape}); the file is damaged or was not "
                                 "written from a state_dict()")
        if is_lazy(value):  # (a lazy layer that has not run: torch's load gives it the saved shape)
            continue
        if isinstance(value, Tensor) and other.shape != value.shape and not (value.dim() == 0
                                                                             and other.shape == (1,)):
            # (torch loads a shape-(1,) tensor into a 0-d one: files from before torch 0.4)
            raise StateDictError(f"Model.load: tensor {where}.{key} has shape {_shape_text(other)} in the checkpoint "
                                 f"but {_shape_text(value)} in this model; build the model with the same sizes as the "
                                 "one that was saved")


# Optimizer state entries that torch's optimizers keep in the shape of their parameter (others, like LBFGS's flat
# buffers or Adafactor's row/column factors, are not checked).
_PARAM_SHAPED = frozenset({"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg", "acc_delta",
                           "exp_inf", "grad_avg", "sum", "ax", "prev", "step_size"})


def _type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _trainable_only(opt: Any, saved: Any) -> dict[str, Any] | None:
    """The state of an optimizer saved by a pyro_dgm of before 2026-12-03, whose ``Model`` gave its optimizer only
    the parameters that required grad when it was built (it now gives every parameter, as Pixyz does), remapped onto
    ``opt``: the i-th saved parameter of a group is the i-th of that group that requires grad now (the model built
    as it was saved, the same parts frozen); the other parameters keep the state they have. ``None`` where the saved
    layout is not that one (then :func:`_check_optimizer` says what differs)."""
    if not isinstance(opt, torch.optim.Optimizer) or not isinstance(saved, Mapping):
        return None
    groups, state = saved.get("param_groups"), saved.get("state")
    if not isinstance(groups, (list, tuple)) or not isinstance(state, Mapping) or len(groups) != len(opt.param_groups):
        return None
    own = opt.state_dict()
    new_state = dict(own["state"])
    new_groups = []
    changed = False
    for g, own_g, params in zip(groups, own["param_groups"], (g["params"] for g in opt.param_groups)):
        if not isinstance(g, Mapping) or not isinstance(g.get("params"), (list, tuple)):
            return None
        if len(g["params"]) == len(params):
            new_groups.append(dict(g))
            continue
        trainable = [i for i, p in zip(own_g["params"], params) if p.requires_grad]
        if len(trainable) != len(g["params"]):
            return None
        changed = True
        for old_i, new_i in zip(g["params"], trainable):
            if old_i in state:
                new_state[new_i] = state[old_i]
            else:
                new_state.pop(new_i, None)
        new_groups.append({**g, "params": list(own_g["params"])})
    if not changed:
        return None
    kept = {i for g in new_groups for i in g["params"]}
    return {"state": {i: v for i, v in new_state.items() if i in kept}, "param_groups": new_groups}


#: torch's optimizers whose state holds the same entries for every parameter they stepped (not Adafactor's, which
#: depend on the parameter's dims, nor LBFGS's, held for the first parameter only)
_UNIFORM_STATE = frozenset({torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD, torch.optim.RMSprop,
                            torch.optim.Adagrad, torch.optim.Adadelta, torch.optim.Adamax, torch.optim.NAdam,
                            torch.optim.RAdam, torch.optim.ASGD, torch.optim.Rprop})


def _check_optimizer(name: str, opt: Any, saved: Any, saved_type: str | None) -> None:
    """The saved state of optimizer (or scheduler) ``name`` fits ``opt``: same class, same param-group layout, state
    tensors of the parameters' shapes. Raises ``ValueError`` before anything is loaded."""
    own_type = _type_name(opt)
    if saved_type is not None and saved_type != own_type:
        raise ValueError(f"Model.load: the checkpoint's {name} is a {saved_type}, this model's is a {own_type}; "
                         "build the model with the optimizer it was saved with")
    if not isinstance(opt, torch.optim.Optimizer):
        return
    if not isinstance(saved, Mapping) or "param_groups" not in saved or "state" not in saved:
        raise ValueError(f"Model.load: the checkpoint's {name} is not an optimizer state (no param_groups)")
    groups, own_groups = saved["param_groups"], opt.param_groups
    layout = [len(g["params"]) for g in groups]
    own_layout = [len(g["params"]) for g in own_groups]
    if layout != own_layout:
        raise ValueError(f"Model.load: the checkpoint's {name} has {len(layout)} parameter group(s) of {layout} "
                         f"parameter(s), this model's has {len(own_layout)} of {own_layout}; build the model with "
                         "the same distributions and optimizer as the one that was saved")
    for i, (group, own) in enumerate(zip(groups, own_groups)):
        missing = sorted(k for k in own if k != "params" and k not in group)
        extra = sorted(k for k in group if k != "params" and k not in own)
        if missing and extra:  # another optimizer class (a checkpoint without its type; options that one torch
            # version adds to a class are only missing, and torch fills them in)
            raise ValueError(f"Model.load: parameter group {i} of the checkpoint's {name} has the options {extra} "
                             f"and lacks {missing} of this model's {type(opt).__name__}; was it saved with another "
                             "optimizer?")
    params = [p for g in own_groups for p in g["params"]]
    index = [i for g in groups for i in g["params"]]
    shapes = {i: p.shape for i, p in zip(index, params)}
    group_of = {i: k for k, g in enumerate(groups) for i in g["params"]}
    keys: dict[int, tuple[Any, set[str]]] = {}
    for i, st in saved["state"].items():
        if i not in shapes:
            raise ValueError(f"Model.load: the checkpoint's {name} holds state for parameter {i}, which none of "
                             "its parameter groups lists")
        if not isinstance(st, Mapping):
            raise ValueError(f"Model.load: the checkpoint's {name} state of parameter {i} is a "
                             f"{type(st).__name__}, not a dict")
        if type(opt) in _UNIFORM_STATE:  # these keep the same entries for every parameter of a group they stepped
            first = keys.setdefault(group_of[i], (i, set(st)))  # (a group's options, amsgrad, decide its entries)
            if set(st) != first[1]:
                raise ValueError(f"Model.load: the checkpoint's {name} state of parameter {i} has the entries "
                                 f"{sorted(st)}, that of parameter {first[0]} of the same group {sorted(first[1])}; "
                                 "the file is damaged")
        for key, value in st.items():
            if key in _PARAM_SHAPED and isinstance(value, Tensor) and value.shape != shapes[i]:
                raise ValueError(f"Model.load: the checkpoint's {name} state {key!r} of parameter {i} has shape "
                                 f"{tuple(value.shape)}, the parameter has shape {tuple(shapes[i])}")


def _check_pyro_params(model: "Model", saved: Mapping[str, Any]) -> list[tuple[Tensor, Tensor]]:
    """The Pyro-side parameters the model trains (an autoguide's, by param-store name) against the checkpoint's:
    same names, same order, same shapes. Returns ``(parameter, saved value)`` pairs to copy."""
    own = getattr(model, "_dgm_pyro_named", {})
    if list(own) != list(saved):
        missing = [n for n in saved if n not in own]
        hint = (f"; the parameters {missing} are created by the loss's Pyro terms (an autoguide) at its first "
                "evaluation: take one training step with this model, then load" if missing else "")
        raise ValueError(f"Model.load: the checkpoint trains the Pyro parameters {list(saved)}, this model "
                         f"{list(own)}{hint}")
    out = []
    for name, p in own.items():
        value = saved[name]
        if not isinstance(value, Tensor) or value.shape != p.shape:
            raise ValueError(f"Model.load: Pyro parameter {name!r} has shape {_shape_text(value)} in the checkpoint "
                             f"but {_shape_text(p)} in this model")
        out.append((p, value))
    return out


def load_model_state(model: "Model", state: Mapping[str, Any]) -> None:
    """Restore :func:`model_state` into ``model`` (all shapes are checked before anything changes), or the
    distributions of a checkpoint written by Pixyz's ``Model.save`` (``{"distributions": state_dict}``).

    Raises
    ------
    ValueError
        If a tensor's shape differs (the message names the tensor and both shapes), if tensors are missing or
        unexpected, or if the checkpoint holds other optimizers or loss-term states than this model.
    """
    if _pixyz_written(state):
        # Pixyz's Model.save: the distributions' state dict alone (Pixyz saves no optimizer, counters or RNG
        # states), which Pixyz's Model.load loads into model.distributions, whatever else the dict holds (a user's
        # own {"distributions": ..., "epoch": 3}); so does this
        _check_module("distributions", model.distributions, state["distributions"])
        model.distributions.load_state_dict(state["distributions"])
        return
    if not isinstance(state, Mapping) or not _is_ours(state.get("format")):
        if _looks_ours(state):
            raise ValueError(f"Model.load: a pyro_dgm Model checkpoint of format {state['format']!r} (it holds what "
                             f"Model.save writes); this pyro_dgm reads format {FORMAT}")
        raise ValueError("Model.load: not a pyro_dgm Model checkpoint (written by Model.save) nor a Pixyz one (a "
                         "dict with the key 'distributions')")
    lacking = [k for k in _REQUIRED if k not in state]
    if lacking:
        raise ValueError(f"Model.load: the checkpoint lacks {lacking}; it is damaged or was not written by "
                         "Model.save")
    _check_entries(state)
    _check_module("distributions", model.distributions, state["distributions"])
    others = _other_distributions(model)
    saved_others = state["other_distributions"]
    if len(others) != len(saved_others):
        raise ValueError(f"Model.load: the checkpoint holds {len(saved_others)} distribution(s) outside "
                         f"model.distributions, this model's losses hold {len(others)}")
    for i, d in enumerate(others):
        _check_module(f"other_distributions.{i} ({getattr(d, 'prob_text', type(d).__name__)})", d,
                      saved_others[str(i)])
    pyro_params = _check_pyro_params(model, state.get("pyro_params") or {})
    pyro_buffers = _check_pyro_modules(model, state.get("pyro_modules"))
    optimizers = _optimizers(model)
    if "optimizer" in state["optimizers"] and getattr(model, "optimizer", 0) is None:
        raise ValueError("Model.load: this model's optimizer does not exist yet (its only parameters are created by "
                         "the loss's Pyro terms at the first step); take one training step, then load")
    if sorted(optimizers) != sorted(state["optimizers"]):
        raise ValueError(f"Model.load: the checkpoint holds the optimizers {sorted(state['optimizers'])}, this model "
                         f"has {sorted(optimizers)}")
    saved_optimizers = dict(state["optimizers"])
    for name, opt in optimizers.items():
        remapped = _trainable_only(opt, saved_optimizers[name])
        if remapped is not None:
            saved_optimizers[name] = remapped
        _check_optimizer(name, opt, saved_optimizers[name], (state.get("optimizer_types") or {}).get(name))
    terms = _loss_terms(model)
    for key, entry in state["loss_terms"].items():
        i = int(key)
        if i >= len(terms) or type(terms[i]).__name__ != entry["type"]:
            raise ValueError(f"Model.load: the checkpoint holds the state of a {entry['type']} loss term (term {i}) "
                             "that this model's loss does not have at that place")
        check = getattr(type(terms[i]), "check_term_state_dict", None)
        if callable(check):
            check(terms[i], entry["state"])
    step, epoch = _counter(state, "step"), _counter(state, "epoch")
    history = state.get("history") or {}
    if not isinstance(history, Mapping) or not all(isinstance(v, (list, tuple)) for v in history.values()):
        raise ValueError("Model.load: the checkpoint's history is not a dict of lists; it is damaged")
    ranks_rng = state.get("rng_ranks")  # saved under torch.distributed: each process takes its own
    same_world = isinstance(ranks_rng, (list, tuple)) and len(ranks_rng) == _dist.world_size()
    rng = ranks_rng[_dist.rank()] if same_world else state["rng"]
    _check_rng(rng)
    done = state.get("d_step_done")
    _check_d_step_done(done)
    resume = state.get("epoch_resume")
    steps = state.get("epoch_steps")  # (not `or`: a damaged entry may be a tensor of several values)
    steps = 0 if steps is None else _counter({"epoch_steps": steps}, "epoch_steps")
    if resume is not None:
        _check_epoch_resume(resume, steps)
    data_rng = state.get("data_rng")
    data_rng = [] if data_rng is None else data_rng
    _check_data_rng(data_rng)
    if _dist.is_distributed() and not same_world and _dist.rank() == 0:
        saved = len(ranks_rng) if isinstance(ranks_rng, (list, tuple)) else 1
        warnings.warn(f"Model.load: the checkpoint holds the random states of {saved} process(es), this run has "
                      f"{_dist.world_size()}: every process takes the first one's, so their Monte Carlo draws are "
                      "the same; seed each process after loading (e.g. torch.manual_seed(seed + rank)) for "
                      "distinct ones", UserWarning, stacklevel=4)
    # every check passed: change the model
    model.distributions.load_state_dict(state["distributions"])
    with torch.no_grad():
        for p, value in (*pyro_params, *pyro_buffers):
            p.copy_(value)
    for i, d in enumerate(others):
        d.load_state_dict(saved_others[str(i)])
    for name, opt in optimizers.items():  # (copies: torch's optimizer would keep the given tensors, so that a model
        # loaded from another's state_dict() would update the other's moments in place)
        opt.load_state_dict(torch.utils._pytree.tree_map_only(torch.Tensor, torch.clone, saved_optimizers[name]))
    for key, entry in state["loss_terms"].items():
        terms[int(key)]._dgm_method("load_term_state_dict")(entry["state"])
    model.step = step
    if not hasattr(type(model), "epoch"):  # (a subclass's own epoch, a property or method, is its own)
        model.epoch = epoch
    cur = model.__dict__.get("history")
    if not hasattr(type(model), "history") and (cur is None or isinstance(cur, Mapping)):
        from pyro_dgm.models.trainer import History
        model.history = History({k: list(v) for k, v in history.items()})
    set_rng_state(rng)
    model._dgm_resumed = True  # (fit warns where a data loader cannot resume exactly)
    model.__dict__.pop("_dgm_d_done", None)
    model.__dict__.pop("_dgm_d_done_pending", None)
    model.__dict__.pop("_dgm_failed_rng", None)  # (the loaded states are the ones to go on from)
    if done is not None and _dist.is_distributed():
        warnings.warn("Model.load: the checkpoint was saved after a GAN's discriminator step whose generator step "
                      "failed; under torch.distributed the batch is taken again with both steps, so the "
                      "discriminator takes one step more than the uninterrupted run", UserWarning, stacklevel=4)
    elif done is not None:
        model._dgm_d_done = dict(done)  # GAN.train skips that discriminator step
    if data_rng:  # given to the data loader's generators at the next fit (trainer._data_generators)
        model._dgm_pending_data_rng = list(data_rng)
    else:
        model.__dict__.pop("_dgm_pending_data_rng", None)
    model.__dict__.pop("_dgm_epoch_start", None)
    model.__dict__.pop("_dgm_pending_epoch", None)
    if isinstance(resume, Mapping) and not _dist.is_distributed():
        model._dgm_pending_epoch = dict(resume)  # fit continues the epoch where it stopped (trainer._resume_epoch)
    elif steps:
        warnings.warn(_mid_epoch_text(steps, epoch, "was saved") + "; fit(...) resumes at the start of that epoch "
                      "and trains those steps again, on another order: the run differs from an uninterrupted one. "
                      "For an exact resume, load a checkpoint saved at the end of an epoch (ModelCheckpoint)",
                      UserWarning, stacklevel=4)


def _mid_epoch_text(steps: int, epoch: int, verb: str) -> str:
    return f"the checkpoint {verb} {steps} training step(s) into epoch {epoch + 1}, which fit did not finish"


_REQUIRED = ("distributions", "other_distributions", "optimizers", "loss_terms", "step", "epoch", "rng")


def _counter(state: Mapping[str, Any], key: str) -> int:
    """The checkpoint's ``step`` or ``epoch``: a non-negative integer, else ``ValueError``."""
    value = state[key]
    try:
        n = int(value) if not isinstance(value, (bool, float, str)) else None
    except (TypeError, ValueError, RuntimeError):
        n = None
    if n is None or n < 0:
        raise ValueError(f"Model.load: the checkpoint's {key} is {value!r}, not a non-negative integer; it is "
                         "damaged")
    return n


def _check_epoch_resume(resume: Any, epoch_steps: int) -> None:
    """Check the state ``fit`` continues an interrupted epoch from (:meth:`~pyro_dgm.models.trainer.EpochStart.
    resume_state`): its steps (``epoch_steps``, at most its batches), random states, data loaders' generator
    states, rows and running sums; ``ValueError`` naming the entry if damaged."""
    def damaged(what: str) -> ValueError:
        return ValueError(f"Model.load: the checkpoint's epoch_resume{what} is not what Model.save writes; it is "
                          "damaged")

    if not isinstance(resume, Mapping) or not {"steps", "rng", "data_rng", "rows", "sums"} <= set(resume):
        raise damaged("")
    n = {key: _counter({f"epoch_resume[{key!r}]": resume[key]}, f"epoch_resume[{key!r}]")
         for key in ("steps", "batches") if key == "steps" or resume.get(key) is not None}
    if n["steps"] != epoch_steps or n["steps"] > n.get("batches", n["steps"]):
        raise damaged(f"['steps'] ({n['steps']}, with epoch_steps {epoch_steps} and {n.get('batches', '?')} "
                      "batches)")
    _check_rng(resume["rng"], "epoch_resume['rng']")
    _check_data_rng(resume["data_rng"], "epoch_resume['data_rng']")
    if resume.get("test_rng") is not None:
        _check_rng(resume["test_rng"], "epoch_resume['test_rng']")
    rows, sums = resume["rows"], resume["sums"]
    if isinstance(rows, bool) or not isinstance(rows, (int, float)) or not 0 <= rows < float("inf"):
        raise damaged(f"['rows'] ({rows!r})")
    if not isinstance(sums, Mapping) or not all(isinstance(k, str) and isinstance(v, (int, float))
                                                and not isinstance(v, bool) for k, v in sums.items()):
        raise damaged(f"['sums'] ({sums!r})")


def _check_data_rng(states: Any, what: str = "data_rng") -> None:
    """Check the data loaders' generator states that the next ``fit`` would restore (a list of
    ``torch.Generator.get_state()`` tensors), by setting each on a scratch generator; ``ValueError`` if damaged."""
    try:
        if not isinstance(states, (list, tuple)):
            raise TypeError(f"a {type(states).__name__}, not a list")
        for s in states:
            torch.Generator().set_state(s)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"Model.load: the checkpoint's {what} (the data loaders' generator states) cannot be "
                         f"restored ({type(e).__name__}: {e}); it is damaged") from e


def _check_rng(rng: Any, what: str = "random states") -> None:
    """Check that the random states :func:`set_rng_state` would restore are valid, by restoring them and then the
    current ones; a damaged state raises ``ValueError`` (before the model is changed)."""
    current = rng_state()
    try:
        if not isinstance(rng, Mapping):
            raise TypeError(f"a {type(rng).__name__}, not a dict")
        set_rng_state(rng)
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError, IndexError, AttributeError) as e:
        raise ValueError(f"Model.load: the checkpoint's {what} cannot be restored ({type(e).__name__}: {e}); it is "
                         "damaged") from e
    finally:
        set_rng_state(current)


def save(model: "Model", path: Any) -> None:
    """Write :func:`model_state` to ``path`` atomically (under ``torch.distributed`` every process calls it and only
    rank 0 writes, with every process's random state, which :func:`load` gives back to the process of the same rank;
    a process that does not call it makes rank 0 raise, naming it, after the timeout).

    The checkpoint is written to a temporary file in the same folder, flushed and synced to disk, then renamed over
    ``path`` (``os.replace``), so ``path`` always holds either the previous complete checkpoint or the new one, even
    if the process is killed while saving (a killed save may leave a ``.<name>.*.tmp`` file behind, never a broken
    ``path``; a symbolic link stays a link, and the file it points to is replaced). A file object (``io.BytesIO``...)
    is written directly.
    """
    ranks_rng = None
    if _dist.is_distributed():  # every process's random state, so each resumes its own draws
        ranks_rng = _dist.gather_to_rank0(rng_state(model.__dict__.get("_dgm_failed_rng")),
                                          f"{type(model).__name__}.save")
    if _dist.rank() == 0:
        state = model_state(model)
        if state["epoch_steps"] and "epoch_resume" not in state:
            warnings.warn(_mid_epoch_text(state["epoch_steps"], model.epoch, "is saved") + " (an interrupted fit): "
                          "resuming from it does not continue that epoch where it stopped but trains it again from "
                          "its start; checkpoints saved at the end of an epoch (ModelCheckpoint) resume exactly",
                          UserWarning, stacklevel=3)
        if ranks_rng is not None:
            state["rng_ranks"] = ranks_rng
        if (model.__dict__.get("_dgm_d_done_pending") or model.__dict__.get("_dgm_d_done")) is not None \
                and "d_step_done" not in state:
            warnings.warn(f"{type(model).__name__}.save: the discriminator step of the batch whose generator step "
                          "failed was taken; under torch.distributed the checkpoint does not keep it, so a run "
                          "resumed from it takes that discriminator step again (one step more than the "
                          "uninterrupted run)", UserWarning, stacklevel=3)
        lost = model.__dict__.get("_dgm_rng_lost")
        if lost is not None:
            warnings.warn(f"{type(model).__name__}.save: {lost}", UserWarning, stacklevel=3)
        if isinstance(path, (str, os.PathLike)):
            atomic_torch_save(state, path)
        else:
            torch.save(state, path)
    if _dist.is_distributed():
        import torch.distributed as tdist
        tdist.barrier()


def _names_a_folder(path: str) -> bool:
    """Whether ``path`` names a folder by its form: it ends with a path separator, or its last part is ``.`` or
    ``..`` (``torch.save`` refuses those: "invalid file name")."""
    return path.endswith((os.sep, os.altsep) if os.altsep else os.sep) or os.path.basename(path) in (".", "..")


def atomic_torch_save(obj: Any, path: Any) -> None:
    """``torch.save(obj, path)`` through a temporary file in the same folder: flush, fsync, ``os.replace``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_torch_save({"a": torch.ones(2)}, folder / "c.pt")
    >>> torch.load(folder / "c.pt", weights_only=True)["a"], sorted(p.name for p in folder.iterdir())
    (tensor([1., 1.]), ['c.pt'])
    """
    import secrets

    path = os.fspath(path)
    if not path:
        raise ValueError("Model.save: the path is empty; give a file name")
    given = path
    path = os.path.realpath(path)  # a symbolic link: replace the file it points to (as torch.save writes through it)
    folder, name = os.path.split(path)
    folder_named = isinstance(given, str) and _names_a_folder(given)  # (realpath would make it a file's name)
    if folder_named or os.path.isdir(path) or not os.path.isdir(folder):
        from pyro_dgm.models.errors import CheckpointPathError

        if folder_named:  # torch.save refuses it ("invalid file name"), rather than write a file named as the folder
            raise CheckpointPathError(f"Model.save: the path {given} names a folder (it ends with a path separator, "
                                      "'.' or '..'); give a file name (e.g. model.pt in it)")
        if os.path.isdir(path):
            raise CheckpointPathError(f"Model.save: the path {path} is a folder; give a file name in it")
        raise CheckpointPathError(f"Model.save: the path {path} is in a folder that does not exist ({folder}); "
                                  "make it first (os.makedirs)")
    tmp = None
    try:
        # the temporary file is made inside the guarded block, its name known before it exists: a Ctrl-C at any
        # point, even while it is being created, removes it (tempfile.mkstemp's name is known only once it returns)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
        while True:
            tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
            try:
                fd = os.open(tmp, flags, 0o600)
                break
            except FileExistsError:  # (another file of that name: not ours to remove)
                tmp = None
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(path):  # keep the permissions of the file being replaced (the temporary one is 0600)
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX; not possible on Windows)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _read(path: Any, device: Any) -> Any:
    """``torch.load(path, weights_only=True)``; a file that is not a complete checkpoint raises ``ValueError``
    naming it."""
    import pickle
    import struct
    import zipfile

    try:
        state = torch.load(path, map_location=device, weights_only=True)
        _check_records(path)
        return state
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError,
            UnicodeDecodeError, KeyError, IndexError, AssertionError, TypeError, AttributeError, struct.error,
            MemoryError, OverflowError) as error:  # what torch.load's unpickler raises on other files
        where = os.fspath(path) if isinstance(path, (str, os.PathLike)) else repr(path)
        size = os.path.getsize(where) if isinstance(path, (str, os.PathLike)) and os.path.isfile(where) else None
        sized = f" ({size} bytes)" if size is not None else ""
        text = str(error)
        unsafe = "Weights only load failed" in text and ("GLOBAL" in text or "Unsupported global" in text
                                                         or "Unsupported class" in text)  # (torch < 2.4's words)
        why = ("holds objects other than tensors, numbers, strings and containers, which Model.load does not "
               "unpickle (weights_only=True)" if unsafe else
               "is damaged (a bit changed on the disk or in a copy)" if "CRC-32" in text else
               "is truncated or is not a checkpoint written by Model.save (an interrupted copy or save, or another "
               "kind of file)")
        raise ValueError(f"Model.load: cannot read the checkpoint {where!r}{sized}: the file {why}; "
                         f"{type(error).__name__}: {_detail(text)}") from error


def _check_records(path: Any) -> None:
    """Raise ``zipfile.BadZipFile`` naming the first record of a checkpoint file whose CRC-32 does not match its
    bytes (a flipped bit, which ``torch.load`` reads without checking: weights silently wrong). One more pass over
    the file (p411: 0.04 s for 115 MB); a file object, a file in torch's older format and a record saved without
    its CRC-32 (``torch.serialization.set_crc32_options(False)``) are not checked."""
    import zipfile

    if not isinstance(path, (str, os.PathLike)) or not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.CRC == 0 and info.file_size:  # (torch.serialization.set_crc32_options(False) writes 0: not
                continue  # checked, as torch does not)
            try:
                with archive.open(info) as record:  # (reading to the end checks the CRC-32)
                    while record.read(1 << 24):
                        pass
            except zipfile.BadZipFile:
                raise zipfile.BadZipFile(f"the record {info.filename!r} does not match its CRC-32 (the file was "
                                         "damaged after it was written)") from None


def _detail(text: str) -> str:
    """The informative line of a torch.load error: for a weights_only refusal the reason ("Unsupported operand
    110", "Trying to load unsupported GLOBAL ..."), else its first line."""
    lines = [line.strip().rpartition("WeightsUnpickler error: ")[2] for line in text.splitlines() if line.strip()]
    reason = [line for line in lines if line.startswith(("Trying to load unsupported", "Unsupported"))]
    return (reason or lines or [""])[0]


def _is_ours(version: Any) -> bool:
    """Whether a checkpoint's ``"format"`` is this library's (a user's own may be anything, a tensor too)."""
    return isinstance(version, int) and not isinstance(version, bool) and version == FORMAT


#: Keys only :func:`save` writes (with a ``"format"`` number): a dict of this format holding one is ours (damaged,
#: if it lacks others).
_OURS_KEYS = frozenset({"optimizers", "other_distributions", "loss_terms", "rng"})
#: Keys :func:`model_state` writes that a user's own dict is unlikely to hold (not "optimizers", "step", "rng"...): a
#: dict of another format number holding two of them is ours too.
_DISTINCT_KEYS = frozenset({"other_distributions", "loss_terms", "optimizer_types", "pyro_params", "data_rng"})


def _looks_ours(state: Any) -> bool:
    """Whether ``state`` was written by :func:`save`, whole or damaged: it says its format, a number, next to one
    of the keys only ours hold (this format), or next to two of the keys a user's own dict is unlikely to hold
    (another format: a user's dict with a format number, ``"optimizers"``, ``"step"`` and ``"rng"`` is not ours)."""
    if not isinstance(state, Mapping):
        return False
    version = state.get("format")
    if not isinstance(version, int) or isinstance(version, bool):
        return False
    if version == FORMAT:
        return bool(_OURS_KEYS & set(state))
    return len(_DISTINCT_KEYS & set(state)) >= 2


def _check_entries(state: Mapping[str, Any]) -> None:
    """Name an entry of a checkpoint of ours that is not of the kind :func:`save` writes (a damaged file)."""
    kinds = {"distributions": Mapping, "other_distributions": Mapping, "optimizers": Mapping,
             "loss_terms": Mapping, "optimizer_types": (Mapping, type(None))}
    for key, kind in kinds.items():
        if not isinstance(state.get(key), kind):
            raise ValueError(f"Model.load: the checkpoint's {key!r} is a {type(state.get(key)).__name__}, not "
                             "what Model.save writes; it is damaged")
    for key, entry in state["loss_terms"].items():
        if not (isinstance(entry, Mapping) and isinstance(entry.get("type"), str) and "state" in entry):
            raise ValueError(f"Model.load: the checkpoint's loss_terms[{key!r}] is not a dict with a 'type' and a "
                             "'state'; it is damaged")
        if not (isinstance(key, str) and key.isdigit()):
            raise ValueError(f"Model.load: the checkpoint's loss_terms key {key!r} is not a term number; it is "
                             "damaged")


def _pixyz_written(state: Any) -> bool:
    """Whether a checkpoint is Pixyz's kind: a dict with the distributions' state dict under ``"distributions"``
    (and whatever a user's own save added, a ``"format"`` key of theirs too), not written by :func:`save` (which
    says its format, a number, next to the optimizers)."""
    if not isinstance(state, Mapping) or "distributions" not in state:
        return False
    return not _looks_ours(state)  # (one of ours, damaged or of another format, gets its own error)


def load(model: "Model", path: Any, resume: bool = False) -> None:
    """Read a checkpoint written by :func:`save` into ``model``: its distributions' parameters and buffers, as
    Pixyz's ``Model.load`` reads them; with ``resume``, everything (see :func:`load_model_state`).

    Raises
    ------
    ValueError
        If the file is truncated or not a checkpoint (the message names the file), or see
        :func:`load_model_state`.
    """
    device = next((p.device for p in model.distributions.parameters()), torch.device("cpu"))
    state = _read(path, device)
    if not resume and isinstance(state, Mapping) and "distributions" in state:
        state = {"distributions": state["distributions"]}  # Pixyz's load: the optimizer and RNG states stay (of a
        # file of ours of any format, or a user's dict with keys of ours, as Pixyz's reads any dict)
    elif resume and _pixyz_written(state):
        warnings.warn(f"Model.load({str(path)!r}, resume=True): the file holds the distributions' state only (as "
                      "Pixyz's Model.save writes it), which is loaded; the optimizers, step counters and random "
                      "states go on as they are, so the run does not resume as the one that saved it would go on",
                      UserWarning, stacklevel=3)
    if isinstance(state, Mapping) and "rng" in state:  # RNG states live on the CPU whatever the model's device
        state = dict(state)
        state["rng"] = _to_cpu(state["rng"])
        for key in ("rng_ranks", "data_rng", "epoch_resume"):
            if key in state:
                state[key] = _to_cpu(state[key])
        if isinstance(state.get("d_step_done"), Mapping) and "rng" in state["d_step_done"]:
            state["d_step_done"] = {**state["d_step_done"], "rng": _to_cpu(state["d_step_done"]["rng"])}
    load_model_state(model, state)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.cpu()
    if isinstance(obj, Mapping):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
