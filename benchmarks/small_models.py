"""Small models' training steps, pyro_dgm against Pixyz: where the framework's Python, not the networks, sets the
time (8-wide latents, 32-wide networks, batch 32; Adam).

Each program is built under both libraries from ``lib.distributions``, ``lib.losses``, ``lib.models`` and
``lib.flows`` with the same seeds (the first three losses are compared: they agree), warmed up, then timed over 32
distinct batches cycled. Each library runs in a process of its own, the two alternated, ``--rounds`` times each:
Pixyz's cache of parameters hashes tensors by ``id``, so in one process that has freed other tensors it may answer a
new batch with a freed graph ("Trying to backward through the graph a second time"). Prints ms per step (medians of
the runs) and pyro_dgm / Pixyz. One command::

    OMP_NUM_THREADS=1 python benchmarks/small_models.py [--steps 300] [--rounds 3] [--only gan flow]

(About 2 minutes for every program on one CPU core.) Pixyz's mixture model needs its cache off, which Pixyz reads at
import, so it is not among the programs here.
"""
from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn, optim

B, X, H, Z = 32, 32, 32, 8  # batch, data features, hidden width, latent size
NB = 32  # distinct batches, cycled
MODELS = ("vae", "vae_model", "test", "eval", "cvae", "m2", "gan", "flow", "dmm", "vi", "mlcat", "poe")


def build(libname: str, model: str) -> tuple[Callable[[Any], Any], list[dict[str, torch.Tensor]]]:
    """``(step, batches)``: one training (or test, or evaluation) step of ``model`` written with ``libname``."""
    D = importlib.import_module(libname + ".distributions")
    L = importlib.import_module(libname + ".losses")
    M = importlib.import_module(libname + ".models")
    Fl = importlib.import_module(libname + ".flows")

    def batches(fn):
        g = torch.Generator().manual_seed(1)
        return [fn(g) for _ in range(NB)]

    def bern(g, n=X): return (torch.rand(B, n, generator=g) < 0.3).float()
    def onehot(g, k=4): return F.one_hot(torch.randint(0, k, (B,), generator=g), k).float()

    class Enc(D.Normal):
        def __init__(s, cond=("x",), din=X, var="z", name="q"):
            super().__init__(var=[var], cond_var=list(cond), name=name)
            s.f = nn.Linear(din, H); s.l = nn.Linear(H, Z); s.s = nn.Linear(H, Z)
        def forward(s, **kw):
            h = F.relu(s.f(torch.cat([kw[k] for k in s.cond_var], -1)))
            return {"loc": s.l(h), "scale": F.softplus(s.s(h))}
    class Dec(D.Bernoulli):
        def __init__(s, cond=("z",), din=Z, var="x", dout=X, name="p"):
            super().__init__(var=[var], cond_var=list(cond), name=name)
            s.f = nn.Linear(din, H); s.o = nn.Linear(H, dout)
        def forward(s, **kw):
            return {"probs": torch.sigmoid(s.o(F.relu(s.f(torch.cat([kw[k] for k in s.cond_var], -1)))))}
    # pixyz's forward introspects arg names, so write explicit signatures
    class EncX(Enc):
        def forward(s, x): return Enc.forward(s, x=x)
    class EncXY(Enc):
        def forward(s, x, y): return Enc.forward(s, x=x, y=y)
    class EncY(Enc):
        def forward(s, y): return Enc.forward(s, y=y)
    class DecZ(Dec):
        def forward(s, z): return Dec.forward(s, z=z)
    class DecZY(Dec):
        def forward(s, z, y): return Dec.forward(s, z=z, y=y)
    def prior():
        return D.Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[Z], name="p_{prior}")

    KL, E, LP, ELBO = L.KullbackLeibler, L.Expectation, L.LogProb, L.ELBO
    step = None; evalfn = None
    torch.manual_seed(0)
    if model in ("vae", "vae_model", "test", "eval", "fit", "loop"):
        q, p, pr = EncX(), DecZ(), prior()
        data = batches(lambda g: {"x": bern(g)})
        if model == "vae":
            m = M.VAE(q, p, regularizer=KL(q, pr), optimizer=optim.Adam, optimizer_params={"lr": 1e-3})
        else:
            loss = (KL(q, pr) - E(q, LP(p))).mean()
            m = M.Model(loss, distributions=[p, q], optimizer=optim.Adam, optimizer_params={"lr": 1e-3})
        if model == "vae_model":
            m = M.Model(-ELBO(p * pr, q).mean(), distributions=[p, q], optimizer=optim.Adam, optimizer_params={"lr": 1e-3})
        step = lambda d: m.train(d)
        if model == "test": step = lambda d: m.test(d)
        if model == "eval":
            def step(d):
                with torch.no_grad(): return loss.eval(d)
    elif model == "cvae":
        q = EncXY(cond=("x", "y"), din=X + 4); p = DecZY(cond=("z", "y"), din=Z + 4); pr = prior()
        data = batches(lambda g: {"x": bern(g), "y": onehot(g)})
        m = M.Model((KL(q, pr) - E(q, LP(p))).mean(), distributions=[p, q], optimizer=optim.Adam, optimizer_params={"lr": 1e-3})
        step = lambda d: m.train(d)
    elif model == "m2":
        class Cls(D.Categorical):
            def __init__(s):
                super().__init__(var=["y"], cond_var=["x"], name="p"); s.f = nn.Linear(X, H); s.o = nn.Linear(H, 4)
            def forward(s, x): return {"probs": F.softmax(s.o(F.relu(s.f(x))), -1)}
        q = EncXY(cond=("x", "y"), din=X + 4); gen = DecZY(cond=("z", "y"), din=Z + 4); pr = prior(); f = Cls()
        p = gen * pr
        p_u = p.replace_var(x="x_u", y="y_u"); q_u = q.replace_var(x="x_u", y="y_u") * f.replace_var(x="x_u", y="y_u")
        loss = -ELBO(p_u, q_u).mean() - ELBO(p, q).mean() + (10 * -f.log_prob()).mean()
        data = batches(lambda g: {"x": bern(g), "y": onehot(g), "x_u": bern(g)})
        m = M.Model(loss, distributions=[p, q, f], optimizer=optim.Adam, optimizer_params={"lr": 1e-3})
        step = lambda d: m.train(d)
    elif model == "gan":
        class Gen(D.Deterministic):
            def __init__(s):
                super().__init__(var=["x"], cond_var=["z"], name="p"); s.n = nn.Sequential(nn.Linear(Z, H), nn.ReLU(), nn.Linear(H, X), nn.Sigmoid())
            def forward(s, z): return {"x": s.n(z)}
        class Dis(D.Deterministic):
            def __init__(s):
                super().__init__(var=["t"], cond_var=["x"], name="d"); s.n = nn.Sequential(nn.Linear(X, H), nn.ReLU(), nn.Linear(H, 1), nn.Sigmoid())
            def forward(s, x): return {"t": s.n(x)}
        p = (Gen() * prior()).marginalize_var("z"); d = Dis()
        m = M.GAN(p, d, optimizer_params={"lr": 2e-4}, d_optimizer_params={"lr": 2e-4})
        data = batches(lambda g: {"x": bern(g)})
        step = lambda d_: m.train(d_)
    elif model == "flow":
        DF = 8
        class ST(nn.Module):
            def __init__(s):
                super().__init__(); s.n = nn.Sequential(nn.Linear(DF, H), nn.ReLU()); s.a = nn.Linear(H, DF); s.b = nn.Linear(H, DF)
            def forward(s, x):
                h = s.n(x); return torch.tanh(s.a(h)), s.b(h)
        fl = []
        for i in range(4):
            fl += [Fl.AffineCoupling(in_features=DF, mask_type="channel_wise", scale_translate_net=ST(), inverse_mask=bool(i % 2)),
                   Fl.BatchNorm1d(DF)]
        pz = D.Normal(loc=torch.tensor(0.), scale=torch.tensor(1.), var=["z"], features_shape=[DF], name="p_prior")
        p = D.InverseTransformedDistribution(prior=pz, flow=Fl.FlowList(fl), var=["x"])
        m = M.ML(p, optimizer=optim.Adam, optimizer_params={"lr": 1e-3})
        data = batches(lambda g: {"x": torch.randn(B, DF, generator=g) * torch.linspace(0.5, 2, DF)})
        step = lambda d: m.train(d)
    elif model == "dmm":
        T = 10
        class Comb(D.Normal):
            def __init__(s):
                super().__init__(var=["z"], cond_var=["x", "z_prev"], name="q"); s.f = nn.Linear(X + Z, H); s.l = nn.Linear(H, Z); s.s = nn.Linear(H, Z)
            def forward(s, x, z_prev):
                h = F.relu(s.f(torch.cat([x, z_prev], -1))); return {"loc": s.l(h), "scale": F.softplus(s.s(h))}
        class Trans(D.Normal):
            def __init__(s):
                super().__init__(var=["z"], cond_var=["z_prev"], name="p"); s.f = nn.Linear(Z, H); s.l = nn.Linear(H, Z); s.s = nn.Linear(H, Z)
            def forward(s, z_prev):
                h = F.relu(s.f(z_prev)); return {"loc": s.l(h), "scale": F.softplus(s.s(h))}
        q, tr, em = Comb(), Trans(), DecZ()
        stepl = (KL(q, tr) - E(q, LP(em))).mean()
        loss = L.IterativeLoss(stepl, max_iter=T, series_var=["x"], update_value={"z": "z_prev"})
        m = M.Model(loss, distributions=[q, tr, em], optimizer=optim.Adam, optimizer_params={"lr": 1e-3})
        data = batches(lambda g: {"x": (torch.rand(T, B, X, generator=g) < .3).float(), "z_prev": torch.zeros(B, Z)})
        step = lambda d: m.train(d)
    elif model == "vi":
        class Q(D.Normal):
            def __init__(s):
                super().__init__(var=["z"], name="q"); s.l = nn.Parameter(torch.zeros(1, Z)); s.s = nn.Parameter(torch.zeros(1, Z))
            def forward(s): return {"loc": s.l, "scale": F.softplus(s.s)}
        class Lik(D.Normal):
            def __init__(s):
                super().__init__(var=["x"], cond_var=["z"], name="p"); s.f = nn.Linear(Z, X)
            def forward(s, z): return {"loc": s.f(z), "scale": torch.ones(1, X)}
        q = EncX(); p = Lik() * prior()
        m = M.VI(p, q, optimizer=optim.Adam, optimizer_params={"lr": 1e-3})
        data = batches(lambda g: {"x": torch.randn(B, X, generator=g)})
        step = lambda d: m.train(d)
    elif model == "mlcat":
        class Cls(D.Categorical):
            def __init__(s):
                super().__init__(var=["y"], cond_var=["x"], name="p"); s.f = nn.Linear(X, H); s.o = nn.Linear(H, 4)
            def forward(s, x): return {"probs": F.softmax(s.o(F.relu(s.f(x))), -1)}
        m = M.ML(Cls(), optimizer=optim.Adam, optimizer_params={"lr": 1e-3})
        data = batches(lambda g: {"x": torch.randn(B, X, generator=g), "y": onehot(g)})
        step = lambda d: m.train(d)
    elif model == "poe":
        qx = EncX(name="q"); qy = EncY(cond=("y",), din=4, name="q")
        px = DecZ(); py = DecZ(var="y", dout=4, name="p"); pr = prior()
        poe = D.ProductOfNormal([qx, qy], name="q")
        loss = (KL(poe, pr) - E(poe, LP(px * py))).mean()
        m = M.Model(loss, distributions=[px, py, qx, qy], optimizer=optim.Adam, optimizer_params={"lr": 1e-3})
        data = batches(lambda g: {"x": bern(g), "y": onehot(g)})
        step = lambda d: m.train(d)
    elif model == "mix":
        K = 4
        class Comp(D.Normal):
            def __init__(s, i):
                super().__init__(var=["x"], name="p_%d" % i); s.l = nn.Parameter(torch.randn(1, 2)); s.s = nn.Parameter(torch.zeros(1, 2))
            def forward(s): return {"loc": s.l, "scale": F.softplus(s.s) + 0.1}
        class Pi(D.Categorical):
            def __init__(s):
                super().__init__(var=["z"], name="p_{prior}"); s.lg = nn.Parameter(torch.zeros(1, K))
            def forward(s): return {"probs": F.softmax(s.lg, -1)}
        p = D.MixtureModel(distributions=[Comp(i) for i in range(K)], prior=Pi())
        m = M.ML(p, optimizer=optim.Adam, optimizer_params={"lr": 1e-2})
        data = batches(lambda g: {"x": torch.randn(B, 2, generator=g) * 2})
        step = lambda d: m.train(d)
    else:
        raise ValueError(f"unknown model {model!r}; one of {', '.join(MODELS)}")
    return step, data


def _value(v: Any) -> Any:
    return tuple(_value(a) for a in v) if isinstance(v, tuple) else round(float(torch.as_tensor(v).detach()), 5)


def _worker(lib: str, model: str, steps: int) -> None:
    """Time ``steps`` steps of ``model`` under ``lib`` in this process; print the first losses and ms per step."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    step, data = build(lib, model)
    torch.manual_seed(123)
    first = [_value(step(data[i])) for i in range(3)]
    for i in range(29):
        step(data[(3 + i) % NB])
    t0 = time.perf_counter()
    for i in range(steps):
        step(data[(32 + i) % NB])
    print(json.dumps({"first": first, "ms": (time.perf_counter() - t0) / steps * 1e3}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="steps per timed run")
    ap.add_argument("--rounds", type=int, default=3, help="runs per library, alternated")
    ap.add_argument("--only", nargs="*", default=list(MODELS), choices=MODELS)
    ap.add_argument("--worker", nargs=2, metavar=("LIB", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(*args.worker, args.steps)
        return 0
    rows = ["| program | Pixyz ms/step | pyro_dgm ms/step | pyro_dgm / Pixyz |", "|---|---|---|---|"]
    for model in args.only:
        times: dict[str, list[float]] = {"pixyz": [], "pyro_dgm": []}
        first: dict[str, Any] = {}
        for _ in range(args.rounds):
            for lib in times:
                out = subprocess.run([sys.executable, __file__, "--worker", lib, model, "--steps", str(args.steps)],
                                     capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(f"{model} under {lib} failed:\n{out.stderr[-2000:]}")
                result = json.loads(out.stdout.strip().splitlines()[-1])
                times[lib].append(result["ms"])
                first[lib] = result["first"]
        px, ours = statistics.median(times["pixyz"]), statistics.median(times["pyro_dgm"])
        same = "same first losses" if first["pixyz"] == first["pyro_dgm"] else f"first losses {first}"
        print(f"{model}: Pixyz {px:.3f} ms, pyro_dgm {ours:.3f} ms, ratio {ours / px:.2f} ({same})", flush=True)
        rows.append(f"| {model} | {px:.3f} | {ours:.3f} | {ours / px:.2f} |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
