/* tests/fuzz/fuzz_reqframe.c — fuzz target for request framing (proxy/reqframe.c on llhttp).
 * Feeds the input twice, in one piece and cut at pseudo-random points, checks invariants in the
 * ops, and requires both runs to report the same heads, bodies and final status. */
#include "proxy/reqframe.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Input layout: byte 0 chooses the limits, byte 1 the cuts and what the ops do, the rest is
 * what the client sends. */
#define CONF_BYTES 2
#define MAX_STEPS 1000000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum stage {
    ST_IDLE = 0,
    ST_BEGUN,
    ST_HEAD,
    ST_DONE,
};

struct run {
    struct reqframe f;
    struct reqframe_limits limits;
    enum stage stage;
    unsigned nrequests; /* begun */
    bool rejected;      /* an op returned a status: no op may be called after */
    int op_status;      /* the status it returned */
    /* The current request. */
    bool has_cl;
    uint64_t cl;
    uint64_t body_bytes;
    uint64_t body_hash;
    /* What the ops do (the same in both runs, so the transcripts can be compared). */
    unsigned reject_req; /* index of the request an op refuses */
    int reject_at;       /* 0 none, 1 begin, 2 head, 3 body (after reject_after bytes) */
    uint64_t reject_after;
    bool tunnel;     /* stop after an upgrade request, as after a 101 */
    const char *raw; /* borrowed: the whole client input */
    size_t raw_len;
    struct http_buf transcript; /* owned */
};

__attribute__((noreturn)) static void
fail(const char *what)
{
    fprintf(stderr, "fuzz_reqframe: invariant broken: %s\n", what);
    abort();
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fail(#cond);                                                                           \
    } while (0)

static void
note(struct run *r, const char *s)
{
    http_buf_adds(&r->transcript, s);
}

static void
note_num(struct run *r, uint64_t n)
{
    char s[32];
    int len = snprintf(s, sizeof(s), "%llu ", (unsigned long long)n);
    http_buf_add(&r->transcript, s, (size_t)len);
}

static bool
is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return strchr("!#$%&'*+-.^_`|~", c) != NULL && c != '\0';
}

static bool
name_is(const struct http_head *h, const struct http_field *f, const char *name)
{
    size_t n = strlen(name);
    return f->name_len == n && strncasecmp(http_field_name(h, f), name, n) == 0;
}

/* Whether the input holds the field as one line: LF, name, colon, blanks, value, CR. Catches
 * names glued together or values mixed up between fields, which the cut comparison cannot (both
 * runs would agree). */
static bool
field_in_raw(const struct run *r, const char *name, size_t nlen, const char *value, size_t vlen)
{
    const char *p = r->raw, *end = r->raw + r->raw_len;
    while (nlen > 0 && p < end) {
        const char *q = memmem(p, (size_t)(end - p), name, nlen);
        if (q == NULL)
            return false;
        const char *s = q + nlen;
        if (q > r->raw && q[-1] == '\n' && s < end && *s == ':') {
            s++;
            while (s < end && (*s == ' ' || *s == '\t'))
                s++;
            if ((size_t)(end - s) > vlen && memcmp(s, value, vlen) == 0 && s[vlen] == '\r')
                return true;
        }
        p = q + 1;
    }
    return false;
}

/* What reqframe promises about a head it hands to the owner. */
static void
check_head(struct run *r)
{
    const struct reqframe *f = &r->f;
    const struct http_head *h = &f->head;
    const llhttp_t *p = &f->parser;

    /* Storage: every piece inside the buffer, within the limits. */
    CHECK(h->len <= h->cap || h->cap == 0);
    CHECK(h->len <= h->wire_bytes);
    CHECK(h->wire_bytes <= r->limits.max_header_bytes);
    CHECK(h->cap <= 2 * r->limits.max_header_bytes + 1024);
    CHECK(h->nfields <= r->limits.max_headers);
    CHECK(h->cap_fields <= 2 * r->limits.max_headers + 16);
    CHECK((size_t)h->url_off + h->url_len <= h->len);
    CHECK(r->limits.max_uri_bytes == 0 || h->url_len <= r->limits.max_uri_bytes);
    CHECK(h->url_len > 0);

    unsigned nhost = 0, ncl = 0, nte = 0, nexpect = 0;
    for (uint32_t i = 0; i < h->nfields; i++) {
        const struct http_field *fl = &h->fields[i];
        CHECK((size_t)fl->name_off + fl->name_len <= h->len);
        CHECK((size_t)fl->value_off + fl->value_len <= h->len);
        const unsigned char *name = (const unsigned char *)http_field_name(h, fl);
        const unsigned char *value = (const unsigned char *)http_field_value(h, fl);
        /* Names are tokens, and each field is a line of the input. */
        CHECK(fl->name_len > 0);
        for (uint32_t k = 0; k < fl->name_len; k++)
            CHECK(is_tchar(name[k]));
        CHECK(
            field_in_raw(r, (const char *)name, fl->name_len, (const char *)value, fl->value_len));
        /* Values: no CR, LF, NUL or other controls but HTAB, and no leading whitespace (an
         * unfolded obs-fold would show up as a value starting with SP or holding CR/LF). */
        for (uint32_t k = 0; k < fl->value_len; k++)
            CHECK(value[k] == '\t' || (value[k] >= 0x20 && value[k] != 0x7f));
        CHECK(fl->value_len == 0 || (value[0] != ' ' && value[0] != '\t'));
        if (name_is(h, fl, "Host"))
            nhost++;
        else if (name_is(h, fl, "Content-Length"))
            ncl++;
        else if (name_is(h, fl, "Transfer-Encoding"))
            nte++;
        else if (name_is(h, fl, "Expect"))
            nexpect++;
    }

    /* The rules reqframe adds to llhttp. */
    CHECK(p->http_major == 1 && (p->http_minor == 0 || p->http_minor == 1));
    CHECK(f->http10 == (p->http_minor == 0));
    CHECK(p->method != HTTP_CONNECT);
    CHECK(nhost <= 1);
    CHECK(f->http10 || nhost == 1);
    CHECK(ncl <= 1);
    CHECK(nte <= 1);
    CHECK(nte == 0 || ncl == 0);
    CHECK(nte == 0 || (!f->http10 && f->chunked));
    CHECK(f->chunked == ((p->flags & F_CHUNKED) != 0));
    CHECK(nexpect <= 1);
    if (nexpect) {
        /* The only expectation is 100-continue (trailing blanks are not part of a value). */
        const struct http_field *e = http_head_get(h, "Expect", NULL);
        size_t n = e->value_len;
        while (n > 0 &&
               (http_field_value(h, e)[n - 1] == ' ' || http_field_value(h, e)[n - 1] == '\t'))
            n--;
        CHECK(n == 12 && strncasecmp(http_field_value(h, e), "100-continue", 12) == 0);
    }

    r->has_cl = ncl == 1 && !f->chunked;
    r->cl = 0;
    if (r->has_cl) {
        const struct http_field *c = http_head_get(h, "Content-Length", NULL);
        const char *v = http_field_value(h, c);
        uint32_t k = 0;
        for (; k < c->value_len && v[k] >= '0' && v[k] <= '9'; k++) {
            CHECK(r->cl <= (UINT64_MAX - 9) / 10);
            r->cl = r->cl * 10 + (uint64_t)(v[k] - '0');
        }
        for (; k < c->value_len; k++)
            CHECK(v[k] == ' ' || v[k] == '\t'); /* trailing OWS only */
        CHECK(r->limits.max_body_bytes == 0 || r->cl <= r->limits.max_body_bytes);
        CHECK(f->has_body == (r->cl > 0));
    }
    if (f->chunked)
        CHECK(f->has_body);
}

static int
on_begin(void *arg)
{
    struct run *r = arg;
    CHECK(!r->rejected);
    CHECK(r->stage == ST_IDLE || r->stage == ST_DONE);
    r->stage = ST_BEGUN;
    r->body_bytes = 0;
    r->body_hash = 1469598103934665603ULL;
    r->has_cl = false;
    unsigned idx = r->nrequests++;
    /* As client.c does: the limits of the current config, applied to this request. */
    reqframe_set_limits(&r->f, &r->limits);
    note(r, "B ");
    if (r->reject_at == 1 && idx == r->reject_req) {
        r->rejected = true;
        r->op_status = 503;
        return 503;
    }
    return 0;
}

static int
on_head(void *arg)
{
    struct run *r = arg;
    const struct http_head *h = &r->f.head;
    CHECK(!r->rejected);
    CHECK(r->stage == ST_BEGUN);
    r->stage = ST_HEAD;
    check_head(r);

    note(r, "H ");
    note(r, reqframe_method(&r->f));
    note(r, " ");
    http_buf_add(&r->transcript, h->buf + h->url_off, h->url_len);
    note(r, " ");
    note_num(r, (uint64_t)r->f.http10 | (uint64_t)r->f.head_method << 1 |
                    (uint64_t)r->f.upgrade << 2 | (uint64_t)r->f.chunked << 3 |
                    (uint64_t)r->f.has_body << 4 | (uint64_t)r->f.keepalive << 5);
    for (uint32_t i = 0; i < h->nfields; i++) {
        const struct http_field *fl = &h->fields[i];
        note(r, "[");
        http_buf_add(&r->transcript, http_field_name(h, fl), fl->name_len);
        note(r, ":");
        http_buf_add(&r->transcript, http_field_value(h, fl), fl->value_len);
        note(r, "]");
    }
    note(r, "\n");
    if (r->reject_at == 2 && r->nrequests - 1 == r->reject_req) {
        r->rejected = true;
        r->op_status = 403;
        return 403;
    }
    return 0;
}

static int
on_body(void *arg, const char *at, size_t len)
{
    struct run *r = arg;
    CHECK(!r->rejected);
    CHECK(r->stage == ST_HEAD);
    CHECK(len > 0);
    r->body_bytes += len;
    CHECK(r->f.body_bytes == r->body_bytes);
    if (r->has_cl)
        CHECK(r->body_bytes <= r->cl);
    if (r->limits.max_body_bytes)
        CHECK(r->body_bytes <= r->limits.max_body_bytes);
    for (size_t i = 0; i < len; i++)
        r->body_hash = (r->body_hash ^ (unsigned char)at[i]) * 1099511628211ULL;
    if (r->reject_at == 3 && r->nrequests - 1 == r->reject_req &&
        r->body_bytes >= r->reject_after) {
        r->rejected = true;
        r->op_status = 502;
        return 502;
    }
    return 0;
}

static void
on_complete(void *arg)
{
    struct run *r = arg;
    CHECK(!r->rejected);
    CHECK(r->stage == ST_HEAD);
    r->stage = ST_DONE;
    if (r->has_cl)
        CHECK(r->body_bytes == r->cl);
    /* Trailers join the head: still within its limits. */
    CHECK(r->f.head.wire_bytes <= r->limits.max_header_bytes);
    CHECK(r->f.head.nfields <= r->limits.max_headers);
    note(r, "C ");
    note_num(r, r->body_bytes);
    note_num(r, r->body_hash);
    note(r, "\n");
}

static const struct reqframe_ops ops = {
    .begin = on_begin,
    .head = on_head,
    .body = on_body,
    .complete = on_complete,
};

static void
configure(struct run *r, uint8_t c0, uint8_t c1)
{
    static const size_t header_bytes[] = {32 * 1024, 1024, 128, 48};
    static const uint32_t headers[] = {100, 8, 3, 1};
    static const size_t uri_bytes[] = {8 * 1024, 256, 16, 0};
    static const uint64_t body_bytes[] = {0, 1 << 20, 64, 5};
    memset(r, 0, sizeof(*r));
    r->limits.max_header_bytes = header_bytes[c0 & 3];
    r->limits.max_headers = headers[(c0 >> 2) & 3];
    r->limits.max_uri_bytes = uri_bytes[(c0 >> 4) & 3];
    r->limits.max_body_bytes = body_bytes[(c0 >> 6) & 3];
    r->reject_at = (c1 >> 3) & 3;
    r->reject_req = (c1 >> 6) & 3;
    r->reject_after = (c1 & 7) + 1u;
    /* A body op refusing and the 413 limit would race on which piece crosses first. */
    if (r->reject_at == 3 && r->limits.max_body_bytes)
        r->reject_at = 0;
    r->tunnel = (c1 >> 5) & 1;
    reqframe_init(&r->f, &ops, r);
    reqframe_set_limits(&r->f, &r->limits);
}

/* Piece sizes for the cut run: a small LCG seeded from the config, up to `max` bytes. */
struct cutter {
    uint32_t state;
    size_t max;
};

static size_t
next_cut(struct cutter *c)
{
    if (c->max <= 1)
        return 1;
    c->state = c->state * 1103515245u + 12345u;
    return 1 + (c->state >> 8) % c->max;
}

/* Feeds data (in one piece when c is NULL), resuming after pauses as client.c does. After an
 * error, feeding the rest again must change nothing. */
static void
feed(struct run *r, const char *data, size_t len, struct cutter *c)
{
    size_t off = 0, end = 0;
    unsigned steps = 0;
    while (off < len) {
        CHECK(++steps < MAX_STEPS);
        if (off == end) {
            size_t step = c ? next_cut(c) : len;
            end = step >= len - off ? len : off + step;
        }
        size_t n = end - off, used = (size_t)-1;
        enum reqframe_result res = reqframe_execute(&r->f, data + off, n, &used);
        CHECK(used <= n);
        off += used;
        if (res == REQFRAME_ERROR) {
            CHECK(r->f.status >= 400 && r->f.status <= 599);
            if (r->rejected)
                CHECK(r->f.status == r->op_status);
            note(r, "E\n");
            /* Nothing is parsed after an error. */
            unsigned nreq = r->nrequests;
            enum stage st = r->stage;
            int status = r->f.status;
            size_t again = 0;
            res = reqframe_execute(&r->f, data + off, len - off, &again);
            CHECK(res == REQFRAME_ERROR && r->f.status == status && again <= len - off);
            CHECK(r->nrequests == nreq && r->stage == st);
            return;
        }
        CHECK(!r->rejected);
        if (res == REQFRAME_PAUSED) {
            CHECK(r->stage == ST_DONE);
            note(r, "P\n");
            if (r->tunnel && r->f.upgrade) {
                note(r, "T\n");
                return; /* answered 101: the rest is the tunnel's */
            }
            reqframe_resume(&r->f);
            CHECK(r->f.head.nfields == 0 && r->f.head.len == 0);
        } else {
            CHECK(res == REQFRAME_OK && used == n);
        }
    }
    note(r, "OK\n");
}

/* Whether two runs that both failed agree. A limit is checked when llhttp reports a piece, and
 * llhttp reports a piece at the end of each buffer or of the span: a head that is both too big
 * and malformed after the limit is 431 when cut early and 400 in one piece. Any other status
 * must match exactly (the transcripts, compared apart, say both runs failed at the same stage). */
static bool
same_status(int a, int b)
{
    if (a == b)
        return true;
    return a == 431 || b == 431 || a == 414 || b == 414 || a == 413 || b == 413;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t c0 = size > 0 ? data[0] : 0;
    uint8_t c1 = size > 1 ? data[1] : 0;
    const char *body = (const char *)data + (size > CONF_BYTES ? CONF_BYTES : size);
    size_t len = size > CONF_BYTES ? size - CONF_BYTES : 0;

    static struct run whole, cut;
    configure(&whole, c0, c1);
    whole.raw = body;
    whole.raw_len = len;
    feed(&whole, body, len, NULL);

    static const size_t max_piece[] = {1, 2, 3, 7, 16, 64, 512, 4096};
    struct cutter c = {.state = (uint32_t)c0 << 8 | c1 | (uint32_t)len << 16,
                       .max = max_piece[c1 & 7]};
    configure(&cut, c0, c1);
    cut.raw = body;
    cut.raw_len = len;
    feed(&cut, body, len, &c);

    if (whole.transcript.len != cut.transcript.len ||
        memcmp(whole.transcript.p, cut.transcript.p, whole.transcript.len) != 0 ||
        !same_status(whole.f.status, cut.f.status)) {
        fprintf(stderr,
                "--- in one piece (status %d):\n%.*s\n--- cut (max piece %zu, status %d):\n"
                "%.*s\n",
                whole.f.status, (int)whole.transcript.len, whole.transcript.p, c.max, cut.f.status,
                (int)cut.transcript.len, cut.transcript.p);
        fail("the cut run differs from the run in one piece");
    }

    reqframe_finish(&whole.f);
    reqframe_finish(&cut.f);
    http_buf_finish(&whole.transcript);
    http_buf_finish(&cut.transcript);
    return 0;
}
