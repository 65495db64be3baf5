/* proxy/snapshot.c — the reference-counted config snapshot and the servers it shares with the
 * snapshot before it across reloads (DESIGN §3, kind 1). */
#include "proxy/snapshot.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/xalloc.h"
#include "proxy/stats.h"
#include "proxy/tls.h"

/* Reference counts: taking a reference needs one already held (the holder's own, or the
 * publisher's), so the object cannot go away meanwhile and the increment needs no ordering:
 * relaxed. The decrement is acq_rel: its release half orders everything this holder did with
 * the object before the drop, and the acquire half lets the thread that drops the last
 * reference see all of those before it frees (the pattern of Boost's and the kernel's
 * refcounts). */

static struct server_wslot *
wslots_create(int nworkers)
{
    size_t bytes = (size_t)nworkers * sizeof(struct server_wslot);
    struct server_wslot *w;

    _Static_assert(sizeof(struct server_wslot) % 64 == 0, "slots must not share cache lines");
    w = aligned_alloc(64, bytes); /* bytes is a multiple of 64, as aligned_alloc requires */
    if (w == NULL) {
        fprintf(stderr, "switchyard: out of memory allocating %zu bytes\n", bytes);
        abort();
    }
    memset(w, 0, bytes);
    return w;
}

static struct server *
server_create(const struct conf_server *cs, enum pool_id pool, int nworkers,
              enum health_state health)
{
    struct server *srv = xcalloc(1, sizeof(*srv));

    atomic_init(&srv->refs, 1);
    srv->name = xstrdup(cs->name);
    srv->pool = pool;
    srv->addr = cs->addr;
    /* conf validates 1..100; 0 would make a server unpickable and break the load ratios. */
    srv->weight = cs->weight ? cs->weight : 1;
    atomic_init(&srv->health, (int)health);
    atomic_init(&srv->admin, (int)ADMIN_READY);
    atomic_init(&srv->ejected_until_ms, 0);
    atomic_init(&srv->consecutive_failures, 0);
    atomic_init(&srv->eject_level, 0);
    atomic_init(&srv->removed, false);
    srv->nworkers = nworkers;
    srv->w = wslots_create(nworkers);
    srv->stats = stats_blocks_create(nworkers);
    return srv;
}

static struct server *
find_prev(const struct snapshot *prev, enum pool_id pool, const struct conf_server *cs)
{
    if (prev == NULL)
        return NULL;
    for (size_t i = 0; i < prev->pools[pool].nservers; i++) {
        struct server *s = prev->pools[pool].servers[i];
        if (strcmp(s->name, cs->name) == 0 && strcmp(s->addr.text, cs->addr.text) == 0)
            return s;
    }
    return NULL;
}

/* Carries old's counters and histograms into srv, which replaces it for the same pool and name,
 * so that what the control plane reads for that pool and name never goes backwards. Worker i's
 * block goes to worker i's; when there are fewer workers now, the extra blocks fold into block
 * 0 (readers only ever use the sum).
 *
 * The gauges (inflight, conns, tunnels) are not copied: the requests, connections and tunnels
 * they count hold old, not srv, and decrement old's blocks when they end, so a copy in srv
 * would never come back down. srv's gauges count what srv itself carries.
 *
 * Reads of old are relaxed: workers may still be updating it (requests that started on the
 * previous snapshot); what lands on old after this copy stays with old. srv is not published
 * yet, so no worker writes its blocks meanwhile. */
static void
carry_stats(struct server *srv, const struct server *old)
{
    struct stats_totals *t = xcalloc((size_t)srv->nworkers, sizeof(*t));

    for (int i = 0; i < old->nworkers; i++)
        stats_sum(&t[i < srv->nworkers ? i : 0], &old->stats[i]);
    for (int i = 0; i < srv->nworkers; i++) {
        t[i].inflight = 0;
        t[i].conns = 0;
        t[i].tunnels = 0;
        stats_block_store(&srv->stats[i], &t[i]);
    }
    free(t);
}

/* The server for cs in the new snapshot: the previous one when nothing about it changed, so
 * its state, slots and idle connections carry over; a new one that copies the previous one's
 * health, admin and ejection state and carries its counters over (carry_stats) when only its
 * weight (immutable in a server), the number of workers or its pool's upstream TLS settings
 * (its idle connections and TLS sessions were made with the old ones) changed; else a new server
 * starting at initial_health with zeroed counters. */
static struct server *
server_for(const struct conf_server *cs, const struct snapshot *prev, const struct conf_pool *cp,
           enum pool_id pool, int nworkers, enum health_state initial_health)
{
    struct server *old = find_prev(prev, pool, cs);
    struct server *srv;
    enum health_state health;
    uint32_t weight = cs->weight ? cs->weight : 1;

    if (old == NULL)
        return server_create(cs, pool, nworkers, initial_health);
    if (old->weight == weight && old->nworkers == nworkers &&
        conf_upstream_tls_equal(&prev->pools[pool].conf->tls, &cp->tls))
        return server_ref(old);
    /* Relaxed: each field is an independent word, and the main thread, which runs this, is
     * the one that writes them (health checks, control API, ejection timers). */
    health = (enum health_state)atomic_load_explicit(&old->health, memory_order_relaxed);
    srv = server_create(cs, pool, nworkers, health);
    atomic_store_explicit(&srv->admin, atomic_load_explicit(&old->admin, memory_order_relaxed),
                          memory_order_relaxed);
    atomic_store_explicit(&srv->ejected_until_ms,
                          atomic_load_explicit(&old->ejected_until_ms, memory_order_relaxed),
                          memory_order_relaxed);
    carry_stats(srv, old);
    return srv;
}

struct snapshot *
snapshot_create(struct conf *conf, const struct snapshot *prev, int nworkers,
                enum health_state initial_health)
{
    struct snapshot *s = xcalloc(1, sizeof(*s));

    assert(nworkers >= 1 && nworkers <= MAX_WORKERS);
    atomic_init(&s->refs, 1);
    s->serial = prev != NULL ? prev->serial + 1 : 1;
    s->conf = conf;
    s->nworkers = nworkers;
    for (int p = 0; p < POOL_COUNT; p++) {
        const struct conf_pool *cp = &conf->pools[p];
        struct pool *pool = &s->pools[p];

        pool->id = (enum pool_id)p;
        pool->conf = cp;
        pool->nservers = cp->nservers;
        pool->servers = xcalloc(cp->nservers, sizeof(*pool->servers));
        pool->total_weight = 0;
        for (size_t i = 0; i < cp->nservers; i++) {
            pool->servers[i] =
                server_for(&cp->servers[i], prev, cp, (enum pool_id)p, nworkers, initial_health);
            pool->total_weight += pool->servers[i]->weight;
        }
    }
    return s;
}

static bool
pool_contains(const struct pool *pool, const struct server *srv)
{
    for (size_t i = 0; i < pool->nservers; i++) {
        if (pool->servers[i] == srv)
            return true;
    }
    return false;
}

void
snapshot_mark_removed(const struct snapshot *old, const struct snapshot *next)
{
    for (int p = 0; p < POOL_COUNT; p++) {
        const struct pool *pool = &old->pools[p];
        for (size_t i = 0; i < pool->nservers; i++) {
            struct server *srv = pool->servers[i];
            /* Relaxed: a worker that sees the flag one request late still finds the server
             * absent from the new snapshot it routes with; the flag only tells it to close
             * idle connections. */
            if (!pool_contains(&next->pools[p], srv))
                atomic_store_explicit(&srv->removed, true, memory_order_relaxed);
        }
    }
}

struct snapshot *
snapshot_ref(struct snapshot *s)
{
    int prev = atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    assert(prev > 0);
    (void)prev;
    return s;
}

void
snapshot_release(struct snapshot **sp)
{
    struct snapshot *s;
    int prev;

    if (sp == NULL || *sp == NULL)
        return;
    s = *sp;
    *sp = NULL;
    prev = atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel);
    assert(prev > 0);
    if (prev != 1)
        return;
    for (int p = 0; p < POOL_COUNT; p++) {
        struct pool *pool = &s->pools[p];
        for (size_t i = 0; i < pool->nservers; i++)
            server_release(&pool->servers[i]);
        xfree(&pool->servers);
        SSL_CTX_free(pool->tls);
    }
    conf_destroy(&s->conf);
    free(s);
}

struct server *
server_ref(struct server *srv)
{
    int prev = atomic_fetch_add_explicit(&srv->refs, 1, memory_order_relaxed);
    assert(prev > 0);
    (void)prev;
    return srv;
}

void
server_release(struct server **srvp)
{
    struct server *srv;
    int prev;

    if (srvp == NULL || *srvp == NULL)
        return;
    srv = *srvp;
    *srvp = NULL;
    prev = atomic_fetch_sub_explicit(&srv->refs, 1, memory_order_acq_rel);
    assert(prev > 0);
    if (prev != 1)
        return;
    xfree(&srv->name);
    for (int i = 0; i < srv->nworkers; i++)
        SSL_SESSION_free(srv->w[i].tls_session);
    xfree(&srv->w);
    stats_blocks_destroy(&srv->stats);
    free(srv);
}

/* Relaxed loads are enough: each field is a single word written by the main thread, nothing
 * else is read through it, and a worker that sees a change one request late is harmless (an
 * in-flight check racing a health change is inherent; the routing word, not these, carries the
 * rollback guarantee). */
bool
server_usable(const struct server *srv, uint64_t now_ms)
{
    return atomic_load_explicit(&srv->health, memory_order_relaxed) == HEALTH_UP &&
           atomic_load_explicit(&srv->admin, memory_order_relaxed) == ADMIN_READY &&
           atomic_load_explicit(&srv->ejected_until_ms, memory_order_relaxed) <= now_ms &&
           !atomic_load_explicit(&srv->removed, memory_order_relaxed);
}

struct server *
snapshot_find_server(const struct snapshot *s, enum pool_id pool, const char *name)
{
    const struct pool *p = &s->pools[pool];

    for (size_t i = 0; i < p->nservers; i++) {
        if (strcmp(p->servers[i]->name, name) == 0)
            return p->servers[i];
    }
    return NULL;
}

int
snapshot_tls_init(struct snapshot *s, char *err, size_t errlen)
{
    SSL_CTX *ctx[POOL_COUNT] = {NULL};
    for (int p = 0; p < POOL_COUNT; p++) {
        const struct conf_upstream_tls *t = &s->pools[p].conf->tls;
        if (!t->enabled)
            continue;
        char e[400];
        ctx[p] = tls_client_ctx_create(t, e, sizeof(e));
        if (ctx[p] == NULL) {
            snprintf(err, errlen, "pools.%s.tls: %s", conf_pool_name((enum pool_id)p), e);
            for (int q = 0; q < p; q++)
                SSL_CTX_free(ctx[q]);
            return -1;
        }
    }
    for (int p = 0; p < POOL_COUNT; p++)
        s->pools[p].tls = ctx[p];
    return 0;
}
