"""Upstream faults (DESIGN §4 bullets 7-9, §7): a server that refuses connections, resets a
connection mid-upload or mid-response, accepts and never answers, answers garbage, closes
kept-alive connections at random, or cuts a chunked body short. Each gives the documented
answer (502, 504, a response the client can see is cut), is counted in /metrics, and never
disturbs other traffic: while each fault runs, a thread sends normal requests through the same
proxy (one worker, so the same event loop) to a healthy pool, and every one must succeed."""

import os
import random
import re
import socket
import struct
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

ERR_BODY = re.compile(rb'^(\d{3}) [^\n]+\nrequest id: (\S+)\n$')


def rst_close(s):
    """Close with a reset (SO_LINGER 0) instead of a FIN."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    except OSError:
        pass
    s.close()


class FaultOrigin:
    """A Python upstream whose answer depends on the path (see _answer). Every request head is
    read whole; a Content-Length body is read whole unless the fault says otherwise."""

    def __init__(self, seed=1):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind((h.LOOPBACK, 0))
        self.ls.listen(256)
        self.port = self.ls.getsockname()[1]
        self.lock = threading.Lock()
        self.rnd = random.Random(seed)
        self.flaky = 0.0          # chance that a request on a reused connection is dropped
        self.idle_close = 0.0     # chance that a connection is closed soon after an answer
        self.requests = 0
        self.dropped = 0          # requests received on a reused connection and not answered
        self.idle_closed = 0
        self.hang_closed = 0      # /hang connections the peer closed
        self.upload_bytes = 0
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self):
        return '%s:%d' % (h.LOOPBACK, self.port)

    def stop_listening(self):
        """From now on connects are refused (the port stays ours until the test ends)."""
        self.stopped = True
        self._close_listener()

    def _close_listener(self):
        try:
            self.ls.shutdown(socket.SHUT_RDWR)    # wakes the accept thread; stops listening
        except OSError:
            pass
        self.ls.close()

    def _accept(self):
        while True:
            try:
                s, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        s.settimeout(30)
        buf = b''
        n = 0
        try:
            while True:
                head, buf = h.recv_head(s, buf)
                if head is None:
                    return
                line = head.split(b'\r\n', 1)[0].decode('latin-1')
                method, target = line.split(' ')[:2]
                with self.lock:
                    self.requests += 1
                    drop = n > 0 and self.rnd.random() < self.flaky
                    how = self.rnd.random() < 0.5
                n += 1
                if target.startswith('/rst-upload'):
                    got = len(buf)
                    while got < 64 * 1024:
                        d = s.recv(65536)
                        if not d:
                            break
                        got += len(d)
                    with self.lock:
                        self.upload_bytes += got
                    rst_close(s)
                    return
                got, buf = h.recv_body(s, head, buf)
                if got is None:
                    return
                if drop:
                    with self.lock:
                        self.dropped += 1
                    if how:
                        rst_close(s)
                    else:
                        s.close()
                    return
                if not self._answer(s, method, target, got):
                    return
                with self.lock:
                    close_soon = self.rnd.random() < self.idle_close
                    delay = self.rnd.random() * 0.005
                if close_soon and not buf:
                    s.settimeout(delay)
                    try:
                        d = s.recv(65536)
                    except socket.timeout:
                        d = None
                    s.settimeout(30)
                    if d is None:
                        with self.lock:
                            self.idle_closed += 1
                        s.close()
                        return
                    if not d:
                        return
                    buf += d
        except OSError:
            pass
        finally:
            s.close()

    def _answer(self, s, method, target, got=b''):
        """Sends the answer for target; False when the connection is done."""
        if target.startswith('/rst-response-chunked'):
            s.sendall(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n' +
                      b'2710\r\n' + b'c' * 10000 + b'\r\n')
            time.sleep(0.05)
            rst_close(s)
            return False
        if target.startswith('/rst-response'):
            s.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n' + b'r' * 50000)
            time.sleep(0.05)
            rst_close(s)
            return False
        if target.startswith('/hang'):
            try:
                s.settimeout(20)
                while s.recv(65536):
                    pass
            except OSError:
                pass
            with self.lock:
                self.hang_closed += 1
            return False
        if target.startswith('/stall-mid-body'):
            s.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n' + b's' * 10)
            try:
                s.settimeout(20)
                while s.recv(65536):
                    pass
            except OSError:
                pass
            with self.lock:
                self.hang_closed += 1
            return False
        if target.startswith('/bad-chunk-mid-body'):
            s.sendall(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n')
            time.sleep(0.05)
            s.sendall(b'zz\r\nworld\r\n0\r\n\r\n')
            time.sleep(0.05)
            s.close()
            return False
        if target.startswith('/garbage/'):
            s.sendall(GARBAGE[int(target[9:])])
            s.close()
            return False
        if target.startswith('/trunc/'):
            kind = target[7:]
            head = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'
            body = {'fin-after-chunk': b'5\r\nhello\r\n',
                    'fin-mid-chunk': b'a\r\nhello',
                    'fin-after-last-size': b'5\r\nhello\r\n0\r\n',
                    'fin-in-size': b'5\r\nhello\r\n1',
                    'rst-after-chunk': b'5\r\nhello\r\n'}[kind]
            s.sendall(head)
            time.sleep(0.02)
            s.sendall(body)
            time.sleep(0.05)
            if kind.startswith('rst'):
                rst_close(s)
            else:
                s.shutdown(socket.SHUT_WR)
                s.close()
            return False
        body = b'' if method == 'HEAD' else b'ok ' + target.encode()
        s.sendall(b'HTTP/1.1 200 OK\r\nX-Echo-Target: %s\r\nX-Echo-Body: %d %s\r\n'
                  b'Content-Length: %d\r\n\r\n' % (target.encode(), len(got),
                                                   h.fnv1a64(got).encode(), 3 + len(target)) + body)
        return True

    def close(self):
        if not self.stopped:
            self._close_listener()


GARBAGE = [
    b'this is not http\r\n\r\n',
    b'HTTP/1.1 200 OK\r\nbroken header line\r\n\r\n',
    b'\x00\x01\x02\xff' * 64,
    b'HTTP/9.9 200 OK\r\nContent-Length: 0\r\n\r\n',
    b'HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n',
]


class FaultBase(h.ProxyTestCase):
    """blue: the healthy test origin b1 on the first listener; green: the fault server f1,
    reached through a second listener with route_to: green (no failover, so each fault shows)."""

    TIMEOUTS = {'upstream_response': '1s'}
    GREEN_SPARE = False      # a second, healthy green server g2
    ROUTING = None

    def setUp(self):
        super().setUp()
        self.f = FaultOrigin()
        self.addCleanup(self.f.close)
        self.b1 = self.origin('blue', 'b1')
        green = [('f1', self.f.address)]
        if self.GREEN_SPARE:
            green.append(self.origin('green', 'g2'))
        cfg = self.config([self.b1], green, workers=1,
                          listen=[{'address': '127.0.0.1:0'},
                                  {'address': '127.0.0.1:0', 'route_to': 'green'}],
                          timeouts=self.TIMEOUTS, routing=self.ROUTING)
        self.p = self.proxy(cfg)
        self.normal, self.faulty = self.p.ports
        self.ctl = h.ctl_for(self.p)
        self.base = self.metrics()
        self.steady = h.SteadyClient(self.normal)

    def tearDown(self):
        self.steady.finish()
        super().tearDown()

    def metrics(self):
        return h.parse_metrics(self.ctl.metrics_text())[1]

    def delta(self, name, **labels):
        """How much a counter grew since setUp, once /metrics shows it (sampled each second)."""
        before = h.metric(self.base, name, **labels) or 0
        return (h.metric(self.metrics(), name, **labels) or 0) - before

    def wait_delta(self, expected, name, **labels):
        """Polls until the counter grew by at least `expected` (5 s), then returns the growth."""
        got = h.wait_until(lambda: self.delta(name, **labels) >= expected and
                           self.delta(name, **labels), 5.0, 0.2)
        return got if got else self.delta(name, **labels)

    def check_steady(self, what, minimum=10):
        ok, failures = self.steady.finish()
        self.assertEqual(failures[:5], [], '%s: %d normal request(s) to the healthy pool failed '
                         'while the fault ran' % (what, len(failures)))
        self.assertGreaterEqual(ok, minimum, '%s: only %d normal requests ran alongside' % (
            what, ok))
        sys.stdout.write(' [%d normal requests alongside, 0 failed] ' % ok)

    def assertErrorBody(self, r, status):
        self.assertStatus(r, status)
        m = ERR_BODY.match(r.body)
        self.assertTrue(m, '%d body not "<code> <reason>\\nrequest id: <id>\\n": %r' % (
            status, r.body))
        self.assertEqual(r.header('X-Request-Id'), m.group(2).decode())
        self.assertTrue(r.wants_close(), r.summary())

    def wait_delta_class(self, expected, pool, cls):
        labels = {'pool': pool, 'class': cls}
        return self.wait_delta(expected, 'switchyard_responses_total', **labels)


class FaultTest(FaultBase):

    # -- connect refused ------------------------------------------------------------------

    def test_connection_refused_502(self):
        # f1 passed its health check at start-up; no request went to it, so the proxy holds
        # no kept-alive connection to it
        self.f.stop_listening()
        n = 20
        for i in range(n):
            self.assertErrorBody(h.one_request(self.faulty, 'GET', '/ok?%d' % i), 502)
        self.assertEqual(self.wait_delta(n, 'switchyard_connect_errors_total', pool='green',
                                         server='f1'), n)
        self.assertEqual(self.delta('switchyard_connect_errors_total', pool='green'), n)
        self.assertEqual(self.wait_delta_class(n, 'green', '5xx'), n)
        self.assertEqual(self.delta('switchyard_connect_errors_total', pool='blue'), 0)
        self.check_steady('connection refused')

    # -- resets ---------------------------------------------------------------------------

    def test_reset_mid_upload_502(self):
        n = 4
        size = 8 << 20
        for i in range(n):
            with h.Client(self.faulty, timeout=10) as c:
                c.send(h.build_request('POST', '/rst-upload?%d' % i,
                                       [('Content-Length', str(size))]))
                done = threading.Event()

                def upload():
                    block = b'u' * 65536
                    sent = 0
                    try:
                        while sent < size and not done.is_set():
                            c.sock.sendall(block)
                            sent += len(block)
                    except OSError:
                        pass
                t = threading.Thread(target=upload, daemon=True)
                t.start()
                try:
                    r = c.read_response()
                finally:
                    done.set()
                self.assertErrorBody(r, 502)
                t.join(10)
        self.assertGreaterEqual(self.f.upload_bytes, n * 64 * 1024, 'the uploads never reached '
                                'the fault server')
        self.assertEqual(self.wait_delta_class(n, 'green', '5xx'), n)
        self.check_steady('reset mid-upload')

    def read_cut(self, c, what):
        """Reads a response that must be cut: returns (head, body bytes); fails on a complete
        response."""
        try:
            r = c.read_response()
        except h.ConnClosed:
            return
        except socket.timeout:
            self.fail('%s: neither a complete response nor a close within the timeout (hang)' %
                      what)
        self.fail('%s: the client got a complete response for a body the server cut:\n%s' % (
            what, r.summary(100)))

    def test_reset_mid_response(self):
        n = 3
        for path in ('/rst-response', '/rst-response-chunked'):
            for i in range(n):
                with h.Client(self.faulty, timeout=5) as c:
                    c.send(h.build_request('GET', '%s?%d' % (path, i)))
                    head = c.read_head()
                    self.assertEqual(head.status, 200, head.summary())
                    self.read_cut(c, path)
        self.assertEqual(self.wait_delta(2 * n, 'switchyard_upstream_failures_total',
                                         pool='green', server='f1'), 2 * n)
        self.assertEqual(self.wait_delta_class(2 * n, 'green', 'none'), 2 * n)
        self.assertEqual(self.delta('switchyard_upstream_failures_total', pool='blue'), 0)
        self.check_steady('reset mid-response')

    # -- never answers --------------------------------------------------------------------

    def test_accepts_never_answers_504(self):
        n = 3
        results = []

        def one(i):
            t0 = time.monotonic()
            try:
                r = h.one_request(self.faulty, 'GET', '/hang?%d' % i,
                                  [('X-Request-Id', 'hang-%d' % i)], timeout=10)
                results.append((i, r, time.monotonic() - t0))
            except Exception as e:      # noqa: BLE001
                results.append((i, e, time.monotonic() - t0))
        ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(15)
        self.assertEqual(len(results), n)
        for i, r, dt in results:
            self.assertIsInstance(r, h.Response, 'request %d: %r' % (i, r))
            self.assertErrorBody(r, 504)
            self.assertEqual(r.header('X-Request-Id'), 'hang-%d' % i)
            self.assertTrue(0.8 <= dt <= 4.0, '504 after %.2fs with upstream_response 1s' % dt)
        self.assertEqual(self.wait_delta(n, 'switchyard_timeouts_total', pool='green',
                                         server='f1'), n)
        self.assertEqual(self.wait_delta_class(n, 'green', '5xx'), n)
        # the proxy gave the silent connections up (the server sees them close)
        self.assertTrue(h.wait_until(lambda: self.f.hang_closed >= n, 3.0),
                        'only %d of %d silent upstream connections closed after the 504' % (
                            self.f.hang_closed, n))
        self.check_steady('silent server')

    # -- garbage --------------------------------------------------------------------------

    def test_garbage_502(self):
        for i in range(len(GARBAGE)):
            r = h.one_request(self.faulty, 'GET', '/garbage/%d' % i,
                              [('X-Request-Id', 'garbage-%d' % i)])
            self.assertErrorBody(r, 502)
            self.assertEqual(r.header('X-Request-Id'), 'garbage-%d' % i)
        self.assertEqual(self.wait_delta_class(len(GARBAGE), 'green', '5xx'), len(GARBAGE))
        self.assertEqual(self.delta('switchyard_requests_total', pool='green', server='f1'),
                         len(GARBAGE))
        self.check_steady('garbage answers')

    # -- keep-alive connections closed at random -------------------------------------------

    def test_random_keepalive_closes_no_failures(self):
        self.f.flaky = 0.3
        self.f.idle_close = 0.1
        threads, per = 4, 75
        failures = []
        # Requests with bodies too: a dropped one is sent again whole (DESIGN §4).
        methods = ['GET', 'HEAD', 'DELETE', 'OPTIONS', 'POST', 'PUT']

        def client(k):
            c = h.Client(self.faulty, timeout=5)
            try:
                for i in range(per):
                    m = methods[(i + k) % len(methods)]
                    target = '/ok/%d/%d' % (k, i)
                    body = os.urandom(1 + (k * per + i) * 37 % 12000) if m in ('POST', 'PUT') \
                        else b''
                    echo = '%d %s' % (len(body), h.fnv1a64(body))
                    try:
                        r = c.request(m, target, body=body or None)
                    except Exception as e:      # noqa: BLE001
                        failures.append((m, target, repr(e)))
                        c.close()
                        c = h.Client(self.faulty, timeout=5)
                        continue
                    if r.status != 200 or r.header('X-Echo-Target') != target or \
                            r.header('X-Echo-Body') != echo:
                        failures.append((m, target, r.summary(100)))
                    if r.wants_close():
                        c.close()
                        c = h.Client(self.faulty, timeout=5)
            finally:
                c.close()
        ts = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        total = threads * per
        self.assertEqual(failures[:5], [], '%d of %d requests failed although the '
                         'server only closed reused keep-alive connections (%d dropped requests,'
                         ' %d idle closes)' % (len(failures), total, self.f.dropped,
                                               self.f.idle_closed))
        self.assertGreater(self.f.dropped, 10, 'the server dropped too few requests for the test '
                           'to mean anything')
        retries = self.wait_delta(self.f.dropped, 'switchyard_retries_total', pool='green',
                                  server='f1')
        # every dropped request was retried once; a request that met an idle close (the
        # server's FIN racing the reuse) is retried too, without the server seeing it
        self.assertGreaterEqual(retries, self.f.dropped)
        self.assertLessEqual(retries, self.f.dropped + self.f.idle_closed)
        self.assertEqual(self.delta('switchyard_retries_total', pool='green'), retries)
        self.assertEqual(self.wait_delta_class(total, 'green', '2xx'), total)
        self.assertEqual(self.delta('switchyard_responses_total', pool='green', **{'class': '5xx'}),
                         0)
        sys.stdout.write(' [%d requests, %d dropped by the server, %d idle closes, %d retries] '
                         % (total, self.f.dropped, self.f.idle_closed, retries))
        self.check_steady('random keep-alive closes')

    # -- truncated chunked body -----------------------------------------------------------

    def test_truncated_chunked_never_ends_cleanly(self):
        kinds = ['fin-after-chunk', 'fin-mid-chunk', 'fin-after-last-size', 'fin-in-size',
                 'rst-after-chunk']
        for kind in kinds:
            with h.Client(self.faulty, timeout=5) as c:
                c.send(h.build_request('GET', '/trunc/' + kind))
                head = c.read_head()
                self.assertEqual(head.status, 200, head.summary())
                self.assertIn('chunked', head.tokens('Transfer-Encoding'),
                              '%s: an HTTP/1.1 client gets the body chunked' % kind)
                try:
                    data = c.read_to_eof()
                except socket.timeout:
                    self.fail('%s: the client connection hangs after the server cut the body' %
                              kind)
                self.assertFalse(re.search(rb'(^|\r\n)0\r\n\r\n$', data), '%s: the cut body was '
                                 'ended with a last chunk (a clean end): %r' % (kind, data[-60:]))
        n = len(kinds)
        self.assertEqual(self.wait_delta(n, 'switchyard_upstream_failures_total', pool='green',
                                         server='f1'), n)
        self.assertEqual(self.wait_delta_class(n, 'green', 'none'), n)
        self.check_steady('truncated chunked bodies')

    def test_cut_mid_body_counted_as_failure(self):
        # A timeout or bad framing after the head went out cannot become a 504/502 any more:
        # the client sees the cut, and /metrics counts an upstream failure, not a 2xx.
        for path in ('/stall-mid-body', '/bad-chunk-mid-body'):
            for version in ('HTTP/1.1', 'HTTP/1.0'):
                with h.Client(self.faulty, timeout=5) as c:
                    c.send(h.build_request('GET', path, version=version))
                    head = c.read_head()
                    self.assertEqual(head.status, 200, head.summary())
                    what = '%s (%s)' % (path, version)
                    if head.has('Content-Length') or head.has('Transfer-Encoding'):
                        self.read_cut(c, what)
                    else:
                        try:
                            c.read_to_eof()
                        except socket.timeout:
                            self.fail('%s: client left hanging' % what)
                        self.assertTrue(c.reset, '%s: close-delimited body cut, then a FIN' % what)
        self.assertEqual(self.wait_delta(4, 'switchyard_upstream_failures_total', pool='green',
                                         server='f1'), 4)
        self.assertEqual(self.wait_delta_class(4, 'green', 'none'), 4)
        self.assertEqual(self.delta('switchyard_responses_total', pool='green', **{'class': '2xx'}),
                         0, 'cut responses counted as successes')
        self.assertEqual(self.wait_delta(2, 'switchyard_timeouts_total', pool='green',
                                         server='f1'), 2)
        self.check_steady('cut mid-body')

    def test_truncated_chunked_http10_client_sees_reset(self):
        # An HTTP/1.0 client gets the body close-delimited: a FIN would look like the end of a
        # complete body, so a cut must show as a reset.
        for kind in ('fin-after-chunk', 'rst-after-chunk'):
            with h.Client(self.faulty, timeout=5) as c:
                c.send(h.build_request('GET', '/trunc/' + kind, version='HTTP/1.0'))
                head = c.read_head()
                self.assertEqual(head.status, 200, head.summary())
                self.assertFalse(head.has('Content-Length') or head.has('Transfer-Encoding'),
                                 head.summary())
                try:
                    c.read_to_eof()
                except socket.timeout:
                    self.fail('%s: HTTP/1.0 client left hanging' % kind)
                self.assertTrue(c.reset, '%s: a close-delimited body cut by the server ended '
                                'with a FIN, which an HTTP/1.0 client takes for a complete body'
                                % kind)
        self.check_steady('truncated body to an HTTP/1.0 client')


class RefusedRetryTest(FaultBase):
    """green: f1 (will refuse connections) and the healthy g2, balanced round robin."""

    GREEN_SPARE = True
    ROUTING = {'balance': 'round_robin'}

    def test_connection_refused_retried_on_another_server_any_method(self):
        # DESIGN §4: a connect failure tries another server of the pool for any method (nothing
        # was sent), so a POST with a body to a pool with one refusing server never fails.
        self.f.stop_listening()
        n = 20
        body = b'payload-' * 500
        for i in range(n):
            r = h.one_request(self.faulty, 'POST', '/echo?%d' % i, body=body)
            self.assertStatus(r, 200, 'POST %d with a refusing server in the pool' % i)
            self.assertEqual(r.json()['body_fnv1a'], h.fnv1a64(body))
        # round robin tries f1 first for every other request until passive ejection takes it
        # out after health.passive.consecutive_failures (default 5) connect errors
        refused = self.wait_delta(5, 'switchyard_connect_errors_total', pool='green', server='f1')
        self.assertEqual(refused, 5)
        self.assertEqual(self.wait_delta(1, 'switchyard_ejections_total', pool='green',
                                         server='f1'), 1)
        self.assertEqual(self.wait_delta(refused, 'switchyard_retries_total', pool='green',
                                         server='g2'), refused)
        self.assertEqual(self.delta('switchyard_responses_total', pool='green', **{'class': '5xx'}),
                         0)
        self.check_steady('connection refused, another server up')


if __name__ == '__main__':
    h.main()
