"""Limits and timeouts (DESIGN §4 bullets 9-11): max_connections pauses accept, client_header is
a total deadline (408), keep-alive idle close, client_body idle timeout (408)."""

import os
import select
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class MaxConnectionsTest(h.ProxyTestCase):

    def test_max_connections_pauses_accept(self):
        p = self.setup_basic(workers=1, limits={'max_connections': 4})
        held = []
        try:
            for i in range(4):
                c = h.Client(p.port)
                self.assertStatus(c.request('GET', '/?held=%d' % i), 200)
                held.append(c)
            fifth = h.Client(p.port, timeout=6)     # the kernel completes the handshake
            held.append(fifth)
            fifth.send(h.build_request('GET', '/?fifth=1'))
            served_early = fifth.readable_within(1.0)
            if served_early:
                try:
                    r = fifth.read_response()
                    what = r.summary(100)
                except Exception as e:
                    what = repr(e)
                self.fail('5th connection served while 4 were open with max_connections 4: %s'
                          % what)
            held[0].close()
            t0 = time.monotonic()
            try:
                r = fifth.read_response()
            except Exception as e:
                self.fail('5th connection not served after one of the 4 closed: %r' % e)
            self.assertStatus(r, 200)
            self.assertLess(time.monotonic() - t0, 3.0)
            # the others are still alive and usable
            for c in held[1:4]:
                self.assertStatus(c.request('GET', '/'), 200)
        finally:
            for c in held:
                c.close()

    def test_over_limit_connections_not_reset(self):
        # beyond max_connections the proxy stops accepting rather than failing connections
        p = self.setup_basic(workers=1, limits={'max_connections': 2})
        a, b = h.Client(p.port), h.Client(p.port)
        try:
            self.assertStatus(a.request('GET', '/'), 200)
            self.assertStatus(b.request('GET', '/'), 200)
            extra = [h.Client(p.port, timeout=8) for _ in range(3)]
            for c in extra:
                c.send(h.build_request('GET', '/'))
            time.sleep(0.5)
            a.close()
            b.close()
            for i, c in enumerate(extra):
                try:
                    self.assertStatus(c.read_response(), 200, 'queued connection %d' % i)
                finally:
                    c.close()
        finally:
            a.close()
            b.close()


class HeaderTimeoutTest(h.ProxyTestCase):

    def setUp(self):
        super().setUp()
        self.p = self.setup_basic(timeouts={'client_header': '1s'})

    def trickle(self, data, interval, give_up):
        """Send data one byte per interval until something is readable or give_up seconds pass.
        Returns (client, seconds since connect when readable or None)."""
        c = h.Client(self.p.port, timeout=5)
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < give_up:
            r, _, _ = select.select([c.sock], [], [], interval)
            if r:
                return c, time.monotonic() - t0
            if i < len(data):
                try:
                    c.send(data[i:i + 1])
                except OSError:
                    return c, time.monotonic() - t0
                i += 1
        return c, None

    def test_header_deadline_is_total(self):
        before = self.b1.stats()['requests']
        data = b'GET / HTTP/1.1\r\nHost: test.local\r\nX-Slow: ' + b'a' * 200
        c, t = self.trickle(data, 0.2, 5.0)
        with c:
            if t is None:
                self.fail('trickling a header byte every 200ms for 5s was never cut: '
                          'client_header 1s must be a total deadline, not an idle timer')
            self.assertLess(t, 2.5, 'cut only after %.2fs with client_header 1s' % t)
            self.assertGreater(t, 0.7, 'cut after %.2fs, before the 1s deadline' % t)
            r = c.read_response()
            self.assertStatus(r, 408)
            self.assertTrue(r.wants_close(), r.summary())
            self.assertClosed(c)
        self.assertEqual(self.b1.stats()['requests'] - before, 1, 'origin got a request')

    def test_header_deadline_partial_head_then_silence(self):
        with h.Client(self.p.port, timeout=5) as c:
            t0 = time.monotonic()
            c.send(b'GET / HTTP/1.1\r\nHost: test.local\r\n')
            try:
                r = c.read_response()
            except socket.timeout:
                self.fail('no 408 within 5s for a stalled header block (client_header 1s)')
            dt = time.monotonic() - t0
            self.assertStatus(r, 408)
            self.assertTrue(0.7 < dt < 2.5, '408 after %.2fs' % dt)
            self.assertClosed(c)

    def test_header_deadline_applies_to_second_request(self):
        # on a keep-alive connection, a slow second header block is cut too
        with h.Client(self.p.port, timeout=5) as c:
            self.assertStatus(c.request('GET', '/'), 200)
            c.send(b'GET /second HTTP/1.1\r\nHost: t')
            t0 = time.monotonic()
            try:
                data = c.read_to_eof()
            except socket.timeout:
                self.fail('partial second request held the connection for 5s')
            self.assertLess(time.monotonic() - t0, 4.0)
            if data:
                self.assertTrue(data.startswith(b'HTTP/1.1 408') or data.startswith(b'HTTP/1.0 408'),
                                'expected 408 or a silent close, got %r' % data[:100])

    def test_fast_header_not_cut(self):
        with h.Client(self.p.port) as c:
            c.send(b'GET / HTTP/1.1\r\n')
            time.sleep(0.5)
            c.send(b'Host: test.local\r\n\r\n')
            self.assertStatus(c.read_response(), 200)

    def test_idle_new_connection_closed(self):
        p = self.setup_extra()
        with h.Client(p.port, timeout=6) as c:
            t0 = time.monotonic()
            try:
                data = c.read_to_eof()
            except socket.timeout:
                self.fail('a connection that never sends a byte was kept for 6s '
                          '(client_header 1s, keepalive 1s)')
            self.assertLess(time.monotonic() - t0, 3.5)
            self.assertTrue(data == b'' or b' 408 ' in data[:20], 'got %r' % data[:100])

    def setup_extra(self):
        b = self.origin('blue', 'bx')
        g = self.origin('green', 'gx')
        return self.proxy(self.config([b], [g], timeouts={'client_header': '1s', 'keepalive': '1s'}))


class KeepAliveTimeoutTest(h.ProxyTestCase):

    def test_keepalive_idle_close(self):
        p = self.setup_basic(timeouts={'keepalive': '1s'})
        with h.Client(p.port, timeout=6) as c:
            self.assertStatus(c.request('GET', '/'), 200)
            t0 = time.monotonic()
            time.sleep(0.4)
            self.assertStatus(c.request('GET', '/'), 200, 'reused within the keepalive window')
            t0 = time.monotonic()
            try:
                data = c.read_to_eof()
            except socket.timeout:
                self.fail('idle keep-alive connection not closed within 6s (keepalive 1s)')
            dt = time.monotonic() - t0
            self.assertEqual(data, b'', 'bytes sent on keep-alive close: %r' % data[:100])
            self.assertTrue(0.7 <= dt <= 3.0, 'closed after %.2fs idle with keepalive 1s' % dt)

    def test_keepalive_default_long(self):
        p = self.setup_basic()
        with h.Client(p.port) as c:
            self.assertStatus(c.request('GET', '/'), 200)
            time.sleep(1.5)
            self.assertStatus(c.request('GET', '/'), 200, 'default keepalive (60s) closed early')


class TimerConfusionTest(h.ProxyTestCase):
    """Each timeout applies only to its own phase: a slow origin or a long streaming exchange is
    not cut by the client-side timers, and an upstream that is paused by back-pressure is not
    'idle'."""

    def setUp(self):
        super().setUp()
        self.p = self.setup_basic(timeouts={'client_header': '1s', 'client_body': '1s',
                                            'keepalive': '1s', 'upstream_response': '1s',
                                            'tunnel': '1s'})

    def test_slow_response_not_cut_by_client_timers(self):
        # upstream_response is 1s here, so keep the origin's delay under it but the whole
        # exchange over the client timers
        with h.Client(self.p.port, timeout=6) as c:
            r = c.request('POST', '/echo?delay=800', body=b'x' * 100)
            self.assertStatus(r, 200)
            time.sleep(0.5)
            r = c.request('GET', '/?delay=800')
            self.assertStatus(r, 200, 'second slow request on the same connection')

    def test_slow_reader_download_longer_than_upstream_response(self):
        n = 24 << 20
        with h.Client(self.p.port, timeout=6) as c:
            c.send(h.build_request('GET', '/bytes/%d' % n))
            r = c.read_head()
            self.assertStatus(r, 200)
            got = len(c.buf)
            c.buf.clear()
            t0 = time.monotonic()
            while got < n:
                slow = time.monotonic() - t0 < 2.5
                d = c.sock.recv(65536 if slow else 1 << 20)
                if not d:
                    break
                got += len(d)
                if slow:
                    time.sleep(0.05)          # ~1.3 MB/s for 2.5s: the proxy must pause upstream
            self.assertEqual(got, n, 'download cut after %d bytes (%.1fs): an upstream paused by '
                             'back-pressure is not an idle one' % (got, time.monotonic() - t0))

    def test_slow_upload_longer_than_upstream_response(self):
        # the body trickles for ~3s (never idle 1s): upstream_response (1s) must count from the
        # end of the request, not from when its head was forwarded
        with h.Client(self.p.port, timeout=8) as c:
            c.send(h.build_request('POST', '/echo', [('Content-Length', '10')]))
            for i in range(10):
                time.sleep(0.3)
                c.send(b'%d' % i)
            r = c.read_response()
            self.assertStatus(r, 200, 'slow upload cut by upstream_response')
            self.assertEqual(r.json()['body_bytes'], 10)

    def test_tunnel_with_steady_traffic_not_cut(self):
        with h.Client(self.p.port, timeout=5) as c:
            c.send(h.build_request('GET', '/ws', [('Upgrade', 'websocket'),
                                                  ('Connection', 'Upgrade')]))
            self.assertStatus(c.read_head(), 101)
            for i in range(8):
                c.send(b'%d' % i)
                self.assertEqual(c.read_exact(1), b'%d' % i, 'tunnel cut at %d (%.1fs)' % (i, i * 0.3))
                time.sleep(0.3)


class BodyTimeoutTest(h.ProxyTestCase):

    def setUp(self):
        super().setUp()
        self.p = self.setup_basic(timeouts={'client_body': '1s'})

    def test_client_body_idle_408(self):
        with h.Client(self.p.port, timeout=6) as c:
            c.send(h.build_request('POST', '/echo', [('Content-Length', '100')]) + b'0123456789')
            t0 = time.monotonic()
            try:
                r = c.read_response()
            except socket.timeout:
                self.fail('stalled body kept for 6s with client_body 1s')
            except h.ConnClosed as e:
                self.fail('stalled body: connection closed without a 408 (%s)' % e)
            dt = time.monotonic() - t0
            self.assertStatus(r, 408)
            self.assertTrue(r.wants_close(), r.summary())
            self.assertTrue(0.7 <= dt <= 3.0, '408 after %.2fs with client_body 1s' % dt)
            self.assertClosed(c)
        self.assertStatus(h.one_request(self.p.port), 200)

    def test_client_body_idle_408_chunked(self):
        with h.Client(self.p.port, timeout=6) as c:
            c.send(h.build_request('POST', '/echo', [('Transfer-Encoding', 'chunked')]) +
                   b'5\r\nhello\r\n')
            try:
                r = c.read_response()
            except socket.timeout:
                self.fail('stalled chunked body kept for 6s with client_body 1s')
            except h.ConnClosed as e:
                self.fail('stalled chunked body: closed without a 408 (%s)' % e)
            self.assertStatus(r, 408)
            self.assertClosed(c)

class BodyIdleNotTotalTest(h.ProxyTestCase):

    def setUp(self):
        super().setUp()
        self.p = self.setup_basic(timeouts={'client_body': '2500ms'})

    def test_client_body_is_idle_not_total(self):
        # 10 bytes, one every 300 ms = 3s in all, never idle for 2.5s: must succeed. The idle
        # timeout gets its own proxy here (2.5s, well above the gaps) so a loaded CI machine
        # stretching a 300 ms sleep cannot make the test lie; the total is still above it.
        with h.Client(self.p.port, timeout=8) as c:
            c.send(h.build_request('POST', '/echo', [('Content-Length', '10')]))
            for i in range(10):
                time.sleep(0.3)
                c.send(b'%d' % i)
            r = c.read_response()
            self.assertStatus(r, 200, 'slow but steady body cut by the idle body timeout')
            self.assertEqual(r.json()['body_bytes'], 10)
            self.assertEqual(r.json()['body_fnv1a'], h.fnv1a64(b'0123456789'))


if __name__ == '__main__':
    h.main()
