"""Packaging and layering rules of DESIGN.md, and the README's main job."""

import importlib.resources
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import sb3_r2vpo

REPO = Path(__file__).resolve().parents[1]


def test_version_and_exports() -> None:
    assert sb3_r2vpo.__version__.count(".") == 2
    assert sb3_r2vpo.R2VPO.__name__ == "R2VPO"


def test_import_does_not_pull_heavy_optional_dependencies() -> None:
    code = (
        "import sys, sb3_r2vpo, sb3_r2vpo.core; "
        "print(sorted(m for m in ('rl_zoo3', 'optuna', 'transformers', 'vllm', 'trl', 'verl', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_core_imports_torch_only() -> None:
    code = "import sys, sb3_r2vpo.core; print(sorted(m for m in ('stable_baselines3', 'gymnasium') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_hyperparams_are_shipped_as_package_data() -> None:
    shipped = importlib.resources.files("sb3_r2vpo.hyperparams").joinpath("r2vpo.yml")
    entries = yaml.safe_load(shipped.read_text())
    assert {"CartPole-v1", "Pendulum-v1", "default"} <= set(entries)
    assert all("clip_range" not in entry for entry in entries.values())


def test_quickstart_runs_and_prints_an_evaluation() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "quickstart.py"), "--timesteps", "2048"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "R2VPO on CartPole-v1 after 2048 steps: mean reward" in result.stdout


def test_every_subpackage_is_listed_for_the_wheel() -> None:
    """pyproject.toml lists packages explicitly (for the hyperparams mapping): a new subpackage must be added there."""
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for top in ("sb3_r2vpo", "llm_adapter")
        for init in (REPO / top).rglob("__init__.py")
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
