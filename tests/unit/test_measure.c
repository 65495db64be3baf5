/* tests/unit/test_measure.c — the measurement history: synthetic counter blocks sampled on a fake
 * clock; windows, rates, error rates, percentiles, ring wrap, and server history across
 * reloads. */
#include "control/measure.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/xalloc.h"
#include "fixture.h"
#include "tap.h"

#define NW 2 /* workers */

/* req requests on block b: e5 of them answered 5xx, the rest 2xx, uf cut mid-body (counted among
 * the 2xx), each taking lat_us. */
static void
traffic(struct stats_block *b, uint64_t req, uint64_t e5, uint64_t uf, uint64_t lat_us)
{
    stats_add(&b->requests, req);
    stats_add(&b->responses[5], e5);
    stats_add(&b->responses[2], req - e5);
    stats_add(&b->upstream_failures, uf);
    for (uint64_t i = 0; i < req; i++)
        hist_record(&b->latency, lat_us);
}

static int
near(double a, double b)
{
    return fabs(a - b) <= 1e-12 * (fabs(b) > 1 ? fabs(b) : 1);
}

static int
within(uint64_t est, uint64_t exact, double rel)
{
    return fabs((double)est - (double)exact) <= rel * (double)exact;
}

/* Blue gets s + 1 requests in second s (on worker s % 2), a 5xx when s % 10 == 0 and an upstream
 * failure when s % 5 == 0; green gets 10 requests a second, no errors. */
static uint64_t
blue_req(int s)
{
    return (uint64_t)s + 1;
}

static uint64_t
blue_err(int s)
{
    return (s % 10 == 0) + (s % 5 == 0);
}

static void
test_rates(void)
{
    struct stats_board *board = stats_board_create(NW);
    struct measure *m = measure_create(board);
    struct measure_result r;
    int rc;
    uint64_t t0 = 5000000, now = 0, req10 = 0, err10 = 0, req30 = 0, err30 = 0;
    struct stats_totals *tot = xcalloc(1, sizeof(*tot));

    rc = measure_pool_window(m, POOL_BLUE, 10000, &r);
    ok(rc == -1 && r.requests == 0 && r.partial, "before the first sample: -1, zeroed, partial");
    ok(measure_latest_ms(m, &now) == -1, "no latest sample yet");
    for (int s = 0; s <= 60; s++) {
        traffic(&board->pool[POOL_BLUE][s % NW], blue_req(s), s % 10 == 0, s % 5 == 0, 1000);
        traffic(&board->pool[POOL_GREEN][s % NW], 10, 0, 0, 2000);
        measure_sample(m, t0 + 1000 * (uint64_t)s, NULL);
    }
    /* the 10 s window ends at the sample of second 60 and starts at the one of second 50: it
     * holds the traffic of seconds 51..60 */
    for (int s = 51; s <= 60; s++) {
        req10 += blue_req(s);
        err10 += blue_err(s);
    }
    for (int s = 31; s <= 60; s++) {
        req30 += blue_req(s);
        err30 += blue_err(s);
    }
    ok(measure_latest_ms(m, &now) == 0 && now == t0 + 60000, "latest sample at t0 + 60 s");
    rc = measure_pool_window(m, POOL_BLUE, 10000, &r);
    ok(rc == 0 && r.window_ms == 10000 && r.span_ms == 10000 && !r.partial,
       "10 s window: span 10 s, not partial");
    ok(r.requests == req10 && near(r.rate_per_s, (double)req10 / 10),
       "10 s window: %llu requests, %.2f/s (expected %llu)", (unsigned long long)r.requests,
       r.rate_per_s, (unsigned long long)req10);
    ok(r.errors == err10 && near(r.error_rate, (double)err10 / (double)req10),
       "10 s window: %llu errors (5xx + upstream failures), rate %.5f",
       (unsigned long long)r.errors, r.error_rate);
    ok(r.latency_count == req10 && r.p50_us == hist_bucket_mid(hist_bucket(1000)) &&
           r.p99_us == r.p50_us,
       "10 s window: latency of the window's requests only");
    rc = measure_pool_window(m, POOL_BLUE, 30000, &r);
    ok(rc == 0 && r.span_ms == 30000 && !r.partial && r.requests == req30 &&
           near(r.rate_per_s, (double)req30 / 30) && r.errors == err30 &&
           near(r.error_rate, (double)err30 / (double)req30),
       "30 s window: %llu requests, %.3f/s, %llu errors", (unsigned long long)r.requests,
       r.rate_per_s, (unsigned long long)r.errors);
    rc = measure_pool_window(m, POOL_GREEN, 30000, &r);
    ok(rc == 0 && r.requests == 300 && near(r.rate_per_s, 10.0) && r.errors == 0 &&
           r.error_rate == 0 && within(r.p99_us, 2000, 1.0 / 32),
       "green, 30 s: 300 requests, 10/s, no errors, p99 ~2 ms (%llu us)",
       (unsigned long long)r.p99_us);
    rc = measure_pool_window(m, POOL_BLUE, 0, &r);
    ok(rc == 0 && r.span_ms == 0 && r.requests == 0 && r.rate_per_s == 0 && r.error_rate == 0 &&
           r.p99_us == 0 && !r.partial,
       "0 s window: nothing, no division by zero");

    /* gauges: the latest sample's */
    stats_gauge(&board->pool[POOL_BLUE][0].inflight, 4);
    stats_gauge(&board->pool[POOL_BLUE][1].inflight, 3);
    stats_gauge(&board->pool[POOL_BLUE][1].conns, 9);
    stats_gauge(&board->pool[POOL_BLUE][0].tunnels, 2);
    rc = measure_pool_window(m, POOL_BLUE, 10000, &r);
    ok(rc == 0 && r.inflight == 0, "gauges come from the latest sample, not from live blocks");
    traffic(&board->pool[POOL_BLUE][0], 5, 0, 0, 1000);
    measure_sample(m, t0 + 61000, NULL);
    rc = measure_pool_window(m, POOL_BLUE, 10000, &r);
    ok(rc == 0 && r.inflight == 7 && r.conns == 9 && r.tunnels == 2,
       "current gauges summed over workers: inflight 7, conns 9, tunnels 2");

    /* a sample at the same time replaces the latest one */
    traffic(&board->pool[POOL_BLUE][1], 100, 100, 0, 1000);
    measure_sample(m, t0 + 61000, NULL);
    rc = measure_pool_window(m, POOL_BLUE, 1000, &r);
    ok(rc == 0 && r.span_ms == 1000 && r.requests == 105 && r.errors == 100,
       "a sample at the latest sample's time replaces it (no zero-length step)");

    measure_pool_totals(m, POOL_BLUE, tot);
    {
        uint64_t all = 105;
        for (int s = 0; s <= 60; s++)
            all += blue_req(s);
        ok(tot->requests == all && tot->latency.count == all && tot->inflight == 7,
           "pool totals since start: %llu requests, histogram, gauges",
           (unsigned long long)tot->requests);
    }
    free(tot);
    measure_destroy(&m);
    ok(m == NULL, "destroy clears the pointer");
    measure_destroy(&m);
    measure_destroy(NULL);
    stats_board_destroy(&board);
}

static void
test_short_history(void)
{
    struct stats_board *board = stats_board_create(NW);
    struct measure *m = measure_create(board);
    struct measure_result r;
    int rc;

    for (int s = 0; s < 5; s++) {
        traffic(&board->pool[POOL_GREEN][1], 20, 1, 0, 300);
        measure_sample(m, 100000 + 1000 * (uint64_t)s, NULL);
    }
    rc = measure_pool_window(m, POOL_GREEN, 30000, &r);
    ok(rc == 0 && r.partial && r.span_ms == 4000 && r.window_ms == 30000,
       "30 s asked, 4 s of history: partial, span 4 s");
    ok(r.requests == 80 && near(r.rate_per_s, 20.0) && r.errors == 4 && near(r.error_rate, 0.05),
       "...numbers over the 4 s that exist: 80 requests, 20/s, 5%% errors");
    rc = measure_pool_window(m, POOL_GREEN, 4000, &r);
    ok(rc == 0 && !r.partial && r.span_ms == 4000, "4 s asked, 4 s of history: not partial");
    rc = measure_pool_window(m, POOL_GREEN, 3999, &r);
    ok(rc == 0 && !r.partial && r.span_ms == 3000 && r.requests == 60,
       "a window never spans more than asked (3.999 s -> 3 s)");

    /* one sample only */
    measure_destroy(&m);
    m = measure_create(board);
    measure_sample(m, 7000, NULL);
    rc = measure_pool_window(m, POOL_GREEN, 10000, &r);
    ok(rc == 0 && r.partial && r.span_ms == 0 && r.requests == 0 && r.rate_per_s == 0,
       "one sample: span 0, partial, no rate (counts before it are not in any window)");
    measure_destroy(&m);
    stats_board_destroy(&board);
}

static void
test_wrap(void)
{
    struct stats_board *board = stats_board_create(NW);
    struct measure *m = measure_create(board);
    struct measure_result r;
    int rc;
    int ok_all = 1;

    for (int s = 0; s < 1000; s++) {
        traffic(&board->pool[POOL_BLUE][0], 3, 0, 0, 50);
        traffic(&board->pool[POOL_BLUE][1], (uint64_t)s % 7, 0, 0, 50);
        measure_sample(m, 1000 * (uint64_t)s, NULL);
        if (s >= 300) {
            uint64_t want = 0;
            for (int k = s - 299; k <= s; k++)
                want += 3 + (uint64_t)k % 7;
            if (measure_pool_window(m, POOL_BLUE, 300000, &r) != 0 || r.span_ms != 300000 ||
                r.partial || r.requests != want)
                ok_all = 0;
        }
    }
    ok(ok_all, "300 s window exact at every sample from 301 to 1000 (ring wrapped 3 times)");
    rc = measure_pool_window(m, POOL_BLUE, 600000, &r);
    ok(rc == 0 && r.partial && r.span_ms == 300000,
       "after the wrap, 600 s asked: 300 s is all the history there is (partial)");
    rc = measure_pool_window(m, POOL_BLUE, 10000, &r);
    ok(rc == 0 && !r.partial && r.span_ms == 10000, "after the wrap, 10 s windows still exact");
    measure_destroy(&m);
    stats_board_destroy(&board);
}

static void
test_p99_window(void)
{
    struct stats_board *board = stats_board_create(NW);
    struct measure *m = measure_create(board);
    struct measure_result r;
    int rc;
    int s;

    /* 20 s of slow traffic (500 ms), then 40 s of fast (2 ms), 100 requests a second */
    for (s = 0; s <= 60; s++) {
        uint64_t lat = s <= 20 ? 500000 : 2000;
        traffic(&board->pool[POOL_GREEN][s % NW], 99, 0, 0, lat);
        traffic(&board->pool[POOL_GREEN][s % NW], 1, 0, 0, lat * 2);
        measure_sample(m, 1000 * (uint64_t)s, NULL);
        if (s == 20) {
            rc = measure_pool_window(m, POOL_GREEN, 30000, &r);
            ok(rc == 0 && within(r.p99_us, 500000, 1.0 / 32) && within(r.p50_us, 500000, 1.0 / 32),
               "while slow: p50 and p99 ~500 ms (%llu, %llu us)", (unsigned long long)r.p50_us,
               (unsigned long long)r.p99_us);
        }
    }
    rc = measure_pool_window(m, POOL_GREEN, 30000, &r);
    ok(rc == 0 && r.latency_count == 3000 && within(r.p50_us, 2000, 1.0 / 32) &&
           within(r.p90_us, 2000, 1.0 / 32) && within(r.p99_us, 2000, 1.0 / 32),
       "30 s later: the slow requests fell out of the window, p99 %llu us",
       (unsigned long long)r.p99_us);
    rc = measure_pool_window(m, POOL_GREEN, 60000, &r);
    ok(rc == 0 && r.latency_count == 6000 && within(r.p99_us, 500000, 1.0 / 32) &&
           within(r.p50_us, 2000, 1.0 / 32),
       "60 s window still holds them: p50 %llu us, p99 %llu us", (unsigned long long)r.p50_us,
       (unsigned long long)r.p99_us);
    /* then no traffic at all for 10 s */
    for (s = 61; s <= 70; s++)
        measure_sample(m, 1000 * (uint64_t)s, NULL);
    rc = measure_pool_window(m, POOL_GREEN, 5000, &r);
    ok(rc == 0 && r.requests == 0 && r.latency_count == 0 && r.p50_us == 0 && r.p99_us == 0 &&
           r.rate_per_s == 0,
       "a window without requests: no percentiles (0), rate 0");
    measure_destroy(&m);
    stats_board_destroy(&board);
}

static const struct spec blue1[] = {
    {"b1", "10.0.1.1", 8000, 1},
    {"b2", "10.0.1.2", 8000, 1},
};
static const struct spec green1[] = {
    {"g1", "10.0.2.1", 8000, 1},
    {"g2", "10.0.2.2", 8000, 1},
};
/* reload: b1 kept, b2 removed, b3 added; g1 weight 1 -> 3 (rebuilt, counters carried); g2 on a
 * new port (rebuilt from zero) */
static const struct spec blue2[] = {
    {"b3", "10.0.1.3", 8000, 1},
    {"b1", "10.0.1.1", 8000, 1},
};
static const struct spec green2[] = {
    {"g1", "10.0.2.1", 8000, 3},
    {"g2", "10.0.2.2", 8001, 1},
};

static void
serve(struct snapshot *snap, int s)
{
    struct server *srv;

    if ((srv = snapshot_find_server(snap, POOL_BLUE, "b1")) != NULL)
        traffic(&srv->stats[s % NW], 10, 0, 0, 1000);
    if ((srv = snapshot_find_server(snap, POOL_BLUE, "b2")) != NULL)
        traffic(&srv->stats[s % NW], 5, 0, 0, 1000);
    if ((srv = snapshot_find_server(snap, POOL_BLUE, "b3")) != NULL)
        traffic(&srv->stats[s % NW], 7, 0, 0, 1000);
    if ((srv = snapshot_find_server(snap, POOL_GREEN, "g1")) != NULL)
        traffic(&srv->stats[s % NW], 3, 1, 0, 1000);
    if ((srv = snapshot_find_server(snap, POOL_GREEN, "g2")) != NULL)
        traffic(&srv->stats[s % NW], 2, 0, 1, 1000);
}

static void
test_servers_reload(void)
{
    struct stats_board *board = stats_board_create(NW);
    struct measure *m = measure_create(board);
    struct snapshot *s1 =
        snapshot_create(mkconf(blue1, N(blue1), green1, N(green1)), NULL, NW, HEALTH_UP);
    struct snapshot *s2;
    struct server *b2 = server_ref(snapshot_find_server(s1, POOL_BLUE, "b2"));
    struct measure_result r;
    int rc;
    struct stats_totals *tot = xcalloc(1, sizeof(*tot));
    int s;

    rc = measure_server_window(m, POOL_BLUE, "b1", 10000, &r);
    ok(rc == -1, "before any sample no server is known");
    for (s = 0; s <= 20; s++) {
        serve(s1, s);
        measure_sample(m, 1000 * (uint64_t)s, s1);
    }
    rc = measure_server_window(m, POOL_BLUE, "b1", 10000, &r);
    ok(rc == 0 && r.requests == 100 && near(r.rate_per_s, 10) && r.span_ms == 10000,
       "b1: 10 s window, 100 requests, 10/s");
    rc = measure_server_window(m, POOL_GREEN, "g1", 10000, &r);
    ok(rc == 0 && r.requests == 30 && r.errors == 10 && near(r.error_rate, 1.0 / 3),
       "g1: 30 requests, 10 errors (1/3)");
    rc = measure_server_window(m, POOL_GREEN, "b1", 10000, &r);
    ok(rc == -1 && measure_server_window(m, POOL_BLUE, "zz", 10000, &r) == -1,
       "unknown pool + name: -1");
    ok(atomic_load(&b2->refs) == 3, "measure holds a ref on each sampled server (b2: %d refs)",
       atomic_load(&b2->refs));

    /* reload after the sample of second 20 */
    s2 = snapshot_create(mkconf(blue2, N(blue2), green2, N(green2)), s1, NW, HEALTH_UP);
    snapshot_mark_removed(s1, s2);
    snapshot_release(&s1);
    for (s = 21; s <= 50; s++) {
        serve(s2, s);
        measure_sample(m, 1000 * (uint64_t)s, s2);
    }
    ok(atomic_load(&b2->refs) == 1, "a removed server is let go (only our own ref left)");
    server_release(&b2);
    rc = measure_server_window(m, POOL_BLUE, "b2", 10000, &r);
    ok(rc == -1 && measure_server_totals(m, POOL_BLUE, "b2", tot) == -1 && tot->requests == 0,
       "removed server b2: forgotten");
    rc = measure_server_window(m, POOL_BLUE, "b1", 50000, &r);
    ok(rc == 0 && !r.partial && r.span_ms == 50000 && r.requests == 500,
       "kept server b1: history from before the reload (50 s, 500 requests)");
    rc = measure_server_window(m, POOL_BLUE, "b3", 60000, &r);
    ok(rc == 0 && r.partial && r.span_ms == 29000 && r.requests == 7 * 29,
       "added server b3: partial history since it appeared (29 s, %llu requests)",
       (unsigned long long)r.requests);
    rc = measure_server_window(m, POOL_GREEN, "g1", 40000, &r);
    ok(rc == 0 && !r.partial && r.span_ms == 40000 && r.requests == 120 && r.errors == 40 &&
           near(r.error_rate, 1.0 / 3) && r.latency_count == 120,
       "g1 rebuilt for its weight: window across the reload exact (120 requests, 40 errors)");
    rc = measure_server_window(m, POOL_GREEN, "g2", 40000, &r);
    ok(rc == 0 && !r.partial && r.requests == 80 && r.errors == 40 && r.latency_count == 80,
       "g2 rebuilt from zero for its address: series stitched, window across the reload exact");
    rc = measure_server_totals(m, POOL_GREEN, "g2", tot);
    ok(rc == 0 && tot->requests == 2 * 51 && tot->upstream_failures == 51 &&
           tot->latency.count == 2 * 51,
       "g2 totals since it first appeared: %llu requests, never backwards",
       (unsigned long long)tot->requests);
    rc = measure_server_totals(m, POOL_GREEN, "g1", tot);
    ok(rc == 0 && tot->requests == 3 * 51 && tot->responses[5] == 51,
       "g1 totals carried across the weight change");

    {
        struct server *b1 = snapshot_find_server(s2, POOL_BLUE, "b1");
        stats_gauge(&b1->stats[0].inflight, 2);
        stats_gauge(&b1->stats[1].inflight, 1);
        stats_gauge(&b1->stats[1].conns, 5);
        serve(s2, 51);
        measure_sample(m, 51000, s2);
        rc = measure_server_window(m, POOL_BLUE, "b1", 10000, &r);
        ok(rc == 0 && r.inflight == 3 && r.conns == 5 && r.tunnels == 0,
           "server gauges: the latest sample's, summed over workers");
    }

    /* A server keeps MEASURE_SERVER_SAMPLES (one minute), the pools five: after 100 more
     * seconds a 120 s window of b1 is partial with a 60 s span, the pool's is whole. */
    for (s = 52; s < 152; s++) {
        serve(s2, s);
        measure_sample(m, 1000 * (uint64_t)s, s2);
    }
    rc = measure_server_window(m, POOL_BLUE, "b1", 120000, &r);
    ok(rc == 0 && r.partial && r.span_ms == 1000 * (MEASURE_SERVER_SAMPLES - 1) &&
           r.requests == 10 * (MEASURE_SERVER_SAMPLES - 1),
       "a server's history is one minute: 120 s window partial, span %llu ms, %llu requests",
       (unsigned long long)r.span_ms, (unsigned long long)r.requests);
    rc = measure_pool_window(m, POOL_BLUE, 120000, &r);
    ok(rc == 0 && !r.partial && r.span_ms == 120000, "the pool's 120 s window is whole");

    /* no snapshot: every server forgotten */
    measure_sample(m, 152000, NULL);
    rc = measure_server_window(m, POOL_BLUE, "b1", 10000, &r);
    ok(rc == -1 && atomic_load(&snapshot_find_server(s2, POOL_BLUE, "b1")->refs) == 1,
       "a sample without a snapshot forgets every server and drops its refs");
    free(tot);
    measure_destroy(&m);
    snapshot_release(&s2);
    stats_board_destroy(&board);
}

int
main(void)
{
    test_rates();
    test_short_history();
    test_wrap();
    test_p99_window();
    test_servers_reload();
    return done_testing();
}
