"""The claim records behind the check cells and `markovformer claims`."""

import math

import pytest

from markovformer.claims import Claim, decimals_for, markdown_table, report
from markovformer.notebook import check, machines_text, rounded


def test_a_value_claim_passes_within_its_tolerance_only():
    assert Claim(1, "x", 0.6195, 0.619, tol=0.001).passed
    assert not Claim(1, "x", 0.6201, 0.619, tol=0.001).passed
    assert not Claim(1, "x", math.nan, 0.619, tol=1.0).passed
    assert Claim(1, "n", 5, 5).passed and not Claim(1, "n", 4, 5).passed


def test_a_range_claim_uses_either_end():
    assert Claim(5, "r", 3, (1, 4)).passed
    assert not Claim(5, "r", 5, (1, 4)).passed
    assert Claim(5, "r", 4.05, (1, 4), tol=0.1).passed
    assert Claim(5, "r", 9, (1, None)).passed and not Claim(5, "r", 0, (1, None)).passed
    assert Claim(5, "r", -9, (None, 0)).passed


def test_printed_digits_follow_the_tolerance():
    assert decimals_for(0.005) == 4 and decimals_for(0.01) == 3 and decimals_for(1e-12) == 6
    assert Claim(1, "x", 0.61901458, 0.619, tol=0.005).line() == (
        "x: 0.6190 vs 0.619 (tol 0.005) -> OK"
    )
    assert Claim(5, "runs", 4, (4, None)).line() == "runs: 4 vs >= 4 -> OK"
    long = Claim(1, "x" * 80, 0.5, 0.5, tol=0.01).line()
    assert long == "x" * 80 + ":\n    0.500 vs 0.5 (tol 0.01) -> OK"
    words = Claim(1, " ".join(["word"] * 30), 0.5, 0.5, tol=0.01).line()
    assert max(len(line) for line in words.splitlines()) <= 88
    assert words.endswith("\n    0.500 vs 0.5 (tol 0.01) -> OK")
    assert "0.0231" in Claim(1, "x", 0.02312, 0.02, tol=0.01, digits=4).line()


def test_bad_claims_are_refused():
    with pytest.raises(ValueError, match="source must be one of"):
        Claim(1, "x", 1, 1, source="paper")
    with pytest.raises(ValueError, match="tol must be a finite number >= 0, got -1"):
        Claim(1, "x", 1, 1, tol=-1)
    with pytest.raises(ValueError, match="a range must be"):
        Claim(1, "x", 1, (1, 2, 3))


def test_check_prints_and_asserts(capsys):
    check("a", 0.50004, 0.5, 1e-3)
    assert capsys.readouterr().out == "a: 0.5000 vs 0.5 (tol 0.001) -> OK\n"
    with pytest.raises(AssertionError, match="claims that do not hold: \\['b'\\]"):
        check("b", 0.6, 0.5, 1e-3)


def test_report_formats():
    cs = [Claim(2, "tied runs at the unigram loss", 3, 3, seeds="0-2")]
    row = "| 2 | tied runs at the unigram loss | 3 | 3 | exact | - | 0-2 | ours | pass |"
    assert row in report(cs, "markdown")
    assert '"result": "pass"' in report(cs, "json")
    with pytest.raises(ValueError, match="format must be"):
        report(cs, "csv")


def test_rounded_keeps_significant_digits_only():
    assert rounded(4.358898943540673) == 4.3589
    assert rounded(6.248978335671466e-05) == 6.24898e-05
    assert rounded([0.7879999999999999, 2, "s"]) == [0.788, 2, "s"]
    assert rounded({"a": 17.138448119261557}, sig=4) == {"a": 17.14}


def test_a_rounded_zero_prints_without_a_sign():
    assert Claim(1, "gap", -1e-17, (0.0, None), tol=1e-12).line() == (
        "gap: 0.000000 vs >= 0 (tol 1e-12) -> OK"
    )


def test_an_expected_value_prints_no_false_precision():
    c = Claim(1, "entropy rate", 0.544612, 0.5446, tol=5e-5)
    assert c.line() == "entropy rate: 0.544612 vs 0.5446 (tol 5e-05) -> OK"
    assert Claim(1, "r", 0.619015, 0.6190153, tol=5e-5).expected_text == "0.619015"
    assert Claim(8, "g", 0.006, (None, 0.01), digits=4).expected_text == "<= 0.01"
    assert Claim(8, "e", 0.0123, 0.0125, tol=0.01, digits=2, style="e").expected_text == "1.25e-02"


def test_margin_says_how_far_inside_what_passes():
    thin = Claim(8, "depth 1 gap", 0.0569, (0.05, None), digits=4, tuned=True)
    assert thin.margin == pytest.approx(0.0069) and thin.margin_text == "0.0069 (14%)"
    assert Claim(2, "stuck cells", 17, (1, None)).margin_text == "16"  # a count: no share
    assert Claim(1, "x", 0.5002, 0.5, tol=0.001).margin_text == "0.0008 (80%)"
    assert Claim(1, "n", 3, 3).margin is None and Claim(1, "n", 3, 3).margin_text == "-"
    assert Claim(5, "r", 5, (1, 4)).margin == -1  # a failing claim: negative
    assert Claim(8, "b", 2.9, 3.0, tol=0.24, source="[derived]", tuned=True).source_text == (
        "[derived], threshold ours"
    )
    assert thin.source_text == "ours" and thin.row()["margin"] == "0.0069 (14%)"


def test_the_claims_page_table_keeps_numbers_whole():
    table = markdown_table([Claim(1, "a | b", -0.5, 0.5, tol=5e-5, digits=1)])
    head, rule, row = table.splitlines()
    assert head == "| claim | measured | expected | tol. | margin | seeds | source |"
    assert row.startswith("| a \\| b | \u20110.5 | 0.5 | 5e\u201105 |")


def test_machines_are_never_guessed():
    assert machines_text(["a machine whose CPU was not recorded"]) == (
        "the 2-core machine that made them (its CPU model was not recorded)"
    )
    both = machines_text(
        ["AMD EPYC, 2 cores, AVX512 kernels", "a machine whose CPU was not recorded"]
    )
    assert both.startswith("AMD EPYC, 2 cores, AVX512 kernels; the 2-core machine")


def test_paper_grid_claims_fail_where_the_paper_says_they_should_not():
    """AwM-4 at N = 1024: a stuck untied cell or a stuck sticky tied cell fails its claim, and a
    grid with no stuck switching cell fails the third; grid_disagreement lists exactly the cells
    stuck at one scale only, with p and q in the right places."""
    import numpy as np

    from markovformer.checks import ch2_transformer as C2
    from markovformer.experiments import awm

    band, far = "next to the diagonal (p + q = 1.1)", "strongly switching (p + q >= 1.7)"
    good = {"tied": {"switching": 9, "sticky": 0, band: 8, far: 0},
            "untied": {"switching": 0, "sticky": 0}, "cells": {band: 8, far: 3}}  # fmt: skip
    assert all(c.passed for c in C2.paper_grid_claims(stuck=good))
    for arm, region, value in (("untied", "sticky", 1), ("tied", "sticky", 2),
                               ("tied", "switching", 0)):  # fmt: skip
        bad = {a: dict(r) for a, r in good.items()}  # noqa: C420
        bad[arm][region] = value
        assert sum(not c.passed for c in C2.paper_grid_claims(stuck=bad)) == 1

    n = awm.GRID.size
    paper = {"tied": np.zeros((n, n))}
    reduced = {"tied": np.zeros((n, n))}
    i_q, j_p = int(np.argmin(abs(awm.GRID - 0.8))), int(np.argmin(abs(awm.GRID - 0.5)))
    paper["tied"][i_q, j_p] = 0.9  # stuck at N = 1024 only, at (p, q) = (0.5, 0.8)
    paper["tied"][0, 0] = reduced["tied"][0, 0] = np.nan  # a blank cell is skipped
    assert C2.grid_disagreement(paper, reduced)["cells"] == [(0.5, 0.8, 0.9, 0.0)]
