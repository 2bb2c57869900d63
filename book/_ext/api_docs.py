"""Sphinx extension: the package's docstrings in the API reference (book/api), as written.

The docstrings are prose with formulas in plain text (``|w|``, ``W_kq*``, ``A*``) rather than
reStructuredText, so before autodoc's other handlers (napoleon) see a docstring this turns the
characters that reStructuredText would read as markup into literals:

* a bar ``|`` is escaped (reStructuredText reads ``|w|`` as a substitution), except in tables and
  inside inline code or roles;
* a star that closes a name (``W_kq*``, ``b'*``) is escaped (it would open an emphasis);
* the first line of a data, attribute or property docstring loses its first ": " to a dash, so
  that napoleon does not read "the guideline's default point: (1, -1)" as a type and a text.

A reference by a short name (``BinaryChain`` in a docstring of another module) resolves to the one
object of the package that it names; anything else that does not resolve stays a warning.

Nothing changes in the package: ``help()`` and the source show the docstrings as written.
"""

from __future__ import annotations

import re

#: inline code, roles and emphasis (*word*, **word**) are left alone
_LITERAL = re.compile(
    r"(``.*?``|:[a-z:]+:`[^`]*`|`[^`]*`_?|\*\*[^*]+\*\*|(?<![\w*])\*[^\s*][^*]*?(?<=\S)\*(?![\w*]))"
)
_BAR = re.compile(r"(?<!\\)\|")
_STAR = re.compile(r"(?<=[\w')\]])\*(?!\*)")


def _escape(text: str) -> str:
    parts = _LITERAL.split(text)
    for i in range(0, len(parts), 2):  # the even parts are outside literals
        parts[i] = _STAR.sub(r"\\*", _BAR.sub(r"\\|", parts[i]))
    return "".join(parts)


def _is_table(line: str) -> bool:
    s = line.strip()
    return s.startswith(("+-", "+=", "| ")) and s.endswith(("+", "|"))


def process_docstring(app, what, name, obj, options, lines) -> None:
    out, block = [], []
    for line in [
        *lines,
        None,
    ]:  # runs of non-table lines are escaped together (an emphasis
        if line is not None and not _is_table(line):  # may span two lines)
            block.append(line)
            continue
        if block:
            out += _escape("\n".join(block)).split("\n")
            block = []
        if line is not None:
            out.append(line)
    lines[:] = out
    if what in ("data", "attribute", "property") and lines and ": " in lines[0]:
        lines[0] = lines[0].replace(": ", " \u2013 ", 1)


def setup(app):
    app.setup_extension("sphinx.ext.autodoc")
    # before napoleon (priority 500), which reads sections and "type: text" lines
    app.connect("autodoc-process-docstring", process_docstring, priority=100)
    app.connect("missing-reference", resolve_short_names)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}


def resolve_short_names(app, env, node, contnode):
    """A reference by a short or partial name (``BinaryChain``, ``gdd.wv_rate``) resolves to the
    one documented object of the package whose full name ends with it; an ambiguous or unknown
    name stays a missing reference (a warning under ``-n``)."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "").lstrip("~.")
    if not target or target.startswith("_"):
        return None
    domain = env.get_domain("py")
    hits = [
        name for name in domain.objects if name == target or name.endswith("." + target)
    ]
    hits = [h for h in hits if h.startswith("markovformer.")]
    if len(hits) != 1:
        return None
    from sphinx.util.nodes import make_refnode

    obj = domain.objects[hits[0]]
    return make_refnode(
        app.builder, node["refdoc"], obj.docname, obj.node_id, contnode, hits[0]
    )
