r"""Losses over time steps: :class:`IterativeLoss` (:math:`\sum_t \mathcal{L}_{step}`), as in Pixyz 0.3.3."""
from __future__ import annotations

import operator
import warnings
from typing import TYPE_CHECKING, Any, Mapping, NoReturn, Sequence

import torch
from torch import Tensor

from pyro_dgm.losses.base import PREC_MUL, Loss, ordered_union
from pyro_dgm.losses.special import LossArgumentError
from pyro_dgm.utils.checks import ArgumentError, DimensionError, DuplicateSiteError, add_note, user_stacklevel
from pyro_dgm.utils import get_dict_values, replace_dict_keys  # noqa: F401  (helpers Pixyz's module namespace has)
from copy import deepcopy  # noqa: F401,E402  (Pixyz's module imports it too)

if TYPE_CHECKING:  # pragma: no cover
    from pyro_dgm.distributions.base import Distribution

__all__ = ["IterativeLoss", "SeriesTooShortError", "MaskShapeError", "IterativeLossTypeError"]


class SeriesTooShortError(ValueError, IndexError):
    """A series has fewer steps than ``max_iter``: a ValueError, and also the IndexError that Pixyz raises there."""


class MaskShapeError(ValueError, RuntimeError):
    """``mask[t]`` does not fit a step loss's value: a ValueError, and also the RuntimeError of Pixyz's in-place
    ``step_loss *= mask[t]``."""


class IterativeLossTypeError(LossArgumentError, AttributeError):
    """An argument of :class:`IterativeLoss` of the wrong type: ``update_value`` that is not a dict (a list of
    names), a ``mask`` that is not a tensor (a string). A TypeError (and the ValueError of
    :class:`~pyro_dgm.losses.special.LossArgumentError`), and also the AttributeError Pixyz raises there
    (``'list' object has no attribute 'values'``, ``'str' object has no attribute 'float'``)."""


def _update_dict(update_value: Any) -> dict[str, str]:
    """``update_value`` as a dict: a mapping, or (ours) pairs ``[("h", "h_prev")]``; ``None`` is none."""
    if update_value is None:
        return {}
    out = None
    if isinstance(update_value, Mapping):
        out = dict(update_value)
    elif not isinstance(update_value, (str, bytes)):
        try:
            pairs = list(update_value)
        except TypeError:
            pairs = None
        if pairs is not None and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):
            out = dict(pairs)
    if out is not None and all(isinstance(n, str) for pair in out.items() for n in pair):
        return out
    raise IterativeLossTypeError(
        f"IterativeLoss: update_value must be a dict from the name a step samples to its name at the next step "
        f"(e.g. {{'h': 'h_prev'}}), got {update_value!r:.80}")


def _names(arg: str, value: Any) -> list[str]:
    """``value`` (None, one name, or a list, tuple or other collection of names, as Pixyz takes them) as a list of
    names; anything else is a :class:`~pyro_dgm.losses.special.LossArgumentError` naming the argument (Pixyz's are
    Python's or torch's errors: ``'int' object is not iterable``, ``unhashable type: 'list'``)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    names = None
    if not isinstance(value, (bytes, Tensor)):  # (a tensor iterates its elements: Pixyz's `not tensor` raises)
        try:
            names = list(value)
        except TypeError:
            pass
    if names is None or not all(isinstance(n, str) for n in names):
        raise LossArgumentError(f"IterativeLoss: {arg} must be a list of variable names (or one name, a string), got "
                                f"{type(value).__name__} {value!r:.80}")
    return names


def indexes_series(loss: "IterativeLoss") -> bool:
    """Whether ``loss`` reads step ``t`` of its time-first series as ``x[t]``: no ``slice_step`` and no
    ``slice_step_fn`` of its own (a subclass's, or one set on the instance, as a Pixyz program may do)."""
    return (loss.slice_step is None and type(loss).slice_step_fn is IterativeLoss.slice_step_fn
            and "slice_step_fn" not in loss.__dict__)


def _rename_keys(values: Mapping[str, Any], renames: Mapping[str, str]) -> dict[str, Any]:
    """``values`` with each key ``k`` of ``renames`` renamed to ``renames[k]`` (in one pass, keys in Pixyz's order).

    A renamed value replaces a value already under its new name wherever the two stand (Pixyz keeps the later one:
    with ``update_value={"x": "x_prev"}`` and ``x`` before the given ``x_prev``, the first step's ``x`` was lost
    and step 1 read the initial ``x_prev``, a density that depends on the order of the names). Of two values renamed
    to one name, the later among ``values`` wins, as in Pixyz."""
    out = dict((renames.get(k, k), v) for k, v in values.items())
    if len(out) < len(values):  # two keys met under one name: renamed values win, in the values' order
        for k, v in values.items():
            new = renames.get(k)
            if new is not None:
                out[new] = v
    return out


def _mask_error(mask: Any, t: int, steps: int | None, error: Exception) -> NoReturn:
    """Raise the clear form of the error of ``mask[t]`` (the error path only): a mask shorter than the steps taken
    (:class:`SeriesTooShortError`), without a time dim (:class:`~pyro_dgm.utils.checks.DimensionError`), both also
    Pixyz's IndexError, or not a tensor (:class:`IterativeLossTypeError`, also Pixyz's AttributeError)."""
    if isinstance(mask, (str, bytes)) or not isinstance(error, IndexError):
        raise IterativeLossTypeError(f"IterativeLoss: mask must be a tensor (time first: shape [T] or [T, batch]) "
                                     f"of numbers, got {type(mask).__name__} {mask!r:.40}") from error
    try:
        n = len(mask)
    except TypeError:  # a 0-dim tensor or array
        raise DimensionError(f"IterativeLoss: mask has no time dim ({type(mask).__name__} {mask!r:.40}); mask has "
                             "the time dim first (e.g. shape [T] or [T, batch])") from error
    raise SeriesTooShortError(f"IterativeLoss: mask has {n} steps (its first dim), fewer than the "
                              f"{steps if steps is not None else t + 1} steps taken; give one mask value per step "
                              "(time first)") from error


def _network_keywords(loss: Loss, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The keywords of ``kwargs`` that the ``forward`` of some distribution of ``loss`` names as its parameters."""
    from pyro_dgm.distributions.base import Distribution
    from pyro_dgm.distributions.bindings import forward_extras

    kept: dict[str, Any] = {}
    for d in loss._dgm_distributions:
        for m in d.modules():
            if isinstance(m, Distribution):
                kept.update(forward_extras(m, kwargs))
    return kept


class IterativeLoss(Loss):
    r"""The sum of a step loss over time, :math:`\sum_{t=0}^{T-1} \mathcal{L}_{step}(x_t, h_t)`.

    At each step ``t``: the time-step variable (if any) is set to ``t``; each ``series_var`` value is sliced at ``t``
    (``x[t]``: the time dim comes first; a subclass may override :meth:`slice_step_fn`, as in Pixyz) unless
    ``slice_step`` is given; the step loss is evaluated and the samples it
    drew join the values; the step's value (times ``mask[t]`` when ``eval(..., mask=mask)`` is given) is added;
    finally the keys of ``update_value`` are renamed to its values (``{"z_t": "z_t_1"}``: this step's sample is the
    next step's previous state).

    Parameters
    ----------
    step_loss : Loss
        The loss of one step.
    max_iter : int, optional
        The number of steps (default, or 0 as in Pixyz: the length of the first ``series_var``; a negative
        number, as in Pixyz, takes no step: the loss is 0).
    series_var : list of str, optional
        Variables whose values are sequences (time first), sliced at each step.
    update_value : dict, optional
        ``{sampled name: name at the next step}``.
    slice_step : Distribution, optional
        A distribution that draws each step's inputs; the step loss becomes
        :math:`\mathbb{E}_{slice\_step}[\mathcal{L}_{step}]` and series values are not sliced (TD-VAE).
    timestep_var : list of str, optional
        A variable that holds the step index ``t`` (it is not an input).
    input_var : list of str, optional
        Override the computed input variables (ours; after Pixyz's parameters).

    Raises
    ------
    ValueError
        If neither ``series_var`` nor ``max_iter`` is given, or (at evaluation) a series or the mask is shorter than
        the steps taken (:class:`SeriesTooShortError`, also an IndexError as in Pixyz) or ``mask[t]`` does not fit
        the step loss's value (:class:`MaskShapeError`, also a RuntimeError as in Pixyz).
    TypeError
        If (at evaluation, as Pixyz's ``range(max_iter)``) ``max_iter`` is not an int
        (:class:`~pyro_dgm.losses.special.LossArgumentError`, also a ValueError), or ``update_value`` is not a dict
        or (at evaluation) ``mask`` is not a tensor of numbers
        (:class:`IterativeLossTypeError`, also the AttributeError Pixyz raises).

    Warns
    -----
    UserWarning
        If ``max_iter`` is negative (no step: the loss is 0), or (at the first evaluation) a key of ``update_value``
        names no value after the first step (its target is never updated); Pixyz runs both silently.

    Examples
    --------
    >>> import torch
    >>> from pyro_dgm.distributions import Normal
    >>> q = Normal(loc="h_prev", scale=1., var=["h"], cond_var=["h_prev"], name="q")
    >>> p = Normal(loc="h", scale=1., var=["x"], cond_var=["h"])
    >>> step = p.log_prob().expectation(q).mean()
    >>> loss = IterativeLoss(step, max_iter=3, series_var=["x"], update_value={"h": "h_prev"})
    >>> print(loss)
    \sum_{t=0}^{2} mean \left(\mathbb{E}_{q(h|h_{prev})} \left[\log p(x|h) \right] \right)
    >>> loss.input_var
    ['h_prev', 'x']
    >>> loss.eval({"x": torch.zeros(3, 4, 1), "h_prev": torch.zeros(4, 1)}).shape
    torch.Size([])
    """

    def __init__(self, step_loss: Loss, max_iter: int | None = None, series_var: Sequence[str] | None = None,
                 update_value: Mapping[str, str] | None = None, slice_step: "Distribution | None" = None,
                 timestep_var: Sequence[str] | str | None = (), input_var: Sequence[str] | None = None) -> None:
        if not isinstance(step_loss, Loss):
            raise ArgumentError(f"IterativeLoss: step_loss must be a Loss, got {type(step_loss).__name__}")
        series = _names("series_var", series_var)
        updates = _update_dict(update_value)
        timestep = _names("timestep_var", timestep_var)
        if not series and max_iter is None:
            raise ValueError("IterativeLoss: give max_iter or series_var (the number of steps is the length of the "
                             "first series_var)")
        if max_iter is not None:  # as in Pixyz: 0 means "the length of the first series_var", < 0 no step (0)
            try:
                steps = operator.index(max_iter)
            except TypeError:  # refused when evaluated, as Pixyz's range(max_iter) (it prints, e.g. 2.0)
                steps = 0
            if steps < 0:
                warnings.warn(f"IterativeLoss: max_iter={max_iter!r} takes no step, so the loss is 0 (as in Pixyz); "
                              "give max_iter > 0, or 0 or None for the length of the first series_var",
                              UserWarning, stacklevel=2)
        if slice_step is not None:
            from pyro_dgm.distributions.base import Distribution

            if not isinstance(slice_step, Distribution):  # (Pixyz: an AttributeError reading its input_var)
                raise ArgumentError(f"IterativeLoss: slice_step must be a pyro_dgm distribution that gives each step's "
                                    f"values from the series (a Deterministic whose forward takes t), got "
                                    f"{type(slice_step).__name__}; to index the series otherwise, override "
                                    "slice_step_fn(t, x) in a subclass")
            step_loss = step_loss.expectation(slice_step)
        names = ordered_union(step_loss.input_var, series, list(updates.values()))
        if timestep:
            names = [v for v in names if v != timestep[0]]
        super().__init__(_names("input_var", input_var) if input_var is not None else names)
        self.step_loss = step_loss
        self.max_iter = max_iter
        # as given (Pixyz keeps them: a tuple stays a tuple, and a later edit of the update_value dict is seen)
        self.series_var = series_var if isinstance(series_var, (list, tuple)) else (series or ())
        self.update_value = update_value if type(update_value) is dict else updates
        self.slice_step = slice_step
        self.timestep_var = timestep_var if isinstance(timestep_var, (list, tuple)) or timestep_var is None else (
            timestep or ())  # (None as given: Pixyz's attribute)

    @property
    def timpstep_symbol(self) -> Any:
        """Pixyz's attribute (spelled as Pixyz spells it): the time step's symbol in the text, ``timestep_var[0]`` or
        ``t``, unless one was set (``loss.timpstep_symbol = sympy.Symbol("s")`` prints
        :math:`\\sum_{s=0}^{s_{max} - 1}`, as in Pixyz; the values are not changed)."""
        import sympy

        given = self.__dict__.get("_dgm_timestep_symbol")
        if given is not None:
            return given
        return sympy.Symbol(self.timestep_var[0] if self.timestep_var else "t")

    @timpstep_symbol.setter
    def timpstep_symbol(self, symbol: Any) -> None:
        import sympy

        if isinstance(symbol, str) and symbol:  # (what sympy.Sum makes of a name under Pixyz)
            symbol = sympy.Symbol(symbol)
        if not isinstance(symbol, sympy.Symbol):
            raise LossArgumentError(f"IterativeLoss: timpstep_symbol must be a sympy Symbol (the index of the sum in "
                                    f"the text, e.g. sympy.Symbol('s')), got {type(symbol).__name__} {symbol!r:.80}")
        self.__dict__["_dgm_timestep_symbol"] = symbol

    @property
    def latex(self) -> str:
        import sympy

        t = sympy.latex(self.timpstep_symbol)  # typeset as the text typesets it (tau: \tau, t_step: t_{step}: p493)
        top = f"{t}_{{max}} - 1"
        if self.max_iter:
            try:  # (a one-element tensor prints as its number, 2.0, as in the text)
                top = sympy.latex(sympy.sympify(self.max_iter - 1))
            except (TypeError, ValueError, sympy.SympifyError):
                top = f"{self.max_iter!r:.40} - 1"
        body = self.step_loss.latex
        if self.step_loss._dgm_prec < PREC_MUL:
            body = rf"\left({body}\right)"
        return rf"\sum_{{{t}=0}}^{{{top}}} {body}"

    @property
    def _symbol(self) -> Any:
        import sympy

        t = self.timpstep_symbol
        top = self.max_iter if self.max_iter else sympy.Symbol(sympy.latex(t) + "_{max}")
        try:
            last = top - 1
        except TypeError:  # (a max_iter that is no number, which forward names: the text still prints, for the
            last = sympy.Symbol(f"{self.max_iter!r:.40}") - 1  # messages that quote it)
        body = sympy.Symbol("dummy_loss")  # substituted after: sympy.Sum would otherwise reorder inside the body
        return sympy.Sum(body, (t, 0, last)).subs({body: self.step_loss._symbol})

    def slice_step_fn(self, t: int, x: Mapping[str, Any]) -> dict[str, Any]:
        """The values of step ``t`` of the series ``x`` (``{name: series}``): ``x[name][t]``, the time dim first.

        Pixyz's hook: a subclass overrides it to slice otherwise (e.g. time in the second dim).

        Examples
        --------
        >>> import torch
        >>> from pyro_dgm.losses import Parameter
        >>> loss = IterativeLoss(Parameter("x"), series_var=["x"])
        >>> loss.slice_step_fn(1, {"x": torch.tensor([[1.], [2.]])})
        {'x': tensor([2.])}
        """
        return {k: v[t] for k, v in x.items()}

    @staticmethod
    def _dgm_masked(value: Any, mask: Any, t: int, steps: int | None = None) -> Any:
        """``value * mask[t]``; as Pixyz multiplies in place, ``mask[t]`` must not widen the step's value (a mean
        step loss and a per-sample mask would make a per-sample loss of the batch mean)."""
        try:
            m = mask[t]
        except (IndexError, TypeError) as e:
            _mask_error(mask, t, steps, e)
        if not isinstance(mask, Tensor):
            try:
                return value * m  # (ours: a list or a numpy array of numbers)
            except TypeError as e:
                _mask_error(mask, t, steps, e)
        m = m.to(value.dtype) if isinstance(value, Tensor) else m.float()
        shape = tuple(value.shape) if isinstance(value, Tensor) else ()
        if tuple(m.shape) != shape:
            try:
                fits = tuple(torch.broadcast_shapes(m.shape, shape)) == shape
            except RuntimeError:
                fits = False
            if not fits:
                raise MaskShapeError(f"IterativeLoss: mask[{t}] has shape {tuple(m.shape)}, which does not fit the "
                                     f"step loss's value of shape {shape}; mask has the time dim first, then at most "
                                     f"the dims of the step loss's value (e.g. shape [T] or [T, batch] for a "
                                     f"per-sample step loss)")
        return value * m

    def _dgm_check_updates(self, x: Mapping[str, Any]) -> None:
        """Warn (once per loss) for each key of ``update_value`` that is not among the values after the first step:
        its target is then never updated (as in Pixyz, which says nothing)."""
        self.__dict__["_dgm_updates_checked"] = True
        for k, v in self.update_value.items():
            if k not in x:
                warnings.warn(f"IterativeLoss: update_value renames {k!r} to {v!r} after each step, but there is no "
                              f"value named {k!r} after the first step (there are {sorted(x)}), so {v!r} is never "
                              f"updated (as in Pixyz); name a variable the step loss samples", UserWarning,
                              stacklevel=user_stacklevel())

    def forward(self, x_dict: dict[str, Any], **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        x = dict(x_dict)
        both = [v for v in self.timestep_var or () if v in self.series_var]
        if both:  # (Pixyz fails later, scoring the time step's number)
            raise LossArgumentError(f"IterativeLoss: {both[0]!r} is both a timestep_var (given the step's number t) "
                                    "and a series_var (sliced at each step); name the time step another variable")
        series = {v: x[v] for v in self.series_var}
        updated = {v: x[v] for v in self.update_value.values() if v in x}
        if self.max_iter:
            try:
                steps = operator.index(self.max_iter)
            except TypeError:  # (a TypeError under Pixyz too: range(max_iter))
                raise LossArgumentError(f"IterativeLoss: max_iter must be an int, got {self.max_iter!r:.80}") \
                    from None
        elif self.series_var:
            steps = _steps(series, self.series_var[0])
        else:
            raise ValueError(f"IterativeLoss: max_iter={self.max_iter!r} and no series_var: give max_iter > 0 or "
                             "series_var (the number of steps is the length of the first series_var)")
        # x[t] of each series: only when no slice_step is given and slice_step_fn is ours (Pixyz never indexes the
        # series otherwise, e.g. TD-VAE's slice_step picks time steps from a batch-first series)
        indexed = series if indexes_series(self) else {}
        for v, s in indexed.items():
            if _steps(indexed, v) < steps:
                raise SeriesTooShortError(f"IterativeLoss: series_var {v!r} has {len(s)} steps (its first dim), "
                                          f"fewer than max_iter={steps}; give a longer series or a smaller max_iter")
        mask = kwargs.pop("mask", None)
        if kwargs:  # Pixyz's step loss gets no keywords: only those a network's forward names reach it (see porting)
            kwargs = _network_keywords(self.step_loss, kwargs)
        total: Any = 0
        check = bool(self.update_value) and "_dgm_updates_checked" not in self.__dict__  # the first evaluation only
        for t in range(steps):
            if self.timestep_var:
                x[self.timestep_var[0]] = t
            try:
                if self.slice_step is None:
                    x.update(self.slice_step_fn(t, series))
                value, samples = self.step_loss.eval(x, return_dict=True, return_all=False, **kwargs)
            except Exception as error:  # (no cost unless raised) the step it failed at, e.g. a NaN in x_t at that t
                if isinstance(error, DuplicateSiteError) and t > 0:  # (a trace around the whole sequence)
                    raise DuplicateSiteError(
                        f"IterativeLoss {self.loss_text}: time step t={t} of {steps} draws the variables of step 0 "
                        f"again, under the same Pyro site names, and one Pyro trace holds one site per name: a trace "
                        f"(poutine.trace, replay, condition) around the whole sequence cannot record it. Trace the "
                        f"step loss at one time step at a time (its eval on that step's values), or evaluate the "
                        f"sequence without a trace ({str(error).partition('. ')[0]})") from error
                _note_step(self, error, t, steps)
                raise
            x.update(samples)
            if check:
                self._dgm_check_updates(x)
                check = False
            if mask is not None:
                value = self._dgm_masked(value, mask, t, steps)
            total = total + value
            x = _rename_keys(x, self.update_value)
        x.update(series)
        x.update(updated)
        return total, x


def _note_step(loss: IterativeLoss, error: Exception, t: int, steps: int) -> None:
    """Say in ``error`` at which time step the step loss raised (Python 3.11's notes; a nested loss adds its own; an
    exception that cannot take one is raised as it is; raised again, its note is this call's only)."""
    add_note(error, f"(in IterativeLoss, at time step t={t} of {steps})", ("IterativeLoss", id(loss)))


def _steps(series: Mapping[str, Any], v: str) -> int:
    """The number of time steps of the series ``v`` (its first dim), or a ``TypeError`` naming it when it has none
    (Pixyz's is ``len()`` of a 0-d tensor's)."""
    s = series[v]
    try:
        return len(s)
    except TypeError:  # a 0-d tensor, a number
        shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
        raise TypeError(f"IterativeLoss: series_var {v!r} has no time dim (got {shape}); its first dim is time, "
                        "e.g. shape (T, batch, features)") from None
