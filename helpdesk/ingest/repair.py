"""Repair the raw bytes before the headers are parsed: mbox From line, BOM, header block."""

from __future__ import annotations

import codecs
import re

# Body lines that an mbox writer quoted: ">From " -> "From " (mboxo, as Postfix does).
_QUOTED_FROM = re.compile(rb"(?m)(?:^|(?<=\r))>(>*From )")
_OBS_FROM_HEADER = re.compile(rb"From[ \t]*:")  # a From: header in obsolete syntax, not mbox
# Line ends and the blank line after a header block, in all three conventions; rawparts
# cuts raw entities with the same ones, so they are shared.
LINE_END = re.compile(rb"\r\n|\r|\n")
HEADER_END = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r(?!\n))")
_HEADER_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
_SPACED_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]+:")
_KNOWN_HEADER = re.compile(
    rb"(?i)(?:received|from|to|cc|subject|date|message-id|mime-version|content-[a-z-]+"
    rb"|return-path|reply-to|sender|x-[a-z0-9-]+|delivered-to|references|in-reply-to"
    rb"|dkim-signature|authentication-results|list-[a-z-]+|thread-[a-z]+|importance"
    rb"|precedence|user-agent|organization|arc-[a-z-]+)[ \t]*:"
)


def strip_mbox(raw: bytes) -> bytes:
    """Drop the mbox `From ` line an MTA puts first and undo its `>From ` quoting."""
    if not raw.startswith(b"From ") or _OBS_FROM_HEADER.match(raw):
        return raw
    end = LINE_END.search(raw)
    if end is None:
        return b""
    return _QUOTED_FROM.sub(rb"\1", raw[end.end() :])


def drop_bom(data: bytes, defects: list[str]) -> bytes:
    """Drop a UTF-8 byte order mark before the headers, noting it in `defects`."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
        defects.append("dropped a byte order mark before the headers")
    return data


def repair_header_block(data: bytes, defects: list[str]) -> bytes:
    """Drop junk before the headers and refold header lines that lost their indent.

    Both are taken only when real header lines follow, so a message without a
    header/body separator keeps its body.
    """
    end = HEADER_END.search(data)
    block_end = end.start() if end else len(data)
    if block_end == 0:
        return data
    block = data[:block_end]
    lines = LINE_END.split(block)
    ends = LINE_END.findall(block) + [b""]
    known_after = [False] * (len(lines) + 1)
    for i in range(len(lines) - 1, -1, -1):
        known_after[i] = known_after[i + 1] or bool(_KNOWN_HEADER.match(lines[i]))
    skip = 0
    while (
        skip < min(3, len(lines) - 2)
        and not _HEADER_LINE.match(lines[skip])
        and not lines[skip][:1].isspace()
    ):
        skip += 1
    if skip and not (_KNOWN_HEADER.match(lines[skip]) and known_after[skip + 1]):
        skip = 0
    if skip:
        defects.append(f"dropped {skip} junk line(s) before the headers")
    out = []
    refolded = renamed = 0
    for i in range(skip, len(lines)):
        line = lines[i]
        if (
            i > skip
            and line
            and not line[:1].isspace()
            and not _HEADER_LINE.match(line)
            and known_after[i + 1]
        ):
            line = b" " + line
            refolded += 1
        elif _SPACED_NAME.match(line):
            line = _SPACED_NAME.sub(rb"\1:", line, count=1)  # obsolete `Subject  :`
            renamed += 1
        out.append(line + ends[i])
    if not (skip or refolded or renamed):
        return data
    if refolded:
        defects.append(f"refolded {refolded} header line(s) that lost their indentation")
    if renamed:
        defects.append(f"removed the space before the colon of {renamed} header name(s)")
    return b"".join(out) + data[block_end:]
