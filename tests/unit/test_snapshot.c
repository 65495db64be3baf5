/* tests/unit/test_snapshot.c — building snapshots from a conf, sharing servers across reloads,
 * marking removed servers, and reference counting (run it under ASan and TSan too). */
#include "proxy/snapshot.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/xalloc.h"
#include "proxy/stats.h"
#include "fixture.h"
#include "tap.h"

static const struct spec blue1[] = {
    {"b1", "10.0.1.1", 8000, 1},
    {"b2", "10.0.1.2", 8000, 2},
};
static const struct spec green1[] = {
    {"g1", "10.0.2.1", 8000, 1},
    {"g2", "10.0.2.2", 8000, 1},
};
/* reload: b1 kept, b2 removed, b3 added; g1 weight 1 → 3; g2 moved to another port */
static const struct spec blue2[] = {
    {"b1", "10.0.1.1", 8000, 1},
    {"b3", "10.0.1.3", 8000, 1},
};
static const struct spec green2[] = {
    {"g1", "10.0.2.1", 8000, 3},
    {"g2", "10.0.2.2", 8001, 1},
};

static int
slots_zeroed(const struct server *s)
{
    const unsigned char *p = (const unsigned char *)s->w;
    size_t n = (size_t)s->nworkers * sizeof(*s->w);

    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return 0;
    return 1;
}

static int
stats_zeroed(const struct server *s)
{
    const unsigned char *p = (const unsigned char *)s->stats;
    size_t n = (size_t)s->nworkers * sizeof(*s->stats);

    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return 0;
    return 1;
}

/* Worker w of srv served k requests: counters, gauges and k durations. */
static void
load_stats(struct server *srv, int w, uint64_t k)
{
    struct stats_block *b = &srv->stats[w];

    stats_add(&b->requests, k);
    stats_add(&b->responses[2], k - 1);
    stats_add(&b->responses[5], 1);
    stats_add(&b->upstream_failures, 2);
    stats_add(&b->bytes_out, 100 * k);
    stats_add(&b->ejections, 1);
    stats_gauge(&b->inflight, 3);
    stats_gauge(&b->conns, 4);
    stats_gauge(&b->tunnels, 1);
    for (uint64_t i = 0; i < k; i++)
        hist_record(&b->latency, 1000 + 7 * i);
}

/* Whether the counters and histogram of a equal b's and a's gauges are zero. */
static int
counters_carried(const struct stats_totals *a, const struct stats_totals *b)
{
    struct stats_totals *x = xcalloc(1, sizeof(*x));
    int same;

    *x = *b;
    x->inflight = x->conns = x->tunnels = 0;
    same = memcmp(a, x, sizeof(*x)) == 0;
    free(x);
    return same;
}

static int
srv_health(const struct server *s)
{
    return atomic_load(&s->health);
}

static int
srv_admin(const struct server *s)
{
    return atomic_load(&s->admin);
}

static int
srv_refs(const struct server *s)
{
    return atomic_load(&s->refs);
}

static void
test_create(void)
{
    struct conf *c = mkconf(blue1, N(blue1), green1, N(green1));
    struct snapshot *s = snapshot_create(c, NULL, 4, HEALTH_UNKNOWN);
    int bad = 0;

    ok(s != NULL && s->serial == 1 && s->nworkers == 4 && atomic_load(&s->refs) == 1,
       "first snapshot: serial 1, 4 workers, one ref");
    ok(s->conf == c, "snapshot owns the conf it was given");
    for (int p = 0; p < POOL_COUNT; p++) {
        const struct conf_pool *cp = &c->pools[p];
        const struct pool *pool = &s->pools[p];
        uint32_t tw = 0;

        if (pool->id != (enum pool_id)p || pool->conf != cp || pool->nservers != cp->nservers)
            bad++;
        for (size_t i = 0; i < pool->nservers; i++) {
            const struct server *srv = pool->servers[i];
            tw += cp->servers[i].weight;
            if (strcmp(srv->name, cp->servers[i].name) != 0 || srv->name == cp->servers[i].name ||
                strcmp(srv->addr.text, cp->servers[i].addr.text) != 0 ||
                memcmp(&srv->addr.ss, &cp->servers[i].addr.ss, sizeof(srv->addr.ss)) != 0 ||
                srv->addr.len != cp->servers[i].addr.len || srv->weight != cp->servers[i].weight ||
                srv->pool != (enum pool_id)p || srv_health(srv) != HEALTH_UNKNOWN ||
                srv_admin(srv) != ADMIN_READY || atomic_load(&srv->ejected_until_ms) != 0 ||
                atomic_load(&srv->removed) || srv_refs(srv) != 1 || srv->nworkers != 4 ||
                ((uintptr_t)srv->w % 64) != 0 || !slots_zeroed(srv) || srv->stats == NULL ||
                ((uintptr_t)srv->stats % 64) != 0 || !stats_zeroed(srv)) {
                bad++;
                diag("pool %d server %zu does not match its conf", p, i);
            }
        }
        if (pool->total_weight != tw)
            bad++;
    }
    ok(bad == 0,
       "pools and servers match the conf (names copied, addr, weight, state, slots, zeroed "
       "aligned stats blocks)");
    ok(s->pools[POOL_BLUE].total_weight == 3 && s->pools[POOL_GREEN].total_weight == 2,
       "total weights 3 and 2");
    ok(snapshot_find_server(s, POOL_BLUE, "b2") == s->pools[POOL_BLUE].servers[1],
       "find_server finds b2");
    ok(snapshot_find_server(s, POOL_GREEN, "b2") == NULL &&
           snapshot_find_server(s, POOL_BLUE, "nope") == NULL,
       "find_server: wrong pool or unknown name → NULL");
    snapshot_release(&s);
    ok(s == NULL, "release clears the caller's pointer");
}

static void
test_reload(void)
{
    struct snapshot *s1 =
        snapshot_create(mkconf(blue1, N(blue1), green1, N(green1)), NULL, 4, HEALTH_UNKNOWN);
    struct server *b1 = snapshot_find_server(s1, POOL_BLUE, "b1");
    struct server *b2 = snapshot_find_server(s1, POOL_BLUE, "b2");
    struct server *g1 = snapshot_find_server(s1, POOL_GREEN, "g1");
    struct server *g2 = snapshot_find_server(s1, POOL_GREEN, "g2");
    struct snapshot *s2, *s3;
    struct server *n_b1, *n_b3, *n_g1, *n_g2;
    struct stats_totals *t_old = xcalloc(1, sizeof(*t_old)), *t_new = xcalloc(1, sizeof(*t_new));
    struct stats_block *b1_stats = b1->stats;

    atomic_store(&b1->health, HEALTH_UP);
    atomic_store(&b1->admin, ADMIN_DRAIN);
    atomic_store(&b1->ejected_until_ms, 777);
    b1->w[2].inflight = 3;
    atomic_store(&b2->health, HEALTH_UP);
    atomic_store(&g1->health, HEALTH_UP);
    atomic_store(&g1->admin, ADMIN_MAINT);
    atomic_store(&g1->ejected_until_ms, 999);
    atomic_store(&g2->health, HEALTH_UP);
    load_stats(b1, 0, 5);
    load_stats(b1, 3, 2);
    load_stats(g1, 1, 10);
    load_stats(g1, 2, 4);
    load_stats(g2, 0, 6);

    s2 = snapshot_create(mkconf(blue2, N(blue2), green2, N(green2)), s1, 4, HEALTH_DOWN);
    n_b1 = snapshot_find_server(s2, POOL_BLUE, "b1");
    n_b3 = snapshot_find_server(s2, POOL_BLUE, "b3");
    n_g1 = snapshot_find_server(s2, POOL_GREEN, "g1");
    n_g2 = snapshot_find_server(s2, POOL_GREEN, "g2");

    ok(s2->serial == 2, "reload: serial 2");
    ok(snapshot_find_server(s2, POOL_BLUE, "b2") == NULL, "reload: b2 gone");
    ok(n_b1 == b1, "kept server is pointer-identical");
    ok(srv_health(n_b1) == HEALTH_UP && srv_admin(n_b1) == ADMIN_DRAIN &&
           atomic_load(&n_b1->ejected_until_ms) == 777 && n_b1->w[2].inflight == 3,
       "kept server keeps health, admin, ejection and worker slots");
    ok(srv_refs(b1) == 2, "kept server is referenced by both snapshots (refs %d)", srv_refs(b1));
    ok(n_b3 != NULL && srv_health(n_b3) == HEALTH_DOWN && srv_admin(n_b3) == ADMIN_READY &&
           srv_refs(n_b3) == 1,
       "added server starts at initial_health (down), ready");
    ok(n_g1 != NULL && n_g1 != g1 && n_g1->weight == 3 && g1->weight == 1,
       "weight change: a new server with the new weight, the old one untouched");
    ok(srv_health(n_g1) == HEALTH_UP && srv_admin(n_g1) == ADMIN_MAINT &&
           atomic_load(&n_g1->ejected_until_ms) == 999,
       "weight change copies health, admin and ejection state");
    ok(slots_zeroed(n_g1) && ((uintptr_t)n_g1->w % 64) == 0, "weight change: fresh slots");
    ok(n_b1->stats == b1_stats, "kept server keeps its stats blocks (pointer-identical)");
    ok(n_b3->stats != NULL && ((uintptr_t)n_b3->stats % 64) == 0 && stats_zeroed(n_b3),
       "added server: zeroed, aligned stats blocks");
    stats_sum_blocks(t_old, g1->stats, g1->nworkers);
    stats_sum_blocks(t_new, n_g1->stats, n_g1->nworkers);
    ok(n_g1->stats != g1->stats && t_old->requests == 14 && counters_carried(t_new, t_old),
       "weight change: counters and histogram copied into the new server");
    ok(t_new->inflight == 0 && t_new->conns == 0 && t_new->tunnels == 0 && t_old->inflight == 6,
       "weight change: gauges start at 0 (what they count ends on the old server)");
    {
        struct stats_totals *w1 = xcalloc(1, sizeof(*w1));
        stats_sum_blocks(w1, &n_g1->stats[1], 1);
        ok(w1->requests == 10 && w1->latency.count == 10,
           "weight change, same workers: worker 1's block goes to worker 1's");
        free(w1);
    }
    stats_sum_blocks(t_old, g1->stats, g1->nworkers);
    ok(t_old->requests == 14 && t_old->inflight == 6,
       "weight change: old server's stats untouched");
    ok(stats_zeroed(n_g2), "address change: a new server with zeroed stats");
    ok(n_g2 != NULL && n_g2 != g2 && srv_health(n_g2) == HEALTH_DOWN &&
           strcmp(n_g2->addr.text, "10.0.2.2:8001") == 0,
       "address change: a new server at initial_health");
    ok(s2->pools[POOL_GREEN].total_weight == 4 && s2->pools[POOL_BLUE].total_weight == 2,
       "reload: total weights follow the new conf");
    ok(s2->pools[POOL_BLUE].conf == &s2->conf->pools[POOL_BLUE], "pool.conf points into new conf");

    ok(!atomic_load(&b2->removed) && !atomic_load(&g1->removed), "nothing removed before mark");
    snapshot_mark_removed(s1, s2);
    ok(atomic_load(&b2->removed), "removed server is marked");
    ok(atomic_load(&g1->removed) && atomic_load(&g2->removed),
       "replaced servers (weight, address change) of the old snapshot are marked");
    ok(!atomic_load(&b1->removed) && !atomic_load(&n_b3->removed) && !atomic_load(&n_g1->removed) &&
           !atomic_load(&n_g2->removed),
       "kept and new servers are not marked");
    ok(!server_usable(b2, 1000000), "a removed server is not usable");

    /* More workers: nothing can be shared (slots too few), state is copied. */
    s3 = snapshot_create(mkconf(blue2, N(blue2), green2, N(green2)), s2, 8, HEALTH_UNKNOWN);
    {
        struct server *x_b1 = snapshot_find_server(s3, POOL_BLUE, "b1");
        ok(s3->serial == 3 && x_b1 != b1 && x_b1->nworkers == 8 && srv_health(x_b1) == HEALTH_UP &&
               srv_admin(x_b1) == ADMIN_DRAIN,
           "worker count change: new servers with copied state");
        stats_sum_blocks(t_old, b1->stats, b1->nworkers);
        stats_sum_blocks(t_new, x_b1->stats, x_b1->nworkers);
        ok(t_old->requests == 7 && counters_carried(t_new, t_old),
           "worker count change (4 -> 8): counters and histogram carried");
    }
    /* Fewer workers: the extra blocks fold into block 0. */
    {
        struct snapshot *s5 =
            snapshot_create(mkconf(blue2, N(blue2), green2, N(green2)), s2, 2, HEALTH_UNKNOWN);
        struct server *y_b1 = snapshot_find_server(s5, POOL_BLUE, "b1");
        struct stats_totals *w0 = xcalloc(1, sizeof(*w0));

        stats_sum_blocks(t_old, b1->stats, b1->nworkers);
        stats_sum_blocks(t_new, y_b1->stats, y_b1->nworkers);
        stats_sum_blocks(w0, &y_b1->stats[0], 1);
        ok(y_b1->nworkers == 2 && counters_carried(t_new, t_old) && w0->requests == 7,
           "worker count change (4 -> 2): worker 3's block folds into block 0");
        free(w0);
        snapshot_release(&s5);
    }
    /* Same conf again, same workers: everything is shared. */
    {
        struct snapshot *s4 =
            snapshot_create(mkconf(blue2, N(blue2), green2, N(green2)), s3, 8, HEALTH_UNKNOWN);
        int shared = 0;
        for (int p = 0; p < POOL_COUNT; p++)
            for (size_t i = 0; i < s4->pools[p].nservers; i++)
                shared += s4->pools[p].servers[i] == s3->pools[p].servers[i];
        ok(shared == 4 && s4->serial == 4, "unchanged reload shares every server");
        snapshot_mark_removed(s3, s4);
        ok(!atomic_load(&s3->pools[POOL_BLUE].servers[0]->removed),
           "unchanged reload marks nothing removed");
        snapshot_release(&s4);
    }

    /* Release in creation order; a server ref outlives both snapshots. */
    server_ref(b1);
    snapshot_release(&s1);
    ok(s1 == NULL && srv_refs(b1) == 2, "after releasing s1: b1 refs 2 (s2 + ours)");
    snapshot_release(&s3);
    snapshot_release(&s2);
    ok(s2 == NULL && srv_refs(b1) == 1 && strcmp(b1->name, "b1") == 0,
       "after releasing s2: b1 still alive on our ref");
    server_release(&b1);
    ok(b1 == NULL, "server_release clears the pointer");
    free(t_old);
    free(t_new);
}

static void
test_release_orders(void)
{
    /* newest first, with an extra snapshot ref released last */
    struct snapshot *s1 =
        snapshot_create(mkconf(blue1, N(blue1), green1, N(green1)), NULL, 2, HEALTH_UP);
    struct snapshot *s2 =
        snapshot_create(mkconf(blue2, N(blue2), green2, N(green2)), s1, 2, HEALTH_UP);
    struct snapshot *extra = snapshot_ref(s1);
    struct snapshot *null_snap = NULL;
    struct server *null_srv = NULL;

    ok(extra == s1 && atomic_load(&s1->refs) == 2, "snapshot_ref returns it, refs 2");
    snapshot_mark_removed(s1, s2);
    snapshot_release(&s2);
    snapshot_release(&s1);
    ok(s1 == NULL && s2 == NULL && atomic_load(&extra->refs) == 1, "two releases, one ref left");
    ok(strcmp(extra->pools[POOL_BLUE].servers[0]->name, "b1") == 0,
       "snapshot and its servers alive while a ref is held");
    snapshot_release(&extra);
    ok(extra == NULL, "last release frees (ASan checks no leak, no use after free)");

    snapshot_release(&null_snap);
    snapshot_release(NULL);
    server_release(&null_srv);
    server_release(NULL);
    ok(1, "release accepts NULL and a pointer to NULL");
}

static void
test_usable(void)
{
    struct snapshot *s =
        snapshot_create(mkconf(blue1, N(blue1), green1, N(green1)), NULL, 1, HEALTH_UNKNOWN);
    struct server *b = s->pools[POOL_BLUE].servers[0];

    ok(!server_usable(b, 0), "unknown health: not usable");
    atomic_store(&b->health, HEALTH_UP);
    ok(server_usable(b, 0), "up and ready: usable");
    atomic_store(&b->health, HEALTH_DOWN);
    ok(!server_usable(b, 0), "down: not usable");
    atomic_store(&b->health, HEALTH_UP);
    atomic_store(&b->admin, ADMIN_DRAIN);
    ok(!server_usable(b, 0), "drain: not usable");
    atomic_store(&b->admin, ADMIN_MAINT);
    ok(!server_usable(b, 0), "maint: not usable");
    atomic_store(&b->admin, ADMIN_READY);
    atomic_store(&b->ejected_until_ms, 5000);
    ok(!server_usable(b, 4999), "ejected until 5000: not usable at 4999");
    ok(server_usable(b, 5000), "usable again at 5000");
    atomic_store(&b->removed, true);
    ok(!server_usable(b, 6000), "removed: not usable");
    snapshot_release(&s);
}

/* Workers taking and dropping refs while the main thread drops its own: the last one frees. */
#define NTHREADS 4
#define NITER 20000

static void *
holder_main(void *arg)
{
    struct snapshot *mine = arg; /* a ref handed over by the creator */
    size_t len = 0;

    for (int i = 0; i < NITER; i++) {
        struct snapshot *r = snapshot_ref(mine);
        struct server *srv = server_ref(r->pools[i & 1].servers[0]);
        len += strlen(srv->name) + r->pools[POOL_BLUE].nservers;
        server_release(&srv);
        snapshot_release(&r);
    }
    snapshot_release(&mine);
    return (void *)len;
}

static void
test_threads(void)
{
    struct snapshot *s =
        snapshot_create(mkconf(blue1, N(blue1), green1, N(green1)), NULL, 4, HEALTH_UP);
    pthread_t t[NTHREADS];
    size_t total = 0;

    for (int i = 0; i < NTHREADS; i++)
        pthread_create(&t[i], NULL, holder_main, snapshot_ref(s));
    snapshot_release(&s);
    for (int i = 0; i < NTHREADS; i++) {
        void *ret;
        pthread_join(t[i], &ret);
        total += (size_t)ret;
    }
    ok(total == (size_t)NTHREADS * NITER * 4,
       "%d threads x %d ref/release pairs; the last holder frees (TSan/ASan clean)", NTHREADS,
       NITER);
}

int
main(void)
{
    test_create();
    test_reload();
    test_release_orders();
    test_usable();
    test_threads();
    return done_testing();
}
