#!/usr/bin/env bash
# The API reference's checks, against the real gateway and a fake Ollama
# (tests/examples.rs, #[ignore]d in a plain `cargo test`):
#   - openapi-spec-validator (PyPI) validates the served /openapi.json as OpenAPI 3.1;
#   - schemathesis (PyPI) runs property-based tests from it against the running
#     gateway: no 5xx, no undocumented status code, header or content type, no
#     body that breaks its schema (SCHEMATHESIS_MAX_EXAMPLES, default 20 per operation);
#   - docs/examples/python_client.py (websockets), node_client.js (ws) and the
#     seed report's seed_client.js (ws, axios) stream an answer, and reconnect
#     after the gateway is killed and restarted.
# Packages are installed from PyPI and npm into target/tmp/api-checks/ and
# reused while their pinned versions stay the same. Without python3, node or
# the registries, the affected test prints "SKIPPED: <why>" and passes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --test examples -- --ignored --nocapture </dev/null
