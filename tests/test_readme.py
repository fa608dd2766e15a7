"""The README's Python examples run as written (with a smaller training budget)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = BLOCKS[index].replace("100_000", "1_024")
    # Raises (and fails the test) if the example is broken.
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "__readme__"})
