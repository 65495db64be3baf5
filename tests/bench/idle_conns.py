#!/usr/bin/env python3
"""Open many keep-alive connections to a server and leave them idle (tests/bench/targets.sh).

usage: idle_conns.py PORT COUNT [--concurrency N] [--timeout S] [--hold S]

Opens COUNT TCP connections to 127.0.0.1:PORT, at most --concurrency (500) at a time still
connecting or waiting for their answer; on each it sends one `GET / HTTP/1.1` and reads the whole
response (status line, headers, Content-Length body). A connection whose answer is a complete
200 that does not announce `Connection: close` is kept open and idle; anything else counts as
failed and is closed. When every connection has been answered or has failed (or --timeout, 60 s,
has passed), prints one line to stdout and flushes it:

    ready open=N failed=N seconds=S

then holds the open connections, sending nothing, until SIGTERM/SIGINT or --hold (300 s)
passes, and exits 0 (1 when none could be opened). Raises its own open-file limit to the hard
limit; COUNT must fit under it.
"""

import argparse
import errno
import resource
import selectors
import signal
import socket
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: idle_conns\r\n\r\n"
MAX_HEAD = 64 * 1024


class Conn:
    __slots__ = ("sock", "buf", "state")

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.state = "connecting"


def response_complete(buf):
    """None while incomplete; True for a complete keep-alive 200; False for anything else."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False if len(buf) > MAX_HEAD else None
    lines = buf[:end].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or parts[1] != b"200":
        return False
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"connection" and b"close" in value.lower():
            return False
    if length is None:
        return False
    have = len(buf) - (end + 4)
    if have < length:
        return None
    return have == length


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("--concurrency", type=int, default=500)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--hold", type=float, default=300.0)
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if args.count + 16 > soft:
        print(f"idle_conns: {args.count} connections need an open-file limit above "
              f"{args.count + 16}; it is {soft} (raise ulimit -n)", file=sys.stderr)
        return 2

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    sel = selectors.DefaultSelector()
    idle = []
    failed = 0
    started = 0
    pending = 0
    t0 = time.monotonic()
    deadline = t0 + args.timeout

    def fail(c):
        nonlocal failed, pending
        sel.unregister(c.sock)
        c.sock.close()
        failed += 1
        pending -= 1

    while (started < args.count or pending) and not stop and time.monotonic() < deadline:
        while started < args.count and pending < args.concurrency:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            started += 1
            err = s.connect_ex(("127.0.0.1", args.port))
            if err not in (0, errno.EINPROGRESS):
                s.close()
                failed += 1
                continue
            c = Conn(s)
            sel.register(s, selectors.EVENT_WRITE, c)
            pending += 1
        for key, _ in sel.select(timeout=0.5):
            c = key.data
            if c.state == "connecting":
                if c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    fail(c)
                    continue
                try:
                    c.sock.send(REQUEST)  # 70 bytes: fits in an empty socket buffer
                except OSError:
                    fail(c)
                    continue
                c.state = "reading"
                sel.modify(c.sock, selectors.EVENT_READ, c)
                continue
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                fail(c)
                continue
            if not data:
                fail(c)
                continue
            c.buf += data
            done = response_complete(c.buf)
            if done is None:
                continue
            if not done:
                fail(c)
                continue
            sel.unregister(c.sock)
            c.buf = b""
            idle.append(c.sock)
            pending -= 1
    # whatever is still pending at the deadline counts as failed
    for key in list(sel.get_map().values()):
        fail(key.data)
    failed += args.count - started

    print(f"ready open={len(idle)} failed={failed} seconds={time.monotonic() - t0:.1f}",
          flush=True)
    end = time.monotonic() + args.hold
    while not stop and time.monotonic() < end:
        time.sleep(0.2)
    for s in idle:
        s.close()
    return 0 if idle else 1


if __name__ == "__main__":
    sys.exit(main())
