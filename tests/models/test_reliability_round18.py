"""Eighteenth reliability round (probe p409): a checkpoint damaged after it was written (one bit changed in a
tensor's record) is refused, naming the file and the record, where ``torch.load`` read it without checking its CRC-32
(weights off by up to 0.2, silently); an error that a loss term or a backward pass raises inside ``Model.train``
names the model and the step."""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from pyro_dgm.distributions import Normal
from pyro_dgm.losses import Loss
from pyro_dgm.models import Model


class P(Normal):
    def __init__(self) -> None:
        super().__init__(var=["x"], cond_var=["y"], name="p")
        self.net = nn.Linear(3, 2)

    def forward(self, y: torch.Tensor) -> dict:
        return {"loc": self.net(y), "scale": torch.ones(y.shape[0], 2)}


def _model(extra: Loss | None = None) -> tuple[Model, P]:
    torch.manual_seed(0)
    p = P()
    loss = (-p.log_prob()).mean()
    return Model(loss if extra is None else loss + extra, distributions=[p], optimizer_params={"lr": 0.1}), p


DATA = {"y": torch.randn(8, 3), "x": torch.randn(8, 2)}


def _records(path: Path) -> list[tuple[str, int, int]]:
    """``(name, offset of its first byte, size)`` of each tensor record of a checkpoint (the local header's own
    extra field gives the offset: torch pads it for alignment)."""
    raw = path.read_bytes()
    out = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if "/data/" in info.filename and info.file_size:
                n, extra = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
                out.append((info.filename, info.header_offset + 30 + n + extra, info.file_size))
    return out


def test_a_checkpoint_with_a_changed_bit_in_a_tensor_is_refused_naming_the_record(tmp_path: Path) -> None:
    """Each tensor record of a saved checkpoint with one bit flipped (its first, middle and last byte): ``load``
    and ``load(resume=True)`` raise ``ValueError`` naming the file and the record, and the model is unchanged (the
    weights and the optimizer's state); the intact file loads the saved weights exactly."""
    model, p = _model()
    model.train(DATA)
    path = tmp_path / "c.pt"
    model.save(path)
    saved = {k: v.clone() for k, v in p.state_dict().items()}
    clean = path.read_bytes()
    fresh, q = _model()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    records = _records(path)
    assert len(records) >= 2  # (the weight and the bias at least)
    for name, start, size in records:
        for at in sorted({start, start + size // 2, start + size - 1}):
            damaged = bytearray(clean)
            damaged[at] ^= 0x10
            path.write_bytes(bytes(damaged))
            for resume in (False, True):
                with pytest.raises(ValueError, match="damaged") as info:
                    fresh.load(path, resume=resume)
                assert str(path) in str(info.value) and repr(name) in str(info.value)
                assert all(torch.equal(v, before[k]) for k, v in q.state_dict().items())
    path.write_bytes(clean)
    fresh.load(path, resume=True)
    assert all(torch.equal(v, saved[k]) for k, v in q.state_dict().items())


class _Raising(Loss):
    """A term whose own ``forward`` raises (its second evaluation), or whose backward pass does."""

    def __init__(self, p: P, where: str) -> None:
        super().__init__(["y"])
        self.p, self.where, self.calls = p, where, 0

    @property
    def _symbol(self) -> str:
        return "r"

    @property
    def latex(self) -> str:
        return "r"

    def forward(self, values: dict, **kwargs: object) -> tuple:
        self.calls += 1
        if self.where == "forward" and self.calls == 2:
            raise RuntimeError("forward failed")
        return _FailingBackward.apply(self.p.net.weight).sum() * 0 if self.where == "backward" and self.calls == 2 \
            else self.p.net.weight.sum() * 0, {}


class _FailingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, w: torch.Tensor) -> torch.Tensor:
        return w.clone()

    @staticmethod
    def backward(ctx: object, g: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("backward failed")


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_an_error_of_a_loss_term_inside_train_names_the_model_and_the_step(where: str) -> None:
    """A term that raises at the second step, in its ``forward`` or its backward pass: the error keeps its type and
    message and gains the note "(raised in Model.train (step 2); the step was not taken)", and the weights are the
    first step's (it had no note). Under ``fit`` the note is fit's alone, which names the epoch, batch and step."""
    model, p = _model()
    model.loss_cls = model.loss_cls + _Raising(p, where)  # (the same model: Model follows a changed loss)
    model.train(DATA)
    after_first = {k: v.clone() for k, v in p.state_dict().items()}
    with pytest.raises(RuntimeError, match=f"{where} failed") as info:
        model.train(DATA)
    assert info.value.__notes__ == ["(raised in Model.train (step 2); the step was not taken)"]
    assert all(torch.equal(v, after_first[k]) for k, v in p.state_dict().items())
    model2, p2 = _model(_Raising(P(), where))
    with pytest.raises(RuntimeError, match=f"{where} failed") as info:
        model2.fit([DATA, DATA], epochs=1, progress=False)
    assert info.value.__notes__ == ["in fit: epoch 1, training batch 2 (step 2)"]


def test_a_checkpoint_saved_without_crcs_loads(tmp_path: Path) -> None:
    """A file saved under ``torch.serialization.set_crc32_options(False)`` stores 0 for each record's CRC-32, which
    ``torch.load`` (and Pixyz's ``load``) read: it loads here too, with the saved weights (p411: refused as
    damaged)."""
    model, p = _model()
    model.train(DATA)
    path = tmp_path / "c.pt"
    torch.serialization.set_crc32_options(False)
    try:
        model.save(path)
    finally:
        torch.serialization.set_crc32_options(True)
    with zipfile.ZipFile(path) as archive:
        assert all(info.CRC == 0 for info in archive.infolist() if info.file_size)
    fresh, q = _model()
    fresh.load(path, resume=True)
    assert all(torch.equal(v, p.state_dict()[k]) for k, v in q.state_dict().items())


class _Frozen(Exception):
    """An exception that takes no note (as a frozen dataclass's)."""

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"frozen: {name}")


class _BadStr(Exception):
    def __str__(self) -> str:
        raise AttributeError("no message")


@pytest.mark.parametrize("error", [_Frozen, _BadStr])
def test_an_exception_that_takes_no_note_or_has_no_text_is_raised_as_it_is(error: type) -> None:
    """A network's forward raising an exception that refuses a note, or whose ``str`` fails, at the second step:
    that exception is raised (p411: replaced by the note's own ``AttributeError``), the weights as after step 1."""
    model, p = _model()
    model.train(DATA)
    after_first = {k: v.clone() for k, v in p.state_dict().items()}
    hook = p.net.register_forward_hook(lambda *a: (_ for _ in ()).throw(error()))
    with pytest.raises(error):
        model.train(DATA)
    hook.remove()
    assert all(torch.equal(v, after_first[k]) for k, v in p.state_dict().items())


class _BadStrRuntime(RuntimeError):
    def __str__(self) -> str:
        raise AttributeError("no message")


class _NotesFail(Exception):
    @property
    def __notes__(self) -> list:  # type: ignore[override]
        raise LookupError("no notes")


@pytest.mark.parametrize("error", [_BadStrRuntime, _NotesFail])
def test_a_networks_odd_exception_on_integer_inputs_is_raised_as_it_is(error: type) -> None:
    """A network given int64 inputs (its weights float32) that raises a ``RuntimeError`` whose ``str`` fails, or an
    exception whose ``__notes__`` cannot be read, under ``sample`` and ``Model.train``: that exception comes out
    (p414: a ``LookupError`` of the library's checks of its text replaced it)."""
    class PI(P):
        def forward(self, y: torch.Tensor) -> dict:
            raise error()

    p = PI()
    with pytest.raises(error):
        p.sample({"y": torch.ones(4, 3, dtype=torch.long)})
    model = Model((-p.log_prob()).mean(), distributions=[p])
    with pytest.raises(error):
        model.train({"y": torch.ones(4, 3, dtype=torch.long), "x": torch.zeros(4, 2)})
