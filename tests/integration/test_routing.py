"""Routing (DESIGN §3): weight split, sticky buckets (cookie, header, ip), live pool selection,
balancing within a pool."""

import os
import re
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def pools_for(port, n, headers=None, source=None, target='/'):
    """n sequential keep-alive requests; returns the list of X-Origin-Pool values."""
    out = []
    c = h.Client(port, source=source)
    try:
        req = h.build_request('GET', target, headers)
        for _ in range(n):
            c.send(req)
            r = c.read_response()
            if r.status != 200:
                raise AssertionError('status %d\n%s' % (r.status, r.summary()))
            out.append(r.header('X-Origin-Pool'))
            if r.wants_close():
                c.close()
                c = h.Client(port, source=source)
    finally:
        c.close()
    return out


class SplitTest(h.ProxyTestCase):

    def test_split_30_percent(self):
        p = self.setup_basic(routing={'standby_percent': 30, 'sticky': {'by': 'none'}})
        counts = {}
        errors = []
        lock = threading.Lock()

        def work(n):
            try:
                got = pools_for(p.port, n)
                with lock:
                    for g in got:
                        counts[g] = counts.get(g, 0) + 1
            except Exception as e:
                with lock:
                    errors.append(repr(e))
        N, T = 10000, 4
        ts = [threading.Thread(target=work, args=(N // T,)) for _ in range(T)]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        self.assertEqual(errors, [])
        total = sum(counts.values())
        self.assertEqual(total, N, counts)
        share = counts.get('green', 0) / total
        self.assertTrue(0.28 <= share <= 0.32, 'standby share %.4f over %d requests (want '
                        '0.30 +- 0.02): %r (%.1fs)' % (share, total, counts, time.monotonic() - t0))

    def test_split_zero_all_live(self):
        p = self.setup_basic(routing={'standby_percent': 0})
        got = pools_for(p.port, 200)
        self.assertEqual(set(got), {'blue'})

    def test_split_100_all_standby(self):
        p = self.setup_basic(routing={'standby_percent': 100})
        got = pools_for(p.port, 200)
        self.assertEqual(set(got), {'green'})

    def test_live_green(self):
        p = self.setup_basic(routing={'live': 'green', 'standby_percent': 0})
        self.assertEqual(set(pools_for(p.port, 100)), {'green'})

    def test_live_green_split(self):
        p = self.setup_basic(routing={'live': 'green', 'standby_percent': 25})
        got = pools_for(p.port, 2000)
        share = got.count('blue') / len(got)
        self.assertTrue(0.21 <= share <= 0.29, 'blue (standby) share %.3f with 25%%' % share)

    def test_split_fractional_percent(self):
        p = self.setup_basic(routing={'standby_percent': 0.5})
        got = pools_for(p.port, 4000)
        share = got.count('green') / len(got)
        self.assertTrue(0.0005 <= share <= 0.0125, 'green share %.4f with 0.5%%' % share)


class StickyCookieTest(h.ProxyTestCase):

    def setUp(self):
        super().setUp()
        self.p = self.setup_basic(routing={'standby_percent': 30,
                                           'sticky': {'by': 'cookie'}})

    def bucket_of(self, r, name='sy_bucket'):
        sc = r.headers_all('Set-Cookie')
        for v in sc:
            m = re.match(r'^\s*%s=(\d+)(;|$)' % re.escape(name), v)
            if m:
                return int(m.group(1)), v
        return None, sc

    def test_cookie_set_and_honoured(self):
        r = h.one_request(self.p.port)
        self.assertStatus(r, 200)
        b, sc = self.bucket_of(r)
        self.assertIsNotNone(b, 'no sy_bucket Set-Cookie on a first request: %r\n%s' % (sc, r.summary()))
        self.assertTrue(0 <= b < 10000, b)
        low = sc.lower()
        self.assertTrue('max-age=86400' in low or 'expires=' in low,
                        'cookie without lifetime (max_age 1d): %r' % sc)
        self.assertIn('path=/', low, 'cookie without Path=/: %r' % sc)
        want = 'green' if b < 3000 else 'blue'
        self.assertEqual(r.header('X-Origin-Pool'), want, 'first request with bucket %d' % b)
        with h.Client(self.p.port) as c:
            for _ in range(20):
                r2 = c.request('GET', '/', [('Cookie', 'sy_bucket=%d' % b)])
                self.assertEqual(r2.header('X-Origin-Pool'), want, 'bucket %d' % b)
                self.assertIsNone(self.bucket_of(r2)[0], 'cookie re-set although valid: %r'
                                  % r2.headers_all('Set-Cookie'))

    def test_bucket_100_goes_standby(self):
        got = pools_for(self.p.port, 100, [('Cookie', 'sy_bucket=100')])
        self.assertEqual(set(got), {'green'}, 'bucket 100 < 3000 must go to standby')

    def test_bucket_9000_goes_live(self):
        got = pools_for(self.p.port, 100, [('Cookie', 'sy_bucket=9000')])
        self.assertEqual(set(got), {'blue'}, 'bucket 9000 >= 3000 must go to live')

    def test_threshold_edges(self):
        self.assertEqual(set(pools_for(self.p.port, 20, [('Cookie', 'sy_bucket=2999')])), {'green'})
        self.assertEqual(set(pools_for(self.p.port, 20, [('Cookie', 'sy_bucket=3000')])), {'blue'})
        self.assertEqual(set(pools_for(self.p.port, 20, [('Cookie', 'sy_bucket=0')])), {'green'})
        self.assertEqual(set(pools_for(self.p.port, 20, [('Cookie', 'sy_bucket=9999')])), {'blue'})

    def test_cookie_among_others(self):
        got = pools_for(self.p.port, 30, [('Cookie', 'a=1; sy_bucket=100; b=2')])
        self.assertEqual(set(got), {'green'})
        got = pools_for(self.p.port, 30, [('Cookie', 'a=1'), ('Cookie', 'sy_bucket=9000')])
        self.assertEqual(set(got), {'blue'})

    def test_invalid_cookie_gets_new_one(self):
        for bad in ('abc', '10000', '-1', '', '99999999999999999999', '12x'):
            r = h.one_request(self.p.port, 'GET', '/', [('Cookie', 'sy_bucket=%s' % bad)])
            self.assertStatus(r, 200)
            b, sc = self.bucket_of(r)
            self.assertIsNotNone(b, 'invalid sy_bucket=%r not replaced: %r' % (bad, sc))
            self.assertTrue(0 <= b < 10000)

    def test_new_cookies_spread(self):
        buckets = []
        for _ in range(300):
            r = h.one_request(self.p.port)
            b, sc = self.bucket_of(r)
            self.assertIsNotNone(b, sc)
            self.assertEqual(r.header('X-Origin-Pool'), 'green' if b < 3000 else 'blue',
                             'bucket %d' % b)
            buckets.append(b)
        low = sum(1 for b in buckets if b < 3000) / len(buckets)
        self.assertTrue(0.2 <= low <= 0.4, 'new buckets below 3000: %.2f' % low)
        self.assertGreater(len(set(buckets)), 250, 'buckets not random')

    def test_origin_set_cookie_kept(self):
        r = h.one_request(self.p.port, 'GET', '/?hdr=Set-Cookie:session%3Dabc')
        self.assertStatus(r, 200)
        sc = r.headers_all('Set-Cookie')
        self.assertIsNotNone(self.bucket_of(r)[0], 'no sticky cookie: %r' % sc)
        self.assertTrue(any(not v.startswith('sy_bucket=') for v in sc),
                        "the origin's own Set-Cookie was dropped: %r" % sc)

    def test_custom_cookie_name(self):
        b = self.origin('blue', 'b2')
        g = self.origin('green', 'g2')
        p = self.proxy(self.config([b], [g], routing={'standby_percent': 30,
                                                      'sticky': {'by': 'cookie', 'name': 'myb'}}))
        r = h.one_request(p.port)
        self.assertIsNotNone(self.bucket_of(r, 'myb')[0], r.headers_all('Set-Cookie'))
        self.assertEqual(set(pools_for(p.port, 20, [('Cookie', 'myb=100')])), {'green'})
        self.assertEqual(set(pools_for(p.port, 20, [('Cookie', 'myb=9000')])), {'blue'})


class StickyHeaderTest(h.ProxyTestCase):

    def test_header_stable_per_value(self):
        p = self.setup_basic(routing={'standby_percent': 30,
                                      'sticky': {'by': 'header:X-User'}})
        assign = {}
        for u in range(200):
            got = pools_for(p.port, 5, [('X-User', 'user-%d' % u)])
            self.assertEqual(len(set(got)), 1, 'user-%d moved between pools: %r' % (u, got))
            assign[u] = got[0]
        share = sum(1 for v in assign.values() if v == 'green') / len(assign)
        self.assertTrue(0.15 <= share <= 0.45, 'users on standby: %.2f with 30%%' % share)
        # and again on fresh connections: same answers
        for u in range(0, 200, 20):
            self.assertEqual(pools_for(p.port, 1, [('X-User', 'user-%d' % u)]), [assign[u]])

    def test_header_no_set_cookie(self):
        p = self.setup_basic(routing={'standby_percent': 30,
                                      'sticky': {'by': 'header:X-User'}})
        r = h.one_request(p.port, 'GET', '/', [('X-User', 'alice')])
        self.assertStatus(r, 200)
        self.assertFalse(any(v.startswith('sy_bucket=') for v in r.headers_all('Set-Cookie')),
                         'sticky by header set a cookie: %r' % r.headers_all('Set-Cookie'))

    def test_valid_cookie_beats_header(self):
        p = self.setup_basic(routing={'standby_percent': 30,
                                      'sticky': {'by': 'header:X-User'}})
        for u in range(10):
            got = pools_for(p.port, 3, [('X-User', 'u%d' % u), ('Cookie', 'sy_bucket=100')])
            self.assertEqual(set(got), {'green'}, 'cookie must win over the header')


class StickyIpTest(h.ProxyTestCase):

    def test_ip_stable(self):
        p = self.setup_basic(routing={'standby_percent': 30, 'sticky': {'by': 'ip'}})
        assign = {}
        for i in range(1, 121):
            src = '127.0.%d.%d' % (i // 200, 1 + i % 200)
            got = pools_for(p.port, 4, source=src)
            self.assertEqual(len(set(got)), 1, 'client %s moved between pools: %r' % (src, got))
            assign[src] = got[0]
        share = sum(1 for v in assign.values() if v == 'green') / len(assign)
        self.assertTrue(0.12 <= share <= 0.48, 'client addresses on standby: %.2f with 30%%' % share)
        # a new connection from the same address: same pool
        for src in list(assign)[:10]:
            self.assertEqual(pools_for(p.port, 1, source=src), [assign[src]])


class PreviewListenerTest(h.ProxyTestCase):

    def test_listener_route_to(self):
        b = self.origin('blue', 'b1')
        g = self.origin('green', 'g1')
        ports = [h.free_port() for _ in range(4)]
        listen = [{'address': '127.0.0.1:%d' % ports[0]},
                  {'address': '127.0.0.1:%d' % ports[1], 'route_to': 'standby'},
                  {'address': '127.0.0.1:%d' % ports[2], 'route_to': 'blue'},
                  {'address': '127.0.0.1:%d' % ports[3], 'route_to': 'green'}]
        p = self.proxy(self.config([b], [g], listen=listen,
                                   routing={'live': 'green', 'standby_percent': 50}))
        self.assertEqual(p.ports, ports, 'listening lines not one per listener in config order')
        self.assertEqual(set(pools_for(p.ports[1], 30)), {'blue'}, 'route_to: standby')
        self.assertEqual(set(pools_for(p.ports[2], 30)), {'blue'}, 'route_to: blue')
        self.assertEqual(set(pools_for(p.ports[3], 30)), {'green'}, 'route_to: green')
        self.assertEqual(set(pools_for(p.ports[0], 200)), {'blue', 'green'}, 'normal listener')

    def test_several_port0_listeners(self):
        # port 0 means "any free port": two such listeners are distinct, not duplicates
        b = self.origin('blue', 'b1')
        g = self.origin('green', 'g1')
        listen = [{'address': '127.0.0.1:0'}, {'address': '127.0.0.1:0', 'route_to': 'green'}]
        p = self.proxy(self.config([b], [g], listen=listen))
        self.assertEqual(len(p.ports), 2)
        self.assertEqual(set(pools_for(p.ports[0], 10)), {'blue'})
        self.assertEqual(set(pools_for(p.ports[1], 10)), {'green'})


class BalanceTest(h.ProxyTestCase):

    def three_blue(self, balance, weights=(1, 1, 1), workers=1):
        bs = [self.origin('blue', 'b%d' % (i + 1)) for i in range(3)]
        g = self.origin('green', 'g1')
        srv = [{'name': o.name, 'address': o.address, 'weight': w} for o, w in zip(bs, weights)]
        p = self.proxy(self.config(srv, [g], workers=workers, routing={'balance': balance}))
        return p

    def servers_for(self, port, n):
        out = []
        with h.Client(port) as c:
            for _ in range(n):
                r = c.request('GET', '/')
                self.assertStatus(r, 200)
                out.append(r.header('X-Origin-Server'))
        return out

    def test_round_robin(self):
        p = self.three_blue('round_robin')
        got = self.servers_for(p.port, 30)
        self.assertEqual({s: got.count(s) for s in set(got)}, {'b1': 10, 'b2': 10, 'b3': 10},
                         'round robin over 3 servers, 30 requests, one worker: %r' % got)

    def test_round_robin_weights(self):
        p = self.three_blue('round_robin', weights=(1, 2, 1))
        got = self.servers_for(p.port, 400)
        c = {s: got.count(s) for s in ('b1', 'b2', 'b3')}
        self.assertTrue(180 <= c['b2'] <= 220 and 80 <= c['b1'] <= 120, 'weights 1:2:1 -> %r' % c)

    def test_p2c_spreads_sequential_load(self):
        p = self.three_blue('p2c')
        got = self.servers_for(p.port, 300)
        c = {s: got.count(s) for s in ('b1', 'b2', 'b3')}
        self.assertTrue(all(v >= 40 for v in c.values()), 'p2c with idle servers: %r' % c)

    def test_least_conn_avoids_busy(self):
        p = self.three_blue('least_conn')
        # hold b-something busy with two slow requests, then fast ones must go elsewhere
        busy = []

        def slow():
            r = h.one_request(p.port, 'GET', '/?delay=1500', timeout=5)
            busy.append(r.header('X-Origin-Server'))
        ts = [threading.Thread(target=slow) for _ in range(2)]
        for t in ts:
            t.start()
        time.sleep(0.3)
        fast = self.servers_for(p.port, 10)
        for t in ts:
            t.join(5)
        self.assertEqual(len(busy), 2)
        free = {'b1', 'b2', 'b3'} - set(busy)
        self.assertTrue(set(fast) <= free | set(), 'least_conn sent requests to busy servers: '
                        'busy=%r fast=%r' % (busy, fast))


if __name__ == '__main__':
    h.main()
