/* tests/origin/query.h — the test origin's request-target handling: path/query split and the
 * query parameters of tests/origin/README.md. Pure (no I/O); any thread. */
#ifndef TESTS_ORIGIN_QUERY_H
#define TESTS_ORIGIN_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>

/* What the query string asks for. */
struct query {
    uint64_t delay_ms;
    uint64_t chunk_bytes;
    bool chunked;
    bool close;
    bool extra_close;       /* an added Connection header lists "close" */
    struct evbuffer *extra; /* owned: added header lines, NULL if none */
    const char *bad;        /* why the query is refused, NULL if it is fine */
};

/* Parses the query string s[0..n) (after the '?'): values are %XX-decoded, unknown keys are
 * ignored, the first invalid value sets q->bad. q is overwritten; release it with
 * query_finish(). */
void query_parse(struct query *q, const char *s, size_t n);

/* Frees q->extra (NULL-safe, idempotent). */
void query_finish(struct query *q);

/* Splits a request target t[0..n) into path and query (without '?'); an absolute-form target
 * (http://host/p) is reduced to its path, an empty path becomes "/". The results point into
 * t or a static string. */
void query_split_target(const char *t, size_t n, const char **path, size_t *path_len,
                        const char **query, size_t *query_len);

/* Decimal digits only (at least one), value at most `max`. Returns 0 and sets *out, or -1. */
int query_parse_uint(const char *s, size_t n, uint64_t max, uint64_t *out);

#endif
