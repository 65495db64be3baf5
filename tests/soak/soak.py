#!/usr/bin/env python3
"""tests/soak/soak.py — switchyard under mixed traffic for a long time (issue 8, "Soak").

Runs the real daemon (2 workers) in front of six test origins (blue b1 b2 [b3], green g1 g2
[g3]) on 127.0.0.1 and, for --seconds (default 600):

  traffic (bounded: 17 client connections at most, each thread paced; 2 control connections)
    small      4 keep-alive threads, GET /                         body and headers checked
    close      2 threads, GET / with Connection: close             closed after each answer
    large      GET /bytes/1048576 and POST 1 MiB to /echo          body / FNV-1a checked
    chunked    chunked GET /bytes/200000 and chunked POST /echo     body / FNV-1a checked
    ws         2 threads: short tunnels (/ws, 20 echoes over ~2 s, then closed by the client)
    ws-long    2 threads: tunnels held until drain.tunnel_timeout closes them (each close must
               match a `drain` event of the tunnel's pool), then reopened
    slow       2 threads: the request head sent in small pieces over ~1 s, a 256 KiB answer
               read 4 KiB at a time
    slowloris  1 thread (not well-behaved): never finishes its head; must get 408 or a close
               within timeouts.client_header + 5 s
  operations, every 30 s cycle: a full cutover to the standby pool (10% -> 50% -> 100%,
    promoted), a server of the live pool drained then ready, a cutover back rolled back
    mid-ramp; every 60 s a reload (SIGHUP and POST /v1/reload in turn) adding or removing the
    third server of each pool, and the access log rotated (rename + SIGUSR1).
  samples: the proxy's RSS and open file descriptors every 5 s, printed and written to
    OUT/samples.csv.

It fails (exit 1) on any failed request of a well-behaved client, a control call that failed, a
tunnel closed without a drain of its pool, fewer operations than scheduled, RSS or fds growing
after the warm-up (330 s, see WARMUP_S; a third of runs under 600 s): the last third's maximum
above the first third's by more than RSS_GROWTH (10%) + RSS_SLACK_KB (4 MiB), or by more than
FD_SLACK (16) descriptors; requests or tunnels left open after the load stopped, a sanitizer
report, or a non-zero exit of the daemon on SIGTERM.

  tests/soak/soak.sh             (make soak; SOAK_BUILD, SOAK_SECONDS, SOAK_OUT)
  SWITCHYARD=build/switchyard ORIGIN=build/tests/origin/origin \
    python3 tests/soak/soak.py --seconds 120 --out /tmp/soak
"""

import argparse
import csv
import datetime
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'integration'))
import harness as h  # noqa: E402

CYCLE_S = 30.0
RELOAD_EVERY = 2                     # cycles
SAMPLE_S = 5.0
TUNNEL_TIMEOUT_S = 10.0
CLIENT_HEADER_S = 5.0
# Warm-up before the growth check: the daemon's measurement rings (control/measure.c: 301
# one-second samples per pool and per server, each with a 464-bucket histogram, ~1.1 MiB per
# series, allocated zeroed) become resident one sample a second during the first 5 minutes.
# Runs shorter than 600 s use a third of the run (and then see part of that fill as growth).
WARMUP_S = 330.0
RSS_GROWTH = 0.10
RSS_SLACK_KB = 4096
FD_SLACK = 16
SANITIZER_RX = (r'ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|'
                r'WARNING: ThreadSanitizer|SUMMARY: \w+Sanitizer')

POOLS = ('blue', 'green')
NAMES = {'blue': ('b1', 'b2', 'b3'), 'green': ('g1', 'g2', 'g3')}
PLAN_FULL = [{'weight': 10, 'hold': '1s'}, {'weight': 50, 'hold': '1s'}, {'weight': 100}]
PLAN_HOLD = [{'weight': 50, 'hold': '10m'}, {'weight': 100}]

MIB = 1 << 20
BIG_DOWN = h.pattern(MIB)
BIG_UP = bytes((i * 31 + 7) % 256 for i in range(MIB))
BIG_UP_FNV = h.fnv1a64(BIG_UP)
CHUNKED_N = 200000
CHUNKED_DOWN = h.pattern(CHUNKED_N)
CHUNKED_UP = bytes((i * 17 + 3) % 256 for i in range(150000))
CHUNKED_UP_FNV = h.fnv1a64(CHUNKED_UP)
CHUNKED_UP_WIRE = h.chunked_body(CHUNKED_UP, [1000, 16384, 7, 40000])
SLOW_N = 256 * 1024
SLOW_DOWN = h.pattern(SLOW_N)


def log(msg):
    sys.stdout.write('%s %s\n' % (time.strftime('%H:%M:%S'), msg))
    sys.stdout.flush()


def wall_of(ev):
    t = datetime.datetime.strptime(ev['time'], '%Y-%m-%dT%H:%M:%S.%fZ')
    return t.replace(tzinfo=datetime.timezone.utc).timestamp()


# ---------------------------------------------------------------------------------------------
# Counters
# ---------------------------------------------------------------------------------------------

class Tally:
    """Requests and failures by kind, requests by pool; the first failures kept in full."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = {}
        self.failed = {}
        self.pools = {}
        self.details = []
        self.other = {}            # outcomes of the misbehaved client and tunnel closes

    def ok(self, kind, pool=None):
        with self.lock:
            self.requests[kind] = self.requests.get(kind, 0) + 1
            if pool:
                self.pools[pool] = self.pools.get(pool, 0) + 1

    def fail(self, kind, what):
        with self.lock:
            self.requests[kind] = self.requests.get(kind, 0) + 1
            self.failed[kind] = self.failed.get(kind, 0) + 1
            if len(self.details) < 50:
                self.details.append('%s %s: %s' % (time.strftime('%H:%M:%S'), kind, what))

    def note(self, what):
        with self.lock:
            self.other[what] = self.other.get(what, 0) + 1

    def by_pool(self):
        with self.lock:
            return dict(self.pools)

    def totals(self):
        with self.lock:
            return sum(self.requests.values()), sum(self.failed.values())


# ---------------------------------------------------------------------------------------------
# Clients (each a loop in a thread until stop is set)
# ---------------------------------------------------------------------------------------------

class Clients:

    def __init__(self, port, tally, timeout=20.0):
        self.port = port
        self.tally = tally
        self.timeout = timeout
        self.stop = threading.Event()
        self.threads = []
        self.ws_closes = []          # (wall time, pool) of long tunnels closed by the proxy
        self.lock = threading.Lock()

    def spawn(self, name, fn, *args):
        t = threading.Thread(target=self._guard, args=(name, fn) + args, daemon=True, name=name)
        self.threads.append(t)
        t.start()

    def _guard(self, name, fn, *args):
        try:
            fn(*args)
        except Exception as e:          # a bug in the client itself must not pass silently
            self.tally.fail(name, 'client thread died: %s: %s' % (type(e).__name__, e))

    def pace(self, t0, period):
        left = period - (time.monotonic() - t0)
        if left > 0:
            self.stop.wait(left)

    def check_origin(self, r, kind):
        pool, server = r.header('X-Origin-Pool'), r.header('X-Origin-Server')
        if r.status != 200:
            return None, 'status %d from %s/%s: %r' % (r.status, pool, server, r.body[:100])
        if pool not in POOLS or server not in NAMES[pool]:
            return None, 'pool/server headers %r/%r' % (pool, server)
        return pool, None

    def http_loop(self, kind, period, make, check, keepalive=True):
        """Requests in a loop: make(i) -> request bytes and method; check(r) -> error or None."""
        c = None
        i = 0
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                if c is None:
                    c = h.Client(self.port, timeout=self.timeout)
                data, method = make(i)
                c.send(data)
                r = c.read_response(method)
                pool, err = self.check_origin(r, kind)
                if err is None:
                    err = check(r)
                if err is None and not keepalive:
                    if not r.wants_close():
                        err = 'no Connection: close in the answer'
                    elif not c.wait_closed(self.timeout):
                        err = 'connection open %.0fs after a Connection: close answer' % (
                            self.timeout)
                if err is None:
                    self.tally.ok(kind, pool)
                else:
                    self.tally.fail(kind, err)
                if err is not None or not keepalive or r.wants_close():
                    c.close()
                    c = None
            except Exception as e:
                self.tally.fail(kind, '%s: %s' % (type(e).__name__, e))
                if c is not None:
                    c.close()
                c = None
            i += 1
            self.pace(t0, period)
        if c is not None:
            c.close()

    # the kinds ---------------------------------------------------------------------------------

    def small(self, k):
        def check(r):
            want = b'hello from %s/%s\n' % (r.header('X-Origin-Pool').encode(),
                                            r.header('X-Origin-Server').encode())
            return None if r.body == want else 'body %r' % r.body[:100]
        self.http_loop('small', 0.005, lambda i: (h.build_request('GET', '/?s=%d-%d' % (k, i)),
                                                  'GET'), check)

    def close(self, k):
        def check(r):
            return None if r.body.startswith(b'hello from ') else 'body %r' % r.body[:100]
        self.http_loop('close', 0.01, lambda i: (h.build_request(
            'GET', '/?c=%d-%d' % (k, i), [('Connection', 'close')]), 'GET'), check,
            keepalive=False)

    def large_down(self):
        def check(r):
            return None if r.body == BIG_DOWN else 'body of %d bytes differs' % len(r.body)
        self.http_loop('large', 0.2, lambda i: (h.build_request('GET', '/bytes/%d?i=%d' % (
            MIB, i)), 'GET'), check)

    def large_up(self):
        def check(r):
            js = r.json()
            got = (js.get('body_bytes'), js.get('body_fnv1a'))
            return None if got == (MIB, BIG_UP_FNV) else 'echo %r' % (got,)
        self.http_loop('large', 0.2, lambda i: (h.build_request(
            'POST', '/echo?i=%d' % i, body=BIG_UP), 'POST'), check)

    def chunked_down(self):
        def check(r):
            if not r.chunked:
                return 'not chunked'
            return None if r.body == CHUNKED_DOWN else 'body of %d bytes differs' % len(r.body)
        self.http_loop('chunked', 0.05, lambda i: (h.build_request(
            'GET', '/bytes/%d?chunked=1&chunk=5000&i=%d' % (CHUNKED_N, i)), 'GET'), check)

    def chunked_up(self):
        def check(r):
            js = r.json()
            got = (js.get('body_bytes'), js.get('body_fnv1a'))
            return None if got == (len(CHUNKED_UP), CHUNKED_UP_FNV) else 'echo %r' % (got,)
        self.http_loop('chunked', 0.05, lambda i: (h.build_request(
            'POST', '/echo?i=%d' % i, [('Transfer-Encoding', 'chunked')]) + CHUNKED_UP_WIRE,
            'POST'), check)

    def slow(self, k):
        """A slow but well-behaved client: its head in 8-byte pieces every 15 ms, the answer
        read 4 KiB at a time every 20 ms (a 8 KiB receive buffer)."""
        i = 0
        while not self.stop.is_set():
            t0 = time.monotonic()
            c = None
            try:
                c = h.Client(self.port, timeout=self.timeout)
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
                req = h.build_request('GET', '/bytes/%d?slow=%d-%d' % (SLOW_N, k, i),
                                      [('X-Padding', 'p' * 300), ('Connection', 'close')])
                for j in range(0, len(req), 8):
                    c.send(req[j:j + 8])
                    if self.stop.wait(0.015):
                        break
                else:
                    head = c.read_head()
                    body = bytearray()
                    while True:
                        chunk = c.sock.recv(4096) if not c.buf else bytes(c.buf)
                        c.buf.clear()
                        if not chunk:
                            break
                        body += chunk
                        time.sleep(0.02)
                    pool = head.header('X-Origin-Pool')
                    if head.status != 200 or pool not in POOLS:
                        self.tally.fail('slow', 'status %s pool %s' % (head.status, pool))
                    elif bytes(body) != SLOW_DOWN:
                        self.tally.fail('slow', 'body of %d bytes differs' % len(body))
                    else:
                        self.tally.ok('slow', pool)
            except Exception as e:
                self.tally.fail('slow', '%s: %s' % (type(e).__name__, e))
            finally:
                if c is not None:
                    c.close()
            i += 1
            self.pace(t0, 0.5)

    def slowloris(self):
        """Not well-behaved: a head that never ends. The proxy must answer 408 or close within
        client_header (+5 s); outcomes are noted, a connection held longer is a failure."""
        while not self.stop.is_set():
            c = None
            t0 = time.monotonic()
            try:
                c = h.Client(self.port, timeout=1.0)
                c.send(b'GET /loris HTTP/1.1\r\nHost: test.local\r\n')
                outcome = None
                while outcome is None and not self.stop.is_set():
                    if time.monotonic() - t0 > CLIENT_HEADER_S + 5.0:
                        self.tally.fail('slowloris', 'connection held %.1fs with an unfinished '
                                        'head' % (time.monotonic() - t0))
                        outcome = 'held'
                        break
                    try:
                        c.send(b'X')
                    except OSError:
                        outcome = 'closed'
                        break
                    if c.readable_within(1.0):
                        try:
                            r = c.read_head()
                            outcome = 'status %d' % r.status
                        except h.ProtocolError:
                            outcome = 'closed'
                if outcome:
                    self.tally.note('slowloris ' + outcome)
                    if outcome != 'held':
                        self.tally.ok('slowloris')
            except Exception as e:
                self.tally.note('slowloris %s' % type(e).__name__)
            finally:
                if c is not None:
                    c.close()

    def open_ws(self):
        c = h.Client(self.port, timeout=self.timeout)
        c.send(h.build_request('GET', '/ws', [('Upgrade', 'websocket'),
                                              ('Connection', 'Upgrade'),
                                              ('Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='),
                                              ('Sec-WebSocket-Version', '13')]))
        r = c.read_head()
        return c, r

    def ws_short(self, k):
        i = 0
        while not self.stop.is_set():
            c = None
            try:
                c, r = self.open_ws()
                pool = r.header('X-Origin-Pool')
                if r.status != 101 or pool not in POOLS:
                    self.tally.fail('ws', 'upgrade answered %d from %s' % (r.status, pool))
                    continue
                for j in range(20):
                    msg = (b'ws%d-%d-%d;' % (k, i, j)) * (1 + (i * 7 + j) % 60)
                    c.send(msg)
                    got = c.read_exact(len(msg))
                    if got != msg:
                        self.tally.fail('ws', 'echo differs')
                        break
                    if self.stop.wait(0.1):
                        break
                else:
                    self.tally.ok('ws', pool)
            except Exception as e:
                self.tally.fail('ws', '%s: %s' % (type(e).__name__, e))
            finally:
                if c is not None:
                    c.close()
            i += 1

    def ws_long(self, k):
        """Held until the proxy closes it (drain.tunnel_timeout); every close is recorded and
        matched against the drain events afterwards."""
        i = 0
        while not self.stop.is_set():
            c = None
            try:
                c, r = self.open_ws()
                pool = r.header('X-Origin-Pool')
                if r.status != 101 or pool not in POOLS:
                    self.tally.fail('ws-long', 'upgrade answered %d from %s' % (r.status, pool))
                    self.stop.wait(0.5)
                    continue
                j = 0
                while not self.stop.is_set():
                    msg = b'long%d-%d-%d;' % (k, i, j)
                    try:
                        c.send(msg)
                        got = c.read_exact(len(msg))
                    except (h.ConnClosed, BrokenPipeError, ConnectionResetError):
                        with self.lock:
                            self.ws_closes.append((time.time(), pool, j))
                        self.tally.ok('ws-long', pool)
                        break
                    if got != msg:
                        self.tally.fail('ws-long', 'echo differs')
                        break
                    j += 1
                    self.stop.wait(0.5)
            except Exception as e:
                self.tally.fail('ws-long', '%s: %s' % (type(e).__name__, e))
            finally:
                if c is not None:
                    c.close()
            i += 1

    def start(self):
        for k in range(4):
            self.spawn('small-%d' % k, self.small, k)
        for k in range(2):
            self.spawn('close-%d' % k, self.close, k)
        self.spawn('large-down', self.large_down)
        self.spawn('large-up', self.large_up)
        self.spawn('chunked-down', self.chunked_down)
        self.spawn('chunked-up', self.chunked_up)
        for k in range(2):
            self.spawn('ws-%d' % k, self.ws_short, k)
            self.spawn('ws-long-%d' % k, self.ws_long, k)
            self.spawn('slow-%d' % k, self.slow, k)
        self.spawn('slowloris', self.slowloris)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(self.timeout + 10)
        return [t.name for t in self.threads if t.is_alive()]


# ---------------------------------------------------------------------------------------------
# Samples and events (threads with their own control connection)
# ---------------------------------------------------------------------------------------------

def proc_rss_kb(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0


def proc_fds(pid):
    return len(os.listdir('/proc/%d/fd' % pid))


class Sampler:
    def __init__(self, pid, tally, t_start):
        self.pid = pid
        self.tally = tally
        self.t_start = t_start
        self.rows = []             # (t_s, rss_kb, fds, requests, failed)
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True, name='sampler')

    def sample(self):
        try:
            rss, fds = proc_rss_kb(self.pid), proc_fds(self.pid)
        except OSError:
            return
        if rss == 0:                # a zombie: the proxy has exited
            return
        req, bad = self.tally.totals()
        row = (round(time.monotonic() - self.t_start, 1), rss, fds, req, bad)
        self.rows.append(row)
        log('sample t=%6.1fs rss=%7d kB fds=%4d requests=%8d failed=%d' % row)

    def run(self):
        nxt = time.monotonic()
        while not self.stop.is_set():
            self.sample()
            nxt += SAMPLE_S
            self.stop.wait(max(0.0, nxt - time.monotonic()))


class EventLog:
    def __init__(self, sock):
        self.ctl = h.Ctl(sock, timeout=20.0)
        self.events = []
        self.errors = []
        self.next = 0
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True, name='events')

    def run(self):
        while not self.stop.is_set():
            try:
                r = self.ctl.events(self.next, wait=2, timeout=10)
                if r.status != 200:
                    self.errors.append(r.summary(200))
                    self.stop.wait(1.0)
                    continue
                if r.data['events'] and r.data['events'][0]['seq'] > self.next + 1:
                    self.errors.append('events lost: %d..%d' % (self.next,
                                                               r.data['events'][0]['seq']))
                self.events += r.data['events']
                self.next = r.data['next']
            except Exception as e:
                self.errors.append(repr(e))
                self.stop.wait(1.0)

    def finish(self):
        self.stop.set()
        self.t.join(15)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------

class Soak:

    def __init__(self, seconds, out):
        self.seconds = seconds
        self.out = out
        self.tmp = tempfile.mkdtemp(prefix='sy-soak-')
        self.tally = Tally()
        self.problems = []
        self.ops = {'cutover': 0, 'rollback': 0, 'reload': 0, 'drain': 0, 'logrotate': 0}
        self.third = False
        self.reloads_sighup = 0
        self.serial = 1

    def cfg(self):
        n = 3 if self.third else 2
        cfg = h.make_config([self.orig[x] for x in NAMES['blue'][:n]],
                            [self.orig[x] for x in NAMES['green'][:n]], self.tmp, workers=2,
                            timeouts={'client_header': '%gs' % CLIENT_HEADER_S, 'tunnel': '60s'},
                            extra={'health': {'interval': '1s', 'timeout': '1s', 'rise': 1,
                                              'fall': 3},
                                   'rollout': {'gates': {'window': '5s', 'min_requests': 20},
                                               'on_failure': 'rollback'},
                                   'drain': {'tunnel_timeout': '%gs' % TUNNEL_TIMEOUT_S},
                                   'state_file': os.path.join(self.tmp, 'state.json'),
                                   'log': {'access': os.path.join(self.tmp, 'access.log'),
                                           'audit': os.path.join(self.tmp, 'audit.log')}})
        cfg['limits'] = {'max_headers': 100 + self.serial % 2}     # a change on every reload
        return cfg

    # control --------------------------------------------------------------------------------

    def call(self, method, path, body=None, expect=200):
        try:
            r = self.ctl.request(method, path, body)
        except Exception as e:
            self.problems.append('%s %s: %r' % (method, path, e))
            return None
        if r.status != expect or not r.ok:
            self.problems.append('%s %s %s: expected %d, got %s' % (
                method, path, json.dumps(body), expect, r.summary(600)))
            return None
        return r

    def wait_status(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        st = None
        while time.monotonic() < deadline:
            st = self.ctl.status()
            if pred(st):
                return st
            time.sleep(0.1)
        self.problems.append('%s: not within %.0fs (routing %s, rollout %s)' % (
            what, timeout, json.dumps(st and st['routing']), json.dumps(st and st['rollout'])))
        return None

    def until(self, t):
        """Waits until monotonic time t; False when the run's end comes first or the proxy
        has died."""
        end = min(t, self.t_end)
        while self.proxy.alive() and time.monotonic() < end:
            time.sleep(min(0.5, max(0.0, end - time.monotonic())))
        return time.monotonic() < self.t_end and self.proxy.alive()

    def cycle(self, n, t0):
        try:
            st = self.ctl.status()
        except Exception as e:
            self.problems.append('cycle %d: status: %r' % (n, e))
            return
        live, stby = st['routing']['live'], st['routing']['standby']
        before = self.tally.by_pool()
        # a full cutover
        if self.call('POST', '/v1/cutover', {'to': stby, 'plan': PLAN_FULL,
                                             'id': 'soak-%d' % n}, expect=202):
            if self.wait_status(lambda s: s['rollout']['state'] == 'stable' and
                                s['routing']['live'] == stby, 20.0, 'cutover %d' % n):
                if self.ctl.status()['rollout']['outcome'] != 'promoted':
                    self.problems.append('cutover %d: %s' % (
                        n, json.dumps(self.ctl.status()['rollout'])))
                else:
                    self.ops['cutover'] += 1
                    live, stby = stby, live
        # a drain of one live server, then ready
        if not self.until(t0 + 10.0):
            return
        srv = NAMES[live][n % 2]
        if self.call('POST', '/v1/servers/%s/%s/drain' % (live, srv)):
            self.ops['drain'] += 1
            self.until(t0 + 15.0)
            self.call('POST', '/v1/servers/%s/%s/ready' % (live, srv))
        # a cutover back, rolled back mid-ramp
        if not self.until(t0 + 18.0):
            return
        if self.call('POST', '/v1/cutover', {'to': stby, 'plan': PLAN_HOLD,
                                             'id': 'soak-%d-back' % n}, expect=202):
            self.until(t0 + 21.0)       # even at the end: never leave a rollout running
            r = self.call('POST', '/v1/rollback', {'reason': 'soak cycle %d' % n})
            if r is not None:
                if (r.data['routing']['live'], r.data['routing']['standby_bp']) != (live, 0):
                    self.problems.append('rollback %d answered %s' % (n, r.data['routing']))
                else:
                    self.ops['rollback'] += 1
        # every other cycle: a reload and a log rotation
        if n % RELOAD_EVERY == RELOAD_EVERY - 1 and self.until(t0 + 24.0):
            self.reload(n)
            self.rotate_log()
        after = self.tally.by_pool()
        moved = {p: after.get(p, 0) - before.get(p, 0) for p in POOLS}
        log('cycle %d done: live %s, requests by pool %s, ops %s' % (n, live, moved, self.ops))

    def reload(self, n):
        self.third = not self.third
        self.serial += 1
        self.proxy.write_config(self.cfg())
        if n // RELOAD_EVERY % 2 == 0:
            mark = self.proxy.err.count()
            self.proxy.signal(signal.SIGHUP)
            _, m = self.proxy.err.wait_for(r'configuration reloaded from .* \(serial (\d+)\)',
                                           10.0, mark)
            if m is None:
                self.problems.append('SIGHUP reload %d: not applied' % n)
                return
            self.reloads_sighup += 1
        else:
            r = self.call('POST', '/v1/reload', {})
            if r is None:
                return
        self.ops['reload'] += 1
        want = 3 if self.third else 2
        self.wait_status(lambda s: all(
            len(s['pools'][p]['servers']) == want and
            all(x['health'] == 'up' for x in s['pools'][p]['servers']) for p in POOLS),
            10.0, 'servers up after reload %d' % n)

    def rotate_log(self):
        path = os.path.join(self.tmp, 'access.log')
        try:
            os.rename(path, path + '.1')
        except OSError as e:
            self.problems.append('rotate: %r' % e)
            return
        self.proxy.signal(signal.SIGUSR1)
        if not h.wait_until(lambda: os.path.exists(path), 5.0):
            self.problems.append('SIGUSR1: the access log was not reopened')
            return
        os.unlink(path + '.1')
        self.ops['logrotate'] += 1

    # main -----------------------------------------------------------------------------------

    def run(self):
        os.makedirs(self.out, exist_ok=True)
        self.orig = {}
        for pool in POOLS:
            for name in NAMES[pool]:
                self.orig[name] = h.Origin(pool, name).start()
        self.proxy = h.Proxy(self.cfg(), self.tmp)
        self.proxy.start()
        self.ctl = h.Ctl(self.proxy.config['control']['socket'], timeout=20.0, keepalive=True)
        if not h.wait_until(lambda: all(s['health'] == 'up' for p in POOLS
                                        for s in self.ctl.status()['pools'][p]['servers']), 10):
            raise RuntimeError('servers not up: %s' % json.dumps(self.ctl.status()['pools']))
        log('switchyard pid %d on port %d (%s), %d s, output in %s' % (
            self.proxy.pid, self.proxy.port, h.SWITCHYARD, self.seconds, self.out))
        t_start = time.monotonic()
        self.t_end = t_start + self.seconds
        sampler = Sampler(self.proxy.pid, self.tally, t_start)
        events = EventLog(self.proxy.config['control']['socket'])
        clients = Clients(self.proxy.port, self.tally)
        sampler.t.start()
        events.t.start()
        clients.start()
        n = 0
        try:
            while time.monotonic() + CYCLE_S <= self.t_end + 0.5 and self.proxy.alive():
                t0 = time.monotonic()
                try:
                    self.cycle(n, t0)
                except Exception as e:      # the proxy died under a call: reported below
                    self.problems.append('cycle %d: %s: %s' % (n, type(e).__name__, e))
                n += 1
                self.until(t0 + CYCLE_S)
            self.until(self.t_end)
        finally:
            stuck = clients.finish()
            sampler.stop.set()
            sampler.t.join(10)
            sampler.sample()
        cycles = n
        if stuck:
            self.problems.append('client threads still running: %s' % stuck)
        died = not self.proxy.alive()
        if died:
            self.problems.append('switchyard died during the run (exit %s); stderr tail:\n%s' % (
                self.proxy.proc.returncode, self.proxy.stderr_tail(30)))
        # after the load: nothing left in flight
        def drained():
            pools = self.ctl.status()['pools']
            return all(pools[p][k] == 0 for p in POOLS for k in ('inflight', 'tunnels'))
        if not died and not h.wait_until(drained, 10.0):
            self.problems.append('after the load: %s' % json.dumps(
                {p: {k: self.ctl.status()['pools'][p][k] for k in ('inflight', 'tunnels')}
                 for p in POOLS}))
        events.finish()
        self.ctl.close()
        rc = self.proxy.stop(timeout=40.0)
        stderr = self.proxy.err.text()
        with open(os.path.join(self.out, 'switchyard.stderr'), 'w') as f:
            f.write(stderr + '\n')
        for o in self.orig.values():
            o.stop()
        return self.report(cycles, sampler.rows, events, clients, rc, stderr)

    def report(self, cycles, rows, events, clients, rc, stderr):
        with open(os.path.join(self.out, 'samples.csv'), 'w', newline='') as f:
            w = csv.writer(f)
            w.writerow(['t_s', 'rss_kb', 'fds', 'requests', 'failed'])
            w.writerows(rows)
        print('\n    t_s   rss_kB   fds   requests  failed')
        for r in rows:
            print('%7.1f  %7d  %4d  %9d  %6d' % r)
        # flat after warm-up
        warm = WARMUP_S if self.seconds >= 600 else self.seconds / 3.0
        steady = [r for r in rows if r[0] >= warm]
        third = len(steady) // 3
        if third >= 2:
            first, last = steady[:third], steady[-third:]
            rss1, rss3 = max(r[1] for r in first), max(r[1] for r in last)
            fd1, fd3 = max(r[2] for r in first), max(r[2] for r in last)
            rss_bound = int(rss1 * (1 + RSS_GROWTH)) + RSS_SLACK_KB
            print('after %.0fs warm-up: RSS max %d kB (first third) -> %d kB (last third), bound '
                  '%d kB; fds max %d -> %d, bound %d' % (warm, rss1, rss3, rss_bound, fd1, fd3,
                                                         fd1 + FD_SLACK))
            if rss3 > rss_bound:
                self.problems.append('RSS grew: %d kB -> %d kB (bound %d kB)' % (
                    rss1, rss3, rss_bound))
            if fd3 > fd1 + FD_SLACK:
                self.problems.append('fds grew: %d -> %d (bound %d)' % (fd1, fd3, fd1 + FD_SLACK))
        else:
            self.problems.append('too few samples after the %.0fs warm-up to judge growth (%d)'
                                 % (warm, len(steady)))
        # tunnels closed by the proxy: each near a drain event of its pool
        drains = [(wall_of(e), e['pool']) for e in events.events if e['type'] == 'drain']
        unexplained = [(t, p, j) for t, p, j in clients.ws_closes
                       if not any(dp == p and -1.5 <= t - dt <= 3.0 for dt, dp in drains)]
        for t, p, j in unexplained[:10]:
            self.problems.append('a long tunnel on %s closed at %s after %d echoes without a '
                                 'drain of %s' % (p, time.strftime('%H:%M:%S', time.localtime(t)),
                                                  j, p))
        if events.errors:
            self.problems.append('events: %s' % events.errors[:5])
        # operations done
        want_cycles = int((self.seconds + 0.5) // CYCLE_S)
        want = {'cutover': want_cycles, 'rollback': want_cycles, 'drain': want_cycles,
                'reload': want_cycles // RELOAD_EVERY, 'logrotate': want_cycles // RELOAD_EVERY}
        for k, v in want.items():
            if self.ops[k] < v:
                self.problems.append('%s: %d done, %d scheduled' % (k, self.ops[k], v))
        # sanitizers and the exit
        hits = [ln for ln in stderr.splitlines() if re.search(SANITIZER_RX, ln)]
        if hits:
            self.problems.append('sanitizer report in the stderr of switchyard:\n  %s' %
                                 '\n  '.join(hits[:10]))
        if rc != 0:
            self.problems.append('switchyard exited with %s on SIGTERM' % rc)
        # failures of well-behaved clients
        t = self.tally
        good_failed = dict(t.failed)
        if good_failed:
            self.problems.append('failed requests by kind %s; first ones:\n  %s' % (
                good_failed, '\n  '.join(t.details[:20])))
        summary = {
            'seconds': self.seconds, 'cycles': cycles, 'sanitize': os.environ.get(
                'SWITCHYARD_SANITIZE', 'none'), 'switchyard': h.SWITCHYARD,
            'requests_by_kind': t.requests, 'failed_by_kind': t.failed,
            'requests_by_pool': t.pools, 'other': t.other, 'ops': self.ops,
            'reloads_by_sighup': self.reloads_sighup,
            'long_tunnels_closed_by_drain': len(clients.ws_closes),
            'drain_events': len(drains), 'events': len(events.events),
            'rss_kb_first_last': [rows[0][1], rows[-1][1]] if rows else None,
            'fds_first_last': [rows[0][2], rows[-1][2]] if rows else None,
            'exit': rc, 'problems': self.problems}
        with open(os.path.join(self.out, 'summary.json'), 'w') as f:
            json.dump(summary, f, indent=1, sort_keys=True)
        print('\nrequests by kind %s (failed %s)\nrequests by pool %s\nmisbehaved client %s\n'
              'operations %s (reloads by SIGHUP %d), long tunnels closed by drain %d, drain '
              'events %d\nRSS first/last %s kB, fds first/last %s, switchyard exit %s' % (
                  json.dumps(t.requests, sort_keys=True), json.dumps(t.failed, sort_keys=True),
                  json.dumps(t.pools, sort_keys=True), json.dumps(t.other, sort_keys=True),
                  json.dumps(self.ops), self.reloads_sighup, len(clients.ws_closes), len(drains),
                  summary['rss_kb_first_last'], summary['fds_first_last'], rc))
        print('samples: %s' % os.path.join(self.out, 'samples.csv'))
        if self.problems:
            print('\nSOAK FAILED:\n- ' + '\n- '.join(self.problems))
            return 1
        print('\nSOAK PASSED')
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seconds', type=float, default=float(os.environ.get('SOAK_SECONDS', 600)))
    ap.add_argument('--out', default=os.environ.get('SOAK_OUT', 'soak-out'))
    a = ap.parse_args()
    if a.seconds < 60:
        ap.error('--seconds: at least 60 (two 30 s cycles; the growth check needs samples)')
    sys.stdout.reconfigure(line_buffering=True)
    s = Soak(a.seconds, os.path.abspath(a.out))
    try:
        rc = s.run()
    except BaseException:
        p = getattr(s, 'proxy', None)
        if p is not None and p.err is not None:
            print('switchyard (rc %s) stderr tail:\n%s' % (p.proc.poll(), p.stderr_tail(60)))
        raise
    finally:
        h._kill_all()
        shutil.rmtree(s.tmp, ignore_errors=True)
    sys.exit(rc)


if __name__ == '__main__':
    main()
