/* proxy/eject.c — passive ejection shared by the workers through per-server atomics. */
#include "proxy/eject.h"

#include "proxy/log.h"

/* The counters are shared by every worker: relaxed atomics are enough for counting (an
 * ejection decided one failure late is harmless); the ejection itself is a compare-and-swap on
 * the deadline so two workers never eject one server twice. */

unsigned
eject_count(const struct pool *pool, uint64_t now_ms)
{
    unsigned n = 0;
    for (size_t i = 0; i < pool->nservers; i++)
        if (atomic_load_explicit(&pool->servers[i]->ejected_until_ms, memory_order_relaxed) >
            now_ms)
            n++;
    return n;
}

void
eject_success(struct server *srv)
{
    /* Load first: the common case writes nothing, so the line stays shared between workers. */
    if (atomic_load_explicit(&srv->consecutive_failures, memory_order_relaxed) != 0)
        atomic_store_explicit(&srv->consecutive_failures, 0, memory_order_relaxed);
}

bool
eject_failure(const struct pool *pool, struct server *srv, uint64_t now_ms)
{
    const struct conf_passive *pc = &pool->conf->health.passive;
    if (pc->consecutive_failures == 0)
        return false;
    unsigned n = atomic_fetch_add_explicit(&srv->consecutive_failures, 1, memory_order_relaxed) + 1;
    if (n < pc->consecutive_failures)
        return false;
    uint64_t until = atomic_load_explicit(&srv->ejected_until_ms, memory_order_relaxed);
    if (until > now_ms)
        return false; /* already out */
    unsigned max = (unsigned)(pool->nservers * pc->max_ejection_percent / 100);
    if (eject_count(pool, now_ms) >= max)
        return false; /* the pool keeps its share of servers, fit or not */
    unsigned level = atomic_load_explicit(&srv->eject_level, memory_order_relaxed);
    if (until + EJECT_MAX_MS < now_ms)
        level = 0; /* long enough since the last ejection: start over */
    uint64_t ms = pc->ejection_time_ms;
    for (unsigned i = 0; i < level && ms < EJECT_MAX_MS; i++)
        ms *= 2;
    if (ms > EJECT_MAX_MS)
        ms = EJECT_MAX_MS;
    if (!atomic_compare_exchange_strong_explicit(&srv->ejected_until_ms, &until, now_ms + ms,
                                                 memory_order_relaxed, memory_order_relaxed))
        return false; /* another worker ejected it first */
    atomic_store_explicit(&srv->eject_level, level + 1 < 16 ? level + 1 : 16, memory_order_relaxed);
    atomic_store_explicit(&srv->consecutive_failures, 0, memory_order_relaxed);
    log_warn("server %s/%s ejected for %llu ms after %u consecutive failures",
             conf_pool_name(srv->pool), srv->name, (unsigned long long)ms, n);
    return true;
}
