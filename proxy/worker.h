/* proxy/worker.h — a worker thread: its event_base, its listening sockets (SO_REUSEPORT), its
 * client connections and its hold on the published config snapshot (DESIGN §2). */
#ifndef PROXY_WORKER_H
#define PROXY_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "conf/conf.h"
#include "proxy/http.h"
#include "proxy/route.h"
#include "proxy/snapshot.h"

struct client;
struct evbuffer;
struct stats_board;
struct accesslog;
struct tls_ctx;

/* A worker's hold on a snapshot. Requests of this worker count themselves in `users` (a plain
 * counter: only this worker touches it), so the request path takes no atomic reference. */
struct wsnap {
    struct snapshot *snap; /* ref */
    uint32_t users;
    struct wsnap *next; /* retired list */
};

struct worker_listener {
    struct worker *w;           /* borrowed: the worker that owns it */
    struct evconnlistener *lev; /* owned (closes the socket) */
    enum route_to route_to;
    struct tls_ctx *tls; /* borrowed (lives while the daemon does); NULL = plain */
};

/* One listening socket per configured listener, made by the main thread for this worker. */
struct worker_socket {
    int fd;
    enum route_to route_to;
    struct tls_ctx *tls; /* borrowed; NULL = plain HTTP */
};

struct worker {
    int id;
    pthread_t thread;
    bool started;
    struct event_base *base;           /* owned */
    const struct routing *routing;     /* borrowed (lives while the daemon does) */
    struct stats_board *board;         /* borrowed (lives while the daemon does) */
    struct accesslog *alog;            /* borrowed (lives while the daemon does); may be NULL */
    struct event *flush_ev;            /* owned: hands the access log buffer over every second */
    struct worker_listener *listeners; /* owned: nlisteners */
    size_t nlisteners;
    struct wsnap *cur;     /* owned: the snapshot new requests use */
    struct wsnap *retired; /* owned: older snapshots still used by requests */
    uint64_t rng;          /* route_rand() state */
    uint32_t nclients;
    int nworkers; /* max_connections is shared evenly between the workers */
    bool accept_paused;
    uint32_t accept_errors; /* accept failures in a row (EMFILE...): logged once per episode */
    bool draining;
    TAILQ_HEAD(client_list, client) clients;
    struct client *spare_clients; /* closed clients kept with their buffers (client.c) */
    uint32_t nspare_clients;
    struct http_buf scratch; /* owned: response heads are built here */
    struct evbuffer *qstage; /* owned: request bytes produced in one parse pass */
    struct evbuffer *rstage; /* owned: response bytes produced in one parse pass */
    struct event *inbox_ev;  /* owned: reads inbox_fd */
    int inbox_fd;            /* owned: eventfd the main thread writes to wake the worker */
    struct event *resume_ev; /* owned: re-enables accept after an accept error */
    struct event *drain_ev;  /* owned: closes idle clients while draining */
    /* The inbox: written by the main thread, read by this worker, under inbox_lock (taken by
     * these two threads only, never on the request path). */
    pthread_mutex_t inbox_lock;
    struct snapshot *inbox_snap;  /* ref */
    unsigned inbox_close_tunnels; /* bit per pool: close its tunnels (drain.tunnel_timeout) */
    bool inbox_drain;
    bool inbox_stop;
    atomic_bool done; /* set by the worker when its loop has ended */
    /* Its routing decisions, which the main thread waits for after publishing a routing word
     * (route_decisions_wait()). */
    struct route_decisions decisions;
};

/* Makes a worker with its sockets (adopted: closed by the worker) and a snapshot ref. Main
 * thread. */
struct worker *worker_create(int id, int nworkers, const struct routing *routing,
                             struct stats_board *board, struct accesslog *alog,
                             struct snapshot *snap, const struct worker_socket *socks,
                             size_t nsocks);

/* Starts the thread. 0 ok, -1 failure. Main thread. */
int worker_start(struct worker *w);

/* Hands a new snapshot (ref given) to the worker; it switches before its next request. Main. */
void worker_post_snapshot(struct worker *w, struct snapshot *snap);

/* Asks the worker to close its tunnels to pool (drain.tunnel_timeout). Main thread. */
void worker_post_close_tunnels(struct worker *w, enum pool_id pool);

/* Asks the worker to stop accepting, finish in-flight requests and exit its loop. Main. */
void worker_post_drain(struct worker *w);

/* Asks the worker to exit its loop now. Main. */
void worker_post_stop(struct worker *w);

/* Joins and frees; clears *w. Accepts NULL. Main thread. */
void worker_destroy(struct worker **w);

/* The snapshot a new request uses, counted in its users. Worker thread. */
struct wsnap *worker_snap_get(struct worker *w);

/* Ends a request's use of a snapshot; clears *ws. Worker thread. */
void worker_snap_put(struct worker *w, struct wsnap **ws);

/* Called by client_close(): one client fewer (resumes accept, ends a drain). Worker thread. */
void worker_client_closed(struct worker *w);

#endif
