"""Sphinx extension: author-year citation labels that tell same-author, same-year papers apart.

sphinxcontrib-bibtex's author-year reference style writes both Makkuva et al. (2024) papers as
"Makkuva et al., 2024" in the text, while its default bibliography labels them [MBE+24] and
[MBG+24]. This registers a pybtex style whose labels are "Makkuva et al. 2024a", "... 2024b"
(a suffix only where two entries would share a label, in the bibliography's order) and the book
cites with ``bibtex_reference_style: label``, so the text and the reference list show the same
label: ``[Makkuva et al. 2024a]``.
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict

from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle

STYLE = "markovformer_authoryear"


def _last_name(person) -> str:
    return re.sub(r"[{}\\]", "", " ".join(person.last_names))


def base_label(entry) -> str:
    """ "Last", "Last and Other" or "Last et al.", then the year."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_last_name(p) for p in persons]
    if not names:
        who = entry.key
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who} {entry.fields.get('year', '')}".strip()


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        bases = [base_label(e) for e in entries]
        counts, seen = Counter(bases), defaultdict(int)
        for base in bases:
            if counts[base] > 1:
                seen[base] += 1
                yield base + string.ascii_lowercase[seen[base] - 1]
            else:
                yield base


class AuthorYearStyle(UnsrtStyle):
    default_label_style = STYLE
    default_sorting_style = "author_year_title"


def setup(app):
    register_plugin("pybtex.style.labels", STYLE, AuthorYearLabels, force=True)
    register_plugin("pybtex.style.formatting", STYLE, AuthorYearStyle, force=True)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
