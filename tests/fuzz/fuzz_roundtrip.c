/* tests/fuzz/fuzz_roundtrip.c — fuzz target for what the proxy forwards. Requests: parse the
 * client's bytes with reqframe, write each accepted request as client.c and relay.c do
 * (http_write_request with the same arguments, the body re-chunked or passed through), then
 * parse the forwarded bytes again with reqframe: the upstream must see the same requests — same
 * method, target, body framing and body bytes, none more, none refused — and a request refused on
 * the first parse is never forwarded. Responses likewise: respframe, http_write_response as
 * relay.c's head op does, re-parsed with respframe: same status, same body. */
#define FUZZ_NAME "fuzz_roundtrip"
#include "proxy/reqframe.h"
#include "proxy/respframe.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "fuzz_util.h"

/* Input layout: byte 0 bit 0 chooses responses over requests; for responses bit 1 a HEAD
 * request, bit 2 an HTTP/1.0 client, bit 3 an upgrade request; byte 1 the cuts; the rest is what
 * the client (or the upstream) sends. */
#define CONF_BYTES 2
#define MAX_MSGS 256 /* messages recorded; more are counted, not compared */

/* As proxy/client.h's PREVIEW_TOKEN_HEADER and the default routing.preview.header. */
#define PREVIEW_HEADER "X-Switchyard-Pool"
#define PREVIEW_TOKEN "X-Switchyard-Token"

/* What one side saw of one message. */
struct msg {
    char method[24];
    uint64_t target_hash;
    int status;
    bool chunked;
    bool has_body;
    bool complete;
    uint64_t body_len;
    uint64_t body_hash;
};

struct side {
    struct msg m[MAX_MSGS + 1]; /* the last one takes every message after MAX_MSGS */
    unsigned n;                 /* begun */
    bool error;
    int status;
};

/* The message being parsed. */
static struct msg *
cur(struct side *s)
{
    return &s->m[s->n - 1 < MAX_MSGS ? s->n - 1 : MAX_MSGS];
}

/* --- requests --- */

struct req_run {
    struct reqframe f;
    struct side side;
    struct http_buf out; /* owned: the forwarded bytes (first parse only) */
    bool forward;
    bool stop; /* after an upgrade request or a request without keep-alive */
};

static int
rq_begin(void *arg)
{
    struct req_run *r = arg;
    r->side.n++;
    memset(cur(&r->side), 0, sizeof(struct msg));
    cur(&r->side)->body_hash = FNV_START;
    return 0;
}

static int
rq_head(void *arg)
{
    struct req_run *r = arg;
    const struct http_head *h = &r->f.head;
    struct msg *m = cur(&r->side);
    snprintf(m->method, sizeof(m->method), "%s", reqframe_method(&r->f));
    m->target_hash = fuzz_hash(FNV_START, h->buf + h->url_off, h->url_len);
    m->chunked = r->f.chunked;
    m->has_body = r->f.has_body;
    if (r->forward) {
        /* relay_attach(): the request head as sent upstream. */
        struct http_request_out o = {
            .method = reqframe_method(&r->f),
            .client_ip = "192.0.2.1",
            .proto = "http",
            .request_id = "0123456789abcdef0123456789abcdef",
            .strip = PREVIEW_HEADER,
            .strip2 = PREVIEW_TOKEN,
            .upgrade = r->f.upgrade,
            .chunked = r->f.chunked,
        };
        http_write_request(&r->out, h, &o);
    }
    return 0;
}

static int
rq_body(void *arg, const char *at, size_t len)
{
    struct req_run *r = arg;
    struct msg *m = cur(&r->side);
    m->body_len += len;
    m->body_hash = fuzz_hash(m->body_hash, at, len);
    if (r->forward)
        http_buf_add_body(&r->out, at, len, r->f.chunked);
    return 0;
}

static void
rq_complete(void *arg)
{
    struct req_run *r = arg;
    cur(&r->side)->complete = true;
    if (r->forward && r->f.chunked)
        http_buf_add(&r->out, "0\r\n\r\n", 5);
}

static const struct reqframe_ops rq_ops = {
    .begin = rq_begin,
    .head = rq_head,
    .body = rq_body,
    .complete = rq_complete,
};

/* Feeds data as client.c does: one request at a time, stopping where the proxy would stop
 * reading HTTP (an error, an upgrade, a request that does not keep the connection). */
static void
rq_feed(struct req_run *r, const char *data, size_t len, struct cutter *c,
        const struct reqframe_limits *lim)
{
    reqframe_init(&r->f, &rq_ops, r);
    reqframe_set_limits(&r->f, lim);
    size_t off = 0, end = 0;
    while (off < len && !r->stop) {
        if (off == end) {
            size_t step = c ? cutter_next(c) : len;
            end = step >= len - off ? len : off + step;
        }
        size_t used = 0;
        enum reqframe_result res = reqframe_execute(&r->f, data + off, end - off, &used);
        off += used;
        if (res == REQFRAME_ERROR) {
            r->side.error = true;
            r->side.status = r->f.status;
            return;
        }
        if (res == REQFRAME_PAUSED) {
            if (r->f.upgrade || !r->f.keepalive)
                r->stop = true; /* a tunnel, or the connection closes after the response */
            else
                reqframe_resume(&r->f);
        }
    }
}

static void
requests(const char *data, size_t len, uint8_t c1)
{
    static struct req_run first, second;
    memset(&first, 0, sizeof(first));
    memset(&second, 0, sizeof(second));
    first.forward = true;
    const struct reqframe_limits client_lim = {
        .max_header_bytes = 32 * 1024, .max_headers = 100, .max_uri_bytes = 8 * 1024};
    struct cutter c = cutter_make(c1, len);
    rq_feed(&first, data, len, (c1 >> 3) & 1 ? &c : NULL, &client_lim);

    /* The upstream's view: a server with room for what the proxy adds to each head. */
    const struct reqframe_limits server_lim = {
        .max_header_bytes = 256 * 1024, .max_headers = 1000, .max_uri_bytes = 64 * 1024};
    rq_feed(&second, first.out.p, first.out.len, NULL, &server_lim);

    /* Forwarded: the requests whose head was accepted, in full or up to where the client's
     * bytes stopped — never a refused one (a head error forwards nothing of that request). */
    unsigned forwarded = first.side.n;
    if (forwarded > MAX_MSGS) {
        /* Too many to compare one by one (only the count is checked). */
        CHECK(!second.side.error);
        CHECK(second.side.n == forwarded || second.side.n + 1 == forwarded);
        goto done;
    }
    if (forwarded > 0 && first.side.m[forwarded - 1].method[0] == '\0')
        forwarded--; /* refused before or at its head, or its head is incomplete */
    if (second.side.error) {
        fprintf(stderr, "the upstream refuses the forwarded bytes with %d:\n%.*s\n",
                second.side.status, (int)first.out.len, first.out.p);
        fuzz_fail("forwarded bytes do not parse", __LINE__);
    }
    CHECK(second.side.n == forwarded);
    for (unsigned i = 0; i < forwarded; i++) {
        const struct msg *a = &first.side.m[i], *b = &second.side.m[i];
        CHECK(strcmp(a->method, b->method) == 0);
        CHECK(a->target_hash == b->target_hash);
        CHECK(a->chunked == b->chunked);
        CHECK(a->has_body == b->has_body);
        CHECK(a->complete == b->complete);
        CHECK(a->body_len == b->body_len);
        CHECK(a->body_hash == b->body_hash);
    }
done:
    reqframe_finish(&first.f);
    reqframe_finish(&second.f);
    http_buf_finish(&first.out);
}

/* --- responses --- */

struct resp_run {
    llhttp_t parser;
    char last_byte; /* beside the parser, for respframe_bind */
    struct http_head head;
    struct side side;
    bool head_request, upgrade_request, http10;
    bool forward;
    enum http_body out_body; /* towards the client */
    struct http_buf out;     /* owned: what the client gets (first parse only) */
    bool done, eof_complete;
};

static struct msg *
rs_msg(struct resp_run *r)
{
    r->side.n++;
    struct msg *m = cur(&r->side);
    memset(m, 0, sizeof(*m));
    m->body_hash = FNV_START;
    return m;
}

static void
rs_interim(void *arg, const struct respframe *f)
{
    struct resp_run *r = arg;
    struct msg *m = rs_msg(r);
    m->status = f->status;
    m->complete = true;
    if (r->forward && !r->http10) {
        struct http_response_out o = {.status = f->status, .body = HTTP_BODY_NONE};
        http_write_response(&r->out, &r->head, &o);
    }
}

static int
rs_head(void *arg, const struct respframe *f)
{
    struct resp_run *r = arg;
    struct msg *m = rs_msg(r);
    m->status = f->status;
    m->has_body = f->body != RESPFRAME_BODY_NONE;
    if (!r->forward)
        return 0;
    /* relay.c's on_head, for a client that keeps its connection. */
    if (f->status == 101) {
        struct http_response_out o = {
            .status = 101, .body = HTTP_BODY_NONE, .conn = HTTP_CONN_UPGRADE};
        http_write_response(&r->out, &r->head, &o);
        return 0;
    }
    enum http_body body = HTTP_BODY_NONE;
    if (f->body == RESPFRAME_BODY_LENGTH)
        body = HTTP_BODY_LENGTH;
    else if (f->body != RESPFRAME_BODY_NONE)
        body = r->http10 ? HTTP_BODY_CLOSE : HTTP_BODY_CHUNKED;
    r->out_body = body;
    enum http_conn conn = HTTP_CONN_DEFAULT;
    if (body == HTTP_BODY_CLOSE)
        conn = HTTP_CONN_CLOSE;
    else if (r->http10)
        conn = HTTP_CONN_KEEPALIVE;
    struct http_response_out o = {
        .status = f->status,
        .body = body,
        .upstream_te = f->chunked,
        .conn = conn,
        .set_cookie = "sy_bucket=42; Path=/; Max-Age=86400; HttpOnly",
    };
    http_write_response(&r->out, &r->head, &o);
    return 0;
}

static void
rs_body(void *arg, const char *at, size_t len)
{
    struct resp_run *r = arg;
    struct msg *m = cur(&r->side);
    m->body_len += len;
    m->body_hash = fuzz_hash(m->body_hash, at, len);
    if (r->forward)
        http_buf_add_body(&r->out, at, len, r->out_body == HTTP_BODY_CHUNKED);
}

static void
rs_complete(void *arg, const struct respframe *f)
{
    struct resp_run *r = arg;
    cur(&r->side)->complete = true;
    if (r->forward && r->out_body == HTTP_BODY_CHUNKED)
        http_buf_add(&r->out, "0\r\n\r\n", 5);
}

static const struct respframe_ops rs_ops = {
    .interim = rs_interim,
    .head = rs_head,
    .body = rs_body,
    .complete = rs_complete,
};

static void
rs_feed(struct resp_run *r, const char *data, size_t len, struct cutter *c, size_t max_head)
{
    http_head_init(&r->head, max_head, 1000 * (uint32_t)(max_head / (64 * 1024)), 0);
    respframe_start(&r->parser);
    size_t off = 0;
    while (off < len) {
        size_t n = c ? cutter_next(c) : len - off;
        if (n > len - off)
            n = len - off;
        struct respframe f;
        respframe_bind(&f, &r->parser, &r->last_byte, &r->head, &rs_ops, r);
        f.head_request = r->head_request;
        f.upgrade_request = r->upgrade_request;
        size_t used = 0;
        enum respframe_result res = respframe_execute(&f, data + off, n, &used);
        respframe_unbind(&f);
        off += used;
        if (res == RESPFRAME_ERROR) {
            r->side.error = true;
            return;
        }
        if (res != RESPFRAME_OK) {
            r->done = true;
            return;
        }
    }
    struct respframe f;
    respframe_bind(&f, &r->parser, &r->last_byte, &r->head, &rs_ops, r);
    f.head_request = r->head_request;
    f.upgrade_request = r->upgrade_request;
    respframe_eof(&f);
    respframe_unbind(&f);
}

static void
responses(const char *data, size_t len, uint8_t c0, uint8_t c1)
{
    static struct resp_run first, second;
    memset(&first, 0, sizeof(first));
    memset(&second, 0, sizeof(second));
    first.forward = true;
    first.head_request = second.head_request = (c0 >> 1) & 1;
    first.http10 = (c0 >> 2) & 1;
    first.upgrade_request = second.upgrade_request = (c0 >> 3) & 1;
    struct cutter c = cutter_make(c1, len);
    rs_feed(&first, data, len, (c1 >> 3) & 1 ? &c : NULL, 64 * 1024); /* relay.c's limits */
    /* The client parses what it got; it sees the EOF after a close-delimited body. */
    rs_feed(&second, first.out.p, first.out.len, NULL, 256 * 1024);

    /* What was relayed: the interim responses (to HTTP/1.1 clients) and the final one once
     * its head was accepted, even when the upstream then failed. */
    if (first.side.n > MAX_MSGS)
        goto done; /* too many interim responses to compare one by one */
    unsigned relayed = 0;
    for (unsigned i = 0; i < first.side.n; i++)
        if (first.side.m[i].status >= 200 || first.side.m[i].status == 101 || !first.http10)
            relayed++;
    CHECK(second.side.n == relayed);
    unsigned j = 0;
    for (unsigned i = 0; i < first.side.n; i++) {
        const struct msg *a = &first.side.m[i];
        if (a->status < 200 && a->status != 101 && first.http10)
            continue;
        const struct msg *b = &second.side.m[j++];
        CHECK(a->status == b->status);
        CHECK(a->has_body == b->has_body);
        CHECK(a->body_len == b->body_len);
        CHECK(a->body_hash == b->body_hash);
        /* A response the upstream cut short must not look complete to the client, and a
         * complete one must be complete for the client. */
        if (a->complete)
            CHECK(b->complete);
        else /* cut by an error or the upstream's EOF: an HTTP/1.0 client cannot tell */
            CHECK(!b->complete || first.out_body == HTTP_BODY_CLOSE);
    }
done:
    CHECK(!second.side.error || first.side.error);
    http_head_finish(&first.head);
    http_head_finish(&second.head);
    http_buf_finish(&first.out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t c0 = size > 0 ? data[0] : 0;
    uint8_t c1 = size > 1 ? data[1] : 0;
    const char *body = (const char *)data + (size > CONF_BYTES ? CONF_BYTES : size);
    size_t len = size > CONF_BYTES ? size - CONF_BYTES : 0;
    if (c0 & 1)
        responses(body, len, c0, c1);
    else
        requests(body, len, c1);
    return 0;
}
