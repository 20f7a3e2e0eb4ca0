"""Thirty-ninth round: generated calls of every Pixyz distribution class and keyword, compiled training steps,
Pyro's inference on pyro_dgm programs, and threads, under Pixyz and here (:mod:`pixyz_harness`), against
plain-Pyro twins and closed forms.
"""
from __future__ import annotations

from typing import Any

import pytest

from pixyz_harness import assert_same, run_both


def _params_order_program(family: str, first: str, second: str, inputs: tuple[str, str]) -> Any:
    def program() -> Any:
        import torch

        from pixyz import distributions

        p = getattr(distributions, family)(var=["x"], cond_var=["y0", "y1"], **{first: "y0", second: "y1"})
        given = {"y0": torch.full((1, 3), 0.3), "y1": torch.ones(1, 3)}
        params = p.get_params({k: given[k] for k in inputs})
        return list(params), params

    return program


@pytest.mark.parametrize("inputs", [("y0", "y1"), ("y1", "y0")])
@pytest.mark.parametrize("family, first, second", [
    ("Normal", "loc", "scale"), ("RelaxedBernoulli", "probs", "temperature"),
    ("RelaxedCategorical", "probs", "temperature"), ("Beta", "concentration1", "concentration0")])
def test_parameters_given_by_inputs_are_listed_in_the_inputs_order(family: str, first: str, second: str,
                                                                   inputs: tuple[str, str]) -> None:
    """Pixyz's ``get_params`` lists the parameters named by a ``cond_var`` in the order of the caller's dict (then
    the constants); here they came in the family's order (a Relaxed family's ``temperature`` first either way)."""
    (ref_keys, ref), (keys, ours) = run_both(_params_order_program(family, first, second, inputs))
    assert keys == ref_keys
    assert_same(ref, ours)


def _planar(invertible: bool) -> Any:
    import torch

    from pyro_dgm.distributions import Normal
    from pyro_dgm.distributions.flow_distribution import TransformedDistribution
    from pyro_dgm.flows import PlanarFlow

    torch.manual_seed(0)
    flow = PlanarFlow(2)
    if not invertible:  # w.u = -3 < -1: Pixyz's default constraint_u=False allows it; no inverse exists
        with torch.no_grad():
            flow.w.copy_(torch.tensor([[1.0, 0.0]]))
            flow.u.copy_(torch.tensor([[-3.0, 0.0]]))
            flow.b.zero_()
    base = Normal(loc=torch.zeros(2), scale=torch.ones(2), var=["x"], name="p0")
    return TransformedDistribution(base, flow, var=["z"])


@pytest.mark.parametrize("invertible", [True, False])
def test_a_flows_draw_in_another_thread_leaves_this_threads_score_as_alone(invertible: bool) -> None:
    """A thread draws from a flow distribution shared with another thread and scores its draw; the other thread
    draws in between. The flow remembered one draw per module, so the first thread's score went through the
    numerical inverse: other float bits, and a ValueError for a planar map without an inverse, which the same calls
    one after another never raise. Each thread's score must equal the serial one exactly."""
    import threading

    import torch

    from pyro_dgm.utils import generator

    q = _planar(invertible)
    with generator(torch.Generator().manual_seed(1)):
        z = q.sample(batch_n=64)["z"]
    alone = q.get_log_prob({"z": z}).detach()
    drew, other_drew, out = threading.Event(), threading.Event(), []

    def first() -> None:
        with generator(torch.Generator().manual_seed(1)):
            mine = q.sample(batch_n=64)["z"]
        drew.set()
        other_drew.wait(10)
        try:
            out.append(q.get_log_prob({"z": mine}).detach())
        except Exception as e:  # noqa: BLE001 (reported by the assertion)
            out.append(e)

    def second() -> None:
        drew.wait(10)
        with generator(torch.Generator().manual_seed(2)):
            q.sample(batch_n=64)
        other_drew.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert isinstance(out[0], torch.Tensor), out[0]
    assert torch.equal(out[0], alone)
    # the module's record (Pixyz's stored_x) is the last draw of any thread: the second thread's
    assert q.flow._dgm_memory.z is not z


def test_a_flows_memory_per_thread_is_not_pickled() -> None:
    """The per-thread record of a flow is dropped by copies (a ``threading.local`` cannot be pickled), and a copy
    scores its own draws from its own record."""
    import copy
    import pickle

    import torch

    q = _planar(True)
    q.sample(batch_n=3)
    for other in (copy.deepcopy(q), pickle.loads(pickle.dumps(q))):
        z = other.sample(batch_n=3)["z"]
        assert other.flow._dgm_memory.z is z
        assert torch.allclose(other.get_log_prob({"z": z}), q.get_log_prob({"z": z.clone()}), atol=1e-5)


def test_a_model_loaded_from_anothers_state_dict_keeps_its_own_optimizer_moments() -> None:
    """``m2.load_state_dict(m1.state_dict())`` left m2's Adam moments the very tensors of m1's (torch's optimizer
    keeps the tensors it is given when no cast is needed): training m2 changed m1's next steps. Each model must
    resume from the state as it was when loaded, as from a copy of it."""
    import copy

    import torch
    from torch import nn

    from pyro_dgm.distributions import Bernoulli, Normal
    from pyro_dgm.losses import ELBO
    from pyro_dgm.models import Model

    def build() -> Any:
        torch.manual_seed(0)
        q = Normal(var=["z"], cond_var=["x"], loc="x", scale=torch.tensor(1.0), name="q")

        class P(Bernoulli):
            def __init__(self) -> None:
                super().__init__(var=["x"], cond_var=["z"], name="p")
                self.net = nn.Linear(3, 3)

            def forward(self, z: Any) -> Any:
                return {"probs": torch.sigmoid(self.net(z))}

        p = P()
        return Model(-ELBO(p, q).mean(), distributions=[p, q], optimizer=torch.optim.Adam,
                     optimizer_params={"lr": 0.05})

    def batch(s: int) -> dict[str, torch.Tensor]:
        return {"x": torch.rand(5, 3, generator=torch.Generator().manual_seed(s)).round()}

    m1 = build()
    m1.train(batch(0))
    saved = copy.deepcopy(m1.state_dict())
    m2 = build()
    m2.load_state_dict(m1.state_dict())
    for s in range(1, 4):
        torch.manual_seed(s)
        m2.train(batch(s))
    after_m2 = []
    for s in range(1, 4):
        torch.manual_seed(s)
        after_m2.append(float(m1.train(batch(s))))
    alone = build()
    alone.load_state_dict(saved)
    reference = []
    for s in range(1, 4):
        torch.manual_seed(s)
        reference.append(float(alone.train(batch(s))))
    assert after_m2 == reference
