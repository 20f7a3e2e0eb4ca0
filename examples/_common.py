"""What every example shares: matplotlib without a display, pyro_dgm from a source checkout, the command line's common
options, seeding, and writing the figure. Nothing here is about a model.

An example imports it first (``python examples/<name>.py`` puts ``examples/`` on the path; the tests load examples by
file, so each example adds its own folder)::

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")  # no display: the examples write PNG files
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a source checkout without installing: python examples/<name>.py
    sys.path.insert(1, str(ROOT))

HELP = {"epochs": "passes over the training set", "lr": "Adam learning rate", "batch_size": "minibatch size",
        "seed": "seed of the data, the networks and the draws", "smoke": "a few seconds: 3 epochs on a small data set"}


def parser(doc: str, out: str, epochs: int | None = None, lr: float | None = None, batch_size: int | None = None,
           threads: bool = True, helps: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The options every example takes (``--seed``, ``--out``, ``--smoke``, and ``--threads`` unless
    ``threads=False``), plus ``--epochs``, ``--lr`` and ``--batch-size`` where a default is given; ``helps``
    overrides the help text of any of them (by the argument's name, e.g. ``"batch_size"``). Defaults are shown."""
    text = {**HELP, **(helps or {})}
    ap = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for name, kind, value in (("epochs", int, epochs), ("lr", float, lr), ("batch_size", int, batch_size)):
        if value is not None:
            ap.add_argument("--" + name.replace("_", "-"), type=kind, default=value, help=text[name])
    ap.add_argument("--seed", type=int, default=0, help=text["seed"])
    if threads:
        ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=Path(out), help="where to write the PNG")
    ap.add_argument("--smoke", action="store_true", help=text["smoke"])
    return ap


def setup(seed: int, threads: int = 1) -> None:
    """``threads`` CPU threads (the networks are small: more threads only wait on each other), every seed (torch,
    numpy, random) and an empty Pyro parameter store."""
    import pyro

    torch.set_num_threads(threads)
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()


def save(fig: plt.Figure, path: Path, **savefig: Any) -> None:
    """Write ``fig`` to ``path`` (creating its folder), close it and say where it went."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, **savefig)
    plt.close(fig)
    print(f"wrote {path}")
