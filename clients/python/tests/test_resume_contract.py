"""The client's side of resume (gateway issue 17), against a scripted
WebSocket server that follows that specification: `connection_ack` with
`resume_window_secs`, a connection dropped mid-answer, then
`{"type":"resume","conversation_id":C,"last_seq":N}` answered with the frames
after N. test_client.py's network-drop test covers the real gateway, and
checks resume byte-exact there as soon as the gateway advertises it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, List

import pytest
from websockets.asyncio.server import serve

from tars_client import ConnectionLost, TARSClient

TOKENS = [f" r{i}" for i in range(1, 11)]


def frame(kind: str, **kw: Any) -> str:
    return json.dumps({"type": kind, **kw})


class Scripted:
    """First session: 5 tokens, then the TCP connection is aborted. Later
    sessions: a `resume` answered from `replay_from` (replaying tokens the
    client already has, which it must drop) or with `resume_unavailable`."""

    def __init__(self, available: bool = True, replay_from: int = 4) -> None:
        self.available = available
        self.replay_from = replay_from
        self.received: List[dict] = []
        self.sessions = 0

    async def handler(self, ws: Any) -> None:
        self.sessions += 1
        await ws.send(frame("connection_ack", client_id="c", session_id=f"s{self.sessions}", resume_window_secs=60))
        async for raw in ws:
            msg = json.loads(raw)
            self.received.append(msg)
            conv = msg.get("conversation_id")
            if msg["type"] == "chat":
                for seq, tok in enumerate(TOKENS[:5], 1):
                    await ws.send(frame("token", token=tok, seq=seq, conversation_id=conv))
                await asyncio.sleep(0.05)
                ws.transport.abort()
                return
            if msg["type"] == "resume":
                if not self.available:
                    await ws.send(frame("error", code="resume_unavailable", message="nothing to resume", conversation_id=conv))
                    continue
                for seq in range(self.replay_from, len(TOKENS) + 1):
                    await ws.send(frame("token", token=TOKENS[seq - 1], seq=seq, conversation_id=conv))
                await ws.send(frame("complete", total_tokens=len(TOKENS), conversation_id=conv, latency_ms=1.0,
                                    first_token_ms=0.5, tokens_per_second=10.0, model="m", done_reason="stop"))


async def client_of(server: Any) -> TARSClient:
    port = server.sockets[0].getsockname()[1]
    client = TARSClient(base_url=f"http://127.0.0.1:{port}", backoff=0.05)
    client._store({"access_token": "a", "refresh_token": "r", "expires_in": 3600})  # no /auth here
    client.client_id = "c"
    return client


async def test_a_dropped_answer_is_resumed_without_loss_or_duplicates() -> None:
    script = Scripted()
    async with serve(script.handler, "127.0.0.1", 0) as server:
        client = await client_of(server)
        got = [t async for t in client.stream("q", conversation_id="conv-9")]
        assert got == TOKENS
        assert client.last_complete.total_tokens == len(TOKENS)
        assert script.received[-1] == {"type": "resume", "conversation_id": "conv-9", "last_seq": 5}
        assert script.sessions == 2 and client.reconnects == 1
        await client.close()


async def test_resume_unavailable_is_connection_lost_with_the_partial_text() -> None:
    script = Scripted(available=False)
    async with serve(script.handler, "127.0.0.1", 0) as server:
        client = await client_of(server)
        with pytest.raises(ConnectionLost) as e:
            async for _ in client.stream("q", conversation_id="conv-9"):
                pass
        assert e.value.partial == "".join(TOKENS[:5]) and e.value.last_seq == 5
        await client.close()


async def test_no_resume_without_a_conversation_id() -> None:
    script = Scripted()
    async with serve(script.handler, "127.0.0.1", 0) as server:
        client = await client_of(server)
        with pytest.raises(ConnectionLost):
            async for _ in client.stream("q"):
                pass
        assert all(m["type"] != "resume" for m in script.received)
        await client.close()
