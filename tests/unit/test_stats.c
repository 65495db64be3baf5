/* tests/unit/test_stats.c — the log-linear histogram (bucket layout, percentile error bound),
 * sums and deltas of counter blocks, the board, and a writer/reader pair (run it under TSan). */
#include "proxy/stats.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/xalloc.h"
#include "tap.h"

static void
test_buckets(void)
{
    int contiguous = 1, contains = 1, width = 1, mono = 1;
    uint64_t v;

    ok(HIST_BUCKETS == 464, "464 buckets (16 exact + 28 powers of two x 16)");
    ok(hist_bucket_low(0) == 0, "bucket 0 starts at 0");
    for (unsigned b = 0; b + 1 < HIST_BUCKETS; b++) {
        uint64_t lo = hist_bucket_low(b), hi = hist_bucket_high(b);
        if (hist_bucket_low(b + 1) != hi + 1 || hi < lo) {
            contiguous = 0;
            diag("bucket %u [%llu, %llu] next low %llu", b, (unsigned long long)lo,
                 (unsigned long long)hi, (unsigned long long)hist_bucket_low(b + 1));
        }
        if (hist_bucket(lo) != b || hist_bucket(hi) != b || hist_bucket(lo + (hi - lo) / 2) != b)
            contains = 0;
        if (b > 0 && !(hist_bucket_low(b) > hist_bucket_low(b - 1)))
            mono = 0;
        /* width at most 1/16 of the low end above the exact row */
        if (lo >= HIST_SUB && (hi - lo + 1) * HIST_SUB > lo)
            width = 0;
        if (hist_bucket_mid(b) < lo || hist_bucket_mid(b) > hi)
            contains = 0;
    }
    ok(contiguous, "low(b+1) == high(b) + 1 for every bucket: no gap, no overlap");
    ok(mono, "bucket lows strictly increase");
    ok(contains, "low, high and mid of every bucket map back to it");
    ok(width, "every bucket above 15 us is at most 1/16 of its low end wide");
    for (unsigned i = 0; i < HIST_SUB; i++) {
        if (hist_bucket(i) != i || hist_bucket_mid(i) != i)
            contains = 0;
    }
    ok(contains, "values 0..15 have a bucket each, reported exactly");
    ok(hist_bucket(16) == 16 && hist_bucket(31) == 31 && hist_bucket(32) == 32 &&
           hist_bucket(33) == 32 && hist_bucket(34) == 33,
       "16..31 exact, then buckets of 2 from 32");

    /* every value (powers of two, their neighbours, and a pseudo-random sweep) */
    contains = 1;
    for (int e = 0; e < 64; e++) {
        for (int d = -2; d <= 2; d++) {
            v = (UINT64_C(1) << e) + (uint64_t)(int64_t)d;
            if (e == 63 && d > 0)
                continue;
            unsigned b = hist_bucket(v);
            if (b >= HIST_BUCKETS || v < hist_bucket_low(b) || v > hist_bucket_high(b)) {
                contains = 0;
                diag("value %llu -> bucket %u", (unsigned long long)v, b);
            }
        }
    }
    v = 0x9e3779b97f4a7c15u;
    for (int i = 0; i < 1000000; i++) {
        uint64_t x;
        unsigned b;
        v ^= v << 13;
        v ^= v >> 7;
        v ^= v << 17;
        x = v >> (v & 63); /* all magnitudes */
        b = hist_bucket(x);
        if (b >= HIST_BUCKETS || x < hist_bucket_low(b) || x > hist_bucket_high(b))
            contains = 0;
    }
    ok(contains, "every value lands in a bucket whose [low, high] contains it (1M values)");
    ok(hist_bucket(UINT64_MAX) == HIST_BUCKETS - 1 &&
           hist_bucket(UINT64_C(1) << 40) == HIST_BUCKETS - 1 &&
           hist_bucket_high(HIST_BUCKETS - 1) == UINT64_MAX,
       "the top bucket catches huge values (2^40, UINT64_MAX)");
    ok(hist_bucket((UINT64_C(1) << 32) - 1) == HIST_BUCKETS - 1 &&
           hist_bucket(UINT64_C(1) << 31) == HIST_BUCKETS - 16,
       "2^31 us starts the last row; the last bucket holds from 2^31 + 15 * 2^27 us up");
}

static void
test_rank(void)
{
    ok(hist_rank(0, 0.5) == 0, "rank of an empty set is 0");
    ok(hist_rank(100000, 0.99) == 99000 && hist_rank(100000, 0.5) == 50000 &&
           hist_rank(100000, 0.9) == 90000,
       "ceil(q * n) without float creep: 99000, 50000, 90000 of 100000");
    ok(hist_rank(10, 0.99) == 10 && hist_rank(10, 0.5) == 5 && hist_rank(10, 0.55) == 6,
       "10 values: p99 is the 10th, p50 the 5th, p55 the 6th");
    ok(hist_rank(7, 0) == 1 && hist_rank(7, -1) == 1 && hist_rank(7, 2) == 7 &&
           hist_rank(7, NAN) == 1,
       "q clamped to (0, 1]");
}

/* splitmix64: deterministic, so a failure reproduces. */
static uint64_t rng_state;

static uint64_t
rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static double
unif(void) /* (0, 1) */
{
    return ((double)(rnd() >> 11) + 0.5) / 9007199254740992.0;
}

static double
gauss(void)
{
    return sqrt(-2.0 * log(unif())) * cos(2.0 * M_PI * unif());
}

static uint64_t
clamp_us(double x)
{
    return x < 1 ? 1 : (uint64_t)llround(x);
}

enum dist {
    DIST_UNIFORM = 0,
    DIST_LOGNORMAL,
    DIST_BIMODAL,
    DIST_CONSTANT,
    DIST_TEN,
};

static uint64_t
draw(enum dist d)
{
    switch (d) {
    case DIST_UNIFORM: /* 1 us .. 10 s */
        return 1 + rnd() % 10000000u;
    case DIST_LOGNORMAL: /* median 5 ms, sigma 1 (p99 ~ 51 ms) */
        return clamp_us(5000.0 * exp(gauss()));
    case DIST_BIMODAL: /* 90% around 1 ms, 10% around 800 ms */
        if (rnd() % 10 < 9)
            return clamp_us(1000.0 * exp(0.2 * gauss()));
        return clamp_us(800000.0 * exp(0.1 * gauss()));
    case DIST_CONSTANT:
        return 12345;
    case DIST_TEN:
        return 1 + rnd() % 2000000u;
    }
    return 0;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double
rel_err(uint64_t est, uint64_t exact)
{
    double d = (double)est - (double)exact;
    return fabs(d) / (double)exact;
}

/* Records n samples into a real (atomic) histogram, sums it, and compares p50/p90/p99 and a sweep
 * of q = 0.01..0.999 against the exact order statistics of the same rank. */
static void
check_dist(const char *name, enum dist d, size_t n)
{
    static const double qs[] = {0.50, 0.90, 0.99};
    struct hist *h = xcalloc(1, sizeof(*h));
    struct hist_totals *t = xcalloc(1, sizeof(*t));
    uint64_t *v = xcalloc(n, sizeof(*v));
    double worst3 = 0, worst_sweep = 0;
    char line[256];
    int len = 0;

    for (size_t i = 0; i < n; i++) {
        v[i] = draw(d);
        hist_record(h, v[i]);
    }
    hist_sum(t, h);
    qsort(v, n, sizeof(*v), cmp_u64);
    ok(t->count == n, "%s: %zu samples counted", name, n);
    for (size_t i = 0; i < 3; i++) {
        uint64_t exact = v[hist_rank(n, qs[i]) - 1], est = hist_quantile(t, qs[i]);
        double e = rel_err(est, exact);
        if (e > worst3)
            worst3 = e;
        len += snprintf(line + len, sizeof(line) - (size_t)len, " p%g %llu/%llu (%.2f%%)",
                        qs[i] * 100, (unsigned long long)est, (unsigned long long)exact, e * 100);
    }
    for (int k = 1; k <= 999; k++) {
        double q = k / 1000.0;
        double e = rel_err(hist_quantile(t, q), v[hist_rank(n, q) - 1]);
        if (e > worst_sweep)
            worst_sweep = e;
    }
    diag("%s: est/exact%s", name, line);
    diag("%s: worst error p50/p90/p99 %.3f%%, over q = 0.001..0.999 %.3f%%", name, worst3 * 100,
         worst_sweep * 100);
    ok(worst3 <= 0.05, "%s: p50/p90/p99 within 5%% of exact (worst %.3f%%)", name, worst3 * 100);
    ok(worst_sweep <= 1.0 / 32, "%s: every quantile 0.001..0.999 within 1/32 (worst %.3f%%)", name,
       worst_sweep * 100);
    free(v);
    free(t);
    free(h);
}

static void
test_percentiles(void)
{
    struct hist_totals *t = xcalloc(1, sizeof(*t));

    ok(hist_quantile(t, 0.99) == 0, "empty histogram: quantile 0");
    t->n[hist_bucket(7)] = 3;
    t->count = 0; /* the buckets are the truth */
    ok(hist_quantile(t, 0.5) == 7 && hist_quantile(t, 1.0) == 7,
       "exact bucket: the value itself, whatever count says");
    free(t);

    rng_state = 42;
    check_dist("uniform 1us-10s", DIST_UNIFORM, 200000);
    check_dist("log-normal 5ms", DIST_LOGNORMAL, 200000);
    check_dist("bimodal 1ms/800ms", DIST_BIMODAL, 200000);
    check_dist("constant 12345us", DIST_CONSTANT, 100000);
    check_dist("10 samples", DIST_TEN, 10);
}

static void
fill(struct stats_block *b, uint64_t k)
{
    stats_add(&b->requests, 10 * k);
    for (int i = 0; i < STATS_CLASSES; i++)
        stats_add(&b->responses[i], k + (uint64_t)i);
    stats_add(&b->upstream_failures, k);
    stats_add(&b->connect_errors, 2 * k);
    stats_add(&b->timeouts, 3 * k);
    stats_add(&b->retries, 4 * k);
    stats_add(&b->failovers, 5 * k);
    stats_add(&b->ejections, 6 * k);
    stats_add(&b->bytes_in, 1000 * k);
    stats_add(&b->bytes_out, 2000 * k);
    stats_gauge(&b->inflight, (int64_t)k);
    stats_gauge(&b->conns, -(int64_t)k);
    stats_gauge(&b->tunnels, 1);
    for (uint64_t i = 0; i < k; i++)
        hist_record(&b->latency, 1000 * (i + 1));
}

static void
test_sums_deltas(void)
{
    struct stats_block *blocks = stats_blocks_create(3);
    struct stats_totals *a = xcalloc(1, sizeof(*a)), *b = xcalloc(1, sizeof(*b));
    struct stats_totals *d = xcalloc(1, sizeof(*d));
    struct stats_board *board;
    struct hist_totals *ha = xcalloc(1, sizeof(*ha)), *hb = xcalloc(1, sizeof(*hb)), *hd;
    int zero = 1;

    ok(((uintptr_t)blocks % 64) == 0 && sizeof(struct stats_block) % 64 == 0,
       "blocks are 64-byte aligned and a multiple of 64 bytes");
    for (size_t i = 0; i < 3 * sizeof(*blocks); i++)
        zero &= ((const unsigned char *)blocks)[i] == 0;
    ok(zero, "blocks start zeroed");

    fill(&blocks[0], 1);
    fill(&blocks[1], 2);
    fill(&blocks[2], 3);
    stats_sum_blocks(a, blocks, 3);
    ok(a->requests == 60 && a->responses[0] == 6 && a->responses[5] == 21 &&
           a->upstream_failures == 6 && a->connect_errors == 12 && a->timeouts == 18 &&
           a->retries == 24 && a->failovers == 30 && a->ejections == 36 && a->bytes_in == 6000 &&
           a->bytes_out == 12000,
       "sum of 3 blocks: every counter");
    ok(a->inflight == 6 && a->conns == -6 && a->tunnels == 3, "sum of 3 blocks: gauges");
    ok(a->latency.count == 6 && a->latency.n[hist_bucket(1000)] == 3 &&
           a->latency.n[hist_bucket(2000)] == 2 && a->latency.n[hist_bucket(3000)] == 1,
       "sum of 3 blocks: histogram buckets and count");
    stats_sum(a, &blocks[0]);
    ok(a->requests == 70 && a->latency.count == 7, "stats_sum adds into what is there");

    stats_sum_blocks(a, blocks, 3);
    fill(&blocks[1], 4); /* later: +40 requests, 4 durations 1..4 ms */
    stats_gauge(&blocks[1].inflight, -100);
    stats_sum_blocks(b, blocks, 3);
    stats_delta(d, b, a);
    ok(d->requests == 40 && d->responses[5] == 9 && d->upstream_failures == 4 &&
           d->bytes_out == 8000 && d->ejections == 24,
       "stats_delta: counters are later minus earlier");
    ok(d->inflight == b->inflight && d->inflight == 6 + 4 - 100 && d->conns == -10 &&
           d->tunnels == 4,
       "stats_delta: gauges are the later values");
    ok(d->latency.count == 4 && d->latency.n[hist_bucket(1000)] == 1 &&
           d->latency.n[hist_bucket(4000)] == 1 && d->latency.n[hist_bucket(2000)] == 1,
       "stats_delta: histogram of the window only");
    stats_delta(d, a, b);
    ok(d->requests == 0 && d->latency.count == 0, "a reversed delta saturates at 0, no wrap");

    hd = xcalloc(1, sizeof(*hd));
    ha->n[20] = 5;
    ha->n[300] = 7;
    ha->count = 12;
    hb->n[20] = 2;
    hb->count = 2;
    hist_delta(hd, ha, hb);
    ok(hd->n[20] == 3 && hd->n[300] == 7 && hd->count == 10, "hist_delta by bucket, count too");

    /* stats_block_store round trip */
    stats_block_store(&blocks[0], b);
    stats_sum_blocks(d, blocks, 1);
    ok(memcmp(d, b, sizeof(*d)) == 0, "stats_block_store then sum gives the totals back");

    board = stats_board_create(4);
    ok(board->nworkers == 4 && ((uintptr_t)board->pool[POOL_BLUE] % 64) == 0 &&
           ((uintptr_t)board->pool[POOL_GREEN] % 64) == 0 && ((uintptr_t)board->listener % 64) == 0,
       "board: 4 workers, aligned blocks");
    for (int w = 0; w < 4; w++) {
        fill(&board->pool[POOL_GREEN][w], (uint64_t)w + 1);
        stats_gauge(&board->listener[w].conns, 5);
    }
    fill(&board->pool[POOL_BLUE][3], 7);
    stats_board_pool(board, POOL_GREEN, a);
    stats_board_pool(board, POOL_BLUE, b);
    ok(a->requests == 100 && a->latency.count == 10 && b->requests == 70 && b->inflight == 7,
       "board: per-pool sums over workers, pools kept apart");
    stats_board_listener(board, a);
    ok(a->conns == 20 && a->requests == 0, "board: listener sums");
    stats_board_destroy(&board);
    ok(board == NULL, "board destroy clears the pointer");
    stats_board_destroy(&board);
    stats_board_destroy(NULL);
    stats_blocks_destroy(&blocks);
    stats_blocks_destroy(&blocks);
    stats_blocks_destroy(NULL);
    ok(blocks == NULL, "destroys accept NULL");
    free(a);
    free(b);
    free(d);
    free(ha);
    free(hb);
    free(hd);
}

/* One writer (a worker) updating its block; a reader (the main thread) summing it meanwhile. */
#define WRITES 1000000

struct race {
    struct stats_block *b;
    atomic_int done;
};

static void *
writer_main(void *arg)
{
    struct race *r = arg;

    for (uint64_t i = 0; i < WRITES; i++) {
        stats_gauge(&r->b->inflight, 1);
        stats_add(&r->b->requests, 1);
        stats_add(&r->b->bytes_out, 100);
        hist_record(&r->b->latency, i % 5000000);
        stats_add(&r->b->responses[2], 1);
        stats_gauge(&r->b->inflight, -1);
    }
    atomic_store_explicit(&r->done, 1, memory_order_release);
    return NULL;
}

static void
test_concurrency(void)
{
    struct race r = {.b = stats_blocks_create(1)};
    struct stats_totals *t = xcalloc(1, sizeof(*t));
    uint64_t last_req = 0, last_resp = 0, last_hist = 0, last_bytes = 0;
    int mono = 1, sane = 1;
    long reads = 0;
    pthread_t th;

    atomic_init(&r.done, 0);
    pthread_create(&th, NULL, writer_main, &r);
    for (;;) {
        int done = atomic_load_explicit(&r.done, memory_order_acquire);
        stats_sum_blocks(t, r.b, 1);
        reads++;
        if (t->requests < last_req || t->responses[2] < last_resp || t->latency.count < last_hist ||
            t->bytes_out < last_bytes)
            mono = 0;
        if (t->inflight < 0 || t->inflight > 1)
            sane = 0;
        last_req = t->requests;
        last_resp = t->responses[2];
        last_hist = t->latency.count;
        last_bytes = t->bytes_out;
        if (done)
            break;
    }
    pthread_join(th, NULL);
    diag("reader summed the block %ld times while the writer ran", reads);
    ok(mono, "reader sees every counter and the histogram count monotonic");
    ok(sane, "the in-flight gauge the reader sees is 0 or 1");
    ok(t->requests == WRITES && t->responses[2] == WRITES && t->latency.count == WRITES &&
           t->bytes_out == 100u * WRITES && t->inflight == 0,
       "after the writer is done (acquire), the reader sees all %d updates", WRITES);
    stats_blocks_destroy(&r.b);
    free(t);
}

int
main(void)
{
    test_buckets();
    test_rank();
    test_percentiles();
    test_sums_deltas();
    test_concurrency();
    return done_testing();
}
