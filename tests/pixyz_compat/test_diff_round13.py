"""Thirteenth round: a fuzzer of whole training programs with sequences, flows and classifiers, under Pixyz 0.3.3 and
here (:mod:`pixyz_harness`).

- ``ChannelConv`` held its weights in float32 whatever the default dtype (Pixyz's, as every layer's, are in the
  default dtype): a float64 program's log-density was float32's, and ``decomposed=True`` refused to score (a float64
  mask against float32 factors).
- An ``InverseTransformedDistribution`` whose flow ends in ``Flatten()`` without ``in_size`` refused to score images:
  the shapes were worked out from the prior's side, where the image shape is unknown. Pixyz's scoring runs the flow
  forward on the value, which sets it; so does ours now, from the value scored.
"""
from __future__ import annotations

from typing import Any

import pytest
from torch.testing import assert_close

from pixyz_harness import assert_same, run_both, run_pixyz, run_pyro_dgm


@pytest.mark.parametrize("decomposed", [False, True], ids=["plain", "decomposed"])
def test_channel_conv_in_a_float64_program(decomposed: bool) -> None:
    def program() -> Any:
        import torch
        from torch import optim

        import pixyz.distributions as D
        import pixyz.flows as F
        from pixyz.models import Model

        torch.set_default_dtype(torch.float64)
        try:
            f = F.ChannelConv(2, decomposed=decomposed)
            prior = D.Normal(loc=torch.zeros(2, 4, 4), scale=torch.ones(2, 4, 4), var=["z"], name="p_{prior}")
            p = D.InverseTransformedDistribution(prior, F.FlowList([f]), var=["x"], name="p")
            x = torch.rand(3, 2, 4, 4) * 2 - 1
            lp = p.get_log_prob({"x": x})
            model = Model(-p.log_prob().mean(), distributions=[p], optimizer=optim.Adam, optimizer_params={"lr": 1e-2})
            losses = [model.train({"x": x.clone()}) for _ in range(4)]
            return {"lp": lp, "losses": losses, "params": dict(f.state_dict())}
        finally:
            torch.set_default_dtype(torch.float32)
    ref, ours = run_both(program)
    assert_same(ref, ours, rtol=1e-12, atol=1e-12)  # float64 numbers: float32's rounding would show at 1e-7


@pytest.mark.parametrize("coupling", [False, True])
def test_a_flow_ending_in_flatten_without_in_size_scores_and_trains_images(coupling: bool) -> None:
    def program() -> Any:
        import torch
        from torch import nn, optim

        import pixyz.distributions as D
        import pixyz.flows as F
        from pixyz.models import Model

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.conv = nn.Conv2d(1, 2, 3, padding=1)

            def forward(self, x: torch.Tensor) -> Any:
                o = self.conv(x)
                return torch.tanh(o[:, :1]), o[:, 1:]

        layers = [F.AffineCoupling(1, mask_type="checkerboard", scale_translate_net=Net())] if coupling else []
        prior = D.Normal(loc=torch.zeros(16), scale=torch.ones(16), var=["z"], name="p_{prior}")
        p = D.InverseTransformedDistribution(prior, F.FlowList(layers + [F.Flatten()]), var=["x"], name="p")
        x = torch.rand(3, 1, 4, 4)
        out = {"lp": p.get_log_prob({"x": x})}
        if coupling:  # (Flatten alone has no parameters to train)
            model = Model(-p.log_prob().mean(), distributions=[p], optimizer=optim.Adam,
                          optimizer_params={"lr": 1e-2})
            out["losses"] = [model.train({"x": x.clone()}) for _ in range(3)]
        out["draw"] = p.sample(batch_n=2)["x"].shape  # the image shape is known once scored
        return out
    assert_same(*run_both(program))


def test_a_time_step_variable_the_step_loss_does_not_read() -> None:
    # Pixyz raises building it (porting.md); here it is the sum of the steps' values
    def program() -> Any:
        import torch

        from pixyz.distributions import Normal
        from pixyz.losses import IterativeLoss

        p = Normal(var=["x"], cond_var=["z"], loc="z", scale=torch.tensor(1.0))
        loss = IterativeLoss(p.log_prob(), series_var=["x", "z"], timestep_var=["t"])
        x, z = torch.randn(3, 2, 1), torch.randn(3, 2, 1)
        return loss.eval({"x": x, "z": z}), torch.distributions.Normal(z, 1.0).log_prob(x).sum([0, 2])
    with pytest.raises(ValueError, match="not in list"):
        run_pixyz(program)
    value, want = run_pyro_dgm(program)
    assert_close(value, want)


def test_a_flatten_takes_the_image_shape_of_each_value_scored() -> None:
    # the attack on the fix: the first shape learned stuck (a value of the wrong shape scored first made every
    # right one refused, and a second image shape was refused); Pixyz's forward sets it at every call
    def program() -> Any:
        import torch

        import pixyz.distributions as D
        import pixyz.flows as F

        prior = D.Normal(loc=torch.zeros(16), scale=torch.ones(16), var=["z"], name="p_{prior}")
        p = D.InverseTransformedDistribution(prior, F.FlowList([F.Flatten()]), var=["x"], name="p")
        out = {}
        try:
            p.get_log_prob({"x": torch.rand(2, 1, 3, 3)})
        except (ValueError, RuntimeError):  # (torch's validation's ValueError; without it, a RuntimeError)
            out["wrong_first"] = "raised"
        out["right"] = p.get_log_prob({"x": torch.rand(2, 1, 4, 4)})
        out["draw"] = p.sample(batch_n=2)["x"].shape
        out["other"] = p.get_log_prob({"x": torch.rand(2, 4, 2, 2)})
        out["draw_other"] = p.sample(batch_n=2)["x"].shape
        return out
    ref, ours = run_both(program)
    assert ref["wrong_first"] == "raised"
    assert_same(ref, ours)
