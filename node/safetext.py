"""One function that makes untrusted text safe to print: certificate subjects, issuers, SANs, descriptions.

Certificate text comes from whoever made the certificate. Printed raw, a newline in a CN makes a
line of its own (a forged log or table row) and an escape sequence rewrites the administrator's
terminal. :func:`safe_text` shows every control character (C0, DEL, C1), every Unicode format
character (bidirectional overrides, zero-width characters) and every line or paragraph separator
as a visible escape (``\\n``, ``\\x1b``, ``\\u202e``). Backslashes are left alone, so the function is
idempotent: text escaped by the node and shown again by a door is not escaped twice (a CN that
literally contains ``\\n`` reads like an escaped newline; it can never be one).
Printable text, accents and CJK included, is left as it is.
Every door uses it: CLI tables and JSON, the SSH platform CLI, the REST API, logs. Messages of
node errors (:mod:`node.errors`) and everything the web pages render go through :func:`safe_lines`,
so input an error quotes back (an unknown store named ``\x1b[2J``) is shown escaped too.
"""

from __future__ import annotations

import unicodedata

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNSAFE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}


def _escape(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def safe_text(text: str | None) -> str:
    """``text`` with control, format and separator characters shown escaped (None becomes '')."""
    if not text:
        return ""
    if text.isascii() and text.isprintable():
        return text  # the common case: nothing to escape
    return "".join(_escape(ch) if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in text)


def safe_lines(text: str | None) -> str:
    """Like :func:`safe_text`, but the line breaks of a text made of lines (a help text, a PEM block, an
    error that shows a command's syntax) are kept; every other control character is shown escaped."""
    if not text:
        return ""
    return "\n".join(safe_text(line) for line in text.split("\n"))


def is_safe(text: str) -> bool:
    """Whether ``text`` has nothing :func:`safe_text` would escape (what tests and fuzzers assert)."""
    return all(unicodedata.category(ch) not in _UNSAFE_CATEGORIES for ch in text)
