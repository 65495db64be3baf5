"""harness.py — shared machinery for switchyard's integration tests.

Runs the real `switchyard` daemon and real test origins (`tests/origin/origin`) on 127.0.0.1 with
port 0, and talks to them with raw sockets so that framing is byte-exact.

Environment (set by tests/integration/meson.build; defaults for manual runs):
  SWITCHYARD   path of the daemon      (default SOURCE_ROOT/build-it/switchyard)
  ORIGIN       path of the test origin (default SOURCE_ROOT/build-it/tests/origin/origin)
  SOURCE_ROOT  the source tree

Every child process gets PR_SET_PDEATHSIG(SIGKILL), is registered for cleanup (tearDown and
atexit), and every socket has a timeout: a test can fail, never hang. Spawn processes from the
main thread only (the death signal fires when the spawning *thread* exits).

Run a single test by hand:  python3 tests/integration/test_http.py HttpTest.test_pipelining
"""

import atexit
import ctypes
import faulthandler
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.environ.get('SOURCE_ROOT') or os.path.dirname(os.path.dirname(HERE))


def _find_bin(env, rel):
    p = os.environ.get(env)
    if p:
        return p
    for b in ('build-it', 'build'):
        cand = os.path.join(SOURCE_ROOT, b, rel)
        if os.path.exists(cand):
            return cand
    return os.path.join(SOURCE_ROOT, 'build-it', rel)


SWITCHYARD = _find_bin('SWITCHYARD', 'switchyard')
ORIGIN = _find_bin('ORIGIN', os.path.join('tests', 'origin', 'origin'))

LOOPBACK = '127.0.0.1'
DEFAULT_TIMEOUT = 5.0          # socket timeout for ordinary requests
START_TIMEOUT = 10.0           # how long a daemon / origin may take to start listening
HOST = 'test.local'            # Host header our clients send

# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1
_ALL_PROCS = []                # every Popen we started, for atexit / watchdog
_ALL_PROCS_LOCK = threading.Lock()


def _preexec():
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.setpgid(0, 0)           # own process group: a ^C to the runner does not hit it twice


def spawn(argv, **kw):
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, preexec_fn=_preexec, close_fds=True, **kw)
    with _ALL_PROCS_LOCK:
        _ALL_PROCS.append(p)
    return p


def _kill_all():
    with _ALL_PROCS_LOCK:
        procs = list(_ALL_PROCS)
    for p in procs:
        if p.poll() is None:
            try:
                p.kill()
            except OSError:
                pass
    for p in procs:
        try:
            p.wait(timeout=2)
        except Exception:
            pass


atexit.register(_kill_all)


class LineCollector:
    """Drains a child's pipe in a daemon thread, keeping every line (decoded, no newline)."""

    def __init__(self, f, label):
        self.f = f
        self.label = label
        self.lines = []
        self.cond = threading.Condition()
        self.eof = False
        self.t = threading.Thread(target=self._run, name='drain-' + label, daemon=True)
        self.t.start()

    def _run(self):
        try:
            for raw in iter(self.f.readline, b''):
                line = raw.decode('utf-8', 'replace').rstrip('\r\n')
                with self.cond:
                    self.lines.append(line)
                    self.cond.notify_all()
        except (OSError, ValueError):
            pass
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def wait_for(self, regex, timeout, start=0):
        """First line at index >= start matching regex: (index, match), or (None, None)."""
        rx = re.compile(regex)
        deadline = time.monotonic() + timeout
        i = start
        with self.cond:
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m:
                        return i, m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or self.eof:
                    return None, None
                self.cond.wait(min(left, 0.1))

    def count(self):
        with self.cond:
            return len(self.lines)

    def text(self, start=0):
        with self.cond:
            return '\n'.join(self.lines[start:])

    def tail(self, n=40):
        with self.cond:
            return '\n'.join(self.lines[-n:])


def free_port():
    """A port with nothing listening on it (connect is refused): bind, note the port, close."""
    s = socket.socket()
    s.bind((LOOPBACK, 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Origin:
    """One test origin process: `origin --listen 127.0.0.1:PORT --pool P --name N --quiet`."""

    def __init__(self, pool='blue', name='b1', port=0, extra=()):
        self.pool = pool
        self.name = name
        self.port = port
        self.extra = list(extra)
        self.proc = None
        self.out = self.err = None

    def start(self, bind_retry=5.0):
        deadline = time.monotonic() + bind_retry
        while True:
            argv = [ORIGIN, '--listen', '%s:%d' % (LOOPBACK, self.port), '--pool', self.pool,
                    '--name', self.name, '--quiet'] + self.extra
            self.proc = spawn(argv)
            self.out = LineCollector(self.proc.stdout, 'origin-%s-out' % self.name)
            self.err = LineCollector(self.proc.stderr, 'origin-%s-err' % self.name)
            _, m = self.out.wait_for(r'origin listening on 127\.0\.0\.1:(\d+)', START_TIMEOUT)
            if m:
                self.port = int(m.group(1))
                return self
            self.stop()
            if self.port and time.monotonic() < deadline:   # fixed port still busy: retry
                time.sleep(0.2)
                continue
            raise RuntimeError('origin %s did not start (rc=%s)\nstdout:\n%s\nstderr:\n%s' % (
                self.name, self.proc.returncode, self.out.tail(), self.err.tail()))

    @property
    def address(self):
        return '%s:%d' % (LOOPBACK, self.port)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def restart(self):
        """Stop and start again on the same port."""
        self.stop()
        return self.start()

    def stats(self):
        """GET /_origin/stats directly (the request itself is counted by the origin)."""
        c = Client(self.port)
        try:
            r = c.request('GET', '/_origin/stats', headers=[('Host', HOST), ('Connection', 'close')])
        finally:
            c.close()
        if r.status != 200:
            raise RuntimeError('origin stats: %s' % r.summary())
        return r.json()


# ---------------------------------------------------------------------------------------------
# Config (tiny YAML emitter: block mappings and sequences, plain or JSON-quoted scalars)
# ---------------------------------------------------------------------------------------------

_PLAIN = re.compile(r'^[A-Za-z0-9_/.][A-Za-z0-9_./:@%+\-]*$')


def _scalar(v):
    if v is True:
        return 'true'
    if v is False:
        return 'false'
    if v is None:
        return 'null'
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    if _PLAIN.match(s) and not s.endswith(':'):
        return s
    return json.dumps(s)


def to_yaml(obj, indent=0):
    pad = ' ' * indent
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                out.append('%s%s:' % (pad, k))
                out.append(to_yaml(v, indent + 2))
            elif isinstance(v, dict):
                out.append('%s%s: {}' % (pad, k))
            elif isinstance(v, list):
                out.append('%s%s: []' % (pad, k))
            else:
                out.append('%s%s: %s' % (pad, k, _scalar(v)))
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, (dict, list)) and item:
                sub = to_yaml(item, indent + 2)
                out.append(pad + '- ' + sub[indent + 2:])
            else:
                out.append('%s- %s' % (pad, _scalar(item)))
    else:
        out.append(pad + _scalar(obj))
    return '\n'.join(out)


def servers(*origins_or_pairs):
    """[{name, address}] from Origin objects or (name, 'host:port') pairs."""
    out = []
    for o in origins_or_pairs:
        if isinstance(o, Origin):
            out.append({'name': o.name, 'address': o.address})
        elif isinstance(o, dict):
            out.append(dict(o))
        else:
            out.append({'name': o[0], 'address': o[1]})
    return out


def make_config(blue, green, tmpdir, workers=2, listen=None, routing=None, timeouts=None,
                limits=None, extra=None):
    """A complete config dict. blue/green: lists for servers(). routing merges over the default
    {live: blue, standby_percent: 0, sticky: {by: none}}; extra merges at top level."""
    r = {'live': 'blue', 'standby_percent': 0, 'sticky': {'by': 'none'}}
    if routing:
        r.update(routing)
    cfg = {
        'listen': listen or [{'address': '127.0.0.1:0'}],
        'workers': workers,
        'pools': {
            'blue': {'servers': servers(*blue)},
            'green': {'servers': servers(*green)},
        },
        # Health checks (when they exist) run once at start-up and then rarely, so that they
        # neither disturb request counts nor mark servers down behind a test's back.
        'health': {'interval': '1h', 'timeout': '1s'},
        'routing': r,
        'control': {'socket': os.path.join(tmpdir, 'control.sock')},
    }
    if timeouts:
        cfg['timeouts'] = timeouts
    if limits:
        cfg['limits'] = limits
    if extra:
        for k, v in extra.items():
            if isinstance(v, dict) and isinstance(cfg.get(k), dict):
                cfg[k] = dict(cfg[k], **v)
            else:
                cfg[k] = v
    return cfg


# ---------------------------------------------------------------------------------------------
# The daemon
# ---------------------------------------------------------------------------------------------

LISTEN_RX = r'listening on 127\.0\.0\.1:(\d+)'


class Proxy:
    """A running `switchyard -c FILE`. ports: the listeners' real ports in config order."""

    def __init__(self, config, tmpdir, nlisten=None, name='switchyard.yaml'):
        self.tmpdir = tmpdir
        self.path = os.path.join(tmpdir, name)
        self.config = config
        if nlisten is None:
            nlisten = len(config['listen']) if isinstance(config, dict) else 1
        self.nlisten = nlisten
        self.proc = None
        self.err = self.out = None
        self.ports = []
        self.expected_exit = False

    def write_config(self, config):
        text = config if isinstance(config, str) else to_yaml(config) + '\n'
        tmp = self.path + '.tmp'
        with open(tmp, 'w') as f:
            f.write(text)
        os.rename(tmp, self.path)     # atomic: a reload never reads half a file
        self.config = config

    def start(self):
        if not os.path.exists(SWITCHYARD):
            raise RuntimeError('switchyard binary not found at %s' % SWITCHYARD)
        self.write_config(self.config)
        self.proc = spawn([SWITCHYARD, '-c', self.path])
        self.err = LineCollector(self.proc.stderr, 'switchyard-err')
        self.out = LineCollector(self.proc.stdout, 'switchyard-out')
        deadline = time.monotonic() + START_TIMEOUT
        idx = 0
        while len(self.ports) < self.nlisten:
            i, m = self.err.wait_for(LISTEN_RX, max(0.0, deadline - time.monotonic()), idx)
            if m is None:
                alive = self.proc.poll() is None
                raise RuntimeError('switchyard did not report %d listener(s) within %.0fs '
                                   '(alive=%s rc=%s)\nconfig:\n%s\nstderr:\n%s' % (
                                       self.nlisten, START_TIMEOUT, alive, self.proc.returncode,
                                       self.config_text(), self.err.tail(60)))
            p = int(m.group(1))
            if p not in self.ports:
                self.ports.append(p)
            idx = i + 1
        return self

    def config_text(self):
        try:
            with open(self.path) as f:
                return f.read()
        except OSError:
            return '<unreadable>'

    @property
    def port(self):
        return self.ports[0]

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def reload(self, config):
        """Rewrite the config file atomically and send SIGHUP. Returns the stderr line index
        from before the signal (to look for reload messages after it)."""
        mark = self.err.count()
        self.write_config(config)
        self.proc.send_signal(signal.SIGHUP)
        return mark

    def stop(self, timeout=10.0):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def rss_kb(self):
        try:
            with open('/proc/%d/status' % self.proc.pid) as f:
                for line in f:
                    if line.startswith('VmRSS:'):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def stderr_tail(self, n=40):
        return self.err.tail(n) if self.err else ''


def run_check(config_path, timeout=10):
    """`switchyard -t -c FILE` → (returncode, stdout, stderr)."""
    p = subprocess.run([SWITCHYARD, '-t', '-c', config_path], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout, preexec_fn=_preexec)
    return p.returncode, p.stdout.decode('utf-8', 'replace'), p.stderr.decode('utf-8', 'replace')


# ---------------------------------------------------------------------------------------------
# HTTP over raw sockets
# ---------------------------------------------------------------------------------------------

class ProtocolError(Exception):
    pass


class ConnClosed(ProtocolError):
    """The peer closed (or reset) before a complete message arrived."""


class Response:
    def __init__(self):
        self.version = None
        self.status = None
        self.reason = None
        self.headers = []          # [(name, value)] in order
        self.body = b''
        self.raw_head = b''
        self.chunked = False
        self.close_delimited = False
        self.interim = []          # 1xx responses that preceded this one
        self.trailers = []

    def header(self, name, default=None):
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return default

    def headers_all(self, name):
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def has(self, name):
        return bool(self.headers_all(name))

    def tokens(self, name):
        out = []
        for v in self.headers_all(name):
            out += [t.strip().lower() for t in v.split(',') if t.strip()]
        return out

    def wants_close(self):
        return 'close' in self.tokens('Connection')

    def json(self):
        return json.loads(self.body.decode('utf-8'))

    def summary(self, body_limit=300):
        head = self.raw_head.decode('latin-1', 'replace').rstrip()
        body = self.body[:body_limit]
        more = '' if len(self.body) <= body_limit else '... (%d bytes)' % len(self.body)
        return '%s\n\n%r%s' % (head, body, more)

    def __repr__(self):
        return '<Response %s %s>' % (self.status, self.reason)


def build_request(method='GET', target='/', headers=None, body=None, version='HTTP/1.1',
                  host=HOST):
    """Bytes of a request. headers: list of (name, value) (bytes or str). A Host header is added
    first unless host is None or headers already has one; Content-Length is added when body is
    given and neither Content-Length nor Transfer-Encoding is present."""
    hs = list(headers or [])
    names = [(k.decode('latin-1') if isinstance(k, bytes) else k).lower() for k, _ in hs]
    if host is not None and 'host' not in names:
        hs.insert(0, ('Host', host))
    if body is not None and 'content-length' not in names and 'transfer-encoding' not in names:
        hs.append(('Content-Length', str(len(body))))
    out = bytearray()
    out += ('%s %s %s\r\n' % (method, target, version)).encode('latin-1')
    for k, v in hs:
        k = k if isinstance(k, bytes) else k.encode('latin-1')
        v = v if isinstance(v, bytes) else str(v).encode('latin-1')
        out += k + b': ' + v + b'\r\n'
    out += b'\r\n'
    if body:
        out += body
    return bytes(out)


def recv_head(s, buf=b''):
    """For raw test servers: a head read from socket s after buf (bytes already read), as
    (head without its empty line, the bytes after it), or (None, buf) when s ends first."""
    while b'\r\n\r\n' not in buf:
        d = s.recv(65536)
        if not d:
            return None, buf
        buf += d
    head, rest = buf.split(b'\r\n\r\n', 1)
    return head, rest


def recv_body(s, head, buf):
    """For raw test servers: the body head announces (Content-Length, or chunked: decoded,
    trailers dropped) read from buf and socket s, as (body, the bytes after it), or (None, buf)
    when s ends first. No length: no body."""
    def fill(need):
        nonlocal buf
        while len(buf) < need:
            d = s.recv(65536)
            if not d:
                return False
            buf += d
        return True

    if not re.search(rb'(?im)^transfer-encoding:\s*chunked', head):
        m = re.search(rb'(?im)^content-length:\s*(\d+)', head)
        need = int(m.group(1)) if m else 0
        if not fill(need):
            return None, buf
        return buf[:need], buf[need:]
    body = b''
    while True:
        while b'\r\n' not in buf:
            if not fill(len(buf) + 1):
                return None, buf
        line, rest = buf.split(b'\r\n', 1)
        size = int(line.split(b';')[0], 16)
        buf = rest
        if size == 0:
            trailers, buf = recv_head(s, b'\r\n' + buf)  # up to the empty line
            return (None, buf) if trailers is None else (body, buf)
        if not fill(size + 2):
            return None, buf
        body += buf[:size]
        buf = buf[size + 2:]


def chunked_body(data, sizes):
    """data encoded as chunks of the given sizes (cycled), plus the last chunk."""
    out = bytearray()
    i = 0
    k = 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        k += 1
        piece = data[i:i + n]
        out += b'%x\r\n' % len(piece) + piece + b'\r\n'
        i += n
    out += b'0\r\n\r\n'
    return bytes(out)


class Client:
    """A client connection with a read buffer and a byte-exact HTTP/1.x response parser."""

    def __init__(self, port, timeout=DEFAULT_TIMEOUT, source=None, host=LOOPBACK):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.settimeout(timeout)
        self.buf = bytearray()
        self.eof = False
        self.reset = False

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, n=65536):
        if self.eof:
            return False
        try:
            data = self.sock.recv(n)
        except ConnectionResetError:
            self.eof = True
            self.reset = True
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_until(self, delim, limit=1 << 20):
        while True:
            i = self.buf.find(delim)
            if i >= 0:
                out = bytes(self.buf[:i + len(delim)])
                del self.buf[:i + len(delim)]
                return out
            if len(self.buf) > limit:
                raise ProtocolError('no %r within %d bytes: %r' % (delim, limit, bytes(self.buf[:200])))
            if not self._fill():
                raise ConnClosed('connection %s before %r; got %r' % (
                    'reset' if self.reset else 'closed', delim, bytes(self.buf[:300])))

    def read_exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                got = len(self.buf)
                raise ConnClosed('connection %s after %d of %d bytes' % (
                    'reset' if self.reset else 'closed', got, n))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_to_eof(self, limit=1 << 30):
        while self._fill():
            if len(self.buf) > limit:
                raise ProtocolError('more than %d bytes before EOF' % limit)
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def read_head(self):
        r = Response()
        head = self.read_until(b'\r\n\r\n', limit=256 * 1024)
        r.raw_head = head
        lines = head[:-4].split(b'\r\n')
        m = re.match(rb'^(HTTP/\d\.\d) (\d{3})(?: (.*))?$', lines[0])
        if not m:
            raise ProtocolError('bad status line %r' % lines[0])
        r.version = m.group(1).decode()
        r.status = int(m.group(2))
        r.reason = (m.group(3) or b'').decode('latin-1')
        for ln in lines[1:]:
            if b':' not in ln or ln[:1] in (b' ', b'\t'):
                raise ProtocolError('bad header line %r in\n%s' % (ln, head.decode('latin-1')))
            k, v = ln.split(b':', 1)
            if k != k.strip() or not k:
                raise ProtocolError('bad header name %r' % k)
            r.headers.append((k.decode('latin-1'), v.strip(b' \t').decode('latin-1')))
        return r

    def read_response(self, method='GET', stop_at_1xx=False):
        """One final response (1xx interims collected in .interim unless stop_at_1xx), with its
        body read according to RFC 9112 §6.3."""
        interim = []
        while True:
            r = self.read_head()
            if 100 <= r.status < 200 and r.status != 101 and not stop_at_1xx:
                interim.append(r)
                continue
            break
        r.interim = interim
        if method == 'HEAD' or 100 <= r.status < 200 or r.status in (204, 304):
            return r
        te = r.tokens('Transfer-Encoding')
        cl = r.headers_all('Content-Length')
        if te:
            if te[-1] != 'chunked':
                raise ProtocolError('response transfer-encoding %r' % te)
            if cl:
                raise ProtocolError('response has both Content-Length and Transfer-Encoding:\n%s'
                                    % r.raw_head.decode('latin-1'))
            r.chunked = True
            r.body = self._read_chunked(r)
        elif cl:
            if len(set(cl)) != 1:
                raise ProtocolError('response with differing Content-Length %r' % cl)
            r.body = self.read_exact(int(cl[0]))
        else:
            r.close_delimited = True
            r.body = self.read_to_eof()
        return r

    def _read_chunked(self, r):
        body = bytearray()
        while True:
            line = self.read_until(b'\r\n', limit=4096)
            size = int(line.split(b';', 1)[0].strip(), 16)
            if size == 0:
                break
            body += self.read_exact(size)
            if self.read_exact(2) != b'\r\n':
                raise ProtocolError('chunk not followed by CRLF')
        while True:
            line = self.read_until(b'\r\n', limit=65536)
            if line == b'\r\n':
                break
            r.trailers.append(line[:-2].decode('latin-1'))
        return bytes(body)

    def request(self, method='GET', target='/', headers=None, body=None, version='HTTP/1.1',
                host=HOST):
        self.send(build_request(method, target, headers, body, version, host))
        return self.read_response(method)

    def get(self, target='/', headers=None):
        return self.request('GET', target, headers)

    def wait_closed(self, timeout=2.0):
        """True when the peer closes (FIN or RST) within timeout with no further data.
        Raises ProtocolError on unexpected data; returns False on timeout."""
        if self.buf:
            raise ProtocolError('unexpected extra bytes: %r' % bytes(self.buf[:200]))
        if self.eof:
            return True
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except ConnectionResetError:
            self.eof = self.reset = True
            return True
        except socket.timeout:
            return False
        finally:
            try:
                self.sock.settimeout(old)
            except OSError:
                pass
        if data:
            raise ProtocolError('unexpected extra bytes: %r' % data[:200])
        self.eof = True
        return True

    def readable_within(self, timeout):
        if self.buf or self.eof:
            return True
        r, _, _ = select.select([self.sock], [], [], timeout)
        return bool(r)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def one_request(port, method='GET', target='/', headers=None, body=None, timeout=DEFAULT_TIMEOUT,
                version='HTTP/1.1', host=HOST, source=None):
    with Client(port, timeout=timeout, source=source) as c:
        return c.request(method, target, headers, body, version, host)


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xffffffffffffffff
    return '%016x' % h


def pattern(n, offset=0):
    """The /bytes/N body: byte i is 'a' + i % 26."""
    base = bytes(range(ord('a'), ord('a') + 26))
    reps = (n + offset) // 26 + 2
    return (base * reps)[offset % 26:offset % 26 + n]


# ---------------------------------------------------------------------------------------------
# Test case base and runner
# ---------------------------------------------------------------------------------------------

class ProxyTestCase(unittest.TestCase):
    """Per-test temp dir, process registry, watchdog and diagnostics.

    self.origin(pool, name)  → started Origin (stopped in tearDown)
    self.proxy(config)       → started Proxy; tearDown fails the test if it died unexpectedly
    self.setup_basic(...)    → blue b1 + green g1 origins and a proxy in front of them
    """

    WATCHDOG = 90.0      # seconds a single test may take before the whole file is aborted

    def setUp(self):
        self.tmpdir = tempfile.mkdtemp(prefix='sy-it-')
        self._origins = []
        self._proxies = []
        self._wd = threading.Timer(self.WATCHDOG, self._watchdog_fire)
        self._wd.daemon = True
        self._wd.start()
        # cleanups also run when a subclass's setUp fails (tearDown does not)
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        self._wd.cancel()
        for p in self._proxies:
            try:
                p.stop()
            except Exception:
                pass
        for o in self._origins:
            try:
                o.stop()
            except Exception:
                pass
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def _watchdog_fire(self):
        sys.stdout.write('\n!!! WATCHDOG: %s exceeded %.0fs; aborting\n' % (self.id(), self.WATCHDOG))
        sys.stdout.write(self.diagnostics())
        sys.stdout.flush()
        faulthandler.dump_traceback(file=sys.stdout, all_threads=True)
        sys.stdout.flush()
        _kill_all()
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        os._exit(3)

    def tearDown(self):
        self._wd.cancel()
        died = []
        for p in self._proxies:
            if p.proc is not None and p.ports and not p.expected_exit and p.proc.poll() is not None:
                died.append('switchyard exited unexpectedly with rc=%s\nstderr tail:\n%s' % (
                    p.proc.returncode, p.stderr_tail()))
        self._cleanup()
        if died:
            self.fail('\n'.join(died))

    def diagnostics(self):
        out = []
        for p in getattr(self, '_proxies', []):
            rc = p.proc.poll() if p.proc else None
            out.append('--- switchyard pid=%s rc=%s ports=%s config %s:\n%s\n--- switchyard stderr tail:\n%s\n' % (
                p.proc.pid if p.proc else '-', rc, p.ports, p.path, p.config_text()
                if os.path.exists(p.path) else (p.config if isinstance(p.config, str) else to_yaml(p.config)),
                p.stderr_tail(60)))
        for o in getattr(self, '_origins', []):
            if o.err and o.err.count():
                out.append('--- origin %s/%s stderr tail:\n%s\n' % (o.pool, o.name, o.err.tail(20)))
        return ''.join(out)

    # helpers ------------------------------------------------------------------------------

    def origin(self, pool='blue', name='b1', port=0, extra=()):
        o = Origin(pool, name, port, extra)
        self._origins.append(o)
        return o.start()

    def proxy(self, config, nlisten=None, start=True):
        # Each proxy of a test gets its own control socket: two proxies alive at once (a
        # restart test, a second instance) must not meet on one path — switchyard refuses to
        # take over a socket another process answers on.
        if isinstance(config, dict):
            ctl = config.get('control')
            default = os.path.join(self.tmpdir, 'control.sock')
            if isinstance(ctl, dict) and ctl.get('socket') == default and self._proxies:
                config = dict(config, control=dict(
                    ctl, socket=os.path.join(self.tmpdir, 'control%d.sock' % len(self._proxies))))
        p = Proxy(config, self.tmpdir, nlisten)
        self._proxies.append(p)
        return p.start() if start else p

    def config(self, blue, green, **kw):
        return make_config(blue, green, self.tmpdir, **kw)

    def setup_basic(self, **kw):
        """blue b1 + green g1 + proxy (kw go to make_config). Returns the proxy; origins in
        self.b1, self.g1."""
        self.b1 = self.origin('blue', 'b1')
        self.g1 = self.origin('green', 'g1')
        return self.proxy(self.config([self.b1], [self.g1], **kw))

    def assertStatus(self, resp, status, msg=''):
        if resp.status != status:
            self.fail('expected status %d, got %d %s\n%s\n%s' % (
                status, resp.status, msg, resp.summary(), self._short_diag()))

    def assertClosed(self, client, timeout=2.0, msg=''):
        try:
            ok = client.wait_closed(timeout)
        except ProtocolError as e:
            self.fail('connection not cleanly closed (%s) %s' % (e, msg))
        if not ok:
            self.fail('connection still open %.1fs after the response %s' % (timeout, msg))

    def _short_diag(self):
        return ''.join('--- switchyard stderr tail:\n%s\n' % p.stderr_tail(15) for p in self._proxies)


class _DiagResult(unittest.TextTestResult):
    def _diag(self, test):
        if isinstance(test, ProxyTestCase):
            try:
                d = test.diagnostics()
            except Exception as e:     # never let diagnostics hide the failure
                d = '<diagnostics failed: %r>' % e
            if d:
                self.stream.write('\n' + d)
                self.stream.flush()

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._diag(test)

    def addError(self, test, err):
        super().addError(test, err)
        self._diag(test)


def main():
    faulthandler.enable()
    sys.stdout.reconfigure(line_buffering=True)
    print('switchyard: %s\norigin: %s' % (SWITCHYARD, ORIGIN))
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, resultclass=_DiagResult)
    unittest.main(module='__main__', testRunner=runner, exit=True)


# ---------------------------------------------------------------------------------------------
# Control API (HTTP + JSON over the unix socket or TCP) and yardctl — used by test_control.py,
# test_yardctl.py and test_rollback_guarantee.py
# ---------------------------------------------------------------------------------------------

import http.client  # noqa: E402


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix stream socket (what `curl --unix-socket` does)."""

    def __init__(self, path, timeout=DEFAULT_TIMEOUT):
        super().__init__('localhost', timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.unix_path)
        except OSError:
            s.close()
            raise
        self.sock = s


class CtlResponse:
    """One control API answer: status, headers (lower-case names), body, and the envelope."""

    def __init__(self, status, headers, body, elapsed):
        self.status = status
        self.headers = headers
        self.body = body
        self.elapsed = elapsed          # seconds, request sent → body read
        try:
            self.json = json.loads(body.decode('utf-8')) if body else None
        except ValueError:
            self.json = None

    @property
    def ok(self):
        return isinstance(self.json, dict) and self.json.get('ok') is True

    @property
    def generation(self):
        return self.json.get('generation') if isinstance(self.json, dict) else None

    @property
    def data(self):
        return self.json.get('data') if isinstance(self.json, dict) else None

    @property
    def error(self):
        return (self.json.get('error') or {}) if isinstance(self.json, dict) else {}

    @property
    def code(self):
        return self.error.get('code')

    def summary(self, limit=600):
        b = self.body[:limit].decode('utf-8', 'replace')
        return 'HTTP %s %s%s' % (self.status, b, '...' if len(self.body) > limit else '')

    def __repr__(self):
        return '<CtlResponse %s>' % self.summary(200)


class Ctl:
    """A control API client. Ctl(sock_path) talks over the unix socket; Ctl(tcp=(host, port),
    token=...) over TCP. keepalive=True reuses one connection (reconnecting when needed)."""

    def __init__(self, sock=None, tcp=None, token=None, timeout=10.0, keepalive=False):
        self.sock = sock
        self.tcp = tcp
        self.token = token
        self.timeout = timeout
        self.keepalive = keepalive
        self._conn = None

    def _new_conn(self, timeout):
        if self.tcp:
            return http.client.HTTPConnection(self.tcp[0], self.tcp[1], timeout=timeout)
        return UnixHTTPConnection(self.sock, timeout=timeout)

    def close(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None

    def request(self, method, path, body=None, headers=None, timeout=None):
        """body: dict/list → JSON; str/bytes → sent as is; None → no body."""
        hs = {}
        if self.token is not None:
            hs['Authorization'] = 'Bearer ' + self.token
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode('utf-8')
        if body is not None:
            hs['Content-Type'] = 'application/json'
        hs.update(headers or {})
        to = timeout if timeout is not None else self.timeout
        reuse = self.keepalive and self._conn is not None
        for attempt in (0, 1):
            conn = self._conn if reuse else self._new_conn(to)
            if conn.sock is not None:
                conn.sock.settimeout(to)
            t0 = time.monotonic()
            try:
                try:
                    conn.request(method, path, body=body, headers=hs)
                except (BrokenPipeError, ConnectionResetError):
                    pass            # the server answered early (413) and closed: read the answer
                r = conn.getresponse()
                data = r.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                self._conn = None
                if reuse and attempt == 0:      # a kept-alive connection the server closed
                    reuse = False
                    continue
                raise
            elapsed = time.monotonic() - t0
            resp = CtlResponse(r.status, {k.lower(): v for k, v in r.getheaders()}, data, elapsed)
            if self.keepalive and not r.will_close:
                self._conn = conn
            else:
                conn.close()
                self._conn = None
            return resp

    def get(self, path, **kw):
        return self.request('GET', path, **kw)

    def post(self, path, body=None, **kw):
        return self.request('POST', path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.request('PUT', path, body, **kw)

    def status(self):
        r = self.get('/v1/status')
        if r.status != 200 or not r.ok:
            raise AssertionError('GET /v1/status: %s' % r.summary())
        return r.data

    def generation(self):
        return self.status()['generation']

    def weights(self, percent, **extra):
        return self.put('/v1/weights', dict(extra, standby_percent=percent))

    def rollback(self, reason=None, **extra):
        body = dict(extra)
        if reason is not None:
            body['reason'] = reason
        return self.post('/v1/rollback', body)

    def admin(self, pool, server, state, body=None):
        return self.post('/v1/servers/%s/%s/%s' % (pool, server, state), body)

    def events(self, since=0, wait=None, timeout=None):
        q = '/v1/events?since=%d' % since
        if wait is not None:
            q += '&wait=%s' % wait
        return self.get(q, timeout=timeout)

    def metrics_text(self):
        r = self.get('/metrics')
        if r.status != 200:
            raise AssertionError('GET /metrics: %s' % r.summary())
        return r.body.decode('utf-8')


def ctl_for(proxy, **kw):
    """A Ctl on the proxy's control socket (from its config)."""
    return Ctl(proxy.config['control']['socket'], **kw)


def parse_metrics(text):
    """Prometheus text → (families {name: type}, samples {(sample_name, frozenset(labels)): value}).
    Family names as prometheus_client reports them (a counter's without `_total`)."""
    from prometheus_client.parser import text_string_to_metric_families
    fams = {}
    samples = {}
    for fam in text_string_to_metric_families(text):
        fams[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return fams, samples


def metric(samples, name, **labels):
    """The value of one sample (exact label set), or None."""
    return samples.get((name, frozenset(labels.items())))


class SteadyClient:
    """Normal traffic in a thread while something else happens (a fault, slow clients): keep-alive
    GETs and POSTs with a body, a new connection now and then; every answer is checked (target
    echoed, body hash) and timed. finish() -> (ok count, [(i, failure)]); .slowest in seconds."""

    def __init__(self, port, timeout=5.0, pause=0.005):
        self.port = port
        self.timeout = timeout
        self.pause = pause
        self.ok = 0
        self.slowest = 0.0
        self.failures = []
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        body = bytes(range(256)) * 8
        c = None
        i = 0
        while not self.stop_ev.is_set():
            i += 1
            t0 = time.monotonic()
            try:
                if c is None or i % 8 == 0:
                    if c:
                        c.close()
                    c = Client(self.port, timeout=self.timeout)
                if i % 3 == 0:
                    r = c.request('POST', '/echo?steady=%d' % i, body=body)
                    good = r.status == 200 and r.json()['body_fnv1a'] == fnv1a64(body)
                else:
                    r = c.request('GET', '/echo?steady=%d' % i)
                    good = r.status == 200 and r.json()['target'] == '/echo?steady=%d' % i
                if good:
                    self.ok += 1
                    self.slowest = max(self.slowest, time.monotonic() - t0)
                else:
                    self.failures.append((i, r.summary(200)))
                if r.wants_close():
                    c.close()
                    c = None
            except Exception as e:      # noqa: BLE001 — every failure is recorded
                self.failures.append((i, repr(e)))
                if c:
                    c.close()
                c = None
            time.sleep(self.pause)
        if c:
            c.close()

    def finish(self):
        self.stop_ev.set()
        self.t.join(10)
        return self.ok, self.failures


NOBODY = 65534

# A request made by another user: a tiny stdlib client run as uid/gid NOBODY.
PEER_SCRIPT = r'''
import socket, sys
path, method, target, body = sys.argv[1:5]
b = body.encode()
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(path)
s.sendall(('%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\nConnection: close\r\n\r\n'
           % (method, target, len(b))).encode() + b)
data = b''
while True:
    d = s.recv(65536)
    if not d:
        break
    data += d
sys.stdout.write(data.decode('utf-8', 'replace'))
'''


def as_nobody():
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def request_as_nobody(sock_path, method, target, body=''):
    """→ (HTTP status, parsed JSON body or None, raw answer)."""
    p = subprocess.run(['/usr/bin/python3', '-c', PEER_SCRIPT, sock_path, method, target, body],
                       capture_output=True, timeout=15, preexec_fn=as_nobody, cwd='/')
    raw = p.stdout.decode('utf-8', 'replace')
    if p.returncode != 0:
        raise AssertionError('client as uid %d failed (rc %d): %s' % (
            NOBODY, p.returncode, p.stderr.decode('utf-8', 'replace')))
    m = re.match(r'HTTP/1\.[01] (\d{3})', raw)
    status = int(m.group(1)) if m else None
    body_txt = raw.split('\r\n\r\n', 1)[1] if '\r\n\r\n' in raw else ''
    try:
        j = json.loads(body_txt[body_txt.index('{'):body_txt.rindex('}') + 1])
    except ValueError:
        j = None
    return status, j, raw


def wait_until(pred, timeout, interval=0.05):
    """Call pred until it returns a true value or timeout passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def find_yardctl():
    p = os.environ.get('YARDCTL')
    if p:
        return p
    for b in ('build-it', 'build'):
        cand = os.path.join(SOURCE_ROOT, b, 'control', 'yardctl')
        if os.path.exists(cand):
            return cand
    return None


def run_yardctl(args, sock=None, env=None, timeout=20):
    """Run yardctl → (returncode, stdout, stderr, seconds). sock sets SWITCHYARD_SOCKET (None:
    removed from the environment, so that a test never talks to /run/switchyard)."""
    e = dict(os.environ)
    e.pop('SWITCHYARD_SOCKET', None)
    if sock is not None:
        e['SWITCHYARD_SOCKET'] = sock
    if env:
        e.update(env)
    t0 = time.monotonic()
    p = subprocess.run([find_yardctl()] + list(args), env=e, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout, preexec_fn=_preexec)
    return (p.returncode, p.stdout.decode('utf-8', 'replace'),
            p.stderr.decode('utf-8', 'replace'), time.monotonic() - t0)


def percentile(values, q):
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(q / 100.0 * len(v) + 0.5)) - 1))
    return v[k]
