"""Defines `KilnError`, the one exception the Kiln client raises for failed API calls.

HTTP errors from the master are turned into `KilnError` in exactly one place,
`error_from_http`, which both `kiln.client.Client` and `kiln.metrics.Reporter` use.
"""

from __future__ import annotations

import json
from typing import Optional

__all__ = ["KilnError", "error_from_http"]


class KilnError(Exception):
    """A Kiln API call failed.

    Parameters
    ----------
    message : str
        What went wrong, as the master (or the client, for transport errors) said it.
    status : int, optional
        The HTTP status code; ``None`` when the master could not be reached.
    code : str, optional
        The canonical error code from the error body (``"INVALID_ARGUMENT"``,
        ``"NOT_FOUND"``, ...); ``"UNAVAILABLE"`` for transport errors.

    Attributes
    ----------
    message, status, code
        As given.
    """

    def __init__(self, message: str, status: Optional[int] = None,
                 code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    def __str__(self) -> str:
        if self.status is None and self.code is None:
            return self.message
        where = " ".join(str(p) for p in (self.status, self.code) if p is not None)
        return f"{where}: {self.message}"

    def __repr__(self) -> str:
        return (f"KilnError(message={self.message!r}, status={self.status!r}, "
                f"code={self.code!r})")


def error_from_http(status: int, body: bytes, reason: str = "") -> KilnError:
    """Maps an HTTP error response to a `KilnError`.

    Parameters
    ----------
    status : int
        The HTTP status code (4xx or 5xx).
    body : bytes
        The response body; Kiln's is ``{"error": {"code": ..., "message": ...}}``.
        Anything else (a proxy's HTML page, an empty body) still gives a readable error.
    reason : str, optional
        The HTTP reason phrase, used when the body carries no message.

    Returns
    -------
    KilnError
        With ``status``, and ``code``/``message`` from the body when present.
    """
    code: Optional[str] = None
    message = ""
    try:
        parsed = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError):
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        err = parsed["error"]
        code = err.get("code") if isinstance(err.get("code"), str) else None
        message = str(err.get("message", ""))
    if not message:
        text = body.decode("utf-8", "replace").strip() if body else ""
        message = text[:500] or reason or f"HTTP {status}"
    return KilnError(message, status=status, code=code)
