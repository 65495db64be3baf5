"""yardctl's command line without a proxy (DESIGN §8): help for every command, usage errors
(exit 2 with one clear message), and an unreachable control API (exit 3, one line, never a libcurl
dump) over the unix socket and TCP, with and without --json. The rollout commands (cutover
[--wait], pause, resume, promote, the status rollout line) also run against a scripted fake of the
control API, so that their lines and exit statuses are pinned down without timing a real rollout.

The yardctl binary comes from YARDCTL (set by tests/integration/meson.build), else
build-it/control/yardctl or build/control/yardctl; without one the file exits 77 (skipped).
  YARDCTL=build/control/yardctl python3 tests/integration/test_yardctl_cli.py -v
"""

import http.server
import json
import os
import re
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
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
    ['cutover', '--to', 'green', '--wait'],
    ['cutover', '--to', 'green', '--plan', 'linear:25%/2m', '--id', 'r1', '--wait', '--timeout',
     '1m', '--rollback-on-timeout'],
    ['cutover', '--to', 'green', '--plan', '[{"weight": 5, "hold": "30s"}, {"weight": 100}]'],
    ['cutover', '--to', 'green', '--plan', 'canary:5%/5m'],
    ['pause'],
    ['pause', '--reason', 'looking at the graphs'],
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

    def test_rollout_help(self):
        rc, out, err = self.run_yardctl('cutover', '--help')
        self.assertEqual(rc, 0, err)
        for word in ('--to POOL', '--plan PLAN', '--id ID', '--wait', '--timeout',
                     '--rollback-on-timeout', 'linear:', 'canary:', 'exit 0', 'exit 1', 'exit 5', 'exits 4'):
            self.assertIn(word, out)
        rc, out, err = self.run_yardctl('pause', '--help')
        self.assertEqual(rc, 0, err)
        self.assertIn('pause [--reason TEXT]', out)
        rc, out, err = self.run_yardctl('--help')
        self.assertIn('--rollback-on-timeout', out)
        for c in ('resume', 'promote'):
            rc, out, err = self.run_yardctl(c, '--help')
            self.assertEqual(rc, 0, err)
            self.assertNotIn('not in this version', out)

    def test_cutover_syntax(self):
        self.assert_usage('cutover', says='--to POOL is required')
        self.assert_usage('cutover', '--wait', says='--to POOL is required')
        self.assert_usage('cutover', '--to=', says='--to POOL is required')
        self.assert_usage('cutover', '--to', 'green', '--rollback-on-timeout',
                          says='--rollback-on-timeout goes with --wait')
        self.assert_usage('cutover', '--to', 'green', '--id', '', says='bad --id')
        self.assert_usage('cutover', '--to', 'green', '--id', 'x' * 65, says='bad --id')
        self.assert_usage('cutover', '--to', 'green', '--wait', '--timeout', 'soon',
                          says='bad --timeout')
        self.assert_usage('cutover', '--to', 'green', 'blue', says='unexpected argument')
        self.assert_usage('cutover', '--to', 'green', '--reason', 'x', says='--reason')
        # --plan: a shorthand the proxy knows, or a JSON array; checked before connecting.
        for bad in ('fast', 'linear:0%/1m', 'linear:25%', 'linear:25%/0s', 'canary:100%/1m',
                    'linear:0.5%/1m', 'steps:25%/1m', '{"weight": 5}'):
            self.assert_usage('cutover', '--to', 'green', '--plan', bad, says='bad --plan')
        for bad in ('[', '[{"weight": 5},', '[]', ' []', '[1,]'):
            self.assert_usage('cutover', '--to', 'green', '--plan', bad, says='bad --plan')

    def test_rollout_option_placement(self):
        for c in ('status', 'rollback', 'events', 'pause', 'resume', 'promote'):
            self.assert_usage(c, '--wait', says='takes no option --wait')
            self.assert_usage(c, '--rollback-on-timeout', says='takes no option')
        self.assert_usage('resume', '--reason', 'x', says='resume takes no option --reason')
        self.assert_usage('promote', '--plan', 'linear:10%/1m', says='--plan')
        self.assert_usage('pause', 'now', says='unexpected argument')

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



# --- the rollout commands against a scripted fake of the control API ---

GATES_PASS = {
    'healthy_ratio': {'enabled': True, 'evaluated': True, 'pass': True, 'observed': 1.0,
                      'threshold': 1.0},
    'error_rate': {'enabled': True, 'evaluated': True, 'pass': True, 'observed': 0.0,
                   'threshold': 0.01},
    'error_ratio': {'enabled': False, 'evaluated': False, 'pass': False, 'observed': 0.0,
                    'threshold': 0.0},
    'p99': {'enabled': True, 'evaluated': True, 'pass': True, 'observed': 12.3,
            'threshold': 800.0},
    'p99_ratio': {'enabled': False, 'evaluated': False, 'pass': False, 'observed': 0.0,
                  'threshold': 0.0},
}


def gates(**changes):
    """GATES_PASS with some gates changed: error_rate=(observed, pass), ..."""
    g = json.loads(json.dumps(GATES_PASS))
    for name, (observed, ok) in changes.items():
        g[name].update(observed=observed, **{'pass': ok})
    return g


GATES_NONE = {n: dict(v, evaluated=False, observed=0.0, **{'pass': False})
              for n, v in GATES_PASS.items()}

PLAN4 = [{'weight': 5.0, 'hold_s': 30.0}, {'weight': 25.0, 'hold_s': 30.0},
         {'weight': 50.0, 'hold_s': 30.0}, {'weight': 100.0, 'hold_s': 0.0}]


def rollout(state='progressing', step=1, weight=5.0, outcome=None, reason='', gates=None,
            insufficient=False, elapsed=0.0, to='green', frm='blue', rid=''):
    """A rollout object as rollout_status_json() makes it."""
    return {'state': state, 'outcome': outcome, 'id': rid, 'from': frm, 'to': to, 'step': step,
            'steps': len(PLAN4), 'weight_percent': weight, 'plan': PLAN4,
            'step_elapsed_s': elapsed, 'hold_s': PLAN4[step - 1]['hold_s'] if step else 0.0,
            'reason': reason, 'insufficient': insufficient,
            'gates': gates if gates is not None else GATES_NONE}


class FakeAPI:
    """The control API on a unix socket, scripted: POSTs answer from `answers` (path ->
    (HTTP status, envelope), or a callable of the body giving one) and are recorded in `posts`;
    `script` is a list of (seconds after POST /v1/cutover, generation, type, fields) that become
    events at that time; GET /v1/status shows `status_rollout` (a callable of the seconds since
    the cutover, or None: the newest scripted rollout object)."""

    def __init__(self, path):
        self.path = path
        self.gen = 7
        self.events = [{'type': 'reload', 'ok': True, 'serial': 1, 'generation': 7}]
        self.script = []
        self.answers = {}
        self.posts = []
        self.status_rollout = None
        self.current = {'state': 'stable', 'outcome': None}
        self.t0 = None
        self.lock = threading.Lock()
        for i, ev in enumerate(self.events):
            ev.setdefault('seq', i + 1)
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *a):
                pass

            def address_string(self):
                return 'fake'

            def reply(self, status, obj):
                out = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_GET(self):
                self.reply(*fake.get(self.path))

            def do_POST(self):
                n = int(self.headers.get('Content-Length') or 0)
                body = json.loads(self.rfile.read(n) or b'{}')
                self.reply(*fake.post(self.path, body))

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(path, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def ok(self, data, status=200, gen=None):
        return status, {'ok': True, 'generation': self.gen if gen is None else gen, 'data': data}

    def release(self):
        """Turns the scripted entries that are due into events."""
        with self.lock:
            if self.t0 is None:
                return
            now = time.monotonic() - self.t0
            while self.script and self.script[0][0] <= now:
                _, gen, typ, fields = self.script.pop(0)
                ev = {'seq': len(self.events) + 1, 'time': '2026-11-21T06:14:25.017Z',
                      'generation': gen, 'type': typ}
                ev.update(fields)
                self.events.append(ev)
                self.gen = max(self.gen, gen)
                if typ in ('rollout', 'gate'):
                    self.current = {k: v for k, v in fields.items() if k != 'action'}

    def get(self, path):
        if path == '/v1/status':
            self.release()
            ro = self.current
            if self.status_rollout is not None:
                ro = self.status_rollout(time.monotonic() - (self.t0 or time.monotonic()))
            return self.ok({'version': '0.1.0', 'generation': self.gen,
                            'routing': {'live': 'blue', 'standby': 'green',
                                        'standby_percent': 25.0, 'standby_bp': 2500},
                            'rollout': ro, 'pools': {}})
        m = re.match(r'^/v1/events\?since=(\d+)(?:&wait=(\d+))?$', path)
        if m:
            since, wait = int(m.group(1)), int(m.group(2) or 0)
            end = time.monotonic() + wait
            while True:
                self.release()
                evs = [e for e in self.events if e['seq'] > since]
                if evs or time.monotonic() >= end:
                    break
                time.sleep(0.02)
            return self.ok({'events': evs, 'next': evs[-1]['seq'] if evs else since})
        return 404, {'ok': False, 'generation': self.gen,
                     'error': {'code': 'not_found', 'message': 'no ' + path}}

    def post(self, path, body):
        self.posts.append((path, body))
        answer = self.answers.get(path)
        if callable(answer):
            answer = answer(body)
        if path == '/v1/cutover':
            with self.lock:
                self.t0 = time.monotonic()
        if answer is None:
            return 404, {'ok': False, 'generation': self.gen,
                         'error': {'code': 'not_found', 'message': 'no ' + path}}
        return answer


class YardctlRolloutTest(unittest.TestCase):
    """cutover [--wait], pause, resume, promote and the status rollout line against FakeAPI."""

    def setUp(self):
        self.tmpdir = tempfile.mkdtemp(prefix='yardctl-fake-')
        self.addCleanup(shutil.rmtree, self.tmpdir, True)
        self.sock = os.path.join(self.tmpdir, 'control.sock')
        self.api = FakeAPI(self.sock)
        self.addCleanup(self.api.close)

    def yardctl(self, *args, timeout=30):
        env = dict(os.environ)
        env['SWITCHYARD_SOCKET'] = self.sock
        p = subprocess.run([YARDCTL] + list(args), env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def start(self, data=None, gen=8):
        """POST /v1/cutover answers 202 with data (step 1 at 5% by default) at generation gen."""
        data = data if data is not None else rollout()
        def answer(body):
            self.api.gen = gen
            return self.api.ok(data, 202, gen)
        self.api.answers['/v1/cutover'] = answer
        self.api.current = data

    def at(self, t, gen, typ, **fields):
        self.api.script.append((t, gen, typ, fields))

    def cutovers(self):
        return [b for p, b in self.api.posts if p == '/v1/cutover']

    def test_cutover_started(self):
        self.start()
        rc, out, err = self.yardctl('cutover', '--to', 'green', '--plan', 'linear:25%/2m',
                                    '--id', 'rel-7')
        self.assertEqual((rc, err), (0, ''))
        self.assertEqual(out, 'cutover to green (id rel-7) started: step 1/4 at 5% '
                              '(generation 8)\n')
        self.assertEqual(self.cutovers(), [{'to': 'green', 'plan': 'linear:25%/2m',
                                            'id': 'rel-7'}])
        # A JSON array goes as JSON; --if-generation as if_generation; --json prints data.
        rc, out, err = self.yardctl('--json', '--if-generation', '8', 'cutover', '--to', 'green',
                                    '--plan', '[{"weight": 5, "hold": "30s"}, {"weight": 100}]')
        self.assertEqual((rc, err), (0, ''))
        self.assertEqual(json.loads(out)['steps'], 4)
        self.assertEqual(self.cutovers()[1], {'to': 'green', 'if_generation': 8,
                                              'plan': [{'weight': 5, 'hold': '30s'},
                                                       {'weight': 100}]})

    def test_cutover_refused(self):
        self.api.answers['/v1/cutover'] = (409, {
            'ok': False, 'generation': 7,
            'error': {'code': 'conflict', 'message': 'a rollout to green is progressing'}})
        for extra in ([], ['--wait']):
            rc, out, err = self.yardctl('cutover', '--to', 'green', *extra)
            self.assertEqual(rc, 4, err)
            self.assertEqual(err, 'yardctl: conflict: a rollout to green is progressing\n')
            self.assertEqual(out, '')
        self.api.answers['/v1/cutover'] = (400, {
            'ok': False, 'generation': 7,
            'error': {'code': 'invalid', 'message': 'blue is already live', 'field': 'to'}})
        rc, out, err = self.yardctl('cutover', '--to', 'blue', '--wait')
        self.assertEqual(rc, 1, err)
        self.assertEqual(err, 'yardctl: invalid: blue is already live (field to)\n')

    def test_wait_promoted(self):
        self.start()
        # A late event of an earlier rollout (an older generation) is not this one's.
        self.at(0.1, 7, 'rollout', action='rolled_back',
                **rollout('stable', 2, 0.0, 'rolled_back', 'an older one'))
        self.at(0.2, 8, 'gate', action='verdict', **rollout(gates=GATES_PASS))
        self.at(0.3, 9, 'routing', action='step', live='blue', standby_percent=25.0)
        self.at(0.3, 9, 'rollout', action='step', **rollout(step=2, weight=25.0,
                                                            gates=GATES_PASS))
        self.at(0.5, 10, 'rollout', action='step', **rollout(step=3, weight=50.0,
                                                             gates=GATES_PASS))
        self.at(0.7, 11, 'rollout', action='promoted',
                **rollout('stable', 4, 0.0, 'promoted', 'promoted: the gates passed at step 3 '
                          'of 4 (50.00%)', GATES_PASS))
        rc, out, err = self.yardctl('cutover', '--to', 'green', '--wait')
        self.assertEqual((rc, err), (0, ''))
        self.assertEqual(out.splitlines(), [
            'cutover to green started: step 1/4 at 5% (generation 8)',
            'gates: pass (healthy_ratio 1.00 >= 1.00, error_rate 0.0000 <= 0.0100, '
            'p99 12.3ms <= 800ms)',
            'step 2/4: 25% to green (generation 9)',
            'step 3/4: 50% to green (generation 10)',
            'promoted: green is live (generation 11)',
        ])
        self.assertNotIn('/v1/rollback', [p for p, b in self.api.posts])

    def test_wait_rolled_back_by_a_gate(self):
        self.start()
        self.at(0.2, 9, 'rollout', action='step', **rollout(step=2, weight=25.0,
                                                            gates=GATES_PASS))
        self.at(0.4, 10, 'rollout', action='rolled_back',
                **rollout('stable', 2, 0.0, 'rolled_back', 'gate error_rate failed: observed '
                          '0.4000 > threshold 0.0100', gates(error_rate=(0.4, False))))
        rc, out, err = self.yardctl('cutover', '--to', 'green', '--wait')
        self.assertEqual(rc, 1, err)
        # The verdict shows in rollout events too (a tick that steps or ends makes no gate
        # event of its own).
        self.assertEqual(out.splitlines(), [
            'cutover to green started: step 1/4 at 5% (generation 8)',
            'gates: pass (healthy_ratio 1.00 >= 1.00, error_rate 0.0000 <= 0.0100, '
            'p99 12.3ms <= 800ms)',
            'step 2/4: 25% to green (generation 9)',
            'gates: fail (error_rate 0.4000 > 0.0100)',
        ])
        self.assertEqual(err, 'yardctl: rolled back: gate error_rate failed: observed 0.4000 > '
                              'threshold 0.0100 (all traffic on blue, generation 10)\n')

    def test_wait_paused_resumed_then_rolled_back_by_hand(self):
        self.start()
        self.at(0.2, 9, 'rollout', action='step', **rollout(step=2, weight=25.0,
                                                            gates=GATES_PASS))
        self.at(0.3, 9, 'rollout', action='paused',
                **rollout('paused', 2, 25.0, reason='paused by an operator', gates=GATES_PASS))
        self.at(0.5, 9, 'rollout', action='resumed',
                **rollout(step=2, weight=25.0, reason='resumed', gates=GATES_PASS))
        self.at(0.6, 10, 'rollout', action='rolled_back',
                **rollout('stable', 2, 0.0, 'rolled_back', 'bad deploy', GATES_PASS))
        rc, out, err = self.yardctl('cutover', '--to', 'green', '--wait')
        self.assertEqual(rc, 1, err)
        self.assertEqual(out.splitlines()[2:], [
            'step 2/4: 25% to green (generation 9)',
            'paused at step 2/4 (25% to green): paused by an operator; waiting for resume, '
            'promote or rollback',
            'resumed at step 2/4 (25% to green)',
        ])
        self.assertEqual(err, 'yardctl: rolled back: bad deploy (all traffic on blue, '
                              'generation 10)\n')

    def test_wait_holding_then_promoted_by_hand(self):
        # Too little traffic makes no event: the hold shows in status only.
        hold = rollout(insufficient=True, reason='not enough traffic: 12 requests in the window, '
                       'the gates need 50; step 1 of 4 holds (waiting 2s of 15m)',
                       gates=dict(GATES_NONE, healthy_ratio=GATES_PASS['healthy_ratio']))
        self.start()
        self.api.status_rollout = lambda t: hold
        self.at(3.0, 9, 'rollout', action='promoted',
                **rollout('stable', 4, 0.0, 'promoted', 'promoted by hand at step 1 of 4 '
                          '(5.00%)'))
        rc, out, err = self.yardctl('cutover', '--to', 'green', '--wait')
        self.assertEqual((rc, err), (0, ''))
        self.assertEqual(out.splitlines(), [
            'cutover to green started: step 1/4 at 5% (generation 8)',
            'holding: 12 requests in the window, need 50',
            'promoted by hand: green is live (generation 9)',
        ])

    def test_wait_ended_without_its_event(self):
        # The events are gone (say, a restart emptied the ring): status tells the end.
        self.start()
        self.api.status_rollout = lambda t: rollout() if t < 0.5 else rollout(
            'stable', 2, 0.0, 'rolled_back', 'rolled back by hand')
        rc, out, err = self.yardctl('cutover', '--to', 'green', '--wait')
        self.assertEqual(rc, 1, err)
        self.assertEqual(err, 'yardctl: rolled back: rolled back by hand (all traffic on blue, '
                              'generation 8)\n')

    def test_wait_timeout_goes_on(self):
        self.start()
        t0 = time.monotonic()
        rc, out, err = self.yardctl('cutover', '--to', 'green', '--wait', '--timeout', '1500ms')
        self.assertEqual(rc, 5, err)
        self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual(err, 'yardctl: timeout: the rollout to green is not finished after '
                              '1500ms (step 1/4, 5% to green, progressing); it goes on (yardctl '
                              'rollback ends it)\n')
        self.assertEqual([p for p, b in self.api.posts], ['/v1/cutover'])

    def test_wait_timeout_rolls_back(self):
        self.start()
        self.api.answers['/v1/rollback'] = lambda body: self.api.ok(
            {'routing': {'live': 'blue', 'standby': 'green', 'standby_percent': 0.0,
                         'standby_bp': 0},
             'previous': {'live': 'blue', 'standby': 'green', 'standby_percent': 5.0,
                          'standby_bp': 500}, 'ack_us': 400}, 200, 9)
        rc, out, err = self.yardctl('cutover', '--to', 'green', '--wait', '--timeout', '1s',
                                    '--rollback-on-timeout')
        self.assertEqual(rc, 5, err)
        self.assertEqual(err, 'yardctl: timeout: the rollout to green was not finished after 1s '
                              '(step 1/4, 5% to green, progressing); rolled back: all traffic on '
                              'blue (generation 9)\n')
        # The rollback carries the generation status showed: one that crossed a promotion
        # (which it would undo) is refused.
        self.assertEqual(self.api.posts[-1], ('/v1/rollback', {
            'reason': 'yardctl --wait timeout', 'if_generation': 8}))

    def test_wait_timeout_rollback_finds_it_promoted(self):
        # Promoted between yardctl's status read and its rollback: the rollback is refused (the
        # generation moved) and the promotion is what yardctl reports.
        self.start()
        rollbacks = []

        def refuse(body):
            rollbacks.append(body)
            self.api.gen = 9
            return 409, {'ok': False, 'generation': 9,
                         'error': {'code': 'conflict', 'message': 'generation is 9, not 8',
                                   'field': 'if_generation'}}
        self.api.answers['/v1/rollback'] = refuse
        self.api.status_rollout = lambda t: rollout() if not rollbacks else rollout(
            'stable', 4, 0.0, 'promoted', 'promoted: the gates passed at step 3 of 4')
        rc, out, err = self.yardctl('cutover', '--to', 'green', '--wait', '--timeout', '1s',
                                    '--rollback-on-timeout')
        self.assertEqual((rc, err), (0, ''))
        self.assertEqual(out.splitlines()[-1], 'promoted: green is live (generation 9)')
        self.assertEqual(rollbacks, [{'reason': 'yardctl --wait timeout', 'if_generation': 8}])

    def test_wait_json_lines(self):
        self.start()
        self.at(0.2, 9, 'rollout', action='step', **rollout(step=2, weight=25.0,
                                                            gates=GATES_PASS))
        self.at(0.4, 10, 'rollout', action='promoted', **rollout('stable', 4, 0.0, 'promoted'))
        rc, out, err = self.yardctl('--json', 'cutover', '--to', 'green', '--wait')
        self.assertEqual((rc, err), (0, ''))
        lines = [json.loads(l) for l in out.splitlines()]
        self.assertEqual(lines[0]['state'], 'progressing')
        self.assertEqual([l.get('action') for l in lines[1:]], ['step', 'promoted'])

    def test_idempotent_repeat_of_a_finished_rollout(self):
        self.start(rollout('stable', 2, 0.0, 'rolled_back', 'gate p99 failed: observed 1234.5ms '
                           '> threshold 800.0ms', rid='rel-7'), gen=12)
        rc, out, err = self.yardctl('cutover', '--to', 'green', '--id', 'rel-7', '--wait')
        self.assertEqual(rc, 1, err)
        self.assertEqual(out, 'cutover to green (id rel-7) already finished (generation 12)\n')
        self.assertIn('rolled back: gate p99 failed', err)

    def test_pause_resume_promote(self):
        self.api.answers['/v1/pause'] = lambda body: self.api.ok(
            rollout('paused', 2, 25.0, reason=body.get('reason', 'paused by an operator')))
        self.api.answers['/v1/resume'] = lambda body: self.api.ok(rollout(step=2, weight=25.0))
        self.api.answers['/v1/promote'] = lambda body: self.api.ok(
            rollout('stable', 4, 0.0, 'promoted', 'promoted by hand'), 200, 11)
        rc, out, err = self.yardctl('pause', '--reason', 'checking the graphs')
        self.assertEqual((rc, out, err), (0, 'paused at step 2/4 (25% to green)\n', ''))
        self.assertEqual(self.api.posts[-1], ('/v1/pause', {'reason': 'checking the graphs'}))
        rc, out, err = self.yardctl('resume')
        self.assertEqual((rc, out, err), (0, 'resumed at step 2/4 (25% to green)\n', ''))
        rc, out, err = self.yardctl('promote', '--if-generation', '9')
        self.assertEqual((rc, out, err), (0, 'promoted: green is live (generation 11)\n', ''))
        self.assertEqual(self.api.posts[-1], ('/v1/promote', {'if_generation': 9}))
        for c in ('pause', 'resume', 'promote'):
            self.api.answers['/v1/' + c] = (409, {
                'ok': False, 'generation': 11,
                'error': {'code': 'conflict', 'message': 'no rollout is in progress'}})
            rc, out, err = self.yardctl(c)
            self.assertEqual((rc, out), (4, ''), err)
            self.assertEqual(err, 'yardctl: conflict: no rollout is in progress\n')

    def test_status_rollout_line(self):
        cases = [
            (rollout(step=2, weight=25.0, elapsed=12.2, gates=GATES_PASS),
             'rollout: progressing to green, step 2/4 at 25%, held 12s of 30s, gates pass '
             '(healthy_ratio 1.00 >= 1.00, error_rate 0.0000 <= 0.0100, p99 12.3ms <= 800ms)'),
            (rollout(elapsed=95, insufficient=True, rid='rel-7',
                     reason='not enough traffic: 3 requests in the window, the gates need 50; '
                            'step 1 of 4 holds'),
             'rollout: progressing to green (id rel-7), step 1/4 at 5%, held 1m35s (30s needed), '
             'gates holding (3 requests in the window, need 50)'),
            (rollout('paused', 2, 25.0, reason='gate p99 failed: observed 1234.5ms > threshold '
                     '800.0ms', gates=gates(p99=(1234.5, False))),
             'rollout: paused at step 2/4 (25% to green): gate p99 failed: observed 1234.5ms > '
             'threshold 800.0ms; gates fail (p99 1234ms > 800ms)'),
            (rollout('stable', 2, 0.0, 'rolled_back', 'gate error_rate failed: observed 0.4000 > '
                     'threshold 0.0100'),
             'rollout: stable; last rollout blue to green: rolled back: gate error_rate failed: '
             'observed 0.4000 > threshold 0.0100'),
            (rollout('stable', 4, 0.0, 'promoted', 'promoted: the gates passed at step 3 of 4'),
             'rollout: stable; last rollout blue to green: promoted: the gates passed at step 3 '
             'of 4'),
        ]
        for ro, want in cases:
            self.api.current = ro
            rc, out, err = self.yardctl('status')
            self.assertEqual((rc, err), (0, ''))
            lines = out.splitlines()
            self.assertTrue(lines[0].startswith('routing: '), out)
            self.assertEqual(lines[1], want)
        self.api.current = {'state': 'stable', 'outcome': None}
        rc, out, err = self.yardctl('status')
        self.assertEqual(out.splitlines()[1], '')


if __name__ == '__main__':
    if YARDCTL is None or not os.access(YARDCTL, os.X_OK):
        print('yardctl not built (set YARDCTL): skipped')
        sys.exit(77)
    unittest.main()
