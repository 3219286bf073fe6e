"""How text is set in the emails we make: Korean breaks between words, never inside one.

Korean on the web is set with `word-break: keep-all` ("결과를", not "결/과를"); a word too
long for its line (an address, a link) still breaks, with `overflow-wrap: break-word`, which
unlike `anywhere` does not let a table column shrink to one syllable. Mail clients (Gmail
among them) drop <style> and the <body> tag's attributes, so the rule goes inline: on every
element that sets a font, which is every element MJML makes for text, and on the ad footer.
"""

from __future__ import annotations

import re

KEEP_WORDS = "word-break:keep-all;overflow-wrap:break-word;"
# The font stack of our templates, for what we add to a message ourselves (the ad footer, the
# view-online banner): the installed family first ("Noto Sans CJK KR", fonts-noto-cjk).
FONTS = "'Noto Sans CJK KR','Noto Sans KR','Apple SD Gothic Neo','Malgun Gothic',Arial,sans-serif"

# A style attribute that sets a font, and does not set word-break already.
_STYLE_WITH_FONT = re.compile(
    r"""(\sstyle\s*=\s*)(["'])(?![^"']*word-break)([^"']*?\bfont(?:-family)?\s*:)""", re.I
)
_BODY = re.compile(r"<body\b([^>]*)>", re.I)


def keep_words(html: str) -> str:
    """The HTML with `keep-all` inline wherever text gets a font, and on <body>."""
    html = _STYLE_WITH_FONT.sub(lambda m: f"{m.group(1)}{m.group(2)}{KEEP_WORDS}{m.group(3)}", html)
    match = _BODY.search(html)
    if match is not None and "word-break" not in match.group(1):
        attributes = match.group(1)
        if re.search(r"\sstyle\s*=", attributes, re.I):
            attributes = re.sub(
                r"""(\sstyle\s*=\s*["'])""", rf"\1{KEEP_WORDS}", attributes, count=1, flags=re.I
            )
        else:
            attributes += f' style="{KEEP_WORDS}"'
        html = html[: match.start()] + f"<body{attributes}>" + html[match.end() :]
    return html
