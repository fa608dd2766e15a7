"""The documentation site builds with Sphinx, warnings as errors (broken links, autodoc failures, bad markup)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")
pytest.importorskip("sphinx_rtd_theme")

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_docs_build_without_warnings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    for page in ("index", "modules/r2vpo", "modules/r2vpo_off", "core", "guide/llm", "guide/trl", "results"):
        assert (tmp_path / f"{page}.html").exists(), page
    # autodoc really documented the classes (an import failure would leave the section empty).
    assert "var_coef_lr" in (tmp_path / "modules" / "r2vpo.html").read_text()
