"""Bad inputs to the Loss and Model APIs raise clear errors that Pixyz programs still catch.

Each program is a Pixyz program (``from pixyz...`` inside its body) run under pyro_dgm and under Pixyz 0.3.3 with the
harness of ``tests/pixyz_compat``: our error names the term, the argument and what was expected, and is an instance
of the type Pixyz raises for the same program (so ``except <Pixyz's type>`` still catches it). Programs that Pixyz
runs still run here and give Pixyz's numbers; where both run a program that is almost surely a mistake, ours warns.
"""
from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from pyro_dgm.losses.iteration import IterativeLossTypeError, MaskShapeError, SeriesTooShortError
from pyro_dgm.losses.special import LossArgumentError
from pyro_dgm.models.errors import ModelArgumentError
from pyro_dgm.utils.checks import DimensionError, ShapeError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pixyz_compat"))
from pixyz_harness import assert_same, run_pixyz, run_pyro_dgm  # noqa: E402

Program = Callable[[], Any]


def _raises_as_pixyz(program: Program, kinds: tuple[type[BaseException], ...], match: str) -> BaseException:
    """Run ``program`` under both libraries: ours raises an instance of every type of ``kinds`` whose message matches
    ``match``, and is an instance of the type Pixyz raises.

    Parameters
    ----------
    program : callable
        A Pixyz program that fails under both libraries.
    kinds : tuple of exception types
        Types our error must be an instance of (all of them).
    match : str
        A regular expression our message must match (``re.search``).

    Returns
    -------
    BaseException
        Our error.
    """
    with pytest.raises(Exception) as ref:
        run_pixyz(program)
    with pytest.raises(kinds[0], match=match) as ours:
        run_pyro_dgm(program)
    for kind in kinds:
        assert isinstance(ours.value, kind), f"{type(ours.value).__mro__} is not a {kind.__name__}"
    assert isinstance(ours.value, ref.type), (f"Pixyz raises {ref.type.__name__} ({ref.value}), which does not catch "
                                              f"ours, {type(ours.value).__mro__}")
    return ours.value


# ------------------------------------------------------------------------------------------- loss arithmetic (r10)
def _decoder_and_values() -> tuple[Any, dict[str, torch.Tensor]]:
    import torch
    from pixyz.distributions import Normal

    p = Normal(loc="z", scale=1., var=["x"], cond_var=["z"], name="p")
    return p, {"x": torch.zeros(3, 4), "z": torch.zeros(3, 4)}


def _sum_and_per_feature() -> Any:
    from pixyz.losses import LogProb

    p, values = _decoder_and_values()
    return (LogProb(p) + LogProb(p, sum_features=False)).eval(values)  # (3,) + (3, 4)


def _two_batches() -> Any:
    import torch
    from pixyz.distributions import Normal
    from pixyz.losses import LogProb

    a = Normal(loc="a", scale=1., var=["x"], cond_var=["a"], name="p")
    b = Normal(loc="b", scale=1., var=["y"], cond_var=["b"], name="q")
    return (LogProb(a) - LogProb(b)).eval({"a": torch.zeros(3, 2), "x": torch.zeros(3, 2),
                                           "b": torch.zeros(2, 2), "y": torch.zeros(2, 2)})


def _tensor_operand() -> Any:
    import torch
    from pixyz.losses import LogProb

    p, values = _decoder_and_values()
    return (LogProb(p) * torch.ones(5)).eval(values)  # Pixyz refuses the tensor operand (ValueError)


def _parameter_given_a_string() -> Any:
    from pixyz.losses import LogProb, Parameter

    p, values = _decoder_and_values()
    return (LogProb(p) * Parameter("beta")).eval({**values, "beta": "a"})


def test_operands_whose_shapes_do_not_broadcast_name_both_terms_and_shapes() -> None:
    """A ShapeError (a RuntimeError, as torch's under Pixyz) naming both terms by their text and both shapes."""
    _raises_as_pixyz(_sum_and_per_feature, (ShapeError, ValueError, RuntimeError),
                     r"AddLoss: cannot combine \\log p\(x\|z\) of shape \(3,\) with \\log p\(x\|z\) of shape "
                     r"\(3, 4\).*do not broadcast")
    _raises_as_pixyz(_two_batches, (ShapeError, RuntimeError),
                     r"SubLoss: cannot combine \\log p\(x\|a\) of shape \(3,\) with \\log q\(y\|b\) of shape \(2,\)")


def test_a_tensor_operand_of_the_wrong_shape_fails_at_eval_with_a_shape_error() -> None:
    """Pixyz refuses a tensor operand at construction with a ValueError; ours is accepted (an extension) and its
    misfit at evaluation is a ShapeError, which ``except ValueError`` still catches."""
    _raises_as_pixyz(_tensor_operand, (ShapeError, ValueError),
                     r"MulLoss: cannot combine \\log p\(x\|z\) of shape \(3,\) with the tensor operand "
                     r"\\mathtt\{\\text\{\[1\. 1\. 1\. 1\. 1\.\]\}\} of shape \(5,\)")


def test_a_parameter_given_a_string_names_the_parameter() -> None:
    _raises_as_pixyz(_parameter_given_a_string, (LossArgumentError, TypeError),
                     r"MulLoss: cannot combine \\log p\(x\|z\) of shape \(3,\) with Parameter 'beta' \(a str 'a'\): "
                     r"a term's value must be a tensor or a number")


# ------------------------------------------------------------------------------- dims and sample shapes (r11)
def _kl_parts() -> tuple[Any, Any, dict[str, torch.Tensor]]:
    import torch
    from torch import nn
    from pixyz.distributions import Normal

    class Q(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return {"loc": self.fc(x), "scale": torch.ones(1)}
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="p_{prior}")
    return Q(), prior, {"x": torch.zeros(3, 4)}


def _kl_with(**options: Any) -> Program:
    def program() -> Any:
        from pixyz.losses import KullbackLeibler

        q, prior, values = _kl_parts()
        return KullbackLeibler(q, prior, **options).eval(values)
    return program


def test_kl_dim_out_of_range_is_a_dimension_error() -> None:
    """As ``LogProb(feature_dims=[5])``: a DimensionError (Pixyz's IndexError) naming the term, dim and shape."""
    _raises_as_pixyz(_kl_with(dim=5), (DimensionError, ValueError, IndexError),
                     r"KullbackLeibler D_\{KL\} \\left\[q\(z\|x\)\|\|p_\{prior\}\(z\) \\right\]: cannot sum the "
                     r"element-wise divergence of shape \(3, 2\) over dim=5")
    _raises_as_pixyz(_kl_with(dim=[1, 1]), (ShapeError, RuntimeError), r"KullbackLeibler.*dim=\[1, 1\]")


@pytest.mark.parametrize("dim", ["a", 1.0, True, ["a"]], ids=["str", "float", "bool", "list-of-str"])
def test_kl_dim_of_the_wrong_type_names_the_term_and_dim(dim: Any) -> None:
    _raises_as_pixyz(_kl_with(dim=dim), (LossArgumentError, TypeError),
                     r"KullbackLeibler D_\{KL\}.*: dim must be an int or a list of ints.*got " + re.escape(repr(dim)))


def test_kl_dim_given_as_numpy_or_tensor_integers_runs_as_in_pixyz() -> None:
    import numpy as np

    for dim in (np.int64(1), torch.tensor(1)):  # (Pixyz's value for the int: torch 2.5's sum over a tensor dim
        assert_same(run_pixyz(_kl_with(dim=int(dim))), run_pyro_dgm(_kl_with(dim=dim)))  # sums every dim)
    with warnings.catch_warnings():  # a Monte Carlo divergence ignores dim, in both libraries
        warnings.simplefilter("error")
        assert_same(run_pixyz(_kl_with(dim="a", analytical=False)), run_pyro_dgm(_kl_with(dim="a", analytical=False)))


def _log_prob_feature_dims(feature_dims: Any, sum_features: bool = True) -> Program:
    def program() -> Any:
        import torch
        from pixyz.losses import LogProb

        q, prior, values = _kl_parts()
        return LogProb(prior, sum_features=sum_features, feature_dims=feature_dims).eval({"z": torch.ones(3, 2)})
    return program


def test_log_prob_feature_dims_of_the_wrong_type_names_the_term() -> None:
    _raises_as_pixyz(_log_prob_feature_dims("a"), (LossArgumentError, TypeError),
                     r"LogProb \\log p_\{prior\}\(z\): feature_dims must be a list of ints.*got 'a'")
    # unused without sum_features: runs, as in Pixyz
    same = _log_prob_feature_dims("a", sum_features=False)
    assert_same(run_pixyz(same), run_pyro_dgm(same))


def _expectation_sample_shape(sample_shape: Any) -> Program:
    def program() -> Any:
        from pixyz.losses import Expectation, LogProb

        q, prior, values = _kl_parts()
        return Expectation(q, LogProb(prior), sample_shape=sample_shape).eval(values)
    return program


def _elbo_sample_shape() -> Any:
    from pixyz.losses import ELBO

    q, prior, values = _kl_parts()
    return ELBO(prior, q, sample_shape="a").eval(values)


@pytest.mark.parametrize("sample_shape", ["a", [2.5], 2.5], ids=["str", "list-of-float", "float"])
def test_sample_shape_of_the_wrong_type_names_the_term(sample_shape: Any) -> None:
    _raises_as_pixyz(_expectation_sample_shape(sample_shape), (LossArgumentError, TypeError),
                     r"Expectation over q\(z\|x\): sample_shape must be an int or a sequence of ints.*got "
                     + re.escape(repr(sample_shape)))
    _raises_as_pixyz(_kl_with(analytical=False, sample_shape=sample_shape), (LossArgumentError, TypeError),
                     r"KullbackLeibler \(analytical=False\) of q\(z\|x\) and p_\{prior\}\(z\): sample_shape must be")


def test_elbo_sample_shape_of_the_wrong_type_names_the_elbo() -> None:
    _raises_as_pixyz(_elbo_sample_shape, (LossArgumentError, TypeError),
                     r"ELBO of p_\{prior\}\(z\) and q\(z\|x\): sample_shape must be an int or a sequence of ints.*'a'")


def test_a_sample_shape_without_samples_is_also_pixyz_runtime_error() -> None:
    """Pixyz fails when evaluated (``torch.stack`` of no value: a RuntimeError); ours at construction, a ShapeError
    (a ValueError and a RuntimeError)."""
    _raises_as_pixyz(_expectation_sample_shape([0]), (ShapeError, ValueError, RuntimeError),
                     r"Expectation over q\(z\|x\): sample_shape \(0,\) holds no sample")


# ----------------------------------------------------------------------------------------- IterativeLoss (r12)
def _step() -> Any:
    import torch
    from torch import nn
    from pixyz.distributions import Deterministic, Normal
    from pixyz.losses import Expectation, LogProb

    class Dec(Normal):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["h_prev"], name="p")
            self.fc = nn.Linear(2, 3)

        def forward(self, h_prev):
            return {"loc": self.fc(h_prev), "scale": torch.ones(1)}

    class H(Deterministic):
        def __init__(self):
            super().__init__(var=["h"], cond_var=["x", "h_prev"], name="f")
            self.fc = nn.Linear(3, 2)

        def forward(self, x, h_prev):
            return {"h": torch.tanh(self.fc(x) + h_prev)}
    return Expectation(H(), LogProb(Dec()))


def _series() -> dict[str, torch.Tensor]:
    import torch

    return {"x": torch.linspace(-1, 1, 24).reshape(4, 2, 3), "h_prev": torch.zeros(2, 2)}


def _iterative(mask: Any = None, **options: Any) -> Program:
    def program() -> Any:
        from pixyz.losses import IterativeLoss

        options.setdefault("update_value", {"h": "h_prev"})
        loss = IterativeLoss(_step(), series_var=["x"], **options)
        return loss.eval(_series()) if mask is None else loss.eval(_series(), mask=mask)
    return program


def test_a_mask_that_does_not_fit_the_step_loss_is_a_mask_shape_error() -> None:
    _raises_as_pixyz(_iterative(mask=torch.ones(5, 7)), (MaskShapeError, ValueError, RuntimeError),
                     r"IterativeLoss: mask\[0\] has shape \(7,\), which does not fit the step loss's value of shape "
                     r"\(2,\)")


def test_a_mask_shorter_than_the_series_names_both_lengths() -> None:
    _raises_as_pixyz(_iterative(mask=torch.ones(2)), (SeriesTooShortError, ValueError, IndexError),
                     r"IterativeLoss: mask has 2 steps \(its first dim\), fewer than the 4 steps taken")


def test_a_mask_that_is_not_a_tensor_names_the_mask() -> None:
    """Pixyz calls ``mask.float()``: an AttributeError for a str; ours is also a TypeError."""
    _raises_as_pixyz(_iterative(mask="a"), (IterativeLossTypeError, TypeError, AttributeError),
                     r"IterativeLoss: mask must be a tensor .*time.*got str")


def test_update_value_given_as_a_list_names_update_value() -> None:
    """Pixyz: ``'list' object has no attribute 'values'`` (an AttributeError); ours is also a TypeError."""
    _raises_as_pixyz(_iterative(update_value=["h"]), (IterativeLossTypeError, TypeError, AttributeError),
                     r"IterativeLoss: update_value must be a dict .*\{'h': 'h_prev'\}.*got \['h'\]")


def test_max_iter_of_the_wrong_type_is_a_type_error_and_a_value_error() -> None:
    """Pixyz: ``range("3")``, a TypeError when evaluated; ours at construction, also a ValueError (as it was)."""
    _raises_as_pixyz(_iterative(max_iter="3"), (LossArgumentError, TypeError, ValueError),
                     r"IterativeLoss: max_iter must be an int, got '3'")


def test_update_value_of_a_variable_never_produced_warns_and_runs_as_in_pixyz() -> None:
    program = _iterative(update_value={"q": "h_prev"})
    with pytest.warns(UserWarning, match=r"IterativeLoss: update_value renames 'q' to 'h_prev'.*no value named 'q'"
                                         r".*'h_prev' is never updated"):
        ours = run_pyro_dgm(program)
    assert_same(run_pixyz(program), ours)
    with warnings.catch_warnings():  # a variable the step samples: no warning
        warnings.simplefilter("error")
        run_pyro_dgm(_iterative())


def test_negative_max_iter_warns_and_runs_as_in_pixyz() -> None:
    program = _iterative(max_iter=-1)
    with pytest.warns(UserWarning, match=r"IterativeLoss: max_iter=-1 takes no step.*the loss is 0"):
        ours = run_pyro_dgm(program)
    assert_same(run_pixyz(program), ours)


# ------------------------------------------------------------------------------------------- models (r17, r23)
def _net() -> Any:
    import torch
    from torch import nn
    from pixyz.distributions import Normal

    class P(Normal):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.fc = nn.Linear(2, 3)

        def forward(self, z):
            return {"loc": self.fc(z), "scale": torch.ones(1)}
    return P()


def _train_with(**options: Any) -> Program:
    def program() -> Any:
        import torch
        from torch import optim
        from pixyz.losses import LogProb
        from pixyz.models import Model

        p = _net()
        model = Model(LogProb(p).mean(), distributions=[p], optimizer=optim.Adam, optimizer_params={}, **options)
        return model.train({"x": torch.zeros(2, 3), "z": torch.zeros(2, 2)})
    return program


@pytest.mark.parametrize("arg", ["clip_grad_norm", "clip_grad_value"])
def test_clip_options_that_are_not_numbers_name_the_option(arg: str) -> None:
    """Pixyz fails at the first step (torch's ``float(max_norm)``: ValueError for a str, TypeError for a list); ours
    when the model is built, an error of both types."""
    for bad in ("a", [1.0]):
        _raises_as_pixyz(_train_with(**{arg: bad}), (ModelArgumentError, TypeError, ValueError),
                         rf"Model: {arg} must be a number.*got {re.escape(repr(bad))}")
    ref, ours = run_pixyz(_train_with(**{arg: "0.5"})), run_pyro_dgm(_train_with(**{arg: "0.5"}))  # Pixyz runs it
    assert_same(ref.detach(), ours)


def _vae(regularizer: Any) -> Program:
    def program() -> Any:
        import torch
        from torch import nn
        from pixyz.distributions import Normal
        from pixyz.models import VAE

        class Q(Normal):
            def __init__(self):
                super().__init__(var=["z"], cond_var=["x"], name="q")
                self.fc = nn.Linear(3, 2)

            def forward(self, x):
                return {"loc": self.fc(x), "scale": torch.ones(1)}
        model = VAE(Q(), _net(), regularizer=regularizer)
        return str(model.loss_cls), model.test({"x": torch.zeros(2, 3)})
    return program


def test_vae_regularizer_that_is_not_a_loss_is_caught_as_pixyz_catches_it() -> None:
    _raises_as_pixyz(_vae("a"), (LossArgumentError, TypeError, ValueError),
                     r"VAE: regularizer must be a pyro_dgm Loss .*or a number, got builtins.str")


def test_vae_regularizer_that_is_a_number_runs_as_in_pixyz() -> None:
    ref, ours = run_pixyz(_vae(0.5)), run_pyro_dgm(_vae(0.5))
    assert_same(ref, ours)
