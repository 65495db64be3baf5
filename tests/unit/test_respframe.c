/* tests/unit/test_respframe.c — proxy/respframe.c: status and body framing of upstream responses
 * (length, chunked, close-delimited, HEAD, 1xx, 101, 204, 304), the malformed responses it
 * refuses, keep-alive, and the same outcome whatever the byte boundaries (whole, byte by byte,
 * two pieces at every split). */
#include "proxy/respframe.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

#define R(s) (s), (sizeof(s) - 1)

/* Records what the framing reports, in order. */
struct rec {
    llhttp_t parser;
    char last_byte; /* beside the parser, for respframe_bind */
    struct http_head head;
    bool head_request, upgrade_request;
    int refuse_head; /* head returns -1 */
    int order_errors;
    int ninterim, nhead, ncomplete;
    bool done; /* complete was called: nothing may follow */
    struct http_buf transcript;
};

static void
add_num(struct http_buf *b, long long n)
{
    char s[32];
    int len = snprintf(s, sizeof(s), "%lld", n);
    http_buf_add(b, s, (size_t)len);
}

static void
add_head(struct rec *r)
{
    const struct http_head *h = &r->head;
    for (uint32_t i = 0; i < h->nfields; i++) {
        const struct http_field *f = &h->fields[i];
        http_buf_adds(&r->transcript, " [");
        http_buf_add(&r->transcript, http_field_name(h, f), f->name_len);
        http_buf_adds(&r->transcript, ":");
        http_buf_add(&r->transcript, http_field_value(h, f), f->value_len);
        http_buf_adds(&r->transcript, "]");
    }
    http_buf_adds(&r->transcript, "\n");
}

static void
on_interim(void *arg, const struct respframe *f)
{
    struct rec *r = arg;
    if (r->nhead || r->done)
        r->order_errors++;
    r->ninterim++;
    http_buf_adds(&r->transcript, "I ");
    add_num(&r->transcript, f->status);
    add_head(r);
}

static int
on_head(void *arg, const struct respframe *f)
{
    struct rec *r = arg;
    if (r->nhead || r->done)
        r->order_errors++;
    r->nhead++;
    http_buf_adds(&r->transcript, "H ");
    add_num(&r->transcript, f->status);
    http_buf_adds(&r->transcript, " body=");
    add_num(&r->transcript, f->body);
    http_buf_adds(&r->transcript, " chunked=");
    add_num(&r->transcript, f->chunked);
    add_head(r);
    return r->refuse_head ? -1 : 0;
}

static void
on_body(void *arg, const char *at, size_t len)
{
    struct rec *r = arg;
    if (r->nhead != 1 || r->done || len == 0)
        r->order_errors++;
    /* Pieces are joined: the transcript must not depend on where the input was cut. */
    http_buf_add(&r->transcript, at, len);
}

static void
on_complete(void *arg, const struct respframe *f)
{
    struct rec *r = arg;
    if (r->nhead != 1 || r->done)
        r->order_errors++;
    r->done = true;
    r->ncomplete++;
    http_buf_adds(&r->transcript, "\nC keepalive=");
    add_num(&r->transcript, f->keepalive);
    http_buf_adds(&r->transcript, "\n");
}

static const struct respframe_ops ops = {
    .interim = on_interim,
    .head = on_head,
    .body = on_body,
    .complete = on_complete,
};

/* What a test expects. */
struct want {
    const char *req; /* "HEAD", "UPGRADE" or NULL */
    bool eof;        /* the upstream closes after the bytes */
    enum respframe_result result;
    size_t used; /* bytes used, when not all (0 = all) */
    const char *transcript;
};

/* Feeds data in pieces of `step` bytes (0 = whole), or in two pieces at `split`, until a result
 * other than RESPFRAME_OK; then EOF when w->eof. Returns the result and the bytes used. */
static enum respframe_result
feed(struct rec *r, const struct want *w, const char *data, size_t len, size_t step, size_t split,
     size_t *total)
{
    memset(r, 0, sizeof(*r));
    http_head_init(&r->head, 64 * 1024, 1000, 0);
    r->head_request = w->req && strcmp(w->req, "HEAD") == 0;
    r->upgrade_request = w->req && strcmp(w->req, "UPGRADE") == 0;
    r->refuse_head = w->req && strcmp(w->req, "REFUSE") == 0;
    respframe_start(&r->parser);
    enum respframe_result res = RESPFRAME_OK;
    size_t off = 0;
    while (off < len) {
        size_t end = len;
        if (step)
            end = off + step < len ? off + step : len;
        else if (split && off < split)
            end = split;
        struct respframe f;
        respframe_bind(&f, &r->parser, &r->last_byte, &r->head, &ops, r);
        f.head_request = r->head_request;
        f.upgrade_request = r->upgrade_request;
        size_t used = 0;
        res = respframe_execute(&f, data + off, end - off, &used);
        respframe_unbind(&f);
        if (used > end - off || (res == RESPFRAME_OK && used != end - off))
            r->order_errors++;
        off += used;
        if (res != RESPFRAME_OK)
            break;
    }
    if (res == RESPFRAME_OK && w->eof) {
        struct respframe f;
        respframe_bind(&f, &r->parser, &r->last_byte, &r->head, &ops, r);
        f.head_request = r->head_request;
        respframe_eof(&f);
        respframe_unbind(&f);
        if (r->done)
            res = RESPFRAME_DONE;
    }
    if (r->parser.data != NULL)
        r->order_errors++; /* unbind leaves no pointer to the stack */
    *total = off;
    return res;
}

static const char *
result_name(enum respframe_result r)
{
    static const char *names[] = {"OK", "DONE", "UPGRADE", "ERROR"};
    return (unsigned)r < 4 ? names[r] : "?";
}

/* Runs data whole, byte by byte and split at every point: each run must give w's result, used
 * bytes and transcript. */
static void
check(const char *what, const char *data, size_t len, const struct want *w)
{
    int bad = 0;
    for (size_t i = 0; i <= len + 1 && bad < 3; i++) {
        size_t step = i == len + 1 ? 1 : 0, split = i < len ? i : 0;
        struct rec r;
        size_t used = 0;
        enum respframe_result res = feed(&r, w, data, len, step, split, &used);
        size_t want_used = w->used ? w->used : len;
        /* An empty transcript has no buffer (p is NULL): memcmp may not be given it. */
        bool same = w->transcript == NULL ||
                    (r.transcript.len == strlen(w->transcript) &&
                     (r.transcript.len == 0 ||
                      memcmp(r.transcript.p, w->transcript, r.transcript.len) == 0));
        if (res != w->result || (res != RESPFRAME_ERROR && used != want_used) || !same ||
            r.order_errors) {
            diag("%s (step %zu, split %zu): %s, want %s; used %zu, want %zu; order errors %d (%s)",
                 what, step, split, result_name(res), result_name(w->result), used, want_used,
                 r.order_errors, llhttp_get_error_reason(&r.parser));
            if (!same)
                diag("transcript:\n%.*s--- want:\n%s", (int)r.transcript.len,
                     r.transcript.p ? r.transcript.p : "", w->transcript);
            bad++;
        }
        http_head_finish(&r.head);
        http_buf_finish(&r.transcript);
    }
    ok(bad == 0, "%s", what);
}

static void
test_bodies(void)
{
    check("Content-Length body", R("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhello"),
          &(struct want){.result = RESPFRAME_DONE,
                         .transcript = "H 200 body=1 chunked=0 [Content-Length:5] [X:y]\n"
                                       "hello\nC keepalive=1\n"});
    check("Content-Length: 0", R("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
          &(struct want){.result = RESPFRAME_DONE,
                         .transcript = "H 200 body=1 chunked=0 [Content-Length:0]\n"
                                       "\nC keepalive=1\n"});
    check("chunked body with extensions and trailers, de-chunked",
          R("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            "3;a=b\r\nhel\r\n2\r\nlo\r\n0\r\nT: 1\r\n\r\n"),
          &(struct want){.result = RESPFRAME_DONE,
                         .transcript = "H 200 body=2 chunked=1 [Transfer-Encoding:chunked]\n"
                                       "hello\nC keepalive=1\n"});
    check("close-delimited body ends at EOF", R("HTTP/1.1 200 OK\r\n\r\nall of it"),
          &(struct want){.eof = true,
                         .result = RESPFRAME_DONE,
                         .transcript = "H 200 body=3 chunked=0\nall of it\nC keepalive=0\n"});
    check("close-delimited body without EOF is not complete", R("HTTP/1.1 200 OK\r\n\r\nsome"),
          &(struct want){.result = RESPFRAME_OK, .transcript = "H 200 body=3 chunked=0\nsome"});
    check("Transfer-Encoding: gzip (not chunked) is close-delimited",
          R("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz"),
          &(struct want){.eof = true,
                         .result = RESPFRAME_DONE,
                         .transcript = "H 200 body=3 chunked=0 [Transfer-Encoding:gzip]\n"
                                       "zz\nC keepalive=0\n"});
    check("bytes after the response are not used",
          R("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"),
          &(struct want){.result = RESPFRAME_DONE, .used = 40});
    check("HTTP/1.0 response without keep-alive",
          R("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx"),
          &(struct want){.result = RESPFRAME_DONE,
                         .transcript = "H 200 body=1 chunked=0 [Content-Length:1]\n"
                                       "x\nC keepalive=0\n"});
    check("Connection: close",
          R("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx"),
          &(struct want){.result = RESPFRAME_DONE,
                         .transcript = "H 200 body=1 chunked=0 [Connection:close] "
                                       "[Content-Length:1]\nx\nC keepalive=0\n"});
}

static void
test_no_body(void)
{
    check("HEAD: no body whatever Content-Length says",
          R("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"),
          &(struct want){.req = "HEAD",
                         .result = RESPFRAME_DONE,
                         .transcript = "H 200 body=0 chunked=0 [Content-Length:10]\n"
                                       "\nC keepalive=1\n"});
    check("HEAD: chunked head, no body", R("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
          &(struct want){.req = "HEAD", .result = RESPFRAME_DONE});
    check("204 with Content-Length: no body",
          R("HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc"),
          &(struct want){.result = RESPFRAME_DONE, .used = 46});
    check("304: no body", R("HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n"),
          &(struct want){.result = RESPFRAME_DONE,
                         .transcript = "H 304 body=0 chunked=0 [Content-Length:3]\n"
                                       "\nC keepalive=1\n"});
    check("100 then 103 then 200: interims cleared before the final head",
          R("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"),
          &(struct want){.result = RESPFRAME_DONE,
                         .transcript = "I 100\nI 103 [Link:</a>]\n"
                                       "H 200 body=1 chunked=0 [Content-Length:1]\n"
                                       "x\nC keepalive=1\n"});
    check("101 after an upgrade request: the rest is not used",
          R("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "\r\n\x81\x05hello"),
          &(struct want){.req = "UPGRADE",
                         .result = RESPFRAME_UPGRADE,
                         .used = 77,
                         .transcript = "H 101 body=0 chunked=0 [Upgrade:websocket] "
                                       "[Connection:Upgrade]\n"});
    check("101 without an upgrade request is refused",
          R("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "\r\n"),
          &(struct want){.result = RESPFRAME_ERROR});
}

static void
test_refused(void)
{
    const struct want bad = {.result = RESPFRAME_ERROR};
    check("Content-Length with Transfer-Encoding",
          R("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            "3\r\nabc\r\n0\r\n\r\n"),
          &bad);
    check("differing Content-Length",
          R("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"), &bad);
    check("repeated Content-Length",
          R("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"), &bad);
    check("Content-Length '+3'", R("HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc"), &bad);
    check("Content-Length overflow",
          R("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n"), &bad);
    check("chunk size overflow",
          R("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            "fffffffffffffffff\r\nx\r\n0\r\n\r\n"),
          &bad);
    check("chunk size not hex",
          R("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n"), &bad);
    check("chunk data longer than its size",
          R("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n0\r\n\r\n"), &bad);
    check("bare CR in a header value", R("HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n"),
          &bad);
    check("bare LF line ends", R("HTTP/1.1 200 OK\nContent-Length: 0\n\n"), &bad);
    /* llhttp 8 (strict) takes a bare LF as the last line of a chunked body. */
    check("chunked body ended by a bare LF",
          R("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\n"), &bad);
    check("chunked body with a trailer ended by a bare LF",
          R("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: v\r\n\n"), &bad);
    /* llhttp 8 (strict) takes a bare LF as the empty line ending a head: refused before the
     * head is reported (nothing may reach the client), whatever the framing after it. */
    const struct want bad_unreported = {.result = RESPFRAME_ERROR, .transcript = ""};
    check("head ended by a bare LF (Content-Length)",
          R("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\nx"), &bad_unreported);
    check("head ended by a bare LF (chunked, cut body looks complete otherwise)",
          R("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\n1\r\nx\r\n0\r\n\r\n"),
          &bad_unreported);
    check("head ended by a bare LF (close-delimited)", R("HTTP/1.1 200 OK\r\nX: 1\r\n\nabc"),
          &bad_unreported);
    check("head ended by a bare LF (no fields)", R("HTTP/1.1 200 OK\r\n\n"), &bad_unreported);
    check("head ended by a bare LF (204)", R("HTTP/1.1 204 No Content\r\nX: 1\r\n\n"),
          &bad_unreported);
    check("head ended by a bare LF (HEAD)", R("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\n"),
          &(struct want){.req = "HEAD", .result = RESPFRAME_ERROR, .transcript = ""});
    check("interim head ended by a bare LF",
          R("HTTP/1.1 100 Continue\r\n\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
          &bad_unreported);
    check("final head ended by a bare LF after an interim",
          R("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n"),
          &(struct want){.result = RESPFRAME_ERROR, .transcript = "I 100\n"});
    check("101 head ended by a bare LF",
          R("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "\n"),
          &(struct want){.req = "UPGRADE", .result = RESPFRAME_ERROR, .transcript = ""});
    check("NUL in the status line",
          R("HTTP/1.1 2\x00"
            "0 OK\r\n\r\n"),
          &bad);
    check("status of four digits", R("HTTP/1.1 2000 OK\r\n\r\n"), &bad);
    check("empty field name", R("HTTP/1.1 200 OK\r\n: x\r\nContent-Length: 0\r\n\r\n"), &bad);
    check("empty field name, empty value", R("HTTP/1.1 200 OK\r\n:\r\nContent-Length: 0\r\n\r\n"),
          &bad);
    check("empty field name after a field",
          R("HTTP/1.1 200 OK\r\nA: 1\r\n: x\r\nContent-Length: 0\r\n\r\n"), &bad);
    check("status of one digit", R("HTTP/1.1 2\r\nContent-Length: 0\r\n\r\n"), &bad);
    check("status of two digits", R("HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n"), &bad);
    check("NUL in the reason phrase", R("HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n"), &bad);
    check("bare CR in the reason phrase", R("HTTP/1.1 200 O\rX: y\r\nContent-Length: 0\r\n\r\n"),
          &bad);
    check("escape in the reason phrase", R("HTTP/1.1 200 \x1b[31mOK\r\nContent-Length: 0\r\n\r\n"),
          &bad);
    check("obs-text and HTAB in the reason phrase are kept",
          R("HTTP/1.1 200 O\tK \xe9\r\nContent-Length: 0\r\n\r\n"),
          &(struct want){.result = RESPFRAME_DONE});
    check("not HTTP", R("SSH-2.0-OpenSSH\r\n"), &bad);
    check("head refused by the owner", R("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
          &(struct want){.req = "REFUSE", .result = RESPFRAME_ERROR});

    /* A head over the 64 KiB limit of the head. */
    size_t n = 70 * 1024;
    char *big = malloc(n + 64);
    int k = snprintf(big, n + 64, "HTTP/1.1 200 OK\r\nX: ");
    memset(big + k, 'a', n);
    memcpy(big + k + n, "\r\n\r\n", 4);
    struct rec r;
    size_t used = 0;
    enum respframe_result res = feed(&r, &bad, big, (size_t)k + n + 4, 0, 0, &used);
    ok(res == RESPFRAME_ERROR && r.nhead == 0, "a head over the limit is refused");
    http_head_finish(&r.head);
    http_buf_finish(&r.transcript);
    free(big);
}

/* The parser of a connection serves one exchange after another: respframe_start resets it. */
static void
test_restart(void)
{
    const struct want w = {.result = RESPFRAME_DONE};
    struct rec r;
    size_t used = 0;
    const char first[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab";
    enum respframe_result res = feed(&r, &w, first, sizeof(first) - 1, 0, 0, &used);
    http_head_clear(&r.head);
    respframe_start(&r.parser);
    struct respframe f;
    respframe_bind(&f, &r.parser, &r.last_byte, &r.head, &ops, &r);
    r.done = false;
    r.nhead = 0;
    const char second[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    enum respframe_result res2 = respframe_execute(&f, second, sizeof(second) - 1, &used);
    respframe_unbind(&f);
    ok(res == RESPFRAME_DONE && res2 == RESPFRAME_DONE && f.status == 404 &&
           used == sizeof(second) - 1 && r.ncomplete == 2 && r.order_errors == 0,
       "a second exchange on the same parser after respframe_start");
    http_head_finish(&r.head);
    http_buf_finish(&r.transcript);
}

int
main(void)
{
    test_bodies();
    test_no_body();
    test_refused();
    test_restart();
    return done_testing();
}
