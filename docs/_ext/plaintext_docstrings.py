"""Lets jaxvi's plain-text docstrings render as they read in `help()`.

The docstrings write mathematics and scikit-learn's fitted attributes as plain text: `|x|`,
`|Σ|^½`, `|Δ ELBO| < tol`, `weights_`, `n_iter_`. In reStructuredText a `|...|` pair is a
substitution and `name_` a hyperlink reference, so both would be errors. Before napoleon reads a
docstring, this escapes `|` and a trailing underscore outside code (backticks, literal blocks,
doctests), and nothing else: every other construct is reStructuredText / Google style as
written.
"""

from __future__ import annotations

import re

_TRAILING_UNDERSCORE = re.compile(r"\b([A-Za-z]\w*?)(_+)(?=[^\w`]|$)")


def _escape_prose(text: str) -> str:
    text = text.replace("|", r"\|")
    return _TRAILING_UNDERSCORE.sub(lambda m: m.group(1) + "\\_" * len(m.group(2)), text)


def escape_line(line: str) -> str:
    """Escapes `|` and trailing underscores in the parts of a line outside backticks."""
    parts = re.split(r"(`+[^`]*`+_{0,2})", line)
    return "".join(p if i % 2 else _escape_prose(p) for i, p in enumerate(parts))


def escape_docstring(lines: list[str]) -> list[str]:
    out, literal_indent = [], None
    previous = ""
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if literal_indent is not None and stripped and indent <= literal_indent:
            literal_indent = None
        if literal_indent is None and previous.rstrip().endswith("::") and stripped:
            literal_indent = len(previous) - len(previous.lstrip())
        if literal_indent is not None or stripped.startswith((">>>", "...")):
            out.append(line)
        else:
            out.append(escape_line(line))
        if stripped:
            previous = line
    return out


def _process(app, what, name, obj, options, lines):
    lines[:] = escape_docstring(lines)


# scikit-learn's inherited metadata-routing and output helpers refer to its own site's labels.
_SKLEARN_HELPERS = re.compile(r"^(set_\w+_request|get_metadata_routing|set_output)$")


def _skip(app, what, name, obj, skip, options):
    if _SKLEARN_HELPERS.match(name):
        return True
    return None


def setup(app):
    app.connect("autodoc-process-docstring", _process, priority=100)  # before napoleon (500)
    app.connect("autodoc-skip-member", _skip)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
