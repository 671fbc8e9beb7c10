"""The README's Python section runs as printed (so it cannot drift from the API)."""
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_readme_python_section_runs_as_printed():
    blocks = re.findall(r"```python\n(.*?)```", _section("Python"), flags=re.S)
    assert len(blocks) == 2, "the Python section has its model block and its analysis block"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    plt.close("all")
    assert namespace["out"].logits.shape == (1, 19, 128, 128)
    assert namespace["losses"]["loss"].ndim == 0
    assert namespace["a"].image.shape[2] == 3
    assert tuple(namespace["loaded"].normalization[0]) == (0.5, 0.5, 0.5)
