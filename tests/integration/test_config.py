"""`switchyard -t -c FILE` (DESIGN §1, §9): exit 0 on a good config, 1 on a bad one with
`FILE:LINE:COL: key.path: message` on stderr; the daemon refuses to start on a bad config."""

import os
import re
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

GOOD = """\
listen:
  - address: 127.0.0.1:0
workers: 2
pools:
  blue:
    servers: [{name: b1, address: 127.0.0.1:9}, {name: b2, address: 127.0.0.1:10, weight: 2}]
  green:
    servers: [{name: g1, address: 127.0.0.1:11}]
routing:
  live: blue
  standby_percent: 12.5
  balance: p2c
  sticky: {by: cookie, name: sy_bucket, max_age: 1d}
timeouts: {client_header: 10s, keepalive: 60s, upstream_connect: 3s, upstream_response: 60s}
limits: {max_header_bytes: 32k, max_headers: 100, max_connections: 20000}
control: {socket: CONTROL_SOCK}
"""


class ConfigCheckTest(h.ProxyTestCase):

    def write(self, name, text):
        path = os.path.join(self.tmpdir, name)
        with open(path, 'w') as f:
            f.write(text.replace('CONTROL_SOCK', os.path.join(self.tmpdir, 'c.sock')))
        return path

    def check_bad(self, name, text, line, keypath, col=None):
        path = self.write(name, text)
        rc, out, err = h.run_check(path)
        self.assertEqual(rc, 1, '-t on a bad config (%s) exit %d; stderr:\n%s' % (name, rc, err))
        rx = re.compile(r'%s:(\d+):(\d+): (\S+): (.+)' % re.escape(path))
        ms = [rx.search(ln) for ln in err.splitlines()]
        ms = [m for m in ms if m]
        self.assertTrue(ms, 'no "%s:LINE:COL: key.path: message" on stderr:\n%s' % (path, err))
        hit = [m for m in ms if int(m.group(1)) == line and keypath in m.group(3)]
        self.assertTrue(hit, 'expected an error at line %d about %s; got:\n%s' % (line, keypath, err))
        if col is not None:
            self.assertEqual(int(hit[0].group(2)), col, err)
        return err

    def test_good_config(self):
        path = self.write('good.yaml', GOOD)
        rc, out, err = h.run_check(path)
        self.assertEqual(rc, 0, '-t on a good config exit %d; stderr:\n%s' % (rc, err))

    def test_good_generated_config(self):
        cfg = h.make_config([('b1', '127.0.0.1:9')], [('g1', '127.0.0.1:10')], self.tmpdir)
        path = self.write('gen.yaml', h.to_yaml(cfg) + '\n')
        rc, out, err = h.run_check(path)
        self.assertEqual(rc, 0, err)

    def test_unknown_key(self):
        text = GOOD.replace('  balance: p2c\n', '  balance: p2c\n  bogus_key: 1\n')
        self.check_bad('unknown.yaml', text, 13, 'routing.bogus_key', col=3)

    def test_weight_above_100(self):
        text = GOOD.replace('weight: 2}', 'weight: 101}')
        self.check_bad('weight.yaml', text, 6, 'weight')

    def test_duplicate_server_name(self):
        text = GOOD.replace('{name: b2,', '{name: b1,')
        self.check_bad('dup.yaml', text, 6, 'name')

    def test_bad_address(self):
        text = GOOD.replace('{name: g1, address: 127.0.0.1:11}', '{name: g1, address: nowhere:xx}')
        self.check_bad('addr.yaml', text, 8, 'address')

    def test_bad_duration(self):
        text = GOOD.replace('keepalive: 60s', 'keepalive: sixty')
        self.check_bad('dur.yaml', text, 14, 'keepalive')

    def test_bad_percent(self):
        text = GOOD.replace('standby_percent: 12.5', 'standby_percent: 101')
        self.check_bad('pct.yaml', text, 11, 'standby_percent')

    def test_pool_without_servers(self):
        text = GOOD.replace('    servers: [{name: g1, address: 127.0.0.1:11}]\n', '    servers: []\n')
        self.check_bad('empty.yaml', text, 8, 'servers')

    def test_yaml_syntax_error(self):
        text = GOOD.replace('  live: blue\n', '  live: [blue\n')
        path = self.write('syntax.yaml', text)
        rc, out, err = h.run_check(path)
        self.assertEqual(rc, 1, err)
        self.assertRegex(err, re.escape(path) + r':\d+:\d+: ', 'syntax error without file:line:col')

    def test_missing_file(self):
        rc, out, err = h.run_check(os.path.join(self.tmpdir, 'nope.yaml'))
        self.assertEqual(rc, 1, err)
        self.assertIn('nope.yaml', err)

    def test_several_errors_reported(self):
        text = GOOD.replace('keepalive: 60s', 'keepalive: sixty').replace('weight: 2}', 'weight: 0}')
        path = self.write('multi.yaml', text)
        rc, out, err = h.run_check(path)
        self.assertEqual(rc, 1)
        lines = {int(m.group(1)) for m in re.finditer(re.escape(path) + r':(\d+):\d+: ', err)}
        self.assertTrue({6, 14} <= lines, 'both errors (lines 6 and 14) expected; got:\n%s' % err)

    def test_daemon_refuses_bad_config(self):
        text = GOOD.replace('  balance: p2c\n', '  balance: p2c\n  bogus_key: 1\n')
        path = self.write('daemon-bad.yaml', text)
        p = h.spawn([h.SWITCHYARD, '-c', path])
        try:
            out, err = p.communicate(timeout=10)
        except Exception:
            p.kill()
            self.fail('switchyard -c BAD did not exit within 10s')
        self.assertNotEqual(p.returncode, 0)
        self.assertIn('bogus_key', err.decode('utf-8', 'replace'))

    def test_check_does_not_listen(self):
        # -t must not bind: checking a config whose listener port is busy still succeeds
        import socket
        s = socket.socket()
        s.bind(('127.0.0.1', 0))
        s.listen(1)
        try:
            text = GOOD.replace('127.0.0.1:0', '127.0.0.1:%d' % s.getsockname()[1])
            path = self.write('busy.yaml', text)
            t0 = time.monotonic()
            rc, out, err = h.run_check(path)
            self.assertEqual(rc, 0, '-t with a busy listen port: %s' % err)
            self.assertLess(time.monotonic() - t0, 5)
        finally:
            s.close()


if __name__ == '__main__':
    h.main()
