#!/usr/bin/env python3
"""Webhooks (notify.webhooks, DESIGN §6): every event is POSTed as JSON, in order; a failing
receiver is retried with backoff; a receiver that hangs never delays a rollback."""
import http.server
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class Receiver:
    """A webhook receiver on a free port: records events; can fail the first N posts or hang."""

    def __init__(self, fail_first=0, hang=False):
        self.events = []
        self.posts = 0
        self.fail_first = fail_first
        self.hang = hang
        self.release = threading.Event()
        rec = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get('Content-Length', '0'))
                body = self.rfile.read(n)
                rec.posts += 1
                if rec.hang:
                    rec.release.wait(20)
                if rec.posts <= rec.fail_first:
                    self.send_response(500)
                    self.end_headers()
                    return
                rec.events.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self):
        return 'http://127.0.0.1:%d/hook' % self.port

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class WebhookTest(h.ProxyTestCase):

    def start(self, *receivers):
        self.receivers = receivers
        self.b1 = self.origin('blue', 'b1')
        self.g1 = self.origin('green', 'g1')
        cfg = self.config([self.b1], [self.g1],
                          extra={'notify': {'webhooks': [r.url for r in receivers]}})
        self.p = self.proxy(cfg)
        self.ctl = h.ctl_for(self.p)

    def tearDown(self):
        for r in getattr(self, 'receivers', ()):
            r.stop()
        super().tearDown()

    def wait_events(self, rec, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while len(rec.events) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return rec.events

    def test_events_in_order(self):
        rec = Receiver()
        self.start(rec)
        for pct in (10, 20, 30):
            self.assertTrue(self.ctl.weights(pct).ok)
        self.assertTrue(self.ctl.rollback('hook test').ok)
        api = self.ctl.events(since=0).data['events']
        got = self.wait_events(rec, len(api))
        self.assertEqual([e['seq'] for e in got], [e['seq'] for e in api],
                         'webhook events differ from the API events')
        self.assertEqual(sorted(e['seq'] for e in got), [e['seq'] for e in got], 'out of order')
        routing = [e for e in got if e['type'] == 'routing']
        self.assertEqual([e['action'] for e in routing], ['weights'] * 3 + ['rollback'])
        self.assertEqual(routing[-1].get('reason'), 'hook test')

    def test_retried_after_failures(self):
        rec = Receiver(fail_first=2)  # backoff 0.5 s then 1 s
        self.start(rec)
        self.assertTrue(self.ctl.weights(10).ok)
        n = len(self.ctl.events(since=0).data['events'])
        got = self.wait_events(rec, n, timeout=8.0)
        self.assertEqual(len(got), n, 'events lost after two failed posts (%d posts)' % rec.posts)
        self.assertGreaterEqual(rec.posts, n + 2)

    def test_hanging_webhook_never_delays_rollback(self):
        slow = Receiver(hang=True)
        rec = Receiver()
        self.start(slow, rec)
        self.assertTrue(self.ctl.weights(50).ok)
        times = []
        for _ in range(20):
            self.assertTrue(self.ctl.weights(50).ok)
            t0 = time.monotonic()
            r = self.ctl.rollback('hang test')
            times.append(time.monotonic() - t0)
            self.assertTrue(r.ok, r.summary())
        times.sort()
        self.assertLess(times[-1], 0.5, 'rollback took %.3fs with a hanging webhook' % times[-1])
        sys.stdout.write(' [rollback with a hanging webhook: max %.1f ms] ' % (times[-1] * 1000))
        # the other receiver still gets everything
        n = len(self.ctl.events(since=0).data['events'])
        self.assertEqual(len(self.wait_events(rec, n)), n)


if __name__ == '__main__':
    h.main()
