"""Issue 13 items 5 and 6: atomic checkpoints (a save killed with SIGKILL never leaves an unreadable file; a load
error names the file) and optimizers checked against the checkpoint before anything loads. Also the checkpoint of
a model that trains Pyro-side parameters (an autoguide, issue 12 item 5)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyro
import pyro.distributions as pdist
import pytest
import torch
from dgm_model_helpers import make_vae
from pyro.infer.autoguide import AutoNormal

from pyro_dgm.losses import PyroELBO
from pyro_dgm.models import Model

WORKER = Path(__file__).with_name("reliability_save_worker.py")
X = (torch.rand(32, 64, generator=torch.Generator().manual_seed(0)) > 0.5).float()


def _weights(model: Model) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.distributions.state_dict().values()]


# ------------------------------------------------------------------------------------------------ atomic save (13.5)
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
def test_a_save_killed_with_sigkill_never_leaves_an_unreadable_checkpoint(tmp_path: Path) -> None:
    """A process saves an ~8 MB checkpoint in a loop and is killed with SIGKILL at several points; every time, the
    file loads and is complete (all its weights equal its step). Writing in place (the old ``torch.save(path)``)
    leaves a truncated file here most times."""
    sys.path.insert(0, str(WORKER.parent))
    from reliability_save_worker import build

    path = tmp_path / "ckpt.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    steps = []
    for saves, delay in ((1, 0.05), (2, 0.2), (3, 0.45)):
        proc = subprocess.Popen([sys.executable, str(WORKER), str(path)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            for _ in range(saves):  # that many complete checkpoints were written (on any disk speed); it keeps saving
                line = proc.stdout.readline()
                assert line.strip() == "saved", proc.stderr.read() if proc.stderr else ""
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        model = build()
        model.load(path, resume=True)  # never raises: the file is the last complete checkpoint
        assert model.step >= 1
        for t in model.distributions.parameters():
            assert bool((t == float(model.step)).all())
        steps.append(model.step)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "ckpt.pt"]
    assert all(n.startswith(".ckpt.pt.") and n.endswith(".tmp") for n in leftovers)  # a killed save's temp file
    assert min(steps[1:]) > 1  # the later kills did land during later saves


def test_save_leaves_no_temporary_file_and_keeps_permissions(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    model = make_vae()
    model.save(path)
    os.chmod(path, 0o640)
    model.train({"x": X})
    model.save(str(path))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    assert (os.stat(path).st_mode & 0o777) == 0o640
    fresh = make_vae()
    fresh.load(path, resume=True)
    assert fresh.step == 1 and all(torch.equal(a, b) for a, b in zip(_weights(fresh), _weights(model)))


# the other files are answered by torch.load's legacy unpickler with KeyError ("hello": its opcode 'h') or IndexError
@pytest.mark.parametrize("content", ["truncated", "empty", "text", "hello", "csv"])
def test_an_unreadable_checkpoint_is_a_value_error_naming_the_file(tmp_path: Path, content: str) -> None:
    good = tmp_path / "good.pt"
    model = make_vae()
    model.train({"x": X})
    model.save(good)
    bad = tmp_path / "bad.pt"
    data = good.read_bytes()
    bad.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "text": b"not a checkpoint\n",
                     "hello": b"hello world\n", "csv": b"a,b\n1,2\n"}[content])
    fresh = make_vae()
    before = _weights(fresh)
    with pytest.raises(ValueError, match=rf"cannot read the checkpoint '{str(bad)}' \(\d+ bytes\): the file is "
                                         r"truncated or is not a checkpoint"):
        fresh.load(bad, resume=True)
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(fresh))) and fresh.step == 0


class _Code:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.getcwd, ())


def test_a_checkpoint_holding_code_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "x": _Code()}, path)
    with pytest.raises(ValueError, match=r"evil\.pt' \(\d+ bytes\): the file holds objects other than tensors.*"
                                         r"weights_only=True.*(GLOBAL|class) posix\.getcwd"):  # (torch < 2.4: class)
        make_vae().load(path, resume=True)


def test_a_missing_file_is_still_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        make_vae().load(tmp_path / "nope.pt", resume=True)


# ------------------------------------------------------------------------------------------ optimizer check (13.6)
def _sgd_model() -> Model:
    vae = make_vae()
    return Model(vae.loss_cls, distributions=list(vae.distributions), optimizer=torch.optim.SGD,
                 optimizer_params={"lr": 0.1, "momentum": 0.9})


def test_an_adam_checkpoint_does_not_load_into_an_sgd_model(tmp_path: Path) -> None:
    """Before: the groups became Adam's (lr silently 0.01) and the next step failed with KeyError: 'momentum'."""
    adam = make_vae()
    adam.train({"x": X})
    adam.save(tmp_path / "adam.pt")
    sgd = _sgd_model()
    before = _weights(sgd)
    with pytest.raises(ValueError, match=r"optimizer is a torch\.optim\.adam\.Adam, this model's is a "
                                         r"torch\.optim\.sgd\.SGD"):
        sgd.load(tmp_path / "adam.pt", resume=True)
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(sgd))) and sgd.step == 0
    assert sgd.optimizer.param_groups[0]["lr"] == 0.1 and sgd.optimizer.param_groups[0]["momentum"] == 0.9
    sgd.train({"x": X})  # still trains with its own optimizer


def test_a_checkpoint_without_optimizer_types_is_checked_by_its_options(tmp_path: Path) -> None:
    adam = make_vae()
    adam.train({"x": X})
    state = adam.state_dict()
    del state["optimizer_types"]  # as written before the types were saved
    sgd = _sgd_model()
    with pytest.raises(ValueError, match=r"has the options \[.*'betas'.*\] and lacks \['dampening', 'momentum', "
                                         r"'nesterov'\] of this model's SGD"):
        sgd.load_state_dict(state)


def test_the_param_group_layout_is_checked(tmp_path: Path) -> None:
    """One group per parameter (a pyro.optim optimizer with per-parameter arguments) against one group."""
    vae = make_vae()
    per_param = Model(vae.loss_cls, distributions=list(vae.distributions),
                      optimizer=pyro.optim.Adam(lambda name, p: {"lr": 0.01}))
    per_param.train({"x": X})
    per_param.save(tmp_path / "c.pt")
    fresh = make_vae()
    before = _weights(fresh)
    with pytest.raises(ValueError, match=r"optimizer has 10 parameter group\(s\) of \[1, 1, 1, 1, 1, 1, 1, 1, 1, 1\] "
                                         r"parameter\(s\), this model's has 1 of \[10\]"):
        fresh.load(tmp_path / "c.pt", resume=True)
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(fresh)))  # checked before anything loaded


# -------------------------------------------------------------------- Pyro-side parameters in checkpoints (12.5)
def _pyro_model(x: torch.Tensor) -> None:
    loc = pyro.sample("loc", pdist.Normal(0., 1.))
    with pyro.plate("data", len(x)):
        pyro.sample("x", pdist.Normal(loc, 1.), obs=x)


def _autoguide_model() -> Model:
    return Model(PyroELBO(_pyro_model, AutoNormal(_pyro_model)), optimizer_params={"lr": 0.05})


def test_autoguide_parameters_resume_exactly(tmp_path: Path) -> None:
    x = torch.randn(10, generator=torch.Generator().manual_seed(2)) + 1.0
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    straight = _autoguide_model()
    losses = [float(straight.train({"x": x})) for _ in range(5)]
    final = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    first = _autoguide_model()
    for _ in range(3):
        first.train({"x": x})
    first.save(tmp_path / "c.pt")

    pyro.clear_param_store()
    pyro.set_rng_seed(7)
    fresh = _autoguide_model()
    with pytest.raises(ValueError, match="take one training step"):  # its parameters do not exist yet
        fresh.load(tmp_path / "c.pt", resume=True)
    fresh.train({"x": x})  # creates them (other values, other RNG state): load overwrites all of it
    fresh.load(tmp_path / "c.pt", resume=True)
    assert fresh.step == 3
    resumed = [float(fresh.train({"x": x})) for _ in range(2)]
    assert resumed == losses[3:]
    for k, v in final.items():
        assert torch.equal(pyro.get_param_store()[k].detach(), v), k
