"""Health checks over TLS and the control listener over TLS (DESIGN §4 TLS paragraph, §5, §8;
issue 6).

Health: a pool with `tls:` is checked over https with the pool's settings — `ca` (else the
system store), `verify` (default true), `sni` (the name sent and verified; without it the
server's IP address, which the certificate must then carry as an IP SAN). A TLS failure makes the
check fail with a reason `TLS: <libcurl's text>`, seen in `GET /v1/status` as `last_check`. The
test origin serves TLS with --tls-cert/--tls-key and counts its handshakes by SNI in
/_origin/stats, which shows that the checks really went over TLS and which name they sent.

Control: with `control.tls` the TCP control listener speaks HTTPS only (the bearer token is still
required; the unix socket stays plain); yardctl verifies the certificate against the system store
or `--cacert`; a bad control certificate stops start-up and `switchyard -t`, naming the file.

Certificates are made at test time with the openssl CLI: two CAs, leaves they sign (IP SAN
127.0.0.1, or only a DNS name), a self-signed one, and a key that matches none of them."""

import atexit
import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import types
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

OPENSSL = shutil.which('openssl')
TOKEN = 'tls-control-token-0123456789abcdef'
SNI_NAME = 'backend.switchyard.test'

# ---------------------------------------------------------------------------------------------
# Certificates (made once per run)
# ---------------------------------------------------------------------------------------------

EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes']


def _openssl(args):
    p = subprocess.run([OPENSSL] + list(args), capture_output=True, timeout=60,
                       preexec_fn=h._preexec)
    if p.returncode != 0:
        raise RuntimeError('openssl %s failed (rc=%d): %s' % (
            ' '.join(args), p.returncode, p.stderr.decode('utf-8', 'replace')))


def _ca(d, name):
    """A self-signed CA (openssl req -x509 marks it CA:TRUE)."""
    c = types.SimpleNamespace(crt=os.path.join(d, name + '.crt'), key=os.path.join(d, name + '.key'))
    _openssl(['req', '-x509', '-days', '3', '-subj', '/CN=switchyard test %s' % name,
              '-keyout', c.key, '-out', c.crt] + EC)
    return c


_serial = [100]


def _leaf(d, name, ca, sans):
    """A server certificate for sans (e.g. ['IP:127.0.0.1']) signed by ca."""
    c = types.SimpleNamespace(crt=os.path.join(d, name + '.crt'), key=os.path.join(d, name + '.key'))
    csr, ext = os.path.join(d, name + '.csr'), os.path.join(d, name + '.ext')
    with open(ext, 'w') as f:
        f.write('basicConstraints=CA:FALSE\nsubjectAltName=%s\nextendedKeyUsage=serverAuth\n'
                % ','.join(sans))
    _openssl(['req', '-new', '-subj', '/CN=%s' % name, '-keyout', c.key, '-out', csr] + EC)
    _serial[0] += 1
    _openssl(['x509', '-req', '-in', csr, '-CA', ca.crt, '-CAkey', ca.key, '-set_serial',
              str(_serial[0]), '-days', '3', '-extfile', ext, '-out', c.crt])
    return c


_CERTS = None


def certs():
    """ca1, ca2: CAs. ip1 (IP:127.0.0.1, by ca1), ip2 (the same, by ca2), dns1 (only
    DNS:SNI_NAME, by ca1), self_ip (self-signed, IP:127.0.0.1), other_key (matches nothing)."""
    global _CERTS
    if _CERTS is None:
        d = tempfile.mkdtemp(prefix='sy-tlsctl-certs-')
        atexit.register(shutil.rmtree, d, True)
        c = types.SimpleNamespace(dir=d)
        c.ca1 = _ca(d, 'ca1')
        c.ca2 = _ca(d, 'ca2')
        c.ip1 = _leaf(d, 'ip1', c.ca1, ['IP:127.0.0.1'])
        c.ip2 = _leaf(d, 'ip2', c.ca2, ['IP:127.0.0.1'])
        c.dns1 = _leaf(d, 'dns1', c.ca1, ['DNS:' + SNI_NAME])
        c.self_ip = types.SimpleNamespace(crt=os.path.join(d, 'self.crt'),
                                          key=os.path.join(d, 'self.key'))
        _openssl(['req', '-x509', '-days', '3', '-subj', '/CN=switchyard self-signed',
                  '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', c.self_ip.key,
                  '-out', c.self_ip.crt] + EC)
        c.other_key = os.path.join(d, 'other.key')
        _openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256',
                  '-out', c.other_key])
        _CERTS = c
    return _CERTS


def insecure_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def origin_stats(o):
    """/_origin/stats of a TLS origin (this request's own handshake sends no SNI: it counts
    under "-")."""
    conn = http.client.HTTPSConnection(h.LOOPBACK, o.port, timeout=5, context=insecure_ctx())
    try:
        conn.request('GET', '/_origin/stats', headers={'Host': h.HOST})
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    if r.status != 200:
        raise AssertionError('origin stats: HTTP %d %r' % (r.status, body))
    return json.loads(body)


class HTTPSCtl(h.Ctl):
    """harness.Ctl over HTTPS with ctx."""

    def __init__(self, port, ctx, **kw):
        super().__init__(tcp=(h.LOOPBACK, port), **kw)
        self.ctx = ctx

    def _new_conn(self, timeout):
        return http.client.HTTPSConnection(self.tcp[0], self.tcp[1], timeout=timeout,
                                           context=self.ctx)


@unittest.skipIf(OPENSSL is None, 'no openssl CLI')
class TLSControlCase(h.ProxyTestCase):

    @classmethod
    def setUpClass(cls):
        cls.c = certs()

    def tls_origin(self, pool, name, cert):
        return self.origin(pool, name, extra=['--tls-cert', cert.crt, '--tls-key', cert.key])

    def server_status(self, proxy, pool, name):
        for s in h.ctl_for(proxy).status()['pools'][pool]['servers']:
            if s['name'] == name:
                return s
        raise AssertionError('no server %s/%s in status' % (pool, name))

    def checked(self, proxy, pool, name, timeout=5):
        """The server's status once its health is known (the first check is done)."""
        h.wait_until(lambda: self.server_status(proxy, pool, name)['health'] != 'unknown',
                     timeout)
        return self.server_status(proxy, pool, name)


# ---------------------------------------------------------------------------------------------
# Health checks over TLS
# ---------------------------------------------------------------------------------------------

class HealthTLSTest(TLSControlCase):

    def start(self, blue_origin, tls, health=None):
        """A proxy with blue = [blue_origin] behind `tls:`, green = one plain origin."""
        self.g1 = self.origin('green', 'g1')
        cfg = self.config([blue_origin], [self.g1])
        cfg['pools']['blue']['tls'] = tls
        if health:
            cfg['health'] = dict(cfg['health'], **health)
        return self.proxy(cfg)

    def assertUp(self, proxy, pool='blue', name='b1'):
        s = self.checked(proxy, pool, name)
        self.assertEqual((s['health'], s['last_check']), ('up', 'ok'),
                         'server %s/%s: %r\n%s' % (pool, name, s, self._short_diag()))

    def assertDown(self, proxy, *words, pool='blue', name='b1'):
        s = self.checked(proxy, pool, name)
        self.assertEqual(s['health'], 'down', 'server %s/%s: %r' % (pool, name, s))
        self.assertTrue(s['last_check'].startswith('TLS: '), 'reason %r' % s['last_check'])
        for w in words:
            self.assertIn(w, s['last_check'].lower(), 'reason %r' % s['last_check'])
        return s['last_check']

    def test_ca_signed_certificate_is_up(self):
        b1 = self.tls_origin('blue', 'b1', self.c.ip1)
        p = self.start(b1, {'ca': self.c.ca1.crt})
        self.assertUp(p)
        self.assertUp(p, 'green', 'g1')
        st = origin_stats(b1)
        # The checks went over TLS to the IP address: no SNI (only "-" handshakes).
        self.assertGreaterEqual(st['tls_handshakes'], 2, st)
        self.assertEqual(list(st['sni']), ['-'], st)
        self.assertGreaterEqual(st['requests'], 2, st)

    def test_certificate_of_another_ca_is_down(self):
        b1 = self.tls_origin('blue', 'b1', self.c.ip2)
        p = self.start(b1, {'ca': self.c.ca1.crt})
        self.assertDown(p, 'certificate')
        self.assertEqual(origin_stats(b1)['requests'], 1, 'no request after a failed handshake')

    def test_system_store_does_not_trust_a_test_ca(self):
        b1 = self.tls_origin('blue', 'b1', self.c.ip1)
        p = self.start(b1, {})
        self.assertDown(p, 'certificate')

    def test_verify_false_is_up(self):
        b1 = self.tls_origin('blue', 'b1', self.c.ip2)     # neither this CA nor this name...
        p = self.start(b1, {'ca': self.c.ca1.crt, 'verify': False, 'sni': 'other.name'})
        self.assertUp(p)
        self.assertGreaterEqual(origin_stats(b1)['sni'].get('other.name', 0), 1)

    def test_sni_is_sent_and_verified(self):
        b1 = self.tls_origin('blue', 'b1', self.c.dns1)    # names SNI_NAME only, no IP SAN
        p = self.start(b1, {'ca': self.c.ca1.crt, 'sni': SNI_NAME})
        self.assertUp(p)
        st = origin_stats(b1)
        self.assertGreaterEqual(st['sni'].get(SNI_NAME, 0), 1, st)
        self.assertEqual(set(st['sni']) - {'-'}, {SNI_NAME}, st)
        self.assertEqual(st['sni'].get('-', 0), 1, 'only the stats request sends no SNI: %r' % st)

    def test_without_sni_the_ip_address_is_verified(self):
        b1 = self.tls_origin('blue', 'b1', self.c.dns1)    # no IP SAN: 127.0.0.1 does not match
        p = self.start(b1, {'ca': self.c.ca1.crt})
        reason = self.assertDown(p)
        self.assertIn('127.0.0.1', reason)

    def test_wrong_sni_is_down(self):
        b1 = self.tls_origin('blue', 'b1', self.c.dns1)
        p = self.start(b1, {'ca': self.c.ca1.crt, 'sni': 'wrong.switchyard.test'})
        reason = self.assertDown(p)
        self.assertIn('wrong.switchyard.test', reason)
        self.assertGreaterEqual(origin_stats(b1)['sni'].get('wrong.switchyard.test', 0), 1)

    def test_host_header_with_sni(self):
        b1 = self.tls_origin('blue', 'b1', self.c.dns1)
        # /echo lists the request headers: the check passes only if Host is health.host ...
        p = self.start(b1, {'ca': self.c.ca1.crt, 'sni': SNI_NAME},
                       health={'path': '/echo', 'host': 'vhost.example',
                               'body_contains': '["Host","vhost.example"]'})
        self.assertUp(p)

    def test_host_header_defaults_to_sni(self):
        b1 = self.tls_origin('blue', 'b1', self.c.dns1)
        p = self.start(b1, {'ca': self.c.ca1.crt, 'sni': SNI_NAME},
                       health={'path': '/echo',
                               'body_contains': '["Host","%s:%d"]' % (SNI_NAME, b1.port)})
        self.assertUp(p)

    def test_plain_http_origin_behind_tls_pool_is_down(self):
        b1 = self.origin('blue', 'b1')
        p = self.start(b1, {'ca': self.c.ca1.crt})
        self.assertDown(p)

    def test_tls_origin_behind_plain_pool_is_down(self):
        b1 = self.tls_origin('blue', 'b1', self.c.ip1)
        self.g1 = self.origin('green', 'g1')
        p = self.proxy(self.config([b1], [self.g1]))
        s = self.checked(p, 'blue', 'b1')
        self.assertEqual(s['health'], 'down', s)
        self.assertFalse(s['last_check'].startswith('TLS'), s)

    def test_reload_switches_tls_settings(self):
        b1 = self.tls_origin('blue', 'b1', self.c.ip1)
        fast = {'interval': '200ms', 'timeout': '1s', 'rise': 1, 'fall': 1}
        p = self.start(b1, {'ca': self.c.ca2.crt}, health=fast)
        self.assertDown(p, 'certificate')
        cfg = json.loads(json.dumps(p.config))
        cfg['pools']['blue']['tls'] = {'ca': self.c.ca1.crt}
        p.reload(cfg)
        ok = h.wait_until(lambda: self.server_status(p, 'blue', 'b1')['last_check'] == 'ok', 5)
        self.assertTrue(ok, 'after a reload with the right CA: %r\n%s' % (
            self.server_status(p, 'blue', 'b1'), self._short_diag()))
        del cfg['pools']['blue']['tls']               # plain http to a TLS origin
        p.reload(cfg)
        bad = h.wait_until(lambda: self.server_status(p, 'blue', 'b1')['health'] == 'down', 5)
        self.assertTrue(bad, 'after a reload without tls: %r' % self.server_status(p, 'blue', 'b1'))

    def test_reason_is_logged(self):
        b1 = self.tls_origin('blue', 'b1', self.c.ip2)
        p = self.start(b1, {'ca': self.c.ca1.crt})
        _, m = p.err.wait_for(r'health: blue/b1 unknown -> down: TLS: .*certificate', 5)
        self.assertIsNotNone(m, p.stderr_tail())


# ---------------------------------------------------------------------------------------------
# The control listener over TLS
# ---------------------------------------------------------------------------------------------

class ControlTLSTest(TLSControlCase):

    def start_ctl(self, cert):
        """A proxy whose control.listen serves cert; sets self.url, self.token_file."""
        self.port = h.free_port()
        self.token_file = os.path.join(self.tmpdir, 'token')
        with open(self.token_file, 'w') as f:
            f.write(TOKEN + '\n')
        self.b1 = self.origin('blue', 'b1')
        self.g1 = self.origin('green', 'g1')
        cfg = self.config([self.b1], [self.g1], extra={'control': {
            'listen': '127.0.0.1:%d' % self.port, 'token_file': self.token_file,
            'tls': {'certs': [{'cert': cert.crt, 'key': cert.key}]}}})
        self.url = 'https://127.0.0.1:%d' % self.port
        return self.proxy(cfg)

    def y(self, *args):
        return h.run_yardctl(list(args))

    def test_yardctl_status_with_cacert(self):
        p = self.start_ctl(self.c.ip1)
        rc, out, err, _ = self.y('--url', self.url, '--cacert', self.c.ca1.crt, '--token-file',
                                 self.token_file, 'status')
        self.assertEqual(rc, 0, 'stdout %s stderr %s\n%s' % (out, err, self._short_diag()))
        self.assertIn('routing: live blue', out)
        rc, out, err, _ = self.y('--url', self.url + '/', '--cacert', self.c.ca1.crt,
                                 '--token-file', self.token_file, 'weight', 'green=20')
        self.assertEqual(rc, 0, err)
        self.assertEqual(h.ctl_for(p).status()['routing']['standby_bp'], 2000)

    def test_yardctl_without_cacert_fails_verification(self):
        self.start_ctl(self.c.ip1)
        rc, out, err, _ = self.y('--url', self.url, '--token-file', self.token_file, 'status')
        self.assertEqual(rc, 3, 'stdout %s stderr %s' % (out, err))
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertTrue(err.startswith('yardctl: cannot reach switchyard at %s: ' % self.url), err)
        self.assertIn('certificate', err)
        self.assertIn('--cacert', err)

    def test_yardctl_cacert_of_another_ca_fails(self):
        self.start_ctl(self.c.ip1)
        rc, out, err, _ = self.y('--url', self.url, '--cacert', self.c.ca2.crt, '--token-file',
                                 self.token_file, 'status')
        self.assertEqual(rc, 3, 'stdout %s stderr %s' % (out, err))
        self.assertIn('certificate', err)

    def test_self_signed_certificate(self):
        self.start_ctl(self.c.self_ip)
        rc, out, err, _ = self.y('--url', self.url, '--token-file', self.token_file, 'status')
        self.assertEqual(rc, 3, 'stdout %s stderr %s' % (out, err))
        self.assertIn('self-signed certificate', err)
        rc, out, err, _ = self.y('--url', self.url, '--cacert', self.c.self_ip.crt,
                                 '--token-file', self.token_file, '--json', 'status')
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)['routing']['live'], 'blue')

    def test_host_name_must_match(self):
        self.start_ctl(self.c.dns1)           # a CA-signed certificate without 127.0.0.1 in it
        rc, out, err, _ = self.y('--url', self.url, '--cacert', self.c.ca1.crt, '--token-file',
                                 self.token_file, 'status')
        self.assertEqual(rc, 3, 'stdout %s stderr %s' % (out, err))
        self.assertIn('127.0.0.1', err)

    def test_plain_http_to_the_tls_port_fails(self):
        self.start_ctl(self.c.ip1)
        rc, out, err, _ = self.y('--url', 'http://127.0.0.1:%d' % self.port, '--token-file',
                                 self.token_file, 'status')
        self.assertEqual(rc, 3, 'stdout %s stderr %s' % (out, err))
        self.assertIn('https://', err)
        c = h.Client(self.port)
        try:
            c.send(b'GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ' +
                   TOKEN.encode() + b'\r\n\r\n')
            try:
                data = c.read_to_eof()
            except (h.ProtocolError, OSError):
                data = b''
        finally:
            c.close()
        self.assertFalse(data.startswith(b'HTTP/'), 'a plain answer on the TLS port: %r' % data)

    def test_token_still_required_over_tls(self):
        p = self.start_ctl(self.c.ip1)
        ctx = ssl.create_default_context(cafile=self.c.ca1.crt)
        for tok in (None, 'wrong-token-0123456789abcdef'):
            r = HTTPSCtl(self.port, ctx, token=tok).get('/v1/status')
            self.assertEqual((r.status, r.code), (401, 'forbidden'), r.summary())
        r = HTTPSCtl(self.port, ctx, token=TOKEN).weights(30)
        self.assertEqual(r.status, 200, r.summary())
        self.assertEqual(h.ctl_for(p).status()['routing']['standby_bp'], 3000)
        bad = os.path.join(self.tmpdir, 'bad-token')
        with open(bad, 'w') as f:
            f.write('not-the-token-0123456789abc\n')
        rc, out, err, _ = self.y('--url', self.url, '--cacert', self.c.ca1.crt, '--token-file',
                                 bad, 'status')
        self.assertEqual(rc, 1, err)
        self.assertTrue(err.startswith('yardctl: forbidden'), err)

    def test_tls_versions_and_keepalive(self):
        self.start_ctl(self.c.ip1)
        for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = ssl.create_default_context(cafile=self.c.ca1.crt)
            ctx.minimum_version = ctx.maximum_version = v
            c = HTTPSCtl(self.port, ctx, token=TOKEN, keepalive=True)
            for _ in range(3):
                r = c.get('/v1/status')
                self.assertEqual(r.status, 200, r.summary())
            c.close()

    def test_reload_rereads_the_control_certificate(self):
        crt = os.path.join(self.tmpdir, 'ctl.crt')
        key = os.path.join(self.tmpdir, 'ctl.key')

        def install(src):
            shutil.copyfile(src.crt, crt)
            shutil.copyfile(src.key, key)
        install(self.c.ip1)
        p = self.start_ctl(types.SimpleNamespace(crt=crt, key=key))

        def status_with(ca):
            rc, out, err, _ = self.y('--url', self.url, '--cacert', ca, '--token-file',
                                     self.token_file, 'status')
            return rc
        self.assertEqual(status_with(self.c.ca1.crt), 0)
        install(self.c.self_ip)
        r = h.ctl_for(p).post('/v1/reload')
        self.assertEqual(r.status, 200, r.summary())
        self.assertEqual(status_with(self.c.self_ip.crt), 0, 'the new certificate after reload')
        self.assertEqual(status_with(self.c.ca1.crt), 3, 'the old certificate is gone')
        with open(crt, 'w') as f:
            f.write('not a certificate\n')
        r = h.ctl_for(p).post('/v1/reload')
        self.assertNotEqual(r.status, 200, 'a bad control certificate must fail the reload')
        self.assertIn('control.tls', r.summary())
        self.assertEqual(status_with(self.c.self_ip.crt), 0, 'the running certificate stays')

    def test_unix_socket_stays_plain(self):
        p = self.start_ctl(self.c.ip1)
        self.assertEqual(h.ctl_for(p).status()['routing']['live'], 'blue')

    def test_cacert_usage_errors(self):
        rc, _, err, _ = self.y('--url', 'http://127.0.0.1:1', '--cacert', self.c.ca1.crt,
                               'status')
        self.assertEqual(rc, 2, err)
        self.assertIn('--cacert', err)
        rc, _, err, _ = self.y('--url', 'https://127.0.0.1:1', '--cacert',
                               os.path.join(self.tmpdir, 'missing.pem'), 'status')
        self.assertEqual(rc, 2, err)
        self.assertIn('missing.pem', err)
        rc, out, _, _ = self.y('--help')
        self.assertIn('--cacert FILE', out)


class ControlBadCertTest(TLSControlCase):

    def write(self, cert, key):
        port = h.free_port()
        tf = os.path.join(self.tmpdir, 'token')
        with open(tf, 'w') as f:
            f.write(TOKEN + '\n')
        cfg = self.config([('b1', '127.0.0.1:%d' % h.free_port())],
                          [('g1', '127.0.0.1:%d' % h.free_port())],
                          extra={'control': {'listen': '127.0.0.1:%d' % port, 'token_file': tf,
                                             'tls': {'certs': [{'cert': cert, 'key': key}]}}})
        path = os.path.join(self.tmpdir, 'bad.yaml')
        with open(path, 'w') as f:
            f.write(h.to_yaml(cfg) + '\n')
        return path

    def check_rejected(self, cert, key, name):
        path = self.write(cert, key)
        rc, out, err = h.run_check(path)
        self.assertEqual(rc, 1, 'switchyard -t: rc %d\n%s%s' % (rc, out, err))
        self.assertIn('control.tls', err)
        self.assertIn(name, err)
        p = h.spawn([h.SWITCHYARD, '-c', path])
        try:
            _, err2 = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            self.fail('switchyard started with a bad control certificate')
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(name, err2.decode('utf-8', 'replace'))

    def test_good_certificate_passes_check(self):
        rc, out, err = h.run_check(self.write(self.c.ip1.crt, self.c.ip1.key))
        self.assertEqual(rc, 0, out + err)

    def test_missing_certificate_file(self):
        missing = os.path.join(self.tmpdir, 'missing.crt')
        self.check_rejected(missing, self.c.ip1.key, missing)

    def test_missing_key_file(self):
        missing = os.path.join(self.tmpdir, 'missing.key')
        self.check_rejected(self.c.ip1.crt, missing, missing)

    def test_key_not_matching(self):
        self.check_rejected(self.c.ip1.crt, self.c.other_key, self.c.other_key)


if __name__ == '__main__':
    h.main()
