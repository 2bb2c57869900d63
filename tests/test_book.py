"""Consistency checks of the book's sources (no notebook is executed here; nbval does that)."""

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())


def toc_files() -> list[str]:
    files = [TOC["root"]]
    for part in TOC.get("parts", []):
        files += [c["file"] for c in part["chapters"]]
    files += [c["file"] for c in TOC.get("chapters", [])]
    return files


CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))


def code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def test_every_toc_entry_exists_and_every_chapter_is_in_the_toc():
    entries = toc_files()
    for entry in entries:
        assert any((ROOT / f"{entry}{ext}").exists() for ext in (".md", ".ipynb")), entry
    for nb in CHAPTERS:
        assert f"book/{nb.stem}" in entries, f"{nb.name} is not in _toc.yml"


def test_build_excludes_hidden_folders_and_does_not_execute():
    assert ".*" in CONFIG["exclude_patterns"]
    assert "_build" in CONFIG["exclude_patterns"]
    assert CONFIG["execute"]["execute_notebooks"] == "off"


@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.name)
def test_colab_cell_installs_from_the_configured_repository(nb):
    url = CONFIG["repository"]["url"].rstrip("/")
    first = code_cells(nb)[0]
    assert "remove-cell" in first["metadata"].get("tags", [])
    found = re.findall(r"git clone -q --depth 1 (\S+?)\.git", "".join(first["source"]))
    assert found == [url], f"{nb.name}: Colab cell clones {found}, _config.yml says {url}"


@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.name)
def test_notebook_is_committed_executed_without_errors(nb):
    cells = code_cells(nb)
    run = [c for c in cells if "remove-cell" not in c["metadata"].get("tags", [])]
    assert all(c["execution_count"] is not None for c in run), "a code cell was never executed"
    counts = [c["execution_count"] for c in run]
    assert counts == sorted(counts), "cells were not executed top to bottom"
    for c in cells:
        for out in c.get("outputs", []):
            assert out["output_type"] != "error", "a stored output is an error"
            assert "image/svg+xml" not in out.get("data", {}), "SVG output breaks nbval"
            text = "".join(out.get("text", ""))
            assert "\x1b[" not in text, "ANSI escape codes in a stored output"
    tagged = [c for c in cells if "nbval-check-output" in c["metadata"].get("tags", [])]
    assert tagged, "no nbval-check-output cell: no claim of this chapter is compared"
