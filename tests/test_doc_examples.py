"""The Python examples of the guides run as written (in every run of the suite)."""

import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"

EXPECTED = {
    "fine-tuning.md": ["curve.png", "lr_find.png", "feature-cache"],
    "tuning.md": ["digits_pretrained.keras", "runs/search/best_model.keras",
                  "runs/search/results.csv", "runs/search/trials.png", "runs/search/features"],
}


@pytest.mark.parametrize("page", sorted(EXPECTED))
def test_guide_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.DOTALL)
    assert blocks
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, f"{page}", "exec"), namespace)  # noqa: S102
    for name in EXPECTED[page]:
        path = tmp_path / name
        assert path.exists(), name
        if path.is_dir():
            assert any(path.iterdir()), name
