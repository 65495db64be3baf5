"""Request framing rejections (DESIGN §4 bullet 2): each malformed or over-limit request gets the
right status with `Connection: close`, the connection is then closed, and the origin receives
nothing at all."""

import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

H = b'Host: test.local\r\n'


class FramingRejectionTest(h.ProxyTestCase):

    @classmethod
    def limits(cls):
        return {'max_header_bytes': '4k', 'max_headers': 20, 'max_uri_bytes': '1k',
                'max_body_bytes': '1k'}

    def setUp(self):
        super().setUp()
        self.p = self.setup_basic(limits=self.limits())

    def rejected(self, raw, status, what, send_after=None):
        """Send raw bytes; expect `status`, Connection: close, then EOF; origin untouched."""
        before = self.b1.stats()['requests']
        before_g = self.g1.stats()['requests']
        c = h.Client(self.p.port)
        try:
            c.send(raw)
            if send_after is not None:
                time.sleep(0.05)
                try:
                    c.send(send_after)
                except OSError:
                    pass
            try:
                r = c.read_response()
            except h.ProtocolError as e:
                self.fail('%s: no complete response: %s (sent %r)' % (what, e, raw[:200]))
            if r.status != status:
                self.fail('%s: expected %d, got %d\n%s\nsent: %r' % (
                    what, status, r.status, r.summary(), raw[:300]))
            self.assertTrue(r.wants_close(), '%s: %d response lacks Connection: close\n%s' % (
                what, status, r.summary()))
            self.assertClosed(c, 2.0, '(%s)' % what)
        finally:
            c.close()
        time.sleep(0.05)     # anything forwarded asynchronously would have arrived by now
        after = self.b1.stats()['requests']
        after_g = self.g1.stats()['requests']
        # +1: the stats request counts itself
        self.assertEqual(after - before, 1, '%s: the origin received %d request(s)' % (
            what, after - before - 1))
        self.assertEqual(after_g - before_g, 1, '%s: green received a request' % what)
        # the proxy is still fine afterwards
        ok = h.one_request(self.p.port, 'GET', '/')
        self.assertStatus(ok, 200, 'after %s' % what)

    # -- 400 ------------------------------------------------------------------------------

    def test_content_length_and_transfer_encoding(self):
        self.rejected(b'POST /echo HTTP/1.1\r\n' + H +
                      b'Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
                      400, 'CL + TE')

    def test_transfer_encoding_and_content_length(self):
        self.rejected(b'POST /echo HTTP/1.1\r\n' + H +
                      b'Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n',
                      400, 'TE + CL')

    def test_differing_duplicate_content_length(self):
        self.rejected(b'POST /echo HTTP/1.1\r\n' + H +
                      b'Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!',
                      400, 'differing duplicate Content-Length')

    def test_content_length_list(self):
        self.rejected(b'POST /echo HTTP/1.1\r\n' + H + b'Content-Length: 5, 6\r\n\r\nhello!',
                      400, 'Content-Length: 5, 6')

    def test_content_length_not_a_number(self):
        self.rejected(b'POST /echo HTTP/1.1\r\n' + H + b'Content-Length: +5\r\n\r\nhello',
                      400, 'Content-Length: +5')

    def test_te_final_coding_not_chunked(self):
        self.rejected(b'POST /echo HTTP/1.1\r\n' + H +
                      b'Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n',
                      400, 'TE: chunked, gzip')

    def test_te_gzip_only(self):
        self.rejected(b'POST /echo HTTP/1.1\r\n' + H + b'Transfer-Encoding: gzip\r\n\r\nabc',
                      400, 'TE: gzip')

    def test_invalid_header_name_space(self):
        self.rejected(b'GET / HTTP/1.1\r\n' + H + b'X-Bad Name: 1\r\n\r\n', 400,
                      'space in header name')

    def test_whitespace_before_colon(self):
        self.rejected(b'GET / HTTP/1.1\r\n' + H + b'X-Foo : 1\r\n\r\n', 400,
                      'whitespace between name and colon')

    def test_invalid_header_name_char(self):
        self.rejected(b'GET / HTTP/1.1\r\n' + H + b'X-Foo@: 1\r\n\r\n', 400,
                      '@ in header name')

    def test_invalid_header_value_ctl(self):
        self.rejected(b'GET / HTTP/1.1\r\n' + H + b'X-Foo: a\x01b\r\n\r\n', 400,
                      'control char in header value')

    def test_invalid_header_value_nul(self):
        self.rejected(b'GET / HTTP/1.1\r\n' + H + b'X-Foo: a\x00b\r\n\r\n', 400,
                      'NUL in header value')

    def test_bare_cr_in_value(self):
        self.rejected(b'GET / HTTP/1.1\r\n' + H + b'X-Foo: a\rb\r\n\r\n', 400,
                      'bare CR in header value')

    def test_bare_cr_line_ending(self):
        self.rejected(b'GET / HTTP/1.1\r\nHost: test.local\rX-Foo: 1\r\n\r\n', 400,
                      'bare CR as a line ending')

    def test_obs_fold(self):
        self.rejected(b'GET / HTTP/1.1\r\n' + H + b'X-Foo: a\r\n  folded\r\n\r\n', 400,
                      'obs-fold')

    def test_missing_host_http11(self):
        self.rejected(b'GET / HTTP/1.1\r\nX-Foo: 1\r\n\r\n', 400, 'HTTP/1.1 without Host')

    def test_multiple_host(self):
        self.rejected(b'GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n', 400,
                      'two Host headers')

    def test_garbage_request_line(self):
        self.rejected(b'THIS IS NOT HTTP\r\n\r\n', 400, 'garbage request line')

    def test_bad_chunk_size(self):
        # the head is fine, so it may already be forwarded; only status and close are checked
        c = h.Client(self.p.port)
        try:
            c.send(b'POST /echo HTTP/1.1\r\n' + H + b'Transfer-Encoding: chunked\r\n\r\n'
                   b'zz\r\nhello\r\n0\r\n\r\n')
            try:
                r = c.read_response()
            except h.ConnClosed:
                return     # closing without an answer is acceptable once the body went bad
            self.assertIn(r.status, (400, 502), r.summary())
            self.assertTrue(r.wants_close(), r.summary())
            self.assertClosed(c)
        finally:
            c.close()

    # -- limits ---------------------------------------------------------------------------

    def test_header_block_too_big_431(self):
        self.rejected(b'GET / HTTP/1.1\r\n' + H + b'X-Big: ' + b'x' * 6000 + b'\r\n\r\n', 431,
                      'header block of 6 KB over max_header_bytes 4k')

    def test_header_block_just_under_limit_ok(self):
        c = h.Client(self.p.port)
        with c:
            r = c.request('GET', '/', [('X-Big', 'x' * 3000)])
        self.assertStatus(r, 200, '3000-byte header under a 4k limit')

    def test_too_many_headers_431(self):
        hs = b''.join(b'X-H%d: v\r\n' % i for i in range(30))
        self.rejected(b'GET / HTTP/1.1\r\n' + H + hs + b'\r\n', 431, '30 headers over max_headers 20')

    def test_uri_too_long_414(self):
        self.rejected(b'GET /' + b'a' * 2000 + b' HTTP/1.1\r\n' + H + b'\r\n', 414,
                      'request line of 2 KB over max_uri_bytes 1k')

    def test_body_too_big_413_by_content_length(self):
        # only the head is sent: the proxy must answer from Content-Length alone
        self.rejected(b'POST /echo HTTP/1.1\r\n' + H + b'Content-Length: 2000\r\n\r\n', 413,
                      'Content-Length 2000 over max_body_bytes 1k')

    def test_body_at_limit_ok(self):
        body = b'z' * 1024
        r = h.one_request(self.p.port, 'POST', '/echo', body=body)
        self.assertStatus(r, 200, 'body of exactly max_body_bytes')
        self.assertEqual(r.json()['body_bytes'], 1024)

    def test_chunked_body_over_limit(self):
        # no Content-Length to check up front: the proxy must still stop it (413 if nothing was
        # answered yet) and close; the origin must never get a complete 4 KB body
        c = h.Client(self.p.port)
        try:
            c.send(b'POST /echo HTTP/1.1\r\n' + H + b'Transfer-Encoding: chunked\r\n\r\n')
            try:
                for _ in range(4):
                    c.send(b'400\r\n' + b'q' * 1024 + b'\r\n')
                    time.sleep(0.02)
                c.send(b'0\r\n\r\n')
            except OSError:
                pass
            try:
                r = c.read_response()
            except h.ConnClosed:
                r = None
            if r is not None:
                if r.status == 200:
                    self.fail('chunked body of 4 KB accepted over max_body_bytes 1k:\n' + r.summary())
                self.assertEqual(r.status, 413, r.summary())
                self.assertTrue(r.wants_close(), r.summary())
            self.assertClosed(c)
        finally:
            c.close()

    def test_header_count_boundary(self):
        # max_headers 20: exactly 20 header lines (Host included) pass, 21 are refused
        with h.Client(self.p.port) as c:
            r = c.request('GET', '/', [('X-H%d' % i, 'v') for i in range(19)])
            self.assertStatus(r, 200, '20 headers with max_headers 20')
        self.rejected(b'GET / HTTP/1.1\r\n' + H + b''.join(b'X-H%d: v\r\n' % i for i in range(20)) +
                      b'\r\n', 431, '21 headers with max_headers 20')

    def test_body_too_big_with_expect_gets_no_100(self):
        c = h.Client(self.p.port)
        with c:
            c.send(b'POST /echo HTTP/1.1\r\n' + H + b'Expect: 100-continue\r\n'
                   b'Content-Length: 5000\r\n\r\n')
            r = c.read_response()
            self.assertStatus(r, 413)
            self.assertEqual(r.interim, [], 'sent 100 Continue for a body it then refused')
            self.assertTrue(r.wants_close())
            self.assertClosed(c)

    def test_pipelined_good_then_bad(self):
        # the good request is answered in order, then the bad one is refused and the
        # connection closed; only the good one reaches the origin
        before = self.b1.stats()['requests']
        with h.Client(self.p.port) as c:
            c.send(b'GET /echo?first HTTP/1.1\r\n' + H + b'\r\n' +
                   b'POST /echo HTTP/1.1\r\n' + H + b'Content-Length: 1\r\n'
                   b'Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n')
            r1 = c.read_response()
            self.assertStatus(r1, 200, 'first pipelined request')
            self.assertEqual(r1.json()['target'], '/echo?first')
            r2 = c.read_response()
            self.assertStatus(r2, 400, 'second pipelined request (CL + TE)')
            self.assertTrue(r2.wants_close())
            self.assertClosed(c)
        time.sleep(0.05)
        self.assertEqual(self.b1.stats()['requests'] - before, 2, 'origin requests')

    def test_smuggled_request_in_chunked_body_not_forwarded_as_request(self):
        # TE.CL style: the body contains what looks like a second request; it must reach the
        # origin as body bytes of the one request, never as a separate request
        before = self.b1.stats()['requests']
        inner = b'GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n'
        body = h.chunked_body(inner, [len(inner)])
        with h.Client(self.p.port) as c:
            c.send(b'POST /echo HTTP/1.1\r\n' + H + b'Transfer-Encoding: chunked\r\n\r\n' + body)
            r = c.read_response()
            self.assertStatus(r, 200)
            self.assertEqual(r.json()['body_bytes'], len(inner))
            self.assertFalse(c.readable_within(0.3), 'extra response: %r' % bytes(c.buf[:100]))
        time.sleep(0.05)
        self.assertEqual(self.b1.stats()['requests'] - before, 2)

    def test_bare_lf_in_chunked_framing(self):
        # chunk lines ended by a bare LF are a smuggling vector: refuse (400) or close
        c = h.Client(self.p.port)
        with c:
            c.send(b'POST /echo HTTP/1.1\r\n' + H + b'Transfer-Encoding: chunked\r\n\r\n'
                   b'5\nhello\n0\n\n')
            try:
                r = c.read_response()
            except (h.ConnClosed, OSError):
                return
            if r.status == 200:
                self.fail('chunked body with bare-LF framing accepted:\n' + r.summary())
            self.assertIn(r.status, (400, 502), r.summary())
            self.assertClosed(c)

    def test_connection_close_pipelined_stops(self):
        before = self.b1.stats()['requests']
        with h.Client(self.p.port) as c:
            c.send(b'GET /echo?a HTTP/1.1\r\n' + H + b'Connection: close\r\n\r\n'
                   b'GET /echo?b HTTP/1.1\r\n' + H + b'\r\n')
            r = c.read_response()
            self.assertStatus(r, 200)
            self.assertTrue(r.wants_close(), r.summary())
            self.assertClosed(c, 2.0, 'after a Connection: close request')
        time.sleep(0.05)
        self.assertEqual(self.b1.stats()['requests'] - before, 2,
                         'the request after Connection: close reached the origin')

    # -- rejected with unread data: the answer must survive the close (lingering close) -----

    def rejected_with_flood(self, head, flood, status, what):
        c = h.Client(self.p.port)
        with c:
            c.send(head)
            try:
                c.sock.settimeout(2)
                c.sock.sendall(flood)
            except OSError:
                pass          # the proxy stopped reading / closed: fine
            c.sock.settimeout(5)
            try:
                r = c.read_response()
            except h.ConnClosed as e:
                self.fail('%s: the %d answer was lost (connection %s before it could be read: '
                          'close without lingering?)' % (what, status, e))
            self.assertStatus(r, status, what)

    def test_413_with_body_already_sent(self):
        self.rejected_with_flood(b'POST /echo HTTP/1.1\r\n' + H + b'Content-Length: 200000\r\n\r\n',
                                 b'b' * 200000, 413, '413 with a 200 KB body in flight')

    def test_431_with_huge_header_block(self):
        self.rejected_with_flood(b'GET / HTTP/1.1\r\n' + H,
                                 b''.join(b'X-Fill-%d: %s\r\n' % (i, b'f' * 900) for i in range(200)),
                                 431, '431 with 180 KB of headers in flight')

    def test_400_followed_by_more_data(self):
        self.rejected_with_flood(b'POST /echo HTTP/1.1\r\n' + H +
                                 b'Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n',
                                 b'z' * 150000, 400, '400 (CL+TE) with 150 KB more in flight')

    def test_mutated_requests_never_crash(self):
        # 300 seeded mutations of valid requests: every answer parses as HTTP (or the connection
        # closes or waits for more), and the proxy stays up
        import random
        rnd = random.Random(1234)
        seeds = [
            h.build_request('GET', '/echo?a=1', [('X-A', 'b'), ('Cookie', 'sy_bucket=5')]),
            h.build_request('POST', '/echo', [('Transfer-Encoding', 'chunked')],
                            h.chunked_body(b'hello world', [3, 4])),
            h.build_request('POST', '/echo', body=b'0123456789'),
            h.build_request('GET', '/ws', [('Upgrade', 'websocket'), ('Connection', 'Upgrade')]),
        ]
        specials = [b'\r', b'\n', b'\x00', b' ', b':', b'\t', b'\x7f', b'\xff', b',', b'0']
        bad = []
        cases = []
        for n in range(300):
            data = bytearray(rnd.choice(seeds))
            for _ in range(rnd.randint(1, 4)):
                if not data:
                    break
                op = rnd.randrange(4)
                i = rnd.randrange(len(data))
                if op == 0:
                    data[i] = rnd.randrange(256)
                elif op == 1:
                    data[i:i] = rnd.choice(specials)
                elif op == 2:
                    del data[i]
                else:
                    data = data[:i]
            cases.append(bytes(data))
        for start in range(0, len(cases), 50):
            batch = []
            for data in cases[start:start + 50]:
                c = h.Client(self.p.port, timeout=2)
                try:
                    c.send(data)
                except OSError:
                    pass
                batch.append((c, data))
            time.sleep(0.3)
            for c, data in batch:
                c.settimeout(0.05)       # whatever was answered is here by now
                try:
                    while True:
                        r = c.read_response()
                        if r.status == 101:
                            break
                except h.ConnClosed:
                    pass
                except h.ProtocolError as e:
                    bad.append((data, 'unparsable answer: %s' % e))
                except OSError:
                    pass      # an incomplete request legitimately waits for more
                finally:
                    c.close()
            if not self.p.alive():
                self.fail('proxy died in mutation batch %d: %r' % (start, cases[start:start + 50]))
        self.assertEqual(bad[:5], [], '%d problem(s)' % len(bad))
        self.assertStatus(h.one_request(self.p.port), 200)

    # -- version --------------------------------------------------------------------------

    def test_http2_version_505(self):
        self.rejected(b'GET / HTTP/2.0\r\n' + H + b'\r\n', 505, 'HTTP/2.0 request line')

    def test_http3_version_505(self):
        self.rejected(b'GET / HTTP/3.0\r\n' + H + b'\r\n', 505, 'HTTP/3.0 request line')


if __name__ == '__main__':
    h.main()
