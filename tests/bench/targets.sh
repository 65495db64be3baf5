#!/usr/bin/env bash
# shellcheck disable=SC2317  # the target and predicate functions are called by name
# Issue 7's eight performance targets, measured on loopback beside HAProxy (nbthread 1) and nginx
# (1 worker) where a comparison makes sense: the method of bench.sh (one nginx backend, every
# server pinned to one CPU, the client to the other, one run). make bench-targets runs it.
#   1. keep-alive small responses, BENCH_CONNS (50) connections: requests/s and p99
#   2. the same with 1,000 connections, and with `Connection: close` (a new connection per request)
#   3. 1 MiB responses and 1 MiB uploads: throughput; the proxies' peak RSS during those runs
#   4. added latency at low load: 1 connection, sequential requests: median and p99, proxy − direct
#   5. 10,000 idle keep-alive client connections: RSS before and after, KiB per connection
#   6. switchyard workers: 2 against workers: 1 (HAProxy nbthread 2/1, nginx 2/1 workers), all
#      processes unpinned on the 2 CPUs
#   7. rollback acknowledgement under full load: ack_us of 1,000 rollbacks while wrk runs
#   8. health checking 200 servers at 1 s intervals: switchyard's CPU over 30 s
# Prints a Markdown report: one table of the targets (met or not), then the details.
#
# env: BUILD_DIR (build)  BENCH_SECONDS (10) per wrk run  BENCH_CONNS (50)
#      TARGETS_MANY_CONNS (1000)  TARGETS_IDLE_CONNS (10000)  TARGETS_ROLLBACKS (1000)
#      TARGETS_HEALTH_SECONDS (30)  TARGETS_ONLY ("1 2 3 4 5 6 7 8") the targets to measure
#      BENCH_OUT=FILE  also write the report to FILE;  BENCH_KEEP=1  keep the temp dir
#      BENCH_CLIENT_CPU (0)  BENCH_SERVER_CPU (1)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LIB_TAG=bench-targets
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/tests/bench/lib.sh"
BUILD_DIR=${BUILD_DIR:-build}
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
SY=$BUILD_DIR/switchyard
ORIGIN=$BUILD_DIR/tests/origin/origin
HERE=$ROOT/tests/bench
D=${BENCH_SECONDS:-10}
C=${BENCH_CONNS:-50}
CMANY=${TARGETS_MANY_CONNS:-1000}
NIDLE=${TARGETS_IDLE_CONNS:-10000}
NROLL=${TARGETS_ROLLBACKS:-1000}
HC_SECS=${TARGETS_HEALTH_SECONDS:-30}
ONLY=${TARGETS_ONLY:-1 2 3 4 5 6 7 8}
CCPU=${BENCH_CLIENT_CPU:-0}
SCPU=${BENCH_SERVER_CPU:-1}
HC_ORIGINS=20    # test origins behind the 200 health-checked servers (each listed 10 times)
HC_PER_POOL=100
# Ports apart from bench.sh's (19001, 1808x, 1844x) and the demo's.
P_BACKEND=19301 P_NGINX=18381 P_HAPROXY=18382 P_SY=18383
P_BACKEND2=19302 P_T6=18384 P_T8=18385

for v in D C CMANY NIDLE NROLL HC_SECS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ $ONLY =~ ^[1-8\ ]+$ ]] || die "TARGETS_ONLY must list target numbers 1-8 (got '$ONLY')"
# want N: whether target N is to be measured.
want() { [[ " $ONLY " == *" $1 "* ]]; }
need_tools nginx haproxy wrk taskset curl awk python3 pgrep getconf
[ -x "$SY" ] || die "$SY not found: build it first (make build)"
[ -x "$ORIGIN" ] || die "$ORIGIN not found: build it first (make build)"
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs at least (client on one, servers on the other)"
# Target 5 holds NIDLE connections in the client and as many in each proxy: raise the open-file
# limit for everything started from here, as far as the hard limit allows (or beyond it, with
# CAP_SYS_RESOURCE). HAProxy insists on 2 descriptors per connection of its maxconn and refuses
# to start when the limit is lower, so its maxconn, and its share of target 5, may be smaller.
NGX_CONNS=$((NIDLE + 2000))
want_fds=$((NGX_CONNS * 2 + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want_fds" ]; then
    ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
FD_LIMIT=$(ulimit -n)
[ "$FD_LIMIT" != unlimited ] || FD_LIMIT=$want_fds
need_fds=1024
if want 2; then need_fds=$((CMANY * 2 + 1024)); fi
if want 5 && [ $((NIDLE + 1024)) -gt "$need_fds" ]; then need_fds=$((NIDLE + 1024)); fi
[ "$FD_LIMIT" -ge "$need_fds" ] ||
    die "the open-file limit $FD_LIMIT is too low for targets 2 and 5 (raise ulimit -n to $need_fds at least)"
HAP_MAXCONN=$((NIDLE + 2000))
[ $((HAP_MAXCONN * 2 + 300)) -le "$FD_LIMIT" ] || HAP_MAXCONN=$(((FD_LIMIT - 300) / 2))
HAP_IDLE=$NIDLE
[ "$HAP_IDLE" -le $((HAP_MAXCONN - 100)) ] || HAP_IDLE=$((HAP_MAXCONN - 100))
ports_free $P_BACKEND $P_NGINX $P_HAPROXY $P_SY $P_BACKEND2 $P_T6 $P_T8

bench_tmpdir switchyard-targets
head -c 1048576 /dev/zero | tr '\0' 'x' >"$W/www/1m.bin"
chmod -R a+rX "$W/www"
t_start=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- configurations ----------------------------------------------------------------------------
# The backend: `/` small, `/1m` a 1 MiB file (sendfile), `/upload` reads the whole request body
# (up to 2 MiB, in memory: the mirror module's mirror_request_body reads it before the content
# phase; the mirror subrequest itself is an internal 204) and then answers small — so every proxy
# sees the complete upload consumed before the response, as an application would.
backend_conf() { # NAME PORT
    ngx_common "$1" "$NGX_CONNS"
    cat <<NG
  sendfile on;
  server { listen 127.0.0.1:$2 reuseport backlog=4096;
    location = /1m { alias $W/www/1m.bin; default_type application/octet-stream; }
    location = /upload { client_max_body_size 2m; client_body_buffer_size 2m;
                         mirror /discard; mirror_request_body on; return 200 "uploaded\\n"; }
    location = /discard { internal; return 204; }
    location / { return 200 "hello from backend\\n"; } } }
NG
}
# The nginx proxy: as bench.sh's (upstream keep-alive 64, responses streamed). Uploads: nginx
# reads a whole request body before it connects upstream (proxy_request_buffering on, its
# default), here in memory (client_body_buffer_size 2m) rather than in a temp file. Streaming
# them (proxy_request_buffering off) costs nginx 1.22 its client keep-alive: it closes the
# connection after every upload (wrk: a read error per request), so it is not used.
nginx_conf() { # NAME PORT BACKEND_PORT WORKERS
    ngx_common "$1" "$NGX_CONNS" "$4"
    cat <<NG
  upstream app { server 127.0.0.1:$3; keepalive 64; }
  server { listen 127.0.0.1:$2 backlog=4096;
    client_max_body_size 2m; client_body_buffer_size 2m;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_max_temp_file_size 0; } } }
NG
}
haproxy_conf() { # PORT BACKEND_PORT NBTHREAD
    cat <<HA
global
  nbthread $3
  maxconn $HAP_MAXCONN
defaults
  mode http
  maxconn $HAP_MAXCONN
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:$1
  default_backend app
backend app
  server s1 127.0.0.1:$2
HA
}
# switchyard: as bench.sh's (both pools on the one backend, everything else default).
sy_conf() { # PORT BACKEND_PORT WORKERS SOCKET
    cat <<SY
# generated by tests/bench/targets.sh; both pools are required, both point at the one backend
listen:
  - {address: 127.0.0.1:$1}
workers: $3
pools:
  blue: {servers: [{name: b1, address: 127.0.0.1:$2}]}
  green: {servers: [{name: g1, address: 127.0.0.1:$2}]}
control: {socket: $4}
log: {level: warn}
SY
}
backend_conf backend $P_BACKEND >"$W/backend.conf"
nginx_conf nginx $P_NGINX $P_BACKEND 1 >"$W/nginx.conf"
haproxy_conf $P_HAPROXY $P_BACKEND 1 >"$W/haproxy.cfg"
sy_conf $P_SY $P_BACKEND 1 "$W/control.sock" >"$W/switchyard.yaml"
cat >"$W/upload.lua" <<'LUA'
-- POST a 1 MiB body on every request (tests/bench/targets.sh, target 3)
wrk.method = "POST"
wrk.body = string.rep("x", 1048576)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA

start backend nginx -p "$W/" -e "$W/backend.err" -c "$W/backend.conf"
ready backend $P_BACKEND "${pids[-1]}"
start nginx nginx -p "$W/" -e "$W/nginx.err" -c "$W/nginx.conf"
ngx_pid=${pids[-1]}
start haproxy haproxy -f "$W/haproxy.cfg" -db
hap_pid=${pids[-1]}
start switchyard "$SY" -c "$W/switchyard.yaml"
sy_pid=${pids[-1]}
ready nginx $P_NGINX "$ngx_pid"
ready haproxy $P_HAPROXY "$hap_pid"
ready switchyard $P_SY "$sy_pid"
[ "$(curl -s "http://127.0.0.1:$P_BACKEND/1m" | wc -c)" = 1048576 ] || die "backend does not serve /1m"
up=$(head -c 1048576 /dev/zero | curl -s --data-binary @- -H 'Content-Type: application/octet-stream' \
    "http://127.0.0.1:$P_BACKEND/upload" || true)
[ "$up" = uploaded ] || die "backend does not accept 1 MiB uploads on /upload (got '$up')"

declare -A PROXY_PID=([nginx]=$ngx_pid [haproxy]=$hap_pid [switchyard]=$sy_pid)
declare -A PORT=([direct]=$P_BACKEND [nginx]=$P_NGINX [haproxy]=$P_HAPROXY [switchyard]=$P_SY)
NAMES=(direct nginx haproxy switchyard)
PROXIES=(nginx haproxy switchyard)

# Every figure the report reads starts as "?" (not measured), so that TARGETS_ONLY can leave
# targets out.
declare -A RSS0 RSSPEAK IDLE_OPEN IDLE_FAILED IDLE_B IDLE_A IDLE_KIB
for k in t1 t2m t2c t3down t3up t4; do
    for n in "${NAMES[@]}"; do
        RPS[$k.$n]="?" P99[$k.$n]="?" P50US[$k.$n]="?" P99US[$k.$n]="?"
        ERR[$k.$n]="" RSS0[$k.$n]="?" RSSPEAK[$k.$n]="?"
    done
done
for k in t6.sy1a t6.sy2a t6.sy1b t6.sy2b t6.hap1 t6.hap2 t6.ngx1 t6.ngx2 t7; do
    RPS[$k]="?" P99[$k]="?" ERR[$k]=""
done
for n in "${PROXIES[@]}"; do
    IDLE_OPEN[$n]="?" IDLE_FAILED[$n]="?" IDLE_B[$n]="?" IDLE_A[$n]="?" IDLE_KIB[$n]="?"
done
T6_SY1="?" T6_SY2="?"
FAILED=0   # 1 when a measurement could not be taken (the exit status)
T7_OK=1 T7_LOADED="?" T7_N="?" T7_FAILED="?" T7_SECS="?"
T7_P50="?" T7_P99="?" T7_MAX="?" T7_W50="?" T7_W99="?" T7_WMAX="?" T7_R50="?" T7_R99="?"
T8_UP="?" T8_UP_END="?" T8_CPU="?" T8_CHECKS="?" T8_RSS="?"

# wrk_run KEY PORT PATH ARGS...: one wrk run pinned to the client CPU, -d$D; fills the
# lib.sh arrays for KEY.
wrk_run() {
    local k=$1 port=$2 path=$3 out=$W/wrk-$1.out; shift 3
    say "$k ..."
    taskset -c "$CCPU" wrk -d"${D}s" --latency "$@" "http://127.0.0.1:$port$path" >"$out" 2>&1 || true
    wrk_parse "$out" "$k"
    if [ "${RPS[$k]}" = "?" ]; then FAILED=1; fi
}

# rss_watch OUT PID...: every 0.2 s, appends the summed VmRSS (KiB) of the PIDs to OUT; run it
# in the background, kill it when done.
rss_watch() {
    local out=$1; shift
    while kill -0 "$1" 2>/dev/null; do
        rss_sum "$@" >>"$out"
        sleep 0.2
    done
}

# start_proxy KIND NAME PORT BACKEND_PORT N CPUS: a fresh proxy instance (switchyard, haproxy or
# nginx) with N workers/threads, pinned to CPUS ("" = not pinned), answering on PORT; its pid in
# $proxy_pid.
start_proxy() {
    local kind=$1 k=$2 port=$3 bport=$4 nw=$5 cpus=$6
    case $kind in
    switchyard)
        sy_conf "$port" "$bport" "$nw" "$W/control-$k.sock" >"$W/$k.yaml"
        start_cpu "$cpus" "$k" "$SY" -c "$W/$k.yaml" ;;
    haproxy)
        haproxy_conf "$port" "$bport" "$nw" >"$W/$k.cfg"
        start_cpu "$cpus" "$k" haproxy -f "$W/$k.cfg" -db ;;
    nginx)
        nginx_conf "$k" "$port" "$bport" "$nw" >"$W/$k.conf"
        start_cpu "$cpus" "$k" nginx -p "$W/" -e "$W/$k.err" -c "$W/$k.conf" ;;
    esac
    proxy_pid=${pids[-1]}
    ready "$k" "$port" "$proxy_pid"
}
# stop_proxy PID PORT: stops an instance of start_proxy and waits until PORT is free.
stop_proxy() {
    local i
    stop "$1"
    for ((i = 0; i < 50; i++)); do port_busy "$2" || return 0; sleep 0.1; done
    die "127.0.0.1:$2 still answers after its proxy stopped"
}

# ---- 1, 2: small responses: 50 connections, 1,000 connections, Connection: close ---------------
target1() { for n in "${NAMES[@]}"; do wrk_run "t1.$n" "${PORT[$n]}" / -t1 -c"$C"; done; }
target2() {
    for n in "${NAMES[@]}"; do wrk_run "t2m.$n" "${PORT[$n]}" / -t1 -c"$CMANY"; done
    for n in "${NAMES[@]}"; do wrk_run "t2c.$n" "${PORT[$n]}" / -t1 -c"$C" -H 'Connection: close'; done
}

# ---- 3: 1 MiB responses and uploads; RSS during the runs ---------------------------------------
# The proxy's RSS (nginx: master + worker) just before the run, then every 0.2 s during it and
# once after it; the peak is the largest of these.
target3() {
    local scen n k watcher watch
    for scen in down up; do
        for n in "${NAMES[@]}"; do
            k=t3$scen.$n
            if [ "$n" != direct ]; then
                read -r -a watch <<<"$(with_children "${PROXY_PID[$n]}")"
                RSS0[$k]=$(rss_sum "${watch[@]}")
                echo "${RSS0[$k]}" >"$W/rss-$k"
                rss_watch "$W/rss-$k" "${watch[@]}" &
                watcher=$!
                clients+=("$watcher")
                taskset -pc "$CCPU" "$watcher" >/dev/null
            fi
            if [ "$scen" = down ]; then
                wrk_run "$k" "${PORT[$n]}" /1m -t1 -c"$C"
            else
                wrk_run "$k" "${PORT[$n]}" /upload -t1 -c"$C" -s "$W/upload.lua"
            fi
            if [ "$n" != direct ]; then
                kill "$watcher" 2>/dev/null || true
                wait "$watcher" 2>/dev/null || true
                clients=()
                rss_sum "${watch[@]}" >>"$W/rss-$k"
                RSSPEAK[$k]=$(awk 'BEGIN { m = 0 } $1 > m { m = $1 } END { print m }' "$W/rss-$k")
            fi
        done
    done
}

# ---- 4: added latency, one connection, sequential requests ------------------------------------
target4() { for n in "${NAMES[@]}"; do wrk_run "t4.$n" "${PORT[$n]}" / -t1 -c1; done; }

# ---- 5: idle keep-alive connections ----------------------------------------------------------------
# A fresh instance of each proxy (pinned like the others, on the pinned backend): RSS measured
# after start-up and 20 requests, then with NIDLE idle connections open. A fresh process, because
# one that has served the other targets keeps freed memory that new connections would reuse.
target5() {
    local n ic i watch
    for n in switchyard haproxy nginx; do
        start_proxy "$n" "t5.$n" "$P_T6" "$P_BACKEND" 1 "$SCPU"
        curl -s -o /dev/null "http://127.0.0.1:$P_T6/w[1-20]"
        sleep 1
        say "t5: $NIDLE idle connections to $n ..."
        read -r -a watch <<<"$(with_children "$proxy_pid")"
        IDLE_B[$n]=$(rss_sum "${watch[@]}")
        local want=$NIDLE
        [ "$n" != haproxy ] || want=$HAP_IDLE
        taskset -c "$CCPU" python3 "$HERE/idle_conns.py" "$P_T6" "$want" --hold 120 \
            >"$W/idle-$n.out" 2>"$W/idle-$n.err" &
        ic=$!
        clients+=("$ic")
        for ((i = 0; i < 900; i++)); do   # 90 s at most
            if grep -q '^ready' "$W/idle-$n.out" || ! kill -0 "$ic" 2>/dev/null; then break; fi
            sleep 0.1
        done
        sleep 1   # let the proxy settle after the last answer
        IDLE_A[$n]=$(rss_sum "${watch[@]}")
        IDLE_OPEN[$n]=$(awk '/^ready/ { sub(/open=/, "", $2); print $2 }' "$W/idle-$n.out")
        IDLE_FAILED[$n]=$(awk '/^ready/ { sub(/failed=/, "", $3); print $3 }' "$W/idle-$n.out")
        kill -TERM "$ic" 2>/dev/null || true
        wait "$ic" 2>/dev/null || true
        clients=()
        if [ -n "${IDLE_OPEN[$n]}" ] && [ "${IDLE_OPEN[$n]}" -gt 0 ]; then
            IDLE_KIB[$n]=$(awk -v a="${IDLE_A[$n]}" -v b="${IDLE_B[$n]}" -v o="${IDLE_OPEN[$n]}" \
                'BEGIN { printf "%.2f", (a - b) / o }')
        else
            IDLE_OPEN[$n]=${IDLE_OPEN[$n]:-0} IDLE_FAILED[$n]=${IDLE_FAILED[$n]:-?} IDLE_KIB[$n]="?"
            say "t5: $n: the client opened no connection: $(tail -n 2 "$W/idle-$n.err")"
            FAILED=1
        fi
        stop_proxy "$proxy_pid" "$P_T6"
    done
}

# ---- 6: workers 2 against 1, nothing pinned ------------------------------------------------------
# A second backend, unpinned like everything in this target; each proxy instance is started for
# its run and stopped after it; wrk -t2 (the client may use both CPUs too).
target6() {
    backend_conf backend2 "$P_BACKEND2" >"$W/backend2.conf"
    start_cpu "" backend2 nginx -p "$W/" -e "$W/backend2.err" -c "$W/backend2.conf"
    ready backend2 "$P_BACKEND2" "${pids[-1]}"
    local run kind nw k
    for run in sy1a:switchyard:1 sy2a:switchyard:2 sy1b:switchyard:1 sy2b:switchyard:2 \
        hap1:haproxy:1 hap2:haproxy:2 ngx1:nginx:1 ngx2:nginx:2; do
        IFS=: read -r k kind nw <<<"$run"
        k=t6.$k
        start_proxy "$kind" "$k" "$P_T6" "$P_BACKEND2" "$nw" ""
        say "$k ..."
        wrk -t2 -c"$C" -d"${D}s" --latency "http://127.0.0.1:$P_T6/" >"$W/wrk-$k.out" 2>&1 || true
        wrk_parse "$W/wrk-$k.out" "$k"
        if [ "${RPS[$k]}" = "?" ]; then FAILED=1; fi
        stop_proxy "$proxy_pid" "$P_T6"
    done
    T6_SY1=$(mean2 "${RPS[t6.sy1a]}" "${RPS[t6.sy1b]}")
    T6_SY2=$(mean2 "${RPS[t6.sy2a]}" "${RPS[t6.sy2b]}")
}
mean2() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.0f", (a + b) / 2; else print "?" }'; }

# ---- 7: rollbacks under full load (switchyard only) ----------------------------------------------
t7_field() { # FIELD [SUBFIELD]: from rollbacks.py's JSON
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); v = d[sys.argv[2]]
v = v[sys.argv[3]] if len(sys.argv) > 3 else v; print("?" if v is None else v)' "$W/t7.json" "$@" 2>/dev/null ||
        echo "?"
}
target7() {
    local wrk7
    say "t7: $NROLL rollbacks while wrk -c$C runs against switchyard ..."
    taskset -c "$CCPU" wrk -t1 -c"$C" -d120s --latency "http://127.0.0.1:$P_SY/" >"$W/wrk-t7.out" 2>&1 &
    wrk7=$!
    clients+=("$wrk7")
    sleep 2
    taskset -c "$CCPU" python3 "$HERE/rollbacks.py" "$W/control.sock" --count "$NROLL" \
        >"$W/t7.json" 2>"$W/t7.err" || { T7_OK=0; FAILED=1; }
    T7_LOADED=yes
    kill -0 "$wrk7" 2>/dev/null || T7_LOADED="no: wrk had ended before the last rollback"
    kill -INT "$wrk7" 2>/dev/null || true   # wrk prints its statistics on SIGINT
    wait "$wrk7" 2>/dev/null || true
    clients=()
    wrk_parse "$W/wrk-t7.out" t7
    T7_P50=$(t7_field rollback_ack_us p50) T7_P99=$(t7_field rollback_ack_us p99)
    T7_MAX=$(t7_field rollback_ack_us max) T7_N=$(t7_field rollbacks)
    T7_FAILED=$(t7_field failed) T7_SECS=$(t7_field seconds)
    T7_W50=$(t7_field weights_ack_us p50) T7_W99=$(t7_field weights_ack_us p99)
    T7_WMAX=$(t7_field weights_ack_us max)
    T7_R50=$(t7_field rollback_rtt_us p50) T7_R99=$(t7_field rollback_rtt_us p99)
    [ "$T7_OK" = 1 ] || say "t7: rollbacks.py failed: $(tail -n 3 "$W/t7.err")"
}

# ---- 8: health checking 200 servers at 1 s --------------------------------------------------------
# HC_ORIGINS test origins (on the client CPU), each listed 10 times under different names;
# switchyard (workers: 1) on the server CPU with health interval 1s. Once all servers are up,
# its CPU time over HC_SECS seconds, and the checks the origins answered meanwhile.
healthy() { # the number of healthy servers in both pools, from the control API
    curl -s --max-time 2 --unix-socket "$W/control-t8.sock" http://localhost/v1/status |
        python3 -c 'import json, sys; p = json.load(sys.stdin)["data"]["pools"]
print(p["blue"]["healthy"] + p["green"]["healthy"])' 2>/dev/null || echo 0
}
# origin_requests: "NS REQUESTS": the requests all origins have answered (each stats request
# included), read in one quick round, and the CLOCK_REALTIME ns in the middle of that round.
origin_requests() {
    python3 - "${oports[@]}" <<'PY'
import json, sys, time, urllib.request
t0 = time.time_ns()
n = sum(json.load(urllib.request.urlopen(f"http://127.0.0.1:{p}/_origin/stats", timeout=2))["requests"]
        for p in sys.argv[1:])
print((t0 + time.time_ns()) // 2, n)
PY
}
target8() {
    local i j p pool off t8_pid r0 r1 c0 c1 n0 n1 rn0 rn1 out
    say "t8: $HC_ORIGINS origins, $((2 * HC_PER_POOL)) servers checked every second ..."
    oports=()
    for ((i = 0; i < HC_ORIGINS; i++)); do
        start_cpu "$CCPU" "origin$i" "$ORIGIN" --listen 127.0.0.1:0 --pool hc --name "o$i" --quiet
    done
    for ((i = 0; i < HC_ORIGINS; i++)); do
        p=
        for ((j = 0; j < 50; j++)); do
            p=$(sed -n 's/^origin listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$W/origin$i.log")
            [ -z "$p" ] || break
            sleep 0.1
        done
        [ -n "$p" ] || die "origin $i did not start: $(tail -n 3 "$W/origin$i.log")"
        oports+=("$p")
    done
    {
        echo "# generated by tests/bench/targets.sh: $((2 * HC_PER_POOL)) servers on $HC_ORIGINS test origins"
        echo "listen:"
        echo "  - {address: 127.0.0.1:$P_T8}"
        echo "workers: 1"
        echo "health: {interval: 1s, timeout: 1s}"
        echo "pools:"
        for pool in blue green; do
            echo "  $pool:"
            echo "    servers:"
            off=0
            if [ "$pool" = green ]; then off=$((HC_ORIGINS / 2)); fi
            for ((i = 0; i < HC_PER_POOL; i++)); do
                printf '      - {name: %s%03d, address: 127.0.0.1:%s}\n' "${pool:0:1}" "$i" \
                    "${oports[$((off + i % (HC_ORIGINS / 2)))]}"
            done
        done
        echo "control: {socket: $W/control-t8.sock}"
        echo "log: {level: warn}"
    } >"$W/t8.yaml"
    "$SY" -t -c "$W/t8.yaml" >"$W/t8-check.log" 2>&1 ||
        die "the 200-server config is refused: $(tail -n 3 "$W/t8-check.log")"
    start t8 "$SY" -c "$W/t8.yaml"
    t8_pid=${pids[-1]}
    for ((i = 0; i < 200; i++)); do   # 20 s at most
        T8_UP=$(healthy)
        [ "$T8_UP" -lt $((2 * HC_PER_POOL)) ] || break
        kill -0 "$t8_pid" 2>/dev/null || die "switchyard (200 servers) exited: $(tail -n 5 "$W/t8.log")"
        sleep 0.1
    done
    sleep 2   # past the start-up checks
    out=$(origin_requests) || die "t8: cannot read the origins' counters"
    read -r rn0 r0 <<<"$out"
    c0=$(cpu_ticks "$t8_pid")
    n0=$(date +%s%N)
    sleep "$HC_SECS"
    c1=$(cpu_ticks "$t8_pid")
    n1=$(date +%s%N)
    out=$(origin_requests) || die "t8: cannot read the origins' counters"
    read -r rn1 r1 <<<"$out"
    T8_UP_END=$(healthy)
    T8_CPU=$(awk -v c=$((c1 - c0)) -v hz="$CLK_TCK" -v ns=$((n1 - n0)) 'BEGIN { printf "%.2f", 100 * c / hz / (ns / 1e9) }')
    # r1 - r0 includes the HC_ORIGINS stats requests of the second round
    T8_CHECKS=$(awk -v r=$((r1 - r0 - HC_ORIGINS)) -v ns=$((rn1 - rn0)) 'BEGIN { printf "%.0f", r / (ns / 1e9) }')
    T8_RSS=$(rss_kib "$t8_pid")
}

for t in 1 2 3 4 7 5 6 8; do   # 7 while the shared switchyard has served only 1-4
    if want $t; then "target$t"; fi
done

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
t_total=$(($(date +%s) - t_start))

# ---- report -----------------------------------------------------------------------------------------
num() { [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; }
# cmp A OP B: awk comparison of two numbers (false when either is not a number).
cmp() { num "$1" && num "$3" && awk -v a="$1" -v b="$3" "BEGIN { exit !(a $2 b) }"; }
# verdict CMD...: "yes" or "no" from CMD's status; "n/a" when NA=1 (a value it needs is missing).
verdict() { if [ "${NA:-0}" = 1 ]; then echo "n/a"; elif "$@"; then echo yes; else echo no; fi; }
# rps_p99_ok KEY: switchyard's requests/s ≥ both anchors' and its p99 ≤ both.
rps_p99_ok() {
    cmp "${RPS[$1.switchyard]}" ">=" "${RPS[$1.haproxy]}" && cmp "${RPS[$1.switchyard]}" ">=" "${RPS[$1.nginx]}" &&
        cmp "${P99[$1.switchyard]}" "<=" "${P99[$1.haproxy]}" && cmp "${P99[$1.switchyard]}" "<=" "${P99[$1.nginx]}"
}
rps_p99_met() {
    local n
    NA=0
    for n in "${PROXIES[@]}"; do
        if ! num "${RPS[$1.$n]}" || ! num "${P99[$1.$n]}" || [ -n "${ERR[$1.$n]}" ]; then NA=1; fi
    done
    verdict rps_p99_ok "$1"
}
mem_ok() { cmp "$m1" "<" 512 && cmp "$m2" "<" 512; }
scales_ok() { cmp "$r_sy" ">" 1 && cmp "$r_sy" ">=" "$r_hap"; }
rp() { echo "${RPS[$1]} req/s, p99 ${P99[$1]} ms"; }
mib_s() { awk -v r="$1" 'BEGIN { if (r + 0 > 0) printf "%.0f", r; else print "?" }'; }  # 1 MiB × req/s
sub_us() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/) printf "%+.0f", a - b; else print "?" }'; }
per_conn() { # RSS growth per connection during a 1 MiB run, KiB
    awk -v p="${RSSPEAK[$1]:-?}" -v b="${RSS0[$1]:-?}" -v c="$C" \
        'BEGIN { if (p !~ /^[0-9]+$/ || b !~ /^[0-9]+$/) print "?"; else printf "%.0f", (p - b) / c }'
}
errs() { # the errors of the given keys, "" when none
    local k e=""
    for k in "$@"; do [ -z "${ERR[$k]:-}" ] || e+="$k: ${ERR[$k]}; "; done
    echo "${e%; }"
}

report() {
    local n k
    echo "## switchyard targets (issue 7) — $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs"
    echo
    echo "tests/bench/targets.sh: wrk -t1 -d${D}s --latency on CPU $CCPU; backend nginx (1 worker),"
    echo "nginx (1 worker), HAProxy (nbthread 1) and switchyard (workers: 1) on CPU $SCPU, except"
    echo "target 6 (nothing pinned). $(nginx -v 2>&1 | sed 's/^nginx version: //'), HAProxy"
    echo "$(haproxy -v | awk 'NR == 1 { print $3 }'), $("$SY" --version 2>/dev/null | head -n 1), $(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }')."
    echo "Load average (1, 5, 15 min) before: $load_before; after: $load_after. Took ${t_total} s."
    echo
    echo "| # | target | measured | switchyard | HAProxy | nginx | direct | met? |"
    echo "|---|---|---|---|---|---|---|---|"
    echo "| 1 | keep-alive, small, $C conns: req/s ≥ both, p99 ≤ both | req/s, p99 | $(rp t1.switchyard) | $(rp t1.haproxy) | $(rp t1.nginx) | $(rp t1.direct) | $(rps_p99_met t1) |"
    echo "| 2 | the same at $CMANY connections | req/s, p99 | $(rp t2m.switchyard) | $(rp t2m.haproxy) | $(rp t2m.nginx) | $(rp t2m.direct) | $(rps_p99_met t2m) |"
    echo "| 2 | the same with \`Connection: close\` ($C conns) | req/s, p99 | $(rp t2c.switchyard) | $(rp t2c.haproxy) | $(rp t2c.nginx) | $(rp t2c.direct) | $(rps_p99_met t2c) |"
    NA=0; num "${RPS[t3down.switchyard]}" && num "${RPS[t3down.haproxy]}" || NA=1
    echo "| 3 | 1 MiB responses: throughput ≥ HAProxy's | MiB/s ($C conns) | $(mib_s "${RPS[t3down.switchyard]}") | $(mib_s "${RPS[t3down.haproxy]}") | $(mib_s "${RPS[t3down.nginx]}") | $(mib_s "${RPS[t3down.direct]}") | $(verdict cmp "${RPS[t3down.switchyard]}" ">=" "${RPS[t3down.haproxy]}") |"
    NA=0; num "${RPS[t3up.switchyard]}" && num "${RPS[t3up.haproxy]}" || NA=1
    echo "| 3 | 1 MiB uploads: throughput ≥ HAProxy's | MiB/s ($C conns) | $(mib_s "${RPS[t3up.switchyard]}") | $(mib_s "${RPS[t3up.haproxy]}") | $(mib_s "${RPS[t3up.nginx]}") | $(mib_s "${RPS[t3up.direct]}") | $(verdict cmp "${RPS[t3up.switchyard]}" ">=" "${RPS[t3up.haproxy]}") |"
    m1=$(per_conn t3down.switchyard) m2=$(per_conn t3up.switchyard)
    NA=0; num "$m1" && num "$m2" || NA=1
    echo "| 3 | memory per connection bounded (< 512 KiB, half a body: bodies stream) | peak RSS growth / $C conns, down / up (KiB) | $m1 / $m2 | $(per_conn t3down.haproxy) / $(per_conn t3up.haproxy) | $(per_conn t3down.nginx) / $(per_conn t3up.nginx) | — | $(verdict mem_ok) |"
    local a
    a=$(sub_us "${P50US[t4.switchyard]}" "${P50US[t4.direct]}")
    NA=0; num "${a#+}" || NA=1
    echo "| 4 | added latency, 1 conn: median ≤ 50 µs over direct | p50 (p99), µs; added p50 | ${P50US[t4.switchyard]} (${P99US[t4.switchyard]}); $a | ${P50US[t4.haproxy]} (${P99US[t4.haproxy]}); $(sub_us "${P50US[t4.haproxy]}" "${P50US[t4.direct]}") | ${P50US[t4.nginx]} (${P99US[t4.nginx]}); $(sub_us "${P50US[t4.nginx]}" "${P50US[t4.direct]}") | ${P50US[t4.direct]} (${P99US[t4.direct]}) | $(verdict awk -v a="$a" 'BEGIN { exit !(a + 0 <= 50) }') |"
    NA=0; num "${IDLE_KIB[switchyard]}" && [ "${IDLE_OPEN[switchyard]}" = "$NIDLE" ] || NA=1
    local hap_at=""
    [ "$HAP_IDLE" = "$NIDLE" ] || hap_at=" (at $HAP_IDLE)"
    echo "| 5 | $NIDLE idle keep-alive conns: ≤ 8 KiB each | RSS growth / connection (KiB) | ${IDLE_KIB[switchyard]} | ${IDLE_KIB[haproxy]}$hap_at | ${IDLE_KIB[nginx]} | — | $(verdict cmp "${IDLE_KIB[switchyard]}" "<=" 8) |"
    r_sy=$(ratio "$T6_SY2" "$T6_SY1") r_hap=$(ratio "${RPS[t6.hap2]}" "${RPS[t6.hap1]}") r_ngx=$(ratio "${RPS[t6.ngx2]}" "${RPS[t6.ngx1]}")
    NA=0; num "$r_sy" && num "$r_hap" || NA=1
    echo "| 6 | 2 workers/threads: throughput scales (> 1, and ≥ HAProxy's ratio) | req/s 2 ÷ 1, unpinned | ${r_sy}x ($T6_SY2 / $T6_SY1) | ${r_hap}x (${RPS[t6.hap2]} / ${RPS[t6.hap1]}) | ${r_ngx}x (${RPS[t6.ngx2]} / ${RPS[t6.ngx1]}) | — | $(verdict scales_ok) |"
    NA=0; num "$T7_P99" && [ "$T7_FAILED" = 0 ] || NA=1
    echo "| 7 | rollback ack under load: p99 ≤ 1 ms | ack_us of $T7_N rollbacks: p50 / p99 / max | $T7_P50 / $T7_P99 / $T7_MAX µs | — | — | — | $(verdict cmp "$T7_P99" "<=" 1000) |"
    NA=0; num "$T8_CPU" && [ "$T8_UP" = $((2 * HC_PER_POOL)) ] || NA=1
    echo "| 8 | health checks, 200 servers at 1 s: < 2% of a core | switchyard CPU over ${HC_SECS} s | ${T8_CPU}% ($T8_CHECKS checks/s) | — | — | — | $(verdict cmp "$T8_CPU" "<" 2) |"
    echo
    echo "### Details"
    echo
    echo "Targets 1 and 2 (\`/\`, 19-byte body; wrk -t1):"
    echo
    echo "| run | direct | nginx | haproxy | switchyard | switchyard/haproxy req/s |"
    echo "|---|---:|---:|---:|---:|---:|"
    for k in t1:"-c$C" t2m:"-c$CMANY" t2c:"-c$C -H 'Connection: close'"; do
        local s=${k%%:*}
        echo "| ${k#*:} | $(rp "$s.direct") | $(rp "$s.nginx") | $(rp "$s.haproxy") | $(rp "$s.switchyard") | $(ratio "${RPS[$s.switchyard]}" "${RPS[$s.haproxy]}")x |"
    done
    echo
    echo "Target 3 (wrk -t1 -c$C; uploads: wrk -s upload.lua, POST of a 1 MiB body to \`/upload\`, which"
    echo "reads it whole and answers 9 bytes). nginx reads each upload whole, in memory, before it"
    echo "forwards it (its default request buffering; with \`proxy_request_buffering off\` nginx 1.22"
    echo "closes the client connection after every upload); HAProxy and switchyard stream. RSS: the"
    echo "proxy's (nginx: master + worker) before the run, then every 0.2 s and once after it; the peak"
    echo "is the largest:"
    echo
    echo "| run | target | requests/s | MiB/s | RSS before (KiB) | peak RSS (KiB) | (peak − before) / $C (KiB) |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    for k in t3down t3up; do
        for n in "${NAMES[@]}"; do
            if [ "$n" = direct ]; then
                echo "| $k | $n | ${RPS[$k.$n]} | $(mib_s "${RPS[$k.$n]}") | — | — | — |"
            else
                echo "| $k | $n | ${RPS[$k.$n]} | $(mib_s "${RPS[$k.$n]}") | ${RSS0[$k.$n]} | ${RSSPEAK[$k.$n]} | $(per_conn "$k.$n") |"
            fi
        done
    done
    echo
    echo "Target 4 (wrk -t1 -c1, sequential requests on one keep-alive connection):"
    echo
    echo "| target | requests/s | p50 (µs) | p99 (µs) | p50 − direct (µs) |"
    echo "|---|---:|---:|---:|---:|"
    for n in "${NAMES[@]}"; do
        echo "| $n | ${RPS[t4.$n]} | ${P50US[t4.$n]} | ${P99US[t4.$n]} | $(sub_us "${P50US[t4.$n]}" "${P50US[t4.direct]}") |"
    done
    echo
    echo "Target 5 (tests/bench/idle_conns.py: $NIDLE connections, one \`GET /\` each, then idle; RSS"
    echo "of the proxy, nginx master + worker, before and 1 s after the last answer):"
    echo
    echo "| target | connections open | failed | RSS before (KiB) | RSS after (KiB) | KiB per connection |"
    echo "|---|---:|---:|---:|---:|---:|"
    for n in switchyard haproxy nginx; do
        echo "| $n | ${IDLE_OPEN[$n]} | ${IDLE_FAILED[$n]} | ${IDLE_B[$n]} | ${IDLE_A[$n]} | ${IDLE_KIB[$n]} |"
    done
    if [ "$HAP_IDLE" != "$NIDLE" ]; then
        echo
        echo "HAProxy held $HAP_IDLE: it reserves 2 descriptors per connection of its maxconn and refuses to"
        echo "start when the open-file limit ($FD_LIMIT here) is lower, so its maxconn was $HAP_MAXCONN."
    fi
    echo
    echo "Target 6 (wrk -t2 -c$C, backend, proxy and client all unpinned on the $(nproc) CPUs; switchyard"
    echo "runs alternate 1, 2, 1, 2):"
    echo
    echo "| run | requests/s | p99 (ms) |"
    echo "|---|---:|---:|"
    for k in sy1a sy2a sy1b sy2b hap1 hap2 ngx1 ngx2; do
        echo "| $k | ${RPS[t6.$k]} | ${P99[t6.$k]} |"
    done
    echo
    echo "Target 7 (tests/bench/rollbacks.py: $NROLL × PUT /v1/weights 50% then POST /v1/rollback on"
    echo "the control socket while wrk -t1 -c$C runs against switchyard): rollback ack_us p50 $T7_P50,"
    echo "p99 $T7_P99, max $T7_MAX µs; the weights changes' ack_us p50 $T7_W50, p99 $T7_W99, max"
    echo "$T7_WMAX µs; a rollback's round trip seen by the client p50 $T7_R50, p99 $T7_R99 µs; $T7_FAILED"
    echo "failed requests; ${T7_SECS} s in all. wrk meanwhile: $(rp t7)${ERR[t7]:+ (${ERR[t7]})}; under"
    echo "load throughout: $T7_LOADED."
    echo
    echo "Target 8: $((2 * HC_PER_POOL)) servers ($HC_PER_POOL per pool over $HC_ORIGINS test origins, each"
    echo "address listed $((2 * HC_PER_POOL / HC_ORIGINS)) times), \`health: {interval: 1s, timeout: 1s}\`, a check reusing"
    echo "the previous check's connection for up to 10 checks, checks due within 50 ms started together;"
    echo "$T8_UP healthy at the start, $T8_UP_END at the end; over"
    echo "${HC_SECS} s the origins answered $T8_CHECKS checks/s; switchyard's CPU (user + system, all"
    echo "threads) $T8_CPU% of one core; RSS $T8_RSS KiB."
    local e
    e=$(errs "${!ERR[@]}")
    if [ -n "$e" ]; then echo; echo "Errors (a run with errors is not a valid measurement): $e"; fi
}

if [ -n "${BENCH_OUT:-}" ]; then report | tee "$BENCH_OUT"; else report; fi
exit $FAILED
