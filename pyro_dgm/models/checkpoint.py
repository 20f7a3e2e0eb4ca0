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

It is written with ``torch.save`` and read with ``torch.load(weights_only=True)``: only tensors, numbers, strings and
containers, so loading a checkpoint runs no pickled code.

Loading checks every tensor's shape before changing anything; a mismatch raises ``ValueError`` naming the tensor and
both shapes.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import Tensor, nn

from pyro_dgm.models import distributed as _dist

if TYPE_CHECKING:  # pragma: no cover
    from pyro_dgm.models.model import Model

__all__ = ["save", "load", "model_state", "load_model_state", "rng_state", "set_rng_state"]

FORMAT = 1


# ---------------------------------------------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    """The random states of torch (CPU, and CUDA when initialized), Python's ``random`` and numpy."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
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
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
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
    for d in model.loss_cls.distributions + model.test_loss_cls.distributions:
        if id(d) not in trained and all(d is not o for o in out):
            out.append(d)
    return out


def _loss_terms(model: "Model") -> list[Any]:
    terms = model.loss_cls.loss_terms()
    seen = {id(t) for t in terms}
    terms += [t for t in model.test_loss_cls.loss_terms() if id(t) not in seen]
    return terms


def _optimizers(model: "Model") -> dict[str, Any]:
    """``model.optimizer`` and every other optimizer or scheduler among the model's attributes, by attribute name."""
    out: dict[str, Any] = {}
    for name, value in vars(model).items():
        if isinstance(value, torch.optim.Optimizer) or isinstance(value, torch.optim.lr_scheduler.LRScheduler):
            out[name] = value
    return out


def model_state(model: "Model") -> dict[str, Any]:
    """Everything :func:`load_model_state` needs to resume ``model`` exactly (see the module docstring)."""
    terms = {}
    for i, term in enumerate(_loss_terms(model)):
        st = term.term_state_dict()
        if st:
            terms[str(i)] = {"type": type(term).__name__, "state": st}
    return {
        "format": FORMAT,
        "model": type(model).__name__,
        "distributions": model.distributions.state_dict(),
        "other_distributions": {str(i): d.state_dict() for i, d in enumerate(_other_distributions(model))},
        "optimizers": {name: opt.state_dict() for name, opt in _optimizers(model).items()},
        "loss_terms": terms,
        "step": model.step,
        "epoch": model.epoch,
        "history": {k: list(v) for k, v in getattr(model, "history", {}).items()},
        "rng": rng_state(),
    }


def _shape_text(t: Any) -> str:
    return str(tuple(t.shape)) if isinstance(t, Tensor) else repr(t)


def _check_module(where: str, module: nn.Module, saved: Mapping[str, Any]) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    if missing or unexpected:
        raise ValueError(f"Model.load: {where} of the checkpoint does not match this model: "
                         + (f"missing tensors {missing}" if missing else "")
                         + ("; " if missing and unexpected else "")
                         + (f"unexpected tensors {unexpected}" if unexpected else "")
                         + "; was the checkpoint saved from a model built the same way?")
    for key, value in own.items():
        other = saved[key]
        if isinstance(value, Tensor) and (not isinstance(other, Tensor) or other.shape != value.shape):
            raise ValueError(f"Model.load: tensor {where}.{key} has shape {_shape_text(other)} in the checkpoint but "
                             f"{_shape_text(value)} in this model; build the model with the same sizes as the one "
                             "that was saved")


def load_model_state(model: "Model", state: Mapping[str, Any]) -> None:
    """Restore :func:`model_state` into ``model`` (all shapes are checked before anything changes).

    Raises
    ------
    ValueError
        If a tensor's shape differs (the message names the tensor and both shapes), if tensors are missing or
        unexpected, or if the checkpoint holds other optimizers or loss-term states than this model.
    """
    if not isinstance(state, Mapping) or state.get("format") != FORMAT:
        raise ValueError("Model.load: not a pyro_dgm Model checkpoint (written by Model.save)")
    _check_module("distributions", model.distributions, state["distributions"])
    others = _other_distributions(model)
    saved_others = state["other_distributions"]
    if len(others) != len(saved_others):
        raise ValueError(f"Model.load: the checkpoint holds {len(saved_others)} distribution(s) outside "
                         f"model.distributions, this model's losses hold {len(others)}")
    for i, d in enumerate(others):
        _check_module(f"other_distributions.{i} ({getattr(d, 'prob_text', type(d).__name__)})", d,
                      saved_others[str(i)])
    optimizers = _optimizers(model)
    if sorted(optimizers) != sorted(state["optimizers"]):
        raise ValueError(f"Model.load: the checkpoint holds the optimizers {sorted(state['optimizers'])}, this model "
                         f"has {sorted(optimizers)}")
    terms = _loss_terms(model)
    for key, entry in state["loss_terms"].items():
        i = int(key)
        if i >= len(terms) or type(terms[i]).__name__ != entry["type"]:
            raise ValueError(f"Model.load: the checkpoint holds the state of a {entry['type']} loss term (term {i}) "
                             "that this model's loss does not have at that place")
        check = getattr(terms[i], "check_term_state_dict", None)
        if callable(check):
            check(entry["state"])
    # every check passed: change the model
    model.distributions.load_state_dict(state["distributions"])
    for i, d in enumerate(others):
        d.load_state_dict(saved_others[str(i)])
    for name, opt in optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
    for key, entry in state["loss_terms"].items():
        terms[int(key)].load_term_state_dict(entry["state"])
    model.step = int(state["step"])
    model.epoch = int(state["epoch"])
    history = state.get("history") or {}
    if history or hasattr(model, "history"):
        from pyro_dgm.models.trainer import History
        model.history = History({k: list(v) for k, v in history.items()})
    set_rng_state(state["rng"])


def save(model: "Model", path: Any) -> None:
    """Write :func:`model_state` to ``path`` with ``torch.save`` (only rank 0 writes under ``torch.distributed``)."""
    if _dist.rank() == 0:
        torch.save(model_state(model), path)
    if _dist.is_distributed():
        import torch.distributed as tdist
        tdist.barrier()


def load(model: "Model", path: Any) -> None:
    """Read a checkpoint written by :func:`save` into ``model`` (see :func:`load_model_state`)."""
    device = next((p.device for p in model.distributions.parameters()), torch.device("cpu"))
    state = torch.load(path, map_location=device, weights_only=True)
    if isinstance(state, Mapping) and "rng" in state:  # RNG states live on the CPU whatever the model's device
        state = dict(state)
        state["rng"] = _to_cpu(state["rng"])
    load_model_state(model, state)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.cpu()
    if isinstance(obj, Mapping):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
