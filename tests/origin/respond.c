/* tests/origin/respond.c — the test origin's answers (see tests/origin/README.md): routes,
 * query parameters, response heads, JSON bodies and /bytes bodies generated as the socket
 * drains. */
#include "tests/origin/respond.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "conf/xalloc.h"
#include "tests/origin/query.h"

#define MAX_BODY_N (UINT64_C(1) << 50) /* /bytes/N upper bound */
/* Generated bodies are references into `pattern` (no copy); below this a piece is copied so
 * tiny chunks do not cost one buffer chain each. */
#define PATTERN_SPAN (64u * 1024u)
#define MIN_REFERENCE_BYTES 1024u

/* pattern[i] = 'a' + i % 26, so body byte `off` onwards is pattern + off % 26. */
static char pattern[PATTERN_SPAN + 26];
/* "hello from <pool>/<name>\n", built on first use. */
static char *hello_body;
static size_t hello_len;

enum framing {
    FRAME_LENGTH = 0, /* Content-Length */
    FRAME_CHUNKED,    /* Transfer-Encoding: chunked */
    FRAME_NONE,       /* no length: no body (1xx/204/304) or close-delimited */
};

static const struct {
    int status;
    const char *text;
} reasons[] = {
    {100, "Continue"},
    {102, "Processing"},
    {103, "Early Hints"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {204, "No Content"},
    {206, "Partial Content"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
};

static const char *
reason(int status)
{
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (reasons[i].status == status)
            return reasons[i].text;
    return "Status";
}

static bool
bodiless_status(int status)
{
    return status < 200 || status == 204 || status == 304;
}

static bool
is_head(const struct conn *c)
{
    return c->req.method == HTTP_HEAD;
}

static bool
is_http11(const struct conn *c)
{
    return c->req.http_major > 1 || (c->req.http_major == 1 && c->req.http_minor >= 1);
}

static void
init_once(const struct origin *o)
{
    if (hello_body != NULL)
        return;
    for (size_t i = 0; i < sizeof(pattern); i++)
        pattern[i] = (char)('a' + i % 26);
    size_t n = strlen(o->pool) + strlen(o->name) + sizeof("hello from /\n");
    hello_body = xmalloc(n);
    hello_len = (size_t)snprintf(hello_body, n, "hello from %s/%s\n", o->pool, o->name);
}

/* One access-log line; status 0 means the request gets no HTTP answer. */
static void
log_answer(const struct conn *c, int status)
{
    const struct req *r = &c->req;
    if (c->o->quiet)
        return;
    if (!r->headers_done) {
        origin_log(c->o, "unparsed request -> %d", status);
        return;
    }
    origin_log(c->o, "%s %.*s HTTP/%u.%u -> %d", llhttp_method_name(r->method), (int)r->target_len,
               r->arena + r->target_off, r->http_major, r->http_minor, status);
}

/* Over TLS, the server name the client sent (conn_sni()), so a test can see what a proxy sends. */
static void
put_sni(const struct conn *c, struct evbuffer *out)
{
    const char *sni = conn_sni(c);
    if (sni != NULL)
        evbuffer_add_printf(out, "X-Origin-SNI: %s\r\n", sni);
}

/* Status line, origin headers, framing, Connection, the hdr= headers and the blank line. */
static void
put_head(struct conn *c, int status, const char *ctype, enum framing fr, uint64_t len,
         struct query *q)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    const struct origin *o = c->o;

    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nX-Origin-Pool: %s\r\nX-Origin-Server: %s\r\n",
                        status, reason(status), o->pool, o->name);
    put_sni(c, out);
    if (ctype != NULL)
        evbuffer_add_printf(out, "Content-Type: %s\r\n", ctype);
    if (fr == FRAME_LENGTH)
        evbuffer_add_printf(out, "Content-Length: %" PRIu64 "\r\n", len);
    else if (fr == FRAME_CHUNKED)
        evbuffer_add(out, "Transfer-Encoding: chunked\r\n", 28);
    if (c->close_after && !(q != NULL && q->extra_close))
        evbuffer_add(out, "Connection: close\r\n", 19);
    else if (!is_http11(c))
        evbuffer_add(out, "Connection: keep-alive\r\n", 24);
    if (q != NULL && q->extra != NULL)
        evbuffer_add_buffer(out, q->extra);
    evbuffer_add(out, "\r\n", 2);
    log_answer(c, status);
}

/* A whole response with an in-memory body (omitted for HEAD and bodiless statuses). */
static void
put_simple(struct conn *c, int status, const char *ctype, const void *body, size_t len,
           struct query *q)
{
    if (bodiless_status(status)) {
        put_head(c, status, NULL, FRAME_NONE, 0, q);
        return;
    }
    put_head(c, status, ctype, FRAME_LENGTH, len, q);
    if (!is_head(c))
        evbuffer_add(bufferevent_get_output(c->bev), body, len);
}

/* Same with a body built in an evbuffer (consumed). */
static void
put_buffer(struct conn *c, int status, const char *ctype, struct evbuffer *body, struct query *q)
{
    if (bodiless_status(status)) {
        put_head(c, status, NULL, FRAME_NONE, 0, q);
        return;
    }
    put_head(c, status, ctype, FRAME_LENGTH, evbuffer_get_length(body), q);
    if (!is_head(c))
        evbuffer_add_buffer(bufferevent_get_output(c->bev), body);
}

void
respond_error(struct conn *c, int status, const char *why)
{
    init_once(c->o);
    c->close_after = true;
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "%d %s: %s\n", status, reason(status), why);
    put_buffer(c, status, "text/plain", b, NULL);
    evbuffer_free(b);
}

/* Length of the valid UTF-8 sequence at s (n > 0 bytes available), 0 if invalid. */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
    size_t len;
    uint32_t cp, min;
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2, cp = s[0] & 0x1fu, min = 0x80;
    } else if ((s[0] & 0xf0) == 0xe0) {
        len = 3, cp = s[0] & 0x0fu, min = 0x800;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4, cp = s[0] & 0x07u, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* A JSON string of the bytes s[0..n): valid UTF-8 passes through, other bytes >= 0x80 are
 * written as \u00XX (read as Latin-1). */
static void
json_str(struct evbuffer *b, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, run = 0;
    evbuffer_add(b, "\"", 1);
    while (i < n) {
        unsigned char ch = s[i];
        size_t k = 1;
        bool esc = ch == '"' || ch == '\\' || ch < 0x20 || ch == 0x7f;
        if (ch >= 0x80) {
            k = utf8_seq(s + i, n - i);
            esc = k == 0;
        }
        if (!esc) {
            i += k;
            continue;
        }
        evbuffer_add(b, s + run, i - run);
        switch (ch) {
        case '"':
            evbuffer_add(b, "\\\"", 2);
            break;
        case '\\':
            evbuffer_add(b, "\\\\", 2);
            break;
        case '\n':
            evbuffer_add(b, "\\n", 2);
            break;
        case '\r':
            evbuffer_add(b, "\\r", 2);
            break;
        case '\t':
            evbuffer_add(b, "\\t", 2);
            break;
        default:
            evbuffer_add_printf(b, "\\u%04x", ch);
            break;
        }
        run = ++i;
    }
    evbuffer_add(b, s + run, i - run);
    evbuffer_add(b, "\"", 1);
}

static void
do_echo(struct conn *c, struct query *q)
{
    const struct req *r = &c->req;
    const struct origin *o = c->o;
    struct evbuffer *b = evbuffer_new();

    evbuffer_add(b, "{\"pool\":", 8);
    json_str(b, o->pool, strlen(o->pool));
    evbuffer_add(b, ",\"server\":", 10);
    json_str(b, o->name, strlen(o->name));
    evbuffer_add(b, ",\"method\":", 10);
    const char *m = llhttp_method_name(r->method);
    json_str(b, m, strlen(m));
    evbuffer_add(b, ",\"target\":", 10);
    json_str(b, r->arena + r->target_off, r->target_len);
    evbuffer_add_printf(b, ",\"version\":\"%u.%u\",\"headers\":[", r->http_major, r->http_minor);
    for (size_t i = 0; i < r->n_hdrs; i++) {
        const struct hdr_span *h = &r->hdrs[i];
        evbuffer_add(b, i ? ",[" : "[", i ? 2 : 1);
        json_str(b, r->arena + h->name_off, h->name_len);
        evbuffer_add(b, ",", 1);
        json_str(b, r->arena + h->value_off, h->value_len);
        evbuffer_add(b, "]", 1);
    }
    evbuffer_add_printf(b, "],\"body_bytes\":%" PRIu64 ",\"body_fnv1a\":\"%016" PRIx64 "\"}",
                        r->body_bytes, r->body_fnv1a);
    put_buffer(c, 200, "application/json", b, q);
    evbuffer_free(b);
}

static void
do_status(struct conn *c, const char *digits, size_t n, struct query *q)
{
    uint64_t status;
    if (query_parse_uint(digits, n, 999, &status) == -1 || status < 100 || status > 599 ||
        status == 101) {
        static const char msg[] = "status wants 100-599 (not 101)\n";
        put_simple(c, 400, "text/plain", msg, sizeof(msg) - 1, q);
        return;
    }
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "status %d from %s/%s\n", (int)status, c->o->pool, c->o->name);
    put_buffer(c, (int)status, "text/plain", b, q);
    evbuffer_free(b);
}

static void
do_bytes(struct conn *c, const char *digits, size_t n, struct query *q)
{
    uint64_t len;
    if (query_parse_uint(digits, n, MAX_BODY_N, &len) == -1) {
        static const char msg[] = "bytes wants a byte count\n";
        put_simple(c, 400, "text/plain", msg, sizeof(msg) - 1, q);
        return;
    }
    struct stream *s = &c->stream;
    s->left = len;
    s->offset = 0;
    s->chunk_left = 0;
    s->chunk_bytes = q->chunk_bytes;
    s->chunked = false;
    enum framing fr = FRAME_LENGTH;
    if (q->close) {
        c->close_after = true;
        fr = FRAME_NONE;
    } else if (q->chunked && is_http11(c)) {
        fr = FRAME_CHUNKED;
        s->chunked = true;
    }
    put_head(c, 200, "application/octet-stream", fr, len, q);
    if (is_head(c))
        return;
    c->state = CONN_STREAMING;
    if (respond_stream_fill(c) == 1)
        c->state = CONN_READING;
}

int
respond_stream_fill(struct conn *c)
{
    struct stream *s = &c->stream;
    struct evbuffer *out = bufferevent_get_output(c->bev);

    while (s->left > 0 && evbuffer_get_length(out) < CONN_OUT_HIGH_BYTES) {
        if (s->chunked && s->chunk_left == 0) {
            s->chunk_left = s->chunk_bytes < s->left ? s->chunk_bytes : s->left;
            evbuffer_add_printf(out, "%" PRIx64 "\r\n", s->chunk_left);
        }
        uint64_t n = s->left;
        if (s->chunked && n > s->chunk_left)
            n = s->chunk_left;
        if (n > PATTERN_SPAN)
            n = PATTERN_SPAN;
        const char *from = pattern + s->offset % 26;
        if (n >= MIN_REFERENCE_BYTES)
            evbuffer_add_reference(out, from, (size_t)n, NULL, NULL);
        else
            evbuffer_add(out, from, (size_t)n);
        s->offset += n;
        s->left -= n;
        if (s->chunked) {
            s->chunk_left -= n;
            if (s->chunk_left == 0)
                evbuffer_add(out, "\r\n", 2);
        }
    }
    if (s->left > 0)
        return 0;
    if (s->chunked) {
        evbuffer_add(out, "0\r\n\r\n", 5);
        s->chunked = false;
    }
    return 1;
}

/* /_origin/stats; with TLS also the completed handshakes, in all and by SNI. */
static void
do_stats(struct conn *c, struct query *q)
{
    const struct origin *o = c->o;
    struct evbuffer *b = evbuffer_new();

    evbuffer_add_printf(b,
                        "{\"requests\":%" PRIu64 ",\"connections_accepted\":%" PRIu64
                        ",\"connections_open\":%" PRIu64,
                        o->requests, o->conns_accepted, o->conns_open);
    if (o->tls != NULL) {
        evbuffer_add_printf(b,
                            ",\"tls_handshakes\":%" PRIu64 ",\"tls_resumed\":%" PRIu64 ",\"sni\":{",
                            o->tls_handshakes, o->tls_resumed);
        for (size_t i = 0; i < o->nsni; i++) {
            if (i > 0)
                evbuffer_add(b, ",", 1);
            json_str(b, o->sni[i].name, strlen(o->sni[i].name));
            evbuffer_add_printf(b, ":%" PRIu64, o->sni[i].handshakes);
        }
        evbuffer_add(b, "}", 1);
    }
    evbuffer_add(b, "}", 1);
    put_buffer(c, 200, "application/json", b, q);
    evbuffer_free(b);
}

/* 101 and the byte tunnel. Returns -1 if c was closed. */
static int
do_upgrade(struct conn *c, struct query *q)
{
    const struct req *r = &c->req;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    const char *proto = "websocket";
    size_t proto_len = 9;
    for (size_t i = 0; i < r->n_hdrs; i++) {
        const struct hdr_span *h = &r->hdrs[i];
        if (h->name_len == 7 && strncasecmp(r->arena + h->name_off, "upgrade", 7) == 0) {
            proto = r->arena + h->value_off;
            proto_len = h->value_len;
            break;
        }
    }
    evbuffer_add(out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: ", 43);
    evbuffer_add(out, proto, proto_len);
    evbuffer_add_printf(out,
                        "\r\nConnection: Upgrade\r\nX-Origin-Pool: %s\r\nX-Origin-Server: %s\r\n",
                        c->o->pool, c->o->name);
    put_sni(c, out);
    if (q->extra != NULL)
        evbuffer_add_buffer(out, q->extra);
    evbuffer_add(out, "\r\n", 2);
    log_answer(c, 101);
    return conn_tunnel(c);
}

static bool
path_is(const char *p, size_t n, const char *s)
{
    return n == strlen(s) && memcmp(p, s, n) == 0;
}

static bool
path_under(const char *p, size_t n, const char *prefix)
{
    size_t l = strlen(prefix);
    return n >= l && memcmp(p, prefix, l) == 0;
}

/* Routes the request; the response is queued or an async state started. Returns -1 if c was
 * closed. */
static int
route(struct conn *c, const char *path, size_t pn, struct query *q)
{
    struct origin *o = c->o;
    struct evbuffer *out = bufferevent_get_output(c->bev);

    if (path_under(path, pn, "/status/")) {
        do_status(c, path + 8, pn - 8, q);
    } else if (path_under(path, pn, "/bytes/")) {
        do_bytes(c, path + 7, pn - 7, q);
    } else if (path_is(path, pn, "/echo")) {
        do_echo(c, q);
    } else if (path_is(path, pn, "/hold")) {
        log_answer(c, 0);
        if (c->peer_eof) {
            conn_close(c);
            return -1;
        }
        c->state = CONN_HOLDING;
        evbuffer_drain(bufferevent_get_input(c->bev), (size_t)-1);
    } else if (path_is(path, pn, "/close")) {
        log_answer(c, 0);
        conn_close(c);
        return -1;
    } else if (path_is(path, pn, "/close-mid")) {
        c->close_after = true;
        put_head(c, 200, "text/plain", FRAME_LENGTH, 1000, q);
        if (!is_head(c))
            evbuffer_add(out, pattern, 10);
    } else if (path_is(path, pn, "/garbage")) {
        log_answer(c, 0);
        c->close_after = true;
        evbuffer_add(out, "this is not http\r\n\r\n", 20);
    } else if (path_is(path, pn, "/health")) {
        if (o->healthy)
            put_simple(c, 200, "text/plain", "ok", 2, q);
        else
            put_simple(c, 503, "text/plain", "down", 4, q);
    } else if (path_is(path, pn, "/_origin/health/up")) {
        o->healthy = true;
        put_simple(c, 200, "text/plain", "health up\n", 10, q);
    } else if (path_is(path, pn, "/_origin/health/down")) {
        o->healthy = false;
        put_simple(c, 200, "text/plain", "health down\n", 12, q);
    } else if (path_is(path, pn, "/_origin/stats")) {
        do_stats(c, q);
    } else if (path_is(path, pn, "/ws") && c->paused_upgrade && c->req.method != HTTP_CONNECT) {
        return do_upgrade(c, q);
    } else {
        put_simple(c, 200, "text/plain", hello_body, hello_len, q);
    }
    return 0;
}

int
respond_dispatch(struct conn *c)
{
    struct req *r = &c->req;
    struct query q;
    const char *path, *qs;
    size_t pn, qn;
    int rc = 0;

    init_once(c->o);
    query_split_target(r->arena + r->target_off, r->target_len, &path, &pn, &qs, &qn);
    query_parse(&q, qs, qn);
    if (q.bad != NULL) {
        put_simple(c, 400, "text/plain", q.bad, strlen(q.bad), NULL);
        goto out;
    }
    if (q.delay_ms > 0 && !r->delay_done) {
        conn_delay(c, q.delay_ms);
        goto out;
    }
    if (q.extra_close || r->method == HTTP_CONNECT)
        c->close_after = true;
    rc = route(c, path, pn, &q);
out:
    query_finish(&q);
    return rc;
}
