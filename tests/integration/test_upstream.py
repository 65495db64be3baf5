"""Upstream side (DESIGN §4 bullets 6-8): WebSocket/Upgrade tunnels, upstream keep-alive pools
(max_idle, idle_timeout), retry on a stale reused connection, connect failover, and the local
error responses 502 / 504 with their request-id bodies."""

import os
import re
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

ERR_BODY = re.compile(rb'^(\d{3}) [^\n]+\nrequest id: (\S+)\n$')


class StaleServer:
    """A Python upstream that answers the FIRST request on each connection (keep-alive) and
    closes any later request on the same connection without answering — exactly what a proxy
    sees when a server drops an idle connection just as a request is sent on it."""

    def __init__(self, drop_early=False):
        self.drop_early = drop_early  # drop a later request as soon as its head arrives
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind((h.LOOPBACK, 0))
        self.ls.listen(64)
        self.ls.settimeout(0.2)
        self.port = self.ls.getsockname()[1]
        self.connections = 0
        self.answered = 0
        self.dropped = 0
        self.stop = False
        self.t = threading.Thread(target=self._accept, daemon=True)
        self.t.start()

    def _accept(self):
        while not self.stop:
            try:
                s, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        s.settimeout(10)
        buf = b''
        n = 0
        try:
            while True:
                head, buf = h.recv_head(s, buf)
                if head is None:
                    return
                if n >= 1 and self.drop_early:
                    self.dropped += 1
                    return
                got, buf = h.recv_body(s, head, buf)
                if got is None:
                    return
                n += 1
                if n > 1:
                    self.dropped += 1
                    return            # close without a byte of response
                self.answered += 1
                s.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Origin-Server: stale\r\n'
                          b'X-Origin-Pool: blue\r\n\r\n' % len(self.echo(got)) + self.echo(got))
        except OSError:
            pass
        finally:
            s.close()

    @staticmethod
    def echo(body):
        """The answer to a request with this body: its length and hash, so a test can tell the
        body the server got."""
        return b'fresh %d %s\n' % (len(body), h.fnv1a64(body).encode()) if body else b'fresh\n'

    def close(self):
        self.stop = True
        self.ls.close()


class TunnelTest(h.ProxyTestCase):

    def open_ws(self, port):
        c = h.Client(port)
        c.send(h.build_request('GET', '/ws', [('Upgrade', 'websocket'), ('Connection', 'Upgrade'),
                                              ('Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='),
                                              ('Sec-WebSocket-Version', '13')]))
        r = c.read_head()
        return c, r

    def test_websocket_tunnel_echo(self):
        p = self.setup_basic()
        c, r = self.open_ws(p.port)
        with c:
            self.assertStatus(r, 101)
            self.assertIn('websocket', r.tokens('Upgrade'), r.summary())
            self.assertIn('upgrade', r.tokens('Connection'), r.summary())
            self.assertEqual(r.header('X-Origin-Pool'), 'blue')
            for msg in (b'hello', b'\x00\x01\xff binary \r\n\r\n', b'GET / HTTP/1.1\r\n\r\n'):
                c.send(msg)
                self.assertEqual(c.read_exact(len(msg)), msg, 'tunnel echo')
            big = os.urandom(512 * 1024)
            got = bytearray()

            def reader():
                try:
                    while len(got) < len(big):
                        got.extend(c.read_exact(min(65536, len(big) - len(got))))
                except Exception:
                    pass
            t = threading.Thread(target=reader)
            t.start()
            c.send(big)
            t.join(15)
            self.assertEqual(len(got), len(big), '512 KiB through the tunnel')
            self.assertTrue(bytes(got) == big, 'tunnel corrupted data')

    def test_websocket_close_propagates(self):
        p = self.setup_basic()
        c, r = self.open_ws(p.port)
        self.assertStatus(r, 101)
        c.send(b'ping')
        self.assertEqual(c.read_exact(4), b'ping')
        c.close()
        # the upstream side of the tunnel must be closed too (the origin sees it go away)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            st = self.b1.stats()
            if st['connections_open'] <= 1:      # only the stats connection
                break
            time.sleep(0.1)
        self.assertLessEqual(st['connections_open'], 1, 'tunnel upstream left open: %s' % st)

    def test_tunnel_idle_timeout(self):
        p = self.setup_basic(timeouts={'tunnel': '1s'})
        c, r = self.open_ws(p.port)
        with c:
            self.assertStatus(r, 101)
            c.send(b'x')
            self.assertEqual(c.read_exact(1), b'x')
            t0 = time.monotonic()
            self.assertClosed(c, 4.0, 'idle tunnel with timeouts.tunnel 1s')
            self.assertGreater(time.monotonic() - t0, 0.7, 'tunnel closed before its idle timeout')

    def test_tunnel_data_sent_with_upgrade_request(self):
        # bytes that follow the upgrade request in the same write belong to the tunnel
        p = self.setup_basic()
        with h.Client(p.port) as c:
            c.send(h.build_request('GET', '/ws', [('Upgrade', 'websocket'),
                                                  ('Connection', 'Upgrade')]) + b'early-bytes')
            r = c.read_head()
            self.assertStatus(r, 101)
            self.assertEqual(c.read_exact(11), b'early-bytes', 'bytes sent right after the '
                             'upgrade request were not tunnelled')

    def test_upgrade_refused_by_origin_stays_http(self):
        # the origin answers an upgrade request to /echo with a plain 200: no tunnel, the
        # connection goes on as HTTP
        p = self.setup_basic()
        with h.Client(p.port) as c:
            r = c.request('GET', '/echo', [('Upgrade', 'websocket'), ('Connection', 'Upgrade')])
            self.assertStatus(r, 200)
            names = [k.lower() for k, _ in r.json()['headers']]
            self.assertIn('upgrade', names, 'Upgrade must be forwarded on an upgrade request')
            r2 = c.request('GET', '/echo?after')
            self.assertStatus(r2, 200, 'request after a refused upgrade')
            self.assertEqual(r2.json()['target'], '/echo?after')

    def test_tunnel_counts_as_connection_not_pool_idle(self):
        # after the tunnel closes, its upstream connection is not put back in the idle pool
        p = self.setup_basic(workers=1)
        c, r = self.open_ws(p.port)
        self.assertStatus(r, 101)
        c.send(b'abc')
        self.assertEqual(c.read_exact(3), b'abc')
        c.close()
        time.sleep(0.3)
        for i in range(5):
            r = h.one_request(p.port, 'GET', '/echo?i=%d' % i)
            self.assertStatus(r, 200, 'request %d after a closed tunnel' % i)
            self.assertEqual(r.json()['target'], '/echo?i=%d' % i)

    def test_upgrade_without_connection_upgrade_is_plain_request(self):
        p = self.setup_basic()
        with h.Client(p.port) as c:
            r = c.request('GET', '/echo', [('Upgrade', 'websocket')])
            self.assertStatus(r, 200)
            names = [k.lower() for k, _ in r.json()['headers']]
            self.assertNotIn('upgrade', names, 'Upgrade forwarded on a non-upgrade request')
            self.assertStatus(c.request('GET', '/'), 200)


class UpstreamPoolTest(h.ProxyTestCase):

    def test_idle_timeout_closes_upstream(self):
        self.b1 = self.origin('blue', 'b1')
        self.g1 = self.origin('green', 'g1')
        cfg = self.config([self.b1], [self.g1], workers=1)
        cfg['pools']['blue']['idle_timeout'] = '500ms'
        p = self.proxy(cfg)
        self.assertStatus(h.one_request(p.port), 200)
        st = self.b1.stats()
        self.assertEqual(st['connections_open'], 2, 'one idle upstream + stats: %s' % st)
        time.sleep(1.5)
        st = self.b1.stats()
        self.assertEqual(st['connections_open'], 1, 'idle upstream kept past idle_timeout: %s' % st)
        self.assertStatus(h.one_request(p.port), 200, 'after the idle upstream was closed')

    def test_max_idle(self):
        self.b1 = self.origin('blue', 'b1')
        self.g1 = self.origin('green', 'g1')
        cfg = self.config([self.b1], [self.g1], workers=1)
        cfg['pools']['blue']['max_idle'] = 2
        p = self.proxy(cfg)
        res = []

        def one():
            try:
                res.append(h.one_request(p.port, 'GET', '/?delay=400').status)
            except Exception as e:
                res.append(repr(e))
        ts = [threading.Thread(target=one) for _ in range(5)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(10)
        self.assertEqual(res, [200] * 5)
        time.sleep(0.3)
        st = self.b1.stats()
        self.assertGreaterEqual(st['connections_accepted'], 6, st)
        self.assertEqual(st['connections_open'] - 1, 2, 'idle upstream connections with '
                         'max_idle 2 after 5 concurrent requests: %s' % st)

    def test_idle_pool_follows_load(self):
        """The default max_idle keeps what a burst opened; the newest idle connection is reused
        first, so the ones a quieter period does not need age out after idle_timeout."""
        self.b1 = self.origin('blue', 'b1')
        self.g1 = self.origin('green', 'g1')
        cfg = self.config([self.b1], [self.g1], workers=1)
        cfg['pools']['blue']['idle_timeout'] = '1s'
        p = self.proxy(cfg)
        res = []

        def one():
            try:
                res.append(h.one_request(p.port, 'GET', '/?delay=300').status)
            except Exception as e:
                res.append(repr(e))
        ts = [threading.Thread(target=one) for _ in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(10)
        self.assertEqual(res, [200] * 6)
        self.assertTrue(h.wait_until(lambda: self.b1.stats()['connections_open'] - 1 == 6, 3),
                        'all 6 upstream connections of the burst kept idle (default max_idle): '
                        '%s' % self.b1.stats())
        accepted = self.b1.stats()['connections_accepted']
        # Sequential requests for 2.5 s (past idle_timeout): always the same newest connection.
        deadline = time.monotonic() + 2.5
        n = 0
        while time.monotonic() < deadline:
            self.assertStatus(h.one_request(p.port), 200)
            n += 1
            time.sleep(0.05)
        st = self.b1.stats()
        self.assertEqual(st['connections_accepted'], accepted + 1,
                         '%d sequential requests reused one idle connection: %s' % (n, st))
        self.assertEqual(st['connections_open'] - 1, 1,
                         'the 5 unused idle connections closed after idle_timeout: %s' % st)

    def test_concurrent_requests_use_separate_upstreams(self):
        p = self.setup_basic(workers=1)
        res = []
        t0 = time.monotonic()

        def one():
            try:
                res.append(h.one_request(p.port, 'GET', '/?delay=500').status)
            except Exception as e:
                res.append(repr(e))
        ts = [threading.Thread(target=one) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(10)
        self.assertEqual(res, [200] * 8)
        self.assertLess(time.monotonic() - t0, 2.5, '8 concurrent 500ms requests serialized?')


class ClientAbortTest(h.ProxyTestCase):
    """A client that goes away mid-exchange must not leave a half-used upstream connection in
    the idle pool: the next requests get their own, correct answers."""

    def setUp(self):
        super().setUp()
        self.p = self.setup_basic(workers=1)

    def check_clean(self, what):
        for i in range(6):
            r = h.one_request(self.p.port, 'GET', '/echo?check=%d' % i)
            self.assertStatus(r, 200, '%s: request %d' % (what, i))
            self.assertEqual(r.json()['target'], '/echo?check=%d' % i, '%s: wrong response '
                             '(desynchronized upstream connection?)' % what)
            self.assertEqual(r.json()['body_bytes'], 0)
        self.assertTrue(self.p.alive())

    def test_client_aborts_mid_upload(self):
        c = h.Client(self.p.port)
        c.send(h.build_request('POST', '/echo', [('Content-Length', str(10 << 20))]))
        c.send(b'x' * (1 << 20))
        time.sleep(0.2)
        c.close()
        time.sleep(0.3)
        self.check_clean('after a client aborted its upload')

    def test_client_aborts_waiting_for_response(self):
        for i in range(3):
            c = h.Client(self.p.port)
            c.send(h.build_request('GET', '/echo?slow=%d&delay=400' % i))
            time.sleep(0.1)
            c.close()
        time.sleep(0.6)
        self.check_clean('after clients left before their responses')

    def test_client_aborts_mid_download(self):
        c = h.Client(self.p.port)
        c.send(h.build_request('GET', '/bytes/%d' % (64 << 20)))
        c.read_head()
        c.sock.recv(65536)
        c.close()
        time.sleep(0.3)
        self.check_clean('after a client aborted a download')

    def test_client_half_close_after_request(self):
        # shutdown(SHUT_WR) after a complete request: answering (HAProxy) and aborting (nginx)
        # are both seen in the wild; either way no hang and no damage to later requests
        with h.Client(self.p.port, timeout=4) as c:
            c.send(h.build_request('GET', '/echo?half&delay=200'))
            c.sock.shutdown(socket.SHUT_WR)
            try:
                r = c.read_response()
                self.assertStatus(r, 200)
            except h.ConnClosed:
                pass
            except socket.timeout:
                self.fail('connection neither answered nor closed 4s after a client half-close')
        time.sleep(0.4)
        self.check_clean('after a client half-close')


class RetryTest(h.ProxyTestCase):

    def stale_proxy(self, **kw):
        """A proxy whose blue pool is one StaleServer (closed after the test)."""
        stale = StaleServer(**kw)
        self.addCleanup(stale.close)
        self.g1 = self.origin('green', 'g1')
        return stale, self.proxy(self.config([('s1', '127.0.0.1:%d' % stale.port)], [self.g1],
                                             workers=1))

    def test_retry_on_stale_reused_connection(self):
        stale, p = self.stale_proxy()
        with h.Client(p.port) as c:
            for i in range(4):
                r = c.request('GET', '/?i=%d' % i)
                self.assertStatus(r, 200, 'request %d (the reused upstream connection is '
                                  'dropped by the server: must be retried once on a fresh '
                                  'one) stale server: %d conns, %d answered, %d dropped' % (
                                      i, stale.connections, stale.answered, stale.dropped))
                self.assertEqual(r.body, b'fresh\n')
                time.sleep(0.05)
        self.assertGreaterEqual(stale.dropped, 1, 'the proxy never reused an upstream '
                                'connection (%d connections for 4 requests)' % stale.connections)

    def test_retry_with_body_on_stale_reused_connection(self):
        """DESIGN §4: a request that dies on a reused connection before any response byte is
        sent again on a fresh one — with its body (kept up to RELAY_REPLAY_BYTES), however the
        client framed it."""
        stale, p = self.stale_proxy()
        small = os.urandom(3000)
        near_limit = os.urandom(16 * 1024 - 64)
        cases = [
            ('POST', small, []),
            ('PUT', small, []),
            ('POST', near_limit, []),
            ('POST', small, [('Transfer-Encoding', 'chunked')]),
            ('PATCH', near_limit[:5000], [('Transfer-Encoding', 'chunked')]),
            ('POST', small, [('Expect', '100-continue')]),
        ]
        with h.Client(p.port) as c:
            self.assertStatus(c.request('GET', '/first'), 200)  # leaves an idle connection
            for i, (method, body, hs) in enumerate(cases):
                time.sleep(0.05)
                dropped = stale.dropped
                chunked = any(k == 'Transfer-Encoding' for k, _ in hs)
                wire = h.chunked_body(body, [1000, 7, 4096]) if chunked else body
                r = c.request(method, '/b?i=%d' % i, headers=hs, body=wire)
                what = '%s of %d bytes%s' % (method, len(body), ' chunked' if chunked else '')
                self.assertStatus(r, 200, what + ' on a stale reused connection')
                self.assertEqual(stale.dropped, dropped + 1,
                                 what + ': the proxy did not reuse the idle connection')
                self.assertEqual(r.body, StaleServer.echo(body),
                                 what + ': the body sent again differs from the client\'s')
        self.assertTrue(p.alive())

    def test_retry_while_the_body_is_still_coming(self):
        """The server drops the reused connection as the head arrives, while the client is
        still sending the body: the proxy sends the head and the body so far on a fresh
        connection, then the rest as it comes."""
        stale, p = self.stale_proxy(drop_early=True)
        body = os.urandom(6000)
        for chunked in (False, True):
            with h.Client(p.port) as c:
                self.assertStatus(c.request('GET', '/first'), 200)
                time.sleep(0.05)
                dropped = stale.dropped
                hs = [('Transfer-Encoding', 'chunked')] if chunked else []
                wire = h.chunked_body(body, [2000]) if chunked else body
                c.send(h.build_request('POST', '/slow', hs, wire)[:-len(wire) + 2500])
                time.sleep(0.3)
                c.send(wire[2500:])
                r = c.read_response('POST')
                what = 'chunked' if chunked else 'Content-Length'
                self.assertStatus(r, 200, what)
                self.assertEqual(stale.dropped, dropped + 1, what + ': no stale connection')
                self.assertEqual(r.body, StaleServer.echo(body), what)

    def test_body_over_replay_limit_not_retried(self):
        """A body over RELAY_REPLAY_BYTES is streamed only: on a stale connection the request
        gets 502 (documented), the next one works."""
        stale, p = self.stale_proxy()
        with h.Client(p.port) as c:
            self.assertStatus(c.request('GET', '/first'), 200)
            time.sleep(0.05)
            big = os.urandom(64 * 1024)
            r = c.request('POST', '/big', body=big)
            self.assertStatus(r, 502, 'a 64 KiB body on a stale connection cannot be sent '
                              'again')
            self.assertEqual(stale.dropped, 1)
        r = h.one_request(p.port, 'POST', '/after', body=b'x' * 100)
        self.assertStatus(r, 200, 'the request after the 502')
        self.assertEqual(r.body, StaleServer.echo(b'x' * 100))

    def test_origin_restart_between_requests(self):
        self.b1 = self.origin('blue', 'b1')
        self.g1 = self.origin('green', 'g1')
        p = self.proxy(self.config([self.b1], [self.g1], workers=1))
        with h.Client(p.port) as c:
            self.assertStatus(c.request('GET', '/'), 200)
            self.b1.restart()        # same port; the proxy's idle connection is now dead
            r = c.request('GET', '/')
            self.assertStatus(r, 200, 'first request after an origin restart')
            self.assertStatus(c.request('GET', '/'), 200)

    def test_origin_restart_post(self):
        self.b1 = self.origin('blue', 'b1')
        self.g1 = self.origin('green', 'g1')
        p = self.proxy(self.config([self.b1], [self.g1], workers=1))
        body = os.urandom(3000)
        self.assertStatus(h.one_request(p.port, 'POST', '/echo', body=body), 200)
        self.b1.restart()
        time.sleep(0.1)
        r = h.one_request(p.port, 'POST', '/echo', body=body)
        self.assertStatus(r, 200, 'POST after an origin restart')
        self.assertEqual(r.json()['body_fnv1a'], h.fnv1a64(body))


class FailoverTest(h.ProxyTestCase):

    def run_load(self, port, n=100):
        fails = []
        body = b'payload' * 100
        with h.Client(port) as c:
            for i in range(n):
                try:
                    if i % 3 == 0:
                        r = c.request('POST', '/echo?i=%d' % i, body=body)
                        if r.status == 200 and r.json()['body_bytes'] != len(body):
                            fails.append((i, 'body_bytes %s' % r.json()['body_bytes']))
                    else:
                        r = c.request('GET', '/?i=%d' % i)
                    if r.status != 200:
                        fails.append((i, r.summary(200)))
                    if r.wants_close():
                        c.close()
                        c = h.Client(port)
                except Exception as e:
                    fails.append((i, repr(e)))
                    c.close()
                    c = h.Client(port)
        return fails

    def test_connect_refused_failover(self):
        dead = h.free_port()
        self.b1 = self.origin('blue', 'b1')
        self.g1 = self.origin('green', 'g1')
        for balance in ('p2c', 'round_robin'):
            cfg = self.config([('dead', '127.0.0.1:%d' % dead), self.b1], [self.g1],
                              routing={'balance': balance})
            p = self.proxy(cfg)
            fails = self.run_load(p.port, 100)
            self.assertEqual(fails, [], 'balance %s: failures with one refused server in the '
                             'pool: %r' % (balance, fails[:5]))
            p.stop()
            self._proxies.remove(p)

    def test_connect_timeout_failover(self):
        # A listening socket with a full accept queue drops SYNs: connects to it time out.
        bh = socket.socket()
        bh.bind((h.LOOPBACK, 0))
        bh.listen(0)
        fillers = []
        try:
            for _ in range(3):
                f = socket.socket()
                f.setblocking(False)
                f.connect_ex(bh.getsockname())
                fillers.append(f)
            time.sleep(0.1)
            probe = socket.socket()
            probe.settimeout(0.5)
            try:
                probe.connect(bh.getsockname())
                self.skipTest('cannot make a black-hole address on this kernel')
            except (socket.timeout, BlockingIOError):
                pass
            finally:
                probe.close()
            self.b1 = self.origin('blue', 'b1')
            self.g1 = self.origin('green', 'g1')
            cfg = self.config([('hole', '127.0.0.1:%d' % bh.getsockname()[1]), self.b1],
                              [self.g1], routing={'balance': 'round_robin'},
                              timeouts={'upstream_connect': '300ms'})
            p = self.proxy(cfg)
            t0 = time.monotonic()
            fails = self.run_load(p.port, 10)
            self.assertEqual(fails, [], 'failures with a server whose connects time out: %r' % fails)
            self.assertLess(time.monotonic() - t0, 8, 'upstream_connect 300ms not honoured')
        finally:
            for f in fillers:
                f.close()
            bh.close()

    def test_all_servers_dead_502(self):
        self.b1 = self.origin('blue', 'b1')
        self.g1 = self.origin('green', 'g1')
        p = self.proxy(self.config([self.b1], [self.g1]))
        self.assertStatus(h.one_request(p.port), 200)
        self.b1.stop()
        self.g1.stop()
        r = h.one_request(p.port, 'GET', '/', [('X-Request-Id', 'dead-pool-1')])
        self.assertStatus(r, 502, 'every server refuses connections')
        m = ERR_BODY.match(r.body)
        self.assertTrue(m, '502 body not "<code> <reason>\\nrequest id: <id>\\n": %r' % r.body)
        self.assertEqual(m.group(1), b'502')
        self.assertEqual(m.group(2), b'dead-pool-1', 'body must name the request id')
        self.assertEqual(r.header('X-Request-Id'), 'dead-pool-1', r.summary())
        r = h.one_request(p.port, 'GET', '/')
        self.assertStatus(r, 502)
        m = ERR_BODY.match(r.body)
        self.assertTrue(m, r.body)
        self.assertRegex(m.group(2).decode(), r'^[0-9a-f]{32}$')
        self.assertEqual(r.header('X-Request-Id'), m.group(2).decode())

    def test_dead_server_in_config_from_start(self):
        dead1, dead2 = h.free_port(), h.free_port()
        self.g1 = self.origin('green', 'g1')
        p = self.proxy(self.config([('d1', '127.0.0.1:%d' % dead1), ('d2', '127.0.0.1:%d' % dead2)],
                                   [self.g1], extra={'routing': {'failover': False}}))
        r = h.one_request(p.port, 'GET', '/')
        self.assertIn(r.status, (502, 503), 'pool of dead servers, failover off:\n' + r.summary())
        self.assertTrue(ERR_BODY.match(r.body), r.body)


class UpstreamErrorTest(h.ProxyTestCase):

    def test_upstream_timeout_504(self):
        p = self.setup_basic(timeouts={'upstream_response': '1s'})
        t0 = time.monotonic()
        r = h.one_request(p.port, 'GET', '/hold', [('X-Request-Id', 'hold-me')], timeout=10)
        dt = time.monotonic() - t0
        self.assertStatus(r, 504)
        self.assertTrue(0.8 <= dt <= 4.0, '504 after %.2fs with upstream_response 1s' % dt)
        m = ERR_BODY.match(r.body)
        self.assertTrue(m, '504 body: %r' % r.body)
        self.assertEqual(m.group(2), b'hold-me')
        self.assertEqual(r.header('X-Request-Id'), 'hold-me')
        # the held upstream connection is given up, not reused
        time.sleep(0.2)
        self.assertStatus(h.one_request(p.port, 'GET', '/'), 200)

    def test_slow_origin_under_timeout_ok(self):
        p = self.setup_basic(timeouts={'upstream_response': '1s'})
        self.assertStatus(h.one_request(p.port, 'GET', '/?delay=300'), 200)

    def test_garbage_502(self):
        p = self.setup_basic()
        r = h.one_request(p.port, 'GET', '/garbage', [('X-Request-Id', 'garbage-1')])
        self.assertStatus(r, 502)
        m = ERR_BODY.match(r.body)
        self.assertTrue(m, '502 body: %r' % r.body)
        self.assertEqual(m.group(2), b'garbage-1')
        self.assertStatus(h.one_request(p.port, 'GET', '/'), 200, 'after /garbage')

    def test_close_without_answer_502(self):
        p = self.setup_basic()
        r = h.one_request(p.port, 'GET', '/close')
        self.assertStatus(r, 502)
        self.assertTrue(ERR_BODY.match(r.body), r.body)

    def test_close_mid_body_truncates(self):
        p = self.setup_basic()
        c = h.Client(p.port, timeout=5)
        with c:
            c.send(h.build_request('GET', '/close-mid'))
            t0 = time.monotonic()
            try:
                r = c.read_head()
            except h.ConnClosed:
                return   # closed before any head: acceptable (nothing complete was delivered)
            except socket.timeout:
                self.fail('no response head within 5s for /close-mid (hang)')
            if r.status == 502:
                return   # proxy noticed before sending the head: acceptable
            self.assertEqual(r.status, 200, r.summary())
            try:
                body = c.read_to_eof()
            except socket.timeout:
                self.fail('client connection left hanging after the upstream died mid-body '
                          '(%d body bytes buffered)' % len(c.buf))
            self.assertLess(len(body), 1000, 'a truncated upstream body was delivered complete')
            self.assertLess(time.monotonic() - t0, 5)

    def test_close_mid_chunked_client_not_terminated(self):
        # the client must not receive a proper last-chunk for a body the upstream cut short
        p = self.setup_basic()
        with h.Client(p.port, timeout=5) as c:
            c.send(h.build_request('GET', '/close-mid'))
            try:
                data = c.read_to_eof()
            except socket.timeout:
                self.fail('hang after /close-mid')
            head, _, body = data.partition(b'\r\n\r\n')
            if b'chunked' in head.lower():
                self.assertFalse(body.endswith(b'0\r\n\r\n'), 'truncated body re-framed as a '
                                 'complete chunked body')

    def test_response_with_cl_and_te_502(self):
        p = self.setup_basic()
        try:
            r = h.one_request(p.port, 'GET', '/?hdr=Transfer-Encoding:chunked')
        except h.ProtocolError as e:
            self.fail('bad upstream framing passed to the client: %s' % e)
        self.assertFalse(r.has('Content-Length') and r.has('Transfer-Encoding'),
                         'CL and TE passed to the client:\n' + r.summary())
        self.assertStatus(r, 502, 'upstream response with both Content-Length and TE')

    def test_response_with_conflicting_cl_502(self):
        p = self.setup_basic()
        try:
            r = h.one_request(p.port, 'GET', '/?hdr=Content-Length:5')
        except h.ProtocolError as e:
            self.fail('bad upstream framing passed to the client: %s' % e)
        self.assertStatus(r, 502, 'upstream response with two different Content-Length')

    def test_proxy_survives_error_storm(self):
        p = self.setup_basic(timeouts={'upstream_response': '1s'})
        paths = ['/garbage', '/close', '/close-mid', '/?hdr=Content-Length:5', '/bytes/10']
        for i in range(30):
            try:
                h.one_request(p.port, 'GET', paths[i % len(paths)], timeout=5)
            except (h.ProtocolError, OSError):
                pass
        self.assertTrue(p.alive(), 'proxy died')
        self.assertStatus(h.one_request(p.port, 'GET', '/'), 200)


if __name__ == '__main__':
    h.main()
