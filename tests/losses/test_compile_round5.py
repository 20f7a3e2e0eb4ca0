"""Compiled code against eager, fifth round (p198): a module registered inside compiled code is seen by pyro_dgm's
caches at their next eager read, as it is when the same code runs eagerly."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from compile_models import fresh_dynamo  # noqa: F401  (the compile tests' autouse set-up)
from pyro_dgm.distributions import Normal, TransformedDistribution
from pyro_dgm.flows import AffineCoupling
from pyro_dgm.utils import lru_cache_for_sample_dict


def _swap(owner: nn.Module, new: nn.Module, x: torch.Tensor) -> torch.Tensor:
    owner.fc = new  # a submodule replaced: nn.Module.__setattr__ runs the module registration hooks
    return x + 1


@pytest.mark.parametrize("mode", ["eager", "compiled"])
def test_a_submodule_replaced_inside_compiled_code_is_seen_by_the_sample_dict_cache(mode: str) -> None:
    """``lru_cache_for_sample_dict`` keys its entries on the count of module registrations. A replacement made inside
    compiled code was not counted (counting there made every call compile again), so the cache answered with the
    old network's output until some other module registered something eagerly (WRONG, silent). The compiled run
    must answer as the eager one: with the new network's output."""

    class Encoder(Normal):
        def __init__(self) -> None:
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.fc = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> dict:
            return {"loc": self.fc(x), "scale": torch.ones_like(x)}

        @lru_cache_for_sample_dict()
        def get_params(self, params_dict: dict = {}, **kwargs: Any) -> dict:  # noqa: B006  (Pixyz's signature)
            return super().get_params(params_dict, **kwargs)

    torch.manual_seed(0)
    q, x, new = Encoder(), torch.ones(1, 2), nn.Linear(2, 2)
    swap = torch.compile(_swap, backend="eager", fullgraph=True) if mode == "compiled" else _swap
    before = q.get_params({"x": x})["loc"]
    swap(q, new, x)
    after = q.get_params({"x": x})["loc"]
    assert q.fc is new
    torch.testing.assert_close(after, new(x), rtol=0, atol=0)
    assert not torch.equal(after, before)


def _flow_with_a_batch_norm_put_in(mode: str) -> tuple[int, torch.Tensor, torch.Tensor]:
    class ScaleTranslate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pre = nn.Identity()
            self.lin = nn.Linear(4, 8)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.lin(self.pre(x))
            return torch.tanh(h[:, :4]), h[:, 4:]

    def put(net: nn.Module, layer: nn.Module) -> torch.Tensor:
        net.pre = layer
        return torch.ones(1)

    torch.manual_seed(0)
    prior = Normal(loc=torch.zeros(4), scale=torch.ones(4), var=["z"], name="p_z")
    net, bn = ScaleTranslate(), nn.BatchNorm1d(4)
    p = TransformedDistribution(prior, AffineCoupling(4, mask_type="channel_wise", scale_translate_net=net), var=["x"])
    p.get_log_prob(p.sample(batch_n=5))  # the flow looked for its batch layers: none yet
    (torch.compile(put, backend="eager", fullgraph=True) if mode == "compiled" else put)(net, bn)
    torch.manual_seed(1)
    draw = p.sample(batch_n=5)
    train_score = p.get_log_prob(draw)
    p.eval()
    x = torch.linspace(-1, 1, 8).reshape(2, 4)
    return int(bn.num_batches_tracked), train_score.detach(), p.get_log_prob({"x": x}).detach()


def test_a_batch_norm_put_into_a_flows_network_inside_compiled_code_is_found_by_the_flow() -> None:
    """A flow scores its own draw from memory unless a batch layer must see the batch again; it finds its batch
    layers anew when the registration count changes. A batch norm put into the flow's network inside compiled code
    was not counted: the batch norm moved one update where the eager run (and Pixyz) moves two, and every later
    eval-mode score differed (-4.9957 for -4.9915)."""
    eager, compiled = _flow_with_a_batch_norm_put_in("eager"), _flow_with_a_batch_norm_put_in("compiled")
    assert eager[0] == compiled[0] == 2
    torch.testing.assert_close(compiled[1], eager[1])
    torch.testing.assert_close(compiled[2], eager[2])
