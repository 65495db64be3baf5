"""HTTP/1.1 proxying (DESIGN §4 bullets 3 and 4): keep-alive on both sides, HTTP/1.0 clients,
pipelining, body re-framing in both directions, HEAD / 204 / 304, Expect: 100-continue."""

import os
import random
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class KeepAliveTest(h.ProxyTestCase):

    def test_client_keepalive_several_requests(self):
        p = self.setup_basic()
        with h.Client(p.port) as c:
            for i in range(10):
                r = c.request('GET', '/?i=%d' % i)
                self.assertStatus(r, 200, 'request %d on one connection' % i)
                self.assertFalse(r.wants_close(), 'request %d: proxy closes a keep-alive '
                                 'connection:\n%s' % (i, r.summary()))
                self.assertEqual(r.body, b'hello from blue/b1\n')
                self.assertEqual(r.header('X-Origin-Server'), 'b1')
            self.assertFalse(c.readable_within(0.2), 'unexpected bytes or close after responses')

    def test_upstream_keepalive_reused_across_client_connections(self):
        # one worker: one upstream pool, so sequential requests must share one upstream conn
        self.b1 = self.origin('blue', 'b1')
        self.g1 = self.origin('green', 'g1')
        p = self.proxy(self.config([self.b1], [self.g1], workers=1))
        h.one_request(p.port, 'GET', '/warmup')
        time.sleep(0.1)
        before = self.b1.stats()
        n = 0
        for k in range(3):
            with h.Client(p.port) as c:
                for i in range(4):
                    r = c.request('GET', '/?conn=%d&i=%d' % (k, i))
                    self.assertStatus(r, 200)
                    n += 1
            time.sleep(0.05)
        after = self.b1.stats()
        # the stats request itself counts once in each counter
        self.assertEqual(after['requests'] - before['requests'], n + 1)
        new_conns = after['connections_accepted'] - before['connections_accepted'] - 1
        self.assertEqual(new_conns, 0, 'upstream connections not reused: %d new origin '
                         'connections for %d sequential requests (stats %s -> %s)' % (
                             new_conns, n, before, after))

    def test_upstream_keepalive_first_connection_counts_once(self):
        self.b1 = self.origin('blue', 'b1')
        self.g1 = self.origin('green', 'g1')
        p = self.proxy(self.config([self.b1], [self.g1], workers=1))
        before = self.b1.stats()
        for k in range(3):
            with h.Client(p.port) as c:
                for i in range(3):
                    self.assertStatus(c.request('GET', '/'), 200)
        after = self.b1.stats()
        new_conns = after['connections_accepted'] - before['connections_accepted'] - 1
        self.assertEqual(new_conns, 1, '9 sequential requests over 3 client connections opened '
                         '%d upstream connections (want 1)' % new_conns)


class ConcurrencyTest(h.ProxyTestCase):

    def test_many_concurrent_keepalive_connections(self):
        p = self.setup_basic()
        errors = []
        done = [0]
        lock = threading.Lock()

        def work(k):
            try:
                with h.Client(p.port, timeout=10) as c:
                    for i in range(5):
                        r = c.request('GET', '/echo?k=%d&i=%d' % (k, i))
                        if r.status != 200 or r.json()['target'] != '/echo?k=%d&i=%d' % (k, i):
                            errors.append((k, i, r.summary(100)))
                            return
                with lock:
                    done[0] += 1
            except Exception as e:
                errors.append((k, repr(e)))
        ts = [threading.Thread(target=work, args=(k,)) for k in range(100)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(done[0], 100)


class Http10Test(h.ProxyTestCase):

    def test_http10_no_keepalive(self):
        p = self.setup_basic()
        with h.Client(p.port) as c:
            c.send(b'GET / HTTP/1.0\r\n\r\n')
            r = c.read_response()
            self.assertStatus(r, 200)
            self.assertEqual(r.body, b'hello from blue/b1\n')
            self.assertNotIn('chunked', r.tokens('Transfer-Encoding'))
            self.assertNotIn('keep-alive', r.tokens('Connection'),
                             'keep-alive offered to a 1.0 client that did not ask:\n' + r.summary())
            self.assertClosed(c, 2.0, 'after an HTTP/1.0 response without keep-alive')

    def test_http10_goes_upstream_as_11(self):
        p = self.setup_basic()
        with h.Client(p.port) as c:
            c.send(b'GET /echo HTTP/1.0\r\nHost: test.local\r\n\r\n')
            r = c.read_response()
        self.assertStatus(r, 200)
        self.assertEqual(r.json()['version'], '1.1', 'request forwarded as HTTP/%s' % r.json()['version'])

    def test_http10_keepalive_when_asked(self):
        p = self.setup_basic()
        with h.Client(p.port) as c:
            c.send(b'GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n')
            r = c.read_response()
            self.assertStatus(r, 200)
            self.assertEqual(r.body, b'hello from blue/b1\n')
            self.assertFalse(r.close_delimited and 'keep-alive' in r.tokens('Connection'))
            if 'keep-alive' in r.tokens('Connection'):
                # promised keep-alive: must be able to send a second request
                self.assertTrue(r.has('Content-Length'), 'keep-alive 1.0 response without '
                                'Content-Length:\n' + r.summary())
                c.send(b'GET /?second HTTP/1.0\r\nConnection: keep-alive\r\n\r\n')
                r2 = c.read_response()
                self.assertStatus(r2, 200, 'second 1.0 keep-alive request')
            else:
                self.assertClosed(c, 2.0, '1.0 response without Connection: keep-alive must close')

    def test_http10_chunked_origin_response_unchunked(self):
        p = self.setup_basic()
        with h.Client(p.port) as c:
            c.send(b'GET /bytes/100000?chunked=1&chunk=3000 HTTP/1.0\r\n\r\n')
            r = c.read_response()
            self.assertStatus(r, 200)
            self.assertFalse(r.chunked, 'chunked response sent to an HTTP/1.0 client:\n' + r.summary())
            self.assertEqual(len(r.body), 100000)
            self.assertEqual(r.body, h.pattern(100000))
            if not r.close_delimited:
                self.assertClosed(c, 2.0)

    def test_http10_post_body(self):
        p = self.setup_basic()
        body = os.urandom(5000)
        with h.Client(p.port) as c:
            c.send(b'POST /echo HTTP/1.0\r\nContent-Length: 5000\r\n\r\n' + body)
            r = c.read_response()
        self.assertStatus(r, 200)
        j = r.json()
        self.assertEqual(j['body_bytes'], 5000)
        self.assertEqual(j['body_fnv1a'], h.fnv1a64(body))


class MethodsTest(h.ProxyTestCase):

    def setUp(self):
        super().setUp()
        self.p = self.setup_basic()

    def test_methods_forwarded(self):
        with h.Client(self.p.port) as c:
            for m in ('PUT', 'DELETE', 'PATCH', 'OPTIONS', 'PURGE'):
                body = b'body-of-' + m.encode()
                r = c.request(m, '/echo', body=body)
                self.assertStatus(r, 200, m)
                self.assertEqual(r.json()['method'], m)
                self.assertEqual(r.json()['body_bytes'], len(body))

    def test_get_with_body(self):
        with h.Client(self.p.port) as c:
            r = c.request('GET', '/echo', body=b'0123')
            self.assertStatus(r, 200)
            self.assertEqual(r.json()['body_bytes'], 4)
            self.assertStatus(c.request('GET', '/'), 200)

    def test_absolute_form_target(self):
        # RFC 9112 3.2.2: a server MUST accept the absolute-form
        with h.Client(self.p.port) as c:
            r = c.request('GET', 'http://test.local/echo?abs=1')
            self.assertStatus(r, 200, 'absolute-form request target')
            self.assertIn(r.json()['target'], ('/echo?abs=1', 'http://test.local/echo?abs=1'))

    def test_http10_expect_gets_no_interim(self):
        # a server MUST NOT send 1xx to an HTTP/1.0 client (RFC 9110 15.2)
        with h.Client(self.p.port) as c:
            c.send(b'POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello')
            r = c.read_response(stop_at_1xx=True)
            self.assertNotEqual(r.status, 100, '100 Continue sent to an HTTP/1.0 client')
            self.assertStatus(r, 200)
            self.assertEqual(r.json()['body_bytes'], 5)


class PipelineTest(h.ProxyTestCase):

    def test_pipelining_in_order(self):
        p = self.setup_basic()
        with h.Client(p.port) as c:
            c.send(h.build_request('GET', '/echo?delay=400&n=1') +
                   h.build_request('GET', '/echo?n=2') +
                   h.build_request('GET', '/echo?n=3'))
            targets = []
            for i in range(3):
                r = c.read_response()
                self.assertStatus(r, 200, 'pipelined response %d' % (i + 1))
                targets.append(r.json()['target'])
        self.assertEqual(targets, ['/echo?delay=400&n=1', '/echo?n=2', '/echo?n=3'],
                         'pipelined responses out of order')

    def test_pipelining_deep(self):
        p = self.setup_basic()
        reqs = b''.join(h.build_request('POST', '/echo?n=%d' % i, body=b'b' * (i * 37))
                        for i in range(60))
        with h.Client(p.port, timeout=10) as c:
            c.send(reqs)
            for i in range(60):
                r = c.read_response()
                self.assertStatus(r, 200, 'pipelined response %d' % i)
                self.assertEqual(r.json()['target'], '/echo?n=%d' % i)
                self.assertEqual(r.json()['body_bytes'], i * 37)

    def test_pipelining_behind_big_response(self):
        # the first response is big and the client does not read for a while: the later
        # requests must wait (back-pressure), then all arrive in order
        p = self.setup_basic()
        n = 8 << 20
        with h.Client(p.port, timeout=10) as c:
            c.send(h.build_request('GET', '/bytes/%d' % n) +
                   h.build_request('GET', '/echo?n=2') + h.build_request('GET', '/bytes/7'))
            time.sleep(1.0)
            r = c.read_response()
            self.assertEqual(len(r.body), n)
            self.assertTrue(r.body == h.pattern(n), 'big pipelined body corrupted')
            r = c.read_response()
            self.assertEqual(r.json()['target'], '/echo?n=2')
            self.assertEqual(c.read_response().body, b'abcdefg')

    def test_pipelining_with_bodies_and_head(self):
        p = self.setup_basic()
        b1 = os.urandom(3000)
        b2 = os.urandom(7)
        with h.Client(p.port) as c:
            c.send(h.build_request('POST', '/echo?delay=200&n=1', body=b1) +
                   h.build_request('HEAD', '/bytes/500') +
                   h.build_request('POST', '/echo?n=3', [('Transfer-Encoding', 'chunked')],
                                   h.chunked_body(b2, [3])) +
                   h.build_request('GET', '/status/204') +
                   h.build_request('GET', '/bytes/10'))
            r = c.read_response()
            self.assertStatus(r, 200)
            self.assertEqual(r.json()['body_fnv1a'], h.fnv1a64(b1))
            r = c.read_response('HEAD')
            self.assertStatus(r, 200)
            self.assertEqual(r.header('Content-Length'), '500')
            r = c.read_response()
            self.assertEqual(r.json()['body_bytes'], 7)
            self.assertEqual(r.json()['target'], '/echo?n=3')
            r = c.read_response()
            self.assertStatus(r, 204)
            r = c.read_response()
            self.assertEqual(r.body, b'abcdefghij')


class BodyTest(h.ProxyTestCase):

    def setUp(self):
        super().setUp()
        self.p = self.setup_basic()

    def test_content_length_upload(self):
        body = os.urandom(200000)
        with h.Client(self.p.port) as c:
            r = c.request('POST', '/echo', body=body)
            self.assertStatus(r, 200)
            j = r.json()
            self.assertEqual(j['body_bytes'], len(body))
            self.assertEqual(j['body_fnv1a'], h.fnv1a64(body))
            self.assertEqual(j['method'], 'POST')
            # still usable afterwards
            self.assertStatus(c.request('GET', '/'), 200)

    def test_chunked_upload(self):
        rnd = random.Random(7)
        body = bytes(rnd.getrandbits(8) for _ in range(150000))
        enc = h.chunked_body(body, [1, 17, 4096, 65536, 3, 10000])
        with h.Client(self.p.port) as c:
            c.send(h.build_request('POST', '/echo', [('Transfer-Encoding', 'chunked')]))
            for i in range(0, len(enc), 7000):      # in several writes
                c.send(enc[i:i + 7000])
            r = c.read_response()
            self.assertStatus(r, 200)
            j = r.json()
            self.assertEqual(j['body_bytes'], len(body))
            self.assertEqual(j['body_fnv1a'], h.fnv1a64(body))
            names = [k.lower() for k, _ in j['headers']]
            self.assertTrue('transfer-encoding' in names or 'content-length' in names,
                            'forwarded body without framing headers: %r' % j['headers'])
            self.assertFalse('transfer-encoding' in names and 'content-length' in names,
                             'forwarded both CL and TE: %r' % j['headers'])
            self.assertStatus(c.request('GET', '/'), 200, 'after a chunked upload')

    def test_chunked_upload_with_extensions_and_trailer(self):
        raw = (b'5;ext=1\r\nhello\r\n6;name="v"\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n')
        with h.Client(self.p.port) as c:
            c.send(h.build_request('POST', '/echo', [('Transfer-Encoding', 'chunked')]) + raw)
            r = c.read_response()
            self.assertStatus(r, 200)
            self.assertEqual(r.json()['body_bytes'], 11)
            self.assertEqual(r.json()['body_fnv1a'], h.fnv1a64(b'hello world'))
            self.assertStatus(c.request('GET', '/'), 200, 'after a chunked upload with trailer')

    def test_empty_post(self):
        r = h.one_request(self.p.port, 'POST', '/echo', body=b'')
        self.assertStatus(r, 200)
        self.assertEqual(r.json()['body_bytes'], 0)

    def test_chunked_download(self):
        with h.Client(self.p.port) as c:
            r = c.request('GET', '/bytes/300000?chunked=1&chunk=5000')
            self.assertStatus(r, 200)
            self.assertEqual(len(r.body), 300000)
            self.assertEqual(r.body, h.pattern(300000))
            if not r.close_delimited:
                self.assertStatus(c.request('GET', '/'), 200, 'after a chunked download')

    def test_content_length_download(self):
        with h.Client(self.p.port) as c:
            r = c.request('GET', '/bytes/250001')
            self.assertStatus(r, 200)
            self.assertEqual(r.header('Content-Length'), '250001')
            self.assertEqual(r.body, h.pattern(250001))
            self.assertStatus(c.request('GET', '/'), 200)

    def test_close_delimited_download_http11(self):
        with h.Client(self.p.port) as c:
            r = c.request('GET', '/bytes/80000?close=1')
            self.assertStatus(r, 200)
            self.assertEqual(len(r.body), 80000, 'close-delimited body length')
            self.assertEqual(r.body, h.pattern(80000))
            if r.close_delimited:
                self.assertTrue(c.eof)
            else:
                # re-framed (chunked) for the 1.1 client: the connection may live on
                self.assertTrue(r.chunked, r.summary())
                if not r.wants_close():
                    self.assertStatus(c.request('GET', '/'), 200, 'after a re-framed download')

    def test_close_delimited_download_http10(self):
        with h.Client(self.p.port) as c:
            c.send(b'GET /bytes/80000?close=1 HTTP/1.0\r\n\r\n')
            r = c.read_response()
            self.assertStatus(r, 200)
            self.assertFalse(r.chunked, 'chunked to an HTTP/1.0 client')
            self.assertEqual(r.body, h.pattern(80000))
            self.assertClosed(c, 2.0)

    def test_close_delimited_not_truncated_by_keepalive_client(self):
        # several in a row on fresh connections: the tail of the body must never be lost
        for i in range(5):
            r = h.one_request(self.p.port, 'GET', '/bytes/%d?close=1' % (1000 + i * 7777))
            self.assertEqual(r.body, h.pattern(1000 + i * 7777))


class NoBodyTest(h.ProxyTestCase):

    def setUp(self):
        super().setUp()
        self.p = self.setup_basic()

    def test_head(self):
        with h.Client(self.p.port) as c:
            r = c.request('HEAD', '/bytes/1000')
            self.assertStatus(r, 200)
            self.assertEqual(r.header('Content-Length'), '1000', 'HEAD keeps Content-Length')
            # no body bytes may follow: the next response must parse cleanly
            r2 = c.request('GET', '/bytes/5')
            self.assertStatus(r2, 200)
            self.assertEqual(r2.body, b'abcde')

    def test_head_chunked(self):
        with h.Client(self.p.port) as c:
            r = c.request('HEAD', '/bytes/1000?chunked=1')
            self.assertStatus(r, 200)
            self.assertFalse(c.readable_within(0.3), 'bytes after a HEAD response: %r' % bytes(c.buf))
            r2 = c.request('GET', '/bytes/5')
            self.assertEqual(r2.body, b'abcde')

    def test_head_http10(self):
        with h.Client(self.p.port) as c:
            c.send(b'HEAD /bytes/1000 HTTP/1.0\r\n\r\n')
            r = c.read_response('HEAD')
            self.assertStatus(r, 200)
            self.assertClosed(c, 2.0, 'HEAD from a 1.0 client: no body, then close')

    def test_204(self):
        with h.Client(self.p.port) as c:
            r = c.request('GET', '/status/204')
            self.assertStatus(r, 204)
            self.assertFalse(r.has('Transfer-Encoding'), '204 with Transfer-Encoding:\n' + r.summary())
            cl = r.header('Content-Length')
            self.assertIn(cl, (None, '0'), '204 with Content-Length %r' % cl)
            r2 = c.request('GET', '/bytes/3')
            self.assertEqual(r2.body, b'abc', 'body bytes leaked after a 204')

    def test_304(self):
        with h.Client(self.p.port) as c:
            r = c.request('GET', '/status/304', [('If-None-Match', '"x"')])
            self.assertStatus(r, 304)
            self.assertFalse(r.has('Transfer-Encoding'), '304 with Transfer-Encoding:\n' + r.summary())
            self.assertFalse(c.readable_within(0.3), 'bytes after a 304: %r' % bytes(c.buf))
            r2 = c.request('GET', '/bytes/3')
            self.assertEqual(r2.body, b'abc', 'body bytes leaked after a 304')

    def test_other_statuses_pass_through(self):
        with h.Client(self.p.port) as c:
            for st in (201, 302, 404, 418, 500, 503):
                r = c.request('GET', '/status/%d' % st)
                self.assertStatus(r, st, 'origin status passes through')
                self.assertEqual(r.body, b'status %d from blue/b1\n' % st)


class ExpectContinueTest(h.ProxyTestCase):

    def setUp(self):
        super().setUp()
        self.p = self.setup_basic()

    def test_expect_100_continue(self):
        body = os.urandom(20000)
        with h.Client(self.p.port) as c:
            c.send(h.build_request('POST', '/echo', [('Expect', '100-continue'),
                                                     ('Content-Length', str(len(body)))]))
            c.settimeout(5)
            try:
                interim = c.read_response(stop_at_1xx=True)
            except Exception as e:
                self.fail('no 100 Continue before the body was sent: %r' % e)
            self.assertEqual(interim.status, 100, 'expected 100 Continue first, got\n' +
                             interim.summary())
            c.send(body)
            r = c.read_response()
            self.assertStatus(r, 200)
            self.assertEqual(r.json()['body_bytes'], len(body))
            self.assertEqual(r.json()['body_fnv1a'], h.fnv1a64(body))
            self.assertStatus(c.request('GET', '/'), 200, 'after the 100-continue exchange')

    def test_expect_100_continue_chunked(self):
        body = b'x' * 10000
        with h.Client(self.p.port) as c:
            c.send(h.build_request('POST', '/echo', [('Expect', '100-continue'),
                                                     ('Transfer-Encoding', 'chunked')]))
            interim = c.read_response(stop_at_1xx=True)
            self.assertEqual(interim.status, 100, interim.summary())
            c.send(h.chunked_body(body, [4000]))
            r = c.read_response()
            self.assertStatus(r, 200)
            self.assertEqual(r.json()['body_bytes'], len(body))

    def test_expect_100_continue_final_status_without_body(self):
        # the origin answers 413-like statuses early? here: a 404 target with Expect; the client
        # must get 100 then the final answer, or the final answer directly, never a hang
        with h.Client(self.p.port) as c:
            c.send(h.build_request('POST', '/status/404', [('Expect', '100-continue'),
                                                           ('Content-Length', '10')]))
            r = c.read_response(stop_at_1xx=True)
            if r.status == 100:
                c.send(b'0123456789')
                r = c.read_response()
            self.assertStatus(r, 404)


if __name__ == '__main__':
    h.main()
