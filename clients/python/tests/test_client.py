"""TARSClient against the real gateway binary (TLS, real WebSocket, fake
Ollama speaking real NDJSON): the seed's Quick Start, byte-exact streaming,
typed errors, token refresh, certificate pinning and reconnects."""

from __future__ import annotations

import asyncio
import time

import pytest

from conftest import CLIENT_ID, SECRET, CuttableProxy, Gateway
from fake_ollama import MODEL, FakeOllama
from tars_client import (
    CHAT_ERRORS,
    AuthenticationError,
    CertificateMismatch,
    ChatError,
    ConnectError,
    ConnectionLost,
    ModelNotAllowed,
    RateLimited,
    TARSClient,
    TARSError,
)
from tars_client.errors import chat_error
from tars_client.transport import post_json, pretty_fingerprint

#: Text that JSON, Go's escaping and UTF-8 can get wrong.
TRICKY = [
    "Héllo",
    ' "quoted"',
    " back\\slash",
    "\n<script>alert(1)</script>",
    " & 🚀",
    " \u2028line\tsep",
    " 中文",
    ".",
]


def client_for(gw: Gateway, **kw) -> TARSClient:
    return TARSClient(base_url=gw.url, ca=str(gw.cert), **kw)


async def signed_in(gw: Gateway, **kw) -> TARSClient:
    c = client_for(gw, **kw)
    await c.authenticate(client_id=CLIENT_ID, device_name="pytest", client_secret=SECRET)
    return c


async def test_seed_quick_start_runs_as_written(gateway: Gateway, ollama: FakeOllama) -> None:
    client = TARSClient(base_url=gateway.url, ca=str(gateway.cert))
    await client.authenticate(client_id=CLIENT_ID, device_name="My Device", client_secret=SECRET)
    await client.connect()
    response = await client.chat("What is T.A.R.S.?")
    assert response == "Hello world."
    done = client.last_complete
    assert done is not None
    assert (done.total_tokens, done.model, done.done_reason) == (3, MODEL, "stop")
    assert done.first_token_ms is not None and done.latency_ms >= done.first_token_ms
    assert ollama.requests[-1]["messages"][-1] == {"role": "user", "content": "What is T.A.R.S.?"}
    assert client.session_id and client.reconnects == 0
    await client.close()
    assert await gateway.wait_log("session opened")


async def test_stream_yields_the_tokens_byte_exact(gateway: Gateway, ollama: FakeOllama) -> None:
    ollama.tokens = TRICKY
    async with await signed_in(gateway) as client:
        got = [t async for t in client.stream("tricky", model=MODEL, conversation_id="c-1")]
        assert got == TRICKY
        assert client.last_complete.total_tokens == len(TRICKY)
        assert client.last_complete.conversation_id == "c-1"
        # The conversation continues: Ollama gets the first answer back as history.
        ollama.tokens = ["ok"]
        assert await client.chat("again", conversation_id="c-1") == "ok"
        history = ollama.requests[-1]["messages"]
        assert {"role": "assistant", "content": "".join(TRICKY)} in history


async def test_disallowed_model_raises_its_own_error_class(gateway: Gateway) -> None:
    async with await signed_in(gateway) as client:
        with pytest.raises(ModelNotAllowed) as e:
            await client.chat("hi", model="not-a-model", conversation_id="m-1")
        assert isinstance(e.value, ChatError) and isinstance(e.value, TARSError)
        assert e.value.code == "model_not_allowed"
        assert "not-a-model" in e.value.message and e.value.conversation_id == "m-1"
        # The session stays open and usable.
        assert await client.chat("hi") == "Hello world."
        assert client.reconnects == 0


async def test_rate_limited_carries_retry_after(make_gateway) -> None:
    gw = await make_gateway("chat_per_minute = 1")
    async with await signed_in(gw) as client:
        assert await client.chat("one") == "Hello world."
        with pytest.raises(RateLimited) as e:
            await client.chat("two")
        assert e.value.retry_after_ms and e.value.retry_after_ms > 0


def test_every_error_code_has_its_class() -> None:
    codes = [
        "invalid_message", "model_not_allowed", "rate_limited", "busy", "shutting_down",
        "upstream_unavailable", "upstream_error", "internal", "resume_unavailable", "resumed_elsewhere",
    ]
    assert sorted(CHAT_ERRORS) == sorted(codes)
    seen = set()
    for code in codes:
        err = chat_error({"type": "error", "code": code, "message": "m", "conversation_id": "c"})
        assert type(err) is CHAT_ERRORS[code] and err.code == code and err.conversation_id == "c"
        seen.add(type(err))
    assert len(seen) == len(codes)
    unknown = chat_error({"type": "error", "code": "brand_new", "message": "m"})
    assert type(unknown) is ChatError and unknown.code == "brand_new"


async def test_wrong_secret_is_an_authentication_error(gateway: Gateway) -> None:
    client = client_for(gateway)
    with pytest.raises(AuthenticationError) as e:
        await client.authenticate(client_id=CLIENT_ID, client_secret="wrong")
    assert e.value.status == 401 and e.value.code


async def test_refresh_by_hand_and_before_expiry(gateway: Gateway) -> None:
    # Access tokens live 1 h here: a margin of 1 h - 1 s makes them due after 1 s.
    client = await signed_in(gateway, refresh_margin=3599.0)
    first_access, first_refresh = client.access_token, client._refresh
    await client.refresh()
    assert client.access_token != first_access and client.refreshes == 1
    # A refresh token is accepted once; presenting a used one again revokes
    # its whole family (RFC 9700 4.14.2): the pair the client holds now dies too.
    with pytest.raises(AuthenticationError):
        await post_json(client._ep, "/auth/refresh", {"refresh_token": first_refresh},
                        client._ctx, None, 10, "pytest")
    with pytest.raises(AuthenticationError):
        await post_json(client._ep, "/auth/validate", {}, client._ctx, None, 10, "pytest",
                        {"Authorization": f"Bearer {client.access_token}"})
    # Automatic: once the token is due, connect() refreshes it first; the
    # family is gone, so the refresh is refused and the client signs in again
    # with its secret.
    before = client.access_token
    deadline = time.monotonic() + 10
    while time.monotonic() < client._access_expires - client.refresh_margin:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await client.connect()
    assert client.refreshes == 1 and client.reauthentications == 1
    assert client.access_token != before
    assert await client.chat("after refresh") == "Hello world."
    # A fresh family refreshes normally again.
    await client.refresh()
    assert client.refreshes == 2 and client.reauthentications == 1
    await client.close()


async def test_a_revoked_access_token_is_replaced_at_connect(gateway: Gateway) -> None:
    client = await signed_in(gateway)
    await post_json(client._ep, "/auth/revoke", {}, client._ctx, None, 10, "pytest",
                    {"Authorization": f"Bearer {client.access_token}"})
    # 401 at the upgrade -> refresh refused (revoking the access token revoked
    # its family's refresh token) -> signed in again with the secret -> connected.
    await client.connect()
    assert client.refreshes == 0 and client.reauthentications == 1
    assert await client.chat("hi") == "Hello world."
    await client.close()


async def test_fingerprint_pin_right(gateway: Gateway) -> None:
    # By IP address: with a pin, the host name is not what is checked.
    url = f"https://127.0.0.1:{gateway.port}"
    for fp in (gateway.fingerprint, pretty_fingerprint(gateway.fingerprint)):
        async with TARSClient(base_url=url, fingerprint=fp) as client:
            await client.authenticate(client_id=CLIENT_ID, client_secret=SECRET)
            assert await client.chat("pinned") == "Hello world."


async def test_fingerprint_pin_wrong_sends_nothing(gateway: Gateway) -> None:
    right = gateway.fingerprint
    wrong = ("0" if right[0] != "0" else "1") + right[1:]
    stranger = TARSClient(base_url=gateway.url, fingerprint=wrong)
    with pytest.raises(CertificateMismatch) as e:
        await stranger.authenticate(client_id="pinned-wrong", client_secret=SECRET)
    assert e.value.got == pretty_fingerprint(right)

    # The WebSocket upgrade (it carries the token) is not sent either.
    client = await signed_in(gateway)
    client.fingerprint = wrong
    with pytest.raises(CertificateMismatch):
        await client.connect()
    assert not client.connected

    # A marker that does reach the gateway: once it is logged, nothing of
    # the two refused attempts is there before it.
    marker = await signed_in(gateway)
    await marker.connect()
    assert await gateway.wait_log("session opened")
    logs = gateway.logs()
    assert "pinned-wrong" not in logs
    assert logs.count("session opened") == 1 and logs.count("tokens issued") == 2
    await marker.close()


async def test_no_trust_without_ca_or_pin(gateway: Gateway) -> None:
    client = TARSClient(base_url=gateway.url)  # system trust store: self-signed refused
    with pytest.raises(ConnectError, match="certificate verify failed"):
        await client.authenticate(client_id=CLIENT_ID, client_secret=SECRET)


async def test_chat_asks_again_after_the_gateway_restarts(gateway: Gateway, ollama: FakeOllama) -> None:
    ollama.tokens = [f" t{i}" for i in range(12)]
    ollama.delay = 0.1
    client = await signed_in(gateway, backoff=0.2)
    await client.connect()
    answer = asyncio.ensure_future(client.chat("long", conversation_id="r-1"))
    assert await ollama.wait_streams_open(1, 10)
    gateway.kill()
    await gateway.start()
    assert await asyncio.wait_for(answer, 60) == "".join(ollama.tokens)
    assert client.reconnects >= 1 and len(ollama.requests) >= 2
    await client.close()


async def test_stream_after_a_network_drop(gateway: Gateway, ollama: FakeOllama, proxy: CuttableProxy) -> None:
    """Resumed byte-exact when the gateway advertises resume; otherwise
    `ConnectionLost` with exactly the text received (a `resume` frame sent to
    a gateway without it would come back as `invalid_message` instead)."""
    ollama.tokens = [f" w{i}" for i in range(30)]
    ollama.delay = 0.05
    client = TARSClient(base_url=proxy.url, ca=str(gateway.cert), backoff=0.1)
    await client.authenticate(client_id=CLIENT_ID, client_secret=SECRET)
    got = []
    try:
        async for tok in client.stream("long", conversation_id="d-1"):
            got.append(tok)
            if len(got) == 3:
                assert proxy.cut() >= 1
        assert client.resume_window_secs > 0, "resumed without the gateway offering it"
        assert got == ollama.tokens
        assert client.last_complete.total_tokens == len(ollama.tokens)
    except ConnectionLost as e:
        assert client.resume_window_secs == 0
        assert e.partial == "".join(got) and e.last_seq == len(got) >= 3
    # The next call reconnects on its own.
    ollama.delay = 0
    ollama.tokens = ["back"]
    assert await client.chat("again") == "back"
    assert client.reconnects == 1
    await client.close()


async def test_a_stream_left_early_does_not_leak_into_the_next(gateway: Gateway, ollama: FakeOllama) -> None:
    ollama.tokens = [f" x{i}" for i in range(40)]
    ollama.delay = 0.02
    async with await signed_in(gateway) as client:
        stream = client.stream("long")
        async for _ in stream:
            break
        await stream.aclose()
        ollama.tokens, ollama.delay = ["fresh"], 0
        assert await client.chat("next") == "fresh"
        assert client.last_complete.total_tokens == 1


def test_bad_settings_are_refused_naming_the_fix() -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        TARSClient(base_url="https://nas.local:8443", fingerprint="AB:CD")
    with pytest.raises(ValueError, match="needs an https:// base_url"):
        TARSClient(base_url="http://nas.local:8080", fingerprint="ab" * 32)
    with pytest.raises(ValueError, match="https://HOST:PORT"):
        TARSClient(base_url="ftp://nas.local")
