/* tests/unit/test_http.c — proxy/http.c: head collection within limits, hop-by-hop rules, the
 * request, response and error heads switchyard writes (byte-exact), request ids. */
#include "proxy/http.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

/* ---- helpers ---- */

#define LIT(s) (s), (sizeof(s) - 1)

/* Fills h with a target (or NULL) and fields given as name, value, ..., NULL. Each piece goes in
 * one callback; the limits are generous so nothing is refused. */
static void
head_build(struct http_head *h, const char *url, const char *const *nv)
{
    http_head_init(h, 1 << 20, 1000, 0);
    if (url)
        http_head_url(h, url, strlen(url));
    for (size_t i = 0; nv[i]; i += 2) {
        http_head_field(h, nv[i], strlen(nv[i]));
        http_head_value(h, nv[i + 1], strlen(nv[i + 1]));
    }
}

static const struct http_field *
field_at(const struct http_head *h, uint32_t i)
{
    return &h->fields[i];
}

static int
buf_is(const struct http_buf *b, const char *want)
{
    size_t n = strlen(want);
    if (b->len == n && memcmp(b->p, want, n) == 0)
        return 1;
    diag("got  (%zu bytes): %.*s", b->len, (int)b->len, b->p ? b->p : "");
    diag("want (%zu bytes): %s", n, want);
    return 0;
}

static int
str_has(const struct http_buf *b, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= b->len; i++)
        if (memcmp(b->p + i, needle, n) == 0)
            return 1;
    return 0;
}

/* ---- http_buf ---- */

static void
test_buf(void)
{
    struct http_buf b = {0};
    http_buf_adds(&b, "abc");
    http_buf_add(&b, "defg", 2);
    ok(b.len == 5 && memcmp(b.p, "abcde", 5) == 0, "buf: add and adds append");
    for (int i = 0; i < 1000; i++)
        http_buf_add(&b, "0123456789", 10);
    ok(b.len == 10005 && b.cap >= b.len && memcmp(b.p + 9995, "0123456789", 10) == 0,
       "buf: grows past its first capacity, content intact");
    http_buf_finish(&b);
    ok(b.p == NULL && b.len == 0 && b.cap == 0, "buf: finish frees and zeroes");
    http_buf_finish(&b);
    ok(b.p == NULL, "buf: finish twice is harmless");

    char big[300];
    memset(big, 'x', sizeof(big));
    http_buf_add_body(&b, "hello", 5, false);
    http_buf_add_body(&b, "hello", 5, true);
    http_buf_add_body(&b, big, sizeof(big), true);
    ok(b.len == 5 + 10 + 5 + 300 + 2 && memcmp(b.p, "hello5\r\nhello\r\n12c\r\n", 20) == 0 &&
           memcmp(b.p + b.len - 4, "xx\r\n", 4) == 0 && memcmp(b.p + 20, big, 300) == 0,
       "buf: add_body as is, or framed as one chunk (hex size line, data, CRLF)");
    http_buf_finish(&b);
}

/* ---- http_list_has ---- */

static int
has(const char *list, const char *token)
{
    return http_list_has(list, strlen(list), token, strlen(token));
}

static void
test_list_has(void)
{
    ok(has("close", "close"), "list: single item");
    ok(has("Close", "close") && has("close", "CLOSE"), "list: case-insensitive both ways");
    ok(has("keep-alive, Upgrade", "upgrade"), "list: second item after comma and space");
    ok(has("  \tclose\t ,  x", "close"), "list: OWS (spaces, tabs) around an item ignored");
    ok(has("a,,  ,\t,b", "b") && has(",,a", "a") && has("a,,", "a"),
       "list: empty items skipped (leading, inner, trailing)");
    ok(!has("", "close") && !has(",, ,", "close"), "list: empty list / only empty items");
    ok(!has("closed", "close"), "list: token that is a prefix of an item does not match");
    ok(!has("clos", "close"), "list: item that is a prefix of the token does not match");
    ok(!has("xclose", "close") && !has("close-x", "close"), "list: token inside an item");
    ok(!has("up grade", "up") && !has("up grade", "grade") && has("up grade", "up grade"),
       "list: inner space is part of the item");
    ok(!has("close;q=1", "close"), "list: parameters are part of the item");
    ok(has("a, X-Secret , b", "x-secret"), "list: header name in the middle");
    ok(!http_list_has("close,x", 3, LIT("close")), "list: len bounds the list (\"clo\")");
    ok(http_list_has("close,x", 5, LIT("close")), "list: len bounds the list (\"close\")");
    ok(http_list_has("close", 5, "closeXYZ", 5), "list: token_len bounds the token");
}

/* ---- hop-by-hop ---- */

static void
test_hop_by_hop(void)
{
    /* clang-format off */
    static const char *const nv[] = {
        "Connection", "close, X-Secret", /* 0 */
        "Keep-Alive", "timeout=5",       /* 1 */
        "Proxy-Connection", "keep-alive", /* 2 */
        "TE", "trailers",                /* 3 */
        "Trailer", "X-T",                /* 4 */
        "Upgrade", "websocket",          /* 5 */
        "X-Secret", "s",                 /* 6 */
        "x-secret", "s2",                /* 7 */
        "X-Secretive", "no",             /* 8 */
        "X-Secre", "no",                 /* 9 */
        "Accept", "*/*",                 /* 10 */
        "connection", "X-Other",         /* 11 */
        "X-Other", "o",                  /* 12 */
        "Content-Length", "5",           /* 13 */
        "Transfer-Encoding", "chunked",  /* 14 */
        "Host", "h",                     /* 15 */
        "Connection", "content-length, Transfer-Encoding, HOST", /* 16 */
        "TE-X", "no",                    /* 17 */
        NULL,
    };
    /* clang-format on */
    struct http_head h;
    head_build(&h, "/", nv);

    const char *fixed[] = {"Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer"};
    for (uint32_t i = 0; i < 5; i++) {
        ok(http_is_hop_by_hop(&h, field_at(&h, i), false) &&
               http_is_hop_by_hop(&h, field_at(&h, i), true),
           "hop: %s always hop-by-hop", fixed[i]);
    }
    ok(http_is_hop_by_hop(&h, field_at(&h, 11), false), "hop: lowercase connection too");
    ok(http_is_hop_by_hop(&h, field_at(&h, 5), false), "hop: Upgrade dropped when not upgrading");
    ok(!http_is_hop_by_hop(&h, field_at(&h, 5), true), "hop: Upgrade kept when upgrading");
    ok(http_is_hop_by_hop(&h, field_at(&h, 6), false) &&
           http_is_hop_by_hop(&h, field_at(&h, 6), true),
       "hop: X-Secret named in 'Connection: close, X-Secret' is dropped");
    ok(http_is_hop_by_hop(&h, field_at(&h, 7), false),
       "hop: named field matched case-insensitively");
    ok(!http_is_hop_by_hop(&h, field_at(&h, 8), false),
       "hop: X-Secretive kept (named token is a prefix of it)");
    ok(!http_is_hop_by_hop(&h, field_at(&h, 9), false),
       "hop: X-Secre kept (it is a prefix of the named token)");
    ok(!http_is_hop_by_hop(&h, field_at(&h, 10), false), "hop: ordinary field kept");
    ok(http_is_hop_by_hop(&h, field_at(&h, 12), false),
       "hop: a second Connection field's names count too (X-Other)");
    ok(!http_is_hop_by_hop(&h, field_at(&h, 13), false), "hop: Content-Length never dropped");
    ok(!http_is_hop_by_hop(&h, field_at(&h, 14), false), "hop: Transfer-Encoding never dropped");
    ok(!http_is_hop_by_hop(&h, field_at(&h, 15), false), "hop: Host never dropped");
    ok(!http_is_hop_by_hop(&h, field_at(&h, 17), false), "hop: TE-X is not TE");
    http_head_finish(&h);

    /* clang-format off */
    static const char *const nv2[] = {"Connection", "Upgrade", "Upgrade", "h2c", NULL};
    /* clang-format on */
    head_build(&h, "/", nv2);
    ok(http_is_hop_by_hop(&h, field_at(&h, 1), false),
       "hop: Upgrade named by Connection, not upgrading: dropped");
    ok(!http_is_hop_by_hop(&h, field_at(&h, 1), true),
       "hop: Upgrade named by Connection, upgrading: kept");
    http_head_finish(&h);
}

/* ---- request head ---- */

static void
test_write_request(void)
{
    /* clang-format off */
    static const char *const nv[] = {
        "Host", "example.com",
        "Connection", "keep-alive, X-Secret",
        "X-Secret", "s",
        "Keep-Alive", "timeout=5",
        "Proxy-Connection", "keep-alive",
        "TE", "trailers",
        "Trailer", "X-T",
        "Upgrade", "websocket",
        "X-Forwarded-For", "10.0.0.1",
        "Accept", "*/*",
        "x-forwarded-for", "10.0.0.2, 10.0.0.3",
        "X-Forwarded-For", "",
        "X-Forwarded-Proto", "ftp",
        "X-Forwarded-Host", "evil.example",
        "X-Request-Id", "client-chosen",
        "x-preview", "green",
        "Content-Length", "5",
        "Cookie", "a=1",
        "Connection", "close",
        NULL,
    };
    /* clang-format on */
    struct http_head h;
    head_build(&h, "/p?q=1", nv);
    struct http_request_out m = {
        .method = "POST",
        .client_ip = "192.0.2.7",
        .proto = "https",
        .request_id = "0123abcd",
        .strip = "X-Preview",
    };
    struct http_buf b = {0};
    http_write_request(&b, &h, &m);
    ok(buf_is(&b, "POST /p?q=1 HTTP/1.1\r\n"
                  "Host: example.com\r\n"
                  "Accept: */*\r\n"
                  "Content-Length: 5\r\n"
                  "Cookie: a=1\r\n"
                  "X-Forwarded-For: 10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7\r\n"
                  "X-Forwarded-Proto: https\r\n"
                  "X-Forwarded-Host: example.com\r\n"
                  "X-Request-Id: 0123abcd\r\n"
                  "\r\n"),
       "request: hop-by-hop removed, XFF joined in order, X-Forwarded-*/X-Request-Id replaced, "
       "strip field dropped");
    http_buf_finish(&b);
    http_head_finish(&h);

    /* An HTTP/1.0 request without Host or XFF: an empty Host (RFC 9112 §3.2: the HTTP/1.1
     * request we send needs one), no X-Forwarded-Host, XFF is just the client; the request line
     * is always HTTP/1.1. */
    /* clang-format off */
    static const char *const nv10[] = {"User-Agent", "t", "Connection", "keep-alive", NULL};
    /* clang-format on */
    head_build(&h, "/x", nv10);
    m = (struct http_request_out){
        .method = "GET", .client_ip = "::1", .proto = "http", .request_id = "r1"};
    http_write_request(&b, &h, &m);
    ok(buf_is(&b, "GET /x HTTP/1.1\r\n"
                  "User-Agent: t\r\n"
                  "Host: \r\n"
                  "X-Forwarded-For: ::1\r\n"
                  "X-Forwarded-Proto: http\r\n"
                  "X-Request-Id: r1\r\n"
                  "\r\n"),
       "request: no Host → an empty Host (HTTP/1.1 requires one), no X-Forwarded-Host; lone "
       "client XFF");
    http_buf_finish(&b);
    http_head_finish(&h);

    /* Upgrade: Upgrade kept, the client's Connection replaced by "Connection: upgrade". */
    /* clang-format off */
    static const char *const nvup[] = {
        "Host", "h:8080", "Connection", "Upgrade", "Upgrade", "websocket",
        "Sec-WebSocket-Key", "k==", "Keep-Alive", "1", NULL,
    };
    /* clang-format on */
    head_build(&h, "/ws", nvup);
    m = (struct http_request_out){.method = "GET",
                                  .client_ip = "1.2.3.4",
                                  .proto = "http",
                                  .request_id = "id",
                                  .upgrade = true};
    http_write_request(&b, &h, &m);
    ok(buf_is(&b, "GET /ws HTTP/1.1\r\n"
                  "Host: h:8080\r\n"
                  "Upgrade: websocket\r\n"
                  "Sec-WebSocket-Key: k==\r\n"
                  "X-Forwarded-For: 1.2.3.4\r\n"
                  "X-Forwarded-Proto: http\r\n"
                  "X-Forwarded-Host: h:8080\r\n"
                  "X-Request-Id: id\r\n"
                  "Connection: upgrade\r\n"
                  "\r\n"),
       "request: upgrade keeps Upgrade and sends Connection: upgrade");
    http_buf_finish(&b);

    /* The same head when not upgrading: Upgrade dropped, no Connection line. */
    m.upgrade = false;
    http_write_request(&b, &h, &m);
    ok(buf_is(&b, "GET /ws HTTP/1.1\r\n"
                  "Host: h:8080\r\n"
                  "Sec-WebSocket-Key: k==\r\n"
                  "X-Forwarded-For: 1.2.3.4\r\n"
                  "X-Forwarded-Proto: http\r\n"
                  "X-Forwarded-Host: h:8080\r\n"
                  "X-Request-Id: id\r\n"
                  "\r\n"),
       "request: same head not upgrading drops Upgrade");
    http_buf_finish(&b);
    http_head_finish(&h);

    /* Chunked request body: the client's Transfer-Encoding goes through (never hop-by-hop). */
    /* clang-format off */
    static const char *const nvte[] = {
        "Host", "h", "Transfer-Encoding", "gzip, chunked", "Connection", "Transfer-Encoding",
        NULL,
    };
    /* clang-format on */
    head_build(&h, "/u", nvte);
    m = (struct http_request_out){.method = "PUT",
                                  .client_ip = "1.2.3.4",
                                  .proto = "http",
                                  .request_id = "id",
                                  .chunked = true};
    http_write_request(&b, &h, &m);
    ok(buf_is(&b, "PUT /u HTTP/1.1\r\n"
                  "Host: h\r\n"
                  "Transfer-Encoding: gzip, chunked\r\n"
                  "X-Forwarded-For: 1.2.3.4\r\n"
                  "X-Forwarded-Proto: http\r\n"
                  "X-Forwarded-Host: h\r\n"
                  "X-Request-Id: id\r\n"
                  "\r\n"),
       "request: Transfer-Encoding exactly once, even when named by Connection");
    http_buf_finish(&b);
    http_head_finish(&h);

    /* The writer appends: whatever the buffer held stays in front. */
    head_build(&h, "/", nv10);
    m = (struct http_request_out){
        .method = "GET", .client_ip = "c", .proto = "http", .request_id = "r"};
    http_buf_adds(&b, "PREFIX");
    http_write_request(&b, &h, &m);
    ok(b.len > 6 && memcmp(b.p, "PREFIXGET / HTTP/1.1\r\n", 22) == 0, "request: appends");
    http_buf_finish(&b);
    http_head_finish(&h);
}

/* ---- response head ---- */

static void
test_write_response(void)
{
    struct http_head h;
    struct http_buf b = {0};
    struct http_response_out m;

    /* clang-format off */
    static const char *const nvlen[] = {
        "Content-Type", "text/plain", "Content-Length", "10", "Connection", "keep-alive",
        "Keep-Alive", "timeout=5", "Set-Cookie", "u=1", NULL,
    };
    /* clang-format on */
    head_build(&h, NULL, nvlen);
    m = (struct http_response_out){.status = 200, .body = HTTP_BODY_LENGTH};
    http_write_response(&b, &h, &m);
    ok(buf_is(&b, "HTTP/1.1 200 OK\r\n"
                  "Content-Type: text/plain\r\n"
                  "Content-Length: 10\r\n"
                  "Set-Cookie: u=1\r\n"
                  "\r\n"),
       "response: LENGTH/DEFAULT keeps Content-Length, drops hop-by-hop, no Connection");
    http_buf_finish(&b);

    m = (struct http_response_out){.status = 200,
                                   .body = HTTP_BODY_LENGTH,
                                   .conn = HTTP_CONN_KEEPALIVE,
                                   .set_cookie = "sy=green"};
    http_write_response(&b, &h, &m);
    ok(buf_is(&b, "HTTP/1.1 200 OK\r\n"
                  "Content-Type: text/plain\r\n"
                  "Content-Length: 10\r\n"
                  "Set-Cookie: u=1\r\n"
                  "Set-Cookie: sy=green\r\n"
                  "Connection: keep-alive\r\n"
                  "\r\n"),
       "response: KEEPALIVE + Set-Cookie added after the upstream's fields");
    http_buf_finish(&b);

    m = (struct http_response_out){
        .status = 200, .body = HTTP_BODY_LENGTH, .conn = HTTP_CONN_CLOSE};
    http_write_response(&b, &h, &m);
    ok(buf_is(&b, "HTTP/1.1 200 OK\r\n"
                  "Content-Type: text/plain\r\n"
                  "Content-Length: 10\r\n"
                  "Set-Cookie: u=1\r\n"
                  "Connection: close\r\n"
                  "\r\n"),
       "response: LENGTH/CLOSE");
    http_buf_finish(&b);

    m = (struct http_response_out){.status = 200, .body = HTTP_BODY_NONE};
    http_write_response(&b, &h, &m);
    ok(buf_is(&b, "HTTP/1.1 200 OK\r\n"
                  "Content-Type: text/plain\r\n"
                  "Content-Length: 10\r\n"
                  "Set-Cookie: u=1\r\n"
                  "\r\n"),
       "response: NONE (HEAD) keeps Content-Length");
    http_buf_finish(&b);

    m = (struct http_response_out){.status = 200, .body = HTTP_BODY_CLOSE, .conn = HTTP_CONN_CLOSE};
    http_write_response(&b, &h, &m);
    ok(buf_is(&b, "HTTP/1.1 200 OK\r\n"
                  "Content-Type: text/plain\r\n"
                  "Set-Cookie: u=1\r\n"
                  "Connection: close\r\n"
                  "\r\n"),
       "response: CLOSE drops Content-Length");
    http_buf_finish(&b);
    http_head_finish(&h);

    /* Upstream chunked. */
    /* clang-format off */
    static const char *const nvch[] = {
        "Transfer-Encoding", "chunked", "Trailer", "X-Sum", "TE", "x", "X-A", "1", NULL,
    };
    /* clang-format on */
    head_build(&h, NULL, nvch);
    m = (struct http_response_out){.status = 200, .body = HTTP_BODY_CHUNKED, .upstream_te = true};
    http_write_response(&b, &h, &m);
    ok(buf_is(&b, "HTTP/1.1 200 OK\r\n"
                  "Transfer-Encoding: chunked\r\n"
                  "X-A: 1\r\n"
                  "\r\n"),
       "response: CHUNKED with upstream TE keeps it and adds none");
    http_buf_finish(&b);

    m = (struct http_response_out){
        .status = 200, .body = HTTP_BODY_CLOSE, .upstream_te = true, .conn = HTTP_CONN_CLOSE};
    http_write_response(&b, &h, &m);
    ok(buf_is(&b, "HTTP/1.1 200 OK\r\n"
                  "X-A: 1\r\n"
                  "Connection: close\r\n"
                  "\r\n"),
       "response: CLOSE drops Transfer-Encoding (HTTP/1.0 client)");
    http_buf_finish(&b);
    http_head_finish(&h);

    /* Upstream close-delimited (no framing field): re-chunked for an HTTP/1.1 client. */
    /* clang-format off */
    static const char *const nvnone[] = {"X-A", "1", NULL};
    /* clang-format on */
    head_build(&h, NULL, nvnone);
    m = (struct http_response_out){.status = 404, .body = HTTP_BODY_CHUNKED};
    http_write_response(&b, &h, &m);
    ok(buf_is(&b, "HTTP/1.1 404 Not Found\r\n"
                  "X-A: 1\r\n"
                  "Transfer-Encoding: chunked\r\n"
                  "\r\n"),
       "response: CHUNKED without upstream TE adds Transfer-Encoding: chunked");
    http_buf_finish(&b);
    http_head_finish(&h);

    /* Custom reason phrase passes through; unknown status without reason says Unknown. */
    head_build(&h, NULL, nvnone);
    http_head_reason(&h, LIT("All "));
    http_head_reason(&h, LIT("Fine"));
    m = (struct http_response_out){.status = 299, .body = HTTP_BODY_NONE};
    http_write_response(&b, &h, &m);
    ok(buf_is(&b, "HTTP/1.1 299 All Fine\r\nX-A: 1\r\n\r\n"),
       "response: reason phrase pieces joined and kept");
    http_buf_finish(&b);
    http_head_finish(&h);
    head_build(&h, NULL, nvnone);
    http_write_response(&b, &h, &m);
    ok(buf_is(&b, "HTTP/1.1 299 Unknown\r\nX-A: 1\r\n\r\n"), "response: no reason → Unknown");
    http_buf_finish(&b);
    http_head_finish(&h);

    /* 101: Upgrade kept, Connection: Upgrade. */
    /* clang-format off */
    static const char *const nv101[] = {
        "Upgrade", "websocket", "Connection", "Upgrade", "Sec-WebSocket-Accept", "x=", NULL,
    };
    /* clang-format on */
    head_build(&h, NULL, nv101);
    m = (struct http_response_out){
        .status = 101, .body = HTTP_BODY_NONE, .conn = HTTP_CONN_UPGRADE};
    http_write_response(&b, &h, &m);
    ok(buf_is(&b, "HTTP/1.1 101 Switching Protocols\r\n"
                  "Upgrade: websocket\r\n"
                  "Sec-WebSocket-Accept: x=\r\n"
                  "Connection: Upgrade\r\n"
                  "\r\n"),
       "response: UPGRADE keeps Upgrade, Connection: Upgrade");
    http_buf_finish(&b);

    m = (struct http_response_out){.status = 200, .body = HTTP_BODY_LENGTH};
    http_write_response(&b, &h, &m);
    ok(buf_is(&b, "HTTP/1.1 200 OK\r\nSec-WebSocket-Accept: x=\r\n\r\n"),
       "response: not upgrading drops an upstream Upgrade");
    http_buf_finish(&b);
    http_head_finish(&h);

    /* A field the upstream names in Connection is removed from the response too. */
    /* clang-format off */
    static const char *const nvconn[] = {
        "Connection", "X-Internal", "X-Internal", "secret", "Content-Length", "0", NULL,
    };
    /* clang-format on */
    head_build(&h, NULL, nvconn);
    m = (struct http_response_out){.status = 204, .body = HTTP_BODY_NONE};
    http_write_response(&b, &h, &m);
    ok(buf_is(&b, "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"),
       "response: field named by the upstream's Connection dropped");
    http_buf_finish(&b);
    http_head_finish(&h);
}

/* ---- error pages ---- */

/* Checks that the Content-Length of a complete response matches what follows the head. */
static int
length_matches(const struct http_buf *b)
{
    const char *end = NULL;
    for (size_t i = 0; i + 4 <= b->len; i++)
        if (memcmp(b->p + i, "\r\n\r\n", 4) == 0) {
            end = b->p + i + 4;
            break;
        }
    if (end == NULL)
        return 0;
    const char *cl = NULL;
    for (size_t i = 0; i + 18 <= (size_t)(end - b->p); i++)
        if (memcmp(b->p + i, "\r\nContent-Length: ", 18) == 0) {
            cl = b->p + i + 18;
            break;
        }
    if (cl == NULL)
        return 0;
    size_t n = (size_t)strtoul(cl, NULL, 10);
    return n == (size_t)(b->p + b->len - end);
}

static void
test_write_error(void)
{
    struct http_buf b = {0};
    http_write_error(&b, 502, "abc");
    ok(buf_is(&b, "HTTP/1.1 502 Bad Gateway\r\n"
                  "Content-Type: text/plain\r\n"
                  "Content-Length: 32\r\n"
                  "Connection: close\r\n"
                  "X-Request-Id: abc\r\n"
                  "\r\n"
                  "502 Bad Gateway\n"
                  "request id: abc\n"),
       "error: 502 with request id, byte-exact");
    http_buf_finish(&b);

    http_write_error(&b, 400, "abc");
    ok(buf_is(&b, "HTTP/1.1 400 Bad Request\r\n"
                  "Content-Type: text/plain\r\n"
                  "Content-Length: 16\r\n"
                  "Connection: close\r\n"
                  "X-Request-Id: abc\r\n"
                  "\r\n"
                  "400 Bad Request\n"),
       "error: 4xx names the id only in X-Request-Id, not in the body");
    http_buf_finish(&b);

    http_write_error(&b, 431, NULL);
    ok(buf_is(&b, "HTTP/1.1 431 Request Header Fields Too Large\r\n"
                  "Content-Type: text/plain\r\n"
                  "Content-Length: 36\r\n"
                  "Connection: close\r\n"
                  "\r\n"
                  "431 Request Header Fields Too Large\n"),
       "error: without id, no X-Request-Id");
    http_buf_finish(&b);

    http_write_error(&b, 503, NULL);
    ok(!str_has(&b, "request id") && !str_has(&b, "X-Request-Id") && length_matches(&b),
       "error: 5xx without id has no id line");
    http_buf_finish(&b);

    /* Every status the proxy sends, with the longest id a client may choose. */
    char id[129];
    memset(id, 'z', 128);
    id[128] = '\0';
    static const int statuses[] = {400, 405, 408, 413, 414, 417, 431, 500, 502, 503, 504, 505};
    int bad = 0;
    for (size_t i = 0; i < sizeof(statuses) / sizeof(*statuses); i++) {
        http_write_error(&b, statuses[i], id);
        char line[64];
        snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", statuses[i], http_reason(statuses[i]));
        bool id_in_body = str_has(&b, "\nrequest id: zzzz");
        if (!length_matches(&b) || memcmp(b.p, line, strlen(line)) != 0 ||
            !str_has(&b, "\r\nConnection: close\r\n") || id_in_body != (statuses[i] >= 500) ||
            !str_has(&b, "\r\nX-Request-Id: zzzz")) {
            bad++;
            diag("status %d: %.*s", statuses[i], (int)b.len, b.p);
        }
        http_buf_finish(&b);
    }
    ok(bad == 0, "error: every status: Content-Length matches, close, id in body only for 5xx");
}

/* ---- reasons ---- */

static void
test_reason(void)
{
    ok(strcmp(http_reason(200), "OK") == 0 && strcmp(http_reason(413), "Content Too Large") == 0 &&
           strcmp(http_reason(505), "HTTP Version Not Supported") == 0 &&
           strcmp(http_reason(417), "Expectation Failed") == 0,
       "reason: standard phrases");
    ok(strcmp(http_reason(299), "Unknown") == 0 && strcmp(http_reason(0), "Unknown") == 0,
       "reason: unknown status");
}

/* ---- request ids ---- */

static void
test_request_id(void)
{
    ok(!http_request_id_sane("", 0), "id: empty refused");
    ok(http_request_id_sane("a", 1), "id: one char");
    char s[130];
    memset(s, 'A', sizeof(s));
    ok(http_request_id_sane(s, 128), "id: 128 chars kept");
    ok(!http_request_id_sane(s, 129), "id: 129 chars refused");
    const char *all = "azAZ09._:+/=-";
    ok(http_request_id_sane(all, strlen(all)), "id: every allowed class and punctuation");
    const char bad[] = {' ',        ',', ';',  '"',  '\'', '@',  '#',  '%',
                        '\\',       '*', '\t', '\r', '\n', '\0', 0x7f, (char)0x80,
                        (char)0xff, '{', '<',  '~',  '!',  '?',  '&'};
    int nbad = 0;
    for (size_t i = 0; i < sizeof(bad); i++) {
        char t[4] = {'a', bad[i], 'b', '\0'};
        if (http_request_id_sane(t, 3)) {
            nbad++;
            diag("id with byte 0x%02x accepted", (unsigned char)bad[i]);
        }
    }
    ok(nbad == 0, "id: each forbidden byte refused (%zu tried)", sizeof(bad));
    ok(http_request_id_sane("ab\0cd", 2) && !http_request_id_sane("ab\0cd", 5),
       "id: len bounds what is checked");

    char out[34];
    memset(out, 'X', sizeof(out));
    http_request_id_make(out, UINT64_C(0x0123456789abcdef), UINT64_C(0xfedcba9876543210));
    ok(strcmp(out, "0123456789abcdeffedcba9876543210") == 0 && out[33] == 'X',
       "id make: 32 lowercase hex digits, a then b, NUL at 32, nothing past");
    http_request_id_make(out, 0, 0);
    ok(strcmp(out, "00000000000000000000000000000000") == 0, "id make: zeros keep leading zeros");
    http_request_id_make(out, UINT64_MAX, 1);
    ok(strcmp(out, "ffffffffffffffff0000000000000001") == 0, "id make: extremes");
    ok(http_request_id_sane(out, strlen(out)), "id make: a made id is sane");
}

/* ---- head collection and limits ---- */

static void
test_head(void)
{
    struct http_head h;
    http_head_init(&h, 1024, 10, 0);
    ok(h.buf == NULL && h.fields == NULL && h.nfields == 0, "head: init allocates nothing");
    ok(http_head_url(&h, LIT("/a")) == HTTP_HEAD_OK &&
           http_head_url(&h, LIT("b?c")) == HTTP_HEAD_OK,
       "head: url pieces");
    ok(h.url_len == 5 && memcmp(h.buf + h.url_off, "/ab?c", 5) == 0, "head: url pieces joined");
    http_head_field(&h, LIT("Con"));
    http_head_field(&h, LIT("tent-"));
    http_head_field(&h, LIT("Type"));
    http_head_value(&h, LIT("text/"));
    http_head_value(&h, LIT("html"));
    http_head_field(&h, LIT("X-Empty"));
    http_head_value(&h, "", 0); /* llhttp reports an empty value as an empty piece */
    http_head_field(&h, LIT("Accept"));
    http_head_value(&h, LIT("*/*"));
    http_head_field(&h, LIT("content-type"));
    http_head_value(&h, LIT("b"));
    ok(h.nfields == 4, "head: 4 fields (name pieces are one field)");
    const struct http_field *f = &h.fields[0];
    ok(f->name_len == 12 && memcmp(http_field_name(&h, f), "Content-Type", 12) == 0,
       "head: name pieces joined");
    ok(f->value_len == 9 && memcmp(http_field_value(&h, f), "text/html", 9) == 0,
       "head: value pieces joined");
    f = &h.fields[1];
    ok(f->name_len == 7 && f->value_len == 0, "head: field without value has an empty value");
    f = &h.fields[2];
    ok(f->name_len == 6 && memcmp(http_field_name(&h, f), "Accept", 6) == 0 && f->value_len == 3 &&
           memcmp(http_field_value(&h, f), "*/*", 3) == 0,
       "head: field after an empty one is separate");
    unsigned n = 99;
    ok(http_head_get(&h, "CONTENT-TYPE", &n) == &h.fields[0] && n == 2,
       "head: get is case-insensitive, returns the first, counts all");
    ok(http_head_get(&h, "Content-Typ", &n) == NULL && n == 0, "head: get needs the whole name");
    ok(http_head_get(&h, "Accept", NULL) == &h.fields[2], "head: get with NULL count");
    ok(h.url_len == 5 && memcmp(h.buf + h.url_off, "/ab?c", 5) == 0,
       "head: url intact after fields");

    http_head_clear(&h);
    ok(h.nfields == 0 && h.url_len == 0 && h.len == 0 && h.wire_bytes == 0,
       "head: clear forgets the content");
    ok(http_head_url(&h, LIT("/next")) == HTTP_HEAD_OK && http_head_field(&h, LIT("A")) == 0 &&
           http_head_value(&h, LIT("1")) == 0 && h.nfields == 1 && h.url_len == 5 &&
           memcmp(h.buf + h.url_off, "/next", 5) == 0,
       "head: reusable after clear");
    http_head_finish(&h);
    ok(h.buf == NULL && h.fields == NULL && h.nfields == 0, "head: finish frees");

    http_head_init(&h, 1024, 10, 0);
    ok(http_head_value(&h, LIT("orphan")) == HTTP_HEAD_OK && h.nfields == 0,
       "head: a value before any name is ignored");
    http_head_finish(&h);

    /* Clear gives back a big buffer. */
    http_head_init(&h, 1 << 20, 1000, 0);
    char big[8192];
    memset(big, 'v', sizeof(big));
    http_head_field(&h, LIT("Big"));
    http_head_value(&h, big, sizeof(big));
    http_head_clear(&h);
    ok(h.buf == NULL && h.cap == 0, "head: clear frees a buffer over 4 KiB");
    http_head_finish(&h);
}

static void
test_head_limits(void)
{
    struct http_head h;

    /* URI limit: exactly max is fine, one more byte is 414, also across pieces. */
    http_head_init(&h, 1024, 10, 8);
    ok(http_head_url(&h, LIT("/1234567")) == HTTP_HEAD_OK, "limits: uri of exactly max_uri_bytes");
    ok(http_head_url(&h, LIT("8")) == HTTP_HEAD_URI_TOO_LONG,
       "limits: one more byte → URI_TOO_LONG");
    http_head_finish(&h);
    http_head_init(&h, 1024, 10, 8);
    ok(http_head_url(&h, LIT("/123")) == HTTP_HEAD_OK &&
           http_head_url(&h, LIT("45678")) == HTTP_HEAD_URI_TOO_LONG,
       "limits: uri pieces add up (4 + 5 > 8)");
    http_head_finish(&h);
    http_head_init(&h, 16, 10, 0);
    ok(http_head_url(&h, LIT("/123456789012345")) == HTTP_HEAD_OK &&
           http_head_url(&h, LIT("6")) == HTTP_HEAD_TOO_BIG,
       "limits: max_uri_bytes 0 → only the head limit applies (TOO_BIG)");
    http_head_finish(&h);

    /* Byte limit: "/" (1) + "Host"+4 (8) + 11-byte value = 20. */
    http_head_init(&h, 20, 10, 0);
    ok(http_head_url(&h, LIT("/")) == HTTP_HEAD_OK && http_head_field(&h, LIT("Host")) == 0 &&
           http_head_value(&h, LIT("abcdefghijk")) == HTTP_HEAD_OK && h.wire_bytes == 20,
       "limits: a head of exactly max_bytes is accepted");
    ok(http_head_field(&h, LIT("X")) == HTTP_HEAD_TOO_BIG,
       "limits: the next field's overhead → TOO_BIG");
    http_head_finish(&h);
    http_head_init(&h, 20, 10, 0);
    http_head_url(&h, LIT("/"));
    http_head_field(&h, LIT("Host"));
    http_head_value(&h, LIT("abcdefghij"));
    ok(http_head_value(&h, LIT("kl")) == HTTP_HEAD_TOO_BIG, "limits: value piece over → TOO_BIG");
    http_head_finish(&h);
    http_head_init(&h, 20, 10, 0);
    http_head_url(&h, LIT("/"));
    ok(http_head_field(&h, LIT("Host-Is-Too-Long")) == HTTP_HEAD_TOO_BIG,
       "limits: name over → TOO_BIG");
    http_head_finish(&h);
    http_head_init(&h, 20, 10, 0);
    http_head_reason(&h, LIT("0123456789"));
    ok(http_head_reason(&h, LIT("0123456789X")) == HTTP_HEAD_TOO_BIG,
       "limits: reason counts towards the head");
    http_head_finish(&h);

    /* Field count: a name in pieces is one field, a third name is one too many. */
    http_head_init(&h, 1024, 2, 0);
    ok(http_head_field(&h, LIT("A")) == 0 && http_head_value(&h, LIT("1")) == 0 &&
           http_head_field(&h, LIT("B")) == 0 && http_head_field(&h, LIT("b")) == 0,
       "limits: max_fields fields, the last name in two pieces");
    ok(h.nfields == 2 && h.fields[1].name_len == 2, "limits: the pieces joined into Bb");
    ok(http_head_value(&h, LIT("2")) == HTTP_HEAD_OK, "limits: its value is fine");
    ok(http_head_field(&h, LIT("C")) == HTTP_HEAD_TOO_MANY, "limits: third field → TOO_MANY");
    ok(h.nfields == 2, "limits: the refused field is not stored");
    http_head_finish(&h);

    /* Memory follows the limit: the buffer never grows past twice what is accepted. */
    http_head_init(&h, 3000, 1000, 0);
    char piece[100];
    memset(piece, 'x', sizeof(piece));
    enum http_head_result r = HTTP_HEAD_OK;
    int rounds = 0;
    while (r == HTTP_HEAD_OK && rounds < 1000) {
        r = http_head_field(&h, piece, 10);
        if (r == HTTP_HEAD_OK)
            r = http_head_value(&h, piece, sizeof(piece));
        rounds++;
    }
    ok(r == HTTP_HEAD_TOO_BIG && h.wire_bytes > 3000 && h.len <= 3000 && h.cap <= 4096,
       "limits: storage bounded by the byte limit (len %zu cap %zu)", h.len, h.cap);
    http_head_finish(&h);
}

int
main(void)
{
    test_buf();
    test_list_has();
    test_hop_by_hop();
    test_write_request();
    test_write_response();
    test_write_error();
    test_reason();
    test_request_id();
    test_head();
    test_head_limits();
    return done_testing();
}
