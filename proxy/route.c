/* proxy/route.c — the published routing word, client buckets, the standby threshold and the
 * balancing of requests over the servers of a pool (DESIGN §3). */
#include "proxy/route.h"

#include <assert.h>
#include <sched.h>
#include <string.h>
#include <time.h>

/* The routing word, low bits first:
 *   bits  0..39  generation (40 bits)
 *   bit   40     live pool (0 = blue, 1 = green)
 *   bits 41..54  standby share in basis points (14 bits, 0..10000)
 *   bits 55..63  flags (9 bits) */
#define GEN_MASK ROUTE_GENERATION_MAX
#define LIVE_SHIFT 40
#define SHARE_SHIFT 41
#define SHARE_MASK UINT64_C(0x3fff)
#define FLAGS_SHIFT 55
#define FLAGS_MASK UINT64_C(0x1ff)

_Static_assert(SHARE_MASK >= ROUTE_BUCKETS, "the share field must hold 10000");
_Static_assert(FLAGS_SHIFT + 9 == 64, "the fields must fill the word exactly");
_Static_assert(POOL_COUNT == 2, "the live pool is one bit");

static uint64_t
pack(enum pool_id live, uint32_t standby_bp, uint32_t flags, uint64_t generation)
{
    assert(live == POOL_BLUE || live == POOL_GREEN);
    assert(standby_bp <= ROUTE_BUCKETS);
    assert((flags & ~FLAGS_MASK) == 0);
    assert(generation <= ROUTE_GENERATION_MAX);
    return (generation & GEN_MASK) | ((uint64_t)(live == POOL_GREEN) << LIVE_SHIFT) |
           ((uint64_t)standby_bp << SHARE_SHIFT) | ((uint64_t)flags << FLAGS_SHIFT);
}

static void
unpack(uint64_t word, struct route_word *out)
{
    out->generation = word & GEN_MASK;
    out->live = (word >> LIVE_SHIFT) & 1 ? POOL_GREEN : POOL_BLUE;
    out->standby_bp = (uint32_t)((word >> SHARE_SHIFT) & SHARE_MASK);
    out->flags = (uint32_t)((word >> FLAGS_SHIFT) & FLAGS_MASK);
}

static uint32_t
clamp_bp(uint32_t bp)
{
    return bp > ROUTE_BUCKETS ? ROUTE_BUCKETS : bp;
}

void
routing_init(struct routing *r, enum pool_id live, uint32_t standby_bp, uint32_t flags,
             uint64_t generation)
{
    /* No other thread sees r yet: whatever publishes r (thread creation, a release store of a
     * pointer to it) orders this store before their first load. */
    atomic_init(&r->word, pack(live, clamp_bp(standby_bp), flags, generation));
}

/* Acquire is enough: the whole state is in this one word, so there is no second location whose
 * value must be consistent with it, and a single load can never see half of a publish. Coherence
 * of a single atomic object (C11 7.17.3, read-read coherence) means that successive loads by one
 * thread never see an older word than a previous load did, whatever the ordering, and that a
 * load which happens after the publishing store sees that store or a later one. Acquire adds
 * that anything the main thread wrote before publishing (say, a snapshot pointer it stored
 * first) is visible after reading the new word; seq_cst would only add a total order with
 * other seq_cst operations on other objects, which no reader relies on. On x86-64 and ARMv8
 * acquire and seq_cst loads are the same instruction anyway. */
void
routing_load(const struct routing *r, struct route_word *out)
{
    unpack(atomic_load_explicit(&r->word, memory_order_acquire), out);
}

/* The acknowledgement is a store-load handshake (Dekker's): the worker stores "deciding" then
 * loads the word, the main thread stores the word then loads "deciding", all four sequentially
 * consistent. In their single total order, either the worker's load comes after the main
 * thread's store (the decision reads the new word) or the main thread's load comes after the
 * worker's store (it sees the decision in progress and waits for its end). Cost per request:
 * one sequentially consistent store (an XCHG on x86-64) and a plain store; the worker's inbox,
 * which acknowledged before, could be 16 callbacks away under load (p99 1.1 ms). */
void
route_decision_begin(struct route_decisions *d, const struct routing *r, struct route_word *out)
{
    uint_fast64_t s = atomic_load_explicit(&d->seq, memory_order_relaxed); /* our own */
    atomic_store_explicit(&d->seq, s + 1, memory_order_seq_cst);
    unpack(atomic_load_explicit(&r->word, memory_order_seq_cst), out);
}

void
route_decision_end(struct route_decisions *d)
{
    uint_fast64_t s = atomic_load_explicit(&d->seq, memory_order_relaxed);
    atomic_store_explicit(&d->seq, s + 1, memory_order_release);
}

int
route_decisions_wait(const struct route_decisions *d, uint64_t timeout_ms)
{
    uint_fast64_t s = atomic_load_explicit(&d->seq, memory_order_seq_cst);
    struct timespec t0, t;

    if ((s & 1) == 0)
        return 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 0;; i++) {
        if (atomic_load_explicit(&d->seq, memory_order_acquire) != s)
            return 0;
        if (i < 64)
            continue;  /* a decision takes well under a microsecond */
        sched_yield(); /* the worker may be waiting for this CPU */
        clock_gettime(CLOCK_MONOTONIC, &t);
        int64_t ms = (int64_t)(t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (ms > (int64_t)timeout_ms)
            return -1;
    }
}

/* Single writer (the main thread), so reading the previous word relaxed is enough: it is this
 * thread's own last store. The new word goes out with a seq_cst store: once it returns, the
 * store is ordered before everything the main thread does next (the control response, the
 * state file write), so any worker decision that happens after the caller learns of the change
 * reads this word or a later one; on x86-64 the store is an XCHG, which drains the store buffer
 * before the acknowledgement can be sent. */
uint64_t
routing_publish(struct routing *r, enum pool_id live, uint32_t standby_bp, uint32_t flags)
{
    uint64_t old = atomic_load_explicit(&r->word, memory_order_relaxed);
    uint64_t gen = (old & GEN_MASK) + 1;

    /* 2^40 changes is 35,000 years at one change per millisecond: a wrap is a bug. */
    assert(gen <= ROUTE_GENERATION_MAX);
    atomic_store_explicit(&r->word, pack(live, clamp_bp(standby_bp), flags, gen),
                          memory_order_seq_cst);
    return gen;
}

enum pool_id
route_pool_for_bucket(const struct route_word *w, uint32_t bucket)
{
    /* A threshold, not a modulus: raising standby_bp only ever adds buckets to the standby
     * side, so a ramp-up never moves a client back to live, and 0 moves everyone back. */
    return bucket < w->standby_bp ? route_other_pool(w->live) : w->live;
}

enum pool_id
route_other_pool(enum pool_id p)
{
    return p == POOL_BLUE ? POOL_GREEN : POOL_BLUE;
}

uint64_t
route_rand(uint64_t *state)
{
    uint64_t x = *state;

    assert(x != 0);
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * UINT64_C(0x2545F4914F6CDD1D);
}

/* A random number in [0, n) from the high 32 bits of the generator (its best bits) by
 * multiply-shift. The bias is at most n / 2^32, under 1e-7 for the weight sums of a pool: not
 * worth a rejection loop on the request path. */
static uint32_t
rand_below(uint64_t *rng, uint32_t n)
{
    return (uint32_t)(((route_rand(rng) >> 32) * n) >> 32);
}

uint32_t
route_bucket_random(uint64_t *rng)
{
    /* Lemire's multiply-shift with rejection: x * 10000 >> 32 maps 32 random bits to
     * [0, 10000), and rejecting the products whose low half is below 2^32 mod 10000 (7296)
     * gives every bucket exactly the same number of accepted inputs, so there is no bias. A
     * loop is taken with probability 1.7e-6. */
    const uint32_t reject_below = (uint32_t)(0u - ROUTE_BUCKETS) % ROUTE_BUCKETS;

    for (;;) {
        uint64_t m = (route_rand(rng) >> 32) * ROUTE_BUCKETS;
        if ((uint32_t)m >= reject_below)
            return (uint32_t)(m >> 32);
    }
}

/* FNV-1a spreads every input byte over the state but leaves inputs that differ in their last
 * byte close together in the high bits; the murmur3 finalizer (fmix64) then makes every input
 * bit flip each output bit with probability about 1/2, so "10.0.0.1" and "10.0.0.2" land in
 * unrelated buckets. The reduction takes the high 32 bits by multiply-shift: every bucket gets
 * 429,496 or 429,497 of the 2^32 values, a bias of 2e-6. */
uint32_t
route_bucket_hash(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = UINT64_C(0xcbf29ce484222325);

    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    return (uint32_t)(((h >> 32) * ROUTE_BUCKETS) >> 32);
}

int
route_bucket_parse(const char *val, size_t len, uint32_t *bucket)
{
    uint32_t v = 0;

    /* At most 4 digits ("9999"); no sign, no spaces, no leading zero unless it is "0". */
    if (len == 0 || len > 4 || (len > 1 && val[0] == '0'))
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (val[i] < '0' || val[i] > '9')
            return -1;
        v = v * 10 + (uint32_t)(val[i] - '0');
    }
    *bucket = v; /* < 10000 by the length check */
    return 0;
}

static bool
is_ows(char c)
{
    return c == ' ' || c == '\t';
}

int
route_cookie_find(const char *hdr, size_t hdr_len, const char *name, const char **val,
                  size_t *val_len)
{
    size_t name_len = strlen(name);
    size_t i = 0;

    if (name_len == 0)
        return -1;
    while (i < hdr_len) {
        size_t start = i, end, eq, name_end;

        while (i < hdr_len && hdr[i] != ';')
            i++;
        end = i;
        if (i < hdr_len)
            i++; /* the ';' */

        while (start < end && is_ows(hdr[start]))
            start++;
        while (end > start && is_ows(hdr[end - 1]))
            end--;
        eq = start;
        while (eq < end && hdr[eq] != '=')
            eq++;
        if (eq == end)
            continue; /* no '=': not a cookie pair */
        name_end = eq;
        while (name_end > start && is_ows(hdr[name_end - 1]))
            name_end--;
        if (name_end - start != name_len || memcmp(hdr + start, name, name_len) != 0)
            continue;

        /* The first pair with the name wins (RFC 6265 5.4: the most specific path comes
         * first). The value may be quoted (RFC 6265 4.1.1 cookie-value). */
        start = eq + 1;
        while (start < end && is_ows(hdr[start]))
            start++;
        if (end - start >= 2 && hdr[start] == '"' && hdr[end - 1] == '"') {
            start++;
            end--;
        }
        *val = hdr + start;
        *val_len = end - start;
        return 0;
    }
    return -1;
}

/* Compares the load of two servers on one worker: in-flight requests per unit of weight,
 * cross-multiplied so there is no division. Negative when a is less loaded. */
static int
cmp_load(const struct server *a, const struct server *b, int worker)
{
    uint64_t la = (uint64_t)a->w[worker].inflight * b->weight;
    uint64_t lb = (uint64_t)b->w[worker].inflight * a->weight;

    return la < lb ? -1 : la > lb;
}

static bool
candidate(const struct server *s, const struct server *exclude, uint64_t now_ms)
{
    return s != exclude && server_usable(s, now_ms);
}

/* Power of two choices: two distinct candidates drawn in proportion to weight (each by a
 * one-pass weighted reservoir, so no array is needed), and the less loaded of the two. On a
 * tie the first draw wins: it is itself a weighted random pick, so an idle pool gets exactly
 * its weights, and for equal weights it is a fair coin between the two. */
static struct server *
pick_p2c(const struct pool *pool, int worker, uint64_t *rng, uint64_t now_ms,
         const struct server *exclude)
{
    struct server *a = NULL, *b = NULL;
    uint32_t sum = 0; /* weights are 1..100: no overflow below 40 million servers */
    size_t n = 0;

    for (size_t i = 0; i < pool->nservers; i++) {
        struct server *s = pool->servers[i];
        if (!candidate(s, exclude, now_ms))
            continue;
        n++;
        sum += s->weight;
        if (rand_below(rng, sum) < s->weight)
            a = s;
    }
    if (n <= 1)
        return a;

    sum = 0;
    for (size_t i = 0; i < pool->nservers; i++) {
        struct server *s = pool->servers[i];
        if (s == a || !candidate(s, exclude, now_ms))
            continue;
        sum += s->weight;
        if (rand_below(rng, sum) < s->weight)
            b = s;
    }
    if (b == NULL) /* a concurrent health change left only a */
        return a;
    return cmp_load(b, a, worker) < 0 ? b : a;
}

/* Smooth weighted round robin (nginx's ngx_http_upstream_get_peer): every candidate's
 * current value grows by its weight, the largest is picked and loses the sum of the weights.
 * Over any window of sum(weights) picks each server gets exactly its weight, interleaved
 * (5,1,1 gives a a b a c a a). */
static struct server *
pick_rr(const struct pool *pool, int worker, uint64_t now_ms, const struct server *exclude)
{
    struct server *best = NULL;
    int32_t total = 0;

    for (size_t i = 0; i < pool->nservers; i++) {
        struct server *s = pool->servers[i];
        if (!candidate(s, exclude, now_ms))
            continue;
        s->w[worker].rr_current += (int32_t)s->weight;
        total += (int32_t)s->weight;
        if (best == NULL || s->w[worker].rr_current > best->w[worker].rr_current)
            best = s;
    }
    if (best != NULL)
        best->w[worker].rr_current -= total;
    return best;
}

/* Least in-flight requests per unit of weight on this worker. Ties are broken at random in
 * proportion to weight (a weighted reservoir over the tied servers), so an idle pool spreads
 * by weight rather than piling onto the first server. */
static struct server *
pick_least_conn(const struct pool *pool, int worker, uint64_t *rng, uint64_t now_ms,
                const struct server *exclude)
{
    struct server *best = NULL;
    uint32_t tie_sum = 0;

    for (size_t i = 0; i < pool->nservers; i++) {
        struct server *s = pool->servers[i];
        int c;
        if (!candidate(s, exclude, now_ms))
            continue;
        c = best == NULL ? -1 : cmp_load(s, best, worker);
        if (c < 0) {
            best = s;
            tie_sum = s->weight;
        } else if (c == 0) {
            tie_sum += s->weight;
            if (rand_below(rng, tie_sum) < s->weight)
                best = s;
        }
    }
    return best;
}

struct server *
route_pick_server(const struct pool *pool, enum balance balance, int worker, uint64_t *rng,
                  uint64_t now_ms, const struct server *exclude)
{
    assert(worker >= 0);
    assert(pool->nservers == 0 || worker < pool->servers[0]->nworkers);
    switch (balance) {
    case BALANCE_ROUND_ROBIN:
        return pick_rr(pool, worker, now_ms, exclude);
    case BALANCE_LEAST_CONN:
        return pick_least_conn(pool, worker, rng, now_ms, exclude);
    case BALANCE_P2C:
    default:
        return pick_p2c(pool, worker, rng, now_ms, exclude);
    }
}

bool
route_pool_usable(const struct pool *pool, uint64_t now_ms)
{
    for (size_t i = 0; i < pool->nservers; i++) {
        if (server_usable(pool->servers[i], now_ms))
            return true;
    }
    return false;
}
