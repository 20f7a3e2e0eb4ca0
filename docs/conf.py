"""Sphinx configuration of the pyro_dgm documentation (``make docs``).

The API pages are generated from the package at build time (``docs/_ext/dgm_docs.py``: each public name in a
package's ``__all__``, and in its public submodules' ``__all__``), the tutorials are the notebooks in
``docs/tutorials``, executed by the build (myst-nb with jupyter-cache: a notebook runs again only when its code
changed; a cell that raises fails the build), and the pictures of the model views are drawn at build time into
``docs/_build/figures``. ``make docs`` runs the notebooks at full size; ``make docs-smoke`` sets ``PYRO_DGM_SMOKE=1``,
which the notebooks read to train for a few steps only.
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
# no MPLBACKEND for the notebooks' kernels: ipykernel then draws figures inline, into the pages (the model views are
# drawn with Agg, which docs/_ext/model_views.py selects itself)
os.environ.pop("MPLBACKEND", None)
# the notebooks' kernels import the package from this checkout too, installed or not
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
# tqdm.auto warns, in a kernel without ipywidgets, that it falls back to text progress bars: not for the pages
os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), "ignore:IProgress not found"]))

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
# The build executes the tutorials and shows their outputs; jupyter-cache (in docs/_build/.jupyter_cache) keeps each
# notebook's outputs until its code changes, so a rebuild without changes executes nothing. A cell that raises fails
# the build, with the cell's traceback in the log.
nb_execution_mode = os.environ.get("PYRO_DGM_NB_EXECUTION", "cache")   # "off" to render the notebooks as stored
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_timeout = 600        # seconds per cell
nb_execution_in_temp = True       # in a temporary working directory, so nothing is written into docs/
# PYRO_DGM_SMOKE=1 (`make docs-smoke`) trains for a few steps only; the two sizes keep separate caches, since
# jupyter-cache knows a notebook by its code, not by the environment it ran in
SMOKE = os.environ.get("PYRO_DGM_SMOKE") == "1"
nb_execution_cache_path = str(DOCS / "_build" / (".jupyter_cache_smoke" if SMOKE else ".jupyter_cache"))
dgm_tutorials_smoke = SMOKE       # docs/_ext/dgm_docs.py: a note at the top of each tutorial says so
nb_merge_streams = True           # one output block per cell for what a loop prints
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# ------------------------------------------------------------------------------------------------ HTML
# Furo (the PyData theme of pip, attrs, urllib3...): a sidebar from about 1070 px up, a contents column from about
# 1310 px, a menu below; code blocks scroll sideways instead of clipping. docs/_static/custom.css widens the content
# column where Furo would leave a blank band (1072-1312 px, and from 1664 px).
html_theme = "furo"
html_title = f"pyro_dgm {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {"navigation_with_keys": True}
pygments_style = "friendly"
pygments_dark_style = "monokai"
