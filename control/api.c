/* control/api.c — the control API server (control/API.md): evhttp on the unix socket with
 * SO_PEERCRED checks, optionally on TCP with a bearer token (over TLS with control.tls); JSON
 * envelopes with stable error codes; status, rollback, weights, admin states, reload,
 * long-polled events, metrics. */
#include "control/api.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "conf/xalloc.h"
#include "control/audit.h"
#include "control/daemon.h"
#include "control/events.h"
#include "control/health.h"
#include "control/measure.h"
#include "control/metrics.h"
#include "control/rollout.h"
#include "proxy/clock.h"
#include "proxy/http.h"
#include "proxy/log.h"
#include "proxy/sock.h"
#include "proxy/stats.h"
#include "proxy/tls.h"

#define API_MAX_BODY (64 * 1024)
#define API_MAX_WAITERS 256
#define API_MAX_WAIT_S 60
#define API_WINDOW_MS 30000

struct api;

struct api_listener {
    struct api *a; /* borrowed: the owner */
    bool tcp;
};

/* A long-poll waiting for events. */
struct waiter {
    struct api *a;
    struct evhttp_request *req; /* borrowed until answered or closed */
    struct event *timer;        /* owned */
    uint64_t since;
    struct waiter *next;
    struct waiter *prev;
};

struct api {
    struct daemon *d;
    struct evhttp *unix_http; /* owned */
    struct evhttp *tcp_http;  /* owned; NULL without control.listen */
    struct api_listener lunix;
    struct api_listener ltcp;
    char *socket_path; /* owned */
    ino_t socket_ino;
    char *token;         /* owned; NULL without control.listen */
    struct tls_ctx *tls; /* owned; NULL without control.tls (then TCP is plain HTTP) */
    char *token_name;    /* owned: how the audit log names a token peer */
    struct audit *audit; /* owned; NULL without log.audit */
    struct waiter *waiters;
    size_t nwaiters;
    bool shutting_down;
    int answered_status;       /* what the last reply said (for the audit log) */
    const char *answered_code; /* static string or NULL */
};

/* --- replies --- */

static uint64_t
generation(const struct api *a)
{
    struct route_word rw;
    routing_load(&a->d->routing, &rw);
    return rw.generation;
}

static void
send_json(struct evhttp_request *req, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    struct evbuffer *out = evbuffer_new();
    evbuffer_add(out, text, strlen(text));
    evbuffer_add(out, "\n", 1);
    free(text);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_send_reply(req, status, http_reason(status), out);
    evbuffer_free(out);
    json_decref(body);
}

/* data is stolen. */
static void
reply_ok(struct api *a, struct evhttp_request *req, json_t *data)
{
    a->answered_status = 200;
    a->answered_code = NULL;
    send_json(req, 200,
              json_pack("{s:b, s:I, s:o}", "ok", 1, "generation", (json_int_t)generation(a), "data",
                        data));
}

static void reply_error(struct api *a, struct evhttp_request *req, int status, const char *code,
                        const char *field, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void
reply_error(struct api *a, struct evhttp_request *req, int status, const char *code,
            const char *field, const char *fmt, ...)
{
    a->answered_status = status;
    a->answered_code = code;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *err = json_pack("{s:s, s:s}", "code", code, "message", msg);
    if (field)
        json_object_set_new(err, "field", json_string(field));
    send_json(req, status,
              json_pack("{s:b, s:I, s:o}", "ok", 0, "generation", (json_int_t)generation(a),
                        "error", err));
}

/* --- authorization --- */

static bool
gid_allowed(const struct conf_control *cc, gid_t gid)
{
    for (size_t i = 0; i < cc->nallow_gids; i++)
        if (cc->allow_gids[i] == gid)
            return true;
    return false;
}

/* Whether a unix-socket peer may use the API: root, our own uid, an allowed uid, or a member
 * (primary or supplementary) of an allowed group. */
static bool
peer_allowed(const struct conf_control *cc, uid_t uid, gid_t gid)
{
    if (uid == 0 || uid == geteuid())
        return true;
    for (size_t i = 0; i < cc->nallow_uids; i++)
        if (cc->allow_uids[i] == uid)
            return true;
    if (gid_allowed(cc, gid))
        return true;
    if (cc->nallow_gids == 0)
        return false;
    char buf[4096];
    struct passwd pw, *pwp = NULL;
    if (getpwuid_r(uid, &pw, buf, sizeof(buf), &pwp) != 0 || pwp == NULL)
        return false;
    gid_t groups[256];
    int n = 256;
    if (getgrouplist(pw.pw_name, gid, groups, &n) == -1)
        n = 256;
    for (int i = 0; i < n; i++)
        if (gid_allowed(cc, groups[i]))
            return true;
    return false;
}

/* Constant-time comparison of the presented token with ours. */
static bool
token_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char diff = (unsigned char)(alen != blen);
    size_t n = alen < blen ? alen : blen;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0 && blen > 0;
}

/* Checks the peer; fills peer (for events and the audit log). false when refused (answered). */
static bool
authorize(struct api_listener *l, struct evhttp_request *req, char *peer, size_t peerlen,
          json_t **peer_json)
{
    struct api *a = l->a;
    const struct conf_control *cc = &a->d->snap->conf->control;
    if (l->tcp) {
        const char *auth =
            evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
        const char *tok = auth && strncmp(auth, "Bearer ", 7) == 0 ? auth + 7 : NULL;
        if (tok == NULL || a->token == NULL ||
            !token_equal(a->token, strlen(a->token), tok, strlen(tok))) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
            reply_error(a, req, 401, "forbidden", NULL, "a valid bearer token is required");
            *peer_json = json_pack("{s:s}", "token", "(invalid)");
            return false;
        }
        snprintf(peer, peerlen, "token %s", a->token_name);
        *peer_json = json_pack("{s:s}", "token", a->token_name);
        return true;
    }
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (bev == NULL ||
        getsockopt(bufferevent_getfd(bev), SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1) {
        reply_error(a, req, 403, "forbidden", NULL, "cannot read the peer's credentials");
        return false;
    }
    snprintf(peer, peerlen, "uid %u pid %d", (unsigned)cred.uid, (int)cred.pid);
    *peer_json = json_pack("{s:I, s:I, s:I}", "uid", (json_int_t)cred.uid, "gid",
                           (json_int_t)cred.gid, "pid", (json_int_t)cred.pid);
    if (!peer_allowed(cc, cred.uid, cred.gid)) {
        reply_error(a, req, 403, "forbidden", NULL,
                    "uid %u is not in control.allow_uids or control.allow_gids",
                    (unsigned)cred.uid);
        log_warn("control: refused a request from uid %u pid %d", (unsigned)cred.uid,
                 (int)cred.pid);
        return false;
    }
    return true;
}

/* --- request bodies --- */

/* The request body as a JSON object ({} when empty), or NULL after answering 400/413. */
static json_t *
read_body(struct api *a, struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len > API_MAX_BODY) {
        reply_error(a, req, 413, "invalid", NULL, "request body over %d bytes", API_MAX_BODY);
        return NULL;
    }
    if (len == 0)
        return json_object();
    json_error_t jerr;
    json_t *j =
        json_loadb((const char *)evbuffer_pullup(in, -1), len, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL) {
        reply_error(a, req, 400, "invalid", NULL, "malformed JSON at line %d column %d: %s",
                    jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        reply_error(a, req, 400, "invalid", NULL, "the request body must be a JSON object");
        return NULL;
    }
    return j;
}

/* Refuses unknown fields. true when every key is in allowed (NULL-terminated). */
static bool
only_fields(struct api *a, struct evhttp_request *req, json_t *body, const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        bool known = false;
        for (const char *const *k = allowed; *k; k++)
            if (strcmp(*k, key) == 0)
                known = true;
        if (!known) {
            reply_error(a, req, 400, "invalid", key, "unknown field \"%s\"", key);
            return false;
        }
    }
    return true;
}

/* if_generation: absent, or equal to the current generation. false after answering. */
static bool
generation_matches(struct api *a, struct evhttp_request *req, json_t *body)
{
    json_t *g = json_object_get(body, "if_generation");
    if (g == NULL)
        return true;
    if (!json_is_integer(g) || json_integer_value(g) < 0) {
        reply_error(a, req, 400, "invalid", "if_generation", "must be a non-negative integer");
        return false;
    }
    uint64_t cur = generation(a);
    if ((uint64_t)json_integer_value(g) != cur) {
        reply_error(a, req, 409, "conflict", "if_generation", "generation is %llu, not %lld",
                    (unsigned long long)cur, (long long)json_integer_value(g));
        return false;
    }
    return true;
}

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

static void
handle_status(struct api *a, struct evhttp_request *req)
{
    struct route_word rw;
    routing_load(&a->d->routing, &rw);
    uint64_t now = clock_ms();
    json_t *pools = json_object();
    for (int p = 0; p < POOL_COUNT; p++)
        json_object_set_new(pools, conf_pool_name((enum pool_id)p),
                            pool_json(a, &a->d->snap->pools[p], &rw, now));
    reply_ok(a, req,
             json_pack("{s:s, s:I, s:o, s:o, s:o}", "version", SWITCHYARD_VERSION, "generation",
                       (json_int_t)rw.generation, "routing", routing_json(&rw), "rollout",
                       rollout_status_json(&a->d->rollout, now), "pools", pools));
}

/* --- mutations --- */

static void
audit(struct api *a, json_t *peer, struct evhttp_request *req, const char *path, json_t *body,
      int status, const char *code, uint64_t gen_before)
{
    if (a->audit == NULL)
        return;
    static const char *const methods[] = {"GET",     "POST",  "HEAD",    "PUT",  "DELETE",
                                          "OPTIONS", "TRACE", "CONNECT", "PATCH"};
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    const char *method = "?";
    for (int i = 0; i < 9; i++)
        if (cmd == (enum evhttp_cmd_type)(1 << i))
            method = methods[i];
    struct audit_entry e = {
        .peer = peer,
        .method = method,
        .path = path,
        .request = body,
        .status = status,
        .code = code,
        .generation_before = gen_before,
        .generation_after = generation(a),
    };
    audit_write(a->audit, &e);
}

static void
route_reply(struct api *a, struct evhttp_request *req, const struct route_word *before,
            uint64_t ack_us)
{
    struct route_word rw;
    routing_load(&a->d->routing, &rw);
    reply_ok(a, req,
             json_pack("{s:o, s:o, s:I}", "routing", routing_json(&rw), "previous",
                       routing_json(before), "ack_us", (json_int_t)ack_us));
}

static int
handle_rollback(struct api *a, struct evhttp_request *req, json_t *body, const char *peer)
{
    static const char *const fields[] = {"reason", "if_generation", NULL};
    if (!only_fields(a, req, body, fields) || !generation_matches(a, req, body))
        return 400;
    json_t *reason = json_object_get(body, "reason");
    if (reason && !json_is_string(reason)) {
        reply_error(a, req, 400, "invalid", "reason", "must be a string");
        return 400;
    }
    struct route_word before;
    routing_load(&a->d->routing, &before);
    const char *why = reason ? json_string_value(reason) : NULL;
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
        events_emit(a->d->events, generation(a), "rollout", ev);
    }
    route_reply(a, req, &before, ack_us);
    return 200;
}

static int
handle_weights(struct api *a, struct evhttp_request *req, json_t *body, const char *peer)
{
    static const char *const fields[] = {"standby_percent", "if_generation", NULL};
    if (!only_fields(a, req, body, fields) || !generation_matches(a, req, body))
        return 400;
    json_t *p = json_object_get(body, "standby_percent");
    if (p == NULL || !json_is_number(p)) {
        reply_error(a, req, 400, "invalid", "standby_percent",
                    "a number from 0 to 100 is required");
        return 400;
    }
    double v = json_number_value(p);
    double bp = v * 100.0;
    long long ibp = (long long)(bp + (bp >= 0 ? 0.5 : -0.5));
    if (!(v >= 0.0 && v <= 100.0) || bp - (double)ibp > 1e-6 || (double)ibp - bp > 1e-6) {
        reply_error(a, req, 400, "invalid", "standby_percent",
                    "must be from 0 to 100 with at most two decimals, found %g", v);
        return 400;
    }
    struct route_word before;
    routing_load(&a->d->routing, &before);
    bool pauses = a->d->rollout.phase == ROLLOUT_PROGRESSING;
    if (pauses)
        rollout_manual_weight(&a->d->rollout, clock_ms()); /* a manual split pauses it */
    uint64_t ack_us = 0;
    daemon_route(a->d, before.live, (uint32_t)ibp, "weights", NULL, peer, &ack_us);
    if (pauses) {
        struct rollout_step none = {0};
        daemon_rollout_step(a->d, &none, "paused", peer);
    }
    route_reply(a, req, &before, ack_us);
    return 200;
}

static int
handle_server(struct api *a, struct evhttp_request *req, json_t *body, const char *pool_name,
              const char *name, const char *state, const char *peer)
{
    static const char *const fields[] = {"if_generation", NULL};
    if (!only_fields(a, req, body, fields) || !generation_matches(a, req, body))
        return 400;
    int pool = conf_pool_from_name(pool_name);
    struct server *srv = pool < 0 ? NULL : snapshot_find_server(a->d->snap, pool, name);
    if (srv == NULL) {
        reply_error(a, req, 404, "not_found", NULL, "no server %s/%s", pool_name, name);
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
        reply_error(a, req, 404, "not_found", NULL, "no admin state \"%s\" (ready|drain|maint)",
                    state);
        return 404;
    }
    daemon_set_admin(a->d, srv, st, peer);
    reply_ok(a, req, server_json(a, srv, clock_ms()));
    return 200;
}

static int
handle_reload(struct api *a, struct evhttp_request *req, json_t *body)
{
    static const char *const fields[] = {"if_generation", NULL};
    if (!only_fields(a, req, body, fields) || !generation_matches(a, req, body))
        return 400;
    struct conf_err err;
    if (daemon_reload(a->d, &err) == -1) {
        json_t *errors = json_array();
        for (size_t i = 0; i < err.count && i < CONF_ERR_MAX; i++)
            json_array_append_new(errors, json_string(err.msg[i]));
        json_t *e = json_pack("{s:s, s:s, s:o}", "code", "invalid", "message",
                              err.count ? err.msg[0] : "reload failed", "errors", errors);
        a->answered_status = 400;
        a->answered_code = "invalid";
        send_json(req, 400,
                  json_pack("{s:b, s:I, s:o}", "ok", 0, "generation", (json_int_t)generation(a),
                            "error", e));
        return 400;
    }
    reply_ok(a, req, json_pack("{s:I}", "serial", (json_int_t)a->d->snap->serial));
    return 200;
}

/* A plan from a cutover request: absent (the configured one), a shorthand string, or a list of
 * {weight: percent, hold: duration string or seconds}. 0, or -1 after answering 400. */
static int
read_plan(struct api *a, struct evhttp_request *req, json_t *j, struct conf_plan *plan)
{
    char err[256];
    if (json_is_string(j)) {
        if (conf_parse_plan_shorthand(json_string_value(j), plan, err, sizeof(err)) == -1) {
            reply_error(a, req, 400, "invalid", "plan", "%s", err);
            return -1;
        }
        return 0;
    }
    if (!json_is_array(j) || json_array_size(j) == 0 || json_array_size(j) > CONF_PLAN_MAX_STEPS) {
        reply_error(a, req, 400, "invalid", "plan",
                    "a shorthand (linear:10%%/1m, canary:5%%/5m) or 1..%d steps {weight, hold}",
                    CONF_PLAN_MAX_STEPS);
        return -1;
    }
    plan->nsteps = json_array_size(j);
    plan->steps = xcalloc(plan->nsteps, sizeof(*plan->steps));
    for (size_t i = 0; i < plan->nsteps; i++) {
        json_t *st = json_array_get(j, i);
        json_t *w = json_object_get(st, "weight");
        json_t *h = json_object_get(st, "hold");
        char wtext[32];
        uint32_t bp = 0;
        uint64_t hold = 0;
        bool ok = json_is_object(st) && json_is_number(w) && json_object_size(st) <= 2 &&
                  (json_object_size(st) == 1 || h != NULL);
        if (ok) {
            snprintf(wtext, sizeof(wtext), "%.6g", json_number_value(w));
            ok = conf_parse_percent(wtext, &bp) == 0 && bp > 0;
        }
        if (ok && h) {
            if (json_is_string(h))
                ok = conf_parse_duration(json_string_value(h), &hold) == 0;
            else if (json_is_integer(h) && json_integer_value(h) >= 0)
                hold = (uint64_t)json_integer_value(h) * 1000u;
            else
                ok = false;
        }
        if (!ok) {
            reply_error(a, req, 400, "invalid", "plan",
                        "step %zu: {\"weight\": percent 0.01-100, \"hold\": \"1m\" or seconds}",
                        i + 1);
            free(plan->steps);
            plan->steps = NULL;
            return -1;
        }
        plan->steps[i].weight_bp = bp;
        plan->steps[i].hold_ms = hold;
    }
    return 0;
}

static int handle_cutover_checked(struct api *a, struct evhttp_request *req, json_t *body,
                                  json_t *to, json_t *id, int target, const struct conf_plan *plan,
                                  const char *peer);

static int
handle_cutover(struct api *a, struct evhttp_request *req, json_t *body, const char *peer)
{
    static const char *const fields[] = {"to", "plan", "id", "if_generation", NULL};
    if (!only_fields(a, req, body, fields) || !generation_matches(a, req, body))
        return 400;
    json_t *to = json_object_get(body, "to");
    json_t *id = json_object_get(body, "id");
    int target = json_is_string(to) ? conf_pool_from_name(json_string_value(to)) : -1;
    if (target < 0) {
        reply_error(a, req, 400, "invalid", "to", "\"to\" must be \"blue\" or \"green\"");
        return 400;
    }
    if (id && (!json_is_string(id) || strlen(json_string_value(id)) == 0 ||
               strlen(json_string_value(id)) > 64)) {
        reply_error(a, req, 400, "invalid", "id", "must be a string of 1 to 64 characters");
        return 400;
    }
    struct conf_plan plan = {0};
    json_t *pj = json_object_get(body, "plan");
    if (pj && read_plan(a, req, pj, &plan) == -1)
        return 400;
    char perr[256];
    if (pj && rollout_plan_check(&plan, perr, sizeof(perr)) == -1) {
        free(plan.steps);
        reply_error(a, req, 400, "invalid", "plan", "%s", perr);
        return 400;
    }
    int rc = handle_cutover_checked(a, req, body, to, id, target, pj ? &plan : NULL, peer);
    free(plan.steps);
    return rc;
}

static int
handle_cutover_checked(struct api *a, struct evhttp_request *req, json_t *body, json_t *to,
                       json_t *id, int target, const struct conf_plan *plan, const char *peer)
{
    struct rollout *r = &a->d->rollout;
    const struct conf *conf = a->d->snap->conf;
    (void)body;
    (void)to;
    uint64_t now = clock_ms();
    /* The same id again is the same cutover: answer with its state, change nothing. */
    if (id && strcmp(r->id, json_string_value(id)) == 0 &&
        (r->phase != ROLLOUT_STABLE || r->outcome != ROLLOUT_OUTCOME_NONE)) {
        send_json(req, 202,
                  json_pack("{s:b, s:I, s:o}", "ok", 1, "generation", (json_int_t)generation(a),
                            "data", rollout_status_json(r, now)));
        a->answered_status = 202;
        a->answered_code = NULL;
        return 202;
    }
    if (r->phase != ROLLOUT_STABLE) {
        reply_error(a, req, 409, "conflict", NULL, "a rollout to %s is %s", conf_pool_name(r->to),
                    rollout_phase_name(r->phase));
        return 409;
    }
    struct route_word rw;
    routing_load(&a->d->routing, &rw);
    if ((enum pool_id)target == rw.live) {
        reply_error(a, req, 400, "invalid", "to", "%s is already live", conf_pool_name(rw.live));
        return 400;
    }
    /* Pre-check: the target has enough healthy servers. */
    const struct pool *pool = &a->d->snap->pools[target];
    unsigned checked = 0, healthy = 0;
    for (size_t i = 0; i < pool->nservers; i++) {
        if (atomic_load_explicit(&pool->servers[i]->admin, memory_order_relaxed) == ADMIN_MAINT)
            continue;
        checked++;
        if (atomic_load_explicit(&pool->servers[i]->health, memory_order_relaxed) == HEALTH_UP)
            healthy++;
    }
    double ratio = checked ? (double)healthy / checked : 0.0;
    if (checked == 0 || ratio < conf->rollout.gates.min_healthy_ratio) {
        reply_error(a, req, 409, "conflict", NULL,
                    "%s has %u of %u servers healthy (gates.min_healthy_ratio %.2f)",
                    conf_pool_name((enum pool_id)target), healthy, checked,
                    conf->rollout.gates.min_healthy_ratio);
        return 409;
    }
    char err[256];
    struct rollout_step step = {0};
    int rc = rollout_start(r, &conf->rollout, rw.live, (enum pool_id)target,
                           plan ? plan : &conf->rollout.plan, id ? json_string_value(id) : "", now,
                           &step, err, sizeof(err));
    if (rc == -1) {
        reply_error(a, req, 400, "invalid", "plan", "%s", err);
        return 400;
    }
    daemon_rollout_step(a->d, &step, "started", peer);
    send_json(req, 202,
              json_pack("{s:b, s:I, s:o}", "ok", 1, "generation", (json_int_t)generation(a), "data",
                        rollout_status_json(r, clock_ms())));
    a->answered_status = 202;
    a->answered_code = NULL;
    return 202;
}

/* pause, resume, promote. */
static int
handle_control(struct api *a, struct evhttp_request *req, json_t *body, const char *what,
               const char *peer)
{
    static const char *const fields[] = {"reason", "if_generation", NULL};
    if (!only_fields(a, req, body, fields) || !generation_matches(a, req, body))
        return 400;
    json_t *reason = json_object_get(body, "reason");
    if (reason && !json_is_string(reason)) {
        reply_error(a, req, 400, "invalid", "reason", "must be a string");
        return 400;
    }
    struct rollout *r = &a->d->rollout;
    struct rollout_step step = {0};
    char err[256];
    uint64_t now = clock_ms();
    int rc;
    const char *action;
    if (strcmp(what, "pause") == 0) {
        rc = rollout_pause(r, now, reason ? json_string_value(reason) : "paused by an operator",
                           &step, err, sizeof(err));
        action = "paused";
    } else if (strcmp(what, "resume") == 0) {
        rc = rollout_resume(r, now, &step, err, sizeof(err));
        action = "resumed";
        if (rc == 0) {
            /* The split may have been changed by hand (or restored after a restart): the step
             * resumes at its own share. */
            step.action = ROLLOUT_ACTION_WEIGHT;
            step.weight_bp = rollout_weight_bp(r);
        }
    } else {
        rc = rollout_promote(r, now, &step, err, sizeof(err));
        action = "promoted";
    }
    if (rc == -1) {
        reply_error(a, req, 409, "conflict", NULL, "%s", err);
        return 409;
    }
    daemon_rollout_step(a->d, &step, action, peer);
    reply_ok(a, req, rollout_status_json(r, clock_ms()));
    return 200;
}

/* --- events (long-poll) --- */

static void
waiter_remove(struct waiter *w)
{
    struct api *a = w->a;
    if (w->prev)
        w->prev->next = w->next;
    else
        a->waiters = w->next;
    if (w->next)
        w->next->prev = w->prev;
    a->nwaiters--;
    event_free(w->timer);
    free(w);
}

static void
events_reply(struct api *a, struct evhttp_request *req, uint64_t since)
{
    json_t *evs = events_since(a->d->events, since, EVENTS_RING);
    uint64_t next = since;
    size_t n = json_array_size(evs);
    if (n > 0)
        next = (uint64_t)json_integer_value(json_object_get(json_array_get(evs, n - 1), "seq"));
    reply_ok(a, req, json_pack("{s:o, s:I}", "events", evs, "next", (json_int_t)next));
}

static void
waiter_answer(struct waiter *w)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(w->req);
    if (conn)
        evhttp_connection_set_closecb(conn, NULL, NULL);
    events_reply(w->a, w->req, w->since);
    waiter_remove(w);
}

static void
on_waiter_timeout(evutil_socket_t fd, short what, void *arg)
{
    waiter_answer(arg);
}

static void
on_waiter_closed(struct evhttp_connection *conn, void *arg)
{
    /* The client went away: evhttp frees the request; forget it without answering. */
    waiter_remove(arg);
}

void
api_events_added(void *arg)
{
    struct api *a = arg;
    if (a == NULL)
        return;
    uint64_t last = events_last(a->d->events);
    struct waiter *w = a->waiters;
    while (w) {
        struct waiter *next = w->next;
        if (last > w->since)
            waiter_answer(w);
        w = next;
    }
}

static bool
parse_u64(const char *s, uint64_t *out)
{
    if (s == NULL || *s == '\0')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0' || errno != 0 || *s == '-')
        return false;
    *out = v;
    return true;
}

static void
handle_events(struct api *a, struct evhttp_request *req, const char *query)
{
    struct evkeyvalq q;
    TAILQ_INIT(&q);
    if (query && evhttp_parse_query_str(query, &q) == -1) {
        reply_error(a, req, 400, "invalid", NULL, "malformed query string");
        return;
    }
    uint64_t since = 0, wait_s = 0;
    const char *s = evhttp_find_header(&q, "since");
    const char *wv = evhttp_find_header(&q, "wait");
    bool since_ok = s == NULL || parse_u64(s, &since);
    bool wait_ok = wv == NULL || parse_u64(wv, &wait_s);
    evhttp_clear_headers(&q); /* s and wv point into q: not used after this */
    if (!since_ok || !wait_ok) {
        reply_error(a, req, 400, "invalid", since_ok ? "wait" : "since",
                    "must be a non-negative integer");
        return;
    }
    if (wait_s > API_MAX_WAIT_S)
        wait_s = API_MAX_WAIT_S;
    if (events_last(a->d->events) > since || wait_s == 0 || a->shutting_down) {
        events_reply(a, req, since);
        return;
    }
    if (a->nwaiters >= API_MAX_WAITERS) {
        reply_error(a, req, 503, "unavailable", NULL, "too many event waiters (%d)",
                    API_MAX_WAITERS);
        return;
    }
    struct waiter *w = xcalloc(1, sizeof(*w));
    w->a = a;
    w->req = req;
    w->since = since;
    w->timer = evtimer_new(a->d->base, on_waiter_timeout, w);
    struct timeval tv = {(time_t)wait_s, 0};
    evtimer_add(w->timer, &tv);
    w->next = a->waiters;
    if (w->next)
        w->next->prev = w;
    a->waiters = w;
    a->nwaiters++;
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    if (conn)
        evhttp_connection_set_closecb(conn, on_waiter_closed, w);
}

/* The rollout's step and gates (the families metrics.c does not know about). */
static void
rollout_metrics(struct http_buf *b, const struct rollout *r)
{
    char line[256];
    int n =
        snprintf(line, sizeof(line),
                 "# HELP switchyard_rollout_step Current step of the rollout (1-based; 0 when "
                 "stable).\n# TYPE switchyard_rollout_step gauge\nswitchyard_rollout_step %zu\n",
                 r->phase == ROLLOUT_STABLE ? (size_t)0 : r->step + 1);
    http_buf_add(b, line, (size_t)n);
    static const char *const fam[3][2] = {
        {"switchyard_gate_value", "Observed value of each rollout gate (ratio, rate or ms)."},
        {"switchyard_gate_threshold", "Threshold of each rollout gate (same unit)."},
        {"switchyard_gate_pass", "1 when the gate passed at its last evaluation, else 0."},
    };
    for (int f = 0; f < 3; f++) {
        n = snprintf(line, sizeof(line), "# HELP %s %s\n# TYPE %s gauge\n", fam[f][0], fam[f][1],
                     fam[f][0]);
        http_buf_add(b, line, (size_t)n);
        for (int g = 0; g < GATE_COUNT; g++) {
            const struct gate_result *gr = &r->gates[g];
            if (!gr->enabled)
                continue;
            double v = f == 0 ? gr->observed : f == 1 ? gr->threshold : (gr->pass ? 1.0 : 0.0);
            n = snprintf(line, sizeof(line), "%s{gate=\"%s\"} %.6g\n", fam[f][0],
                         rollout_gate_name((enum gate_id)g), v);
            http_buf_add(b, line, (size_t)n);
        }
    }
}

static void
handle_metrics(struct api *a, struct evhttp_request *req)
{
    struct route_word rw;
    routing_load(&a->d->routing, &rw);
    struct metrics_input in = {
        .snap = a->d->snap,
        .routing = &rw,
        .measure = a->d->measure,
        .health = a->d->health,
        .board = a->d->board,
        .rollout_phase = (int)a->d->rollout.phase,
    };
    struct http_buf b = {0};
    metrics_render(&b, &in);
    rollout_metrics(&b, &a->d->rollout);
    struct evbuffer *out = evbuffer_new();
    evbuffer_add(out, b.p, b.len);
    http_buf_finish(&b);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    evhttp_send_reply(req, 200, "OK", out);
    evbuffer_free(out);
}

/* --- dispatch --- */

/* Splits "/v1/servers/POOL/NAME/STATE" into its parts (in buf). */
static bool
split_server_path(const char *path, char *buf, size_t len, char **pool, char **name, char **st)
{
    const char *prefix = "/v1/servers/";
    size_t pl = strlen(prefix);
    if (strncmp(path, prefix, pl) != 0 || strlen(path + pl) >= len)
        return false;
    strcpy(buf, path + pl);
    *pool = buf;
    char *s1 = strchr(buf, '/');
    if (s1 == NULL)
        return false;
    *s1 = '\0';
    *name = s1 + 1;
    char *s2 = strchr(*name, '/');
    if (s2 == NULL)
        return false;
    *s2 = '\0';
    *st = s2 + 1;
    return **pool && **name && **st && strchr(*st, '/') == NULL;
}

static void
on_request(struct evhttp_request *req, void *arg)
{
    struct api_listener *l = arg;
    struct api *a = l->a;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    if (path == NULL || *path == '\0')
        path = "/";
    char peer[96];
    json_t *peer_json = NULL;
    if (!authorize(l, req, peer, sizeof(peer), &peer_json)) {
        /* A refused attempt at a mutation is worth an audit line too. */
        if (evhttp_request_get_command(req) != EVHTTP_REQ_GET)
            audit(a, peer_json, req, path, NULL, a->answered_status, a->answered_code,
                  generation(a));
        json_decref(peer_json);
        return;
    }
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    bool get = cmd == EVHTTP_REQ_GET;
    char sbuf[256];
    char *spool = NULL, *sname = NULL, *sstate = NULL;

    if (strcmp(path, "/v1/status") == 0 || strcmp(path, "/v1/events") == 0 ||
        strcmp(path, "/metrics") == 0) {
        if (!get)
            reply_error(a, req, 405, "invalid", NULL, "%s takes GET", path);
        else if (path[1] == 'm')
            handle_metrics(a, req);
        else if (path[4] == 's')
            handle_status(a, req);
        else
            handle_events(a, req, query);
        json_decref(peer_json);
        return;
    }

    bool is_server = split_server_path(path, sbuf, sizeof(sbuf), &spool, &sname, &sstate);
    enum evhttp_cmd_type want = strcmp(path, "/v1/weights") == 0 ? EVHTTP_REQ_PUT : EVHTTP_REQ_POST;
    bool control = strcmp(path, "/v1/pause") == 0 || strcmp(path, "/v1/resume") == 0 ||
                   strcmp(path, "/v1/promote") == 0;
    bool known = is_server || control || strcmp(path, "/v1/rollback") == 0 ||
                 strcmp(path, "/v1/weights") == 0 || strcmp(path, "/v1/reload") == 0 ||
                 strcmp(path, "/v1/cutover") == 0;
    if (!known) {
        reply_error(a, req, 404, "not_found", NULL, "no such endpoint: %s", path);
        json_decref(peer_json);
        return;
    }
    if (cmd != want) {
        reply_error(a, req, 405, "invalid", NULL, "%s takes %s", path,
                    want == EVHTTP_REQ_PUT ? "PUT" : "POST");
        json_decref(peer_json);
        return;
    }
    uint64_t gen_before = generation(a);
    if (a->shutting_down) {
        reply_error(a, req, 503, "unavailable", NULL, "switchyard is shutting down");
        audit(a, peer_json, req, path, NULL, 503, "unavailable", gen_before);
        json_decref(peer_json);
        return;
    }
    json_t *body = read_body(a, req);
    if (body) {
        if (is_server)
            handle_server(a, req, body, spool, sname, sstate, peer);
        else if (strcmp(path, "/v1/rollback") == 0)
            handle_rollback(a, req, body, peer);
        else if (strcmp(path, "/v1/weights") == 0)
            handle_weights(a, req, body, peer);
        else if (strcmp(path, "/v1/cutover") == 0)
            handle_cutover(a, req, body, peer);
        else if (control)
            handle_control(a, req, body, path + 4, peer);
        else
            handle_reload(a, req, body);
    }
    audit(a, peer_json, req, path, body, a->answered_status, a->answered_code, gen_before);
    json_decref(body);
    json_decref(peer_json);
}

/* --- sockets --- */

static int
unix_listen(const char *path, char *err, size_t errlen, ino_t *ino)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "control.socket %s: path too long", path);
        return -1;
    }
    /* A live socket means another instance: never take it over. */
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    strcpy(sa.sun_path, path);
    if (probe != -1 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        close(probe);
        snprintf(err, errlen, "control.socket %s: another process answers there", path);
        return -1;
    }
    if (probe != -1)
        close(probe);
    /* The directory (e.g. /run/switchyard) is made when missing, as systemd's
     * RuntimeDirectory= would; one level only. */
    char dir[sizeof(sa.sun_path)];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (mkdir(dir, 0750) == -1 && errno != EEXIST) {
            snprintf(err, errlen, "control.socket %s: cannot create %s: %s", path, dir,
                     strerror(errno));
            return -1;
        }
    }
    /* Made beside its path and renamed over it: a stale socket is replaced atomically. */
    char tmp[sizeof(sa.sun_path)];
    int n = snprintf(tmp, sizeof(tmp), "%s.%d", path, (int)getpid());
    bool beside = n > 0 && (size_t)n < sizeof(tmp);
    const char *bind_path = beside ? tmp : path;
    unlink(bind_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        snprintf(err, errlen, "control.socket: socket: %s", strerror(errno));
        return -1;
    }
    strcpy(sa.sun_path, bind_path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 || chmod(bind_path, 0660) == -1 ||
        listen(fd, 128) == -1 || (beside && rename(bind_path, path) == -1)) {
        snprintf(err, errlen, "control.socket %s: %s", path, strerror(errno));
        close(fd);
        unlink(bind_path);
        return -1;
    }
    struct stat st;
    if (stat(path, &st) == 0)
        *ino = st.st_ino;
    return fd;
}

static char *
read_token(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "control.token_file %s: %s", path, strerror(errno));
        return NULL;
    }
    char buf[1024];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    if (n < 16) {
        snprintf(err, errlen, "control.token_file %s: the token must be at least 16 characters",
                 path);
        return NULL;
    }
    return xstrdup(buf);
}

static struct evhttp *
http_for(struct api *a, struct api_listener *l, int fd)
{
    struct evhttp *http = evhttp_new(a->d->base);
    if (http == NULL)
        return NULL;
    evhttp_set_gencb(http, on_request, l);
    evhttp_set_max_headers_size(http, 16 * 1024);
    evhttp_set_max_body_size(http, 4 * API_MAX_BODY);
    evhttp_set_timeout(http, API_MAX_WAIT_S + 30);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                         EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD | EVHTTP_REQ_PATCH);
    if (evhttp_accept_socket_with_handle(http, fd) == NULL) {
        evhttp_free(http);
        close(fd);
        return NULL;
    }
    return http;
}

/* evhttp's bufferevent for each connection accepted on the TCP listener with control.tls: the
 * server side of a TLS handshake (evhttp sets the socket afterwards). Never NULL — evhttp would
 * then serve the connection as plain HTTP — so an SSL that cannot be made aborts, like any
 * allocation failure. Main thread. */
static struct bufferevent *
tls_bev(struct event_base *base, void *arg)
{
    struct api *a = arg;
    SSL *ssl = tls_new_ssl(a->tls);
    struct bufferevent *bev = NULL;

    if (ssl != NULL)
        bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL)
        abort(); /* out of memory */
    /* A client closing without close_notify (curl, yardctl) is an EOF, not an error. */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

struct api *
api_create(struct daemon *d, char *err, size_t errlen)
{
    const struct conf *conf = d->snap->conf;
    struct api *a = xcalloc(1, sizeof(*a));
    a->d = d;
    a->lunix = (struct api_listener){.a = a, .tcp = false};
    a->ltcp = (struct api_listener){.a = a, .tcp = true};
    if (conf->log.audit) {
        a->audit = audit_open(conf->log.audit, err, errlen);
        if (a->audit == NULL)
            goto fail;
    }
    int fd = unix_listen(conf->control.socket, err, errlen, &a->socket_ino);
    if (fd == -1)
        goto fail;
    a->socket_path = xstrdup(conf->control.socket);
    a->unix_http = http_for(a, &a->lunix, fd);
    if (a->unix_http == NULL) {
        snprintf(err, errlen, "control.socket: cannot serve HTTP");
        goto fail;
    }
    if (conf->control.listen_enabled) {
        a->token = read_token(conf->control.token_file, err, errlen);
        if (a->token == NULL)
            goto fail;
        const char *slash = strrchr(conf->control.token_file, '/');
        a->token_name = xstrdup(slash ? slash + 1 : conf->control.token_file);
        if (conf->control.tls_enabled) {
            char terr[512];
            a->tls = tls_ctx_create(&conf->control.tls, terr, sizeof(terr));
            if (a->tls == NULL) {
                snprintf(err, errlen, "control.tls: %s", terr);
                goto fail;
            }
        }
        int tfd = sock_listen(&conf->control.listen, 0, err, errlen);
        if (tfd == -1)
            goto fail;
        a->tcp_http = http_for(a, &a->ltcp, tfd);
        if (a->tcp_http == NULL) {
            snprintf(err, errlen, "control.listen: cannot serve HTTP");
            goto fail;
        }
        if (a->tls != NULL)
            evhttp_set_bevcb(a->tcp_http, tls_bev, a);
        log_info("control API on %s (%sbearer token)", conf->control.listen.text,
                 a->tls ? "TLS, " : "");
    }
    log_info("control API on unix:%s", a->socket_path);
    return a;
fail:
    api_destroy(&a);
    return NULL;
}

void
api_audit_event(struct api *a, const json_t *event)
{
    if (a && a->audit)
        audit_write_event(a->audit, event);
}

int
api_reopen_logs(struct api *a)
{
    return a && a->audit ? audit_reopen(a->audit) : 0;
}

struct tls_ctx *
api_tls(struct api *a)
{
    return a ? a->tls : NULL;
}

void
api_shutting_down(struct api *a)
{
    if (a == NULL)
        return;
    a->shutting_down = true;
    while (a->waiters)
        waiter_answer(a->waiters);
}

void
api_destroy(struct api **ap)
{
    struct api *a = *ap;
    if (a == NULL)
        return;
    *ap = NULL;
    while (a->waiters)
        waiter_answer(a->waiters);
    if (a->unix_http)
        evhttp_free(a->unix_http);
    if (a->tcp_http)
        evhttp_free(a->tcp_http);
    tls_ctx_destroy(&a->tls); /* after the connections that use it */
    if (a->socket_path) {
        /* Only our own socket: a newer instance may have replaced it. */
        struct stat st;
        if (stat(a->socket_path, &st) == 0 && st.st_ino == a->socket_ino)
            unlink(a->socket_path);
    }
    audit_close(&a->audit);
    free(a->socket_path);
    free(a->token);
    free(a->token_name);
    free(a);
}
