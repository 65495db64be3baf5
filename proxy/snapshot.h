/* proxy/snapshot.h — the published config snapshot: a struct conf plus the pools and servers
 * derived from it (DESIGN §3, kind 1).
 *
 * A snapshot is immutable once published and reference counted; a request holds the snapshot it
 * started with. Servers are shared between consecutive snapshots when pool, name and address
 * match, so their health, admin state and idle connections survive a reload. */
#ifndef PROXY_SNAPSHOT_H
#define PROXY_SNAPSHOT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "conf/conf.h"

#define MAX_WORKERS 64

enum health_state {
    HEALTH_UNKNOWN = 0,
    HEALTH_UP,
    HEALTH_DOWN,
};

enum admin_state {
    ADMIN_READY = 0,
    ADMIN_DRAIN,
    ADMIN_MAINT,
};

struct upconn;
struct stats_block;

/* One per worker and server; written only by its worker (never by another thread), so the
 * alignment keeps two workers from sharing a cache line. */
struct server_wslot {
    _Alignas(64) uint32_t inflight; /* requests of this worker in flight on this server */
    uint32_t nidle;                 /* idle upstream connections in the list below */
    struct upconn *idle_head;       /* borrowed list (owned by the worker's upstream module) */
    int32_t rr_current;             /* smooth weighted round robin state */
    uint32_t open_conns;            /* upstream connections open from this worker */
    SSL_SESSION *tls_session;       /* owned: the last TLS session the server gave (resumption) */
};

struct server {
    atomic_int refs;
    char *name; /* owned */
    enum pool_id pool;
    struct conf_addr addr;
    uint32_t weight;
    /* Written by the main thread, read by workers per request: relaxed loads are enough, a worker
     * seeing a change one request late is harmless (the routing word carries the guarantee). */
    atomic_int health;                     /* enum health_state */
    atomic_int admin;                      /* enum admin_state */
    atomic_uint_fast64_t ejected_until_ms; /* passive ejection deadline (CLOCK_MONOTONIC ms) */
    atomic_uint consecutive_failures;      /* passive: failures since the last success */
    atomic_uint eject_level;               /* passive: ejection time is doubled this often */
    atomic_bool removed;                   /* no longer in the published config */
    int nworkers;
    struct server_wslot *w;    /* owned: nworkers slots, 64-byte aligned */
    struct stats_block *stats; /* owned: nworkers blocks (proxy/stats.h), one per worker */
};

struct pool {
    enum pool_id id;
    const struct conf_pool *conf; /* borrowed (lives while the snapshot does) */
    struct server **servers;      /* owned array of refs */
    size_t nservers;
    uint32_t total_weight;
    SSL_CTX *tls; /* owned ref: the upstream TLS client context; NULL for a plain pool */
};

struct snapshot {
    atomic_int refs;
    uint64_t serial;   /* 1 for the first config, +1 per successful reload */
    struct conf *conf; /* owned */
    struct pool pools[POOL_COUNT];
    int nworkers;
};

/* Builds a snapshot from conf (takes ownership of it) for nworkers workers. Servers of prev (may
 * be NULL) whose pool, name and address match are shared (ref taken), keeping their state; new
 * servers start with health `initial_health`. Returns a snapshot with one ref. Main thread. */
struct snapshot *snapshot_create(struct conf *conf, const struct snapshot *prev, int nworkers,
                                 enum health_state initial_health);

/* Gives every pool with a tls: section its client context (tls_client_ctx_create). Call before
 * publishing s. -1 with a message naming the pool and file in err (an unreadable CA file), and s
 * is left as it was. Main thread. */
int snapshot_tls_init(struct snapshot *s, char *err, size_t errlen);

/* Marks the servers of old that next does not contain as removed (workers then close their idle
 * connections to them). Main thread, after publishing next. */
void snapshot_mark_removed(const struct snapshot *old, const struct snapshot *next);

/* Takes a reference. Any thread holding a reference. */
struct snapshot *snapshot_ref(struct snapshot *s);

/* Drops a reference and clears *s; frees on the last one. Accepts NULL. Any thread. */
void snapshot_release(struct snapshot **s);

struct server *server_ref(struct server *srv);
void server_release(struct server **srv);

/* Whether a server may take new requests now: health up, admin ready, not ejected, not removed.
 * Any thread. */
bool server_usable(const struct server *srv, uint64_t now_ms);

/* Sets a server's admin state (DESIGN §5): drain takes no new requests (in-flight ones and
 * tunnels finish), maint takes none and is not health-checked. The internal API the control
 * socket calls. Main thread; workers see it on their next pick (relaxed is enough: a request
 * picked a moment before the change finishes like any in-flight one). */
static inline void
server_set_admin(struct server *srv, enum admin_state st)
{
    atomic_store_explicit(&srv->admin, (int)st, memory_order_relaxed);
}

/* Finds a server by pool and name; NULL when absent. */
struct server *snapshot_find_server(const struct snapshot *s, enum pool_id pool, const char *name);

#endif
