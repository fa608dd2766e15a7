"""Sphinx configuration: MyST markdown pages, autodoc for the API, SB3's theme."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

project = "sb3-r2vpo"
author = "sb3-r2vpo developers"
copyright = "2026, sb3-r2vpo developers"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_copybutton",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
exclude_patterns = ["_build"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Inherited SB3/TRL docstrings are not ours and are not written for these pages.
autodoc_inherit_docstrings = False

html_theme = "sphinx_rtd_theme"
html_title = "sb3-r2vpo"
