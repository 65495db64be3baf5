"""Restart mid-deploy (DESIGN §6, §8; README "Deploying with switchyard"): the proxy SIGKILLed in
the middle of a rollout comes back on the same config and state file with the same split (live
pool, standby share, generation) and the rollout paused at the same step — "resumed after a
restart: paused" —, and traffic flows with that split. Then a kill during writes, in a loop: a
client changes the weights as fast as the API answers, the proxy is SIGKILLed at a random moment
and started again; each time the state file is a whole JSON document, a temporary file left
beside it is never read, and the restored split is the last acknowledged one or the one that was
in flight — never older, never anything else.

test_rollout.py's RestartTest covers a graceful (SIGTERM) restart and the resume afterwards.

  SWITCHYARD=build/switchyard ORIGIN=build/tests/origin/origin \
    python3 tests/integration/test_restart.py -v
"""

import glob
import http.client
import json
import os
import random
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

SANITIZED = os.environ.get('SWITCHYARD_SANITIZE', 'none') not in ('', 'none')
HEALTH = {'interval': '300ms', 'timeout': '300ms', 'rise': 1, 'fall': 2}
GATES = {'window': '3s', 'min_requests': 5}
KILL_ITERATIONS = 50
KILL_BUDGET_S = 30.0        # the loop stops early when this is spent (slow builds)
KILL_MIN_ITERATIONS = 10


def burst(port, n):
    """n GETs on one keep-alive connection → ({pool: count}, [non-200 summaries])."""
    pools, bad = {}, []
    with h.Client(port, timeout=10) as c:
        for i in range(n):
            r = c.request('GET', '/?r=%d' % i)
            pools[r.header('X-Origin-Pool')] = pools.get(r.header('X-Origin-Pool'), 0) + 1
            if r.status != 200:
                bad.append(r.summary(100))
    return pools, bad


class Load:
    """One keep-alive client sending GETs until stopped (feeds the rollout gates)."""

    def __init__(self, port):
        self.port = port
        self.stopping = threading.Event()
        self.bad = []
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        c = None
        while not self.stopping.is_set():
            try:
                if c is None:
                    c = h.Client(self.port, timeout=5)
                r = c.request('GET', '/load')
                if r.status != 200:
                    self.bad.append(r.status)
            except (OSError, h.ProtocolError):
                if c:
                    c.close()
                c = None
                if self.stopping.wait(0.01):
                    break
            time.sleep(0.002)
        if c:
            c.close()

    def stop(self):
        self.stopping.set()
        self.t.join(10)


class RestartCase(h.ProxyTestCase):
    WATCHDOG = 90.0

    def kill(self, p):
        """SIGKILL, wait, and tell tearDown it was meant."""
        p.expected_exit = True
        p.proc.kill()
        p.proc.wait(timeout=10)

    def start_proxy(self, cfg):
        """A new Proxy on cfg (same control socket, same state file); waits until every
        server is up. → (Proxy, Ctl)."""
        p = h.Proxy(cfg, self.tmpdir)
        self._proxies.append(p)
        p.start()
        c = h.ctl_for(p)
        ok = h.wait_until(lambda: all(s['health'] == 'up' for pool in c.status()['pools'].values()
                                      for s in pool['servers']), 5.0)
        self.assertTrue(ok, 'servers not up: %s' % json.dumps(c.status()['pools']))
        return p, c


# ---------------------------------------------------------------------------------------------

class KillMidRampTest(RestartCase):

    def test_sigkill_mid_ramp_restores_split_and_pauses(self):
        self.b1 = self.origin('blue', 'b1')
        self.g1 = self.origin('green', 'g1')
        state = os.path.join(self.tmpdir, 'state.json')
        cfg = self.config([self.b1], [self.g1], extra={
            'health': dict(HEALTH), 'rollout': {'gates': dict(GATES)}, 'state_file': state})
        p, c = self.start_proxy(cfg)
        r = c.post('/v1/cutover', {'to': 'green', 'id': 'deploy-kill-9', 'plan': [
            {'weight': 10, 'hold': '1s'}, {'weight': 40, 'hold': '1h'}, {'weight': 100}]})
        self.assertEqual(r.status, 202, r.summary())
        load = Load(p.port)
        try:
            deadline = time.monotonic() + (15.0 if SANITIZED else 6.0)
            st = c.status()
            while st['rollout']['step'] != 2 and time.monotonic() < deadline:
                time.sleep(0.05)
                st = c.status()
        finally:
            load.stop()
        self.assertEqual((st['rollout']['state'], st['rollout']['step']), ('progressing', 2),
                         'the rollout did not reach step 2: %s' % json.dumps(st['rollout']))
        self.assertEqual(load.bad, [], 'failed requests during the ramp')
        before = c.status()
        self.assertEqual(before['routing']['standby_bp'], 4000)

        self.kill(p)                                    # mid-ramp, no goodbye
        with open(state) as f:
            saved = json.load(f)                        # a whole document, never half
        self.assertEqual((saved['generation'], saved['routing']['live'],
                          saved['routing']['standby_bp']),
                         (before['generation'], 'blue', 4000), json.dumps(saved))
        self.assertEqual(glob.glob(state + '.tmp.*'), [], 'a temporary state file was left')

        p2, c2 = self.start_proxy(cfg)
        st = c2.status()
        self.assertEqual(st['generation'], before['generation'], 'the generation is restored')
        self.assertEqual(st['routing'], before['routing'], 'the split is restored')
        ro = st['rollout']
        want = {'state': 'paused', 'outcome': None, 'id': 'deploy-kill-9', 'from': 'blue',
                'to': 'green', 'step': 2, 'steps': 3, 'weight_percent': 40.0,
                'reason': 'resumed after a restart: paused',
                'plan': before['rollout']['plan']}
        self.assertEqual({k: ro.get(k) for k in want}, want, 'the restored rollout: %s' %
                         json.dumps(ro))
        self.assertIn('the rollout to green resumes paused at step 2', p2.err.text())
        if h.find_yardctl():
            rc, out, err, _ = h.run_yardctl(['status', '--json'], sock=cfg['control']['socket'])
            self.assertEqual(rc, 0, err)
            yc = json.loads(out)
            yc = yc.get('data', yc)
            self.assertEqual((yc['rollout']['state'], yc['rollout']['step'],
                              yc['routing']['standby_bp'], yc['generation']),
                             ('paused', 2, 4000, before['generation']), out[:500])

        pools, bad = burst(p2.port, 1000)
        self.assertEqual(bad, [], 'failed requests after the restart')
        share = 100.0 * pools.get('green', 0) / 1000
        print('\nafter SIGKILL + restart: %s → green %.1f%% (want 40)' % (pools, share))
        self.assertLessEqual(abs(share - 40.0), 6.0, 'split after the restart: %s' % pools)
        ro = c2.status()['rollout']
        self.assertEqual((ro['state'], ro['step']), ('paused', 2), 'a restored rollout never '
                         'continues by itself: %s' % json.dumps(ro))
        r = c2.rollback('after the kill')
        self.assertEqual((r.status, r.generation), (200, before['generation'] + 1), r.summary())
        self.assertEqual(burst(p2.port, 50)[0], {'blue': 50})


# ---------------------------------------------------------------------------------------------

class Writer:
    """Changes the weights as fast as the API answers, each value different from the one
    before: bp = start+1, start+2, ... (mod 10000). Records the last acknowledged (bp,
    generation) and the value in flight."""

    def __init__(self, sock, start_bp, start_gen):
        self.ctl = h.Ctl(sock, keepalive=True, timeout=5.0)
        self.lock = threading.Lock()
        self.acked = (start_bp, start_gen)
        self.inflight = None
        self.count = 0
        self.error = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        bp = self.acked[0]
        while True:
            bp = bp % 10000 + 1
            with self.lock:
                self.inflight = bp
            try:
                r = self.ctl.request('PUT', '/v1/weights', {'standby_percent': bp / 100.0})
            except (OSError, http.client.HTTPException):
                return                                  # killed
            if r.status != 200 or r.data['routing']['standby_bp'] != bp:
                self.error = r.summary()
                return
            with self.lock:
                self.acked = (bp, r.generation)
                self.inflight = None
                self.count += 1

    def join(self):
        self.t.join(10)
        self.ctl.close()


class KillDuringWritesTest(RestartCase):

    def test_kill_during_writes_loop(self):
        self.b1 = self.origin('blue', 'b1')
        self.g1 = self.origin('green', 'g1')
        state = os.path.join(self.tmpdir, 'state.json')
        cfg = self.config([self.b1], [self.g1], workers=2, extra={'state_file': state})
        rng = random.Random(os.environ.get('SEED', time.time()))
        expect = (0, 1)                 # (standby_bp, generation) the next start must show
        t0 = time.monotonic()
        writes = 0
        in_flight_restored = 0
        stale_planted = 0
        i = 0
        while i < KILL_ITERATIONS and time.monotonic() - t0 < KILL_BUDGET_S:
            p, c = self.start_proxy(cfg)
            st = c.status()
            got = (st['routing']['standby_bp'], st['generation'])
            self.assertEqual(got, expect, 'iteration %d: restored (standby_bp, generation)' % i)
            self.assertEqual(st['routing']['live'], 'blue')
            self.assertEqual(glob.glob(state + '.tmp.*'), [], 'iteration %d: a stale temporary '
                             'file was not removed at start' % i)
            w = Writer(cfg['control']['socket'], *got)
            time.sleep(rng.uniform(0.01, 0.25))
            self.kill(p)
            w.join()
            self.assertIsNone(w.error, 'iteration %d: a weight change failed' % i)
            writes += w.count
            acked, inflight = w.acked, w.inflight
            # the file the next start reads: whole, and the last acknowledged value or the one
            # that was in flight
            try:
                with open(state) as f:
                    saved = json.load(f)
            except FileNotFoundError:
                saved = None
            if saved is None:
                self.assertEqual(acked, (0, 1), 'iteration %d: no state file after %d writes' % (
                    i, w.count))
                expect = acked
            else:
                on_disk = (saved['routing']['standby_bp'], saved['generation'])
                allowed = [acked] + ([(inflight, acked[1] + 1)] if inflight else [])
                self.assertIn(on_disk, allowed, 'iteration %d: the state file holds %s; last '
                              'acknowledged %s, in flight %s' % (i, on_disk, acked, inflight))
                in_flight_restored += on_disk != acked
                expect = on_disk
            # A temporary file beside the state file (what a kill in the middle of a write
            # leaves) must never be read: plant one with a value nobody wrote.
            if rng.random() < 0.5:
                decoy = dict(saved or {'version': 1, 'admin': [], 'rollout': None,
                                       'saved_at': '2026-01-01T00:00:00.000Z', 'saved_ms': 0})
                decoy['generation'] = expect[1] + 1000
                decoy['routing'] = {'live': 'green', 'standby_bp': 4321, 'flags': 0}
                decoy['saved_ms'] = int(time.time() * 1000)
                with open('%s.tmp.%d' % (state, p.proc.pid), 'w') as f:
                    json.dump(decoy, f)
                stale_planted += 1
            i += 1
        elapsed = time.monotonic() - t0
        print('\n%d kills in %.1fs, %d acknowledged weight changes, %d restarts restored the '
              'in-flight value, %d stale temporary files planted' % (
                  i, elapsed, writes, in_flight_restored, stale_planted))
        self.assertGreaterEqual(i, KILL_MIN_ITERATIONS, 'too few iterations within %.0fs' %
                                KILL_BUDGET_S)
        self.assertGreater(writes, i, 'the writer hardly wrote anything')
        p, c = self.start_proxy(cfg)
        st = c.status()
        self.assertEqual((st['routing']['standby_bp'], st['generation']), expect)
        pools, bad = burst(p.port, 400)
        self.assertEqual(bad, [])
        share = 100.0 * pools.get('green', 0) / 400
        self.assertLessEqual(abs(share - expect[0] / 100.0), 8.0, 'split %s, want %.2f%% green' %
                             (pools, expect[0] / 100.0))


if __name__ == '__main__':
    h.main()
