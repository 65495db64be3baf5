"""Header handling (DESIGN §4 bullet 5): hop-by-hop removal in both directions (including headers
named by Connection), X-Forwarded-For appended, X-Forwarded-Proto / -Host, X-Request-Id kept,
replaced or generated."""

import os
import re
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

HEX32 = re.compile(r'^[0-9a-f]{32}$')
HOP = ['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade']


def hdrs(echo, name):
    n = name.lower()
    return [v for k, v in echo['headers'] if k.lower() == n]


class HeaderTest(h.ProxyTestCase):

    def setUp(self):
        super().setUp()
        self.p = self.setup_basic()

    def echo(self, headers, target='/echo', version='HTTP/1.1', source=None):
        r = h.one_request(self.p.port, 'GET', target, headers=headers, version=version,
                          source=source)
        self.assertStatus(r, 200)
        return r, r.json()

    # -- hop-by-hop, request side ----------------------------------------------------------

    def test_request_hop_by_hop_removed(self):
        r, j = self.echo([('Connection', 'keep-alive, X-Custom-Hop, x-other-hop'),
                          ('X-Custom-Hop', '1'),
                          ('X-Other-Hop', '2'),
                          ('Keep-Alive', 'timeout=5'),
                          ('Proxy-Connection', 'keep-alive'),
                          ('TE', 'trailers'),
                          ('Trailer', 'X-T'),
                          ('Upgrade', 'foo/1'),
                          ('X-Keep-Me', 'yes')])
        names = [k.lower() for k, _ in j['headers']]
        for bad in ('x-custom-hop', 'x-other-hop', 'keep-alive', 'proxy-connection', 'te',
                    'trailer', 'upgrade'):
            self.assertNotIn(bad, names, 'hop-by-hop header %r forwarded upstream: %r' % (
                bad, j['headers']))
        for v in hdrs(j, 'Connection'):
            self.assertNotIn('x-custom-hop', v.lower(), 'client Connection tokens forwarded: %r' % v)
        self.assertEqual(hdrs(j, 'X-Keep-Me'), ['yes'])

    def test_request_connection_header_case_and_repeats(self):
        r, j = self.echo([('connection', 'X-A'), ('CONNECTION', 'x-b'),
                          ('x-a', '1'), ('X-B', '2'), ('X-C', '3')])
        names = [k.lower() for k, _ in j['headers']]
        self.assertNotIn('x-a', names, j['headers'])
        self.assertNotIn('x-b', names, j['headers'])
        self.assertIn('x-c', names)

    def test_end_to_end_headers_kept_in_order(self):
        r, j = self.echo([('X-One', '1'), ('X-Two', 'a, b'), ('X-One', '2'),
                          ('Cookie', 'a=1; b=2'), ('Authorization', 'Bearer t')])
        got = [(k.lower(), v) for k, v in j['headers'] if k.lower() in
               ('x-one', 'x-two', 'cookie', 'authorization')]
        self.assertEqual(got, [('x-one', '1'), ('x-two', 'a, b'), ('x-one', '2'),
                               ('cookie', 'a=1; b=2'), ('authorization', 'Bearer t')])
        self.assertEqual(hdrs(j, 'Host'), ['test.local'], 'Host not passed through')
        self.assertEqual(j['target'], '/echo')

    def test_target_passed_verbatim(self):
        r, j = self.echo([], target='/echo?a=1&b=%20x&c=%2F')
        self.assertEqual(j['target'], '/echo?a=1&b=%20x&c=%2F', 'target rewritten')
        r, j = self.echo([], target='/echo?p=/a/../b&q=%41%2f')
        self.assertEqual(j['target'], '/echo?p=/a/../b&q=%41%2f', 'target rewritten')

    # -- hop-by-hop, response side ---------------------------------------------------------

    def test_response_hop_by_hop_removed(self):
        q = '&'.join(['hdr=Connection:X-Foo', 'hdr=X-Foo:1', 'hdr=Keep-Alive:300',
                      'hdr=Proxy-Connection:keep-alive', 'hdr=Trailer:X-T', 'hdr=Upgrade:foo',
                      'hdr=X-Keep:1'])
        with h.Client(self.p.port) as c:
            r = c.request('GET', '/?' + q)
            self.assertStatus(r, 200)
            names = [k.lower() for k, _ in r.headers]
            self.assertIn('x-keep', names, 'end-to-end response header lost:\n' + r.summary())
            for bad in ('x-foo', 'keep-alive', 'proxy-connection', 'trailer', 'upgrade'):
                self.assertNotIn(bad, names, 'hop-by-hop response header %r reached the client:\n%s'
                                 % (bad, r.summary()))
            for v in r.headers_all('Connection'):
                self.assertNotIn('x-foo', v.lower(), r.summary())
            # the client connection stays usable
            self.assertStatus(c.request('GET', '/'), 200)

    def test_response_connection_close_from_origin_does_not_close_client(self):
        with h.Client(self.p.port) as c:
            r = c.request('GET', '/?hdr=Connection:close')
            self.assertStatus(r, 200)
            # the origin's Connection is hop-by-hop: the proxy may keep the client connection
            if not r.wants_close():
                self.assertStatus(c.request('GET', '/'), 200, 'client connection kept open')

    # -- X-Forwarded-* ---------------------------------------------------------------------

    def test_xff_added(self):
        r, j = self.echo([])
        self.assertEqual(hdrs(j, 'X-Forwarded-For'), ['127.0.0.1'])

    def test_xff_appended(self):
        r, j = self.echo([('X-Forwarded-For', '203.0.113.7')])
        self.assertEqual(hdrs(j, 'X-Forwarded-For'), ['203.0.113.7, 127.0.0.1'])

    def test_xff_appended_to_list(self):
        r, j = self.echo([('X-Forwarded-For', '203.0.113.7, 198.51.100.2')])
        self.assertEqual(hdrs(j, 'X-Forwarded-For'), ['203.0.113.7, 198.51.100.2, 127.0.0.1'])

    def test_xff_multiple_headers(self):
        r, j = self.echo([('X-Forwarded-For', '1.1.1.1'), ('X-Forwarded-For', '2.2.2.2')])
        joined = ', '.join(hdrs(j, 'X-Forwarded-For'))
        self.assertEqual(joined, '1.1.1.1, 2.2.2.2, 127.0.0.1',
                         'XFF list as seen upstream: %r' % hdrs(j, 'X-Forwarded-For'))

    def test_xff_other_source_address(self):
        r, j = self.echo([], source='127.0.0.9')
        self.assertEqual(hdrs(j, 'X-Forwarded-For'), ['127.0.0.9'])
        # Every digit count of an octet (the address is formatted by hand).
        for src in ('127.10.200.3', '127.255.0.99', '127.1.23.255'):
            r, j = self.echo([], source=src)
            self.assertEqual(hdrs(j, 'X-Forwarded-For'), [src])

    def test_x_forwarded_proto_and_host(self):
        r, j = self.echo([('Host', 'shop.example:8080')])
        self.assertEqual(hdrs(j, 'X-Forwarded-Proto'), ['http'])
        self.assertEqual(hdrs(j, 'X-Forwarded-Host'), ['shop.example:8080'])

    def test_x_forwarded_proto_not_spoofable(self):
        r, j = self.echo([('X-Forwarded-Proto', 'https'), ('X-Forwarded-Host', 'evil.example')])
        self.assertEqual(hdrs(j, 'X-Forwarded-Proto'), ['http'],
                         'client-supplied X-Forwarded-Proto kept: %r' % j['headers'])
        self.assertEqual(hdrs(j, 'X-Forwarded-Host'), ['test.local'],
                         'client-supplied X-Forwarded-Host kept: %r' % j['headers'])

    def test_http10_without_host(self):
        r, j = self.echo([], version='HTTP/1.0', target='/echo')
        self.assertEqual(hdrs(j, 'X-Forwarded-For'), ['127.0.0.1'])
        self.assertEqual(hdrs(j, 'X-Forwarded-Proto'), ['http'])

    # -- X-Request-Id ----------------------------------------------------------------------

    def test_request_id_kept(self):
        rid = 'Abc-123._:+/=zZ'
        r, j = self.echo([('X-Request-Id', rid)])
        self.assertEqual(hdrs(j, 'X-Request-Id'), [rid])

    def test_request_id_max_length_kept(self):
        rid = 'a' * 128
        r, j = self.echo([('X-Request-Id', rid)])
        self.assertEqual(hdrs(j, 'X-Request-Id'), [rid])

    def test_request_id_too_long_replaced(self):
        r, j = self.echo([('X-Request-Id', 'a' * 129)])
        got = hdrs(j, 'X-Request-Id')
        self.assertEqual(len(got), 1, got)
        self.assertRegex(got[0], HEX32)

    def test_request_id_bad_chars_replaced(self):
        for bad in ('bad id', 'x;y', 'quote"', '<script>', 'a' * 64 + '!'):
            r, j = self.echo([('X-Request-Id', bad)])
            got = hdrs(j, 'X-Request-Id')
            self.assertEqual(len(got), 1, 'for %r: %r' % (bad, got))
            self.assertRegex(got[0], HEX32, 'X-Request-Id %r not replaced' % bad)

    def test_request_id_empty_replaced(self):
        r, j = self.echo([('X-Request-Id', '')])
        got = hdrs(j, 'X-Request-Id')
        self.assertEqual(len(got), 1, got)
        self.assertRegex(got[0], HEX32)

    def test_request_id_generated_and_unique(self):
        ids = set()
        with h.Client(self.p.port) as c:
            for _ in range(20):
                r = c.request('GET', '/echo')
                got = hdrs(r.json(), 'X-Request-Id')
                self.assertEqual(len(got), 1, got)
                self.assertRegex(got[0], HEX32)
                ids.add(got[0])
        self.assertEqual(len(ids), 20, 'generated request ids repeat')

    def test_request_id_duplicate_headers(self):
        r, j = self.echo([('X-Request-Id', 'one'), ('X-Request-Id', 'two')])
        got = hdrs(j, 'X-Request-Id')
        self.assertEqual(len(got), 1, 'several X-Request-Id forwarded: %r' % got)


if __name__ == '__main__':
    h.main()
