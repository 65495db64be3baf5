/* proxy/respframe.c — response framing with llhttp in strict mode (which refuses Content-Length
 * with Transfer-Encoding, differing or repeated Content-Length, bad chunk sizes, bare CR), plus
 * what llhttp leaves to us: the head limits, 101 only after an upgrade request, no body for a
 * HEAD request, interim responses before the final one. */
#include "proxy/respframe.h"

#include <pthread.h>
#include <string.h>

static int on_status(llhttp_t *p, const char *at, size_t len);
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
    settings.on_status = on_status;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
}

void
respframe_start(llhttp_t *parser)
{
    pthread_once(&settings_once, settings_init);
    llhttp_init(parser, HTTP_RESPONSE, &settings);
}

void
respframe_bind(struct respframe *f, llhttp_t *parser, char *last_byte, struct http_head *head,
               const struct respframe_ops *ops, void *arg)
{
    f->parser = parser;
    f->head = head;
    f->ops = ops;
    f->arg = arg;
    f->head_request = false;
    f->upgrade_request = false;
    f->status = parser->status_code;
    f->body = RESPFRAME_BODY_NONE;
    f->chunked = false;
    f->keepalive = false;
    f->error = HPE_OK;
    f->complete_deferred = false;
    f->head_pending = false;
    f->head_skip = RESPFRAME_SKIP_NONE;
    f->last_byte = last_byte;
    parser->data = f;
}

void
respframe_unbind(struct respframe *f)
{
    f->parser->data = NULL;
}

static bool
interim(int status)
{
    return status < 200 && status != 101;
}

/* The reason phrase is copied to the client: only HTAB, SP, VCHAR and obs-text (RFC 9112 §4),
 * which llhttp does not check (it lets NUL and other controls through). */
static int
on_status(llhttp_t *p, const char *at, size_t len)
{
    struct respframe *f = p->data;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)at[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            llhttp_set_error_reason(p, "invalid character in the reason phrase");
            return HPE_USER;
        }
    }
    return http_head_reason(f->head, at, len) == HTTP_HEAD_OK ? 0 : HPE_USER;
}

static int
on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct respframe *f = p->data;
    return http_head_field(f->head, at, len) == HTTP_HEAD_OK ? 0 : HPE_USER;
}

static int
on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct respframe *f = p->data;
    const struct http_head *h = f->head;
    if (http_head_value(f->head, at, len) != HTTP_HEAD_OK)
        return HPE_USER;
    /* llhttp takes ": value" (an empty field name, reported as an empty piece), which the relay
     * would copy to the client. Checked here rather than in a field-complete callback: no extra
     * call per field. */
    if (h->nfields == 0 || h->fields[h->nfields - 1].name_len == 0) {
        llhttp_set_error_reason(p, "empty field name");
        return HPE_USER;
    }
    return 0;
}

/* Returns what llhttp expects: 1 to skip the body, 2 to stop parsing (upgrade), 0 to go on. */
static int
on_headers_complete(llhttp_t *p)
{
    struct respframe *f = p->data;
    int status = p->status_code;
    f->status = status;
    f->body = RESPFRAME_BODY_NONE;
    f->chunked = false;
    if (status < 100) {
        /* llhttp takes "HTTP/1.1 2": a status is three digits (RFC 9112 §4). */
        llhttp_set_error_reason(p, "status code below 100");
        return -1;
    }
    /* llhttp 8 (strict) takes a bare LF as the empty line that ends the head, where a client
     * (or a cache) may see a header line go on. The callback does not say where the head ends:
     * it pauses, and respframe_execute() checks the bytes before the parser's position, then
     * reports the head and lets llhttp go on as this callback's result would have. */
    f->head_pending = true;
    if (interim(status)) {
        /* 100 Continue, 103 Early Hints: the final response follows. */
        f->head_skip = RESPFRAME_SKIP_BODY;
        return HPE_PAUSED;
    }
    if (status == 101) {
        if (!f->upgrade_request) {
            f->head_pending = false;
            llhttp_set_error_reason(p, "101 without an upgrade request");
            return -1;
        }
        f->head_skip = RESPFRAME_SKIP_UPGRADE; /* the rest is another protocol */
        return HPE_PAUSED;
    }
    bool nobody = f->head_request || status == 204 || status == 304;
    f->chunked = (p->flags & F_CHUNKED) != 0;
    bool length =
        (p->flags & F_CONTENT_LENGTH) != 0 && !f->chunked && !(p->flags & F_TRANSFER_ENCODING);
    if (nobody)
        f->body = RESPFRAME_BODY_NONE;
    else if (length)
        f->body = RESPFRAME_BODY_LENGTH;
    else if (f->chunked)
        f->body = RESPFRAME_BODY_CHUNKED;
    else
        f->body = RESPFRAME_BODY_CLOSE;
    f->head_skip = nobody ? RESPFRAME_SKIP_BODY : RESPFRAME_SKIP_NONE;
    return HPE_PAUSED;
}

/* The head checked in respframe_execute: reported to the owner, then llhttp is told what
 * on_headers_complete would have returned (1: no body, F_SKIPBODY; 2: upgrade, which also skips
 * the body). Returns false when the owner refuses it. */
static bool
report_head(struct respframe *f)
{
    llhttp_t *p = f->parser;
    if (interim(f->status)) {
        if (f->ops->interim)
            f->ops->interim(f->arg, f);
        http_head_clear(f->head);
    } else if (f->ops->head && f->ops->head(f->arg, f) != 0) {
        return false;
    }
    if (f->head_skip == RESPFRAME_SKIP_UPGRADE)
        p->upgrade = 1;
    if (f->head_skip != RESPFRAME_SKIP_NONE)
        p->flags |= F_SKIPBODY;
    return true;
}

static int
on_body(llhttp_t *p, const char *at, size_t len)
{
    struct respframe *f = p->data;
    if (f->ops->body)
        f->ops->body(f->arg, at, len);
    return 0;
}

static int
on_message_complete(llhttp_t *p)
{
    struct respframe *f = p->data;
    if (interim(p->status_code) || p->status_code == 101)
        return 0; /* the final response follows, or llhttp pauses for the upgrade next */
    f->keepalive = llhttp_should_keep_alive(p) != 0;
    if ((p->flags & F_CHUNKED) && !(p->flags & F_SKIPBODY)) {
        f->complete_deferred = true; /* reported by respframe_execute() once checked */
        return HPE_PAUSED;
    }
    if (f->ops->complete)
        f->ops->complete(f->arg, f);
    return HPE_PAUSED;
}

static enum respframe_result
fail(struct respframe *f, llhttp_errno_t error, const char *reason)
{
    f->error = error;
    llhttp_set_error_reason(f->parser, reason);
    return RESPFRAME_ERROR;
}

enum respframe_result
respframe_execute(struct respframe *f, const char *data, size_t len, size_t *used)
{
    llhttp_errno_t err = llhttp_execute(f->parser, data, len);
    f->error = err;
    if (err == HPE_OK) {
        *used = len;
        if (len > 0)
            *f->last_byte = data[len - 1];
        return RESPFRAME_OK;
    }
    const char *pos = llhttp_get_error_pos(f->parser);
    *used = (pos && pos >= data && pos <= data + len) ? (size_t)(pos - data) : 0;
    char before = *used >= 2 ? data[*used - 2] : *f->last_byte;
    bool crlf = *used > 0 && data[*used - 1] == '\n' && before == '\r';
    if (*used > 0)
        *f->last_byte = data[*used - 1];
    if (f->head_pending && err == HPE_PAUSED) {
        /* pos is just past the LF that ended the head: the empty line is CRLF (RFC 9112 §2.2). */
        f->head_pending = false;
        if (!crlf)
            return fail(f, HPE_INVALID_HEADER_TOKEN, "a bare LF ends the head");
        if (!report_head(f))
            return fail(f, HPE_USER, "refused");
        llhttp_resume(f->parser);
        size_t done = *used, more = 0;
        enum respframe_result r = respframe_execute(f, data + done, len - done, &more);
        *used = done + more;
        return r;
    }
    if (f->complete_deferred && err == HPE_PAUSED) {
        /* pos is just past the LF that ended the body: CRLF there, not a bare LF. */
        f->complete_deferred = false;
        if (!crlf)
            return fail(f, HPE_INVALID_CHUNK_SIZE, "a bare LF ends the chunked body");
        if (f->ops->complete)
            f->ops->complete(f->arg, f);
    }
    if (err == HPE_PAUSED_UPGRADE && f->parser->status_code == 101)
        return RESPFRAME_UPGRADE;
    if (err == HPE_PAUSED && !interim(f->parser->status_code) && f->parser->status_code != 101)
        return RESPFRAME_DONE;
    return RESPFRAME_ERROR;
}

void
respframe_eof(struct respframe *f)
{
    llhttp_finish(f->parser);
}
