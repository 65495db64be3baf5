"""TLS termination on listeners (DESIGN §4, TLS paragraph; issue 6, first slice): TLS 1.2 and 1.3
only (1.0/1.1 refused, `min_version: "1.3"` refuses 1.2), Mozilla intermediate TLS 1.2 suites
(ECDHE with AES-GCM or ChaCha20-Poly1305; CBC, DHE and static-RSA suites refused), groups
X25519/P-256/P-384, ALPN http/1.1, SNI among several certificates (exact, wildcard, default) with
RSA and ECDSA side by side, no client-initiated renegotiation, session resumption,
X-Forwarded-Proto https, keep-alive, pipelining and 100 MiB bodies over TLS, the handshake deadline
(timeouts.client_header), and certificate errors caught by `switchyard -t`.

Certificates are made at test time with the openssl CLI. Python's ssl module drives most checks;
`openssl s_client` does groups, TLS 1.3 suites and signature algorithms, renegotiation and
resumption."""

import atexit
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import types
import unittest
import warnings

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

OPENSSL = shutil.which('openssl')
MiB = 1 << 20

# Allowed TLS 1.2 suites (Mozilla intermediate, without DHE) and some that must be refused.
GOOD_TLS12 = [
    ('ECDHE-ECDSA-AES128-GCM-SHA256', 'ec'),
    ('ECDHE-ECDSA-AES256-GCM-SHA384', 'ec'),
    ('ECDHE-ECDSA-CHACHA20-POLY1305', 'ec'),
    ('ECDHE-RSA-AES128-GCM-SHA256', 'rsa'),
    ('ECDHE-RSA-AES256-GCM-SHA384', 'rsa'),
    ('ECDHE-RSA-CHACHA20-POLY1305', 'rsa'),
]
BAD_TLS12 = [
    'ECDHE-RSA-AES128-SHA',             # CBC, SHA-1
    'ECDHE-ECDSA-AES128-SHA',
    'ECDHE-RSA-AES256-SHA384',          # CBC, SHA-384
    'ECDHE-ECDSA-AES128-SHA256',
    'DHE-RSA-AES128-GCM-SHA256',        # DHE
    'DHE-RSA-AES256-GCM-SHA384',
    'DHE-RSA-CHACHA20-POLY1305',
    'AES128-GCM-SHA256',                # static RSA key exchange
    'AES256-SHA',
]
TLS13_SUITES = ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256']

# Errors that mean "the handshake failed" (an alert, a reset, an EOF), as opposed to a hang.
HANDSHAKE_ERRORS = (ssl.SSLError, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


def note(msg):
    """A remark printed beside the test's name in the verbose output."""
    sys.stdout.write(' [%s] ' % msg)
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# Certificates (made once per run with the openssl CLI)
# ---------------------------------------------------------------------------------------------

def _openssl(args, timeout=60, input=None):
    p = subprocess.run([OPENSSL] + list(args), input=input, capture_output=True,
                       timeout=timeout, preexec_fn=h._preexec)
    if p.returncode != 0:
        raise RuntimeError('openssl %s failed (rc=%d): %s' % (
            ' '.join(args), p.returncode, p.stderr.decode('utf-8', 'replace')))
    return p


class Cert:
    def __init__(self, name, crt, key):
        self.name = name
        self.crt = crt
        self.key = key
        with open(crt) as f:        # the first certificate of the file (the leaf)
            pem = re.search(r'-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?',
                            f.read(), re.S).group(0)
        self.der = ssl.PEM_cert_to_DER_cert(pem)

    def entry(self):
        return {'cert': self.crt, 'key': self.key}


def _make_cert(d, name, cn, kind):
    key = os.path.join(d, name + '.key')
    crt = os.path.join(d, name + '.crt')
    if kind == 'rsa':
        kargs = ['-newkey', 'rsa:2048']
    else:
        kargs = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']
    _openssl(['req', '-x509', '-nodes', '-days', '3', '-subj', '/CN=' + cn,
              '-addext', 'subjectAltName=DNS:' + cn, '-keyout', key, '-out', crt] + kargs)
    return Cert(name, crt, key)


def _make_chain(c):
    """c.root (a CA, trusted by the chain test's client only), c.chain: a leaf for
    chain.example.test signed by an intermediate, its file holding leaf + intermediate."""
    d = c.dir
    ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes']
    root_key, root = os.path.join(d, 'root.key'), os.path.join(d, 'root.crt')
    _openssl(['req', '-x509', '-days', '3', '-subj', '/CN=switchyard test root',
              '-keyout', root_key, '-out', root] + ec)
    ca_ext = os.path.join(d, 'ca.ext')
    with open(ca_ext, 'w') as f:
        f.write('basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n')
    leaf_ext = os.path.join(d, 'leaf.ext')
    with open(leaf_ext, 'w') as f:
        f.write('basicConstraints=CA:FALSE\nsubjectAltName=DNS:chain.example.test\n'
                'extendedKeyUsage=serverAuth\n')
    inter_key, inter_csr = os.path.join(d, 'inter.key'), os.path.join(d, 'inter.csr')
    inter = os.path.join(d, 'inter.crt')
    _openssl(['req', '-new', '-subj', '/CN=switchyard test intermediate', '-keyout', inter_key,
              '-out', inter_csr] + ec)
    _openssl(['x509', '-req', '-in', inter_csr, '-CA', root, '-CAkey', root_key,
              '-set_serial', '2', '-days', '3', '-extfile', ca_ext, '-out', inter])
    leaf_key, leaf_csr = os.path.join(d, 'chain.key'), os.path.join(d, 'chain.csr')
    leaf = os.path.join(d, 'chain-leaf.crt')
    _openssl(['req', '-new', '-subj', '/CN=chain.example.test', '-keyout', leaf_key,
              '-out', leaf_csr] + ec)
    _openssl(['x509', '-req', '-in', leaf_csr, '-CA', inter, '-CAkey', inter_key,
              '-set_serial', '3', '-days', '3', '-extfile', leaf_ext, '-out', leaf])
    full = os.path.join(d, 'chain.crt')
    with open(full, 'w') as f, open(leaf) as a, open(inter) as b:
        f.write(a.read() + b.read())
    c.root = root
    c.chain = Cert('chain', full, leaf_key)


def _make_expired(c):
    """c.expired: a self-signed certificate valid only on 2020-01-01 (openssl ca can backdate,
    openssl req cannot)."""
    d = os.path.join(c.dir, 'ca')
    os.mkdir(d)
    open(os.path.join(d, 'index.txt'), 'w').close()
    cnf = os.path.join(d, 'ca.cnf')
    with open(cnf, 'w') as f:
        f.write('[ca]\ndefault_ca = ca_default\n[ca_default]\ndatabase = %s\n'
                'new_certs_dir = %s\nrand_serial = yes\ndefault_md = sha256\n'
                'policy = policy_any\ncopy_extensions = copy\n[policy_any]\n'
                'commonName = supplied\n' % (os.path.join(d, 'index.txt'), d))
    key, csr = os.path.join(c.dir, 'expired.key'), os.path.join(d, 'expired.csr')
    crt = os.path.join(c.dir, 'expired.crt')
    _openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
              '-subj', '/CN=expired.example.test',
              '-addext', 'subjectAltName=DNS:expired.example.test', '-keyout', key, '-out', csr])
    _openssl(['ca', '-batch', '-notext', '-config', cnf, '-selfsign', '-keyfile', key,
              '-in', csr, '-out', crt, '-startdate', '20200101000000Z',
              '-enddate', '20200102000000Z'])
    c.expired = Cert('expired', crt, key)


_CERTS = None


def certs():
    """default (RSA, default.example.test), a_rsa and a_ec (a.example.test), wild (ECDSA,
    *.example.test), other_key (an RSA key matching none of them), garbage (not PEM)."""
    global _CERTS
    if _CERTS is None:
        d = tempfile.mkdtemp(prefix='sy-tls-certs-')
        atexit.register(shutil.rmtree, d, True)
        c = types.SimpleNamespace(dir=d)
        c.default = _make_cert(d, 'default', 'default.example.test', 'rsa')
        c.a_rsa = _make_cert(d, 'a_rsa', 'a.example.test', 'rsa')
        c.a_ec = _make_cert(d, 'a_ec', 'a.example.test', 'ec')
        c.wild = _make_cert(d, 'wild', '*.example.test', 'ec')
        c.other_key = os.path.join(d, 'other.key')
        _openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048',
                  '-out', c.other_key])
        c.garbage = os.path.join(d, 'garbage.crt')
        with open(c.garbage, 'w') as f:
            f.write('this is not a certificate\n')
        c.all = [c.default, c.a_rsa, c.a_ec, c.wild]
        _make_chain(c)
        _make_expired(c)
        _CERTS = c
    return _CERTS


def which_cert(sock):
    """The name of the certificate the server presented (or its DER length when unknown)."""
    der = sock.getpeercert(binary_form=True)
    for c in certs().all:
        if c.der == der:
            return c.name
    return 'unknown certificate (%s bytes)' % (len(der) if der else None)


def tls_listen(cert_list=None, min_version=None, address='127.0.0.1:0'):
    t = {'certs': [c.entry() for c in (cert_list or certs().all)]}
    if min_version:
        t['min_version'] = min_version
    return {'address': address, 'tls': t}


# ---------------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------------

def client_ctx(min_v=None, max_v=None, ciphers=None, alpn=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        if min_v is not None:
            ctx.minimum_version = min_v
        if max_v is not None:
            ctx.maximum_version = max_v
    if ciphers:
        ctx.set_ciphers(ciphers)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


class TLSClient(h.Client):
    """h.Client over TLS: the same byte-exact HTTP parser on an SSLSocket."""

    def __init__(self, port, ctx=None, sni=None, timeout=h.DEFAULT_TIMEOUT, session=None,
                 ragged_eof_ok=True):
        raw = socket.create_connection((h.LOOPBACK, port), timeout=timeout)
        raw.settimeout(timeout)
        try:
            self.sock = (ctx or client_ctx()).wrap_socket(
                raw, server_hostname=sni, session=session, suppress_ragged_eofs=ragged_eof_ok)
        except BaseException:
            raw.close()
            raise
        self.buf = bytearray()
        self.eof = False
        self.reset = False
        self.ssl_error = None

    def _fill(self, n=65536):
        if self.eof:
            return False
        try:
            data = self.sock.recv(n)
        except (ConnectionResetError, ssl.SSLError) as e:
            self.eof = True
            self.reset = True
            self.ssl_error = e
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def wait_closed(self, timeout=2.0):
        if self.buf:
            raise h.ProtocolError('unexpected extra bytes: %r' % bytes(self.buf[:200]))
        if self.eof:
            return True
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except (ConnectionResetError, ssl.SSLError) as e:
            self.eof = self.reset = True
            self.ssl_error = e
            return True
        except socket.timeout:
            return False
        finally:
            try:
                self.sock.settimeout(old)
            except OSError:
                pass
        if data:
            raise h.ProtocolError('unexpected extra bytes: %r' % data[:200])
        self.eof = True
        return True

    def readable_within(self, timeout):
        if self.sock.pending():
            return True
        return super().readable_within(timeout)


def client_hello_bytes(ctx=None, sni='a.example.test'):
    """The bytes of a real ClientHello (from a memory BIO), for raw-socket tricks."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = (ctx or client_ctx()).wrap_bio(inc, out, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


_CAN_OFFER = {}


def client_can_offer(version):
    """Whether this machine's Python/OpenSSL can negotiate exactly `version` at all (checked
    against a permissive local Python server), so that a failure against the proxy means the
    proxy refused it."""
    if version in _CAN_OFFER:
        return _CAN_OFFER[version]
    c = certs()
    ok = False
    why = ''
    try:
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)
            sctx.minimum_version = version
            sctx.maximum_version = version
        sctx.set_ciphers('ALL:@SECLEVEL=0')
        sctx.load_cert_chain(c.default.crt, c.default.key)
        ls = socket.socket()
        ls.bind((h.LOOPBACK, 0))
        ls.listen(1)
        ls.settimeout(5)
        port = ls.getsockname()[1]
        res = {}

        def serve():
            try:
                s, _ = ls.accept()
                s.settimeout(5)
                try:
                    ss = sctx.wrap_socket(s, server_side=True)
                    res['v'] = ss.version()
                    ss.close()
                except Exception as e:
                    res['e'] = e
                    s.close()
            except Exception as e:
                res['e'] = e
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        try:
            cc = TLSClient(port, client_ctx(version, version, 'ALL:@SECLEVEL=0'), timeout=5)
            ok = True
            cc.close()
        except Exception as e:
            why = repr(e)
        t.join(5)
        ls.close()
    except Exception as e:
        why = repr(e)
    _CAN_OFFER[version] = (ok, why)
    return ok, why


def s_client(port, args, stdin=b'', timeout=15):
    """Run `openssl s_client -connect 127.0.0.1:PORT ARGS` with stdin → (rc, stdout+stderr)."""
    argv = [OPENSSL, 's_client', '-connect', '%s:%d' % (h.LOOPBACK, port)] + list(args)
    p = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout, preexec_fn=h._preexec)
    return p.returncode, p.stdout.decode('utf-8', 'replace')


def s_client_summary(out):
    """The interesting lines of an s_client transcript (for failure messages)."""
    keep = [ln for ln in out.splitlines() if re.search(
        r'(?i)(error|alert|New,|Reused,|Protocol|Cipher|Server Temp Key|Peer signature|'
        r'Verification|handshake|no peer|errno|HTTP/1)', ln)]
    return '\n'.join(keep[:40])


# ---------------------------------------------------------------------------------------------
# Base
# ---------------------------------------------------------------------------------------------

class TLSCase(h.ProxyTestCase):

    @classmethod
    def setUpClass(cls):
        if OPENSSL is None:
            raise unittest.SkipTest('the openssl CLI is not installed')
        certs()

    def start(self, listen=None, **kw):
        self.b1 = self.origin('blue', 'b1')
        self.g1 = self.origin('green', 'g1')
        listen = listen or [tls_listen()]
        self.p = self.proxy(self.config([self.b1], [self.g1], listen=listen, **kw))
        return self.p

    def connect(self, ctx=None, sni=None, port=None, **kw):
        return TLSClient(port or self.p.port, ctx, sni, **kw)

    def assertServes(self, c, msg=''):
        r = c.request('GET', '/')
        self.assertStatus(r, 200, msg)
        self.assertEqual(r.body, b'hello from blue/b1\n', msg)
        return r

    def assertHandshakeWorks(self, ctx=None, sni=None, msg='', port=None):
        """A fresh handshake plus one request: the listener still works."""
        with self.connect(ctx, sni, port) as c:
            self.assertServes(c, 'positive control after refusals %s' % msg)

    def assertRefused(self, ctx, sni=None, msg='', port=None):
        """The handshake must fail promptly (alert / reset / EOF), not succeed, not hang.
        Returns the exception."""
        t0 = time.monotonic()
        try:
            c = self.connect(ctx, sni, port, timeout=5)
        except socket.timeout:
            self.fail('%s: the proxy neither completed nor refused the handshake within 5s'
                      % msg)
        except HANDSHAKE_ERRORS as e:
            return e
        try:
            self.fail('%s: handshake accepted: %s %s, certificate %s (after %.2fs)' % (
                msg, c.sock.version(), c.sock.cipher(), which_cert(c.sock),
                time.monotonic() - t0))
        finally:
            c.close()


# ---------------------------------------------------------------------------------------------
# Protocol versions
# ---------------------------------------------------------------------------------------------

class VersionTest(TLSCase):

    def setUp(self):
        super().setUp()
        self.start()

    def test_tls13_by_default(self):
        with self.connect() as c:
            self.assertEqual(c.sock.version(), 'TLSv1.3')
            self.assertIn(c.sock.cipher()[0], TLS13_SUITES)
            self.assertServes(c)
            note('%s %s, cert %s' % (c.sock.version(), c.sock.cipher()[0], which_cert(c.sock)))

    def test_tls12(self):
        with self.connect(client_ctx(max_v=ssl.TLSVersion.TLSv1_2)) as c:
            self.assertEqual(c.sock.version(), 'TLSv1.2')
            name = c.sock.cipher()[0]
            self.assertIn(name, [s for s, _ in GOOD_TLS12], 'TLS 1.2 negotiated %s' % name)
            self.assertServes(c)
            note('%s %s' % (c.sock.version(), name))

    def test_tls10_and_tls11_refused(self):
        offered = []
        skipped = []
        for v, label in ((ssl.TLSVersion.TLSv1, 'TLS 1.0'), (ssl.TLSVersion.TLSv1_1, 'TLS 1.1')):
            ok, why = client_can_offer(v)
            if not ok:
                skipped.append('%s (%s)' % (label, why[:120]))
                continue
            offered.append(label)
            e = self.assertRefused(client_ctx(v, v, 'ALL:@SECLEVEL=0'), msg=label + ' only')
            note('%s refused: %s' % (label, str(e)[:80]))
        ok10, _ = client_can_offer(ssl.TLSVersion.TLSv1)
        if ok10:
            # a client offering 1.0..1.1 (everything below 1.2) is refused too
            self.assertRefused(client_ctx(ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1,
                                          'ALL:@SECLEVEL=0'), msg='TLS 1.0-1.1')
        self.assertHandshakeWorks()
        if not offered:
            self.skipTest('the local OpenSSL cannot offer TLS 1.0 or 1.1: %s' % '; '.join(skipped))
        if skipped:
            note('could not offer: %s' % '; '.join(skipped))

    def test_client_range_12_to_13_gets_13(self):
        with self.connect(client_ctx(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)) as c:
            self.assertEqual(c.sock.version(), 'TLSv1.3')
            self.assertServes(c)


class MinVersion13Test(TLSCase):

    def setUp(self):
        super().setUp()
        self.start(listen=[tls_listen(min_version='1.3')])

    def test_min_version_13_refuses_12(self):
        e = self.assertRefused(client_ctx(max_v=ssl.TLSVersion.TLSv1_2), msg='TLS 1.2 client '
                               'against min_version "1.3"')
        note('1.2 refused: %s' % str(e)[:80])
        with self.connect(client_ctx(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)) as c:
            self.assertEqual(c.sock.version(), 'TLSv1.3')
            self.assertServes(c)


# ---------------------------------------------------------------------------------------------
# Cipher suites and groups
# ---------------------------------------------------------------------------------------------

class CipherTest(TLSCase):

    def setUp(self):
        super().setUp()
        self.start()

    def test_tls12_intermediate_suites_accepted(self):
        for suite, kind in GOOD_TLS12:
            ctx = client_ctx(max_v=ssl.TLSVersion.TLSv1_2, ciphers=suite)
            try:
                c = self.connect(ctx, 'a.example.test')
            except HANDSHAKE_ERRORS as e:
                self.fail('TLS 1.2 %s refused: %r' % (suite, e))
            with c:
                self.assertEqual(c.sock.version(), 'TLSv1.2')
                self.assertEqual(c.sock.cipher()[0], suite)
                self.assertEqual(which_cert(c.sock), 'a_' + kind,
                                 '%s must be served with the %s certificate of a.example.test'
                                 % (suite, kind.upper()))
                self.assertServes(c, suite)

    def test_tls12_cbc_dhe_and_rsa_kx_suites_refused(self):
        unexpressible = []
        for suite in BAD_TLS12:
            try:
                ctx = client_ctx(max_v=ssl.TLSVersion.TLSv1_2, ciphers=suite + ':@SECLEVEL=0')
            except ssl.SSLError as e:
                unexpressible.append('%s (%s)' % (suite, e))
                continue
            for sni in ('a.example.test', None):
                self.assertRefused(ctx, sni, msg='TLS 1.2 suite %s (SNI %s)' % (suite, sni))
        self.assertHandshakeWorks(client_ctx(max_v=ssl.TLSVersion.TLSv1_2))
        if unexpressible:
            note('not offered by the local OpenSSL: %s' % ', '.join(unexpressible))

    def test_tls13_suites(self):
        for suite in TLS13_SUITES:
            rc, out = s_client(self.p.port, ['-tls1_3', '-ciphersuites', suite,
                                             '-servername', 'a.example.test'])
            self.assertRegex(out, r'New, TLSv1\.3, Cipher is %s' % suite,
                             'TLS 1.3 %s (rc=%d):\n%s' % (suite, rc, s_client_summary(out)))

    def check_group(self, version_flag, group, expect_ok, key_rx):
        args = [version_flag, '-groups', group, '-servername', 'a.example.test']
        if version_flag == '-tls1_2':
            args += ['-cipher', 'ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256']
        rc, out = s_client(self.p.port, args)
        established = re.search(r'New, TLSv1\.[23], Cipher is (?!\(NONE\))', out) is not None
        if expect_ok:
            self.assertTrue(established, '%s with group %s refused (rc=%d):\n%s' % (
                version_flag, group, rc, s_client_summary(out)))
            self.assertRegex(out, r'Server Temp Key: ' + key_rx,
                             '%s group %s:\n%s' % (version_flag, group, s_client_summary(out)))
        else:
            self.assertFalse(established, '%s with only group %s accepted:\n%s' % (
                version_flag, group, s_client_summary(out)))

    def test_groups_x25519_p256_p384(self):
        for v in ('-tls1_3', '-tls1_2'):
            self.check_group(v, 'X25519', True, r'X25519')
            self.check_group(v, 'P-256', True, r'ECDH, (prime256v1|P-256)')
            self.check_group(v, 'P-384', True, r'ECDH, (secp384r1|P-384)')

    def test_other_groups_refused(self):
        self.check_group('-tls1_3', 'P-521', False, None)
        self.check_group('-tls1_2', 'P-521', False, None)
        self.check_group('-tls1_3', 'ffdhe2048', False, None)
        self.check_group('-tls1_3', 'X448', False, None)
        self.assertHandshakeWorks()


# ---------------------------------------------------------------------------------------------
# ALPN and SNI
# ---------------------------------------------------------------------------------------------

class AlpnTest(TLSCase):

    def setUp(self):
        super().setUp()
        self.start()

    def test_h2_and_http11_gets_http11(self):
        for ver in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            with self.connect(client_ctx(max_v=ver, alpn=['h2', 'http/1.1'])) as c:
                self.assertEqual(c.sock.selected_alpn_protocol(), 'http/1.1', ver)
                self.assertServes(c)

    def test_http11_only(self):
        with self.connect(client_ctx(alpn=['http/1.1'])) as c:
            self.assertEqual(c.sock.selected_alpn_protocol(), 'http/1.1')
            self.assertServes(c)

    def test_no_alpn(self):
        with self.connect() as c:
            self.assertIsNone(c.sock.selected_alpn_protocol())
            self.assertServes(c)

    def test_h2_only(self):
        try:
            c = self.connect(client_ctx(alpn=['h2']))
        except HANDSHAKE_ERRORS as e:
            note('h2-only offer: handshake refused (%s)' % str(e)[:80])
            self.assertHandshakeWorks()
            return
        with c:
            self.assertIsNone(c.sock.selected_alpn_protocol(),
                              'a client offering only h2 got ALPN %r' %
                              c.sock.selected_alpn_protocol())
            self.assertServes(c, 'h2-only client speaking HTTP/1.1 without ALPN')
            note('h2-only offer: no ALPN selected, served as HTTP/1.1')


class SniTest(TLSCase):

    def setUp(self):
        super().setUp()
        self.start()

    def served(self, sni, ctx=None):
        with self.connect(ctx, sni) as c:
            self.assertServes(c, 'SNI %r' % sni)
            return which_cert(c.sock)

    def test_exact_wildcard_default(self):
        # TLS 1.3, client accepts both key types: a.example.test has RSA and ECDSA certs
        self.assertIn(self.served('a.example.test'), ('a_rsa', 'a_ec'))
        self.assertEqual(self.served('b.example.test'), 'wild')
        self.assertEqual(self.served('zz-9.example.test'), 'wild')
        self.assertEqual(self.served('other.test'), 'default')
        self.assertEqual(self.served('default.example.test'), 'default')
        self.assertEqual(self.served(None), 'default', 'no SNI must get the first certificate')

    def test_wildcard_covers_one_label_only(self):
        self.assertEqual(self.served('x.a.example.test'), 'default',
                         '*.example.test must not match two labels (x.a.example.test)')
        self.assertEqual(self.served('example.test'), 'default',
                         '*.example.test must not match example.test itself')

    def test_sni_case_insensitive(self):
        self.assertIn(self.served('A.Example.TEST'), ('a_rsa', 'a_ec'),
                      'SNI names are case-insensitive (RFC 6066 / DNS)')
        self.assertEqual(self.served('B.EXAMPLE.TEST'), 'wild')

    def test_rsa_and_ecdsa_side_by_side_tls12(self):
        rsa = client_ctx(max_v=ssl.TLSVersion.TLSv1_2, ciphers='ECDHE-RSA-AES128-GCM-SHA256')
        ec = client_ctx(max_v=ssl.TLSVersion.TLSv1_2, ciphers='ECDHE-ECDSA-AES128-GCM-SHA256')
        for _ in range(2):      # alternate, on fresh connections
            self.assertEqual(self.served('a.example.test', rsa), 'a_rsa')
            self.assertEqual(self.served('a.example.test', ec), 'a_ec')

    def test_rsa_and_ecdsa_side_by_side_tls13(self):
        # in TLS 1.3 the certificate follows the client's signature_algorithms
        for sigalgs, want in (('ecdsa_secp256r1_sha256', 'ECDSA'),
                              ('rsa_pss_rsae_sha256:rsa_pss_rsae_sha384', 'RSA-PSS')):
            rc, out = s_client(self.p.port, ['-tls1_3', '-servername', 'a.example.test',
                                             '-sigalgs', sigalgs])
            self.assertRegex(out, r'New, TLSv1\.3', 'sigalgs %s (rc=%d):\n%s' % (
                sigalgs, rc, s_client_summary(out)))
            self.assertRegex(out, r'Peer signature type: %s' % want, 'sigalgs %s:\n%s' % (
                sigalgs, s_client_summary(out)))
            self.assertRegex(out, r'subject=CN ?= ?a\.example\.test',
                             'sigalgs %s: not the a.example.test certificate' % sigalgs)


# ---------------------------------------------------------------------------------------------
# Renegotiation and resumption
# ---------------------------------------------------------------------------------------------

class RenegotiationTest(TLSCase):

    def setUp(self):
        super().setUp()
        self.start()

    def test_client_initiated_renegotiation_refused(self):
        argv = [OPENSSL, 's_client', '-connect', '%s:%d' % (h.LOOPBACK, self.p.port),
                '-tls1_2', '-msg', '-servername', 'a.example.test']
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, preexec_fn=h._preexec)
        with h._ALL_PROCS_LOCK:
            h._ALL_PROCS.append(p)
        out = h.LineCollector(p.stdout, 's_client')
        try:
            _, m = out.wait_for(r'New, TLSv1\.2, Cipher is', 5)
            self.assertIsNotNone(m, 'TLS 1.2 handshake did not complete:\n' + out.tail(30))
            time.sleep(0.2)
            p.stdin.write(b'R\n')
            p.stdin.flush()
            out.wait_for(r'RENEGOTIATING', 2)
            time.sleep(1.0)
            answered = None
            if p.poll() is None:
                try:
                    p.stdin.write(b'GET / HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n')
                    p.stdin.flush()
                    _, m2 = out.wait_for(r'^HTTP/1\.1 \d{3}', 2)
                    answered = m2.group(0) if m2 else None
                except (BrokenPipeError, OSError):
                    pass
        finally:
            try:
                p.stdin.close()
            except OSError:
                pass
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        out.t.join(2)
        text = out.text()
        # s_client sends the renegotiating ClientHello with its next write (the request)
        client_hellos = len(re.findall(r'>>> TLS 1\.2,? ?Handshake.*ClientHello\b', text))
        self.assertEqual(client_hellos, 2, 's_client did not attempt the renegotiation (%d '
                         'ClientHellos): the check proves nothing\n%s' % (
                             client_hellos, s_client_summary(text)))
        hellos = len(re.findall(r'<<< TLS 1\.2,? ?Handshake.*ServerHello\b', text))
        self.assertEqual(hellos, 1, 'client-initiated renegotiation completed (%d ServerHellos):'
                         '\n%s' % (hellos, s_client_summary(text)))
        alert = re.search(r'Alert \[length \w+\], (\w+ \w+)', text)
        note('after R: %s; connection %s' % (
            'request answered ' + answered if answered else 'no further request answered',
            'alert: ' + alert.group(1) if alert else 'no alert seen'))
        self.assertTrue(self.p.alive())
        self.assertHandshakeWorks(client_ctx(max_v=ssl.TLSVersion.TLSv1_2))


class ResumptionTest(TLSCase):

    def setUp(self):
        super().setUp()
        self.start(workers=2)

    REQ = b'GET / HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n'

    def check_s_client(self, vflag, vname, sni_args):
        sess = os.path.join(self.tmpdir, 'sess%s.pem' % vflag)
        rc, out = s_client(self.p.port, [vflag, '-sess_out', sess, '-ign_eof'] + sni_args,
                           stdin=self.REQ)
        self.assertRegex(out, r'New, %s' % vname, 'first %s connection (rc=%d):\n%s' % (
            vname, rc, s_client_summary(out)))
        self.assertIn('hello from blue/b1', out)
        self.assertTrue(os.path.exists(sess) and os.path.getsize(sess) > 0, 'no session saved')
        rc, out = s_client(self.p.port, [vflag, '-sess_in', sess, '-ign_eof'] + sni_args,
                           stdin=self.REQ)
        self.assertRegex(out, r'Reused, %s' % vname, '%s session not resumed (rc=%d):\n%s' % (
            vname, rc, s_client_summary(out)))
        self.assertIn('hello from blue/b1', out, 'resumed %s session did not serve' % vname)

    def test_s_client_resumption_tls12(self):
        self.check_s_client('-tls1_2', 'TLSv1.2', ['-servername', 'a.example.test'])

    def test_s_client_resumption_tls13(self):
        self.check_s_client('-tls1_3', 'TLSv1.3', ['-servername', 'a.example.test'])

    def test_s_client_resumption_no_sni(self):
        self.check_s_client('-tls1_3', 'TLSv1.3', ['-noservername'])
        self.check_s_client('-tls1_2', 'TLSv1.2', ['-noservername'])

    def chain(self, ver, sni, n=8):
        """n connections, each resuming the previous one's session (both workers get some)."""
        ctx = client_ctx(max_v=ver)
        with self.connect(ctx, sni) as c:
            self.assertServes(c)
            self.assertFalse(c.sock.session_reused)
            sess = c.sock.session
        reused = []
        for i in range(n):
            with self.connect(ctx, sni, session=sess) as c:
                self.assertServes(c)
                reused.append(c.sock.session_reused)
                if c.sock.session is not None:
                    sess = c.sock.session
        self.assertTrue(all(reused), '%s SNI %s: resumption per connection %s' % (
            ver, sni, reused))

    def test_python_resumption_chain(self):
        for ver in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            for sni in ('a.example.test', 'b.example.test', None):
                self.chain(ver, sni)


# ---------------------------------------------------------------------------------------------
# Proxying over TLS
# ---------------------------------------------------------------------------------------------

def xfp(j):
    return [v for k, v in j['headers'] if k.lower() == 'x-forwarded-proto']


class ProxyingTest(TLSCase):

    def setUp(self):
        super().setUp()
        # a plain listener first, then the TLS one
        self.start(listen=[{'address': '127.0.0.1:0'}, tls_listen()], workers=2)
        self.plain, self.tls = self.p.ports[0], self.p.ports[1]

    def test_x_forwarded_proto_https(self):
        with self.connect(port=self.tls) as c:
            r = c.request('GET', '/echo')
            self.assertStatus(r, 200)
            self.assertEqual(xfp(r.json()), ['https'], r.json()['headers'])
            # a client's own value is not kept
            r = c.request('GET', '/echo', headers=[('X-Forwarded-Proto', 'http')])
            self.assertStatus(r, 200)
            self.assertEqual(xfp(r.json()), ['https'], 'spoofed X-Forwarded-Proto over TLS: %r'
                             % r.json()['headers'])
        with h.Client(self.plain) as c:
            r = c.request('GET', '/echo')
            self.assertEqual(xfp(r.json()), ['http'], 'plain listener beside a TLS one')

    def test_plain_http_to_tls_port(self):
        before = self.b1.stats()['requests']
        with h.Client(self.tls, timeout=5) as c:
            c.send(h.build_request('GET', '/'))
            t0 = time.monotonic()
            try:
                data = c.read_to_eof()
            except socket.timeout:
                self.fail('plain HTTP on the TLS port: connection still open after 5s')
            dt = time.monotonic() - t0
        self.assertFalse(data.startswith(b'HTTP/1.1 200'), 'plain HTTP answered on the TLS port: '
                         '%r' % data[:200])
        self.assertLess(dt, 3.0)
        self.assertEqual(self.b1.stats()['requests'] - before, 1, 'origin got a request')
        note('plain HTTP on TLS port: closed after %.2fs with %d bytes %r' % (
            dt, len(data), data[:40]))
        with self.connect(port=self.tls) as c:
            self.assertServes(c)

    def test_keepalive_many_requests(self):
        with self.connect(port=self.tls) as c:
            for i in range(30):
                r = c.request('GET', '/echo?i=%d' % i)
                self.assertStatus(r, 200, 'request %d on one TLS connection' % i)
                self.assertFalse(r.wants_close(), r.summary())
                self.assertEqual(r.json()['target'], '/echo?i=%d' % i)
            self.assertFalse(c.readable_within(0.2), 'unexpected bytes or close')

    def test_pipelining(self):
        with self.connect(port=self.tls) as c:
            c.send(b''.join(h.build_request('GET', '/echo?n=%d' % i) for i in range(10)))
            for i in range(10):
                r = c.read_response()
                self.assertStatus(r, 200)
                self.assertEqual(r.json()['target'], '/echo?n=%d' % i, 'pipelined order')

    def test_post_bodies_small(self):
        body = os.urandom(200000)
        with self.connect(port=self.tls) as c:
            r = c.request('POST', '/echo', body=body)
            self.assertStatus(r, 200)
            self.assertEqual(r.json()['body_bytes'], len(body))
            self.assertEqual(r.json()['body_fnv1a'], h.fnv1a64(body))
            r = c.request('POST', '/echo', headers=[('Transfer-Encoding', 'chunked')],
                          body=h.chunked_body(body[:50000], [1000, 7, 30000]))
            self.assertStatus(r, 200)
            self.assertEqual(r.json()['body_fnv1a'], h.fnv1a64(body[:50000]))

    def test_expect_100_continue(self):
        with self.connect(port=self.tls) as c:
            c.send(h.build_request('POST', '/echo', [('Expect', '100-continue'),
                                                     ('Content-Length', '5')]))
            r = c.read_response(stop_at_1xx=True)
            self.assertStatus(r, 100)
            c.send(b'hello')
            r = c.read_response()
            self.assertStatus(r, 200)
            self.assertEqual(r.json()['body_bytes'], 5)

    def test_concurrent_tls_clients(self):
        errors = []

        def work(k):
            try:
                ver = ssl.TLSVersion.TLSv1_2 if k % 2 else ssl.TLSVersion.TLSv1_3
                sni = ('a.example.test', 'b.example.test', None)[k % 3]
                with TLSClient(self.tls, client_ctx(max_v=ver), sni, timeout=10) as c:
                    for i in range(3):
                        r = c.request('GET', '/echo?k=%d&i=%d' % (k, i))
                        if r.status != 200 or r.json()['target'] != '/echo?k=%d&i=%d' % (k, i):
                            errors.append((k, i, r.summary(100)))
                            return
            except Exception as e:
                errors.append((k, repr(e)))
        ts = [threading.Thread(target=work, args=(k,)) for k in range(40)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        self.assertEqual(errors, [])

    def test_connection_close_sends_close_notify(self):
        # the proxy closing a TLS connection after a response should end it with close_notify
        # (RFC 8446 §6.1), so that the client can tell the end from a truncation
        with self.connect(port=self.tls, ragged_eof_ok=False) as c:
            r = c.request('GET', '/', headers=[('Connection', 'close')])
            self.assertStatus(r, 200)
            self.assertTrue(c.wait_closed(2.0), 'not closed after Connection: close')
            self.assertIsNone(c.ssl_error, 'TLS connection closed without close_notify: %r'
                              % c.ssl_error)

    def test_close_delimited_response_ends_with_close_notify(self):
        # an HTTP/1.0 client gets a close-delimited body: only close_notify proves it complete
        with self.connect(port=self.tls, ragged_eof_ok=False) as c:
            c.send(b'GET /bytes/100000?close=1 HTTP/1.0\r\nHost: test.local\r\n\r\n')
            r = c.read_response()
            self.assertStatus(r, 200)
            self.assertEqual(r.body, h.pattern(100000))
            if r.close_delimited:
                self.assertIsNone(c.ssl_error, 'close-delimited body over TLS ended without '
                                  'close_notify: %r' % c.ssl_error)
            else:
                self.assertTrue(c.wait_closed(2.0))
                self.assertIsNone(c.ssl_error, 'TLS connection closed without close_notify: %r'
                                  % c.ssl_error)

    def test_websocket_upgrade_over_tls(self):
        with self.connect(port=self.tls) as c:
            c.send(h.build_request('GET', '/ws', [('Upgrade', 'websocket'),
                                                  ('Connection', 'Upgrade')]))
            r = c.read_head()
            self.assertStatus(r, 101)
            c.send(b'ping over tls')
            self.assertEqual(c.read_exact(13), b'ping over tls')


class BigBodyTest(TLSCase):
    WATCHDOG = 60.0

    def setUp(self):
        super().setUp()
        self.start(workers=1)

    def test_upload_100mib(self):
        n = 100 * MiB
        block = os.urandom(MiB)
        head = h.build_request('POST', '/echo', [('Content-Length', str(n))])
        with self.connect(timeout=30) as c:
            t0 = time.monotonic()
            c.send(head)
            mv = memoryview(block)
            for _ in range(n // MiB):
                c.send(mv)
            r = c.read_response()
            dt = time.monotonic() - t0
            self.assertStatus(r, 200)
            got = r.json()
            # the same body straight to the origin gives the reference FNV (python is too slow
            # to hash 100 MiB)
            with h.Client(self.b1.port, timeout=30) as d:
                d.send(head)
                for _ in range(n // MiB):
                    d.send(mv)
                ref = d.read_response().json()
            self.assertEqual(got['body_bytes'], n)
            self.assertEqual(got['body_fnv1a'], ref['body_fnv1a'], 'upload corrupted over TLS')
            # the connection is still good for the next request
            self.assertServes(c, 'after a 100 MiB upload')
        note('100 MiB upload over TLS in %.1fs' % dt)

    def download(self, c, target, n, chunked_ok=False):
        c.send(h.build_request('GET', target))
        r = c.read_head()
        self.assertStatus(r, 200)
        if 'chunked' in r.tokens('Transfer-Encoding'):
            self.assertTrue(chunked_ok, 'content-length download re-framed as chunked')
            body = c._read_chunked(r)
            self.assertEqual(len(body), n)
            self.assertEqual(body, h.pattern(n))
            return
        self.assertEqual(r.header('Content-Length'), str(n))
        pat = h.pattern(MiB + 64)
        got = 0
        bad = None
        pending = bytes(c.buf)
        c.buf.clear()
        if pending:
            k = min(len(pending), n)
            if pending[:k] != pat[:k]:
                bad = 0
            c.buf += pending[k:]
            got = k
        buf = bytearray(MiB)
        mv = memoryview(buf)
        while got < n:
            k = c.sock.recv_into(mv, min(MiB, n - got))
            if k == 0:
                break
            off = got % 26
            if bad is None and buf[:k] != pat[off:off + k]:
                bad = got
            got += k
        self.assertEqual(got, n, 'download ended early')
        self.assertIsNone(bad, 'download corrupted near byte %s' % bad)

    def test_download_100mib(self):
        n = 100 * MiB
        with self.connect(timeout=30) as c:
            t0 = time.monotonic()
            self.download(c, '/bytes/%d' % n, n)
            dt = time.monotonic() - t0
            self.assertServes(c, 'after a 100 MiB download')
        note('100 MiB download over TLS in %.1fs' % dt)

    def test_download_stalled_reader_memory_bounded(self):
        # back-pressure over TLS: with the client not reading, the proxy must stop reading the
        # origin instead of buffering (encrypted or not) the whole 100 MiB
        n = 100 * MiB
        base = self.p.rss_kb()
        peak = base
        with self.connect(timeout=30) as c:
            c.send(h.build_request('GET', '/bytes/%d' % n))
            r = c.read_head()
            self.assertStatus(r, 200)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 2.0:
                peak = max(peak, self.p.rss_kb() or 0)
                time.sleep(0.05)
            # now read it all: nothing lost while stalled
            pat = h.pattern(MiB + 64)
            got = len(c.buf)
            ok = bytes(c.buf) == pat[:got]
            c.buf.clear()
            buf = bytearray(MiB)
            mv = memoryview(buf)
            while got < n:
                k = c.sock.recv_into(mv, min(MiB, n - got))
                if k == 0:
                    break
                if ok and buf[:k] != pat[got % 26:got % 26 + k]:
                    ok = False
                got += k
                peak = max(peak, self.p.rss_kb() or 0)
        self.assertEqual(got, n)
        self.assertTrue(ok, 'download corrupted after a stall')
        grew = (peak - base) / 1024.0
        note('RSS %.1f MiB -> peak %.1f MiB' % (base / 1024.0, peak / 1024.0))
        if os.environ.get('SWITCHYARD_SANITIZE', 'none') not in ('', 'none'):
            return
        self.assertLess(grew, 24, 'proxy RSS grew by %.1f MiB while a TLS client stalled on a '
                        '100 MiB download: not back-pressured' % grew)

    def test_download_chunked_and_tls12(self):
        n = 8 * MiB
        with self.connect(client_ctx(max_v=ssl.TLSVersion.TLSv1_2), timeout=30) as c:
            self.download(c, '/bytes/%d?chunked=1&chunk=65536' % n, n, chunked_ok=True)
            self.download(c, '/bytes/%d' % n, n)


# ---------------------------------------------------------------------------------------------
# The handshake deadline (timeouts.client_header)
# ---------------------------------------------------------------------------------------------

class DeadlineTest(TLSCase):

    def setUp(self):
        super().setUp()
        self.start(timeouts={'client_header': '1s'})

    def wait_cut(self, s, t0, trickle=None, give_up=5.0):
        """Seconds from t0 until the proxy closes s (EOF / reset), sending trickle one byte per
        100 ms meanwhile; None when still open at give_up."""
        import select
        i = 0
        while time.monotonic() - t0 < give_up:
            r, _, _ = select.select([s], [], [], 0.1)
            if r:
                try:
                    data = s.recv(65536)
                except (ConnectionResetError, OSError):
                    return time.monotonic() - t0
                if not data:
                    return time.monotonic() - t0
                continue                     # an alert: keep waiting for the close
            if trickle and i < len(trickle):
                try:
                    s.send(trickle[i:i + 1])
                except OSError:
                    return time.monotonic() - t0
                i += 1
        return None

    def test_silent_client_closed_after_client_header(self):
        with socket.create_connection((h.LOOPBACK, self.p.port), timeout=5) as s:
            t0 = time.monotonic()
            t = self.wait_cut(s, t0)
        self.assertIsNotNone(t, 'a client that never sends a ClientHello is still connected '
                             'after 5s (client_header 1s)')
        self.assertGreater(t, 0.7, 'closed after %.2fs, before the 1s deadline' % t)
        self.assertLess(t, 2.5, 'closed only after %.2fs with client_header 1s' % t)

    def test_partial_client_hello_closed(self):
        hello = client_hello_bytes()
        with socket.create_connection((h.LOOPBACK, self.p.port), timeout=5) as s:
            t0 = time.monotonic()
            s.sendall(hello[:len(hello) // 2])
            t = self.wait_cut(s, t0)
        self.assertIsNotNone(t, 'half a ClientHello: still connected after 5s')
        self.assertTrue(0.7 < t < 2.5, 'half a ClientHello cut after %.2fs (client_header 1s)'
                        % t)

    def test_trickled_client_hello_is_a_total_deadline(self):
        hello = client_hello_bytes()
        with socket.create_connection((h.LOOPBACK, self.p.port), timeout=5) as s:
            t0 = time.monotonic()
            t = self.wait_cut(s, t0, trickle=hello)
        self.assertIsNotNone(t, 'a ClientHello trickled one byte per 100ms was never cut: the '
                             'handshake deadline must be total, not idle')
        self.assertTrue(0.7 < t < 2.5, 'trickled ClientHello cut after %.2fs' % t)

    def test_header_deadline_after_handshake(self):
        with self.connect(timeout=5) as c:
            t0 = time.monotonic()
            c.send(b'GET / HTTP/1.1\r\nHost: test.local\r\n')
            try:
                r = c.read_response()
            except socket.timeout:
                self.fail('no 408 within 5s for a stalled header block over TLS')
            dt = time.monotonic() - t0
            self.assertStatus(r, 408)
            self.assertLess(dt, 2.5, '408 after %.2fs' % dt)
            self.assertClosed(c)

    def test_handshake_timer_gone_after_handshake(self):
        # client_header 1s must not cut an idle keep-alive TLS connection (keepalive 60s)
        with self.connect(timeout=5) as c:
            self.assertServes(c)
            time.sleep(1.6)
            self.assertFalse(c.readable_within(0), 'closed while idle between requests')
            self.assertServes(c, 'second request 1.6s after the first (client_header 1s)')


# ---------------------------------------------------------------------------------------------
# Certificate chains, TLS records, reload and stop
# ---------------------------------------------------------------------------------------------

class ChainTest(TLSCase):

    def setUp(self):
        super().setUp()
        c = certs()
        self.start(listen=[tls_listen([c.default, c.chain])])

    def test_intermediate_sent_and_verifiable(self):
        # the client trusts only the root: the intermediate must come from the server
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(certs().root)
        try:
            c = self.connect(ctx, 'chain.example.test')
        except ssl.SSLCertVerificationError as e:
            self.fail('chain.example.test does not verify against its root (intermediate from '
                      'the cert file not sent?): %s' % e)
        with c:
            self.assertEqual(c.sock.getpeercert()['subject'], ((('commonName',
                                                                 'chain.example.test'),),))
            self.assertServes(c)


class RecordTest(TLSCase):

    def setUp(self):
        super().setUp()
        self.start(limits={'max_header_bytes': '32k'})

    def test_request_one_tls_record_per_byte(self):
        req = h.build_request('POST', '/echo?tiny=records', [('X-Pad', 'p' * 100)], b'0123456789')
        with self.connect() as c:
            for i in range(len(req)):
                c.sock.sendall(req[i:i + 1])          # each write is a TLS record of its own
            r = c.read_response()
            self.assertStatus(r, 200)
            self.assertEqual(r.json()['target'], '/echo?tiny=records')
            self.assertEqual(r.json()['body_bytes'], 10)
            self.assertServes(c, 'after a request sent as one-byte records')

    def test_large_headers_over_tls(self):
        with self.connect() as c:
            hs = [('X-Big-%d' % i, 'v' * 900) for i in range(25)]     # ~23 KiB of headers
            r = c.request('GET', '/echo', headers=hs)
            self.assertStatus(r, 200, '23 KiB header block over TLS')
            self.assertEqual(len([1 for k, _ in r.json()['headers'] if k.startswith('X-Big-')]),
                             25)
        with self.connect() as c:
            hs = [('X-Big-%d' % i, 'v' * 900) for i in range(45)]     # ~41 KiB > 32k
            r = c.request('GET', '/echo', headers=hs)
            self.assertStatus(r, 431, '41 KiB header block over TLS with max_header_bytes 32k')
            self.assertTrue(r.wants_close(), r.summary())


class ReloadStopTest(TLSCase):

    def test_reload_keeps_tls_listener(self):
        p = self.start()
        b2 = self.origin('blue', 'b2')
        with self.connect() as kept:
            self.assertServes(kept)
            p.reload(self.config([b2], [self.g1], listen=[tls_listen()]))
            deadline = time.monotonic() + 5
            srv = None
            while time.monotonic() < deadline:
                with self.connect() as c:
                    r = c.request('GET', '/')
                    self.assertStatus(r, 200, 'TLS request after SIGHUP')
                    srv = r.header('X-Origin-Server')
                if srv == 'b2':
                    break
                time.sleep(0.1)
            self.assertEqual(srv, 'b2', 'reload not applied to TLS connections; stderr:\n%s'
                             % p.stderr_tail())
            r = kept.request('GET', '/')
            self.assertStatus(r, 200, 'TLS keep-alive connection opened before the reload')

    def test_sigterm_finishes_inflight_tls_request(self):
        p = self.start()
        with self.connect() as c:
            c.send(h.build_request('POST', '/echo?delay=800', body=b'x' * 1000))
            time.sleep(0.3)
            p.signal(signal.SIGTERM)
            p.expected_exit = True
            r = c.read_response()
            self.assertStatus(r, 200, 'in-flight TLS request during SIGTERM')
            self.assertEqual(r.json()['body_bytes'], 1000)
            self.assertTrue(r.wants_close(), 'response during the drain without Connection: '
                            'close:\n' + r.summary())
            self.assertTrue(c.wait_closed(3.0), 'TLS connection not closed after the drain')
        try:
            rc = p.proc.wait(8)
        except subprocess.TimeoutExpired:
            self.fail('switchyard still running 8s after SIGTERM')
        self.assertEqual(rc, 0, p.stderr_tail())


# ---------------------------------------------------------------------------------------------
# Misbehaving clients
# ---------------------------------------------------------------------------------------------

class RobustnessTest(TLSCase):

    def setUp(self):
        super().setUp()
        self.start(workers=2)

    def test_aborts_do_not_hurt(self):
        hello = client_hello_bytes()
        for i in range(10):
            # garbage instead of a ClientHello
            with socket.create_connection((h.LOOPBACK, self.p.port), timeout=5) as s:
                s.sendall(os.urandom(1000))
            # half a ClientHello then close
            with socket.create_connection((h.LOOPBACK, self.p.port), timeout=5) as s:
                s.sendall(hello[:100 + i * 20])
            # a reset right after the handshake, with a download in flight
            c = self.connect()
            c.send(h.build_request('GET', '/bytes/%d' % (4 * MiB)))
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
            c.close()
            # an upload cut in the middle
            c = self.connect()
            c.send(h.build_request('POST', '/echo', [('Content-Length', str(MiB))]) + b'x' * 5000)
            c.close()
        time.sleep(0.3)
        self.assertTrue(self.p.alive(), 'proxy died')
        for ver in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            with self.connect(client_ctx(max_v=ver)) as c:
                self.assertServes(c)

    def test_aborted_tls_download_releases_its_upstream(self):
        # A TLS client that goes away in the middle of a big response: the proxy must drop the
        # pair (the unfinished upstream connection cannot be reused), so that nothing is left in
        # flight and SIGTERM stops at once. Observed: the client side is closed but the upstream
        # connection stays open (reading paused) forever, and the drain waits for it.
        with self.connect() as c:
            self.assertServes(c)
        base = self.b1.stats()['connections_open']
        for i in range(10):
            c = self.connect()
            c.send(h.build_request('GET', '/bytes/%d' % (4 * MiB)))
            if i % 2:
                c.read_head()               # the response has started
            c.close()                       # unread data: the kernel sends a reset
        left = h.wait_until(lambda: self.b1.stats()['connections_open'] <= base, 3.0, 0.1)
        now = self.b1.stats()['connections_open']
        t0 = time.monotonic()
        self.p.signal(signal.SIGTERM)
        self.p.expected_exit = True
        try:
            rc = self.p.proc.wait(3.0)
        except subprocess.TimeoutExpired:
            rc = None
            self.p.proc.kill()          # do not let tearDown wait for the drain
            self.p.proc.wait(5)
        dt = time.monotonic() - t0
        self.assertTrue(left, 'after 10 aborted TLS downloads the origin still has %d '
                        'connections open from the proxy (%d before), 3s later' % (now, base))
        self.assertIsNotNone(rc, 'SIGTERM with nothing in flight: still running after 3s '
                             '(an aborted TLS download left in flight?)')
        self.assertEqual(rc, 0)
        note('stopped %.2fs after SIGTERM' % dt)


# ---------------------------------------------------------------------------------------------
# Bad configuration
# ---------------------------------------------------------------------------------------------

class BadConfigTest(TLSCase):

    def write(self, cert_entries, name='bad.yaml'):
        cfg = h.make_config([('b1', '127.0.0.1:1')], [('g1', '127.0.0.1:2')], self.tmpdir,
                            listen=[{'address': '127.0.0.1:0', 'tls': {'certs': cert_entries}}])
        path = os.path.join(self.tmpdir, name)
        with open(path, 'w') as f:
            f.write(h.to_yaml(cfg) + '\n')
        return path

    def check_rejected(self, entries, names, what):
        path = self.write(entries)
        rc, out, err = h.run_check(path)
        self.assertEqual(rc, 1, '%s: switchyard -t exit %d\nstdout: %s\nstderr: %s' % (
            what, rc, out, err))
        text = out + err
        self.assertTrue(any(n in text for n in names), '%s: the message names none of %s:\n%s'
                        % (what, names, text))
        return path, text

    def test_good_config_passes_check(self):
        path = self.write([c.entry() for c in certs().all])
        rc, out, err = h.run_check(path)
        self.assertEqual(rc, 0, out + err)

    def test_missing_cert_file(self):
        c = certs()
        missing = os.path.join(self.tmpdir, 'no-such-cert.pem')
        self.check_rejected([c.default.entry(), {'cert': missing, 'key': c.a_rsa.key}],
                            [missing], 'missing certificate file')

    def test_missing_key_file(self):
        c = certs()
        missing = os.path.join(self.tmpdir, 'no-such-key.pem')
        self.check_rejected([{'cert': c.default.crt, 'key': missing}], [missing],
                            'missing key file')

    def test_key_not_matching_cert(self):
        c = certs()
        _, text = self.check_rejected([c.a_ec.entry(), {'cert': c.default.crt,
                                                        'key': c.other_key}],
                                      [c.default.crt, c.other_key], 'key not matching its cert')
        # also an ECDSA cert with an RSA key
        self.check_rejected([{'cert': c.a_ec.crt, 'key': c.a_rsa.key}], [c.a_ec.crt, c.a_rsa.key],
                            'ECDSA cert with an RSA key')

    def test_expired_cert(self):
        c = certs()
        self.check_rejected([c.default.entry(), c.expired.entry()], [c.expired.crt],
                            'expired certificate (valid 2020-01-01 only)')

    def test_garbage_cert_file(self):
        c = certs()
        self.check_rejected([{'cert': c.garbage, 'key': c.default.key}], [c.garbage],
                            'certificate file that is not PEM')

    def test_daemon_refuses_to_start(self):
        c = certs()
        missing = os.path.join(self.tmpdir, 'gone.pem')
        path = self.write([{'cert': missing, 'key': c.default.key}])
        try:
            p = subprocess.run([h.SWITCHYARD, '-c', path], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=10, preexec_fn=h._preexec)
        except subprocess.TimeoutExpired:
            self.fail('switchyard kept running with a missing certificate file')
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(missing, p.stderr.decode('utf-8', 'replace'))


if __name__ == '__main__':
    h.main()
