"""Python client of the T.A.R.S. gateway: tokens, a WebSocket session and
answers streamed token by token (docs/protocol.md in the gateway's repository).

    from tars_client import TARSClient

    client = TARSClient(base_url="https://nas.local:8443", ca="tars.crt")
    await client.authenticate(client_id="laptop", device_name="My laptop", client_secret="...")
    await client.connect()
    response = await client.chat("What is T.A.R.S.?")
    async for token in client.stream("And in one line?", conversation_id="c1"):
        print(token, end="", flush=True)
    print(client.last_complete)
    await client.close()
"""

from .client import Complete, TARSClient, __version__
from .errors import (
    CHAT_ERRORS,
    AuthenticationError,
    Busy,
    CertificateMismatch,
    ChatError,
    ConnectError,
    ConnectionLost,
    HTTPError,
    Internal,
    InvalidMessage,
    ModelNotAllowed,
    ProtocolError,
    RateLimited,
    ResumedElsewhere,
    ResumeUnavailable,
    ShuttingDown,
    TARSError,
    UpstreamError,
    UpstreamUnavailable,
)
from .transport import cert_fingerprint

__all__ = [
    "TARSClient",
    "Complete",
    "__version__",
    "cert_fingerprint",
    "CHAT_ERRORS",
    "TARSError",
    "ChatError",
    "InvalidMessage",
    "ModelNotAllowed",
    "RateLimited",
    "Busy",
    "ShuttingDown",
    "UpstreamUnavailable",
    "UpstreamError",
    "Internal",
    "ResumeUnavailable",
    "ResumedElsewhere",
    "HTTPError",
    "AuthenticationError",
    "ConnectError",
    "CertificateMismatch",
    "ConnectionLost",
    "ProtocolError",
]
