"""Access log (DESIGN §7): one JSON object per line with time, client, method, target, status,
bytes_in, bytes_out, duration_ms, pool, server, request_id, generation, bucket; local errors
(502/503/504) logged too; SIGUSR1 reopens the file after a rename without losing a line; no
line lost or doubled under concurrent load. Lines are buffered per worker and flushed at least
every second, so the tests poll the file for up to FLUSH_WAIT seconds."""

import datetime
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

SANITIZED = os.environ.get('SWITCHYARD_SANITIZE', 'none') not in ('', 'none')
FLUSH_WAIT = 4.0 if SANITIZED else 2.5    # "flushed at least every second" + slack

FIELDS = ('time', 'client', 'method', 'target', 'status', 'bytes_in', 'bytes_out',
          'duration_ms', 'pool', 'server', 'request_id', 'generation', 'bucket')
TIME_RX = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$')
ERR_BODY = re.compile(rb'^(\d{3}) [^\n]+\nrequest id: (\S+)\n$')


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_raw(path):
    try:
        with open(path, 'rb') as f:
            return f.read()
    except FileNotFoundError:
        return None


def parse_lines(data, what):
    """Complete lines of data as JSON objects; raises AssertionError naming the bad line."""
    out = []
    if not data:
        return out
    text = data.decode('utf-8')       # every byte of a valid line is ASCII or escaped
    lines = text.split('\n')
    if lines and lines[-1] == '':
        lines.pop()
    else:
        lines.pop()                    # a partial last line (writer mid-write): ignore for now
    for n, ln in enumerate(lines):
        try:
            j = json.loads(ln)
        except ValueError as e:
            raise AssertionError('%s line %d is not JSON (%s): %r' % (what, n + 1, e, ln[:300]))
        if not isinstance(j, dict):
            raise AssertionError('%s line %d is not an object: %r' % (what, n + 1, ln[:300]))
        out.append(j)
    return out


class AccessLogTestCase(h.ProxyTestCase):
    WATCHDOG = 50.0

    def setUp(self):
        super().setUp()
        self.log = os.path.join(self.tmpdir, 'access.log')

    def start(self, blue=None, green=None, **kw):
        if blue is None:
            self.b1 = self.origin('blue', 'b1')
            blue = [self.b1]
        if green is None:
            self.g1 = self.origin('green', 'g1')
            green = [self.g1]
        extra = kw.pop('extra', {})
        extra['log'] = {'access': self.log}
        return self.proxy(self.config(blue, green, extra=extra, **kw),
                          nlisten=len(kw.get('listen') or [1]))

    def wait_entries(self, n=None, pred=None, timeout=FLUSH_WAIT, path=None):
        """Polls the log until it has >= n entries (or pred(entries) is true). Returns them."""
        path = path or self.log
        deadline = time.monotonic() + timeout
        entries = []
        while True:
            entries = parse_lines(read_raw(path), path)
            if (n is not None and len(entries) >= n) or (pred is not None and pred(entries)):
                return entries
            if time.monotonic() >= deadline:
                return entries
            time.sleep(0.05)

    def require_log(self, entries):
        """(Name kept from before the access log existed: now a hard check.)"""
        if not entries and read_raw(self.log) is None:
            self.fail('no access log file at %s (log.access set)\n%s' % (
                self.log, self._short_diag()))

    def check_types(self, e):
        line = json.dumps(e)
        missing = [k for k in FIELDS if k not in e]
        self.assertEqual(missing, [], 'fields missing in %s' % line)
        self.assertIsInstance(e['time'], str, line)
        self.assertRegex(e['time'], TIME_RX, 'time not RFC 3339 UTC with ms: ' + line)
        t = datetime.datetime.strptime(e['time'], '%Y-%m-%dT%H:%M:%S.%fZ').replace(
            tzinfo=datetime.timezone.utc).timestamp()
        self.assertLess(abs(t - time.time()), 60, 'time far from now: ' + line)
        self.assertEqual(e['client'], '127.0.0.1', line)
        self.assertIsInstance(e['method'], str, line)
        self.assertIsInstance(e['target'], str, line)
        self.assertTrue(is_int(e['status']) and 100 <= e['status'] <= 599, line)
        self.assertTrue(is_int(e['bytes_in']) and e['bytes_in'] >= 0, 'bytes_in: ' + line)
        self.assertTrue(is_int(e['bytes_out']) and e['bytes_out'] > 0, 'bytes_out: ' + line)
        self.assertTrue(is_num(e['duration_ms']) and e['duration_ms'] >= 0, 'duration_ms: ' + line)
        self.assertTrue(is_int(e['generation']) and e['generation'] >= 1, 'generation: ' + line)
        self.assertTrue(e['bucket'] is None or (is_int(e['bucket']) and 0 <= e['bucket'] <= 9999),
                        'bucket: ' + line)
        self.assertIsInstance(e['request_id'], str, line)
        self.assertTrue(e['request_id'], 'empty request_id: ' + line)


def send(c, method, target, headers=None, body=None):
    """(request bytes, response, bytes of the response on the wire or None when unknown)."""
    raw = h.build_request(method, target, headers, body)
    c.send(raw)
    r = c.read_response(method)
    wire = None
    if not r.chunked and not r.close_delimited:
        wire = len(r.raw_head) + len(r.body)
    return raw, r, wire


class FieldsTest(AccessLogTestCase):

    def test_fields_and_types(self):
        p = self.start(routing={'standby_percent': 30, 'sticky': {'by': 'cookie'}})
        weird = '/q?x="quoted"&y=back\\slash&z=%25&w=caf%C3%A9&u=%E2%82%AC'
        plan = [
            # (method, target, headers, body, expected bucket or 'cookie')
            ('GET', '/echo?a=1', [('X-Request-Id', 'acc-req-0001'),
                                  ('Cookie', 'sy_bucket=9000')], None, 9000),
            ('GET', '/?b=1', [('X-Request-Id', 'acc-req-0002'),
                              ('Cookie', 'sy_bucket=100')], None, 100),
            ('GET', '/echo?c=1', [], None, 'cookie'),
            ('POST', '/echo?d=1', [('Cookie', 'sy_bucket=5000')], os.urandom(1000), 5000),
            ('HEAD', '/bytes/100?e=1', [('X-Request-Id', 'acc.req:e+/='),
                                        ('Cookie', 'sy_bucket=9999')], None, 9999),
            ('DELETE', '/?f=1', [('X-Request-Id', 'acc-req-f'), ('Cookie', 'sy_bucket=0')],
             None, 0),
            ('GET', weird, [('X-Request-Id', 'acc-weird'), ('Cookie', 'sy_bucket=4242')],
             None, 4242),
        ]
        sent = []
        with h.Client(p.port) as c:
            for method, target, hdrs, body, bucket in plan:
                raw, r, wire = send(c, method, target, hdrs, body)
                self.assertIn(r.status, (200,), '%s %s: %s' % (method, target, r.summary()))
                if bucket == 'cookie':
                    for v in r.headers_all('Set-Cookie'):
                        m = re.match(r'^\s*sy_bucket=(\d+)', v)
                        if m:
                            bucket = int(m.group(1))
                    self.assertNotEqual(bucket, 'cookie', 'no sy_bucket Set-Cookie: ' +
                                        r.summary())
                sent.append((method, target, hdrs, raw, r, wire, bucket))
        entries = self.wait_entries(len(sent))
        self.require_log(entries)
        self.assertEqual(len(entries), len(sent), 'lines for %d requests: %r' % (
            len(sent), entries))
        by_target = {e.get('target'): e for e in entries}
        for method, target, hdrs, raw, r, wire, bucket in sent:
            e = by_target.get(target)
            self.assertIsNotNone(e, 'no line with target %r (targets logged: %r)' % (
                target, list(by_target)))
            line = json.dumps(e)
            self.check_types(e)
            self.assertEqual(e['method'], method, line)
            self.assertEqual(e['status'], r.status, line)
            self.assertEqual(e['pool'], r.header('X-Origin-Pool'), line)
            self.assertEqual(e['server'], r.header('X-Origin-Server'), line)
            want_id = dict(hdrs).get('X-Request-Id')
            if target.startswith('/echo'):
                # the id the upstream got (X-Request-Id is added to requests, not responses)
                fwd = [v for k, v in r.json()['headers'] if k.lower() == 'x-request-id']
                self.assertEqual(len(fwd), 1, r.body)
                self.assertEqual(e['request_id'], fwd[0], 'request_id must be the id sent '
                                 'upstream: ' + line)
            if want_id:
                self.assertEqual(e['request_id'], want_id, line)
            else:
                self.assertRegex(e['request_id'], r'^[0-9a-f]{32}$', line)
            self.assertEqual(e['bucket'], bucket, line)
        gens = {e['generation'] for e in entries}
        self.assertEqual(len(gens), 1, 'one generation without any change: %r' % gens)

    def test_byte_counts(self):
        """bytes_in = the request's bytes read from the client (head and body), bytes_out = the
        response's bytes written to the client (head and body), as in nginx's request_length
        and bytes_sent (proxy/accesslog.h: "bytes read from / written to the client for this
        request")."""
        p = self.start()
        plan = [('GET', '/?g=1', None), ('GET', '/bytes/5000?g=2', None),
                ('POST', '/echo?p=1', os.urandom(3000)), ('HEAD', '/bytes/100?hd=1', None),
                ('GET', '/status/404?s=1', None)]
        sent = {}
        with h.Client(p.port) as c:
            for method, target, body in plan:
                raw, r, wire = send(c, method, target, [('Connection', 'keep-alive')], body)
                sent[target] = (len(raw), wire, r.status)
        entries = self.wait_entries(len(plan))
        self.require_log(entries)
        self.assertEqual(len(entries), len(plan), entries)
        bad = []
        for e in entries:
            n_in, n_out, status = sent[e['target']]
            self.assertEqual(e['status'], status, e)
            if e['bytes_in'] != n_in or e['bytes_out'] != n_out:
                bad.append('%s %s: logged bytes_in=%s bytes_out=%s, on the wire in=%d out=%d' % (
                    e['method'], e['target'], e['bytes_in'], e['bytes_out'], n_in, n_out))
        if bad:
            self.fail('byte counts differ from the bytes on the client connection:\n  ' +
                      '\n  '.join(bad))

    def test_rejected_request_logged(self):
        """A request the proxy rejects (400: raw non-ASCII bytes in the target, a control
        byte) still gets a valid JSON line, and the file stays ASCII."""
        p = self.start()
        outs = []
        for raw_target in (b'/raw/caf\xc3\xa9?q=\xff', b'/ctl\x01x'):
            with h.Client(p.port) as c:
                c.send(b'GET ' + raw_target + b' HTTP/1.1\r\nHost: x\r\n\r\n')
                r = c.read_response()
                self.assertStatus(r, 400, repr(raw_target))
                outs.append(len(r.raw_head) + len(r.body))
        entries = self.wait_entries(2)
        self.require_log(entries)
        self.assertEqual(len(entries), 2, entries)
        for e in entries:
            self.assertEqual(e['status'], 400, e)
            self.assertIn(e['bytes_out'], outs, e)
            for k in ('pool', 'server', 'bucket'):
                self.assertIsNone(e[k], '%s of a 400 (README: null): %r' % (k, e))
            self.assertTrue(is_num(e['duration_ms']) and e['duration_ms'] >= 0, e)
            self.assertTrue(e['target'] is None or isinstance(e['target'], str), e)
        data = read_raw(self.log)
        self.assertTrue(all(b < 0x80 for b in data), 'raw non-ASCII bytes in the log: %r' % data)

    def test_bucket_without_sticky(self):
        # sticky by none: a random bucket per request (README "Routing"), logged as an int
        p = self.start()          # harness default: sticky by none
        with h.Client(p.port) as c:
            for i in range(20):
                self.assertStatus(c.request('GET', '/?nb=%d' % i, [('X-Request-Id',
                                                                    'acc-nb-%d' % i)]), 200)
        entries = self.wait_entries(20)
        self.require_log(entries)
        self.assertEqual(len(entries), 20, entries)
        for e in entries:
            self.check_types(e)
            self.assertTrue(is_int(e['bucket']), e)
            self.assertEqual(e['request_id'], 'acc-nb-' + e['target'].split('=')[1])
        self.assertGreater(len({e['bucket'] for e in entries}), 1,
                           'sticky none: the same bucket for 20 requests')


class LocalErrorTest(AccessLogTestCase):

    def test_local_errors_logged(self):
        """503 (no usable server: a route_to: green listener with green's only server dead),
        502 (garbage from the upstream) and 504 (upstream_response timeout) all get a line."""
        dead = h.free_port()
        listen = [{'address': '127.0.0.1:0'}, {'address': '127.0.0.1:0', 'route_to': 'green'}]
        p = self.start(green=[('gdead', '127.0.0.1:%d' % dead)], listen=listen,
                       timeouts={'upstream_response': '1s'})
        raw = {}

        def req(port, target, rid, timeout=h.DEFAULT_TIMEOUT):
            hdrs = [('X-Request-Id', rid)]
            raw[rid] = len(h.build_request('GET', target, hdrs))
            return h.one_request(port, 'GET', target, hdrs, timeout=timeout)
        r503 = req(p.ports[1], '/?five-oh-three', 'acc-503')
        self.assertStatus(r503, 503, 'route_to: green with green\'s only server down')
        r502 = req(p.port, '/garbage', 'acc-502')
        self.assertStatus(r502, 502)
        r504 = req(p.port, '/hold', 'acc-504', timeout=10)
        self.assertStatus(r504, 504)
        entries = self.wait_entries(3)
        self.require_log(entries)
        by_id = {e.get('request_id'): e for e in entries}
        self.assertEqual(len(entries), 3, entries)
        bad_in = []
        for rid, status, r in (('acc-503', 503, r503), ('acc-502', 502, r502),
                               ('acc-504', 504, r504)):
            e = by_id.get(rid)
            self.assertIsNotNone(e, 'no line for the %d (request id %s): %r' % (status, rid,
                                                                                  entries))
            self.check_types(e)
            self.assertEqual(e['status'], status, e)
            m = ERR_BODY.match(r.body)
            self.assertTrue(m and m.group(2).decode() == rid, 'the %d body must name the '
                            'request id that is in the log: %r' % (status, r.body))
            self.assertEqual(e['bytes_out'], len(r.raw_head) + len(r.body), e)
            if e['bytes_in'] != raw[rid]:
                bad_in.append('%d: bytes_in %s, %d bytes read from the client' % (
                    status, e['bytes_in'], raw[rid]))
        self.assertIn(by_id['acc-503']['server'], (None, ''), by_id['acc-503'])
        self.assertIn(by_id['acc-503']['pool'], ('green', None, ''), by_id['acc-503'])
        self.assertEqual(by_id['acc-503']['target'], '/?five-oh-three')
        self.assertEqual((by_id['acc-502']['pool'], by_id['acc-502']['server']), ('blue', 'b1'))
        self.assertEqual((by_id['acc-504']['pool'], by_id['acc-504']['server']), ('blue', 'b1'))
        self.assertEqual(by_id['acc-504']['target'], '/hold')
        self.assertGreaterEqual(by_id['acc-504']['duration_ms'], 800, by_id['acc-504'])
        if bad_in:
            self.fail('bytes_in of local errors must count the request read from the client:'
                      '\n  ' + '\n  '.join(bad_in))


class ReopenTest(AccessLogTestCase):

    def test_sigusr1_reopen_nothing_lost(self):
        p = self.start()
        # phase 1: 50 requests, all in the file before the rotation
        with h.Client(p.port) as c:
            for i in range(50):
                self.assertStatus(c.request('GET', '/?phase1=%d' % i), 200)
        entries = self.wait_entries(50)
        self.require_log(entries)
        self.assertEqual(len(entries), 50)
        os.rename(self.log, self.log + '.1')
        mark = p.err.count()
        p.signal(signal.SIGUSR1)
        p.err.wait_for(r'log reopened', 2.0, mark)
        time.sleep(0.2)
        with h.Client(p.port) as c:
            for i in range(50):
                self.assertStatus(c.request('GET', '/?phase2=%d' % i), 200)
        new = self.wait_entries(50)
        self.assertEqual(len(new), 50, 'new file at the old path after SIGUSR1: %d lines' %
                         len(new))
        self.assertEqual(sorted(e['target'] for e in new),
                         sorted('/?phase2=%d' % i for i in range(50)))
        old = parse_lines(read_raw(self.log + '.1'), 'rotated')
        self.assertEqual(sorted(e['target'] for e in old),
                         sorted('/?phase1=%d' % i for i in range(50)),
                         'the rotated file must keep exactly the earlier lines')

        # phase 2: rotate while traffic flows; nothing lost or doubled across the two files
        sent = []
        errors = []
        stop = threading.Event()

        def load(k):
            i = 0
            try:
                with h.Client(p.port) as c:
                    while not stop.is_set():
                        t = '/?busy=%d-%d' % (k, i)
                        r = c.request('GET', t)
                        if r.status != 200:
                            errors.append(r.summary(100))
                        sent.append(t)
                        i += 1
                        time.sleep(0.002)
            except Exception as e:
                errors.append(repr(e))
        ts = [threading.Thread(target=load, args=(k,), daemon=True) for k in range(2)]
        for t in ts:
            t.start()
        time.sleep(0.7)
        os.rename(self.log, self.log + '.2')
        p.signal(signal.SIGUSR1)
        time.sleep(0.7)
        stop.set()
        for t in ts:
            t.join(10)
        self.assertEqual(errors, [])
        want = len(sent)

        def both():
            a = parse_lines(read_raw(self.log + '.2'), 'rotated 2')
            b = parse_lines(read_raw(self.log), 'new')
            return a, b
        deadline = time.monotonic() + FLUSH_WAIT
        while True:
            a, b = both()
            if len(a) + len(b) >= want + 50 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        busy = [e['target'] for e in a + b if e['target'].startswith('/?busy=')]
        self.assertEqual(len(busy), len(set(busy)), 'lines doubled across the rotation')
        self.assertEqual(sorted(busy), sorted(sent), '%d requests, %d lines across the '
                         'rotation (%d in the rotated file, %d in the new one)' % (
                             want, len(busy), len(a), len(b)))
        self.assertGreater(len(b), 0, 'no line in the new file after the second SIGUSR1')
        self.assertTrue(p.alive())


class VolumeTest(AccessLogTestCase):

    def test_2000_requests_2000_lines(self):
        p = self.start()
        n_threads, per = 4, 500
        errors = []
        sent = [[] for _ in range(n_threads)]

        def load(k):
            c = None
            try:
                c = h.Client(p.port, timeout=10)
                for i in range(per):
                    t = '/?vol=%d-%d' % (k, i)
                    r = c.request('GET', t)
                    if r.status != 200:
                        errors.append(r.summary(100))
                    sent[k].append(t)
                    if r.wants_close():
                        c.close()
                        c = h.Client(p.port, timeout=10)
            except Exception as e:
                errors.append(repr(e))
            finally:
                if c:
                    c.close()
        ts = [threading.Thread(target=load, args=(k,), daemon=True) for k in range(n_threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(40)
        self.assertEqual(errors, [])
        total = sum(len(s) for s in sent)
        self.assertEqual(total, n_threads * per)
        t_done = time.monotonic()
        entries = self.wait_entries(total)
        dt = time.monotonic() - t_done
        self.require_log(entries)
        self.assertEqual(len(entries), total, '%d lines %.1fs after %d requests' % (
            len(entries), dt, total))
        time.sleep(0.5)
        data = read_raw(self.log)
        self.assertTrue(data.endswith(b'\n'), 'the log ends with a partial line')
        entries = parse_lines(data, 'access.log')
        self.assertEqual(len(entries), total, 'more lines than requests')
        got = sorted(e['target'] for e in entries)
        self.assertEqual(got, sorted(t for s in sent for t in s), 'logged targets differ from '
                         'the requests sent')
        for e in entries[:50]:
            self.check_types(e)
        self.assertTrue(all(e['status'] == 200 and e['server'] == 'b1' for e in entries))


if __name__ == '__main__':
    h.main()
