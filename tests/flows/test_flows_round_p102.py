"""Attack round p102 on the flows' dim-0 rule (768257e), under Pixyz 0.3.3 and here (:mod:`pixyz_harness`).

768257e held the event dims of *every* flow fixed while a flow distribution ran its flow (a thread's pin), so that a
value with sample dims ``(L, N, D)`` would not be read as Pixyz's ``(N, H, W)``. That broke three programs:

- the built-in flows a user's Pixyz-style flow runs inside itself on a reshaped input (a Real NVP multi-scale step on
  half of an image's channels) kept the dims they were built with: a silently different draw, a refused score;
- a layer of a ``FlowList`` run alone once (on ``(L, N, 3)``) left the density's layer with those dims for good
  (the list's memo of the shape it adapted its parts for skipped them);
- under ``torch.compile`` the pin was dropped: a density scoring ``(L, N, 3)`` values read them as images.

Only the flows a distribution sets (its flow and the parts of its lists) now keep its dims, also under
``torch.compile``; a layer used alone follows its input and is set again at the distribution's next run. And a
``TransformedDistribution`` scoring its own draw runs its flow's inverse again when the flow holds a batch norm in
training mode, as Pixyz does (its running statistics moved once where Pixyz's move twice).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pixyz_compat"))
from pixyz_harness import assert_same, run_both, run_pyro_dgm  # noqa: E402


def _multiscale() -> Any:
    import torch
    from torch import nn

    from pixyz import flows as F
    from pixyz.distributions import InverseTransformedDistribution, Normal

    class ST(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(2, 4, 1)

        def forward(self, x: torch.Tensor) -> Any:
            h = self.c(x)
            return torch.tanh(h[:, :2]), h[:, 2:]

    class HalfFlow(F.Flow):
        def __init__(self) -> None:
            super().__init__(4)
            self.inner = F.FlowList([F.AffineCoupling(2, scale_translate_net=ST()), F.Reverse(2)])

        def forward(self, x: torch.Tensor, y: Any = None, compute_jacobian: bool = True) -> torch.Tensor:
            a, b = x.chunk(2, dim=1)
            a = self.inner.forward(a, compute_jacobian=compute_jacobian)
            if compute_jacobian:
                self._logdet_jacobian = self.inner.logdet_jacobian
            return torch.cat([a, b], 1)

        def inverse(self, z: torch.Tensor, y: Any = None) -> torch.Tensor:
            a, b = z.chunk(2, dim=1)
            return torch.cat([self.inner.inverse(a), b], 1)

    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[4, 2, 2])
    p = InverseTransformedDistribution(prior, HalfFlow(), var=["x"])
    log_p = p.get_log_prob({"x": torch.randn(3, 4, 2, 2)})
    torch.manual_seed(1)
    return log_p, p.sample(batch_n=2)["x"]


def test_flows_inside_a_users_flow_follow_their_input() -> None:
    ref, ours = run_both(_multiscale)  # (768257e: a refused score and another draw)
    assert_same(ref, ours)


def _a_layer_used_alone(steps: int) -> Any:
    import torch

    from pixyz import flows as F
    from pixyz.distributions import InverseTransformedDistribution, Normal

    pre = F.Preprocess()
    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[3])
    p = InverseTransformedDistribution(prior, F.FlowList([pre, F.Reverse(3)]), var=["x"])
    y = torch.rand(4, 3)
    torch.manual_seed(2)  # (the same dequantization noise for both scores)
    before = p.get_log_prob({"x": y})
    pre.forward(torch.rand(steps, 4, 3))  # the layer alone: (L, N, 3) is Pixyz's (N, H, W) for it
    torch.manual_seed(2)
    return before, p.get_log_prob({"x": y})


@pytest.mark.parametrize("steps", [4, 5])
def test_a_layer_used_alone_leaves_the_density_as_it_was(steps: int) -> None:
    before, after = run_pyro_dgm(lambda: _a_layer_used_alone(steps))
    assert torch.equal(before, after)  # (768257e: 17.47 where it was 0.51, or a ShapeError)


def test_a_compiled_density_scores_values_with_sample_dims() -> None:
    from pyro_dgm import flows as F
    from pyro_dgm.distributions import InverseTransformedDistribution, Normal

    prior = Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[3])
    p = InverseTransformedDistribution(prior, F.Preprocess(dequantize=False), var=["x"])
    compiled = torch.compile(lambda x: p.get_log_prob({"x": x}), backend="eager")
    for steps in (4, 5):  # L == N (read as images: other numbers) and L != N (refused)
        x = torch.rand(steps, 4, 3)
        assert torch.allclose(compiled(x), p.get_log_prob({"x": x}))


def _batch_norm_network_scoring_its_draw() -> Any:
    import torch
    from torch import nn

    from pixyz import flows as F
    from pixyz.distributions import Normal, TransformedDistribution

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 4)
            self.bn = nn.BatchNorm1d(4, momentum=0.5)

        def forward(self, x: torch.Tensor) -> Any:
            h = self.bn(self.fc(x))
            return torch.tanh(h[:, :2]), h[:, 2:]

    net = Net()
    q = TransformedDistribution(Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"]),
                                F.FlowList([F.AffineCoupling(2, scale_translate_net=net), F.Reverse(2)]), var=["z"])
    torch.manual_seed(1)
    s = q.sample(batch_n=5)
    lp = q.get_log_prob(s)
    stats = int(net.bn.num_batches_tracked), net.bn.running_mean.clone()
    q.eval()
    return lp, stats, q.get_log_prob({"z": torch.ones(2, 2)}, compute_jacobian=True)


def test_a_transformed_density_reruns_its_batch_norm_on_its_draw() -> None:
    ref, ours = run_both(_batch_norm_network_scoring_its_draw)
    assert ours[1][0] == 2  # (was 1: the score was answered from the draw's memory)
    assert_same(ref, ours)


@pytest.mark.parametrize("first", ["score", "draw"])
def test_one_function_as_both_forward_and_inverse_is_called_for_each_role(first: str) -> None:
    """A self-inverse map written once, ``forward = inverse = neg`` with ``neg(self, v, cond=None)`` (the
    signature rules take it; p480: the way to call it was kept once for both roles, so scoring first made the draw
    call it with four arguments). Each role is called its own way, whichever runs first: the density of ``z = -x``
    under a standard normal prior is the prior's at ``-z``."""
    from pyro_dgm.distributions import Normal, TransformedDistribution
    from pyro_dgm.flows import Flow

    def neg(self: Any, v: torch.Tensor, cond: Any = None) -> torch.Tensor:
        self._logdet_jacobian = torch.zeros(v.shape[0])
        return -v

    class Neg(Flow):
        forward = neg
        inverse = neg

    prior = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"], name="p0")
    p = TransformedDistribution(prior, Neg(2), var=["z"])
    z = torch.tensor([[0.5, -1.0]])
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(-z).sum(-1)
    if first == "draw":
        s = p.sample(batch_n=3)
        assert torch.equal(s["z"], -s["x"])
    assert torch.allclose(p.get_log_prob({"z": z}), expected)
    s = p.sample(batch_n=3)
    assert torch.equal(s["z"], -s["x"])
