"""Every claim the book asserts, as data: measured value, expected value or range, tolerance,
seeds, and where the expectation comes from.

A chapter's check cell calls a function that returns :class:`Claim` objects and passes them to
:func:`markovformer.notebook.check`, which prints one line per claim and asserts it;
``markovformer claims`` calls the same functions (registered with :func:`claims_of`) and prints
the whole table. So the page and the report cannot disagree.

Sources (SPEC): ``[paper]`` stated in a paper, ``[code]`` read in the authors' code,
``[derived]`` worked out here and checked numerically, ``ours`` a measurement of this book.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Claim", "claims_of", "registered", "collect", "report", "SOURCES", "decimals_for"]

SOURCES = ("[paper]", "[code]", "[derived]", "ours")


def decimals_for(tol: float, cap: int = 6) -> int:
    """Decimals worth printing for a value checked to within ``tol``: one more than the
    tolerance's first significant decimal, at most ``cap`` (a printed claim never shows digits
    that a new BLAS or patch release could change)."""
    if tol <= 0 or not math.isfinite(tol):
        return 0
    return int(min(cap, max(0, math.ceil(-math.log10(tol)) + 1)))


@dataclass(frozen=True)
class Claim:
    """One checked statement.

    ``expected`` is a number (pass if ``|measured - expected| <= tol``) or a ``(lo, hi)`` range
    (pass if ``lo - tol <= measured <= hi + tol``; either end may be ``None``). ``digits``
    fixes the printed decimals (default: from the tolerance, see :func:`decimals_for`; exact
    checks of integers print none).
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

    def fmt(self, value: float) -> str:
        text = f"{value:.{self._decimals()}{self.style}}"
        return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000"

    @property
    def expected_text(self) -> str:
        if isinstance(self.expected, tuple):
            lo, hi = self.expected
            if lo is None:
                return f"<= {self.fmt(hi)}"
            if hi is None:
                return f">= {self.fmt(lo)}"
            return f"in [{self.fmt(lo)}, {self.fmt(hi)}]"
        return self.fmt(float(self.expected))

    @property
    def tol_text(self) -> str:
        return "exact" if self.tol == 0 else f"{self.tol:g}"

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

    def row(self) -> dict:
        return {
            "chapter": self.chapter,
            "claim": self.text,
            "measured": self.fmt(self.measured),
            "expected": self.expected_text,
            "tolerance": self.tol_text,
            "seeds": self.seeds,
            "source": self.source,
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


COLUMNS = ("chapter", "claim", "measured", "expected", "tolerance", "seeds", "source", "result")


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
