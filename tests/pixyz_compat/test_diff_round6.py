"""Sixth round of probes, under Pixyz 0.3.3 and here (:mod:`pixyz_harness`).

- ``set_epsilon`` called after a ``BatchNorm1d``/``BatchNorm2d`` flow was built had no effect here (the flow kept
  the epsilon of its construction); Pixyz reads ``epsilon()`` at each call;
- a flow's inverse answered a value changed in place since the flow produced it (``z = f(x); z.mul_(2);
  f.inverse(z)``) with the remembered ``x``: the memory now also checks the tensors' version counters;
- a network whose ``torch.cat`` meets inputs of different numbers of dims (class indices for one-hot labels, an
  image left unflattened: the classic notebook mistakes) raised torch's bare "Tensors must have same number of
  dimensions"; it is now a ``ShapeError`` naming the distribution and its inputs' shapes, as other shape errors
  inside a network are (and still torch's ``RuntimeError``, as Pixyz raises).
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from pixyz_harness import assert_same, raises_same, run_both, run_pyro_dgm


def _batch_norm_after_set_epsilon(cls_name: str) -> Any:
    def program() -> Any:
        import torch
        from pixyz import flows, utils

        shape = (3, 1) if cls_name == "BatchNorm1d" else (3, 1, 1, 1)
        f = getattr(flows, cls_name)(1)  # built with the default epsilon
        x = torch.tensor([2.0, 2.0001, 2.0]).reshape(shape)  # a nearly constant feature: epsilon matters
        old = utils.epsilon()
        utils.set_epsilon(1e-2)
        try:
            z = f(x, compute_jacobian=True)
            return {"z": z, "logdet": f.logdet_jacobian}
        finally:
            utils.set_epsilon(old)
    return program


def test_batch_norm_reads_epsilon_at_each_call_as_pixyz() -> None:
    ref, ours = run_both(_batch_norm_after_set_epsilon("BatchNorm1d"))
    assert_same(ref, ours)
    x = torch.tensor([2.0, 2.0001, 2.0]).double()  # the float32 data, in float64
    var = ((x - x.mean()) ** 2).mean()
    closed = (x - x.mean()) / (var + 1e-2).sqrt()  # the closed form with the new epsilon: about 3e-4 and 7e-4;
    # with the old one (1e-7) it is 0.1 and 0.2, so a tolerance of float32's cancellation error (1e-6) separates them
    torch.testing.assert_close(ours["z"].flatten().double(), closed, rtol=0, atol=1e-5)


def test_batch_norm_2d_reads_epsilon_at_each_call() -> None:
    """Pixyz's BatchNorm2d normalizes per (channel, pixel), ours per channel (porting.md); with one pixel they are
    the same computation, so the values compare."""
    ref, ours = run_both(_batch_norm_after_set_epsilon("BatchNorm2d"))
    assert_same(ref["z"], ours["z"])
    from pyro_dgm.flows import BatchNorm1d
    from pyro_dgm.utils import set_epsilon, epsilon

    f = BatchNorm1d(1, eps=1e-3)  # an eps given to the constructor is kept whatever epsilon() says
    old = epsilon()
    set_epsilon(1e-2)
    try:
        assert f.eps == 1e-3 and BatchNorm1d(1).eps == 1e-2
    finally:
        set_epsilon(old)


def _inverse_after_in_place(flow: str) -> Any:
    def program() -> Any:
        import torch
        from pixyz import flows

        torch.manual_seed(0)
        if flow == "coupling":
            class ScaleTranslate(torch.nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.net = torch.nn.Linear(2, 4)

                def forward(self, x: Any) -> Any:
                    s, t = self.net(x).chunk(2, dim=-1)
                    return torch.tanh(s), t

            f = flows.AffineCoupling(in_features=2, mask_type="channel_wise",
                                     scale_translate_net=ScaleTranslate())
            x = torch.randn(3, 2)
        elif flow == "batch_norm":
            f = flows.BatchNorm1d(2)
            x = torch.randn(5, 2) * 3 + 1
        else:
            f = flows.FlowList([flows.BatchNorm1d(2), flows.Reverse(2)])
            x = torch.randn(5, 2) * 3 + 1
        z = f(x)
        z.mul_(2)  # the flow's output changed in place: the inverse must map the new values
        return f.inverse(z)
    return program


@pytest.mark.parametrize("flow", ["coupling", "batch_norm", "flow_list"])
def test_the_inverse_of_a_value_changed_in_place_is_computed_as_pixyz(flow: str) -> None:
    ref, ours = run_both(_inverse_after_in_place(flow))
    assert_same(ref, ours)
    from pyro_dgm.flows import BatchNorm1d  # and the answer is not the remembered input: the inverse of 2 f(x) is not x
    f = BatchNorm1d(2)
    x = torch.randn(5, 2) * 3 + 1
    z = f(x)
    z.mul_(2)
    assert not torch.allclose(f.inverse(z), x)


def _cat_mistake(case: str) -> Any:
    def program() -> Any:
        import torch
        from torch import nn
        from pixyz.distributions import Normal

        class Q(Normal):
            def __init__(self) -> None:
                super().__init__(var=["z"], cond_var=["x", "y"], name="q")
                self.fc = nn.Linear(16 + 10, 4)

            def forward(self, x: Any, y: Any) -> Any:
                h = self.fc(torch.cat([x, y], 1))
                return {"loc": h, "scale": nn.functional.softplus(h)}

        x, y = torch.rand(8, 16), torch.eye(10)[torch.arange(8)]
        if case == "class_indices":  # y.argmax(1) where one-hot labels are expected
            return Q().sample({"x": x, "y": y.argmax(1).float()})
        return Q().sample({"x": x.view(8, 1, 4, 4), "y": y})  # an image left unflattened
    return program


@pytest.mark.parametrize("case", ["class_indices", "image_not_flat"])
def test_a_cat_of_inputs_with_different_dims_is_a_shape_error_naming_the_inputs(case: str) -> None:
    ref, ours = raises_same(_cat_mistake(case))
    assert issubclass(ref, RuntimeError) and issubclass(ours, RuntimeError) and issubclass(ours, ValueError)
    with pytest.raises(ValueError, match=r"Q q\(z\|x,y\): forward\(\) failed on the inputs 'x': \(8, "):
        run_pyro_dgm(_cat_mistake(case))


def test_a_batch_norm_flow_pickled_when_eps_was_an_attribute_loads_with_it() -> None:
    """``torch.save(model)`` files of the earlier layout hold ``eps`` in the instance's dict (now a property)."""
    from pyro_dgm.flows import BatchNorm1d

    f = BatchNorm1d(2)
    state = f.__dict__.copy()
    del state["_dgm_eps"]
    state["eps"] = 1e-3  # the epsilon() of its construction, as it was stored
    g = BatchNorm1d.__new__(BatchNorm1d)
    g.__setstate__(state)
    x = torch.randn(5, 2)
    var = x.var(0, unbiased=False)
    assert g.eps == 1e-3
    torch.testing.assert_close(g(x), (x - x.mean(0)) / (var + 1e-3).sqrt())
