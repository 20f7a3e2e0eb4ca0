"""Thirty-first Pyro round (probe p374): the networks a ``PyroELBO`` term's guide registers with ``pyro.module``,
whose buffers (a batch norm's running statistics) the step cannot list before it runs them. A step that fails puts
them back as it puts back pyro_dgm's networks' (as in a run that never met the failure), and a checkpoint holds
them, so that a run resumed from it goes on as the uninterrupted one."""
from __future__ import annotations

import io
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import LogProb, PyroELBO
from pyro_dgm.models import Model

G = torch.Generator().manual_seed(5)
Y, X = torch.randn(5, 3, generator=G), torch.randn(5, 1, generator=G)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin, self.bn, self.out = nn.Linear(3, 4, bias=False), nn.BatchNorm1d(4), nn.Linear(4, 1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.bn(self.lin(y)))).squeeze(-1)


class P(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["y"], name="p")
        self.net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))

    def forward(self, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loc": self.net(y), "scale": torch.ones(1)}


def program(fail: dict[str, bool]) -> tuple[Model, Net, P]:
    """A pyro_dgm term and a Pyro model/guide pair whose guide registers ``Net`` (with a batch norm) by
    ``pyro.module``; the model raises after the guide ran while ``fail["now"]``."""
    torch.manual_seed(0)
    pyro.clear_param_store()
    net = Net()

    def model(y: torch.Tensor) -> None:
        w = pyro.sample("w", dist.Normal(torch.zeros(1), 1.).to_event(1))
        if fail["now"]:
            raise RuntimeError("the model failed after the guide ran")
        with pyro.plate("d", y.shape[0]):
            pyro.sample("y", dist.Normal(w.sum(), 1.), obs=y[:, 0])

    def guide(y: torch.Tensor) -> None:
        pyro.module("gnet", net)
        pyro.sample("w", dist.Normal(net(y).mean().reshape(1), 1.).to_event(1))

    p = P()
    loss = (-LogProb(p)).mean() + PyroELBO(model, guide, input_var=["y"])
    return Model(loss, distributions=[p], optimizer=torch.optim.Adam, optimizer_params={"lr": 1e-2}), net, p


def state(net: Net, p: P) -> dict[str, torch.Tensor]:
    return {**{f"net.{k}": v.clone() for k, v in net.state_dict().items()},
            **{f"p.{k}": v.clone() for k, v in p.state_dict().items()}}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for k, v in a.items():
        torch.testing.assert_close(b[k], v, rtol=0, atol=0, msg=k)


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failed_step_puts_back_the_buffers_of_a_network_the_guide_registers(error: type) -> None:
    """Two steps, a third whose model raises after the guide ran (the guide's batch norm updated: before,
    ``num_batches_tracked`` 2 -> 3 and ``running_mean`` moved by up to 0.098, while pyro_dgm's network was put
    back), then two more: every weight and buffer as in the run of four steps that never met the failure."""
    fail = {"now": False}
    model, net, p = program(fail)
    for _ in range(2):
        model.train({"x": X, "y": Y})
    before = state(net, p)
    fail["now"] = True
    if error is KeyboardInterrupt:
        handle = net.bn.register_forward_hook(_interrupt)  # (inside the guide's network, after its batch norm ran)
    with pytest.raises(error):
        model.train({"x": X, "y": 2 + Y})
    if error is KeyboardInterrupt:
        handle.remove()
    fail["now"] = False
    assert_same_state(before, state(net, p))
    torch.manual_seed(7)
    for _ in range(2):
        model.train({"x": X, "y": Y})

    clean, clean_net, clean_p = program({"now": False})
    for _ in range(2):
        clean.train({"x": X, "y": Y})
    torch.manual_seed(7)
    for _ in range(2):
        clean.train({"x": X, "y": Y})
    assert_same_state(state(clean_net, clean_p), state(net, p))


def test_a_checkpoint_holds_the_buffers_of_a_network_the_guide_registers() -> None:
    """Saved after two steps and loaded with ``resume=True`` into a new program (which takes one step first, as
    ``load`` asks): the guide's batch norm is the saved one (before: ``num_batches_tracked`` 1 where 2 was saved,
    ``running_mean`` off by up to 0.069), and two more steps give the uninterrupted run's weights and buffers."""
    model, net, p = program({"now": False})
    for _ in range(2):
        model.train({"x": X, "y": Y})
    buf = io.BytesIO()
    model.save(buf)
    for _ in range(2):
        model.train({"x": X, "y": Y})
    expected = state(net, p)

    resumed, net2, p2 = program({"now": False})
    resumed.train({"x": X, "y": 1 + Y})
    buf.seek(0)
    resumed.load(buf, resume=True)
    assert int(net2.bn.num_batches_tracked) == 2
    for _ in range(2):
        resumed.train({"x": X, "y": Y})
    assert_same_state(expected, state(net2, p2))


def test_a_checkpoint_with_the_buffers_of_other_networks_is_refused_naming_them() -> None:
    """A checkpoint whose Pyro-side network holds other buffers than this model's (a buffer this guide's batch
    norm has besides, or one of another shape) is refused before anything changes, naming the buffers."""
    model, _, _ = program({"now": False})
    model.train({"x": X, "y": Y})
    buf = io.BytesIO()
    model.save(buf)
    names = r"holds the buffers \['num_batches_tracked', 'running_mean', 'running_var'\], this model's \['extra', "
    shape = r"buffer 'running_mean' of the Pyro-side terms' network 0 \(BatchNorm1d\) has shape \(4,\) in the "
    for extra, words in ((torch.zeros(2), names), (None, shape + r"checkpoint but \(1,\)")):
        other, net2, p2 = program({"now": False})
        if extra is not None:
            net2.bn.register_buffer("extra", extra)
        other.train({"x": X, "y": Y})
        if extra is None:
            net2.bn.running_mean = torch.zeros(1)
        before = state(net2, p2)
        buf.seek(0)
        with pytest.raises(ValueError, match=words):
            other.load(buf, resume=True)
        assert_same_state(before, state(net2, p2))
