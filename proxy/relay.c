/* proxy/relay.c — the upstream side of an exchange: choosing a server, connecting (with retry on
 * another server), parsing the response with llhttp (strict) and relaying it to the client with
 * the framing the client needs, under back-pressure. */
#include "proxy/client.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "conf/xalloc.h"
#include "proxy/clock.h"
#include "proxy/eject.h"
#include "proxy/log.h"
#include "proxy/respframe.h"
#include "proxy/sock.h"
#include "proxy/stats.h"
#include "proxy/upstream.h"

static void on_interim(void *arg, const struct respframe *f);
static int on_head(void *arg, const struct respframe *f);
static void on_body(void *arg, const char *at, size_t len);
static void on_complete(void *arg, const struct respframe *f);

static const struct respframe_ops frame_ops = {
    .interim = on_interim,
    .head = on_head,
    .body = on_body,
    .complete = on_complete,
};

static void on_up_read(struct bufferevent *bev, void *arg);
static void on_up_write(struct bufferevent *bev, void *arg);
static void on_up_event(struct bufferevent *bev, short events, void *arg);

static const struct conf *
exchange_conf(const struct client *c)
{
    return c->ws->snap->conf;
}

/* Passive health: a failure of the exchange's server (connect error, timeout, bad response,
 * 5xx with eject_on_5xx). */
static void
server_failed(struct client *c, struct server *srv)
{
    if (eject_failure(&c->ws->snap->pools[srv->pool], srv, clock_ms()))
        stats_add(&client_srv_stats(c, srv)->ejections, 1);
}

/* Adds one to a counter of the server and of its pool. */
static void
count(struct client *c, struct server *srv, size_t offset)
{
    stats_add((atomic_uint_fast64_t *)((char *)client_srv_stats(c, srv) + offset), 1);
    stats_add((atomic_uint_fast64_t *)((char *)client_pool_stats(c, srv->pool) + offset), 1);
}

#define COUNT(c, srv, field) count((c), (srv), offsetof(struct stats_block, field))

/* Attaches a connection to srv: an idle one unless `fresh`, else a new one. The request goes
 * out from `pending` when given (a retry moving what was queued), else from c->req: into the
 * request stage during a parse pass (`staged`), straight to the connection otherwise. */
static bool
attach_server(struct client *c, struct server *srv, struct evbuffer *pending, bool fresh,
              bool staged)
{
    struct upconn *u = fresh ? NULL : upstream_take_idle(c->w, srv);
    c->up_reused = u != NULL;
    if (u == NULL)
        u = upstream_connect(c->w, srv, &c->ws->snap->pools[srv->pool],
                             exchange_conf(c)->timeouts.upstream_connect_ms);
    if (u == NULL)
        return false;
    c->srv = srv;
    c->acct_srv = srv;
    client_inflight(c, srv, true);
    stats_add(&client_srv_stats(c, srv)->requests, 1);
    c->connect_tries++;
    c->up = u;
    u->owner = c;
    u->requests++;
    struct evbuffer *out = bufferevent_get_output(u->bev);
    if (pending)
        evbuffer_add_buffer(out, pending);
    else
        evbuffer_add(staged ? c->w->qstage : out, c->req.p, c->req.len);
    relay_start(c);
    return true;
}

/* Methods a server may see twice without harm (RFC 9110 §9.2.2). */
static bool
idempotent(unsigned method)
{
    switch (method) {
    case HTTP_GET:
    case HTTP_HEAD:
    case HTTP_OPTIONS:
    case HTTP_TRACE:
    case HTTP_PUT:
    case HTTP_DELETE:
        return true;
    default:
        return false;
    }
}

static struct server *
pick(struct client *c, enum pool_id pool, const struct server *exclude)
{
    const struct conf *conf = exchange_conf(c);
    return route_pick_server(&c->ws->snap->pools[pool], conf->routing.balance, c->w->id, &c->w->rng,
                             clock_ms(), exclude);
}

bool
relay_attach(struct client *c)
{
    const struct conf *conf = exchange_conf(c);
    struct server *srv = pick(c, c->pool, NULL);
    if (srv == NULL && conf->routing.failover && c->route_to == ROUTE_TO_NORMAL) {
        enum pool_id other = route_other_pool(c->pool);
        srv = pick(c, other, NULL);
        if (srv) {
            c->pool = other;
            stats_add(&client_pool_stats(c, other)->failovers, 1);
        }
    }
    stats_add(&client_pool_stats(c, c->pool)->requests, 1);
    if (srv == NULL) {
        log_info("no usable server in pool %s, request id %s", conf_pool_name(c->pool),
                 c->request_id);
        c->reject = 503;
        return false;
    }
    struct http_request_out m = {
        .method = reqframe_method(&c->rf),
        .client_ip = c->peer_text,
        .proto = c->tls ? "https" : "http",
        .request_id = c->request_id,
        .strip = conf->routing.preview.header,
        .strip2 = PREVIEW_TOKEN_HEADER,
        .upgrade = c->rf.upgrade,
        .chunked = c->rf.chunked,
    };
    c->req.len = 0;
    http_write_request(&c->req, &c->rf.head, &m);
    c->req_head_len = (uint32_t)c->req.len;
    c->replay = true;
    if (!attach_server(c, srv, NULL, false, true)) {
        c->reject = 502;
        return false;
    }
    return true;
}

void
relay_arm_timeouts(struct client *c)
{
    struct upconn *u = c->up;
    if (u == NULL || !u->connected)
        return;
    /* The response clock starts when the request is complete: a slow upload is the client
     * body timeout's business. Meanwhile a server that stops taking our bytes is caught by the
     * write timeout. */
    struct timeval tv = clock_tv(exchange_conf(c)->timeouts.upstream_response_ms);
    bufferevent_set_timeouts(u->bev, c->req_complete ? &tv : NULL, &tv);
}

void
relay_start(struct client *c)
{
    struct upconn *u = c->up;
    const struct conf *conf = exchange_conf(c);
    respframe_start(&u->parser);
    c->rhead.max_bytes = 64 * 1024;
    c->rhead.max_fields = 1000;
    bufferevent_setcb(u->bev, on_up_read, on_up_write, on_up_event, c);
    bufferevent_setwatermark(u->bev, EV_WRITE, RELAY_LOW_BYTES, 0);
    if (u->connected) {
        relay_arm_timeouts(c);
    } else {
        struct timeval tv = clock_tv(conf->timeouts.upstream_connect_ms);
        bufferevent_set_timeouts(u->bev, NULL, &tv);
    }
    /* EV_WRITE stays enabled from creation: enabling it again would arm EPOLLOUT for nothing. */
    bufferevent_enable(u->bev, EV_READ);
}

/* The response is complete (or cut off cleanly for a close-delimited body). */
static void
response_done(struct client *c)
{
    if (!c->req_complete) {
        /* The server answered before reading the whole request: neither connection can carry
         * another exchange. */
        c->up_reusable = false;
        client_close_after_flush(c);
        return;
    }
    client_exchange_done(c);
}

/* Binds a response framing to the exchange's connection for one pass. */
static void
frame_bind(struct respframe *f, struct client *c)
{
    respframe_bind(f, &c->up->parser, &c->up->parser_last_byte, &c->rhead, &frame_ops, c);
    f->head_request = c->rf.head_method;
    f->upgrade_request = c->rf.upgrade;
}

void
relay_feed(struct client *c)
{
    struct upconn *u = c->up;
    if (u == NULL)
        return;
    struct evbuffer *in = bufferevent_get_input(u->bev);
    struct evbuffer *cout = bufferevent_get_output(c->bev);
    struct respframe f;
    frame_bind(&f, c);
    for (;;) {
        if (evbuffer_get_length(cout) >= RELAY_HIGH_BYTES) {
            c->up_paused = true;
            bufferevent_disable(u->bev, EV_READ);
            break;
        }
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
            break;
        c->resp_bytes = true;
        size_t used = 0;
        enum respframe_result r = respframe_execute(&f, v.iov_base, v.iov_len, &used);
        evbuffer_drain(in, used);
        c->bytes_out += evbuffer_get_length(c->w->rstage);
        sock_write_staged(c->bev, c->w->rstage, c->tls ? SOCK_WRITE_TLS : SOCK_WRITE_DIRECT);
        if (r == RESPFRAME_OK)
            continue;
        respframe_unbind(&f);
        if (r == RESPFRAME_UPGRADE) {
            tunnel_start(c);
            return;
        }
        if (r == RESPFRAME_DONE) {
            if (evbuffer_get_length(in) > 0)
                c->up_reusable = false; /* bytes after the response: do not trust it */
            response_done(c);
            return;
        }
        log_info("upstream %s/%s sent a bad response: %s (%s), request id %s",
                 conf_pool_name(c->srv->pool), c->srv->name, llhttp_errno_name(f.error),
                 llhttp_get_error_reason(&u->parser), c->request_id);
        server_failed(c, c->srv);
        client_fail(c, 502);
        return;
    }
    respframe_unbind(&f);
}

/* After a retry attached a new connection: the client's reads go on if the old connection's
 * full output had paused them. */
static void
resume_client_reads(struct client *c)
{
    if (c->read_paused) {
        c->read_paused = false;
        bufferevent_enable(c->bev, EV_READ);
        client_feed(c);
    }
}

/* Connect failure: move what was queued to another server of the pool, within `retries`. */
static void
connect_failed(struct client *c, bool timeout)
{
    const struct conf *conf = exchange_conf(c);
    struct server *failed = c->srv;
    char why[300] = "timed out";
    if (!timeout)
        upstream_connect_error(c->up, why, sizeof(why));
    log_info("upstream %s/%s: connect %s, request id %s", conf_pool_name(failed->pool),
             failed->name, why, c->request_id);
    server_failed(c, failed);
    if (timeout)
        COUNT(c, failed, timeouts);
    else
        COUNT(c, failed, connect_errors);
    struct evbuffer *pending = evbuffer_new();
    evbuffer_add_buffer(pending, bufferevent_get_output(c->up->bev));
    upstream_close(&c->up);
    client_inflight(c, failed, false);
    uint32_t retries = c->ws->snap->pools[failed->pool].conf->retries;
    struct server *next = NULL;
    if (c->connect_tries <= retries)
        next = pick(c, failed->pool, failed);
    if (next)
        COUNT(c, next, retries);
    if (next && attach_server(c, next, pending, false, false)) {
        evbuffer_free(pending);
        resume_client_reads(c);
        return;
    }
    evbuffer_free(pending);
    (void)conf;
    client_fail(c, 502);
}

static void
on_up_read(struct bufferevent *bev, void *arg)
{
    relay_feed(arg);
}

static void
on_up_write(struct bufferevent *bev, void *arg)
{
    struct client *c = arg;
    if (c->read_paused && evbuffer_get_length(bufferevent_get_output(bev)) <= RELAY_LOW_BYTES) {
        c->read_paused = false;
        bufferevent_enable(c->bev, EV_READ);
        client_feed(c);
    }
}

static void
on_up_event(struct bufferevent *bev, short events, void *arg)
{
    struct client *c = arg;
    struct upconn *u = c->up;
    if (events & BEV_EVENT_CONNECTED) {
        u->connected = true;
        relay_arm_timeouts(c);
        return;
    }
    if (!u->connected) {
        connect_failed(c, (events & BEV_EVENT_TIMEOUT) != 0);
        return;
    }
    if (events & BEV_EVENT_TIMEOUT) {
        log_info("upstream %s/%s: no response within timeout, request id %s",
                 conf_pool_name(c->srv->pool), c->srv->name, c->request_id);
        server_failed(c, c->srv);
        COUNT(c, c->srv, timeouts);
        client_fail(c, 504);
        return;
    }
    /* EOF or error from a connected upstream. Parse what is left first. */
    if (evbuffer_get_length(bufferevent_get_input(bev)) > 0) {
        relay_feed(c);
        if (c->up != u)
            return;
    }
    if (c->resp_started && !c->resp_complete) {
        if (events & BEV_EVENT_EOF) {
            struct respframe f;
            frame_bind(&f, c);
            respframe_eof(&f);
            respframe_unbind(&f);
            c->bytes_out += evbuffer_get_length(c->w->rstage);
            sock_write_staged(c->bev, c->w->rstage, c->tls ? SOCK_WRITE_TLS : SOCK_WRITE_DIRECT);
            if (c->resp_complete) {
                c->up_reusable = false;
                response_done(c);
                return;
            }
        }
        c->upstream_cut = true;
        client_close(c); /* truncated: the client must see the cut */
        return;
    }
    bool stale_retry = c->up_reused && !c->retried;
    bool move_retry = !c->up_reused && !c->moved && idempotent(c->rf.parser.method);
    if (!c->resp_bytes && c->replay && (stale_retry || move_retry)) {
        /* Nothing came back. On a reused connection it is the keep-alive race (the server
         * closed it as we reused it): once more on a fresh connection to the same server. On a
         * fresh connection the server died with the request: an idempotent request goes once
         * to another server of the pool (DESIGN §4: a killed server costs no request). Either
         * way the request goes again from c->req: its head and the body so far (a body over
         * RELAY_REPLAY_BYTES cannot: 502). */
        struct server *srv = c->srv;
        upstream_close(&c->up);
        client_inflight(c, srv, false);
        c->connect_tries = 0;
        struct server *next = srv;
        if (stale_retry) {
            c->retried = true;
        } else {
            c->moved = true;
            server_failed(c, srv);
            next = pick(c, srv->pool, srv);
        }
        if (next) {
            COUNT(c, next, retries);
            if (attach_server(c, next, NULL, true, false)) {
                resume_client_reads(c);
                return;
            }
        }
    }
    log_info("upstream %s/%s closed before a complete response, request id %s",
             c->srv ? conf_pool_name(c->srv->pool) : "-", c->srv ? c->srv->name : "-",
             c->request_id);
    client_fail(c, 502);
}

/* --- framing callbacks: they only record and write; closing happens after parsing returns. */

/* 100 Continue, 103 Early Hints: relayed to HTTP/1.1 clients only. */
static void
on_interim(void *arg, const struct respframe *f)
{
    struct client *c = arg;
    if (!c->rf.http10) {
        struct http_buf *b = &c->w->scratch;
        b->len = 0;
        struct http_response_out m = {.status = f->status, .body = HTTP_BODY_NONE};
        http_write_response(b, &c->rhead, &m);
        evbuffer_add(c->w->rstage, b->p, b->len);
    }
}

static int
on_head(void *arg, const struct respframe *f)
{
    struct client *c = arg;
    int status = f->status;
    struct http_buf *b = &c->w->scratch;
    b->len = 0;
    if (status == 101) {
        c->resp_status = 101;
        c->resp_started = true;
        struct http_response_out m = {
            .status = 101, .body = HTTP_BODY_NONE, .conn = HTTP_CONN_UPGRADE};
        http_write_response(b, &c->rhead, &m);
        evbuffer_add(c->w->rstage, b->p, b->len);
        return 0;
    }
    c->resp_status = status;
    if (status >= 500 && c->ws->snap->pools[c->srv->pool].conf->health.passive.eject_on_5xx)
        server_failed(c, c->srv);
    else
        eject_success(c->srv);
    enum http_body body;
    switch (f->body) {
    case RESPFRAME_BODY_NONE:
        body = HTTP_BODY_NONE;
        break;
    case RESPFRAME_BODY_LENGTH:
        body = HTTP_BODY_LENGTH;
        break;
    case RESPFRAME_BODY_CHUNKED:
    case RESPFRAME_BODY_CLOSE:
    default:
        body = c->rf.http10 ? HTTP_BODY_CLOSE : HTTP_BODY_CHUNKED;
        break;
    }
    c->out_body = body;
    bool keep = c->keepalive && !c->peer_eof && !c->w->draining && c->req_complete &&
                body != HTTP_BODY_CLOSE;
    c->keepalive = keep;
    enum http_conn conn = HTTP_CONN_DEFAULT;
    if (!keep)
        conn = HTTP_CONN_CLOSE;
    else if (c->rf.http10)
        conn = HTTP_CONN_KEEPALIVE;
    struct http_response_out m = {
        .status = status,
        .body = body,
        .upstream_te = f->chunked,
        .conn = conn,
        .set_cookie = c->cookie[0] ? c->cookie : NULL,
    };
    http_write_response(b, &c->rhead, &m);
    evbuffer_add(c->w->rstage, b->p, b->len);
    c->resp_started = true;
    return 0;
}

static void
on_body(void *arg, const char *at, size_t len)
{
    struct client *c = arg;
    sock_add_body(c->w->rstage, at, len, c->out_body == HTTP_BODY_CHUNKED);
}

static void
on_complete(void *arg, const struct respframe *f)
{
    struct client *c = arg;
    if (c->out_body == HTTP_BODY_CHUNKED)
        evbuffer_add(c->w->rstage, "0\r\n\r\n", 5);
    c->up_reusable = f->keepalive;
    c->resp_complete = true;
}
