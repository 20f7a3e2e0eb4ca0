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


DOCUMENTED_PACKAGES = ["pyro_dgm.distributions", "pyro_dgm.losses", "pyro_dgm.models", "pyro_dgm.flows",
                       "pyro_dgm.poutine", "pyro_dgm.layers", "pyro_dgm.utils"]  # docs/_ext/dgm_docs.py's


def _api_objects() -> dict[str, object]:
    """``{full name: object}`` for the classes and functions in the ``__all__`` of each documented package and of
    its public submodules (what the API pages list), each under the module that defines it."""
    import importlib
    import inspect
    import pkgutil

    out: dict[str, object] = {}
    for package_name in DOCUMENTED_PACKAGES:
        package = importlib.import_module(package_name)
        modules = [package] + [importlib.import_module(f"{package_name}.{i.name}")
                               for i in pkgutil.iter_modules(package.__path__) if not i.name.startswith("_")]
        for module in modules:
            for n in getattr(module, "__all__", []):
                obj = getattr(module, n, None)
                if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__.startswith("pyro_dgm"):
                    out.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    return out


def _documented_parameters(doc: str) -> list[str] | None:
    """The names a numpydoc ``Parameters`` section lists (``a, b : int`` lists two), or None without one."""
    import inspect

    lines = inspect.cleandoc(doc).splitlines()
    if "Parameters" not in lines:
        return None
    i = lines.index("Parameters") + 2
    names: list[str] = []
    while i < len(lines) and not (i + 1 < len(lines) and lines[i + 1].strip() and set(lines[i + 1].strip()) <= {"-"}):
        m = re.match(r"^(\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)*)\s*(?::|$)", lines[i])
        if m:
            names += [n.strip().lstrip("*") for n in m.group(1).split(",")]
        i += 1
    return names


def test_every_parameter_of_a_documented_signature_is_in_its_parameters_section() -> None:
    """Where a class or function of an API page has a ``Parameters`` section, it names each parameter of the
    signature (not ``self``, ``*args``, ``**kwargs``), and each name it lists is one (probe p151 found five
    classes whose lists left parameters out)."""
    import inspect

    missing, unknown = {}, {}
    for name, obj in _api_objects().items():
        documented = _documented_parameters(inspect.getdoc(obj) or "")
        if documented is None:
            continue
        try:
            signature = inspect.signature(obj)
        except (TypeError, ValueError):
            continue
        params = [p.name for p in signature.parameters.values()
                  if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"]
        varargs = {p.name for p in signature.parameters.values() if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if [p for p in params if p not in documented]:
            missing[name] = [p for p in params if p not in documented]
        if [d for d in documented if d not in params and d not in varargs]:
            unknown[name] = [d for d in documented if d not in params and d not in varargs]
    assert not missing, f"parameters missing from the docstrings: {missing}"
    assert not unknown, f"documented names that are no parameters: {unknown}"


def test_the_error_classes_the_docs_name_are_in_the_api() -> None:
    """Each error class of ``pyro_dgm.utils.checks`` that the docs name (porting.md's rows tell users what to
    catch: `ShapeError`, `OutOfRangeError`...) and each ``pyro_dgm.utils.checks.X`` they name is in that module's
    ``__all__``, from which its API page is made, and defined there (none was: the module had no ``__all__``)."""
    from pyro_dgm.utils import checks

    text = "".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *DOCS.glob("*.md")])
    named = set(re.findall(r"pyro_dgm\.utils\.checks\.([A-Za-z_]\w*)", text))
    named |= {n for n in re.findall(r"`(\w+Error)`", text) if hasattr(checks, n)}
    assert {"ShapeError", "OutOfRangeError", "DTypeError", "strict_shapes"} <= named
    assert named <= set(checks.__all__), named - set(checks.__all__)
    for n in checks.__all__:
        assert getattr(checks, n).__module__ == "pyro_dgm.utils.checks", n
