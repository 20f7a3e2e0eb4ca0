"""Fifty-fifth round (probe p389, bad input), under Pixyz and here (:mod:`pixyz_harness`): where Pixyz raises
torch's bare ``RuntimeError``, the error here is also a ``ValueError`` naming the distribution and the variable;
a joint of factors with batch sizes 1 and N, which Pixyz refuses, is refused under ``strict_shapes()``."""
from __future__ import annotations

from typing import Any

import pyro
import pytest
import torch

from pixyz_harness import run_pixyz, run_pyro_dgm
from pyro_dgm.utils.checks import DeviceError, ShapeError, strict_shapes


@pytest.mark.parametrize("family", ["Normal", "Laplace", "Bernoulli", "Dirichlet"])
def test_a_value_on_the_meta_device_is_named_where_pixyz_raises_torchs_error(family: str) -> None:
    """A value on the meta device scored under constant CPU parameters: torch's "Tensor.item() cannot be called on
    meta tensors" (or, for the Dirichlet, a ``ShapeError`` that blamed the shapes) where it is a
    ``DeviceError`` naming the distribution, the variable and both devices (also the ``RuntimeError`` Pixyz
    programs see)."""
    def program() -> Any:
        import torch

        from pixyz import distributions

        params = {"Dirichlet": {"concentration": torch.ones(3)}, "Bernoulli": {"probs": torch.full((3,), 0.5)}}
        d = getattr(distributions, family)(var=["z"], name="d", **params.get(
            family, {"loc": torch.zeros(3), "scale": torch.ones(3)}))
        return d.get_log_prob({"z": torch.full((4, 3), 0.3, device="meta")})

    with pyro.validation_enabled(True):  # (torch's value check reads the value: without it torch computes a
        # meta tensor from the CPU constants, in both)
        with pytest.raises(RuntimeError):
            run_pixyz(program)
        with pytest.raises(DeviceError, match=r"d\(z\): cannot score 'z' on device meta: the parameters are on "
                                              r"device cpu"):
            run_pyro_dgm(program)


def test_a_categorical_draw_of_no_samples_is_named_where_pixyz_raises_torchs_error() -> None:
    """``Categorical.sample(sample_shape=[0])``: torch's multinomial refuses to draw no sample ("cannot sample
    n_sample <= 0 samples", in both); here a ``ShapeError`` (also a ``RuntimeError``) naming the distribution and
    the variable. A Normal draws an empty tensor, in both."""
    def program(family: str) -> Any:
        import torch

        from pixyz.distributions import Categorical, Normal

        if family == "normal":
            return Normal(loc=torch.zeros(3), scale=torch.ones(3), var=["c"]).sample(sample_shape=[0])["c"].shape
        return Categorical(probs=torch.tensor([0.3, 0.7]), var=["c"], name="q").sample(sample_shape=[0])

    assert run_pixyz(lambda: program("normal")) == run_pyro_dgm(lambda: program("normal")) == (0, 1, 3)
    with pytest.raises(RuntimeError, match="n_sample <= 0"):
        run_pixyz(lambda: program("categorical"))
    with pytest.raises(ShapeError, match=r"q\(c\): cannot draw 'c': .*asks for none"):
        run_pyro_dgm(lambda: program("categorical"))


def test_a_joint_of_batch_sizes_1_and_n_is_refused_under_strict_shapes_as_pixyz_refuses_it() -> None:
    """``(p(x|z) * p(z)).get_log_prob`` with ``x`` of ``(3, 2)`` and ``z`` of ``(1, 2)``: Pixyz raises "Two PDFs
    ... have different sizes"; by default each row gets log p(x_i|z) + log p(z) (by hand below), and under
    ``strict_shapes()`` it is refused with Pixyz's message, naming both factors."""
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal

        j = (Normal(loc="z", scale=torch.tensor(1.), var=["x"], cond_var=["z"], name="p")
             * Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[2], name="pz"))
        return j.get_log_prob({"x": torch.tensor([[0., 1.], [2., 0.], [1., 1.]]), "z": torch.tensor([[0.5, -0.5]])})

    with pytest.raises(ValueError, match="different sizes"):
        run_pixyz(program)
    ours = run_pyro_dgm(program)
    x, z = torch.tensor([[0., 1.], [2., 0.], [1., 1.]]), torch.tensor([[0.5, -0.5]])
    normal = torch.distributions.Normal
    torch.testing.assert_close(ours, normal(z, 1.).log_prob(x).sum(-1) + normal(0., 1.).log_prob(z).sum(-1))
    with strict_shapes(), pytest.raises(ValueError, match=r"two PDFs, pz\(z\) and p\(x\|z\), have different sizes"):
        run_pyro_dgm(program)
