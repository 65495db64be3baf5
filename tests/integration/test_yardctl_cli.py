"""yardctl's command line without a proxy (DESIGN §8): help for every command, usage errors
(exit 2 with one clear message), and an unreachable control API (exit 3, one line, never a libcurl
dump) over the unix socket and TCP, with and without --json.

The yardctl binary comes from YARDCTL (set by tests/integration/meson.build), else
build-it/control/yardctl or build/control/yardctl; without one the file exits 77 (skipped).
  YARDCTL=build/control/yardctl python3 tests/integration/test_yardctl_cli.py -v
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.environ.get('SOURCE_ROOT') or os.path.dirname(os.path.dirname(HERE))

COMMANDS = ['status', 'rollback', 'weight', 'server', 'wait', 'events', 'reload', 'metrics',
            'cutover', 'pause', 'resume', 'promote']

# A valid invocation of each command (what needs a proxy to go further).
INVOCATIONS = [
    ['status'],
    ['rollback'],
    ['rollback', '--reason', 'bad deploy'],
    ['weight', 'green=25'],
    ['weight', 'live=90'],
    ['server', 'blue/b1', 'drain'],
    ['wait', 'healthy', 'green'],
    ['wait', 'drained', 'blue', '--timeout', '2s'],
    ['events'],
    ['events', '--since', '12'],
    ['reload'],
    ['metrics'],
    ['cutover', '--to', 'green'],
    ['pause'],
    ['resume'],
    ['promote'],
]


def find_yardctl():
    p = os.environ.get('YARDCTL')
    if p:
        return p
    for b in ('build-it', 'build'):
        cand = os.path.join(SOURCE_ROOT, b, 'control', 'yardctl')
        if os.path.exists(cand):
            return cand
    return None


YARDCTL = find_yardctl()


class YardctlCliTest(unittest.TestCase):

    def setUp(self):
        self.tmpdir = tempfile.mkdtemp(prefix='yardctl-cli-')
        self.addCleanup(shutil.rmtree, self.tmpdir, True)
        # Never the real /run/switchyard socket: a path that does not exist.
        self.missing = os.path.join(self.tmpdir, 'missing.sock')

    def run_yardctl(self, *args, env_socket=None, timeout=20):
        env = dict(os.environ)
        env['SWITCHYARD_SOCKET'] = env_socket if env_socket is not None else self.missing
        p = subprocess.run([YARDCTL] + list(args), env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def assert_usage(self, *args, says=None):
        rc, out, err = self.run_yardctl(*args)
        self.assertEqual(rc, 2, 'yardctl %s: exit %d, want 2 (usage)\nstdout: %s\nstderr: %s'
                         % (' '.join(args), rc, out, err))
        self.assertTrue(err.startswith('yardctl: '), 'no "yardctl: " message: %r' % err)
        self.assertEqual(out, '', 'a usage error printed on stdout: %r' % out)
        self.assertLessEqual(len(err.splitlines()), 2, 'usage error over two lines:\n' + err)
        if says is not None:
            self.assertIn(says, err)
        return err

    def assert_unreachable(self, args, where, why, env_socket=None):
        rc, out, err = self.run_yardctl(*args, env_socket=env_socket)
        self.assertEqual(rc, 3, 'yardctl %s: exit %d, want 3\nstderr: %s' % (' '.join(args), rc, err))
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, 'want exactly one line on stderr, got:\n' + err)
        self.assertTrue(lines[0].startswith('yardctl: cannot reach switchyard at %s: %s'
                                            % (where, why)), lines[0])
        self.assertNotIn('curl', lines[0].lower())
        return out, lines[0]

    def refused_socket(self):
        """A socket file nobody listens on: connect() gives ECONNREFUSED."""
        path = os.path.join(self.tmpdir, 'dead.sock')
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.close()
        return path

    def closed_port(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
        s.close()
        return port

    # --- help ---

    def test_global_help(self):
        for flag in ('--help', '-h'):
            rc, out, err = self.run_yardctl(flag)
            self.assertEqual(rc, 0, err)
            self.assertIn('usage: yardctl', out)
            for c in COMMANDS:
                self.assertIn(c, out, 'global help does not mention %s' % c)
            self.assertIn('exit status', out)
            self.assertEqual(err, '')

    def test_help_command_word(self):
        rc, out, err = self.run_yardctl('help')
        self.assertEqual(rc, 0, err)
        self.assertIn('usage: yardctl', out)
        rc, out, err = self.run_yardctl('help', 'weight')
        self.assertEqual(rc, 0, err)
        self.assertIn('yardctl [OPTIONS] weight POOL=PERCENT', out)

    def test_every_command_help(self):
        for c in COMMANDS:
            for args in ([c, '--help'], [c, '-h'], ['--help', c]):
                rc, out, err = self.run_yardctl(*args)
                self.assertEqual(rc, 0, 'yardctl %s: exit %d\n%s' % (' '.join(args), rc, err))
                self.assertIn('usage: yardctl [OPTIONS] %s' % c, out)
                self.assertEqual(err, '')

    def test_help_needs_no_arguments(self):
        # Help wins over missing arguments; it never connects.
        rc, out, err = self.run_yardctl('server', '--help')
        self.assertEqual(rc, 0, err)
        self.assertIn('ready|drain|maint', out)
        rc, out, err = self.run_yardctl('wait', '--help')
        self.assertEqual(rc, 0, err)
        self.assertIn('healthy|drained', out)

    def test_version(self):
        rc, out, err = self.run_yardctl('--version')
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r'^yardctl \d+\.\d+\.\d+\n$')

    # --- usage errors ---

    def test_no_command(self):
        self.assert_usage(says='no command')
        self.assert_usage('--json', says='no command')

    def test_unknown_command(self):
        err = self.assert_usage('frobnicate', says='unknown command "frobnicate"')
        self.assertIn('--help', err)
        self.assert_usage('help', 'frobnicate', says='unknown command')
        self.assert_usage('frobnicate', '--help', says='unknown command')

    def test_unknown_option(self):
        self.assert_usage('--bogus', 'status', says='unknown option "--bogus"')
        self.assert_usage('status', '--bogus=1', says='unknown option "--bogus"')
        self.assert_usage('status', '-x', says='unknown option "-x"')

    def test_option_values(self):
        self.assert_usage('status', '--socket', says='--socket needs a value')
        self.assert_usage('--json=yes', 'status', says='--json takes no value')
        self.assert_usage('--timeout', '5', 'wait', 'healthy', 'green', says='bad --timeout')
        self.assert_usage('--timeout', '0s', 'wait', 'healthy', 'green', says='bad --timeout')
        self.assert_usage('--timeout', 'soon', 'wait', 'healthy', 'green', says='bad --timeout')
        self.assert_usage('--if-generation', 'abc', 'rollback', says='bad --if-generation')
        self.assert_usage('--if-generation', '-1', 'rollback', says='bad --if-generation')
        self.assert_usage('--if-generation', '3', 'status', says='--if-generation')
        self.assert_usage('events', '--since', 'x', says='bad --since')
        self.assert_usage('events', '--since=-3', says='bad --since')

    def test_option_of_another_command(self):
        self.assert_usage('rollback', '--follow', says='rollback takes no option --follow')
        self.assert_usage('status', '--reason', 'x', says='status takes no option --reason')
        self.assert_usage('weight', 'green=5', '--to', 'green', says='--to')

    def test_argument_counts(self):
        self.assert_usage('status', 'extra', says='unexpected argument "extra"')
        self.assert_usage('weight', says='missing argument')
        self.assert_usage('weight', 'green=5', 'blue=95', says='unexpected argument')
        self.assert_usage('server', 'blue/b1', says='missing argument')
        self.assert_usage('wait', says='missing argument')
        self.assert_usage('wait', 'healthy', says='missing argument')
        self.assert_usage('events', '12', says='unexpected argument')

    def test_weight_syntax(self):
        # Checked before connecting: these never reach the (missing) socket.
        self.assert_usage('weight', 'green', says='expected POOL=PERCENT')
        self.assert_usage('weight', '=25', says='expected POOL=PERCENT')
        for bad in ('101', '-5', '12.345', 'abc', '', '50%%', '1e2'):
            self.assert_usage('weight', 'green=' + bad, says='bad percentage')
        # 0, 100, two decimals and a % sign are fine: they get as far as the socket.
        for good in ('0', '100', '12.5', '33.33', '25%'):
            rc, out, err = self.run_yardctl('weight', 'green=' + good)
            self.assertEqual(rc, 3, 'weight green=%s: exit %d\n%s' % (good, rc, err))

    def test_server_syntax(self):
        self.assert_usage('server', 'b1', 'drain', says='expected POOL/NAME')
        self.assert_usage('server', '/b1', 'drain', says='expected POOL/NAME')
        self.assert_usage('server', 'blue/', 'drain', says='expected POOL/NAME')
        self.assert_usage('server', 'blue/b1/x', 'drain', says='expected POOL/NAME')
        self.assert_usage('server', 'blue/b1', 'down', says='unknown state "down"')

    def test_wait_syntax(self):
        self.assert_usage('wait', 'ready', 'green', says='unknown condition "ready"')

    def test_cutover_syntax(self):
        self.assert_usage('cutover', says='--to POOL is required')
        self.assert_usage('cutover', '--to', 'green', '--wait', says='--wait')

    def test_transport_options(self):
        self.assert_usage('--socket', self.missing, '--url', 'http://127.0.0.1:1', 'status',
                          says='exclude each other')
        tok = os.path.join(self.tmpdir, 'token')
        with open(tok, 'w') as f:
            f.write('secret\n')
        self.assert_usage('--token-file', tok, 'status', says='--token-file goes with --url')
        self.assert_usage('--url', 'ftp://127.0.0.1:1', 'status', says='bad --url')
        self.assert_usage('--url', '127.0.0.1:1', 'status', says='bad --url')

    def test_token_file_problems(self):
        url = 'http://127.0.0.1:%d' % self.closed_port()
        self.assert_usage('--url', url, '--token-file', os.path.join(self.tmpdir, 'nope'),
                          'status', says='cannot read token file')
        empty = os.path.join(self.tmpdir, 'empty')
        with open(empty, 'w') as f:
            f.write('\n')
        self.assert_usage('--url', url, '--token-file', empty, 'status', says='is empty')
        two = os.path.join(self.tmpdir, 'two')
        with open(two, 'w') as f:
            f.write('abc\ndef\n')
        self.assert_usage('--url', url, '--token-file', two, 'status', says='control character')

    # --- cannot reach the proxy ---

    def test_missing_socket(self):
        out, line = self.assert_unreachable(['status'], self.missing, 'no such file or directory')
        self.assertIn('--socket / SWITCHYARD_SOCKET', line)
        self.assertEqual(out, '')

    def test_refused_socket(self):
        dead = self.refused_socket()
        out, line = self.assert_unreachable(['status', '--socket', dead], dead,
                                            'connection refused')
        self.assertIn('(is the proxy running? --socket / SWITCHYARD_SOCKET)', line)

    def test_socket_from_environment(self):
        dead = self.refused_socket()
        self.assert_unreachable(['status'], dead, 'connection refused', env_socket=dead)
        # --socket wins over the environment, before or after the command word.
        self.assert_unreachable(['--socket', self.missing, 'status'], self.missing, 'no such file',
                                env_socket=dead)
        self.assert_unreachable(['status', '--socket=' + self.missing], self.missing,
                                'no such file', env_socket=dead)

    def test_default_socket(self):
        rc, out, err = self.run_yardctl('status', env_socket='')
        if rc == 3:  # no proxy on this machine's default socket (the usual case)
            self.assertIn('cannot reach switchyard at /run/switchyard/control.sock: ', err)
            self.assertEqual(len(err.splitlines()), 1, err)

    def test_every_command_unreachable(self):
        dead = self.refused_socket()
        for args in INVOCATIONS:
            self.assert_unreachable(args + ['--socket', dead], dead, 'connection refused')
        self.assert_unreachable(['--if-generation', '7', 'rollback', '--socket', dead], dead,
                                'connection refused')

    def test_json_unreachable(self):
        dead = self.refused_socket()
        for args in (['--json', 'status'], ['status', '--json'], ['--json', 'rollback'],
                     ['weight', 'green=10', '--json'], ['events', '--json']):
            out, line = self.assert_unreachable(args + ['--socket', dead], dead,
                                                'connection refused')
            # stdout stays machine-readable: the error object, or nothing.
            if out.strip():
                obj = json.loads(out)
                self.assertEqual(obj.get('code'), 'unreachable', out)

    def test_tcp_refused(self):
        url = 'http://127.0.0.1:%d' % self.closed_port()
        out, line = self.assert_unreachable(['--url', url, 'status'], url, 'connection refused')
        self.assertIn('--url', line)
        tok = os.path.join(self.tmpdir, 'token')
        with open(tok, 'w') as f:
            f.write('secret\r\n')
        self.assert_unreachable(['status', '--url', url, '--token-file', tok, '--json'], url,
                                'connection refused')

    def test_wait_unreachable_is_not_timeout(self):
        rc, out, err = self.run_yardctl('wait', 'healthy', 'green', '--timeout', '1s')
        self.assertEqual(rc, 3, err)

    def test_events_follow_unreachable(self):
        rc, out, err = self.run_yardctl('events', '--follow')
        self.assertEqual(rc, 3, err)
        self.assertEqual(len(err.splitlines()), 1, err)


if __name__ == '__main__':
    if YARDCTL is None or not os.access(YARDCTL, os.X_OK):
        print('yardctl not built (set YARDCTL): skipped')
        sys.exit(77)
    unittest.main()
