#!/usr/bin/env python3
"""TLS, second part: pools whose servers speak TLS (pools.<name>.tls: verify, ca, sni), and
listener certificates re-read on reload (a bad new certificate keeps the old one; sessions
resume across a reload).

Certificates are made at test time with the openssl CLI: a test CA ("good") signs a leaf for
up.example.test + IP 127.0.0.1; a second CA ("rogue") signs a leaf with the same names. The
test origin serves TLS with --tls-cert/--tls-key and reports the SNI it saw in X-Origin-SNI.

Health checks use the pool's TLS settings too, so a server whose certificate the proxy must
refuse would be marked down before a request could show the refusal. The refusal tests
therefore start the server with a good certificate (health up, checks once an hour) and then
restart it on the same port with the bad one: the proxy's next connection meets the bad
certificate on the request path.
"""
import os
import shutil
import signal
import socket
import ssl
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import test_tls as T  # noqa: E402


class UpCerts:
    """good_ca, rogue_ca: CA certificates; good, rogue, other_name: leaves (Cert objects)."""

    def __init__(self, d):
        self.dir = d
        self.good_ca, self.good_ca_key = self._ca('good')
        self.rogue_ca, self.rogue_ca_key = self._ca('rogue')
        sans = 'DNS:up.example.test,IP:127.0.0.1'
        self.good = self._leaf('good-leaf', 'up.example.test', sans, self.good_ca,
                               self.good_ca_key)
        self.rogue = self._leaf('rogue-leaf', 'up.example.test', sans, self.rogue_ca,
                                self.rogue_ca_key)
        # Signed by the good CA but for another name only (no IP SAN either).
        self.other_name = self._leaf('other-leaf', 'other.example.test',
                                     'DNS:other.example.test', self.good_ca, self.good_ca_key)

    def _ca(self, name):
        key = os.path.join(self.dir, name + '-ca.key')
        crt = os.path.join(self.dir, name + '-ca.crt')
        T._openssl(['req', '-x509', '-nodes', '-days', '3', '-subj', '/CN=switchyard %s CA' % name,
                    '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
                    '-addext', 'basicConstraints=critical,CA:TRUE',
                    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
                    '-keyout', key, '-out', crt])
        return crt, key

    def _leaf(self, name, cn, sans, ca, ca_key):
        key = os.path.join(self.dir, name + '.key')
        csr = os.path.join(self.dir, name + '.csr')
        crt = os.path.join(self.dir, name + '.crt')
        ext = os.path.join(self.dir, name + '.ext')
        with open(ext, 'w') as f:
            f.write('basicConstraints=CA:FALSE\nsubjectAltName=%s\n'
                    'extendedKeyUsage=serverAuth\n' % sans)
        T._openssl(['req', '-new', '-nodes', '-subj', '/CN=' + cn, '-newkey', 'ec',
                    '-pkeyopt', 'ec_paramgen_curve:P-256', '-keyout', key, '-out', csr])
        T._openssl(['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', ca_key, '-set_serial',
                    str(abs(hash(name)) % 100000 + 10), '-days', '3', '-extfile', ext,
                    '-out', crt])
        return T.Cert(name, crt, key)


_UP = None


def upcerts():
    global _UP
    if _UP is None:
        import atexit
        import tempfile
        d = tempfile.mkdtemp(prefix='sy-tls-up-')
        atexit.register(shutil.rmtree, d, True)
        _UP = UpCerts(d)
    return _UP


def tls_origin_args(cert):
    return ['--tls-cert', cert.crt, '--tls-key', cert.key]


class UpstreamCase(h.ProxyTestCase):

    @classmethod
    def setUpClass(cls):
        if T.OPENSSL is None:
            raise unittest.SkipTest('the openssl CLI is not installed')
        upcerts()

    def start(self, blue_cert, tls, green_cert=None, workers=1, **kw):
        """Blue b1 serving blue_cert over TLS behind a pool with tls: settings `tls`; green g1
        plain (or over TLS with the same settings when green_cert is given)."""
        self.b1 = self.origin('blue', 'b1', extra=tls_origin_args(blue_cert))
        self.g1 = self.origin('green', 'g1',
                              extra=tls_origin_args(green_cert) if green_cert else ())
        cfg = self.config([self.b1], [self.g1], workers=workers, **kw)
        cfg['pools']['blue']['tls'] = tls
        if green_cert:
            cfg['pools']['green']['tls'] = tls
        self.cfg = cfg
        self.p = self.proxy(cfg)
        self.ctl = h.ctl_for(self.p)
        return self.p

    def blue_health(self):
        st = self.ctl.status().json
        for pool in st['pools']:
            if pool['name'] == 'blue':
                return pool['servers'][0]
        self.fail('no blue pool in status: %r' % st)

    def metric(self, name, **labels):
        return h.metric(h.parse_metrics(self.ctl.metrics_text())[1], name, **labels)

    def restart_blue_with(self, cert):
        """b1 again on its port, now serving cert (or plain HTTP when cert is None)."""
        self.b1.stop()
        self.b1.extra = tls_origin_args(cert) if cert else []
        self.b1.start()

    def get(self, target='/', headers=None, client=None):
        hdrs = [('Host', 'test.local')] + list(headers or [])
        if client:
            return client.request('GET', target, headers=hdrs)
        return h.one_request(self.p.port, 'GET', target, headers=hdrs)

    def assertRefusedUpstream(self, why_rx):
        """The next request gets 502, the failure is a connect error of b1 and the log says
        why (the TLS reason)."""
        before = self.metric('switchyard_connect_errors_total', pool='blue', server='b1') or 0
        mark = self.p.err.count()
        r = self.get()
        self.assertStatus(r, 502, 'a server with a certificate we must refuse')
        # /metrics reads the counters summed once a second.
        after = h.wait_until(lambda: (self.metric('switchyard_connect_errors_total', pool='blue',
                                                  server='b1') or 0) >= before + 1, 5)
        self.assertTrue(after, 'the refusal is not counted as a connect error')
        line, m = self.p.err.wait_for(why_rx, 5, start=mark)
        self.assertIsNotNone(m, 'no log line matching %r; stderr:\n%s' % (
            why_rx, self.p.stderr_tail()))


class UpstreamTLSTest(UpstreamCase):

    def test_verified_with_ca_and_sni(self):
        c = upcerts()
        self.start(c.good, {'ca': c.good_ca, 'sni': 'up.example.test'})
        r = self.get()
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b'hello from blue/b1\n')
        self.assertEqual(r.header('x-origin-sni'), 'up.example.test', 'the SNI the origin saw')

    def test_verified_against_ip_without_sni(self):
        c = upcerts()
        self.start(c.good, {'ca': c.good_ca})
        r = self.get()
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b'hello from blue/b1\n')
        self.assertIn(r.header('x-origin-sni'), (None, '-'), 'no SNI is sent for an address')

    def test_keepalive_reuses_upstream_tls_connections(self):
        c = upcerts()
        self.start(c.good, {'ca': c.good_ca, 'sni': 'up.example.test'})
        # The origin's counters, read through the proxy (the origin speaks only TLS).
        accepted0 = self.get('/_origin/stats').json()['connections_accepted']
        cl = h.Client(self.p.port)
        try:
            for i in range(30):
                r = self.get('/?i=%d' % i, client=cl)
                self.assertStatus(r, 200)
        finally:
            cl.close()
        accepted = self.get('/_origin/stats').json()['connections_accepted'] - accepted0
        self.assertLessEqual(accepted, 1, '30 requests opened %d TLS connections upstream'
                             % accepted)

    def test_new_upstream_connections_resume_the_session(self):
        # The origin closes after every response (Connection: close): each request needs a new
        # upstream connection, which resumes the worker's last session with that server.
        c = upcerts()
        for ver in ('1.2', '1.3'):
            with self.subTest(origin_max=ver):
                self.start(c.good, {'ca': c.good_ca, 'sni': 'up.example.test'})
                self.b1.stop()
                self.b1.extra = tls_origin_args(c.good) + ['--tls-max', ver]
                self.b1.start()
                for i in range(6):
                    r = self.get('/?i=%d&hdr=Connection:close' % i)
                    self.assertStatus(r, 200)
                st = self.get('/_origin/stats?hdr=Connection:close').json()
                # 7 connections: the first is a full handshake, the others resume.
                self.assertGreaterEqual(st['tls_handshakes'], 7, st)
                self.assertGreaterEqual(st['tls_resumed'], st['tls_handshakes'] - 1,
                                        'TLS %s upstream sessions not resumed: %r' % (ver, st))

    def test_bodies_both_ways_and_close_delimited(self):
        c = upcerts()
        self.start(c.good, {'ca': c.good_ca, 'sni': 'up.example.test'})
        n = 8 * 1024 * 1024
        body = h.pattern(n)
        r = h.one_request(self.p.port, 'POST', '/echo', body=body,
                          headers=[('Host', 'test.local')], timeout=60)
        self.assertStatus(r, 200)
        j = r.json()
        self.assertEqual(j['body_bytes'], n)
        self.assertEqual(j['body_fnv1a'], h.fnv1a64(body))
        for q in ('', '?chunked=1', '?close=1'):
            r = h.one_request(self.p.port, 'GET', '/bytes/%d%s' % (n, q),
                              headers=[('Host', 'test.local')], timeout=60)
            self.assertStatus(r, 200, q)
            self.assertEqual(len(r.body), n, q)
            self.assertEqual(r.body, h.pattern(n), 'download %s corrupted' % q)

    def test_websocket_over_upstream_tls(self):
        c = upcerts()
        self.start(c.good, {'ca': c.good_ca, 'sni': 'up.example.test'})
        cl = h.Client(self.p.port)
        try:
            r = cl.request('GET', '/ws', headers=[('Host', 'test.local'),
                                                  ('Upgrade', 'websocket'),
                                                  ('Connection', 'Upgrade')])
            self.assertStatus(r, 101)
            payload = os.urandom(200000)
            cl.send(payload)
            got = cl.read_exact(len(payload))
            self.assertEqual(got, payload, 'tunnel bytes over upstream TLS')
        finally:
            cl.close()

    def test_rogue_ca_refused_and_counted(self):
        c = upcerts()
        self.start(c.good, {'ca': c.good_ca, 'sni': 'up.example.test'})
        self.assertStatus(self.get(), 200, 'positive control')
        self.restart_blue_with(c.rogue)
        self.assertRefusedUpstream(r'b1: connect certificate verify failed')

    def test_wrong_name_refused(self):
        c = upcerts()
        self.start(c.good, {'ca': c.good_ca, 'sni': 'up.example.test'})
        self.assertStatus(self.get(), 200, 'positive control')
        self.restart_blue_with(c.other_name)
        self.assertRefusedUpstream(r'b1: connect certificate verify failed: hostname mismatch')

    def test_wrong_ip_refused_without_sni(self):
        c = upcerts()
        self.start(c.good, {'ca': c.good_ca})
        self.assertStatus(self.get(), 200, 'positive control')
        self.restart_blue_with(c.other_name)
        self.assertRefusedUpstream(r'b1: connect certificate verify failed: IP address mismatch')

    def test_plain_server_behind_tls_pool_refused(self):
        c = upcerts()
        self.start(c.good, {'ca': c.good_ca, 'sni': 'up.example.test'})
        self.assertStatus(self.get(), 200, 'positive control')
        self.restart_blue_with(None)
        self.assertRefusedUpstream(r'b1: connect TLS')

    def test_verify_false_accepts_any_certificate(self):
        c = upcerts()
        self.start(c.rogue, {'verify': False, 'sni': 'up.example.test'})
        r = self.get()
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b'hello from blue/b1\n')

    def test_system_store_refuses_a_private_ca(self):
        # No ca: the system store, which does not hold the test CA.
        c = upcerts()
        self.start(c.good, {'verify': False, 'sni': 'up.example.test'})
        self.assertStatus(self.get(), 200, 'positive control')
        cfg = dict(self.cfg)
        cfg['pools'] = dict(cfg['pools'])
        cfg['pools']['blue'] = dict(cfg['pools']['blue'], tls={'sni': 'up.example.test'})
        mark = self.p.reload(cfg)
        self.p.err.wait_for(r'configuration reloaded', 10, start=mark)
        r = self.get()
        self.assertIn(r.status, (502, 503), 'the private CA must not be trusted: %s' % r.summary())

    def test_reload_changes_the_pool_tls_settings(self):
        # verify: false -> the good CA: the rogue certificate is now refused on new connections
        # (the server is rebuilt, its idle connections made under the old settings closed).
        c = upcerts()
        self.start(c.rogue, {'verify': False, 'sni': 'up.example.test'})
        cl = h.Client(self.p.port)
        self.assertStatus(self.get(client=cl), 200, 'positive control')
        cl.close()
        cfg = dict(self.cfg)
        cfg['pools'] = dict(cfg['pools'])
        cfg['pools']['blue'] = dict(cfg['pools']['blue'],
                                    tls={'ca': c.good_ca, 'sni': 'up.example.test'})
        mark = self.p.reload(cfg)
        _, m = self.p.err.wait_for(r'configuration reloaded', 10, start=mark)
        self.assertIsNotNone(m, self.p.stderr_tail())
        self.assertRefusedUpstream(r'b1: connect certificate verify failed')

    def test_unreadable_ca_refused_at_start_and_reload(self):
        c = upcerts()
        missing = os.path.join(self.tmpdir, 'no-such-ca.pem')
        self.start(c.good, {'ca': c.good_ca, 'sni': 'up.example.test'})
        cfg = dict(self.cfg)
        cfg['pools'] = dict(cfg['pools'])
        cfg['pools']['blue'] = dict(cfg['pools']['blue'], tls={'ca': missing})
        mark = self.p.reload(cfg)
        _, m = self.p.err.wait_for(r'reload: pools\.blue\.tls: .*no-such-ca\.pem', 10, start=mark)
        self.assertIsNotNone(m, 'reload with a missing CA file:\n' + self.p.stderr_tail())
        self.assertStatus(self.get(), 200, 'the running configuration stays')
        # At start: the daemon refuses to run.
        path = os.path.join(self.tmpdir, 'bad.yaml')
        with open(path, 'w') as f:
            f.write(h.to_yaml(dict(cfg, control={'socket': os.path.join(self.tmpdir, 'c2.sock')})))
        p = h.spawn([h.SWITCHYARD, '-c', path])
        try:
            _, err = p.communicate(timeout=20)
        except Exception:
            p.kill()
            raise
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(b'no-such-ca.pem', err)
        # And the config check (-t) names the pool and the file.
        rc, out, err = h.run_check(path)
        self.assertNotEqual(rc, 0, out + err)
        self.assertRegex(err, r'pools\.blue\.tls: .*no-such-ca\.pem')


class UpstreamFailoverTest(UpstreamCase):

    def test_refused_server_retried_on_another(self):
        # Two TLS servers; b1 turns rogue: the connect error moves the request to b2.
        c = upcerts()
        self.b1 = self.origin('blue', 'b1', extra=tls_origin_args(c.good))
        self.b2 = self.origin('blue', 'b2', extra=tls_origin_args(c.good))
        self.g1 = self.origin('green', 'g1')
        cfg = self.config([self.b1, self.b2], [self.g1], workers=1,
                          routing={'balance': 'round_robin'})
        cfg['pools']['blue']['tls'] = {'ca': c.good_ca, 'sni': 'up.example.test'}
        self.p = self.proxy(cfg)
        self.ctl = h.ctl_for(self.p)
        self.restart_blue_with(c.rogue)
        for i in range(6):
            r = self.get('/?i=%d' % i)
            self.assertStatus(r, 200, 'request %d' % i)
            self.assertEqual(r.body, b'hello from blue/b2\n')


# ---------------------------------------------------------------------------------------------
# Listener certificates re-read on reload
# ---------------------------------------------------------------------------------------------

class CertReloadTest(T.TLSCase):

    def setUp(self):
        super().setUp()
        c = T.certs()
        # The listener's files are copies the test overwrites in place (as a renewal does).
        self.crt = os.path.join(self.tmpdir, 'site.crt')
        self.key = os.path.join(self.tmpdir, 'site.key')
        self.install(c.a_ec)
        self.listen = [{'address': '127.0.0.1:0',
                        'tls': {'certs': [{'cert': self.crt, 'key': self.key}]}}]
        self.start(listen=self.listen, workers=2)
        self.ctl = h.ctl_for(self.p)

    def install(self, cert_or_text):
        if isinstance(cert_or_text, str):
            for path in (self.crt, self.key):
                with open(path, 'w') as f:
                    f.write(cert_or_text)
            return
        shutil.copyfile(cert_or_text.crt, self.crt)
        shutil.copyfile(cert_or_text.key, self.key)

    def presented(self):
        with self.connect(sni='a.example.test') as c:
            self.assertServes(c)
            return T.which_cert(c.sock)

    def reload(self):
        r = self.ctl.post('/v1/reload')
        return r

    def test_new_certificate_after_reload_keeps_open_connections(self):
        c = T.certs()
        self.assertEqual(self.presented(), 'a_ec')
        old = self.connect(sni='a.example.test')
        self.assertServes(old)
        self.install(c.wild)
        r = self.reload()
        self.assertEqual(r.status, 200, r.text if hasattr(r, 'text') else r)
        self.assertEqual(self.presented(), 'wild', 'the new certificate after a reload')
        # The connection made before the reload goes on (same certificate, same session).
        for i in range(3):
            self.assertServes(old)
        self.assertEqual(T.which_cert(old.sock), 'a_ec')
        old.close()

    def test_bad_new_certificate_keeps_the_old_one(self):
        c = T.certs()
        for bad, why in (('garbage', 'not a certificate\n'), ('mismatch', None),
                         ('expired', None)):
            if bad == 'garbage':
                self.install(why)
            elif bad == 'mismatch':
                shutil.copyfile(c.wild.crt, self.crt)
                shutil.copyfile(c.a_rsa.key, self.key)
            else:
                self.install(c.expired)
            mark = self.p.err.count()
            r = self.reload()
            self.assertNotEqual(r.status, 200, '%s: the reload must fail' % bad)
            self.assertIn('site.', r.body.decode('utf-8', 'replace'),
                          '%s: the error names the file' % bad)
            _, m = self.p.err.wait_for(r'reload failed', 5, start=mark)
            self.assertIsNotNone(m, self.p.stderr_tail())
            self.assertEqual(self.presented(), 'a_ec', '%s: the old certificate stays' % bad)
        # A good file again: the next reload takes it.
        self.install(c.wild)
        self.assertEqual(self.reload().status, 200)
        self.assertEqual(self.presented(), 'wild')

    def test_sessions_resume_across_a_reload(self):
        c = T.certs()
        for ver in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = T.client_ctx(max_v=ver)
            with self.connect(ctx, 'a.example.test') as cl:
                self.assertServes(cl)
                sess = cl.sock.session
            self.assertEqual(self.reload().status, 200)
            with self.connect(ctx, 'a.example.test', session=sess) as cl:
                self.assertServes(cl)
                self.assertTrue(cl.sock.session_reused,
                                '%s ticket made before the reload not accepted after it' % ver)
        del c

    def test_sighup_rereads_certificates(self):
        c = T.certs()
        self.install(c.wild)
        mark = self.p.err.count()
        self.p.signal(signal.SIGHUP)
        _, m = self.p.err.wait_for(r'configuration reloaded', 10, start=mark)
        self.assertIsNotNone(m, self.p.stderr_tail())
        self.assertEqual(self.presented(), 'wild')

    def test_handshakes_during_reloads(self):
        # Reloads while clients keep connecting: every handshake completes with one of the two
        # certificates, none fails.
        c = T.certs()
        import threading
        stop = threading.Event()
        errors, seen = [], set()

        def client():
            while not stop.is_set():
                try:
                    with self.connect(sni='a.example.test') as cl:
                        r = cl.request('GET', '/', headers=[('Host', 'test.local')])
                        if r.status != 200:
                            errors.append(r.summary())
                        seen.add(T.which_cert(cl.sock))
                except (OSError, ssl.SSLError, h.ProtocolError) as e:
                    errors.append(repr(e))
        ts = [threading.Thread(target=client) for _ in range(3)]
        for t in ts:
            t.start()
        try:
            for i in range(10):
                self.install(c.wild if i % 2 == 0 else c.a_ec)
                self.assertEqual(self.reload().status, 200)
                time.sleep(0.1)
        finally:
            stop.set()
            for t in ts:
                t.join(10)
        self.assertEqual(errors, [], 'handshakes failed during reloads')
        self.assertEqual(seen, {'a_ec', 'wild'})


class StickyCookieTest(T.TLSCase):

    def test_cookie_is_secure_over_tls_only(self):
        c = T.certs()
        self.start(listen=[T.tls_listen([c.a_ec]), {'address': '127.0.0.1:0'}],
                   routing={'sticky': {'by': 'cookie'}})
        with self.connect(sni='a.example.test', port=self.p.ports[0]) as cl:
            r = self.assertServes(cl)
        sc = r.header('set-cookie') or ''
        self.assertRegex(sc, r'^sy_bucket=\d+; Path=/; Max-Age=\d+; HttpOnly; Secure$')
        r = h.one_request(self.p.ports[1], 'GET', '/', headers=[('Host', 'test.local')])
        self.assertStatus(r, 200)
        self.assertRegex(r.header('set-cookie') or '', r'^sy_bucket=\d+; Path=/; Max-Age=\d+; HttpOnly$',
                         'no Secure flag over plain HTTP')


class DirectWriteTest(T.TLSCase):
    """Responses up to one TLS record are written with SSL_write at once; when the socket is
    full OpenSSL keeps the record and the bufferevent must finish it with the same bytes."""

    def test_pipelined_responses_to_a_client_that_reads_late(self):
        c = T.certs()
        self.start(listen=[T.tls_listen([c.a_ec])])
        n, size = 1500, 3000
        with self.connect(sni='a.example.test') as cl:
            req = b''.join(b'GET /bytes/%d?i=%d HTTP/1.1\r\nHost: test.local\r\n\r\n' % (size, i)
                           for i in range(n))
            cl.send(req)
            time.sleep(1.5)   # the proxy fills the socket and queues the rest meanwhile
            body = h.pattern(size)
            for i in range(n):
                r = cl.read_response()
                self.assertStatus(r, 200, 'response %d' % i)
                self.assertEqual(r.body, body, 'response %d corrupted' % i)
            # and the connection still works
            self.assertServes(cl)


class ExpiryWarningTest(T.TLSCase):

    def test_expiring_certificate_is_a_warning(self):
        # The test certificates are valid for 3 days: under the 30-day warning threshold.
        c = T.certs()
        cfg = self.config([('b1', '127.0.0.1:9')], [('g1', '127.0.0.1:9')],
                          listen=[T.tls_listen([c.a_ec])])
        path = os.path.join(self.tmpdir, 'exp.yaml')
        with open(path, 'w') as f:
            f.write(h.to_yaml(cfg))
        rc, out, err = h.run_check(path)
        self.assertEqual(rc, 0, 'an expiring certificate is not an error: ' + err)
        self.assertRegex(err, r'warn .*a_ec\.crt: the certificate expires in [0-3] days?')


if __name__ == '__main__':
    h.main()
