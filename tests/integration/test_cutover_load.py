"""Cutover under load (DESIGN §10 "a full cutover and a rollback under steady load: zero failed
requests"; issue 8 "Faults: cutover under load").

A load client counts every error: threads with keep-alive connections (GET /, GET /bytes/N with
a length, chunked GET /bytes/N, POST /echo) and threads sending `Connection: close` requests,
each response checked (status 200, the body complete and exactly what the origin sends, the pool
and server headers naming a configured server of that pool, and for `Connection: close` the
connection closed after it). While it runs, CUTOVER_RUNS repetitions (default 5; the long run
sets 50) each do:

  1. a full cutover (a rollout plan 20% -> 60% -> 100%) to the standby pool: both pools serve
     during the ramp, every request sent after the promotion goes to the new live pool;
  2. a cutover back, rolled back mid-ramp at 50%: the target gets 30-70% of the ramp's requests,
     none after the rollback has answered;
  3. a manual weight change to 30% and back to 0: 15-45% on the standby, then none;
  4. a SIGHUP reload that adds a third server to each pool (odd repetitions) or removes it
     (even): an added server gets traffic, a removed one none;
  5. a server of the live pool drained, then ready again: no request reaches it while drained,
     it gets traffic again after ready.

Every repetition must have zero failed requests. WebSocket: tunnels opened on the live pool stay
up and keep echoing through a full cutover until `drain.tunnel_timeout` after their pool lost its
share, then close; tunnels opened after the cutover go to the new pool and stay up.

  SWITCHYARD=build/switchyard ORIGIN=build/tests/origin/origin CUTOVER_RUNS=5 \
    python3 tests/integration/test_cutover_load.py -v
"""

import bisect
import json
import os
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

SANITIZED = os.environ.get('SWITCHYARD_SANITIZE', 'none') not in ('', 'none')
SLACK = 3.0 if SANITIZED else 1.0           # multiplier for waits on the engine's 1 s ticks
RUNS = max(1, int(os.environ.get('CUTOVER_RUNS', '5')))

HEALTH = {'interval': '500ms', 'timeout': '1s', 'rise': 1, 'fall': 3}
GATES = {'window': '3s', 'min_requests': 5}
PLAN_FULL = [{'weight': 20, 'hold': '1s'}, {'weight': 60, 'hold': '1s'}, {'weight': 100}]
PLAN_HOLD = [{'weight': 50, 'hold': '10m'}, {'weight': 100}]     # rolled back mid-ramp
MANUAL_PERCENT = 30
MIX_SAMPLE = 150                # requests a share is judged on (±~4 points standard deviation)
PHASE_MIN = 0.3                 # s: each state is kept at least this long under the load
PACE = 0.003                    # s: a load thread sends at most one request per PACE (CPU bound)

POOLS = ('blue', 'green')
NAMES = {'blue': ('b1', 'b2', 'b3'), 'green': ('g1', 'g2', 'g3')}

# The load: (kind, threads). 'close' sends Connection: close on a fresh connection each time;
# the others keep their connection alive (reconnecting when the proxy asks to close).
LOAD_MIX = (('keepalive', 3), ('close', 2), ('bytes', 1), ('chunked', 1), ('post', 1))
BYTES_N = 20000
CHUNKED_N = 50000
POST_BODIES = [bytes((i * 7 + k) % 251 for i in range(n)) for k, n in enumerate((1, 700, 4096))]
POST_FNV = [h.fnv1a64(b) for b in POST_BODIES]
PATTERN_BYTES = h.pattern(BYTES_N)
PATTERN_CHUNKED = h.pattern(CHUNKED_N)


# ---------------------------------------------------------------------------------------------
# The load client
# ---------------------------------------------------------------------------------------------

class Load:
    """Threads sending requests until stopped. Each thread keeps its own time-ordered record
    list of (t_sent, t_done, kind, pool, server, error); error is None for a good response."""

    def __init__(self, port, mix=LOAD_MIX, timeout=10.0):
        self.port = port
        self.timeout = timeout
        self.stopping = threading.Event()
        self.lists = []
        self.conns = {}             # kind -> connections opened
        self.threads = []
        for kind, n in mix:
            for _ in range(n):
                recs = []
                self.lists.append(recs)
                self.threads.append(threading.Thread(
                    target=self._run, args=(kind, recs, len(self.threads)), daemon=True,
                    name='load-%s-%d' % (kind, len(self.threads))))

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(self.timeout + 5)

    # one request of each kind ----------------------------------------------------------------

    def _request(self, kind, c, k, i):
        """Sends one request on c and checks the answer: (pool, server, error or None, whether the
        connection is done)."""
        if kind == 'post':
            j = i % len(POST_BODIES)
            r = c.request('POST', '/echo?i=%d-%d' % (k, i), body=POST_BODIES[j])
        elif kind == 'bytes':
            r = c.request('GET', '/bytes/%d?i=%d-%d' % (BYTES_N, k, i))
        elif kind == 'chunked':
            r = c.request('GET', '/bytes/%d?chunked=1&chunk=7000&i=%d-%d' % (CHUNKED_N, k, i))
        elif kind == 'close':
            r = c.request('GET', '/?i=%d-%d' % (k, i), headers=[('Connection', 'close')])
        else:
            r = c.request('GET', '/?i=%d-%d' % (k, i))
        pool, server = r.header('X-Origin-Pool'), r.header('X-Origin-Server')
        if r.status != 200:
            return pool, server, 'status %d: %r' % (r.status, r.body[:120]), True
        if pool not in POOLS or server not in NAMES[pool]:
            return pool, server, 'bad pool/server headers %r/%r' % (pool, server), True
        if kind == 'post':
            try:
                js = r.json()
            except ValueError:
                return pool, server, 'echo body is not JSON: %r' % r.body[:120], True
            want = (pool, server, len(POST_BODIES[j]), POST_FNV[j])
            got = (js.get('pool'), js.get('server'), js.get('body_bytes'), js.get('body_fnv1a'))
            if got != want:
                return pool, server, 'echo %r, want %r' % (got, want), True
        elif kind in ('bytes', 'chunked'):
            want = PATTERN_BYTES if kind == 'bytes' else PATTERN_CHUNKED
            if r.chunked != (kind == 'chunked'):
                return pool, server, 'framing: chunked=%s for %s' % (r.chunked, kind), True
            if r.body != want:
                return pool, server, 'body of %d bytes differs from the %d sent' % (
                    len(r.body), len(want)), True
        elif r.body != b'hello from %s/%s\n' % (pool.encode(), server.encode()):
            return pool, server, 'body %r' % r.body[:120], True
        if kind == 'close':
            if not r.wants_close():
                return pool, server, 'no Connection: close in the answer to a close request', True
            if not c.wait_closed(self.timeout):
                return pool, server, 'connection open %.0fs after the answer to a close request' % (
                    self.timeout), True
        return pool, server, None, kind == 'close' or r.wants_close()

    def _run(self, kind, recs, k):
        c = None
        i = 0
        while not self.stopping.is_set():
            t0 = time.monotonic()
            pool = server = err = None
            try:
                if c is None:
                    self.conns[kind] = self.conns.get(kind, 0) + 1
                    c = h.Client(self.port, timeout=self.timeout)
                pool, server, err, close = self._request(kind, c, k, i)
                if close or err is not None:
                    c.close()
                    c = None
                elif c.buf:
                    err = 'bytes after the response: %r' % bytes(c.buf[:80])
                    c.close()
                    c = None
            except Exception as e:              # a failed request is a record, not a crash
                err = '%s: %s' % (type(e).__name__, e)
                if c is not None:
                    c.close()
                c = None
            t1 = time.monotonic()
            recs.append((t0, t1, kind, pool, server, err))
            i += 1
            if t1 - t0 < PACE:
                self.stopping.wait(PACE - (t1 - t0))
        if c is not None:
            c.close()

    # queries (safe while running: each list only grows, in t_sent order) ---------------------

    def between(self, t_from, t_to=None, done_by=None):
        """Records sent at or after t_from and before t_to (None: no bound); with done_by, only
        those finished before it."""
        out = []
        for recs in self.lists:
            n = len(recs)
            lo = bisect.bisect_left(recs, t_from, 0, n, key=lambda r: r[0])
            hi = n if t_to is None else bisect.bisect_left(recs, t_to, lo, n, key=lambda r: r[0])
            for r in recs[lo:hi]:
                if done_by is None or r[1] < done_by:
                    out.append(r)
        return out

    def all(self):
        return self.between(0.0)


def count_good(recs, field):
    """{value of record field: count} over the good records (field 3: pool, 4: server)."""
    out = {}
    for r in recs:
        if r[5] is None:
            out[r[field]] = out.get(r[field], 0) + 1
    return out


def mix(recs):
    """{pool: count} of the good records."""
    return count_good(recs, 3)


def servers_of(recs):
    """{server: count} of the good records."""
    return count_good(recs, 4)


def failures(recs):
    return [r for r in recs if r[5] is not None]


def fmt(recs, t0, limit=12):
    return '\n'.join('  %+.3fs..%+.3fs %-9s %s/%s: %s' % (a - t0, b - t0, kind, pool, srv, err)
                     for a, b, kind, pool, srv, err in recs[:limit])


def other(pool):
    return 'green' if pool == 'blue' else 'blue'


def open_ws(port, timeout=10.0):
    c = h.Client(port, timeout=timeout)
    c.send(h.build_request('GET', '/ws', [('Upgrade', 'websocket'), ('Connection', 'Upgrade'),
                                          ('Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='),
                                          ('Sec-WebSocket-Version', '13')]))
    return c, c.read_head()


# ---------------------------------------------------------------------------------------------

class CutoverCase(h.ProxyTestCase):

    def setUp(self):
        super().setUp()
        self._loads = []
        self.ctl = None

    def _cleanup(self):
        for ld in getattr(self, '_loads', []):
            ld.stop()
        super()._cleanup()

    def diagnostics(self):
        out = [super().diagnostics()]
        if self.ctl is not None:
            try:
                st = self.ctl.status()
                out.append('--- routing %s\n--- rollout %s\n' % (
                    json.dumps(st['routing']), json.dumps(st['rollout'])))
                evs = self.ctl.events(0, timeout=2).data['events']
                out.append('--- last events:\n%s\n' % '\n'.join(
                    '  %s' % json.dumps({k: e.get(k) for k in (
                        'seq', 'time', 'generation', 'type', 'action', 'live', 'standby_percent',
                        'pool', 'server', 'state', 'reason', 'ok') if k in e})
                    for e in evs[-40:]))
            except Exception as e:
                out.append('--- status unavailable: %r\n' % e)
        return ''.join(out)

    def start(self, extra_cfg=None, third=False):
        """b1 b2 / g1 g2 (and b3 g3 started but configured only when third), a proxy with
        2 workers, health every 500 ms and short gates; waits until every server is up."""
        self.orig = {}
        for pool in POOLS:
            for name in NAMES[pool]:
                self.orig[name] = self.origin(pool, name)
        self.extra_cfg = extra_cfg or {}
        self.p = self.proxy(self.cfg(third))
        self.ctl = h.ctl_for(self.p, keepalive=True)
        self.wait_healthy(third)
        return self.p

    def cfg(self, third):
        n = 3 if third else 2
        ex = {'health': dict(HEALTH),
              'rollout': {'gates': dict(GATES), 'on_failure': 'rollback'},
              'timeouts': {'tunnel': '60s'}}
        ex.update(self.extra_cfg)
        return self.config([self.orig[x] for x in NAMES['blue'][:n]],
                           [self.orig[x] for x in NAMES['green'][:n]], workers=2, extra=ex)

    def wait_healthy(self, third, timeout=5.0):
        want = 3 if third else 2

        def ok():
            st = self.ctl.status()
            return all(len(st['pools'][pl]['servers']) == want and
                       all(s['health'] == 'up' for s in st['pools'][pl]['servers'])
                       for pl in POOLS)
        if not h.wait_until(ok, timeout * SLACK):
            self.fail('servers not all up: %s' % json.dumps(self.ctl.status()['pools']))

    # control calls -----------------------------------------------------------------------------

    def call(self, method, path, body=None, expect=200):
        r = self.ctl.request(method, path, body)
        if r.status != expect or not r.ok:
            self.fail('%s %s %s: expected %d, got %s' % (method, path, json.dumps(body), expect,
                                                        r.summary(1500)))
        return r

    def wait_status(self, pred, timeout, what):
        deadline = time.monotonic() + timeout * SLACK
        st = None
        while time.monotonic() < deadline:
            st = self.ctl.status()
            if pred(st):
                return st
            time.sleep(0.03)
        self.fail('%s: not within %.1fs\nrouting %s\nrollout %s' % (
            what, timeout * SLACK, json.dumps(st['routing']), json.dumps(st['rollout'])))

    def wait_requests(self, ld, t_from, n, timeout, pred=lambda r: True, what='requests',
                      min_s=0.0):
        """Polls until n good records sent after t_from satisfy pred and min_s seconds have
        passed since t_from; returns them."""
        deadline = time.monotonic() + timeout * SLACK
        while True:
            recs = [r for r in ld.between(t_from) if r[5] is None and pred(r)]
            if len(recs) >= n and time.monotonic() - t_from >= min_s:
                return recs
            if time.monotonic() >= deadline:
                self.fail('%s: %d of %d within %.1fs (load: %s since)' % (
                    what, len(recs), n, timeout * SLACK, mix(ld.between(t_from))))
            time.sleep(0.02)

    def events_since(self, seq, types):
        r = self.ctl.events(seq)
        self.assertEqual(r.status, 200, r.summary())
        return [e for e in r.data['events'] if e['type'] in types]

    def last_seq(self):
        return self.ctl.events(0).data['next']


# ---------------------------------------------------------------------------------------------
# 1. The repetitions under load
# ---------------------------------------------------------------------------------------------

class CutoverLoadTest(CutoverCase):
    WATCHDOG = 30.0 + 25.0 * RUNS * SLACK

    def test_repeated_cutovers_rollbacks_reloads_drains_under_load(self):
        p = self.start()
        ld = Load(p.port)
        self._loads.append(ld)
        ld.start()
        self.wait_requests(ld, 0.0, 50, 5.0, what='load warm-up')
        t_begin = time.monotonic()
        third = False
        t_stable = time.monotonic()
        rows = []
        problems = []
        for rep in range(1, RUNS + 1):
            t_rep = time.monotonic()
            row = self.repetition(ld, rep, third, problems, t_stable)
            t_stable = row['t_stable']
            third = not third
            bad = failures(ld.between(t_rep, time.monotonic()))
            row['failed'] = len(bad)
            row['requests'] = len(ld.between(t_rep, time.monotonic()))
            row['seconds'] = time.monotonic() - t_rep
            rows.append(row)
            if bad:
                problems.append('repetition %d: %d failed request(s):\n%s' % (
                    rep, len(bad), fmt(bad, t_rep)))
            if problems:
                break
        ld.stop()
        recs = ld.all()
        total_bad = failures(recs)
        kinds = {}
        for r in recs:
            kinds[r[2]] = kinds.get(r[2], 0) + 1
        print('\n rep  live->  requests  failed  secs  ramp-mix(target)  midramp%  manual%  '
              'reload         drained')
        for r in rows:
            print(' %3d  %-6s  %8d  %6d  %4.1f  %-16s  %8s  %7s  %-13s  %s' % (
                r['rep'], r.get('to', '?'), r['requests'], r['failed'], r['seconds'],
                r.get('ramp', '-'), r.get('midramp', '-'), r.get('manual', '-'),
                r.get('reload', '-'), r.get('drained', '-')))
        print('requests by kind %s, connections by kind %s in %.1fs, failed %d, sanitize %s' % (
            json.dumps(kinds, sort_keys=True), json.dumps(ld.conns, sort_keys=True),
            time.monotonic() - t_begin, len(total_bad),
            os.environ.get('SWITCHYARD_SANITIZE', 'none')))
        if problems:
            self.fail('\n'.join(problems))
        self.assertEqual(len(rows), RUNS)
        self.assertEqual(total_bad, [], 'failed requests:\n%s' % fmt(total_bad, t_begin))
        for kind, _ in LOAD_MIX:
            self.assertGreater(kinds.get(kind, 0), 10 * RUNS, 'the %s load hardly ran' % kind)
            if kind == 'close':
                self.assertEqual(ld.conns[kind], kinds[kind], 'one connection per close request')
            else:       # keep-alive connections really carried the load through the changes
                self.assertLess(ld.conns[kind] * 20, kinds[kind], 'the %s connections were '
                                'not kept alive: %d for %d requests' % (
                                    kind, ld.conns[kind], kinds[kind]))

    def repetition(self, ld, rep, third, problems, t_stable):
        """One repetition; t_stable: when the routing last changed (all on the live pool since).
        Returns its row for the table, with 't_stable' for the next one."""
        row = {'rep': rep}
        st = self.ctl.status()
        live, stby = st['routing']['live'], st['routing']['standby']
        self.assertEqual(st['routing']['standby_bp'], 0, 'repetition %d starts split' % rep)
        self.assertEqual(st['rollout']['state'], 'stable')

        # 1. full cutover live -> stby --------------------------------------------------------
        seq = self.last_seq()
        t_a = time.monotonic()
        before = ld.between(max(t_stable, t_a - 0.5), t_a)
        if mix(before) and set(mix(before)) != {live}:
            problems.append('rep %d: before the cutover the mix is %s, want all %s' % (
                rep, mix(before), live))
        self.call('POST', '/v1/cutover', {'to': stby, 'plan': PLAN_FULL,
                                          'id': 'rep-%d-full' % rep}, expect=202)
        t_ack = time.monotonic()
        self.wait_status(lambda s: s['rollout']['state'] == 'stable' and
                         s['rollout']['outcome'] == 'promoted' and
                         s['routing']['live'] == stby, 8.0, 'rep %d: cutover to %s' % (rep, stby))
        t_prom = time.monotonic()
        routing = [(e['action'], e['live'], e['standby_percent'])
                   for e in self.events_since(seq, ('routing',))]
        want = [('started', live, 20.0), ('step', live, 60.0), ('promote', stby, 0.0)]
        if routing != want:
            problems.append('rep %d: routing events of the cutover %s, want %s' % (
                rep, routing, want))
        ramp = mix(ld.between(t_ack, done_by=t_prom))
        row['to'] = stby
        row['ramp'] = '%d/%d' % (ramp.get(stby, 0), sum(ramp.values()))
        if not ramp.get(stby) or not ramp.get(live):
            problems.append('rep %d: during the ramp to %s only %s served' % (rep, stby, ramp))
        after = self.wait_requests(ld, t_prom, MIX_SAMPLE, 5.0, what='after the promotion',
                                   min_s=PHASE_MIN)
        if set(mix(after)) != {stby}:
            problems.append('rep %d: requests sent after the promotion went to %s' % (
                rep, mix(after)))
        live, stby = stby, live

        # 2. cutover back, rolled back mid-ramp ---------------------------------------------
        self.call('POST', '/v1/cutover', {'to': stby, 'plan': PLAN_HOLD,
                                          'id': 'rep-%d-back' % rep}, expect=202)
        t_ack = time.monotonic()
        self.wait_requests(ld, t_ack, MIX_SAMPLE, 5.0, what='mid-ramp requests', min_s=PHASE_MIN)
        r = self.call('POST', '/v1/rollback', {'reason': 'rep %d mid-ramp' % rep})
        t_rb = time.monotonic()
        if (r.data['routing']['live'], r.data['routing']['standby_bp']) != (live, 0):
            problems.append('rep %d: rollback answered routing %s' % (rep, r.data['routing']))
        ro = self.ctl.status()['rollout']
        if (ro['state'], ro['outcome']) != ('stable', 'rolled_back'):
            problems.append('rep %d: rollout after the rollback %s' % (rep, json.dumps(ro)))
        ramp = mix(ld.between(t_ack, done_by=t_rb))
        n = sum(ramp.values())
        share = 100.0 * ramp.get(stby, 0) / max(1, n)
        row['midramp'] = '%.0f' % share
        if n < MIX_SAMPLE or not 30.0 <= share <= 70.0:
            problems.append('rep %d: %s got %.1f%% of %d requests at 50%%' % (rep, stby, share, n))
        after = self.wait_requests(ld, t_rb, MIX_SAMPLE, 5.0, what='after the rollback',
                                   min_s=PHASE_MIN)
        if set(mix(after)) != {live}:
            problems.append('rep %d: requests sent after the rollback answered went to %s' % (
                rep, mix(after)))

        # 3. manual weight, then back to 0 --------------------------------------------------
        self.call('PUT', '/v1/weights', {'standby_percent': MANUAL_PERCENT})
        t_w = time.monotonic()
        self.wait_requests(ld, t_w, MIX_SAMPLE, 5.0, what='requests at the manual weight',
                           min_s=PHASE_MIN)
        self.call('PUT', '/v1/weights', {'standby_percent': 0})
        t_w0 = time.monotonic()
        split = mix(ld.between(t_w, done_by=t_w0))
        n = sum(split.values())
        share = 100.0 * split.get(stby, 0) / max(1, n)
        row['manual'] = '%.0f' % share
        row['t_stable'] = t_w0
        if n < MIX_SAMPLE or abs(share - MANUAL_PERCENT) > 15.0:
            problems.append('rep %d: %s got %.1f%% of %d requests at weight %d%%' % (
                rep, stby, share, n, MANUAL_PERCENT))
        after = self.wait_requests(ld, t_w0, MIX_SAMPLE, 5.0, what='after weight 0',
                                   min_s=PHASE_MIN)
        if set(mix(after)) != {live}:
            problems.append('rep %d: requests sent after weight 0 answered went to %s' % (
                rep, mix(after)))

        # 4. SIGHUP reload: a third server per pool added (or removed) ---------------------
        x = NAMES[live][2]
        mark = self.p.reload(self.cfg(not third))
        _, m = self.p.err.wait_for(r'configuration reloaded', 5.0 * SLACK, mark)
        if m is None:
            self.fail('rep %d: reload not applied; stderr:\n%s' % (rep, self.p.err.text(mark)))
        t_hup = time.monotonic()
        if not third:
            self.wait_healthy(True)
            got = self.wait_requests(ld, t_hup, 1, 5.0, pred=lambda r: r[4] == x,
                                     what='requests to the added server %s' % x)
            row['reload'] = '+%s %d' % (x, len(got))
        else:
            self.wait_healthy(False)
            # the hand-off to the workers is asynchronous: from the first moment a run of
            # requests misses x, none may reach it again
            deadline = time.monotonic() + 5.0 * SLACK
            t_gone = None
            while time.monotonic() < deadline:
                t = time.monotonic() - 0.3
                recent = ld.between(t)
                if len(recent) >= 30 and x not in servers_of(recent):
                    t_gone = t
                    break
                time.sleep(0.05)
            if t_gone is None:
                self.fail('rep %d: removed server %s still gets requests 5 s after the reload'
                          % (rep, x))
            later = self.wait_requests(ld, time.monotonic(), MIX_SAMPLE, 5.0,
                                       what='after the removal')
            hit = [r for r in ld.between(t_gone) if r[4] == x]
            if hit:
                problems.append('rep %d: %d request(s) reached removed server %s after it had '
                                'stopped getting any' % (rep, len(hit), x))
            row['reload'] = '-%s (%d)' % (x, len(later))

        # 5. drain a live server, then ready -------------------------------------------------
        d = NAMES[live][0]
        self.call('POST', '/v1/servers/%s/%s/drain' % (live, d))
        t_d = time.monotonic()
        during = self.wait_requests(ld, t_d, MIX_SAMPLE, 5.0, what='requests with %s drained' % d,
                                    min_s=PHASE_MIN)
        hit = [r for r in ld.between(t_d) if r[4] == d]
        if hit:
            problems.append('rep %d: %d request(s) reached %s after its drain answered:\n%s' % (
                rep, len(hit), d, fmt(hit, t_d)))
        if set(mix(during)) != {live}:
            problems.append('rep %d: with %s drained the mix is %s' % (rep, d, mix(during)))
        self.call('POST', '/v1/servers/%s/%s/ready' % (live, d))
        t_r = time.monotonic()
        back = self.wait_requests(ld, t_r, 1, 5.0, pred=lambda r: r[4] == d,
                                  what='requests to %s after ready' % d)
        row['drained'] = '%s: %d then %d' % (d, len(servers_of(during)), len(back))
        return row


# ---------------------------------------------------------------------------------------------
# 2. WebSocket tunnels through a cutover
# ---------------------------------------------------------------------------------------------

TUNNEL_TIMEOUT = 2.0
OLD_TUNNELS = 4
NEW_TUNNELS = 3


class Pinger:
    """Echoes a numbered message through one tunnel every 100 ms until the tunnel closes or it is
    stopped. echoes: monotonic times of good echoes; closed: when the peer closed; error: a
    wrong echo or an error other than the close."""

    def __init__(self, c, label):
        self.c = c
        self.label = label
        self.echoes = []
        self.closed = None
        self.error = None
        self.stopping = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True, name='ws-' + label)

    def run(self):
        i = 0
        while not self.stopping.is_set():
            msg = b'%s-%06d;' % (self.label.encode(), i)
            try:
                self.c.send(msg)
                got = self.c.read_exact(len(msg))
            except (h.ConnClosed, BrokenPipeError, ConnectionResetError):
                self.closed = time.monotonic()
                return
            except Exception as e:
                self.error = '%s: %s' % (type(e).__name__, e)
                return
            if got != msg:
                self.error = 'echo %r, want %r' % (got, msg)
                return
            self.echoes.append(time.monotonic())
            i += 1
            self.stopping.wait(0.1)

    def stop(self):
        self.stopping.set()
        self.t.join(15)


class CutoverTunnelTest(CutoverCase):
    WATCHDOG = 90.0

    def test_tunnels_survive_cutover_until_tunnel_timeout(self):
        p = self.start(extra_cfg={'drain': {'tunnel_timeout': '%gs' % TUNNEL_TIMEOUT}})
        ld = Load(p.port, mix=(('keepalive', 2), ('close', 1)))
        self._loads.append(ld)
        ld.start()
        pingers = []
        try:
            old = []
            for i in range(OLD_TUNNELS):
                c, r = open_ws(p.port)
                self.assertStatus(r, 101)
                self.assertEqual(r.header('X-Origin-Pool'), 'blue', 'tunnel %d' % i)
                old.append(Pinger(c, 'old%d' % i))
            for pg in old:
                pg.t.start()
            pingers += old
            self.assertTrue(h.wait_until(lambda: self.ctl.status()['pools']['blue']['tunnels']
                                         == OLD_TUNNELS, 3 * SLACK), 'tunnels not counted')
            seq = self.last_seq()
            t0 = time.monotonic()
            self.call('POST', '/v1/cutover', {'to': 'green', 'plan': PLAN_FULL}, expect=202)
            self.wait_status(lambda s: s['rollout']['outcome'] == 'promoted', 8.0, 'cutover')
            t_prom = time.monotonic()
            prom = [e for e in self.events_since(seq, ('routing',)) if e['action'] == 'promote']
            self.assertEqual(len(prom), 1)

            # the old tunnels are still on blue and still echo; new ones go to green
            st = self.ctl.status()
            blue_tunnels = st['pools']['blue']['tunnels']
            new = []
            for i in range(NEW_TUNNELS):
                c, r = open_ws(p.port)
                self.assertStatus(r, 101)
                self.assertEqual(r.header('X-Origin-Pool'), 'green', 'new tunnel %d' % i)
                new.append(Pinger(c, 'new%d' % i))
            for pg in new:
                pg.t.start()
            pingers += new

            # every old tunnel closes, not before tunnel_timeout after blue lost its share
            deadline = t_prom + (TUNNEL_TIMEOUT + 3.0) * SLACK
            while time.monotonic() < deadline and not all(pg.closed or pg.error for pg in old):
                time.sleep(0.05)
            t_end = time.monotonic()
            h.wait_until(lambda: self.ctl.status()['pools']['blue']['tunnels'] == 0, 3 * SLACK)
            st_end = self.ctl.status()
            for pg in new:                 # the new tunnels outlive the old ones
                n = len(pg.echoes)
                self.assertTrue(h.wait_until(lambda: len(pg.echoes) >= n + 3 or pg.closed or
                                             pg.error, 5.0), 'new tunnel %s stalled' % pg.label)
        finally:
            for pg in pingers:
                pg.stop()
            ld.stop()
            for pg in pingers:
                pg.c.close()

        lines = []
        for pg in pingers:
            lines.append('  %-5s echoes %3d, last echo %+.2fs, closed %s%s' % (
                pg.label, len(pg.echoes), (pg.echoes[-1] - t_prom) if pg.echoes else float('nan'),
                '%+.2fs' % (pg.closed - t_prom) if pg.closed else 'no',
                ', error ' + pg.error if pg.error else ''))
        recs = ld.all()
        print('\ncutover took %.2fs; blue tunnels at the promotion: %d; relative to the promotion:'
              '\n%s\nload: %s, failed %d' % (t_prom - t0, blue_tunnels, '\n'.join(lines),
                                             mix(recs), len(failures(recs))))
        self.assertEqual(blue_tunnels, OLD_TUNNELS, 'old tunnels at the promotion')
        for pg in old:
            self.assertIsNone(pg.error, 'tunnel %s' % pg.label)
            self.assertIsNotNone(pg.closed, 'tunnel %s still open %.1fs after the promotion' % (
                pg.label, t_end - t_prom))
            self.assertGreaterEqual(pg.closed - t_prom, TUNNEL_TIMEOUT - 0.1,
                                    'tunnel %s closed before drain.tunnel_timeout' % pg.label)
            during = [t for t in pg.echoes if t0 < t < t_prom]
            after = [t for t in pg.echoes if t > t_prom]
            self.assertGreater(len(during), 3, 'tunnel %s did not echo during the cutover'
                               % pg.label)
            self.assertGreaterEqual(len(after), int(TUNNEL_TIMEOUT / 0.1) // 2,
                                    'tunnel %s hardly echoed after the promotion' % pg.label)
        for pg in new:
            self.assertIsNone(pg.error, 'tunnel %s' % pg.label)
            self.assertIsNone(pg.closed, 'new tunnel %s closed' % pg.label)
        self.assertEqual(st_end['pools']['blue']['tunnels'], 0, 'blue tunnels at the end')
        self.assertEqual(st_end['pools']['green']['tunnels'], NEW_TUNNELS)
        drains = [e for e in self.events_since(seq, ('drain',))]
        self.assertEqual([(e['pool'], e['action']) for e in drains], [('blue', 'tunnels_closed')])
        self.assertEqual(failures(recs), [], 'failed requests:\n%s' % fmt(failures(recs), t0))
        self.assertEqual(set(mix(ld.between(t_prom))), {'green'})

    def test_tunnel_on_server_removed_by_reload_closes_cleanly(self):
        """A tunnel whose server a reload removed keeps echoing; when it closes later (after
        the daemon's once-a-second sample dropped its reference to the removed server, so
        that the tunnel's snapshot is the last holder), switchyard keeps running, counts the
        tunnel gone and serves the next request. (Found by the soak: the close read the
        server's counters after releasing the snapshot that owned it: SIGSEGV.)"""
        b1, b2, g1 = self.origin('blue', 'b1'), self.origin('blue', 'b2'), self.origin('green',
                                                                                       'g1')
        cfg = lambda blue: self.config(blue, [g1], workers=1,   # noqa: E731
                                       routing={'balance': 'round_robin'})
        p = self.proxy(cfg([b1, b2]))
        self.ctl = h.ctl_for(p)
        tunnels = {}
        for i in range(6):
            c, r = open_ws(p.port)
            self.assertStatus(r, 101)
            tunnels.setdefault(r.header('X-Origin-Server'), []).append(c)
            if len(tunnels.get('b2', [])) >= 1 and len(tunnels.get('b1', [])) >= 1:
                break
        self.assertIn('b2', tunnels, 'round robin never picked b2')
        mark = p.reload(cfg([b1]))
        self.assertIsNotNone(p.err.wait_for(r'configuration reloaded', 5.0 * SLACK, mark)[1])
        for srv, cs in tunnels.items():
            for c in cs:
                c.send(b'after-reload')
                self.assertEqual(c.read_exact(12), b'after-reload', 'tunnel on %s' % srv)
        self.assertEqual({h.one_request(p.port).header('X-Origin-Server') for _ in range(4)},
                         {'b1'}, 'b2 still gets requests after the reload')
        # The daemon's once-a-second sample holds a reference to a server until its next
        # sample; past two samples the tunnel's snapshot is the removed server's last holder.
        time.sleep(2.5 * SLACK)
        for srv in ('b1', 'b2'):        # b2's last: its tunnel is the old snapshot's last user
            for c in tunnels.get(srv, []):
                c.close()
                time.sleep(0.2)
        alive = h.wait_until(lambda: not p.alive() or
                             self.ctl.status()['pools']['blue']['tunnels'] == 0, 3.0 * SLACK)
        if not p.alive():
            p.expected_exit = True      # reported here, not again by tearDown
            self.fail('switchyard died (exit %s) when a tunnel on a removed server closed:\n%s'
                      % (p.proc.returncode, p.stderr_tail(30)))
        self.assertTrue(alive, 'blue tunnels still counted: %s' % self.ctl.status()['pools'])
        self.assertStatus(h.one_request(p.port), 200)


if __name__ == '__main__':
    h.main()
