/* tests/fuzz/fuzz_chunked.c — fuzz target for the chunked decoder (llhttp in strict mode plus
 * reqframe's and respframe's checks) on requests and responses. The input is a chunked body put
 * behind a fixed head; it is fed in one piece and cut at points the input chooses. Both runs
 * must decode the same body and end the same way (complete, incomplete, or the same error
 * status), the decoded body is never longer than the chunked bytes, and a complete body ends
 * with the last-chunk line. */
#define FUZZ_NAME "fuzz_chunked"
#include "proxy/reqframe.h"
#include "proxy/respframe.h"

#include <stdbool.h>
#include <string.h>

#include "fuzz_util.h"

/* Input layout: byte 0 chooses request or response (bit 0), a body limit for requests (bits 1-2)
 * and a pipelined second message (bit 3); byte 1 the number of cut points (0..7), then two bytes
 * per cut point (an offset into the body); the rest is the chunked body. */
#define MAX_CUTS 7

static const char req_head[] = "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
static const char resp_head[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
static const char next_req[] = "GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
static const char next_resp[] = "HTTP/1.1 204 No Content\r\n\r\n";

struct outcome {
    unsigned nheads;
    unsigned ncomplete;
    int status; /* request: the rejection status; response: 1 for an error */
    size_t used;
    struct http_buf body; /* owned: the decoded body of the first message */
};

struct run {
    struct reqframe rf;
    llhttp_t parser;
    char last_byte; /* beside the parser, for respframe_bind */
    struct http_head head;
    struct outcome out;
};

static int
req_begin(void *arg)
{
    (void)arg;
    return 0;
}

static int
req_head_op(void *arg)
{
    struct run *r = arg;
    r->out.nheads++;
    return 0;
}

static int
req_body(void *arg, const char *at, size_t len)
{
    struct run *r = arg;
    CHECK(len > 0);
    if (r->out.nheads == 1)
        http_buf_add(&r->out.body, at, len);
    return 0;
}

static void
req_complete(void *arg)
{
    struct run *r = arg;
    r->out.ncomplete++;
}

static const struct reqframe_ops req_ops = {
    .begin = req_begin,
    .head = req_head_op,
    .body = req_body,
    .complete = req_complete,
};

static int
resp_head_op(void *arg, const struct respframe *f)
{
    struct run *r = arg;
    if (r->out.nheads == 0) /* the fixed head (the input may hold more responses after it) */
        CHECK(f->body == RESPFRAME_BODY_CHUNKED && f->chunked);
    r->out.nheads++;
    return 0;
}

static void
resp_body(void *arg, const char *at, size_t len)
{
    struct run *r = arg;
    CHECK(len > 0);
    http_buf_add(&r->out.body, at, len);
}

static void
resp_complete(void *arg, const struct respframe *f)
{
    struct run *r = arg;
    if (r->out.ncomplete == 0)
        CHECK(f->keepalive); /* the fixed HTTP/1.1 head */
    r->out.ncomplete++;
}

static const struct respframe_ops resp_ops = {
    .head = resp_head_op,
    .body = resp_body,
    .complete = resp_complete,
};

/* Feeds msg in the pieces that end at cuts (sorted offsets), as client.c and relay.c do. */
static void
feed(struct run *r, bool response, uint64_t max_body, const char *msg, size_t len,
     const size_t *cuts, size_t ncuts)
{
    memset(r, 0, sizeof(*r));
    if (response) {
        http_head_init(&r->head, 64 * 1024, 1000, 0);
        respframe_start(&r->parser);
    } else {
        reqframe_init(&r->rf, &req_ops, r);
        struct reqframe_limits lim = {.max_header_bytes = 32 * 1024,
                                      .max_headers = 100,
                                      .max_uri_bytes = 8 * 1024,
                                      .max_body_bytes = max_body};
        reqframe_set_limits(&r->rf, &lim);
    }
    size_t off = 0, k = 0;
    while (off < len) {
        size_t end = len;
        while (k < ncuts && cuts[k] <= off)
            k++;
        if (k < ncuts)
            end = cuts[k];
        size_t n = end - off, used = (size_t)-1;
        if (response) {
            struct respframe f;
            respframe_bind(&f, &r->parser, &r->last_byte, &r->head, &resp_ops, r);
            enum respframe_result res = respframe_execute(&f, msg + off, n, &used);
            respframe_unbind(&f);
            CHECK(used <= n);
            off += used;
            if (res == RESPFRAME_ERROR) {
                r->out.status = 1;
                break;
            }
            if (res == RESPFRAME_DONE) {
                /* The next response on the connection, as after client_exchange_done. */
                http_head_clear(&r->head);
                respframe_start(&r->parser);
                continue;
            }
            CHECK(res == RESPFRAME_OK && used == n);
        } else {
            enum reqframe_result res = reqframe_execute(&r->rf, msg + off, n, &used);
            CHECK(used <= n);
            off += used;
            if (res == REQFRAME_ERROR) {
                CHECK(r->rf.status >= 400 && r->rf.status <= 599);
                r->out.status = r->rf.status;
                break;
            }
            if (res == REQFRAME_PAUSED) {
                reqframe_resume(&r->rf);
                continue;
            }
            CHECK(res == REQFRAME_OK && used == n);
        }
    }
    r->out.used = off;
}

static void
run_finish(struct run *r, bool response)
{
    if (response)
        http_head_finish(&r->head);
    else
        reqframe_finish(&r->rf);
    http_buf_finish(&r->out.body);
}

/* The same decoded body; after an error (413 is found per piece) one may stop earlier, so one is
 * a prefix of the other. */
static bool
same_body(const struct outcome *a, const struct outcome *b)
{
    size_t n = a->body.len < b->body.len ? a->body.len : b->body.len;
    if (n > 0 && memcmp(a->body.p, b->body.p, n) != 0)
        return false;
    return a->status != 0 || a->body.len == b->body.len;
}

static int
cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    bool response = data[0] & 1;
    static const uint64_t limits[] = {0, 16, 1000, 1 << 20};
    uint64_t max_body = response ? 0 : limits[(data[0] >> 1) & 3];
    bool pipelined = (data[0] >> 3) & 1;
    size_t ncuts = data[1] % (MAX_CUTS + 1);
    size_t pos = 2;
    if (size < pos + 2 * ncuts)
        ncuts = (size - pos) / 2;
    size_t raw_cuts[MAX_CUTS];
    for (size_t i = 0; i < ncuts; i++)
        raw_cuts[i] = (size_t)data[pos + 2 * i] | (size_t)data[pos + 2 * i + 1] << 8;
    pos += 2 * ncuts;
    const char *chunks = (const char *)data + pos;
    size_t chunks_len = size - pos;

    /* The message: head, the chunked body, optionally a second message behind it. */
    const char *head = response ? resp_head : req_head;
    size_t head_len = response ? sizeof(resp_head) - 1 : sizeof(req_head) - 1;
    const char *next = response ? next_resp : next_req;
    size_t next_len = pipelined ? (response ? sizeof(next_resp) - 1 : sizeof(next_req) - 1) : 0;
    size_t len = head_len + chunks_len + next_len;
    char *msg = malloc(len ? len : 1);
    CHECK(msg != NULL);
    memcpy(msg, head, head_len);
    memcpy(msg + head_len, chunks, chunks_len);
    memcpy(msg + head_len + chunks_len, next, next_len);

    size_t cuts[MAX_CUTS];
    for (size_t i = 0; i < ncuts; i++)
        cuts[i] = head_len + (chunks_len + next_len ? raw_cuts[i] % (chunks_len + next_len) : 0);
    qsort(cuts, ncuts, sizeof(cuts[0]), cmp_size);

    static struct run whole, cut, bytewise;
    feed(&whole, response, max_body, msg, len, NULL, 0);
    feed(&cut, response, max_body, msg, len, cuts, ncuts);

    const struct outcome *a = &whole.out, *b = &cut.out;
    CHECK(a->nheads >= 1); /* the fixed head is always good */
    CHECK(a->nheads == b->nheads);
    CHECK(a->ncomplete == b->ncomplete);
    CHECK(a->status == b->status);
    CHECK(a->status != 0 || a->used == b->used); /* after an error the rest is not read */
    CHECK(same_body(a, b));
    /* Decoding only removes bytes (a chunk may take the pipelined message as its data). */
    CHECK(a->body.len <= chunks_len + next_len);
    if (max_body)
        CHECK(a->body.len <= max_body);
    if (a->ncomplete >= 1) {
        /* A complete body used at least the chunk framing around it: the last chunk and the
         * empty line ("0\r\n\r\n", or "0\r\n\n": llhttp 8 takes a bare LF there), and a size
         * line and CRLF per data chunk. */
        CHECK(a->body.len + 4 <= chunks_len + next_len);
        CHECK(a->used >= head_len + a->body.len + 4);
    }
    if (a->ncomplete == 0 && a->status == 0)
        CHECK(a->used == len); /* incomplete: everything was taken, more may come */

    /* Byte by byte, for small inputs: the strictest cut of all. */
    if (len <= 512) {
        size_t *all = malloc(len * sizeof(*all) + 1);
        CHECK(all != NULL);
        for (size_t i = 0; i < len; i++)
            all[i] = i + 1;
        feed(&bytewise, response, max_body, msg, len, all, len);
        free(all);
        const struct outcome *c = &bytewise.out;
        CHECK(c->ncomplete == a->ncomplete && c->status == a->status);
        CHECK(a->status != 0 || c->used == a->used);
        CHECK(same_body(a, c));
        run_finish(&bytewise, response);
    }
    run_finish(&whole, response);
    run_finish(&cut, response);
    free(msg);
    return 0;
}
