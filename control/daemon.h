/* control/daemon.h — the main thread: start-up (sockets, snapshot, routing word, health,
 * workers), signals, reload, the graceful stop, and the actions the control API calls. */
#ifndef CONTROL_DAEMON_H
#define CONTROL_DAEMON_H

#include <stdbool.h>
#include <stdint.h>

#include "conf/conf.h"
#include "control/rollout.h"
#include "proxy/route.h"
#include "proxy/snapshot.h"
#include "proxy/worker.h"

struct api;
struct state_store;
struct events;
struct notify;
struct health;
struct measure;
struct stats_board;
struct accesslog;
struct tls_ctx;

/* The main thread's context. Only the main thread touches it. */
struct daemon {
    char *conf_path; /* owned */
    struct event_base *base;
    struct routing routing;
    struct stats_board *board;           /* owned: per-pool counters, outlive reloads */
    struct measure *measure;             /* owned: one sample per second, 5 minutes of history */
    struct health *health;               /* owned: active checks (libcurl multi on this base) */
    struct accesslog *alog;              /* owned; NULL without log.access */
    struct events *events;               /* owned: the event ring */
    struct notify *notify;               /* owned; NULL without notify.webhooks */
    struct api *api;                     /* owned: the control socket(s) */
    struct state_store *store;           /* owned; NULL without state_file */
    uint64_t store_generation;           /* the generation the store last loaded or wrote */
    struct rollout rollout;              /* the cutover state machine (control/rollout.c) */
    uint64_t no_share_since[POOL_COUNT]; /* CLOCK_MONOTONIC ms since a pool has had no share */
    bool tunnels_closed[POOL_COUNT];     /* drain.tunnel_timeout already applied */
    struct worker_socket *socks; /* owned: nworkers x nlisten, bound; adopted by the workers */
    struct tls_ctx **tls;        /* owned: per listener, NULL for plain ones */
    uint64_t ticket_rotate_ms;   /* when the session ticket key is next replaced */
    size_t nsocks;
    bool started;            /* workers running (after the first round of checks) */
    bool failed;             /* start-up failed after the loop began */
    struct event *sample_ev; /* owned: the 1 s sampling timer */
    struct snapshot *snap;   /* ref: the published snapshot */
    struct worker *workers[MAX_WORKERS];
    int nworkers;
    struct event *signals[4];
    struct event *watch_ev;
    uint64_t stop_deadline_ms;
    bool stopping;
    bool forced;
};

/* Runs the proxy with conf (ownership taken) until it is stopped by SIGTERM/SIGINT. Returns the
 * process exit status: 0 after a graceful stop, 1 when start-up failed. Main thread. */
int daemon_run(struct conf *conf);

/* Publishes a new routing state and returns only when every worker routes by it (DESIGN §3):
 * the word is stored, then each worker acknowledges from between two callbacks. Emits a
 * "routing" event (action, reason, peer), saves the state. Returns the new generation;
 * *ack_us (may be NULL) gets the time from publishing to the last acknowledgement. */
uint64_t daemon_route(struct daemon *d, enum pool_id live, uint32_t standby_bp, const char *action,
                      const char *reason, const char *peer, uint64_t *ack_us);

/* Performs what the rollout engine decided (publishing through daemon_route) and emits the
 * matching "rollout" event. peer may be NULL (the engine's own tick). */
void daemon_rollout_step(struct daemon *d, const struct rollout_step *step, const char *what,
                         const char *peer);

/* Saves the run-time state (routing, admin states, rollout) to the state store. */
void daemon_save_state(struct daemon *d);

/* Re-reads the config file; 0, or -1 with err filled (the running config stays). Emits a
 * "reload" event. */
int daemon_reload(struct daemon *d, struct conf_err *err);

/* Sets a server's admin state; a server leaving maint is checked at once. Emits an "admin"
 * event, saves the state. */
void daemon_set_admin(struct daemon *d, struct server *srv, enum admin_state st, const char *peer);

#endif
