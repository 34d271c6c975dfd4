"""Text that came from a file someone else wrote (class names, override values, error messages),
made safe to show: on a terminal, control characters are escaped, so a name cannot move the cursor,
set the terminal's title or start a forged line; in Markdown, table pipes and HTML are escaped, so a
value cannot shift a table's columns or add a script to report.md."""

from __future__ import annotations

import html
import re
import unicodedata


def printable(text: object) -> str:
    """`text` with every control or format character (newline, ESC, bidi overrides ...) written
    as its escape (`\\n`, `\\x1b`, `\\u202e`), everything else as it is."""
    return "".join(
        c.encode("unicode_escape").decode("ascii") if unicodedata.category(c)[0] == "C" else c for c in str(text)
    )


_CREDENTIALS = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@]*):[^\s/@]*@")


def redacted(text: object) -> str:
    """`text` with the password of every URL in it (`postgresql://user:secret@host`) written `***`:
    storage and tracking URLs are printed in errors, warnings and logs, which others read."""
    return _CREDENTIALS.sub(r"\1:***@", str(text))


def markdown(text: object) -> str:
    """`text` as one line of Markdown that shows it literally, in a table cell or in prose."""
    escaped = html.escape(printable(text), quote=False)
    for c in "\\|`*[]#":
        escaped = escaped.replace(c, "\\" + c)
    return escaped


def code(text: object) -> str:
    """`text` as Markdown inline code, on one line, whatever backticks it holds."""
    text = printable(text)
    longest = max((len(r) for r in _backtick_runs(text)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def code_block(text: str, language: str = "") -> list[str]:
    """`text` as a fenced Markdown code block, with a fence no line of it can close."""
    lines = [printable(line) for line in text.splitlines()]
    longest = max((len(r) for line in lines for r in _backtick_runs(line)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{language}", *lines, fence]


def _backtick_runs(text: str) -> list[str]:
    return re.findall(r"`+", text)
