"""The control API (DESIGN §8, control/API.md) against a running proxy with real origins: status,
weights, rollback, server admin states, reload, events (long-poll), metrics, refusals (method,
path, JSON, size, peer credentials), the TCP listener with its bearer token, the audit log, the
state file across restarts, and the control socket itself.

  SWITCHYARD=build/switchyard ORIGIN=build/tests/origin/origin \
    python3 tests/integration/test_control.py -v
"""

import collections
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

NOBODY = h.NOBODY
SAMPLER = 3.0       # how long we give the 1 s stats sampler to catch up


def pools_of(port, n, conns=2, target='/'):
    """n GETs spread over `conns` keep-alive connections → Counter of (pool, server)."""
    out = collections.Counter()
    clients = [h.Client(port) for _ in range(conns)]
    try:
        for i in range(n):
            r = clients[i % conns].request('GET', target)
            if r.status != 200:
                raise AssertionError('request %d: %s' % (i, r.summary()))
            out[(r.header('X-Origin-Pool'), r.header('X-Origin-Server'))] += 1
    finally:
        for c in clients:
            c.close()
    return out


def by_pool(counter):
    out = collections.Counter()
    for (pool, _), n in counter.items():
        out[pool] += n
    return out


def by_server(counter):
    out = collections.Counter()
    for (_, srv), n in counter.items():
        out[srv] += n
    return out




class ControlCase(h.ProxyTestCase):
    WATCHDOG = 60.0

    def start(self, nblue=2, green_extra=(), **kw):
        """blue b1..bN + green g1 + proxy; returns (proxy, Ctl)."""
        self.blue = [self.origin('blue', 'b%d' % (i + 1)) for i in range(nblue)]
        self.g1 = self.origin('green', 'g1', extra=green_extra)
        p = self.proxy(self.config(self.blue, [self.g1], **kw))
        c = h.ctl_for(p)
        self.wait_health(c)
        return p, c

    def wait_health(self, c, want=None, timeout=5.0):
        """Wait until every server's health is decided (not unknown), or equals want."""
        def done():
            st = c.status()
            return all((s['health'] != 'unknown') if want is None else (s['health'] == want)
                       for p in st['pools'].values() for s in p['servers'])
        self.assertTrue(h.wait_until(done, timeout), 'health not settled: %s' % c.status())

    def assertOk(self, r, status=200, msg=''):
        if r.status != status or not r.ok or not isinstance(r.generation, int):
            self.fail('expected HTTP %d ok, got %s %s\n%s' % (status, r.summary(), msg,
                                                              self._short_diag()))
        return r.data

    def assertErr(self, r, status, code, field=None, msg=''):
        good = (r.status == status and isinstance(r.json, dict) and r.json.get('ok') is False
                and r.code == code and isinstance(r.generation, int)
                and isinstance(r.error.get('message'), str))
        if field is not None:
            good = good and r.error.get('field') == field
        if not good:
            self.fail('expected HTTP %d code %s%s, got %s %s\n%s' % (
                status, code, ' field %s' % field if field else '', r.summary(), msg,
                self._short_diag()))

    def routing_snapshot(self, c):
        st = c.status()
        admin = {(pn, s['name']): s['admin'] for pn, p in st['pools'].items()
                 for s in p['servers']}
        return st['generation'], st['routing'], admin

    def server(self, st, pool, name):
        for s in st['pools'][pool]['servers']:
            if s['name'] == name:
                return s
        self.fail('no server %s/%s in status' % (pool, name))


# ---------------------------------------------------------------------------------------------

class StatusTest(ControlCase):

    def test_status_shape(self):
        p, c = self.start()
        r = c.get('/v1/status')
        d = self.assertOk(r)
        self.assertEqual(r.headers.get('content-type', '').split(';')[0], 'application/json')
        self.assertEqual(r.generation, d['generation'])
        self.assertIsInstance(d['version'], str)
        self.assertEqual(d['generation'], 1, 'a fresh proxy without state starts at generation 1')
        self.assertEqual(d['routing'], {'live': 'blue', 'standby': 'green',
                                        'standby_percent': 0.0, 'standby_bp': 0})
        self.assertEqual(d['rollout']['state'], 'stable')
        self.assertEqual(set(d['pools']), {'blue', 'green'})
        pool_keys = {'role', 'share_percent', 'healthy', 'servers_total', 'usable', 'inflight',
                     'conns', 'tunnels', 'window', 'servers'}
        win_keys = {'seconds', 'requests', 'rate', 'errors', 'error_rate', 'p50_ms', 'p90_ms',
                    'p99_ms'}
        srv_keys = {'name', 'address', 'weight', 'health', 'admin', 'ejected', 'inflight', 'conns',
                    'tunnels', 'last_check'}
        for name, pool in d['pools'].items():
            self.assertTrue(pool_keys <= set(pool), '%s lacks %s' % (name, pool_keys - set(pool)))
            self.assertTrue(win_keys <= set(pool['window']), pool['window'])
            for s in pool['servers']:
                self.assertTrue(srv_keys <= set(s), '%s/%s lacks %s' % (name, s.get('name'),
                                                                       srv_keys - set(s)))
                self.assertEqual(s['health'], 'up')
                self.assertEqual(s['admin'], 'ready')
                self.assertIs(s['ejected'], False)
                self.assertEqual(s['weight'], 1)
                self.assertIsInstance(s['last_check'], str)
        blue, green = d['pools']['blue'], d['pools']['green']
        self.assertEqual((blue['role'], blue['share_percent']), ('live', 100.0))
        self.assertEqual((green['role'], green['share_percent']), ('standby', 0.0))
        self.assertEqual((blue['healthy'], blue['servers_total'], blue['usable']), (2, 2, 2))
        self.assertEqual((green['healthy'], green['servers_total'], green['usable']), (1, 1, 1))
        self.assertEqual([s['name'] for s in blue['servers']], ['b1', 'b2'])
        self.assertEqual([s['address'] for s in blue['servers']],
                         [o.address for o in self.blue])
        self.assertEqual(green['servers'][0]['address'], self.g1.address)

    def test_status_window_counts_first_second(self):
        """Requests sent right after start are inside the 30 s window too."""
        p, c = self.start()
        n = 30
        self.assertEqual(by_pool(pools_of(p.port, n)), {'blue': n})
        t_sent = time.monotonic()

        def counted():
            return c.status()['pools']['blue']['window']['requests'] >= n
        ok = h.wait_until(counted, SAMPLER, 0.1)
        self.assertTrue(ok, 'blue window.requests still %s %.1fs after %d requests sent in the '
                        'first second after start (window: %s)' % (
                            c.status()['pools']['blue']['window']['requests'],
                            time.monotonic() - t_sent, n, c.status()['pools']['blue']['window']))

    def test_status_window_moves_after_traffic(self):
        p, c = self.start()
        time.sleep(1.5)         # past the sampler's first tick (see the test above)
        w0 = c.status()['pools']['blue']['window']['requests']
        n = 60
        got = pools_of(p.port, n)
        self.assertEqual(by_pool(got), {'blue': n})
        for _ in range(5):
            self.assertStatus(h.one_request(p.port, target='/status/500'), 500)

        def moved():
            st = c.status()
            return st if st['pools']['blue']['window']['requests'] >= w0 + n + 5 else None
        st = h.wait_until(moved, SAMPLER, 0.1)
        self.assertTrue(st, 'blue window.requests did not reach %d within %.0fs: %s' % (
            w0 + n + 5, SAMPLER, c.status()['pools']['blue']['window']))
        w = st['pools']['blue']['window']
        self.assertEqual(w['requests'], w0 + n + 5, w)
        self.assertEqual(w['errors'], 5, '5xx answers count as errors: %s' % w)
        self.assertAlmostEqual(w['error_rate'], 5.0 / (w0 + n + 5), places=3, msg=w)
        self.assertGreater(w['rate'], 0, w)
        self.assertGreater(w['seconds'], 0, w)
        self.assertGreater(w['p99_ms'], 0, w)
        self.assertLessEqual(w['p50_ms'], w['p90_ms'], w)
        self.assertLessEqual(w['p90_ms'], w['p99_ms'], w)
        self.assertEqual(st['pools']['green']['window']['requests'], 0)

    def test_pool_gauges_are_sums_of_server_gauges(self):
        """Pool inflight / conns (status and metrics) agree with their servers'."""
        p, c = self.start()
        pools_of(p.port, 20, conns=4)      # leaves idle upstream connections behind
        res = {}

        def slow():
            try:
                res['r'] = h.one_request(p.port, target='/?delay=2500', timeout=10)
            except Exception as e:
                res['r'] = e
        t = threading.Thread(target=slow, daemon=True)
        t.start()

        def inflight_seen():
            st = c.status()
            return st if sum(s['inflight'] for s in st['pools']['blue']['servers']) == 1 else None
        st = h.wait_until(inflight_seen, SAMPLER, 0.1)
        self.assertTrue(st, 'the slow request never showed as in flight on a server: %s' % (
            c.status()['pools']['blue']))
        blue = st['pools']['blue']
        srv_conns = sum(s['conns'] for s in blue['servers'])
        self.assertGreater(srv_conns, 0, 'no upstream connection shown on blue servers')
        self.assertEqual(blue['inflight'], 1, 'pool inflight vs its servers: %s' % blue)
        _, samples = h.parse_metrics(c.metrics_text())
        m_srv = sum(h.metric(samples, 'switchyard_upstream_connections', pool='blue',
                             server=s['name']) or 0 for s in blue['servers'])
        m_pool = h.metric(samples, 'switchyard_upstream_connections', pool='blue')
        t.join(10)
        self.assertEqual(getattr(res.get('r'), 'status', res.get('r')), 200)
        self.assertEqual(blue['conns'], srv_conns,
                         'status: pool blue conns %s but its servers have %s (%s)' % (
                             blue['conns'], srv_conns,
                             [(s['name'], s['conns']) for s in blue['servers']]))
        self.assertEqual(m_pool, m_srv, 'metrics: switchyard_upstream_connections{pool="blue"} '
                         '%s but the per-server series sum to %s' % (m_pool, m_srv))


    def test_tunnels_counted(self):
        p, c = self.start(timeouts={'tunnel': '30s'})
        with h.Client(p.port) as ws:
            ws.send(h.build_request('GET', '/ws', [('Upgrade', 'websocket'),
                                                   ('Connection', 'Upgrade')]))
            r = ws.read_head()
            self.assertEqual(r.status, 101, r.summary())
            name = r.header('X-Origin-Server')

            def shown():
                st = c.status()
                return st if st['pools']['blue']['tunnels'] == 1 else None
            st = h.wait_until(shown, SAMPLER, 0.1)
            self.assertTrue(st, 'an open tunnel not shown in pool blue: %s' % (
                c.status()['pools']['blue']))
            self.assertEqual(self.server(st, 'blue', name)['tunnels'], 1)
            self.assertEqual(st['pools']['green']['tunnels'], 0)
            _, s = h.parse_metrics(c.metrics_text())
            self.assertEqual(h.metric(s, 'switchyard_tunnels', pool='blue'), 1)
            self.assertEqual(h.metric(s, 'switchyard_tunnels', pool='blue', server=name), 1)
        ok = h.wait_until(lambda: c.status()['pools']['blue']['tunnels'] == 0, SAMPLER, 0.1)
        self.assertTrue(ok, 'closed tunnel still counted')

    def test_unavailable_while_shutting_down(self):
        p, c = self.start(timeouts={'shutdown': '10s'})
        res = {}

        def slow():
            try:
                res['r'] = h.one_request(p.port, target='/?delay=2000', timeout=10)
            except Exception as e:
                res['r'] = e
        t = threading.Thread(target=slow, daemon=True)
        t.start()
        busy = h.wait_until(lambda: c.status()['pools']['blue']['inflight'] == 1, SAMPLER, 0.05)
        self.assertTrue(busy, 'the slow request never showed in flight')
        gen = c.generation()
        p.expected_exit = True
        p.signal(15)
        self.assertTrue(p.err.wait_for(r'shutdown', 2)[1], 'no shutdown message')
        r = c.weights(50)
        self.assertErr(r, 503, 'unavailable', msg='PUT weights while shutting down')
        self.assertEqual(r.generation, gen)
        self.assertErr(c.rollback(), 503, 'unavailable', msg='rollback while shutting down')
        self.assertErr(c.admin('blue', 'b1', 'drain'), 503, 'unavailable')
        t.join(10)
        self.assertEqual(getattr(res.get('r'), 'status', res.get('r')), 200)
        self.assertEqual(p.proc.wait(10), 0)


# ---------------------------------------------------------------------------------------------

class WeightsTest(ControlCase):

    def test_weights_30_splits_traffic(self):
        p, c = self.start()
        g0 = c.generation()
        r = c.weights(30)
        d = self.assertOk(r)
        self.assertEqual(r.generation, g0 + 1)
        self.assertEqual(d['routing'], {'live': 'blue', 'standby': 'green',
                                        'standby_percent': 30.0, 'standby_bp': 3000})
        self.assertEqual(d['previous']['standby_percent'], 0.0)
        self.assertEqual(d['previous']['standby_bp'], 0)
        self.assertIsInstance(d['ack_us'], int)
        self.assertGreaterEqual(d['ack_us'], 0)
        st = c.status()
        self.assertEqual(st['generation'], g0 + 1)
        self.assertEqual(st['routing']['standby_bp'], 3000)
        self.assertEqual(st['pools']['green']['share_percent'], 30.0)
        self.assertEqual(st['pools']['blue']['share_percent'], 70.0)
        n = 2000
        got = by_pool(pools_of(p.port, n, conns=4))
        share = got['green'] / float(n)
        self.assertTrue(0.26 <= share <= 0.34, 'green got %.1f%% of %d requests at weights 30 '
                        '(%r)' % (share * 100, n, dict(got)))

    def test_weights_two_decimals(self):
        p, c = self.start()
        d = self.assertOk(c.weights(12.34))
        self.assertEqual(d['routing']['standby_bp'], 1234)
        self.assertAlmostEqual(d['routing']['standby_percent'], 12.34)
        d = self.assertOk(c.weights(100))
        self.assertEqual(d['routing']['standby_bp'], 10000)
        self.assertEqual(by_pool(pools_of(p.port, 30)), {'green': 30})
        d = self.assertOk(c.weights(0))
        self.assertEqual(by_pool(pools_of(p.port, 30)), {'blue': 30})

    def test_weights_invalid(self):
        p, c = self.start()
        self.assertOk(c.weights(20))
        before = self.routing_snapshot(c)
        cases = [
            ({'standby_percent': 101}, 'standby_percent'),
            ({'standby_percent': -1}, 'standby_percent'),
            ({'standby_percent': 100.01}, 'standby_percent'),
            ({'standby_percent': 30.123}, 'standby_percent'),
            ({'standby_percent': '30'}, 'standby_percent'),
            ({'standby_percent': None}, 'standby_percent'),
            ({'standby_percent': True}, 'standby_percent'),
            ({}, 'standby_percent'),
            ({'standby_percent': 30, 'if_generation': 'x'}, 'if_generation'),
            ({'standby_percent': 30, 'if_generation': -1}, 'if_generation'),
        ]
        for body, field in cases:
            self.assertErr(c.put('/v1/weights', body), 400, 'invalid', field, 'body %r' % body)
        # an unknown field
        r = c.put('/v1/weights', {'standby_percent': 30, 'standby': 30})
        self.assertErr(r, 400, 'invalid', msg='unknown field')
        self.assertIn(r.error.get('field'), ('standby', None), r.summary())
        self.assertEqual(self.routing_snapshot(c), before, 'a refused request changed something')
        self.assertEqual(r.generation, before[0])

    def test_if_generation(self):
        p, c = self.start()
        self.assertOk(c.weights(10))
        before = self.routing_snapshot(c)
        gen = before[0]
        r = c.weights(40, if_generation=gen - 1)
        self.assertErr(r, 409, 'conflict', 'if_generation')
        self.assertEqual(r.generation, gen)
        self.assertIn(str(gen), r.error['message'])
        self.assertEqual(self.routing_snapshot(c), before, 'a 409 changed something')
        self.assertEqual(by_pool(pools_of(p.port, 40)).get('green', 0) < 15, True)
        r = c.rollback(if_generation=gen + 5)
        self.assertErr(r, 409, 'conflict', 'if_generation')
        self.assertErr(c.admin('blue', 'b1', 'drain', {'if_generation': gen - 1}), 409,
                       'conflict', 'if_generation')
        self.assertEqual(self.routing_snapshot(c), before, 'a 409 changed something')
        r = c.weights(40, if_generation=gen)
        d = self.assertOk(r)
        self.assertEqual(r.generation, gen + 1)
        self.assertEqual(d['routing']['standby_bp'], 4000)
        d = self.assertOk(c.admin('blue', 'b1', 'drain', {'if_generation': gen + 1}))
        self.assertEqual(d['admin'], 'drain')


# ---------------------------------------------------------------------------------------------

class RollbackTest(ControlCase):

    def test_rollback(self):
        p, c = self.start()
        self.assertOk(c.weights(40))
        g = c.generation()
        t0 = time.monotonic()
        r = c.rollback('p99 regression')
        d = self.assertOk(r)
        self.assertEqual(r.generation, g + 1)
        self.assertEqual(d['routing'], {'live': 'blue', 'standby': 'green',
                                        'standby_percent': 0.0, 'standby_bp': 0})
        self.assertEqual(d['previous']['standby_bp'], 4000)
        self.assertEqual(d['previous']['standby_percent'], 40.0)
        self.assertEqual(d['previous']['live'], 'blue')
        self.assertIsInstance(d['ack_us'], int)
        # at once: the very next requests, on fresh and kept-alive connections
        self.assertEqual(by_pool(pools_of(p.port, 200, conns=3)), {'blue': 200},
                         'traffic reached green after the rollback answered')
        self.assertLess(time.monotonic() - t0, 5)
        st = c.status()
        self.assertEqual(st['generation'], g + 1)
        self.assertEqual(st['pools']['green']['share_percent'], 0.0)
        # idempotent at 0: still ok, generation still moves
        r = c.rollback()
        d = self.assertOk(r)
        self.assertEqual(r.generation, g + 2)
        self.assertEqual(d['previous']['standby_bp'], 0)
        self.assertEqual(d['routing']['standby_bp'], 0)
        r = c.post('/v1/rollback')           # empty body counts as {}
        self.assertOk(r)
        self.assertEqual(r.generation, g + 3)
        # the reason is recorded
        ev = c.events(0).data['events']
        rb = [e for e in ev if e.get('type') == 'routing' and e.get('action') == 'rollback']
        self.assertEqual(len(rb), 3, ev)
        self.assertEqual(rb[0].get('reason'), 'p99 regression')
        self.assertEqual(rb[0]['generation'], g + 1)
        self.assertErr(c.rollback(reason=5), 400, 'invalid', 'reason')


# ---------------------------------------------------------------------------------------------

class AdminTest(ControlCase):

    def test_drain_then_ready(self):
        p, c = self.start()
        self.assertEqual(set(by_server(pools_of(p.port, 40))), {'b1', 'b2'})
        g = c.generation()
        r = c.admin('blue', 'b1', 'drain')
        d = self.assertOk(r)
        self.assertEqual(r.generation, g, 'an admin change is not a routing change')
        self.assertEqual((d['name'], d['admin'], d['health']), ('b1', 'drain', 'up'))
        self.assertTrue({'address', 'inflight', 'conns'} <= set(d), d)
        st = c.status()
        self.assertEqual(self.server(st, 'blue', 'b1')['admin'], 'drain')
        self.assertEqual(st['pools']['blue']['usable'], 1)
        self.assertEqual(by_server(pools_of(p.port, 60, conns=3)), {'b2': 60},
                         'a draining server got new requests')
        d = self.assertOk(c.admin('blue', 'b1', 'ready'))
        self.assertEqual(d['admin'], 'ready')
        self.assertIn('b1', by_server(pools_of(p.port, 60, conns=3)), 'b1 back to ready got nothing')

    def test_maint_no_traffic_no_health_checks(self):
        p, c = self.start(extra={'health': {'interval': '100ms'}})
        b1 = self.blue[0]
        # checks run: the origin's request counter moves on its own
        n0 = b1.stats()['requests']
        time.sleep(0.5)
        n1 = b1.stats()['requests']
        self.assertGreater(n1 - n0, 2, 'health checks not running at interval 100ms')
        d = self.assertOk(c.admin('blue', 'b1', 'maint'))
        self.assertEqual(d['admin'], 'maint')
        time.sleep(0.3)                  # a check in progress may still finish
        self.assertEqual(by_server(pools_of(p.port, 40)), {'b2': 40})
        last0 = self.server(c.status(), 'blue', 'b1')['last_check']
        n0 = b1.stats()['requests']
        time.sleep(1.0)
        n1 = b1.stats()['requests']
        self.assertEqual(n1 - n0, 1, 'b1 in maint still received %d requests in 1 s '
                         '(health checks?)' % (n1 - n0 - 1))
        self.assertEqual(self.server(c.status(), 'blue', 'b1')['last_check'], last0)
        self.assertEqual(c.status()['pools']['blue']['usable'], 1)
        # back to ready: checks resume, traffic returns
        self.assertOk(c.admin('blue', 'b1', 'ready'))
        n0 = b1.stats()['requests']
        time.sleep(0.6)
        self.assertGreater(b1.stats()['requests'] - n0, 2, 'health checks did not resume')
        self.wait_health(c, 'up')
        got = h.wait_until(lambda: 'b1' in by_server(pools_of(p.port, 40)), 3, 0.2)
        self.assertTrue(got, 'b1 back from maint got no traffic')

    def test_unknown_pool_server_state(self):
        p, c = self.start()
        before = self.routing_snapshot(c)
        for path in ('/v1/servers/blue/b9/drain', '/v1/servers/red/b1/drain',
                     '/v1/servers/blue/g1/drain', '/v1/servers/blue/b1/sleep',
                     '/v1/servers/blue/b1', '/v1/servers/blue'):
            self.assertErr(c.post(path, {}), 404, 'not_found', msg=path)
        self.assertEqual(self.routing_snapshot(c), before)

    def test_inflight_on_draining_server_finishes(self):
        p, c = self.start()
        res = {}

        def slow():
            try:
                res['r'] = h.one_request(p.port, target='/?delay=2500', timeout=10)
            except Exception as e:
                res['r'] = e
        t = threading.Thread(target=slow, daemon=True)
        t.start()

        def busy_server():
            st = c.status()
            for s in st['pools']['blue']['servers']:
                if s['inflight'] == 1:
                    return s['name']
            return None
        name = h.wait_until(busy_server, SAMPLER, 0.05)
        self.assertTrue(name, 'the slow request never showed in flight: %s' % c.status())
        other = 'b2' if name == 'b1' else 'b1'
        d = self.assertOk(c.admin('blue', name, 'drain'))
        self.assertEqual(d['admin'], 'drain')
        self.assertEqual(by_server(pools_of(p.port, 20)), {other: 20})
        self.assertTrue(t.is_alive(), 'the slow request ended before the drain was checked')
        t.join(10)
        r = res.get('r')
        self.assertIsInstance(r, h.Response, 'in-flight request on the draining server: %r' % r)
        self.assertEqual(r.status, 200, r.summary())
        self.assertEqual(r.header('X-Origin-Server'), name)
        # drained: nothing in flight any more
        ok = h.wait_until(lambda: self.server(c.status(), 'blue', name)['inflight'] == 0,
                          SAMPLER, 0.1)
        self.assertTrue(ok, 'server %s still shows a request in flight' % name)


# ---------------------------------------------------------------------------------------------

class ReloadTest(ControlCase):

    def test_reload_good_and_bad(self):
        b1 = self.origin('blue', 'b1')
        b2 = self.origin('blue', 'b2')
        g1 = self.origin('green', 'g1')
        cfg = self.config([b1], [g1])
        p = self.proxy(cfg)
        c = h.ctl_for(p)
        self.assertOk(c.weights(20))
        gen = c.generation()
        # good file: serial moves, new server serves
        p.write_config(self.config([b1, b2], [g1]))
        r = c.post('/v1/reload', {})
        d = self.assertOk(r)
        serial = d['serial']
        self.assertIsInstance(serial, int)
        self.assertGreaterEqual(serial, 2)
        self.assertEqual(r.generation, gen, 'a reload is not a routing change')
        self.assertEqual([s['name'] for s in c.status()['pools']['blue']['servers']],
                         ['b1', 'b2'])
        self.assertEqual(c.status()['routing']['standby_bp'], 2000,
                         'a reload reset the split set through the API')
        got = h.wait_until(lambda: 'b2' in by_server(pools_of(p.port, 40)), 3, 0.1)
        self.assertTrue(got, 'reloaded server b2 got no traffic')
        # bad file: 400 with file:line:col, running config stays
        good_text = p.config_text()
        bad = good_text + 'bogus_key: 1\n'
        p.write_config(bad)
        r = c.post('/v1/reload')
        self.assertErr(r, 400, 'invalid')
        errs = r.error.get('errors')
        self.assertIsInstance(errs, list, r.summary())
        self.assertTrue(errs, r.summary())
        rx = re.compile(r'^%s:(\d+):(\d+): ' % re.escape(os.path.basename(p.path)))
        m = rx.match(os.path.basename(errs[0])) or rx.search(errs[0].split('/')[-1])
        self.assertTrue(m, 'error %r is not FILE:LINE:COL: ...' % errs[0])
        self.assertEqual(int(m.group(1)), bad.count('\n'), errs)
        self.assertEqual(int(m.group(2)), 1, errs)
        self.assertIn('bogus_key', errs[0])
        st = c.status()
        self.assertEqual([s['name'] for s in st['pools']['blue']['servers']], ['b1', 'b2'])
        self.assertEqual(st['generation'], gen)
        self.assertEqual(set(by_server(pools_of(p.port, 40))) - {'g1'}, {'b1', 'b2'})
        # a later good reload: serial continues from the last good one
        p.write_config(self.config([b2], [g1]))
        d = self.assertOk(c.post('/v1/reload'))
        self.assertEqual(d['serial'], serial + 1, 'a refused reload consumed a serial?')
        ev = [e for e in c.events(0).data['events'] if e.get('type') == 'reload']
        self.assertEqual([e.get('ok') for e in ev], [True, False, True], ev)
        self.assertEqual(ev[0].get('serial'), serial)


# ---------------------------------------------------------------------------------------------

class EventsTest(ControlCase):

    def test_events_list(self):
        p, c = self.start()
        self.assertOk(c.weights(10))
        self.assertOk(c.admin('blue', 'b1', 'drain'))
        self.assertOk(c.admin('blue', 'b1', 'ready'))
        self.assertOk(c.rollback('because'))
        r = c.events(0)
        d = self.assertOk(r)
        ev = d['events']
        seqs = [e['seq'] for e in ev]
        self.assertEqual(seqs, sorted(set(seqs)), 'seq not strictly increasing: %r' % seqs)
        self.assertEqual(d['next'], seqs[-1])
        for e in ev:
            self.assertTrue({'seq', 'time', 'generation', 'type'} <= set(e), e)
            self.assertRegex(e['time'], r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$')
        health = {(e['pool'], e['server']): (e['from'], e['to'])
                  for e in ev if e['type'] == 'health'}
        for srv in (('blue', 'b1'), ('blue', 'b2'), ('green', 'g1')):
            self.assertEqual(health.get(srv), ('unknown', 'up'), 'health events: %r' % ev)
        mine = [e for e in ev if e['type'] in ('routing', 'admin')]
        summary = [(e['type'], e.get('action') or e.get('state')) for e in mine]
        self.assertEqual(summary, [('routing', 'weights'), ('admin', 'drain'), ('admin', 'ready'),
                                   ('routing', 'rollback')], mine)
        self.assertEqual(mine[0]['standby_percent'], 10.0)
        self.assertEqual(mine[0]['live'], 'blue')
        self.assertEqual(mine[0]['generation'], 2)
        self.assertEqual((mine[1]['pool'], mine[1]['server']), ('blue', 'b1'))
        self.assertEqual(mine[3]['reason'], 'because')
        self.assertEqual(mine[3]['generation'], 3)
        for e in mine:
            self.assertIn('uid %d pid %d' % (os.getuid(), os.getpid()), e.get('peer', ''), e)
        # since: only what follows
        d2 = self.assertOk(c.events(seqs[1]))
        self.assertEqual([e['seq'] for e in d2['events']], seqs[2:])
        d3 = self.assertOk(c.events(d['next']))
        self.assertEqual(d3['events'], [])
        self.assertEqual(d3['next'], d['next'])

    def test_long_poll_wakes_on_change(self):
        p, c = self.start()
        nxt = c.events(0).data['next']
        res = {}

        def poll():
            r = h.ctl_for(p).events(nxt, wait=5, timeout=10)
            res['r'] = r
            res['t'] = time.monotonic()
        t = threading.Thread(target=poll, daemon=True)
        t0 = time.monotonic()
        t.start()
        time.sleep(0.5)
        t_change = time.monotonic()
        self.assertOk(c.weights(15))
        t.join(6)
        self.assertIn('r', res, 'long poll did not return')
        d = self.assertOk(res['r'])
        lag = res['t'] - t_change
        self.assertGreater(res['t'] - t0, 0.4, 'the long poll returned before the change')
        self.assertLess(lag, 1.0, 'long poll returned %.2fs after the change' % lag)
        self.assertEqual([(e['type'], e.get('action')) for e in d['events']],
                         [('routing', 'weights')])
        self.assertEqual(d['next'], d['events'][-1]['seq'])

    def test_long_poll_times_out_empty(self):
        p, c = self.start()
        nxt = c.events(0).data['next']
        t0 = time.monotonic()
        r = c.events(nxt, wait=1, timeout=5)
        el = time.monotonic() - t0
        d = self.assertOk(r)
        self.assertEqual(d['events'], [])
        self.assertEqual(d['next'], nxt)
        self.assertTrue(0.9 <= el <= 2.0, 'wait=1 with nothing returned after %.2fs' % el)
        t0 = time.monotonic()
        d = self.assertOk(c.events(nxt, wait=0))
        self.assertLess(time.monotonic() - t0, 0.5)
        self.assertEqual(d['events'], [])

    def test_bad_parameters(self):
        p, c = self.start()
        for q, field in (('since=abc', 'since'), ('since=-1', 'since'), ('since=1x', 'since'),
                         ('since=', 'since'), ('since=99999999999999999999999', 'since'),
                         ('wait=abc', 'wait'), ('wait=-2', 'wait'), ('wait=1.5x', 'wait'),
                         ('wait=', 'wait'), ('wait=99999999999999999999999', 'wait')):
            self.assertErr(c.get('/v1/events?' + q), 400, 'invalid', field, q)

    def test_bad_parameter_named_with_both_given(self):
        """A bad wait next to a good since is blamed on wait (and the reverse)."""
        p, c = self.start()
        for q, field in (('since=0&wait=abc', 'wait'), ('wait=abc&since=0', 'wait'),
                         ('since=0&wait=', 'wait'), ('since=abc&wait=1', 'since'),
                         ('since=2&wait=-1', 'wait')):
            self.assertErr(c.get('/v1/events?' + q), 400, 'invalid', field, q)


# ---------------------------------------------------------------------------------------------

FAMILIES = {
    'switchyard_requests': 'counter', 'switchyard_responses': 'counter',
    'switchyard_upstream_failures': 'counter', 'switchyard_connect_errors': 'counter',
    'switchyard_timeouts': 'counter', 'switchyard_retries': 'counter',
    'switchyard_failovers': 'counter', 'switchyard_ejections': 'counter',
    'switchyard_bytes_in': 'counter', 'switchyard_bytes_out': 'counter',
    'switchyard_inflight': 'gauge', 'switchyard_upstream_connections': 'gauge',
    'switchyard_tunnels': 'gauge', 'switchyard_client_connections': 'gauge',
    'switchyard_request_duration_seconds': 'histogram', 'switchyard_server_up': 'gauge',
    'switchyard_server_health': 'gauge', 'switchyard_server_admin_state': 'gauge',
    'switchyard_standby_share_ratio': 'gauge', 'switchyard_live_pool': 'gauge',
    'switchyard_generation': 'gauge', 'switchyard_rollout_phase': 'gauge',
}


class MetricsTest(ControlCase):

    def test_families_and_values(self):
        p, c = self.start()
        r = c.get('/metrics')
        self.assertEqual(r.status, 200)
        ct = r.headers.get('content-type', '')
        self.assertTrue(ct.startswith('text/plain') and 'version=0.0.4' in ct, ct)
        fams, samples = h.parse_metrics(r.body.decode())
        for name, typ in FAMILIES.items():
            self.assertEqual(fams.get(name), typ, 'family %s: %s' % (name, fams.get(name)))
        for name in fams:
            self.assertTrue(name.startswith('switchyard_'), name)
        n = 37
        self.assertEqual(by_pool(pools_of(p.port, n)), {'blue': n})

        def counted():
            _, s = h.parse_metrics(c.metrics_text())
            return s if h.metric(s, 'switchyard_requests_total', pool='blue') == n else None
        s = h.wait_until(counted, SAMPLER, 0.1)
        _, last = h.parse_metrics(c.metrics_text())
        self.assertTrue(s, 'switchyard_requests_total{pool="blue"} = %s, sent %d' % (
            h.metric(last, 'switchyard_requests_total', pool='blue'), n))
        self.assertEqual(h.metric(s, 'switchyard_requests_total', pool='green'), 0)
        per_srv = sum(h.metric(s, 'switchyard_requests_total', pool='blue', server=x) for x in
                      ('b1', 'b2'))
        self.assertEqual(per_srv, n)
        self.assertEqual(h.metric(s, 'switchyard_responses_total',
                                  **{'pool': 'blue', 'class': '2xx'}), n)
        self.assertEqual(h.metric(s, 'switchyard_request_duration_seconds_count', pool='blue'), n)
        self.assertGreater(h.metric(s, 'switchyard_bytes_out_total', pool='blue'), 0)
        self.assertEqual(h.metric(s, 'switchyard_generation'), c.generation())
        self.assertEqual(h.metric(s, 'switchyard_standby_share_ratio'), 0)
        self.assertEqual(h.metric(s, 'switchyard_live_pool', pool='blue'), 1)
        self.assertEqual(h.metric(s, 'switchyard_live_pool', pool='green'), 0)
        self.assertEqual(h.metric(s, 'switchyard_rollout_phase'), 0)
        for pool, srv in (('blue', 'b1'), ('blue', 'b2'), ('green', 'g1')):
            self.assertEqual(h.metric(s, 'switchyard_server_up', pool=pool, server=srv), 1)
            self.assertEqual(h.metric(s, 'switchyard_server_health', pool=pool, server=srv), 1)
            self.assertEqual(h.metric(s, 'switchyard_server_admin_state', pool=pool, server=srv), 0)
        # after changes
        self.assertOk(c.weights(30))
        self.assertOk(c.admin('blue', 'b1', 'drain'))
        self.assertOk(c.admin('blue', 'b2', 'maint'))
        _, s = h.parse_metrics(c.metrics_text())
        self.assertAlmostEqual(h.metric(s, 'switchyard_standby_share_ratio'), 0.3)
        self.assertEqual(h.metric(s, 'switchyard_generation'), c.generation())
        self.assertEqual(h.metric(s, 'switchyard_server_admin_state', pool='blue', server='b1'), 1)
        self.assertEqual(h.metric(s, 'switchyard_server_admin_state', pool='blue', server='b2'), 2)
        self.assertOk(c.rollback())
        _, s = h.parse_metrics(c.metrics_text())
        self.assertEqual(h.metric(s, 'switchyard_standby_share_ratio'), 0)
        self.assertEqual(h.metric(s, 'switchyard_generation'), c.generation())

    def test_down_server_gauges(self):
        p, c = self.start(green_extra=['--health', 'down'])
        st = c.status()
        self.assertEqual(self.server(st, 'green', 'g1')['health'], 'down')
        self.assertEqual(st['pools']['green']['healthy'], 0)
        _, s = h.parse_metrics(c.metrics_text())
        self.assertEqual(h.metric(s, 'switchyard_server_up', pool='green', server='g1'), 0)
        self.assertEqual(h.metric(s, 'switchyard_server_health', pool='green', server='g1'), 2)
        self.assertEqual(h.metric(s, 'switchyard_server_up', pool='blue', server='b1'), 1)


# ---------------------------------------------------------------------------------------------

class RefusalTest(ControlCase):

    def test_refusals(self):
        p, c = self.start()
        before = self.routing_snapshot(c)
        for method, path in (('GET', '/v1/rollback'), ('GET', '/v1/weights'),
                             ('POST', '/v1/weights'), ('DELETE', '/v1/weights'),
                             ('POST', '/v1/status'), ('PUT', '/v1/events'),
                             ('GET', '/v1/reload'), ('GET', '/v1/servers/blue/b1/drain')):
            self.assertErr(c.request(method, path), 405, 'invalid', msg='%s %s' % (method, path))
        for path in ('/v1/nope', '/', '/v2/status', '/v1/status/x'):
            self.assertErr(c.get(path), 404, 'not_found', msg=path)
        for body in ('{bad', '[1]', '"x"', '{"reason": "a"', '\xff'):
            self.assertErr(c.post('/v1/rollback', body), 400, 'invalid', msg='body %r' % body)
        self.assertErr(c.put('/v1/weights', '{"standby_percent": 50'), 400, 'invalid')
        big = json.dumps({'reason': 'x' * (70 * 1024)})
        self.assertErr(c.post('/v1/rollback', big), 413, 'invalid', msg='70 KiB body')
        just = '{"reason": "%s"}' % ('y' * (60 * 1024))       # under 64 KiB: fine
        self.assertOk(c.post('/v1/rollback', just))
        g, routing, admin = self.routing_snapshot(c)
        self.assertEqual((g, routing, admin), (before[0] + 1, before[1], before[2]),
                         'only the one good rollback may have changed something')
        self.assertTrue(p.alive())

    def test_cutover_refusals(self):
        """Bad cutover requests are refused and change nothing (the rollout engine's own
        behaviour is tested in test_rollout.py)."""
        p, c = self.start()
        before = self.routing_snapshot(c)
        self.assertErr(c.post('/v1/cutover', {}), 400, 'invalid')
        self.assertErr(c.post('/v1/cutover', {'to': 'red'}), 400, 'invalid')
        self.assertErr(c.post('/v1/cutover', {'to': 'blue'}), 400, 'invalid')  # already live
        self.assertErr(c.post('/v1/cutover', {'to': 'green', 'plan': 'linear:0%'}), 400,
                       'invalid')
        self.assertErr(c.post('/v1/cutover', {'to': 'green', 'bogus': 1}), 400, 'invalid')
        self.assertEqual(self.routing_snapshot(c), before)

    def test_peer_not_allowed(self):
        if os.geteuid() != 0:
            self.skipTest('needs root (to run a client as uid %d)' % NOBODY)
        p, c = self.start()
        sock = p.config['control']['socket']
        self.assertEqual(stat.S_IMODE(os.stat(sock).st_mode), 0o660)
        os.chmod(self.tmpdir, 0o755)
        os.chmod(sock, 0o666)
        before = self.routing_snapshot(c)
        for method, target, body in (('PUT', '/v1/weights', '{"standby_percent": 50}'),
                                     ('POST', '/v1/rollback', ''),
                                     ('POST', '/v1/servers/blue/b1/maint', ''),
                                     ('GET', '/v1/status', ''), ('GET', '/metrics', '')):
            status, j, raw = h.request_as_nobody(sock, method, target, body)
            self.assertEqual(status, 403, '%s %s as uid %d: %s' % (method, target, NOBODY, raw))
            self.assertEqual(j and j.get('ok'), False, raw)
            self.assertEqual(j['error']['code'], 'forbidden', raw)
        self.assertEqual(self.routing_snapshot(c), before, 'a forbidden peer changed something')
        self.assertEqual(by_pool(pools_of(p.port, 20)), {'blue': 20})

    def test_peer_allowed_by_uid(self):
        if os.geteuid() != 0:
            self.skipTest('needs root (to run a client as uid %d)' % NOBODY)
        p, c = self.start(extra={'control': {'allow_uids': [NOBODY]}})
        sock = p.config['control']['socket']
        os.chmod(self.tmpdir, 0o755)
        os.chmod(sock, 0o666)
        status, j, raw = h.request_as_nobody(sock, 'PUT', '/v1/weights', '{"standby_percent": 50}')
        self.assertEqual(status, 200, raw)
        self.assertEqual(j['generation'], 2, raw)
        self.assertEqual(c.status()['routing']['standby_bp'], 5000)
        ev = [e for e in c.events(0).data['events'] if e['type'] == 'routing']
        self.assertIn('uid %d' % NOBODY, ev[-1].get('peer', ''), ev)


# ---------------------------------------------------------------------------------------------

class TcpTest(ControlCase):

    def test_tcp_listener_token(self):
        port = h.free_port()
        token = 'tcp-test-token-0123456789abcdef'
        tf = os.path.join(self.tmpdir, 'token')
        with open(tf, 'w') as f:
            f.write(token + '\n')
        audit = os.path.join(self.tmpdir, 'audit.log')
        p, c = self.start(extra={'control': {'listen': '127.0.0.1:%d' % port, 'token_file': tf},
                                 'log': {'audit': audit}})
        for tok in (None, 'wrong-token-0123456789abcdef', token + 'x', token[:-1]):
            t = h.Ctl(tcp=('127.0.0.1', port), token=tok)
            self.assertErr(t.get('/v1/status'), 401, 'forbidden', msg='token %r' % tok)
            self.assertErr(t.weights(50), 401, 'forbidden', msg='token %r' % tok)
        t = h.Ctl(tcp=('127.0.0.1', port))
        r = t.get('/v1/status', headers={'Authorization': 'Basic ' + token})
        self.assertErr(r, 401, 'forbidden', msg='Basic scheme')
        self.assertEqual(c.status()['routing']['standby_bp'], 0, 'a refused TCP request changed '
                         'the split')
        good = h.Ctl(tcp=('127.0.0.1', port), token=token)
        d = self.assertOk(good.get('/v1/status'))
        self.assertEqual(d['routing']['live'], 'blue')
        self.assertOk(good.weights(5))
        self.assertEqual(c.status()['routing']['standby_bp'], 500)
        self.assertEqual(good.get('/metrics').status, 200)
        lines = h.wait_until(lambda: open(audit).read().splitlines(), 2)
        self.assertTrue(lines, 'no audit line for the TCP mutation')
        rec = json.loads(lines[-1])
        self.assertIn('token', json.dumps(rec['peer']), 'audit peer of a TCP request: %r' % rec)


# ---------------------------------------------------------------------------------------------

class AuditTest(ControlCase):

    def test_audit_lines(self):
        audit = os.path.join(self.tmpdir, 'audit.log')
        p, c = self.start(extra={'log': {'audit': audit}})
        c.status()
        c.events(0)
        c.metrics_text()
        self.assertOk(c.weights(30))                                        # 1 → 2
        self.assertErr(c.weights(300), 400, 'invalid', 'standby_percent')  # 2 → 2
        self.assertErr(c.weights(10, if_generation=1), 409, 'conflict')     # 2 → 2
        self.assertOk(c.rollback('audit me'))                               # 2 → 3
        self.assertOk(c.admin('blue', 'b1', 'drain'))                       # 3 → 3
        self.assertOk(c.post('/v1/reload'))                                 # 3 → 3
        want = [
            ('PUT', '/v1/weights', 200, None, 1, 2),
            ('PUT', '/v1/weights', 400, 'invalid', 2, 2),
            ('PUT', '/v1/weights', 409, 'conflict', 2, 2),
            ('POST', '/v1/rollback', 200, None, 2, 3),
            ('POST', '/v1/servers/blue/b1/drain', 200, None, 3, 3),
            ('POST', '/v1/reload', 200, None, 3, 3),
        ]

        # The audit log holds the mutations and, as {"time", "event"} lines, every event
        # (DESIGN §6); reads leave no line.
        def read():
            try:
                with open(audit) as f:
                    ls = [x for x in f.read().splitlines() if '"event":' not in x[:60]]
            except OSError:
                return None
            return ls if len(ls) >= len(want) else None
        lines = h.wait_until(read, 3)
        self.assertTrue(lines, 'audit log: %r' % (read() or open(audit).read()
                                                  if os.path.exists(audit) else 'missing'))
        self.assertEqual(len(lines), len(want), 'one line per mutation, none for reads:\n%s'
                         % '\n'.join(lines))
        with open(audit) as f:
            events = [json.loads(x)['event'] for x in f.read().splitlines()
                      if '"event":' in x[:60]]
        self.assertIn('routing', [e.get('type') for e in events], events)
        self.assertIn('admin', [e.get('type') for e in events], events)
        recs = [json.loads(x) for x in lines]
        for rec, (method, path, status, code, gb, ga) in zip(recs, want):
            self.assertIsInstance(rec.get('time'), str, rec)
            self.assertEqual(rec['peer'].get('uid'), os.getuid(), rec)
            self.assertEqual(rec['peer'].get('pid'), os.getpid(), rec)
            self.assertEqual((rec['method'], rec['path'], rec['status']), (method, path, status),
                             rec)
            self.assertIn('code', rec, rec)
            self.assertEqual(rec['code'], code, rec)
            self.assertEqual((rec['generation_before'], rec['generation_after']), (gb, ga), rec)
        self.assertEqual(recs[0]['request'], {'standby_percent': 30})
        self.assertEqual(recs[2]['request'], {'standby_percent': 10, 'if_generation': 1})
        self.assertEqual(recs[3]['request'].get('reason'), 'audit me')


# ---------------------------------------------------------------------------------------------

class StateTest(ControlCase):

    def state_config(self, **extra):
        self.blue = [self.origin('blue', 'b1'), self.origin('blue', 'b2')]
        self.g1 = self.origin('green', 'g1')
        e = {'state_file': os.path.join(self.tmpdir, 'state.json')}
        e.update(extra)
        return self.config(self.blue, [self.g1], routing={'standby_percent': 10}, extra=e)

    def stop(self, p):
        p.expected_exit = True
        rc = p.stop()
        self.assertEqual(rc, 0, 'switchyard exit status after SIGTERM')

    def test_state_survives_restart(self):
        cfg = self.state_config()
        p = self.proxy(cfg)
        c = h.ctl_for(p)
        self.assertEqual(c.status()['routing']['standby_bp'], 1000, 'the config split at start')
        self.assertOk(c.weights(25))
        self.assertOk(c.admin('blue', 'b1', 'drain'))
        gen = c.generation()
        with open(cfg['state_file']) as f:
            saved = json.load(f)        # written atomically: always a whole JSON document
        self.assertIsInstance(saved, dict)
        self.stop(p)
        p2 = self.proxy(cfg)
        c2 = h.ctl_for(p2)
        st = c2.status()
        self.assertEqual(st['routing']['standby_bp'], 2500, 'split not restored: %s' % st['routing'])
        self.assertEqual(st['generation'], gen)
        self.assertEqual(self.server(st, 'blue', 'b1')['admin'], 'drain')
        self.assertEqual(self.server(st, 'blue', 'b2')['admin'], 'ready')
        got = pools_of(p2.port, 600, conns=3)
        share = by_pool(got)['green'] / 600.0
        self.assertTrue(0.19 <= share <= 0.31, 'green share %.2f after restart at 25%%' % share)
        self.assertNotIn('b1', by_server(got), 'drained b1 served after the restart')
        # the restored generation keeps counting
        r = c2.rollback()
        self.assertEqual(r.generation, gen + 1)

    def test_corrupt_state_ignored(self):
        cfg = self.state_config()
        for content in ('garbage\n', '{"version":2}', '{"version": 1, "generation": "x"}', ''):
            with open(cfg['state_file'], 'w') as f:
                f.write(content)
            p = self.proxy(cfg)
            c = h.ctl_for(p)
            st = c.status()
            self.assertEqual(st['routing']['standby_bp'], 1000,
                             'state file %r: config split not used' % content)
            self.assertEqual(st['routing']['live'], 'blue')
            self.assertTrue(all(s['admin'] == 'ready' for s in st['pools']['blue']['servers']))
            self.assertIn('state file', p.err.text())
            self.assertRegex(p.err.text(), r'state file .*ignored',
                             'state file %r: no "state file ... ignored" message' % content)
            self.stop(p)

    def test_old_state_ignored_generation_moves_forward(self):
        cfg = self.state_config(state_max_age='1s')
        p = self.proxy(cfg)
        c = h.ctl_for(p)
        self.assertOk(c.weights(25))
        self.assertOk(c.weights(30))
        self.assertOk(c.admin('blue', 'b1', 'maint'))
        gen = c.generation()
        self.stop(p)
        time.sleep(2.1)
        p2 = self.proxy(cfg)
        c2 = h.ctl_for(p2)
        st = c2.status()
        self.assertEqual(st['routing']['standby_bp'], 1000, 'old state file used: %s'
                         % st['routing'])
        self.assertEqual(self.server(st, 'blue', 'b1')['admin'], 'ready')
        self.assertGreater(st['generation'], gen, 'generation went back after ignoring an old '
                           'state file')
        i, m = p2.err.wait_for(r'warn.*state file .*ignored', 2)
        self.assertTrue(m, 'no warning for the old state file:\n%s' % p2.err.text())
        self.assertRegex(p2.err.lines[i], r'state_max_age|older|old')


# ---------------------------------------------------------------------------------------------

class SocketTest(ControlCase):

    def test_socket_mode_and_removal(self):
        p, c = self.start()
        sock = p.config['control']['socket']
        st = os.stat(sock)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660, oct(st.st_mode))
        p.expected_exit = True
        self.assertEqual(p.stop(), 0)
        self.assertFalse(os.path.exists(sock), 'control socket left behind after SIGTERM')

    def test_second_proxy_same_socket_refused(self):
        b1 = self.origin('blue', 'b1')
        g1 = self.origin('green', 'g1')
        shared = os.path.join(self.tmpdir, 'shared.sock')
        cfg = self.config([b1], [g1], extra={'control': {'socket': shared}})
        p = self.proxy(cfg)
        c = h.Ctl(shared)
        self.assertOk(c.weights(7))
        path2 = os.path.join(self.tmpdir, 'second.yaml')
        with open(path2, 'w') as f:
            f.write(h.to_yaml(cfg) + '\n')
        r = subprocess.run([h.SWITCHYARD, '-c', path2], capture_output=True, timeout=15,
                           preexec_fn=h._preexec, stdin=subprocess.DEVNULL)
        err = r.stderr.decode('utf-8', 'replace')
        self.assertNotEqual(r.returncode, 0, 'a second proxy on the same socket started:\n' + err)
        self.assertIn('another process answers there', err)
        # the first one still owns its socket
        self.assertTrue(os.path.exists(shared))
        d = c.status()
        self.assertEqual(d['routing']['standby_bp'], 700)
        self.assertTrue(p.alive())

    def test_stale_socket_replaced(self):
        b1 = self.origin('blue', 'b1')
        g1 = self.origin('green', 'g1')
        path = os.path.join(self.tmpdir, 'stale.sock')
        s = socket.socket(socket.AF_UNIX)
        s.bind(path)
        s.close()                      # bound, never listening, closed: a stale file
        self.assertTrue(os.path.exists(path))
        p = self.proxy(self.config([b1], [g1], extra={'control': {'socket': path}}))
        self.assertTrue(p.alive())
        st = os.stat(path)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660)
        self.assertEqual(h.Ctl(path).status()['routing']['live'], 'blue')


if __name__ == '__main__':
    h.main()
