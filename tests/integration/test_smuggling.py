"""Request smuggling and response splitting (DESIGN §4 bullets 1-3): every request seed of the
fuzz corpus (tests/fuzz/corpus/reqframe, read at run time so new seeds are covered) and a list of
smuggling shapes of our own go through the proxy to a raw-socket origin that records every byte
it receives. For each payload, sent at once and split into 1-byte writes, either the proxy
refuses it (a 4xx, then close; the origin never gets a complete request it did not answer) or the
origin received exactly the requests the client got answers for, each one framed without
ambiguity and identical (method, target, body) to how a strict RFC 9112 parser frames the
client's bytes. Response side: an origin answer with a smuggling shape never reaches the client
as two responses."""

import os
import re
import select
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

CORPUS = os.path.join(h.SOURCE_ROOT, 'tests', 'fuzz', 'corpus', 'reqframe')
CONF_BYTES = 2          # a reqframe seed starts with two bytes of fuzzer settings

# --------------------------------------------------------------------------------------------
# Framing (RFC 9112) over complete byte strings
# --------------------------------------------------------------------------------------------

TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
TOKEN = TCHAR + b'+'
VCHAR = rb'[\x21-\x7e\x80-\xff]'
FIELD_LINE = re.compile(rb'^(' + TOKEN + rb'):[ \t]*((?:' + VCHAR + rb'(?:[ \t\x21-\x7e\x80-\xff]*'
                        + VCHAR + rb')?)?)[ \t]*$')
REQUEST_LINE = re.compile(rb'^(' + TOKEN + rb') ([\x21-\x7e\x80-\xff]+) (HTTP/\d\.\d)$')
QSTR = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
# An empty extension value ("5;a=") is outside the grammar but cannot change the framing, and the
# proxy never forwards extensions (it re-frames the body): accepted like llhttp does.
CHUNK_LINE = re.compile(rb'^([0-9A-Fa-f]+)((?:[ \t]*;[ \t]*' + TOKEN + rb'(?:[ \t]*=[ \t]*(?:'
                        + TOKEN + b'|' + QSTR + rb')?)?)*)$')


class Bad(Exception):
    """Framing that two parsers may read differently: a proxy must refuse it."""


class Incomplete(Exception):
    pass


class Req:
    def __init__(self):
        self.method = self.target = self.version = None
        self.fields = []          # [(name lower, value)]
        self.body = b''
        self.framing = 'none'     # 'length' | 'chunked' | 'none'
        self.start = self.end = 0

    def get(self, name):
        return [v for k, v in self.fields if k == name]

    def tokens(self, name):
        out = []
        for v in self.get(name):
            out += [t.strip().lower() for t in v.split(b',')]
        return out

    def __repr__(self):
        return '%s %r %s body=%r (%s)' % (self.method.decode(), self.target, self.version.decode(),
                                          self.body[:60], self.framing)


def read_line(data, pos):
    """One CRLF-terminated line at pos: (line, next pos). A bare CR or bare LF is Bad."""
    i = data.find(b'\n', pos)
    if i < 0:
        cr = data.find(b'\r', pos)
        if cr >= 0 and cr + 1 < len(data):
            raise Bad('bare CR at %d' % cr)
        raise Incomplete()
    if i == pos or data[i - 1:i] != b'\r':
        raise Bad('bare LF at %d' % i)
    line = data[pos:i - 1]
    if b'\r' in line:
        raise Bad('bare CR at %d' % (pos + line.index(b'\r')))
    return line, i + 1


def codings(req):
    """Transfer codings of all Transfer-Encoding fields (combined as one list)."""
    out = []
    for v in req.get(b'transfer-encoding'):
        for t in v.split(b','):
            t = t.strip(b' \t').lower()
            if t:
                out.append(t)
    return out


def parse_one(data, pos, strict):
    """One request at pos → Req (raises Incomplete or Bad). strict: the canonical form a proxy
    must send (no leading empty lines, one Content-Length, one Transfer-Encoding); otherwise what
    RFC 9112 lets a recipient accept (empty lines first, an identical Content-Length list,
    Transfer-Encoding fields combined)."""
    r = Req()
    if not strict:
        while data.startswith(b'\r\n', pos) or data.startswith(b'\n', pos):
            pos += 2 if data.startswith(b'\r\n', pos) else 1
        if pos >= len(data) or data[pos:] == b'\r':
            raise Incomplete()
    r.start = pos
    line, pos = read_line(data, pos)
    m = REQUEST_LINE.match(line)
    if not m:
        raise Bad('request line %r' % line[:80])
    r.method, r.target, r.version = m.groups()
    if r.version not in (b'HTTP/1.0', b'HTTP/1.1'):
        raise Bad('version %r' % r.version)
    if r.method == b'CONNECT':
        raise Bad('CONNECT (a tunnel, not a request)')
    while True:
        line, pos = read_line(data, pos)
        if line == b'':
            break
        if line[:1] in (b' ', b'\t'):
            raise Bad('obs-fold %r' % line[:60])
        fm = FIELD_LINE.match(line)
        if not fm:
            raise Bad('field line %r' % line[:60])
        r.fields.append((fm.group(1).lower(), fm.group(2)))
    te = r.get(b'transfer-encoding')
    cl = r.get(b'content-length')
    if te:
        cs = codings(r)
        if strict and len(te) > 1:
            raise Bad('%d Transfer-Encoding fields' % len(te))
        if cl:
            raise Bad('Content-Length and Transfer-Encoding')
        if r.version == b'HTTP/1.0':
            raise Bad('Transfer-Encoding in HTTP/1.0')
        if not cs or cs[-1] != b'chunked' or cs.count(b'chunked') != 1:
            raise Bad('transfer codings %r' % cs)
        for c in cs:
            if not re.match(b'^' + TOKEN + b'$', c):
                raise Bad('transfer coding %r' % c)
        r.framing = 'chunked'
        body = bytearray()
        while True:
            line, pos = read_line(data, pos)
            cm = CHUNK_LINE.match(line)
            if not cm:
                raise Bad('chunk line %r' % line[:60])
            if len(cm.group(1)) > 15:
                raise Bad('chunk size %r' % cm.group(1))
            n = int(cm.group(1), 16)
            if n == 0:
                break
            if len(data) < pos + n + 2:
                if data[pos + n:pos + n + 2] not in (b'', b'\r'):
                    raise Bad('chunk data not followed by CRLF')
                raise Incomplete()
            if data[pos + n:pos + n + 2] != b'\r\n':
                raise Bad('chunk data not followed by CRLF')
            body += data[pos:pos + n]
            pos += n + 2
        while True:       # trailer section
            line, pos = read_line(data, pos)
            if line == b'':
                break
            if line[:1] in (b' ', b'\t') or not FIELD_LINE.match(line):
                raise Bad('trailer line %r' % line[:60])
        r.body = bytes(body)
    elif cl:
        vals = set()
        for v in cl:
            for t in v.split(b','):
                vals.add(t.strip(b' \t'))
        if strict and (len(cl) > 1 or len(vals) > 1):
            raise Bad('Content-Length %r' % cl)
        if len(vals) != 1 or not re.match(rb'^\d{1,18}$', next(iter(vals))):
            raise Bad('Content-Length %r' % cl)
        n = int(next(iter(vals)))
        if len(data) < pos + n:
            raise Incomplete()
        r.framing = 'length'
        r.body = data[pos:pos + n]
        pos += n
    r.end = pos
    return r


def closes_after(r):
    tokens = r.tokens(b'connection')
    if r.version == b'HTTP/1.0':
        return b'keep-alive' not in tokens
    return b'close' in tokens


def reference(data):
    """How a strict RFC 9112 recipient frames the client bytes: (requests, stop, why). stop is
    'end' (all used), 'incomplete', 'close' (a request ends the connection; later bytes are not
    requests) or 'bad' (ambiguous framing at the next request: it must be refused)."""
    reqs = []
    pos = 0
    while True:
        if re.match(rb'^(?:\r\n|\n)*$', data[pos:]):
            return reqs, 'end', ''
        try:
            r = parse_one(data, pos, strict=False)
        except Incomplete:
            return reqs, 'incomplete', ''
        except Bad as e:
            return reqs, 'bad', str(e)
        reqs.append(r)
        pos = r.end
        if closes_after(r):
            return reqs, 'close', ''


# --------------------------------------------------------------------------------------------
# The raw origin: records every byte per connection, frames strictly, answers what it frames
# --------------------------------------------------------------------------------------------

class OriginConn:
    def __init__(self, cid):
        self.cid = cid
        self.data = bytearray()
        self.pos = 0              # end of the last complete request
        self.requests = []        # Req with .rid, .xff, .seq
        self.violation = None     # why the byte stream is not a clean sequence of requests
        self.eof = False
        self.health = False


class RawOrigin:
    """A Python upstream that answers every request it can frame with
    `200, X-Smug-Id: CONN.N, Content-Length: 0` and records what arrived. Anything that is not
    canonical, unambiguous HTTP/1.1 framing is a violation: the connection is closed unanswered.
    Health checks (User-Agent switchyard-health) are answered and kept apart."""

    def __init__(self):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind((h.LOOPBACK, 0))
        self.ls.listen(256)
        self.port = self.ls.getsockname()[1]
        self.lock = threading.Lock()
        self.conns = []
        self.seq = 0
        self.total_bytes = 0
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self):
        return '%s:%d' % (h.LOOPBACK, self.port)

    def _accept(self):
        while True:
            try:
                s, _ = self.ls.accept()
            except OSError:
                return
            with self.lock:
                oc = OriginConn(len(self.conns))
                self.conns.append(oc)
            threading.Thread(target=self._serve, args=(s, oc), daemon=True).start()

    def _serve(self, s, oc):
        s.settimeout(60)
        try:
            while True:
                try:
                    d = s.recv(65536)
                except OSError:
                    d = b''
                with self.lock:
                    self.total_bytes += len(d)
                    if not d:
                        oc.eof = True
                        return
                    oc.data += d
                    out, close = self._frame(oc)
                if out:
                    s.sendall(out)
                if close:
                    return
        except OSError:
            with self.lock:
                oc.eof = True
        finally:
            s.close()

    def _frame(self, oc):
        """Parses what oc holds (lock held): (bytes to answer, close?)."""
        out = bytearray()
        while oc.pos < len(oc.data):
            try:
                r = parse_one(bytes(oc.data), oc.pos, strict=True)
            except Incomplete:
                return out, False
            except Bad as e:
                oc.violation = '%s at byte %d: %r' % (e, oc.pos, bytes(oc.data[oc.pos:oc.pos + 200]))
                return out, True
            oc.pos = r.end
            ua = r.get(b'user-agent')
            if ua and ua[0].startswith(b'switchyard-health'):
                oc.health = True
                out += b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'
                continue
            xff = r.get(b'x-forwarded-for')
            r.xff = xff[-1].split(b',')[-1].strip().decode() if len(xff) == 1 else None
            if len(xff) != 1:
                oc.violation = 'request without exactly one X-Forwarded-For: %r' % r
                return out, True
            r.rid = '%d.%d' % (oc.cid, len(oc.requests))
            self.seq += 1
            r.seq = self.seq
            oc.requests.append(r)
            close = b'close' in r.tokens(b'connection')
            out += (b'HTTP/1.1 200 OK\r\nX-Smug-Id: %s\r\nContent-Length: 0\r\n%s\r\n' % (
                r.rid.encode(), b'Connection: close\r\n' if close else b''))
            if close:
                return out, True
        return out, False

    def snapshot(self):
        with self.lock:
            return self.total_bytes, [(oc.cid, oc.eof, len(oc.data) - oc.pos, oc.violation)
                                      for oc in self.conns]

    def requests_from(self, ip):
        with self.lock:
            rs = [r for oc in self.conns for r in oc.requests if r.xff == ip]
        return sorted(rs, key=lambda r: r.seq)

    def close(self):
        self.ls.close()


# --------------------------------------------------------------------------------------------
# Payloads
# --------------------------------------------------------------------------------------------

H = b'Host: test.local\r\n'
SMUGGLED = b'GET /smuggled HTTP/1.1\r\nHost: test.local\r\n\r\n'


def post(headers, body=b'', target=b'/'):
    return b'POST ' + target + b' HTTP/1.1\r\n' + H + headers + b'\r\n' + body


def chunked_post(te_line, chunks=b'5\r\nhello\r\n0\r\n\r\n', extra=b''):
    return post(te_line + extra, chunks)


EXTRA = [
    # CL.TE / TE.CL: the classic desync pairs, with a request hidden behind the first
    ('cl_te_smuggle', post(b'Content-Length: 6\r\nTransfer-Encoding: chunked\r\n',
                           b'0\r\n\r\nX' + SMUGGLED)),
    ('te_cl_smuggle', post(b'Transfer-Encoding: chunked\r\nContent-Length: 4\r\n',
                           b'%x\r\n' % (len(SMUGGLED) + 5) + b'GPOST' + SMUGGLED +
                           b'\r\n0\r\n\r\n')),
    ('cl_zero_te', post(b'Content-Length: 0\r\nTransfer-Encoding: chunked\r\n',
                        b'5\r\nhello\r\n0\r\n\r\n')),
    # TE.TE obfuscations
    ('te_vertical_tab', chunked_post(b'Transfer-Encoding:\x0bchunked\r\n')),
    ('te_form_feed', chunked_post(b'Transfer-Encoding: \x0cchunked\r\n')),
    ('te_quoted', chunked_post(b'Transfer-Encoding: "chunked"\r\n')),
    ('te_chunked_identity', chunked_post(b'Transfer-Encoding: chunked, identity\r\n')),
    ('te_identity_chunked', chunked_post(b'Transfer-Encoding: identity, chunked\r\n')),
    ('te_chunked_twice', chunked_post(b'Transfer-Encoding: chunked, chunked\r\n')),
    ('te_chunk', chunked_post(b'Transfer-Encoding: chunk\r\n')),
    ('te_chunked_param', chunked_post(b'Transfer-Encoding: chunked;q=1\r\n')),
    ('te_nul', chunked_post(b'Transfer-Encoding: chunked\x00\r\n')),
    ('te_underscore_with_cl', post(b'Transfer_Encoding: chunked\r\nContent-Length: 5\r\n',
                                   b'0\r\n\r\n')),
    ('te_leading_space_line', post(b' Transfer-Encoding: chunked\r\nContent-Length: 5\r\n',
                                   b'0\r\n\r\n')),
    ('te_folded_after_header', post(b'X-A: b\r\n Transfer-Encoding: chunked\r\n',
                                    b'0\r\n\r\n')),
    ('te_bare_lf_fold', chunked_post(b'Transfer-Encoding:\n chunked\r\n')),
    ('te_cow_second', chunked_post(b'Transfer-Encoding: chunked\r\nTransfer-encoding: cow\r\n')),
    ('te_double_space', chunked_post(b'Transfer-Encoding:  chunked\r\n')),
    ('te_mixed_case', chunked_post(b'tRANSFER-eNCODING: cHuNkEd\r\n')),
    ('te_http10_with_cl', b'POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n'
                          b'\r\n0\r\n\r\n'),
    ('te_http10_keepalive_smuggle', b'POST / HTTP/1.0\r\nConnection: keep-alive\r\n'
                                    b'Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n' + SMUGGLED),
    # Content-Length variants
    ('cl_dup_same_pipelined', post(b'Content-Length: 5\r\nContent-Length: 5\r\n', b'hello' + SMUGGLED)),
    ('cl_leading_zeros', post(b'Content-Length: 005\r\n', b'hello')),
    ('cl_hex', post(b'Content-Length: 0x5\r\n', b'hello')),
    ('cl_negative', post(b'Content-Length: -1\r\n', b'hello')),
    ('cl_space_inside', post(b'Content-Length: 1 1\r\n', b'hello world')),
    ('cl_overflow', post(b'Content-Length: 99999999999999999999999\r\n', b'hello')),
    ('cl_tab', post(b'Content-Length:\t5\r\n', b'hello')),
    ('cl_empty', post(b'Content-Length:\r\n', b'hello')),
    ('cl_folded', post(b'Content-Length: 5\r\n 0\r\n', b'hello' + b'x' * 45)),
    ('cl_space_before_colon', post(b'Content-Length : 5\r\n', b'hello')),
    ('cl_short_smuggle', post(b'Content-Length: 3\r\n', b'abc' + SMUGGLED)),
    ('get_with_cl_body', b'GET / HTTP/1.1\r\n' + H + b'Content-Length: ' +
                         str(len(SMUGGLED)).encode() + b'\r\n\r\n' + SMUGGLED),
    # bare CR / LF, NUL
    ('bare_cr_before_cl', b'GET / HTTP/1.1\r\n' + H + b'X-A: a\rContent-Length: 5\r\n\r\nhello'),
    ('bare_lf_header_end', b'GET / HTTP/1.1\r\n' + H + b'X-A: a\n\r\n'),
    ('bare_lf_request_line', b'GET / HTTP/1.1\n' + H + b'\r\n'),
    ('bare_cr_request_line', b'GET /\r HTTP/1.1\r\n' + H + b'\r\n'),
    ('lf_only_head_smuggle', b'GET / HTTP/1.1\r\n' + H + b'Content-Length: 0\n\nGET /lf HTTP/1.1\r\n' +
                             H + b'\r\n'),
    # llhttp 8 (strict) takes a bare LF as the empty line ending a head: a front parser reading
    # CRLF lines sees one request with a header line 'GET /lf HTTP/1.1'.
    ('bare_lf_ends_head_smuggle', b'GET / HTTP/1.1\r\n' + H + b'\nGET /lf HTTP/1.1\r\n' + H +
                                  b'\r\n'),
    ('bare_lf_ends_head_with_cl', b'POST / HTTP/1.1\r\n' + H + b'Content-Length: 5\r\n\nhello'),
    ('bare_lf_ends_head_chunked', b'POST / HTTP/1.1\r\n' + H + b'Transfer-Encoding: chunked\r\n\n'
                                  b'0\r\n\r\n' + SMUGGLED),
    ('nul_in_target', b'GET /a\x00b HTTP/1.1\r\n' + H + b'\r\n'),
    ('nul_in_name', b'GET / HTTP/1.1\r\n' + H + b'X\x00A: b\r\n\r\n'),
    ('del_in_value', b'GET / HTTP/1.1\r\n' + H + b'X-A: a\x7fb\r\n\r\n'),
    ('double_space_request_line', b'GET  / HTTP/1.1\r\n' + H + b'\r\n'),
    ('tab_request_line', b'GET\t/ HTTP/1.1\r\n' + H + b'\r\n'),
    ('trailing_space_version', b'GET / HTTP/1.1 \r\n' + H + b'\r\n'),
    ('lowercase_version', b'GET / http/1.1\r\n' + H + b'\r\n'),
    ('version_11_1', b'GET / HTTP/1.10\r\n' + H + b'\r\n'),
    # chunk sizes and extensions
    ('chunk_size_trailing_space', chunked_post(b'Transfer-Encoding: chunked\r\n',
                                               b'5 \r\nhello\r\n0\r\n\r\n')),
    ('chunk_size_plus', chunked_post(b'Transfer-Encoding: chunked\r\n', b'+5\r\nhello\r\n0\r\n\r\n')),
    ('chunk_size_leading_zeros', chunked_post(b'Transfer-Encoding: chunked\r\n',
                                              b'0005\r\nhello\r\n000\r\n\r\n')),
    ('chunk_size_17_digits', chunked_post(b'Transfer-Encoding: chunked\r\n',
                                          b'10000000000000005\r\nhello\r\n0\r\n\r\n')),
    ('chunk_data_too_long', chunked_post(b'Transfer-Encoding: chunked\r\n',
                                         b'3\r\nhello\r\n0\r\n\r\n')),
    ('chunk_data_no_crlf', chunked_post(b'Transfer-Encoding: chunked\r\n',
                                        b'5\r\nhelloXX0\r\n\r\n')),
    ('chunk_bare_lf_after_data', chunked_post(b'Transfer-Encoding: chunked\r\n',
                                              b'5\r\nhello\n0\r\n\r\n')),
    ('chunk_last_bare_lf', chunked_post(b'Transfer-Encoding: chunked\r\n',
                                        b'5\r\nhello\r\n0\n\r\n')),
    ('chunk_ext_bws', chunked_post(b'Transfer-Encoding: chunked\r\n',
                                   b'5 ; a=b\r\nhello\r\n0\r\n\r\n')),
    ('chunk_ext_empty_name', chunked_post(b'Transfer-Encoding: chunked\r\n',
                                          b'5;\r\nhello\r\n0\r\n\r\n')),
    ('chunk_ext_empty_value', chunked_post(b'Transfer-Encoding: chunked\r\n',
                                           b'5;a=\r\nhello\r\n0\r\n\r\n')),
    ('chunk_ext_quoted_escape', chunked_post(b'Transfer-Encoding: chunked\r\n',
                                             b'5;a="x\\"y"\r\nhello\r\n0\r\n\r\n')),
    ('chunk_ext_bare_lf', chunked_post(b'Transfer-Encoding: chunked\r\n',
                                       b'5;a\nb\r\nhello\r\n0\r\n\r\n')),
    ('chunk_ext_bare_cr', chunked_post(b'Transfer-Encoding: chunked\r\n',
                                       b'5;a\rb\r\nhello\r\n0\r\n\r\n')),
    ('chunk_ext_long', chunked_post(b'Transfer-Encoding: chunked\r\n',
                                    b'5;' + b'e' * 4000 + b'\r\nhello\r\n0\r\n\r\n')),
    ('trailer_content_length', chunked_post(b'Transfer-Encoding: chunked\r\n',
                                            b'5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n' +
                                            SMUGGLED)),
    ('trailer_obs_fold', chunked_post(b'Transfer-Encoding: chunked\r\n',
                                      b'5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n')),
    ('chunked_smuggle_after_last', chunked_post(b'Transfer-Encoding: chunked\r\n',
                                                b'0\r\n\r\n' + SMUGGLED)),
    ('chunked_unterminated', chunked_post(b'Transfer-Encoding: chunked\r\n', b'5\r\nhel')),
    # Upgrade: h2c and friends (the origin answers 200, so HTTP goes on)
    ('h2c_then_get', b'GET / HTTP/1.1\r\n' + H + b'Connection: Upgrade, HTTP2-Settings\r\n'
                     b'Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n' + SMUGGLED),
    ('h2c_post_body', post(b'Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n'
                           b'HTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Length: 5\r\n',
                           b'hello' + SMUGGLED)),
    ('h2c_preface_after', b'GET / HTTP/1.1\r\n' + H + b'Connection: Upgrade\r\nUpgrade: h2c\r\n\r\n'
                          b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'),
    ('upgrade_without_connection', b'GET / HTTP/1.1\r\n' + H + b'Upgrade: h2c\r\n\r\n' + SMUGGLED),
    # pipelined pairs
    ('pipe_get_get', b'GET /1 HTTP/1.1\r\n' + H + b'\r\n' + SMUGGLED),
    ('pipe_post_get', post(b'Content-Length: 5\r\n', b'hello') + SMUGGLED),
    ('pipe_chunked_get', chunked_post(b'Transfer-Encoding: chunked\r\n') + SMUGGLED),
    ('pipe_head_get', b'HEAD /h HTTP/1.1\r\n' + H + b'\r\n' + SMUGGLED),
    ('pipe_close_then_get', b'GET /c HTTP/1.1\r\n' + H + b'Connection: close\r\n\r\n' + SMUGGLED),
    ('pipe_http10_then_get', b'GET /10 HTTP/1.0\r\n\r\n' + SMUGGLED),
    ('pipe_good_then_clte', b'GET /1 HTTP/1.1\r\n' + H + b'\r\n' +
                            post(b'Content-Length: 6\r\nTransfer-Encoding: chunked\r\n',
                                 b'0\r\n\r\nX')),
    ('pipe_ten', b''.join(b'GET /p%d HTTP/1.1\r\n' % i + H + b'\r\n' for i in range(10))),
    ('pipe_mixed_bodies', post(b'Content-Length: 3\r\n', b'abc', b'/a') +
                          chunked_post(b'Transfer-Encoding: chunked\r\n', b'2\r\nde\r\n0\r\n\r\n') +
                          post(b'Content-Length: 0\r\n', b'', b'/c') + SMUGGLED),
    ('pipe_expect', b'PUT /e HTTP/1.1\r\n' + H + b'Expect: 100-continue\r\nContent-Length: 4\r\n\r\n'
                    b'data' + SMUGGLED),
    ('pipe_crlf_between', b'GET /1 HTTP/1.1\r\n' + H + b'\r\n\r\n\r\n' + SMUGGLED),
]


def corpus_payloads():
    out = []
    for name in sorted(os.listdir(CORPUS)):
        with open(os.path.join(CORPUS, name), 'rb') as f:
            data = f.read()
        if len(data) > CONF_BYTES:
            out.append(('seed:' + name, data[CONF_BYTES:]))
    return out


# --------------------------------------------------------------------------------------------
# Client side: run every payload at once on its own connection and source address
# --------------------------------------------------------------------------------------------

LOCAL_OK = set(range(400, 500)) | {501, 505}


class Run:
    def __init__(self, name, data, ip):
        self.name = name
        self.data = data
        self.ip = ip
        self.ref, self.stop, self.why = reference(data)
        self.sock = None
        self.sent = 0
        self.got = bytearray()
        self.closed = False
        self.send_failed = False

    def origin_responses(self):
        """Complete responses in what arrived so far: (list of (status, id), rest bytes)."""
        out = []
        c = _BufClient(bytes(self.got))
        while c.buf:
            try:
                r = c.read_response('GET')
            except h.ProtocolError:
                break
            out.append((r.status, r.header('X-Smug-Id'), r))
        return out

    def done(self):
        if self.closed:
            return True
        if self.sent < len(self.data):
            return False
        n = sum(1 for _, rid, _ in self.origin_responses() if rid)
        return self.stop in ('end', 'incomplete') and n >= len(self.ref)


class _BufClient(h.Client):
    """harness's response parser over bytes already received."""

    def __init__(self, data):
        self.sock = None
        self.buf = bytearray(data)
        self.eof = True
        self.reset = False


class SmugglingTest(h.ProxyTestCase):
    WATCHDOG = 120.0

    def setUp(self):
        super().setUp()
        self.raw = RawOrigin()
        self.addCleanup(self.raw.close)
        self.g1 = self.origin('green', 'g1')
        # client_header 3s: a payload the proxy neither answers nor refuses (it waits for the
        # rest of a head) ends with a 408 instead of holding the run to its deadline.
        self.p = self.proxy(self.config([('raw', self.raw.address)], [self.g1], workers=2,
                                        timeouts={'client_header': '3s'}))

    def run_all(self, payloads, one_byte, net):
        runs = [Run(name, data, '127.%d.%d.%d' % (net, i // 200, i % 200 + 1))
                for i, (name, data) in enumerate(payloads)]
        for r in runs:
            r.sock = socket.create_connection((h.LOOPBACK, self.p.port), timeout=5,
                                              source_address=(r.ip, 0))
            r.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            r.sock.setblocking(False)
        step = 1 if one_byte else 1 << 20
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pending = [r for r in runs if not r.closed and r.sent < len(r.data)]
            if not pending:
                # everything sent: what is still open gets 5 s more to be answered or closed
                deadline = min(deadline, time.monotonic() + 5)
            for r in pending:
                try:
                    n = r.sock.send(r.data[r.sent:r.sent + step])
                    r.sent += n
                except BlockingIOError:
                    pass
                except OSError:
                    r.send_failed = True
                    r.sent = len(r.data)
            self._read(runs, 0 if pending else 0.05)
            if not pending and all(r.done() for r in runs):
                break
        # a last look at what is already there, then close every client
        self._read(runs, 0)
        for r in runs:
            r.sock.close()
        return runs

    def _read(self, runs, timeout):
        socks = {r.sock: r for r in runs if not r.closed}
        if not socks:
            return
        rd, _, _ = select.select(list(socks), [], [], timeout)
        for s in rd:
            r = socks[s]
            try:
                while True:
                    d = s.recv(65536)
                    if not d:
                        r.closed = True
                        break
                    r.got += d
            except BlockingIOError:
                pass
            except OSError:
                r.closed = True

    def settle(self):
        """Waits until the origin stops receiving and every origin connection that holds part
        of a request has been closed by the proxy (deadline 5 s)."""
        deadline = time.monotonic() + 5
        last = None
        while True:
            total, conns = self.raw.snapshot()
            open_tails = [c for c in conns if c[2] > 0 and not c[1] and not c[3]]
            if not open_tails and total == last:
                return []
            if time.monotonic() > deadline:
                return open_tails
            last = total
            time.sleep(0.1)

    def check(self, runs, mode):
        problems = []
        notes = []
        for r in runs:
            what = '%s [%s]' % (r.name, mode)
            resp = r.origin_responses()
            parsed = sum(len(x[2].raw_head) + len(x[2].body) for x in resp)
            if parsed != len(r.got):
                problems.append('%s: the client got bytes that are not a sequence of responses: '
                                '%r' % (what, bytes(r.got[parsed:parsed + 200])))
            ids = [rid for _, rid, _ in resp if rid]
            local = [(st, x) for st, rid, x in resp if not rid]
            if local and resp[-1][1] is not None:
                problems.append('%s: an origin response after a local %d' % (what, local[0][0]))
            if len(local) > 1:
                problems.append('%s: %d local responses' % (what, len(local)))
            if local:
                st, x = local[-1]
                if st not in LOCAL_OK:
                    problems.append('%s: local response %d (a 4xx refusal expected)\n%s' % (
                        what, st, x.summary(100)))
                if not r.closed:
                    problems.append('%s: connection left open after a local %d' % (what, st))
            orig = self.raw.requests_from(r.ip)
            if [o.rid for o in orig] != ids:
                problems.append('%s: the origin received %s, the client got answers to %s' % (
                    what, [o.rid for o in orig], ids))
            for k, o in enumerate(orig):
                if k >= len(r.ref):
                    problems.append('%s: request %d forwarded (%r), but a strict parser frames '
                                    'no request there (%s: %s)' % (what, k, o, r.stop, r.why))
                    continue
                ref = r.ref[k]
                if (o.method, o.target, o.body) != (ref.method, ref.target, ref.body):
                    problems.append('%s: request %d reached the origin as %r; the client sent %r'
                                    % (what, k, o, ref))
            if not local and not r.closed and r.sent >= len(r.data) and not r.send_failed:
                if len(orig) != len(r.ref) and r.stop != 'bad':
                    problems.append('%s: connection open, %d of %d requests answered (%s)' % (
                        what, len(orig), len(r.ref), r.stop))
                if r.stop == 'bad' and len(orig) == len(r.ref):
                    notes.append('%s: held open without an answer (%s)' % (r.name, r.why))
            if (local or r.closed) and len(orig) < len(r.ref) and r.stop != 'bad':
                notes.append('%s: refused a request a strict parser accepts (%s)' % (
                    r.name, local[-1][0] if local else 'closed'))
        return problems, notes

    def run_mode(self, one_byte, net):
        payloads = corpus_payloads() + EXTRA
        self.assertGreater(len(payloads), 60)
        runs = self.run_all(payloads, one_byte, net)
        mode = '1-byte writes' if one_byte else 'at once'
        tails = self.settle()
        problems, notes = self.check(runs, mode)
        _, conns = self.raw.snapshot()
        for cid, eof, tail, violation in conns:
            if violation:
                problems.append('origin connection %d: %s' % (cid, violation))
        for cid, eof, tail, violation in tails:
            problems.append('origin connection %d holds %d bytes of an incomplete request and '
                            'is still open: they would be read as the start of the next request '
                            'on it' % (cid, tail))
        self.assertTrue(self.p.alive(), 'proxy died')
        answered = sum(len(self.raw.requests_from(r.ip)) for r in runs)
        refused = sum(1 for r in runs if r.closed)
        sys.stdout.write(' [%d payloads, %d requests forwarded, %d connections closed by the '
                         'proxy, %d notes] ' % (len(runs), answered, refused, len(notes)))
        if os.environ.get('SMUGGLING_VERBOSE'):
            sys.stdout.write('\n' + '\n'.join(notes) + '\n')
        self.assertEqual(problems, [], '\n'.join(problems[:30]))
        self.assertGreater(answered, 40, 'too few requests forwarded: the origin is not reached')
        self.assertStatus(h.one_request(self.p.port, 'GET', '/after'), 200)

    def test_payloads_at_once(self):
        self.run_mode(False, 10)

    def test_payloads_one_byte_writes(self):
        self.run_mode(True, 11)

    def test_reference_parser_sane(self):
        # The reference framing the checks rely on: a few known answers.
        ref, stop, _ = reference(post(b'Content-Length: 5\r\n', b'hello') + SMUGGLED)
        self.assertEqual((len(ref), stop, ref[0].body, ref[1].target), (2, 'end', b'hello',
                                                                        b'/smuggled'))
        self.assertEqual(reference(dict(EXTRA)['cl_te_smuggle'])[1], 'bad')
        self.assertEqual(reference(dict(EXTRA)['te_cl_smuggle'])[1], 'bad')
        ref, stop, _ = reference(chunked_post(b'Transfer-Encoding: chunked\r\n',
                                              b'5;a="x"\r\nhello\r\n1\r\n!\r\n0\r\nT: 1\r\n\r\n'))
        self.assertEqual((ref[0].body, stop), (b'hello!', 'end'))
        self.assertEqual(reference(b'GET / HTTP/1.1\nHost: a\n\n')[1], 'bad')
        self.assertEqual(reference(b'GET / HTTP/1.0\r\n\r\n' + SMUGGLED)[1], 'close')
        self.assertEqual(reference(post(b'Content-Length: 9\r\n', b'hel'))[1], 'incomplete')


# --------------------------------------------------------------------------------------------
# Response side
# --------------------------------------------------------------------------------------------

INNER = b'HTTP/1.1 200 OK\r\nX-Smuggled: yes\r\nContent-Length: 0\r\n\r\n'
O = b'HTTP/1.1 200 OK\r\n'

SHAPES = {
    'cl_te': O + b'Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n' + INNER,
    'te_cl': O + b'Transfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n' % (len(INNER) + 5) +
             b'0\r\n\r\n' + INNER,
    'two_cl': O + b'Content-Length: 0\r\nContent-Length: %d\r\n\r\n' % len(INNER) + INNER,
    'two_cl_same': O + b'Content-Length: 2\r\nContent-Length: 2\r\n\r\nok' + INNER,
    'cl_list': O + b'Content-Length: 0, %d\r\n\r\n' % len(INNER) + INNER,
    'cl_plus': O + b'Content-Length: +2\r\n\r\nok' + INNER,
    'chunk_size_bad': O + b'Transfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n' + INNER,
    'chunk_size_hex_prefix': O + b'Transfer-Encoding: chunked\r\n\r\n0x2\r\nok\r\n0\r\n\r\n' + INNER,
    'chunk_size_negative': O + b'Transfer-Encoding: chunked\r\n\r\n-2\r\nok\r\n0\r\n\r\n' + INNER,
    'chunk_size_overflow': O + b'Transfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nok\r\n'
                               b'0\r\n\r\n' + INNER,
    'chunk_data_too_long': O + b'Transfer-Encoding: chunked\r\n\r\n1\r\nok\r\n0\r\n\r\n' + INNER,
    'chunk_bare_lf': O + b'Transfer-Encoding: chunked\r\n\r\n2\nok\n0\n\n' + INNER,
    'bare_lf_head': b'HTTP/1.1 200 OK\nContent-Length: 0\n\n' + INNER,
    'bare_lf_after_cl': O + b'Content-Length: 0\n\r\n' + INNER,
    'bare_lf_ends_head': O + b'Content-Length: 0\r\n\n' + INNER,
    'bare_lf_ends_chunked_head': O + b'Transfer-Encoding: chunked\r\n\n0\r\n\r\n' + INNER,
    'bare_cr_value': O + b'X-A: a\rContent-Length: 0\r\nContent-Length: %d\r\n\r\n' % len(INNER)
                     + INNER,
    'obs_fold_cl': O + b'Content-Length: 0\r\n %d\r\n\r\n' % len(INNER) + INNER,
    'te_xchunked_cl': O + b'Transfer-Encoding: xchunked\r\nContent-Length: 0\r\n\r\n' + INNER,
    'te_space_colon': O + b'Transfer-Encoding : chunked\r\nContent-Length: 0\r\n\r\n' + INNER,
    'extra_bytes_after_cl': O + b'Content-Length: 2\r\n\r\nok' + INNER,
    'extra_bytes_after_chunked': O + b'Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n' +
                                 INNER,
    'no_content_with_body': b'HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n' % len(INNER)
                            + INNER,
    'not_modified_with_body': b'HTTP/1.1 304 Not Modified\r\nContent-Length: %d\r\n\r\n' %
                              len(INNER) + INNER,
    'head_with_body': O + b'Content-Length: %d\r\n\r\n' % len(INNER) + INNER,
    'continue_with_length': b'HTTP/1.1 100 Continue\r\nContent-Length: 2\r\n\r\n' + O +
                            b'Content-Length: 2\r\n\r\nok' + INNER,
    'switching_without_upgrade': b'HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n'
                                 b'Connection: Upgrade\r\n\r\n' + INNER,
    'nul_in_header': O + b'X-A: a\x00\r\nContent-Length: 0\r\n\r\n' + INNER,
    'http09': b'hello' + INNER,
}


class ShapeOrigin:
    """Answers `/shape/NAME` with the raw SHAPES[NAME] bytes (then keeps the connection), and
    any other request with a tagged 200 naming its target, so the client can tell whose answer
    it got."""

    def __init__(self):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind((h.LOOPBACK, 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.lock = threading.Lock()
        self.answered = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                s, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        s.settimeout(30)
        buf = b''
        try:
            while True:
                head, buf = h.recv_head(s, buf)
                if head is None:
                    return
                line = head.split(b'\r\n', 1)[0]
                method, target = line.split(b' ')[:2]
                body, buf = h.recv_body(s, head, buf)
                if body is None:
                    return
                with self.lock:
                    self.answered.append(target)
                if target.startswith(b'/shape/'):
                    s.sendall(SHAPES[target[7:].decode()])
                else:
                    body = b'' if method == b'HEAD' else b'ok'
                    s.sendall(b'HTTP/1.1 200 OK\r\nX-Echo-Target: %s\r\nContent-Length: 2\r\n\r\n'
                              % target + body)
        except OSError:
            pass
        finally:
            s.close()

    def close(self):
        self.ls.close()


class ResponseSplittingTest(h.ProxyTestCase):

    def setUp(self):
        super().setUp()
        self.so = ShapeOrigin()
        self.addCleanup(self.so.close)
        self.g1 = self.origin('green', 'g1')
        self.p = self.proxy(self.config([('shape', '127.0.0.1:%d' % self.so.port)], [self.g1],
                                        workers=1))

    def read_all(self, c, methods):
        """Up to len(methods) responses on c, stopping at a close: [Response]; then whatever
        else arrives within 0.2 s is an extra response (that the test reports)."""
        out = []
        for m in methods:
            try:
                r = c.read_response(m)
            except (h.ConnClosed, socket.timeout):
                break
            out.append(r)
            if r.wants_close():
                break
        if not c.eof and c.readable_within(0.2) and not c.eof:
            try:
                c._fill()
            except OSError:
                pass
        if c.buf:
            self.fail('bytes after the last expected response: %r' % bytes(c.buf[:300]))
        return out

    def check_shape(self, name, pipelined):
        method_a = 'HEAD' if name == 'head_with_body' else 'GET'
        nonce = '/after-%s-%d' % (name, pipelined)
        req_a = h.build_request(method_a, '/shape/' + name)
        req_b = h.build_request('GET', nonce)
        got = []
        with h.Client(self.p.port, timeout=3) as c:
            if pipelined:
                c.send(req_a + req_b)
                got = self.read_all(c, [method_a, 'GET'])
            else:
                c.send(req_a)
                got = self.read_all(c, [method_a])
                if got and not got[0].wants_close():
                    c.send(req_b)
                    got += self.read_all(c, ['GET'])
        for r in got:
            self.assertFalse(r.has('X-Smuggled'), '%s: the body of a bad response reached the '
                             'client as a response of its own:\n%s' % (name, r.summary()))
            self.assertNotIn(INNER, r.raw_head, name)
        self.assertLessEqual(len(got), 2, '%s: %d responses to 2 requests' % (name, len(got)))
        if len(got) == 2:
            self.assertEqual(got[1].header('X-Echo-Target'), nonce, '%s: the second response is '
                             'not the answer to the second request:\n%s' % (name, got[1].summary()))
        if got and got[0].status == 200 and got[0].header('X-Echo-Target') is not None:
            self.fail('%s: the first request got the answer of another one' % name)
        # whatever happened, a new connection gets a clean answer
        r = h.one_request(self.p.port, 'GET', nonce + '-fresh')
        self.assertStatus(r, 200, 'after shape %s' % name)
        self.assertEqual(r.header('X-Echo-Target'), nonce + '-fresh')
        return got

    def test_response_shapes(self):
        outcome = {}
        for name in SHAPES:
            for pipelined in (False, True):
                got = self.check_shape(name, pipelined)
                outcome.setdefault(name, []).append(got[0].status if got else 'closed')
        self.assertTrue(self.p.alive())
        if os.environ.get('SMUGGLING_VERBOSE'):
            sys.stdout.write('\n%r\n' % outcome)
        bad_502 = [n for n in ('cl_te', 'te_cl', 'two_cl', 'chunk_size_bad', 'chunk_bare_lf',
                               'bare_lf_head', 'bare_lf_ends_head', 'bare_lf_ends_chunked_head',
                               'obs_fold_cl', 'te_xchunked_cl')
                   if any(s not in (502, 'closed') for s in outcome[n])]
        self.assertEqual(bad_502, [], 'ambiguous upstream framing passed on: %r' % {
            n: outcome[n] for n in bad_502})


if __name__ == '__main__':
    h.main()
