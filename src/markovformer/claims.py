"""Every claim the book asserts, as data: measured value, expected value or range, tolerance,
seeds, and where the expectation comes from.

A chapter's check cell calls a function that returns :class:`Claim` objects and passes them to
:func:`markovformer.notebook.check`, which prints one line per claim and asserts it;
``markovformer claims`` calls the same functions (registered with :func:`claims_of`) and prints
the whole table. So the page and the report cannot disagree.

Sources (SPEC): ``[paper]`` the expected value is stated in a paper, ``[code]`` read in the
authors' code, ``[derived]`` worked out here and checked numerically, ``ours`` a measurement of
this book, including every threshold the book chose after seeing its own runs. A claim whose
threshold or tolerance was set that way says so (``tuned``), whatever its source, and its
:attr:`Claim.margin` says how much room the committed runs leave.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Claim",
    "claims_of",
    "registered",
    "collect",
    "report",
    "markdown_table",
    "thin_margins",
    "SOURCES",
    "decimals_for",
]

SOURCES = ("[paper]", "[code]", "[derived]", "ours")


def decimals_for(tol: float, cap: int = 6) -> int:
    """Decimals worth printing for a value checked to within ``tol``: one more than the
    tolerance's first significant decimal, at most ``cap`` (a printed claim never shows digits
    that a new BLAS or patch release could change)."""
    if tol <= 0 or not math.isfinite(tol):
        return 0
    return int(min(cap, max(0, math.ceil(-math.log10(tol)) + 1)))


def _own_decimals(value: float) -> int:
    """Decimals of the shortest exact decimal form of ``value`` (0.5446 -> 4, 3.0 -> 0)."""
    text = f"{value!r}"
    if "e" in text or "E" in text or "." not in text:
        return 0 if float(value).is_integer() else 16
    return len(text.split(".")[1].rstrip("0"))


@dataclass(frozen=True)
class Claim:
    """One checked statement.

    ``expected`` is a number (pass if ``|measured - expected| <= tol``) or a ``(lo, hi)`` range
    (pass if ``lo - tol <= measured <= hi + tol``; either end may be ``None``). ``digits``
    fixes the printed decimals (default: from the tolerance, see :func:`decimals_for`; exact
    checks of integers print none); an expected value prints no more decimals than it has
    (0.5446 at a tolerance of 5e-05 prints 0.5446, not 0.544600). ``tuned``: the threshold or
    the tolerance was chosen by this book after seeing its committed runs (not stated by a paper
    nor derived), so the claim describes these runs and its :attr:`margin` matters.
    """

    chapter: int
    text: str
    measured: float
    expected: float | tuple[float | None, float | None]
    tol: float = 0.0
    seeds: str = "-"
    source: str = "ours"
    digits: int | None = None
    style: str = "f"  # "f": fixed decimals; "e": exponent notation with ``digits`` decimals
    tuned: bool = False

    def __post_init__(self) -> None:
        if self.style not in ("f", "e"):
            raise ValueError(f"style must be 'f' or 'e', got {self.style!r}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if not (self.tol >= 0 and math.isfinite(self.tol)):
            raise ValueError(f"tol must be a finite number >= 0, got {self.tol!r}")
        if isinstance(self.expected, tuple) and len(self.expected) != 2:
            raise ValueError(f"a range must be (lo, hi), got {self.expected!r}")
        object.__setattr__(self, "measured", float(self.measured))

    @property
    def passed(self) -> bool:
        m = self.measured
        if not math.isfinite(m):
            return False
        if isinstance(self.expected, tuple):
            lo, hi = self.expected
            return (lo is None or m >= lo - self.tol) and (hi is None or m <= hi + self.tol)
        return abs(m - float(self.expected)) <= self.tol

    def _decimals(self) -> int:
        if self.digits is not None:
            return self.digits
        if self.tol == 0:
            values = [self.measured]
            if isinstance(self.expected, tuple):
                values += [v for v in self.expected if v is not None]
            else:
                values.append(float(self.expected))
            return 0 if all(float(v).is_integer() for v in values) else 4
        return decimals_for(self.tol)

    def fmt(self, value: float, decimals: int | None = None) -> str:
        d = self._decimals() if decimals is None else decimals
        text = f"{value:.{d}{self.style}}"
        return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000"

    def _fmt_expected(self, value: float) -> str:
        """An expected value or bound: at most the measured value's decimals, and no more than
        the value has (no false precision)."""
        if self.style != "f":
            return self.fmt(value)
        return self.fmt(value, min(self._decimals(), _own_decimals(float(value))))

    @property
    def expected_text(self) -> str:
        if isinstance(self.expected, tuple):
            lo, hi = self.expected
            if lo is None:
                return f"<= {self._fmt_expected(hi)}"
            if hi is None:
                return f">= {self._fmt_expected(lo)}"
            return f"in [{self._fmt_expected(lo)}, {self._fmt_expected(hi)}]"
        return self._fmt_expected(float(self.expected))

    @property
    def margin(self) -> float | None:
        """How far inside what passes the measured value is: the distance to the nearer end of
        the range (tolerance included) or, for a value, the unused part of the tolerance;
        negative when the claim fails; None for an exact check of a value."""
        m = self.measured
        if isinstance(self.expected, tuple):
            lo, hi = self.expected
            sides = [m - (lo - self.tol)] if lo is not None else []
            sides += [(hi + self.tol) - m] if hi is not None else []
            return min(sides)
        if self.tol == 0:
            return None
        return self.tol - abs(m - float(self.expected))

    @property
    def margin_share(self) -> float | None:
        """:attr:`margin` as a share of the bound it is measured from (the nearer end of a range,
        or the tolerance); None for an exact check and for counts (the share of a count's bound
        says nothing)."""
        mg = self.margin
        if mg is None:
            return None
        if isinstance(self.expected, tuple):
            lo, hi = self.expected
            near = lo if hi is None or (lo is not None and abs(self.measured - lo) <= abs(
                hi - self.measured)) else hi  # fmt: skip
            ref = abs(float(near)) + self.tol
        else:
            ref = self.tol
        counts = float(self.measured).is_integer() and float(ref).is_integer()
        if counts or ref <= 0 or not math.isfinite(mg / ref):
            return None
        return mg / ref

    @property
    def margin_text(self) -> str:
        """:attr:`margin` with its :attr:`margin_share`, e.g. "0.0069 (14%)"; "-" for an exact
        check of a value."""
        mg, share = self.margin, self.margin_share
        if mg is None:
            return "-"
        if share is None:
            return self.fmt(mg)
        pct = f"{share:.0%}" if abs(share) >= 0.1 else f"{100 * share:.2g}%"
        return f"{self.fmt(mg)} ({pct})"

    @property
    def tol_text(self) -> str:
        if self.tol == 0:
            return "-" if isinstance(self.expected, tuple) else "exact"
        return f"{self.tol:g}"

    def line(self, width: int = 88) -> str:
        """The printed line of a check cell; the values go on a second, indented line when the
        whole would be wider than ``width`` (the book's text column holds about 88 characters),
        and a claim text longer than that wraps too."""
        verdict = "OK" if self.passed else "FAIL"
        tol = "" if self.tol == 0 else f" (tol {self.tol_text})"
        values = f"{self.fmt(self.measured)} vs {self.expected_text}{tol} -> {verdict}"
        one = f"{self.text}: {values}"
        if len(one) <= width:
            return one
        head = textwrap.fill(f"{self.text}:", width, subsequent_indent="  ")
        return f"{head}\n    {values}"

    @property
    def source_text(self) -> str:
        """The source, and whether the threshold or tolerance is the book's choice."""
        if self.tuned and self.source != "ours":
            return f"{self.source}, threshold ours"
        return self.source

    def row(self) -> dict:
        return {
            "chapter": self.chapter,
            "claim": self.text,
            "measured": self.fmt(self.measured),
            "expected": self.expected_text,
            "tolerance": self.tol_text,
            "margin": self.margin_text,
            "seeds": self.seeds,
            "source": self.source_text,
            "result": "pass" if self.passed else "FAIL",
        }


ClaimFunction = Callable[[Path], Sequence[Claim]]
_REGISTRY: list[tuple[int, str, ClaimFunction]] = []


def claims_of(chapter: int) -> Callable[[ClaimFunction], ClaimFunction]:
    """Register ``fn(data_root) -> [Claim, ...]`` for the claims report of ``chapter``."""

    def deco(fn: ClaimFunction) -> ClaimFunction:
        _REGISTRY.append((chapter, f"{fn.__module__}.{fn.__qualname__}", fn))
        return fn

    return deco


def registered() -> list[tuple[int, str, ClaimFunction]]:
    """(chapter, qualified name, function) of every registered claim function, by chapter and,
    within a chapter, in the order they were defined (the chapter's order)."""
    from . import checks, experiments  # noqa: F401  (importing registers the claim functions)

    return sorted(_REGISTRY, key=lambda t: t[0])  # stable: definition order within a chapter


def collect(root: str | Path, chapters: Sequence[int] | None = None) -> list[Claim]:
    """Evaluate every registered claim function (of ``chapters``, default all) on ``root``."""
    out: list[Claim] = []
    for chapter, _, fn in registered():
        if chapters is None or chapter in chapters:
            out.extend(fn(Path(root)))
    return out


COLUMNS = (
    "chapter",
    "claim",
    "measured",
    "expected",
    "tolerance",
    "margin",
    "seeds",
    "source",
    "result",
)


def report(claims: Sequence[Claim], fmt: str = "text") -> str:
    """The claims as a table: ``text`` (aligned columns), ``markdown`` or ``json``."""
    rows = [c.row() for c in claims]
    if fmt == "json":
        import json

        return json.dumps(rows, indent=1)
    if fmt == "markdown":
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(str(r[k]) for k in COLUMNS) + " |" for r in rows]
        return "\n".join(lines)
    if fmt != "text":
        raise ValueError(f"format must be 'text', 'markdown' or 'json', got {fmt!r}")
    width = {k: max([len(k)] + [len(str(r[k])) for r in rows]) for k in COLUMNS}
    width["claim"] = min(width["claim"], 70)

    def cell(k, v):
        v = str(v)
        if len(v) > width[k]:
            v = v[: width[k] - 1] + "~"
        return v.ljust(width[k])

    lines = ["  ".join(cell(k, k) for k in COLUMNS)]
    lines += ["  ".join(cell(k, r[k]) for k in COLUMNS) for r in rows]
    return "\n".join(lines)


def thin_margins(claims: Sequence[Claim], share: float = 0.25) -> list[Claim]:
    """The claims whose threshold this book chose from its runs (source ``ours`` or ``tuned``)
    and whose committed runs are within ``share`` of the bound (or of the tolerance) of failing,
    thinnest first."""
    mine = [c for c in claims if (c.source == "ours" or c.tuned) and c.margin_share is not None]
    return sorted((c for c in mine if c.margin_share < share), key=lambda c: c.margin_share)


def _nobreak(text: str) -> str:
    """A number for a table cell: a minus or exponent sign does not break the line ("5e-05"
    stays whole)."""
    import re

    return re.sub(r"-(?=\d)", "\u2011", str(text))


def markdown_table(claims: Sequence[Claim]) -> str:
    """The claims of one chapter as the claims page shows them: a Markdown table with the claim,
    measured and expected values, tolerance, margin, seeds and source (numbers never break
    inside; a bar inside a text cannot split its column)."""

    def cell(text) -> str:
        return str(text).replace("|", r"\|")

    head = "| claim | measured | expected | tol. | margin | seeds | source |"
    rows = [head, "|---|---|---|---|---|---|---|"]
    for c in claims:
        rows.append(
            f"| {cell(c.text)} | {_nobreak(c.fmt(c.measured))} | {_nobreak(cell(c.expected_text))} "
            f"| {_nobreak(c.tol_text)} | {_nobreak(c.margin_text)} | {cell(c.seeds)} "
            f"| {c.source_text} |"
        )
    return "\n".join(rows)
