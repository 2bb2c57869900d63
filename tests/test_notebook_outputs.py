"""What nbval compares must not depend on the last bits of a float.

nbval (lax mode) compares the outputs of the cells tagged ``nbval-check-output``, glued values
included. A float printed with all its digits there changes with a numpy, BLAS or CPU change, so
this scans the committed notebooks and fails on any compared number with more than 8
significant digits.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
NUMBER = re.compile(r"(?<![\w.])[-+]?(\d+)\.(\d+)(?:[eE][-+]?\d+)?")
MAX_SIGNIFICANT = 8


def significant_digits(integer: str, fraction: str) -> int:
    return len((integer + fraction).lstrip("0"))


def compared_texts(nb_path: Path):
    """(cell index, text) of every output nbval compares in lax mode."""
    cells = json.loads(nb_path.read_text())["cells"]
    for i, cell in enumerate(cells):
        if "nbval-check-output" not in cell.get("metadata", {}).get("tags", []):
            continue
        for out in cell.get("outputs", []):
            if "text" in out:
                yield i, "".join(out["text"])
            for mime, data in out.get("data", {}).items():
                if mime.startswith("text/") or "papermill" in mime:
                    yield i, "".join(data) if isinstance(data, list) else str(data)


def long_floats(text: str) -> list[str]:
    return [
        m.group(0)
        for m in NUMBER.finditer(text)
        if significant_digits(m.group(1), m.group(2)) > MAX_SIGNIFICANT
    ]


def test_the_scanner_finds_unrounded_floats():
    assert long_floats("0.6190145817054231 and 4.3589") == ["0.6190145817054231"]
    assert long_floats("6.248978335671466e-05") == ["6.248978335671466e-05"]
    assert long_floats("0.00012345678 1234.5678 step 1000") == []


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_no_compared_output_carries_an_unrounded_float(nb):
    found = [(i, f) for i, text in compared_texts(nb) for f in long_floats(text)]
    assert not found, f"{nb.name}: compared outputs with > {MAX_SIGNIFICANT} digits: {found[:5]}"
