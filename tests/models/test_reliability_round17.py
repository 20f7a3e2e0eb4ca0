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


def _refused_unchanged(state: dict, x: torch.Tensor, what: str, tmp_path: Any) -> Any:
    """Save the damaged ``state``, load it into a model trained one step: a ``ValueError`` naming ``what``, and the
    model's weights, step counter, optimizer state and random state as before. Returns the model."""
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
    return model


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
    model = _refused_unchanged(state, x, what, tmp_path)
    model.load(tmp_path / "ours.pt", resume=True)  # the undamaged file loads: the saved model's weights and step
    assert model.step == saved.step == 2
    for a, b in zip(model.distributions.parameters(), saved.distributions.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _interrupted_mid_epoch(tmp_path: Any) -> Any:
    """A checkpoint saved after a ``KeyboardInterrupt`` in the third step of a shuffled ``fit``'s first epoch (it holds
    ``epoch_resume``, the state that continues that epoch)."""
    x = digits()[0][:48]
    torch.manual_seed(0)
    model = make_vae()
    calls = [0]

    def interrupt(module: Any, args: Any, out: Any) -> None:
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt

    hook = model.distributions[0].register_forward_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        model.fit({"x": x}, epochs=2, batch_size=8, shuffle=True, progress=False)
    hook.remove()
    model.save(tmp_path / "mid.pt")
    state = torch.load(tmp_path / "mid.pt", weights_only=False)
    assert state["epoch_resume"]["steps"] == state["epoch_steps"] == model.step >= 1
    return state, x


@pytest.mark.parametrize("entry, value, what", [
    ("steps", "3", r"epoch_resume\['steps'\] is '3', not a non-negative integer"),
    ("steps", -1, r"epoch_resume\['steps'\] is -1, not a non-negative integer"),
    ("data_rng", "xx", r"epoch_resume\['data_rng'\] .*cannot be restored"),
    ("data_rng", [torch.zeros(3)], r"epoch_resume\['data_rng'\] .*cannot be restored"),
    ("sums", [1], r"epoch_resume\['sums'\] \(\[1\]\) is not what Model.save writes"),
    ("rows", "8", r"epoch_resume\['rows'\] \('8'\) is not what Model.save writes"),
    ("test_rng", torch.zeros(3), r"epoch_resume\['test_rng'\] cannot be restored"),
    ("steps", 1000, r"epoch_resume\['steps'\] \(1000, with epoch_steps \d+ and 6 batches\)"),
    ("batches", "6", r"epoch_resume\['batches'\] is '6', not a non-negative integer"),
    ("", None, r"epoch_steps is tensor\(\[1, 2\]\), not a non-negative integer"),
    ("", "data_rng", r"data_rng .*cannot be restored .*a Tensor, not a list"),
])
def test_a_damaged_epoch_resume_or_a_tensor_entry_is_refused_before_the_model_changes(
        entry: str, value: Any, what: str, tmp_path: Any) -> None:
    """Probe p300: of ``epoch_resume`` only the keys and the random states were checked, so a damaged one loaded
    (the model's weights, step and random states replaced) and the next ``fit`` failed with a bare error (``RNG
    state must be a torch.ByteTensor``, ``'str' object cannot be interpreted as an integer``) or resumed on other
    batches without a word; and ``epoch_steps`` or ``data_rng`` saved as a tensor of several values raised torch's
    "Boolean value of Tensor with more than one value is ambiguous". Each is refused with the others now."""
    state, x = _interrupted_mid_epoch(tmp_path)
    steps = state["epoch_steps"]
    if entry:
        state["epoch_resume"][entry] = value
    elif value is None:
        state["epoch_steps"] = torch.tensor([1, 2])
    else:
        state["data_rng"] = torch.zeros(5)
    model = _refused_unchanged(state, x, what, tmp_path)
    model.load(tmp_path / "mid.pt", resume=True)  # the undamaged file loads
    assert model.step == steps
