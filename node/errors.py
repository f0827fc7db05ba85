"""Errors a node returns to an administrator: a stable code plus a message naming the problem."""

from __future__ import annotations

from node.safetext import safe_lines


class CertsimError(Exception):
    """Base of every error that is reported to a user rather than crashing a node."""

    code = "error"

    def __init__(self, message: str) -> None:
        message = safe_lines(message)  # an error may quote what it was given: shown escaped (node.safetext)
        super().__init__(message)
        self.message = message


class BadInput(CertsimError):
    """Malformed or hostile input: garbage, truncated DER, empty PKCS#7, oversize files."""

    code = "bad-input"


class Refused(CertsimError):
    """Well-formed input that the product's rules refuse (expired, same-name rule, identity delete)."""

    code = "refused"


class NotFound(CertsimError):
    """An unknown node, store, unit or certificate name."""

    code = "not-found"


class Unavailable(CertsimError):
    """A node that did not answer in time, or a lab that is not running."""

    code = "unavailable"


ERROR_CLASSES: dict[str, type[CertsimError]] = {
    cls.code: cls for cls in (CertsimError, BadInput, Refused, NotFound, Unavailable)
}


def error_from(code: str, message: str) -> CertsimError:
    """Rebuild an error that crossed the bus, keeping its class."""
    return ERROR_CLASSES.get(code, CertsimError)(message)
