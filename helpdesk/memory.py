"""Give the heap that a big mail's parse freed back to the system (glibc's malloc_trim).

Parsing a 25 MB mail builds and drops hundreds of thousands of small strings (the feed
parser's lines, the text's lines); glibc keeps the freed heap, so the process then
stores the mail with 80 MB it no longer uses still resident: 278 MB peak instead of 222
for an HTML-only mail. Only big mails pay for ctypes (2 ms); elsewhere this does nothing.
"""

from __future__ import annotations

__all__ = ["BIG", "give_back"]

BIG = 4 * 1024 * 1024  # below this, what a parse frees is not worth a call


def give_back() -> None:
    """Return free heap memory to the system where the C library can (glibc); else no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # another C library: its own policy stands
