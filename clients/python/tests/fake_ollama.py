"""A fake Ollama for the client's tests: real HTTP/1.1 on loopback, `/api/chat`
answered as Ollama does (`application/x-ndjson`, one JSON line per chunk of a
chunked body, strings escaped as Go's encoding/json escapes them, a final
`"done": true` line with figures), plus `/api/version`, `/api/tags`, `/api/ps`.

What it answers is set per test: `tokens` and the `delay` before each one.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple

MODEL = "fake-model"
VERSION = "0.5.1"


def go_json(s: str) -> str:
    """A JSON string as Go writes it: UTF-8 kept, `<`, `>`, `&` as \\u escapes."""
    return json.dumps(s, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def created_at() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class FakeOllama:
    def __init__(self) -> None:
        self.tokens: List[str] = ["Hello", " world", "."]
        self.delay = 0.0
        #: The JSON bodies of /api/chat requests, in order.
        self.requests: List[Dict[str, Any]] = []
        #: Answers being streamed right now.
        self.streams_open = 0
        self._server: Optional[asyncio.base_events.Server] = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "FakeOllama":
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def wait_streams_open(self, n: int, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.streams_open >= n:
                return True
            await asyncio.sleep(0.02)
        return False

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                req = await asyncio.wait_for(_read_request(reader), 30)
                if req is None:
                    return
                method, path, body = req
                if not await self._answer(method, path, body, writer):
                    return
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _answer(self, method: str, path: str, body: bytes, w: asyncio.StreamWriter) -> bool:
        if method == "GET" and path == "/api/version":
            return await _json(w, 200, {"version": VERSION})
        if method == "GET" and path in ("/api/tags", "/api/ps"):
            return await _json(w, 200, {"models": [{"name": MODEL, "model": MODEL, "size": 1, "digest": "0" * 64}]})
        if method == "POST" and path == "/api/chat":
            try:
                doc = json.loads(body)
            except ValueError:
                return await _json(w, 400, {"error": "invalid character looking for beginning of value"})
            self.requests.append(doc)
            return await self._stream(doc.get("model") or MODEL, w)
        return await _json(w, 404, {"error": "404 page not found"})

    async def _stream(self, model: str, w: asyncio.StreamWriter) -> bool:
        w.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        self.streams_open += 1
        started = time.monotonic()
        try:
            head = '{"model":' + go_json(model) + ',"created_at":"'
            for tok in list(self.tokens):
                if self.delay:
                    await asyncio.sleep(self.delay)
                line = head + created_at() + '","message":{"role":"assistant","content":' + go_json(tok) + '},"done":false}\n'
                await _chunk(w, line.encode())
            eval_ns = max(1, int((time.monotonic() - started) * 1e9))
            done = (
                head + created_at() + '","message":{"role":"assistant","content":""},"done":true,'
                '"done_reason":"stop","total_duration":' + str(eval_ns + 1000) + ',"load_duration":500,'
                '"prompt_eval_count":26,"prompt_eval_duration":500,"eval_count":' + str(len(self.tokens))
                + ',"eval_duration":' + str(eval_ns) + "}\n"
            )
            await _chunk(w, done.encode())
            w.write(b"0\r\n\r\n")
            await w.drain()
            return True
        finally:
            self.streams_open -= 1


async def _chunk(w: asyncio.StreamWriter, data: bytes) -> None:
    w.write(b"%x\r\n%s\r\n" % (len(data), data))
    await w.drain()


async def _json(w: asyncio.StreamWriter, status: int, doc: Dict[str, Any]) -> bool:
    body = json.dumps(doc).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
    w.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await w.drain()
    return True


async def _read_request(r: asyncio.StreamReader) -> Optional[Tuple[str, str, bytes]]:
    line = await r.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: Dict[str, str] = {}
    while True:
        h = await r.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    body = b""
    if "chunked" in headers.get("transfer-encoding", ""):
        while True:
            n = int((await r.readline()).split(b";")[0].strip(), 16)
            if n == 0:
                await r.readline()
                break
            body += await r.readexactly(n)
            await r.readline()
    elif "content-length" in headers:
        body = await r.readexactly(int(headers["content-length"]))
    return method, path.split("?")[0], body
