"""Resource exhaustion: the proxy started with a low RLIMIT_NOFILE (soft = hard, so that its own
raise to the hard limit changes nothing) and client connections opened until every descriptor
is taken.

  1. Client side: beyond the limit accept pauses (proxy/worker.c retries every 100 ms, one log
     line per episode); the extra clients wait in the kernel backlog — not reset, not answered
     —, the proxy does not spin, and once clients leave the waiting ones are served by
     themselves, within a deadline.
  2. Upstream side: with every descriptor held by clients, a request that needs a new upstream
     connection gets 502 naming its request id (README: "connect failures exhausted"), the
     server is not blamed (not ejected, still up), and requests succeed again as soon as
     descriptors are free.
  3. The control socket while descriptors are out: the main thread must not spin on accept
     (expected failure until the control/api.c patch in the report is applied).
  4. Pools exhausted or down: every server of both pools in maint, then every origin killed:
     503 naming the request id (never a reset or another status once the checks have marked
     them down), and recovery when they are ready / back.

  SWITCHYARD=build/switchyard ORIGIN=build/tests/origin/origin \
    python3 tests/integration/test_exhaustion.py -v
"""

import os
import re
import resource
import signal
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

SANITIZED = os.environ.get('SWITCHYARD_SANITIZE', 'none') not in ('', 'none')
NOFILE = 64                 # the proxy's descriptor limit (1 worker: about 15-17 at rest)
ERR_BODY = re.compile(rb'^(\d{3}) [^\n]+\nrequest id: (\S+)\n$')
RECOVERY_S = 5.0 if SANITIZED else 3.0
CPU_SPIN_S = 0.3            # CPU seconds per wall second above which the proxy spins


class LimitedProxy(h.Proxy):
    """A Proxy whose process starts with RLIMIT_NOFILE = (nofile, nofile)."""

    def __init__(self, config, tmpdir, nofile):
        super().__init__(config, tmpdir)
        self.nofile = nofile

    def start(self):
        orig = h._preexec
        nofile = self.nofile

        def preexec():
            orig()
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        h._preexec = preexec            # harness.spawn() looks it up at call time
        try:
            return super().start()
        finally:
            h._preexec = orig

    def fds(self):
        return len(os.listdir('/proc/%d/fd' % self.proc.pid))

    def cpu_s(self):
        with open('/proc/%d/stat' % self.proc.pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


class ExhaustionCase(h.ProxyTestCase):
    WATCHDOG = 60.0

    def setUp(self):
        super().setUp()
        self.clients = []
        self.addCleanup(self._close_clients)

    def _close_clients(self):
        for c in self.clients:
            c.close()

    def start(self, health=None, routing=None):
        self.b1 = self.origin('blue', 'b1')
        self.g1 = self.origin('green', 'g1')
        ex = {'health': health} if health else None
        cfg = self.config([self.b1], [self.g1], workers=1, routing=routing, extra=ex)
        p = LimitedProxy(cfg, self.tmpdir, NOFILE)
        self._proxies.append(p)
        p.start()
        c = h.ctl_for(p)
        ok = h.wait_until(lambda: all(s['health'] == 'up' for pool in c.status()['pools'].values()
                                      for s in pool['servers']), 5.0)
        self.assertTrue(ok, 'servers not up')
        c.close()
        return p

    def fill(self, p):
        """Opens client connections (no request) until the proxy holds NOFILE descriptors
        (each one accepted adds one; the health checker's cached connections may come and go
        meanwhile). → the clients, oldest first."""
        held = []
        while True:
            if p.fds() >= NOFILE and h.wait_until(lambda: p.fds() >= NOFILE, 0.2) and \
                    not h.wait_until(lambda: p.fds() < NOFILE, 0.2):
                break
            n = p.fds()
            cl = h.Client(p.port, timeout=5)
            self.clients.append(cl)
            held.append(cl)
            h.wait_until(lambda: p.fds() > n, 0.5)
            self.assertLess(len(held), NOFILE, 'descriptors never ran out (%d)' % p.fds())
        self.assertEqual(p.fds(), NOFILE)
        return held

    def assertNotSpinning(self, p, what):
        t0, c0 = time.monotonic(), p.cpu_s()
        time.sleep(1.0)
        rate = (p.cpu_s() - c0) / (time.monotonic() - t0)
        self.assertLess(rate, CPU_SPIN_S, '%s: the proxy burns %.2f CPU s/s (spinning?)' % (
            what, rate))
        return rate


# ---------------------------------------------------------------------------------------------

class ClientSideTest(ExhaustionCase):

    def test_accept_pauses_then_recovers(self):
        p = self.start()
        self.assertEqual(h.one_request(p.port).status, 200)     # one idle upstream connection
        mark = p.err.count()
        held = self.fill(p)
        # three more: in the backlog, not accepted, not reset, their requests not answered
        waiting = []
        for i in range(3):
            cl = h.Client(p.port, timeout=5)
            self.clients.append(cl)
            cl.send(h.build_request('GET', '/?waiting=%d' % i, [('X-Request-Id', 'wait-%d' % i)]))
            waiting.append(cl)
        time.sleep(0.3)
        for cl in waiting:
            self.assertFalse(cl.readable_within(0), 'a client beyond the descriptor limit got '
                             'an answer (or a reset) instead of waiting')
        rate = self.assertNotSpinning(p, 'accept paused for lack of descriptors')
        self.assertEqual(p.fds(), NOFILE)
        self.assertTrue(p.alive())
        lines = [ln for ln in p.err.text(mark).splitlines() if 'accept:' in ln]
        self.assertTrue(lines, 'no log line about the failing accept')
        self.assertIn('Too many open files', lines[0])
        self.assertLessEqual(len(lines), 2, 'one accept warning per episode, got:\n%s' %
                             '\n'.join(lines[:10]))
        # clients leave: the waiting ones are accepted and served by themselves
        t0 = time.monotonic()
        for cl in held[:10]:
            cl.close()
        for i, cl in enumerate(waiting):
            cl.settimeout(RECOVERY_S)
            r = cl.read_response()
            self.assertStatus(r, 200, 'waiting client %d after descriptors were freed' % i)
        took = time.monotonic() - t0
        self.assertLess(took, RECOVERY_S)
        _, m = p.err.wait_for(r'worker 0: accepting again after \d+ failed attempt', 2.0, mark)
        self.assertTrue(m, 'no "accepting again" line:\n%s' % p.err.text(mark))
        for i in range(20):
            self.assertStatus(h.one_request(p.port, target='/?after=%d' % i), 200)
        print('\n%d clients held %d descriptors; 3 waited in the backlog (proxy CPU %.2f s/s); '
              'served %.0f ms after 10 clients left' % (len(held), NOFILE, rate, took * 1000))


class UpstreamSideTest(ExhaustionCase):

    def test_no_descriptor_for_upstream_502_then_recovery(self):
        p = self.start()
        mark = p.err.count()
        held = self.fill(p)                 # no request yet: no idle upstream connection
        for i in range(3):
            r = held[i].request('GET', '/', [('X-Request-Id', 'no-fd-%d' % i)])
            self.assertStatus(r, 502, 'no descriptor left for the upstream connection')
            m = ERR_BODY.match(r.body)
            self.assertTrue(m, '502 body %r' % r.body)
            self.assertEqual(m.group(2).decode(), 'no-fd-%d' % i, 'the body names the request')
            self.assertTrue(r.wants_close(), r.summary())
            self.assertClosed(held[i])      # (the proxy keeps it until we close: lingering)
        for cl in held[:3]:
            cl.close()
        self.assertIn('socket: Too many open files', p.err.text(mark))
        self.assertTrue(h.wait_until(lambda: p.fds() <= NOFILE - 3, 2.0), 'descriptors of '
                        'the closed connections not released: %d' % p.fds())
        # the three closed connections gave their descriptors back: requests succeed again
        for i in range(3, 13):
            r = held[i].request('GET', '/', [('X-Request-Id', 'fd-back-%d' % i)])
            self.assertStatus(r, 200, 'request %d after descriptors came back' % i)
        # the server was not blamed for the proxy's own shortage
        for cl in held[13:]:
            cl.close()
        st = h.ctl_for(p).status()
        b1 = st['pools']['blue']['servers'][0]
        self.assertEqual((b1['health'], b1['ejected']), ('up', False), b1)
        self.assertTrue(p.alive())


class ControlSideTest(ExhaustionCase):

    def test_control_socket_does_not_spin(self):
        """A control connection pending while descriptors are out: libevent retries accept()
        at once, forever, without an error callback — a busy loop on the main thread and a
        log line per try."""
        p = self.start()
        mark = p.err.count()
        held = self.fill(p)
        ctl = h.UnixHTTPConnection(p.config['control']['socket'], timeout=10)
        ctl.connect()                       # lands in the backlog
        ctl.sock.sendall(b'GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n')
        try:
            self.assertNotSpinning(p, 'a control connection waiting for a descriptor')
            lines = [ln for ln in p.err.text(mark).splitlines() if 'accept' in ln]
            self.assertLessEqual(len(lines), 20, 'accept errors logged %d times in 1 s' %
                                 len(lines))
            for cl in held[:5]:
                cl.close()
            ctl.sock.settimeout(RECOVERY_S)
            self.assertTrue(ctl.sock.recv(100).startswith(b'HTTP/1.1 200'),
                            'the control request once descriptors came back')
        finally:
            ctl.close()


# ---------------------------------------------------------------------------------------------

class PoolsDownTest(ExhaustionCase):

    def expect_503(self, p, rid):
        r = h.one_request(p.port, headers=[('X-Request-Id', rid)])
        self.assertStatus(r, 503, 'no usable server in either pool')
        m = ERR_BODY.match(r.body)
        self.assertTrue(m, '503 body %r' % r.body)
        self.assertEqual(m.group(2).decode(), rid, 'the 503 names the request id')
        self.assertEqual(r.header('X-Request-Id'), rid)

    def wait_all_200(self, p, what):
        def ok():
            try:
                return all(h.one_request(p.port, timeout=2).status == 200 for _ in range(5))
            except (OSError, h.ProtocolError):
                return False
        self.assertTrue(h.wait_until(ok, RECOVERY_S), 'not recovered (%s)' % what)

    def test_pools_in_maint_then_ready(self):
        p = self.start(routing={'failover': True})
        c = h.ctl_for(p)
        for pool, name in (('blue', 'b1'), ('green', 'g1')):
            self.assertEqual(c.admin(pool, name, 'maint').status, 200)
        for i in range(10):
            self.expect_503(p, 'maint-%d' % i)
        self.assertEqual(c.admin('green', 'g1', 'ready').status, 200)
        self.wait_all_200(p, 'green ready again: failover serves')
        self.assertEqual(h.one_request(p.port).header('X-Origin-Pool'), 'green')
        self.assertEqual(c.admin('blue', 'b1', 'ready').status, 200)
        self.assertEqual(h.one_request(p.port).header('X-Origin-Pool'), 'blue')

    def test_every_server_killed_503_then_back(self):
        p = self.start(health={'interval': '200ms', 'timeout': '200ms', 'rise': 1, 'fall': 1},
                       routing={'failover': True})
        c = h.ctl_for(p)
        for o in (self.b1, self.g1):
            o.stop(signal.SIGKILL)
        # until the checks mark them down a request may still try them (502: connect refused);
        # never anything else, never a reset
        deadline = time.monotonic() + RECOVERY_S
        statuses = []
        while time.monotonic() < deadline:
            r = h.one_request(p.port, headers=[('X-Request-Id', 'down-%d' % len(statuses))])
            statuses.append(r.status)
            self.assertIn(r.status, (502, 503), r.summary())
            self.assertTrue(ERR_BODY.match(r.body), r.body)
            st = c.status()
            if all(s['health'] == 'down' for pool in st['pools'].values()
                   for s in pool['servers']):
                break
            time.sleep(0.02)
        for i in range(10):
            self.expect_503(p, 'all-down-%d' % i)
        for o in (self.b1, self.g1):
            o.start()                       # the same ports
        self.wait_all_200(p, 'origins back on their ports')
        self.assertTrue(p.alive())
        print('\nwhile the checks caught up: %d requests, %d x 502, %d x 503' % (
            len(statuses), statuses.count(502), statuses.count(503)))


if __name__ == '__main__':
    h.main()
