/* proxy/stats.c — the log-linear latency histogram, sums and deltas of counter blocks, and the
 * per-pool board (DESIGN §7). Layout and threading rules: proxy/stats.h. */
#include "proxy/stats.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/xalloc.h"

/* Buckets 0..HIST_SUB-1 hold the values 0..15 exactly. Above, a value with its highest bit at
 * position e (HIST_SUB_BITS <= e <= HIST_MAX_EXP) goes to row e - HIST_SUB_BITS + 1, column =
 * the HIST_SUB_BITS bits below the highest one; values from 2^(HIST_MAX_EXP + 1) up all land
 * in the last bucket. */
_Static_assert(HIST_BUCKETS == (HIST_MAX_EXP - HIST_SUB_BITS + 2) * HIST_SUB,
               "one row of HIST_SUB buckets per power of two, plus the exact row");

unsigned
hist_bucket(uint64_t us)
{
    unsigned e;

    if (us < HIST_SUB)
        return (unsigned)us;
    e = 63u - (unsigned)__builtin_clzll(us); /* us != 0 here */
    if (e > HIST_MAX_EXP)
        return HIST_BUCKETS - 1;
    return (e - HIST_SUB_BITS + 1) * HIST_SUB +
           (unsigned)((us >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1));
}

uint64_t
hist_bucket_low(unsigned b)
{
    unsigned e;

    assert(b < HIST_BUCKETS);
    if (b < HIST_SUB)
        return b;
    e = b / HIST_SUB + HIST_SUB_BITS - 1;
    return (UINT64_C(1) << e) + ((uint64_t)(b % HIST_SUB) << (e - HIST_SUB_BITS));
}

uint64_t
hist_bucket_high(unsigned b)
{
    assert(b < HIST_BUCKETS);
    if (b == HIST_BUCKETS - 1)
        return UINT64_MAX;
    return hist_bucket_low(b + 1) - 1;
}

uint64_t
hist_bucket_mid(unsigned b)
{
    uint64_t low = hist_bucket_low(b);

    if (b < HIST_SUB)
        return low;
    if (b == HIST_BUCKETS - 1)
        return low + (UINT64_C(1) << (HIST_MAX_EXP - HIST_SUB_BITS)) / 2;
    return low + (hist_bucket_high(b) - low) / 2;
}

void
hist_record(struct hist *h, uint64_t us)
{
    stats_add(&h->n[hist_bucket(us)], 1);
}

/* count is the sum of the buckets as read here, so it always agrees with them even while the
 * owning worker keeps recording. */
void
hist_sum(struct hist_totals *dst, const struct hist *src)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        uint64_t v = atomic_load_explicit(&src->n[i], memory_order_relaxed);
        dst->n[i] += v;
        dst->count += v;
    }
}

/* A bucket of a that is below b's (the counters of a replaced object: the caller mixed up
 * series) counts as 0 rather than wrapping to a huge number. */
void
hist_delta(struct hist_totals *dst, const struct hist_totals *a, const struct hist_totals *b)
{
    uint64_t count = 0;

    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        dst->n[i] = a->n[i] >= b->n[i] ? a->n[i] - b->n[i] : 0;
        count += dst->n[i];
    }
    dst->count = count;
}

uint64_t
hist_rank(uint64_t count, double q)
{
    double x;
    uint64_t r;

    if (count == 0)
        return 0;
    if (!(q > 0)) /* also NaN */
        return 1;
    if (q >= 1)
        return count;
    x = q * (double)count;
    r = (uint64_t)ceil(x - x * 1e-12);
    if (r < 1)
        r = 1;
    if (r > count)
        r = count;
    return r;
}

/* Walks the buckets to the one holding the rank-th value: O(HIST_BUCKETS), which is nothing
 * next to the once-a-second callers (gates, status, metrics). The buckets, not h->count, are
 * the truth, so a caller that filled n[] by hand gets the right answer too. */
uint64_t
hist_quantile(const struct hist_totals *h, double q)
{
    uint64_t count = 0, rank, seen = 0;

    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        count += h->n[i];
    rank = hist_rank(count, q);
    if (rank == 0)
        return 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->n[i];
        if (seen >= rank)
            return hist_bucket_mid(i);
    }
    return hist_bucket_mid(HIST_BUCKETS - 1); /* not reached: seen ends at count >= rank */
}

static uint64_t
ld(const atomic_uint_fast64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static int64_t
ldg(const atomic_int_fast64_t *g)
{
    return atomic_load_explicit(g, memory_order_relaxed);
}

void
stats_sum(struct stats_totals *dst, const struct stats_block *src)
{
    dst->requests += ld(&src->requests);
    for (int i = 0; i < STATS_CLASSES; i++)
        dst->responses[i] += ld(&src->responses[i]);
    dst->upstream_failures += ld(&src->upstream_failures);
    dst->connect_errors += ld(&src->connect_errors);
    dst->timeouts += ld(&src->timeouts);
    dst->retries += ld(&src->retries);
    dst->failovers += ld(&src->failovers);
    dst->preview_refused += ld(&src->preview_refused);
    dst->ejections += ld(&src->ejections);
    dst->bytes_in += ld(&src->bytes_in);
    dst->bytes_out += ld(&src->bytes_out);
    dst->inflight += ldg(&src->inflight);
    dst->conns += ldg(&src->conns);
    dst->tunnels += ldg(&src->tunnels);
    hist_sum(&dst->latency, &src->latency);
}

/* Counters never go backwards within one series; if a caller subtracts across two (a replaced
 * object), a field that did saturates at 0 instead of wrapping. */
static uint64_t
sub(uint64_t a, uint64_t b)
{
    return a >= b ? a - b : 0;
}

void
stats_delta(struct stats_totals *dst, const struct stats_totals *a, const struct stats_totals *b)
{
    dst->requests = sub(a->requests, b->requests);
    for (int i = 0; i < STATS_CLASSES; i++)
        dst->responses[i] = sub(a->responses[i], b->responses[i]);
    dst->upstream_failures = sub(a->upstream_failures, b->upstream_failures);
    dst->connect_errors = sub(a->connect_errors, b->connect_errors);
    dst->timeouts = sub(a->timeouts, b->timeouts);
    dst->retries = sub(a->retries, b->retries);
    dst->failovers = sub(a->failovers, b->failovers);
    dst->preview_refused = sub(a->preview_refused, b->preview_refused);
    dst->ejections = sub(a->ejections, b->ejections);
    dst->bytes_in = sub(a->bytes_in, b->bytes_in);
    dst->bytes_out = sub(a->bytes_out, b->bytes_out);
    dst->inflight = a->inflight;
    dst->conns = a->conns;
    dst->tunnels = a->tunnels;
    hist_delta(&dst->latency, &a->latency, &b->latency);
}

struct stats_block *
stats_blocks_create(int n)
{
    size_t bytes;
    struct stats_block *b;

    _Static_assert(sizeof(struct stats_block) % 64 == 0, "blocks must not share cache lines");
    assert(n >= 1);
    /* A multiple of 64 already (the assert above); rounded anyway, as aligned_alloc requires. */
    bytes = ((size_t)n * sizeof(struct stats_block) + 63) & ~(size_t)63;
    b = aligned_alloc(64, bytes);
    if (b == NULL) {
        fprintf(stderr, "switchyard: out of memory allocating %zu bytes\n", bytes);
        abort();
    }
    /* All-zero bytes are a valid zero for the lock-free atomic integers of every platform we
     * build on; atomic_init per field would say the same thing at length. */
    memset(b, 0, bytes);
    return b;
}

void
stats_blocks_destroy(struct stats_block **blocks)
{
    if (blocks == NULL)
        return;
    free(*blocks);
    *blocks = NULL;
}

void
stats_sum_blocks(struct stats_totals *out, const struct stats_block *blocks, int n)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < n; i++)
        stats_sum(out, &blocks[i]);
}

static void
st(atomic_uint_fast64_t *c, uint64_t v)
{
    atomic_store_explicit(c, v, memory_order_relaxed);
}

static void
stg(atomic_int_fast64_t *g, int64_t v)
{
    atomic_store_explicit(g, v, memory_order_relaxed);
}

/* Relaxed stores: the caller guarantees no concurrent writer, and whoever reads dst next gets
 * it through the publication of the object holding it (or is its own worker). */
void
stats_block_store(struct stats_block *dst, const struct stats_totals *src)
{
    st(&dst->requests, src->requests);
    for (int i = 0; i < STATS_CLASSES; i++)
        st(&dst->responses[i], src->responses[i]);
    st(&dst->upstream_failures, src->upstream_failures);
    st(&dst->connect_errors, src->connect_errors);
    st(&dst->timeouts, src->timeouts);
    st(&dst->retries, src->retries);
    st(&dst->failovers, src->failovers);
    st(&dst->preview_refused, src->preview_refused);
    st(&dst->ejections, src->ejections);
    st(&dst->bytes_in, src->bytes_in);
    st(&dst->bytes_out, src->bytes_out);
    stg(&dst->inflight, src->inflight);
    stg(&dst->conns, src->conns);
    stg(&dst->tunnels, src->tunnels);
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        st(&dst->latency.n[i], src->latency.n[i]);
}

struct stats_board *
stats_board_create(int nworkers)
{
    struct stats_board *b;

    assert(nworkers >= 1);
    b = xcalloc(1, sizeof(*b));
    b->nworkers = nworkers;
    for (int p = 0; p < POOL_COUNT; p++)
        b->pool[p] = stats_blocks_create(nworkers);
    b->listener = stats_blocks_create(nworkers);
    return b;
}

void
stats_board_destroy(struct stats_board **bp)
{
    struct stats_board *b;

    if (bp == NULL || *bp == NULL)
        return;
    b = *bp;
    *bp = NULL;
    for (int p = 0; p < POOL_COUNT; p++)
        stats_blocks_destroy(&b->pool[p]);
    stats_blocks_destroy(&b->listener);
    free(b);
}

void
stats_board_pool(const struct stats_board *b, enum pool_id pool, struct stats_totals *out)
{
    assert((int)pool >= 0 && pool < POOL_COUNT);
    stats_sum_blocks(out, b->pool[pool], b->nworkers);
}

void
stats_board_listener(const struct stats_board *b, struct stats_totals *out)
{
    stats_sum_blocks(out, b->listener, b->nworkers);
}
