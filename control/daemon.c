/* control/daemon.c — the main thread of the daemon: start-up (sockets, snapshot, routing word,
 * workers), signals, reload (a whole new snapshot beside the old one; a bad file keeps the old),
 * and the graceful stop bounded by timeouts.shutdown. */
#include "control/daemon.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/event.h>

#include "conf/xalloc.h"
#include "proxy/clock.h"
#include "proxy/log.h"
#include "proxy/route.h"
#include "proxy/snapshot.h"
#include "proxy/sock.h"
#include "proxy/stats.h"
#include "proxy/worker.h"

#define WATCH_MS 20

struct daemon {
    char *conf_path; /* owned */
    struct event_base *base;
    struct routing routing;
    struct stats_board *board; /* owned: per-pool counters, outlive reloads */
    struct snapshot *snap; /* ref: the published snapshot */
    struct worker *workers[MAX_WORKERS];
    int nworkers;
    struct event *signals[4];
    struct event *watch_ev;
    uint64_t stop_deadline_ms;
    bool stopping;
    bool forced;
};

static void
raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static bool
listen_same(const struct conf *a, const struct conf *b)
{
    if (a->nlisten != b->nlisten)
        return false;
    for (size_t i = 0; i < a->nlisten; i++) {
        if (strcmp(a->listen[i].addr.text, b->listen[i].addr.text) != 0 ||
            a->listen[i].route_to != b->listen[i].route_to)
            return false;
    }
    return true;
}

static void
reload(struct daemon *d)
{
    struct conf_err err = {0};
    struct conf *nc = conf_load(d->conf_path, &err);
    if (nc == NULL) {
        for (size_t i = 0; i < err.count && i < CONF_ERR_MAX; i++)
            log_error("reload: %s", err.msg[i]);
        log_error("reload failed (%zu error%s); the running configuration stays", err.count,
                  err.count == 1 ? "" : "s");
        return;
    }
    const struct conf *oc = d->snap->conf;
    if (!listen_same(oc, nc))
        log_warn("reload: listen changes take effect at the next restart");
    if (nc->workers != oc->workers)
        log_warn("reload: a workers change takes effect at the next restart");
    /* The routing word is run-time state; the file's split applies when the file changed it. */
    if (nc->routing.live != oc->routing.live || nc->routing.standby_bp != oc->routing.standby_bp) {
        uint64_t gen = routing_publish(&d->routing, nc->routing.live, nc->routing.standby_bp, 0);
        log_info("reload: routing live=%s standby=%u.%02u%% generation %llu",
                 conf_pool_name(nc->routing.live), nc->routing.standby_bp / 100,
                 nc->routing.standby_bp % 100, (unsigned long long)gen);
    }
    if (nc->log.error == NULL ? oc->log.error != NULL
                              : (oc->log.error == NULL || strcmp(nc->log.error, oc->log.error)))
        if (log_open(nc->log.level, nc->log.error) == -1)
            log_error("reload: cannot open log %s: %s", nc->log.error, strerror(errno));
    log_set_level(nc->log.level);
    struct snapshot *ns = snapshot_create(nc, d->snap, d->nworkers, HEALTH_UP);
    for (int i = 0; i < d->nworkers; i++)
        worker_post_snapshot(d->workers[i], snapshot_ref(ns));
    snapshot_mark_removed(d->snap, ns);
    snapshot_release(&d->snap);
    d->snap = ns;
    log_info("configuration reloaded from %s (serial %llu)", d->conf_path,
             (unsigned long long)ns->serial);
}

static void
on_watch(evutil_socket_t fd, short what, void *arg)
{
    struct daemon *d = arg;
    bool all_done = true;
    for (int i = 0; i < d->nworkers; i++)
        if (!atomic_load_explicit(&d->workers[i]->done, memory_order_acquire))
            all_done = false;
    if (all_done) {
        event_base_loopexit(d->base, NULL);
        return;
    }
    if (!d->forced && clock_ms() >= d->stop_deadline_ms) {
        log_warn("shutdown: timeouts.shutdown reached, closing the remaining connections");
        d->forced = true;
        for (int i = 0; i < d->nworkers; i++)
            worker_post_stop(d->workers[i]);
    }
    struct timeval tv = clock_tv(WATCH_MS);
    evtimer_add(d->watch_ev, &tv);
}

static void
stop(struct daemon *d)
{
    if (d->stopping) {
        if (!d->forced) {
            log_warn("shutdown: second signal, stopping now");
            d->forced = true;
            for (int i = 0; i < d->nworkers; i++)
                worker_post_stop(d->workers[i]);
        }
        return;
    }
    d->stopping = true;
    d->stop_deadline_ms = clock_ms() + d->snap->conf->timeouts.shutdown_ms;
    log_info("shutdown: draining (up to %llu ms)",
             (unsigned long long)d->snap->conf->timeouts.shutdown_ms);
    for (int i = 0; i < d->nworkers; i++)
        worker_post_drain(d->workers[i]);
    d->watch_ev = evtimer_new(d->base, on_watch, d);
    on_watch(-1, 0, d);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct daemon *d = arg;
    switch (sig) {
    case SIGTERM:
    case SIGINT:
        stop(d);
        break;
    case SIGHUP:
        if (!d->stopping)
            reload(d);
        break;
    case SIGUSR1:
        if (log_reopen() == -1)
            log_error("cannot reopen the log: %s", strerror(errno));
        else
            log_info("log reopened");
        break;
    default:
        break;
    }
}

static int
open_sockets(struct daemon *d, struct worker_socket *socks)
{
    const struct conf *conf = d->snap->conf;
    char err[256];
    for (size_t i = 0; i < conf->nlisten; i++) {
        const struct conf_listen *l = &conf->listen[i];
        unsigned port = 0;
        for (int j = 0; j < d->nworkers; j++) {
            int fd = sock_listen(&l->addr, port, err, sizeof(err));
            if (fd == -1) {
                log_error("listen: %s", err);
                return -1;
            }
            if (j == 0)
                port = sock_port(fd); /* port 0: every worker shares the one the kernel chose */
            struct worker_socket *s = &socks[(size_t)j * conf->nlisten + i];
            s->fd = fd;
            s->route_to = l->route_to;
            s->tls = l->tls_enabled;
        }
    }
    return 0;
}

static void
log_listening(const struct conf *conf, const struct worker_socket *socks)
{
    for (size_t i = 0; i < conf->nlisten; i++) {
        const struct conf_listen *l = &conf->listen[i];
        unsigned port = sock_port(socks[i].fd);
        char host[80];
        snprintf(host, sizeof(host), "%s", l->addr.text);
        char *colon = strrchr(host, ':');
        if (colon)
            *colon = '\0';
        log_msg(LOG_LEVEL_INFO, "listening on %s:%u%s", host, port,
                l->route_to == ROUTE_TO_NORMAL ? "" : " (preview)");
    }
}

int
daemon_run(struct conf *conf)
{
    struct daemon d = {0};
    int status = 1;
    struct worker_socket *socks = NULL;
    size_t nsocks = 0;

    d.conf_path = xstrdup(conf->path);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    d.nworkers = conf->workers ? (int)conf->workers : (int)(ncpu > 0 ? ncpu : 1);
    if (d.nworkers > MAX_WORKERS)
        d.nworkers = MAX_WORKERS;
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    routing_init(&d.routing, conf->routing.live, conf->routing.standby_bp, 0, 1);
    d.board = stats_board_create(d.nworkers);
    d.snap = snapshot_create(conf, NULL, d.nworkers, HEALTH_UP);
    conf = NULL;

    nsocks = d.snap->conf->nlisten * (size_t)d.nworkers;
    socks = xcalloc(nsocks, sizeof(*socks));
    for (size_t i = 0; i < nsocks; i++)
        socks[i].fd = -1;
    if (open_sockets(&d, socks) == -1)
        goto out;

    d.base = event_base_new();
    if (d.base == NULL) {
        log_error("cannot create the main event base");
        goto out;
    }
    const int sigs[4] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    for (int i = 0; i < 4; i++) {
        d.signals[i] = evsignal_new(d.base, sigs[i], on_signal, &d);
        evsignal_add(d.signals[i], NULL);
    }

    /* Workers block every signal: the main thread's event_base handles them. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    size_t per = d.snap->conf->nlisten;
    bool started = true;
    for (int j = 0; j < d.nworkers; j++) {
        d.workers[j] = worker_create(j, d.nworkers, &d.routing, d.board, snapshot_ref(d.snap),
                                     &socks[(size_t)j * per], per);
        for (size_t i = 0; i < per; i++)
            socks[(size_t)j * per + i].fd = -1; /* adopted (or closed) by the worker */
        if (d.workers[j] == NULL || worker_start(d.workers[j]) == -1) {
            log_error("cannot start worker %d", j);
            started = false;
            break;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!started) {
        for (int j = 0; j < d.nworkers; j++)
            if (d.workers[j])
                worker_post_stop(d.workers[j]);
        goto out;
    }

    log_info("switchyard %s started: %d worker%s, live %s, standby %u.%02u%%", SWITCHYARD_VERSION,
             d.nworkers, d.nworkers == 1 ? "" : "s", conf_pool_name(d.snap->conf->routing.live),
             d.snap->conf->routing.standby_bp / 100, d.snap->conf->routing.standby_bp % 100);
    /* Sockets were listening since open_sockets; the workers now accept on them. */
    {
        struct worker_socket first[64];
        for (size_t i = 0; i < per && i < 64; i++) {
            first[i] = (struct worker_socket){.fd = -1, .route_to = d.snap->conf->listen[i].route_to};
            first[i].fd = evconnlistener_get_fd(d.workers[0]->listeners[i].lev);
        }
        log_listening(d.snap->conf, first);
    }
    event_base_dispatch(d.base);
    status = 0;
    log_info("stopped");

out:
    for (int j = 0; j < d.nworkers; j++)
        worker_destroy(&d.workers[j]);
    for (size_t i = 0; socks && i < nsocks; i++)
        if (socks[i].fd != -1)
            close(socks[i].fd);
    free(socks);
    for (int i = 0; i < 4; i++)
        if (d.signals[i])
            event_free(d.signals[i]);
    if (d.watch_ev)
        event_free(d.watch_ev);
    if (d.base)
        event_base_free(d.base);
    snapshot_release(&d.snap);
    stats_board_destroy(&d.board);
    free(d.conf_path);
    return status;
}
