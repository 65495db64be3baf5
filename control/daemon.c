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
#include "proxy/tls.h"
#include "control/api.h"
#include "control/events.h"
#include "control/health.h"
#include "control/measure.h"
#include "control/notify.h"
#include "control/state.h"
#include "proxy/accesslog.h"
#include "proxy/worker.h"

#define WATCH_MS 20

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

static uint64_t current_generation(const struct daemon *d);

/* The listener of the new config that takes over running listener l (same address and TLS),
 * or NULL. */
static const struct conf_listen *
reload_listener(const struct conf *nc, const struct conf_listen *l)
{
    for (size_t i = 0; i < nc->nlisten; i++)
        if (strcmp(nc->listen[i].addr.text, l->addr.text) == 0 && nc->listen[i].tls_enabled)
            return &nc->listen[i];
    return NULL;
}

static uint64_t
wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Writes the run-time state (routing word, admin states) to the state store. */
void
daemon_save_state(struct daemon *d)
{
    if (d->store == NULL)
        return;
    struct route_word rw;
    routing_load(&d->routing, &rw);
    struct state st;
    state_init(&st);
    json_t *ro = rollout_save_json(&d->rollout);
    char *ro_text = ro ? json_dumps(ro, JSON_COMPACT) : NULL;
    json_decref(ro);
    state_capture(&st, &rw, d->snap, ro_text, wall_ms());
    free(ro_text);
    char err[256];
    int r = state_store_cas(d->store, d->store_generation, &st, err, sizeof(err));
    if (r == 0)
        d->store_generation = st.generation;
    else
        log_error("state file: %s", err);
    state_finish(&st);
}

/* Restores the routing word and admin states from the state store when they apply to this
 * config: a restart mid-deploy keeps the split it had. Before the workers start. */
static void
restore_state(struct daemon *d)
{
    const struct conf *conf = d->snap->conf;
    if (conf->state_file == NULL)
        return;
    d->store = state_store_file(conf->state_file);
    struct state st;
    state_init(&st);
    char err[256];
    int r = state_store_load(d->store, &st, err, sizeof(err));
    if (r == 1) {
        log_info("state file %s: none yet", conf->state_file);
    } else if (r == -1) {
        log_warn("state file %s ignored: %s", conf->state_file, err);
    } else {
        d->store_generation = st.generation;
        char why[256];
        if (state_applicable(&st, conf, wall_ms(), why, sizeof(why)) == -1) {
            log_warn("state file %s ignored: %s", conf->state_file, why);
            /* The split comes from the config, but generations never go backwards. */
            routing_init(&d->routing, conf->routing.live, conf->routing.standby_bp, 0,
                         st.generation + 1);
        } else {
            routing_init(&d->routing, st.live, st.standby_bp, st.flags,
                         st.generation ? st.generation : 1);
            if (st.rollout_json) {
                json_error_t jerr;
                json_t *ro = json_loads(st.rollout_json, 0, &jerr);
                char rerr[256];
                if (ro == NULL || rollout_restore(&d->rollout, ro, &conf->rollout, clock_ms(), rerr,
                                                  sizeof(rerr)) == -1)
                    log_warn("state file: rollout state ignored: %s", ro ? rerr : jerr.text);
                else if (d->rollout.phase != ROLLOUT_STABLE)
                    log_warn("state file: the rollout to %s resumes paused at step %zu",
                             conf_pool_name(d->rollout.to), d->rollout.step + 1);
                json_decref(ro);
            }
            size_t skipped = state_apply_admin(&st, d->snap);
            if (skipped)
                log_warn("state file: %zu admin state%s for servers not in the config ignored",
                         skipped, skipped == 1 ? "" : "s");
            log_info("state restored: live %s, standby %u.%02u%%, generation %llu",
                     conf_pool_name(st.live), st.standby_bp / 100, st.standby_bp % 100,
                     (unsigned long long)st.generation);
        }
    }
    state_finish(&st);
}

int
daemon_reload(struct daemon *d, struct conf_err *err)
{
    memset(err, 0, sizeof(*err));
    struct conf *nc = conf_load(d->conf_path, err);
    if (nc == NULL) {
        for (size_t i = 0; i < err->count && i < CONF_ERR_MAX; i++)
            log_error("reload: %s", err->msg[i]);
        log_error("reload failed (%zu error%s); the running configuration stays", err->count,
                  err->count == 1 ? "" : "s");
        json_t *ev = json_pack("{s:b, s:s}", "ok", 0, "error", err->count ? err->msg[0] : "");
        events_emit(d->events, current_generation(d), "reload", ev);
        return -1;
    }
    const struct conf *oc = d->snap->conf;
    /* Everything that can fail is checked before anything changes: certificates (re-read even
     * when their paths did not change: renewed in place) and upstream TLS contexts. */
    struct tls_certs **certs = xcalloc(oc->nlisten, sizeof(*certs));
    struct snapshot *ns = NULL;
    char terr[600] = "";
    for (size_t i = 0; i < oc->nlisten && terr[0] == '\0'; i++) {
        const struct conf_listen *nl = reload_listener(nc, &oc->listen[i]);
        if (d->tls[i] == NULL || nl == NULL)
            continue; /* a plain listener, or one the new file lacks: restart needed */
        char e[512];
        certs[i] = tls_certs_load(&nl->tls, e, sizeof(e));
        if (certs[i] == NULL)
            snprintf(terr, sizeof(terr), "listen %s: %s", nl->addr.text, e);
    }
    struct tls_certs *ctl_certs = NULL;
    if (terr[0] == '\0' && api_tls(d->api) && nc->control.tls_enabled) {
        char e[512];
        ctl_certs = tls_certs_load(&nc->control.tls, e, sizeof(e));
        if (ctl_certs == NULL)
            snprintf(terr, sizeof(terr), "control.tls: %s", e);
    }
    if (terr[0] == '\0') {
        ns = snapshot_create(nc, d->snap, d->nworkers, HEALTH_UNKNOWN);
        nc = NULL;
        snapshot_tls_init(ns, terr, sizeof(terr));
    }
    if (terr[0] != '\0') {
        for (size_t i = 0; i < oc->nlisten; i++)
            tls_certs_free(&certs[i]);
        free(certs);
        tls_certs_free(&ctl_certs);
        snapshot_release(&ns);
        conf_destroy(&nc);
        err->count = 1;
        snprintf(err->msg[0], sizeof(err->msg[0]), "%s", terr);
        log_error("reload: %s", terr);
        log_error("reload failed; the running configuration and certificates stay");
        json_t *ev = json_pack("{s:b, s:s}", "ok", 0, "error", terr);
        events_emit(d->events, current_generation(d), "reload", ev);
        return -1;
    }
    for (size_t i = 0; i < oc->nlisten; i++)
        if (certs[i])
            tls_ctx_replace(d->tls[i], &certs[i]);
    free(certs);
    if (ctl_certs)
        tls_ctx_replace(api_tls(d->api), &ctl_certs);
    nc = ns->conf;
    if (!listen_same(oc, nc))
        log_warn("reload: listen changes take effect at the next restart");
    if (nc->workers != oc->workers)
        log_warn("reload: a workers change takes effect at the next restart");
    /* The routing word is run-time state; the file's split applies when the file changed it. */
    bool reroute =
        nc->routing.live != oc->routing.live || nc->routing.standby_bp != oc->routing.standby_bp;
    enum pool_id new_live = nc->routing.live;
    uint32_t new_bp = nc->routing.standby_bp;
    if (!conf_str_equal(nc->log.error, oc->log.error))
        if (log_open(nc->log.level, nc->log.error) == -1)
            log_error("reload: cannot open log %s: %s", nc->log.error, strerror(errno));
    log_set_level(nc->log.level);
    if (!conf_str_equal(nc->log.access, oc->log.access))
        log_warn("reload: a log.access change takes effect at the next restart");
    health_set_snapshot(d->health, ns);
    for (int i = 0; i < d->nworkers; i++)
        worker_post_snapshot(d->workers[i], snapshot_ref(ns));
    snapshot_mark_removed(d->snap, ns);
    snapshot_release(&d->snap);
    d->snap = ns;
    log_info("configuration reloaded from %s (serial %llu)", d->conf_path,
             (unsigned long long)ns->serial);
    events_emit(d->events, current_generation(d), "reload",
                json_pack("{s:b, s:I}", "ok", 1, "serial", (json_int_t)ns->serial));
    if (reroute)
        daemon_route(d, new_live, new_bp, "reload", "the config file changed the split", NULL,
                     NULL);
    return 0;
}

static uint64_t
current_generation(const struct daemon *d)
{
    struct route_word rw;
    routing_load(&d->routing, &rw);
    return rw.generation;
}

uint64_t
daemon_route(struct daemon *d, enum pool_id live, uint32_t standby_bp, const char *action,
             const char *reason, const char *peer, uint64_t *ack_us)
{
    uint64_t t0 = clock_us();
    uint64_t gen = routing_publish(&d->routing, live, standby_bp, 0);
    /* DESIGN §3: acknowledged only when no worker is still in a decision that may have read
     * the old word (route.c: the store-load handshake). */
    if (d->started) {
        for (int i = 0; i < d->nworkers; i++) {
            if (d->workers[i] && route_decisions_wait(&d->workers[i]->decisions, 2000) != 0)
                log_warn("routing: worker %d did not end a routing decision in 2 s "
                         "(generation %llu)",
                         i, (unsigned long long)gen);
        }
    }
    uint64_t us = clock_us() - t0;
    if (ack_us)
        *ack_us = us;
    log_info("routing: %s: live %s, standby %u.%02u%%, generation %llu (%llu us)", action,
             conf_pool_name(live), standby_bp / 100, standby_bp % 100, (unsigned long long)gen,
             (unsigned long long)us);
    json_t *ev = json_pack("{s:s, s:s, s:f}", "action", action, "live", conf_pool_name(live),
                           "standby_percent", standby_bp / 100.0);
    if (reason)
        json_object_set_new(ev, "reason", json_string(reason));
    if (peer)
        json_object_set_new(ev, "peer", json_string(peer));
    events_emit(d->events, gen, "routing", ev);
    daemon_save_state(d);
    return gen;
}

void
daemon_set_admin(struct daemon *d, struct server *srv, enum admin_state st, const char *peer)
{
    static const char *const names[] = {"ready", "drain", "maint"};
    enum admin_state old =
        (enum admin_state)atomic_load_explicit(&srv->admin, memory_order_relaxed);
    server_set_admin(srv, st);
    if (old == ADMIN_MAINT && st != ADMIN_MAINT)
        health_check_now(d->health, srv);
    log_info("admin: %s/%s %s -> %s%s%s", conf_pool_name(srv->pool), srv->name, names[old],
             names[st], peer ? " by " : "", peer ? peer : "");
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s}", "pool", conf_pool_name(srv->pool), "server",
                           srv->name, "state", names[st], "from", names[old]);
    if (peer)
        json_object_set_new(ev, "peer", json_string(peer));
    events_emit(d->events, current_generation(d), "admin", ev);
    daemon_save_state(d);
}

static void
on_health_change(void *arg, const struct server *srv, enum health_state from, enum health_state to,
                 const char *reason)
{
    struct daemon *d = arg;
    events_emit(d->events, current_generation(d), "health",
                json_pack("{s:s, s:s, s:s, s:s, s:s}", "pool", conf_pool_name(srv->pool), "server",
                          srv->name, "from", health_state_name(from), "to", health_state_name(to),
                          "reason", reason));
    log_msg(to == HEALTH_DOWN ? LOG_LEVEL_WARN : LOG_LEVEL_INFO, "health: %s/%s %s -> %s: %s",
            conf_pool_name(srv->pool), srv->name, health_state_name(from), health_state_name(to),
            reason);
}

static void start_workers(struct daemon *d);

static void
on_event_added(void *arg, const json_t *event)
{
    struct daemon *d = arg;
    api_events_added(d->api);
    api_audit_event(d->api, event);
    notify_event(d->notify, event);
}

static void
on_first_round(void *arg)
{
    start_workers(arg);
}

void
daemon_rollout_step(struct daemon *d, const struct rollout_step *step, const char *what,
                    const char *peer)
{
    struct rollout *r = &d->rollout;
    const char *reason = step->reason[0] ? step->reason : NULL;
    switch (step->action) {
    case ROLLOUT_ACTION_NONE:
        break;
    case ROLLOUT_ACTION_WEIGHT:
        daemon_route(d, r->from, step->weight_bp, what, reason, peer, NULL);
        break;
    case ROLLOUT_ACTION_PROMOTE:
        daemon_route(d, r->to, 0, "promote", reason, peer, NULL);
        break;
    case ROLLOUT_ACTION_ROLLBACK:
        daemon_route(d, r->from, 0, "rollback", reason, peer, NULL);
        break;
    }
    /* "action" first, so a line of `yardctl events` starts with what happened. */
    json_t *ev = json_pack("{s:s}", "action", what);
    if (peer)
        json_object_set_new(ev, "peer", json_string(peer));
    json_t *st = rollout_status_json(r, clock_ms());
    json_object_update_missing(ev, st);
    json_decref(st);
    events_emit(d->events, current_generation(d), "rollout", ev);
    if (step->action == ROLLOUT_ACTION_NONE)
        daemon_save_state(d);
}

/* Feeds the rollout engine its once-a-second measurements. */
static void
rollout_tick_now(struct daemon *d)
{
    struct rollout *r = &d->rollout;
    if (r->phase != ROLLOUT_PROGRESSING)
        return;
    struct rollout_inputs in = {.now_ms = clock_ms()};
    uint64_t window = r->cfg.gates.window_ms;
    measure_pool_window(d->measure, r->to, window, &in.standby);
    measure_pool_window(d->measure, r->from, window, &in.live);
    const struct pool *pool = &d->snap->pools[r->to];
    for (size_t i = 0; i < pool->nservers; i++) {
        const struct server *srv = pool->servers[i];
        if (atomic_load_explicit(&srv->admin, memory_order_relaxed) == ADMIN_MAINT)
            continue;
        in.standby_checked++;
        if (atomic_load_explicit(&srv->health, memory_order_relaxed) == HEALTH_UP)
            in.standby_healthy++;
    }
    struct rollout_step step = {0};
    enum rollout_phase before = r->phase;
    rollout_tick(r, &in, &step);
    if (step.verdict_changed) {
        json_t *ev = json_pack("{s:s}", "action", "verdict");
        json_t *st = rollout_status_json(r, clock_ms());
        json_object_update_missing(ev, st);
        json_decref(st);
        events_emit(d->events, current_generation(d), "gate", ev);
    }
    if (step.action == ROLLOUT_ACTION_NONE && before != r->phase) {
        daemon_rollout_step(d, &step, "paused", NULL); /* on_failure: pause */
    } else if (step.action != ROLLOUT_ACTION_NONE) {
        const char *what = step.action == ROLLOUT_ACTION_WEIGHT    ? "step"
                           : step.action == ROLLOUT_ACTION_PROMOTE ? "promoted"
                                                                   : "rolled_back";
        daemon_rollout_step(d, &step, what, NULL);
    }
}

/* drain.tunnel_timeout: a pool that has had no share for that long loses its remaining tunnels
 * (0 = never). The live pool always has a share; the standby has one when standby_bp > 0. */
static void
tunnel_drain_tick(struct daemon *d, uint64_t now)
{
    uint64_t limit = d->snap->conf->drain.tunnel_timeout_ms;
    struct route_word rw;
    routing_load(&d->routing, &rw);
    for (int p = 0; p < POOL_COUNT; p++) {
        bool share = (enum pool_id)p == rw.live || rw.standby_bp > 0;
        if (share) {
            d->no_share_since[p] = 0;
            d->tunnels_closed[p] = false;
            continue;
        }
        if (d->no_share_since[p] == 0)
            d->no_share_since[p] = now;
        if (limit == 0 || d->tunnels_closed[p] || now - d->no_share_since[p] < limit)
            continue;
        d->tunnels_closed[p] = true;
        log_info("drain: closing the remaining tunnels of %s (no share for %llu ms)",
                 conf_pool_name((enum pool_id)p), (unsigned long long)(now - d->no_share_since[p]));
        for (int i = 0; i < d->nworkers; i++)
            if (d->workers[i])
                worker_post_close_tunnels(d->workers[i], (enum pool_id)p);
        events_emit(d->events, current_generation(d), "drain",
                    json_pack("{s:s, s:s}", "pool", conf_pool_name((enum pool_id)p), "action",
                              "tunnels_closed"));
    }
}

static void
on_sample(evutil_socket_t fd, short what, void *arg)
{
    struct daemon *d = arg;
    uint64_t now = clock_ms();
    measure_sample(d->measure, now, d->snap);
    if (now >= d->ticket_rotate_ms) {
        if (d->ticket_rotate_ms && tls_rotate_ticket_keys() == -1)
            log_warn("tls: no random bytes for a new session ticket key; the old one stays");
        d->ticket_rotate_ms = now + TLS_TICKET_ROTATE_MS;
    }
    rollout_tick_now(d);
    if (d->started)
        tunnel_drain_tick(d, now);
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
    api_shutting_down(d->api);
    if (!d->started) {
        /* Still in the first round of checks: nothing to drain. */
        event_base_loopexit(d->base, NULL);
        return;
    }
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
        if (!d->stopping) {
            struct conf_err err;
            daemon_reload(d, &err);
        }
        break;
    case SIGUSR1:
        if (log_reopen() == -1)
            log_error("cannot reopen the log: %s", strerror(errno));
        else
            log_info("log reopened");
        if (d->alog && accesslog_reopen(d->alog) == -1)
            log_error("cannot reopen the access log: %s", strerror(errno));
        if (api_reopen_logs(d->api) == -1)
            log_error("cannot reopen the audit log: %s", strerror(errno));
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
            int fd = sock_bind(&l->addr, port, err, sizeof(err));
            if (fd == -1) {
                log_error("listen: %s", err);
                return -1;
            }
            if (j == 0)
                port = sock_port(fd); /* port 0: every worker shares the one the kernel chose */
            struct worker_socket *s = &socks[(size_t)j * conf->nlisten + i];
            s->fd = fd;
            s->route_to = l->route_to;
            s->tls = d->tls[i];
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
        log_msg(LOG_LEVEL_INFO, "listening on %s:%u%s%s", host, port,
                l->route_to == ROUTE_TO_NORMAL ? "" : " (preview)", l->tls_enabled ? " (tls)" : "");
    }
}

/* After the first round of health checks: open the listeners and start the workers. */
static void
start_workers(struct daemon *d)
{
    if (d->started || d->stopping)
        return;
    const struct conf *conf = d->snap->conf;
    size_t per = conf->nlisten;
    for (size_t i = 0; i < d->nsocks; i++) {
        if (sock_start(d->socks[i].fd) == -1) {
            log_error("listen: %s", strerror(errno));
            event_base_loopexit(d->base, NULL);
            return;
        }
    }
    /* Workers block every signal: the main thread's event_base handles them. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    bool ok = true;
    for (int j = 0; j < d->nworkers; j++) {
        d->workers[j] = worker_create(j, d->nworkers, &d->routing, d->board, d->alog,
                                      snapshot_ref(d->snap), &d->socks[(size_t)j * per], per);
        for (size_t i = 0; i < per; i++)
            d->socks[(size_t)j * per + i].fd = -1; /* adopted (or closed) by the worker */
        if (d->workers[j] == NULL || worker_start(d->workers[j]) == -1) {
            log_error("cannot start worker %d", j);
            ok = false;
            break;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!ok) {
        for (int j = 0; j < d->nworkers; j++)
            if (d->workers[j])
                worker_post_stop(d->workers[j]);
        d->failed = true;
        event_base_loopexit(d->base, NULL);
        return;
    }
    d->started = true;
    struct route_word rw;
    routing_load(&d->routing, &rw);
    log_info("switchyard %s started: %d worker%s, live %s, standby %u.%02u%%, generation %llu",
             SWITCHYARD_VERSION, d->nworkers, d->nworkers == 1 ? "" : "s", conf_pool_name(rw.live),
             rw.standby_bp / 100, rw.standby_bp % 100, (unsigned long long)rw.generation);
    struct worker_socket first[64];
    for (size_t i = 0; i < per && i < 64; i++) {
        first[i] = (struct worker_socket){.fd = -1, .route_to = conf->listen[i].route_to};
        first[i].fd = evconnlistener_get_fd(d->workers[0]->listeners[i].lev);
    }
    log_listening(conf, first);
}

int
daemon_run(struct conf *conf)
{
    struct daemon d = {0};
    int status = 1;

    d.conf_path = xstrdup(conf->path);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    d.nworkers = conf->workers ? (int)conf->workers : (int)(ncpu > 0 ? ncpu : 1);
    if (d.nworkers > MAX_WORKERS)
        d.nworkers = MAX_WORKERS;
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    routing_init(&d.routing, conf->routing.live, conf->routing.standby_bp, 0, 1);
    rollout_init(&d.rollout);
    d.board = stats_board_create(d.nworkers);
    d.snap = snapshot_create(conf, NULL, d.nworkers, HEALTH_UNKNOWN);
    conf = NULL;
    {
        char err[600];
        if (snapshot_tls_init(d.snap, err, sizeof(err)) == -1) {
            log_error("%s", err);
            goto out;
        }
    }
    restore_state(&d);

    /* TLS contexts per listener (certificates checked now; they live until exit). */
    d.tls = xcalloc(d.snap->conf->nlisten, sizeof(*d.tls));
    for (size_t i = 0; i < d.snap->conf->nlisten; i++) {
        const struct conf_listen *l = &d.snap->conf->listen[i];
        if (!l->tls_enabled)
            continue;
        char err[512];
        d.tls[i] = tls_ctx_create(&l->tls, err, sizeof(err));
        if (d.tls[i] == NULL) {
            log_error("listen %s: %s", l->addr.text, err);
            goto out;
        }
    }
    d.nsocks = d.snap->conf->nlisten * (size_t)d.nworkers;
    d.socks = xcalloc(d.nsocks, sizeof(*d.socks));
    for (size_t i = 0; i < d.nsocks; i++)
        d.socks[i].fd = -1;
    if (open_sockets(&d, d.socks) == -1)
        goto out;
    if (d.snap->conf->log.access) {
        char err[256];
        d.alog = accesslog_open(d.snap->conf->log.access, d.nworkers, err, sizeof(err));
        if (d.alog == NULL) {
            log_error("access log: %s", err);
            goto out;
        }
    }

    d.base = event_base_new();
    if (d.base == NULL) {
        log_error("cannot create the main event base");
        goto out;
    }
    d.measure = measure_create(d.board);
    /* A baseline of zeros at start, so windows count the very first requests too. */
    measure_sample(d.measure, clock_ms(), d.snap);
    d.sample_ev = event_new(d.base, -1, EV_PERSIST, on_sample, &d);
    {
        struct timeval one = {1, 0};
        event_add(d.sample_ev, &one);
    }
    const int sigs[4] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    for (int i = 0; i < 4; i++) {
        d.signals[i] = evsignal_new(d.base, sigs[i], on_signal, &d);
        evsignal_add(d.signals[i], NULL);
    }
    d.notify = notify_create(d.base, &d.snap->conf->notify);
    d.events = events_create(on_event_added, &d);
    {
        char err[512];
        d.api = api_create(&d, err, sizeof(err));
        if (d.api == NULL) {
            log_error("control API: %s", err);
            goto out;
        }
    }
    d.health = health_create(d.base, on_health_change, &d);
    if (d.health == NULL) {
        log_error("cannot start the health checker (libcurl)");
        goto out;
    }
    /* Servers start unknown; the listeners open after the first round of checks. */
    health_set_snapshot(d.health, d.snap);
    health_first_round(d.health, on_first_round, &d);

    event_base_dispatch(d.base);
    status = d.failed ? 1 : 0;
    log_info("stopped");

out:
    for (int j = 0; j < d.nworkers; j++)
        worker_destroy(&d.workers[j]);
    api_destroy(&d.api);
    state_store_destroy(&d.store);
    rollout_finish(&d.rollout);
    health_destroy(&d.health);
    events_destroy(&d.events);
    notify_destroy(&d.notify);
    accesslog_close(&d.alog);
    for (size_t i = 0; d.socks && i < d.nsocks; i++)
        if (d.socks[i].fd != -1)
            close(d.socks[i].fd);
    free(d.socks);
    for (size_t i = 0; d.tls && d.snap && i < d.snap->conf->nlisten; i++)
        tls_ctx_destroy(&d.tls[i]);
    free(d.tls);
    for (int i = 0; i < 4; i++)
        if (d.signals[i])
            event_free(d.signals[i]);
    if (d.watch_ev)
        event_free(d.watch_ev);
    if (d.sample_ev)
        event_free(d.sample_ev);
    measure_destroy(&d.measure);
    if (d.base)
        event_base_free(d.base);
    snapshot_release(&d.snap);
    stats_board_destroy(&d.board);
    free(d.conf_path);
    return status;
}
