"""Rollout (DESIGN §6, §8): the cutover state machine driven through the control API against the
real daemon and real upstreams on 127.0.0.1.

  1. a full 3-step cutover under steady keep-alive load: zero failed requests, each step's green
     share within a few points of the plan, ends promoted with green live;
  2. automatic rollback naming the gate that failed (error_rate, p99, healthy_ratio) while the
     live pool keeps answering every request, and nothing reaching green afterwards;
  3. too little traffic: the step holds (`insufficient`), then on_insufficient rollback|promote
     after progress_deadline;
  4. manual pause / resume / promote / rollback from every state, and the illegal ones (409);
  5. idempotent cutover by id, a second rollout refused, `if_generation` protecting an
     operator's rollback from a pipeline's stale promote;
  6. pre-checks: an unhealthy target (409), the live pool as target (400);
  7. a restart mid-rollout resumes it paused at the same step and share (state_file);
  8. the preview header (allow_from, token), stripped before forwarding.

Plans, windows and health intervals are short (holds of 1-2 s, gates.window 3 s,
min_requests 5, health every 300 ms) so that the whole file runs in about a minute.

  SWITCHYARD=build/switchyard ORIGIN=build/tests/origin/origin \
    python3 tests/integration/test_rollout.py -v
"""

import datetime
import http.server
import json
import os
import socketserver
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

SANITIZED = os.environ.get('SWITCHYARD_SANITIZE', 'none') not in ('', 'none')
SLACK = 3.0 if SANITIZED else 1.0          # multiplier for waits on the engine's 1 s ticks

HEALTH = {'interval': '300ms', 'timeout': '300ms', 'rise': 1, 'fall': 2}
GATES = {'window': '3s', 'min_requests': 5}
SHARE_TOLERANCE = 3.0                      # percentage points per step (test 1)
EVENT_MARGIN = 0.005                       # s: event times have ms resolution


def event_time(e):
    """An event's "time" (UTC, ms) as a time.time() value."""
    t = datetime.datetime.strptime(e['time'], '%Y-%m-%dT%H:%M:%S.%fZ')
    return t.replace(tzinfo=datetime.timezone.utc).timestamp()


# ---------------------------------------------------------------------------------------------
# A Python upstream: /health answers 200 (unless told otherwise), everything else `status`
# after `delay` seconds. Names pool and server like the test origin.
# ---------------------------------------------------------------------------------------------

class Responder:
    def __init__(self, name, pool='green', status=200, delay=0.0, health_status=200):
        self.name = name
        self.pool = pool
        self.status = status
        self.delay = delay
        self.health_status = health_status
        self.hits = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'
            timeout = 15
            wbufsize = 65536       # head and body in one write (flushed after each request)

            def log_message(self, *a):
                pass

            def _answer(self):
                n = int(self.headers.get('Content-Length') or 0)
                if n:
                    self.rfile.read(n)
                if self.path.split('?', 1)[0] == '/health':
                    status, body = outer.health_status, b'ok'
                else:
                    with outer.lock:
                        outer.hits += 1
                    if outer.delay:
                        time.sleep(outer.delay)
                    status = outer.status
                    body = b'%d from %s/%s\n' % (status, outer.pool.encode(), outer.name.encode())
                self.send_response(status)
                self.send_header('Content-Length', str(len(body)))
                self.send_header('X-Origin-Pool', outer.pool)
                self.send_header('X-Origin-Server', outer.name)
                self.end_headers()
                if self.command != 'HEAD':
                    self.wfile.write(body)

            do_GET = do_POST = do_HEAD = _answer

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request, client_address):
                pass

        self.srv = Server((h.LOOPBACK, 0), Handler)
        self.port = self.srv.server_address[1]
        self.t = threading.Thread(target=self.srv.serve_forever, kwargs={'poll_interval': 0.05},
                                  daemon=True)
        self.t.start()

    @property
    def address(self):
        return '%s:%d' % (h.LOOPBACK, self.port)

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


# ---------------------------------------------------------------------------------------------
# Continuous keep-alive load
# ---------------------------------------------------------------------------------------------

class Load:
    """`threads` clients sending GET / in a loop over keep-alive connections (reconnecting when
    the proxy closes one). records: (t_sent, t_done, status, pool, error) with wall-clock times
    (the clock of the events' "time")."""

    def __init__(self, port, threads=1, pause=0.0, target='/'):
        self.port = port
        self.nthreads = threads
        self.pause = pause
        self.target = target
        self.records = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.ts = []

    def _run(self, k):
        c = None
        i = 0
        while not self.stopping.is_set():
            t0 = time.time()
            try:
                if c is None:
                    c = h.Client(self.port, timeout=10)
                r = c.request('GET', '%s?i=%d-%d' % (self.target, k, i))
                rec = (t0, time.time(), r.status, r.header('X-Origin-Pool'),
                       None if r.status == 200 else r.body[:120].decode('latin-1'))
                if r.wants_close():
                    c.close()
                    c = None
            except Exception as e:           # a failed request is a record, not a crash
                rec = (t0, time.time(), None, None, repr(e))
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
            t = threading.Thread(target=self._run, args=(k,), daemon=True, name='load-%d' % k)
            t.start()
            self.ts.append(t)
        return self

    def stop(self):
        self.stopping.set()
        for t in self.ts:
            t.join(15)
        return self.snapshot()

    def snapshot(self):
        with self.lock:
            return list(self.records)

    def count(self):
        with self.lock:
            return len(self.records)


def failed(recs, allow=lambda r: False):
    """Records that are not a 200 (and not excused by allow)."""
    return [r for r in recs if (r[2] != 200 or r[4]) and not allow(r)]


def fmt_recs(recs, t0, limit=15):
    return '\n'.join('  %+.3fs..%+.3fs status=%s pool=%s %s' % (
        a - t0, b - t0, st, pool, repr(err) if err else '') for a, b, st, pool, err in recs[:limit])


def by_pool(recs):
    out = {}
    for r in recs:
        out[r[3]] = out.get(r[3], 0) + 1
    return out


def burst(port, n, headers=None, target='/'):
    """n requests on one keep-alive connection: ({pool: count}, [non-200 responses])."""
    pools = {}
    bad = []
    with h.Client(port, timeout=10) as c:
        for i in range(n):
            r = c.request('GET', '%s?b=%d' % (target, i), headers)
            pools[r.header('X-Origin-Pool')] = pools.get(r.header('X-Origin-Pool'), 0) + 1
            if r.status != 200:
                bad.append(r.summary(100))
    return pools, bad


# ---------------------------------------------------------------------------------------------

class RolloutCase(h.ProxyTestCase):
    WATCHDOG = 60.0

    def setUp(self):
        super().setUp()
        self._responders = []
        self._loads = []
        self._ctls = []

    def _cleanup(self):
        for ld in getattr(self, '_loads', []):
            ld.stopping.set()
        for ld in getattr(self, '_loads', []):
            for t in ld.ts:
                t.join(5)
        super()._cleanup()
        for r in getattr(self, '_responders', []):
            try:
                r.close()
            except Exception:
                pass

    def diagnostics(self):
        out = [super().diagnostics()]
        for c in getattr(self, '_ctls', []):
            try:
                st = c.status()
                out.append('--- status of %s:\n  routing %s\n  rollout %s\n' % (
                    c.sock, json.dumps(st['routing']), json.dumps(st['rollout'])))
                evs = c.events(0, timeout=2).data['events']
                out.append('--- events of %s (health, routing, rollout, gate):\n%s\n' % (
                    c.sock, '\n'.join('  %s %s %s %s' % (
                        e['time'], e['type'], e.get('action') or '%s/%s %s->%s' % (
                            e.get('pool'), e.get('server'), e.get('from'), e.get('to')),
                        json.dumps({k: e[k] for k in ('standby_percent', 'live', 'state', 'step',
                                                       'weight_percent', 'reason',
                                                       'insufficient') if k in e}))
                        for e in evs)))
            except Exception as e:
                out.append('--- status of %s unavailable: %r\n' % (c.sock, e))
        return ''.join(out)

    # setup helpers ----------------------------------------------------------------------------

    def responder(self, name, **kw):
        r = Responder(name, **kw)
        self._responders.append(r)
        return r

    def load(self, port, **kw):
        ld = Load(port, **kw)
        self._loads.append(ld)
        return ld.start()

    def rconfig(self, blue, green, rollout=None, routing=None, sock=None, extra=None):
        ro = {'gates': dict(GATES)}
        for k, v in (rollout or {}).items():
            if k == 'gates':
                ro['gates'].update(v)
            else:
                ro[k] = v
        ex = {'health': dict(HEALTH), 'rollout': ro}
        ex.update(extra or {})
        cfg = self.config(blue, green, routing=routing, extra=ex)
        if sock:
            cfg['control'] = {'socket': os.path.join(self.tmpdir, sock)}
        return cfg

    def start_proxy(self, cfg, healthy=('blue', 'green')):
        """Starts a proxy, waits until the pools in `healthy` are up; returns (proxy, Ctl)."""
        p = self.proxy(cfg)
        c = h.ctl_for(p)
        self._ctls.append(c)

        def ok():
            st = c.status()
            return all(s['health'] == 'up' for pn in healthy for s in st['pools'][pn]['servers'])
        if not h.wait_until(ok, 5.0):
            self.fail('pools %s not healthy: %s' % (healthy, json.dumps(c.status()['pools'])))
        return p, c

    def basic(self, **kw):
        self.b1 = self.origin('blue', 'b1')
        self.g1 = self.origin('green', 'g1')
        return self.start_proxy(self.rconfig([self.b1], [self.g1], **kw))

    # API helpers ------------------------------------------------------------------------------

    def cutover(self, c, expect=202, **body):
        body.setdefault('to', 'green')
        r = c.post('/v1/cutover', body)
        if r.status != expect:
            self.fail('POST /v1/cutover %s: expected %d, got %s\n%s' % (
                json.dumps(body), expect, r.summary(1500), self._short_diag()))
        if expect == 202:
            self.assertTrue(r.ok, r.summary())
            self.assertEqual(r.data['state'], 'progressing', r.summary())
        return r

    def call(self, c, what, expect=200, **body):
        r = c.post('/v1/' + what, body)
        if r.status != expect:
            self.fail('POST /v1/%s %s: expected %d, got %s\nrollout now: %s' % (
                what, json.dumps(body), expect, r.summary(1500),
                json.dumps(c.status()['rollout'])))
        return r

    def wait_rollout(self, c, pred, timeout, what):
        """Polls status until pred(status) holds; returns that status."""
        deadline = time.monotonic() + timeout * SLACK
        st = None
        while time.monotonic() < deadline:
            st = c.status()
            if pred(st):
                return st
            time.sleep(0.05)
        self.fail('%s: not within %.1fs\nrouting: %s\nrollout: %s' % (
            what, timeout * SLACK, json.dumps(st['routing']), json.dumps(st['rollout'])))

    def wait_outcome(self, c, outcome, timeout, what=''):
        return self.wait_rollout(
            c, lambda s: s['rollout']['state'] == 'stable' and s['rollout']['outcome'] == outcome,
            timeout, 'rollout %s %s' % (outcome, what))

    def events(self, c, since=0, types=None):
        r = c.events(since)
        self.assertEqual(r.status, 200, r.summary())
        evs = r.data['events']
        return [e for e in evs if types is None or e['type'] in types]

    def last_seq(self, c):
        return c.events(0).data['next']

    def assertRouting(self, st, live, percent, msg=''):
        rt = st['routing']
        if rt['live'] != live or abs(rt['standby_percent'] - percent) > 1e-9:
            self.fail('routing: expected live %s standby %.2f%%, got %s %s\nrollout: %s' % (
                live, percent, json.dumps(rt), msg, json.dumps(st['rollout'])))

    def assertAllTo(self, port, pool, n=100, msg=''):
        pools, bad = burst(port, n)
        if pools != {pool: n} or bad:
            self.fail('%d requests: expected all on %s, got %s (non-200: %s) %s' % (
                n, pool, pools, bad[:3], msg))


# ---------------------------------------------------------------------------------------------
# 1. A full cutover under steady load
# ---------------------------------------------------------------------------------------------

class FullCutoverTest(RolloutCase):

    def test_three_step_cutover_under_load(self):
        """Plan 25%/2s, 50%/2s, 100% with one keep-alive client sending continuously: zero failed
        requests; while each step was published, green's share of the requests is within
        ±3 points of its weight; the rollout ends promoted with green live and all traffic on
        green."""
        p, c = self.basic()
        mark = self.last_seq(c)
        ld = self.load(p.port)
        time.sleep(0.5)
        plan = [{'weight': 25, 'hold': '2s'}, {'weight': 50, 'hold': '2s'}, {'weight': 100}]
        self.cutover(c, plan=plan, id='full-1')
        st = self.wait_outcome(c, 'promoted', 12.0)
        self.assertRouting(st, 'green', 0.0)
        self.assertEqual(st['rollout']['to'], 'green')
        time.sleep(0.5)
        recs = ld.stop()
        t0 = recs[0][0]

        bad = failed(recs)
        if bad:
            self.fail('%d of %d requests failed during the cutover:\n%s' % (
                len(bad), len(recs), fmt_recs(bad, t0)))

        routing = self.events(c, mark, ('routing',))
        summary = [(e['action'], e['live'], e['standby_percent']) for e in routing]
        self.assertEqual(summary, [('started', 'blue', 25.0), ('step', 'blue', 50.0),
                                   ('promote', 'green', 0.0)],
                         'routing events during the cutover: %s' % json.dumps(routing))
        ro = [e['action'] for e in self.events(c, mark, ('rollout',))]
        self.assertEqual(ro, ['started', 'step', 'promoted'], 'rollout events')

        times = [event_time(e) for e in routing]
        phases = [('before', 0.0, recs[0][0] - 1, times[0]),
                  ('step 1', 25.0, times[0], times[1]),
                  ('step 2', 50.0, times[1], times[2]),
                  ('promoted', 100.0, times[2], recs[-1][1] + 1)]
        lines = []
        problems = []
        for name, want, a, b in phases:
            inside = [r for r in recs if r[0] >= a + EVENT_MARGIN and r[1] < b - EVENT_MARGIN]
            n = len(inside)
            g = sum(1 for r in inside if r[3] == 'green')
            share = 100.0 * g / n if n else float('nan')
            lines.append('  %-8s %5.1fs  want %5.1f%%  got %6.2f%% green (%d of %d)' % (
                name, b - a if name.startswith('step') else 0.0, want, share, g, n))
            if name.startswith('step'):
                if n < 1000:
                    problems.append('%s: only %d requests (need 1000 for a ±3 point figure)'
                                    % (name, n))
                elif abs(share - want) > SHARE_TOLERANCE:
                    problems.append('%s: green share %.2f%%, want %.1f ± %.1f' % (
                        name, share, want, SHARE_TOLERANCE))
            elif n and share != want:
                problems.append('%s: green share %.2f%%, want exactly %.0f%%' % (name, share, want))
        print('\nstep shares (one keep-alive client, %d requests in all):\n%s' % (
            len(recs), '\n'.join(lines)))
        if problems:
            self.fail('\n'.join(problems) + '\n' + '\n'.join(lines))
        # the steps lasted at least their holds
        self.assertGreaterEqual(times[1] - times[0], 2.0 - 0.01, 'step 1 shorter than its hold')
        self.assertGreaterEqual(times[2] - times[1], 2.0 - 0.01, 'step 2 shorter than its hold')
        self.assertAllTo(p.port, 'green', 50, 'after the promotion')


# ---------------------------------------------------------------------------------------------
# 2. Automatic rollback, naming the gate
# ---------------------------------------------------------------------------------------------

class AutoRollbackTest(RolloutCase):

    def run_failing(self, p, c, gate, plan, threads=1, pause=0.0, during=None, deadline=6.0,
                    green_may_fail=False):
        """Load, cutover, wait for the automatic rollback; checks the reason names `gate`, no
        failure except green's own 5xx when green_may_fail, and nothing on green after it."""
        mark = self.last_seq(c)
        ld = self.load(p.port, threads=threads, pause=pause)
        time.sleep(0.3)
        r = self.cutover(c, plan=plan)
        t_start = time.monotonic()
        if during:
            during()
        st = self.wait_outcome(c, 'rolled_back', deadline, 'on gate %s' % gate)
        took = time.monotonic() - t_start
        self.assertRouting(st, 'blue', 0.0, 'after the automatic rollback')
        reason = st['rollout']['reason']
        self.assertIn('gate %s failed' % gate, reason, 'status reason: %r' % reason)
        self.assertRegex(reason, r'observed [0-9.]+(ms)? [<>] threshold [0-9.]+',
                         'the reason gives the observed value and the threshold')
        g = st['rollout']['gates'][gate]
        self.assertTrue(g['enabled'] and g['evaluated'] and not g['pass'],
                        'gate %s in status: %s' % (gate, g))
        evs = self.events(c, mark, ('rollout', 'routing', 'gate'))
        rb = [e for e in evs if e['type'] == 'rollout' and e['action'] == 'rolled_back']
        self.assertEqual(len(rb), 1, 'one rolled_back event: %s' % json.dumps(evs))
        self.assertIn('gate %s failed' % gate, rb[0]['reason'])
        routed = [e for e in evs if e['type'] == 'routing' and e['action'] == 'rollback']
        self.assertEqual(len(routed), 1, 'one routing rollback event: %s' % json.dumps(evs))
        self.assertEqual((routed[0]['live'], routed[0]['standby_percent']), ('blue', 0.0))
        t_rb = event_time(routed[0])
        time.sleep(0.7)
        recs = ld.stop()
        t0 = recs[0][0]
        allow = (lambda rec: rec[3] == 'green' and rec[2] == 500) if green_may_fail else \
            (lambda rec: False)
        bad = failed(recs, allow)
        after = [rec for rec in recs if rec[0] >= t_rb + EVENT_MARGIN]
        print('\n%s: rolled back %.2fs after the cutover; reason: %s; requests %s, after the '
              'rollback %s' % (gate, took, reason, by_pool(recs), by_pool(after)))
        if bad:
            self.fail('%d failed requests (the live pool must answer every one):\n%s' % (
                len(bad), fmt_recs(bad, t0)))
        self.assertGreater(len(after), 0, 'no request after the rollback')
        self.assertEqual(by_pool(after), {'blue': len(after)},
                         'requests sent after the rollback event must all go to blue')
        self.assertGreater(by_pool(recs).get('green', 0), 0, 'green got no traffic at all')
        self.assertAllTo(p.port, 'blue', 100, 'after the rollback')
        return st

    def test_error_rate(self):
        """green answers 500 to everything but /health → rolled back on error_rate."""
        self.b1 = self.origin('blue', 'b1')
        g = self.responder('g1', status=500)
        p, c = self.start_proxy(self.rconfig([self.b1], [('g1', g.address)]))
        self.run_failing(p, c, 'error_rate', [{'weight': 30, 'hold': '20s'}, {'weight': 100}],
                         green_may_fail=True, deadline=4.0)

    def test_p99(self):
        """green answers after 300 ms, max_p99 100ms → rolled back on p99 (no request fails)."""
        self.b1 = self.origin('blue', 'b1')
        g = self.responder('g1', delay=0.3)
        p, c = self.start_proxy(self.rconfig([self.b1], [('g1', g.address)],
                                             rollout={'gates': {'max_p99': '100ms'}}))
        st = self.run_failing(p, c, 'p99', [{'weight': 50, 'hold': '20s'}, {'weight': 100}],
                              threads=3, deadline=5.0)
        self.assertGreaterEqual(st['rollout']['gates']['p99']['observed'], 250.0)
        self.assertEqual(st['rollout']['gates']['p99']['threshold'], 100.0)

    def test_healthy_ratio(self):
        """green's health check fails after the start (min_healthy_ratio 1.0) → rolled back on
        healthy_ratio; green keeps answering 200 to traffic, so nothing fails."""
        p, c = self.basic(rollout={'gates': {'min_healthy_ratio': 1.0}})

        def break_green():
            time.sleep(1.2)        # green has served traffic and the gates have passed once
            st = c.status()
            self.assertEqual(st['rollout']['state'], 'progressing',
                             'rollout before green went down: %s' % json.dumps(st['rollout']))
            with h.Client(self.g1.port) as cl:
                r = cl.request('GET', '/_origin/health/down')
                self.assertEqual(r.status, 200)
        self.run_failing(p, c, 'healthy_ratio', [{'weight': 40, 'hold': '20s'}, {'weight': 100}],
                         pause=0.001, during=break_green, deadline=4.0)


# ---------------------------------------------------------------------------------------------
# 3. Too little traffic
# ---------------------------------------------------------------------------------------------

class LowTrafficTest(RolloutCase):

    def test_insufficient_hold_rollback_promote(self):
        """No traffic at all, three proxies at once: on_insufficient hold (progress_deadline
        15m) → still step 1 with insufficient: true well past the 1s hold; rollback and
        promote with progress_deadline 2s → rolled back / promoted, not before the deadline."""
        self.b1 = self.origin('blue', 'b1')
        self.g1 = self.origin('green', 'g1')
        plan = [{'weight': 50, 'hold': '1s'}, {'weight': 100}]
        runs = {}
        for mode in ('hold', 'rollback', 'promote'):
            ro = {'on_insufficient': mode}
            if mode != 'hold':
                ro['progress_deadline'] = '2s'
            p, c = self.start_proxy(self.rconfig([self.b1], [self.g1], rollout=ro,
                                                 sock='ctl-%s.sock' % mode))
            runs[mode] = (p, c)
        for mode, (p, c) in runs.items():
            self.cutover(c, plan=plan)

        # hold: past the hold (1 s) and several ticks later, still step 1 at 50%
        p, c = runs['hold']
        time.sleep(3.0)
        st = c.status()
        ro = st['rollout']
        self.assertEqual((ro['state'], ro['step'], ro['weight_percent'], ro['insufficient']),
                         ('progressing', 1, 50.0, True),
                         'on_insufficient hold, no traffic: %s' % json.dumps(ro))
        self.assertRouting(st, 'blue', 50.0)
        self.assertIn('not enough traffic', ro['reason'])
        self.assertGreater(ro['step_elapsed_s'], 2.0)

        # rollback / promote after progress_deadline
        p, c = runs['rollback']
        st = self.wait_outcome(c, 'rolled_back', 5.0, 'on_insufficient rollback')
        self.assertRouting(st, 'blue', 0.0)
        self.assertIn('on_insufficient: rollback', st['rollout']['reason'])
        self.assertAllTo(p.port, 'blue', 50)

        p, c = runs['promote']
        st = self.wait_outcome(c, 'promoted', 5.0, 'on_insufficient promote')
        self.assertRouting(st, 'green', 0.0)
        self.assertIn('on_insufficient: promote', st['rollout']['reason'])
        self.assertAllTo(p.port, 'green', 50)

        # neither acted before the deadline
        for mode, action in (('rollback', 'rolled_back'), ('promote', 'promoted')):
            evs = self.events(runs[mode][1], 0, ('rollout',))
            t = {e['action']: event_time(e) for e in evs}
            self.assertIn(action, t, json.dumps(evs))
            waited = t[action] - t['started']
            print('\non_insufficient %s acted %.2fs after the start' % (mode, waited))
            self.assertGreaterEqual(waited, 2.0, 'on_insufficient %s before progress_deadline'
                                    % mode)
        self.call(runs['hold'][1], 'rollback')


# ---------------------------------------------------------------------------------------------
# 4. Manual controls
# ---------------------------------------------------------------------------------------------

class ManualTest(RolloutCase):
    WATCHDOG = 80.0

    def test_pause_resume_promote_rollback(self):
        p, c = self.basic()
        ld = self.load(p.port, pause=0.002)
        mark = self.last_seq(c)
        problems = []            # checked at the end, so that one does not hide the others

        # illegal when stable
        for what in ('pause', 'resume', 'promote'):
            r = self.call(c, what, expect=409)
            self.assertEqual(r.code, 'conflict', r.summary())
        self.assertEqual(c.status()['rollout']['state'], 'stable')

        # pause holds the share past the step's hold; resume continues
        self.cutover(c, plan=[{'weight': 20, 'hold': '1s'}, {'weight': 60, 'hold': '30s'},
                              {'weight': 100}])
        r = self.call(c, 'resume', expect=409)          # resume while progressing
        self.assertEqual(r.code, 'conflict', r.summary())
        r = self.call(c, 'pause', reason='looking at a graph')
        self.assertEqual(r.data['state'], 'paused', r.summary())
        time.sleep(2.5)
        st = c.status()
        self.assertEqual((st['rollout']['state'], st['rollout']['step'],
                          st['rollout']['weight_percent']), ('paused', 1, 20.0),
                         'paused past the hold: %s' % json.dumps(st['rollout']))
        self.assertEqual(st['rollout']['reason'], 'looking at a graph')
        self.assertRouting(st, 'blue', 20.0, 'paused')
        r = self.call(c, 'pause', expect=409)            # pause while paused
        r = self.call(c, 'resume')
        self.assertEqual(r.data['state'], 'progressing', r.summary())
        st = self.wait_rollout(c, lambda s: s['rollout']['step'] == 2, 4.0, 'step 2 after resume')
        self.assertEqual(st['rollout']['state'], 'progressing')
        self.assertRouting(st, 'blue', 60.0, 'step 2')

        # promote from progressing; rollback after promote swaps back to blue
        r = self.call(c, 'promote')
        self.assertEqual((r.data['state'], r.data['outcome']), ('stable', 'promoted'), r.summary())
        st = c.status()
        self.assertRouting(st, 'green', 0.0, 'promoted from progressing')
        self.assertAllTo(p.port, 'green', 50, 'after promote from progressing')
        r = self.call(c, 'promote', expect=409)          # nothing left to promote
        r = self.call(c, 'rollback', reason='bad release')
        st = c.status()
        self.assertRouting(st, 'blue', 0.0, 'rollback after a promotion')
        self.assertEqual(st['rollout']['outcome'], 'rolled_back')
        if 'bad release' not in st['rollout']['reason']:
            problems.append('rollback (reason "bad release") after a promotion: status says '
                            'outcome rolled_back but reason %r' % st['rollout']['reason'])
        self.assertAllTo(p.port, 'blue', 50, 'after rollback after promote')

        # promote from paused
        self.cutover(c, plan=[{'weight': 30, 'hold': '30s'}, {'weight': 100}])
        self.call(c, 'pause')
        r = self.call(c, 'promote')
        self.assertEqual((r.data['state'], r.data['outcome']), ('stable', 'promoted'), r.summary())
        self.assertRouting(c.status(), 'green', 0.0, 'promoted from paused')
        self.assertAllTo(p.port, 'green', 50, 'after promote from paused')
        self.call(c, 'rollback')
        self.assertRouting(c.status(), 'blue', 0.0, 'second rollback after a promotion')

        # rollback from progressing
        self.cutover(c, plan=[{'weight': 30, 'hold': '30s'}, {'weight': 100}])
        r = self.call(c, 'rollback')
        st = c.status()
        self.assertRouting(st, 'blue', 0.0, 'rollback from progressing')
        self.assertEqual((st['rollout']['state'], st['rollout']['outcome']),
                         ('stable', 'rolled_back'))
        self.assertAllTo(p.port, 'blue', 50, 'after rollback from progressing')

        # rollback from paused
        self.cutover(c, plan=[{'weight': 30, 'hold': '30s'}, {'weight': 100}])
        self.call(c, 'pause')
        self.call(c, 'rollback')
        st = c.status()
        self.assertRouting(st, 'blue', 0.0, 'rollback from paused')
        self.assertEqual((st['rollout']['state'], st['rollout']['outcome']),
                         ('stable', 'rolled_back'))
        self.assertAllTo(p.port, 'blue', 50, 'after rollback from paused')

        actions = [e['action'] for e in self.events(c, mark, ('rollout',))]
        self.assertEqual(actions, ['started', 'paused', 'resumed', 'step', 'promoted',
                                   'rolled_back',
                                   'started', 'paused', 'promoted', 'rolled_back',
                                   'started', 'rolled_back',
                                   'started', 'paused', 'rolled_back'],
                         'rollout events')

        # a manual weight change pauses a running rollout (and says so: a `paused` event)
        mark = self.last_seq(c)
        self.cutover(c, plan=[{'weight': 30, 'hold': '30s'}, {'weight': 100}])
        r = c.weights(10)
        self.assertEqual(r.status, 200, r.summary())
        st = c.status()
        self.assertEqual(st['rollout']['state'], 'paused', 'PUT /v1/weights during a rollout')
        self.assertRouting(st, 'blue', 10.0)
        time.sleep(1.5)          # no tick moves it on
        st = c.status()
        self.assertEqual(st['rollout']['state'], 'paused', json.dumps(st['rollout']))
        self.assertRouting(st, 'blue', 10.0, 'paused by a manual weight')
        self.call(c, 'resume')
        st = c.status()
        if abs(st['routing']['standby_percent'] - st['rollout']['weight_percent']) > 1e-9:
            problems.append('resume after a manual weight: the rollout (step %s) claims '
                            'weight_percent %.2f but the published split is %.2f%% (the step '
                            'is held and gated at a share it does not have)' % (
                                st['rollout']['step'], st['rollout']['weight_percent'],
                                st['routing']['standby_percent']))
        self.call(c, 'rollback')
        actions = [e['action'] for e in self.events(c, mark, ('rollout',))]
        if actions != ['started', 'paused', 'resumed', 'rolled_back']:
            problems.append('PUT /v1/weights paused the rollout (status state paused) but the '
                            'rollout events were %s, want [started, paused, resumed, '
                            'rolled_back]' % actions)

        recs = ld.stop()
        bad = failed(recs)
        if bad:
            self.fail('%d of %d requests failed:\n%s' % (len(bad), len(recs),
                                                         fmt_recs(bad, recs[0][0])))
        if problems:
            self.fail('\n'.join(problems))


# ---------------------------------------------------------------------------------------------
# 5. Idempotency and if_generation
# ---------------------------------------------------------------------------------------------

class IdempotencyTest(RolloutCase):

    def test_same_id_other_cutover_and_if_generation(self):
        p, c = self.basic()
        mark = self.last_seq(c)
        plan = [{'weight': 10, 'hold': '30s'}, {'weight': 100}]
        r1 = self.cutover(c, plan=plan, id='deploy-42')
        gen = r1.generation
        r2 = self.cutover(c, plan=plan, id='deploy-42')
        self.assertEqual(r2.generation, gen, 'the same cutover again changed the routing')
        for k in ('id', 'from', 'to', 'step', 'steps', 'weight_percent', 'state'):
            self.assertEqual(r2.data[k], r1.data[k], 'field %s: %s vs %s' % (
                k, r1.summary(), r2.summary()))
        self.assertEqual(r2.data['id'], 'deploy-42')
        started = [e for e in self.events(c, mark, ('rollout',)) if e['action'] == 'started']
        self.assertEqual(len(started), 1, 'started events: %s' % json.dumps(started))

        # another cutover while this one runs
        for body in ({'id': 'deploy-43'}, {}):
            r = self.cutover(c, expect=409, plan=plan, **body)
            self.assertEqual(r.code, 'conflict', r.summary())
        st = c.status()
        self.assertEqual((st['rollout']['id'], st['rollout']['state'], st['generation']),
                         ('deploy-42', 'progressing', gen))

        # the pipeline saw `seen`; an operator rolls back; the pipeline's promote must not win
        seen = c.generation()
        r = self.call(c, 'rollback', reason='operator says no')
        self.assertGreater(r.generation, seen)
        r = self.call(c, 'promote', expect=409, if_generation=seen)
        self.assertEqual((r.code, r.error.get('field')), ('conflict', 'if_generation'),
                         r.summary())
        # and a stale cutover with if_generation likewise
        r = self.cutover(c, expect=409, plan=plan, id='deploy-44', if_generation=seen)
        self.assertEqual((r.code, r.error.get('field')), ('conflict', 'if_generation'),
                         r.summary())
        st = c.status()
        self.assertRouting(st, 'blue', 0.0, 'the rollback stands')
        self.assertEqual((st['rollout']['state'], st['rollout']['outcome']),
                         ('stable', 'rolled_back'))
        self.assertAllTo(p.port, 'blue', 50)
        # the same id again after it ended (a pipeline retrying): its state, no new rollout
        gen = c.generation()
        r = c.post('/v1/cutover', {'to': 'green', 'plan': plan, 'id': 'deploy-42'})
        self.assertEqual(r.status, 202, r.summary())
        self.assertEqual((r.data['id'], r.data['state'], r.data['outcome'], r.generation),
                         ('deploy-42', 'stable', 'rolled_back', gen), r.summary())
        started = [e for e in self.events(c, mark, ('rollout',)) if e['action'] == 'started']
        self.assertEqual(len(started), 1, 'started events: %s' % json.dumps(started))
        self.assertRouting(c.status(), 'blue', 0.0, 'a retried cutover after the rollback')


# ---------------------------------------------------------------------------------------------
# 6. Pre-checks
# ---------------------------------------------------------------------------------------------

class PrecheckTest(RolloutCase):

    def test_unhealthy_target_and_live_target(self):
        self.b1 = self.origin('blue', 'b1')
        self.g1 = self.origin('green', 'g1', extra=['--health', 'down'])
        p, c = self.start_proxy(self.rconfig([self.b1], [self.g1]), healthy=('blue',))
        h.wait_until(lambda: c.status()['pools']['green']['servers'][0]['health'] == 'down', 3.0)
        gen = c.generation()
        r = self.cutover(c, expect=409)
        self.assertEqual(r.code, 'conflict', r.summary())
        self.assertRegex(r.error.get('message', ''), r'green has 0 of 1 servers healthy',
                         r.summary())
        r = self.cutover(c, expect=400, to='blue')
        self.assertEqual((r.code, r.error.get('field')), ('invalid', 'to'), r.summary())
        st = c.status()
        self.assertEqual((st['generation'], st['rollout']['state']), (gen, 'stable'))
        self.assertRouting(st, 'blue', 0.0)
        # once green is healthy the same cutover is accepted
        with h.Client(self.g1.port) as cl:
            self.assertEqual(cl.request('GET', '/_origin/health/up').status, 200)
        h.wait_until(lambda: c.status()['pools']['green']['servers'][0]['health'] == 'up', 3.0)
        for plan in ([{'weight': 50, 'hold': '1s'}],
                     [{'weight': 60, 'hold': '1s'}, {'weight': 40, 'hold': '1s'}, {'weight': 100}],
                     'linear:0%/1s', 'nonsense'):
            r = self.cutover(c, expect=400, plan=plan)
            self.assertEqual(r.code, 'invalid', r.summary())
        self.assertEqual(c.status()['rollout']['state'], 'stable')
        self.cutover(c, plan=[{'weight': 10, 'hold': '30s'}, {'weight': 100}])
        self.call(c, 'rollback')


# ---------------------------------------------------------------------------------------------
# 7. Restart mid-rollout
# ---------------------------------------------------------------------------------------------

class RestartTest(RolloutCase):

    def test_restart_resumes_paused(self):
        self.b1 = self.origin('blue', 'b1')
        self.g1 = self.origin('green', 'g1')
        cfg = self.rconfig([self.b1], [self.g1],
                           extra={'state_file': os.path.join(self.tmpdir, 'state.json')})
        p, c = self.start_proxy(cfg)
        self.cutover(c, plan=[{'weight': 10, 'hold': '1s'}, {'weight': 30, 'hold': '60s'},
                              {'weight': 100}], id='deploy-7')
        ld = self.load(p.port, pause=0.002)
        st = self.wait_rollout(c, lambda s: s['rollout']['step'] == 2, 4.0, 'step 2')
        ld.stop()
        before = st
        self.assertRouting(st, 'blue', 30.0)
        p.expected_exit = True
        rc = p.stop()
        self.assertEqual(rc, 0, 'SIGTERM exit code\n%s' % p.stderr_tail())

        p2, c2 = self.start_proxy(cfg)
        st = c2.status()
        ro = st['rollout']
        self.assertEqual((ro['state'], ro['id'], ro['from'], ro['to'], ro['step'], ro['steps'],
                          ro['weight_percent']),
                         ('paused', 'deploy-7', 'blue', 'green', 2, 3, 30.0),
                         'rollout after the restart: %s\nbefore: %s' % (
                             json.dumps(ro), json.dumps(before['rollout'])))
        self.assertRouting(st, 'blue', 30.0, 'after the restart')
        self.assertGreaterEqual(st['generation'], before['generation'])
        pools, bad = burst(p2.port, 1500)
        share = 100.0 * pools.get('green', 0) / 1500
        print('\nafter the restart: %s → green %.2f%% (want 30)' % (pools, share))
        self.assertEqual(bad, [])
        self.assertLessEqual(abs(share - 30.0), 5.0, 'split after the restart: %s' % pools)
        time.sleep(1.5)          # a paused rollout does not continue by itself
        ro = c2.status()['rollout']
        self.assertEqual((ro['state'], ro['step']), ('paused', 2), json.dumps(ro))
        self.call(c2, 'resume')
        self.call(c2, 'promote')
        self.assertRouting(c2.status(), 'green', 0.0, 'promoted after the restart')


# ---------------------------------------------------------------------------------------------
# 8. The preview header
# ---------------------------------------------------------------------------------------------

class PreviewTest(RolloutCase):

    def echo(self, port, headers):
        with h.Client(port) as cl:
            r = cl.request('GET', '/echo', headers)
        self.assertEqual(r.status, 200, r.summary())
        j = r.json()
        names = [k.lower() for k, _ in j['headers']]
        return j['pool'], names

    def check(self, port, headers, pool, what):
        got, names = self.echo(port, headers)
        self.assertEqual(got, pool, '%s: %r went to %s' % (what, headers, got))
        for n in ('x-switchyard-pool', 'x-switchyard-token'):
            self.assertNotIn(n, names, '%s: %s reached the origin (%s)' % (what, n, names))

    def test_preview_header(self):
        self.b1 = self.origin('blue', 'b1')
        self.g1 = self.origin('green', 'g1')
        cases = {
            'lo': {'allow_from': ['127.0.0.0/8']},
            'ten': {'allow_from': ['10.0.0.0/8']},
            'tok': {'token': 's3cret-Token'},
            'both': {'allow_from': ['10.0.0.0/8'], 'token': 's3cret-Token'},
        }
        px = {}
        for name, pv in cases.items():
            px[name] = self.start_proxy(self.rconfig([self.b1], [self.g1],
                                                     routing={'preview': pv},
                                                     sock='ctl-%s.sock' % name))[0].port
        P = 'X-Switchyard-Pool'
        T = 'X-Switchyard-Token'
        self.check(px['lo'], [(P, 'green')], 'green', 'allow_from 127.0.0.0/8')
        self.check(px['lo'], [(P, 'standby')], 'green', 'allow_from 127.0.0.0/8, standby')
        self.check(px['lo'], [(P, 'blue')], 'blue', 'allow_from 127.0.0.0/8, blue')
        self.check(px['lo'], [], 'blue', 'no header')
        self.check(px['ten'], [(P, 'green')], 'blue', 'allow_from 10.0.0.0/8 (refused)')
        self.check(px['tok'], [(P, 'green'), (T, 's3cret-Token')], 'green', 'right token')
        self.check(px['tok'], [(P, 'green'), (T, 'wrong')], 'blue', 'wrong token')
        self.check(px['tok'], [(P, 'green')], 'blue', 'missing token')
        self.check(px['both'], [(P, 'green'), (T, 's3cret-Token')], 'blue',
                   'right token from outside allow_from')
        # a refused header on a kept-alive connection does not change the normal split
        pools, bad = burst(px['ten'], 50, headers=[(P, 'green')])
        self.assertEqual((pools, bad), ({'blue': 50}, []))
        pools, bad = burst(px['lo'], 50, headers=[(P, 'green')])
        self.assertEqual((pools, bad), ({'green': 50}, []))


if __name__ == '__main__':
    h.main()
