/* control/measure.h — the main thread's measurement history (DESIGN §7): once a second, the sums
 * of every worker's pool blocks and of every server's blocks, kept for five minutes, and the
 * windowed numbers (rates, error rates, percentiles) that the rollout gates, status and /metrics
 * read. No event loop in here: the daemon's 1 s timer calls measure_sample().
 *
 * Servers are tracked by pool and name, not by object, so their history survives a reload that
 * keeps the name: a server rebuilt for a new weight carries its counters (proxy/snapshot.c); one
 * rebuilt for a new address starts from zero and is stitched onto the old series here. */
#ifndef CONTROL_MEASURE_H
#define CONTROL_MEASURE_H

#include <stdbool.h>
#include <stdint.h>

#include "conf/conf.h"
#include "proxy/snapshot.h"
#include "proxy/stats.h"

/* Samples kept per series: five minutes at one a second, plus the sample a 300 s window starts
 * from. */
#define MEASURE_SAMPLES 301

/* Samples kept per server: one minute (status shows 30 s), plus one. A sample holds a latency
 * histogram (3.7 KiB), so five minutes per server was 1.16 MiB of RSS each once the ring had
 * filled (200 servers: 230 MiB; now 46 MiB); the rollout gates read the pools' series, which
 * keep five minutes. */
#define MEASURE_SERVER_SAMPLES 61

struct measure;

/* The numbers of one pool or server over a window that ends at the latest sample. */
struct measure_result {
    uint64_t window_ms; /* as requested */
    uint64_t span_ms;   /* covered: from the window's first sample to its last (<= window_ms) */
    bool partial;       /* history does not reach back window_ms (the oldest sample held is
                           inside the window): span_ms is all there is */
    uint64_t requests;
    double rate_per_s;      /* requests * 1000 / span_ms; 0 when span_ms is 0 */
    uint64_t errors;        /* responses[5] + upstream_failures */
    double error_rate;      /* errors / requests; 0 when there were no requests */
    uint64_t latency_count; /* durations recorded in the window (requests that completed) */
    uint64_t p50_us;        /* from the window's histogram; 0 when latency_count is 0 */
    uint64_t p90_us;
    uint64_t p99_us;
    int64_t inflight; /* gauges at the latest sample */
    int64_t conns;
    int64_t tunnels;
};

/* Creates an empty history reading board (borrowed: it must outlive the measure). Main thread. */
struct measure *measure_create(const struct stats_board *board);

/* Frees m, drops its server references and clears *m. Accepts NULL. Main thread. */
void measure_destroy(struct measure **m);

/* Takes one sample at now_ms (CLOCK_MONOTONIC ms): both pools' sums, and the sums of every
 * server of snap (may be NULL: no servers). Servers of earlier samples that snap no longer has
 * are forgotten, so the memory held is bounded by snap's servers. References to snap's servers
 * are taken (not to snap). A now_ms not after the latest sample's replaces that sample, so the
 * series' times only increase. Main thread, once a second. */
void measure_sample(struct measure *m, uint64_t now_ms, const struct snapshot *snap);

/* Fills out for pool over the last window_ms (or the history there is, with partial set).
 * Returns 0, or -1 with out zeroed before the first sample. Main thread. */
int measure_pool_window(const struct measure *m, enum pool_id pool, uint64_t window_ms,
                        struct measure_result *out);

/* The same for the server of pool named name, over at most the last MEASURE_SERVER_SAMPLES
 * (partial set beyond). Returns -1 with out zeroed when the latest sample's snapshot had no such
 * server. Main thread. */
int measure_server_window(const struct measure *m, enum pool_id pool, const char *name,
                          uint64_t window_ms, struct measure_result *out);

/* The totals since start of pool as of the latest sample (all zero before the first), for
 * /metrics: counters, gauges and the cumulative histogram. Main thread. */
void measure_pool_totals(const struct measure *m, enum pool_id pool, struct stats_totals *out);

/* The same for a server, counted since its pool and name first appeared. Returns -1 with out
 * zeroed when the latest sample's snapshot had no such server. Main thread. */
int measure_server_totals(const struct measure *m, enum pool_id pool, const char *name,
                          struct stats_totals *out);

/* Sets *now_ms to the time of the latest sample and returns 0; -1 before the first sample.
 * Main thread. */
int measure_latest_ms(const struct measure *m, uint64_t *now_ms);

#endif
