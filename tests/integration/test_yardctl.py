"""yardctl (control/yardctl.md) against a running proxy: every command, its output, its exit
status, global flags before and after the command word, SWITCHYARD_SOCKET, an unreachable socket,
and the TCP listener with --url / --token-file. The API's own answers are checked through
harness.Ctl, so that each yardctl command is seen to have done what it says.

  YARDCTL=build/control/yardctl SWITCHYARD=build/switchyard ORIGIN=build/tests/origin/origin \
    python3 tests/integration/test_yardctl.py -v
"""

import json
import os
import re
import signal
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

YARDCTL = h.find_yardctl()


def keys_shape(obj):
    """The structure of a JSON value: dict keys (recursively) and list element shapes."""
    if isinstance(obj, dict):
        return {k: keys_shape(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [keys_shape(v) for v in obj]
    return type(obj).__name__ if not isinstance(obj, (int, float)) or isinstance(obj, bool) \
        else 'number'


class YardctlCase(h.ProxyTestCase):
    WATCHDOG = 60.0

    def setUp(self):
        if not YARDCTL or not os.path.exists(YARDCTL):
            self.skipTest('no yardctl binary (YARDCTL)')
        super().setUp()

    def start(self, green_extra=(), **kw):
        self.b1 = self.origin('blue', 'b1')
        self.b2 = self.origin('blue', 'b2')
        self.g1 = self.origin('green', 'g1', extra=green_extra)
        p = self.proxy(self.config([self.b1, self.b2], [self.g1], **kw))
        self.sock = p.config['control']['socket']
        self.api = h.Ctl(self.sock)
        h.wait_until(lambda: all(s['health'] != 'unknown' for pl in self.api.status()['pools']
                                 .values() for s in pl['servers']), 5)
        return p

    def y(self, *args, sock=True, env=None, timeout=20):
        """yardctl ARGS with SWITCHYARD_SOCKET set to this test's socket (sock=False: unset)."""
        return h.run_yardctl(args, sock=self.sock if sock is True else (sock or None), env=env,
                             timeout=timeout)

    def ok(self, *args, **kw):
        rc, out, err, el = self.y(*args, **kw)
        if rc != 0:
            self.fail('yardctl %s: exit %d, want 0\nstdout: %s\nstderr: %s\n%s' % (
                ' '.join(args), rc, out, err, self._short_diag()))
        return out, err, el

    def rc(self, want, *args, **kw):
        rc, out, err, el = self.y(*args, **kw)
        if rc != want:
            self.fail('yardctl %s: exit %d, want %d\nstdout: %s\nstderr: %s\n%s' % (
                ' '.join(args), rc, want, out, err, self._short_diag()))
        return out, err, el

    def one_line_error(self, err, prefix='yardctl: '):
        lines = [ln for ln in err.splitlines() if ln.strip()]
        self.assertEqual(len(lines), 1, 'want one line on stderr, got:\n%s' % err)
        self.assertTrue(lines[0].startswith(prefix), lines[0])
        return lines[0]

    def split(self):
        return self.api.status()['routing']['standby_bp']


# ---------------------------------------------------------------------------------------------

class StatusTest(YardctlCase):

    def test_status_table(self):
        self.start()
        out, err, _ = self.ok('status')
        self.assertEqual(err, '')
        self.assertRegex(out, r'routing: live blue 100%, standby green 0%, generation 1, '
                         r'rollout stable')
        self.assertRegex(out, r'(?m)^POOL\s+ROLE\s+SHARE\s+HEALTHY')
        self.assertRegex(out, r'(?m)^blue\s+live\s+100%\s+2/2\s')
        self.assertRegex(out, r'(?m)^green\s+standby\s+0%\s+1/1\s')
        self.assertRegex(out, r'(?m)^POOL\s+SERVER\s+ADDRESS\s+WEIGHT\s+HEALTH\s+ADMIN')
        for pool, o in (('blue', self.b1), ('blue', self.b2), ('green', self.g1)):
            self.assertRegex(out, r'(?m)^%s\s+%s\s+%s\s+1\s+up\s+ready\s' % (
                pool, o.name, re.escape(o.address)))
        self.assertNotIn('\x1b[', out, 'no colour, ever')

    def test_status_json_equals_api(self):
        self.start()
        api = self.api.status()
        for args in (('status', '--json'), ('--json', 'status')):
            out, err, _ = self.ok(*args)
            d = json.loads(out)
            self.assertEqual(keys_shape(d), keys_shape(api), ' '.join(args))
            self.assertEqual(d['routing'], api['routing'])
            self.assertEqual(d['generation'], api['generation'])
            for pool in ('blue', 'green'):
                strip = lambda p: {k: v for k, v in p.items() if k != 'window'}  # noqa: E731
                self.assertEqual(strip(d['pools'][pool]), strip(api['pools'][pool]))


class WeightTest(YardctlCase):

    def test_weight_forms(self):
        p = self.start()
        out, _, _ = self.ok('weight', 'green=25')
        self.assertRegex(out, r'^split: live blue 75%, standby green 25% \(generation 2, '
                         r'acknowledged by all workers in \d+\.\d ms\)')
        self.assertEqual(self.split(), 2500)
        out, _, _ = self.ok('weight', 'live=80')
        self.assertIn('standby green 20%', out)
        self.assertEqual(self.split(), 2000)
        self.ok('weight', 'standby=12.5%')
        self.assertEqual(self.split(), 1250)
        self.ok('weight', 'blue=66.67')
        self.assertEqual(self.split(), 3333)
        gen = self.api.generation()
        self.assertEqual(gen, 5)
        for bad in ('red=1', 'green=101', 'green=12.345', 'green', '=5', 'green=abc'):
            _, err, _ = self.rc(2, 'weight', bad)
            self.assertTrue(err.startswith('yardctl: '), err)
        self.assertEqual(self.api.generation(), gen, 'a refused weight command changed something')
        out, _, _ = self.ok('--json', 'weight', 'green=30')
        d = json.loads(out)
        self.assertEqual(d['routing']['standby_bp'], 3000)
        self.assertEqual(d['previous']['standby_bp'], 3333)
        self.assertIsInstance(d['ack_us'], int)
        # the split really follows
        n = 600
        green = sum(h.one_request(p.port).header('X-Origin-Pool') == 'green' for _ in range(n))
        self.assertTrue(0.22 <= green / n <= 0.38, 'green got %d/%d at 30%%' % (green, n))

    def test_if_generation_conflict(self):
        self.start()
        self.ok('weight', 'green=30')
        rc, out, err, _ = self.y('--if-generation', '1', 'rollback')
        self.assertEqual(rc, 4, 'stale --if-generation: exit %d\n%s%s' % (rc, out, err))
        line = self.one_line_error(err)
        self.assertEqual(line, 'yardctl: conflict: generation is 2, not 1 (field if_generation)')
        self.assertEqual(self.split(), 3000, 'a refused rollback rolled back')
        self.rc(4, 'weight', 'green=5', '--if-generation', '1')
        self.assertEqual(self.split(), 3000)
        _, err, _ = self.rc(4, '--json', '--if-generation=1', 'rollback')
        self.ok('rollback', '--if-generation', '2')
        self.assertEqual(self.split(), 0)


class RollbackTest(YardctlCase):

    def test_rollback_reason(self):
        self.start()
        self.ok('weight', 'green=40')
        out, err, _ = self.ok('rollback', '--reason', 'x')
        self.assertRegex(out, r'^rolled back: all traffic on blue \(generation 3, acknowledged '
                         r'by all workers in \d+\.\d ms\)')
        self.assertEqual(self.split(), 0)
        ev = [e for e in self.api.events(0).data['events'] if e.get('action') == 'rollback']
        self.assertEqual(ev[-1].get('reason'), 'x')
        self.ok('rollback')                        # idempotent
        self.assertEqual(self.api.generation(), 4)
        self.ok('rollback', '--reason=bad deploy')
        ev = [e for e in self.api.events(0).data['events'] if e.get('action') == 'rollback']
        self.assertEqual(ev[-1].get('reason'), 'bad deploy')


class ServerTest(YardctlCase):

    def test_server_states(self):
        p = self.start()

        def admin():
            return [s['admin'] for s in self.api.status()['pools']['blue']['servers']]
        out, _, _ = self.ok('server', 'blue/b1', 'drain')
        self.assertRegex(out, r'^blue/b1: admin drain \(health up, in-flight \d+, conns \d+; '
                         r'generation 1\)')
        self.assertEqual(admin(), ['drain', 'ready'])
        got = {h.one_request(p.port).header('X-Origin-Server') for _ in range(20)}
        self.assertEqual(got, {'b2'})
        self.ok('server', 'blue/b1', 'maint')
        self.assertEqual(admin(), ['maint', 'ready'])
        self.ok('server', 'blue/b1', 'ready')
        self.assertEqual(admin(), ['ready', 'ready'])
        out, _, _ = self.ok('--json', 'server', 'blue/b2', 'drain')
        self.assertEqual(json.loads(out)['admin'], 'drain')
        _, err, _ = self.rc(1, 'server', 'blue/b9', 'drain')
        self.assertEqual(self.one_line_error(err), 'yardctl: not_found: no server blue/b9')
        self.rc(1, 'server', 'red/b1', 'drain')
        self.rc(2, 'server', 'blue/b1', 'sleep')
        self.rc(2, 'server', 'b1', 'drain')


class WaitTest(YardctlCase):

    def test_wait_healthy(self):
        self.start(green_extra=['--health', 'down'])
        out, _, el = self.ok('wait', 'healthy', 'blue')
        self.assertLess(el, 1.5, 'wait healthy on a healthy pool took %.2fs' % el)
        self.assertIn('blue: healthy: 2/2 servers up', out)
        out, _, _ = self.ok('--json', 'wait', 'healthy', 'blue')
        self.assertEqual(json.loads(out)['role'], 'live')
        rc, out, err, el = self.y('wait', 'healthy', 'green', '--timeout', '1s')
        self.assertEqual(rc, 5, 'wait healthy on a down pool: exit %d\n%s%s' % (rc, out, err))
        self.assertTrue(0.9 <= el <= 3.0, 'timeout 1s took %.2fs' % el)
        self.assertIn('g1 down', out + err)
        self.assertTrue(err.strip().splitlines()[-1].startswith('yardctl: timeout'), err)
        self.rc(2, 'wait', 'healthy', 'red', '--timeout', '1s')

    def test_wait_drained(self):
        p = self.start()
        self.ok('weight', 'green=50')
        self.ok('rollback')
        self.ok('server', 'blue/b1', 'drain')
        out, _, el = self.ok('wait', 'drained', 'green', '--timeout', '5s')
        self.assertLess(el, 2.0)
        out, _, el = self.ok('wait', 'drained', 'blue', '--timeout', '5s')
        self.assertLess(el, 2.0, 'no traffic, yet wait drained blue took %.2fs' % el)
        self.assertIn('blue: drained', out)
        # with a request in flight the wait lasts until it ends
        res = {}

        def slow():
            res['r'] = h.one_request(p.port, target='/?delay=2500', timeout=10)
        t = threading.Thread(target=slow, daemon=True)
        t.start()
        busy = h.wait_until(lambda: self.api.status()['pools']['blue']['inflight'] == 1, 3, 0.05)
        self.assertTrue(busy, 'the slow request never showed in flight')
        out, _, el = self.ok('wait', 'drained', 'blue', '--timeout', '10s')
        t.join(10)
        self.assertEqual(res['r'].status, 200)
        self.assertGreater(el, 0.3, 'wait drained returned while a request was in flight:\n' + out)
        self.assertIn('blue: drained', out)
        rc, out, err, el = self.y('wait', 'drained', 'blue', '--timeout', '500ms')
        self.assertEqual(rc, 0, err)


class EventsTest(YardctlCase):

    def test_events(self):
        self.start()
        self.ok('weight', 'green=10')
        self.ok('rollback', '--reason', 'two words')
        out, _, _ = self.ok('events')
        lines = out.splitlines()
        self.assertGreaterEqual(len(lines), 5, out)
        rx = re.compile(r'^\d{4}-\d\d-\d\dT[\d:.]+Z (\d+) (health|routing|admin|reload) ')
        seqs = []
        for ln in lines:
            m = rx.match(ln)
            self.assertTrue(m, 'event line %r' % ln)
            seqs.append(int(m.group(1)))
        self.assertEqual(seqs, sorted(seqs))
        self.assertRegex(out, r'(?m) health pool=blue server=b1 from=unknown to=up ')
        self.assertRegex(out, r'(?m) routing action=weights live=blue standby_percent=10\.0 ')
        self.assertRegex(out, r'(?m) routing action=rollback .*reason="two words" ')
        out, _, _ = self.ok('events', '--since', str(seqs[-2]))
        self.assertEqual(len(out.splitlines()), 1, out)
        out, _, _ = self.ok('--json', 'events')
        objs = [json.loads(ln) for ln in out.splitlines()]
        self.assertEqual([o['seq'] for o in objs], seqs)

    def test_events_follow(self):
        self.start()
        e = dict(os.environ, SWITCHYARD_SOCKET=self.sock)
        proc = h.spawn([YARDCTL, 'events', '--follow'], env=e)
        col = h.LineCollector(proc.stdout, 'yardctl-follow')
        errc = h.LineCollector(proc.stderr, 'yardctl-follow-err')
        try:
            i, m = col.wait_for(r' health pool=green server=g1 ', 3)
            self.assertTrue(m, 'events --follow printed no initial events: %s %s' % (
                col.text(), errc.text()))
            time.sleep(0.3)           # now in its long poll
            mark = col.count()
            t0 = time.monotonic()
            self.assertTrue(self.api.weights(20).ok)
            i, m = col.wait_for(r' routing action=weights ', 1.0, mark)
            lag = time.monotonic() - t0
            self.assertTrue(m, 'events --follow: no new line within 1 s of a change; got: %r, '
                            'stderr %r' % (col.text(mark), errc.text()))
            self.assertLess(lag, 1.0)
            # and again (the next long poll)
            mark = col.count()
            self.assertTrue(self.api.rollback('again').ok)
            i, m = col.wait_for(r' routing action=rollback ', 1.0, mark)
            self.assertTrue(m, 'second event not followed: %r' % col.text(mark))
            self.assertTrue(proc.poll() is None, 'events --follow exited early')
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(5)
            self.assertEqual(rc, 0, 'events --follow ended by SIGTERM: exit %s, stderr %r' % (
                rc, errc.text()))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


    def test_events_follow_sigint(self):
        self.start()
        e = dict(os.environ, SWITCHYARD_SOCKET=self.sock)
        proc = h.spawn([YARDCTL, '--json', 'events', '-f'], env=e)
        col = h.LineCollector(proc.stdout, 'yardctl-follow')
        try:
            i, m = col.wait_for(r'"type": ?"health"', 3)
            self.assertTrue(m, 'events -f --json printed nothing: %r' % col.text())
            time.sleep(0.3)
            mark = col.count()
            self.assertTrue(self.api.admin('blue', 'b2', 'drain').ok)
            i, m = col.wait_for(r'"type": ?"admin"', 1.0, mark)
            self.assertTrue(m, 'no admin event followed: %r' % col.text(mark))
            self.assertEqual(json.loads(col.lines[i])['state'], 'drain')
            proc.send_signal(signal.SIGINT)
            self.assertEqual(proc.wait(5), 0, 'events -f ended by SIGINT')
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


class ReloadTest(YardctlCase):

    def test_reload(self):
        p = self.start()
        out, err, _ = self.ok('reload')
        self.assertRegex(out, r'^reload ok: config serial 2 \(generation 1\)')
        good = p.config_text()
        bad = good + 'bogus_key: 1\n'
        p.write_config(bad)
        rc, out, err, _ = self.y('reload')
        self.assertEqual(rc, 1, 'refused reload: exit %d\n%s%s' % (rc, out, err))
        base = re.escape(os.path.basename(p.path))
        self.assertRegex(err, r'(?m)^(\S*/)?%s:%d:1: bogus_key' % (base, bad.count('\n')))
        self.assertRegex(err.strip().splitlines()[-1],
                         r'^yardctl: invalid: reload refused \(1 error\); the running config '
                         r'stays')
        self.assertEqual(self.api.status()['pools']['blue']['servers'][0]['name'], 'b1')
        p.write_config(good)
        out, _, _ = self.ok('reload')
        self.assertIn('config serial 3', out)


class MetricsTest(YardctlCase):

    def test_metrics(self):
        self.start()
        out, _, _ = self.ok('metrics')
        lines = [ln for ln in out.splitlines() if ln and not ln.startswith('#')]
        self.assertTrue(lines)
        self.assertTrue(all(ln.startswith('switchyard_') for ln in lines), lines[:5])
        fams, samples = h.parse_metrics(out)
        self.assertEqual(h.metric(samples, 'switchyard_generation'), 1)
        out2, _, _ = self.ok('--json', 'metrics')
        self.assertTrue(out2.startswith('# '), '--json has no effect on metrics')


class GlobalOptionsTest(YardctlCase):

    def test_flags_before_and_after(self):
        self.start()
        missing = os.path.join(self.tmpdir, 'missing.sock')
        for args in (('--socket', self.sock, 'status'), ('status', '--socket', self.sock),
                     ('--socket=' + self.sock, '--json', 'status'),
                     ('--json', 'status', '--socket=' + self.sock)):
            rc, out, err, _ = self.y(*args, sock=missing)
            self.assertEqual(rc, 0, '%s: exit %d %s' % (args, rc, err))
            if '--json' in args:
                self.assertEqual(json.loads(out)['generation'], 1)
            else:
                self.assertIn('routing: live blue', out)
        rc, out, err, _ = self.y('weight', 'green=10', '--socket', self.sock, '--json',
                                 sock=missing)
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)['routing']['standby_bp'], 1000)
        rc, out, err, _ = self.y('--', 'status', sock=self.sock)
        self.assertEqual(rc, 0, err)

    def test_environment_socket(self):
        self.start()
        rc, out, err, _ = self.y('status', sock=self.sock)
        self.assertEqual(rc, 0, err)
        self.assertIn('routing: live blue', out)
        # --socket wins over the environment
        rc, out, err, _ = self.y('--socket', os.path.join(self.tmpdir, 'nope.sock'), 'status',
                                 sock=self.sock)
        self.assertEqual(rc, 3, err)

    def test_unreachable(self):
        p = self.start()
        missing = os.path.join(self.tmpdir, 'missing.sock')
        for args in (('status',), ('rollback',), ('weight', 'green=5'), ('events',),
                     ('wait', 'healthy', 'blue'), ('metrics',)):
            rc, out, err, el = self.y(*args, sock=missing)
            self.assertEqual(rc, 3, '%s: exit %d' % (args, rc))
            line = self.one_line_error(err)
            self.assertIn('cannot reach switchyard at %s' % missing, line)
            self.assertIn('no such file or directory', line)
            self.assertEqual(out, '')
        # a stopped proxy: its socket is gone
        p.expected_exit = True
        p.stop()
        rc, out, err, _ = self.y('status')
        self.assertEqual(rc, 3, err)
        self.one_line_error(err)
        rc, out, err, _ = self.y('--json', 'status')
        self.assertEqual(rc, 3)
        self.assertEqual(json.loads(out)['code'], 'unreachable')

    def test_shutting_down_is_unreachable(self):
        p = self.start(timeouts={'shutdown': '10s'})
        res = {}

        def slow():
            res['r'] = h.one_request(p.port, target='/?delay=2000', timeout=10)
        t = threading.Thread(target=slow, daemon=True)
        t.start()
        busy = h.wait_until(lambda: self.api.status()['pools']['blue']['inflight'] == 1, 3, 0.05)
        self.assertTrue(busy, 'the slow request never showed in flight')
        p.expected_exit = True
        p.signal(signal.SIGTERM)
        self.assertTrue(p.err.wait_for(r'shutdown', 2)[1])
        rc, out, err, _ = self.y('rollback')
        self.assertEqual(rc, 3, 'rollback while the proxy shuts down: exit %d %s' % (rc, err))
        self.assertEqual(self.one_line_error(err), 'yardctl: unavailable: switchyard is shutting '
                         'down')
        t.join(10)
        self.assertEqual(res['r'].status, 200)

    def test_tcp_url_token(self):
        port = h.free_port()
        token = 'yardctl-tcp-token-0123456789'
        tf = os.path.join(self.tmpdir, 'token')
        with open(tf, 'w') as f:
            f.write(token + '\n')
        bad = os.path.join(self.tmpdir, 'bad-token')
        with open(bad, 'w') as f:
            f.write('not-the-token-0123456789abc\n')
        self.start(extra={'control': {'listen': '127.0.0.1:%d' % port, 'token_file': tf}})
        url = 'http://127.0.0.1:%d' % port
        out, _, _ = self.ok('--url', url, '--token-file', tf, 'status', sock=False)
        self.assertIn('routing: live blue', out)
        self.ok('weight', 'green=15', '--url', url, '--token-file', tf, sock=False)
        self.assertEqual(self.split(), 1500)
        rc, out, err, _ = self.y('--url', url, '--token-file', bad, 'rollback', sock=False)
        self.assertEqual(rc, 1, 'wrong token: exit %d %s' % (rc, err))
        self.assertTrue(self.one_line_error(err).startswith('yardctl: forbidden'), err)
        rc, out, err, _ = self.y('--url', url, 'status', sock=False)
        self.assertEqual(rc, 1, 'no token: exit %d %s' % (rc, err))
        self.assertEqual(self.split(), 1500)
        rc, out, err, _ = self.y('--url', 'http://127.0.0.1:%d' % h.free_port(), '--token-file',
                                 tf, 'status', sock=False)
        self.assertEqual(rc, 3, err)
        self.one_line_error(err)


if __name__ == '__main__':
    h.main()
