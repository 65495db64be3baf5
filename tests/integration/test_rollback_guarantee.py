"""The instant-rollback guarantee (DESIGN §3): once `POST /v1/rollback` has answered, every routing
decision on every worker uses the new state. With `workers: 2`, sticky none and a background
keep-alive load, 1,000 times: `PUT /v1/weights 50`, `POST /v1/rollback`, then at once requests on
two keep-alive connections opened before the loop (likely on both workers) and one on a fresh
connection. None may reach green. Also measures the rollback's API round trip and the `ack_us` it
reports (DESIGN §10 target: p99 <= 1 ms; 5 ms allowed when other processes used more than a
quarter of a CPU during the loop or the load average is above 1.5 per CPU; 50 ms under a
sanitizer), printed as

  rollback ack_us p50=.. p99=.. rtt_ms p50=.. p99=..

  SWITCHYARD=build/switchyard ORIGIN=build/tests/origin/origin \
    python3 tests/integration/test_rollback_guarantee.py -v
"""

import os
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

ROUNDS = 1000
TIME_BUDGET = 40.0                     # seconds for the loop; fewer rounds only under sanitizers
SANITIZED = bool(os.environ.get('SWITCHYARD_SANITIZE', 'none') not in ('', 'none'))
ACK_P99_TARGET_US = 1000               # DESIGN §10
ACK_P99_LOADED_US = 5000               # what we accept on a loaded machine
ACK_P99_SANITIZED_US = 50000           # a sanitizer slows every thread: only "not stuck"
OTHER_CPUS_LOADED = 0.25               # CPUs used by other processes during the loop: "loaded"


def machine_jiffies():
    """(busy, total) clock ticks of all CPUs from /proc/stat."""
    with open('/proc/stat') as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]        # user nice system irq softirq steal
    return busy, busy + v[3] + v[4]                       # + idle iowait


def proc_jiffies(pid):
    """utime + stime of one process (all its threads), 0 when it is gone."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


class CpuMeter:
    """How many CPUs' worth of time processes other than ours used while it ran: other tests
    running in parallel, a busy machine."""

    def __init__(self, pids):
        self.pids = list(pids)

    def _sample(self):
        busy, total = machine_jiffies()
        return busy, total, sum(proc_jiffies(p) for p in self.pids)

    def __enter__(self):
        self.a = self._sample()
        return self

    def __exit__(self, *exc):
        b = self._sample()
        d_total = max(1, b[1] - self.a[1])
        others = max(0, (b[0] - self.a[0]) - (b[2] - self.a[2]))
        self.other_cpus = others * float(os.cpu_count() or 1) / d_total


class Background:
    """Keep-alive GET loops in threads (not asserted on: they may hit green between a weights-50
    and its rollback)."""

    def __init__(self, port, n=2):
        self.port = port
        self.stop = threading.Event()
        self.count = 0
        self.pools = {}
        self.errors = []
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(n)]

    def start(self):
        for t in self.threads:
            t.start()

    def run(self):
        c = None
        try:
            while not self.stop.is_set():
                if c is None:
                    c = h.Client(self.port)
                r = c.request('GET', '/')
                self.count += 1
                pool = r.header('X-Origin-Pool')
                self.pools[pool] = self.pools.get(pool, 0) + 1
                if r.status != 200:
                    self.errors.append(r.summary(200))
                if r.wants_close():
                    c.close()
                    c = None
        except Exception as e:
            self.errors.append(repr(e))
        finally:
            if c is not None:
                c.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(5)


class RollbackGuaranteeTest(h.ProxyTestCase):
    WATCHDOG = 90.0

    def test_no_request_reaches_green_after_rollback(self):
        b1 = self.origin('blue', 'b1')
        g1 = self.origin('green', 'g1')
        p = self.proxy(self.config([b1], [g1], workers=2))
        ctl = h.ctl_for(p, keepalive=True)
        st = ctl.status()
        self.assertEqual(st['routing']['standby_bp'], 0)
        self.assertEqual([s['health'] for pl in st['pools'].values() for s in pl['servers']],
                         ['up', 'up'], 'origins not up: %s' % st)

        # sanity: at 50% green really gets traffic, and the header tells us so
        r = ctl.weights(50)
        self.assertTrue(r.ok, r.summary())
        seen = {h.one_request(p.port).header('X-Origin-Pool') for _ in range(40)}
        self.assertEqual(seen, {'blue', 'green'}, 'weights 50 does not split: %r' % seen)
        r = ctl.rollback('sanity')
        self.assertTrue(r.ok, r.summary())

        keep = [h.Client(p.port), h.Client(p.port)]   # opened before the loop
        for c in keep:
            self.assertEqual(c.request('GET', '/').status, 200)
        bg = Background(p.port, 2)
        bg.start()
        violations = []
        acks, rtts = [], []
        gen = ctl.generation()
        t_start = time.monotonic()
        rounds = 0
        meter = CpuMeter([os.getpid(), p.pid, b1.proc.pid, g1.proc.pid])
        meter.__enter__()
        try:
            for i in range(ROUNDS):
                if time.monotonic() - t_start > TIME_BUDGET:
                    break
                r = ctl.weights(50)
                if not r.ok or r.generation != gen + 1:
                    self.fail('round %d: PUT weights 50: %s (generation %d before)' % (
                        i, r.summary(), gen))
                t0 = time.monotonic()
                r = ctl.rollback()
                rtt = time.monotonic() - t0
                if not r.ok or r.generation != gen + 2:
                    self.fail('round %d: POST rollback: %s (generation %d before)' % (
                        i, r.summary(), gen + 1))
                gen += 2
                acks.append(r.data['ack_us'])
                rtts.append(rtt * 1000.0)
                # right after the answer: every decision must be blue
                answers = []
                for c, n in ((keep[0], 2), (keep[1], 1)):
                    for _ in range(n):
                        answers.append(('keep-alive', c.request('GET', '/')))
                answers.append(('fresh', h.one_request(p.port)))
                for kind, resp in answers:
                    pool = resp.header('X-Origin-Pool')
                    if resp.status != 200 or pool != 'blue':
                        violations.append('round %d (generation %d, ack_us %s): %s connection got '
                                          '%s from %s/%s' % (i, gen, r.data['ack_us'], kind,
                                                             resp.status, pool,
                                                             resp.header('X-Origin-Server')))
                rounds += 1
        finally:
            meter.__exit__(None, None, None)
            bg.finish()
            for c in keep:
                c.close()
        elapsed = time.monotonic() - t_start

        self.assertTrue(acks, 'no round completed')
        a50, a99 = h.percentile(acks, 50), h.percentile(acks, 99)
        r50, r99 = h.percentile(rtts, 50), h.percentile(rtts, 99)
        print('\nrollback ack_us p50=%d p99=%d rtt_ms p50=%.3f p99=%.3f' % (a50, a99, r50, r99))
        print('rounds=%d in %.1fs (max ack_us %d, max rtt_ms %.3f), background requests %d %r, '
              'other processes used %.2f CPUs, loadavg %.2f, sanitize %s' % (
                  rounds, elapsed, max(acks), max(rtts), bg.count, bg.pools, meter.other_cpus,
                  os.getloadavg()[0], os.environ.get('SWITCHYARD_SANITIZE', 'none')))

        self.assertEqual(violations, [], '%d request(s) reached green after the rollback had '
                         'answered:\n%s' % (len(violations), '\n'.join(violations[:20])))
        self.assertEqual(bg.errors, [], 'background load failed')
        self.assertGreater(bg.count, rounds, 'the background load hardly ran')
        if not SANITIZED:
            self.assertEqual(rounds, ROUNDS, 'only %d of %d rounds in %.0fs' % (
                rounds, ROUNDS, TIME_BUDGET))
        else:
            self.assertGreaterEqual(rounds, 100, 'only %d rounds in %.0fs' % (rounds, TIME_BUDGET))
        self.assertTrue(all(isinstance(a, int) and a >= 0 for a in acks))
        self.assertEqual(ctl.generation(), gen)
        loaded = (meter.other_cpus > OTHER_CPUS_LOADED or
                  os.getloadavg()[0] > (os.cpu_count() or 1) * 1.5)
        limit = (ACK_P99_SANITIZED_US if SANITIZED else
                 ACK_P99_LOADED_US if loaded else ACK_P99_TARGET_US)
        if a99 > ACK_P99_TARGET_US:
            print('WARNING: rollback ack_us p99 %d above the %d us target (%s: allowed up to %d)'
                  % (a99, ACK_P99_TARGET_US, 'sanitized build' if SANITIZED else
                     'machine loaded' if loaded else 'not loaded', limit))
        self.assertLessEqual(a99, limit, 'rollback ack_us p99 %d us > %d us' % (a99, limit))


if __name__ == '__main__':
    h.main()
