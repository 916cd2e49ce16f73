"""Fixtures: the real `tars` binary started on a loopback port with a config
made for the test (TLS with a certificate from `tars gen-cert`, one
registered client whose argon2id hash comes from `tars hash-secret`), in
front of the fake Ollama of fake_ollama.py.

The binary is $TARS_BIN, else target/debug/tars of this repository
(`cargo build --bin tars`); without it the tests fail, naming the fix.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Optional

import pytest
import pytest_asyncio

from fake_ollama import MODEL, FakeOllama
from tars_client import cert_fingerprint

REPO = Path(__file__).resolve().parents[3]
CLIENT_ID = "laptop"
SECRET = "s3cret-for-the-python-client-tests-0123456789"
JWT_SECRET = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#: Variables the gateway reads: cleared so the caller's shell changes nothing.
GATEWAY_ENV = (
    "TARS_LISTEN JWT_SECRET_KEY JWT_ALGORITHM JWT_EXPIRATION_HOURS JWT_REFRESH_EXPIRATION_DAYS "
    "WS_HEARTBEAT_INTERVAL WS_MAX_CONNECTIONS WS_MESSAGE_QUEUE_SIZE WS_TIMEOUT_SECONDS OLLAMA_HOST "
    "OLLAMA_MODEL MODEL_TEMPERATURE MODEL_TOP_P MODEL_TOP_K MODEL_MAX_TOKENS CORS_ORIGINS "
    "HTTPS_ENABLED TLS_CERT_PATH TLS_KEY_PATH NOTIFY_SOCKET WATCHDOG_USEC LISTEN_FDS RUST_LOG "
    "JOURNAL_STREAM"
).split()


def tars_bin() -> Path:
    p = Path(os.environ.get("TARS_BIN") or REPO / "target" / "debug" / "tars")
    if not p.is_file():
        pytest.fail(f"no gateway binary at {p}: run `cargo build --bin tars` or set TARS_BIN", pytrace=False)
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in GATEWAY_ENV}


class Gateway:
    """One `tars` process on a fixed loopback port (so a restart answers at
    the same URL with the same key, certificate and data)."""

    def __init__(self, dir: Path, ollama_url: str, extra: str = "") -> None:
        self.dir = dir
        dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"https://localhost:{self.port}"
        self.config = dir / "config.toml"
        self.cert = dir / "certs" / "tars.crt"
        self.log = dir / "tars.log"
        self.proc: Optional[subprocess.Popen] = None
        hashed = subprocess.run(
            [str(tars_bin()), "hash-secret"], input=SECRET + "\n", capture_output=True, text=True,
            timeout=60, env=_env(),
        )
        assert hashed.returncode == 0, hashed.stderr
        self.config.write_text(
            f"""
[server]
listen = "127.0.0.1:{self.port}"
data_dir = "data"
shutdown_grace_secs = 2
[tls]
enabled = true
cert = "certs/tars.crt"
key = "certs/tars.key"
[log]
level = "info"
[auth]
secret = "{JWT_SECRET}"
access_ttl_hours = 1
[[auth.clients]]
id = "{CLIENT_ID}"
secret_hash = "{hashed.stdout.strip()}"
[ollama]
host = "{ollama_url}"
model = "{MODEL}"
allowed_models = ["{MODEL}"]
retries = 0
[limits]
auth_per_minute = 100000
connections_per_second = 100000
max_connections_per_ip = 100000
{extra}
"""
        )
        gen = subprocess.run(
            [str(tars_bin()), "--config", str(self.config), "gen-cert"], capture_output=True, text=True,
            timeout=60, env=_env(),
        )
        assert gen.returncode == 0, gen.stderr

    @property
    def fingerprint(self) -> str:
        return cert_fingerprint(ssl.PEM_cert_to_DER_cert(self.cert.read_text()))

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def start(self) -> "Gateway":
        """Start `tars` and wait (at most 20 s) until it logs `listening`."""
        offset = len(self.logs())
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(tars_bin()), "--config", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=_env(),
            )
        end = time.monotonic() + 20
        while "listening" not in self.logs()[offset:]:
            if self.proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"tars did not start; its log:\n{self.logs()}")
            await asyncio.sleep(0.05)
        return self

    def kill(self) -> None:
        """SIGKILL: connections drop without a close frame."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    async def wait_log(self, needle: str, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if needle in self.logs():
                return True
            await asyncio.sleep(0.05)
        return False


@pytest_asyncio.fixture
async def ollama() -> AsyncIterator[FakeOllama]:
    fake = await FakeOllama().start()
    yield fake
    await fake.stop()


@pytest.fixture
def make_gateway(tmp_path: Path, ollama: FakeOllama) -> Any:
    """`await make_gateway(extra_toml)` -> a started Gateway (stopped after the test)."""
    started = []

    async def make(extra: str = "") -> Gateway:
        gw = Gateway(tmp_path / f"gw{len(started)}", ollama.url, extra)
        started.append(gw)
        return await gw.start()

    yield make
    for gw in started:
        gw.stop()


@pytest_asyncio.fixture
async def gateway(make_gateway: Any) -> Gateway:
    return await make_gateway()


class CuttableProxy:
    """A TCP relay in front of the gateway whose connections the test can cut
    abruptly (`cut()`: both sides aborted, no close frame, no FIN handshake
    finished), as a Wi-Fi drop would. New connections go through again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: Optional[asyncio.base_events.Server] = None
        self._pairs: list = []

    async def start(self) -> "CuttableProxy":
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def cut(self) -> int:
        n = len(self._pairs)
        for a, b in self._pairs:
            a.transport.abort()
            b.transport.abort()
        self._pairs.clear()
        return n

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _conn(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            cw.transport.abort()
            return
        self._pairs.append((cw, uw))

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                w.close()  # flushes what was written, then FIN

        await asyncio.gather(pipe(cr, uw), pipe(ur, cw))


@pytest_asyncio.fixture
async def proxy(gateway: Gateway) -> AsyncIterator[CuttableProxy]:
    p = await CuttableProxy(gateway.port).start()
    yield p
    await p.stop()
