"""The documentation pages that are written by hand stay in step with what they show.

- The gallery (``docs/gallery.md``) has one entry per example script, each with its figure, committed under
  ``docs/gallery/`` as a PNG of at most 150 KB, and the command that made it.
- The ``pyro.render_model`` pictures of the views page exist as committed copies (``docs/_static/views``) for every
  view that ``docs/_ext/model_views.py`` draws, so a build on a machine without Graphviz shows them too; and they
  show the sample sites that Pyro's trace of the same model has.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))


def _gallery_entries() -> dict[str, str]:
    """``{script name: the entry's text}`` from the gallery's ``### `name.py`...`` headings."""
    text = (DOCS / "gallery.md").read_text(encoding="utf-8")
    parts = re.split(r"^### `([a-z0-9_]+)\.py`.*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_gallery_has_every_example() -> None:
    assert len(EXAMPLES) >= 19
    assert sorted(_gallery_entries()) == EXAMPLES


@pytest.mark.parametrize("name", EXAMPLES)
def test_gallery_entry(name: str) -> None:
    entry = _gallery_entries()[name]
    assert f"python examples/{name}.py" in entry, "the entry states the command that made the figure"
    assert f"```{{image}} gallery/{name}.png" in entry
    assert re.search(r"\*\*[^*]*\d[^*]*\*\*", entry), "the entry has a headline number in bold"
    png = DOCS / "gallery" / f"{name}.png"
    assert png.is_file(), png
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size <= 150_000, f"{png} is {png.stat().st_size} bytes; keep gallery figures small"


def test_pyro_views_are_committed() -> None:
    pytest.importorskip("matplotlib")
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import model_views
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    import pyro.poutine as poutine
    import pyro.poutine.util  # noqa: F401
    import torch

    for name in model_views.PYRO_VIEWS:
        m = model_views.MODELS[name]()
        views = model_views.pyro_views(name, m)
        for view in views:
            svg = (model_views.COMMITTED / f"{name}_pyro_{view}.svg").read_text(encoding="utf-8")
            assert "<svg" in svg
        # the picture of the model has a node for each sample site of Pyro's own trace of it
        x = torch.rand(5, 64).bernoulli()
        trace = poutine.trace(m["model"].model).get_trace(x=x)
        sites = {n for n, s in trace.nodes.items()
                 if s["type"] == "sample" and not poutine.util.site_is_subsample(s)}  # not the plate
        svg = (model_views.COMMITTED / f"{name}_pyro_model.svg").read_text(encoding="utf-8")
        nodes = set(re.findall(r'<g id="node\d+" class="node">\s*<title>([^<]+)</title>', svg))
        assert sites <= nodes, (name, sites, nodes)
