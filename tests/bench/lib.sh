# shellcheck shell=bash
# Helpers shared by tests/bench/bench.sh and tests/bench/targets.sh; sourced, not run.
#
# The caller sets, before sourcing: LIB_TAG (prefix of messages, e.g. "bench"), CCPU and SCPU
# (the client's and the servers' CPU). bench_tmpdir then makes the temp dir $W and installs the
# EXIT trap that stops every process recorded in pids/clients and removes $W (kept when
# BENCH_KEEP=1). Works under `set -u` with or without `set -e`.

die() { printf '%s: %s\n' "$LIB_TAG" "$*" >&2; exit 1; }
say() { printf '%s: %s\n' "$LIB_TAG" "$*" >&2; }

# need_tools CMD...: fails with a hint when one is missing.
need_tools() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null || die "$t not found: run make deps (installs nginx, haproxy, wrk, openssl)"
    done
}

# port_busy PORT: true when something accepts connections on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ports_free PORT...: fails when one is taken.
ports_free() {
    local p
    for p in "$@"; do
        if port_busy "$p"; then die "127.0.0.1:$p is in use (another bench running?)"; fi
    done
}

pids=()      # servers started by start/start_cpu (stopped on exit)
clients=()   # client processes running in the background (stopped on exit)
W=
# shellcheck disable=SC2317  # called from the EXIT trap
bench_cleanup() {
    local p
    for p in ${clients[@]+"${clients[@]}"} ${pids[@]+"${pids[@]}"}; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.3
    for p in ${clients[@]+"${clients[@]}"} ${pids[@]+"${pids[@]}"}; do
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    [ -n "$W" ] || return 0
    if [ "${BENCH_KEEP:-0}" = 1 ]; then say "kept $W"; else rm -rf "$W"; fi
}
# bench_tmpdir NAME: makes $W (/tmp/NAME.XXXXXX) and sets the traps.
bench_tmpdir() {
    W=$(mktemp -d "/tmp/$1.XXXXXX") || die "mktemp failed"
    chmod 755 "$W"   # nginx workers (user nobody when run as root) read files from here
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    mkdir -p "$W/www" "$W/tmp"
}

# ngx_common NAME [WORKER_CONNECTIONS [WORKERS]]: the head of an nginx config (4096 connections,
# 1 worker, temp files and logs in $W, never in the system's directories); the caller closes the
# http block.
ngx_common() {
    local wc=${2:-4096} nw=${3:-1} nofile hard
    nofile=$((2 * wc + 64)) hard=$(ulimit -Hn)   # its workers (user nobody) cannot go beyond
    if [ "$hard" != unlimited ] && [ "$nofile" -gt "$hard" ]; then nofile=$hard; fi
    cat <<NG
worker_processes $nw; daemon off; pid $W/$1.pid; error_log $W/$1.err;
worker_rlimit_nofile $nofile;
events { worker_connections $wc; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $W/tmp/$1-body; proxy_temp_path $W/tmp/$1-proxy;
  fastcgi_temp_path $W/tmp/$1-fcgi; uwsgi_temp_path $W/tmp/$1-uwsgi; scgi_temp_path $W/tmp/$1-scgi;
NG
}

# start_cpu CPUS NAME CMD...: runs CMD in the background, pinned to CPUS ("" = not pinned), its
# output in $W/NAME.log; taskset execs, so the last element of pids is the server itself.
start_cpu() {
    local cpus=$1 name=$2; shift 2
    if [ -n "$cpus" ]; then
        taskset -c "$cpus" "$@" >"$W/$name.log" 2>&1 &
    else
        "$@" >"$W/$name.log" 2>&1 &
    fi
    pids+=($!)
}
# start NAME CMD...: start_cpu on the server CPU.
start() { start_cpu "$SCPU" "$@"; }

# stop PID: stops one server started above (TERM, then KILL after 3 s) and forgets it.
stop() {
    local i p=$1 keep=()
    kill -TERM "$p" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    for i in ${pids[@]+"${pids[@]}"}; do [ "$i" = "$p" ] || keep+=("$i"); done
    pids=(${keep[@]+"${keep[@]}"})
}

# ready NAME PORT PID [https]: waits (10 s at most) until the server answers 200 on /.
ready() {
    local i scheme=${4:-http}
    for ((i = 0; i < 100; i++)); do
        [ "$(curl -sk -o /dev/null -w '%{http_code}' --max-time 1 "$scheme://127.0.0.1:$2/")" = 200 ] &&
            return 0
        kill -0 "$3" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$3" 2>/dev/null; then
        say "$1 did not answer 200 on $scheme://127.0.0.1:$2 within 10 s; its log:"
    else
        say "$1 exited during start-up; its log:"
    fi
    tail -n 20 "$W/$1.log" "$W/$1.err" >&2 2>/dev/null
    exit 1
}

# to_ms "1.23ms" → 1.23; to_us "52.00us" → 52; to_mb "2.5GB" → 2560 (wrk's units are binary).
to_ms() {
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        m = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1;
        if (v == "" || m < 0) print "?"; else printf "%.2f", n * m }'
}
to_us() {
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        m = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1e6 : (u == "m") ? 6e7 : -1;
        if (v == "" || m < 0) print "?"; else printf "%.0f", n * m }'
}
to_mb() {
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        m = (u == "B") ? 1/1048576 : (u == "KB") ? 1/1024 : (u == "MB") ? 1 : (u == "GB") ? 1024 : -1;
        if (v == "" || m < 0) print "?"; else printf "%.0f", n * m }'
}

declare -A RPS P50 P99 P50US P99US MBS ERR
# wrk_parse OUT KEY: reads one wrk --latency output; fills RPS (requests/s), P50/P99 (ms),
# P50US/P99US (µs), MBS (MB/s) and ERR (non-2xx responses, socket errors, or why wrk failed)
# for KEY. RPS is "?" when wrk printed no result.
# shellcheck disable=SC2034  # the arrays are the callers'
wrk_parse() {
    local out=$1 k=$2
    RPS[$k]=$(awk '/^Requests\/sec/ { printf "%.0f", $2 }' "$out")
    P50[$k]=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
    P99[$k]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
    P50US[$k]=$(to_us "$(awk '$1 == "50%" { print $2 }' "$out")")
    P99US[$k]=$(to_us "$(awk '$1 == "99%" { print $2 }' "$out")")
    MBS[$k]=$(to_mb "$(awk '/^Transfer\/sec/ { print $2 }' "$out")")
    ERR[$k]=$(awk '/Non-2xx/ { printf "non-2xx %s; ", $NF }
        /Socket errors/ { sub(/^ *Socket errors: */, ""); printf "socket errors %s; ", $0 }' "$out")
    ERR[$k]=${ERR[$k]%; }
    if [ -z "${RPS[$k]}" ]; then RPS[$k]="?"; ERR[$k]="wrk failed: $(tail -n 1 "$out")"; fi
}

# shellcheck disable=SC2034  # used by the callers
CLK_TCK=$(getconf CLK_TCK)
# cpu_ticks PID: user + system CPU ticks of PID and its children (nginx's worker is a child of
# the master we started; HAProxy and switchyard are one process each).
cpu_ticks() {
    local t=0 p v
    for p in "$1" $(pgrep -P "$1"); do
        # the fields after "pid (comm) ": utime and stime are the 12th and 13th
        v=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }')
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

# rss_kib PID [FIELD]: VmRSS (or FIELD, e.g. VmHWM) of PID in KiB; empty when PID is gone.
rss_kib() { awk -v f="${2:-VmRSS}:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true; }
# rss_sum PID...: the summed VmRSS of the PIDs in KiB (0 for those that are gone).
rss_sum() {
    local p files=()
    for p in "$@"; do
        if [ -r "/proc/$p/status" ]; then files+=("/proc/$p/status"); fi
    done
    if [ ${#files[@]} -eq 0 ]; then echo 0; return 0; fi
    awk '$1 == "VmRSS:" { s += $2 } END { print s + 0 }' "${files[@]}" 2>/dev/null || echo 0
}
# with_children PID: PID and its children (nginx: the master and its workers).
with_children() { echo "$1" "$(pgrep -P "$1" | paste -sd ' ' || true)"; }

# ratio A B: A/B with two decimals, "?" unless both are positive numbers.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "?" }'; }
