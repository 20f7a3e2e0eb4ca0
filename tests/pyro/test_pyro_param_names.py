"""Names in Pyro's param store: deterministic, settable, collision-safe, and a store saved in one process loads into
another by name (as ``pyro.module(name, net, update_module_params=True)`` does in plain Pyro)."""
from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO
from torch import nn

from pyro_dgm.distributions import Bernoulli, Normal

ROOT = Path(__file__).resolve().parents[2]

VAE = textwrap.dedent('''
    import torch, torch.nn.functional as F
    from torch import nn
    from pyro_dgm.distributions import Bernoulli, Normal

    class Decoder(Bernoulli):
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.net = nn.Linear(2, 6)

        def forward(self, z):
            return {"logits": self.net(z)}

    class Encoder(Normal):
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.net = nn.Linear(6, 4)

        def forward(self, x):
            h = self.net(x)
            return {"loc": h[..., :2], "scale": F.softplus(h[..., 2:]) + 1e-3}

    def build():
        p, q = Decoder(), Encoder()
        prior = Normal(loc=0., scale=1., var=["z"], features_shape=[2], name="p_{prior}")
        return p, p * prior, q
''')
exec(VAE)  # the same classes here as in the subprocesses


def step(joint, q, x, n=1):
    svi = SVI(joint.model, q.guide, pyro.optim.Adam({"lr": 0.1}), Trace_ELBO())
    return [svi.step(x=x) for _ in range(n)]


def test_names_are_the_formulas_and_the_same_after_rebuilding():
    x = torch.rand(4, 6)
    names = []
    for _ in range(2):  # a notebook re-run: the same model built again in the same process
        pyro.clear_param_store()
        p, joint, q = build()  # noqa: F821 (from VAE)
        step(joint, q, x)
        names.append(sorted(pyro.get_param_store().keys()))
    assert names[0] == names[1] == ["p(x|z)$$$net.bias", "p(x|z)$$$net.weight", "q(z|x)$$$net.bias",
                                    "q(z|x)$$$net.weight"]


def test_the_user_sets_the_name():
    p, joint, q = build()  # noqa: F821
    q.pyro_name = "encoder"
    named = Normal(loc="x", scale=1.0, var=["w"], cond_var=["x"], pyro_name="w_net")
    assert (p.pyro_name, q.pyro_name, named.pyro_name) == ("p(x|z)", "encoder", "w_net")
    step(joint, q, torch.rand(4, 6))
    assert sorted(pyro.get_param_store().keys()) == ["encoder$$$net.bias", "encoder$$$net.weight",
                                                     "p(x|z)$$$net.bias", "p(x|z)$$$net.weight"]
    store = pyro.get_param_store()
    assert store["encoder$$$net.weight"] is q.net.weight  # the module's own tensor, as pyro.module registers it
    with pytest.raises(TypeError, match=r"pyro_name must be a non-empty string without '\$\$\$'"):
        q.pyro_name = "a$$$b"


def test_two_live_distributions_with_one_name_are_refused():
    p1, joint1, q1 = build()  # noqa: F821
    p2, joint2, q2 = build()  # noqa: F821
    x = torch.rand(4, 6)
    step(joint1, q1, x)
    with pytest.raises(ValueError, match=r"already holds '\w\(\w\|\w\)\$\$\$net\.\w+' for another live distribution"):
        step(joint2, q2, x)
    p2.pyro_name, q2.pyro_name = "p2", "q2"  # the way out the message gives
    step(joint2, q2, x)
    assert {"p2$$$net.weight", "q2$$$net.weight", "p(x|z)$$$net.weight"} <= set(pyro.get_param_store().keys())


def test_a_dead_distributions_name_passes_to_the_new_one():
    x = torch.rand(4, 6)
    p, joint, q = build()  # noqa: F821
    step(joint, q, x, 3)
    del p, joint, q
    gc.collect()
    p, joint, q = build()  # noqa: F821  (rebuilt without clearing the store: the stale entries are replaced)
    fresh = p.net.weight.detach().clone()
    step(joint, q, x)
    store = pyro.get_param_store()
    assert store["p(x|z)$$$net.weight"] is p.net.weight and store["q(z|x)$$$net.weight"] is q.net.weight
    assert not torch.equal(p.net.weight.detach(), fresh)  # and the optimizer trains them (plain Pyro would not)


PROCESS = VAE + textwrap.dedent('''
    import json, sys
    import pyro
    from pyro.infer import SVI, Trace_ELBO

    mode, path = sys.argv[1], sys.argv[2]
    torch.manual_seed(int(mode == "load"))  # the two processes build different initial weights
    p, joint, q = build()
    x = torch.linspace(0, 1, 24).reshape(4, 6)
    if mode == "load":
        pyro.get_param_store().load(path)
    svi = SVI(joint.model, q.guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    if mode == "save":
        for _ in range(5):
            svi.step(x=x)
    pyro.set_rng_seed(123)
    value = Trace_ELBO(num_particles=10).loss(joint.model, q.guide, x=x)  # registers (and loads) the networks
    if mode == "save":
        pyro.get_param_store().save(path)
    weights = {k: v.tolist() for k, v in {**{"p." + n: t for n, t in p.named_parameters()},
                                          **{"q." + n: t for n, t in q.named_parameters()}}.items()}
    before = q.net.weight.detach().clone()
    svi.step(x=x)  # training goes on, on the module's own tensors
    print(json.dumps({"loss": value, "weights": weights, "names": sorted(pyro.get_param_store().keys()),
                      "trained": not torch.equal(before, q.net.weight.detach()),
                      "shared": pyro.get_param_store()["q(z|x)$$$net.weight"] is q.net.weight}))
''')


def test_a_param_store_saved_in_one_process_loads_into_another(tmp_path):
    path = str(tmp_path / "params.pt")
    out = {}
    for mode in ("save", "load"):
        res = subprocess.run([sys.executable, "-c", PROCESS, mode, path], capture_output=True, text=True, cwd=ROOT,
                             env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
                             timeout=300)
        assert res.returncode == 0, res.stderr
        out[mode] = json.loads(res.stdout.strip().splitlines()[-1])
    saved, loaded = out["save"], out["load"]
    assert loaded["names"] == saved["names"]
    assert loaded["weights"] == saved["weights"]  # the loaded values are the networks' now
    assert loaded["loss"] == pytest.approx(saved["loss"], rel=1e-6)  # the same model: the same ELBO, same seed
    assert loaded["trained"] and loaded["shared"]


def test_a_stored_parameter_of_another_shape_is_refused(tmp_path):
    p, joint, q = build()  # noqa: F821
    pyro.param("p(x|z)$$$net.weight", torch.zeros(3, 3))  # e.g. loaded from a file of another model
    with pytest.raises(ValueError, match=r"holds 'p\(x\|z\)\$\$\$net.weight' with shape \(3, 3\).*shape \(6, 2\)"):
        step(joint, q, torch.rand(4, 6))
