"""A small Sphinx extension for the pyro_dgm docs.

- ``.. package-api:: pyro_dgm.losses`` writes a package's API reference from the package itself: a summary table and
  an autodoc entry for each name in its ``__all__``, then the same for each public submodule's ``__all__`` names that
  the package does not re-export. Nothing is listed by hand, so a class added to a package appears in the docs.
- Cross-references written with a defining module's path (``:class:`~pyro_dgm.losses.pdf.LogProb```) resolve to the
  entry of the same object under the package (``pyro_dgm.losses.LogProb``).
- ``builder-inited`` draws the pictures of the model views page (:mod:`model_views`) into ``docs/_build/figures``.
- The benchmarks page includes ``benchmarks/README.md`` when that file exists, and says so when it does not.
- A tutorial executed at smoke size (``dgm_tutorials_smoke = True`` in ``conf.py``) says so in a note at its top.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import make_refnode, nested_parse_with_titles

BENCHMARK_MARKER = "<!-- benchmarks-readme -->"


# ------------------------------------------------------------------------------------------------ names to document
def _public_names(module: Any) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        return []
    return [n for n in names if hasattr(module, n)]


def _submodules(package: Any) -> list[Any]:
    """The public submodules of ``package`` (not starting with ``_``), imported, in name order."""
    if not hasattr(package, "__path__"):
        return []
    out = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        out.append(importlib.import_module(f"{package.__name__}.{info.name}"))
    return out


def home_package(obj: Any) -> str | None:
    """The documented package that defines ``obj`` (by its ``__module__``), or None."""
    module = getattr(obj, "__module__", None) or ""
    for package in DOCUMENTED_PACKAGES:
        if module == package or module.startswith(package + "."):
            return package
    return None


def reexports(package_name: str) -> list[str]:
    """The names of the package's ``__all__`` that another documented package defines (``pyro_dgm.losses`` offers
    ``DataParalleledLoss`` of ``pyro_dgm.models`` as Pixyz does): documented there, linked from here."""
    package = importlib.import_module(package_name)
    return [n for n in _public_names(package) if not _is_data(getattr(package, n))
            and home_package(getattr(package, n)) not in (None, package_name)]


def api_sections(package_name: str) -> list[tuple[str, list[str]]]:
    """``[(module name, [names to document there])]``: the package's ``__all__`` (less :func:`reexports`), then each
    public submodule's ``__all__`` names that are not the package's (by identity); sections with nothing left are
    dropped."""
    package = importlib.import_module(package_name)
    elsewhere = set(reexports(package_name))
    names = [n for n in _public_names(package) if n not in elsewhere]
    seen = {id(getattr(package, n)) for n in names if not _is_data(getattr(package, n))}
    sections = [(package_name, names)]
    for sub in _submodules(package):
        extra = []
        for n in _public_names(sub):
            obj = getattr(sub, n)
            if _is_data(obj):  # constants: by name (equal small ints are one object)
                if n not in names:
                    extra.append(n)
                continue
            if id(obj) in seen or getattr(obj, "__module__", sub.__name__) != sub.__name__:
                continue  # documented already, or imported from elsewhere and re-exported
            seen.add(id(obj))
            extra.append(n)
        if extra:
            sections.append((sub.__name__, extra))
    return sections


def _is_data(obj: Any) -> bool:
    return not (inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj))


def _alias_of(module: Any, name: str, names: list[str]) -> str | None:
    """The name under which ``module.<name>`` is also listed, when ``name`` is a second name for it (``E`` for
    ``Expectation``); None otherwise."""
    obj = getattr(module, name)
    own = getattr(obj, "__name__", name)
    if own == name or _is_data(obj):
        return None
    return own if own in names and getattr(module, own) is obj else None


def _directive_for(obj: Any) -> str:
    if inspect.isclass(obj):
        return "autoexception" if issubclass(obj, BaseException) else "autoclass"
    if inspect.isroutine(obj):
        return "autofunction"
    return "autodata"


def documented_names() -> dict[int, str]:
    """``{id(object): documented full name}`` for every object the API pages document (the first name wins)."""
    out: dict[int, str] = {}
    for package in DOCUMENTED_PACKAGES:
        for module_name, names in api_sections(package):
            module = importlib.import_module(module_name)
            for n in names:
                obj = getattr(module, n)
                if not _is_data(obj):
                    out.setdefault(id(obj), f"{module_name}.{n}")
    return out


DOCUMENTED_PACKAGES = ["pyro_dgm.distributions", "pyro_dgm.losses", "pyro_dgm.models", "pyro_dgm.flows",
                       "pyro_dgm.poutine", "pyro_dgm.layers", "pyro_dgm.utils"]


class PackageAPI(SphinxDirective):
    """``.. package-api:: pyro_dgm.losses``: the package's API reference, generated from its ``__all__``."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        package_name = self.arguments[0]
        lines: list[str] = []
        for i, (module_name, names) in enumerate(api_sections(package_name)):
            module = importlib.import_module(module_name)
            source = inspect.getsourcefile(module)
            if source:
                self.env.note_dependency(source)
            if i == 0:
                lines += [f".. automodule:: {module_name}", "   :no-members:", ""]
            else:
                title = f"``{module_name}``"
                lines += [title, "-" * len(title), "",
                          f".. automodule:: {module_name}", "   :no-members:", ""]
            aliases = {n: _alias_of(module, n, names) for n in names}
            lines += [f".. currentmodule:: {module_name}", "", ".. autosummary::", "   :nosignatures:", ""]
            lines += [f"   {n}" for n in names if aliases[n] is None] + [""]
            if i == 0 and reexports(package_name):
                links = ", ".join(f":py:obj:`{n} <{home_package(getattr(module, n))}.{n}>`"
                                  for n in reexports(package_name))
                lines += [f"Also importable from here: {links}.", ""]
            if any(aliases.values()):
                also = ", ".join(f"``{n}`` (:py:obj:`{a}`)" for n, a in aliases.items() if a is not None)
                lines += [f"Other names: {also}.", ""]
            for n in names:
                directive = _directive_for(getattr(module, n))
                lines += [f".. {directive}:: {n}", ""]
        node = nodes.container()
        node.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source=f"<package-api {package_name}>"), node)
        return node.children


# ------------------------------------------------------------------------------------------------ references
_DOCUMENTED: dict[int, str] | None = None


def _resolve_object(target: str) -> Any:
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def missing_reference(app: Sphinx, env: Any, node: Any, contnode: nodes.Node) -> nodes.Node | None:
    """Resolve ``pyro_dgm.<defining module>.<Name>[.<member>]`` to the documented ``pyro_dgm.<package>.<Name>``."""
    global _DOCUMENTED
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    candidates = [target]
    module = node.get("py:module")
    if module and not target.startswith("pyro_dgm."):
        candidates.append(f"{module}.{target}")
    if _DOCUMENTED is None:
        _DOCUMENTED = documented_names()
    domain = env.get_domain("py")
    owner = _resolve_object(f"{module}.{node.get('py:class')}") if module and node.get("py:class") else None
    if inspect.isclass(owner) and "." not in target:  # a member inherited from a documented base class
        for base in owner.__mro__:
            name = _DOCUMENTED.get(id(base))
            entry = domain.objects.get(f"{name}.{target}") if name else None
            if entry is not None:
                return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode,
                                    f"{name}.{target}")
    for candidate in candidates:
        if not candidate.startswith("pyro_dgm."):
            continue
        parts = candidate.split(".")
        for cut in range(len(parts), 1, -1):  # the longest prefix that is a documented object; the rest are members
            obj = _resolve_object(".".join(parts[:cut]))
            name = _DOCUMENTED.get(id(obj)) if obj is not None else None
            if name is None:
                continue
            full = ".".join([name, *parts[cut:]])
            entry = domain.objects.get(full)
            if entry is not None:
                return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, full)
            break
    return None


# ------------------------------------------------------------------------------------------------ figures, benchmarks
def draw_figures(app: Sphinx) -> None:
    import model_views

    model_views.draw_all(Path(app.srcdir) / "_build" / "figures")


def include_benchmarks(app: Sphinx, docname: str, source: list[str]) -> None:
    if docname != "benchmarks" or BENCHMARK_MARKER not in source[0]:
        return
    readme = Path(app.srcdir).parent / "benchmarks" / "README.md"
    if readme.is_file():
        app.env.note_dependency(str(readme))
        text = "```{include} ../benchmarks/README.md\n:relative-images:\n```\n"
    else:
        text = ("# Benchmarks\n\n"
                "This page shows `benchmarks/README.md` (the benchmark tables and the commands that produced them), "
                "but that file did not exist when these pages were built. The benchmarks run from a source checkout "
                "(`python benchmarks/run.py --help`); rebuild the docs (`make docs`) once the file is there.\n")
    source[0] = source[0].replace(BENCHMARK_MARKER, text)


# ------------------------------------------------------------------------------------------------ tutorials
SMOKE_NOTE = ("These outputs come from a smoke-size run (the site was built with PYRO_DGM_SMOKE=1): the training "
              "loops took a few steps only, so losses and pictures are those of barely trained models; the code is the "
              "same. Run the notebook, or build the site with make docs, for the full-size results.")


def smoke_note(app: Sphinx, doctree: nodes.document) -> None:
    """At the top of each tutorial built at smoke size (``dgm_tutorials_smoke``), a note that says so."""
    if not app.config.dgm_tutorials_smoke or not app.env.docname.startswith("tutorials/0"):
        return
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None or not section.children or not isinstance(section[0], nodes.title):
        return
    section.insert(1, nodes.note("", nodes.paragraph(text=SMOKE_NOTE)))


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("dgm_tutorials_smoke", False, "env")
    app.connect("doctree-read", smoke_note)
    app.add_directive("package-api", PackageAPI)
    app.connect("missing-reference", missing_reference)
    app.connect("builder-inited", draw_figures)
    app.connect("source-read", include_benchmarks)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
