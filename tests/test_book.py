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
        assert any((ROOT / f"{entry}{ext}").exists() for ext in (".md", ".ipynb", ".rst")), entry
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


# --------------------------------------------------------------------------------------------
# The pages read as an argument (issue 12): numbered figures with captions and alt text, one live
# figure per interaction, folded check code, linked chapter mentions, distinct citation labels
# --------------------------------------------------------------------------------------------


def _cells(nb: Path) -> list[dict]:
    return json.loads(nb.read_text())["cells"]


def _src(cell: dict) -> str:
    return "".join(cell["source"])


def _tags(cell: dict) -> list[str]:
    return cell["metadata"].get("tags", [])


def _draws_a_figure(cell: dict) -> bool:
    has_png = any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))
    return has_png or "plt.show()" in _src(cell)


@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.name)
def test_every_figure_has_a_name_a_caption_and_alt_text(nb):
    names = []
    for c in _cells(nb):
        if c["cell_type"] != "code" or "remove-cell" in _tags(c):
            continue
        live_cell = "live." in _src(c) and "_explorer(" in _src(c)
        if not (_draws_a_figure(c) or live_cell):
            continue
        meta = c["metadata"].get("mystnb", {})
        fig = meta.get("figure", {})
        first = _src(c).splitlines()[0]
        assert fig.get("name", "").startswith("fig-"), f"{nb.name}: no figure name in {first!r}"
        assert len(fig.get("caption", "")) > 60, f"{nb.name}: no real caption for {fig['name']}"
        if live_cell:
            assert fig["caption"].startswith("Live:"), fig["name"]
        else:
            alt = meta.get("image", {}).get("alt", "")
            assert len(alt) > 30 and not alt.endswith(".png"), f"{nb.name}: alt of {fig['name']}"
        names.append(fig["name"])
    assert len(names) == len(set(names)), f"{nb.name}: a figure name is used twice"
    prose = " ".join(_src(c) for c in _cells(nb) if c["cell_type"] == "markdown")
    prose += " ".join(c["metadata"].get("mystnb", {}).get("figure", {}).get("caption", "")
                      for c in _cells(nb))  # fmt: skip
    for name in names:
        assert f"{{numref}}`{name}`" in prose, f"{nb.name}: the text never refers to {name}"


@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.name)
def test_one_live_figure_per_slider_panel(nb):
    panels, lives = [], []
    for c in _cells(nb):
        src = _src(c)
        if c["cell_type"] != "code":
            continue
        panels += re.findall(r"widgets\.(\w+_explorer)\(", src)
        lives += re.findall(r"live\.(\w+_explorer)\(", src)
        if re.search(r"widgets\.\w+_explorer\(", src):
            assert "remove-cell" in _tags(c), f"{nb.name}: a slider panel shows in the page"
            assert "nbval-ignore-output" in _tags(c)
        if re.search(r"live\.\w+_explorer\(", src):
            assert {"remove-input", "nbval-ignore-output"} <= set(_tags(c)), nb.name
    assert sorted(panels) == sorted(lives), f"{nb.name}: panels {panels}, live figures {lives}"


@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.name)
def test_check_cells_fold_their_code(nb):
    for c in _cells(nb):
        if "nbval-check-output" in _tags(c):
            assert {"hide-input", "remove-input"} & set(_tags(c)), _src(c).splitlines()[0]


@pytest.mark.parametrize("nb", [*CHAPTERS, ROOT / "book" / "intro.md"], ids=lambda p: p.name)
def test_chapter_mentions_are_links(nb):
    if nb.suffix == ".md":
        texts = [nb.read_text()]
    else:
        texts = [_src(c) for c in _cells(nb) if c["cell_type"] == "markdown"]
    for text in texts:
        text = re.sub(r"\{doc\}`[^`]*`", "", text)  # linked mentions
        own = re.escape(nb.stem[:2].lstrip("0"))
        bare = re.findall(rf"\b[Cc]hapters? (?!{own}\b)\d\b", text)
        assert not bare, f"{nb.name}: unlinked {bare}"


def test_toc_numbers_the_chapters():
    assert TOC.get("defaults", {}).get("numbered") is True


def test_citation_labels_tell_the_two_makkuva_papers_apart():
    import sys

    from pybtex.database import parse_file

    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    import bib_labels

    bib = parse_file(str(ROOT / "book" / "references.bib"))
    entries = sorted(bib.entries.values(), key=lambda e: e.key)
    labels = dict(
        zip((e.key for e in entries), bib_labels.AuthorYearLabels().format_labels(entries),
            strict=True)
    )  # fmt: skip
    assert len(set(labels.values())) == len(labels), labels
    assert {labels["makkuva2024attention"], labels["makkuva2024local"]} == {
        "Makkuva et al. 2024a", "Makkuva et al. 2024b"}  # fmt: skip
    assert CONFIG["sphinx"]["config"]["bibtex_reference_style"] == "label"
    assert CONFIG["sphinx"]["config"]["bibtex_default_style"] == bib_labels.STYLE


def test_no_widget_manager_or_thebe_from_a_cdn():
    sphinx = CONFIG["sphinx"]
    assert sphinx["config"]["nb_ipywidgets_js"] == {}
    assert {"offline_assets", "bib_labels"} <= set(sphinx["local_extensions"])
    assert "thebe" not in CONFIG.get("launch_buttons", {})
