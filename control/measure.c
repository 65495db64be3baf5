/* control/measure.c — one sample a second of the pool and server sums, kept in rings of
 * MEASURE_SAMPLES, and the window queries over them (DESIGN §6 gates, §7). */
#include "control/measure.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "conf/xalloc.h"

/* A ring of cumulative samples: each holds the totals since start at its time, so any window
 * is one subtraction (latest minus the window's first sample), whatever its length. */
struct series {
    struct stats_totals *s; /* owned: cap slots */
    uint64_t *t_ms;         /* owned: cap slots */
    size_t cap;             /* MEASURE_SAMPLES for a pool, MEASURE_SERVER_SAMPLES for a server */
    size_t head;            /* the slot the next sample goes to */
    size_t n;               /* samples held, <= cap; the oldest is n slots behind head */
};

/* The history of one pool and server name, across the server objects reloads give it. */
struct mserver {
    enum pool_id pool;
    char *name;                 /* owned */
    struct server *srv;         /* ref: the object sampled last under this pool and name */
    struct stats_totals last;   /* srv's own sums at the last sample */
    struct stats_totals offset; /* what earlier objects counted before srv started from zero */
    struct series ser;          /* offset + srv's sums */
};

struct measure {
    const struct stats_board *board; /* borrowed (outlives m) */
    struct series pool[POOL_COUNT];
    struct mserver **servers; /* owned array of owned entries, in the latest snapshot's order */
    size_t nservers;
    struct stats_totals raw; /* scratch for measure_sample(), too big for the stack */
};

static void
series_init(struct series *ser, size_t cap)
{
    ser->s = xcalloc(cap, sizeof(*ser->s));
    ser->t_ms = xcalloc(cap, sizeof(*ser->t_ms));
    ser->cap = cap;
    ser->head = 0;
    ser->n = 0;
}

static void
series_finish(struct series *ser)
{
    xfree(&ser->s);
    xfree(&ser->t_ms);
}

/* The slot of the k-th newest sample (0 = the latest); k < n. */
static size_t
series_idx(const struct series *ser, size_t k)
{
    assert(k < ser->n);
    return (ser->head + ser->cap - 1 - k) % ser->cap;
}

/* The slot for a sample at t_ms, for the caller to fill: the next one, or the latest one again
 * when t_ms is not after it (the times of a series only increase). Overwrites the oldest sample
 * when the ring is full. */
static struct stats_totals *
series_next(struct series *ser, uint64_t t_ms)
{
    size_t i;

    if (ser->n > 0 && t_ms <= ser->t_ms[series_idx(ser, 0)])
        return &ser->s[series_idx(ser, 0)];
    i = ser->head;
    ser->head = (ser->head + 1) % ser->cap;
    if (ser->n < ser->cap)
        ser->n++;
    ser->t_ms[i] = t_ms;
    return &ser->s[i];
}

/* The window [latest - window_ms, latest] starts at the oldest sample inside it, so span_ms
 * never exceeds window_ms; it is partial when even the oldest sample held is inside it. */
static int
series_window(const struct series *ser, uint64_t window_ms, struct measure_result *out)
{
    const struct stats_totals *latest, *first;
    struct stats_totals d;
    uint64_t t_last;
    size_t pick = 0;

    memset(out, 0, sizeof(*out));
    out->window_ms = window_ms;
    if (ser->n == 0) {
        out->partial = window_ms > 0;
        return -1;
    }
    t_last = ser->t_ms[series_idx(ser, 0)];
    for (size_t k = 1; k < ser->n && t_last - ser->t_ms[series_idx(ser, k)] <= window_ms; k++)
        pick = k;
    latest = &ser->s[series_idx(ser, 0)];
    first = &ser->s[series_idx(ser, pick)];
    stats_delta(&d, latest, first);

    out->span_ms = t_last - ser->t_ms[series_idx(ser, pick)];
    out->partial = t_last - ser->t_ms[series_idx(ser, ser->n - 1)] < window_ms;
    out->requests = d.requests;
    out->rate_per_s = out->span_ms > 0 ? (double)d.requests * 1000.0 / (double)out->span_ms : 0;
    out->errors = d.responses[5] + d.upstream_failures;
    out->error_rate = d.requests > 0 ? (double)out->errors / (double)d.requests : 0;
    out->latency_count = d.latency.count;
    out->p50_us = hist_quantile(&d.latency, 0.50);
    out->p90_us = hist_quantile(&d.latency, 0.90);
    out->p99_us = hist_quantile(&d.latency, 0.99);
    out->inflight = latest->inflight;
    out->conns = latest->conns;
    out->tunnels = latest->tunnels;
    return 0;
}

static void
series_latest(const struct series *ser, struct stats_totals *out)
{
    if (ser->n == 0)
        memset(out, 0, sizeof(*out));
    else
        *out = ser->s[series_idx(ser, 0)];
}

/* dst += src for the counters and histogram; dst's gauges are left alone. */
static void
add_counters(struct stats_totals *dst, const struct stats_totals *src)
{
    dst->requests += src->requests;
    for (int i = 0; i < STATS_CLASSES; i++)
        dst->responses[i] += src->responses[i];
    dst->upstream_failures += src->upstream_failures;
    dst->connect_errors += src->connect_errors;
    dst->timeouts += src->timeouts;
    dst->retries += src->retries;
    dst->failovers += src->failovers;
    dst->ejections += src->ejections;
    dst->bytes_in += src->bytes_in;
    dst->bytes_out += src->bytes_out;
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        dst->latency.n[i] += src->latency.n[i];
    dst->latency.count += src->latency.count;
}

static struct mserver *
entry_create(enum pool_id pool, const char *name)
{
    struct mserver *e = xcalloc(1, sizeof(*e));

    e->pool = pool;
    e->name = xstrdup(name);
    series_init(&e->ser, MEASURE_SERVER_SAMPLES);
    return e;
}

static void
entry_destroy(struct mserver **ep)
{
    struct mserver *e = *ep;

    if (e == NULL)
        return;
    *ep = NULL;
    xfree(&e->name);
    server_release(&e->srv);
    series_finish(&e->ser);
    free(e);
}

/* Removes and returns m's entry for pool and name, NULL when there is none. Tries slot hint
 * first: a reload rarely reorders servers, so a sample is O(servers), not O(servers^2). */
static struct mserver *
entry_take(struct measure *m, size_t hint, enum pool_id pool, const char *name)
{
    struct mserver *e;

    for (size_t k = 0; k <= m->nservers; k++) {
        size_t i = k == 0 ? hint : k - 1;
        if (i >= m->nservers || (e = m->servers[i]) == NULL)
            continue;
        if (e->pool == pool && strcmp(e->name, name) == 0) {
            m->servers[i] = NULL;
            return e;
        }
    }
    return NULL;
}

static const struct mserver *
entry_find(const struct measure *m, enum pool_id pool, const char *name)
{
    for (size_t i = 0; i < m->nservers; i++) {
        const struct mserver *e = m->servers[i];
        if (e->pool == pool && strcmp(e->name, name) == 0)
            return e;
    }
    return NULL;
}

/* Samples srv into e. When srv is not the object sampled last time, it either carried the old
 * one's counters (snapshot.c does so when only the weight or the worker count changed: same
 * address, counts not below the last ones) and the series just goes on, or it started from
 * zero (new address), and what the old object had counted becomes part of the offset, so the
 * series never goes backwards. */
static void
entry_sample(struct measure *m, struct mserver *e, struct server *srv, uint64_t now_ms)
{
    struct stats_totals *raw = &m->raw, *slot;

    stats_sum_blocks(raw, srv->stats, srv->nworkers);
    if (e->srv != srv) {
        if (e->srv != NULL &&
            (strcmp(e->srv->addr.text, srv->addr.text) != 0 || raw->requests < e->last.requests))
            add_counters(&e->offset, &e->last);
        server_release(&e->srv);
        e->srv = server_ref(srv);
    }
    e->last = *raw;
    slot = series_next(&e->ser, now_ms);
    *slot = *raw;
    add_counters(slot, &e->offset);
}

struct measure *
measure_create(const struct stats_board *board)
{
    struct measure *m = xcalloc(1, sizeof(*m));

    m->board = board;
    for (int p = 0; p < POOL_COUNT; p++)
        series_init(&m->pool[p], MEASURE_SAMPLES);
    return m;
}

void
measure_destroy(struct measure **mp)
{
    struct measure *m;

    if (mp == NULL || *mp == NULL)
        return;
    m = *mp;
    *mp = NULL;
    for (int p = 0; p < POOL_COUNT; p++)
        series_finish(&m->pool[p]);
    for (size_t i = 0; i < m->nservers; i++)
        entry_destroy(&m->servers[i]);
    free(m->servers);
    free(m);
}

void
measure_sample(struct measure *m, uint64_t now_ms, const struct snapshot *snap)
{
    struct mserver **next;
    size_t total = 0, k = 0;

    for (int p = 0; p < POOL_COUNT; p++)
        stats_board_pool(m->board, (enum pool_id)p, series_next(&m->pool[p], now_ms));

    /* Rebuild the entry list in snap's order, reusing entries by pool and name. */
    for (int p = 0; snap != NULL && p < POOL_COUNT; p++)
        total += snap->pools[p].nservers;
    next = xcalloc(total > 0 ? total : 1, sizeof(*next));
    for (int p = 0; snap != NULL && p < POOL_COUNT; p++) {
        for (size_t i = 0; i < snap->pools[p].nservers; i++, k++) {
            const char *name = snap->pools[p].servers[i]->name;
            next[k] = entry_take(m, k, (enum pool_id)p, name);
            if (next[k] == NULL)
                next[k] = entry_create((enum pool_id)p, name);
        }
    }
    for (size_t i = 0; i < m->nservers; i++)
        entry_destroy(&m->servers[i]); /* servers snap no longer has */
    free(m->servers);
    m->servers = next;
    m->nservers = total;

    k = 0;
    for (int p = 0; snap != NULL && p < POOL_COUNT; p++) {
        for (size_t i = 0; i < snap->pools[p].nservers; i++, k++)
            entry_sample(m, m->servers[k], snap->pools[p].servers[i], now_ms);
    }
}

int
measure_pool_window(const struct measure *m, enum pool_id pool, uint64_t window_ms,
                    struct measure_result *out)
{
    assert((int)pool >= 0 && pool < POOL_COUNT);
    return series_window(&m->pool[pool], window_ms, out);
}

int
measure_server_window(const struct measure *m, enum pool_id pool, const char *name,
                      uint64_t window_ms, struct measure_result *out)
{
    const struct mserver *e = entry_find(m, pool, name);

    if (e == NULL) {
        memset(out, 0, sizeof(*out));
        out->window_ms = window_ms;
        return -1;
    }
    return series_window(&e->ser, window_ms, out);
}

void
measure_pool_totals(const struct measure *m, enum pool_id pool, struct stats_totals *out)
{
    assert((int)pool >= 0 && pool < POOL_COUNT);
    series_latest(&m->pool[pool], out);
}

int
measure_server_totals(const struct measure *m, enum pool_id pool, const char *name,
                      struct stats_totals *out)
{
    const struct mserver *e = entry_find(m, pool, name);

    if (e == NULL) {
        memset(out, 0, sizeof(*out));
        return -1;
    }
    series_latest(&e->ser, out);
    return 0;
}

int
measure_latest_ms(const struct measure *m, uint64_t *now_ms)
{
    const struct series *ser = &m->pool[0];

    if (ser->n == 0)
        return -1;
    *now_ms = ser->t_ms[series_idx(ser, 0)];
    return 0;
}
