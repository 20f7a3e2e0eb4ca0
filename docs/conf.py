"""Sphinx configuration of the pyro_dgm documentation (``make docs``).

The API pages are generated from the package at build time (``docs/_ext/dgm_docs.py``: each public name in a
package's ``__all__``, and in its public submodules' ``__all__``), the tutorials are the notebooks in
``docs/tutorials`` rendered as stored (they are not executed here; ``tests/test_notebooks.py`` runs them), and the
pictures of the model views are drawn at build time into ``docs/_build/figures``.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))            # the package from this checkout, installed or not
sys.path.insert(0, str(DOCS / "_ext"))   # the local extension
os.environ.setdefault("MPLBACKEND", "Agg")

import pyro_dgm  # noqa: E402

project = "pyro_dgm"
author = "the pyro_dgm developers"
copyright = "the pyro_dgm developers, MIT licence"
release = version = pyro_dgm.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",        # Markdown pages (MyST) and the tutorial notebooks
    "dgm_docs",       # docs/_ext/dgm_docs.py: API pages from __all__, figures, the benchmark page
]
try:  # MathJax served with the pages (the docs extra installs it), so formulas render offline too; else a CDN
    importlib.import_module("sphinx-mathjax-offline")
except ImportError:
    pass
else:
    extensions.append("sphinx-mathjax-offline")

root_doc = "index"
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "_ext", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# ------------------------------------------------------------------------------------------------ API reference
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = True
autosummary_generate = False      # the tables link to the entries on the same page; no stub files
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True

# ------------------------------------------------------------------------------------------------ notebooks, Markdown
nb_execution_mode = "off"         # the notebooks are executed by tests/test_notebooks.py, not by the build
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# ------------------------------------------------------------------------------------------------ HTML
html_theme = "alabaster"
html_title = f"pyro_dgm {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Deep generative models written as their formulas, on Pyro",
    "fixed_sidebar": True,
    "page_width": "1280px",
    "code_font_size": "0.8em",
    "sidebar_width": "240px",
}
html_sidebars = {"**": ["about.html", "navigation.html", "searchbox.html"]}
