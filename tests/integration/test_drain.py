#!/usr/bin/env python3
"""Draining a pool after it lost its share (DESIGN §6): tunnels stay on the pool they were
opened on, are counted per pool in status, and drain.tunnel_timeout closes the ones still open
on a pool that has had no share for that long (0 = never)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def open_ws(port):
    c = h.Client(port)
    c.send(h.build_request('GET', '/ws', [('Upgrade', 'websocket'), ('Connection', 'Upgrade'),
                                          ('Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='),
                                          ('Sec-WebSocket-Version', '13')]))
    return c, c.read_head()


class TunnelDrainTest(h.ProxyTestCase):

    def start(self, tunnel_timeout):
        self.b1 = self.origin('blue', 'b1')
        self.g1 = self.origin('green', 'g1')
        cfg = self.config([self.b1], [self.g1],
                          extra={'drain': {'tunnel_timeout': tunnel_timeout}})
        self.p = self.proxy(cfg)
        self.ctl = h.ctl_for(self.p)

    def pool_tunnels(self, pool):
        return self.ctl.status()['pools'][pool]['tunnels']

    def test_tunnels_of_a_pool_without_share_are_closed(self):
        self.start('1s')
        self.assertTrue(self.ctl.weights(100).ok)      # every new request to green
        c, r = open_ws(self.p.port)
        with c:
            self.assertStatus(r, 101)
            self.assertEqual(r.header('X-Origin-Pool'), 'green')
            c.send(b'ping')
            self.assertEqual(c.read_exact(4), b'ping')
            self.assertTrue(h.wait_until(lambda: self.pool_tunnels('green') == 1, 3),
                            'status does not count the tunnel on green')
            t0 = time.monotonic()
            self.assertTrue(self.ctl.rollback('drain test').ok)   # green has no share now
            # The tunnel stays on green (it is not moved) until the timeout closes it.
            c.send(b'still')
            self.assertEqual(c.read_exact(5), b'still')
            self.assertTrue(c.wait_closed(5.0), 'tunnel still open 5 s after green lost its share')
            dt = time.monotonic() - t0
            self.assertGreaterEqual(dt, 0.9, 'closed before drain.tunnel_timeout (%.2fs)' % dt)
            self.assertLessEqual(dt, 3.5, 'closed %.2fs after the share went (timeout 1s)' % dt)
        self.assertTrue(h.wait_until(lambda: self.pool_tunnels('green') == 0, 3))
        evs = self.ctl.events(since=0).data['events']
        self.assertIn(('drain', 'green'), [(e['type'], e.get('pool')) for e in evs])

    def test_zero_means_never(self):
        self.start('0')
        self.assertTrue(self.ctl.weights(100).ok)
        c, r = open_ws(self.p.port)
        with c:
            self.assertStatus(r, 101)
            self.assertTrue(self.ctl.rollback('drain test').ok)
            time.sleep(2.5)
            c.send(b'alive')
            self.assertEqual(c.read_exact(5), b'alive', 'tunnel closed with tunnel_timeout 0')


if __name__ == '__main__':
    h.main()
