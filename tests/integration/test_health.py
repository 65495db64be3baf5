"""Health (DESIGN §5): active checks (rise/fall timing, start-up with a dead server, reasons:
status, body mismatch, timeout, connection refused), a server killed mid-traffic, failover to the
other pool when a pool has no healthy server, passive ejection on 5xx within
max_ejection_percent, and health state kept across a reload.

Every state change is logged as `health: POOL/NAME FROM -> TO: REASON`; the tests read those
lines from the proxy's stderr and watch which server answers (X-Origin-Server) while traffic
flows."""

import http.server
import os
import re
import signal
import socketserver
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

ERR_BODY = re.compile(rb'^(\d{3}) [^\n]+\nrequest id: (\S+)\n$')

# Scheduling slack on top of the bounds the design promises. Sanitizer builds are several times
# slower, so they get more.
SANITIZED = os.environ.get('SWITCHYARD_SANITIZE', 'none') not in ('', 'none')
MARGIN = 1.0 if SANITIZED else 0.3

# Fast checks for the timing tests.
FAST = {'interval': '200ms', 'timeout': '200ms', 'rise': 2, 'fall': 3}
INTERVAL, TIMEOUT, RISE, FALL = 0.2, 0.2, 2, 3


def health_rx(pool, name, frm=None, to=None, reason=None):
    """Regex for `health: POOL/NAME FROM -> TO: REASON` (None = any)."""
    return r'health: %s/%s %s -> %s: %s' % (
        re.escape(pool), re.escape(name),
        re.escape(frm) if frm else r'\w+', re.escape(to) if to else r'\w+',
        re.escape(reason) + r'\s*$' if reason else '')


def health_lines(proxy, start=0):
    return [ln for ln in proxy.err.lines[start:] if 'health: ' in ln]


# ---------------------------------------------------------------------------------------------
# A Python upstream whose /health and other answers are set by the test
# ---------------------------------------------------------------------------------------------

class Responder:
    """HTTP/1.1 server (keep-alive) on 127.0.0.1:0. /health answers health_status with
    health_body after health_delay seconds; any other path answers `status`. Every response
    names pool and server like the test origin does. Attributes may be changed while it runs."""

    def __init__(self, name, pool='blue', status=200, health_status=200, health_body=b'ok',
                 health_delay=0.0, health_headers=(), idle_close=10.0):
        self.name = name
        self.pool = pool
        self.status = status
        self.health_status = health_status
        self.health_body = health_body
        self.health_delay = health_delay
        self.health_headers = list(health_headers)
        self.health_hits = 0
        self.other_hits = 0
        self.connections = 0   # accepted
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'
            timeout = idle_close   # an idle keep-alive connection is closed after this

            def log_message(self, *a):
                pass

            def setup(self):
                with outer.lock:
                    outer.connections += 1
                super().setup()

            def _answer(self):
                n = int(self.headers.get('Content-Length') or 0)
                if n:
                    self.rfile.read(n)
                extra = []
                if self.path.split('?', 1)[0] == '/health':
                    with outer.lock:
                        outer.health_hits += 1
                    if outer.health_delay:
                        time.sleep(outer.health_delay)
                    status, body = outer.health_status, outer.health_body
                    extra = outer.health_headers
                else:
                    with outer.lock:
                        outer.other_hits += 1
                    status = outer.status
                    body = b'%d from %s/%s\n' % (status, outer.pool.encode(), outer.name.encode())
                self.send_response(status)
                self.send_header('Content-Length', str(len(body)))
                self.send_header('X-Origin-Pool', outer.pool)
                self.send_header('X-Origin-Server', outer.name)
                for k, v in extra:
                    self.send_header(k, v)
                self.end_headers()
                if self.command != 'HEAD':
                    self.wfile.write(body)

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _answer

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request, client_address):
                pass     # a proxy that gave up on a slow check closes the socket: not an error

        self.srv = Server((h.LOOPBACK, 0), Handler)
        self.port = self.srv.server_address[1]
        self.t = threading.Thread(target=self.srv.serve_forever, kwargs={'poll_interval': 0.05},
                                  daemon=True)
        self.t.start()

    @property
    def address(self):
        return '%s:%d' % (h.LOOPBACK, self.port)

    def server_entry(self):
        return {'name': self.name, 'address': self.address}

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


# ---------------------------------------------------------------------------------------------
# Continuous keep-alive traffic
# ---------------------------------------------------------------------------------------------

class Traffic:
    """`threads` client threads sending GET target in a loop over keep-alive connections
    (reconnecting when the proxy closes). records: (t_sent, status, pool, server, error)."""

    def __init__(self, port, threads=1, target='/', pause=0.0, headers=None):
        self.port = port
        self.nthreads = threads
        self.target = target
        self.pause = pause
        self.headers = headers
        self.records = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.ts = []

    def _run(self, k):
        c = None
        i = 0
        while not self.stopping.is_set():
            t = time.monotonic()
            try:
                if c is None:
                    c = h.Client(self.port, timeout=5)
                r = c.request('GET', '%s%si=%d-%d' % (self.target, '&' if '?' in self.target
                                                       else '?', k, i), self.headers)
                rec = (t, r.status, r.header('X-Origin-Pool'), r.header('X-Origin-Server'),
                       None if r.status == 200 else r.body[:120].decode('latin-1'))
                if r.wants_close():
                    c.close()
                    c = None
            except Exception as e:           # a failed request is a record, not a crash
                rec = (t, None, None, None, repr(e))
                if c is not None:
                    c.close()
                c = None
            with self.lock:
                self.records.append(rec)
            i += 1
            if self.pause:
                time.sleep(self.pause)
        if c is not None:
            c.close()

    def start(self):
        for k in range(self.nthreads):
            t = threading.Thread(target=self._run, args=(k,), daemon=True)
            t.start()
            self.ts.append(t)
        return self

    def stop(self):
        self.stopping.set()
        for t in self.ts:
            t.join(10)
        return self.snapshot()

    def snapshot(self):
        with self.lock:
            return list(self.records)


def fmt_records(recs, t0, limit=20):
    return '\n'.join('  %+.3fs status=%s %s/%s %s' % (t - t0, st, pool, srv,
                                                       repr(err) if err else '')
                     for t, st, pool, srv, err in recs[:limit])


class HealthTestCase(h.ProxyTestCase):
    WATCHDOG = 50.0

    def setUp(self):
        super().setUp()
        self._responders = []

    def _cleanup(self):
        super()._cleanup()
        for r in getattr(self, '_responders', []):
            try:
                r.close()
            except Exception:
                pass

    def responder(self, name, **kw):
        r = Responder(name, **kw)
        self._responders.append(r)
        return r

    def wait_log(self, p, regex, timeout, start=0, what=''):
        i, m = p.err.wait_for(regex, timeout, start)
        if m is None:
            self.fail('no log line /%s/ within %.1fs %s\nhealth lines so far:\n%s\n%s' % (
                regex, timeout, what, '\n'.join(health_lines(p)) or '  (none)', self._short_diag()))
        return i, m

    def wait_health_feature(self, p):
        """Every server's first result is logged before the listeners open."""
        if not health_lines(p):
            i, _ = p.err.wait_for(r'health: ', 2.0)
            if i is None:
                self.fail('no "health:" log line at all (active health checks must log every '
                          'state change, unknown -> up included)\n' + self._short_diag())

    def health_cfg(self, blue, green, health=None, routing=None, **kw):
        hc = dict(FAST)
        hc.update(health or {})
        r = {'balance': 'round_robin'}
        r.update(routing or {})
        return self.config(blue, green, routing=r, extra={'health': hc}, **kw)


# ---------------------------------------------------------------------------------------------

class ActiveCheckTest(HealthTestCase):

    def test_fall_and_rise_timing(self):
        """interval 200ms, timeout 200ms, fall 3, rise 2: a server whose /health turns 503 is out
        of rotation within fall*interval+timeout and back within rise*interval after it turns
        200 again."""
        b1 = self.origin('blue', 'b1')
        b2 = self.origin('blue', 'b2')
        g1 = self.origin('green', 'g1')
        p = self.proxy(self.health_cfg([b1, b2], [g1], workers=1))
        self.wait_health_feature(p)
        self.wait_log(p, health_rx('blue', 'b1', 'unknown', 'up', 'ok'), 2)
        tr = Traffic(p.port, pause=0.003).start()
        try:
            time.sleep(0.5)
            mark = p.err.count()
            t_down = time.monotonic()
            self.assertStatus(h.one_request(b1.port, 'GET', '/_origin/health/down'), 200)
            self.wait_log(p, health_rx('blue', 'b1', 'up', 'down', 'status 503'),
                          FALL * INTERVAL + TIMEOUT + MARGIN + 2, mark)
            t_logged = time.monotonic()
            time.sleep(1.0)
            mark = p.err.count()
            t_up = time.monotonic()
            self.assertStatus(h.one_request(b1.port, 'GET', '/_origin/health/up'), 200)
            self.wait_log(p, health_rx('blue', 'b1', 'down', 'up', 'ok'),
                          RISE * INTERVAL + MARGIN + 2, mark)
            time.sleep(0.7)
        finally:
            recs = tr.stop()
        bad = [r for r in recs if r[1] != 200]
        self.assertEqual(bad, [], 'failed requests while b1 went down and up:\n' +
                         fmt_records(bad, t_down))
        before = [r for r in recs if r[0] < t_down]
        self.assertIn('b1', {r[3] for r in before}, 'b1 got no traffic before its /health failed')
        b1_down_phase = [r for r in recs if t_down <= r[0] < t_up and r[3] == 'b1']
        self.assertTrue(b1_down_phase, 'b1 left rotation the instant its /health failed (fall 3 '
                        'needs 3 failed checks)')
        out_after = b1_down_phase[-1][0] - t_down
        bound = FALL * INTERVAL + TIMEOUT + MARGIN
        self.assertLessEqual(out_after, bound, 'b1 still got requests %.3fs after its /health '
                             'failed (bound fall*interval+timeout+margin = %.2fs)' % (
                                 out_after, bound))
        self.assertGreaterEqual(out_after, (FALL - 1) * INTERVAL - 0.1,
                                'b1 out of rotation %.3fs after /health failed: before fall=%d '
                                'checks could have failed' % (out_after, FALL))
        b1_back = [r for r in recs if r[0] >= t_up and r[3] == 'b1']
        self.assertTrue(b1_back, 'b1 never got traffic again after /health recovered')
        back_after = b1_back[0][0] - t_up
        bound = RISE * INTERVAL + MARGIN
        self.assertLessEqual(back_after, bound, 'b1 back in rotation only %.3fs after /health '
                             'recovered (bound rise*interval+margin = %.2fs)' % (back_after, bound))
        # Mid-phase: only b2 while b1 was down
        mid = [r for r in recs if t_logged + 0.05 <= r[0] < t_up]
        self.assertTrue(mid and all(r[3] == 'b2' for r in mid),
                        'requests while b1 was down went to %r' % sorted({r[3] for r in mid}))
        # exactly one transition each way, no flapping
        trans = [ln for ln in health_lines(p) if 'blue/b1 ' in ln]
        self.assertEqual(len(trans), 3, 'b1 transitions (expected unknown->up, up->down, '
                         'down->up):\n%s' % '\n'.join(trans))

    def test_startup_with_dead_server(self):
        """A dead server (closed port) in blue never gets a request, from the very first one on:
        retries 0 and failover false make any attempt at it a visible 502/503."""
        dead = h.free_port()
        b1 = self.origin('blue', 'b1')
        g1 = self.origin('green', 'g1')
        cfg = self.config([('dead', '127.0.0.1:%d' % dead), b1], [g1],
                          routing={'balance': 'round_robin', 'failover': False},
                          extra={'health': {'interval': '1h', 'timeout': '1s'}})
        cfg['pools']['blue']['retries'] = 0
        p = self.proxy(cfg)
        # first request right after the listening line
        fails = []
        servers_seen = set()
        c = h.Client(p.port)
        try:
            for i in range(100):
                try:
                    r = c.request('GET', '/?ka=%d' % i)
                except h.ProtocolError as e:
                    fails.append((i, repr(e)))
                    c.close()
                    c = h.Client(p.port)
                    continue
                servers_seen.add(r.header('X-Origin-Server'))
                if r.status != 200:
                    fails.append((i, r.summary(120)))
        finally:
            c.close()
        for i in range(100):       # fresh connections: both workers
            r = h.one_request(p.port, 'GET', '/?fresh=%d' % i)
            servers_seen.add(r.header('X-Origin-Server'))
            if r.status != 200:
                fails.append((100 + i, r.summary(120)))
        self.assertEqual(fails, [], 'requests failed with a dead server in blue at start-up '
                         '(it must be down before the listeners open): %r' % fails[:5])
        self.assertEqual(servers_seen, {'b1'})
        i_dead, _ = self.wait_log(p, health_rx('blue', 'dead', 'unknown', 'down',
                                               'connection refused'), 1)
        i_b1, _ = self.wait_log(p, health_rx('blue', 'b1', 'unknown', 'up', 'ok'), 1)
        i_listen, _ = p.err.wait_for(h.LISTEN_RX, 0)
        self.assertLess(i_b1, i_listen, 'listeners opened before the first round of checks '
                        'finished:\n' + p.stderr_tail(20))
        self.assertLess(i_dead, i_listen, 'listeners opened before the first round of checks '
                        'finished:\n' + p.stderr_tail(20))

    def test_failure_reasons(self):
        """expect 200-299 and a 302 → `status 302`; body_contains "ok" and body "down" →
        `body mismatch`; a /health slower than timeout → `timeout`; a body containing "ok"
        among other text passes."""
        b1 = self.origin('blue', 'b1')
        g1 = self.origin('green', 'g1')
        redir = self.responder('redir', health_status=302, health_body=b'ok',
                               health_headers=[('Location', '/elsewhere')])
        wrong = self.responder('wrong', health_body=b'down')
        slow = self.responder('slow', health_delay=2.5)
        fine = self.responder('fine', health_body=b'status: all ok here')
        p = self.proxy(self.health_cfg(
            [b1, redir.server_entry(), wrong.server_entry(), slow.server_entry(),
             fine.server_entry()], [g1],
            # a generous timeout: Python responders on a loaded machine are slow to answer
            health={'expect': '200-299', 'body_contains': 'ok', 'interval': '1h',
                    'timeout': '1s'}))
        self.wait_health_feature(p)
        self.wait_log(p, health_rx('blue', 'redir', 'unknown', 'down', 'status 302'), 2)
        self.wait_log(p, health_rx('blue', 'wrong', 'unknown', 'down', 'body mismatch'), 2)
        self.wait_log(p, health_rx('blue', 'slow', 'unknown', 'down', 'timeout'), 2)
        self.wait_log(p, health_rx('blue', 'fine', 'unknown', 'up', 'ok'), 2)
        self.wait_log(p, health_rx('blue', 'b1', 'unknown', 'up', 'ok'), 2)
        seen = set()
        for i in range(40):
            r = h.one_request(p.port, 'GET', '/?r=%d' % i)
            self.assertStatus(r, 200)
            seen.add(r.header('X-Origin-Server'))
        self.assertEqual(seen, {'b1', 'fine'}, 'traffic reached servers that failed their check')
        self.assertEqual(redir.other_hits + wrong.other_hits + slow.other_hits, 0)

    def test_timeout_after_up(self):
        """A server whose /health becomes slower than timeout goes up → down with `timeout`."""
        b1 = self.origin('blue', 'b1')
        g1 = self.origin('green', 'g1')
        s = self.responder('s1')
        p = self.proxy(self.health_cfg([b1, s.server_entry()], [g1],
                                       health={'timeout': '500ms'}))
        self.wait_health_feature(p)
        self.wait_log(p, health_rx('blue', 's1', 'unknown', 'up', 'ok'), 2)
        mark = p.err.count()
        s.health_delay = 2.0
        self.wait_log(p, health_rx('blue', 's1', 'up', 'down', 'timeout'),
                      FALL * (INTERVAL + 0.5) + 0.5 + MARGIN + 1, mark)
        s.health_delay = 0
        self.wait_log(p, health_rx('blue', 's1', 'down', 'up', 'ok'), 3, mark)


class ConnectionReuseTest(HealthTestCase):
    """Checks reuse their connection (keep-alive) for at most 10 checks, then open a new one."""

    def reuse_cfg(self, r):
        g1 = self.origin('green', 'g1')
        cfg = self.health_cfg([], [g1], workers=1)
        cfg['pools']['blue']['servers'] = [r.server_entry()]
        cfg['pools']['blue']['health'] = {'path': '/health'}
        return cfg

    def test_checks_reuse_a_connection_for_ten_checks(self):
        r = self.responder('b1')
        p = self.proxy(self.reuse_cfg(r))
        self.wait_log(p, health_rx('blue', 'b1', 'unknown', 'up', 'ok'), 3)
        with r.lock:
            c0, n0 = r.connections, r.health_hits
        time.sleep(4.5)   # ~22 checks at 200 ms; a connection lives 10 x 200 ms = 2 s
        with r.lock:
            c1, n1 = r.connections, r.health_hits
        checks, conns = n1 - n0, c1 - c0
        self.assertGreaterEqual(checks, 15, 'checks at 200 ms in 4.5 s')
        self.assertLessEqual(conns, 4, '%d checks opened %d connections: not reused' % (
            checks, conns))
        self.assertGreaterEqual(conns, 2, '%d checks on %d new connections: a connection must '
                                'not serve more than 10 checks' % (checks, conns))
        self.assertEqual([ln for ln in health_lines(p) if 'blue/b1 ' in ln and ' up ->' in ln],
                         [], 'b1 flapped')

    def test_server_closing_idle_connections_fails_no_check(self):
        """A server with a keep-alive timeout shorter than the interval closes the kept
        connection between checks: the next check finds it closed and opens a new one."""
        r = self.responder('b1', idle_close=0.05)
        p = self.proxy(self.reuse_cfg(r))
        self.wait_log(p, health_rx('blue', 'b1', 'unknown', 'up', 'ok'), 3)
        with r.lock:
            c0, n0 = r.connections, r.health_hits
        time.sleep(2.0)
        with r.lock:
            c1, n1 = r.connections, r.health_hits
        self.assertGreaterEqual(n1 - n0, 7, 'checks at 200 ms in 2 s')
        self.assertGreaterEqual(c1 - c0, n1 - n0 - 1, 'every check needed a new connection')
        trans = [ln for ln in health_lines(p) if 'blue/b1 ' in ln]
        self.assertEqual(len(trans), 1, 'only unknown -> up, no failed check:\n%s' %
                         '\n'.join(trans))

    def test_server_that_stops_accepting_goes_down(self):
        """The server closes its listener but its thread on the kept connection still answers:
        within 10 checks a new connection is due, is refused, and fall checks later it is
        down."""
        r = self.responder('b1')
        p = self.proxy(self.reuse_cfg(r))
        self.wait_log(p, health_rx('blue', 'b1', 'unknown', 'up', 'ok'), 3)
        mark = p.err.count()
        t0 = time.monotonic()
        r.srv.shutdown()
        r.srv.server_close()   # the listener only: the handler thread keeps its connection
        self.wait_log(p, health_rx('blue', 'b1', 'up', 'down', 'connection refused'),
                      (11 + FALL) * INTERVAL + TIMEOUT + MARGIN + 2, mark)
        took = time.monotonic() - t0
        bound = (11 + FALL) * (INTERVAL + 0.05) + TIMEOUT + MARGIN   # 50 ms: timer grouping
        self.assertLessEqual(took, bound, 'down %.2fs after the listener closed' % took)


class KillTest(HealthTestCase):

    def test_sigkill_mid_traffic_no_failed_request(self):
        b1 = self.origin('blue', 'b1')
        b2 = self.origin('blue', 'b2')
        g1 = self.origin('green', 'g1')
        p = self.proxy(self.health_cfg([b1, b2], [g1], routing={'balance': 'p2c'}))
        self.wait_health_feature(p)
        self.wait_log(p, health_rx('blue', 'b2', 'unknown', 'up', 'ok'), 2)
        tr = Traffic(p.port, threads=4).start()
        try:
            time.sleep(1.5)
            mark = p.err.count()
            t_kill = time.monotonic()
            b2.stop(sig=signal.SIGKILL)
            time.sleep(1.5)
        finally:
            recs = tr.stop()
        bad = [r for r in recs if r[1] != 200]
        before = [r for r in recs if r[0] < t_kill]
        after = [r for r in recs if r[0] >= t_kill]
        self.assertIn('b2', {r[3] for r in before}, 'b2 got no traffic before it was killed')
        self.assertGreater(len(after), 20, 'hardly any traffic after the kill')
        if bad:
            ids = set()
            for r in bad:
                m = re.search(r'request id: (\S+)', r[4] or '')
                if m:
                    ids.add(m.group(1))
            related = [ln for ln in p.err.lines if any(i in ln for i in ids)]
            self.fail('%d of %d requests failed around a SIGKILLed server (connect failures '
                      'must move to b1):\n%s\nproxy log lines naming them:\n%s' % (
                          len(bad), len(recs), fmt_records(bad, t_kill),
                          '\n'.join(related) or '  (none)'))
        self.wait_log(p, health_rx('blue', 'b2', 'up', 'down', 'connection refused'),
                      max(0.0, t_kill + FALL * INTERVAL + TIMEOUT + MARGIN - time.monotonic()),
                      mark, 'after SIGKILL of b2')


class FailoverTest(HealthTestCase):

    def test_pool_down_fails_over_to_green(self):
        b1 = self.origin('blue', 'b1')
        g1 = self.origin('green', 'g1')
        p = self.proxy(self.health_cfg([b1], [g1], routing={'failover': True}))
        self.wait_health_feature(p)
        for i in range(5):
            r = h.one_request(p.port, 'GET', '/?before=%d' % i)
            self.assertStatus(r, 200)
            self.assertEqual(r.header('X-Origin-Pool'), 'blue')
        mark = p.err.count()
        self.assertStatus(h.one_request(b1.port, 'GET', '/_origin/health/down'), 200)
        self.wait_log(p, health_rx('blue', 'b1', 'up', 'down', 'status 503'), 3, mark)
        time.sleep(0.05)
        pools = []
        with h.Client(p.port) as c:
            for i in range(20):
                r = c.request('GET', '/?during=%d' % i)
                self.assertStatus(r, 200, 'blue has no healthy server, failover true')
                pools.append(r.header('X-Origin-Pool'))
        self.assertEqual(set(pools), {'green'}, 'with blue down and failover: true')
        mark = p.err.count()
        self.assertStatus(h.one_request(b1.port, 'GET', '/_origin/health/up'), 200)
        self.wait_log(p, health_rx('blue', 'b1', 'down', 'up', 'ok'), 3, mark)
        time.sleep(0.05)
        r = h.one_request(p.port, 'GET', '/?after')
        self.assertStatus(r, 200)
        self.assertEqual(r.header('X-Origin-Pool'), 'blue', 'blue back up: traffic back on blue')

    def test_pool_down_no_failover_503(self):
        b1 = self.origin('blue', 'b1', extra=['--health', 'down'])
        g1 = self.origin('green', 'g1')
        p = self.proxy(self.health_cfg([b1], [g1], routing={'failover': False}))
        self.wait_health_feature(p)
        self.wait_log(p, health_rx('blue', 'b1', 'unknown', 'down', 'status 503'), 1)
        r = h.one_request(p.port, 'GET', '/', [('X-Request-Id', 'no-failover-1')])
        self.assertStatus(r, 503, 'blue all down, failover false')
        m = ERR_BODY.match(r.body)
        self.assertTrue(m, '503 body not "<code> <reason>\\nrequest id: <id>\\n": %r' % r.body)
        self.assertEqual(m.group(1), b'503')
        self.assertEqual(m.group(2), b'no-failover-1', 'the 503 body must name the request id')
        self.assertEqual(r.header('X-Request-Id'), 'no-failover-1')
        r = h.one_request(p.port, 'GET', '/')
        self.assertStatus(r, 503)
        m = ERR_BODY.match(r.body)
        self.assertTrue(m, r.body)
        self.assertEqual(r.header('X-Request-Id'), m.group(2).decode())
        # up again: served by blue
        mark = p.err.count()
        self.assertStatus(h.one_request(b1.port, 'GET', '/_origin/health/up'), 200)
        self.wait_log(p, health_rx('blue', 'b1', 'down', 'up', 'ok'), 3, mark)
        time.sleep(0.05)
        r = h.one_request(p.port, 'GET', '/')
        self.assertStatus(r, 200)
        self.assertEqual(r.header('X-Origin-Pool'), 'blue')


class PassiveTest(HealthTestCase):

    def passive_cfg(self, blue, green, **passive):
        pc = {'consecutive_failures': 3, 'ejection_time': '2s', 'max_ejection_percent': 50,
              'eject_on_5xx': True}
        pc.update(passive)
        # active checks rarely: only passive ejection acts during the test
        return self.health_cfg(blue, green, health={'interval': '1h', 'timeout': '1s',
                                                    'passive': pc})

    def test_eject_on_5xx(self):
        b1 = self.origin('blue', 'b1')
        g1 = self.origin('green', 'g1')
        b2 = self.responder('b2', status=500)
        p = self.proxy(self.passive_cfg([b1, b2.server_entry()], [g1]))
        ej_rx = r'server blue/b2 ejected for (\d+) ms after (\d+) consecutive failures'
        fails = 0
        c = h.Client(p.port)
        try:
            for i in range(20):
                r = c.request('GET', '/?e=%d' % i)
                if r.header('X-Origin-Server') == 'b2':
                    self.assertStatus(r, 500)
                    fails += 1
                    if fails == 3:
                        break
                else:
                    self.assertStatus(r, 200)
            self.assertEqual(fails, 3, 'b2 did not get 3 requests in 20 (round robin)')
            i, m = self.wait_log(p, ej_rx, 1.0, what='after 3 consecutive 500s from b2')
            t_ej = time.monotonic()
            self.assertEqual(int(m.group(1)), 2000, p.err.lines[i])
            self.assertEqual(int(m.group(2)), 3, p.err.lines[i])
            # ejected: nothing for b2 during ejection_time
            during = []
            while time.monotonic() < t_ej + 2.0 - MARGIN:
                r = c.request('GET', '/?during')
                during.append((r.status, r.header('X-Origin-Server')))
                time.sleep(0.01)
            self.assertTrue(during)
            self.assertEqual(set(during), {(200, 'b1')}, 'traffic while b2 is ejected')
            # back after ejection_time
            back = None
            while time.monotonic() < t_ej + 2.0 + MARGIN + 0.5:
                r = c.request('GET', '/?after')
                if r.header('X-Origin-Server') == 'b2':
                    back = time.monotonic() - t_ej
                    break
                time.sleep(0.01)
            self.assertIsNotNone(back, 'b2 not back in rotation after ejection_time 2s')
            self.assertGreaterEqual(back, 2.0 - MARGIN, 'b2 back after %.2fs' % back)
        finally:
            c.close()
        self.assertEqual(len(re.findall(ej_rx, p.err.text())), 1, 'b2 ejected more than once')

    def test_max_ejection_percent(self):
        """Both servers of a 2-server pool fail every request: with max_ejection_percent 50 only
        one is ejected; the other keeps the pool serving (no 503, no failover)."""
        g1 = self.origin('green', 'g1')
        x1 = self.responder('x1', status=503)
        x2 = self.responder('x2', status=500)
        p = self.proxy(self.passive_cfg([x1.server_entry(), x2.server_entry()], [g1],
                                        ejection_time='10s'))
        got = []
        c = h.Client(p.port)
        try:
            for i in range(40):
                r = c.request('GET', '/?m=%d' % i)
                got.append((r.status, r.header('X-Origin-Pool'), r.header('X-Origin-Server')))
                if r.wants_close():
                    c.close()
                    c = h.Client(p.port)
        finally:
            c.close()
        time.sleep(0.3)
        ej = re.findall(r'server blue/(\w+) ejected for', p.err.text())
        self.assertEqual(len(ej), 1, 'ejections in a 2-server pool at max_ejection_percent 50: '
                         '%r\n%s' % (ej, self._short_diag()))
        pools = {g[1] for g in got}
        self.assertEqual(pools, {'blue'}, 'with one server left in blue the pool must keep '
                         'serving (no failover, no 503): %r' % got[-10:])
        other = 'x2' if ej[0] == 'x1' else 'x1'
        tail = [g[2] for g in got[-15:]]
        self.assertEqual(set(tail), {other}, 'after %s was ejected only %s should answer' % (
            ej[0], other))

    def test_5xx_not_counted_without_eject_on_5xx(self):
        b1 = self.origin('blue', 'b1')
        g1 = self.origin('green', 'g1')
        b2 = self.responder('b2', status=500)
        p = self.proxy(self.passive_cfg([b1, b2.server_entry()], [g1], eject_on_5xx=False))
        with h.Client(p.port) as c:
            for i in range(30):
                c.request('GET', '/?n=%d' % i)
        time.sleep(0.3)
        self.assertNotRegex(p.err.text(), r'ejected for', '5xx ejected a server with '
                            'eject_on_5xx: false')
        self.assertGreaterEqual(b2.other_hits, 14)


class ReloadTest(HealthTestCase):

    def test_reload_keeps_health_state(self):
        b1 = self.origin('blue', 'b1')
        b2 = self.origin('blue', 'b2')
        b3 = self.origin('blue', 'b3')
        g1 = self.origin('green', 'g1')
        cfg = self.health_cfg([b1, b2], [g1], routing={'failover': False})
        p = self.proxy(cfg)
        self.wait_health_feature(p)
        for o in (b1, b2, g1):
            self.wait_log(p, health_rx(o.pool, o.name, 'unknown', 'up', 'ok'), 2)
        kept_rx = r'health: (blue/b1|blue/b2|green/g1) '
        tr = Traffic(p.port, pause=0.005).start()
        try:
            time.sleep(0.3)
            # 1: unchanged
            mark = p.reload(cfg)
            self.wait_log(p, r'configuration reloaded', 3, mark, 'reload 1 (unchanged)')
            time.sleep(1.0)
            # 2: one server added
            cfg2 = self.health_cfg([b1, b2, b3], [g1], routing={'failover': False})
            mark2 = p.reload(cfg2)
            self.wait_log(p, r'configuration reloaded', 3, mark2, 'reload 2 (b3 added)')
            self.wait_log(p, health_rx('blue', 'b3', 'unknown', 'up', 'ok'), 2, mark2,
                          'the added server must be checked')
            time.sleep(0.5)
            # 3: b1's weight changes (same pool, name and address: the state stays)
            cfg3 = self.health_cfg([{'name': 'b1', 'address': b1.address, 'weight': 2}, b2, b3],
                                   [g1], routing={'failover': False})
            mark3 = p.reload(cfg3)
            self.wait_log(p, r'configuration reloaded', 3, mark3, 'reload 3 (b1 weight 2)')
            time.sleep(1.0)
        finally:
            recs = tr.stop()
        after = p.err.lines[mark:]
        kept = [ln for ln in after if re.search(kept_rx, ln)]
        self.assertEqual(kept, [], 'kept servers changed health state across reloads (must keep '
                         'their state: no -> unknown, no up -> down):\n%s' % '\n'.join(kept))
        b3_lines = [ln for ln in after if 'health: blue/b3 ' in ln]
        self.assertEqual(len(b3_lines), 1, 'b3 transitions: %r' % b3_lines)
        bad = [r for r in recs if r[1] != 200 or r[2] != 'blue']
        self.assertEqual(bad, [], 'requests failed or left blue across reloads:\n' +
                         fmt_records(bad, recs[0][0] if recs else 0))
        t3 = [r for r in recs if r[3] == 'b3']
        self.assertTrue(t3, 'the added server b3 got no traffic after it came up')


if __name__ == '__main__':
    h.main()
