#!/usr/bin/env python3
"""Stream one answer from a T.A.R.S. gateway with the `tars_client` package.

    python3 -m pip install ./clients/python          # or just `websockets`: see below
    python3 python_client.py --url https://localhost:8443 --client-id my-laptop \
        --ca certs/tars.crt "What is the capital of France?"

Gets an access token (with --secret for a registered client, without one
under open enrollment), streams the answer token by token, then prints the
`complete` frame's figures. An `error` frame is printed and ends the program
with exit code 1. If the connection drops mid-answer, the package resumes
the answer where the gateway supports it; otherwise this script reconnects
with backoff and asks again.

--ca FILE trusts the gateway's own certificate (certs/tars.crt),
--fingerprint pins its SHA-256 (logged at start) instead; with neither the
system's trust store is used; --insecure skips verification (testing only).
The package is clients/python/ in the gateway's repository; the protocol is
docs/protocol.md.
"""

import argparse
import asyncio
import sys
from pathlib import Path

try:
    import tars_client
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python" / "src"))
    import tars_client

from tars_client import ChatError, ConnectionLost, TARSClient, TARSError


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="https://localhost:8443", help="the gateway's https:// URL")
    p.add_argument("--client-id", required=True)
    p.add_argument("--secret", help="the client's secret (not needed under open enrollment)")
    p.add_argument("--ca", help="PEM file to trust, e.g. the gateway's certs/tars.crt")
    p.add_argument("--fingerprint", help="the certificate's SHA-256 fingerprint to pin")
    p.add_argument("--insecure", action="store_true", help="do not verify the certificate")
    p.add_argument("--model", help="a model from GET /models (default: the gateway's)")
    p.add_argument("--conversation", default="python-example", help="conversation_id")
    p.add_argument("--retries", type=int, default=5, help="reconnections before giving up")
    p.add_argument("prompt", nargs="?", default="What is the capital of France?")
    args = p.parse_args()

    client = TARSClient(
        base_url=args.url, ca=args.ca, fingerprint=args.fingerprint, insecure=args.insecure,
        retries=args.retries,
    )
    async with client:
        await client.authenticate(
            client_id=args.client_id, device_name="python example", client_secret=args.secret
        )
        await client.connect()
        print(f"connected: session {client.session_id}", file=sys.stderr)
        for attempt in range(args.retries + 1):
            try:
                async for token in client.stream(
                    args.prompt, model=args.model, conversation_id=args.conversation
                ):
                    print(token, end="", flush=True)
                print()
                break
            except ConnectionLost as e:
                print(flush=True)  # end the partial answer's line
                print(f"connection lost ({e})", file=sys.stderr)
                if attempt == args.retries:
                    sys.exit(f"gave up after {args.retries} reconnections")
                delay = min(2**attempt, 30)
                print(f"reconnecting in {delay} s", file=sys.stderr)
                await asyncio.sleep(delay)

    done = client.last_complete
    print(
        f"complete: {done.total_tokens} tokens, model {done.model}, "
        f"first token {done.first_token_ms} ms, total {done.latency_ms} ms, "
        f"{done.tokens_per_second} tokens/s, done_reason {done.done_reason}"
    )


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except ChatError as e:
        sys.exit(f"\nerror: {e}")
    except TARSError as e:
        sys.exit(f"failed: {e}")
    except KeyboardInterrupt:
        sys.exit(130)
