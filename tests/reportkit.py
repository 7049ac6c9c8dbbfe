"""Checks that a comment body renders as intended on a forge: rendered with a real
CommonMark + GFM-tables parser (markdown-it-py, raw HTML on as on GitHub), then the
HTML is walked the way GitHub's filters would see it."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from markdown_it import MarkdownIt

from bot.report import MARKER

# What the bot itself may produce; anything else came from input.
ALLOWED_TAGS = {
    "p", "h3", "strong", "em", "code", "pre", "table", "thead", "tbody", "tr", "th",
    "td", "details", "summary", "ul", "li", "a", "blockquote", "sub", "br", "hr", "ol",
}  # fmt: skip
# GitHub's mention filter: "@" at a word start followed by a login or org/team.
MENTION = re.compile(r"(?:^|[^\w`])@[A-Za-z0-9][A-Za-z0-9-]*")


def to_html(markdown: str) -> str:
    return MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)


class _Walker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.mentions: list[str] = []
        self.rows: list[int] = []
        self.comments: list[str] = []
        self.unbalanced: list[str] = []
        self.hrefs: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if tag == "a" and name == "href":
                self.hrefs.append(value or "")
            elif (tag, name) not in (
                ("details", "open"),
                ("th", "style"),
                ("td", "style"),
            ) and not (tag == "code" and name == "class" and (value or "").startswith("language-")):
                self.attrs.append((tag, name, value))
        if tag == "tr":
            self.rows.append(0)
        if tag in ("td", "th") and self.rows:
            self.rows[-1] += 1
        if tag not in ("br", "hr"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.stack:
            while self.stack:
                top = self.stack.pop()
                if top == tag:
                    break
                self.unbalanced.append(top)
        else:
            self.unbalanced.append("/" + tag)

    def handle_data(self, data):
        if not {"code", "pre", "a"} & set(self.stack):
            self.mentions += [m.strip("(") for m in MENTION.findall(data)]

    def handle_comment(self, data):
        self.comments.append(data)


def check_inert(markdown: str, *, addressee: str | None = None, budget: int = 65_536) -> _Walker:
    """Assert the rendered ``markdown`` has: no live mention except ``@addressee``, only
    the bot's own tags with no attributes, tables whose rows all have the header's cell
    count, balanced blocks, and at most the one report marker."""
    assert len(markdown) <= budget, f"{len(markdown)} characters, over {budget}"
    html = to_html(markdown)
    walker = _Walker()
    walker.feed(html)
    walker.close()
    allowed = {f"@{addressee}"} if addressee else set()
    live = [m for m in walker.mentions if m.lstrip(" \t\n>*_|") not in allowed]
    live = [m.strip() for m in live if m.strip() not in allowed]
    assert not live, f"live mentions {live} in:\n{markdown[:3000]}"
    stray = sorted(set(walker.tags) - ALLOWED_TAGS)
    assert not stray, f"raw HTML tags {stray} reached the rendered comment"
    assert not walker.attrs, f"attributes {walker.attrs[:5]} reached the rendered comment"
    for href in walker.hrefs:
        assert href.startswith(("https://", "http://")), f"link to {href!r}"
    assert not walker.unbalanced and not walker.stack, (
        f"blocks closed early or left open: {walker.unbalanced} {walker.stack}"
    )
    assert html.count("<details") == html.count("</details>")
    assert walker.comments.count(MARKER[4:-3]) <= 1, "a second report marker"
    if markdown.startswith(MARKER):
        assert walker.comments[:1] == [MARKER[4:-3]]
    _assert_tables(html)
    return walker


def _assert_tables(html: str) -> None:
    for table in re.findall(r"<table>.*?</table>", html, flags=re.S):
        cells = [
            len(re.findall(r"<t[hd][ >]", row))
            for row in re.findall(r"<tr>.*?</tr>", table, flags=re.S)
        ]
        assert len(set(cells)) == 1, f"a table row has a different cell count: {cells}"
