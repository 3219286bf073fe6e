"""Text from outside (bounce diagnostics, contact fields) made safe to show on a terminal.

An ESC sequence in a bounce's diagnostic could clear the operator's screen, retitle the
window or hide text; a carriage return could overwrite what was printed before. Rich prints
both as they are, so everything we print from storage goes through `printable`.
"""

from __future__ import annotations

import json
import re
from typing import Any

# ESC sequences first (CSI with its parameters, OSC up to BEL or ST, and the two-character
# forms), so that their printable tails ("[31m") go with them; then any other C0/C1 control
# (tab and newline excepted) and the Unicode bidirectional overrides that reorder a line.
_SEQUENCES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"  # CSI
    r"|\x9b[0-?]*[ -/]*[@-~]?"  # 8-bit CSI
    r"|[\x1b\x9d]\][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC
    r"|\x1b[PX^_][^\x1b\x9c]*(?:\x1b\\|\x9c)?"  # DCS, SOS, PM, APC
    r"|\x1b[ -/]*[0-~]?"  # any other ESC sequence
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: object) -> str:
    """`text` as a string without control characters or terminal escape sequences."""
    value = str(text)
    if value.isprintable():
        return value  # the common case, checked in C
    return _CONTROLS.sub("", _SEQUENCES.sub("", value))


def one_line(text: object, limit: int | None = None) -> str:
    """Printable, with runs of whitespace (newlines included) folded to single spaces."""
    value = " ".join(printable(text).split())
    return value if limit is None else value[:limit]


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """`1 message`, `2 messages`: counts people read."""
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


# What json.dumps leaves raw that a terminal acts on: DEL and C1 controls, the bidi
# controls, and the Unicode line and paragraph separators.
_JSON_UNSAFE = re.compile(r"[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def json_document(doc: Any) -> str:
    """`doc` as JSON for a terminal or a script: Korean and other text as it is, but every
    character that could move or hide text on a terminal as a \\uXXXX escape, so the
    document parses to exactly the stored values and `cat` shows it as it is."""
    return _JSON_UNSAFE.sub(
        lambda m: f"\\u{ord(m.group()):04x}", json.dumps(doc, ensure_ascii=False)
    )
