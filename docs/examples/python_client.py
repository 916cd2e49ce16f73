#!/usr/bin/env python3
"""Stream one answer from a T.A.R.S. gateway over WSS.

    python3 -m pip install -r requirements.txt        # websockets
    python3 python_client.py --url https://localhost:8443 --client-id my-laptop \
        --ca certs/tars.crt "What is the capital of France?"

Gets an access token (POST /auth/token: with --secret for a registered client,
without one under open enrollment), opens /ws/chat, sends one `chat`, prints the
tokens as they stream and then the `complete` frame's figures. An `error` frame
is printed and ends the program with exit code 1. If the connection drops
before the answer is complete, it reconnects with backoff and asks again.

--ca FILE trusts the gateway's own certificate (certs/tars.crt); without it the
system's trust store is used; --insecure skips verification (testing only).
The protocol is described in docs/protocol.md.
"""

import argparse
import asyncio
import json
import ssl
import sys
import urllib.error
import urllib.request

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


class ServerError(Exception):
    """An `error` frame: the gateway refused or failed this chat."""


def tls_context(args):
    if args.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=args.ca)


def get_token(args, ctx):
    body = {"client_id": args.client_id, "device_name": "python example", "device_type": "python"}
    if args.secret:
        body["client_secret"] = args.secret
    req = urllib.request.Request(
        args.url.rstrip("/") + "/auth/token",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return json.load(r)["access_token"]
    except urllib.error.HTTPError as e:
        err = json.load(e)  # always {"error": CODE, "message": TEXT}
        sys.exit(f"token refused: {e.code} {err['error']}: {err['message']}")


async def ask(ws_url, token, ctx, args):
    """One connection: send the chat, stream the answer, return `complete`."""
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(ws_url, ssl=ctx, additional_headers=headers) as ws:
        ack = json.loads(await ws.recv())
        print(f"connected: session {ack['session_id']}", file=sys.stderr)
        chat = {"type": "chat", "content": args.prompt, "conversation_id": args.conversation}
        if args.model:
            chat["model"] = args.model
        await ws.send(json.dumps(chat))
        try:
            async for raw in ws:
                msg = json.loads(raw)
                kind = msg["type"]
                if kind == "token":
                    print(msg["token"], end="", flush=True)
                elif kind == "complete":
                    return msg
                elif kind == "error":
                    raise ServerError(f"{msg['code']}: {msg['message']}")
                elif kind == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
                elif kind == "system":
                    print(f"[gateway: {msg['message']}]", file=sys.stderr)
                # `thinking` frames (a thinking model's reasoning) are skipped here.
        finally:
            print(flush=True)  # end a partial answer's line
    raise ConnectionError("the gateway closed the connection before the answer was complete")


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="https://localhost:8443", help="the gateway's https:// URL")
    p.add_argument("--client-id", required=True)
    p.add_argument("--secret", help="the client's secret (not needed under open enrollment)")
    p.add_argument("--ca", help="PEM file to trust, e.g. the gateway's certs/tars.crt")
    p.add_argument("--insecure", action="store_true", help="do not verify the certificate")
    p.add_argument("--model", help="a model from GET /models (default: the gateway's)")
    p.add_argument("--conversation", default="python-example", help="conversation_id")
    p.add_argument("--retries", type=int, default=5, help="reconnections before giving up")
    p.add_argument("prompt", nargs="?", default="What is the capital of France?")
    args = p.parse_args()

    ctx = tls_context(args)
    ws_url = "wss://" + args.url.split("://", 1)[-1].rstrip("/") + "/ws/chat"
    token = None
    for attempt in range(args.retries + 1):
        try:
            token = token or get_token(args, ctx)
            done = await ask(ws_url, token, ctx, args)
            break
        except ServerError as e:
            sys.exit(f"\nerror: {e}")
        except InvalidStatus as e:
            # Refused before the upgrade: 401 (expired or revoked token: get a
            # new one), 503 (connection limit), 403 (Origin).
            print(f"refused: HTTP {e.response.status_code}", file=sys.stderr)
            if e.response.status_code == 401:
                token = None
        except (ConnectionClosed, ConnectionError, OSError) as e:
            print(f"\nconnection lost ({e})", file=sys.stderr)
        if attempt == args.retries:
            sys.exit(f"gave up after {args.retries} reconnections")
        delay = min(2**attempt, 30)
        print(f"reconnecting in {delay} s", file=sys.stderr)
        await asyncio.sleep(delay)

    print(
        f"complete: {done['total_tokens']} tokens, model {done['model']}, "
        f"first token {done['first_token_ms']} ms, total {done['latency_ms']} ms, "
        f"{done['tokens_per_second']} tokens/s, done_reason {done['done_reason']}"
    )


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
