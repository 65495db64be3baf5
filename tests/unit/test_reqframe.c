/* tests/unit/test_reqframe.c — proxy/reqframe.c: every rejection with its status, whatever the
 * byte boundaries (whole, byte by byte, two pieces at every split), bodies, pipelining, upgrades,
 * and what the owner's ops return. */
#include "proxy/reqframe.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

#define R(s) (s), (sizeof(s) - 1)
#define H11 "GET / HTTP/1.1\r\nHost: a\r\n"

enum stage {
    ST_IDLE = 0,
    ST_BEGUN,
    ST_HEAD,
    ST_DONE,
};

/* Records what the framing reports, in order; the ops return what the test asks for. */
struct rec {
    struct reqframe f;
    enum stage stage;
    int order_errors; /* callbacks out of order */
    int nbegin, nhead, nbody, ncomplete;
    struct http_buf body;       /* body bytes of the current request */
    struct http_buf all_body;   /* body bytes of every completed request */
    struct http_buf transcript; /* heads and completed bodies, to compare across splits */
    /* What the ops return, and limits to apply from begin (as client.c does). */
    int begin_status, head_status, body_status;
    int body_status_after; /* body_status only once this many body bytes were seen */
    const struct reqframe_limits *begin_limits;
    /* The last head, as seen by ops->head. */
    char method[16];
    char url[64];
    bool http10, head_method, upgrade, chunked, has_body, keepalive;
};

static void
rec_add_num(struct http_buf *b, unsigned long long n)
{
    char s[32];
    int len = snprintf(s, sizeof(s), "%llu", n);
    http_buf_add(b, s, (size_t)len);
}

static int
on_begin(void *arg)
{
    struct rec *r = arg;
    if (r->stage != ST_IDLE && r->stage != ST_DONE)
        r->order_errors++;
    r->stage = ST_BEGUN;
    r->nbegin++;
    r->body.len = 0;
    if (r->begin_limits)
        reqframe_set_limits(&r->f, r->begin_limits);
    http_buf_adds(&r->transcript, "B\n");
    return r->begin_status;
}

static int
on_head(void *arg)
{
    struct rec *r = arg;
    const struct http_head *h = &r->f.head;
    if (r->stage != ST_BEGUN)
        r->order_errors++;
    r->stage = ST_HEAD;
    r->nhead++;
    snprintf(r->method, sizeof(r->method), "%s", reqframe_method(&r->f));
    snprintf(r->url, sizeof(r->url), "%.*s", (int)h->url_len, h->buf + h->url_off);
    r->http10 = r->f.http10;
    r->head_method = r->f.head_method;
    r->upgrade = r->f.upgrade;
    r->chunked = r->f.chunked;
    r->has_body = r->f.has_body;
    r->keepalive = r->f.keepalive;

    struct http_buf *t = &r->transcript;
    http_buf_adds(t, "H ");
    http_buf_adds(t, r->method);
    http_buf_adds(t, " ");
    http_buf_add(t, h->buf + h->url_off, h->url_len);
    char flags[16];
    snprintf(flags, sizeof(flags), " %d%d%d%d%d%d\n", r->http10, r->head_method, r->upgrade,
             r->chunked, r->has_body, r->keepalive);
    http_buf_adds(t, flags);
    for (uint32_t i = 0; i < h->nfields; i++) {
        const struct http_field *f = &h->fields[i];
        http_buf_adds(t, "  [");
        http_buf_add(t, http_field_name(h, f), f->name_len);
        http_buf_adds(t, "]=[");
        http_buf_add(t, http_field_value(h, f), f->value_len);
        http_buf_adds(t, "]\n");
    }
    return r->head_status;
}

static int
on_body(void *arg, const char *at, size_t len)
{
    struct rec *r = arg;
    if (r->stage != ST_HEAD)
        r->order_errors++;
    r->nbody++;
    http_buf_add(&r->body, at, len);
    if (r->body_status && r->body.len >= (size_t)r->body_status_after)
        return r->body_status;
    return 0;
}

static void
on_complete(void *arg)
{
    struct rec *r = arg;
    if (r->stage != ST_HEAD)
        r->order_errors++;
    r->stage = ST_DONE;
    r->ncomplete++;
    http_buf_add(&r->all_body, r->body.p ? r->body.p : "", r->body.len);
    http_buf_adds(&r->transcript, "C ");
    rec_add_num(&r->transcript, r->body.len);
    http_buf_adds(&r->transcript, " [");
    http_buf_add(&r->transcript, r->body.p ? r->body.p : "", r->body.len);
    http_buf_adds(&r->transcript, "]\n");
}

static const struct reqframe_ops ops = {
    .begin = on_begin,
    .head = on_head,
    .body = on_body,
    .complete = on_complete,
};

static void
rec_init(struct rec *r, const struct reqframe_limits *limits)
{
    memset(r, 0, sizeof(*r));
    reqframe_init(&r->f, &ops, r);
    if (limits)
        reqframe_set_limits(&r->f, limits);
}

static void
rec_finish(struct rec *r)
{
    reqframe_finish(&r->f);
    http_buf_finish(&r->body);
    http_buf_finish(&r->all_body);
    http_buf_finish(&r->transcript);
}

/* How the bytes arrive. */
struct mode {
    size_t step;  /* pieces of this many bytes; 0 = see split */
    size_t split; /* 0 = all at once, else two pieces: [0, split) and [split, len) */
};

static size_t
piece_end(const struct mode *m, size_t off, size_t len)
{
    if (m->step)
        return off + m->step < len ? off + m->step : len;
    if (m->split && off < m->split)
        return m->split;
    return len;
}

/* Feeds data as m says, resuming after each pause, until everything is used or an error.
 * After a pause the rest of the current piece is offered again. *npaused (may be NULL) counts
 * pauses; *bad counts broken contracts (used > len, or OK without using everything). */
static enum reqframe_result
feed(struct rec *r, const char *data, size_t len, const struct mode *m, int *npaused, int *bad)
{
    size_t off = 0, end = 0;
    int guard = 0;
    if (npaused)
        *npaused = 0;
    while (off < len) {
        if (off == end)
            end = piece_end(m, off, len);
        size_t n = end - off, used = (size_t)-1;
        enum reqframe_result res = reqframe_execute(&r->f, data + off, n, &used);
        if (used > n) {
            (*bad)++;
            return REQFRAME_ERROR;
        }
        off += used;
        if (res == REQFRAME_ERROR) {
            rec_add_num(&r->transcript, (unsigned long long)r->f.status);
            http_buf_adds(&r->transcript, " E\n");
            return res;
        }
        if (res == REQFRAME_PAUSED) {
            if (npaused)
                (*npaused)++;
            reqframe_resume(&r->f);
        } else if (used != n) {
            (*bad)++;
            return REQFRAME_ERROR;
        }
        if (++guard > 100000) {
            (*bad)++;
            return REQFRAME_ERROR;
        }
    }
    return REQFRAME_OK;
}

static const struct reqframe_limits default_limits = {
    .max_header_bytes = 32 * 1024, .max_headers = 100, .max_uri_bytes = 8 * 1024};

/* Runs data whole, byte by byte, and in two pieces at every split point; each run must end
 * with `want_status` (0 = success) and the same transcript as the whole run. Returns how many
 * runs disagreed (each reported with diag). When whole is given, the whole run's recorder is
 * left there for more checks (the caller finishes it). */
static int
runs(const char *data, size_t len, const struct reqframe_limits *limits, int want_status,
     struct rec *whole)
{
    struct rec first;
    struct mode m = {0, 0};
    int bad = 0;
    rec_init(&first, limits);
    enum reqframe_result res = feed(&first, data, len, &m, NULL, &bad);
    int got = res == REQFRAME_ERROR ? first.f.status : 0;
    if (got != want_status || first.order_errors) {
        diag("whole: status %d, want %d (%s), order errors %d", got, want_status,
             llhttp_get_error_reason(&first.f.parser), first.order_errors);
        bad++;
    }
    size_t total = len + 1;
    for (size_t i = 0; i < total && bad < 3; i++) {
        struct rec r;
        m = i == 0 ? (struct mode){1, 0} : (struct mode){0, i};
        if (m.split == len)
            continue;
        rec_init(&r, limits);
        int cbad = 0;
        res = feed(&r, data, len, &m, NULL, &cbad);
        got = res == REQFRAME_ERROR ? r.f.status : 0;
        bool same = r.transcript.len == first.transcript.len &&
                    (r.transcript.len == 0 ||
                     memcmp(r.transcript.p, first.transcript.p, r.transcript.len) == 0);
        if (cbad || got != want_status || !same || r.order_errors) {
            if (m.step)
                diag("byte by byte: status %d, want %d (%s)", got, want_status,
                     llhttp_get_error_reason(&r.f.parser));
            else
                diag("split at %zu: status %d, want %d (%s)", m.split, got, want_status,
                     llhttp_get_error_reason(&r.f.parser));
            if (!same)
                diag("transcript differs from the whole run:\n%.*s--- whole:\n%.*s",
                     (int)r.transcript.len, r.transcript.p, (int)first.transcript.len,
                     first.transcript.p);
            bad++;
        }
        rec_finish(&r);
    }
    if (whole)
        *whole = first;
    else
        rec_finish(&first);
    return bad;
}

static void
rejects(const char *what, const char *data, size_t len, int status)
{
    ok(runs(data, len, &default_limits, status, NULL) == 0, "%d: %s", status, what);
}

/* As rejects, and the owner saw nheads heads (at every split: the transcripts match). */
static void
rejects_after(const char *what, const char *data, size_t len, int status, int nheads)
{
    struct rec r;
    int bad = runs(data, len, &default_limits, status, &r);
    if (r.nhead != nheads)
        diag("%d heads reported, want %d", r.nhead, nheads);
    ok(bad == 0 && r.nhead == nheads, "%d after %d heads: %s", status, nheads, what);
    rec_finish(&r);
}

static void
rejects_lim(const char *what, const char *data, size_t len, const struct reqframe_limits *lim,
            int status)
{
    ok(runs(data, len, lim, status, NULL) == 0, "%d: %s", status, what);
}

static void
accepts(const char *what, const char *data, size_t len)
{
    ok(runs(data, len, &default_limits, 0, NULL) == 0, "ok: %s", what);
}

/* Runs data at every split and compares the whole run's transcript with want exactly: the
 * fields as reqframe hands them to the owner, byte for byte. */
static void
head_is(const char *what, const char *data, size_t len, const char *want)
{
    struct rec r;
    int bad = runs(data, len, &default_limits, 0, &r);
    size_t n = strlen(want);
    bool same = r.transcript.len == n && memcmp(r.transcript.p, want, n) == 0;
    if (!same)
        diag("transcript:\n%.*s--- want:\n%s", (int)r.transcript.len, r.transcript.p, want);
    ok(bad == 0 && same, "head: %s", what);
    rec_finish(&r);
}

/* ---- rejections ---- */

static void
test_framing_fields(void)
{
    rejects("Content-Length and Transfer-Encoding",
            R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"
              "\r\n3\r\nabc\r\n0\r\n\r\n"),
            400);
    rejects("Transfer-Encoding then Content-Length",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n"
              "\r\nabc"),
            400);
    rejects("duplicate differing Content-Length",
            R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
            400);
    rejects("duplicate identical Content-Length",
            R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
            400);
    rejects("Content-Length list '3, 3'",
            R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc"), 400);
    rejects("Content-Length '+3'", R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc"),
            400);
    rejects("Content-Length '-1'", R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\nabc"),
            400);
    rejects("Content-Length '0x3'",
            R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc"), 400);
    rejects("Content-Length overflow",
            R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\nabc"),
            400);
    rejects("Transfer-Encoding: gzip alone",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc"), 400);
    rejects("Transfer-Encoding: identity",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n"), 400);
    rejects("Transfer-Encoding: chunked, gzip (chunked not last)",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
              "3\r\nabc\r\n0\r\n\r\n"),
            400);
    rejects("Transfer-Encoding: xchunked",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n"
              "3\r\nabc\r\n0\r\n\r\n"),
            400);
    rejects("Transfer-Encoding: chunked then Transfer-Encoding: x",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n"
              "\r\n3\r\nabc\r\n0\r\n\r\n"),
            400);
    rejects("Transfer-Encoding: x then Transfer-Encoding: chunked (two fields)",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x\r\nTransfer-Encoding: chunked\r\n"
              "\r\n3\r\nabc\r\n0\r\n\r\n"),
            400);
    rejects("Transfer-Encoding: chunked twice",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
              "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
            400);
    rejects("Transfer-Encoding : chunked (space before colon)",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n"
              "3\r\nabc\r\n0\r\n\r\n"),
            400);
    rejects("HTTP/1.0 with Transfer-Encoding: chunked",
            R("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), 400);
    rejects("HTTP/1.0 with Transfer-Encoding: chunked and Host",
            R("POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400);

    /* An empty Transfer-Encoding sets no llhttp flag, yet the field is forwarded: with a
     * Content-Length beside it the upstream may frame the body differently. */
    rejects("empty Transfer-Encoding after Content-Length",
            R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding:\r\n\r\n"
              "hello"),
            400);
    rejects("empty Transfer-Encoding before Content-Length",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\nContent-Length: 5\r\n\r\n"
              "hello"),
            400);
    rejects("empty Transfer-Encoding alone", R(H11 "Transfer-Encoding:\r\n\r\n"), 400);
    rejects("empty Transfer-Encoding, HTTP/1.0", R("POST / HTTP/1.0\r\nTransfer-Encoding:\r\n\r\n"),
            400);
    rejects("Transfer-Encoding: ',' with Content-Length",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\nContent-Length: 5\r\n\r\n"
              "hello"),
            400);
    rejects("empty Content-Length", R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\nhello"),
            400);

    accepts("Transfer-Encoding: gzip, chunked",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
              "3\r\nabc\r\n0\r\n\r\n"));
    accepts("Transfer-Encoding:<TAB>chunked",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n"
              "3\r\nabc\r\n0\r\n\r\n"));
    accepts("Transfer-Encoding: CHUNKED",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n"
              "3\r\nabc\r\n0\r\n\r\n"));

    /* Chunk framing. */
    rejects("chunk size 0x5",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
              "0x5\r\nabcde\r\n0\r\n\r\n"),
            400);
    rejects("chunk size -1",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
              "-1\r\nabc\r\n0\r\n\r\n"),
            400);
    rejects("chunk size overflow",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
              "fffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
            400);
    rejects("chunk size with trailing space",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
              "3 \r\nabc\r\n0\r\n\r\n"),
            400);
    rejects("chunk longer than its size",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
              "3\r\nabcd\r\n0\r\n\r\n"),
            400);
    rejects("chunked body with bare LF",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
              "3\nabc\n0\n\n"),
            400);
    accepts("chunk extension", R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 "3;name=value\r\nabc\r\n0;last\r\n\r\n"));
}

static void
test_field_syntax(void)
{
    rejects("space inside a field name", R(H11 "Ho st: a\r\n\r\n"), 400);
    rejects("control byte in a field name", R(H11 "X-A\x01: b\r\n\r\n"), 400);
    rejects("'(' in a field name", R(H11 "X(A): b\r\n\r\n"), 400);
    rejects("non-ASCII byte in a field name", R(H11 "X\xe9: b\r\n\r\n"), 400);
    rejects("DEL in a field name", R(H11 "X\x7f: b\r\n\r\n"), 400);
    /* llhttp 8 reports an empty name as an empty piece: without a check, ": v" is forwarded. */
    rejects("empty field name (': v')", R("GET / HTTP/1.1\r\n: v\r\nHost: a\r\n\r\n"), 400);
    rejects("NUL in a field value", R(H11 "X-A: b\0c\r\n\r\n"), 400);
    rejects("bare CR in a field value", R(H11 "X-A: b\rc\r\n\r\n"), 400);
    rejects("DEL in a field value", R(H11 "X-A: b\x7f\r\n\r\n"), 400);
    rejects("bare LF line endings", R("GET / HTTP/1.1\nHost: a\nX-A: b\n\n"), 400);
    rejects("bare LF after one field", R("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"), 400);
    rejects("whitespace before the first field", R("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), 400);
    rejects("lowercase method", R("get / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    rejects("unknown method", R("FOO / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    rejects("space in the target", R("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    /* The request line: one SP between its parts and CRLF at its end (llhttp 8 takes more
     * spaces and a bare LF there; RFC 9112 §3 warns both can be smuggled). */
    /* llhttp 8 (strict) takes a bare LF as the last line of a chunked body, then parses what
     * follows as the next request: refused, however the bytes are cut. */
    rejects("chunked body ended by a bare LF, then a request",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n"
              "GET /x HTTP/1.1\r\nHost: a\r\n\r\n"),
            400);
    rejects("chunked body with a trailer ended by a bare LF",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n"
              "0\r\nT: v\r\n\n"),
            400);
    /* llhttp 8 (strict) takes a bare LF as the empty line ending a head, where a front parser
     * may read the next line as a header of the same request. */
    rejects_after("head ended by a bare LF, then a request",
                  R("GET / HTTP/1.1\r\nHost: a\r\n\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n"), 400, 0);
    rejects_after("head ended by a bare LF, with a body",
                  R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\nx"), 400, 0);
    rejects_after("head ended by a bare LF, chunked",
                  R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\n0\r\n\r\n"), 400,
                  0);
    rejects_after("HTTP/1.0 head without fields ended by a bare LF", R("GET / HTTP/1.0\r\n\n"), 400,
                  0);
    rejects_after("upgrade head ended by a bare LF",
                  R("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\n"),
                  400, 0);
    rejects_after("second pipelined head ended by a bare LF",
                  R("GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\n"), 400, 1);
    rejects("two spaces before the target", R("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    rejects("two spaces before the version", R("GET /  HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    rejects("bare LF after the request line", R("GET / HTTP/1.1\nHost: a\r\n\r\n"), 400);
    rejects("bare LF after an HTTP/1.0 request line", R("GET / HTTP/1.0\n\r\n"), 400);
    rejects("second pipelined request with two spaces",
            R("GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET  /b HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    rejects("second pipelined request with a bare LF",
            R("GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\nHost: a\r\n\r\n"), 400);
    accepts("empty lines, then a request line", R("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    accepts("an HTTP/1.0 request line alone", R("GET / HTTP/1.0\r\n\r\n"));
    accepts("obs-text (0x80-0xff) in a value", R(H11 "X-A: b\x80\xff"
                                                     "c\r\n\r\n"));
    accepts("empty value", R(H11 "X-Empty:\r\nX-B: 1\r\n\r\n"));

    /* Exact heads: names and values as sent (trailing blanks kept), every field separate. */
    head_is("fields after empty values stay separate",
            R("GET /p HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Blank: \r\nX-B: 1\r\n"
              "X-Tabs:\t\tv\t\r\nA:b\r\n\r\n"),
            "B\n"
            "H GET /p 000001\n"
            "  [Host]=[a]\n"
            "  [X-Empty]=[]\n"
            "  [X-Blank]=[]\n"
            "  [X-B]=[1]\n"
            "  [X-Tabs]=[v\t]\n"
            "  [A]=[b]\n"
            "C 0 []\n");
    head_is("empty value before a framing field",
            R("POST / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nContent-Length: 2\r\n\r\nhi"),
            "B\n"
            "H POST / 000011\n"
            "  [Host]=[a]\n"
            "  [X-Empty]=[]\n"
            "  [Content-Length]=[2]\n"
            "C 2 [hi]\n");
    head_is("HTTP/1.0, obs-text, empty last value",
            R("GET /x?y HTTP/1.0\r\nX-Bin: \x80\xfe\r\nX-Last:\r\n\r\n"),
            "B\n"
            "H GET /x?y 100000\n"
            "  [X-Bin]=[\x80\xfe]\n"
            "  [X-Last]=[]\n"
            "C 0 []\n");
}

static void
test_obs_fold(void)
{
    rejects("obs-fold with SP", R(H11 "X: a\r\n b\r\n\r\n"), 400);
    rejects("obs-fold with HTAB", R(H11 "X: a\r\n\tb\r\n\r\n"), 400);
    rejects("obs-fold after trailing space, several spaces", R(H11 "X: a \r\n   b\r\n\r\n"), 400);
    rejects("obs-fold of Host", R("GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n"), 400);
    rejects("obs-fold with an empty continuation", R(H11 "X: a\r\n \r\n\r\n"), 400);
    rejects("obs-fold of Transfer-Encoding",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip,\r\n chunked\r\n\r\n"
              "3\r\nabc\r\n0\r\n\r\n"),
            400);
    rejects("obs-fold in a trailer",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
              "3\r\nabc\r\n0\r\nT: a\r\n b\r\n\r\n"),
            400);
    /* llhttp reports no piece for the empty first line, so the fold is only seen from the
     * bytes before the continuation (it was accepted as "X: b" before 418d0d0). */
    rejects("obs-fold after an empty value", R(H11 "X:\r\n b\r\n\r\n"), 400);
    rejects("obs-fold after a whitespace-only value", R(H11 "X:  \r\n b\r\n\r\n"), 400);

    /* False positives: a rich request without any fold passes however it is cut, with the
     * same head as in one piece (runs() compares the transcripts). */
    accepts("no fold: long values, empty values, tabs, trailing spaces, many fields",
            R("POST /some/path?query=1&b=%20 HTTP/1.1\r\n"
              "Host: example.com:8080\r\n"
              "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\r\n"
              "Accept:\t*/*\t\r\n"
              "X-Empty:\r\n"
              "X-Spaces:   \r\n"
              "X-Tab-Inside: a\tb  c\r\n"
              "X-Trailing: v   \r\n"
              "a:b\r\n"
              "Cookie: a=1; b=2; c=3\r\n"
              "Content-Length: 11\r\n"
              "X-Last: z\r\n"
              "\r\n"
              "hello world"));
    accepts("no fold: chunked with trailers",
            R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
              "3\r\nabc\r\n0\r\nX-T: v\r\nX-U:\r\n\r\n"));
}

static void
test_host_expect_version_method(void)
{
    rejects("HTTP/1.1 without Host", R("GET / HTTP/1.1\r\nX: y\r\n\r\n"), 400);
    accepts("HTTP/1.0 without Host", R("GET / HTTP/1.0\r\n\r\n"));
    accepts("empty Host", R("GET / HTTP/1.1\r\nHost:\r\n\r\n"));
    rejects("two Host fields", R("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), 400);
    rejects("two Host fields, different case", R("GET / HTTP/1.1\r\nhost: a\r\nHOST: b\r\n\r\n"),
            400);
    rejects("HTTP/1.0 with two Host fields", R("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
            400);

    rejects("Expect: something-else", R(H11 "Expect: something-else\r\n\r\n"), 417);
    rejects("Expect: 100-continue twice",
            R(H11 "Expect: 100-continue\r\nExpect: 100-continue\r\n\r\n"), 417);
    accepts("Expect: 100-continue", R(H11 "Expect: 100-continue\r\n\r\n"));
    accepts("Expect: 100-CONTINUE", R(H11 "Expect: 100-CONTINUE\r\n\r\n"));
    /* RFC 9110 §5.5: trailing whitespace is not part of a field value (llhttp keeps it). */
    accepts("Expect: 100-continue with trailing whitespace",
            R(H11 "Expect: 100-continue \r\n\r\n"));

    rejects("HTTP/2.0", R("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
    rejects("HTTP/1.2", R("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), 505);
    rejects("HTTP/3.0", R("GET / HTTP/3.0\r\nHost: a\r\n\r\n"), 505);
    rejects("HTTP/0.9 version", R("GET / HTTP/0.9\r\nHost: a\r\n\r\n"), 505);
    rejects("HTTP/0.9-style request line (no version)", R("GET /\r\n\r\n"), 505);
    rejects("garbage version HTTP/x.y", R("GET / HTTP/x.y\r\nHost: a\r\n\r\n"), 505);
    rejects("HTTP/2 preface", R("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 400);

    rejects("CONNECT", R("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"), 405);
    rejects("CONNECT, HTTP/1.0", R("CONNECT a:443 HTTP/1.0\r\n\r\n"), 405);

    struct rec r;
    ok(runs(R("GET http://a.example/b?c HTTP/1.1\r\nHost: a.example\r\n\r\n"), &default_limits, 0,
            &r) == 0 &&
           strcmp(r.url, "http://a.example/b?c") == 0,
       "ok: absolute-form target kept as sent");
    rec_finish(&r);
    ok(runs(R("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), &default_limits, 0, &r) == 0 &&
           strcmp(r.url, "*") == 0 && strcmp(r.method, "OPTIONS") == 0,
       "ok: asterisk-form OPTIONS");
    rec_finish(&r);
}

static void
test_limits(void)
{
    struct reqframe_limits lim = default_limits;
    char buf[4096];

    /* Header bytes: a head well under passes, one with a value over the limit is 431. */
    lim.max_header_bytes = 64;
    rejects_lim("header block over max_header_bytes (64)",
                R(H11 "X-Big: 0123456789012345678901234567890123456789012345678901234567890123\r\n"
                      "\r\n"),
                &lim, 431);
    ok(runs(R(H11 "X-Small: 1\r\n\r\n"), &lim, 0, NULL) == 0,
       "ok: header block under max_header_bytes (64)");
    rejects_lim("many small fields add up over max_header_bytes",
                R(H11 "A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\nG: 7\r\nH: 8\r\nI: 9\r\n"
                      "J: 0\r\n\r\n"),
                &lim, 431);
    /* llhttp drops the blanks before a value without a callback: they must still count, or a
     * header block of any size passes the limit when its values are padded with spaces. */
    lim.max_header_bytes = 1024;
    int n = snprintf(buf, sizeof(buf), "%sX-Pad:", H11);
    memset(buf + n, ' ', 2000);
    n += 2000;
    n += snprintf(buf + n, sizeof(buf) - (size_t)n, "v\r\n\r\n");
    ok(runs(buf, (size_t)n, &lim, 431, NULL) == 0,
       "431: a 2 KB header block (a value after 2000 spaces) over max_header_bytes 1024");

    /* Field count. */
    lim = default_limits;
    lim.max_headers = 3;
    ok(runs(R("GET / HTTP/1.1\r\nHost: a\r\nB: 1\r\nC: 2\r\n\r\n"), &lim, 0, NULL) == 0,
       "ok: exactly max_headers fields (3)");
    rejects_lim("one field more than max_headers (3)",
                R("GET / HTTP/1.1\r\nHost: a\r\nB: 1\r\nC: 2\r\nD: 3\r\n\r\n"), &lim, 431);
    rejects_lim("trailers count towards max_headers",
                R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "1\r\nx\r\n0\r\nT1: 1\r\nT2: 2\r\n\r\n"),
                &lim, 431);
    /* A field over the count whose name a bad byte ends: a read ending inside the name reports
     * its first bytes (431); in one piece llhttp stops at the bad byte without them, and they are
     * checked all the same (found by fuzz_chunked, in trailers). */
    rejects_lim("a field over max_headers cut short by a bad byte",
                R("GET / HTTP/1.1\r\nHost: a\r\nB: 1\r\nC: 2\r\nDx\r\x01\r\n\r\n"), &lim, 431);
    rejects_lim("a trailer over max_headers cut short by a bad byte",
                R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "1\r\nx\r\n0\r\nT1: 1\r\nT\r\xbf"),
                &lim, 431);

    /* URI length. */
    lim = default_limits;
    lim.max_uri_bytes = 16;
    ok(runs(R("GET /234567890123456 HTTP/1.1\r\nHost: a\r\n\r\n"), &lim, 0, NULL) == 0,
       "ok: target of exactly max_uri_bytes (16)");
    rejects_lim("target one byte over max_uri_bytes (16)",
                R("GET /2345678901234567 HTTP/1.1\r\nHost: a\r\n\r\n"), &lim, 414);
    lim.max_uri_bytes = 8 * 1024;
    n = snprintf(buf, sizeof(buf), "GET /");
    memset(buf + n, 'a', 3000);
    n += 3000;
    n += snprintf(buf + n, sizeof(buf) - (size_t)n, " HTTP/1.1\r\nHost: a\r\n\r\n");
    lim.max_uri_bytes = 2048;
    ok(runs(buf, (size_t)n, &lim, 414, NULL) == 0,
       "414: a 3 KB target over max_uri_bytes 2048 (many pieces when split)");
    buf[n - (int)sizeof(" HTTP/1.1\r\nHost: a\r\n\r\n") + 1] = '\x7f'; /* a bad byte ends it */
    ok(runs(buf, (size_t)n, &lim, 414, NULL) == 0,
       "414: a 3 KB target over max_uri_bytes 2048 ended by a bad byte, at every split");

    /* Body length with Content-Length: refused before the head reaches the owner. */
    lim = default_limits;
    lim.max_body_bytes = 10;
    rejects_lim("Content-Length 11 over max_body_bytes 10",
                R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world"), &lim,
                413);
    ok(runs(R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhelloworld"), &lim, 0,
            NULL) == 0,
       "ok: Content-Length equal to max_body_bytes");
    struct rec r;
    rec_init(&r, &lim);
    struct mode whole = {0, 0};
    int bad = 0;
    enum reqframe_result res =
        feed(&r, R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world"), &whole,
             NULL, &bad);
    ok(res == REQFRAME_ERROR && r.f.status == 413 && r.nhead == 0 && r.nbody == 0 && !bad,
       "413 (Content-Length): neither head nor body reach the owner");
    rec_finish(&r);

    /* Chunked body over the limit: 413 once the total passes it, after some body. */
    rec_init(&r, &lim);
    res = feed(&r,
               R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "8\r\n12345678\r\n8\r\nabcdefgh\r\n0\r\n\r\n"),
               &whole, NULL, &bad);
    ok(res == REQFRAME_ERROR && r.f.status == 413 && r.nhead == 1 && r.ncomplete == 0 &&
           r.body.len == 8 && memcmp(r.body.p, "12345678", 8) == 0 && r.f.body_bytes > 10,
       "413 (chunked): first 8 bytes delivered, the chunk that passes 10 is not");
    rec_finish(&r);
    rejects_lim("chunked body over max_body_bytes, any split",
                R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "8\r\n12345678\r\n8\r\nabcdefgh\r\n0\r\n\r\n"),
                &lim, 413);
    ok(runs(R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
              "5\r\n12345\r\n5\r\nabcde\r\n0\r\n\r\n"),
            &lim, 0, NULL) == 0,
       "ok: chunked body of exactly max_body_bytes");

    /* Limits set from ops->begin apply to that very request (as client.c does on reload). */
    struct reqframe_limits tight = default_limits;
    tight.max_headers = 1;
    rec_init(&r, NULL);
    r.begin_limits = &tight;
    res = feed(&r, R("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n"), &whole, NULL, &bad);
    ok(res == REQFRAME_ERROR && r.f.status == 431, "limits set in begin apply to this request");
    rec_finish(&r);

    /* A 431 found by counting raw bytes at the end of a read is final like any other error:
     * more bytes must not be parsed. The raw count is the safety net against blanks llhttp
     * drops without a callback (it allows 1.5x max_header_bytes; the exact limit is the
     * per-piece count): the first read ends in a run of 200 blanks before a value, the second
     * would complete the head. */
    lim = default_limits;
    lim.max_header_bytes = 64;
    rec_init(&r, &lim);
    n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\nX: ");
    memset(buf + n, ' ', 200);
    n += 200;
    size_t used = 0;
    res = reqframe_execute(&r.f, buf, (size_t)n, &used);
    ok(res == REQFRAME_ERROR && r.f.status == 431, "431 from the raw count at the end of a read");
    res = reqframe_execute(&r.f, R("v\r\n\r\n"), &used);
    ok(res == REQFRAME_ERROR && r.f.status == 431 && r.nhead == 0,
       "after a raw-count 431, more bytes give the same error and no calls (got %d, status %d, "
       "%d heads)",
       (int)res, r.f.status, r.nhead);
    rec_finish(&r);

    /* Empty lines before a request line are not part of its head (RFC 9112 §2.2): the result
     * must not depend on whether the read ends before the target. */
    lim.max_header_bytes = 48;
    n = 0;
    for (int i = 0; i < 40; i++)
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, "\r\n");
    n += snprintf(buf + n, sizeof(buf) - (size_t)n, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    ok(runs(buf, (size_t)n, &lim, 0, NULL) == 0,
       "ok: 40 empty lines before a request, max_header_bytes 48, at every split");

    /* The raw count (72 for max_header_bytes 48) reaches its limit exactly at the end of the
     * last value: the line ends after it are over, whether they come in the same read (the head
     * completes) or one by one; and a head over the count that fails later for another reason
     * (no Host, a bad byte) is 431 too, as when it comes cut (found by fuzz_reqframe). */
    n = snprintf(buf, sizeof(buf), "POST / HTTP/1.1\r\nHost: example.com\r\nX-Pad:%*s4\r\n\r\n",
                 72 - 38, "");
    rejects_lim("raw count at its limit at the last value, then CRLF CRLF", buf, (size_t)n, &lim,
                431);
    n = snprintf(buf, sizeof(buf), "POST / HTTP/1.1\r\nX-Pad:%*s4\r\n\r\n", 72 - 19, "");
    rejects_lim("raw count over at the head's end, no Host", buf, (size_t)n, &lim, 431);
    n = snprintf(buf, sizeof(buf), "POST / HTTP/1.1\r\nHost: example.com\r\nX-Pad:%*s4\r\n\x01\r\n",
                 72 - 38, "");
    rejects_lim("raw count over, then a bad byte", buf, (size_t)n, &lim, 431);
}

/* ---- bodies, ops, flags ---- */

static void
test_bodies(void)
{
    struct rec r;
    ok(runs(R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world"),
            &default_limits, 0, &r) == 0 &&
           r.ncomplete == 1 && r.all_body.len == 11 && memcmp(r.all_body.p, "hello world", 11) == 0,
       "body: Content-Length pieces add up to the 11 bytes, whatever the split");
    ok(r.has_body && !r.chunked, "body: has_body, not chunked");
    rec_finish(&r);

    ok(runs(R("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
              "5\r\nhello\r\n1;ext=\"q\"\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"),
            &default_limits, 0, &r) == 0 &&
           r.ncomplete == 1 && r.all_body.len == 11 && memcmp(r.all_body.p, "hello world", 11) == 0,
       "body: chunked pieces are de-chunked into the 11 bytes, whatever the split");
    ok(r.has_body && r.chunked, "body: chunked flags");
    rec_finish(&r);

    ok(runs(R("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"), &default_limits, 0, &r) ==
               0 &&
           r.ncomplete == 1 && r.nbody == 0 && !r.has_body,
       "body: Content-Length 0 completes without body calls");
    rec_finish(&r);

    char big[70000];
    int n =
        snprintf(big, sizeof(big), "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 65536\r\n\r\n");
    for (int i = 0; i < 65536; i++)
        big[n + i] = (char)('a' + i % 26);
    rec_init(&r, NULL);
    struct mode m = {1000, 0};
    int bad = 0;
    enum reqframe_result res = feed(&r, big, (size_t)n + 65536, &m, NULL, &bad);
    ok(res == REQFRAME_OK && !bad && r.ncomplete == 1 && r.all_body.len == 65536 &&
           memcmp(r.all_body.p, big + n, 65536) == 0 && r.f.body_bytes == 65536,
       "body: 64 KiB in 1000-byte pieces, bytes exact");
    rec_finish(&r);
}

static void
test_ops_status(void)
{
    struct rec r;
    struct mode whole = {0, 0};
    int bad = 0;
    const char post[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";

    rec_init(&r, NULL);
    r.begin_status = 503;
    enum reqframe_result res = feed(&r, post, sizeof(post) - 1, &whole, NULL, &bad);
    ok(res == REQFRAME_ERROR && r.f.status == 503 && r.nbegin == 1 && r.nhead == 0,
       "ops: begin's 503 stops framing with 503");
    rec_finish(&r);

    rec_init(&r, NULL);
    r.head_status = 403;
    res = feed(&r, post, sizeof(post) - 1, &whole, NULL, &bad);
    ok(res == REQFRAME_ERROR && r.f.status == 403 && r.nhead == 1 && r.nbody == 0 &&
           r.ncomplete == 0,
       "ops: head's 403 stops framing before the body");
    rec_finish(&r);

    rec_init(&r, NULL);
    r.body_status = 502;
    res = feed(&r, post, sizeof(post) - 1, &whole, NULL, &bad);
    ok(res == REQFRAME_ERROR && r.f.status == 502 && r.nbody == 1 && r.ncomplete == 0,
       "ops: body's 502 stops framing before complete");
    /* Nothing is parsed after an error, even if the owner calls again. */
    int before = r.nbegin + r.nhead + r.nbody + r.ncomplete;
    size_t used = 99;
    res = reqframe_execute(&r.f, R("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), &used);
    ok(res == REQFRAME_ERROR && r.f.status == 502 &&
           r.nbegin + r.nhead + r.nbody + r.ncomplete == before && used <= 27,
       "ops: after an error, more bytes give the same error and no calls");
    rec_finish(&r);

    /* A rejection in the middle of a body fed byte by byte: the status of the op wins. */
    rec_init(&r, NULL);
    r.body_status = 500;
    r.body_status_after = 3;
    struct mode bytes = {1, 0};
    res = feed(&r, post, sizeof(post) - 1, &bytes, NULL, &bad);
    ok(res == REQFRAME_ERROR && r.f.status == 500 && r.body.len == 3 && r.ncomplete == 0 && !bad,
       "ops: body rejection after 3 bytes, byte by byte");
    rec_finish(&r);

    /* The second of two pipelined requests refused by begin: the first completes. */
    rec_init(&r, NULL);
    const char first[] = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n";
    const char second[] = "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
    int npaused = 0;
    res = feed(&r, first, sizeof(first) - 1, &whole, &npaused, &bad);
    r.begin_status = 429;
    res = feed(&r, second, sizeof(second) - 1, &whole, NULL, &bad);
    ok(res == REQFRAME_ERROR && r.f.status == 429 && r.ncomplete == 1 && r.nbegin == 2 &&
           npaused == 1,
       "ops: status of a later request's begin");
    rec_finish(&r);
}

static void
test_flags(void)
{
    struct rec r;
    runs(R("HEAD /h HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), &default_limits, 0, &r);
    ok(r.nhead == 1 && r.http10 && r.head_method && r.keepalive && !r.has_body &&
           strcmp(r.method, "HEAD") == 0 && strcmp(r.url, "/h") == 0,
       "flags: HTTP/1.0 HEAD with keep-alive");
    rec_finish(&r);
    runs(R("GET / HTTP/1.0\r\n\r\n"), &default_limits, 0, &r);
    ok(r.nhead == 1 && r.http10 && !r.keepalive, "flags: HTTP/1.0 closes by default");
    rec_finish(&r);
    runs(R("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"), &default_limits, 0, &r);
    ok(r.nhead == 1 && !r.http10 && !r.keepalive && !r.upgrade,
       "flags: HTTP/1.1 Connection: close");
    rec_finish(&r);
    runs(R("DELETE /x HTTP/1.1\r\nHost: a\r\n\r\n"), &default_limits, 0, &r);
    ok(r.nhead == 1 && r.keepalive && !r.head_method && strcmp(r.method, "DELETE") == 0,
       "flags: HTTP/1.1 keeps alive; method name");
    rec_finish(&r);
}

/* ---- pipelining and upgrades ---- */

static void
test_pipelining(void)
{
    static const char a[] = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
    static const char b[] = "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi";
    static const char c[] = "HEAD /c HTTP/1.1\r\nHost: h\r\n\r\n";
    char buf[256];
    size_t la = sizeof(a) - 1, lb = sizeof(b) - 1, lc = sizeof(c) - 1;
    memcpy(buf, a, la);
    memcpy(buf + la, b, lb);
    memcpy(buf + la + lb, c, lc);
    size_t len = la + lb + lc;

    struct rec r;
    rec_init(&r, NULL);
    size_t used = 0;
    enum reqframe_result res = reqframe_execute(&r.f, buf, len, &used);
    ok(res == REQFRAME_PAUSED && used == la && r.ncomplete == 1 && r.nbegin == 1 &&
           strcmp(r.url, "/a") == 0,
       "pipeline: paused after the first, used %zu == %zu", used, la);
    ok(strcmp(reqframe_method(&r.f), "GET") == 0, "pipeline: method of the paused request");
    res = reqframe_execute(&r.f, buf + used, len - used, &used);
    ok(res == REQFRAME_PAUSED && used == 0 && r.nbegin == 1,
       "pipeline: without resume, nothing more is parsed");
    reqframe_resume(&r.f);
    ok(r.f.head.nfields == 0 && r.f.head.url_len == 0, "pipeline: resume clears the head");
    res = reqframe_execute(&r.f, buf + la, len - la, &used);
    ok(res == REQFRAME_PAUSED && used == lb && r.ncomplete == 2 && strcmp(r.url, "/b") == 0 &&
           r.body.len == 2 && memcmp(r.body.p, "hi", 2) == 0,
       "pipeline: second (with body) paused, used %zu == %zu", used, lb);
    reqframe_resume(&r.f);
    res = reqframe_execute(&r.f, buf + la + lb, lc, &used);
    ok(res == REQFRAME_PAUSED && used == lc && r.ncomplete == 3 && strcmp(r.url, "/c") == 0 &&
           r.head_method,
       "pipeline: third paused at the end of the buffer");
    reqframe_resume(&r.f);
    res = reqframe_execute(&r.f, "", 0, &used);
    ok(res == REQFRAME_OK && used == 0 && r.nbegin == 3 && r.order_errors == 0,
       "pipeline: after the last, an empty read is OK");
    rec_finish(&r);

    int npaused = 0, bad = 0;
    struct mode bytes = {1, 0};
    rec_init(&r, NULL);
    res = feed(&r, buf, len, &bytes, &npaused, &bad);
    ok(res == REQFRAME_OK && npaused == 3 && r.ncomplete == 3 && !bad && r.all_body.len == 2,
       "pipeline: byte by byte, 3 pauses");
    rec_finish(&r);
    ok(runs(buf, len, &default_limits, 0, NULL) == 0, "pipeline: same transcript at every split");

    /* An error in the second request: the first completes, nothing after the error. */
    static const char bad2[] = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
                               "GET /b HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n"
                               "GET /c HTTP/1.1\r\nHost: h\r\n\r\n";
    rec_init(&r, NULL);
    struct mode whole = {0, 0};
    res = feed(&r, bad2, sizeof(bad2) - 1, &whole, &npaused, &bad);
    ok(res == REQFRAME_ERROR && r.f.status == 400 && r.ncomplete == 1 && r.nbegin == 2 &&
           npaused == 1,
       "pipeline: error in the second, the third is never begun");
    rec_finish(&r);
}

static void
test_upgrade(void)
{
    static const char up[] = "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"
                             "Upgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n";
    static const char next[] = "GET /n HTTP/1.1\r\nHost: h\r\n\r\n";
    char buf[256];
    size_t lu = sizeof(up) - 1, ln = sizeof(next) - 1;
    memcpy(buf, up, lu);
    memcpy(buf + lu, next, ln);

    struct rec r;
    rec_init(&r, NULL);
    size_t used = 0;
    enum reqframe_result res = reqframe_execute(&r.f, buf, lu + ln, &used);
    ok(res == REQFRAME_PAUSED && used == lu && r.upgrade && r.f.upgrade && r.ncomplete == 1,
       "upgrade: paused at the end of the request, used %zu == %zu", used, lu);
    /* The 101 case stops here: the bytes from `used` on belong to the tunnel. Not answered with
     * 101: go on with HTTP on the same buffer. */
    reqframe_resume(&r.f);
    res = reqframe_execute(&r.f, buf + used, lu + ln - used, &used);
    ok(res == REQFRAME_PAUSED && used == ln && r.ncomplete == 2 && !r.upgrade &&
           strcmp(r.url, "/n") == 0,
       "upgrade: after resume (no 101) the next request parses, used %zu == %zu", used, ln);
    rec_finish(&r);

    /* The next request arriving in a later read. */
    rec_init(&r, NULL);
    res = reqframe_execute(&r.f, buf, lu, &used);
    ok(res == REQFRAME_PAUSED && used == lu, "upgrade: alone in its read");
    reqframe_resume(&r.f);
    res = reqframe_execute(&r.f, buf + lu, ln, &used);
    ok(res == REQFRAME_PAUSED && used == ln && r.ncomplete == 2 && strcmp(r.url, "/n") == 0,
       "upgrade: next request from a later read");
    rec_finish(&r);

    /* Byte by byte, and at every split. */
    int npaused = 0, bad = 0;
    struct mode bytes = {1, 0};
    rec_init(&r, NULL);
    res = feed(&r, buf, lu + ln, &bytes, &npaused, &bad);
    ok(res == REQFRAME_OK && npaused == 2 && r.ncomplete == 2 && !bad,
       "upgrade: byte by byte, 2 pauses");
    rec_finish(&r);
    ok(runs(buf, lu + ln, &default_limits, 0, NULL) == 0,
       "upgrade: same transcript at every split");

    /* An upgrade request with a body: the body first, then the pause. */
    static const char upb[] = "POST /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n"
                              "Upgrade: websocket\r\nContent-Length: 3\r\n\r\nabc"
                              "GET /n HTTP/1.1\r\nHost: h\r\n\r\n";
    rec_init(&r, NULL);
    res = reqframe_execute(&r.f, upb, sizeof(upb) - 1, &used);
    ok(res == REQFRAME_PAUSED && used == sizeof(upb) - 1 - ln && r.upgrade && r.body.len == 3,
       "upgrade with a body: paused after the body");
    reqframe_resume(&r.f);
    size_t off = used;
    res = reqframe_execute(&r.f, upb + off, sizeof(upb) - 1 - off, &used);
    ok(res == REQFRAME_PAUSED && used == ln && r.ncomplete == 2,
       "upgrade with a body: next parses");
    rec_finish(&r);

    /* After an upgrade answered without 101, the next request line is checked like any. */
    static const char upbad[] = "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n"
                                "Upgrade: websocket\r\n\r\nGET  /n HTTP/1.1\r\nHost: h\r\n\r\n";
    rec_init(&r, NULL);
    res = reqframe_execute(&r.f, upbad, sizeof(upbad) - 1, &used);
    reqframe_resume(&r.f);
    off = used;
    res = reqframe_execute(&r.f, upbad + off, sizeof(upbad) - 1 - off, &used);
    ok(res == REQFRAME_ERROR && r.f.status == 400 && r.ncomplete == 1,
       "upgrade: a bad request line after it is refused");
    rec_finish(&r);

    /* Upgrade without Connection: upgrade is not an upgrade. */
    rec_init(&r, NULL);
    res =
        reqframe_execute(&r.f, R("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n"), &used);
    ok(res == REQFRAME_PAUSED && !r.upgrade, "upgrade: Upgrade without Connection is plain");
    rec_finish(&r);

    /* h2c is an upgrade like any other (the upstream decides). */
    rec_init(&r, NULL);
    res = reqframe_execute(&r.f,
                           R("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                             "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"),
                           &used);
    ok(res == REQFRAME_PAUSED && r.upgrade, "upgrade: h2c");
    rec_finish(&r);
}

int
main(void)
{
    test_framing_fields();
    test_field_syntax();
    test_obs_fold();
    test_host_expect_version_method();
    test_limits();
    test_bodies();
    test_ops_status();
    test_flags();
    test_pipelining();
    test_upgrade();
    return done_testing();
}
