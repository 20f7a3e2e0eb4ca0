r"""Adversarial divergences: the base class :class:`AdversarialLoss` (the divergences themselves,
:class:`~pyro_dgm.losses.adversarial_divergences.AdversarialJensenShannon`, ``AdversarialKullbackLeibler`` and
``AdversarialWassersteinDistance``, are in :mod:`pyro_dgm.losses.adversarial_divergences`).

Each term compares two distributions that need only be able to sample (implicit distributions: a generator, the data,
a shuffled encoder) through a *discriminator* (a critic) that it owns, together with the discriminator's optimizer:

* :meth:`~AdversarialLoss.eval` (``forward``) is the generator side: the estimated divergence, differentiable with
  respect to the compared distributions' samples, so it composes with other terms by arithmetic (FactorVAE:
  ``reconst + kl + gamma * AdversarialKullbackLeibler(q, q_shuffle, discriminator=d)``). The discriminator takes
  no gradient from it.
* :meth:`~AdversarialLoss.loss_train` (``train``) is the discriminator's own step on the same data: it draws the
  samples without gradient and updates only the discriminator; :meth:`~AdversarialLoss.loss_test` (``test``)
  evaluates the discriminator loss without updating.

Ownership rule: the discriminator is *not* among the term's :attr:`~pyro_dgm.losses.base.Loss.distributions`, so a
:class:`~pyro_dgm.models.Model` (or ``pyro.infer.SVI``) built on a loss containing the term never puts it under the
generator's optimizer; it is listed by :attr:`AdversarialLoss.discriminators` instead, and its weights and optimizer are
saved by the term's :meth:`~AdversarialLoss.term_state_dict` (``state_dict()`` is ``nn.Module``'s, as in Pixyz).

Under ``torch.distributed`` the discriminator's step runs inside ``torch.nn.parallel.DistributedDataParallel`` around
the discriminator (:func:`pyro_dgm.models.distributed.wrap`, built at the first step: rank 0's discriminator is
broadcast then, and its gradients are averaged during ``backward``), as :class:`~pyro_dgm.models.Model` does for the
generator.

Semantics are Pixyz 0.3.3's (``pixyz/losses/adversarial_loss.py``): the values are batch means (scalars); the
discriminator outputs the probability that a sample comes from ``p`` (the first distribution), is trained with
:math:`-\mathbb{E}_p[\log d] - \mathbb{E}_q[\log(1-d)]`, and logarithms are clamped at :math:`-100` as in
``torch.nn.BCELoss``.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, Iterator, Mapping, NoReturn

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyro_dgm.distributions.closed_forms import bernoulli_cross_entropy, in_unit_interval
from pyro_dgm.distributions.effects import has_call_hooks, sites_hidden
from pyro_dgm.losses.base import Loss, ordered_union
from pyro_dgm.losses.compiled import frozen
from pyro_dgm.distributions.base import Distribution
from pyro_dgm.losses.pdf import check_distribution
from pyro_dgm.losses.special import LossArgumentError
from pyro_dgm.losses.steps import (HALF_DTYPES, SIGNALS, WatchedBuffers, finite_sum, needs_closure,
                                   optimizer_arguments)
from pyro_dgm.losses.steps import restore_buffers
from pyro_dgm.utils.checks import (ArgumentError, DTypeError, NotSupportedError, OutOfRangeError, ShapeError, add_note,
                                   check_present, describe)
from pyro_dgm.utils.compat import is_compiling

__all__ = ["AdversarialLoss", "log_clamped", "log1m_clamped"]



def log_clamped(y: Tensor) -> Tensor:
    """:math:`\\log y`, clamped at -100 as ``torch.nn.BCELoss`` clamps its logarithms (the discriminators' losses):
    ``-BCE(y, 1)``, with its finite gradient where a saturated sigmoid gives exactly 0 or 1. ``y`` lies in [0, 1]
    (the discriminator's output is checked first)."""
    return _minus_bce(y, 1.0)


def log1m_clamped(y: Tensor) -> Tensor:
    """:math:`\\log(1 - y)`, clamped at -100 as ``torch.nn.BCELoss`` clamps its logarithms: ``-BCE(y, 0)``, with its
    finite gradient at 0 and 1."""
    return _minus_bce(y, 0.0)


def _minus_bce(y: Tensor, label: float) -> Tensor:
    """``-BCE(y, label)`` element-wise, as Pixyz's ``nn.BCELoss`` computes it: in float32 under autocast (torch
    runs that loss in float32 there), with the fused kernel in float32/float64, else (other low precision; CUDA's
    autocast, which refuses the fused kernel) :func:`~pyro_dgm.distributions.closed_forms.bernoulli_cross_entropy`."""
    device = y.device.type
    autocast = _autocast_enabled(device)
    if autocast and y.dtype in HALF_DTYPES:
        y = y.float()
    if y.dtype not in HALF_DTYPES and not (autocast and device != "cpu"):
        return -F.binary_cross_entropy(y, torch.full_like(y, label), reduction="none")
    return bernoulli_cross_entropy(y, torch.full_like(y, label))


_BCE_FORWARD = nn.BCELoss.forward  # (the one the built-in cross-entropies compute: a replaced one is called)


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()



class AdversarialLoss(Loss):
    r"""Base class of the adversarial terms: the checks, the discriminator, its optimizer and its training step.

    Parameters
    ----------
    p, q : Distribution
        The compared distributions, over the same ``var``; they need only sample. At least one of them takes an
        input (e.g. the data distribution, or an encoder :math:`q(z|x)`): the batch size is that input's first dim.
    discriminator : Distribution
        The discriminator (critic) :math:`d(t|x)`: one variable ``t``, conditioned on (some of) the compared
        variables, and optionally on inputs of the term. A ``Deterministic`` subclass returns its value; any other
        family (e.g. a ``Bernoulli`` over ``t``) is read through its mean (``sample_mean=True``).
    optimizer : torch.optim.Optimizer class or factory, default ``torch.optim.Adam``
        Called as ``optimizer(discriminator.parameters(), **optimizer_params)``.
    optimizer_params : dict, optional
        E.g. ``{"lr": 1e-4}``.

    Raises
    ------
    TypeError
        If an argument is not a pyro_dgm distribution, or the optimizer is not a torch optimizer class or factory.
    ValueError
        If ``p`` and ``q`` differ in ``var``, if the discriminator does not fit them (its ``cond_var`` must name a
        compared variable and nothing but compared variables or inputs of the term; it generates one variable that is
        not compared), if it is one of the compared distributions, if it has no parameters, or if neither ``p``
        nor ``q`` takes an input.

    Notes
    -----
    A discriminator may share parameters with the compared distributions (as Pixyz allows): the shared ones take
    the generator's gradient too, the others are excluded from it.
    """

    #: Whether the discriminator's output is a probability (checked to lie in [0, 1]).
    _dgm_probability_output = True

    #: Before each discriminator step (:meth:`loss_train`), check that every gradient of the discriminator is finite
    #: (one pass over them, as ``Model.check_gradients``; Pixyz does not check, so a NaN gradient turns the
    #: discriminator's weights into NaN); set it to False to skip the check (a NaN or infinite loss still raises).
    check_gradients: bool = True

    def __init__(self, p: "Distribution", q: "Distribution", discriminator: "Distribution",
                 optimizer: Any = torch.optim.Adam, optimizer_params: Mapping[str, Any] | None = None) -> None:
        owner = type(self).__name__
        check_distribution(p, owner, "p")
        check_distribution(q, owner, "q")
        if set(p.var) != set(q.var):
            raise ValueError(f"{owner}: {p.prob_text} and {q.prob_text} must be over the same variables, but "
                             f"{p.prob_text} has var {p.var} and {q.prob_text} has var {q.var}")
        input_var = ordered_union(p.input_var, q.input_var)
        if not input_var:
            raise NotSupportedError(f"{owner}: neither {p.prob_text} nor {q.prob_text} takes an input, so the batch "
                                    "size is unknown; compare with the data distribution, e.g. "
                                    f"EmpiricalDistribution(var={list(p.var)}), or with a conditional distribution")
        _check_discriminator(owner, discriminator, p, q, input_var)
        super().__init__(input_var)
        self.p, self.q = p, q
        self.input_dist = p if p.input_var else q  # Pixyz's: the distribution whose input gives the batch size
        self.d = discriminator  # a sub-module named as in Pixyz (``loss.d``, ``loss.to(device)`` moves it)
        self._dgm_take_discriminator(discriminator)
        self.d_optimizer = _build_optimizer(owner, optimizer, discriminator,
                                            optimizer_arguments(owner, "optimizer_params", optimizer_params,
                                                                LossArgumentError))
        self.loss_optimizer = optimizer  # Pixyz's attributes: the optimizer's class and arguments as given
        self.loss_optimizer_params = optimizer_params if optimizer_params is not None else {}
        self.bce_loss = nn.BCELoss()  # Pixyz's adversarial divergences have it: for subclasses written against it
        self.d_steps = 0
        self._dgm_synced = False  # whether the data-parallel wrapper was decided (at the first step)
        self._dgm_replicated: Any = None  # DistributedDataParallel around the discriminator, under a process group

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "d":
            self._dgm_check_new_d(value)
        super().__setattr__(name, value)

    def add_module(self, name: str, module: nn.Module | None) -> None:
        if name == "d":
            self._dgm_check_new_d(module)
        super().add_module(name, module)

    register_module = add_module

    def _dgm_check_new_d(self, value: Any) -> None:
        """Check a discriminator before it takes ``d``'s place (``loss.d = d2``, ``add_module("d", d2)``): a refused
        one leaves the term as it was. ``None`` is taken, as Pixyz takes it (an evaluation then says so); one without
        parameters is let in, as Pixyz's term takes it, whose optimizer, built at construction, needs some."""
        d_ = self.__dict__
        if "q" in d_.get("_modules", ()) and value is not d_.get("_dgm_d_seen") and value is not None:
            _check_discriminator(type(self).__name__, value, self.p, self.q,
                                 ordered_union(self.p.input_var, self.q.input_var), needs_parameters=False)

    @property
    def _dgm_d(self) -> "Distribution":
        """The discriminator in use: ``self.d`` as it is now, however it was put there (``loss.d = d2``,
        ``add_module("d", d2)``), as Pixyz's term reads ``self.d`` at each evaluation and step (its ``d_optimizer`` is
        left as it is, as there)."""
        d = self._modules.get("d")
        if d is not self.__dict__.get("_dgm_d_seen"):
            if d is None:  # (deleted: __getattr__ below says so)
                raise AttributeError("_dgm_d")
            self._dgm_take_discriminator(d)
        return d

    def __getattr__(self, name: str) -> Any:
        if name in ("_dgm_d", "discriminator", "discriminators", "d") and "q" in self.__dict__.get("_modules", ()):
            held = self._modules
            if held.get("d") is None and (name != "d" or "d" not in held):  # (loss.d set to None reads None)
                how = "it was set to None" if "d" in held else "it was deleted"
                raise AttributeError(f"{type(self).__name__} {self.latex}: it has no discriminator d ({how}); put "
                                     "one in its place (loss.d = ...) before evaluating or training the term")
        return super().__getattr__(name)

    def _dgm_take_discriminator(self, d: Any) -> None:
        """Note ``d`` as the discriminator in use: its own parameters (not the compared distributions'), which the
        generator-side value does not train."""
        d_ = self.__dict__
        d_["_dgm_d_seen"] = d
        compared = {id(t) for t in [*self.p.parameters(), *self.q.parameters()]}
        d_["_dgm_d_only"] = [t for t in d.parameters() if id(t) not in compared] if isinstance(d, nn.Module) else []
        d_["_dgm_frozen"] = list(d_["_dgm_d_only"])
        d_.pop("_dgm_sharer", None)  # (a Model that trains some of them tells the term again at its next step)
        if "_dgm_synced" in d_:  # (a data-parallel wrapper of the old one: decided again at the next step)
            self._dgm_synced = False
            self._dgm_replicated = None

    # ------------------------------------------------------------------ the discriminator
    @property
    def discriminator(self) -> "Distribution":
        """The discriminator (critic)."""
        return self._dgm_d

    @property
    def discriminators(self) -> list["Distribution"]:
        """The distributions trained by this term's own optimizer (not by a Model's): ``[discriminator]``."""
        return [self._dgm_d]

    def _dgm_children(self) -> Iterator[Any]:
        # the compared distributions only: the discriminator is trained by its own optimizer (see the module notes)
        yield self.p
        yield self.q

    @property
    def _symbol(self) -> Any:
        import sympy

        return sympy.Symbol(f"mean({self.latex})")  # Pixyz prints the batch mean this term is

    # ------------------------------------------------------------------ evaluation
    def _dgm_batch_n(self, values: Mapping[str, Any]) -> int:
        for v in self._input_var:
            x = values.get(v)
            if isinstance(x, Tensor) and x.dim() >= 1:
                return int(x.shape[0])
        raise ValueError(f"{type(self).__name__} {self.latex}: cannot tell the batch size: none of the inputs "
                         f"{self._input_var} is a tensor with a batch dim")

    def _get_batch_n(self, x_dict: Mapping[str, Any]) -> int:
        """The batch size: the first dim of the first input of :attr:`input_dist` (Pixyz's helper, for subclasses
        written for Pixyz)."""
        return int(x_dict[self.input_dist.input_var[0]].shape[0])

    def _dgm_samples(self, dist: "Distribution", values: Mapping[str, Any], batch_n: int, reparam: bool,
                     kwargs: Mapping[str, Any]) -> dict[str, Tensor]:
        """The discriminator's inputs for a sample of ``dist``: its draw of the compared variables, plus the
        term's inputs the discriminator is also conditioned on. The options of the evaluation reach the draw as in
        Pixyz (``GAN.train(x, reparam=True)``): a ``reparam`` given there is the draw's."""
        given = {k: values[k] for k in dist.input_var}
        drawn = dist.sample(given, batch_n=batch_n, **{"reparam": reparam, **kwargs, "return_all": False})
        out = {}
        # a batch of another size: Pixyz's cross-entropies against (batch_n, 1) labels refuse it; a critic's means
        # (Wasserstein) or a user's own d_loss/g_loss take it, as there
        same_n = self._dgm_probability_output and self._dgm_default_losses()
        for v in self._dgm_d.input_var:
            x = drawn[v] if v in drawn else values[v]
            if not isinstance(x, Tensor) or x.dim() == 0 or (same_n and x.shape[0] != batch_n):
                got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"{type(self).__name__} {self.latex}: {describe(dist)} gave {v!r} of shape {got}; "
                                 f"expected a batch of {batch_n} (the batch size of the inputs)")
            out[v] = x
        return out

    def _dgm_discriminate(self, inputs: Mapping[str, Tensor], kwargs: Mapping[str, Any]) -> Tensor:
        """The discriminator's output for a batch of inputs, shape ``(batch_n, ...)`` (the evaluation's options reach
        it as in Pixyz: ``sample_mean`` too)."""
        d = self._dgm_d
        with sites_hidden():  # (its output is no random choice, and it runs on each side: under Pyro's handlers
            # not a site, nor are its parameters, which its own optimizer trains)
            y = d.sample(dict(inputs), **{"sample_mean": True, **kwargs, "return_all": False})[d.var[0]]
        self._dgm_check_output(y)
        if self._dgm_probability_output and isinstance(y, Tensor) and self._dgm_default_losses():
            n = next((x.shape[0] for x in inputs.values() if isinstance(x, Tensor) and x.dim() > 0), None)
            if n is not None and tuple(y.shape) != (n, 1):  # Pixyz's binary cross-entropy against (n, 1) labels
                # refuses any other shape; a mean over another one would be a wrong loss, silently
                raise ShapeError(f"{type(self).__name__} {self.latex}: the discriminator {describe(d)} output "
                                 f"{d.var[0]!r} of shape {tuple(y.shape)} for a batch of {n}; it must be one "
                                 f"probability per example, of shape ({n}, 1)")
        return y

    def _dgm_default_losses(self) -> bool:
        """Whether the term's ``d_loss`` and ``g_loss`` are pyro_dgm's, whose cross-entropies (Pixyz's) take one
        probability per example: a subclass of the user's with its own may take other shapes (Pixyz runs it)."""
        cls = type(self)
        return all(getattr(getattr(cls, name, None), "__module__", "").startswith("pyro_dgm.")
                   for name in ("d_loss", "g_loss"))

    def _dgm_check_output(self, y: Tensor) -> None:
        if not self._dgm_probability_output:
            if not torch.is_floating_point(y):  # (torch's mean() would say "could not infer output dtype")
                raise DTypeError(f"{type(self).__name__} {self.latex}: the critic {describe(self._dgm_d)} output "
                                 f"values of dtype {y.dtype}; it must output real numbers (a floating-point tensor, "
                                 "e.g. from a last linear layer)")
            return
        if is_compiling() and torch.is_floating_point(y):  # checked in the graph, no .item() break
            torch._assert_async(((y >= 0) & (y <= 1)).all(), f"{type(self).__name__}: the discriminator must "
                                "output probabilities in [0, 1]; end its network with a sigmoid")
            return
        if not torch.is_floating_point(y) or not in_unit_interval(y):
            y = y.detach().float()
            if bool(torch.isnan(y).any()):  # not a missing sigmoid: a NaN in the data, the samples or the weights
                raise OutOfRangeError(
                    f"{type(self).__name__} {self.latex}: the discriminator {describe(self._dgm_d)} output NaN for "
                    f"{int(torch.isnan(y).sum())} of {y.numel()} values: its inputs (values of {self.p.prob_text} "
                    f"and {self.q.prob_text}, e.g. the data) or its weights hold NaN or infinite values")
            raise OutOfRangeError(
                f"{type(self).__name__} {self.latex}: the discriminator {describe(self._dgm_d)} must output "
                f"probabilities in [0, 1] (the probability that a sample comes from {self.p.prob_text}), got values "
                f"in [{float(y.min())}, {float(y.max())}]; end its network with a sigmoid")

    def frozen_parameters(self) -> list[Tensor]:
        """The discriminator's own parameters: the generator-side value does not train them (:meth:`loss_train`
        does), except those a ``Model`` of this loss trains too (see ``_dgm_trained_with``)."""
        self._dgm_d  # (the discriminator in use now, noted)
        return list(self._dgm_frozen)

    def _dgm_trained_with(self, params: Iterable[Tensor], sharer: Any = None) -> None:
        """Tell the term which parameters the model that minimizes it trains: the discriminator's parameters among
        them get the generator-side value's gradient, as under Pixyz (a ``Model`` whose ``distributions`` hold the
        discriminator steps it on that value, too); the others stay out of its autograd graph (only
        :meth:`loss_train`, which clears their gradients first, trains them: the same numbers either way)."""
        if self._modules.get("d") is None:  # (deleted: the model tells the term again once one is put back)
            self.__dict__.pop("_dgm_sharer", None)
            return
        trained = {id(t) for t in params}
        self._dgm_d  # (the discriminator in use now, noted)
        self.__dict__["_dgm_frozen"] = [t for t in self._dgm_d_only if id(t) not in trained]
        self.__dict__["_dgm_sharer"] = id(sharer)  # (an id: the term stays picklable)

    #: Whether :meth:`forward` returns the values it was given with the value, as Pixyz's Jensen-Shannon and
    #: Wasserstein terms do (so ``eval(..., return_dict=True, return_all=False)`` holds them); its KL term's, none.
    _dgm_returns_values: bool = True

    def forward(self, x_dict: dict[str, Any], discriminator: bool = False,
                **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        """Pixyz's ``(value, values)``: see :meth:`_dgm_value`."""
        value = self._dgm_value(x_dict, discriminator=discriminator, **kwargs)
        return value, (dict(x_dict) if self._dgm_returns_values else {})

    def _dgm_value(self, values: dict[str, Any], discriminator: bool = False, **kwargs: Any) -> Tensor:
        """The generator-side value; with ``discriminator=True`` (Pixyz), the discriminator's loss on detached
        samples (what :meth:`loss_train` minimizes)."""
        n = self._dgm_batch_n(values)
        if discriminator:
            with torch.no_grad():
                xp = self._dgm_samples(self.p, values, n, False, kwargs)
                xq = self._dgm_samples(self.q, values, n, False, kwargs)
            return self._dgm_d_loss(xp, xq, kwargs)
        self._dgm_d  # (the discriminator in use now, noted)
        with frozen(self._dgm_frozen):
            return self._dgm_g_loss(values, n, kwargs)

    def _dgm_g_loss(self, values: Mapping[str, Any], batch_n: int, kwargs: Mapping[str, Any]) -> Tensor:
        raise NotImplementedError  # pragma: no cover

    def _dgm_d_loss(self, xp: Mapping[str, Tensor], xq: Mapping[str, Tensor], kwargs: Mapping[str, Any]) -> Tensor:
        y_p, y_q = self._dgm_discriminate(xp, kwargs), self._dgm_discriminate(xq, kwargs)
        return self.d_loss(y_p, y_q, y_p.shape[0])

    def d_loss(self, y_p: Tensor, y_q: Tensor, batch_n: int | None = None) -> Tensor:
        r"""The discriminator's loss given its outputs on samples of ``p`` and ``q``:
        :math:`-\text{mean}\log y_p - \text{mean}\log(1 - y_q)` (binary cross-entropy, labels 1 for ``p``)."""
        return self._dgm_bce(y_p, 1.0) + self._dgm_bce(y_q, 0.0)  # a sum of two BCEs, as Pixyz (same bits, AddBackward)

    def _dgm_bce(self, y: Tensor, label: float) -> Tensor:
        """``self.bce_loss(y, labels)``, Pixyz's binary cross-entropy of the discriminator's outputs against labels
        of 1 or 0: the default ``nn.BCELoss()`` by :func:`log_clamped`/:func:`log1m_clamped` (its numbers, also under
        autocast and in half precision); one replaced or changed by the user (another reduction, weights, a hook, a
        subclass) is called, as Pixyz calls it."""
        b = self.bce_loss
        if (type(b) is nn.BCELoss and b.reduction == "mean" and b.weight is None and not has_call_hooks(b)
                and "forward" not in b.__dict__ and nn.BCELoss.forward is _BCE_FORWARD):  # (hooks, global ones
            # too, and a forward set on it or its class: they see or change the call)
            return -(log_clamped(y) if label == 1.0 else log1m_clamped(y)).mean()
        return b(y, torch.full_like(y, label))

    def g_loss(self, y_p: Tensor, y_q: Tensor, batch_n: int | None = None) -> Tensor:
        """The generator's loss given the discriminator's outputs on samples of ``p`` and ``q``; each divergence
        defines it (Pixyz's hook: a subclass of ``AdversarialLoss`` overrides it)."""
        raise NotImplementedError(f"{type(self).__name__} does not define g_loss(y_p, y_q, batch_n)")

    def _dgm_data_detached(self, y_p: Tensor, y_q: Tensor) -> tuple[Tensor, Tensor]:
        """The outputs on samples of a data distribution (``EmpiricalDistribution``) detached, as Pixyz's
        ``g_loss`` detaches them: the generator's loss sends no gradient through the data's side."""
        if self.p.distribution_name == "Data distribution":
            y_p = y_p.detach()
        if self.q.distribution_name == "Data distribution":
            y_q = y_q.detach()
        return y_p, y_q

    # ------------------------------------------------------------------ the discriminator's step
    def loss_train(self, train_x_dict: Mapping[str, Any] | None = None, **kwargs: Any) -> Tensor:
        """One optimization step of the discriminator on ``x_dict`` (the generator's samples are drawn without
        gradient; only the discriminator changes).

        Parameters
        ----------
        train_x_dict : dict
            Values of :attr:`input_var` (e.g. ``{"x": data}``).
        **kwargs
            Taken and not used, as in Pixyz: the discriminator's step evaluates the term with no options
            (``GAN.train(x, sample_mean=True)`` passes its options to the generator's step only).

        Returns
        -------
        Tensor
            The discriminator's loss before the step (detached).

        Raises
        ------
        NonFiniteLossError
            If the discriminator's loss is NaN or infinite (an infinite float16/bfloat16 loss whose gradients are
            all finite only overflowed its dtype: the step is taken, with a warning), before its optimizer steps.
        NonFiniteGradientError
            If the loss is finite but a gradient of the discriminator is not (unless :attr:`check_gradients` is
            False), before its optimizer steps. Either error names the term, the discriminator and the step
            (``d_steps + 1``). A step that raises (also Ctrl-C) leaves the discriminator's weights, its optimizer,
            the networks' buffers as they were (the draws it made stay drawn).
        """
        d = self._dgm_d
        if not self._dgm_synced:
            self._dgm_sync()
        d.train()
        opt = self.d_optimizer
        if type(opt) is not self.__dict__.get("_dgm_d_stepper"):  # (checked once per optimizer class)
            if needs_closure(opt):
                raise TypeError(f"{self._dgm_step_name()}: the discriminator's optimizer {type(opt).__name__} needs "
                                "a closure (step(closure) evaluates the loss again, several times per step), which "
                                "loss_train does not pass: it calls step() once per batch, as Pixyz does (whose step "
                                "raises TypeError there too); use an optimizer without one (torch.optim.Adam, "
                                "SGD...). No weight was changed")
            self.__dict__["_dgm_d_stepper"] = type(opt)
        if isinstance(opt, torch.optim.Optimizer):
            opt.zero_grad(set_to_none=True)
        else:  # an object that only steps (Pixyz takes any): its own zero_grad
            opt.zero_grad()
        watched = self.__dict__.get("_dgm_net_buffers")
        roots = (d, self.p, self.q)  # batch-norm statistics of the discriminator and of the samplers, which a
        # failure keeps (listed again when a layer is added to one, or one is replaced)
        if type(watched) is not WatchedBuffers or any(a is not b for a, b in zip(watched.roots, roots)):
            watched = self.__dict__["_dgm_net_buffers"] = WatchedBuffers(*roots)
        buffers = watched.take()
        try:
            replicated = self._dgm_replicated
            if replicated is None:
                loss = self.eval(train_x_dict, discriminator=True)
            else:  # DistributedDataParallel sees the forward pass and averages the gradients in backward
                try:
                    loss = replicated.run(self.eval, train_x_dict, discriminator=True)
                except (Exception, SystemExit) as e:  # the others learn it at _dgm_check_d_loss's synchronization
                    from pyro_dgm.models import distributed as _dist

                    _dist.fail_together(e, self._dgm_step_name())
                    raise
            overflowed = self._dgm_check_d_loss(loss)
            if not loss.requires_grad and not torch.is_grad_enabled():
                raise RuntimeError(f"{self._dgm_step_name()}: loss_train() under torch.no_grad() (or "
                                   "inference_mode): the discriminator's loss has no gradient to train with; call "
                                   "it (or GAN.train / Model.train) outside it (loss_test() evaluates without "
                                   "training)")
            loss.backward()
            if overflowed or self.check_gradients:
                self._dgm_check_d_gradients(loss, overflowed)
            SIGNALS.hold(self)  # the weights all new or all old: a Ctrl-C waits for the step's end (the finally below)
            try:
                self.d_optimizer.step()
            except BaseException as e:  # (its own step, a hook of it: its updates are not undone, as Model.train's)
                add_note(e, f"{self._dgm_where()}discriminator step {self.d_steps + 1}: the optimizer "
                         f"{type(self.d_optimizer).__name__} raised during its step, which may have updated some of "
                         "the discriminator's weights and their optimizer state before it raised; they are left as "
                         "it left them (the buffers are put back, and the step is not counted)", ("d_step", id(self)))
                raise
        except BaseException as e:  # the networks as before the step (Model.train does the same for its step); the
            restore_buffers(buffers, e)  # draws made stay drawn (GAN.train records the random states for its checkpoint)
            SIGNALS.release(self)
            raise
        try:
            self._dgm_after_step()
            self.d_steps += 1
        finally:  # a Ctrl-C that came while the optimizer stepped: raised now (or by GAN.train, once it recorded
            SIGNALS.release(self)  # the step as done)
        return loss.detach()

    def _dgm_where(self) -> str:
        return f"{type(self).__name__} {self.latex}: "

    def _dgm_check_d_loss(self, loss: Tensor) -> bool:
        """Raise :class:`~pyro_dgm.models.NonFiniteLossError` if the discriminator's loss is NaN or infinite (every
        process together under torch.distributed), before backward. Returns True when it is infinite only because
        its float16/bfloat16 dtype overflowed (no NaN): the gradients decide then (:meth:`_dgm_check_d_gradients`),
        as in ``Model.train``."""
        value = loss.detach()
        if value.numel() == 1 and self._dgm_replicated is None:
            v = value.item()
            if math.isfinite(v):
                return False
            if loss.dtype in HALF_DTYPES and not math.isnan(v):
                return True
            bad_here = True
        else:
            from pyro_dgm.models import distributed as _dist  # (the models layer, as _dgm_sync imports it)

            finite = bool(torch.isfinite(value).all())
            overflow = not finite and loss.dtype in HALF_DTYPES and not bool(torch.isnan(value).any())
            bad_here = not finite and not overflow
            # the discriminator step's synchronization point: every process says how its evaluation went (one that
            # raised says so from fail_together, in loss_train), and they all raise together
            outcomes = _dist.all_gather_int(_dist.STEP_NON_FINITE if bad_here else _dist.STEP_FINE)
            _dist.check_outcomes(outcomes, self._dgm_step_name())
            if _dist.STEP_NON_FINITE not in outcomes:
                return overflow
        self._dgm_raise_d_loss(value, bad_here)

    def _dgm_step_name(self) -> str:
        return f"{type(self).__name__}.loss_train (discriminator step {self.d_steps + 1})"

    def _dgm_raise_d_loss(self, value: Tensor, bad_here: bool) -> NoReturn:
        from pyro_dgm.models.errors import NonFiniteLossError

        shown = float(value.float().sum()) if bad_here else "finite here but non-finite on another process"
        raise NonFiniteLossError(
            f"{self._dgm_where()}the discriminator's training loss is {shown} at ", self.d_steps + 1,
            f" of the discriminator {describe(self._dgm_d)} (its optimizer did not step, its weights are unchanged); "
            f"look for NaN or infinite values in the data, in the samples of {self.p.prob_text} and "
            f"{self.q.prob_text} or in the discriminator's weights")

    def _dgm_check_d_gradients(self, loss: Tensor, overflowed: bool) -> None:
        """Raise :class:`~pyro_dgm.models.NonFiniteGradientError` if a gradient of the discriminator is NaN or
        infinite (one pass over them; the slow per-tensor look only when it fails); after an overflowed
        half-precision loss (``overflowed``), a non-finite gradient raises the loss's error instead, and finite ones
        let the step go on, with a warning (once per term)."""
        groups = getattr(self.d_optimizer, "param_groups", None)  # (an object that only steps: the discriminator's)
        held = [p for g in groups for p in g["params"]] if groups is not None else list(self._dgm_d.parameters())
        params = [p for p in held if p.grad is not None]
        grads = [p.grad for p in params]
        if grads and not finite_sum(grads) and not all(bool(torch.isfinite(g).all()) for g in grads):
            if overflowed:
                self._dgm_raise_d_loss(loss.detach(), True)
            from pyro_dgm.models.errors import NonFiniteGradientError

            names = {id(t): n for n, t in self._dgm_d.named_parameters()}
            bad = []
            for p in params:
                n = int(p.grad.numel() - torch.isfinite(p.grad).sum())
                if n:
                    bad.append(f"{names.get(id(p), f'a parameter of shape {tuple(p.shape)}')} ({n} of "
                               f"{p.grad.numel()} values)")
            raise NonFiniteGradientError(
                f"{self._dgm_where()}non-finite gradients at ", self.d_steps + 1, f" of the discriminator "
                f"{describe(self._dgm_d)} with a finite loss {float(loss.detach().float().sum()):.6g}, in "
                f"{', '.join(bad)}; its optimizer did not step, its weights are unchanged (look for an operation "
                "whose derivative is infinite at these values: sqrt(0), log(0), x / 0...)")
        if overflowed and not self.__dict__.get("_dgm_overflow_warned"):
            self.__dict__["_dgm_overflow_warned"] = True
            warnings.warn(f"{self._dgm_where()}the discriminator's loss overflowed its dtype {loss.dtype} (it is "
                          f"{float(loss.detach().float().sum())}) while every gradient is finite: the step is taken, "
                          "as under Pixyz, and the loss reported is infinite (said once)", RuntimeWarning, stacklevel=3)

    def loss_test(self, test_x_dict: Mapping[str, Any] | None = None, **kwargs: Any) -> Tensor:
        """The discriminator's loss on ``x_dict`` under ``torch.no_grad``, the discriminator in eval mode (its mode is
        restored after); nothing is updated. The options ``kwargs`` are taken and not used, as in Pixyz."""
        d = self._dgm_d
        mode = d.training
        d.eval()
        try:
            with torch.no_grad():
                return self.eval(test_x_dict, discriminator=True)
        finally:
            d.train(mode)

    def train(self, mode: Mapping[str, Any] | bool = True, **kwargs: Any) -> Any:
        """With a bool (or nothing), ``nn.Module.train(mode)``, as Pixyz's ``loss.train()`` and a parent module's
        ``train()``/``eval()`` call it; with a dict of data, the same as :meth:`loss_train` (the name of Pixyz's API
        reference)."""
        if isinstance(mode, bool):
            return nn.Module.train(self, mode)
        return self.loss_train(mode, **kwargs)

    def test(self, test_x_dict: Mapping[str, Any] | None = None, **kwargs: Any) -> Tensor:
        """The same as :meth:`loss_test` (the name of Pixyz's API reference)."""
        return self.loss_test(test_x_dict, **kwargs)

    def _dgm_after_step(self) -> None:
        """What follows each discriminator step (weight clipping for the Wasserstein critic)."""

    def discriminator_accuracy(self, x_dict: Mapping[str, Any] | None = None, **kwargs: Any) -> float:
        """The fraction of samples the discriminator classifies right (output above 1/2 for ``p``, below for ``q``),
        over one batch of each, without gradient."""
        if not self._dgm_probability_output:
            raise NotImplementedError(f"{type(self).__name__}: the critic's output is a score, not a probability; "
                                      "there is no accuracy")
        given = dict(x_dict or {})
        check_present(self, given, self._input_var)
        n = self._dgm_batch_n(given)
        with torch.no_grad():
            y_p = self._dgm_discriminate(self._dgm_samples(self.p, given, n, False, kwargs), kwargs)
            y_q = self._dgm_discriminate(self._dgm_samples(self.q, given, n, False, kwargs), kwargs)
        return 0.5 * (float((y_p > 0.5).float().mean()) + float((y_q < 0.5).float().mean()))

    # ------------------------------------------------------------------ distributed training
    def _dgm_sync(self) -> None:
        """Under ``torch.distributed``, wrap the discriminator in ``DistributedDataParallel`` (once, before the first
        step: rank 0's discriminator is broadcast to every process); without a process group, nothing."""
        from pyro_dgm.models.distributed import setup_from_env, wrap  # the models layer, at the first step only

        setup_from_env()  # under torchrun without a Model (a Pixyz-style loop over loss_train): the process group
        self._dgm_replicated = wrap(self._dgm_d, watch_param_store=False)
        self._dgm_synced = True

    # ------------------------------------------------------------------ checkpoints
    def term_state_dict(self) -> dict[str, Any]:
        """The discriminator's weights and buffers, its optimizer's state and the number of discriminator steps."""
        opt = self.d_optimizer  # (an object that only steps, as Pixyz takes one, has no state to save)
        return {"discriminator": self._dgm_d.state_dict(),
                "optimizer": opt.state_dict() if isinstance(opt, torch.optim.Optimizer) else {},
                "d_steps": self.d_steps}

    def check_term_state_dict(self, state: Mapping[str, Any]) -> None:
        """Check that :meth:`load_term_state_dict` can load ``state``, changing nothing.

        Raises
        ------
        ValueError
            If keys are missing or unknown, or a tensor of the discriminator is missing, unexpected or has another
            shape (named in the message).
        """
        owner = f"{type(self).__name__} {self.latex}"
        expected = {"discriminator", "optimizer", "d_steps"}
        if not isinstance(state, Mapping) or set(state) != expected:
            got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"{owner}: a state must have the keys {sorted(expected)}, got {got}")
        own, saved = self._dgm_d.state_dict(), state["discriminator"]
        missing, unexpected = [k for k in own if k not in saved], [k for k in saved if k not in own]
        if missing or unexpected:
            raise ValueError(f"{owner}: the discriminator's state does not match {describe(self._dgm_d)}: missing "
                             f"tensors {missing}, unexpected tensors {unexpected}")
        for k, v in own.items():
            if isinstance(v, Tensor) and (not isinstance(saved[k], Tensor) or saved[k].shape != v.shape):
                other = tuple(saved[k].shape) if isinstance(saved[k], Tensor) else repr(saved[k])
                raise ValueError(f"{owner}: the discriminator's tensor {k!r} has shape {tuple(v.shape)}, but the "
                                 f"state holds shape {other}")
        if not isinstance(self.d_optimizer, torch.optim.Optimizer) or not state["optimizer"]:
            if isinstance(self.d_optimizer, torch.optim.Optimizer) != bool(state["optimizer"]):
                raise ValueError(f"{owner}: the discriminator optimizer's state was saved from "
                                 f"{'another kind of optimizer' if state['optimizer'] else 'an optimizer without one'}"
                                 f"; this term's is {type(self.d_optimizer).__name__}")
            return
        groups, saved_groups = self.d_optimizer.state_dict()["param_groups"], state["optimizer"]["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in saved_groups]:
            raise ValueError(f"{owner}: the discriminator optimizer's state is for parameter groups of sizes "
                             f"{[len(g['params']) for g in saved_groups]}, this optimizer has "
                             f"{[len(g['params']) for g in groups]}")
        for i, (group, saved_group) in enumerate(zip(groups, saved_groups)):
            missing = sorted(k for k in group if k != "params" and k not in saved_group)
            extra = sorted(k for k in saved_group if k != "params" and k not in group)
            if missing and extra:  # another optimizer class (options a torch version adds are only missing)
                raise ValueError(f"{owner}: parameter group {i} of the discriminator optimizer's state has the "
                                 f"options {extra} and lacks {missing} of this term's "
                                 f"{type(self.d_optimizer).__name__}; was it saved with another d_optimizer?")

    def load_term_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`term_state_dict` returned (checked first with :meth:`check_term_state_dict`)."""
        self.check_term_state_dict(state)
        self._dgm_d.load_state_dict(state["discriminator"])
        if state["optimizer"]:
            self.d_optimizer.load_state_dict(state["optimizer"])
        self.d_steps = int(state["d_steps"])


# ---------------------------------------------------------------------- construction checks
def _check_discriminator(owner: str, d: Any, p: "Distribution", q: "Distribution", input_var: list[str],
                         needs_parameters: bool = True) -> None:
    if d is None:
        raise ArgumentError(f"{owner}: a discriminator is required: a pyro_dgm Distribution d(t|{','.join(p.var)}) "
                            "(e.g. a Deterministic subclass whose forward returns {'t': torch.sigmoid(net(x))})")
    if not isinstance(d, Distribution):
        raise ArgumentError(f"{owner}: discriminator must be a pyro_dgm Distribution d(t|{','.join(p.var)}), got "
                            f"{type(d).__module__}.{type(d).__qualname__}; wrap the network in a Deterministic "
                            "subclass")
    if d is p or d is q:
        raise ValueError(f"{owner}: the discriminator {describe(d)} is one of the compared distributions")
    compared = set(p.var)
    if d.var[0] in compared or d.var[0] in input_var:
        raise ValueError(f"{owner}: the discriminator {describe(d)} generates {d.var[0]!r}, which is a compared "
                         "variable or an input of the term; name its output otherwise, e.g. var=['t']")
    if not any(v in compared for v in d.input_var):
        raise ValueError(f"{owner}: the discriminator {describe(d)} is conditioned on {d.input_var}, but the compared "
                         f"variables are {list(p.var)} ({p.prob_text} and {q.prob_text}); condition it on them, e.g. "
                         f"cond_var={list(p.var)}")
    foreign = [v for v in d.input_var if v not in compared and v not in input_var]
    if foreign:
        raise ValueError(f"{owner}: the discriminator {describe(d)} is conditioned on {foreign[0]!r}, which is neither "
                         f"a compared variable ({list(p.var)}) nor an input of the term ({input_var})")
    if needs_parameters and not any(True for _ in d.parameters()):
        raise ValueError(f"{owner}: the discriminator {describe(d)} has no parameters to train; give it a network")


def _build_optimizer(owner: str, optimizer: Any, d: nn.Module, params: Mapping[str, Any]) -> torch.optim.Optimizer:
    from pyro_dgm.models.model import build_optimizer, is_pyro_optim, param_names, per_parameter

    if is_pyro_optim(optimizer):  # pyro.optim.Adam, or its instance: as a Model takes them (Pixyz takes neither)
        made, clip = build_optimizer(owner, optimizer, list(d.parameters()), params, held_by="the term's d_optimizer",
                                     names=param_names([d]) if per_parameter(optimizer) else None)
        if clip:
            raise ValueError(f"{owner}: the discriminator's pyro.optim optimizer carries clip_args={clip}, which the "
                             "term does not apply; pass it without clip_args (clip_value clips a critic's weights)")
        return made
    if isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"{owner}: optimizer must be an optimizer class such as torch.optim.Adam (the term builds it "
                        "over the discriminator's parameters), got an instance; pass its class and "
                        "optimizer_params={...}")
    if not callable(optimizer):
        raise TypeError(f"{owner}: optimizer must be a torch.optim.Optimizer class (torch.optim.Adam) or a factory "
                        f"f(params, **optimizer_params), got {optimizer!r:.100}")
    try:
        made = optimizer(list(d.parameters()), **params)
    except (TypeError, ValueError) as e:  # (an unknown keyword; torch's "Invalid learning rate: -0.1")
        error = TypeError if isinstance(e, TypeError) else ValueError
        raise error(f"{owner}: cannot build the discriminator's optimizer {optimizer!r:.80} with "
                    f"optimizer_params={dict(params)}: {e}") from e
    if not isinstance(made, torch.optim.Optimizer) and not (callable(getattr(made, "step", None))
                                                            and callable(getattr(made, "zero_grad", None))):
        raise TypeError(f"{owner}: optimizer(params, **optimizer_params) must return a torch.optim.Optimizer, got "
                        f"{type(made).__name__}")
    return made
