r"""The models drawn on the "Graph and LaTeX views" page, and the code that draws them (run at every docs build).

Each model is written with pyro_dgm as in the tutorials; :func:`draw_all` saves, for each one, ``<name>_graph.png``
(``nx.draw_networkx(p.graph)``: one node per variable, an edge per conditioning variable, labelled with the factor)
and ``<name>_latex.png`` (the formulas of the distributions and the loss, rendered with matplotlib's mathtext, which
needs no LaTeX installation). For the models of :data:`PYRO_VIEWS` it also saves ``pyro.render_model``'s pictures of
the model and the guide (``<name>_pyro_*.svg``); those need Graphviz's ``dot`` program, so where it is missing the
copies committed in ``docs/_static/views`` (made by ``python docs/_ext/model_views.py docs/_static/views --pyro``)
are used instead.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402


# [models-start]
def vae() -> dict[str, Any]:
    """A VAE: p(x,z) = p(x|z)p_{prior}(z), q(z|x), and the negative ELBO."""
    from pyro_dgm.distributions import Bernoulli, Normal
    from pyro_dgm.losses import Expectation as E
    from pyro_dgm.losses import KullbackLeibler

    class Inference(Normal):  # q(z|x)
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x"], name="q")
            self.loc, self.scale = nn.Linear(64, 2), nn.Linear(64, 2)

        def forward(self, x):
            return {"loc": self.loc(x), "scale": nn.functional.softplus(self.scale(x))}

    class Generator(Bernoulli):  # p(x|z)
        def __init__(self):
            super().__init__(var=["x"], cond_var=["z"], name="p")
            self.logits = nn.Linear(2, 64)

        def forward(self, z):
            return {"logits": self.logits(z)}

    q, p = Inference(), Generator()
    prior = Normal(loc=0., scale=1., var=["z"], features_shape=[2], name="p_{prior}")
    loss = (KullbackLeibler(q, prior) - E(q, p.log_prob())).mean()
    return {"model": p * prior, "others": [q], "loss": loss}


def m2() -> dict[str, Any]:
    """The M2 semi-supervised VAE: p(x|y,z)p(y)p(z), inferred by q(z|x,y)q(y|x)."""
    from pyro_dgm.distributions import Bernoulli, Categorical, Normal
    from pyro_dgm.losses import ELBO

    class Decoder(Bernoulli):  # p(x|y,z)
        def __init__(self):
            super().__init__(var=["x"], cond_var=["y", "z"], name="p")
            self.net = nn.Linear(10 + 2, 64)

        def forward(self, y, z):
            return {"logits": self.net(torch.cat([y, z], -1))}

    class Encoder(Normal):  # q(z|x,y)
        def __init__(self):
            super().__init__(var=["z"], cond_var=["x", "y"], name="q")
            self.loc, self.scale = nn.Linear(64 + 10, 2), nn.Linear(64 + 10, 2)

        def forward(self, x, y):
            h = torch.cat([x, y], -1)
            return {"loc": self.loc(h), "scale": nn.functional.softplus(self.scale(h))}

    class Classifier(Categorical):  # q(y|x)
        def __init__(self):
            super().__init__(var=["y"], cond_var=["x"], name="q")
            self.net = nn.Linear(64, 10)

        def forward(self, x):
            return {"probs": self.net(x).softmax(-1)}

    p_y = Categorical(probs=torch.ones(10) / 10, var=["y"], name="p")
    p_z = Normal(loc=0., scale=1., var=["z"], features_shape=[2], name="p")
    p, q = Decoder() * p_y * p_z, Encoder() * Classifier()
    loss = -ELBO(p, q).mean()
    return {"model": p, "others": [q], "loss": loss}


def dmm() -> dict[str, Any]:
    """One step of a deep Markov model, p(x_t|z_t)p(z_t|z_{t-1}), and its loss summed over T steps."""
    from pyro_dgm.distributions import Normal
    from pyro_dgm.losses import IterativeLoss, KullbackLeibler

    # a variable name may be LaTeX: "z_{t-1}" prints as z_{t-1} (parameters given by name need no network here)
    emission = Normal(loc="z", scale=0.1, var=["x"], cond_var=["z"], name="p")
    transition = Normal(loc="z_{t-1}", scale=1., var=["z"], cond_var=["z_{t-1}"], name="p")
    posterior = Normal(loc="x", scale="z_{t-1}", var=["z"], cond_var=["x", "z_{t-1}"], name="q")
    step = KullbackLeibler(posterior, transition) - emission.log_prob().expectation(posterior)
    loss = IterativeLoss(step, max_iter=20, series_var=["x"], update_value={"z": "z_{t-1}"}).mean()
    return {"model": emission * transition, "others": [posterior], "loss": loss}
# [models-end]


MODELS = {"vae": vae, "m2": m2, "dmm": dmm}


def draw_graph(p: Any, path: Path) -> None:
    """``nx.draw_networkx(p.graph)``, parents above children, each edge labelled with its factor."""
    g = p.graph
    for layer, names in enumerate(nx.topological_generations(g)):
        for n in names:
            g.nodes[n]["layer"] = -layer
    pos = nx.multipartite_layout(g, subset_key="layer", align="vertical")  # parents on the left
    pos = {n: (-x, y) for n, (x, y) in pos.items()}
    width = 1.8 + 1.6 * len(set(nx.get_node_attributes(g, "layer").values()))
    fig, ax = plt.subplots(figsize=(width, 2.8))
    nx.draw_networkx(g, pos, ax=ax, labels={n: f"${n}$" for n in g.nodes}, node_size=1500, node_color="#f4f4f4",
                     edgecolors="#333333", font_size=14, arrowsize=18)
    labels = {(a, b): f"${d['factor']}$" for a, b, d in g.edges(data=True)}
    nx.draw_networkx_edge_labels(g, pos, edge_labels=labels, ax=ax, font_size=10)
    ax.set_title(f"${p.prob_joint_factorized_and_text}$", fontsize=11)
    ax.margins(0.25)
    ax.axis("off")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def draw_latex(lines: list[str], path: Path) -> None:
    """Each line rendered as math with matplotlib's mathtext (what ``print_latex`` shows in a notebook)."""
    fig = plt.figure(figsize=(0.1, 0.1))
    fig.text(0.0, 0.0, "\n".join(f"${line}$" for line in lines), fontsize=14, linespacing=2.2)
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.15, facecolor="white")
    plt.close(fig)


# [pyro-start]
def pyro_views(name: str, m: dict[str, Any]) -> dict[str, Any]:
    """``{picture name: graphviz.Digraph}``: ``pyro.render_model`` of a model's ``model`` and its guide's ``guide``,
    with the variables a batch observes given as keyword arguments (shaded nodes)."""
    import pyro

    torch.manual_seed(0)
    x = torch.rand(5, 64).bernoulli()
    y = nn.functional.one_hot(torch.arange(5), 10).float()
    p, q = m["model"], m["others"][0]
    views = {"model": pyro.render_model(p.model, model_kwargs={"x": x}, render_distributions=True),
             "guide": pyro.render_model(q.guide, model_kwargs={"x": x}, render_distributions=True)}
    if name == "m2":  # a labelled batch observes y too
        views["model_labelled"] = pyro.render_model(p.model, model_kwargs={"x": x, "y": y},
                                                    render_distributions=True)
    return views


def draw_pyro(name: str, m: dict[str, Any], out: Path) -> list[Path]:
    """Save :func:`pyro_views` as ``<out>/<name>_pyro_<view>.svg`` (needs Graphviz's ``dot``)."""
    written = []
    for view, graph in pyro_views(name, m).items():
        path = out / f"{name}_pyro_{view}.svg"
        path.write_bytes(graph.pipe(format="svg"))
        written.append(path)
    return written
# [pyro-end]


PYRO_VIEWS = ["vae", "m2"]
COMMITTED = Path(__file__).resolve().parents[1] / "_static" / "views"


def draw_all(out: Path, pyro_only: bool = False) -> list[Path]:
    """Draw every model of :data:`MODELS` into ``out``; returns the files written. The ``pyro.render_model``
    pictures are rendered when ``dot`` is installed, else copied from :data:`COMMITTED`."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PYRO_VIEWS:
        if shutil.which("dot"):
            written += draw_pyro(name, MODELS[name](), out)
        elif not pyro_only:
            for f in sorted(COMMITTED.glob(f"{name}_pyro_*.svg")):
                written.append(Path(shutil.copy(f, out / f.name)))
        else:
            raise RuntimeError("Graphviz's dot program is needed to render the pyro.render_model pictures")
    if pyro_only:
        return written
    for name, build in MODELS.items():
        m = build()
        graph, latex = out / f"{name}_graph.png", out / f"{name}_latex.png"
        draw_graph(m["model"], graph)
        formulas = [m["model"]._dgm_latex_text()] + [d._dgm_latex_text() for d in m["others"]]
        draw_latex(formulas + [r"\mathcal{L} = " + m["loss"].latex], latex)
        written += [graph, latex]
    return written


if __name__ == "__main__":  # python docs/_ext/model_views.py [folder] [--pyro: the render_model pictures only]
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the package from this checkout
    args = [a for a in sys.argv[1:] if a != "--pyro"]
    for f in draw_all(Path(args[0] if args else "out/model_views"), pyro_only="--pyro" in sys.argv):
        print(f)
