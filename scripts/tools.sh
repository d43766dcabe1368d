#!/usr/bin/env bash
# The command-line tools the tests use besides the Python packages, from Debian's packages:
#   docker-compose  validates docker-compose.yml (`config` needs no Docker engine)
#   promtool        checks monitoring/prometheus.yml (`promtool check config`)
#   chromium, chromedriver  a headless browser for tests/integration/test_console.py (Selenium)
#
#   scripts/tools.sh              install whichever is missing (quick when both are there)
#   scripts/tools.sh which NAME   print where NAME is (tests/integration/test_compose.py)
#
# docker-compose, chromium and chromium-driver are installed with apt-get. promtool is taken
# out of Debian's `prometheus` package into ${XDG_CACHE_HOME:-~/.cache}/kafka-celery-bridge/bin
# without installing the package, whose post-install script would start a Prometheus server.
# One on PATH wins.
set -euo pipefail

CACHE_BIN="${XDG_CACHE_HOME:-$HOME/.cache}/kafka-celery-bridge/bin"

log() { printf 'tools: %s\n' "$*" >&2; }
die() { printf 'tools: error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root (or sudo) to run: $*"
    fi
}

apt() {
    command -v apt-get >/dev/null 2>&1 || die "no apt-get: install $* by hand"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get "$@"
}

# The path of tool $1, or nothing.
which_tool() {
    if command -v "$1" 2>/dev/null; then return; fi
    if [[ -x "$CACHE_BIN/$1" ]]; then printf '%s\n' "$CACHE_BIN/$1"; fi
}

apt_updated=0
apt_update() {
    if (( ! apt_updated )); then apt update -qq >/dev/null; apt_updated=1; fi
}

ensure_docker_compose() {
    [[ -n "$(which_tool docker-compose)" ]] && return
    log "installing docker-compose with apt-get"
    apt_update
    apt install -y -qq --no-install-recommends docker-compose >/dev/null
}

ensure_chromium() {
    [[ -n "$(which_tool chromium)" && -n "$(which_tool chromedriver)" ]] && return
    log "installing chromium and chromium-driver with apt-get"
    apt_update
    apt install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
}

ensure_promtool() {
    [[ -n "$(which_tool promtool)" ]] && return
    log "extracting promtool from Debian's prometheus package into $CACHE_BIN"
    apt_update
    local tmp
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"; trap - RETURN' RETURN
    # apt-get download writes to the current directory as the calling user.
    (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1) ||
        die "apt-get download prometheus failed"
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
    mkdir -p "$CACHE_BIN"
    install -m 0755 "$tmp/root/usr/bin/promtool" "$CACHE_BIN/promtool"
}

case "${1:-install}" in
    install) ensure_docker_compose; ensure_promtool; ensure_chromium ;;
    which)
        found="$(which_tool "${2:?usage: scripts/tools.sh which NAME}")"
        [[ -n "$found" ]] || die "$2 not found: run bash scripts/tools.sh"
        printf '%s\n' "$found" ;;
    *) die "usage: scripts/tools.sh [install | which NAME]" ;;
esac
