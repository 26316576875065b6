"""Sphinx configuration of jaxvi's documentation (`make -C docs html`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# Document the checkout this folder is in, whatever jaxvi is installed elsewhere; the notebook
# kernels get the same path (they inherit the environment).
sys.path[:0] = [str(ROOT), str(DOCS / "_ext")]
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)

from jaxvi import __version__  # noqa: E402

project = "jaxvi"
author = "the jaxvi authors"
copyright = "the jaxvi authors"
release = version = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
    "apigen",  # docs/_ext/apigen.py: writes api/*.rst from the package's public names
    "plaintext_docstrings",  # docs/_ext: `|x|` and `weights_` in docstrings are plain text
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "README.md", "**/.ipynb_checkpoints", "jupyter_execute",
                    "benchmarks/tables.md"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
root_doc = "index"

# ---- API reference ------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
# `name` in a docstring is code (and a link where Sphinx knows the name).
default_role = "py:obj"
napoleon_google_docstring = True
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_attr_annotations = True
# `Attributes:` as fields (:ivar:), not attribute entries: autodoc already documents a
# NamedTuple's fields as members, and two entries of one name are a duplicate-object warning.
napoleon_use_ivar = True

# ---- Executed pages (Jupytext MyST Markdown) ----------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# Pages run at build time; their outputs are cached by their source (jupyter-cache), so a
# rebuild re-executes only the pages that changed. `make html-noexec` skips execution.
nb_execution_mode = os.environ.get("JAXVI_DOCS_EXECUTE", "cache")
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# ---- HTML ---------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"jaxvi {version}"
html_show_sourcelink = False

# Warnings are errors (-W in the Makefile); these are not warnings about this project.
suppress_warnings = ["myst.header"]
