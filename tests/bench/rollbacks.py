#!/usr/bin/env python3
"""Rollbacks over switchyard's control socket, timed (tests/bench/targets.sh).

usage: rollbacks.py SOCKET [--count N]

N times (1000): `PUT /v1/weights {"standby_percent": 50}`, then `POST /v1/rollback {}`, over one
keep-alive HTTP/1.1 connection to the control API's unix socket (control/API.md). Each answer's
`data.ack_us` (the time from publishing the new routing word to the last worker's
acknowledgement) is collected, and the client's own round-trip time of each request. Prints one
JSON object:

    {"rollbacks": N, "failed": N,
     "rollback_ack_us": {"n", "p50", "p99", "max"}, "weights_ack_us": {...},
     "rollback_rtt_us": {...}, "seconds": S}

Percentiles are nearest-rank. Exits 1 when any request failed (status not 200, `ok` false, or no
`ack_us`).
"""

import argparse
import http.client
import json
import math
import socket
import sys
import time


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=10.0):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


def summary(values):
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    v = sorted(values)

    def rank(p):
        return v[max(0, math.ceil(p * len(v)) - 1)]

    return {"n": len(v), "p50": rank(0.50), "p99": rank(0.99), "max": v[-1]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("socket")
    ap.add_argument("--count", type=int, default=1000)
    args = ap.parse_args()

    conn = UnixHTTPConnection(args.socket)
    acks = {"weights": [], "rollback": []}
    rtt = []
    failed = 0
    hdrs = {"Content-Type": "application/json"}

    def call(method, path, body):
        nonlocal conn
        payload = json.dumps(body).encode()
        for attempt in (1, 2):
            try:
                t0 = time.perf_counter_ns()
                conn.request(method, path, body=payload, headers=hdrs)
                resp = conn.getresponse()
                raw = resp.read()
                t1 = time.perf_counter_ns()
                return resp.status, raw, (t1 - t0) // 1000
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # the server closed the kept-alive connection: one retry on a new one
                conn.close()
                conn = UnixHTTPConnection(args.socket)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    t_start = time.monotonic()
    for _ in range(args.count):
        for kind, method, path, body in (
            ("weights", "PUT", "/v1/weights", {"standby_percent": 50}),
            ("rollback", "POST", "/v1/rollback", {}),
        ):
            try:
                status, raw, us = call(method, path, body)
                doc = json.loads(raw)
                ack = doc.get("data", {}).get("ack_us") if doc.get("ok") else None
            except (OSError, ValueError, http.client.HTTPException) as e:
                print(f"rollbacks: {method} {path}: {e}", file=sys.stderr)
                status, ack, us = 0, None, None
            if status != 200 or not isinstance(ack, (int, float)):
                failed += 1
                if failed <= 3:
                    print(f"rollbacks: {method} {path}: status {status}, no ack_us",
                          file=sys.stderr)
                continue
            acks[kind].append(ack)
            if kind == "rollback":
                rtt.append(us)
    conn.close()
    out = {
        "rollbacks": len(acks["rollback"]),
        "failed": failed,
        "rollback_ack_us": summary(acks["rollback"]),
        "weights_ack_us": summary(acks["weights"]),
        "rollback_rtt_us": summary(rtt),
        "seconds": round(time.monotonic() - t_start, 1),
    }
    print(json.dumps(out))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
