/* tests/fuzz/fuzz_respframe.c — fuzz target for response framing (proxy/respframe.c on llhttp).
 * Feeds an upstream's bytes twice, in one piece and cut at pseudo-random points, then the EOF;
 * checks the order of the ops and the framing rules (no body for HEAD / 1xx / 204 / 304, a
 * Content-Length body of exactly that length, 101 only after an upgrade request), and requires
 * both runs to report the same heads, bodies and outcome. */
#define FUZZ_NAME "fuzz_respframe"
#include "proxy/respframe.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "fuzz_util.h"

/* Input layout: byte 0 the request (bit 0 HEAD, bit 1 upgrade, bit 2 head op refuses, bit 3 no
 * EOF at the end), byte 1 the cuts, the rest is what the upstream sends. */
#define CONF_BYTES 2

struct run {
    llhttp_t parser;
    char last_byte; /* beside the parser, for respframe_bind */
    struct http_head head;
    bool head_request, upgrade_request, refuse;
    unsigned ninterim, nhead, ncomplete;
    int status;
    enum respframe_body body;
    bool has_cl;
    uint64_t cl;
    uint64_t body_bytes;
    uint64_t body_hash;
    size_t input_len;
    struct http_buf transcript; /* owned */
};

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
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool
name_is(const struct http_head *h, const struct http_field *f, const char *name)
{
    size_t n = strlen(name);
    return f->name_len == n && strncasecmp(http_field_name(h, f), name, n) == 0;
}

/* Checks the head as the owner sees it, and notes it. */
static void
check_head(struct run *r, const struct respframe *f, const char *tag)
{
    const struct http_head *h = &r->head;
    CHECK(f->status >= 100 && f->status <= 999);
    CHECK(h->len <= h->wire_bytes);
    CHECK(h->wire_bytes <= h->max_bytes);
    CHECK(h->nfields <= h->max_fields);
    unsigned ncl = 0;
    r->has_cl = false;
    r->cl = 0;
    note(r, tag);
    note_num(r, (uint64_t)f->status);
    for (uint32_t i = 0; i < h->nfields; i++) {
        const struct http_field *fl = &h->fields[i];
        CHECK((size_t)fl->name_off + fl->name_len <= h->len);
        CHECK((size_t)fl->value_off + fl->value_len <= h->len);
        const unsigned char *name = (const unsigned char *)http_field_name(h, fl);
        const unsigned char *value = (const unsigned char *)http_field_value(h, fl);
        CHECK(fl->name_len > 0);
        for (uint32_t k = 0; k < fl->name_len; k++)
            CHECK(is_tchar(name[k]));
        /* What the relay copies to the client: no CR, LF, NUL or other controls but HTAB. */
        for (uint32_t k = 0; k < fl->value_len; k++)
            CHECK(value[k] == '\t' || (value[k] >= 0x20 && value[k] != 0x7f));
        if (name_is(h, fl, "Content-Length")) {
            ncl++;
            uint64_t v = 0;
            uint32_t k = 0;
            for (; k < fl->value_len && value[k] >= '0' && value[k] <= '9'; k++) {
                uint64_t d = (uint64_t)(value[k] - '0');
                v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
            }
            r->cl = v;
        }
        note(r, "[");
        http_buf_add(&r->transcript, name, fl->name_len);
        note(r, ":");
        http_buf_add(&r->transcript, value, fl->value_len);
        note(r, "]");
    }
    /* Strict llhttp: one Content-Length, never beside Transfer-Encoding. */
    CHECK(ncl <= 1);
    CHECK(ncl == 0 || !f->chunked);
    r->has_cl = ncl == 1;
    for (uint32_t k = 0; k < h->reason_len; k++) {
        unsigned char c = (unsigned char)h->buf[h->reason_off + k];
        CHECK(c == '\t' || (c >= 0x20 && c != 0x7f));
    }
    note(r, "\n");
}

static void
on_interim(void *arg, const struct respframe *f)
{
    struct run *r = arg;
    CHECK(r->nhead == 0 && r->ncomplete == 0);
    CHECK(f->status >= 100 && f->status < 200 && f->status != 101);
    r->ninterim++;
    check_head(r, f, "I ");
}

static int
on_head(void *arg, const struct respframe *f)
{
    struct run *r = arg;
    CHECK(r->nhead == 0 && r->ncomplete == 0);
    CHECK(f->status >= 200 || f->status == 101);
    r->nhead++;
    r->status = f->status;
    r->body = f->body;
    check_head(r, f, "H ");
    note_num(r, (uint64_t)f->body | (uint64_t)f->chunked << 4);
    if (f->status == 101) {
        CHECK(r->upgrade_request);
        CHECK(f->body == RESPFRAME_BODY_NONE);
    }
    if (r->head_request || f->status == 204 || f->status == 304)
        CHECK(f->body == RESPFRAME_BODY_NONE);
    if (f->body == RESPFRAME_BODY_LENGTH)
        CHECK(r->has_cl && !f->chunked && r->cl == f->parser->content_length);
    if (f->body == RESPFRAME_BODY_CHUNKED)
        CHECK(f->chunked && !r->has_cl);
    if (f->body == RESPFRAME_BODY_CLOSE)
        CHECK(!f->chunked && !r->has_cl);
    return r->refuse ? -1 : 0;
}

static void
on_body(void *arg, const char *at, size_t len)
{
    struct run *r = arg;
    CHECK(r->nhead == 1 && r->ncomplete == 0);
    CHECK(len > 0);
    CHECK(r->body != RESPFRAME_BODY_NONE);
    r->body_bytes += len;
    CHECK(r->body_bytes <= r->input_len);
    if (r->body == RESPFRAME_BODY_LENGTH)
        CHECK(r->body_bytes <= r->cl);
    r->body_hash = fuzz_hash(r->body_hash, at, len);
}

static void
on_complete(void *arg, const struct respframe *f)
{
    struct run *r = arg;
    CHECK(r->nhead == 1 && r->ncomplete == 0);
    CHECK(r->status != 101);
    r->ncomplete++;
    if (r->body == RESPFRAME_BODY_LENGTH)
        CHECK(r->body_bytes == r->cl);
    if (r->body == RESPFRAME_BODY_NONE)
        CHECK(r->body_bytes == 0);
    if (r->body == RESPFRAME_BODY_CLOSE)
        CHECK(!f->keepalive);
    note(r, "C ");
    note_num(r, r->body_bytes);
    note_num(r, r->body_hash);
    note_num(r, f->keepalive);
    note(r, "\n");
}

static const struct respframe_ops ops = {
    .interim = on_interim,
    .head = on_head,
    .body = on_body,
    .complete = on_complete,
};

static void
bind_run(struct respframe *f, struct run *r)
{
    respframe_bind(f, &r->parser, &r->last_byte, &r->head, &ops, r);
    f->head_request = r->head_request;
    f->upgrade_request = r->upgrade_request;
}

/* Feeds data (in one piece when c is NULL) as relay.c does, then the EOF unless told not to. */
static void
feed(struct run *r, uint8_t c0, const char *data, size_t len, struct cutter *c)
{
    memset(r, 0, sizeof(*r));
    r->head_request = c0 & 1;
    r->upgrade_request = (c0 >> 1) & 1;
    r->refuse = (c0 >> 2) & 1;
    r->input_len = len;
    r->body_hash = FNV_START;
    http_head_init(&r->head, 64 * 1024, 1000, 0);
    /* Small limits sometimes, so that the limit paths are reached. */
    if ((c0 >> 4) & 1) {
        r->head.max_bytes = 64;
        r->head.max_fields = 3;
    }
    respframe_start(&r->parser);
    size_t off = 0;
    enum respframe_result res = RESPFRAME_OK;
    while (off < len) {
        size_t n = c ? cutter_next(c) : len;
        if (n > len - off)
            n = len - off;
        struct respframe f;
        bind_run(&f, r);
        size_t used = (size_t)-1;
        res = respframe_execute(&f, data + off, n, &used);
        respframe_unbind(&f);
        CHECK(r->parser.data == NULL);
        CHECK(used <= n);
        off += used;
        if (res == RESPFRAME_OK) {
            CHECK(used == n);
            continue;
        }
        if (res == RESPFRAME_ERROR) {
            CHECK(f.error != HPE_OK && f.error != HPE_PAUSED);
            note(r, "E\n");
            return;
        }
        if (res == RESPFRAME_UPGRADE) {
            CHECK(r->status == 101 && r->nhead == 1 && r->ncomplete == 0);
            note(r, "U ");
            note_num(r, len - off); /* the rest belongs to the tunnel */
            return;
        }
        CHECK(res == RESPFRAME_DONE);
        CHECK(r->ncomplete == 1);
        note(r, "D ");
        note_num(r, len - off); /* bytes after the response */
        return;
    }
    if ((c0 >> 3) & 1) {
        note(r, "OK\n");
        return;
    }
    struct respframe f;
    bind_run(&f, r);
    respframe_eof(&f);
    respframe_unbind(&f);
    /* Only a close-delimited body completes at EOF. */
    if (r->ncomplete)
        CHECK(r->body == RESPFRAME_BODY_CLOSE);
    note(r, r->ncomplete ? "EOF complete\n" : "EOF cut\n");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t c0 = size > 0 ? data[0] : 0;
    uint8_t c1 = size > 1 ? data[1] : 0;
    const char *body = (const char *)data + (size > CONF_BYTES ? CONF_BYTES : size);
    size_t len = size > CONF_BYTES ? size - CONF_BYTES : 0;

    static struct run whole, cut;
    feed(&whole, c0, body, len, NULL);
    struct cutter c = cutter_make(c1, len);
    feed(&cut, c0, body, len, &c);

    if (whole.transcript.len != cut.transcript.len ||
        memcmp(whole.transcript.p, cut.transcript.p, whole.transcript.len) != 0) {
        fprintf(stderr, "--- in one piece:\n%.*s\n--- cut (max piece %zu):\n%.*s\n",
                (int)whole.transcript.len, whole.transcript.p, c.max, (int)cut.transcript.len,
                cut.transcript.p);
        fuzz_fail("the cut run differs from the run in one piece", __LINE__);
    }
    http_head_finish(&whole.head);
    http_head_finish(&cut.head);
    http_buf_finish(&whole.transcript);
    http_buf_finish(&cut.transcript);
    return 0;
}
