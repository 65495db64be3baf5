/* proxy/route.h — routing: the atomically published routing word (DESIGN §3, kind 2), client
 * buckets, the pool threshold and server balancing within a pool.
 *
 * Everything here but routing_publish() is pure or worker-local and may run on any worker. */
#ifndef PROXY_ROUTE_H
#define PROXY_ROUTE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"
#include "proxy/snapshot.h"

#define ROUTE_BUCKETS 10000u
#define ROUTE_GENERATION_MAX ((UINT64_C(1) << 40) - 1)

/* Flags carried in the routing word. */
enum route_flag {
    ROUTE_FLAG_NONE = 0,
    ROUTE_FLAG_ROLLOUT = 1u << 0, /* a rollout is in progress (informational) */
};

/* The decoded routing word. */
struct route_word {
    enum pool_id live;
    uint32_t standby_bp; /* 0..10000 */
    uint32_t flags;      /* enum route_flag bits, 9 bits */
    uint64_t generation; /* 40 bits, +1 per change */
};

/* The published routing state: one 64-bit atomic word (generation 40 bits, live 1 bit, standby
 * share 14 bits, flags 9 bits), so a worker reads a consistent state with one load. */
struct routing {
    _Alignas(64) atomic_uint_fast64_t word;
};

/* Sets up r with the given state and generation. Before any other thread sees r. */
void routing_init(struct routing *r, enum pool_id live, uint32_t standby_bp, uint32_t flags,
                  uint64_t generation);

/* Reads the current state. Any thread; call it per request. */
void routing_load(const struct routing *r, struct route_word *out);

/* One worker's routing decisions, so that the main thread can tell when no decision that may
 * have read an older word is still being taken (the acknowledgement of DESIGN §3): a counter,
 * odd while a decision is in progress. Written by its worker only, on a cache line of its own. */
struct route_decisions {
    _Alignas(64) atomic_uint_fast64_t seq;
};

/* Worker: starts a decision and reads the word into out. Every read of the word that a
 * decision depends on must be this one, between begin and end. */
void route_decision_begin(struct route_decisions *d, const struct routing *r,
                          struct route_word *out);

/* Worker: the decision is taken (the request has its pool). */
void route_decision_end(struct route_decisions *d);

/* Main thread, after routing_publish(): waits until the decision in progress on d, if any, has
 * ended; every decision begun later reads the new word. Returns 0, or -1 when timeout_ms passed
 * first (a worker stopped mid-decision: a bug). Yields the CPU while it waits, so a worker on
 * the same core can finish. */
int route_decisions_wait(const struct route_decisions *d, uint64_t timeout_ms);

/* Publishes a new state with generation = old + 1 and returns that generation. Sequentially
 * consistent: once it returns, every later routing_load() on any thread sees the new state.
 * Only one thread (the main thread) publishes; standby_bp > 10000 is clamped. */
uint64_t routing_publish(struct routing *r, enum pool_id live, uint32_t standby_bp, uint32_t flags);

/* The pool a bucket goes to: the standby pool when bucket < standby_bp, else the live pool. */
enum pool_id route_pool_for_bucket(const struct route_word *w, uint32_t bucket);

/* The other pool. */
enum pool_id route_other_pool(enum pool_id p);

/* A fast worker-local PRNG (xorshift64*); *state must be non-zero. */
uint64_t route_rand(uint64_t *state);

/* A uniformly distributed random bucket in [0, 10000). */
uint32_t route_bucket_random(uint64_t *rng);

/* A bucket in [0, 10000) from a stable hash of data (header value, client address bytes). */
uint32_t route_bucket_hash(const void *data, size_t len);

/* Parses a sticky cookie value: a decimal integer in [0, 10000) without sign, spaces or leading
 * zeros (except "0"). Returns 0 and stores it, or -1 when invalid. */
int route_bucket_parse(const char *val, size_t len, uint32_t *bucket);

/* Finds cookie `name` in a Cookie header value ("a=1; b=2"). Returns 0 and points *val at the
 * value inside hdr (not copied), or -1 when absent. */
int route_cookie_find(const char *hdr, size_t hdr_len, const char *name, const char **val,
                      size_t *val_len);

/* Picks a usable server of the pool with the balance algorithm, for the calling worker (uses and
 * updates that worker's slots: in-flight counts, round robin state). Skips servers for which
 * server_usable() is false and the server `exclude` (may be NULL: used to retry a connect on
 * another server). Server weights apply. Returns a borrowed server (lives while the snapshot
 * does) or NULL when none is usable. Worker thread `worker` only. */
struct server *route_pick_server(const struct pool *pool, enum balance balance, int worker,
                                 uint64_t *rng, uint64_t now_ms, const struct server *exclude);

/* Whether the pool has at least one usable server now. */
bool route_pool_usable(const struct pool *pool, uint64_t now_ms);

#endif
