#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: a timing-free regression check for the
# request path (make bench-instructions). switchyard (workers: 1) runs under valgrind with
# instrumentation off; after a warm-up, instrumentation is switched on for exactly N keep-alive
# requests (curl, one connection, sequential) and off again; the total instruction count (every
# thread: the worker, and the main thread's once-a-second sampling) divided by N is the figure.
# The backend is the test origin (not measured). Scenarios:
#   small   GET /, small response (the origin's "hello" body)
#   post    POST with a 1 KiB body, small response
#   close   GET / with Connection: close: a new client connection per request (accept, set-up,
#           close), the upstream connection kept alive
#
# env: BUILD_DIR (build)  INSTR_REQUESTS (5000)  INSTR_OUT=FILE (also write the table there)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD_DIR=${BUILD_DIR:-build}
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
SY=$BUILD_DIR/switchyard
ORIGIN=$BUILD_DIR/tests/origin/origin
N=${INSTR_REQUESTS:-5000}

die() { printf 'bench-instructions: %s\n' "$*" >&2; exit 1; }
[[ $N =~ ^[1-9][0-9]*$ ]] || die "INSTR_REQUESTS must be a positive integer (got '$N')"
for t in valgrind callgrind_control curl; do
    command -v $t >/dev/null || die "$t not found: run make deps"
done
if [ ! -x "$SY" ] || [ ! -x "$ORIGIN" ]; then
    die "$SY or $ORIGIN not found: build first (make build)"
fi

W=$(mktemp -d /tmp/switchyard-instr.XXXXXX)
pids=()
cleanup() {
    local p
    for p in ${pids[@]+"${pids[@]}"}; do kill -TERM "$p" 2>/dev/null || true; done
    for p in ${pids[@]+"${pids[@]}"}; do wait "$p" 2>/dev/null || true; done
    if [ "${INSTR_KEEP:-0}" = 1 ]; then echo "kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

# The origin on a port of its choosing.
"$ORIGIN" --listen 127.0.0.1:0 --pool blue --name b1 --quiet >"$W/origin.out" &
pids+=("$!")
for _ in $(seq 100); do grep -q 'listening' "$W/origin.out" 2>/dev/null && break; sleep 0.05; done
OPORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$W/origin.out")
[ -n "$OPORT" ] || die "the origin did not start"

cat >"$W/sy.yaml" <<EOF
listen:
  - address: 127.0.0.1:0
workers: 1
pools:
  blue:
    servers:
      - {name: b1, address: 127.0.0.1:$OPORT}
  green:
    servers:
      - {name: g1, address: 127.0.0.1:$OPORT}
health: {interval: 1h}
routing: {live: blue, standby_percent: 0, sticky: {by: none}}
control: {socket: $W/control.sock}
EOF

run_scenario() { # name, curl args...
    local name=$1; shift
    local out=$W/cg.$name
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
        "$SY" -c "$W/sy.yaml" 2>"$W/sy.$name.err" &
    local vpid=$!
    pids+=("$vpid")
    local port=
    for _ in $(seq 400); do
        port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$W/sy.$name.err" | head -1)
        [ -n "$port" ] && break
        sleep 0.05
    done
    [ -n "$port" ] || die "switchyard did not start under valgrind: $(tail -5 "$W/sy.$name.err")"
    # Warm-up: connections, pools, caches and lazily made structures.
    curl -s -o /dev/null "$@" "http://127.0.0.1:$port/w[1-200]"
    callgrind_control -i on "$vpid" >/dev/null 2>&1
    curl -s -o /dev/null "$@" "http://127.0.0.1:$port/r[1-$N]"
    callgrind_control -i off "$vpid" >/dev/null 2>&1
    kill -TERM "$vpid"
    wait "$vpid" 2>/dev/null || true
    local total
    total=$(awk '/^totals:/ {print $2; exit}' "$out")
    [ -n "$total" ] || die "no callgrind totals in $out"
    printf '| %s | %d | %d |\n' "$name" "$N" $((total / N))
}

{
    echo "| scenario | requests | instructions per request |"
    echo "|---|---:|---:|"
    run_scenario small
    head -c 1024 /dev/zero | tr '\0' 'x' >"$W/body"
    run_scenario post -X POST --data-binary "@$W/body" -H 'Content-Type: application/octet-stream'
    run_scenario close -H 'Connection: close'
} | tee "${INSTR_OUT:-/dev/null}"
