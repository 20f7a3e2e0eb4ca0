r"""The generative adversarial network: :class:`GAN` minimizes :math:`D_{JS}^{Adv}[p_{data}(x)||p(x)]`."""
from __future__ import annotations

import hashlib
import threading
from typing import Any, Mapping

import torch
from torch import Tensor

from pyro_dgm.distributions.base import Distribution
from pyro_dgm.distributions.special import EmpiricalDistribution
from pyro_dgm.losses.adversarial_divergences import AdversarialJensenShannon
from pyro_dgm.losses.adversarial import AdversarialLoss
from pyro_dgm.losses.pdf import check_distribution
from pyro_dgm.losses.steps import SIGNALS, StepRandomState, optimizer_arguments
from pyro_dgm.models import distributed as _dist
from pyro_dgm.models.checkpoint import set_rng_state
from pyro_dgm.models.errors import ModelArgumentError
from pyro_dgm.models.model import Model

__all__ = ["GAN"]

D_LOSS = "d_loss"  # the name of the discriminator's loss in ``model.last_terms`` (and in ``fit``'s history)


class _BatchDigest:
    """:func:`batch_digest` of a batch, computed when first read as text (by a checkpoint saved before the GAN's
    generator step is taken): a step that goes through pays nothing for it."""

    __slots__ = ("x", "text")

    def __init__(self, x_dict: Any) -> None:
        self.x, self.text = x_dict, None

    def __str__(self) -> str:
        if self.text is None:
            self.text, self.x = str(batch_digest(self.x)), None
        return self.text


def batch_digest(x_dict: Any) -> str | None:
    """A digest of a batch's values (names, dtypes, shapes and bytes of its tensors): which batch a discriminator
    step was taken on, compared bit for bit. Computed only after a failed generator step and on the first batch
    of a run resumed from a checkpoint saved then; ``None`` for values it cannot read (a sparse tensor...), which
    match no batch.

    Examples
    --------
    >>> x = torch.arange(6.).reshape(3, 2)
    >>> batch_digest({"x": x}) == batch_digest({"x": x.clone()}), batch_digest({"x": x}) == batch_digest({"x": x + 1})
    (True, False)
    """
    h = hashlib.blake2b(digest_size=16)
    try:
        for name, value in sorted(dict(x_dict or {}).items(), key=lambda kv: str(kv[0])):
            h.update(repr(name).encode())
            if isinstance(value, Tensor):
                t = value.detach()
                h.update(f"{t.dtype}{tuple(t.shape)}".encode())
                h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            else:
                h.update(repr(value).encode())
    except Exception:  # (called while another error propagates: never replace it)
        return None
    return h.hexdigest()


class GAN(Model):
    r"""Generative adversarial network ([Goodfellow+ 2014]), Pixyz 0.3.3's ``GAN(p, discriminator, ...)``.

    The loss is :class:`~pyro_dgm.losses.AdversarialJensenShannon` between the data distribution and the generator;
    the generator ``p`` is trained by ``optimizer``, the discriminator by the loss term's own ``d_optimizer``. Each
    :meth:`train` call takes one discriminator step, then one generator step, on the same batch (as Pixyz does).

    Parameters
    ----------
    p : Distribution
        The generator, e.g. ``(generator * prior).marginalize_var("z")``.
    discriminator : Distribution
        :math:`d(t|x)`, whose output is the probability that ``x`` is data (end its network with a sigmoid).
    optimizer, optimizer_params
        The generator's optimizer, as in :class:`~pyro_dgm.models.Model`.
    d_optimizer, d_optimizer_params
        The discriminator's optimizer (a torch optimizer class or factory) and its arguments.
    clip_grad_norm, clip_grad_value
        As in :class:`~pyro_dgm.models.Model` (the generator's step).
    p_data : Distribution, optional (keyword only)
        The data distribution, over the same variables as ``p``; by default ``EmpiricalDistribution(p.var)``, as
        Pixyz builds it.
    retain_graph : bool, default False (keyword only)
        As in :class:`~pyro_dgm.models.Model`.
    inverse_g_loss : bool, default True (keyword only)
        The generator's non-saturating loss (see :class:`~pyro_dgm.losses.AdversarialJensenShannon`).
    compile : bool or dict, default False (keyword only)
        As in :class:`~pyro_dgm.models.Model` (the generator's loss; the discriminator's step stays eager).

    Attributes
    ----------
    discriminator : Distribution
    d_optimizer : torch.optim.Optimizer
        The discriminator's optimizer (held by the loss term; checkpoints save it once, through the term).

    Raises
    ------
    TypeError
        If the discriminator is missing (``None``) or not a pyro_dgm distribution, or ``p``/``p_data`` is not one.
    ValueError
        If ``p_data`` and ``p`` differ in ``var``, the discriminator is not conditioned on those variables, or the
        generator has no parameters.

    Notes
    -----
    The data are the values of ``p.var`` given to :meth:`train`/:meth:`test` (``{"x": batch}``), read by the data
    distribution. :meth:`train` and :meth:`test` return ``(loss, d_loss)`` with ``adversarial_loss=True`` (Pixyz).
    Within :meth:`~pyro_dgm.models.Model.fit` they return the generator's loss, and the discriminator's loss is logged
    as the term ``"d_loss"`` (``model.last_terms`` and the history's ``train/d_loss``, ``test/d_loss``).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from pyro_dgm.distributions import Deterministic, Normal
    >>> from pyro_dgm.models import GAN
    >>> class Generator(Deterministic):
    ...     def __init__(self):
    ...         super().__init__(var=["x"], cond_var=["z"], name="p")
    ...         self.net = nn.Linear(4, 2)
    ...     def forward(self, z):
    ...         return {"x": self.net(z)}
    >>> class Discriminator(Deterministic):
    ...     def __init__(self):
    ...         super().__init__(var=["t"], cond_var=["x"], name="d")
    ...         self.net = nn.Sequential(nn.Linear(2, 8), nn.LeakyReLU(), nn.Linear(8, 1), nn.Sigmoid())
    ...     def forward(self, x):
    ...         return {"t": self.net(x)}
    >>> prior = Normal(loc=0., scale=1., var=["z"], features_shape=[4], name="p_{prior}")
    >>> p = (Generator() * prior).marginalize_var("z")
    >>> model = GAN(p, Discriminator(), optimizer_params={"lr": 2e-4}, d_optimizer_params={"lr": 2e-4})
    >>> print(model)  # doctest: +ELLIPSIS
    Distributions (for training):
      p(x)
    Loss function:
      mean(D_{JS}^{Adv} \left[p_{data}(x)||p(x) \right])
    Optimizer:
      Adam (
      ...
    >>> x = torch.randn(16, 2) + 3.
    >>> loss, d_loss = model.train({"x": x})
    >>> loss, d_loss = model.test({"x": x})
    >>> model.step, model.loss_cls.d_steps
    (1, 1)

    References
    ----------
    [Goodfellow+ 2014] Generative Adversarial Networks
    """

    def __init__(self, p: Distribution, discriminator: Distribution, optimizer: Any = torch.optim.Adam,
                 optimizer_params: Mapping[str, Any] | None = None, d_optimizer: Any = torch.optim.Adam,
                 d_optimizer_params: Mapping[str, Any] | None = None, clip_grad_norm: float | None = None,
                 clip_grad_value: float | None = None, *, p_data: Distribution | None = None,
                 retain_graph: bool = False, inverse_g_loss: bool = True,
                 compile: bool | Mapping[str, Any] = False) -> None:
        if isinstance(optimizer, Distribution) or p is None:
            raise TypeError("GAN(p, discriminator, optimizer=..., ...): the arguments look like GAN(p_data, p, "
                            "discriminator); pass the data distribution by keyword, GAN(p, discriminator, "
                            "p_data=...), or leave it out (EmpiricalDistribution(p.var) is built, as in Pixyz)")
        check_distribution(p, "GAN", "p")
        optimizer_arguments("GAN", "d_optimizer_params", d_optimizer_params, ModelArgumentError)
        if p_data is None:
            p_data = EmpiricalDistribution(list(p.var))
        else:
            check_distribution(p_data, "GAN", "p_data")
        loss = AdversarialJensenShannon(p_data, p, discriminator, optimizer=d_optimizer,
                                        optimizer_params=d_optimizer_params, inverse_g_loss=inverse_g_loss)
        super().__init__(loss, test_loss=loss, distributions=[p], optimizer=optimizer,
                         optimizer_params=optimizer_params, clip_grad_norm=clip_grad_norm,
                         clip_grad_value=clip_grad_value, retain_graph=retain_graph,
                         compile=compile)

    @property
    def adversarial_loss(self) -> AdversarialLoss:
        """The adversarial term (the loss), which holds the discriminator and its optimizer: the Jensen-Shannon term
        the model was built with, or any term with a discriminator step assigned to ``loss_cls`` since (Pixyz's
        ``GAN`` steps whatever ``loss_cls`` is: ``AdversarialWassersteinDistance`` makes it a WGAN)."""
        loss = self.loss_cls
        if not callable(getattr(loss, "loss_train", None)) or not callable(getattr(loss, "loss_test", None)):
            raise TypeError(f"GAN: loss_cls is a {type(loss).__name__}, which has no discriminator step "
                            "(loss_train/loss_test); a GAN trains an adversarial term (AdversarialJensenShannon, "
                            "AdversarialKullbackLeibler, AdversarialWassersteinDistance), or use Model for other losses")
        return loss

    @property
    def discriminator(self) -> Distribution:
        """The discriminator."""
        return self.adversarial_loss.discriminator

    @property
    def d_optimizer(self) -> torch.optim.Optimizer:
        """The discriminator's optimizer."""
        return self.adversarial_loss.d_optimizer

    def train(self, train_x_dict: Mapping[str, Any] | None = None, adversarial_loss: bool = True,
              **kwargs: Any) -> Any:
        """One discriminator step (with ``adversarial_loss``), then one generator step, on the same batch.

        Parameters
        ----------
        train_x_dict : dict
            The data, e.g. ``{"x": batch}``.
        adversarial_loss : bool, default True
            Whether to train the discriminator too.
        **kwargs
            Passed on to the networks.

        Returns
        -------
        Tensor or (Tensor, Tensor)
            The generator's loss, and the discriminator's loss when ``adversarial_loss`` (but see the class notes
            for :meth:`~pyro_dgm.models.Model.fit`).

        Notes
        -----
        Either step that fails (an error, Ctrl-C) leaves its networks and optimizer as they were before it; the
        draws it made stay drawn (the batch taken again in this process takes both steps, with new draws, as under
        Pixyz). A checkpoint saved before the next call records what an uninterrupted run needs: the random states
        of the failed step's start and, when the generator's step failed after the discriminator's, that the
        discriminator's step of this batch is done (``d_step_done``), so a run resumed from it
        (``load(path, resume=True)``) takes the generator's step only on that batch, as the uninterrupted run did.
        """
        try:
            return self._dgm_two_steps(train_x_dict, adversarial_loss, kwargs)
        except BaseException:
            pending = self.__dict__.get("_dgm_d_done_pending")
            if pending is not None:  # the digest now, before the batch's tensors may change (a buffer refilled)
                pending["batch"] = str(pending["batch"])
            raise

    @property
    def _dgm_not_taken(self) -> str:  # (the note of an error in the generator's step: Model.train)
        if "_dgm_d_done_pending" in self.__dict__:
            return ("the generator's step was not taken; this batch's discriminator step was (a checkpoint saved now "
                    "records it, so a run resumed from it takes the generator's step alone)")
        return "the step was not taken"

    def _dgm_two_steps(self, train_x_dict: Any, adversarial_loss: bool, kwargs: dict[str, Any]) -> Any:
        """The body of :meth:`train`."""
        done = self.__dict__.pop("_dgm_d_done", None)  # (set by load(resume=True) only)
        self.__dict__.pop("_dgm_d_done_pending", None)
        d_loss = None
        main = threading.current_thread() is threading.main_thread()
        if adversarial_loss:
            if done is not None and not _dist.is_distributed() and done["batch"] == batch_digest(train_x_dict):
                # resumed on the batch whose discriminator step was taken before its generator step failed: not
                # again, and the generator's step draws from the random states that followed it
                d_loss = done["d_loss"]
                set_rng_state(done["rng"])
                self._dgm_d_done_pending = dict(done)  # (until the generator's step is taken, as below)
            else:
                start = StepRandomState()
                if main:
                    SIGNALS.keep += 1  # a Ctrl-C during the discriminator's optimizer step: raised below
                try:
                    d_loss = self.adversarial_loss.loss_train(train_x_dict, **kwargs)
                    # the discriminator's step is taken (a signal that came during its optimizer step is held until
                    # the finally below): until the generator's step is taken too, a checkpoint saved says so, and a
                    # run resumed from it takes the generator's step only on this batch, whatever interrupts between
                    self.__dict__.pop("_dgm_failed_rng", None)  # (an earlier failed call's)
                    self._dgm_d_done_pending = {"batch": _BatchDigest(train_x_dict), "d_loss": d_loss,
                                                "rng": StepRandomState()}
                except BaseException:  # a checkpoint saved now records the states of this batch's start
                    if "_dgm_d_done_pending" not in self.__dict__:
                        self._dgm_failed_rng = start
                    raise
                finally:
                    if main:
                        SIGNALS.keep -= 1
                        SIGNALS.end_keep()
        if main:
            SIGNALS.keep += 1  # a Ctrl-C during the generator's optimizer step: raised once the record is dropped
        try:
            loss = super().train(train_x_dict, **kwargs)
            self.__dict__.pop("_dgm_d_done_pending", None)  # both steps taken
        finally:
            if main:
                SIGNALS.keep -= 1
                SIGNALS.end_keep()
        return self._dgm_result(loss, d_loss)

    def test(self, test_x_dict: Mapping[str, Any] | None = None, adversarial_loss: bool = True,
             **kwargs: Any) -> Any:
        """The generator's test loss and (with ``adversarial_loss``) the discriminator's, without updates.

        Returns
        -------
        Tensor or (Tensor, Tensor)
            As :meth:`train`.
        """
        loss = super().test(test_x_dict, **kwargs)
        d_loss = self.adversarial_loss.loss_test(test_x_dict, **kwargs) if adversarial_loss else None
        return self._dgm_result(loss, d_loss)

    def _dgm_result(self, loss: Tensor, d_loss: Tensor | None) -> Any:
        if d_loss is None:
            return loss
        self.last_terms = {**self.last_terms, D_LOSS: d_loss.detach()}
        return loss, d_loss

    def train_step(self, x_dict: Mapping[str, Any], **kwargs: Any) -> tuple[Tensor, Mapping[str, Any]]:
        """One :meth:`train` call as :meth:`~pyro_dgm.models.Model.fit` takes it: the generator's loss, and the
        terms with the discriminator's loss as ``"d_loss"``."""
        out = self.train(x_dict, **kwargs)
        return (out[0] if isinstance(out, tuple) else out), self.last_terms

    def test_step(self, x_dict: Mapping[str, Any], adversarial_loss: bool = True,
                  **kwargs: Any) -> tuple[Tensor, Mapping[str, Any]]:
        """One :meth:`test` call as :meth:`~pyro_dgm.models.Model.fit` takes it: the generator's test loss (checked
        to be finite, as :meth:`Model.test_step <pyro_dgm.models.Model.test_step>` does), and the terms with the
        discriminator's loss as ``"d_loss"``."""
        loss, _ = super().test_step(x_dict, adversarial_loss=False, **kwargs)  # the generator's loss, checked
        if adversarial_loss:
            self._dgm_result(loss, self.adversarial_loss.loss_test(x_dict, **kwargs))
        return loss, self.last_terms
