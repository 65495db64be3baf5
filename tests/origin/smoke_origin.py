#!/usr/bin/env python3
"""Smoke test of the test origin (tests/origin/README.md) over raw sockets.

usage: smoke_origin.py /path/to/origin
Prints TAP; exits non-zero on the first failure.
"""
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import warnings

ORIGIN = sys.argv[1]
TIMEOUT = 5.0
OPENSSL = shutil.which("openssl")
checks = 0
PREFIX = ""


def ok(cond, what):
    global checks
    checks += 1
    what = PREFIX + what
    if not cond:
        print(f"not ok {checks} - {what}")
        raise SystemExit(1)
    print(f"ok {checks} - {what}")


def fnv1a(data):
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def pattern(n):
    return bytes(ord("a") + i % 26 for i in range(n))


class Conn:
    """A client socket with a read buffer and a small HTTP/1.1 response reader. With tls (an
    ssl.SSLContext) the bytes go through TLS over memory BIOs, so that the client can send
    close_notify and then half-close the socket like a plain client's shutdown(SHUT_WR)."""

    def __init__(self, port, tls=None, sni=None):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buf = b""
        self.tls = None
        if tls is not None:
            self.bin, self.bout = ssl.MemoryBIO(), ssl.MemoryBIO()
            self.tls = tls.wrap_bio(self.bin, self.bout, server_hostname=sni)
            while True:
                try:
                    self.tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._flush()
                    if not self._feed():
                        raise EOFError("EOF during the TLS handshake")
            self._flush()

    def _flush(self):
        data = self.bout.read()
        if data:
            self.s.sendall(data)

    def _feed(self):
        d = self.s.recv(65536)
        if d:
            self.bin.write(d)
        else:
            self.bin.write_eof()
        return d

    def send(self, data):
        if self.tls is None:
            self.s.sendall(data)
            return
        view = memoryview(data)
        while view:
            n = self.tls.write(view[:65536])
            view = view[n:]
            self._flush()

    def recv(self):
        """Some bytes, or b"" at EOF (a TLS close with or without close_notify, or a reset)."""
        if self.tls is None:
            try:
                return self.s.recv(65536)
            except ConnectionResetError:
                return b""
        while True:
            try:
                return self.tls.read(65536)
            except ssl.SSLWantReadError:
                try:
                    self._feed()
                except ConnectionResetError:
                    return b""
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""

    def shutdown_write(self):
        """Our side is done: close_notify (over TLS), then FIN."""
        if self.tls is not None:
            try:
                self.tls.unwrap()
            except ssl.SSLWantReadError:
                pass
            self._flush()
        self.s.shutdown(socket.SHUT_WR)

    def _fill(self):
        d = self.recv()
        if not d:
            raise EOFError
        self.buf += d

    def read_until(self, sep):
        while sep not in self.buf:
            self._fill()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_n(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_eof(self):
        try:
            while True:
                self._fill()
        except EOFError:
            pass
        out, self.buf = self.buf, b""
        return out

    def at_eof(self):
        if self.buf:
            return False
        return self.recv() == b""

    def silent_for(self, seconds):
        """True when nothing arrives (and no EOF) within seconds."""
        if self.buf:
            return False
        self.s.settimeout(seconds)
        try:
            return self.recv() is None
        except socket.timeout:
            return True
        finally:
            self.s.settimeout(TIMEOUT)

    def response(self, head_request=False):
        """Returns (status, [(name, value)], body); body None when close-delimited unread."""
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split(" ")[1])
        hdrs = [tuple(x.split(": ", 1)) for x in lines[1:] if x]
        h = {k.lower(): v for k, v in hdrs}
        if head_request or status < 200 or status in (204, 304):
            return status, hdrs, b""
        if "content-length" in h:
            return status, hdrs, self.read_n(int(h["content-length"]))
        if h.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int(self.read_until(b"\r\n")[:-2], 16)
                if size == 0:
                    self.read_until(b"\r\n")
                    return status, hdrs, body
                body += self.read_n(size)
                if self.read_n(2) != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
        return status, hdrs, None

    def close(self):
        self.s.close()


def hget(hdrs, name):
    return [v for k, v in hdrs if k.lower() == name.lower()]


def req(path, method="GET", extra="", body=b"", version="1.1"):
    return (f"{method} {path} HTTP/{version}\r\nHost: t\r\n{extra}\r\n").encode() + body


def stats(port, tls=None):
    c = Conn(port, tls)
    c.send(req("/_origin/stats", extra="Connection: close\r\n"))
    _, _, body = c.response()
    c.close()
    return json.loads(body)


def start(args):
    proc = subprocess.Popen([ORIGIN, "--listen", "127.0.0.1:0", "--pool", "blue", "--name", "b1",
                             "--quiet"] + args, stdout=subprocess.PIPE)
    line = proc.stdout.readline().decode()
    ok(line.startswith("origin listening on 127.0.0.1:"), "prints the listening line")
    return proc, int(line.strip().rsplit(":", 1)[1])


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=5)
    ok(rc == 0, "SIGTERM exits 0")


def make_cert(d):
    """A self-signed certificate for origin.test and 127.0.0.1; (cert, key) paths."""
    crt, key = os.path.join(d, "origin.crt"), os.path.join(d, "origin.key")
    subprocess.run([OPENSSL, "req", "-x509", "-nodes", "-days", "2", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:P-256", "-subj", "/CN=origin.test",
                    "-addext", "subjectAltName=DNS:origin.test,IP:127.0.0.1",
                    "-keyout", key, "-out", crt], check=True, capture_output=True)
    return crt, key


def tls_only(port, ctx, crt):
    """What only TLS has: X-Origin-SNI, the handshake counts, plain HTTP refused, TLS 1.2+."""
    c = Conn(port, ctx, "origin.test")
    c.send(req("/"))
    st, hdrs, _ = c.response()
    ok(hget(hdrs, "X-Origin-SNI") == ["origin.test"], "X-Origin-SNI names the SNI sent")
    c.send(req("/ws", extra="Upgrade: websocket\r\nConnection: Upgrade\r\n"))
    head = c.read_until(b"\r\n\r\n")
    ok(b"\r\nX-Origin-SNI: origin.test\r\n" in head, "X-Origin-SNI on the 101 too")
    c.close()
    c = Conn(port, ctx, None)
    c.send(req("/echo"))
    st, hdrs, _ = c.response()
    ok(hget(hdrs, "X-Origin-SNI") == ["-"], "X-Origin-SNI: - without SNI")
    c.close()
    s = stats(port, ctx)
    ok(s["sni"].get("origin.test", 0) >= 2 and s["sni"].get("-", 0) >= 2
       and s["tls_handshakes"] == sum(s["sni"].values()), "stats count handshakes by SNI")
    c = Conn(port)
    c.send(req("/"))
    ok(not c.read_to_eof().startswith(b"HTTP/1.1 200"), "plain HTTP to the TLS port is refused")
    c.close()
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(crt)
    why = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1_1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("ALL:@SECLEVEL=0")
        Conn(port, old, "origin.test").close()
        why = "accepted"
    except (ValueError, ssl.SSLError, EOFError, ConnectionResetError) as e:
        why = str(e) or type(e).__name__
    if "NO_PROTOCOLS_AVAILABLE" in why or "SECLEVEL" in why:
        ok(True, "TLS 1.1 refused # SKIP this Python cannot offer TLS 1.1")
    else:
        ok(why != "accepted", "TLS 1.1 refused (%s)" % why)
    s2 = stats(port, ctx)
    ok(s2["tls_handshakes"] == s["tls_handshakes"] + 1, "failed handshakes are not counted")

    # 32 slots of names: 31 distinct names, then "(other)" for every new one
    noverify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    noverify.check_hostname = False
    noverify.verify_mode = ssl.CERT_NONE
    before = len(s2["sni"])
    for i in range(40):
        Conn(port, noverify, "n%d.test" % i).close()
    Conn(port, noverify, "n0.test").close()
    s3 = stats(port, ctx)
    ok(len(s3["sni"]) == 32 and s3["sni"]["(other)"] == 40 - (31 - before)
       and s3["sni"]["n0.test"] == 2, "SNI counts bounded, the rest under (other)")


def main():
    global PREFIX
    proc, port = start([])
    try:
        run(port)
        c = Conn(port)
        c.send(req("/"))
        ok(not hget(c.response()[1], "X-Origin-SNI"), "no X-Origin-SNI over plain HTTP")
        c.close()
        ok("tls_handshakes" not in stats(port), "no TLS counts in plain stats")
    finally:
        stop(proc)

    p = subprocess.run([ORIGIN, "--tls-cert", "/nonexistent.crt", "--tls-key", "/x.key"],
                       capture_output=True)
    ok(p.returncode == 1 and b"/nonexistent.crt" in p.stderr, "a missing certificate: exit 1")
    p = subprocess.run([ORIGIN, "--tls-cert", "/nonexistent.crt"], capture_output=True)
    ok(p.returncode == 2, "--tls-cert without --tls-key: exit 2")
    if OPENSSL is None:
        print("# no openssl CLI: TLS checks skipped")
        print(f"1..{checks}")
        return
    d = tempfile.mkdtemp(prefix="origin-smoke-")
    try:
        crt, key = make_cert(d)
        PREFIX = "tls: "
        proc, port = start(["--tls-cert", crt, "--tls-key", key])
        try:
            ctx = ssl.create_default_context(cafile=crt)
            run(port, ctx, "origin.test")
            tls_only(port, ctx, crt)
        finally:
            stop(proc)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print(f"1..{checks}")


def run(port, tls=None, sni=None):
    """The whole contract, over plain TCP or (tls) over TLS."""
    # keep-alive reuse
    before = stats(port, tls)["connections_accepted"]
    c = Conn(port, tls, sni)
    for _ in range(3):
        c.send(req("/"))
        st, hdrs, body = c.response()
        ok(st == 200 and body == b"hello from blue/b1\n", "hello body")
        ok(hget(hdrs, "X-Origin-Pool") == ["blue"] and hget(hdrs, "X-Origin-Server") == ["b1"],
           "origin headers")
    ok(stats(port, tls)["connections_accepted"] == before + 2, "keep-alive reuses the connection")

    # pipelining, answered in order, including a body and a chunked response
    c.send(req("/status/201") + req("/echo", "POST", "Content-Length: 3\r\n", b"abc")
           + req("/bytes/30?chunked=1&chunk=7") + req("/status/204") + req("/"))
    st, _, body = c.response()
    ok(st == 201 and body == b"status 201 from blue/b1\n", "pipelined 1: status 201")
    st, _, body = c.response()
    j = json.loads(body)
    ok(st == 200 and j["body_bytes"] == 3 and j["body_fnv1a"] == fnv1a(b"abc"),
       "pipelined 2: echo")
    st, hdrs, body = c.response()
    ok(st == 200 and body == pattern(30) and hget(hdrs, "Transfer-Encoding") == ["chunked"],
       "pipelined 3: chunked bytes")
    st, hdrs, body = c.response()
    ok(st == 204 and not hget(hdrs, "Content-Length"), "pipelined 4: 204 without length")
    st, _, body = c.response()
    ok(st == 200 and body.startswith(b"hello"), "pipelined 5: hello")

    # chunked upload (with trailer) to /echo
    data = os.urandom(100000)
    chunks = b"".join(b"%x\r\n" % len(data[i:i + 7000]) + data[i:i + 7000] + b"\r\n"
                      for i in range(0, len(data), 7000))
    c.send(req("/echo?x=1", "PUT", "Transfer-Encoding: chunked\r\nX-Dup: 1\r\nX-Dup: 2\r\n",
               chunks + b"0\r\nX-Trailer: t\r\n\r\n"))
    st, hdrs, body = c.response()
    j = json.loads(body)
    ok(j["body_bytes"] == len(data) and j["body_fnv1a"] == fnv1a(data), "chunked upload counted")
    ok(j["method"] == "PUT" and j["target"] == "/echo?x=1" and j["version"] == "1.1",
       "echo method/target/version")
    ok(["X-Dup", "1"] in j["headers"] and ["X-Dup", "2"] in j["headers"]
       and not any(h[0] == "X-Trailer" for h in j["headers"]), "echo headers, no trailers")
    ok(hget(hdrs, "Content-Type") == ["application/json"], "echo is JSON")

    # HEAD keeps Content-Length, sends no body
    c.send(req("/bytes/1000", "HEAD") + req("/"))
    st, hdrs, _ = c.response(head_request=True)
    ok(st == 200 and hget(hdrs, "Content-Length") == ["1000"], "HEAD length")
    st, _, body = c.response()
    ok(body.startswith(b"hello"), "HEAD sends no body")

    # query parameters: hdr=
    c.send(req("/?hdr=X-Foo:%20bar&hdr=Connection:X-Foo"))
    st, hdrs, _ = c.response()
    ok(hget(hdrs, "X-Foo") == ["bar"] and hget(hdrs, "Connection") == ["X-Foo"], "hdr= headers")
    c.close()

    # 100-continue: the 100 comes before the body is sent
    c = Conn(port, tls, sni)
    c.send(req("/echo", "POST", "Content-Length: 5\r\nExpect: 100-continue\r\n"))
    ok(c.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n", "100 Continue")
    c.send(b"12345")
    st, _, body = c.response()
    ok(json.loads(body)["body_bytes"] == 5, "body after 100 Continue")
    c.close()

    # HTTP/1.0: closes unless keep-alive asked
    c = Conn(port, tls, sni)
    c.send(req("/", version="1.0", extra="Connection: keep-alive\r\n"))
    st, hdrs, _ = c.response()
    ok(hget(hdrs, "Connection") == ["keep-alive"], "HTTP/1.0 keep-alive")
    c.send(req("/", version="1.0"))
    st, hdrs, _ = c.response()
    ok(hget(hdrs, "Connection") == ["close"] and c.at_eof(), "HTTP/1.0 closes")
    c.close()

    # Connection: close on 1.1
    c = Conn(port, tls, sni)
    c.send(req("/", extra="Connection: close\r\n"))
    st, hdrs, _ = c.response()
    ok(hget(hdrs, "Connection") == ["close"] and c.at_eof(), "Connection: close honoured")
    c.close()

    # /bytes?close=1: no length, close-delimited
    c = Conn(port, tls, sni)
    c.send(req("/bytes/100000?close=1"))
    st, hdrs, body = c.response()
    ok(body is None and not hget(hdrs, "Content-Length"), "close=1 has no length")
    ok(c.read_to_eof() == pattern(100000), "close=1 body until EOF")
    c.close()

    # /bytes large with Content-Length
    c = Conn(port, tls, sni)
    c.send(req("/bytes/3000000"))
    st, hdrs, body = c.response()
    ok(len(body) == 3000000 and body[:52] == pattern(52) and body == pattern(3000000),
       "/bytes/3000000")
    c.close()

    # /close-mid, /close, /garbage
    c = Conn(port, tls, sni)
    c.send(req("/close-mid"))
    head = c.read_until(b"\r\n\r\n")
    ok(b"Content-Length: 1000" in head and len(c.read_to_eof()) == 10, "/close-mid")
    c.close()
    c = Conn(port, tls, sni)
    c.send(req("/close"))
    ok(c.read_to_eof() == b"", "/close closes without answering")
    c.close()
    c = Conn(port, tls, sni)
    c.send(req("/garbage"))
    ok(c.read_to_eof() == b"this is not http\r\n\r\n", "/garbage")
    c.close()

    # bad request → 400 and close
    c = Conn(port, tls, sni)
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Bad: a\rb\r\n\r\n")
    st, hdrs, _ = c.response()
    ok(st == 400 and c.at_eof(), "invalid request: 400 and close")
    c.close()

    # limits: 414 and 431, then close
    c = Conn(port, tls, sni)
    c.send(req("/" + "a" * 70000))
    ok(c.response()[0] == 414 and c.at_eof(), "long target: 414 and close")
    c.close()
    c = Conn(port, tls, sni)
    c.send(req("/", extra="".join(f"X-{i}: 1\r\n" for i in range(2100))))
    ok(c.response()[0] == 431 and c.at_eof(), "too many fields: 431 and close")
    c.close()

    # absolute-form target, bad query values
    c = Conn(port, tls, sni)
    c.send(req("http://example.com/echo?a=1") + req("/?delay=x") + req("/?hdr=nocolon")
           + req("/bytes/12x"))
    st, _, body = c.response()
    ok(st == 200 and json.loads(body)["target"] == "http://example.com/echo?a=1",
       "absolute-form target routed by path")
    ok([c.response()[0] for _ in range(3)] == [400, 400, 400], "bad query values: 400")
    c.close()

    # /status edge cases
    c = Conn(port, tls, sni)
    c.send(req("/status/101") + req("/status/503") + req("/status/304"))
    ok(c.response()[0] == 400, "/status/101 refused")
    st, _, body = c.response()
    ok(st == 503 and body == b"status 503 from blue/b1\n", "/status/503")
    st, hdrs, _ = c.response()
    ok(st == 304 and not hget(hdrs, "Content-Length"), "/status/304 without body")
    c.close()

    # health switch
    c = Conn(port, tls, sni)
    c.send(req("/health") + req("/_origin/health/down") + req("/health")
           + req("/_origin/health/up") + req("/health"))
    results = [c.response() for _ in range(5)]
    ok([r[0] for r in results] == [200, 200, 503, 200, 200], "health switch")
    ok(results[0][2] == b"ok" and results[2][2] == b"down", "health bodies")
    c.close()

    # delay= does not block other connections; /hold holds
    slow, fast, hold = Conn(port, tls, sni), Conn(port, tls, sni), Conn(port, tls, sni)
    hold.send(req("/hold"))
    t0 = time.monotonic()
    slow.send(req("/?delay=400"))
    fast.send(req("/"))
    fast.response()
    ok(time.monotonic() - t0 < 0.3, "delay does not block others")
    slow.response()
    ok(time.monotonic() - t0 >= 0.4, "delay=400 waits")
    ok(hold.silent_for(0.3), "/hold does not answer")
    s = stats(port, tls)
    ok(s["connections_open"] >= 4, "stats counts open connections")
    for x in (slow, fast, hold):
        x.close()

    # /ws upgrade then byte echo (bytes sent with the request included)
    c = Conn(port, tls, sni)
    c.send(req("/ws", extra="Upgrade: websocket\r\nConnection: Upgrade\r\n") + b"early")
    head = c.read_until(b"\r\n\r\n")
    ok(head.startswith(b"HTTP/1.1 101 ") and b"Upgrade: websocket\r\n" in head
       and b"Connection: Upgrade\r\n" in head, "101 Switching Protocols")
    ok(c.read_n(5) == b"early", "echoes bytes sent with the request")
    blob = os.urandom(1 << 20)
    c.send(blob)
    ok(c.read_n(len(blob)) == blob, "echoes 1 MiB")
    c.shutdown_write()
    ok(c.read_to_eof() == b"", "tunnel closes after peer EOF")
    c.close()

    # Upgrade elsewhere is ignored: a normal answer, HTTP continues
    c = Conn(port, tls, sni)
    c.send(req("/other", extra="Upgrade: websocket\r\nConnection: Upgrade\r\n") + req("/"))
    ok(c.response()[0] == 200 and c.response()[0] == 200, "upgrade ignored off /ws")
    c.close()

    # half-close after pipelined requests: all answered, then closed
    c = Conn(port, tls, sni)
    c.send(req("/?delay=50") + req("/bytes/500000") + req("/"))
    c.shutdown_write()
    ok(c.response()[0] == 200 and len(c.response()[2]) == 500000 and c.response()[0] == 200,
       "half-closed pipeline answered")
    ok(c.at_eof(), "closed after the last answer")
    c.close()


if __name__ == "__main__":
    main()
