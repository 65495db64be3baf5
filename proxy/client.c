/* proxy/client.c — client connections: reading and checking requests with llhttp (strict),
 * routing them, streaming their bodies upstream, keep-alive, pipelining, timeouts, and the one
 * way out (client_close). The response side is relay.c. */
#include "proxy/client.h"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include "conf/xalloc.h"
#include "proxy/clock.h"
#include "proxy/accesslog.h"
#include "proxy/log.h"
#include "proxy/sock.h"
#include "proxy/stats.h"
#include "proxy/tls.h"
#include "proxy/upstream.h"

#define CLIENT_MAX_SINGLE_READ (64 * 1024)
#define CLOSING_DEADLINE_MS 5000
#define LINGER_MS 2000
/* Draining: an idle keep-alive connection closes after a grace (a client that is sending its
 * next request right now gets an answer) plus a random spread (not all at once). */
#define DRAIN_GRACE_MS 200
#define DRAIN_SPREAD_MS 500

static int on_begin(void *arg);
static int on_head(void *arg);
static int on_body(void *arg, const char *at, size_t len);
static void on_complete(void *arg);

static const struct reqframe_ops frame_ops = {
    .begin = on_begin,
    .head = on_head,
    .body = on_body,
    .complete = on_complete,
};

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short events, void *arg);
static void on_timer(evutil_socket_t fd, short what, void *arg);

static const struct conf *
cur_conf(const struct client *c)
{
    return c->ws ? c->ws->snap->conf : c->w->cur->snap->conf;
}

static void
arm_timer(struct client *c, uint64_t ms)
{
    struct timeval tv = clock_tv(ms);
    evtimer_add(c->timer, &tv);
}

/* Dotted quad without inet_ntop, whose sprintf was 3% of the instructions of a connection. */
static void
ipv4_to_text(const unsigned char *b, char *out, size_t outlen)
{
    char tmp[16];
    size_t n = 0;
    for (int i = 0; i < 4; i++) {
        unsigned v = b[i];
        if (v >= 100)
            tmp[n++] = (char)('0' + v / 100);
        if (v >= 10)
            tmp[n++] = (char)('0' + v / 10 % 10);
        tmp[n++] = (char)('0' + v % 10);
        if (i < 3)
            tmp[n++] = '.';
    }
    if (n < outlen) {
        memcpy(out, tmp, n);
        out[n] = '\0';
    }
}

static void
peer_to_text(const struct sockaddr *sa, char *out, size_t outlen)
{
    out[0] = '\0';
    if (sa->sa_family == AF_INET) {
        ipv4_to_text((const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr, out,
                     outlen);
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a))
            ipv4_to_text(&a->s6_addr[12], out, outlen);
        else
            inet_ntop(AF_INET6, a, out, (socklen_t)outlen);
    }
    if (out[0] == '\0')
        snprintf(out, outlen, "unknown");
}

/* Closed clients are kept (up to SPARE_CLIENTS per worker) with their head buffers, request
 * buffer and timer, so that a connection per request does not cost a dozen allocations. */
#define SPARE_CLIENTS 64

/* A zeroed client, but for the storage a recycled one keeps: rf.head and rhead buffers (taken
 * over after their init), req, and timer (its callback argument is the same pointer). */
static struct client *
client_alloc(struct worker *w)
{
    struct client *c = w->spare_clients;
    if (c == NULL)
        return xcalloc(1, sizeof(*c));
    w->spare_clients = c->next_spare;
    w->nspare_clients--;
    struct http_head req = c->rf.head, resp = c->rhead;
    struct http_buf out = c->req;
    struct event *timer = c->timer;
    memset(c, 0, sizeof(*c));
    c->rf.head = req;
    c->rhead = resp;
    c->req = out;
    c->req.len = 0;
    c->timer = timer;
    return c;
}

static void
client_destroy(struct client *c)
{
    reqframe_finish(&c->rf);
    http_head_finish(&c->rhead);
    http_buf_finish(&c->req);
    if (c->timer)
        event_free(c->timer);
    free(c);
}

/* Frees a closed client, or keeps it for client_alloc(). */
static void
client_free(struct worker *w, struct client *c)
{
    if (w->nspare_clients >= SPARE_CLIENTS || w->draining) {
        client_destroy(c);
        return;
    }
    evtimer_del(c->timer);
    if (c->req.cap > 4096)
        http_buf_finish(&c->req);
    c->next_spare = w->spare_clients;
    w->spare_clients = c;
    w->nspare_clients++;
}

void
client_free_spares(struct worker *w)
{
    while (w->spare_clients) {
        struct client *c = w->spare_clients;
        w->spare_clients = c->next_spare;
        w->nspare_clients--;
        client_destroy(c);
    }
}

struct client *
client_create(struct worker *w, int fd, const struct sockaddr *addr, int addrlen,
              enum route_to route_to, struct tls_ctx *tls)
{
    struct bufferevent *bev;
    if (tls) {
        /* The handshake runs inside the bufferevent; its deadline is the header timer's. */
        SSL *ssl = tls_new_ssl(tls);
        bev = ssl ? bufferevent_openssl_socket_new(w->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                   BEV_OPT_CLOSE_ON_FREE)
                  : NULL;
        if (bev)
            bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
        else if (ssl)
            SSL_free(ssl);
    } else {
        bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
        if (bev)
            sock_hook_reads(bev);
    }
    if (bev == NULL) {
        close(fd);
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    struct client *c = client_alloc(w);
    c->w = w;
    c->bev = bev;
    c->route_to = route_to;
    c->tls = tls != NULL;
    if (addrlen > 0 && (size_t)addrlen <= sizeof(c->peer))
        memcpy(&c->peer, addr, (size_t)addrlen);
    peer_to_text((const struct sockaddr *)&c->peer, c->peer_text, sizeof(c->peer_text));
    struct http_head old_req = c->rf.head, old_resp = c->rhead;
    reqframe_init(&c->rf, &frame_ops, c);
    http_head_init(&c->rhead, 64 * 1024, 1000, 0);
    http_head_take_storage(&c->rf.head, &old_req);
    http_head_take_storage(&c->rhead, &old_resp);
    if (c->timer == NULL)
        c->timer = evtimer_new(w->base, on_timer, c);
    c->state = CS_IDLE;
    c->bucket = -1;
    stats_gauge(&w->board->listener[w->id].conns, 1);
    TAILQ_INSERT_TAIL(&w->clients, c, link);

    const struct conf *conf = w->cur->snap->conf;
    bufferevent_set_max_single_read(bev, CLIENT_MAX_SINGLE_READ);
    /* Reading stops by itself when a paused (pipelined) request leaves this much unread. */
    bufferevent_setwatermark(bev, EV_READ, 0, conf->limits.max_header_bytes + 64 * 1024);
    bufferevent_setwatermark(bev, EV_WRITE, RELAY_LOW_BYTES, 0);
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
    if (tls)
        bufferevent_enable(bev, EV_READ | EV_WRITE);
    else
        sock_enable_rw(bev);
    /* The first request's header deadline runs from accept. */
    arm_timer(c, conf->timeouts.client_header_ms);
    return c;
}

struct stats_block *
client_srv_stats(const struct client *c, const struct server *srv)
{
    return &srv->stats[c->w->id];
}

struct stats_block *
client_pool_stats(const struct client *c, enum pool_id pool)
{
    return &c->w->board->pool[pool][c->w->id];
}

void
client_inflight(struct client *c, struct server *srv, bool on)
{
    if (on == c->inflight)
        return;
    int64_t d = on ? 1 : -1;
    srv->w[c->w->id].inflight += on ? 1u : (uint32_t)-1;
    stats_gauge(&client_srv_stats(c, srv)->inflight, d);
    stats_gauge(&client_pool_stats(c, srv->pool)->inflight, d);
    c->inflight = on;
}

static unsigned
status_class(int status)
{
    return status >= 100 && status < 600 ? (unsigned)(status / 100) : 0;
}

/* Counts a finished exchange once: the status class, latency, bytes, cut responses. */
static void
exchange_log(struct client *c, int status, uint64_t us)
{
    const struct http_head *h = &c->rf.head;
    bool have_target = h->url_len > 0;
    const char *method = have_target ? reqframe_method(&c->rf) : NULL;
    struct accesslog_entry e = {
        .client = (const struct sockaddr *)&c->peer,
        .method = method,
        .method_len = method ? strlen(method) : 0,
        .target = have_target ? h->buf + h->url_off : NULL,
        .target_len = h->url_len,
        .status = status,
        .bytes_in = c->bytes_in,
        .bytes_out = c->bytes_out,
        .duration_us = us,
        .pool = c->routed ? conf_pool_name(c->pool) : NULL,
        .server = c->acct_srv ? c->acct_srv->name : NULL,
        .request_id = c->request_id[0] ? c->request_id : NULL,
        .request_id_len = strlen(c->request_id),
        .generation = c->generation,
        .bucket = c->bucket,
    };
    accesslog_write(c->w->alog, c->w->id, &e);
}

static void
exchange_account(struct client *c)
{
    if (c->accounted || c->ws == NULL)
        return;
    c->accounted = true;
    int status = c->local_status ? c->local_status : c->resp_status;
    uint64_t us = clock_us() - c->started_us;
    if (c->w->alog && (status || c->routed))
        exchange_log(c, status, us);
    if (!c->routed || status == 101)
        return; /* no pool to count for; a tunnel counts as a tunnel, not a response */
    struct stats_block *blocks[2] = {client_pool_stats(c, c->pool),
                                     c->acct_srv ? client_srv_stats(c, c->acct_srv) : NULL};
    for (int i = 0; i < 2; i++) {
        struct stats_block *b = blocks[i];
        if (b == NULL)
            continue;
        stats_add(&b->responses[c->upstream_cut ? 0 : status_class(status)], 1);
        if (c->upstream_cut)
            stats_add(&b->upstream_failures, 1);
        stats_add(&b->bytes_in, c->bytes_in);
        stats_add(&b->bytes_out, c->bytes_out);
        if (status)
            hist_record(&b->latency, us);
    }
}

/* Releases what the exchange holds; the connection itself stays. */
static void
exchange_release(struct client *c, bool reuse_upstream)
{
    exchange_account(c);
    if (c->inflight)
        client_inflight(c, c->srv, false);
    if (c->up) {
        if (reuse_upstream) {
            const struct conf_pool *pc = c->ws->snap->pools[c->srv->pool].conf;
            upstream_park(&c->up, pc->max_idle, pc->idle_timeout_ms);
        } else {
            upstream_close(&c->up);
        }
    }
    c->srv = NULL;
    worker_snap_put(c->w, &c->ws);
}

static void
exchange_reset(struct client *c)
{
    http_head_clear(&c->rhead);
    if (c->req.cap > 4096)
        http_buf_finish(&c->req);
    c->req.len = 0;
    c->request_id[0] = '\0';
    c->cookie[0] = '\0';
    c->reject = 0;
    c->resp_status = 0;
    c->local_status = 0;
    c->routed = c->accounted = c->upstream_cut = false;
    c->bucket = -1;
    c->generation = 0;
    c->bytes_in = c->bytes_out = 0;
    c->acct_srv = NULL;
    c->connect_tries = 0;
    c->body_bytes = 0;
    c->out_body = HTTP_BODY_NONE;
    c->req_complete = c->resp_started = c->resp_bytes = c->resp_complete = false;
    c->up_reusable = c->up_reused = c->retried = c->moved = c->replay = false;
    c->req_head_len = 0;
    c->up_paused = false;
}

void
client_close(struct client *c)
{
    if (c == NULL)
        return;
    if (c->upstream_cut && c->out_body == HTTP_BODY_CLOSE) {
        /* A close-delimited body (HTTP/1.0 client) ends with the connection: after a cut, a FIN
         * would tell the client the body is complete. A reset says it is not. */
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(bufferevent_getfd(c->bev), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    /* Before the exchange lets go of its snapshot: acct_srv lives only as long as that (a
     * reload may have removed the server since the tunnel opened). */
    if (c->tunnel_counted) {
        stats_gauge(&client_pool_stats(c, c->pool)->tunnels, -1);
        if (c->acct_srv)
            stats_gauge(&client_srv_stats(c, c->acct_srv)->tunnels, -1);
        c->tunnel_counted = false;
    }
    exchange_release(c, false);
    stats_gauge(&c->w->board->listener[c->w->id].conns, -1);
    bufferevent_free(c->bev);
    TAILQ_REMOVE(&c->w->clients, c, link);
    struct worker *w = c->w;
    client_free(w, c);
    worker_client_closed(w);
}

void
client_close_after_flush(struct client *c)
{
    exchange_release(c, false);
    c->state = CS_CLOSING;
    c->keepalive = false;
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_set_timeouts(c->bev, NULL, NULL);
    if (c->tls)
        bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    else
        sock_enable_rw(c->bev);
    evtimer_del(c->timer);
    arm_timer(c, CLOSING_DEADLINE_MS);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        on_write(c->bev, c);
}

void
client_fail(struct client *c, int status)
{
    if (c->resp_started || status == 0) {
        /* Part of a response is out: the only honest signal left is closing. An upstream
         * failure (bad framing or a timeout mid-body) cut the response: counted as such, not
         * as the status its head carried. */
        if (c->resp_started && c->local_status == 0 && status >= 500)
            c->upstream_cut = true;
        client_close(c);
        return;
    }
    struct http_buf b = {0};
    http_write_error(&b, status, c->request_id[0] ? c->request_id : NULL);
    evbuffer_add(bufferevent_get_output(c->bev), b.p, b.len);
    c->local_status = status;
    c->bytes_out += b.len;
    http_buf_finish(&b);
    c->resp_started = true;
    if (status >= 500)
        log_debug("%s -> %d request id %s", c->peer_text, status, c->request_id);
    client_close_after_flush(c);
}

void
client_exchange_done(struct client *c)
{
    struct worker *w = c->w;
    bool reuse = c->up_reusable && c->req_complete && c->resp_complete;
    uint64_t keepalive_ms = cur_conf(c)->timeouts.keepalive_ms;
    exchange_release(c, reuse);
    exchange_reset(c);
    if (!c->keepalive || c->peer_eof || w->draining) {
        client_close_after_flush(c);
        return;
    }
    c->state = CS_IDLE;
    evtimer_del(c->timer);
    arm_timer(c, keepalive_ms);
    reqframe_resume(&c->rf);
    if (c->read_paused) {
        c->read_paused = false;
        bufferevent_enable(c->bev, EV_READ);
    }
    client_feed(c);
}

void
client_drain(struct client *c)
{
    if (c->state == CS_IDLE && evbuffer_get_length(bufferevent_get_input(c->bev)) == 0) {
        evtimer_del(c->timer);
        arm_timer(c, DRAIN_GRACE_MS + route_rand(&c->w->rng) % DRAIN_SPREAD_MS);
    }
}

void
client_feed(struct client *c)
{
    if (c->in_feed)
        return;
    c->in_feed = true;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    for (;;) {
        if (c->state == CS_WAIT || c->state == CS_TUNNEL || c->state == CS_CLOSING)
            break;
        if (c->up && evbuffer_get_length(bufferevent_get_output(c->up->bev)) >= RELAY_HIGH_BYTES) {
            c->read_paused = true;
            bufferevent_disable(c->bev, EV_READ);
            break;
        }
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
            break;
        size_t used = 0;
        enum reqframe_result r = reqframe_execute(&c->rf, v.iov_base, v.iov_len, &used);
        evbuffer_drain(in, used);
        if (c->ws)
            c->bytes_in += used; /* raw bytes of this request, as the client sent them */
        /* What the pass produced for the upstream goes out now, in order. */
        if (c->up)
            sock_write_staged(c->up->bev, c->w->qstage,
                              !c->up->connected ? SOCK_WRITE_QUEUE
                              : c->up->tls      ? SOCK_WRITE_TLS
                                                : SOCK_WRITE_DIRECT);
        else
            evbuffer_drain(c->w->qstage, evbuffer_get_length(c->w->qstage));
        if (r == REQFRAME_ERROR) {
            c->in_feed = false;
            log_debug("%s: request rejected with %d: %s", c->peer_text, c->rf.status,
                      llhttp_get_error_reason(&c->rf.parser));
            client_fail(c, c->rf.status);
            return;
        }
    }
    c->in_feed = false;
}

/* --- framing callbacks: they only record and write; closing happens after parsing returns. */

static int
on_begin(void *arg)
{
    struct client *c = arg;
    c->ws = worker_snap_get(c->w);
    const struct conf *conf = c->ws->snap->conf;
    struct reqframe_limits lim = {
        .max_header_bytes = conf->limits.max_header_bytes,
        .max_headers = conf->limits.max_headers,
        .max_uri_bytes = conf->limits.max_uri_bytes,
        .max_body_bytes = conf->limits.max_body_bytes,
    };
    reqframe_set_limits(&c->rf, &lim);
    if (c->state == CS_IDLE && c->keepalive) {
        /* A keep-alive request: its header deadline runs from its first byte. */
        evtimer_del(c->timer);
        arm_timer(c, conf->timeouts.client_header_ms);
    }
    c->state = CS_HEAD;
    c->started_ms = clock_ms();
    c->started_us = clock_us();
    return 0;
}

/* Whether a field's value equals s (case-insensitive, blanks around ignored). */
static bool
field_is(const struct http_head *h, const struct http_field *f, const char *s)
{
    const char *v = http_field_value(h, f);
    size_t n = f->value_len;
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    while (n > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    return n == strlen(s) && strncasecmp(v, s, n) == 0;
}

/* DESIGN §3 step 1, the header part: the pool the preview header asks for when the request is
 * authorized — every configured condition holds: the client in preview.allow_from, and/or
 * X-Switchyard-Token equal to preview.token (none configured: never). -1 otherwise; a refused
 * header is counted and ignored. Both headers are stripped before forwarding either way. */
static int
preview_pool(struct client *c, const struct conf *conf, const struct route_word *rw)
{
    const struct conf_preview *pv = &conf->routing.preview;
    const struct http_head *h = &c->rf.head;
    const struct http_field *f = pv->header ? http_head_get(h, pv->header, NULL) : NULL;
    if (f == NULL)
        return -1;
    int pool;
    if (field_is(h, f, "blue"))
        pool = POOL_BLUE;
    else if (field_is(h, f, "green"))
        pool = POOL_GREEN;
    else if (field_is(h, f, "standby"))
        pool = (int)route_other_pool(rw->live);
    else if (field_is(h, f, "live"))
        pool = (int)rw->live;
    else
        pool = -1;
    bool ok = pool >= 0 && (pv->nallow_from > 0 || pv->token != NULL);
    if (ok && pv->nallow_from > 0) {
        bool in = false;
        for (size_t i = 0; i < pv->nallow_from && !in; i++)
            in = conf_cidr_match(&pv->allow_from[i], (const struct sockaddr *)&c->peer);
        ok = in;
    }
    if (ok && pv->token) {
        const struct http_field *t = http_head_get(h, PREVIEW_TOKEN_HEADER, NULL);
        ok = t != NULL && field_is(h, t, pv->token);
    }
    if (!ok) {
        stats_add(&c->w->board->listener[c->w->id].preview_refused, 1);
        return -1;
    }
    return pool;
}

/* The bucket of DESIGN §3 step 2 and the pool of step 3 (step 1, preview, is the listener's). */
static void
route_decide(struct client *c, const struct conf *conf, const struct route_word *rw)
{
    c->generation = rw->generation;
    c->routed = true;
    switch (c->route_to) {
    case ROUTE_TO_STANDBY:
        c->pool = route_other_pool(rw->live);
        return;
    case ROUTE_TO_BLUE:
        c->pool = POOL_BLUE;
        return;
    case ROUTE_TO_GREEN:
        c->pool = POOL_GREEN;
        return;
    case ROUTE_TO_NORMAL:
        break;
    }
    int preview = preview_pool(c, conf, rw);
    if (preview >= 0) {
        c->pool = (enum pool_id)preview;
        return;
    }
    const struct conf_sticky *st = &conf->routing.sticky;
    uint32_t bucket = 0;
    bool have = false;
    /* DESIGN §3: a valid sticky cookie decides, whatever sticky.by says. */
    if (st->cookie_name) {
        for (uint32_t i = 0; i < c->rf.head.nfields && !have; i++) {
            const struct http_field *f = &c->rf.head.fields[i];
            if (f->name_len != 6 || strncasecmp(http_field_name(&c->rf.head, f), "Cookie", 6) != 0)
                continue;
            const char *val;
            size_t vlen;
            if (route_cookie_find(http_field_value(&c->rf.head, f), f->value_len, st->cookie_name,
                                  &val, &vlen) == 0 &&
                route_bucket_parse(val, vlen, &bucket) == 0)
                have = true;
        }
    }
    if (!have) {
        switch (st->by) {
        case STICKY_COOKIE:
            bucket = route_bucket_random(&c->w->rng);
            /* Secure over TLS: a browser then never sends it over plain HTTP. */
            snprintf(c->cookie, sizeof(c->cookie), "%s=%u; Path=/; Max-Age=%llu; HttpOnly%s",
                     st->cookie_name, bucket, (unsigned long long)(st->max_age_ms / 1000),
                     c->tls ? "; Secure" : "");
            break;
        case STICKY_HEADER: {
            const struct http_field *f =
                st->header ? http_head_get(&c->rf.head, st->header, NULL) : NULL;
            if (f)
                bucket = route_bucket_hash(http_field_value(&c->rf.head, f), f->value_len);
            else
                bucket = route_bucket_random(&c->w->rng);
            break;
        }
        case STICKY_IP:
            if (c->peer.ss_family == AF_INET6) {
                const struct in6_addr *a = &((const struct sockaddr_in6 *)&c->peer)->sin6_addr;
                if (IN6_IS_ADDR_V4MAPPED(a))
                    bucket = route_bucket_hash(&a->s6_addr[12], 4);
                else
                    bucket = route_bucket_hash(a, sizeof(*a));
            } else {
                const struct in_addr *a = &((const struct sockaddr_in *)&c->peer)->sin_addr;
                bucket = route_bucket_hash(a, sizeof(*a));
            }
            break;
        case STICKY_NONE:
            bucket = route_bucket_random(&c->w->rng);
            break;
        }
    }
    c->bucket = (int32_t)bucket;
    c->pool = route_pool_for_bucket(rw, bucket);
}

/* A routing decision, in the worker's decision window (route.h: a rollback is acknowledged only
 * when no decision that read the old word is still in progress). */
static void
route_request(struct client *c, const struct conf *conf)
{
    struct route_word rw;
    route_decision_begin(&c->w->decisions, c->w->routing, &rw);
    route_decide(c, conf, &rw);
    route_decision_end(&c->w->decisions);
}

static int
on_head(void *arg)
{
    struct client *c = arg;
    const struct conf *conf = c->ws->snap->conf;
    struct http_head *h = &c->rf.head;
    evtimer_del(c->timer);
    c->keepalive = c->rf.keepalive && !c->w->draining;

    const struct http_field *xid = http_head_get(h, "X-Request-Id", NULL);
    if (xid && http_request_id_sane(http_field_value(h, xid), xid->value_len)) {
        memcpy(c->request_id, http_field_value(h, xid), xid->value_len);
        c->request_id[xid->value_len] = '\0';
    } else {
        uint64_t a = route_rand(&c->w->rng), b = route_rand(&c->w->rng);
        http_request_id_make(c->request_id, a, b);
    }

    route_request(c, conf);
    if (!relay_attach(c))
        return c->reject;
    c->state = CS_BODY;
    if (c->rf.has_body) {
        struct timeval tv = clock_tv(conf->timeouts.client_body_ms);
        bufferevent_set_timeouts(c->bev, &tv, NULL);
    }
    return 0;
}

/* Appends a body piece to c->req as it went upstream, while the body fits RELAY_REPLAY_BYTES
 * (beyond, it is streamed only: too big to send again). */
static void
keep_for_replay(struct client *c, const char *at, size_t len)
{
    if (c->req.len - c->req_head_len + len <= RELAY_REPLAY_BYTES) {
        http_buf_add_body(&c->req, at, len, c->rf.chunked);
        if (c->req.len - c->req_head_len <= RELAY_REPLAY_BYTES)
            return;
    }
    c->replay = false;
}

static int
on_body(void *arg, const char *at, size_t len)
{
    struct client *c = arg;
    sock_add_body(c->w->qstage, at, len, c->rf.chunked);
    if (c->replay)
        keep_for_replay(c, at, len);
    return 0;
}

static void
on_complete(void *arg)
{
    struct client *c = arg;
    if (c->rf.chunked && c->up) {
        evbuffer_add(c->w->qstage, "0\r\n\r\n", 5);
        if (c->replay)
            http_buf_add(&c->req, "0\r\n\r\n", 5);
    }
    c->req_complete = true;
    c->state = CS_WAIT;
    if (c->rf.has_body)
        bufferevent_set_timeouts(c->bev, NULL, NULL);
    relay_arm_timeouts(c);
}

/* --- bufferevent callbacks --- */

static void
on_read(struct bufferevent *bev, void *arg)
{
    struct client *c = arg;
    if (c->state == CS_CLOSING) {
        struct evbuffer *in = bufferevent_get_input(bev);
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    client_feed(c);
}

static void
on_write(struct bufferevent *bev, void *arg)
{
    struct client *c = arg;
    if (c->state == CS_CLOSING) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
            /* Lingering close: stop sending, read what the client still sends for a moment so
             * our last response is not destroyed by a reset. TLS first says close_notify
             * (libevent 2.1's OpenSSL bufferevent never does), so the end is not a truncation. */
            if (c->tls) {
                SSL *ssl = bufferevent_openssl_get_ssl(bev);
                if (ssl)
                    SSL_shutdown(ssl);
            }
            shutdown(bufferevent_getfd(bev), SHUT_WR);
            evtimer_del(c->timer);
            arm_timer(c, LINGER_MS);
        }
        return;
    }
    if (c->up_paused && c->up &&
        evbuffer_get_length(bufferevent_get_output(bev)) <= RELAY_LOW_BYTES) {
        c->up_paused = false;
        bufferevent_enable(c->up->bev, EV_READ);
        relay_feed(c);
    }
}

static void
on_event(struct bufferevent *bev, short events, void *arg)
{
    struct client *c = arg;
    if (events & BEV_EVENT_CONNECTED)
        return; /* a TLS handshake completed: nothing to do */
    if (c->state == CS_CLOSING) {
        client_close(c);
        return;
    }
    if (events & BEV_EVENT_TIMEOUT) {
        /* The body idle timeout (the only read timeout set on a client). */
        client_fail(c, 408);
        return;
    }
    if ((events & BEV_EVENT_EOF) && c->state == CS_WAIT && !c->tls) {
        /* The client half-closed after a complete request: deliver the response, then close.
         * Not over TLS: there EOF means the peer is gone, and libevent's OpenSSL bufferevent
         * stops writing after it, so the exchange would never end (and hold its upstream). */
        c->peer_eof = true;
        c->keepalive = false;
        bufferevent_disable(bev, EV_READ);
        return;
    }
    client_close(c);
}

static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;
    switch (c->state) {
    case CS_IDLE:
        client_close(c);
        return;
    case CS_HEAD:
        client_fail(c, 408);
        return;
    case CS_CLOSING:
        client_close(c);
        return;
    case CS_TUNNEL:
        client_close(c); /* the flush after one side closed took too long */
        return;
    case CS_BODY:
    case CS_WAIT:
        return;
    }
}
