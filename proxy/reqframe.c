/* proxy/reqframe.c — request framing with llhttp in strict mode, plus what llhttp leaves to us:
 * header limits (431/414), body limit (413), Host rules, Transfer-Encoding rules for smuggling,
 * obs-fold, Expect, HTTP versions (505) and CONNECT (405). */
#include "proxy/reqframe.h"

#include <pthread.h>
#include <string.h>
#include <strings.h>

static int on_message_begin(llhttp_t *p);
static int on_url(llhttp_t *p, const char *at, size_t len);
static int on_header_field(llhttp_t *p, const char *at, size_t len);
static int on_header_value(llhttp_t *p, const char *at, size_t len);
static int on_headers_complete(llhttp_t *p);
static int on_body(llhttp_t *p, const char *at, size_t len);
static int on_message_complete(llhttp_t *p);

static llhttp_settings_t settings;
static pthread_once_t settings_once = PTHREAD_ONCE_INIT;

static void
settings_init(void)
{
    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_url = on_url;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
}

void
reqframe_init(struct reqframe *f, const struct reqframe_ops *ops, void *arg)
{
    pthread_once(&settings_once, settings_init);
    memset(f, 0, sizeof(*f));
    f->ops = ops;
    f->arg = arg;
    f->limits = (struct reqframe_limits){
        .max_header_bytes = 32 * 1024, .max_headers = 100, .max_uri_bytes = 8 * 1024};
    llhttp_init(&f->parser, HTTP_REQUEST, &settings);
    f->parser.data = f;
    http_head_init(&f->head, f->limits.max_header_bytes, f->limits.max_headers,
                   f->limits.max_uri_bytes);
}

void
reqframe_set_limits(struct reqframe *f, const struct reqframe_limits *limits)
{
    f->limits = *limits;
    f->head.max_bytes = limits->max_header_bytes;
    f->head.max_fields = limits->max_headers;
    f->head.max_uri_bytes = limits->max_uri_bytes;
}

void
reqframe_finish(struct reqframe *f)
{
    http_head_finish(&f->head);
}

const char *
reqframe_method(const struct reqframe *f)
{
    return llhttp_method_name((llhttp_method_t)f->parser.method);
}

static int
reject(struct reqframe *f, int status)
{
    f->status = status;
    llhttp_set_error_reason(&f->parser, "rejected");
    return HPE_USER;
}

static int
head_result(struct reqframe *f, enum http_head_result r)
{
    switch (r) {
    case HTTP_HEAD_OK:
        return 0;
    case HTTP_HEAD_URI_TOO_LONG:
        return reject(f, 414);
    case HTTP_HEAD_TOO_BIG:
    case HTTP_HEAD_TOO_MANY:
        return reject(f, 431);
    }
    return reject(f, 400);
}

static int
on_message_begin(llhttp_t *p)
{
    struct reqframe *f = p->data;
    f->in_value = false;
    f->status = 0;
    f->body_bytes = 0;
    f->http10 = f->head_method = f->upgrade = f->chunked = f->has_body = f->keepalive = false;
    if (f->ops->begin) {
        int st = f->ops->begin(f->arg);
        if (st)
            return reject(f, st);
    }
    return 0;
}

static int
on_url(llhttp_t *p, const char *at, size_t len)
{
    struct reqframe *f = p->data;
    return head_result(f, http_head_url(&f->head, at, len));
}

static int
on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct reqframe *f = p->data;
    f->in_value = false;
    return head_result(f, http_head_field(&f->head, at, len));
}

static int
on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct reqframe *f = p->data;
    if (f->in_value && !(at == f->buf_start && f->value_at_end))
        return reject(f, 400); /* obs-fold (RFC 9112 §5.2) */
    f->in_value = true;
    f->value_at_end = at + len == f->buf_end;
    return head_result(f, http_head_value(&f->head, at, len));
}

static int
on_headers_complete(llhttp_t *p)
{
    struct reqframe *f = p->data;
    if (p->http_major != 1 || p->http_minor > 1)
        return reject(f, 505);
    f->http10 = p->http_minor == 0;
    if (p->method == HTTP_CONNECT)
        return reject(f, 405);
    unsigned nhost = 0;
    http_head_get(&f->head, "Host", &nhost);
    if (nhost > 1 || (!f->http10 && nhost == 0))
        return reject(f, 400);
    if (p->flags & F_TRANSFER_ENCODING) {
        /* HTTP/1.0 has no chunked coding, and a final coding other than chunked leaves the
         * length unknowable (RFC 9112 §6.3): both are smuggling vectors. */
        if (f->http10 || !(p->flags & F_CHUNKED))
            return reject(f, 400);
    }
    f->chunked = (p->flags & F_CHUNKED) != 0;
    f->has_body = f->chunked || ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
    if (f->limits.max_body_bytes && (p->flags & F_CONTENT_LENGTH) && !f->chunked &&
        p->content_length > f->limits.max_body_bytes)
        return reject(f, 413);
    unsigned nexpect = 0;
    const struct http_field *expect = http_head_get(&f->head, "Expect", &nexpect);
    if (expect && (nexpect > 1 || expect->value_len != 12 ||
                   strncasecmp(http_field_value(&f->head, expect), "100-continue", 12) != 0))
        return reject(f, 417);
    f->head_method = p->method == HTTP_HEAD;
    f->upgrade = p->upgrade != 0;
    f->upgrade_pending = f->upgrade;
    f->keepalive = llhttp_should_keep_alive(p) != 0;
    if (f->ops->head) {
        int st = f->ops->head(f->arg);
        if (st)
            return reject(f, st);
    }
    return 0;
}

static int
on_body(llhttp_t *p, const char *at, size_t len)
{
    struct reqframe *f = p->data;
    f->body_bytes += len;
    if (f->limits.max_body_bytes && f->body_bytes > f->limits.max_body_bytes)
        return reject(f, 413);
    if (f->ops->body) {
        int st = f->ops->body(f->arg, at, len);
        if (st)
            return reject(f, st);
    }
    return 0;
}

static int
on_message_complete(llhttp_t *p)
{
    struct reqframe *f = p->data;
    if (f->ops->complete)
        f->ops->complete(f->arg);
    /* One request at a time: pipelined requests wait, answered in order. */
    return HPE_PAUSED;
}

enum reqframe_result
reqframe_execute(struct reqframe *f, const char *data, size_t len, size_t *used)
{
    *used = 0;
    f->buf_start = data;
    f->buf_end = data + len;
    llhttp_errno_t err = llhttp_execute(&f->parser, data, len);
    if (err == HPE_PAUSED_UPGRADE && !f->upgrade_pending) {
        /* An upgrade request that was answered without 101: go on with HTTP. */
        const char *pos = llhttp_get_error_pos(&f->parser);
        size_t done = (pos && pos >= data && pos <= data + len) ? (size_t)(pos - data) : 0;
        llhttp_resume_after_upgrade(&f->parser);
        size_t more = 0;
        enum reqframe_result r = reqframe_execute(f, data + done, len - done, &more);
        *used = done + more;
        return r;
    }
    if (err == HPE_OK) {
        *used = len;
        return REQFRAME_OK;
    }
    const char *pos = llhttp_get_error_pos(&f->parser);
    *used = (pos && pos >= data && pos <= data + len) ? (size_t)(pos - data) : 0;
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE)
        return REQFRAME_PAUSED;
    if (f->status == 0)
        f->status = err == HPE_INVALID_VERSION ? 505 : 400;
    return REQFRAME_ERROR;
}

void
reqframe_resume(struct reqframe *f)
{
    http_head_clear(&f->head);
    f->in_value = false;
    if (llhttp_get_errno(&f->parser) == HPE_PAUSED_UPGRADE) {
        f->upgrade_pending = false;
        llhttp_resume_after_upgrade(&f->parser);
    } else {
        f->upgrade_pending = false;
        llhttp_resume(&f->parser);
    }
}
