"""Typed errors of the T.A.R.S. client.

Everything the client raises on purpose derives from `TARSError`:

- `ChatError` and one subclass per `code` of the gateway's `error` frame
  (docs/protocol.md §2): `ModelNotAllowed`, `RateLimited`, ... A code this
  version does not know raises `ChatError` itself, with `.code` set.
- `HTTPError` (and `AuthenticationError` for a 401): the gateway answered an
  HTTP request (`/auth/*` or the WebSocket upgrade) with an error status and
  its `{"error": CODE, "message": TEXT}` body.
- `CertificateMismatch`: the server's certificate does not have the pinned
  SHA-256 fingerprint. Nothing was sent to that server.
- `ConnectError`: the gateway could not be reached (after the retries).
- `ConnectionLost`: the connection dropped in the middle of an answer and the
  answer could not be resumed; `.partial` holds the text received so far.
- `ProtocolError`: the gateway sent something this client does not understand.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type


class TARSError(Exception):
    """Base class of every error this package raises on purpose."""


class ProtocolError(TARSError):
    """A frame or an answer that does not follow docs/protocol.md."""


class ConnectError(TARSError):
    """The gateway could not be reached, or the handshake failed."""


class CertificateMismatch(ConnectError):
    """The server's certificate is not the pinned one (`fingerprint=`)."""

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(
            f"the server's certificate has SHA-256 fingerprint {got}, not the pinned {expected}: "
            "nothing was sent to it (if the gateway's certificate was renewed, pin the new one)"
        )
        self.expected = expected
        self.got = got


class HTTPError(TARSError):
    """An HTTP error answer from the gateway, with its JSON error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class AuthenticationError(HTTPError):
    """401: unknown client, wrong secret, or an invalid/expired/revoked token."""


class ConnectionLost(TARSError):
    """The connection dropped mid-answer and the answer was not resumed.

    `partial` is the text received before the drop, `last_seq` the `seq` of
    its last token. The next call reconnects on its own.
    """

    def __init__(self, message: str, partial: str = "", last_seq: int = 0) -> None:
        super().__init__(message)
        self.partial = partial
        self.last_seq = last_seq


class ChatError(TARSError):
    """An `error` frame from the gateway: `code`, `message`, `conversation_id`."""

    code = ""

    def __init__(
        self, message: str, *, code: str = "", conversation_id: Optional[str] = None
    ) -> None:
        super().__init__(f"{code or self.code}: {message}")
        if code:
            self.code = code
        self.message = message
        self.conversation_id = conversation_id


class InvalidMessage(ChatError):
    """The gateway refused a message that is not a valid chat."""

    code = "invalid_message"


class ModelNotAllowed(ChatError):
    """The requested model is not one of this client's models."""

    code = "model_not_allowed"


class RateLimited(ChatError):
    """Too many chats a minute; wait `retry_after_ms` before the next one."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_ms: Optional[int] = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after_ms = retry_after_ms


class Busy(ChatError):
    """The session's chat queue is full."""

    code = "busy"


class ShuttingDown(ChatError):
    """The gateway is draining for a restart; reconnect and ask again."""

    code = "shutting_down"


class UpstreamUnavailable(ChatError):
    """Ollama could not be reached before the first token."""

    code = "upstream_unavailable"


class UpstreamError(ChatError):
    """Ollama failed after it started (the answer is incomplete)."""

    code = "upstream_error"


class Internal(ChatError):
    """A bug in the gateway."""

    code = "internal"


class ResumeUnavailable(ChatError):
    """Nothing to resume: the window passed, or the generation is gone."""

    code = "resume_unavailable"


class ResumedElsewhere(ChatError):
    """Another session of this client took the generation over."""

    code = "resumed_elsewhere"


#: `error` frame code -> exception class.
CHAT_ERRORS: Dict[str, Type[ChatError]] = {
    cls.code: cls
    for cls in (
        InvalidMessage,
        ModelNotAllowed,
        RateLimited,
        Busy,
        ShuttingDown,
        UpstreamUnavailable,
        UpstreamError,
        Internal,
        ResumeUnavailable,
        ResumedElsewhere,
    )
}


def chat_error(frame: Dict[str, Any]) -> ChatError:
    """The exception for an `error` frame (a `ChatError` for unknown codes)."""
    code = str(frame.get("code") or "unknown")
    message = str(frame.get("message") or "")
    conversation_id = frame.get("conversation_id")
    cls = CHAT_ERRORS.get(code)
    if cls is RateLimited:
        return RateLimited(
            message,
            retry_after_ms=frame.get("retry_after_ms"),
            conversation_id=conversation_id,
        )
    if cls is None:
        return ChatError(message, code=code, conversation_id=conversation_id)
    return cls(message, conversation_id=conversation_id)
