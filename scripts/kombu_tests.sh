#!/usr/bin/env bash
# kombu's own Redis transport tests, run against the workers' transport (bridge.worker.transport).
#
#   scripts/kombu_tests.sh [unit|integration|all]      (default: all; `make kombu-tests`)
#
# Takes the sdist of the installed kombu from PyPI (`pip download`, cached under
# ${XDG_CACHE_HOME:-~/.cache}/kafka-celery-bridge/kombu/), unpacks it in a temporary folder and
# runs t/unit/transport/test_redis.py (unit: a fake Redis, no services) and/or
# t/integration/test_redis.py and test_redis_brpop_qos.py (integration: a throwaway
# redis-server of their own on a free port, no persistence, stopped afterwards: kombu's
# integration tests use fixed queue names in db 0 and expect a fresh Redis).
# scripts/kombu_tests/kombu_compat.py makes kombu's transport classes ours; the tests that fail
# by design are listed in scripts/kombu_tests/expected_failures.txt with a reason each.
# Exits non-zero on any other failure, and on a listed test that passes.
#
# Environment: PYTHON (.venv/bin/python), KOMBU_TESTS_TIMEOUT (120 s per test).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
PARTS="${1:-all}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/kafka-celery-bridge/kombu"

case "$PARTS" in
    unit|integration|all) ;;
    *) echo "usage: $0 [unit|integration|all]" >&2; exit 2 ;;
esac

VERSION="$("$PYTHON" -c 'import kombu; print(kombu.__version__)')"
SDIST="$CACHE/kombu-$VERSION.tar.gz"
if [ ! -f "$SDIST" ]; then
    mkdir -p "$CACHE"
    "$PYTHON" -m pip download --quiet --no-binary :all: --no-deps --dest "$CACHE" \
        "kombu==$VERSION"
fi

WORK="$(mktemp -d)"
REDIS_PID=""
cleanup() {
    if [ -n "$REDIS_PID" ]; then kill "$REDIS_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
tar -xzf "$SDIST" -C "$WORK"
SRC="$WORK/kombu-$VERSION"

if [ "$PARTS" != unit ]; then
    command -v redis-server >/dev/null \
        || { echo "kombu_tests: redis-server not found (apt-get install redis-server)" >&2; exit 2; }
    PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
        --logfile "$WORK/redis.log" &
    REDIS_PID=$!
    for _ in $(seq 100); do
        redis-cli -p "$PORT" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    export REDIS_HOST=127.0.0.1 REDIS_6379_TCP="$PORT"
fi

# One pytest session per part, as kombu's CI: the unit tests install a fake poller for good.
run_part() {
    echo "kombu_tests: kombu $VERSION's Redis transport tests ($1) against bridge.worker.transport"
    shift
    (cd "$SRC" && PYTHONPATH="$REPO/scripts/kombu_tests:$REPO${PYTHONPATH:+:$PYTHONPATH}" \
        "$PYTHON" -m pytest -p kombu_compat -p no:cacheprovider -q -rfExX \
        --timeout "${KOMBU_TESTS_TIMEOUT:-120}" -W ignore::DeprecationWarning "$@")
}
status=0
if [ "$PARTS" != integration ]; then
    run_part unit t/unit/transport/test_redis.py || status=$?
fi
if [ "$PARTS" != unit ]; then
    run_part integration t/integration/test_redis.py t/integration/test_redis_brpop_qos.py \
        || status=$?
fi
exit "$status"
