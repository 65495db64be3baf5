/* proxy/reqframe.c — request framing with llhttp in strict mode, plus what llhttp leaves to us:
 * header limits (431/414), body limit (413), Host rules, Transfer-Encoding rules for smuggling,
 * obs-fold, Expect, HTTP versions (505) and CONNECT (405). */
#include "proxy/reqframe.h"

#include <pthread.h>
#include <string.h>
#include <strings.h>

static int on_message_begin(llhttp_t *p);
static int on_method(llhttp_t *p, const char *at, size_t len);
static int on_url(llhttp_t *p, const char *at, size_t len);
static int on_version(llhttp_t *p, const char *at, size_t len);
static int on_version_complete(llhttp_t *p);
static int on_header_field(llhttp_t *p, const char *at, size_t len);
static int on_header_value(llhttp_t *p, const char *at, size_t len);
static int on_header_field_complete(llhttp_t *p);
static int on_header_value_complete(llhttp_t *p);
static int on_headers_complete(llhttp_t *p);
static int on_body(llhttp_t *p, const char *at, size_t len);
static int on_message_complete(llhttp_t *p);

static bool raw_limit(const struct reqframe *f, const char *end);
static int64_t raw_max(const struct reqframe *f);

static llhttp_settings_t settings;
static pthread_once_t settings_once = PTHREAD_ONCE_INIT;

static void
settings_init(void)
{
    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_method = on_method;
    settings.on_url = on_url;
    settings.on_version = on_version;
    settings.on_version_complete = on_version_complete;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_header_field_complete = on_header_field_complete;
    settings.on_header_value_complete = on_header_value_complete;
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
    f->in_head = true;
    f->counting = false;
    f->head_bytes = 0;
    f->status = 0;
    f->body_bytes = 0;
    f->version_seen = false;
    f->http10 = f->head_method = f->upgrade = f->chunked = f->has_body = f->keepalive = false;
    if (f->ops->begin) {
        int st = f->ops->begin(f->arg);
        if (st)
            return reject(f, st);
    }
    return 0;
}

/* The stream offset of a byte of the current buffer. */
static uint64_t
offset_of(const struct reqframe *f, const char *at)
{
    return f->consumed + (uint64_t)(at - f->buf_start);
}

static int
on_method(llhttp_t *p, const char *at, size_t len)
{
    struct reqframe *f = p->data;
    f->method_end = offset_of(f, at + len);
    return 0;
}

static int
on_url(llhttp_t *p, const char *at, size_t len)
{
    struct reqframe *f = p->data;
    if (f->head.url_len == 0) {
        /* Count the head from its target: empty lines before a request are not part of it. */
        f->head_bytes = -(int64_t)(at - f->buf_start);
        f->counting = true;
        /* Exactly one SP between method and target (RFC 9112 §3): llhttp 8 skips any number. */
        if (offset_of(f, at) != f->method_end + 1)
            return reject(f, 400);
    }
    f->url_end = offset_of(f, at + len);
    return head_result(f, http_head_url(&f->head, at, len));
}

static int
on_version(llhttp_t *p, const char *at, size_t len)
{
    struct reqframe *f = p->data;
    /* " HTTP/" between target and version digits: one SP, as above. */
    if (!f->version_seen && offset_of(f, at) != f->url_end + sizeof(" HTTP/") - 1)
        return reject(f, 400);
    f->version_seen = true;
    f->version_end = offset_of(f, at + len);
    return 0;
}

/* The request line ends with CRLF: llhttp 8 also takes a bare LF there (and only there), which
 * a CR-only parser in front of us would read as part of the line. */
static int
on_version_complete(llhttp_t *p)
{
    struct reqframe *f = p->data;
    uint64_t end = offset_of(f, f->buf_end);
    if (f->version_end < end) {
        if (f->buf_start[f->version_end - f->consumed] != '\r')
            return reject(f, 400);
    } else {
        f->cr_pending = true; /* checked on the next buffer's first byte */
    }
    return 0;
}

static int
on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct reqframe *f = p->data;
    f->in_value = false;
    return head_result(f, raw_limit(f, at + len) ? HTTP_HEAD_TOO_BIG
                                                 : http_head_field(&f->head, at, len));
}

/* Whether the raw head up to `end` (in the current buffer) is over max_header_bytes: llhttp drops
 * the blanks before a value without a callback, so the pieces alone undercount. */
static int64_t
raw_max(const struct reqframe *f)
{
    /* A safety net against blank floods: the exact limit is the per-piece count in http_head;
     * the raw count also sees blanks and line ends, so it gets half as much again. */
    return (int64_t)(f->limits.max_header_bytes + f->limits.max_header_bytes / 2);
}

static bool
raw_limit(const struct reqframe *f, const char *end)
{
    return f->head_bytes + (end - f->buf_start) > raw_max(f);
}

static bool
blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Whether a value piece starting at `at` begins a continuation line: only blanks between it and
 * a preceding LF (in this buffer, or at the end of the previous one). */
static bool
after_line_break(const struct reqframe *f, const char *at)
{
    const char *q = at;
    while (q > f->buf_start && blank(q[-1]))
        q--;
    if (q > f->buf_start)
        return q[-1] == '\n';
    return f->tail_fold;
}

static int
on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct reqframe *f = p->data;
    if (len == 0) {
        /* llhttp reports an empty value as an empty piece, placed after its CRLF: it ends the
         * field (the next name must start a new one) but is no fold. The blanks before it still
         * count against max_header_bytes (a head cut anywhere else is checked the same). */
        if (raw_limit(f, at))
            return reject(f, 431);
        return head_result(f, http_head_value(&f->head, at, 0));
    }
    if (raw_limit(f, at + len))
        return reject(f, 431);
    /* obs-fold (RFC 9112 §5.2): a second piece of one value that is not a buffer split, or a
     * first piece that starts a continuation line (after an empty value). */
    if (f->in_value ? !(at == f->buf_start && f->value_at_end) : after_line_break(f, at))
        return reject(f, 400);
    f->in_value = true;
    f->value_piece = true;
    f->value_at_end = at + len == f->buf_end;
    return head_result(f, http_head_value(&f->head, at, len));
}

static int
on_header_field_complete(llhttp_t *p)
{
    struct reqframe *f = p->data;
    if (f->head.nfields == 0 || f->head.fields[f->head.nfields - 1].name_len == 0)
        return reject(f, 400); /* ": value" — an empty field name */
    return 0;
}

static int
on_header_value_complete(llhttp_t *p)
{
    struct reqframe *f = p->data;
    f->in_value = false;
    return 0;
}

/* A field value without the optional whitespace around it (llhttp keeps trailing blanks). */
static bool
value_is(const struct http_head *h, const struct http_field *fl, const char *s)
{
    const char *v = http_field_value(h, fl);
    size_t n = fl->value_len;
    while (n > 0 && blank(v[n - 1]))
        n--;
    while (n > 0 && blank(*v)) {
        v++;
        n--;
    }
    return n == strlen(s) && strncasecmp(v, s, n) == 0;
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
    unsigned nte = 0;
    http_head_get(&f->head, "Transfer-Encoding", &nte);
    if (nte > 0 || (p->flags & F_TRANSFER_ENCODING)) {
        /* Any Transfer-Encoding field, even an empty one llhttp lets through, must be a single
         * field ending in chunked, without Content-Length, and not in HTTP/1.0: anything else
         * leaves the length ambiguous between us and the server (RFC 9112 §6.1, §6.3). */
        if (nte > 1 || f->http10 || !(p->flags & F_CHUNKED) || (p->flags & F_CONTENT_LENGTH))
            return reject(f, 400);
    }
    f->chunked = (p->flags & F_CHUNKED) != 0;
    f->has_body = f->chunked || ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
    if (f->limits.max_body_bytes && (p->flags & F_CONTENT_LENGTH) && !f->chunked &&
        p->content_length > f->limits.max_body_bytes)
        return reject(f, 413);
    unsigned nexpect = 0;
    const struct http_field *expect = http_head_get(&f->head, "Expect", &nexpect);
    if (expect && (nexpect > 1 || !value_is(&f->head, expect, "100-continue")))
        return reject(f, 417);
    f->head_method = p->method == HTTP_HEAD;
    f->upgrade = p->upgrade != 0;
    f->upgrade_pending = f->upgrade;
    f->keepalive = llhttp_should_keep_alive(p) != 0;
    /* llhttp 8 (strict) takes a bare LF as the empty line that ends the head, where a front
     * parser may see a header line go on (then "GET / ...\r\n\nGET /x ..." is one request to
     * it and two to us). The callback does not say where the head ends: pause, and execute()
     * checks the bytes before the parser's position, then reports the head. */
    f->head_pending = true;
    return HPE_PAUSED;
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
    /* One request at a time: pipelined requests wait, answered in order. A chunked body's end is
     * reported by execute(), once the line ending it is checked. */
    if (p->flags & F_CHUNKED) {
        f->complete_deferred = true;
        return HPE_PAUSED;
    }
    if (f->ops->complete)
        f->ops->complete(f->arg);
    return HPE_PAUSED;
}

static enum reqframe_result execute(struct reqframe *f, const char *data, size_t len, size_t *used);

/* A rejection found outside llhttp's callbacks: final, like reject(). */
static enum reqframe_result
fail(struct reqframe *f, int status, const char *reason)
{
    f->status = status;
    f->failed = true;
    llhttp_set_error_reason(&f->parser, reason);
    return REQFRAME_ERROR;
}

/* llhttp stops at a bad byte inside a target, field name or value without reporting the piece
 * before it, which a run cut there would have reported at its buffer's end and checked against
 * the limits (a field over max_headers, a name over max_header_bytes: 431 rather than the bad
 * byte's 400). The piece goes through the same callback now, so the status does not depend on
 * where reads end. llhttp keeps the open span in two fields of its struct (the same ones its
 * execute uses to report a span at a buffer's end). */
static void
report_open_span(struct reqframe *f, const char *pos)
{
    llhttp_t *p = &f->parser;
    const char *start = p->_span_pos0;
    if (start == NULL || p->_span_cb0 == NULL || pos == NULL || start < f->buf_start ||
        pos < start || pos > f->buf_end)
        return;
    int (*cb)(llhttp_t *, const char *, const char *);
    _Static_assert(sizeof(cb) == sizeof(p->_span_cb0), "llhttp keeps a function in a void *");
    memcpy(&cb, &p->_span_cb0, sizeof(cb)); /* ISO C has no cast from void * to a function */
    p->_span_pos0 = NULL;
    cb(p, start, pos);
}

/* Whether the bytes just before data + used (used >= 1) are CRLF; the CR may be the last byte of
 * an earlier buffer. */
static bool
crlf_before(const struct reqframe *f, const char *data, size_t used)
{
    char before = used >= 2 ? data[used - 2] : f->last_byte;
    return used > 0 && data[used - 1] == '\n' && before == '\r';
}

/* Goes on after llhttp paused inside data (done bytes used): the rest of data is parsed as if
 * it came in a call of its own. */
static enum reqframe_result
execute_rest(struct reqframe *f, const char *data, size_t len, size_t done, size_t *used)
{
    f->consumed += done;
    f->last_byte = data[done - 1];
    size_t more = 0;
    enum reqframe_result r = execute(f, data + done, len - done, &more);
    f->consumed -= done; /* reqframe_execute adds all of *used (and sets last_byte) */
    *used = done + more;
    return r;
}

enum reqframe_result
reqframe_execute(struct reqframe *f, const char *data, size_t len, size_t *used)
{
    enum reqframe_result r = execute(f, data, len, used);
    f->consumed += *used;
    if (*used > 0)
        f->last_byte = data[*used - 1];
    return r;
}

static enum reqframe_result
execute(struct reqframe *f, const char *data, size_t len, size_t *used)
{
    *used = 0;
    if (f->failed)
        return REQFRAME_ERROR; /* an error is final: nothing more is parsed */
    if (f->cr_pending && len > 0) {
        f->cr_pending = false;
        if (data[0] != '\r')
            return fail(f, 400, "a bare LF ends the request line");
    }
    f->buf_start = data;
    f->buf_end = data + len;
    f->value_piece = false;
    llhttp_errno_t err = llhttp_execute(&f->parser, data, len);
    if (err == HPE_PAUSED_UPGRADE && !f->upgrade_pending) {
        /* An upgrade request that was answered without 101: go on with HTTP. */
        const char *pos = llhttp_get_error_pos(&f->parser);
        size_t done = (pos && pos >= data && pos <= data + len) ? (size_t)(pos - data) : 0;
        llhttp_resume_after_upgrade(&f->parser);
        if (done == 0)
            return execute(f, data, len, used);
        return execute_rest(f, data, len, done, used);
    }
    if (err == HPE_OK) {
        *used = len;
        /* llhttp drops blanks before a value without a callback: count raw head bytes too. */
        if (f->in_head && f->counting) {
            f->head_bytes += (int64_t)len;
            if (f->head_bytes > raw_max(f))
                return fail(f, 431, "header block too big");
        }
        if (!f->value_piece)
            f->value_at_end = false; /* bytes passed since the last piece: no longer a split */
        const char *q = data + len;
        while (q > data && blank(q[-1]))
            q--;
        f->tail_fold = q > data ? q[-1] == '\n' : f->tail_fold;
        return REQFRAME_OK;
    }
    const char *pos = llhttp_get_error_pos(&f->parser);
    *used = (pos && pos >= data && pos <= data + len) ? (size_t)(pos - data) : 0;
    if (err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE && f->status == 0)
        report_open_span(f, pos);
    /* The raw head count up to where parsing stopped: a head that went over it is 431 wherever
     * it stops (a cut run checks it at each buffer's end, before a later error could show). */
    bool raw_over = f->in_head && f->counting && f->head_bytes + (int64_t)*used > raw_max(f);
    if (f->head_pending && err == HPE_PAUSED) {
        /* pos is just past the LF that ended the head: the empty line is CRLF (RFC 9112 §2.2). */
        f->head_pending = false;
        if (raw_over)
            return fail(f, 431, "header block too big");
        f->in_head = false;
        if (!crlf_before(f, data, *used))
            return fail(f, 400, "a bare LF ends the head");
        if (f->ops->head) {
            int st = f->ops->head(f->arg);
            if (st)
                return fail(f, st, "rejected");
        }
        llhttp_resume(&f->parser);
        return execute_rest(f, data, len, *used, used);
    }
    if (f->complete_deferred && (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE)) {
        /* pos is just past the LF that ended the message: CRLF there, not a bare LF (RFC 9112
         * §7.1; a front proxy reading it differently would see another request after it). */
        f->complete_deferred = false;
        if (!crlf_before(f, data, *used))
            return fail(f, 400, "a bare LF ends the chunked body");
        if (f->ops->complete)
            f->ops->complete(f->arg);
    }
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE)
        return REQFRAME_PAUSED;
    if (raw_over)
        f->status = 431;
    else if (f->status == 0)
        f->status = err == HPE_INVALID_VERSION ? 505 : 400;
    f->failed = true;
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
