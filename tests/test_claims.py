"""The claim records behind the check cells and `markovformer claims`."""

import math

import pytest

from markovformer.claims import Claim, decimals_for, report
from markovformer.notebook import check, rounded


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
        "x: 0.6190 vs 0.6190 (tol 0.005) -> OK"
    )
    assert Claim(5, "runs", 4, (4, None)).line() == "runs: 4 vs >= 4 -> OK"
    long = Claim(1, "x" * 80, 0.5, 0.5, tol=0.01).line()
    assert long == "x" * 80 + ":\n    0.500 vs 0.500 (tol 0.01) -> OK"
    words = Claim(1, " ".join(["word"] * 30), 0.5, 0.5, tol=0.01).line()
    assert max(len(line) for line in words.splitlines()) <= 88
    assert words.endswith("\n    0.500 vs 0.500 (tol 0.01) -> OK")
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
    assert capsys.readouterr().out == "a: 0.5000 vs 0.5000 (tol 0.001) -> OK\n"
    with pytest.raises(AssertionError, match="claims that do not hold: \\['b'\\]"):
        check("b", 0.6, 0.5, 1e-3)


def test_report_formats():
    cs = [Claim(2, "tied runs at the unigram loss", 3, 3, seeds="0-2")]
    assert "| 2 | tied runs at the unigram loss | 3 | 3 | exact | 0-2 | ours | pass |" in report(
        cs, "markdown"
    )
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
        "gap: 0.000000 vs >= 0.000000 (tol 1e-12) -> OK"
    )
