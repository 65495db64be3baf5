/* control/api_events.c — the control API's read-outs for watchers (control/API.md): GET
 * /v1/events, long-polled until an event arrives, and GET /metrics in Prometheus text. */
#include "control/api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "conf/xalloc.h"
#include "control/api_internal.h"
#include "control/daemon.h"
#include "control/events.h"
#include "control/metrics.h"
#include "control/rollout.h"
#include "proxy/http.h"

#define API_MAX_WAITERS 256

/* A long-poll waiting for events. */
struct waiter {
    struct api *a;
    struct evhttp_request *req; /* borrowed until answered or closed */
    struct event *timer;        /* owned */
    struct event *hangup;       /* owned: the client closing its end (EV_CLOSED); may be NULL */
    uint64_t since;
    struct waiter *next;
    struct waiter *prev;
};

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
    if (w->hangup)
        event_free(w->hangup);
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
    api_reply_ok(a, req, json_pack("{s:o, s:I}", "events", evs, "next", (json_int_t)next));
}

void
api_waiter_answer(struct waiter *w)
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
    api_waiter_answer(arg);
}

static void
on_waiter_closed(struct evhttp_connection *conn, void *arg)
{
    /* The client went away: evhttp frees the request; forget it without answering. */
    waiter_remove(arg);
}

/* The client closed its end while waiting. evhttp does not read from a connection whose
 * request awaits its answer, so it would notice only when the wait ends and the answer fails:
 * until then the abandoned poll would keep its descriptor and its waiter slot. Free the
 * connection now (its close callback, on_waiter_closed, forgets the waiter). */
static void
on_waiter_hangup(evutil_socket_t fd, short what, void *arg)
{
    struct waiter *w = arg;
    struct evhttp_connection *conn = evhttp_request_get_connection(w->req);
    if (conn == NULL)
        return;
    evhttp_connection_free(conn);
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
            api_waiter_answer(w);
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

void
api_handle_events(struct api *a, struct evhttp_request *req, const char *query)
{
    struct evkeyvalq q;
    TAILQ_INIT(&q);
    if (query && evhttp_parse_query_str(query, &q) == -1) {
        api_reply_error(a, req, 400, "invalid", NULL, "malformed query string");
        return;
    }
    uint64_t since = 0, wait_s = 0;
    const char *s = evhttp_find_header(&q, "since");
    const char *wv = evhttp_find_header(&q, "wait");
    bool since_ok = s == NULL || parse_u64(s, &since);
    bool wait_ok = wv == NULL || parse_u64(wv, &wait_s);
    evhttp_clear_headers(&q); /* s and wv point into q: not used after this */
    if (!since_ok || !wait_ok) {
        api_reply_error(a, req, 400, "invalid", since_ok ? "wait" : "since",
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
        api_reply_error(a, req, 503, "unavailable", NULL, "too many event waiters (%d)",
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
    if (conn) {
        evhttp_connection_set_closecb(conn, on_waiter_closed, w);
        struct bufferevent *bev = evhttp_connection_get_bufferevent(conn);
        evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
        if (fd != -1) {
            w->hangup = event_new(a->d->base, fd, EV_CLOSED, on_waiter_hangup, w);
            if (w->hangup)
                event_add(w->hangup, NULL);
        }
    }
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

void
api_handle_metrics(struct api *a, struct evhttp_request *req)
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
