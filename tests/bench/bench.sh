#!/usr/bin/env bash
# switchyard against its anchors on loopback, the method of shared/bench/anchors.sh: one nginx
# backend; nginx (1 worker), HAProxy (nbthread 1) and switchyard (workers: 1) in front of it; all
# servers pinned to one core, the client pinned to the other; same backend, same client, one run.
# Scenarios: (a) small keep-alive responses — requests/s and p99; (b) 1 MiB responses —
# requests/s and MB/s; (c) the same as (a) over HTTPS; (d) new TLS 1.3 connections, each a full
# handshake and one request — connections/s and the proxy's CPU time per connection. The three
# proxies terminate TLS with the same ECDSA P-256 certificate (made here) and the same settings
# (TLS 1.2 + 1.3, Mozilla intermediate suites, the server's suite order, groups
# X25519:P-256:P-384). Prints Markdown tables, the switchyard/HAProxy ratios, and switchyard's
# RSS after the runs. Issue 7's other targets are measured by targets.sh (make bench-targets).
#
# env: BENCH_SECONDS (10)  BENCH_CONNS (50)  BUILD_DIR (build)
#      BENCH_SCENARIOS (abcd) the scenarios to run, e.g. "a" for (a) only
#      BENCH_TLS_CLIENTS (4) parallel `openssl s_time -new` clients in (d)
#      BENCH_ONLY_ANCHORS=1  run without switchyard (its rows say SKIP)
#      BENCH_OUT=FILE        also write the Markdown report to FILE
#      BENCH_KEEP=1          keep the temp dir (configs, wrk outputs, server logs)
#      BENCH_CLIENT_CPU (0)  BENCH_SERVER_CPU (1)
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LIB_TAG=bench
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/tests/bench/lib.sh"
BUILD_DIR=${BUILD_DIR:-build}
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
SY=$BUILD_DIR/switchyard
D=${BENCH_SECONDS:-10}
C=${BENCH_CONNS:-50}
TLS_CLIENTS=${BENCH_TLS_CLIENTS:-4}
ONLY_ANCHORS=${BENCH_ONLY_ANCHORS:-0}
CCPU=${BENCH_CLIENT_CPU:-0}
SCPU=${BENCH_SERVER_CPU:-1}
SCEN=${BENCH_SCENARIOS:-abcd}
# Ports apart from the demo's (8080/8081, 9101-9201) so both can run at once.
P_BACKEND=19001 P_NGINX=18081 P_HAPROXY=18082 P_SY=18083
P_NGINX_TLS=18441 P_HAPROXY_TLS=18442 P_SY_TLS=18443
# The TLS settings all three proxies get: Mozilla "intermediate" TLS 1.2 suites without DHE (what
# switchyard serves, proxy/tls.c) in its order, TLS 1.3's three suites in OpenSSL's default order
# (switchyard does not change it), its groups; the server's order wins, as in switchyard
# (SSL_OP_CIPHER_SERVER_PREFERENCE), with ChaCha20 first for a client that puts it first
# (nginx: PrioritizeChaCha; no client here does).
TLS12_CIPHERS=ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384
TLS12_CIPHERS+=:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305
TLS13_SUITES=TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256
TLS_GROUPS=X25519:prime256v1:secp384r1

[[ $D =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS must be a positive integer (got '$D')"
[[ $C =~ ^[1-9][0-9]*$ ]] || die "BENCH_CONNS must be a positive integer (got '$C')"
[[ $TLS_CLIENTS =~ ^[1-9][0-9]*$ ]] || die "BENCH_TLS_CLIENTS must be a positive integer (got '$TLS_CLIENTS')"
[[ $SCEN =~ ^[abcd]+$ ]] || die "BENCH_SCENARIOS must be letters among abcd (got '$SCEN')"
need_tools nginx haproxy wrk taskset curl awk openssl pgrep getconf
if [ "$ONLY_ANCHORS" != 1 ] && [ ! -x "$SY" ]; then
    die "$SY not found: build it first (make build), or set BENCH_ONLY_ANCHORS=1 to measure only nginx and HAProxy"
fi
if [ "$(nproc)" -lt 2 ]; then
    echo "bench: warning: fewer than 2 CPUs; client and servers share CPU 0" >&2
    CCPU=0 SCPU=0
fi
ports_free $P_BACKEND $P_NGINX $P_HAPROXY $P_SY $P_NGINX_TLS $P_HAPROXY_TLS $P_SY_TLS

bench_tmpdir switchyard-bench   # $W, and the EXIT trap that stops everything started below
sy_pid=
mkdir -p "$W/tls"
head -c 1048576 /dev/zero | tr '\0' 'x' >"$W/www/1m.bin"
chmod -R a+rX "$W/www"
# One ECDSA P-256 certificate for the three proxies; HAProxy wants certificate and key in one file.
openssl req -x509 -nodes -days 30 -subj /CN=bench.switchyard.test \
    -addext subjectAltName=DNS:bench.switchyard.test -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$W/tls/key.pem" -out "$W/tls/cert.pem" >"$W/tls/openssl.log" 2>&1 ||
    die "openssl could not make the certificate: $(tail -n 3 "$W/tls/openssl.log")"
cat "$W/tls/cert.pem" "$W/tls/key.pem" >"$W/tls/haproxy.pem"
chmod -R a+rX "$W/tls"

# nginx keeps its temp files and logs in $W (ngx_common, lib.sh).
{ ngx_common backend; cat <<NG
  sendfile on;
  server { listen 127.0.0.1:$P_BACKEND reuseport backlog=4096;
    location = /1m { alias $W/www/1m.bin; default_type application/octet-stream; }
    location / { return 200 "hello from backend\n"; } } }
NG
} >"$W/backend.conf"
# proxy_max_temp_file_size 0: nginx streams large responses instead of spooling them to disk,
# as the other two do.
# Session cache and tickets on in all three proxies (switchyard's defaults; HAProxy's too).
{ ngx_common nginx; cat <<NG
  upstream app { server 127.0.0.1:$P_BACKEND; keepalive 64; }
  ssl_certificate $W/tls/cert.pem; ssl_certificate_key $W/tls/key.pem;
  ssl_protocols TLSv1.2 TLSv1.3; ssl_ciphers $TLS12_CIPHERS; ssl_conf_command Ciphersuites $TLS13_SUITES;
  ssl_ecdh_curve $TLS_GROUPS; ssl_prefer_server_ciphers on; ssl_conf_command Options PrioritizeChaCha;
  ssl_session_cache shared:SSL:10m; ssl_session_timeout 2h; ssl_session_tickets on;
  server { listen 127.0.0.1:$P_NGINX backlog=4096; listen 127.0.0.1:$P_NGINX_TLS ssl backlog=4096;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_max_temp_file_size 0; } } }
NG
} >"$W/nginx.conf"
cat >"$W/haproxy.cfg" <<HA
global
  nbthread 1
  maxconn 4000
  ssl-default-bind-ciphers $TLS12_CIPHERS
  ssl-default-bind-ciphersuites $TLS13_SUITES
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:$P_HAPROXY
  bind 127.0.0.1:$P_HAPROXY_TLS ssl crt $W/tls/haproxy.pem alpn http/1.1 curves $TLS_GROUPS
  default_backend app
backend app
  server s1 127.0.0.1:$P_BACKEND
HA
cat >"$W/switchyard.yaml" <<SY
# generated by tests/bench/bench.sh; both pools are required, both point at the one backend
listen:
  - {address: 127.0.0.1:$P_SY}
  - {address: 127.0.0.1:$P_SY_TLS, tls: {certs: [{cert: $W/tls/cert.pem, key: $W/tls/key.pem}]}}
workers: 1
pools:
  blue: {servers: [{name: b1, address: 127.0.0.1:$P_BACKEND}]}
  green: {servers: [{name: g1, address: 127.0.0.1:$P_BACKEND}]}
control: {socket: $W/control.sock}
log: {level: warn}
SY

start backend nginx -p "$W/" -e "$W/backend.err" -c "$W/backend.conf"
ready backend $P_BACKEND "${pids[-1]}"
start nginx nginx -p "$W/" -e "$W/nginx.err" -c "$W/nginx.conf"
ngx_pid=${pids[-1]}
start haproxy haproxy -f "$W/haproxy.cfg" -db
hap_pid=${pids[-1]}
if [ "$ONLY_ANCHORS" != 1 ]; then
    start switchyard "$SY" -c "$W/switchyard.yaml"
    sy_pid=${pids[-1]}
fi
ready nginx $P_NGINX "$ngx_pid"
ready haproxy $P_HAPROXY "$hap_pid"
[ -z "$sy_pid" ] || ready switchyard $P_SY "$sy_pid"
ready nginx $P_NGINX_TLS "$ngx_pid" https
ready haproxy $P_HAPROXY_TLS "$hap_pid" https
[ -z "$sy_pid" ] || ready switchyard $P_SY_TLS "$sy_pid" https
[ "$(curl -s "http://127.0.0.1:$P_BACKEND/1m" | wc -c)" = 1048576 ] || die "backend does not serve /1m"

declare -A CPS CPU USPC TLSP   # RPS P99 MBS ERR: lib.sh
# run SCENARIO NAME PORT PATH [https]: one wrk run; fills RPS/P99/MBS/ERR[SCENARIO.NAME].
run() {
    local out=$W/wrk-$1-$2.out
    echo "bench: ($1) $2 ..." >&2
    taskset -c "$CCPU" wrk -t1 -c"$C" -d"${D}s" --latency "${5:-http}://127.0.0.1:$3$4" >"$out" 2>&1
    wrk_parse "$out" "$1.$2"
}

# has SCENARIO: whether BENCH_SCENARIOS selects it.
has() { case $SCEN in *$1*) return 0 ;; esac; return 1; }

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# tls_params PORT: what a default TLS 1.3 client negotiates, e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384
# X25519 ECDSA" (the same client library and defaults as wrk and s_time).
tls_params() {
    openssl s_client -connect "127.0.0.1:$1" -tls1_3 -brief </dev/null 2>&1 | awk -F': ' '
        /^Protocol version/ { p = $2 } /^Ciphersuite/ { c = $2 } /^Signature type/ { s = $2 }
        /^Server Temp Key/ { split($2, a, ","); k = a[1] }
        END { if (p == "") print "no TLS handshake"; else print p, c, k, s }'
}
# handshakes NAME PORT PID: BENCH_TLS_CLIENTS `openssl s_time -new -tls1_3 -www /` clients for
# D seconds, each connection a full handshake (s_time -new never resumes; wrk would: it keeps the
# session across reconnects) and one HTTP/1.0 request the server answers and closes. -no-CA*:
# no trust store, which s_time would otherwise search on disk for every connection (the
# certificate is not verified either way). Fills CPS (connections/s), CPU (PID's CPU use, % of one
# core), USPC (PID's CPU time per connection, µs) and ERR[d.NAME].
handshakes() {
    local k=d.$1 i c0 c1 t0 t1 n=0 m b bad='' out
    echo "bench: (d) $1 ..." >&2
    c0=$(cpu_ticks "$3")
    t0=$(date +%s%N)
    for ((i = 0; i < TLS_CLIENTS; i++)); do
        taskset -c "$CCPU" openssl s_time -connect "127.0.0.1:$2" -new -tls1_3 -time "$D" -www / \
            -no-CAfile -no-CApath -no-CAstore >"$W/stime-$1-$i.out" 2>&1 </dev/null &
        clients+=($!)
    done
    for i in "${clients[@]}"; do wait "$i"; done
    clients=()
    t1=$(date +%s%N)
    c1=$(cpu_ticks "$3")
    for ((i = 0; i < TLS_CLIENTS; i++)); do
        out=$W/stime-$1-$i.out
        # "2505 connections in 11 real seconds, 205 bytes read per connection"
        m=$(awk '/connections in [0-9]+ real seconds/ { print $1 }' "$out")
        b=$(awk '/connections in [0-9]+ real seconds/ { print $7 }' "$out")
        if [ -z "$m" ]; then
            bad+="s_time $i failed: $(grep -v '^\**$' "$out" | tail -n 1); "
        elif [ "${b:-0}" -eq 0 ]; then
            bad+="s_time $i read no response; "
        fi
        n=$((n + ${m:-0}))
    done
    ERR["$k"]=${bad%; }
    if [ "$n" -gt 0 ]; then
        CPS[$k]=$(awk -v n="$n" -v ns=$((t1 - t0)) 'BEGIN { printf "%.0f", n / (ns / 1e9) }')
        CPU[$k]=$(awk -v c=$((c1 - c0)) -v hz="$CLK_TCK" -v ns=$((t1 - t0)) \
            'BEGIN { printf "%.0f%%", 100 * c / hz / (ns / 1e9) }')
        USPC[$k]=$(awk -v c=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$n" 'BEGIN { printf "%.0f", 1e6 * c / hz / n }')
    else
        CPS[$k]="?" CPU[$k]="?" USPC[$k]="?"
    fi
}

targets=("direct:$P_BACKEND" "nginx:$P_NGINX" "haproxy:$P_HAPROXY" "switchyard:$P_SY")
for scen in a b; do
    has $scen || continue
    path=/; [ $scen = b ] && path=/1m
    for t in "${targets[@]}"; do
        name=${t%%:*} port=${t##*:}
        if [ "$name" = switchyard ] && [ -z "$sy_pid" ]; then continue; fi
        run $scen "$name" "$port" "$path"
    done
done
tls_targets=("nginx:$P_NGINX_TLS:$ngx_pid" "haproxy:$P_HAPROXY_TLS:$hap_pid")
[ -z "$sy_pid" ] || tls_targets+=("switchyard:$P_SY_TLS:$sy_pid")
for t in "${tls_targets[@]}"; do
    IFS=: read -r name port pid <<<"$t"
    TLSP[$name]=$(tls_params "$port")
    if has c; then run c "$name" "$port" / https; fi
done
if has d; then
    for t in "${tls_targets[@]}"; do
        IFS=: read -r name port pid <<<"$t"
        handshakes "$name" "$port" "$pid"
    done
fi

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
rss=
if [ -n "$sy_pid" ]; then
    if [ -r "/proc/$sy_pid/status" ]; then
        rss=$(awk '/^VmRSS/ { r = $2 } /^VmHWM/ { h = $2 } END { printf "%d KiB (peak %d KiB)", r, h }' \
            "/proc/$sy_pid/status")
    else
        rss="n/a: switchyard (pid $sy_pid) is no longer running; log: $(tail -n 3 "$W/switchyard.log")"
    fi
fi

report() {
    local name k
    echo "## switchyard bench — $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs"
    echo
    echo "wrk -t1 -c$C -d${D}s --latency on CPU $CCPU; backend nginx, nginx (1 worker), HAProxy"
    echo "(nbthread 1) and switchyard (workers: 1) on CPU $SCPU; $(nginx -v 2>&1 | sed 's/^nginx version: //'),"
    echo "HAProxy $(haproxy -v | awk 'NR == 1 { print $3 }'), $([ -n "$sy_pid" ] && "$SY" --version 2>/dev/null | head -n 1 || echo "switchyard not run")."
    echo "Load average (1, 5, 15 min) before the runs: $load_before; after: $load_after (the bench itself"
    echo "adds about 2; more means others were running)."
    echo
    if has a; then
        echo "### (a) small responses (19 bytes), keep-alive"
        echo
        echo "| target | requests/s | p99 (ms) | errors |"
        echo "|---|---:|---:|---|"
        for name in direct nginx haproxy switchyard; do
            k=a.$name
            if [ -z "${RPS[$k]+x}" ]; then echo "| $name | SKIP | SKIP | BENCH_ONLY_ANCHORS=1 |"; continue; fi
            echo "| $name | ${RPS[$k]} | ${P99[$k]} | ${ERR[$k]} |"
        done
        echo
        if [ -n "${RPS[a.switchyard]+x}" ]; then
            echo "switchyard/haproxy (a): requests/s $(ratio "${RPS[a.switchyard]}" "${RPS[a.haproxy]}")x," \
                "p99 $(ratio "${P99[a.switchyard]}" "${P99[a.haproxy]}")x" \
                "(target: requests/s ≥ 1.00x, p99 ≤ 1.00x)"
        else
            echo "switchyard/haproxy (a): SKIP (switchyard not run)"
        fi
        echo
    fi
    if has b; then
        echo "### (b) 1 MiB responses"
        echo
        echo "| target | requests/s | MB/s | errors |"
        echo "|---|---:|---:|---|"
        for name in direct nginx haproxy switchyard; do
            k=b.$name
            if [ -z "${RPS[$k]+x}" ]; then echo "| $name | SKIP | SKIP | BENCH_ONLY_ANCHORS=1 |"; continue; fi
            echo "| $name | ${RPS[$k]} | ${MBS[$k]} | ${ERR[$k]} |"
        done
        echo
    fi
    if has c; then
        echo "### (c) HTTPS, small responses, keep-alive"
        echo
        echo "Same as (a) over TLS 1.3 (ECDSA P-256 certificate); the proxies speak plain HTTP to the backend."
        echo
        echo "| target | requests/s | p99 (ms) | errors |"
        echo "|---|---:|---:|---|"
        for name in nginx haproxy switchyard; do
            k=c.$name
            if [ -z "${RPS[$k]+x}" ]; then echo "| $name | SKIP | SKIP | BENCH_ONLY_ANCHORS=1 |"; continue; fi
            echo "| $name | ${RPS[$k]} | ${P99[$k]} | ${ERR[$k]} |"
        done
        echo
        if [ -n "${RPS[c.switchyard]+x}" ]; then
            echo "switchyard/haproxy (c): requests/s $(ratio "${RPS[c.switchyard]}" "${RPS[c.haproxy]}")x," \
                "p99 $(ratio "${P99[c.switchyard]}" "${P99[c.haproxy]}")x"
        else
            echo "switchyard/haproxy (c): SKIP (switchyard not run)"
        fi
        echo
    fi
    if has d; then
        echo "### (d) new TLS 1.3 connections, full handshake + one request each"
        echo
        echo "$TLS_CLIENTS × \`openssl s_time -new -tls1_3 -www /\` for ${D}s on CPU $CCPU (no session resumption;"
        echo "HTTP/1.0, the server closes). One client core is usually the bottleneck (an OpenSSL 3 client"
        echo "handshake costs more CPU than a server one; see the proxy CPU column), so compare the proxy's"
        echo "CPU time per connection: its user + system time over the run (nginx: master + worker) divided"
        echo "by the connections."
        echo
        echo "| target | connections/s | proxy CPU | proxy CPU per connection (µs) | errors |"
        echo "|---|---:|---:|---:|---|"
        for name in nginx haproxy switchyard; do
            k=d.$name
            if [ -z "${CPS[$k]+x}" ]; then echo "| $name | SKIP | SKIP | SKIP | BENCH_ONLY_ANCHORS=1 |"; continue; fi
            echo "| $name | ${CPS[$k]} | ${CPU[$k]} | ${USPC[$k]} | ${ERR[$k]} |"
        done
        echo
        if [ -n "${CPS[d.switchyard]+x}" ]; then
            echo "switchyard/haproxy (d): connections/s $(ratio "${CPS[d.switchyard]}" "${CPS[d.haproxy]}")x," \
                "CPU per connection $(ratio "${USPC[d.switchyard]}" "${USPC[d.haproxy]}")x"
        else
            echo "switchyard/haproxy (d): SKIP (switchyard not run)"
        fi
        echo
    fi
    echo "Negotiated by a default OpenSSL client (as wrk and s_time):"
    for name in nginx haproxy switchyard; do
        [ -z "${TLSP[$name]+x}" ] || echo "$name ${TLSP[$name]};"
    done | paste -sd ' ' | sed 's/;$/./'
    echo
    if [ -n "$sy_pid" ]; then
        echo "switchyard RSS after the runs: $rss"
    else
        echo "switchyard RSS: SKIP (switchyard not run)"
    fi
}

if [ -n "${BENCH_OUT:-}" ]; then report | tee "$BENCH_OUT"; else report; fi
bad=0
for k in "${!RPS[@]}"; do [ "${RPS[$k]}" != "?" ] || bad=1; done
for k in "${!CPS[@]}"; do [ "${CPS[$k]}" != "?" ] && [ -z "${ERR[$k]}" ] || bad=1; done
exit $bad
