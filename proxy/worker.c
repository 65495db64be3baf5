/* proxy/worker.c — worker threads: an event_base each, SO_REUSEPORT listeners, accept with the
 * max_connections limit, the inbox through which the main thread hands over snapshots and asks
 * for a drain, and the graceful drain itself. */
#include "proxy/worker.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "conf/xalloc.h"
#include "proxy/accesslog.h"
#include "proxy/client.h"
#include "proxy/log.h"
#include "proxy/upstream.h"

#define ACCEPT_RETRY_MS 100

static uint32_t
max_clients(const struct worker *w)
{
    uint32_t total = w->cur->snap->conf->limits.max_connections;
    uint32_t per = (total + (uint32_t)w->nworkers - 1) / (uint32_t)w->nworkers;
    return per ? per : 1;
}

static void
listeners_enable(struct worker *w, bool on)
{
    for (size_t i = 0; i < w->nlisteners; i++) {
        if (w->listeners[i].lev == NULL)
            continue;
        if (on)
            evconnlistener_enable(w->listeners[i].lev);
        else
            evconnlistener_disable(w->listeners[i].lev);
    }
}

static void
on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *addr, int socklen,
          void *arg)
{
    struct worker_listener *l = arg;
    struct worker *w = l->w;
    if (w->draining) {
        close(fd);
        return;
    }
    if (w->accept_errors > 0) {
        log_info("worker %d: accepting again after %u failed attempt%s", w->id, w->accept_errors,
                 w->accept_errors == 1 ? "" : "s");
        w->accept_errors = 0;
    }
    if (client_create(w, fd, addr, socklen, l->route_to, l->tls) == NULL)
        return;
    w->nclients++;
    if (w->nclients >= max_clients(w) && !w->accept_paused) {
        /* Beyond the limit stop accepting: new connections wait in the kernel backlog. */
        w->accept_paused = true;
        listeners_enable(w, false);
    }
}

static void
on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    if (!w->draining && w->nclients < max_clients(w)) {
        w->accept_paused = false;
        listeners_enable(w, true);
    }
}

static void
on_accept_error(struct evconnlistener *lev, void *arg)
{
    struct worker_listener *l = arg;
    struct worker *w = l->w;
    int err = EVUTIL_SOCKET_ERROR();
    /* Out of descriptors (EMFILE, ENFILE) or memory: new connections wait in the backlog and
     * accept is retried every ACCEPT_RETRY_MS. One line per episode, not ten a second. */
    if (w->accept_errors++ == 0)
        log_warn("worker %d: accept: %s; pausing accept, retrying every %d ms", w->id,
                 strerror(err), ACCEPT_RETRY_MS);
    w->accept_paused = true;
    listeners_enable(w, false);
    struct timeval tv = {0, ACCEPT_RETRY_MS * 1000};
    evtimer_add(w->resume_ev, &tv);
}

void
worker_client_closed(struct worker *w)
{
    w->nclients--;
    if (w->draining) {
        if (w->nclients == 0)
            event_base_loopexit(w->base, NULL);
        return;
    }
    if (w->accept_paused && w->nclients < max_clients(w) && !evtimer_pending(w->resume_ev, NULL)) {
        w->accept_paused = false;
        listeners_enable(w, true);
    }
}

static struct wsnap *
wsnap_create(struct snapshot *snap)
{
    struct wsnap *ws = xcalloc(1, sizeof(*ws));
    ws->snap = snap;
    return ws;
}

static void
wsnap_destroy(struct wsnap **ws)
{
    if (*ws == NULL)
        return;
    snapshot_release(&(*ws)->snap);
    xfree(ws);
}

struct wsnap *
worker_snap_get(struct worker *w)
{
    w->cur->users++;
    return w->cur;
}

void
worker_snap_put(struct worker *w, struct wsnap **wsp)
{
    struct wsnap *ws = *wsp;
    if (ws == NULL)
        return;
    *wsp = NULL;
    ws->users--;
    if (ws == w->cur || ws->users > 0)
        return;
    for (struct wsnap **pp = &w->retired; *pp; pp = &(*pp)->next) {
        if (*pp == ws) {
            *pp = ws->next;
            break;
        }
    }
    wsnap_destroy(&ws);
}

static bool
snapshot_has(const struct snapshot *s, const struct server *srv)
{
    const struct pool *p = &s->pools[srv->pool];
    for (size_t i = 0; i < p->nservers; i++)
        if (p->servers[i] == srv)
            return true;
    return false;
}

static void
swap_snapshot(struct worker *w, struct snapshot *snap)
{
    struct wsnap *old = w->cur;
    w->cur = wsnap_create(snap);
    /* Idle connections to servers that left the config are closed now; in-use ones finish. */
    for (int p = 0; p < POOL_COUNT; p++) {
        const struct pool *pool = &old->snap->pools[p];
        for (size_t i = 0; i < pool->nservers; i++)
            if (!snapshot_has(snap, pool->servers[i]))
                upstream_close_idle(w, pool->servers[i]);
    }
    if (old->users == 0) {
        wsnap_destroy(&old);
    } else {
        old->next = w->retired;
        w->retired = old;
    }
}

static void
close_all_idle(struct worker *w)
{
    for (int p = 0; p < POOL_COUNT; p++) {
        const struct pool *pool = &w->cur->snap->pools[p];
        for (size_t i = 0; i < pool->nservers; i++)
            upstream_close_idle(w, pool->servers[i]);
    }
}

static void
start_drain(struct worker *w)
{
    if (w->draining)
        return;
    w->draining = true;
    client_free_spares(w);
    for (size_t i = 0; i < w->nlisteners; i++) {
        if (w->listeners[i].lev)
            evconnlistener_free(w->listeners[i].lev);
        w->listeners[i].lev = NULL;
    }
    close_all_idle(w);
    struct client *c;
    TAILQ_FOREACH(c, &w->clients, link)
    client_drain(c);
    if (w->nclients == 0)
        event_base_loopexit(w->base, NULL);
}

static void
on_flush(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    accesslog_flush(w->alog, w->id);
}

static void
on_inbox(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    uint64_t n;
    if (read(w->inbox_fd, &n, sizeof(n)) == -1 && errno != EAGAIN)
        log_warn("worker %d: inbox read: %s", w->id, strerror(errno));
    pthread_mutex_lock(&w->inbox_lock);
    struct snapshot *snap = w->inbox_snap;
    w->inbox_snap = NULL;
    unsigned close_tunnels = w->inbox_close_tunnels;
    w->inbox_close_tunnels = 0;
    bool drain = w->inbox_drain;
    bool stop = w->inbox_stop;
    pthread_mutex_unlock(&w->inbox_lock);
    if (snap)
        swap_snapshot(w, snap);
    if (close_tunnels) {
        struct client *c = TAILQ_FIRST(&w->clients);
        while (c) {
            struct client *next = TAILQ_NEXT(c, link);
            if (c->state == CS_TUNNEL && (close_tunnels & (1u << c->pool)))
                client_close(c);
            c = next;
        }
    }
    if (stop) {
        event_base_loopbreak(w->base);
        return;
    }
    if (drain)
        start_drain(w);
}

struct worker *
worker_create(int id, int nworkers, const struct routing *routing, struct stats_board *board,
              struct accesslog *alog, struct snapshot *snap, const struct worker_socket *socks,
              size_t nsocks)
{
    struct worker *w = xcalloc(1, sizeof(*w));
    w->inbox_fd = -1;
    w->id = id;
    w->board = board;
    w->alog = alog;
    w->nworkers = nworkers;
    w->routing = routing;
    w->cur = wsnap_create(snap);
    TAILQ_INIT(&w->clients);
    pthread_mutex_init(&w->inbox_lock, NULL);
    if (getrandom(&w->rng, sizeof(w->rng), 0) != (ssize_t)sizeof(w->rng) || w->rng == 0)
        w->rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)id;
    /* Only this worker's thread ever touches its base: no locks (they cost ~5% of the
     * instructions per request). The main thread reaches it through the inbox eventfd. */
    struct event_config *ecfg = event_config_new();
    if (ecfg == NULL)
        goto fail;
    event_config_set_flag(ecfg, EVENT_BASE_FLAG_NOLOCK);
    /* No event priorities and no max dispatch interval: nothing in the inbox is urgent (a
     * rollback does not wait for it, see route_decisions_wait()), and returning to epoll every
     * 16 callbacks, as the inbox once needed, cost 40% of the throughput at 1,000 connections. */
    w->base = event_base_new_with_config(ecfg);
    event_config_free(ecfg);
    w->inbox_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->base == NULL || w->inbox_fd == -1)
        goto fail;
    w->qstage = evbuffer_new();
    w->rstage = evbuffer_new();
    w->inbox_ev = event_new(w->base, w->inbox_fd, EV_READ | EV_PERSIST, on_inbox, w);
    event_add(w->inbox_ev, NULL);
    w->resume_ev = evtimer_new(w->base, on_resume, w);
    if (alog) {
        w->flush_ev = event_new(w->base, -1, EV_PERSIST, on_flush, w);
        struct timeval one = {1, 0};
        event_add(w->flush_ev, &one);
    }
    w->listeners = xcalloc(nsocks ? nsocks : 1, sizeof(*w->listeners));
    w->nlisteners = nsocks;
    for (size_t i = 0; i < nsocks; i++) {
        struct worker_listener *l = &w->listeners[i];
        l->w = w;
        l->route_to = socks[i].route_to;
        l->tls = socks[i].tls;
        l->lev = evconnlistener_new(w->base, on_accept, l,
                                    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, socks[i].fd);
        if (l->lev == NULL) {
            close(socks[i].fd);
            goto fail;
        }
        evconnlistener_set_error_cb(l->lev, on_accept_error);
    }
    return w;
fail:
    worker_destroy(&w);
    return NULL;
}

static void *
run(void *arg)
{
    struct worker *w = arg;
    event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
    /* Whatever is left after a drain deadline is closed now. */
    while (!TAILQ_EMPTY(&w->clients))
        client_close(TAILQ_FIRST(&w->clients));
    client_free_spares(w);
    close_all_idle(w);
    if (w->alog)
        accesslog_flush(w->alog, w->id);
    atomic_store_explicit(&w->done, true, memory_order_release);
    return NULL;
}

int
worker_start(struct worker *w)
{
    if (pthread_create(&w->thread, NULL, run, w) != 0)
        return -1;
    w->started = true;
    return 0;
}

/* Wakes the worker's inbox event. Any thread: an eventfd write, no libevent call (the worker's
 * base has no locks). */
static void
inbox_wake(struct worker *w)
{
    uint64_t one = 1;
    if (write(w->inbox_fd, &one, sizeof(one)) == -1 && errno != EAGAIN)
        log_error("worker %d: inbox write: %s", w->id, strerror(errno));
}

void
worker_post_snapshot(struct worker *w, struct snapshot *snap)
{
    pthread_mutex_lock(&w->inbox_lock);
    struct snapshot *older = w->inbox_snap;
    w->inbox_snap = snap;
    pthread_mutex_unlock(&w->inbox_lock);
    snapshot_release(&older);
    inbox_wake(w);
}

void
worker_post_close_tunnels(struct worker *w, enum pool_id pool)
{
    pthread_mutex_lock(&w->inbox_lock);
    w->inbox_close_tunnels |= 1u << pool;
    pthread_mutex_unlock(&w->inbox_lock);
    inbox_wake(w);
}

void
worker_post_drain(struct worker *w)
{
    pthread_mutex_lock(&w->inbox_lock);
    w->inbox_drain = true;
    pthread_mutex_unlock(&w->inbox_lock);
    inbox_wake(w);
}

void
worker_post_stop(struct worker *w)
{
    pthread_mutex_lock(&w->inbox_lock);
    w->inbox_stop = true;
    pthread_mutex_unlock(&w->inbox_lock);
    inbox_wake(w);
}

void
worker_destroy(struct worker **wp)
{
    struct worker *w = *wp;
    if (w == NULL)
        return;
    *wp = NULL;
    if (w->started)
        pthread_join(w->thread, NULL);
    for (size_t i = 0; i < w->nlisteners; i++)
        if (w->listeners[i].lev)
            evconnlistener_free(w->listeners[i].lev);
    free(w->listeners);
    if (w->inbox_ev)
        event_free(w->inbox_ev);
    if (w->resume_ev)
        event_free(w->resume_ev);
    if (w->flush_ev)
        event_free(w->flush_ev);
    while (w->retired) {
        struct wsnap *ws = w->retired;
        w->retired = ws->next;
        wsnap_destroy(&ws);
    }
    wsnap_destroy(&w->cur);
    snapshot_release(&w->inbox_snap);
    http_buf_finish(&w->scratch);
    if (w->qstage)
        evbuffer_free(w->qstage);
    if (w->rstage)
        evbuffer_free(w->rstage);
    if (w->base)
        event_base_free(w->base);
    if (w->inbox_fd != -1)
        close(w->inbox_fd);
    pthread_mutex_destroy(&w->inbox_lock);
    free(w);
}
