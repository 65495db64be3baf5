/* tests/origin/conn.c — a test-origin connection: feeds llhttp from the bufferevent, answers
 * one request at a time (the parser pauses at each message end and resumes once the response
 * is fully queued), and runs the async states (delay, streaming, hold, tunnel, drain). */
#include "tests/origin/conn.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>

#include "conf/xalloc.h"
#include "tests/origin/respond.h"

/* Limits on what a client can make us hold per request (far above the proxy's defaults, so
 * proxy limit tests are not cut short by the origin). */
#define MAX_TARGET_BYTES (64u * 1024u)
#define MAX_ARENA_BYTES (1024u * 1024u)
#define MAX_HEADERS 2000u
/* Arena capacity kept between requests; a bigger one is released. */
#define KEEP_ARENA_BYTES (16u * 1024u)
/* How long a closing connection waits for the peer's FIN after ours. */
#define LINGER_MS 2000

#define FNV1A_OFFSET UINT64_C(0xcbf29ce484222325)
#define FNV1A_PRIME UINT64_C(0x100000001b3)

void
origin_log(const struct origin *o, const char *fmt, ...)
{
    if (o->quiet)
        return;
    va_list ap;
    fprintf(stderr, "origin %s/%s: ", o->pool, o->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Host-name characters (and '*', '_'): anything else in an SNI is reported as "(invalid)". */
static const char SNI_CHARS[] =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_*";

const char *
conn_sni(const struct conn *c)
{
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    if (ssl == NULL)
        return NULL;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name == NULL || name[0] == '\0')
        return "-";
    if (strlen(name) >= ORIGIN_SNI_LEN || name[strspn(name, SNI_CHARS)] != '\0')
        return "(invalid)";
    return name;
}

/* Counts a completed handshake under the name the client sent. */
static void
count_handshake(struct conn *c)
{
    struct origin *o = c->o;
    const char *name = conn_sni(c);
    size_t i;

    o->tls_handshakes++;
    if (SSL_session_reused(bufferevent_openssl_get_ssl(c->bev)))
        o->tls_resumed++;
    for (i = 0; i < o->nsni; i++)
        if (strcmp(o->sni[i].name, name) == 0)
            break;
    if (i == o->nsni && i >= ORIGIN_SNI_MAX - 1) {
        i = ORIGIN_SNI_MAX - 1; /* no slot left: the last one counts every new name */
        if (o->nsni < ORIGIN_SNI_MAX) {
            snprintf(o->sni[i].name, sizeof(o->sni[i].name), "(other)");
            o->nsni++;
        }
    } else if (i == o->nsni) {
        snprintf(o->sni[i].name, sizeof(o->sni[i].name), "%s", name);
        o->nsni++;
    }
    o->sni[i].handshakes++;
    origin_log(o, "TLS handshake done: %s, SNI %s",
               SSL_get_version(bufferevent_openssl_get_ssl(c->bev)), name);
}

static void
req_reset(struct req *r)
{
    if (r->arena_cap > KEEP_ARENA_BYTES) {
        xfree(&r->arena);
        r->arena_cap = 0;
    }
    if (r->hdrs_cap > 64) {
        xfree(&r->hdrs);
        r->hdrs_cap = 0;
    }
    r->arena_len = 0;
    r->mark = 0;
    r->target_off = 0;
    r->target_len = 0;
    r->n_hdrs = 0;
    r->method = 0;
    r->http_major = 0;
    r->http_minor = 0;
    r->keep_alive = false;
    r->headers_done = false;
    r->delay_done = false;
    r->body_bytes = 0;
    r->body_fnv1a = FNV1A_OFFSET;
}

static struct conn *
of(llhttp_t *p)
{
    return p->data;
}

/* Refuses the request from inside a parser callback: llhttp_execute() returns HPE_USER. */
static int
refuse(llhttp_t *p, int status, const char *why)
{
    of(p)->reject_status = status;
    llhttp_set_error_reason(p, why);
    return HPE_USER;
}

static int
append(llhttp_t *p, const char *at, size_t len)
{
    struct req *r = &of(p)->req;
    if (len > MAX_ARENA_BYTES - r->arena_len)
        return refuse(p, 431, "request header fields too large");
    if (r->arena_len + len > r->arena_cap) {
        size_t cap = r->arena_cap ? r->arena_cap : 1024;
        while (cap < r->arena_len + len)
            cap *= 2;
        r->arena = xrealloc(r->arena, cap);
        r->arena_cap = cap;
    }
    memcpy(r->arena + r->arena_len, at, len);
    r->arena_len += len;
    return 0;
}

static int
on_message_begin(llhttp_t *p)
{
    req_reset(&of(p)->req);
    return 0;
}

static int
on_url(llhttp_t *p, const char *at, size_t len)
{
    struct req *r = &of(p)->req;
    if (len > MAX_TARGET_BYTES - (r->arena_len - r->mark))
        return refuse(p, 414, "request target too long");
    return append(p, at, len);
}

static int
on_url_complete(llhttp_t *p)
{
    struct req *r = &of(p)->req;
    r->target_off = r->mark;
    r->target_len = r->arena_len - r->mark;
    r->mark = r->arena_len;
    return 0;
}

static int
on_header_field_complete(llhttp_t *p)
{
    struct conn *c = of(p);
    struct req *r = &c->req;
    if (r->headers_done) {
        /* A trailer field of a chunked body: bounded by the arena, not recorded. */
        r->mark = r->arena_len;
        return 0;
    }
    if (r->n_hdrs == MAX_HEADERS)
        return refuse(p, 431, "too many header fields");
    if (r->n_hdrs == r->hdrs_cap) {
        r->hdrs_cap = r->hdrs_cap ? r->hdrs_cap * 2 : 16;
        r->hdrs = xrealloc(r->hdrs, r->hdrs_cap * sizeof(*r->hdrs));
    }
    struct hdr_span *h = &r->hdrs[r->n_hdrs++];
    h->name_off = r->mark;
    h->name_len = r->arena_len - r->mark;
    h->value_off = r->arena_len;
    h->value_len = 0;
    r->mark = r->arena_len;
    return 0;
}

static int
on_header_value_complete(llhttp_t *p)
{
    struct req *r = &of(p)->req;
    if (r->headers_done) {
        r->mark = r->arena_len;
        return 0;
    }
    struct hdr_span *h = &r->hdrs[r->n_hdrs - 1];
    h->value_off = r->mark;
    h->value_len = r->arena_len - r->mark;
    r->mark = r->arena_len;
    return 0;
}

static bool
span_eq(const struct req *r, size_t off, size_t len, const char *s)
{
    return len == strlen(s) && strncasecmp(r->arena + off, s, len) == 0;
}

static int
on_headers_complete(llhttp_t *p)
{
    struct conn *c = of(p);
    struct req *r = &c->req;

    c->o->requests++;
    r->headers_done = true;
    r->method = llhttp_get_method(p);
    r->http_major = llhttp_get_http_major(p);
    r->http_minor = llhttp_get_http_minor(p);
    r->keep_alive = llhttp_should_keep_alive(p);

    bool body = (p->flags & F_CHUNKED) || p->content_length > 0;
    bool http11 = r->http_major > 1 || (r->http_major == 1 && r->http_minor >= 1);
    if (body && http11) {
        for (size_t i = 0; i < r->n_hdrs; i++) {
            const struct hdr_span *h = &r->hdrs[i];
            if (span_eq(r, h->name_off, h->name_len, "expect") &&
                span_eq(r, h->value_off, h->value_len, "100-continue")) {
                struct evbuffer *out = bufferevent_get_output(c->bev);
                evbuffer_add(out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
                break;
            }
        }
    }
    return 0;
}

static int
on_body(llhttp_t *p, const char *at, size_t len)
{
    struct req *r = &of(p)->req;
    const unsigned char *b = (const unsigned char *)at;
    uint64_t h = r->body_fnv1a;
    for (size_t i = 0; i < len; i++) {
        h ^= b[i];
        h *= FNV1A_PRIME;
    }
    r->body_fnv1a = h;
    r->body_bytes += len;
    return 0;
}

/* Pauses after each request so it is answered before the next is parsed. An upgrade request
 * is not paused here: llhttp then stops with HPE_PAUSED_UPGRADE by itself. */
static int
on_message_complete(llhttp_t *p)
{
    return llhttp_get_upgrade(p) ? 0 : HPE_PAUSED;
}

static llhttp_settings_t settings;

static void
init_settings(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    llhttp_settings_t *s = &settings;
    llhttp_settings_init(s);
    s->on_message_begin = on_message_begin;
    s->on_url = on_url;
    s->on_url_complete = on_url_complete;
    s->on_header_field = append;
    s->on_header_field_complete = on_header_field_complete;
    s->on_header_value = append;
    s->on_header_value_complete = on_header_value_complete;
    s->on_headers_complete = on_headers_complete;
    s->on_body = on_body;
    s->on_message_complete = on_message_complete;
}

/* The last response is queued: FIN once it is flushed, then wait (bounded) for the peer's
 * close while discarding its bytes, so pending input does not turn our close into a reset that
 * could destroy the response in flight. Returns -1 if c was closed. */
static int
after_flush(struct conn *c)
{
    if (c->peer_eof) {
        conn_close(c);
        return -1;
    }
    /* Over TLS, close_notify first (libevent 2.1 never sends it): a close-delimited body then
     * ends cleanly for the client. The output is empty, so the alert goes straight to the
     * socket behind the last record; a full socket buffer only costs the alert. */
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    if (ssl != NULL && SSL_is_init_finished(ssl)) {
        (void)SSL_shutdown(ssl);
        ERR_clear_error();
    }
    shutdown(bufferevent_getfd(c->bev), SHUT_WR);
    c->fin_sent = true;
    struct timeval tv = {LINGER_MS / 1000, (LINGER_MS % 1000) * 1000};
    bufferevent_set_timeouts(c->bev, &tv, NULL);
    evbuffer_drain(bufferevent_get_input(c->bev), (size_t)-1);
    bufferevent_enable(c->bev, EV_READ);
    return 0;
}

static int
start_drain(struct conn *c)
{
    c->state = CONN_DRAINING;
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    evbuffer_drain(bufferevent_get_input(c->bev), (size_t)-1);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        return after_flush(c);
    return 0;
}

/* The current response is fully queued: close after it, or go on with the next request.
 * Returns -1 if c was closed. */
static int
request_done(struct conn *c)
{
    c->state = CONN_READING;
    if (c->close_after)
        return start_drain(c);
    if (c->paused_upgrade)
        llhttp_resume_after_upgrade(&c->parser);
    else
        llhttp_resume(&c->parser);
    c->paused_upgrade = false;
    req_reset(&c->req);
    return 0;
}

/* A request was parsed completely: answer it. Returns -1 if c was closed. */
static int
answer(struct conn *c)
{
    if (!c->req.keep_alive)
        c->close_after = true;
    if (respond_dispatch(c) == -1)
        return -1;
    if (c->state != CONN_READING)
        return 0;
    return request_done(c);
}

static int
reject(struct conn *c, llhttp_errno_t err)
{
    int status = c->reject_status ? c->reject_status : 400;
    const char *why = llhttp_get_error_reason(&c->parser);
    origin_log(c->o, "rejecting request (%d): %s: %s", status, llhttp_errno_name(err),
               why ? why : "");
    respond_error(c, status, why ? why : llhttp_errno_name(err));
    return start_drain(c);
}

/* Parses buffered input while no response is pending. A client pipelining requests without
 * reading the answers is throttled: parsing stops while the output holds more than
 * CONN_OUT_HIGH_BYTES and resumes from on_write(); meanwhile the read high watermark stops
 * reading. Returns -1 if c was closed. */
static int
process_input(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    while (c->state == CONN_READING && evbuffer_get_length(out) <= CONN_OUT_HIGH_BYTES) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
            break;
        const char *data = v.iov_base;
        llhttp_errno_t err = llhttp_execute(&c->parser, data, v.iov_len);
        if (err == HPE_OK) {
            evbuffer_drain(in, v.iov_len);
            continue;
        }
        const char *pos = llhttp_get_error_pos(&c->parser);
        if (err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE)
            return reject(c, err);
        evbuffer_drain(in, (size_t)(pos - data));
        c->paused_upgrade = err == HPE_PAUSED_UPGRADE;
        if (answer(c) == -1)
            return -1;
    }
    if (c->state == CONN_READING && c->peer_eof && evbuffer_get_length(in) == 0)
        return start_drain(c);
    return 0;
}

static void
on_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer *out = bufferevent_get_output(bev);

    switch (c->state) {
    case CONN_READING:
        process_input(c);
        return;
    case CONN_TUNNEL:
        evbuffer_add_buffer(out, in);
        if (evbuffer_get_length(out) > CONN_OUT_HIGH_BYTES) {
            bufferevent_disable(bev, EV_READ);
            c->read_throttled = true;
        }
        return;
    case CONN_HOLDING:
    case CONN_DRAINING:
        evbuffer_drain(in, (size_t)-1);
        return;
    case CONN_DELAYED:
    case CONN_STREAMING:
        /* Pipelined input waits (bounded by the read high watermark). */
        return;
    }
}

static void
on_write(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    switch (c->state) {
    case CONN_STREAMING:
        if (respond_stream_fill(c) == 1) {
            if (request_done(c) == -1)
                return;
            process_input(c);
        }
        return;
    case CONN_TUNNEL:
        if (c->read_throttled) {
            c->read_throttled = false;
            bufferevent_enable(bev, EV_READ);
        }
        return;
    case CONN_DRAINING:
        if (!c->fin_sent && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            after_flush(c);
        return;
    case CONN_READING:
        if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
            process_input(c);
        return;
    case CONN_DELAYED:
    case CONN_HOLDING:
        return;
    }
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;

    if (what & BEV_EVENT_CONNECTED) {
        count_handshake(c); /* only TLS connections report this: the handshake is done */
        return;
    }
    if (what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
        unsigned long e = bufferevent_get_openssl_error(bev);
        if (e != 0) {
            char buf[256];
            ERR_error_string_n(e, buf, sizeof(buf));
            origin_log(c->o, "TLS error: %s", buf);
        }
        conn_close(c);
        return;
    }
    if (!(what & BEV_EVENT_EOF))
        return;
    c->peer_eof = true;
    bufferevent_disable(bev, EV_READ);
    switch (c->state) {
    case CONN_READING:
        process_input(c);
        return;
    case CONN_TUNNEL:
        start_drain(c);
        return;
    case CONN_HOLDING:
        conn_close(c);
        return;
    case CONN_DRAINING:
        if (c->fin_sent)
            conn_close(c);
        return;
    case CONN_DELAYED:
    case CONN_STREAMING:
        /* Finish the response; the input left is answered, then the connection closes. */
        return;
    }
}

static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    c->state = CONN_READING;
    c->req.delay_done = true;
    if (respond_dispatch(c) == -1)
        return;
    if (c->state != CONN_READING)
        return;
    if (request_done(c) == -1)
        return;
    process_input(c);
}

void
conn_delay(struct conn *c, uint64_t ms)
{
    if (c->timer == NULL)
        c->timer = evtimer_new(c->o->base, on_timer, c);
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
    c->state = CONN_DELAYED;
}

int
conn_tunnel(struct conn *c)
{
    c->state = CONN_TUNNEL;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    if (evbuffer_get_length(in) > 0)
        on_read(c->bev, c);
    if (c->peer_eof)
        return start_drain(c);
    return 0;
}

struct conn *
conn_create(struct origin *o, evutil_socket_t fd)
{
    init_settings();

    struct conn *c = xcalloc(1, sizeof(*c));
    c->o = o;
    if (o->tls != NULL) {
        /* The handshake runs inside the bufferevent; BEV_EVENT_CONNECTED says it is done. The
         * bufferevent owns the SSL and the socket. */
        SSL *ssl = SSL_new(o->tls);
        if (ssl != NULL)
            c->bev = bufferevent_openssl_socket_new(o->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                    BEV_OPT_CLOSE_ON_FREE);
        if (c->bev != NULL)
            bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    } else {
        c->bev = bufferevent_socket_new(o->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (c->bev == NULL) {
        /* Only fails on allocation failure inside libevent or OpenSSL. */
        fprintf(stderr, "origin: cannot make a bufferevent for a connection\n");
        abort();
    }
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;
    req_reset(&c->req);

    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, CONN_OUT_HIGH_BYTES);
    bufferevent_setwatermark(c->bev, EV_WRITE, CONN_OUT_LOW_BYTES, 0);
    bufferevent_set_max_single_read(c->bev, 128 * 1024);
    bufferevent_set_max_single_write(c->bev, 256 * 1024);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);

    c->next = o->conns;
    if (o->conns != NULL)
        o->conns->prev = c;
    o->conns = c;
    o->conns_accepted++;
    o->conns_open++;
    return c;
}

void
conn_close(struct conn *c)
{
    struct origin *o = c->o;

    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        o->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    o->conns_open--;

    if (c->timer != NULL)
        event_free(c->timer);
    bufferevent_free(c->bev);
    free(c->req.arena);
    free(c->req.hdrs);
    free(c);
}

void
conn_close_all(struct origin *o)
{
    while (o->conns != NULL)
        conn_close(o->conns);
}
