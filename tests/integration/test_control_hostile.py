"""A hostile control socket (control/API.md, DESIGN §8): peers that are not allowed, bad or missing
tokens on TCP, bodies that are too big, not JSON, of the wrong types, with unknown fields, huge
numbers, deep nesting or NUL bytes — for every mutating endpoint —, wrong methods, unknown paths,
more long-polls on /v1/events than the waiter limit, clients that send half a request and stall,
and many connections at once. Each is refused (or bounded) with a JSON error and a stable code,
the daemon keeps answering, and the state never changes: the full status (generation, split,
admin states, rollout), the event sequence and the state file's bytes are compared before and
after. The daemon starts in a non-trivial state (blue/b2 drained, a rollout paused at 20%) so
that a request that slipped through would show.

test_control.py has the basic refusals (405/404/400/413 on a few endpoints, a forbidden peer on
weights/rollback/maint, a bad token on status/weights); this file covers the rest.

  SWITCHYARD=build/switchyard ORIGIN=build/tests/origin/origin \
    python3 tests/integration/test_control_hostile.py -v
"""

import json
import os
import re
import resource
import select
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

NOBODY = h.NOBODY
WAITER_LIMIT = 256          # control/api_events.c API_MAX_WAITERS
LONG_POLLS = 1200           # well over the limit
MAX_BODY = 64 * 1024        # control/api.c API_MAX_BODY: over it, a JSON 413
HTTP_MAX_BODY = 4 * MAX_BODY  # evhttp's own limit: over it, evhttp answers 413 itself

MUTATIONS = [('POST', '/v1/cutover'), ('POST', '/v1/rollback'), ('POST', '/v1/pause'),
             ('POST', '/v1/resume'), ('POST', '/v1/promote'), ('PUT', '/v1/weights'),
             ('POST', '/v1/servers/blue/b1/maint'), ('POST', '/v1/servers/blue/b2/ready'),
             ('POST', '/v1/reload')]

# Bodies no mutating endpoint may accept (all 400 invalid, or 409 for a generation that cannot
# be the current one), whatever the endpoint.
COMMON_BAD = [
    (b'{bad', 400), (b'[1, 2]', 400), (b'"str"', 400), (b'null', 400), (b'42', 400),
    (b'{"unknown_field": 1}', 400), (b'{"if_generation": "7"}', 400),
    (b'{"if_generation": 1.5}', 400), (b'{"if_generation": -1}', 400),
    (b'{"if_generation": true}', 400), (b'{"if_generation": 1e400}', 400),
    (b'{"if_generation": 123456789012345678901234567890}', 400),
    (b'{"if_generation": 9223372036854775807}', 409),
    (b'{"if_generation": 0}', 409),
    (b'{"a":' * 6000 + b'1' + b'}' * 6000, 400),          # nesting deeper than jansson's 2048
    (b'[' * 20000 + b']' * 20000, 400),
    (b'{"reason": "a\\u0000b"}', 400),                      # NUL escaped
    (b'{"reason": "a\x00b"}', 400),                         # NUL raw
    (b'\x00', 400),
    (b'{"reason": "\xff\xfe"}', 400),                       # not UTF-8
    (b'{"if_generation": 1, "if_generation": 1}', 400),     # duplicate key
]

# Endpoint-specific wrong types and out-of-range values.
SPECIFIC_BAD = {
    '/v1/weights': [b'{}', b'{"standby_percent": "50"}', b'{"standby_percent": null}',
                    b'{"standby_percent": [50]}', b'{"standby_percent": {"v": 50}}',
                    b'{"standby_percent": true}', b'{"standby_percent": -1}',
                    b'{"standby_percent": 100.01}', b'{"standby_percent": 50.001}',
                    b'{"standby_percent": 1e308}', b'{"standby_percent": -1e308}',
                    b'{"standby_percent": 9223372036854775807}'],
    '/v1/cutover': [b'{"to": 1}', b'{"to": ["green"]}', b'{"to": "red"}', b'{"to": "GREEN"}',
                    b'{"to": "green\\u0000"}', b'{"to": "green", "id": 7}',
                    b'{"to": "green", "id": ""}', b'{"to": "green", "id": "' + b'x' * 65 + b'"}',
                    b'{"to": "green", "plan": 5}', b'{"to": "green", "plan": {"weight": 100}}',
                    b'{"to": "green", "plan": []}', b'{"to": "green", "plan": [1]}',
                    b'{"to": "green", "plan": [{"weight": 1e300}]}',
                    b'{"to": "green", "plan": [{"weight": -5}, {"weight": 100}]}',
                    b'{"to": "green", "plan": [{"weight": 100, "hold": -1}]}',
                    b'{"to": "green", "plan": [{"weight": 100, "hold": "forever"}]}',
                    b'{"to": "green", "plan": [{"weight": 100, "hold": 1e300}]}',
                    b'{"to": "green", "plan": [{"weight": 100, "extra": 1}]}',
                    b'{"to": "green", "plan": "linear:1000%/1m"}',
                    b'{"to": "green", "plan": [' + b'{"weight": 1},' * 3000 + b'{"weight": 100}]}'],
    '/v1/rollback': [b'{"reason": 5}', b'{"reason": ["x"]}', b'{"reason": {"a": 1}}'],
    '/v1/pause': [b'{"reason": 5}', b'{"reason": null}'],
    '/v1/resume': [b'{"reason": 5}'],
    '/v1/promote': [b'{"reason": false}'],
}


def unix_connect(path, timeout=10.0):
    """A connected unix socket; a full listen backlog (EAGAIN) is retried until timeout."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        try:
            s.connect(path)
            return s
        except BlockingIOError:
            s.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.002)


def unix_raw(path, data, timeout=10.0, shut=False):
    """Sends data on a new unix connection, reads until the server closes (the request should
    say Connection: close) → raw bytes."""
    s = unix_connect(path, timeout)
    try:
        try:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass                    # answered early (413) and closed: read what it said
        out = bytearray()
        while True:
            try:
                d = s.recv(65536)
            except ConnectionResetError:
                break
            if not d:
                break
            out += d
        return bytes(out)
    finally:
        s.close()


def parse_raw(raw):
    """→ (status or None, JSON body or None)."""
    m = re.match(rb'HTTP/1\.[01] (\d{3})', raw)
    status = int(m.group(1)) if m else None
    body = raw.split(b'\r\n\r\n', 1)[1] if b'\r\n\r\n' in raw else b''
    try:
        j = json.loads(body.decode('utf-8'))
    except ValueError:
        j = None
    return status, j


def request_bytes(method, target, body=b'', extra=''):
    return ('%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n%sConnection: close\r\n\r\n'
            % (method, target, len(body), extra)).encode('latin-1') + body


class HostileCase(h.ProxyTestCase):
    WATCHDOG = 90.0

    def start(self, extra=None):
        """blue b1, b2 + green g1, a state file; then b2 drained and a rollout to green paused
        at 20% (step 1 of 2). Returns (proxy, Ctl)."""
        self.b1 = self.origin('blue', 'b1')
        self.b2 = self.origin('blue', 'b2')
        self.g1 = self.origin('green', 'g1')
        self.state_path = os.path.join(self.tmpdir, 'state.json')
        ex = {'state_file': self.state_path}
        ex.update(extra or {})
        p = self.proxy(self.config([self.b1, self.b2], [self.g1], workers=1, extra=ex))
        c = h.ctl_for(p)
        ok = h.wait_until(lambda: all(s['health'] == 'up' for pool in c.status()['pools'].values()
                                      for s in pool['servers']), 5.0)
        self.assertTrue(ok, 'servers not up: %s' % json.dumps(c.status()['pools']))
        self.assertEqual(c.admin('blue', 'b2', 'drain').status, 200)
        r = c.post('/v1/cutover', {'to': 'green', 'id': 'hostile-1',
                                   'plan': [{'weight': 20, 'hold': '1h'}, {'weight': 100}]})
        self.assertEqual(r.status, 202, r.summary())
        r = c.post('/v1/pause', {'reason': 'held for the hostile test'})
        self.assertEqual(r.status, 200, r.summary())
        st = c.status()
        self.assertEqual((st['rollout']['state'], st['routing']['standby_bp']), ('paused', 2000))
        self.sock = p.config['control']['socket']
        return p, c

    def fingerprint(self, c):
        """Everything a hostile request must not change."""
        st = c.status()
        ro = {k: v for k, v in st['rollout'].items() if k not in ('step_elapsed_s', 'gates')}
        admin = sorted((pn, s['name'], s['admin']) for pn, pool in st['pools'].items()
                       for s in pool['servers'])
        with open(self.state_path, 'rb') as f:
            saved = f.read()
        return {'generation': st['generation'], 'routing': st['routing'], 'admin': admin,
                'rollout': ro, 'events_next': c.events(0).data['next'], 'state_file': saved}

    def assertUnchanged(self, before, c, what):
        after = self.fingerprint(c)
        if after != before:
            diff = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
            self.fail('%s changed the state: %s\n%s' % (what, diff, self._short_diag()))

    def assertJsonError(self, status, j, want_status, code, what):
        good = (status == want_status and isinstance(j, dict) and j.get('ok') is False
                and isinstance(j.get('generation'), int) and isinstance(j.get('error'), dict)
                and j['error'].get('code') == code and isinstance(j['error'].get('message'), str))
        if not good:
            self.fail('%s: expected HTTP %d {"ok": false, code %s}, got %s %s' % (
                what, want_status, code, status, json.dumps(j)[:300] if j else j))

    def assertCtlError(self, r, want_status, code, what):
        self.assertJsonError(r.status, r.json, want_status, code, '%s (%s)' % (what, r.summary(200)))

    def fds(self, p):
        return len(os.listdir('/proc/%d/fd' % p.proc.pid))


# ---------------------------------------------------------------------------------------------

class BodiesTest(HostileCase):

    def test_bad_bodies_every_mutation(self):
        p, c = self.start()
        before = self.fingerprint(c)
        n = 0
        codes = {400: 'invalid', 409: 'conflict'}
        for method, path in MUTATIONS:
            bodies = list(COMMON_BAD) + [(b, 400) for b in SPECIFIC_BAD.get(path, [])]
            for body, want in bodies:
                r = c.request(method, path, body)
                self.assertCtlError(r, want, codes[want], '%s %s %r' % (method, path, body[:60]))
                n += 1
        self.assertUnchanged(before, c, '%d bad bodies' % n)
        self.assertTrue(p.alive())
        print('\n%d bad bodies refused, state unchanged' % n)

    def test_oversized_bodies(self):
        p, c = self.start()
        before = self.fingerprint(c)
        for method, path in MUTATIONS:
            # just over the API's limit: a JSON 413
            big = b'{"reason": "' + b'x' * (MAX_BODY + 16) + b'"}'
            self.assertCtlError(c.request(method, path, big), 413, 'invalid', '%s %s 64 KiB+' %
                                (method, path))
            # over evhttp's own limit: refused before the API sees it (413, not JSON: evhttp)
            huge = b'{"reason": "' + b'y' * (HTTP_MAX_BODY + 1024) + b'"}'
            status, _ = parse_raw(unix_raw(self.sock, request_bytes(method, path, huge)))
            self.assertEqual(status, 413, '%s %s with a %d-byte body' % (method, path, len(huge)))
            # a declared length far beyond anything, no body sent: refused at once
            raw = unix_raw(self.sock, ('%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: '
                                       '99999999999999999999\r\n\r\n' % (method, path)).encode(),
                           timeout=5)
            self.assertEqual(parse_raw(raw)[0], 413, '%s %s Content-Length 10^20: %r' % (
                method, path, raw[:200]))
            # chunked, growing past the limit
            chunk = b'%x\r\n' % 65536 + b'z' * 65536 + b'\r\n'
            raw = unix_raw(self.sock, ('%s %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n'
                                       '\r\n' % (method, path)).encode() + chunk * 6 + b'0\r\n\r\n')
            self.assertEqual(parse_raw(raw)[0], 413, '%s %s chunked 384 KiB' % (method, path))
        # a header block over evhttp's 16 KiB: refused (400), the daemon goes on
        raw = unix_raw(self.sock, b'PUT /v1/weights HTTP/1.1\r\nHost: x\r\nX-Pad: ' + b'p' * 20000 +
                       b'\r\nContent-Length: 23\r\n\r\n{"standby_percent": 50}')
        self.assertEqual(parse_raw(raw)[0], 400, raw[:200])
        self.assertUnchanged(before, c, 'oversized bodies')
        self.assertTrue(p.alive())

    def test_hold_seconds_overflow_refused(self):
        """A hold in seconds whose value in ms overflows 64 bits must be refused, not wrapped
        into a short hold (18446744073709552 s * 1000 wraps to 384 ms)."""
        p, c = self.start()
        self.assertEqual(c.rollback('stable for this test').status, 200)
        before = self.fingerprint(c)
        r = c.post('/v1/cutover', {'to': 'green', 'plan': [{'weight': 50,
                                                            'hold': 18446744073709552},
                                                           {'weight': 100}]})
        self.assertCtlError(r, 400, 'invalid', 'a hold of 18446744073709552 s')
        self.assertUnchanged(before, c, 'a cutover with an overflowing hold')


# ---------------------------------------------------------------------------------------------

class MethodsPathsTest(HostileCase):

    def test_wrong_methods_and_unknown_paths(self):
        p, c = self.start()
        before = self.fingerprint(c)
        n = 0
        for method, path in MUTATIONS:
            for m in ('GET', 'PUT', 'POST', 'DELETE', 'PATCH', 'HEAD'):
                if m == method:
                    continue
                r = c.request(m, path, b'{"standby_percent": 50}' if m != 'HEAD' else None)
                if m == 'HEAD':      # no body in a HEAD answer: the status says it
                    self.assertEqual(r.status, 405, 'HEAD %s: %s' % (path, r.summary()))
                else:
                    self.assertCtlError(r, 405, 'invalid', '%s %s' % (m, path))
                n += 1
        for path in ('/v1/servers/blue/b1', '/v1/servers/blue/b1/maint/x', '/v1/servers/red/b1/maint',
                     '/v1/servers/blue/zz/maint', '/v1/servers/blue/b1/explode',
                     '/v1/servers//b1/maint', '/v1/servers/blue//maint', '/v1/rollback/',
                     '/v1//rollback', '/V1/ROLLBACK', '/v1/rollback%00', '/v1/weights.json',
                     '/v1/servers/blue/%s/maint' % ('a' * 400), '/../v1/rollback', '/v2/rollback',
                     '/' + 'r' * 4000):
            for m in ('POST',) if path.startswith('/v1/servers/') else ('POST', 'PUT', 'GET'):
                self.assertCtlError(c.request(m, path, b'{}'), 404, 'not_found', '%s %s' % (m, path))
                n += 1
        # nonsense on the wire: refused by the HTTP layer, the connection closed, nothing else
        for raw in (b'\x00\x01\x02\r\n\r\n', b'POST /v1/roll\x00back HTTP/1.1\r\nHost: x\r\n\r\n',
                    b'PUT /v1/weights HTTP/9.9\r\nHost: x\r\nContent-Length: 23\r\n\r\n'
                    b'{"standby_percent": 50}',
                    b'PUT /v1/weights HTTP/1.1\r\nHost: x\r\nContent-Length: 23\r\n'
                    b'Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n'):
            got = unix_raw(self.sock, raw, timeout=5, shut=True)
            status = parse_raw(got)[0]
            self.assertTrue(status is None or 400 <= status < 600, '%r → %r' % (raw, got[:200]))
            n += 1
        self.assertUnchanged(before, c, '%d wrong methods and paths' % n)
        self.assertTrue(p.alive())

    def test_other_methods_json_405(self):
        """OPTIONS and TRACE get the API's JSON 405 like every other wrong method (evhttp
        answers them with an HTML 501 unless they are allowed). CONNECT is evhttp's business
        either way (it answers without a length and keeps the connection until its timeout)."""
        p, c = self.start()
        before = self.fingerprint(c)
        for m in ('OPTIONS', 'TRACE'):
            for path in ('/v1/status', '/v1/weights', '/v1/rollback'):
                status, j = parse_raw(unix_raw(self.sock, request_bytes(m, path), timeout=5))
                self.assertJsonError(status, j, 405, 'invalid', '%s %s' % (m, path))
        self.assertUnchanged(before, c, 'OPTIONS/TRACE')


# ---------------------------------------------------------------------------------------------

class PeersTest(HostileCase):

    def test_peer_not_allowed_every_endpoint(self):
        """uid nobody (not root, not us, not in allow_uids/allow_gids) with *valid* bodies:
        403 forbidden for every endpoint test_control.py does not already try."""
        if os.geteuid() != 0:
            self.skipTest('needs root (to run a client as uid %d)' % NOBODY)
        p, c = self.start(extra={'control': {'allow_uids': [NOBODY + 1]}})
        os.chmod(self.tmpdir, 0o755)
        os.chmod(self.sock, 0o666)
        before = self.fingerprint(c)
        valid = {'/v1/cutover': '{"to": "green"}', '/v1/resume': '{}', '/v1/promote': '{}',
                 '/v1/pause': '{}', '/v1/reload': '{}', '/v1/servers/blue/b2/ready': '{}',
                 '/v1/servers/green/g1/drain': '{}'}
        targets = [('POST', path, body) for path, body in valid.items()] + [
            ('GET', '/v1/events?since=0&wait=5', '')]
        for method, target, body in targets:
            t0 = time.monotonic()
            status, j, _ = h.request_as_nobody(self.sock, method, target, body)
            self.assertJsonError(status, j, 403, 'forbidden', '%s %s as uid %d' % (
                method, target, NOBODY))
            self.assertLess(time.monotonic() - t0, 4.0, 'a forbidden long-poll was held')
        self.assertUnchanged(before, c, 'requests from a peer not allowed')

    def test_tcp_bad_token_every_mutation(self):
        port = h.free_port()
        token = 'hostile-test-token-0123456789abcdef'
        tf = os.path.join(self.tmpdir, 'token')
        with open(tf, 'w') as f:
            f.write(token + '\n')
        p, c = self.start(extra={'control': {'listen': '127.0.0.1:%d' % port,
                                             'token_file': tf}})
        before = self.fingerprint(c)
        valid = {'/v1/cutover': {'to': 'green'}, '/v1/rollback': {}, '/v1/pause': {},
                 '/v1/resume': {}, '/v1/promote': {}, '/v1/weights': {'standby_percent': 50},
                 '/v1/servers/blue/b1/maint': {}, '/v1/servers/blue/b2/ready': {},
                 '/v1/reload': {}}
        auths = [None, 'Bearer', 'Bearer ', 'Bearer ' + token[:-1], 'Bearer ' + token + 'x',
                 'Bearer ' + token.upper(), 'bearer ' + token, 'Basic ' + token,
                 'Bearer  ' + token, 'Bearer ' + 'A' * 8000]
        n = 0
        for method, path in MUTATIONS:
            for auth in auths:
                t = h.Ctl(tcp=('127.0.0.1', port))
                hs = {} if auth is None else {'Authorization': auth}
                r = t.request(method, path, valid[path], headers=hs)
                self.assertCtlError(r, 401, 'forbidden', '%s %s with %r' % (
                    method, path, (auth or '')[:40]))
                n += 1
        # the token in another header, or twice, is no token
        t = h.Ctl(tcp=('127.0.0.1', port))
        r = t.request('PUT', '/v1/weights', {'standby_percent': 50},
                      headers={'X-Authorization': 'Bearer ' + token})
        self.assertCtlError(r, 401, 'forbidden', 'token in X-Authorization')
        self.assertUnchanged(before, c, '%d TCP requests without a valid token' % n)
        good = h.Ctl(tcp=('127.0.0.1', port), token=token)
        self.assertEqual(good.get('/v1/status').status, 200, 'the right token still works')


# ---------------------------------------------------------------------------------------------

class ConnectionsTest(HostileCase):

    def open_long_poll(self, since):
        s = unix_connect(self.sock)
        s.sendall(('GET /v1/events?since=%d&wait=30 HTTP/1.1\r\nHost: x\r\n\r\n' % since)
                  .encode())
        return s

    def fill_waiters(self, p, c, before):
        """Opens LONG_POLLS long-polls (wait=30) → (held sockets, all sockets) after checking
        that exactly WAITER_LIMIT are held and the rest refused at once with 503 unavailable."""
        since = before['events_next']
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))     # the daemon does the same
        n_polls = min(LONG_POLLS, hard - 200)
        if n_polls < WAITER_LIMIT + 100:
            self.skipTest('RLIMIT_NOFILE %d is too low for %d long-polls' % (hard, LONG_POLLS))
        socks = []
        t0 = time.monotonic()
        for _ in range(n_polls):
            socks.append(self.open_long_poll(since))
        # The refused ones answer at once; the held ones say nothing until an event or their
        # wait. Read every answer that comes within a deadline.
        refused = {}
        deadline = time.monotonic() + 10.0
        want_refused = n_polls - WAITER_LIMIT
        pending = {s.fileno(): s for s in socks}
        bufs = {fd: b'' for fd in pending}
        while len(refused) < want_refused and time.monotonic() < deadline:
            for s in self._poll_many(pending, 0.2):
                d = s.recv(65536)
                raw = bufs[s.fileno()] = bufs[s.fileno()] + d
                m = re.search(rb'Content-Length: (\d+)', raw)
                head_end = raw.find(b'\r\n\r\n')
                if not d or (m and head_end >= 0 and len(raw) - head_end - 4 >= int(m.group(1))):
                    refused[s.fileno()] = parse_raw(raw)
                    del pending[s.fileno()]
        elapsed = time.monotonic() - t0
        self.assertEqual(len(refused), want_refused,
                         '%d long-polls: expected %d refused at once, got %d in %.1fs' % (
                             n_polls, want_refused, len(refused), elapsed))
        for status, j in refused.values():
            self.assertJsonError(status, j, 503, 'unavailable', 'a long-poll over the limit')
        # the held ones are really held: nothing arrives for a while
        rl = self._poll_many(pending, 0.5)
        self.assertEqual(rl, [], '%d held long-polls answered without an event' % len(rl))
        self.assertEqual(len(pending), WAITER_LIMIT)
        print('\n%d long-polls: %d held, %d refused 503 within %.2fs; daemon fds %d' % (
            n_polls, len(pending), len(refused), elapsed, self.fds(p)))
        return list(pending.values()), socks

    def assertNewLongPollHeld(self, since):
        s = self.open_long_poll(since)
        try:
            s.settimeout(1.0)
            with self.assertRaises(socket.timeout, msg='a new long-poll must be held (waiter '
                                   'slots released), not refused'):
                s.recv(100)
        finally:
            s.close()

    def test_long_polls_over_the_waiter_limit(self):
        """More long-polls than the waiter limit: the rest refused at once (503 unavailable),
        the daemon answers everything else meanwhile, an event answers every held one, and
        the descriptors and waiter slots all come back."""
        p, c = self.start()
        before = self.fingerprint(c)
        fds0 = self.fds(p)
        held, socks = self.fill_waiters(p, c, before)
        try:
            t1 = time.monotonic()
            self.assertUnchanged(before, c, 'long-polls over the limit')
            self.assertLess(time.monotonic() - t1, 2.0, 'status slow with %d waiters' %
                            WAITER_LIMIT)
            # an event (a reload: no routing change) answers every held long-poll with it
            self.assertEqual(c.post('/v1/reload').status, 200)
            deadline = time.monotonic() + 10.0
            answered = set()
            while len(answered) < len(held) and time.monotonic() < deadline:
                for s in self._poll_many({x.fileno(): x for x in held
                                          if x.fileno() not in answered}, 0.2):
                    d = s.recv(65536)
                    self.assertTrue(d.startswith(b'HTTP/1.1 200'), d[:200])
                    self.assertIn(b'"type":"reload"', d)
                    answered.add(s.fileno())
            self.assertEqual(len(answered), len(held), 'held long-polls answered by the event')
        finally:
            for s in socks:
                s.close()
        ok = h.wait_until(lambda: self.fds(p) <= fds0, 10.0)
        self.assertTrue(ok, 'daemon fds %d, were %d before the long-polls' % (self.fds(p), fds0))
        after = self.fingerprint(c)
        self.assertNewLongPollHeld(after['events_next'])
        before['events_next'] += 1      # the reload event
        self.assertUnchanged(before, c, 'long-polls over the limit')

    def test_long_polls_released_when_clients_leave(self):
        """Long-polls whose clients went away release their descriptor and waiter slot at
        once, not when their wait ends (else 256 abandoned polls lock watchers out for up to
        60 s)."""
        p, c = self.start()
        before = self.fingerprint(c)
        fds0 = self.fds(p)
        held, socks = self.fill_waiters(p, c, before)
        for s in socks:
            s.close()
        ok = h.wait_until(lambda: self.fds(p) <= fds0, 5.0)
        self.assertTrue(ok, 'daemon fds %d, were %d before the long-polls (their wait is 30 s)'
                        % (self.fds(p), fds0))
        self.assertNewLongPollHeld(before['events_next'])
        self.assertUnchanged(before, c, 'abandoned long-polls')

    def _poll_many(self, pending, timeout):
        po = select.poll()
        for fd in pending:
            po.register(fd, select.POLLIN)
        return [pending[fd] for fd, _ in po.poll(timeout * 1000)]

    def test_half_requests_and_stalls_do_not_block(self):
        """Clients that send half a head, or a head and part of the body, and stall: the API
        goes on serving others, and nothing they sent takes effect."""
        p, c = self.start()
        before = self.fingerprint(c)
        stalled = []
        partials = [b'PUT /v1/weights HTTP/1.1\r\nHost: x\r\nContent-Le',
                    b'PUT /v1/weights HTTP/1.1\r\nHost: x\r\nContent-Length: 23\r\n\r\n'
                    b'{"standby_percent": 5',
                    b'POST /v1/rollback HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n'
                    b'10\r\n{"reason": "stal',
                    b'POST /v1/resume HTTP/1.1\r\n',
                    b'P']
        try:
            for i in range(200):
                s = unix_connect(self.sock)
                s.sendall(partials[i % len(partials)])
                stalled.append(s)
            for i in range(20):
                t0 = time.monotonic()
                st = c.status()
                self.assertLess(time.monotonic() - t0, 1.0, 'status slow behind 200 stalled '
                                'clients')
                self.assertEqual(st['routing']['standby_bp'], 2000)
            r = c.put('/v1/weights', b'{"standby_percent": "x"}')
            self.assertCtlError(r, 400, 'invalid', 'a bad weight beside the stalled ones')
            # the stalled ones are still open (the control API's timeout is long), not answered
            po_ready = self._poll_many({s.fileno(): s for s in stalled}, 0.3)
            self.assertEqual(po_ready, [], 'stalled clients got an answer to half a request')
            self.assertUnchanged(before, c, 'stalled half requests')
        finally:
            for s in stalled:
                s.close()
        self.assertUnchanged(before, c, 'stalled half requests, closed')
        self.assertTrue(p.alive())

    def test_many_connections_at_once(self):
        """500 connections sending at once (status reads and bad weights mixed): every one is
        answered with JSON, the bad ones refused, nothing changed."""
        p, c = self.start()
        before = self.fingerprint(c)
        fds0 = self.fds(p)
        socks = []
        good = request_bytes('GET', '/v1/status')
        bad = request_bytes('PUT', '/v1/weights', b'{"standby_percent": 101}')
        try:
            for i in range(500):
                socks.append(unix_connect(self.sock))
            for i, s in enumerate(socks):
                s.sendall(bad if i % 5 == 0 else good)
            for i, s in enumerate(socks):
                out = bytearray()
                while True:
                    d = s.recv(65536)
                    if not d:
                        break
                    out += d
                status, j = parse_raw(bytes(out))
                if i % 5 == 0:
                    self.assertJsonError(status, j, 400, 'invalid', 'bad weight #%d' % i)
                else:
                    self.assertEqual((status, j and j.get('ok')), (200, True), 'status #%d' % i)
                    self.assertEqual(j['data']['routing']['standby_bp'], 2000)
        finally:
            for s in socks:
                s.close()
        self.assertUnchanged(before, c, '500 connections at once')
        self.assertTrue(h.wait_until(lambda: self.fds(p) <= fds0, 5.0),
                        'daemon fds %d, were %d' % (self.fds(p), fds0))


if __name__ == '__main__':
    h.main()
