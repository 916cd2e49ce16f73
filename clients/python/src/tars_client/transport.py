"""TLS set-up, certificate pinning and the two JSON POSTs of `/auth/*`.

The gateway's certificate is usually self-signed, so a client either trusts
the certificate file (`ca=`), or pins its SHA-256 fingerprint
(`fingerprint=`, printed by the gateway at start), or uses the system's trust
store (a certificate from a public CA).

A pin must be checked after the TLS handshake and *before* the first byte of
the request: the request carries the client secret or a token. Neither
`ssl` nor the common HTTP libraries have a hook there, so the two POSTs to
`/auth/*` go through the small HTTP/1.1 client below (one request per
connection, `Connection: close`), which checks the pin between handshake and
write; the WebSocket connection checks it in `connection_made`
(client.py). See docs/adr/ for why this is not httpx.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import ssl
from typing import Any, Dict, Optional, Tuple
from urllib.parse import urlsplit

from .errors import AuthenticationError, CertificateMismatch, ConnectError, HTTPError, ProtocolError

#: Largest answer body read from `/auth/*`.
MAX_BODY = 1 << 20
#: Largest response header block.
MAX_HEAD = 64 * 1024


def normalize_fingerprint(fp: str) -> str:
    """`AB:CD:…`, `ab cd …` or `abcd…` -> 64 lowercase hex digits."""
    hexd = re.sub(r"[\s:]", "", fp).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", hexd):
        raise ValueError(
            "fingerprint= must be a SHA-256 fingerprint: 64 hex digits, colons allowed "
            f"(got {fp!r})"
        )
    return hexd


def pretty_fingerprint(hexd: str) -> str:
    """64 hex digits -> `AB:CD:…` as the gateway logs it."""
    return ":".join(hexd[i : i + 2] for i in range(0, len(hexd), 2)).upper()


def cert_fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, 64 lowercase hex digits."""
    return hashlib.sha256(der).hexdigest()


def tls_context(ca: Optional[str], fingerprint: Optional[str], insecure: bool) -> ssl.SSLContext:
    """The client's TLS settings.

    - `ca`: trust this PEM file (the gateway's certs/tars.crt) instead of the
      system store; the host name is checked against it.
    - `fingerprint` alone: trust exactly the certificate with this SHA-256
      (checked by `check_pin`); no CA and no host name check, since the pin
      is stronger than both.
    - `insecure`: no verification at all (tests only).
    """
    if insecure or (fingerprint and not ca):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=ca)


def check_pin(ssl_object: Any, pin: Optional[str]) -> None:
    """Raise `CertificateMismatch` unless the peer's certificate has `pin`."""
    if pin is None:
        return
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise CertificateMismatch(pretty_fingerprint(pin), "(no certificate)")
    got = cert_fingerprint(der)
    if got != pin:
        raise CertificateMismatch(pretty_fingerprint(pin), pretty_fingerprint(got))


class Endpoint:
    """Where the gateway is: scheme, host, port, and its WebSocket URL."""

    def __init__(self, base_url: str) -> None:
        u = urlsplit(base_url if "://" in base_url else "https://" + base_url)
        if u.scheme not in ("https", "http") or not u.hostname:
            raise ValueError(
                f"base_url must look like https://HOST:PORT (got {base_url!r})"
            )
        self.tls = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.tls else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = (self.tls and self.port == 443) or (not self.tls and self.port == 80)
        self.authority = host if default else f"{host}:{self.port}"
        self.ws_url = f"{'wss' if self.tls else 'ws'}://{self.authority}/ws/chat"


async def post_json(
    ep: Endpoint,
    path: str,
    body: Dict[str, Any],
    ctx: Optional[ssl.SSLContext],
    pin: Optional[str],
    timeout: float,
    user_agent: str,
    headers: Optional[Dict[str, str]] = None,
) -> Dict[str, Any]:
    """POST `body` as JSON to `path` (with extra `headers`); the answer's JSON object.

    Raises `AuthenticationError` on 401, `HTTPError` on any other error
    status, `ConnectError` when the gateway cannot be reached in `timeout`.
    """
    try:
        status, data = await asyncio.wait_for(
            _exchange(ep, path, body, ctx, pin, user_agent, headers or {}), timeout
        )
    except asyncio.TimeoutError:
        raise ConnectError(f"POST {path}: no answer from {ep.authority} within {timeout} s") from None
    except ssl.SSLError as e:
        raise ConnectError(f"POST {path}: TLS with {ep.authority} failed: {e}") from e
    except OSError as e:
        raise ConnectError(f"POST {path}: cannot reach {ep.authority}: {e}") from e
    try:
        doc = json.loads(data) if data else {}
    except ValueError:
        doc = None
    if status >= 400:
        code = doc.get("error", "") if isinstance(doc, dict) else ""
        message = doc.get("message", "") if isinstance(doc, dict) else data[:200].decode("utf-8", "replace")
        cls = AuthenticationError if status == 401 else HTTPError
        raise cls(status, str(code), str(message))
    if not isinstance(doc, dict):
        raise ProtocolError(f"POST {path}: answer {status} is not a JSON object")
    return doc


async def _exchange(
    ep: Endpoint,
    path: str,
    body: Dict[str, Any],
    ctx: Optional[ssl.SSLContext],
    pin: Optional[str],
    user_agent: str,
    headers: Dict[str, str],
) -> Tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(
        ep.host,
        ep.port,
        ssl=ctx if ep.tls else None,
        server_hostname=ep.host if ep.tls else None,
        limit=MAX_HEAD,
    )
    try:
        if ep.tls:
            check_pin(writer.get_extra_info("ssl_object"), pin)
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\n"
            f"Host: {ep.authority}\r\n"
            f"User-Agent: {user_agent}\r\n"
            "Accept: application/json\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + "Connection: close\r\n\r\n"
        )
        writer.write(head.encode("ascii") + payload)
        await writer.drain()
        return await _read_response(reader)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


async def _read_response(reader: asyncio.StreamReader) -> Tuple[int, bytes]:
    status_line = await reader.readline()
    parts = status_line.decode("latin-1").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP answer: {status_line[:80]!r}")
    status = int(parts[1])
    headers: Dict[str, str] = {}
    size = 0
    while True:
        line = await reader.readline()
        size += len(line)
        if size > MAX_HEAD:
            raise ProtocolError("HTTP answer header too large")
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return status, await _read_chunked(reader)
    if "content-length" in headers:
        n = int(headers["content-length"])
        if n > MAX_BODY:
            raise ProtocolError(f"HTTP answer body of {n} bytes is too large")
        return status, await reader.readexactly(n)
    data = await reader.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise ProtocolError("HTTP answer body too large")
    return status, data


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size_line = await reader.readline()
        n = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if n == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            return bytes(out)
        if len(out) + n > MAX_BODY:
            raise ProtocolError("HTTP answer body too large")
        out += await reader.readexactly(n)
        await reader.readline()
