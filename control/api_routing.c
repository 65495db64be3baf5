/* control/api_routing.c — the control API's status view and its immediate mutations
 * (control/API.md): GET /v1/status, and rollback, weights, server admin states and reload, each
 * done within its request. */
#include "control/api_internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <event2/http.h>
#include <jansson.h>

#include "control/api_body.h"
#include "control/daemon.h"
#include "control/events.h"
#include "control/health.h"
#include "control/measure.h"
#include "control/rollout.h"
#include "proxy/clock.h"

#define API_WINDOW_MS 30000

/* --- views --- */

static json_t *
routing_json(const struct route_word *rw)
{
    return json_pack("{s:s, s:s, s:f, s:I}", "live", conf_pool_name(rw->live), "standby",
                     conf_pool_name(route_other_pool(rw->live)), "standby_percent",
                     rw->standby_bp / 100.0, "standby_bp", (json_int_t)rw->standby_bp);
}

static const char *
admin_name(int st)
{
    static const char *const names[] = {"ready", "drain", "maint"};
    return st >= 0 && st <= 2 ? names[st] : "ready";
}

static json_t *
server_json(struct api *a, const struct server *srv, uint64_t now)
{
    struct measure_result mr = {0};
    measure_server_window(a->d->measure, srv->pool, srv->name, API_WINDOW_MS, &mr);
    struct health_status hs = {0};
    health_server_status(a->d->health, srv, &hs);
    int health = atomic_load_explicit(&srv->health, memory_order_relaxed);
    int admin = atomic_load_explicit(&srv->admin, memory_order_relaxed);
    uint64_t until = atomic_load_explicit(&srv->ejected_until_ms, memory_order_relaxed);
    return json_pack("{s:s, s:s, s:I, s:s, s:s, s:b, s:I, s:I, s:I, s:s}", "name", srv->name,
                     "address", srv->addr.text, "weight", (json_int_t)srv->weight, "health",
                     health_state_name((enum health_state)health), "admin", admin_name(admin),
                     "ejected", until > now, "inflight", (json_int_t)mr.inflight, "conns",
                     (json_int_t)mr.conns, "tunnels", (json_int_t)mr.tunnels, "last_check",
                     hs.reason);
}

static json_t *
pool_json(struct api *a, const struct pool *pool, const struct route_word *rw, uint64_t now)
{
    bool live = pool->id == rw->live;
    double share = live ? 100.0 - rw->standby_bp / 100.0 : rw->standby_bp / 100.0;
    struct measure_result mr = {0};
    measure_pool_window(a->d->measure, pool->id, API_WINDOW_MS, &mr);
    json_t *servers = json_array();
    unsigned healthy = 0, usable = 0;
    for (size_t i = 0; i < pool->nservers; i++) {
        const struct server *srv = pool->servers[i];
        if (atomic_load_explicit(&srv->health, memory_order_relaxed) == HEALTH_UP)
            healthy++;
        if (server_usable(srv, now))
            usable++;
        json_array_append_new(servers, server_json(a, srv, now));
    }
    json_t *window =
        json_pack("{s:f, s:I, s:f, s:I, s:f, s:f, s:f, s:f}", "seconds", mr.span_ms / 1000.0,
                  "requests", (json_int_t)mr.requests, "rate", mr.rate_per_s, "errors",
                  (json_int_t)mr.errors, "error_rate", mr.error_rate, "p50_ms", mr.p50_us / 1000.0,
                  "p90_ms", mr.p90_us / 1000.0, "p99_ms", mr.p99_us / 1000.0);
    return json_pack("{s:s, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o}", "role",
                     live ? "live" : "standby", "share_percent", share, "healthy",
                     (json_int_t)healthy, "servers_total", (json_int_t)pool->nservers, "usable",
                     (json_int_t)usable, "inflight", (json_int_t)mr.inflight, "conns",
                     (json_int_t)mr.conns, "tunnels", (json_int_t)mr.tunnels, "window", window,
                     "servers", servers);
}

void
api_handle_status(struct api *a, struct evhttp_request *req)
{
    struct route_word rw;
    routing_load(&a->d->routing, &rw);
    uint64_t now = clock_ms();
    json_t *pools = json_object();
    for (int p = 0; p < POOL_COUNT; p++)
        json_object_set_new(pools, conf_pool_name((enum pool_id)p),
                            pool_json(a, &a->d->snap->pools[p], &rw, now));
    api_reply_ok(a, req,
                 json_pack("{s:s, s:I, s:o, s:o, s:o}", "version", SWITCHYARD_VERSION, "generation",
                           (json_int_t)rw.generation, "routing", routing_json(&rw), "rollout",
                           rollout_status_json(&a->d->rollout, now), "pools", pools));
}

/* --- mutations --- */

static void
route_reply(struct api *a, struct evhttp_request *req, const struct route_word *before,
            uint64_t ack_us)
{
    struct route_word rw;
    routing_load(&a->d->routing, &rw);
    api_reply_ok(a, req,
                 json_pack("{s:o, s:o, s:I}", "routing", routing_json(&rw), "previous",
                           routing_json(before), "ack_us", (json_int_t)ack_us));
}

int
api_handle_rollback(struct api *a, struct evhttp_request *req, json_t *body, const char *peer)
{
    struct api_refusal no;
    const char *why = NULL;
    if (api_check_reason(body, api_generation(a), &why, &no) == -1) {
        api_reply_refusal(a, req, &no);
        return no.status;
    }
    struct route_word before;
    routing_load(&a->d->routing, &before);
    struct rollout *r = &a->d->rollout;
    enum pool_id live = before.live;
    if (r->phase == ROLLOUT_STABLE && r->outcome == ROLLOUT_OUTCOME_PROMOTED &&
        before.live == r->to) {
        /* After a promotion the old pool is kept warm: rolling back swaps back to it. */
        live = r->from;
    } else if (r->phase != ROLLOUT_STABLE) {
        live = r->from;
    }
    bool ends_rollout = r->phase != ROLLOUT_STABLE || live != before.live;
    struct rollout_step step = {0};
    rollout_rollback(r, clock_ms(), why, &step);
    if (live != before.live) {
        r->outcome = ROLLOUT_OUTCOME_ROLLED_BACK; /* the promotion is undone */
        snprintf(r->reason, sizeof(r->reason), "rolled back after promotion: %s",
                 why ? why : "by an operator");
    }
    uint64_t ack_us = 0;
    daemon_route(a->d, live, 0, "rollback", why, peer, &ack_us);
    if (ends_rollout) {
        json_t *ev = rollout_status_json(r, clock_ms());
        json_object_set_new(ev, "action", json_string("rolled_back"));
        json_object_set_new(ev, "peer", json_string(peer));
        events_emit(a->d->events, api_generation(a), "rollout", ev);
    }
    route_reply(a, req, &before, ack_us);
    return 200;
}

int
api_handle_weights(struct api *a, struct evhttp_request *req, json_t *body, const char *peer)
{
    struct api_refusal no;
    uint32_t bp = 0;
    if (api_check_weights(body, api_generation(a), &bp, &no) == -1) {
        api_reply_refusal(a, req, &no);
        return no.status;
    }
    struct route_word before;
    routing_load(&a->d->routing, &before);
    bool pauses = a->d->rollout.phase == ROLLOUT_PROGRESSING;
    if (pauses)
        rollout_manual_weight(&a->d->rollout, clock_ms()); /* a manual split pauses it */
    uint64_t ack_us = 0;
    daemon_route(a->d, before.live, bp, "weights", NULL, peer, &ack_us);
    if (pauses) {
        struct rollout_step none = {0};
        daemon_rollout_step(a->d, &none, "paused", peer);
    }
    route_reply(a, req, &before, ack_us);
    return 200;
}

int
api_handle_server(struct api *a, struct evhttp_request *req, json_t *body, const char *pool_name,
                  const char *name, const char *state, const char *peer)
{
    struct api_refusal no;
    if (api_check_plain(body, api_generation(a), &no) == -1) {
        api_reply_refusal(a, req, &no);
        return no.status;
    }
    int pool = conf_pool_from_name(pool_name);
    struct server *srv = pool < 0 ? NULL : snapshot_find_server(a->d->snap, pool, name);
    if (srv == NULL) {
        api_reply_error(a, req, 404, "not_found", NULL, "no server %s/%s", pool_name, name);
        return 404;
    }
    enum admin_state st;
    if (strcmp(state, "ready") == 0)
        st = ADMIN_READY;
    else if (strcmp(state, "drain") == 0)
        st = ADMIN_DRAIN;
    else if (strcmp(state, "maint") == 0)
        st = ADMIN_MAINT;
    else {
        api_reply_error(a, req, 404, "not_found", NULL, "no admin state \"%s\" (ready|drain|maint)",
                        state);
        return 404;
    }
    daemon_set_admin(a->d, srv, st, peer);
    api_reply_ok(a, req, server_json(a, srv, clock_ms()));
    return 200;
}

int
api_handle_reload(struct api *a, struct evhttp_request *req, json_t *body)
{
    struct api_refusal no;
    if (api_check_plain(body, api_generation(a), &no) == -1) {
        api_reply_refusal(a, req, &no);
        return no.status;
    }
    struct conf_err err;
    if (daemon_reload(a->d, &err) == -1) {
        json_t *errors = json_array();
        for (size_t i = 0; i < err.count && i < CONF_ERR_MAX; i++)
            json_array_append_new(errors, api_json_text(err.msg[i]));
        json_t *e = json_object();
        json_object_set_new(e, "code", json_string("invalid"));
        json_object_set_new(e, "message", api_json_text(err.count ? err.msg[0] : "reload failed"));
        json_object_set_new(e, "errors", errors);
        a->answered_status = 400;
        a->answered_code = "invalid";
        json_t *env = api_envelope_error(api_generation(a), "invalid", NULL, "");
        json_object_set_new(env, "error", e);
        api_send_json(req, 400, env);
        return 400;
    }
    api_reply_ok(a, req, json_pack("{s:I}", "serial", (json_int_t)a->d->snap->serial));
    return 200;
}
