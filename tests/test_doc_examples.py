"""The Python examples of the guides run as written (slow: opt in with --run-slow)."""

import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.slow
@pytest.mark.parametrize("page", ["fine-tuning.md"])
def test_guide_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.DOTALL)
    assert blocks
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, f"{page}", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "curve.png").exists() and (tmp_path / "lr_find.png").exists()
    assert any((tmp_path / "feature-cache").iterdir())
