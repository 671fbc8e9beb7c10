#!/usr/bin/env bash
# One entry point for a fresh machine: creates or updates .venv, then runs a job.
#   ./run.sh app [args]     launch the Gradio app on the bundled default model
#   ./run.sh test [args]    run the whole test suite
#   ./run.sh <cmd> [args]   run any command inside .venv (e.g. ./run.sh hfgd-lab --help)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
    echo "[run.sh] creating .venv with $($PY --version)" >&2
    "$PY" -m venv .venv
fi
STAMP=.venv/.hfgd-lab-installed
WANT=$(cat pyproject.toml run.sh | sha256sum | cut -c1-16)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    echo "[run.sh] installing dependencies into .venv (a few minutes the first time)" >&2
    .venv/bin/python -m pip install -q --upgrade pip
    # The torch pair that works with timm here; pip takes both from the local disk.
    .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
    .venv/bin/python -m pip install -q -e ".[all]"
    echo "$WANT" > "$STAMP"
fi
cmd=${1:-app}
shift || true
case "$cmd" in
    app)  exec .venv/bin/python app.py "$@" ;;
    test) exec .venv/bin/python -m pytest "$@" ;;
    *)    exec env PATH="$PWD/.venv/bin:$PATH" VIRTUAL_ENV="$PWD/.venv" "$cmd" "$@" ;;
esac
