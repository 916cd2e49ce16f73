"""`TARSClient`: tokens, one WebSocket session, streamed answers.

The wire protocol is docs/protocol.md of the gateway's repository. In short:
`POST /auth/token` gives an access/refresh pair; `/ws/chat` (with
`Authorization: Bearer`) answers `connection_ack`, then every `chat` gets
`token` frames (`seq` 1, 2, 3 ...) ended by one `complete` or one `error`.

One reader task per connection takes every frame off the socket: it answers
the gateway's JSON `ping`s, keeps `system` notices, and queues the rest for
the running `stream()`. So an idle client stays healthy (websockets' own
keepalive pings run too) and a dead connection is noticed.

Reconnects: a connection that fails is opened again with exponential backoff
(`retries`, `backoff`, `max_backoff`); a 401 at the upgrade refreshes the
token (or authenticates again) once. A drop in the middle of an answer is
resumed (`{"type":"resume","conversation_id":C,"last_seq":N}`) when the
gateway's `connection_ack` advertises `resume_window_secs` > 0 and the chat
had a `conversation_id`; otherwise `stream()` raises `ConnectionLost` with
the partial text, and `chat()` asks again on a new connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Deque, Dict, List, Optional

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.version import version as WS_VERSION

from . import transport
from .errors import (
    AuthenticationError,
    CertificateMismatch,
    ConnectError,
    ConnectionLost,
    HTTPError,
    ProtocolError,
    ResumeUnavailable,
    TARSError,
    chat_error,
)

__all__ = ["TARSClient", "Complete", "__version__"]

__version__ = "0.1.0"
USER_AGENT = f"tars-client-python/{__version__}"

log = logging.getLogger("tars_client")

#: Largest frame accepted from the gateway (a token frame is far smaller).
MAX_FRAME = 4 << 20
#: Timeouts, in seconds, for what has no parameter of its own.
CLOSE_TIMEOUT = 5.0
KEEPALIVE_SECS = 20.0


@dataclass(frozen=True)
class Complete:
    """The figures of a `complete` frame (docs/protocol.md §2)."""

    total_tokens: int
    latency_ms: float
    first_token_ms: Optional[float]
    tokens_per_second: float
    model: str
    done_reason: str
    conversation_id: Optional[str]
    raw: Dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_frame(cls, f: Dict[str, Any]) -> "Complete":
        return cls(
            total_tokens=int(f.get("total_tokens") or 0),
            latency_ms=float(f.get("latency_ms") or 0.0),
            first_token_ms=f.get("first_token_ms"),
            tokens_per_second=float(f.get("tokens_per_second") or 0.0),
            model=str(f.get("model") or ""),
            done_reason=str(f.get("done_reason") or ""),
            conversation_id=f.get("conversation_id"),
            raw=f,
        )


class _Dropped(Exception):
    """The connection ended (internal: turned into a reconnect or `ConnectionLost`)."""


class _PinnedConnection(ClientConnection):
    """A WebSocket connection that checks the certificate pin as soon as the
    TLS handshake is done, before the upgrade request (which carries the
    token) is written: on a mismatch the transport is aborted unwritten."""

    pin: Optional[str] = None
    mismatch: Optional[CertificateMismatch] = None

    def connection_made(self, transport_: Any) -> None:
        super().connection_made(transport_)
        try:
            transport.check_pin(transport_.get_extra_info("ssl_object"), self.pin)
        except CertificateMismatch as e:
            self.mismatch = e
            transport_.abort()


class TARSClient:
    """A client of one T.A.R.S. gateway.

    ```python
    client = TARSClient(base_url="https://nas.local:8443", ca="tars.crt")
    await client.authenticate(client_id="laptop", device_name="My laptop", client_secret="...")
    await client.connect()
    print(await client.chat("What is T.A.R.S.?"))
    await client.close()
    ```

    `ca`: PEM file to trust (the gateway's certs/tars.crt). `fingerprint`: the
    certificate's SHA-256 (as the gateway logs it) to pin instead. Neither:
    the system's trust store. `insecure=True` skips verification (tests).
    `timeout` bounds each HTTP request, connect and handshake; `read_timeout`
    the wait for the next frame of an answer. `refresh_margin`: refresh the
    access token when it has less than this many seconds left.
    """

    def __init__(
        self,
        base_url: str = "https://localhost:8443",
        *,
        ca: Optional[str] = None,
        fingerprint: Optional[str] = None,
        insecure: bool = False,
        timeout: float = 30.0,
        read_timeout: float = 300.0,
        refresh_margin: float = 300.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        device_type: str = "python",
    ) -> None:
        self.base_url = base_url
        self._ep = transport.Endpoint(base_url)
        self.ca = ca
        self.insecure = insecure
        self.fingerprint = fingerprint
        self.timeout = timeout
        self.read_timeout = read_timeout
        self.refresh_margin = refresh_margin
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.device_type = device_type

        #: The `sub` of the tokens, from `authenticate()`.
        self.client_id: Optional[str] = None
        #: The current session's id (`connection_ack`), None when not connected.
        self.session_id: Optional[str] = None
        #: The gateway's resume window from `connection_ack` (0: no resume).
        self.resume_window_secs: int = 0
        #: The figures of the last answer that completed.
        self.last_complete: Optional[Complete] = None
        #: The gateway's last `system` notices (for people).
        self.notices: Deque[str] = deque(maxlen=50)
        #: Connections opened after the first one (reconnects, resumes).
        self.reconnects = 0
        #: Access tokens obtained through `/auth/refresh`.
        self.refreshes = 0
        #: Times a refused refresh token was replaced by signing in again with
        #: the credentials (a revoked family: replayed refresh token, revoked
        #: access token, client cutoff).
        self.reauthentications = 0

        self._device_name: Optional[str] = None
        self._secret: Optional[str] = None
        self._access: Optional[str] = None
        self._refresh: Optional[str] = None
        self._access_expires = 0.0
        self._ws: Optional[ClientConnection] = None
        self._frames: Optional["asyncio.Queue[Any]"] = None
        self._reader: Optional["asyncio.Task[None]"] = None
        self._lock: Optional[asyncio.Lock] = None
        self._connected_once = False
        self._abandoned = False

    def __repr__(self) -> str:  # no token, no secret
        return f"TARSClient({self.base_url!r}, client_id={self.client_id!r}, session_id={self.session_id!r})"

    async def __aenter__(self) -> "TARSClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- settings ----------------------------------------------------------

    @property
    def fingerprint(self) -> Optional[str]:
        """The pinned SHA-256 fingerprint (`AB:CD:...`), or None."""
        return transport.pretty_fingerprint(self._pin) if self._pin else None

    @fingerprint.setter
    def fingerprint(self, fp: Optional[str]) -> None:
        self._pin = transport.normalize_fingerprint(fp) if fp else None
        if self._pin and not self._ep.tls:
            raise ValueError(f"fingerprint= needs an https:// base_url (got {self.base_url!r})")
        self._ctx = transport.tls_context(self.ca, self._pin, self.insecure)

    @property
    def access_token(self) -> Optional[str]:
        """The current access token (e.g. for `GET /models`)."""
        return self._access

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._reader is not None and not self._reader.done()

    # -- tokens ------------------------------------------------------------

    async def authenticate(
        self,
        client_id: str,
        device_name: Optional[str] = None,
        client_secret: Optional[str] = None,
        device_type: Optional[str] = None,
    ) -> None:
        """`POST /auth/token`. Without `client_secret` only under open enrollment.

        The secret stays in memory (never logged) so that the client can
        authenticate again when its refresh token has expired.
        """
        body: Dict[str, Any] = {"client_id": client_id, "device_type": device_type or self.device_type}
        if device_name is not None:
            body["device_name"] = device_name
        if client_secret is not None:
            body["client_secret"] = client_secret
        pair = await self._post("/auth/token", body)
        self.client_id, self._device_name, self._secret = client_id, device_name, client_secret
        if device_type:
            self.device_type = device_type
        self._store(pair)

    async def refresh(self) -> None:
        """Trade the refresh token for a new pair (each is accepted once).

        When the gateway refuses it (expired, revoked, already used), the
        client authenticates again with the credentials it was given.
        """
        if self._refresh is None or self.client_id is None:
            raise TARSError("authenticate() first: there is no refresh token")
        try:
            pair = await self._post("/auth/refresh", {"refresh_token": self._refresh})
        except AuthenticationError as e:
            log.info("refresh refused (%s); authenticating again", e.code)
            await self.authenticate(self.client_id, self._device_name, self._secret)
            self.reauthentications += 1
            return
        self.refreshes += 1
        self._store(pair)

    def _store(self, pair: Dict[str, Any]) -> None:
        try:
            self._access = str(pair["access_token"])
            self._refresh = str(pair["refresh_token"])
            expires_in = float(pair.get("expires_in") or 0)
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"a token answer without {e}") from None
        self._access_expires = time.monotonic() + expires_in

    async def _fresh_token(self) -> str:
        if self._access is None:
            raise TARSError("authenticate() first: there is no access token")
        if time.monotonic() >= self._access_expires - self.refresh_margin:
            await self.refresh()
        assert self._access is not None
        return self._access

    async def _post(self, path: str, body: Dict[str, Any]) -> Dict[str, Any]:
        return await transport.post_json(
            self._ep, path, body, self._ctx, self._pin, self.timeout, USER_AGENT
        )

    # -- connection --------------------------------------------------------

    async def connect(self) -> None:
        """Open the WebSocket session (with retries); a no-op when open."""
        await self._ensure_connected()

    async def close(self) -> None:
        """Close the session (close frame 1000). The tokens stay valid."""
        ws, reader = self._ws, self._reader
        self._ws = self._reader = self._frames = None
        self.session_id = None
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT)
            except (asyncio.TimeoutError, OSError, ConnectionClosed):
                pass
        if reader is not None:
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, Exception):
                pass

    async def _ensure_connected(self, deadline: Optional[float] = None) -> None:
        """Connect unless connected: up to `retries` more tries with backoff,
        and not past `deadline` (monotonic) when one is given."""
        if self.connected:
            return
        await self.close()
        tried_refresh = False
        attempt = 0
        while True:
            try:
                await self._open()
                return
            except CertificateMismatch:
                raise
            except AuthenticationError:
                # The token was refused at the upgrade (expired, revoked):
                # get a new one, once.
                if tried_refresh:
                    raise
                tried_refresh = True
                await self.refresh()
                continue
            except HTTPError as e:
                if e.status != 503 and e.status != 429:
                    raise
                err: TARSError = e
            except ConnectError as e:
                err = e
            if attempt >= self.retries:
                raise err
            delay = min(self.backoff * 2**attempt, self.max_backoff) * (0.8 + 0.4 * random.random())
            attempt += 1
            if deadline is not None and time.monotonic() + delay > deadline:
                raise err
            log.warning("connect failed (%s); retrying in %.1f s", err, delay)
            await asyncio.sleep(delay)

    async def _open(self) -> None:
        token = await self._fresh_token()
        made: List[_PinnedConnection] = []

        def factory(*a: Any, **kw: Any) -> _PinnedConnection:
            c = _PinnedConnection(*a, **kw)
            c.pin = self._pin
            made.append(c)
            return c

        kw: Dict[str, Any] = dict(
            additional_headers={"Authorization": f"Bearer {token}"},
            user_agent_header=USER_AGENT,
            open_timeout=self.timeout,
            close_timeout=CLOSE_TIMEOUT,
            ping_interval=KEEPALIVE_SECS,
            ping_timeout=KEEPALIVE_SECS,
            max_size=MAX_FRAME,
            create_connection=factory,
        )
        if self._ep.tls:
            kw["ssl"] = self._ctx
            kw["server_hostname"] = self._ep.host
        if int(WS_VERSION.split(".")[0]) >= 15:
            kw["proxy"] = None  # a LAN gateway: never through $HTTPS_PROXY
        try:
            ws = await ws_connect(self._ep.ws_url, **kw)
        except Exception as e:
            if made and made[0].mismatch is not None:
                raise made[0].mismatch from None
            if isinstance(e, InvalidStatus):
                raise _http_error(e) from None
            if isinstance(e, (OSError, asyncio.TimeoutError, TimeoutError, InvalidHandshake, EOFError)):
                raise ConnectError(f"cannot open {self._ep.ws_url}: {e!r}") from e
            raise
        try:
            ack = json.loads(await asyncio.wait_for(ws.recv(), self.timeout))
        except (asyncio.TimeoutError, ConnectionClosed, ValueError) as e:
            await ws.close()
            raise ConnectError(f"no connection_ack from {self._ep.ws_url}: {e!r}") from e
        if not isinstance(ack, dict) or ack.get("type") != "connection_ack":
            await ws.close()
            raise ProtocolError(f"the first frame is not connection_ack: {str(ack)[:200]}")
        self._ws = ws
        self.session_id = ack.get("session_id")
        self.resume_window_secs = int(ack.get("resume_window_secs") or 0)
        self._frames = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read(ws, self._frames))
        self._abandoned = False
        if self._connected_once:
            self.reconnects += 1
        self._connected_once = True

    async def _read(self, ws: ClientConnection, frames: "asyncio.Queue[Any]") -> None:
        """Every frame of one connection: `ping` answered, `system` kept, the
        rest queued for `stream()`; a `_Dropped` last when the socket ends."""
        why: Exception = _Dropped("closed")
        try:
            async for raw in ws:
                try:
                    f = json.loads(raw)
                except ValueError:
                    f = None
                if not isinstance(f, dict):
                    log.warning("ignored a frame that is not a JSON object")
                    continue
                kind = f.get("type")
                if kind == "ping":
                    await ws.send('{"type":"pong"}')
                elif kind == "system":
                    self.notices.append(str(f.get("message", "")))
                    log.info("gateway: %s", f.get("message"))
                elif kind in ("token", "complete", "error"):
                    frames.put_nowait(f)
                # thinking, status, pong and unknown types are not needed here.
            if ws.close_code is not None:
                why = _Dropped(f"closed by the gateway: {ws.close_code} {ws.close_reason}".strip())
        except ConnectionClosed as e:
            why = _Dropped(f"connection lost: {e}")
        except (OSError, asyncio.IncompleteReadError) as e:
            why = _Dropped(f"connection lost: {e!r}")
        finally:
            frames.put_nowait(why)

    async def _next(self, frames: "asyncio.Queue[Any]") -> Dict[str, Any]:
        try:
            f = await asyncio.wait_for(frames.get(), self.read_timeout)
        except asyncio.TimeoutError:
            raise _Dropped(f"no frame from the gateway for {self.read_timeout} s") from None
        if isinstance(f, Exception):
            frames.put_nowait(f)  # stays dropped for anyone reading later
            raise f
        return f

    async def _send(self, frame: Dict[str, Any]) -> None:
        if not self.connected or self._ws is None:
            raise _Dropped("not connected")
        try:
            await asyncio.wait_for(self._ws.send(json.dumps(frame)), self.timeout)
        except (ConnectionClosed, OSError, asyncio.TimeoutError) as e:
            raise _Dropped(f"send failed: {e!r}") from e

    async def _settle(self) -> None:
        """After an answer abandoned by its reader: cancel it and drain its
        frames, so the next answer starts clean (or start a new connection)."""
        if not self._abandoned:
            return
        self._abandoned = False
        if not self.connected or self._frames is None:
            return
        frames = self._frames
        try:
            await self._send({"type": "cancel"})
            while True:
                f = await asyncio.wait_for(self._next(frames), self.timeout)
                if f.get("type") in ("complete", "error"):
                    return
        except (_Dropped, asyncio.TimeoutError):
            await self.close()

    # -- chatting ----------------------------------------------------------

    async def chat(self, prompt: str, **kw: Any) -> str:
        """The whole answer to `prompt` (see `stream()` for the options).

        An answer cut by a dropped connection that cannot be resumed is
        asked again on a new connection (up to `retries` times).
        """
        for attempt in range(self.retries + 1):
            try:
                return "".join([t async for t in self.stream(prompt, **kw)])
            except ConnectionLost as e:
                if attempt == self.retries:
                    raise
                log.warning("%s; asking again", e)
        raise AssertionError("unreachable")

    async def stream(
        self,
        prompt: str,
        *,
        model: Optional[str] = None,
        conversation_id: Optional[str] = None,
        system: Optional[str] = None,
        options: Optional[Dict[str, Any]] = None,
    ) -> AsyncIterator[str]:
        """Ask `prompt`; yield the answer's tokens as they arrive.

        Their concatenation is exactly the model's text. At the end,
        `last_complete` holds the `complete` figures. An `error` frame raises
        its `ChatError` subclass. A dropped connection is resumed when the
        gateway supports it and `conversation_id` is set, else raises
        `ConnectionLost` (`.partial` has the text so far). A drop before the
        first token sends the chat again on a new connection.
        """
        chat: Dict[str, Any] = {"type": "chat", "content": prompt}
        for k, v in (("model", model), ("conversation_id", conversation_id), ("system", system), ("options", options)):
            if v is not None:
                chat[k] = v
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            await self._settle()
            last_seq, parts, drops, over = 0, [], 0, False
            try:
                frames = await self._start(chat)
                while True:
                    try:
                        f = await self._next(frames)
                    except _Dropped as drop:
                        drops += 1
                        await self.close()
                        if drops > self.retries:
                            raise ConnectionLost(f"{drop}; gave up", "".join(parts), last_seq) from None
                        if last_seq == 0:
                            log.warning("%s before the answer began; asking again", drop)
                            frames = await self._start(chat)
                        elif self.resume_window_secs > 0 and conversation_id:
                            log.warning("%s after token %d; resuming", drop, last_seq)
                            frames = await self._resume(conversation_id, last_seq, parts, drop)
                        else:
                            raise ConnectionLost(str(drop), "".join(parts), last_seq) from None
                        continue
                    kind = f["type"]
                    if kind == "token":
                        seq = int(f.get("seq") or last_seq + 1)
                        if seq <= last_seq:
                            continue  # replayed by a resume: already given out
                        last_seq = seq
                        tok = str(f.get("token", ""))
                        parts.append(tok)
                        yield tok
                    elif kind == "complete":
                        over = True
                        self.last_complete = Complete.from_frame(f)
                        return
                    elif kind == "error":
                        over = True
                        err = chat_error(f)
                        if isinstance(err, ResumeUnavailable):
                            raise ConnectionLost(
                                f"the answer could not be resumed: {err.message}", "".join(parts), last_seq
                            ) from err
                        raise err
            finally:
                if not over and self.connected:
                    # Left early (break, cancellation): the chat may still run.
                    self._abandoned = True

    async def _start(self, chat: Dict[str, Any]) -> "asyncio.Queue[Any]":
        """Connect if needed and send `chat`; the connection's frame queue."""
        for _ in range(self.retries + 1):
            await self._ensure_connected()
            frames = self._frames
            try:
                await self._send(chat)
                assert frames is not None
                return frames
            except _Dropped as e:
                log.warning("%s; reconnecting", e)
                await self.close()
        raise ConnectionLost("the chat could not be sent: the connection keeps dropping")

    async def _resume(
        self, conversation_id: str, last_seq: int, parts: List[str], drop: _Dropped
    ) -> "asyncio.Queue[Any]":
        deadline = time.monotonic() + self.resume_window_secs
        try:
            await self._ensure_connected(deadline=deadline)
            if self.resume_window_secs <= 0:
                raise ConnectionLost(
                    f"{drop}; the gateway no longer offers resume", "".join(parts), last_seq
                )
            frames = self._frames
            await self._send({"type": "resume", "conversation_id": conversation_id, "last_seq": last_seq})
        except (ConnectError, _Dropped) as e:
            raise ConnectionLost(f"{drop}; resume failed: {e}", "".join(parts), last_seq) from e
        assert frames is not None
        return frames


def _http_error(e: InvalidStatus) -> HTTPError:
    """The gateway's refusal of the upgrade, with its JSON body."""
    r = e.response
    code, message = "", ""
    try:
        doc = json.loads(r.body or b"")
        code, message = str(doc.get("error", "")), str(doc.get("message", ""))
    except (ValueError, AttributeError):
        message = (r.body or b"")[:200].decode("utf-8", "replace")
    cls = AuthenticationError if r.status_code == 401 else HTTPError
    return cls(r.status_code, code, message)
