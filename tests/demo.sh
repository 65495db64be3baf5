#!/usr/bin/env bash
# The switchyard demo: test origins b1, b2 (blue) and g1 (green) behind build/switchyard with
# conf/demo.yaml; prints what to try, then waits until Ctrl-C and stops everything it started.
# Builds nothing (make demo did).
#
# env: BUILD_DIR (default build), DEMO_WAIT_SECONDS (start-up bound, default 20),
#      DEMO_SELFTEST=1: start, check that :8080 answers from blue, stop, exit 0 or 1.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-build}
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
CONF=$ROOT/conf/demo.yaml
RUN=/tmp/switchyard-demo           # must match the paths in conf/demo.yaml
ORIGIN=$BUILD_DIR/tests/origin/origin
PROXY=$BUILD_DIR/switchyard
WAIT=${DEMO_WAIT_SECONDS:-20}
SELFTEST=${DEMO_SELFTEST:-0}
LISTEN=127.0.0.1:8080
PREVIEW=127.0.0.1:8081

pids=()       # everything this script started, stopped in reverse order
proxy_pid=

say() { printf '%s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; stop_all; exit 1; }

# Stops what we started: SIGTERM, up to 10 s for a graceful exit, then SIGKILL. Sets proxy_rc to
# the proxy's exit status (the daemon exits 0 on SIGTERM).
proxy_rc=
stop_all() {
    local i pid deadline
    trap - INT TERM
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null; done
    deadline=$((SECONDS + 10))
    for pid in ${pids[@]+"${pids[@]}"}; do
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            say "demo: pid $pid did not stop within 10 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
        if [ "$pid" = "$proxy_pid" ]; then
            wait "$pid" 2>/dev/null; proxy_rc=$?
        else
            wait "$pid" 2>/dev/null
        fi
    done
    pids=()
}

# port_busy HOST:PORT — true when something already accepts connections there.
port_busy() {
    (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}

show_log() {
    say "---- $1 (last 40 lines) ----" >&2
    tail -n 40 "$1" >&2 2>/dev/null || say "(no log)" >&2
    say "----" >&2
}

[ -x "$PROXY" ] || die "$PROXY not found: build first (make build)"
[ -x "$ORIGIN" ] || die "$ORIGIN not found: build first (make build)"
command -v curl >/dev/null || die "curl not found (make deps installs it)"
for a in $LISTEN $PREVIEW 127.0.0.1:9101 127.0.0.1:9102 127.0.0.1:9201; do
    port_busy "$a" && die "$a is already in use (another demo running?): stop it first"
done

mkdir -p "$RUN" || die "cannot create $RUN"
# A fresh start: a state file left by an earlier demo (say, after a cutover) would bring that
# routing back.
rm -f "$RUN/state.json" "$RUN/control.sock"

trap 'say ""; say "demo: stopping"; stop_all; exit 0' INT TERM

# start_origin ADDR POOL NAME
start_origin() {
    "$ORIGIN" --listen "$1" --pool "$2" --name "$3" --quiet >"$RUN/origin-$3.out" 2>&1 &
    pids+=($!)
}
start_origin 127.0.0.1:9101 blue b1
start_origin 127.0.0.1:9102 blue b2
start_origin 127.0.0.1:9201 green g1

# The origins print "origin listening on ..." once they accept connections.
deadline=$((SECONDS + WAIT))
for n in b1 b2 g1; do
    until grep -q '^origin listening on' "$RUN/origin-$n.out" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { show_log "$RUN/origin-$n.out"; die "origin $n did not start"; }
        sleep 0.1
    done
done

"$PROXY" -c "$CONF" 2>"$RUN/switchyard.log" &
proxy_pid=$!
pids+=("$proxy_pid")

# Listeners open after the first round of health checks: wait (bounded) for an answer.
body=
until body=$(curl -s --max-time 2 "http://$LISTEN/"); do
    if ! kill -0 "$proxy_pid" 2>/dev/null; then
        show_log "$RUN/switchyard.log"
        die "switchyard exited during start-up (log: $RUN/switchyard.log)"
    fi
    if [ $SECONDS -ge $deadline ]; then
        show_log "$RUN/switchyard.log"
        die "switchyard did not answer on $LISTEN within ${WAIT}s (log: $RUN/switchyard.log)"
    fi
    sleep 0.2
done

yardctl=
for y in "$BUILD_DIR/yardctl" "$BUILD_DIR/control/yardctl"; do
    [ -x "$y" ] && { yardctl=${y#"$ROOT"/}; break; }
done

if [ "$SELFTEST" = 1 ]; then
    fail=0
    case $body in
    "hello from blue/"*) say "ok - $LISTEN answered: $body" ;;
    *) say "not ok - $LISTEN answered '$body', expected 'hello from blue/...'"; fail=1 ;;
    esac
    # The preview listener is reported, not required, while route_to is being built.
    pbody=$(curl -s --max-time 2 "http://$PREVIEW/")
    case $pbody in
    "hello from green/"*) say "ok - $PREVIEW (preview) answered: $pbody" ;;
    *) say "# warning: $PREVIEW (preview) answered '$pbody', expected 'hello from green/...'" ;;
    esac
    # The yardctl commands the demo prints must work as printed.
    if [ -n "$yardctl" ]; then
        for cmd in "status" "weight green=25" "rollback --reason demo" "server blue/b1 drain" \
                   "server blue/b1 ready" "events"; do
            # shellcheck disable=SC2086
            if (cd "$ROOT" && SWITCHYARD_SOCKET=$RUN/control.sock $yardctl $cmd >/dev/null); then
                say "ok - yardctl $cmd"
            else
                say "not ok - yardctl $cmd failed"
                fail=1
            fi
        done
    fi
    stop_all
    if [ "$proxy_rc" != 0 ]; then
        say "not ok - switchyard exited with status $proxy_rc on SIGTERM (expected 0)"
        fail=1
    else
        say "ok - switchyard stopped cleanly on SIGTERM"
    fi
    [ $fail -eq 0 ] || show_log "$RUN/switchyard.log"
    exit $fail
fi


try() { printf '  %-52s # %s\n' "$1" "$2"; }

# A light background load (5 requests/s), so a demo cutover has traffic for its gates.
if [ "$SELFTEST" != 1 ]; then
    (while :; do curl -s -o /dev/null "http://$LISTEN/"; sleep 0.2; done) &
    pids+=($!)
fi
say ""
say "switchyard demo is running (pid $proxy_pid, config conf/demo.yaml)"
say "  blue : b1 127.0.0.1:9101, b2 127.0.0.1:9102  (live)"
say "  green: g1 127.0.0.1:9201                     (standby)"
say "  logs : $RUN/switchyard.log (the daemon), $RUN/access.log (requests, JSON lines)"
say ""
say "Try this:"
try "curl -i http://$LISTEN/" "live pool: hello from blue/b1 or blue/b2"
try "curl http://$PREVIEW/" "preview listener: the standby, hello from green/g1"
try "curl -i -b $RUN/jar -c $RUN/jar http://$LISTEN/" "sticky: the sy_bucket cookie keeps your bucket"
try "kill -HUP $proxy_pid" "reload conf/demo.yaml (a bad edit keeps the old one)"
say ""
if [ -n "$yardctl" ]; then
    say "Move traffic (with yardctl):"
    try "export SWITCHYARD_SOCKET=$RUN/control.sock" "the demo's control socket"
    try "$yardctl status" "pools, servers, health, routing, generation"
    try "$yardctl weight green=25" "25% of clients to green (sticky buckets)"
    try "for i in \$(seq 20); do curl -s http://$LISTEN/; done" "see the split"
    try "$yardctl rollback --reason demo" "instant: everything back to blue"
    try "$yardctl server blue/b1 drain" "b1 takes no new requests; 'ready' undoes it"
    try "$yardctl events" "what happened, with generations"
    try "$yardctl cutover --to green --wait" "gated rollout 25/50/75/100%, then green is live"
    try "$yardctl rollback" "instant: back to blue (kept warm)"
    try "curl --unix-socket $RUN/control.sock http://x/metrics" "Prometheus metrics"
    say "  (a light request loop runs in the background so the gates have traffic to judge)"
else
    say "Cutover: arrives with the control plane (yardctl), which is not built yet."
fi
say ""
say "Ctrl-C stops the demo."

# Wait for Ctrl-C; if the proxy dies on its own, say so and stop the rest.
while kill -0 "$proxy_pid" 2>/dev/null; do sleep 1; done
wait "$proxy_pid" 2>/dev/null
rc=$?
show_log "$RUN/switchyard.log"
others=()
for p in "${pids[@]}"; do [ "$p" = "$proxy_pid" ] || others+=("$p"); done
pids=(${others[@]+"${others[@]}"})
stop_all
die "switchyard exited on its own (status $rc)"
