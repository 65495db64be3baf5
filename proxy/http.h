/* proxy/http.h — HTTP/1.1 message heads: collecting the fields llhttp reports within limits,
 * hop-by-hop rules, and writing the heads switchyard sends on each side. Pure: no I/O. */
#ifndef PROXY_HTTP_H
#define PROXY_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A growable byte buffer. */
struct http_buf {
    char *p; /* owned */
    size_t len;
    size_t cap;
};

/* Makes room for len more bytes (doubling). */
void http_buf_grow(struct http_buf *b, size_t len);

/* Inline: a request head is written with some 60 of these (a call each was 5% of a small
 * request's instructions). */
static inline void
http_buf_add(struct http_buf *b, const void *data, size_t len)
{
    if (len == 0)
        return;
    if (b->len + len > b->cap)
        http_buf_grow(b, len);
    memcpy(b->p + b->len, data, len);
    b->len += len;
}

void http_buf_adds(struct http_buf *b, const char *s);
/* Appends a body piece as it goes on the wire: one chunk (size line, data, CRLF) when
 * `chunked`, as it is otherwise (sock_add_body() does the same into an evbuffer). */
void http_buf_add_body(struct http_buf *b, const char *at, size_t len, bool chunked);
void http_buf_finish(struct http_buf *b);

enum http_head_result {
    HTTP_HEAD_OK = 0,
    HTTP_HEAD_TOO_BIG,      /* the head is over its byte limit (431) */
    HTTP_HEAD_TOO_MANY,     /* more fields than allowed (431) */
    HTTP_HEAD_URI_TOO_LONG, /* the request target is over its limit (414) */
};

struct http_field {
    uint32_t name_off;
    uint32_t name_len;
    uint32_t value_off;
    uint32_t value_len;
};

/* The head of one message as received: request target or reason phrase, and the fields in
 * arrival order. Pieces reported in several callbacks are joined. */
struct http_head {
    char *buf; /* owned: names, values, target, reason */
    size_t len;
    size_t cap;
    size_t wire_bytes; /* approximate size on the wire, checked against max_bytes */
    size_t max_bytes;
    size_t max_uri_bytes;
    struct http_field *fields; /* owned */
    uint32_t nfields;
    uint32_t cap_fields;
    uint32_t max_fields;
    uint32_t url_off;
    uint32_t url_len;
    uint32_t reason_off;
    uint32_t reason_len;
    int last; /* which piece the previous callback added */
};

/* Sets up an empty head with limits (max_uri_bytes 0 = no separate limit). Allocates nothing. */
void http_head_init(struct http_head *h, size_t max_bytes, uint32_t max_fields,
                    size_t max_uri_bytes);

/* Forgets the content; keeps a small buffer for the next message. */
void http_head_clear(struct http_head *h);

/* Gives h (just initialised, empty) the buffers of old (within http_head_clear's keep limits)
 * and leaves old empty: a recycled connection keeps its allocations. */
void http_head_take_storage(struct http_head *h, struct http_head *old);

/* Frees the buffers (the head may be initialised again). */
void http_head_finish(struct http_head *h);

enum http_head_result http_head_url(struct http_head *h, const char *at, size_t len);
enum http_head_result http_head_reason(struct http_head *h, const char *at, size_t len);
enum http_head_result http_head_field(struct http_head *h, const char *at, size_t len);
enum http_head_result http_head_value(struct http_head *h, const char *at, size_t len);

static inline const char *
http_field_name(const struct http_head *h, const struct http_field *f)
{
    return h->buf + f->name_off;
}

static inline const char *
http_field_value(const struct http_head *h, const struct http_field *f)
{
    return h->buf + f->value_off;
}

/* The first field named `name` (case-insensitive), or NULL; *count (may be NULL) receives how
 * many fields have that name. */
const struct http_field *http_head_get(const struct http_head *h, const char *name,
                                       unsigned *count);

/* Whether a comma-separated list (a Connection or TE value) holds token, case-insensitive. */
bool http_list_has(const char *list, size_t len, const char *token, size_t token_len);

/* Whether the field is hop-by-hop in h: Connection, Keep-Alive, Proxy-Connection, TE, Trailer,
 * Upgrade (unless upgrading), or named by a Connection field. */
bool http_is_hop_by_hop(const struct http_head *h, const struct http_field *f, bool upgrading);

/* Whether a client's X-Request-Id is kept: 1..128 chars of [A-Za-z0-9._:+/=-]. */
bool http_request_id_sane(const char *s, size_t len);

/* Writes 32 lowercase hex digits and a NUL from two random words. */
void http_request_id_make(char out[33], uint64_t a, uint64_t b);

/* The standard reason phrase of a status ("Unknown" when none). */
const char *http_reason(int status);

enum http_body {
    HTTP_BODY_NONE = 0,
    HTTP_BODY_LENGTH,  /* Content-Length passed through */
    HTTP_BODY_CHUNKED, /* chunked on the wire */
    HTTP_BODY_CLOSE,   /* delimited by closing the connection */
};

enum http_conn {
    HTTP_CONN_DEFAULT = 0, /* no Connection field */
    HTTP_CONN_CLOSE,
    HTTP_CONN_KEEPALIVE, /* for HTTP/1.0 clients */
    HTTP_CONN_UPGRADE,
};

/* What the proxy adds to a request it forwards. */
struct http_request_out {
    const char *method;
    const char *client_ip;  /* textual address of the client */
    const char *proto;      /* "http" or "https" */
    const char *request_id; /* the id to send */
    const char *strip;      /* a field to drop (the preview header), or NULL */
    const char *strip2;     /* another (the preview token header), or NULL */
    bool upgrade;           /* keep Upgrade and send Connection: upgrade */
    bool chunked;           /* the body is chunked (the client's single, chunked-final
                             * Transfer-Encoding field passes through; we re-chunk) */
};

/* Writes the request head for the upstream: request line (always HTTP/1.1), the fields of h in
 * order minus hop-by-hop and minus the X-Forwarded-* and X-Request-Id fields, then
 * X-Forwarded-For (earlier values joined, client appended), X-Forwarded-Proto, X-Forwarded-Host
 * (from Host), X-Request-Id, and Connection: upgrade when upgrading. */
void http_write_request(struct http_buf *out, const struct http_head *h,
                        const struct http_request_out *m);

/* What the proxy changes in a response it relays. */
struct http_response_out {
    int status;
    enum http_body body; /* framing towards the client */
    bool upstream_te;    /* the upstream sent Transfer-Encoding */
    enum http_conn conn;
    const char *set_cookie; /* a Set-Cookie value to add, or NULL */
};

/* Writes the response head for the client: "HTTP/1.1 status reason", the fields of h minus
 * hop-by-hop, with framing fixed for m->body: HTTP_BODY_CHUNKED keeps the upstream's
 * Transfer-Encoding or adds "chunked"; HTTP_BODY_CLOSE drops Transfer-Encoding and
 * Content-Length; the Connection field per m->conn. */
void http_write_response(struct http_buf *out, const struct http_head *h,
                         const struct http_response_out *m);

/* Writes a complete local response with `Connection: close`: status, a text body naming the
 * request id when given (5xx), and X-Request-Id. */
void http_write_error(struct http_buf *out, int status, const char *request_id);

#endif
