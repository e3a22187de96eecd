"""The knowledge entries' markdown subset as Telegram HTML, in at most a given length.

Only the tags Telegram accepts are written (b, i, code, pre, a) and every other character is
escaped, so any input, however cut, parses. A marker without its pair stays literal text, and a
link keeps its ``href`` only for http/https: ``javascript:`` and the like are shown as text.
"""

from __future__ import annotations

import re

from opsgate.bot.render import CUT, clip, e, units

_INLINE = re.compile(
    r"`(?P<code>[^`\n]+)`"
    r"|\[(?P<text>[^\]\n]+)\]\((?P<url>[^()\s]+)\)"
    r"|\*\*(?P<bold>[^*\n]+)\*\*"
    r"|(?<![\w_])__(?P<bold2>[^_\n]+)__(?![\w_])"
    r"|\*(?P<italic>[^*\s](?:[^*\n]*[^*\s])?)\*"
    r"|(?<![\w_])_(?P<italic2>[^_\s](?:[^_\n]*[^_\s])?)_(?![\w_])"
)
_HEADING = re.compile(r"\s{0,3}#{1,6}\s+(.*?)\s*#*\s*")
_BULLET = re.compile(r"(\s*)[-*+]\s+(.*)")
_FENCE = re.compile(r"\s*```")
_URL = re.compile(r"https?://[^\s<>\"'`]{1,2000}", re.IGNORECASE)
_PRE = len("<pre></pre>")


def markdown_html(source: str, limit: int) -> str:
    """``source``'s headings and bold as bold, italics, inline code, code blocks, bullets and
    http/https links as Telegram HTML, in at most ``limit`` units; what does not fit is cut."""
    out: list[str] = []
    used = 0
    for kind, text in _blocks(source):
        piece = _pre(text) if kind == "pre" else _line(text)
        sep = 1 if out else 0
        if used + sep + units(piece) <= limit:
            out.append(piece)
            used += sep + units(piece)
            continue
        room = limit - used - sep
        if kind == "pre" and room > _PRE + units(CUT):
            out.append(f"<pre>{clip(text, room - _PRE)}</pre>")
        elif room >= units(CUT):
            out.append(clip(text, room))
        break
    return "\n".join(out)


def _blocks(source: str) -> list[tuple[str, str]]:
    """("pre", code) for fenced blocks (an unclosed fence runs to the end), ("line", text) for
    the rest; runs of blank lines become one."""
    lines = source.splitlines()
    blocks: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        if _FENCE.match(lines[i]):
            end = i + 1
            while end < len(lines) and not _FENCE.match(lines[end]):
                end += 1
            code = "\n".join(lines[i + 1 : end])
            if code.strip():
                blocks.append(("pre", code))
            i = end + 1
            continue
        line = lines[i].rstrip()
        if line or (blocks and blocks[-1] != ("line", "")):
            blocks.append(("line", line))
        i += 1
    while blocks and blocks[-1] == ("line", ""):
        blocks.pop()
    return blocks


def _pre(code: str) -> str:
    return f"<pre>{e(code)}</pre>"


def _line(text: str) -> str:
    heading = _HEADING.fullmatch(text)
    if heading:
        return f"<b>{_inline(heading.group(1), in_bold=True)}</b>"
    bullet = _BULLET.fullmatch(text)
    if bullet:
        return f"{e(bullet.group(1))}• {_inline(bullet.group(2))}"
    return _inline(text)


def _inline(text: str, *, in_bold: bool = False) -> str:
    parts: list[str] = []
    last = 0
    for found in _INLINE.finditer(text):
        parts.append(e(text[last : found.start()]))
        parts.append(_token(found, in_bold))
        last = found.end()
    parts.append(e(text[last:]))
    return "".join(parts)


def _token(found: re.Match[str], in_bold: bool) -> str:
    code, url, bold = found["code"], found["url"], found["bold"] or found["bold2"]
    if code is not None:
        return f"<code>{e(code)}</code>"
    if url is not None:
        label = e(found["text"])
        return f'<a href="{e(url)}">{label}</a>' if _URL.fullmatch(url) else label
    if bold is not None:
        # Telegram does not nest an entity in one of its own kind: a heading's bold stays plain.
        return e(bold) if in_bold else f"<b>{e(bold)}</b>"
    return f"<i>{e(found['italic'] or found['italic2'])}</i>"
