/* proxy/stats.h — measurements (DESIGN §7): counters and latency histograms that each worker
 * writes for itself, and the sums the main thread reads.
 *
 * Single writer per block: a worker updates its own blocks with a relaxed load and a relaxed
 * store (no locked instruction), the main thread reads them with relaxed loads. Relaxed is
 * enough: every field is an independent monotonic count or gauge, and a reader that sees one
 * update a moment late only reports it in the next second. */
#ifndef PROXY_STATS_H
#define PROXY_STATS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"

/* Log-linear histogram of durations in microseconds: values below 16 us have a bucket each;
 * above, every power of two is split into 16 linear sub-buckets, so a bucket is at most 1/16
 * (6.25%) wide and its midpoint is within 3.2% of any value in it. The last bucket is open: it
 * collects everything from 2^31 + 15 * 2^27 us (about 67 minutes) up. */
#define HIST_SUB_BITS 4
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_MAX_EXP 31
#define HIST_BUCKETS ((HIST_MAX_EXP - HIST_SUB_BITS + 1) * HIST_SUB + HIST_SUB)

struct hist {
    atomic_uint_fast64_t n[HIST_BUCKETS];
};

/* Plain (non-atomic) copy, for sums and deltas on the main thread. */
struct hist_totals {
    uint64_t n[HIST_BUCKETS];
    uint64_t count;
};

/* Response classes: [0] no response (local error, aborted), [1] 1xx ... [5] 5xx. */
#define STATS_CLASSES 6

/* One block of counters: per worker and server, or per worker and pool. */
struct stats_block {
    _Alignas(64) atomic_uint_fast64_t requests; /* requests sent to this server / pool */
    /* By class of the status sent to the client, the proxy's own 502/503/504 included. */
    atomic_uint_fast64_t responses[STATS_CLASSES];
    /* Exchanges that failed after the response had started (cut mid-body): no status of their
     * own. Errors for the gates = responses[5] + upstream_failures. */
    atomic_uint_fast64_t upstream_failures;
    atomic_uint_fast64_t connect_errors;
    atomic_uint_fast64_t timeouts;        /* upstream connect or response timeouts */
    atomic_uint_fast64_t retries;         /* connect retries on another server, stale retries */
    atomic_uint_fast64_t failovers;       /* requests that went to the other pool (pool only) */
    atomic_uint_fast64_t preview_refused; /* preview headers ignored: not authorized (listener) */
    atomic_uint_fast64_t ejections;       /* passive ejections (server only) */
    atomic_uint_fast64_t bytes_in;        /* request bytes from clients (head + body) */
    atomic_uint_fast64_t bytes_out;       /* response bytes to clients (head + body) */
    atomic_int_fast64_t inflight;         /* gauge: requests in flight */
    atomic_int_fast64_t conns;            /* gauge: open upstream connections */
    atomic_int_fast64_t tunnels;          /* gauge: open tunnels */
    struct hist latency;                  /* request start to response complete, us */
};

/* Plain sums over workers. */
struct stats_totals {
    uint64_t requests;
    uint64_t responses[STATS_CLASSES];
    uint64_t upstream_failures;
    uint64_t connect_errors;
    uint64_t timeouts;
    uint64_t retries;
    uint64_t failovers;
    uint64_t preview_refused;
    uint64_t ejections;
    uint64_t bytes_in;
    uint64_t bytes_out;
    int64_t inflight;
    int64_t conns;
    int64_t tunnels;
    struct hist_totals latency;
};

/* Worker-side updates (the owning worker only). */
static inline void
stats_add(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline void
stats_gauge(atomic_int_fast64_t *g, int64_t delta)
{
    atomic_store_explicit(g, atomic_load_explicit(g, memory_order_relaxed) + delta,
                          memory_order_relaxed);
}

/* The bucket index of a duration in us. */
unsigned hist_bucket(uint64_t us);

/* The smallest and largest duration a bucket holds (inclusive). */
uint64_t hist_bucket_low(unsigned b);
uint64_t hist_bucket_high(unsigned b);

/* Records one duration. The owning worker only. */
void hist_record(struct hist *h, uint64_t us);

/* Adds a worker's histogram into plain totals. Any thread (relaxed reads). */
void hist_sum(struct hist_totals *dst, const struct hist *src);

/* dst = a - b, bucket by bucket (a later sum minus an earlier one: a window). */
void hist_delta(struct hist_totals *dst, const struct hist_totals *a, const struct hist_totals *b);

/* The q-quantile (0 < q <= 1) in us, estimated at the bucket midpoint; 0 when empty. */
uint64_t hist_quantile(const struct hist_totals *h, double q);

/* Adds a block into totals. Any thread. */
void stats_sum(struct stats_totals *dst, const struct stats_block *src);

/* dst = a - b for counters and histograms; gauges are taken from a. */
void stats_delta(struct stats_totals *dst, const struct stats_totals *a,
                 const struct stats_totals *b);

/* Per-pool blocks, one per worker; they outlive reloads (owned by the daemon). */
struct stats_board {
    int nworkers;
    struct stats_block *pool[POOL_COUNT]; /* owned: nworkers blocks each, 64-byte aligned */
    struct stats_block *listener; /* owned: per worker: client connections (conns), tunnels */
};

struct stats_board *stats_board_create(int nworkers);
void stats_board_destroy(struct stats_board **b);

/* Sums the pool blocks of every worker. Main thread. */
void stats_board_pool(const struct stats_board *b, enum pool_id pool, struct stats_totals *out);

/* Additions for issue 3 (measurements). */

/* The rank (1-based) of the q-quantile among count sorted values: ceil(q * count), clamped to
 * [1, count], with a tolerance of a few ulps so that q * count that is an integer in exact
 * arithmetic (0.99 * 100000) is not pushed one rank up by rounding; 0 when count is 0.
 * hist_quantile() uses it; tests use it for the exact reference. */
uint64_t hist_rank(uint64_t count, double q);

/* The value hist_quantile() reports for a bucket: low + (high - low) / 2, which is the value
 * itself where a bucket holds one value (below 2 * HIST_SUB us); for the open top bucket, the
 * middle of the width it would have if it were closed. */
uint64_t hist_bucket_mid(unsigned b);

/* n blocks (n >= 1), 64-byte aligned, zeroed; aborts on allocation failure. Any thread. */
struct stats_block *stats_blocks_create(int n);

/* Frees blocks from stats_blocks_create() and clears *blocks. Accepts NULL. */
void stats_blocks_destroy(struct stats_block **blocks);

/* out = the sum of n blocks (out is zeroed first). Any thread. */
void stats_sum_blocks(struct stats_totals *out, const struct stats_block *blocks, int n);

/* Sets every field of dst (counters, gauges, histogram) to src's values. Only while no worker
 * writes dst: before the block is published, or by its owning worker. */
void stats_block_store(struct stats_block *dst, const struct stats_totals *src);

/* Sums the listener blocks of every worker (client connections, tunnels). Main thread. */
void stats_board_listener(const struct stats_board *b, struct stats_totals *out);

#endif
