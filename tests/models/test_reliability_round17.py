"""Seventeenth round of reliability checks (probe p298): a checkpoint whose mid-epoch entries are damaged is refused
before the model changes, as every other damaged entry is."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from dgm_model_helpers import digits, make_vae


def _state(model: Any) -> tuple[Any, ...]:
    return ([p.detach().clone() for p in model.distributions.parameters()], model.step,
            repr(model.optimizer.state_dict()), torch.get_rng_state().clone())


@pytest.mark.parametrize("key, value, what", [
    ("epoch_steps", "garbage", "epoch_steps is 'garbage', not a non-negative integer"),
    ("epoch_steps", [1], "epoch_steps is \\[1\\], not a non-negative integer"),
    ("epoch_steps", -2, "epoch_steps is -2, not a non-negative integer"),
    ("data_rng", "garbage", "data_rng .*cannot be restored .*a str, not a list"),
    ("data_rng", [torch.zeros(3)], "data_rng .*cannot be restored"),
])
def test_a_damaged_mid_epoch_entry_is_refused_before_the_model_changes(key: str, value: Any, what: str,
                                                                       tmp_path: Any) -> None:
    """Probe p298: ``epoch_steps`` was read with a bare ``int()`` after every other entry had been checked and loaded
    (``invalid literal for int() with base 10: 'garbage'``, the weights, step counter, optimizer and random states
    already replaced), and a damaged ``data_rng`` was kept for the next ``fit`` unchecked. Both are checked with the
    other entries now: a ``ValueError`` naming the entry, and the model as it was."""
    x = digits()[0][:32]
    torch.manual_seed(0)
    saved = make_vae()
    for s in range(2):
        saved.train({"x": x[16 * s:16 * (s + 1)]})
    saved.save(tmp_path / "ours.pt")
    state = torch.load(tmp_path / "ours.pt", weights_only=False)
    state[key] = value
    torch.save(state, tmp_path / "damaged.pt")
    torch.manual_seed(1)
    model = make_vae()
    model.train({"x": x[:16]})
    before = _state(model)
    with pytest.raises(ValueError, match=rf"Model.load: the checkpoint's {what}.*damaged"):
        model.load(tmp_path / "damaged.pt", resume=True)
    after = _state(model)
    assert all(torch.equal(a, b) for a, b in zip(before[0], after[0]))
    assert before[1:3] == after[1:3] and torch.equal(before[3], after[3])
    model.load(tmp_path / "ours.pt", resume=True)  # the undamaged file loads: the saved model's weights and step
    assert model.step == saved.step == 2
    for a, b in zip(model.distributions.parameters(), saved.distributions.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
