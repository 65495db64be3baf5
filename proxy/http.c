/* proxy/http.c — collecting message heads within limits, hop-by-hop rules, and writing the
 * request and response heads switchyard forwards. */
#include "proxy/http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/xalloc.h"

enum piece {
    PIECE_NONE = 0,
    PIECE_URL,
    PIECE_REASON,
    PIECE_FIELD,
    PIECE_VALUE,
};

/* Per field, ": " and CRLF on the wire besides name and value. */
#define FIELD_OVERHEAD 4
#define KEEP_BUF_BYTES 4096

void
http_buf_grow(struct http_buf *b, size_t len)
{
    size_t cap = b->cap ? b->cap : 512;
    while (cap < b->len + len)
        cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

void
http_buf_adds(struct http_buf *b, const char *s)
{
    http_buf_add(b, s, strlen(s));
}

void
http_buf_add_body(struct http_buf *b, const char *at, size_t len, bool chunked)
{
    if (!chunked) {
        http_buf_add(b, at, len);
        return;
    }
    char line[24];
    int n = snprintf(line, sizeof(line), "%zx\r\n", len);
    http_buf_add(b, line, (size_t)n);
    http_buf_add(b, at, len);
    http_buf_add(b, "\r\n", 2);
}

void
http_buf_finish(struct http_buf *b)
{
    xfree(&b->p);
    b->len = b->cap = 0;
}

void
http_head_init(struct http_head *h, size_t max_bytes, uint32_t max_fields, size_t max_uri_bytes)
{
    memset(h, 0, sizeof(*h));
    h->max_bytes = max_bytes;
    h->max_fields = max_fields;
    h->max_uri_bytes = max_uri_bytes;
}

void
http_head_clear(struct http_head *h)
{
    if (h->cap > KEEP_BUF_BYTES) {
        xfree(&h->buf);
        h->cap = 0;
    }
    if (h->cap_fields > 64) {
        xfree(&h->fields);
        h->cap_fields = 0;
    }
    h->len = 0;
    h->wire_bytes = 0;
    h->nfields = 0;
    h->url_off = h->url_len = 0;
    h->reason_off = h->reason_len = 0;
    h->last = PIECE_NONE;
}

void
http_head_take_storage(struct http_head *h, struct http_head *old)
{
    http_head_clear(old); /* frees what is over the keep limits */
    h->buf = old->buf;
    h->cap = old->cap;
    h->fields = old->fields;
    h->cap_fields = old->cap_fields;
    old->buf = NULL;
    old->fields = NULL;
    old->cap = old->cap_fields = 0;
}

void
http_head_finish(struct http_head *h)
{
    xfree(&h->buf);
    xfree(&h->fields);
    h->cap = h->len = 0;
    h->cap_fields = h->nfields = 0;
    h->last = PIECE_NONE;
}

/* Appends bytes to the storage; the limit was checked by the caller, so growth is bounded. */
static void
store(struct http_head *h, const char *at, size_t len)
{
    if (len == 0)
        return;
    if (h->len + len > h->cap) {
        size_t cap = h->cap ? h->cap : 1024;
        while (cap < h->len + len)
            cap *= 2;
        h->buf = xrealloc(h->buf, cap);
        h->cap = cap;
    }
    memcpy(h->buf + h->len, at, len);
    h->len += len;
}

static enum http_head_result
account(struct http_head *h, size_t len)
{
    h->wire_bytes += len;
    if (h->wire_bytes > h->max_bytes)
        return HTTP_HEAD_TOO_BIG;
    return HTTP_HEAD_OK;
}

enum http_head_result
http_head_url(struct http_head *h, const char *at, size_t len)
{
    if (h->last != PIECE_URL) {
        h->url_off = (uint32_t)h->len;
        h->url_len = 0;
        h->last = PIECE_URL;
    }
    if (h->max_uri_bytes && h->url_len + len > h->max_uri_bytes)
        return HTTP_HEAD_URI_TOO_LONG;
    if (account(h, len) != HTTP_HEAD_OK)
        return HTTP_HEAD_TOO_BIG;
    store(h, at, len);
    h->url_len += (uint32_t)len;
    return HTTP_HEAD_OK;
}

enum http_head_result
http_head_reason(struct http_head *h, const char *at, size_t len)
{
    if (h->last != PIECE_REASON) {
        h->reason_off = (uint32_t)h->len;
        h->reason_len = 0;
        h->last = PIECE_REASON;
    }
    if (account(h, len) != HTTP_HEAD_OK)
        return HTTP_HEAD_TOO_BIG;
    store(h, at, len);
    h->reason_len += (uint32_t)len;
    return HTTP_HEAD_OK;
}

enum http_head_result
http_head_field(struct http_head *h, const char *at, size_t len)
{
    if (h->last != PIECE_FIELD) {
        if (h->nfields >= h->max_fields)
            return HTTP_HEAD_TOO_MANY;
        if (account(h, FIELD_OVERHEAD) != HTTP_HEAD_OK)
            return HTTP_HEAD_TOO_BIG;
        if (h->nfields == h->cap_fields) {
            h->cap_fields = h->cap_fields ? h->cap_fields * 2 : 16;
            h->fields = xrealloc(h->fields, h->cap_fields * sizeof(*h->fields));
        }
        struct http_field *f = &h->fields[h->nfields++];
        f->name_off = (uint32_t)h->len;
        f->name_len = 0;
        f->value_off = (uint32_t)h->len;
        f->value_len = 0;
        h->last = PIECE_FIELD;
    }
    if (account(h, len) != HTTP_HEAD_OK)
        return HTTP_HEAD_TOO_BIG;
    store(h, at, len);
    h->fields[h->nfields - 1].name_len += (uint32_t)len;
    h->fields[h->nfields - 1].value_off = (uint32_t)h->len;
    return HTTP_HEAD_OK;
}

enum http_head_result
http_head_value(struct http_head *h, const char *at, size_t len)
{
    if (h->nfields == 0)
        return HTTP_HEAD_OK; /* llhttp never reports a value before a name */
    struct http_field *f = &h->fields[h->nfields - 1];
    if (h->last != PIECE_VALUE) {
        f->value_off = (uint32_t)h->len;
        f->value_len = 0;
        h->last = PIECE_VALUE;
    }
    if (account(h, len) != HTTP_HEAD_OK)
        return HTTP_HEAD_TOO_BIG;
    store(h, at, len);
    f->value_len += (uint32_t)len;
    return HTTP_HEAD_OK;
}

/* The first byte is compared inline, without a call: most names differ there. Every name looked
 * for starts with a letter, for which | 0x20 folds the case exactly. */
static inline bool
name_is(const struct http_head *h, const struct http_field *f, const char *name, size_t len)
{
    return f->name_len == len && len > 0 &&
           ((unsigned char)h->buf[f->name_off] | 0x20) == ((unsigned char)name[0] | 0x20) &&
           strncasecmp(h->buf + f->name_off + 1, name + 1, len - 1) == 0;
}

#define NAME_IS(h, f, lit) name_is((h), (f), (lit), sizeof(lit) - 1)

const struct http_field *
http_head_get(const struct http_head *h, const char *name, unsigned *count)
{
    size_t len = strlen(name);
    const struct http_field *first = NULL;
    unsigned n = 0;
    for (uint32_t i = 0; i < h->nfields; i++) {
        if (name_is(h, &h->fields[i], name, len)) {
            if (first == NULL)
                first = &h->fields[i];
            n++;
        }
    }
    if (count)
        *count = n;
    return first;
}

static bool
is_ows(char c)
{
    return c == ' ' || c == '\t';
}

bool
http_list_has(const char *list, size_t len, const char *token, size_t token_len)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (is_ows(list[i]) || list[i] == ','))
            i++;
        size_t start = i;
        while (i < len && list[i] != ',')
            i++;
        size_t end = i;
        while (end > start && is_ows(list[end - 1]))
            end--;
        if (end - start == token_len && strncasecmp(list + start, token, token_len) == 0)
            return true;
    }
    return false;
}

bool
http_is_hop_by_hop(const struct http_head *h, const struct http_field *f, bool upgrading)
{
    if (NAME_IS(h, f, "Connection") || NAME_IS(h, f, "Keep-Alive") ||
        NAME_IS(h, f, "Proxy-Connection") || NAME_IS(h, f, "TE") || NAME_IS(h, f, "Trailer"))
        return true;
    if (NAME_IS(h, f, "Upgrade"))
        return !upgrading;
    /* A field named by any Connection field is hop-by-hop too, whatever its name (RFC 9110
     * §7.6.1) — except the framing fields, which a Connection field cannot make disappear. */
    if (NAME_IS(h, f, "Content-Length") || NAME_IS(h, f, "Transfer-Encoding") ||
        NAME_IS(h, f, "Host"))
        return false;
    for (uint32_t i = 0; i < h->nfields; i++) {
        const struct http_field *c = &h->fields[i];
        if (NAME_IS(h, c, "Connection") &&
            http_list_has(h->buf + c->value_off, c->value_len, h->buf + f->name_off, f->name_len))
            return true;
    }
    return false;
}

bool
http_request_id_sane(const char *s, size_t len)
{
    if (len == 0 || len > 128)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool okc = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '.' || c == '_' || c == ':' || c == '+' || c == '/' || c == '=' || c == '-';
        if (!okc)
            return false;
    }
    return true;
}

void
http_request_id_make(char out[33], uint64_t a, uint64_t b)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[i] = hex[(a >> (60 - 4 * i)) & 0xf];
        out[16 + i] = hex[(b >> (60 - 4 * i)) & 0xf];
    }
    out[32] = '\0';
}

const char *
http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 417:
        return "Expectation Failed";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

static void
add_field(struct http_buf *out, const struct http_head *h, const struct http_field *f)
{
    http_buf_add(out, h->buf + f->name_off, f->name_len);
    http_buf_add(out, ": ", 2);
    http_buf_add(out, h->buf + f->value_off, f->value_len);
    http_buf_add(out, "\r\n", 2);
}

static void
add_line(struct http_buf *out, const char *name, const char *value, size_t value_len)
{
    http_buf_adds(out, name);
    http_buf_add(out, ": ", 2);
    http_buf_add(out, value, value_len);
    http_buf_add(out, "\r\n", 2);
}

void
http_write_request(struct http_buf *out, const struct http_head *h,
                   const struct http_request_out *m)
{
    http_buf_adds(out, m->method);
    http_buf_add(out, " ", 1);
    http_buf_add(out, h->buf + h->url_off, h->url_len);
    http_buf_add(out, " HTTP/1.1\r\n", 11);

    const struct http_field *host = NULL;
    size_t strip_len = m->strip ? strlen(m->strip) : 0;
    size_t strip2_len = m->strip2 ? strlen(m->strip2) : 0;
    bool have_xff = false;
    for (uint32_t i = 0; i < h->nfields; i++) {
        const struct http_field *f = &h->fields[i];
        if (http_is_hop_by_hop(h, f, m->upgrade))
            continue;
        if (NAME_IS(h, f, "X-Forwarded-For")) {
            have_xff = true;
            continue;
        }
        if (NAME_IS(h, f, "X-Forwarded-Proto") || NAME_IS(h, f, "X-Forwarded-Host") ||
            NAME_IS(h, f, "X-Request-Id"))
            continue;
        if (m->strip && name_is(h, f, m->strip, strip_len))
            continue;
        if (m->strip2 && name_is(h, f, m->strip2, strip2_len))
            continue;
        if (host == NULL && NAME_IS(h, f, "Host"))
            host = f;
        add_field(out, h, f);
    }
    /* An HTTP/1.0 request may come without Host; the HTTP/1.1 request we send must have one
     * (RFC 9112 §3.2: empty when the target has no authority), or the server refuses it. */
    if (host == NULL)
        http_buf_adds(out, "Host: \r\n");

    /* X-Forwarded-For: every earlier value in order, then this client. */
    http_buf_adds(out, "X-Forwarded-For: ");
    if (have_xff) {
        for (uint32_t i = 0; i < h->nfields; i++) {
            const struct http_field *f = &h->fields[i];
            if (NAME_IS(h, f, "X-Forwarded-For") && f->value_len > 0) {
                http_buf_add(out, h->buf + f->value_off, f->value_len);
                http_buf_add(out, ", ", 2);
            }
        }
    }
    http_buf_adds(out, m->client_ip);
    http_buf_add(out, "\r\n", 2);
    add_line(out, "X-Forwarded-Proto", m->proto, strlen(m->proto));
    if (host)
        add_line(out, "X-Forwarded-Host", h->buf + host->value_off, host->value_len);
    add_line(out, "X-Request-Id", m->request_id, strlen(m->request_id));
    if (m->upgrade)
        http_buf_adds(out, "Connection: upgrade\r\n");
    http_buf_add(out, "\r\n", 2);
}

void
http_write_response(struct http_buf *out, const struct http_head *h,
                    const struct http_response_out *m)
{
    /* The status is 100..999 (llhttp and our own answers): three digits, no printf (a
     * snprintf here was 3% of the instructions of a small request). */
    unsigned st = m->status >= 100 && m->status <= 999 ? (unsigned)m->status : 500;
    char line[] = "HTTP/1.1 000 ";
    line[9] = (char)('0' + st / 100);
    line[10] = (char)('0' + st / 10 % 10);
    line[11] = (char)('0' + st % 10);
    http_buf_add(out, line, sizeof(line) - 1);
    if (h->reason_len)
        http_buf_add(out, h->buf + h->reason_off, h->reason_len);
    else
        http_buf_adds(out, http_reason(m->status));
    http_buf_add(out, "\r\n", 2);

    bool upgrading = m->conn == HTTP_CONN_UPGRADE;
    for (uint32_t i = 0; i < h->nfields; i++) {
        const struct http_field *f = &h->fields[i];
        if (http_is_hop_by_hop(h, f, upgrading))
            continue;
        if (m->body == HTTP_BODY_CLOSE &&
            (NAME_IS(h, f, "Transfer-Encoding") || NAME_IS(h, f, "Content-Length")))
            continue;
        add_field(out, h, f);
    }
    if (m->body == HTTP_BODY_CHUNKED && !m->upstream_te)
        http_buf_adds(out, "Transfer-Encoding: chunked\r\n");
    if (m->set_cookie)
        add_line(out, "Set-Cookie", m->set_cookie, strlen(m->set_cookie));
    switch (m->conn) {
    case HTTP_CONN_DEFAULT:
        break;
    case HTTP_CONN_CLOSE:
        http_buf_adds(out, "Connection: close\r\n");
        break;
    case HTTP_CONN_KEEPALIVE:
        http_buf_adds(out, "Connection: keep-alive\r\n");
        break;
    case HTTP_CONN_UPGRADE:
        http_buf_adds(out, "Connection: Upgrade\r\n");
        break;
    }
    http_buf_add(out, "\r\n", 2);
}

void
http_write_error(struct http_buf *out, int status, const char *request_id)
{
    char body[256];
    int blen;
    /* Ids are at most 128 bytes (http_request_id_sane); never trust that with a fixed buffer. */
    if (request_id && strlen(request_id) > 128)
        request_id = NULL;
    if (request_id && status >= 500)
        blen = snprintf(body, sizeof(body), "%d %s\nrequest id: %s\n", status, http_reason(status),
                        request_id);
    else
        blen = snprintf(body, sizeof(body), "%d %s\n", status, http_reason(status));
    char head[512];
    int hlen = snprintf(head, sizeof(head),
                        "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                        "Connection: close\r\n%s%s%s\r\n",
                        status, http_reason(status), blen, request_id ? "X-Request-Id: " : "",
                        request_id ? request_id : "", request_id ? "\r\n" : "");
    http_buf_add(out, head, (size_t)hlen);
    http_buf_add(out, body, (size_t)blen);
}
