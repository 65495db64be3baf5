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
#include "proxy/sock.h"
#include "proxy/stats.h"
#include "proxy/upstream.h"

static int on_status(llhttp_t *p, const char *at, size_t len);
static int on_header_field(llhttp_t *p, const char *at, size_t len);
static int on_header_value(llhttp_t *p, const char *at, size_t len);
static int on_headers_complete(llhttp_t *p);
static int on_body(llhttp_t *p, const char *at, size_t len);
static int on_message_complete(llhttp_t *p);

static llhttp_settings_t resp_settings;
static pthread_once_t settings_once = PTHREAD_ONCE_INIT;

static void
settings_init(void)
{
    llhttp_settings_init(&resp_settings);
    resp_settings.on_status = on_status;
    resp_settings.on_header_field = on_header_field;
    resp_settings.on_header_value = on_header_value;
    resp_settings.on_headers_complete = on_headers_complete;
    resp_settings.on_body = on_body;
    resp_settings.on_message_complete = on_message_complete;
}

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
    pthread_once(&settings_once, settings_init);
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
    llhttp_init(&u->parser, HTTP_RESPONSE, &resp_settings);
    u->parser.data = c;
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

void
relay_feed(struct client *c)
{
    struct upconn *u = c->up;
    if (u == NULL)
        return;
    struct evbuffer *in = bufferevent_get_input(u->bev);
    struct evbuffer *cout = bufferevent_get_output(c->bev);
    for (;;) {
        if (evbuffer_get_length(cout) >= RELAY_HIGH_BYTES) {
            c->up_paused = true;
            bufferevent_disable(u->bev, EV_READ);
            return;
        }
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
            return;
        c->resp_bytes = true;
        const char *base = v.iov_base;
        llhttp_errno_t err = llhttp_execute(&u->parser, base, v.iov_len);
        size_t used = v.iov_len;
        if (err != HPE_OK) {
            const char *pos = llhttp_get_error_pos(&u->parser);
            used = (pos && pos >= base && pos <= base + v.iov_len) ? (size_t)(pos - base) : 0;
        }
        evbuffer_drain(in, used);
        c->bytes_out += evbuffer_get_length(c->w->rstage);
        sock_write_staged(c->bev, c->w->rstage, c->tls ? SOCK_WRITE_TLS : SOCK_WRITE_DIRECT);
        if (err == HPE_OK)
            continue;
        if (err == HPE_PAUSED_UPGRADE && c->resp_status == 101) {
            tunnel_start(c);
            return;
        }
        if (err == HPE_PAUSED && c->resp_complete) {
            if (evbuffer_get_length(in) > 0)
                c->up_reusable = false; /* bytes after the response: do not trust it */
            response_done(c);
            return;
        }
        log_info("upstream %s/%s sent a bad response: %s (%s), request id %s",
                 conf_pool_name(c->srv->pool), c->srv->name, llhttp_errno_name(err),
                 llhttp_get_error_reason(&u->parser), c->request_id);
        server_failed(c, c->srv);
        client_fail(c, 502);
        return;
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
        if (c->read_paused) {
            c->read_paused = false;
            bufferevent_enable(c->bev, EV_READ);
            client_feed(c);
        }
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
            llhttp_finish(&u->parser);
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
    if (!c->resp_bytes && !c->rf.has_body && (stale_retry || move_retry)) {
        /* Nothing came back. On a reused connection it is the keep-alive race (the server
         * closed it as we reused it): once more on a fresh connection to the same server. On a
         * fresh connection the server died with the request: an idempotent request without a
         * body goes once to another server of the pool (DESIGN §4: a killed server costs no
         * request). */
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
            if (attach_server(c, next, NULL, true, false))
                return;
        }
    }
    log_info("upstream %s/%s closed before a complete response, request id %s",
             c->srv ? conf_pool_name(c->srv->pool) : "-", c->srv ? c->srv->name : "-",
             c->request_id);
    client_fail(c, 502);
}

/* --- llhttp response callbacks --- */

static int
on_status(llhttp_t *p, const char *at, size_t len)
{
    struct client *c = p->data;
    return http_head_reason(&c->rhead, at, len) == HTTP_HEAD_OK ? 0 : HPE_USER;
}

static int
on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct client *c = p->data;
    return http_head_field(&c->rhead, at, len) == HTTP_HEAD_OK ? 0 : HPE_USER;
}

static int
on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct client *c = p->data;
    return http_head_value(&c->rhead, at, len) == HTTP_HEAD_OK ? 0 : HPE_USER;
}

static int
on_headers_complete(llhttp_t *p)
{
    struct client *c = p->data;
    int status = p->status_code;
    struct http_buf *b = &c->w->scratch;
    b->len = 0;
    if (status < 200 && status != 101) {
        /* Interim (100 Continue, 103 Early Hints): relayed to HTTP/1.1 clients only. */
        c->interim = true;
        if (!c->rf.http10) {
            struct http_response_out m = {.status = status, .body = HTTP_BODY_NONE};
            http_write_response(b, &c->rhead, &m);
            evbuffer_add(c->w->rstage, b->p, b->len);
        }
        http_head_clear(&c->rhead);
        return 1;
    }
    if (status == 101) {
        if (!c->rf.upgrade) {
            llhttp_set_error_reason(p, "101 without an upgrade request");
            return -1;
        }
        c->resp_status = 101;
        c->resp_started = true;
        struct http_response_out m = {
            .status = 101, .body = HTTP_BODY_NONE, .conn = HTTP_CONN_UPGRADE};
        http_write_response(b, &c->rhead, &m);
        evbuffer_add(c->w->rstage, b->p, b->len);
        return 2; /* the rest is another protocol */
    }
    c->resp_status = status;
    if (status >= 500 && c->ws->snap->pools[c->srv->pool].conf->health.passive.eject_on_5xx)
        server_failed(c, c->srv);
    else
        eject_success(c->srv);
    bool nobody = c->rf.head_method || status == 204 || status == 304;
    bool chunked = (p->flags & F_CHUNKED) != 0;
    bool length =
        (p->flags & F_CONTENT_LENGTH) != 0 && !chunked && !(p->flags & F_TRANSFER_ENCODING);
    enum http_body body;
    if (nobody)
        body = HTTP_BODY_NONE;
    else if (length)
        body = HTTP_BODY_LENGTH;
    else
        body = c->rf.http10 ? HTTP_BODY_CLOSE : HTTP_BODY_CHUNKED;
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
        .upstream_te = chunked,
        .conn = conn,
        .set_cookie = c->cookie[0] ? c->cookie : NULL,
    };
    http_write_response(b, &c->rhead, &m);
    evbuffer_add(c->w->rstage, b->p, b->len);
    c->resp_started = true;
    return nobody ? 1 : 0;
}

static int
on_body(llhttp_t *p, const char *at, size_t len)
{
    struct client *c = p->data;
    sock_add_body(c->w->rstage, at, len, c->out_body == HTTP_BODY_CHUNKED);
    return 0;
}

static int
on_message_complete(llhttp_t *p)
{
    struct client *c = p->data;
    if (c->interim) {
        c->interim = false;
        return 0; /* the final response follows */
    }
    if (c->resp_status == 101)
        return 0; /* llhttp pauses for the upgrade next */
    if (c->out_body == HTTP_BODY_CHUNKED)
        evbuffer_add(c->w->rstage, "0\r\n\r\n", 5);
    c->up_reusable = llhttp_should_keep_alive(p) != 0;
    c->resp_complete = true;
    return HPE_PAUSED;
}
