/* control/state.h — the persisted run-time state (DESIGN §8, §11): routing word, admin states,
 * the rollout engine's opaque state, and the state-store interface (load, compare-and-swap on
 * the generation, watch) whose first implementation is the local state file. */
#ifndef CONTROL_STATE_H
#define CONTROL_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"
#include "proxy/route.h"
#include "proxy/snapshot.h"

/* The longest server name (as in conf/pools.c). */
#define STATE_NAME_MAX 64

/* The largest state file load() reads. */
#define STATE_FILE_MAX_BYTES (1024 * 1024)

struct state_admin {
    enum pool_id pool;
    char name[STATE_NAME_MAX + 1];
    enum admin_state admin;
};

struct state {
    uint64_t generation; /* the routing generation, <= ROUTE_GENERATION_MAX */
    enum pool_id live;
    uint32_t standby_bp;       /* 0..10000 */
    uint32_t flags;            /* enum route_flag bits */
    struct state_admin *admin; /* owned: array of nadmin (any order; later entries win) */
    size_t nadmin;
    char *rollout_json; /* owned: the rollout engine's state as JSON text; NULL = none */
    uint64_t saved_ms;  /* wall-clock ms since the epoch when it was saved */
};

/* Sets st empty (generation 0, blue live, no admin entry, no rollout). */
void state_init(struct state *st);

/* Frees what st owns and empties it (state_init). Accepts NULL. */
void state_finish(struct state *st);

/* Appends an admin entry. Returns 0, or -1 when name is empty or longer than STATE_NAME_MAX.
 * Any thread (st is the caller's). */
int state_add_admin(struct state *st, enum pool_id pool, const char *name, enum admin_state admin);

/* Fills st (overwritten: it must hold nothing to free) from the current run-time state: the
 * routing word w, the admin state of every server of snap that is not ready, a copy of
 * rollout_json (may be NULL) and saved_ms = now_ms_wall. Main thread. */
void state_capture(struct state *st, const struct route_word *w, const struct snapshot *snap,
                   const char *rollout_json, uint64_t now_ms_wall);

/* Whether a loaded state may be used with conf at now_ms_wall: returns 0, or -1 with the reason
 * in why (whylen bytes) when it is older than conf->state_max_age_ms or names a pool conf does
 * not have. A saved_ms in the future (the clock went back) counts as age 0. Admin entries for
 * servers conf does not have do not make a state inapplicable: the caller skips them (see
 * state_apply_admin()). */
int state_applicable(const struct state *st, const struct conf *conf, uint64_t now_ms_wall,
                     char *why, size_t whylen);

/* Sets the admin state of every server of snap named in st (server_set_admin()); entries for
 * servers snap does not have are skipped. Returns how many were skipped (for a warning). The
 * routing part is the caller's: routing_init(live, standby_bp, flags, generation). Main thread. */
size_t state_apply_admin(const struct state *st, const struct snapshot *snap);

/* ---- the state-store interface ---- */

struct state_store;

/* Called by a store that can watch (etcd) when another instance changed the state; st is
 * borrowed for the call. Main thread. */
typedef void (*state_watch_fn)(void *arg, const struct state *st);

struct state_store_ops {
    const char *name; /* "file", "etcd" */
    /* See state_store_load() and the others below. */
    int (*load)(struct state_store *s, struct state *out, char *err, size_t errlen);
    int (*cas)(struct state_store *s, uint64_t expect_generation, const struct state *next,
               char *err, size_t errlen);
    int (*watch)(struct state_store *s, state_watch_fn fn, void *arg);
    void (*destroy)(struct state_store *s);
};

/* The base every backend embeds as its first member. */
struct state_store {
    const struct state_store_ops *ops; /* borrowed (static) */
};

/* The local state file at path (copied), written atomically: the JSON goes to
 * "<path>.tmp.<pid>" (mode 0640), is fsync'ed, renamed over path, and the directory is
 * fsync'ed, so a crash leaves either the old or the new file, never a mix; a stale temporary
 * file from a crash is never read, and load() removes those whose process is gone. Nothing is
 * touched until load() or cas().
 * The main thread is the only writer of the file: cas() compares expect_generation with the
 * generation the store itself last loaded or wrote (0 before any, or after a load that found
 * nothing usable), it does not re-read the file. Never NULL. */
struct state_store *state_store_file(const char *path);

/* Loads the stored state into out (overwritten, not freed: it must hold nothing; state_finish()
 * it afterwards whatever the result). Returns 0 when loaded, 1 when nothing is stored (out is
 * left empty), -1 with a message in err (errlen bytes) when the stored state cannot be read or
 * is not valid — for the file store: not JSON, a wrong type, a missing or unknown member,
 * version other than 1, an unknown pool or admin state, standby_bp over 10000, a generation
 * over ROUTE_GENERATION_MAX, a name over STATE_NAME_MAX, a file over STATE_FILE_MAX_BYTES
 * (refused before it is read). Main thread. */
int state_store_load(struct state_store *s, struct state *out, char *err, size_t errlen);

/* Stores next if the stored generation is expect_generation. Returns 0 when stored, 1 on a
 * conflict (nothing written, err says which generation is stored), -1 with err on a failure
 * (nothing changed: the previous state stays whole). The file store writes next->saved_ms, or
 * the current time when it is 0. next->rollout_json must be valid JSON (or NULL). Main thread;
 * it blocks on fsync: call it on changes, not per request. */
int state_store_cas(struct state_store *s, uint64_t expect_generation, const struct state *next,
                    char *err, size_t errlen);

/* Calls fn(arg, st) whenever another instance changes the stored state. Returns 0, or -1 with
 * errno = ENOTSUP when the store cannot watch (the file store: there is no other instance). */
int state_store_watch(struct state_store *s, state_watch_fn fn, void *arg);

/* Frees the store and clears *s. Accepts NULL and *s == NULL. */
void state_store_destroy(struct state_store **s);

#endif
