/* tests/unit/test_health.c — the active health checker against in-process HTTP responders
 * (evhttp on the same event_base): first-round results, rise/fall with measured detection time,
 * failure reasons, expect ranges, Host header, maintenance, reloads, teardown with checks in
 * flight, and a 10,000-check loop for leaks (run it under ASan and TSan too). */
#include "control/health.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "conf/xalloc.h"
#include "tap.h"

static struct event_base *base;

static double
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- responders ------------------------------------------------------------------------ */

struct pending {
    struct responder *r;
    struct evhttp_request *req;
    struct event *ev;
    struct pending *next;
};

struct responder {
    struct evhttp *http;
    int port;
    int status;
    char *body; /* owned */
    size_t body_len;
    int delay_ms;
    int requests;
    char last_host[128];
    char last_path[128];
    struct pending *pending;
};

static void
reply(struct responder *r, struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, r->body, r->body_len);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
    evhttp_send_reply(req, r->status, "Test", b);
    evbuffer_free(b);
}

static void
unlink_pending(struct pending *p)
{
    for (struct pending **pp = &p->r->pending; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    event_free(p->ev);
    free(p);
}

/* A delayed reply. If the client gave up meanwhile, libevent has detached the request from its
 * connection, and evhttp_send_reply() then just frees it. */
static void
on_delay(evutil_socket_t fd, short what, void *arg)
{
    struct pending *p = arg;
    reply(p->r, p->req);
    unlink_pending(p);
}

static void
on_request(struct evhttp_request *req, void *arg)
{
    struct responder *r = arg;
    const char *host = evhttp_find_header(evhttp_request_get_input_headers(req), "Host");

    r->requests++;
    snprintf(r->last_host, sizeof(r->last_host), "%s", host ? host : "");
    snprintf(r->last_path, sizeof(r->last_path), "%s", evhttp_request_get_uri(req));
    if (r->delay_ms > 0) {
        struct pending *p = xcalloc(1, sizeof(*p));
        struct timeval tv = {r->delay_ms / 1000, (r->delay_ms % 1000) * 1000};
        p->r = r;
        p->req = req;
        p->ev = evtimer_new(base, on_delay, p);
        p->next = r->pending;
        r->pending = p;
        evtimer_add(p->ev, &tv);
        return;
    }
    reply(r, req);
}

static void
set_body(struct responder *r, const char *body)
{
    free(r->body);
    r->body = xstrdup(body);
    r->body_len = strlen(body);
}

static struct responder *
responder_new(const char *ip, int status, const char *body)
{
    struct responder *r = xcalloc(1, sizeof(*r));
    struct evhttp_bound_socket *bs;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    r->http = evhttp_new(base);
    bs = evhttp_bind_socket_with_handle(r->http, ip, 0);
    if (bs == NULL) {
        evhttp_free(r->http);
        free(r);
        return NULL;
    }
    getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &len);
    r->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    evhttp_set_gencb(r->http, on_request, r);
    r->status = status;
    set_body(r, body);
    return r;
}

static void
responder_free(struct responder **rp)
{
    struct responder *r = *rp;
    if (r == NULL)
        return;
    while (r->pending)
        on_delay(-1, 0, r->pending); /* answer (or free) every held request */
    evhttp_free(r->http);
    free(r->body);
    xfree(rp);
}

/* A port nobody listens on: bound by us, then closed. */
static int
closed_port(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&sin, sizeof(sin));
    getsockname(fd, (struct sockaddr *)&sin, &len);
    port = ntohs(sin.sin_port);
    close(fd);
    return port;
}

/* ---- configs and snapshots ------------------------------------------------------------- */

/* YAML for one pool: servers "name=addr,name=addr[=weight]" and an inline health mapping. */
static struct conf *
mkconf(const char *blue_servers, const char *blue_health, const char *green_servers,
       const char *green_health)
{
    char yaml[8192];
    size_t n = 0;
    struct conf_err err = {0};
    struct conf *c;
    const char *lists[2] = {blue_servers, green_servers};
    const char *health[2] = {blue_health, green_health};

    n += (size_t)snprintf(yaml + n, sizeof(yaml) - n,
                          "listen: [{address: 127.0.0.1:0}]\nworkers: 1\npools:\n");
    for (int p = 0; p < 2; p++) {
        char buf[1024], *save = NULL;
        snprintf(buf, sizeof(buf), "%s", lists[p]);
        n += (size_t)snprintf(yaml + n, sizeof(yaml) - n, "  %s:\n    health: {%s}\n    servers:\n",
                              p == 0 ? "blue" : "green", health[p]);
        for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            char *eq = strchr(tok, '='), *w;
            *eq = '\0';
            w = strchr(eq + 1, '=');
            if (w)
                *w++ = '\0';
            n += (size_t)snprintf(yaml + n, sizeof(yaml) - n,
                                  "      - {name: %s, address: \"%s\", weight: %s}\n", tok, eq + 1,
                                  w ? w : "1");
        }
    }
    c = conf_parse("test.yaml", yaml, n, &err);
    if (c == NULL) {
        for (size_t i = 0; i < err.count && i < CONF_ERR_MAX; i++)
            diag("conf: %s", err.msg[i]);
        fprintf(stderr, "%s", yaml);
        abort();
    }
    return c;
}

static struct server *
srv(const struct snapshot *s, enum pool_id p, const char *name)
{
    struct server *x = snapshot_find_server(s, p, name);
    if (x == NULL)
        abort();
    return x;
}

static int
hstate(const struct server *s)
{
    return atomic_load_explicit(&s->health, memory_order_relaxed);
}

/* ---- recording changes, running the loop ----------------------------------------------- */

struct change {
    const struct server *srv;
    enum health_state from, to;
    char reason[HEALTH_REASON_LEN];
    double at_ms;
};

static struct change changes[64];
static int nchanges;

static void
on_change(void *arg, const struct server *s, enum health_state from, enum health_state to,
          const char *reason)
{
    if (nchanges < 64) {
        struct change *c = &changes[nchanges];
        c->srv = s;
        c->from = from;
        c->to = to;
        snprintf(c->reason, sizeof(c->reason), "%s", reason);
        c->at_ms = now_ms();
    }
    nchanges++;
    if (from != HEALTH_UNKNOWN)
        diag("%s: %s -> %s (%s)", s->name, health_state_name(from), health_state_name(to), reason);
}

/* The last change of s at index >= from_idx, or NULL. */
static const struct change *
last_change(const struct server *s, int from_idx)
{
    const struct change *c = NULL;
    for (int i = from_idx; i < nchanges && i < 64; i++)
        if (changes[i].srv == s)
            c = &changes[i];
    return c;
}

static int
count_changes(const struct server *s, int from_idx)
{
    int n = 0;
    for (int i = from_idx; i < nchanges && i < 64; i++)
        n += changes[i].srv == s;
    return n;
}

typedef int (*pred_fn)(void *arg);

/* Runs the loop until pred holds or max_ms passed (2 ms slices). Returns pred's last value. */
static int
run_until(pred_fn pred, void *arg, int max_ms)
{
    double deadline = now_ms() + max_ms;
    while (!(pred && pred(arg)) && now_ms() < deadline) {
        struct timeval tv = {0, 2000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
    return pred ? pred(arg) : 1;
}

static void
run_for(int ms)
{
    run_until(NULL, NULL, ms);
}

static int
state_is_pred(void *arg)
{
    const struct {
        const struct server *s;
        int st;
    } *a = arg;
    return hstate(a->s) == a->st;
}

/* Runs until srv's health is st (max_ms at most). */
static int
wait_state(const struct server *s, int st, int max_ms)
{
    struct {
        const struct server *s;
        int st;
    } a = {s, st};
    return run_until(state_is_pred, &a, max_ms);
}

static int first_done_calls;
static double first_done_at;

static void
on_first(void *arg)
{
    first_done_calls++;
    first_done_at = now_ms();
}

static int
first_pred(void *arg)
{
    return first_done_calls > 0;
}

static uint64_t
checks_of(struct health *h, const struct server *s)
{
    struct health_status st;
    return health_server_status(h, s, &st) == 0 ? st.checks : 0;
}

/* ---- the tests ------------------------------------------------------------------------- */

#define HC_FAST "interval: 200ms, timeout: 150ms, rise: 2, fall: 3"

/* First round, first_round callback, reasons, then rise/fall with the detection time measured
 * against fall × interval + timeout. */
static void
test_first_round_and_transitions(void)
{
    struct responder *ra = responder_new("127.0.0.1", 200, "OK");
    struct responder *rb = responder_new("127.0.0.1", 503, "no");
    struct responder *rslow = responder_new("127.0.0.1", 200, "OK");
    int refused = closed_port();
    char blue[256], green[256];
    struct snapshot *s;
    struct health *h;
    struct server *b_ok, *b_ref, *g_503, *g_slow;
    const struct change *c;
    double t0;
    int base_changes, req0;
    struct health_status st;

    rslow->delay_ms = 400;
    snprintf(blue, sizeof(blue), "ok=127.0.0.1:%d,refused=127.0.0.1:%d", ra->port, refused);
    snprintf(green, sizeof(green), "e503=127.0.0.1:%d,slow=127.0.0.1:%d", rb->port, rslow->port);
    s = snapshot_create(mkconf(blue, HC_FAST, green, HC_FAST), NULL, 1, HEALTH_UNKNOWN);
    b_ok = srv(s, POOL_BLUE, "ok");
    b_ref = srv(s, POOL_BLUE, "refused");
    g_503 = srv(s, POOL_GREEN, "e503");
    g_slow = srv(s, POOL_GREEN, "slow");

    nchanges = 0;
    first_done_calls = 0;
    h = health_create(base, on_change, NULL);
    ok(h != NULL, "health_create");
    health_set_snapshot(h, s);
    t0 = now_ms();
    health_first_round(h, on_first, NULL);
    ok(first_done_calls == 0, "first_round: done is never called from inside the call");
    run_until(first_pred, NULL, 2000);
    ok(first_done_calls == 1, "first_round: done called once every server has a result");
    ok(first_done_at - t0 <= 150 + 100 + 30,
       "first_round: within the largest timeout + margin (%.1f ms, bound 250 ms)",
       first_done_at - t0);
    ok(hstate(b_ok) == HEALTH_UP && (c = last_change(b_ok, 0)) && c->from == HEALTH_UNKNOWN &&
           c->to == HEALTH_UP && strcmp(c->reason, "ok") == 0,
       "first pass: unknown -> up at once (reason ok)");
    c = last_change(b_ref, 0);
    ok(hstate(b_ref) == HEALTH_DOWN && c && c->from == HEALTH_UNKNOWN &&
           strcmp(c->reason, "connection refused") == 0,
       "first failure: unknown -> down, reason \"connection refused\" (%s)", c ? c->reason : "-");
    ok(hstate(g_503) == HEALTH_DOWN && (c = last_change(g_503, 0)) &&
           strcmp(c->reason, "status 503") == 0,
       "reason \"status 503\"");
    c = last_change(g_slow, 0);
    ok(hstate(g_slow) == HEALTH_DOWN && c && strcmp(c->reason, "timeout") == 0,
       "reason \"timeout\" when the responder is slower than timeout (%s)", c ? c->reason : "-");
    ok(strcmp(ra->last_path, "/health") == 0 && strncmp(ra->last_host, "127.0.0.1:", 10) == 0,
       "default path /health, Host is the server address (%s)", ra->last_host);
    ok(nchanges == 4, "one change per server so far (%d)", nchanges);
    run_until(first_pred, NULL, 0);
    ok(first_done_calls == 1, "done is not called again");

    /* up -> down only after fall failures; time it. */
    base_changes = nchanges;
    req0 = ra->requests;
    ra->status = 500;
    t0 = now_ms();
    wait_state(b_ok, HEALTH_DOWN, 3000);
    c = last_change(b_ok, base_changes);
    ok(c && c->to == HEALTH_DOWN && count_changes(b_ok, base_changes) == 1 &&
           strcmp(c->reason, "status 500") == 0,
       "up -> down with reason \"status 500\"");
    ok(ra->requests - req0 == 3, "down after exactly fall = 3 failed checks (%d)",
       ra->requests - req0);
    ok(c && c->at_ms - t0 <= 3 * 200 + 150 + 20,
       "detection %.1f ms <= fall x interval + timeout = 750 ms (+20 ms loop tolerance)",
       c ? c->at_ms - t0 : -1.0);

    /* down -> up after rise passes. */
    base_changes = nchanges;
    req0 = ra->requests;
    ra->status = 200;
    wait_state(b_ok, HEALTH_UP, 3000);
    ok(hstate(b_ok) == HEALTH_UP && count_changes(b_ok, base_changes) == 1,
       "down -> up after passes");
    ok(ra->requests - req0 == 2, "up after exactly rise = 2 passes (%d)", ra->requests - req0);
    memset(&st, 0, sizeof(st));
    health_server_status(h, b_ok, &st);
    ok(st.state == HEALTH_UP && st.passes == 2 && st.failures == 0 &&
           strcmp(st.reason, "ok") == 0 && st.checked,
       "status: up, 2 consecutive passes, reason ok");

    /* Worst case: failures by timeout. */
    base_changes = nchanges;
    ra->delay_ms = 400;
    t0 = now_ms();
    wait_state(b_ok, HEALTH_DOWN, 3000);
    c = last_change(b_ok, base_changes);
    ok(c && strcmp(c->reason, "timeout") == 0, "up -> down by timeouts");
    ok(c && c->at_ms - t0 <= 3 * 200 + 150 + 20,
       "detection by timeouts %.1f ms <= fall x interval + timeout = 750 ms (+20 ms loop "
       "tolerance)",
       c ? c->at_ms - t0 : -1.0);
    diag("detection measured: %.1f ms (bound 750 ms)", c ? c->at_ms - t0 : -1.0);
    memset(&st, 0, sizeof(st));
    health_server_status(h, b_ok, &st);
    ok(st.failures >= 3 && st.passes == 0 && strcmp(st.reason, "timeout") == 0,
       "status: consecutive failures counted (%u), last reason timeout", st.failures);

    health_destroy(&h);
    ok(h == NULL, "destroy clears the pointer");
    snapshot_release(&s);
    responder_free(&ra);
    responder_free(&rb);
    responder_free(&rslow);
}

/* expect ranges, body_contains (bounded prefix), Host header, IPv6 URLs. */
static void
test_expect_body_host(void)
{
    struct responder *rc = responder_new("127.0.0.1", 200, "READY now");
    struct responder *rd = responder_new("127.0.0.1", 200, "starting");
    struct responder *re = responder_new("127.0.0.1", 302, "moved");
    struct responder *rbig = responder_new("127.0.0.1", 200, "");
    struct responder *rfar = responder_new("127.0.0.1", 200, "");
    struct responder *rf = responder_new("127.0.0.1", 503, "maintenance");
    struct responder *r6 = responder_new("::1", 204, "");
    char blue[512], green[256], *big;
    struct snapshot *s;
    struct health *h;
    const struct change *c;

    big = xmalloc(100001);
    memset(big, 'x', 100000);
    big[100000] = '\0';
    memcpy(big, "READY", 5);
    set_body(rbig, big); /* 100 KB, the text at the start: read and discarded past the prefix */
    memset(big, 'x', 5);
    memcpy(big + 10000, "READY", 5);
    set_body(rfar, big); /* the text beyond the 4 KiB prefix: a mismatch */
    free(big);

    snprintf(blue, sizeof(blue),
             "c=127.0.0.1:%d,d=127.0.0.1:%d,e=127.0.0.1:%d,big=127.0.0.1:%d,far=127.0.0.1:%d",
             rc->port, rd->port, re->port, rbig->port, rfar->port);
    if (r6)
        snprintf(green, sizeof(green), "f=127.0.0.1:%d,six=[::1]:%d", rf->port, r6->port);
    else
        snprintf(green, sizeof(green), "f=127.0.0.1:%d", rf->port);
    s = snapshot_create(mkconf(blue,
                               "interval: 200ms, timeout: 500ms, expect: 200-299, "
                               "body_contains: READY, host: health.example, path: /ready",
                               green, "interval: 200ms, timeout: 500ms, expect: 204-503"),
                        NULL, 1, HEALTH_UNKNOWN);
    nchanges = 0;
    first_done_calls = 0;
    h = health_create(base, on_change, NULL);
    health_set_snapshot(h, s);
    health_first_round(h, on_first, NULL);
    run_until(first_pred, NULL, 2000);

    ok(hstate(srv(s, POOL_BLUE, "c")) == HEALTH_UP, "200 with the body text: up");
    c = last_change(srv(s, POOL_BLUE, "d"), 0);
    ok(hstate(srv(s, POOL_BLUE, "d")) == HEALTH_DOWN && c &&
           strcmp(c->reason, "body mismatch") == 0,
       "200 without the body text: down, \"body mismatch\"");
    c = last_change(srv(s, POOL_BLUE, "e"), 0);
    ok(hstate(srv(s, POOL_BLUE, "e")) == HEALTH_DOWN && c && strcmp(c->reason, "status 302") == 0,
       "302 outside expect 200-299: down, \"status 302\"");
    ok(hstate(srv(s, POOL_BLUE, "big")) == HEALTH_UP, "100 KB body with the text first: up");
    c = last_change(srv(s, POOL_BLUE, "far"), 0);
    ok(hstate(srv(s, POOL_BLUE, "far")) == HEALTH_DOWN && c &&
           strcmp(c->reason, "body mismatch") == 0,
       "text past the 4 KiB prefix: body mismatch");
    ok(hstate(srv(s, POOL_GREEN, "f")) == HEALTH_UP, "503 inside expect 204-503: up");
    ok(strcmp(rc->last_host, "health.example") == 0 && strcmp(rc->last_path, "/ready") == 0,
       "host: header and path sent (%s %s)", rc->last_host, rc->last_path);
    {
        char want[64];
        snprintf(want, sizeof(want), "127.0.0.1:%d", rf->port);
        ok(strcmp(rf->last_host, want) == 0, "no host: set: Host is the address (%s)",
           rf->last_host);
    }
    if (r6) {
        char want[64];
        snprintf(want, sizeof(want), "[::1]:%d", r6->port);
        ok(hstate(srv(s, POOL_GREEN, "six")) == HEALTH_UP && strcmp(r6->last_host, want) == 0,
           "IPv6 server: bracketed URL, up (Host %s)", r6->last_host);
    } else {
        ok(1, "# SKIP no IPv6 loopback");
    }
    health_destroy(&h);
    snapshot_release(&s);
    responder_free(&rc);
    responder_free(&rd);
    responder_free(&re);
    responder_free(&rbig);
    responder_free(&rfar);
    responder_free(&rf);
    responder_free(&r6);
}

/* Maintenance: no checks, state kept; checking resumes when it leaves. */
static void
test_maint(void)
{
    struct responder *ra = responder_new("127.0.0.1", 200, "OK");
    struct responder *rm = responder_new("127.0.0.1", 200, "OK");
    char blue[256], green[256];
    struct snapshot *s;
    struct health *h;
    struct server *m, *pre;
    struct health_status st;
    int req0, base_changes;
    struct responder *rpre = responder_new("127.0.0.1", 200, "OK");

    snprintf(blue, sizeof(blue), "a=127.0.0.1:%d,m=127.0.0.1:%d", ra->port, rm->port);
    snprintf(green, sizeof(green), "pre=127.0.0.1:%d", rpre->port);
    s = snapshot_create(mkconf(blue, "interval: 100ms, timeout: 100ms, rise: 1, fall: 1", green,
                               "interval: 100ms, timeout: 100ms"),
                        NULL, 1, HEALTH_UNKNOWN);
    m = srv(s, POOL_BLUE, "m");
    pre = srv(s, POOL_GREEN, "pre");
    atomic_store(&pre->admin, ADMIN_MAINT); /* in maintenance from the start */
    nchanges = 0;
    first_done_calls = 0;
    h = health_create(base, on_change, NULL);
    health_set_snapshot(h, s);
    health_first_round(h, on_first, NULL);
    run_until(first_pred, NULL, 2000);
    ok(first_done_calls == 1 && hstate(m) == HEALTH_UP,
       "first round done without waiting for a server in maintenance");
    ok(rpre->requests == 0 && hstate(pre) == HEALTH_UNKNOWN,
       "a server in maintenance from the start is never checked (stays unknown)");

    atomic_store(&m->admin, ADMIN_MAINT);
    run_for(30); /* let a check in flight land */
    req0 = rm->requests;
    base_changes = nchanges;
    rm->status = 503;
    run_for(500);
    ok(rm->requests == req0, "maint: no check in 500 ms (5 intervals; %d requests)",
       rm->requests - req0);
    ok(hstate(m) == HEALTH_UP && count_changes(m, base_changes) == 0,
       "maint: last state kept although the server now fails");
    ok(health_server_status(h, m, &st) == 0 && st.maint && health_check_now(h, m) == -1,
       "status says maint; check_now refuses");

    atomic_store(&m->admin, ADMIN_READY);
    ok(health_check_now(h, m) == 0, "leaving maint: check_now starts a check");
    wait_state(m, HEALTH_DOWN, 1000);
    ok(rm->requests > req0 && hstate(m) == HEALTH_DOWN, "checking resumed: the failure is seen");
    atomic_store(&pre->admin, ADMIN_READY);
    wait_state(pre, HEALTH_UP, 1000);
    ok(rpre->requests > 0 && hstate(pre) == HEALTH_UP,
       "leaving maint without check_now: checked at the next interval");

    health_destroy(&h);
    snapshot_release(&s);
    responder_free(&ra);
    responder_free(&rm);
    responder_free(&rpre);
}

/* Reload: kept servers keep state and counters, new ones are checked, removed ones stop; a
 * weight change (a new struct server) keeps the checker's state too; a changed path applies. */
static void
test_reload(void)
{
    struct responder *r1 = responder_new("127.0.0.1", 200, "OK");
    struct responder *r2 = responder_new("127.0.0.1", 200, "OK");
    struct responder *r3 = responder_new("127.0.0.1", 200, "OK");
    struct responder *rg = responder_new("127.0.0.1", 200, "OK");
    char blue[256], green[256];
    struct snapshot *s1, *s2;
    struct health *h;
    struct server *b1, *b2, *g1, *n_b1, *n_b3, *n_g1;
    int base_changes, req2;
    uint64_t checks_b1, checks_g1;

    snprintf(blue, sizeof(blue), "b1=127.0.0.1:%d,b2=127.0.0.1:%d", r1->port, r2->port);
    snprintf(green, sizeof(green), "g1=127.0.0.1:%d", rg->port);
    s1 = snapshot_create(
        mkconf(blue, "interval: 100ms, timeout: 100ms", green, "interval: 100ms, timeout: 100ms"),
        NULL, 1, HEALTH_UNKNOWN);
    b1 = srv(s1, POOL_BLUE, "b1");
    b2 = srv(s1, POOL_BLUE, "b2");
    g1 = srv(s1, POOL_GREEN, "g1");
    nchanges = 0;
    h = health_create(base, on_change, NULL);
    health_set_snapshot(h, s1);
    run_for(350);
    ok(hstate(b1) == HEALTH_UP && hstate(b2) == HEALTH_UP && hstate(g1) == HEALTH_UP,
       "before reload: all up");

    /* b1 kept (path changes), b2 removed, b3 added, g1 weight 1 -> 5 (a new struct server). */
    snprintf(blue, sizeof(blue), "b1=127.0.0.1:%d,b3=127.0.0.1:%d", r1->port, r3->port);
    snprintf(green, sizeof(green), "g1=127.0.0.1:%d=5", rg->port);
    s2 = snapshot_create(mkconf(blue, "interval: 100ms, timeout: 100ms, path: /v2/health", green,
                                "interval: 100ms, timeout: 100ms"),
                         s1, 1, HEALTH_UNKNOWN);
    n_b1 = srv(s2, POOL_BLUE, "b1");
    n_b3 = srv(s2, POOL_BLUE, "b3");
    n_g1 = srv(s2, POOL_GREEN, "g1");
    ok(n_b1 == b1 && n_g1 != g1, "b1 is shared, g1 replaced (weight change)");
    checks_b1 = checks_of(h, b1);
    checks_g1 = checks_of(h, g1);
    base_changes = nchanges;
    health_set_snapshot(h, s2);
    snapshot_mark_removed(s1, s2);
    snapshot_release(&s1); /* the checker holds what it needs */
    ok(checks_of(h, n_b1) == checks_b1 && checks_of(h, n_g1) == checks_g1 && checks_b1 > 0,
       "kept and replaced servers keep their counters (%llu, %llu)", (unsigned long long)checks_b1,
       (unsigned long long)checks_g1);
    ok(checks_of(h, b2) == 0, "removed server is no longer known to the checker");
    req2 = r2->requests;
    run_for(400);
    ok(count_changes(n_b1, base_changes) == 0 && count_changes(n_g1, base_changes) == 0 &&
           hstate(n_b1) == HEALTH_UP && hstate(n_g1) == HEALTH_UP,
       "no change event for kept servers (no unknown again)");
    ok(hstate(n_b3) == HEALTH_UP && count_changes(n_b3, base_changes) == 1 &&
           last_change(n_b3, base_changes)->from == HEALTH_UNKNOWN,
       "new server checked: unknown -> up");
    ok(r2->requests == req2, "removed server: no check after the reload (%d)", r2->requests - req2);
    ok(strcmp(r1->last_path, "/v2/health") == 0, "kept server uses its pool's new path (%s)",
       r1->last_path);
    ok(checks_of(h, n_g1) > checks_g1, "replaced server still checked");

    /* The same snapshot again: nothing changes. */
    base_changes = nchanges;
    health_set_snapshot(h, s2);
    run_for(150);
    ok(nchanges == base_changes && hstate(n_b1) == HEALTH_UP, "same snapshot again: no change");

    health_destroy(&h);
    snapshot_release(&s2);
    responder_free(&r1);
    responder_free(&r2);
    responder_free(&r3);
    responder_free(&rg);
}

/* A server created up (snapshot_create's initial_health) still starts unknown for the checker:
 * no traffic before its first result, and one failure makes it down. */
static void
test_starts_unknown(void)
{
    struct responder *ra = responder_new("127.0.0.1", 200, "OK");
    int refused = closed_port();
    char blue[128], green[128];
    struct snapshot *s;
    struct health *h;
    struct server *dead, *live;
    const struct change *c;

    snprintf(blue, sizeof(blue), "dead=127.0.0.1:%d", refused);
    snprintf(green, sizeof(green), "live=127.0.0.1:%d", ra->port);
    s = snapshot_create(mkconf(blue, "interval: 100ms, timeout: 100ms, fall: 3", green,
                               "interval: 100ms, timeout: 100ms, rise: 3"),
                        NULL, 1, HEALTH_UP);
    dead = srv(s, POOL_BLUE, "dead");
    live = srv(s, POOL_GREEN, "live");
    nchanges = 0;
    first_done_calls = 0;
    h = health_create(base, on_change, NULL);
    health_set_snapshot(h, s);
    ok(hstate(dead) == HEALTH_UNKNOWN && hstate(live) == HEALTH_UNKNOWN && nchanges == 0,
       "created up, set unknown by set_snapshot (no callback)");
    health_first_round(h, on_first, NULL);
    run_until(first_pred, NULL, 1000);
    c = last_change(dead, 0);
    ok(hstate(dead) == HEALTH_DOWN && c && c->from == HEALTH_UNKNOWN,
       "first failure decides (fall 3 does not apply to unknown)");
    c = last_change(live, 0);
    ok(hstate(live) == HEALTH_UP && c && c->from == HEALTH_UNKNOWN,
       "first pass decides (rise 3 does not apply to unknown)");
    health_destroy(&h);
    snapshot_release(&s);
    responder_free(&ra);
}

/* Destroy with checks in flight: nothing leaks (ASan) and the responders see the hang-up. */
static void
test_destroy_in_flight(void)
{
    struct responder *r = responder_new("127.0.0.1", 200, "OK");
    char blue[256], green[256];
    struct snapshot *s;
    struct health *h;
    struct health_status st;

    r->delay_ms = 500;
    snprintf(blue, sizeof(blue), "a=127.0.0.1:%d,b=127.0.0.1:%d", r->port, r->port);
    snprintf(green, sizeof(green), "c=127.0.0.1:%d", r->port);
    s = snapshot_create(
        mkconf(blue, "interval: 100ms, timeout: 1s", green, "interval: 100ms, timeout: 1s"), NULL,
        1, HEALTH_UNKNOWN);
    h = health_create(base, NULL, NULL);
    health_set_snapshot(h, s);
    health_first_round(h, on_first, NULL);
    run_for(60);
    ok(health_server_status(h, srv(s, POOL_BLUE, "a"), &st) == 0 && st.in_flight &&
           r->requests == 3,
       "three checks in flight");
    health_destroy(&h);
    health_destroy(&h);
    health_destroy(NULL);
    ok(h == NULL, "destroyed with checks in flight (and again: NULL is accepted)");
    run_for(50);
    snapshot_release(&s);
    responder_free(&r);
}

static int
count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n;
}

struct loop_arg {
    struct health *h;
    struct snapshot *s;
    uint64_t want;
};

static uint64_t
total_checks(struct health *h, struct snapshot *s)
{
    uint64_t n = 0;
    for (int p = 0; p < POOL_COUNT; p++)
        for (size_t i = 0; i < s->pools[p].nservers; i++)
            n += checks_of(h, s->pools[p].servers[i]);
    return n;
}

static int
loop_pred(void *arg)
{
    struct loop_arg *a = arg;
    return total_checks(a->h, a->s) >= a->want;
}

/* 10,000 checks at a 1 ms interval over 9 passing, failing and refused servers. */
static void
test_many_checks(void)
{
    struct responder *ra = responder_new("127.0.0.1", 200, "OK");
    struct responder *rb = responder_new("127.0.0.1", 200, "READY");
    struct responder *rc = responder_new("127.0.0.1", 503, "no");
    int refused = closed_port();
    char blue[256], green[256];
    struct snapshot *s;
    struct loop_arg a;
    double t0, el;
    int fds0, fds1;
    uint64_t n;

    snprintf(blue, sizeof(blue),
             "a=127.0.0.1:%d,b=127.0.0.1:%d,c=127.0.0.1:%d,a2=127.0.0.1:%d,b2=127.0.0.1:%d",
             ra->port, rb->port, rc->port, ra->port, rb->port);
    snprintf(green, sizeof(green), "d=127.0.0.1:%d,e=127.0.0.1:%d,e2=127.0.0.1:%d,e3=127.0.0.1:%d",
             refused, ra->port, ra->port, ra->port);
    s = snapshot_create(mkconf(blue, "interval: 1ms, timeout: 1s, rise: 1, fall: 1", green,
                               "interval: 1ms, timeout: 1s, body_contains: OK"),
                        NULL, 1, HEALTH_UNKNOWN);
    fds0 = count_fds();
    a.h = health_create(base, NULL, NULL);
    a.s = s;
    a.want = 10000;
    health_set_snapshot(a.h, s);
    t0 = now_ms();
    run_until(loop_pred, &a, 60000);
    el = now_ms() - t0;
    n = total_checks(a.h, s);
    ok(n >= 10000, "%llu checks at a 1 ms interval in %.0f ms", (unsigned long long)n, el);
    diag("10k-check loop: %llu checks in %.0f ms (%.0f checks/s)", (unsigned long long)n, el,
         (double)n * 1000.0 / el);
    ok(hstate(srv(s, POOL_BLUE, "a")) == HEALTH_UP &&
           hstate(srv(s, POOL_BLUE, "c")) == HEALTH_DOWN &&
           hstate(srv(s, POOL_GREEN, "d")) == HEALTH_DOWN &&
           hstate(srv(s, POOL_GREEN, "e")) == HEALTH_UP,
       "states as expected after the loop");
    health_destroy(&a.h);
    run_for(20);
    fds1 = count_fds();
    ok(fds1 == fds0, "no file descriptor left behind (%d before, %d after)", fds0, fds1);
    snapshot_release(&s);
    responder_free(&ra);
    responder_free(&rb);
    responder_free(&rc);
}

static void
test_empty(void)
{
    struct health *h = health_create(base, NULL, NULL);
    first_done_calls = 0;
    health_first_round(h, on_first, NULL);
    run_until(first_pred, NULL, 500);
    ok(first_done_calls == 1, "first_round with no snapshot: done on the next loop turn");
    ok(strcmp(health_state_name(HEALTH_UP), "up") == 0 &&
           strcmp(health_state_name(HEALTH_DOWN), "down") == 0 &&
           strcmp(health_state_name(HEALTH_UNKNOWN), "unknown") == 0,
       "state names");
    health_destroy(&h);
}

int
main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    base = event_base_new();
    test_empty();
    test_first_round_and_transitions();
    test_expect_body_host();
    test_maint();
    test_reload();
    test_starts_unknown();
    test_destroy_in_flight();
    test_many_checks();
    event_base_free(base);
    curl_global_cleanup();
    return done_testing();
}
