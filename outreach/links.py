"""The tracked links of a compiled campaign, as the template wrote them: what a click report
groups by.

Click tracking (`compiler.track_clicks`) turns every http(s) link of the HTML into a
per-recipient expression `{{ click(URL, N) }}`: URL the link's address, made of literal
pieces and recipients' values (`'…/register?org=' ~ contact.organisation|urlencode`), N its
position among the message's tracked links. From those expressions, stored with the
campaign, each link is known as a template — `https://…/register?org={organisation}` —
whatever each recipient's own address was, and a clicked URL (with the position its token
carries) names the one link it came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import nodes

_PARSER = jinja2.Environment()


@dataclass(frozen=True)
class TrackedLink:
    """One link of the template: its position (1 = the message's first tracked link) and
    its address with each recipient's value shown as a placeholder (`{organisation}`)."""

    position: int | None
    template: str
    pattern: re.Pattern[str]

    def matches(self, url: str) -> bool:
        return self.pattern.fullmatch(url) is not None


def _placeholder(node: nodes.Node) -> str:
    """`{organisation}` for `contact.organisation | urlencode`, `{region}` for
    `contact.attributes.region`: the last name the expression reads."""
    for found in node.find_all(nodes.Getattr):
        return "{" + found.attr + "}"
    for item in node.find_all(nodes.Getitem):
        if isinstance(item.arg, nodes.Const):
            return "{" + str(item.arg.value) + "}"
    for name in node.find_all(nodes.Name):
        return "{" + name.name + "}"
    return "{…}"


def _parse(source: str) -> TrackedLink | None:
    """The link a click expression stands for, or None for any other expression."""
    if not source.startswith("{{ click("):
        return None
    try:
        body = _PARSER.parse(source).body
    except jinja2.TemplateSyntaxError:
        return None
    output = body[0] if body else None
    if not isinstance(output, nodes.Output) or len(output.nodes) != 1:
        return None
    call = output.nodes[0]
    if not isinstance(call, nodes.Call) or not call.args:
        return None
    address, *rest = call.args
    position = None
    if rest and isinstance(rest[0], nodes.Const) and isinstance(rest[0].value, int):
        position = rest[0].value
    pieces: list[Any] = address.nodes if isinstance(address, nodes.Concat) else [address]
    template, pattern = [], []
    for piece in pieces:
        if isinstance(piece, nodes.Const):
            template.append(str(piece.value))
            pattern.append(re.escape(str(piece.value)))
        else:
            template.append(_placeholder(piece))
            pattern.append("(.*?)")
    return TrackedLink(position, "".join(template), re.compile("".join(pattern), re.S))


@lru_cache(maxsize=128)
def tracked_links(expressions: tuple[str, ...]) -> tuple[TrackedLink, ...]:
    """Every tracked link of a campaign's per-recipient expressions, in position order."""
    found = [link for link in map(_parse, expressions) if link is not None]
    return tuple(sorted(found, key=lambda link: (link.position or 0, link.template)))


def identify(
    links: tuple[TrackedLink, ...], url: str, position: int | None = None
) -> TrackedLink | None:
    """The link a clicked URL came from: at the position its token carries when it has
    one (two links of one message may share an address), else the one link whose address
    it fits, if only one does."""
    fitting = [link for link in links if link.matches(url)]
    if position is not None:
        at = [link for link in fitting if link.position == position]
        return at[0] if at else None
    return fitting[0] if len({link.template for link in fitting}) == 1 else None


def clicked_link(campaign: Any, url: str, position: int | None = None) -> dict[str, Any]:
    """What a click event records about its link (`link`: the position, `template`: the
    address with placeholders), so the report groups clicks with one GROUP BY."""
    link = identify(tracked_links(tuple(campaign.expressions or ())), url, position)
    if link is None:
        return {"link": position} if position is not None else {}
    return {"link": link.position, "template": link.template}
