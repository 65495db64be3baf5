/* tests/origin/query.c — the test origin's request-target handling: path/query split and the
 * query parameters (delay=, hdr=, chunked=, chunk=, close=). Pure: no I/O. */
#include "tests/origin/query.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/xalloc.h"

#define MAX_CHUNK_BYTES (16u * 1024u * 1024u) /* chunk=K upper bound */
#define MAX_DELAY_MS (UINT64_C(24) * 3600 * 1000)
#define DEFAULT_CHUNK_BYTES 8192u

int
query_parse_uint(const char *s, size_t n, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
        if (v > max)
            return -1;
    }
    *out = v;
    return 0;
}

static int
hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* %XX-decodes s[0..n) into out (at least n bytes); a malformed escape is kept as is.
 * '+' is not a space here. Returns the decoded length. */
static size_t
pct_decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0 &&
            (lo = hexval(s[i + 2])) >= 0) {
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    return o;
}

static bool
has_ctl(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return true;
    return false;
}

/* True when the comma-separated list v[0..n) holds the token `tok` (case-insensitive). */
static bool
list_has(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok);
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < n && v[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end - start == tl && strncasecmp(v + start, tok, tl) == 0)
            return true;
    }
    return false;
}

/* hdr=Name:Value → one header line in q->extra. */
static void
add_hdr_param(struct query *q, const char *v, size_t n)
{
    const char *colon = memchr(v, ':', n);
    if (colon == NULL || colon == v) {
        q->bad = "hdr= wants Name:Value";
        return;
    }
    size_t name_len = (size_t)(colon - v);
    const char *val = colon + 1;
    size_t val_len = n - name_len - 1;
    while (val_len > 0 && (val[0] == ' ' || val[0] == '\t')) {
        val++;
        val_len--;
    }
    while (val_len > 0 && (val[val_len - 1] == ' ' || val[val_len - 1] == '\t'))
        val_len--;
    if (has_ctl(v, name_len) || has_ctl(val, val_len)) {
        q->bad = "hdr= must not contain CR, LF or NUL";
        return;
    }
    if (q->extra == NULL)
        q->extra = evbuffer_new();
    evbuffer_add(q->extra, v, name_len);
    evbuffer_add(q->extra, ": ", 2);
    evbuffer_add(q->extra, val, val_len);
    evbuffer_add(q->extra, "\r\n", 2);
    if (name_len == 10 && strncasecmp(v, "connection", 10) == 0 && list_has(val, val_len, "close"))
        q->extra_close = true;
}

static bool
flag_on(const char *v, size_t n)
{
    return n > 0 && !(n == 1 && v[0] == '0');
}

void
query_parse(struct query *q, const char *s, size_t n)
{
    memset(q, 0, sizeof(*q));
    q->chunk_bytes = DEFAULT_CHUNK_BYTES;
    char *buf = xmalloc(n + 1);
    const char *end = s + n;
    while (s < end && q->bad == NULL) {
        const char *amp = memchr(s, '&', (size_t)(end - s));
        const char *seg_end = amp ? amp : end;
        const char *eq = memchr(s, '=', (size_t)(seg_end - s));
        const char *key_end = eq ? eq : seg_end;
        size_t kl = pct_decode(s, (size_t)(key_end - s), buf);
        const char *key = buf;
        const char *val = buf + kl;
        size_t vl = eq ? pct_decode(eq + 1, (size_t)(seg_end - eq - 1), buf + kl) : 0;

        if (kl == 5 && memcmp(key, "delay", 5) == 0) {
            if (query_parse_uint(val, vl, MAX_DELAY_MS, &q->delay_ms) == -1)
                q->bad = "delay= wants milliseconds";
        } else if (kl == 3 && memcmp(key, "hdr", 3) == 0) {
            add_hdr_param(q, val, vl);
        } else if (kl == 7 && memcmp(key, "chunked", 7) == 0) {
            q->chunked = flag_on(val, vl);
        } else if (kl == 5 && memcmp(key, "chunk", 5) == 0) {
            if (query_parse_uint(val, vl, MAX_CHUNK_BYTES, &q->chunk_bytes) == -1 ||
                q->chunk_bytes == 0)
                q->bad = "chunk= wants 1..16777216";
        } else if (kl == 5 && memcmp(key, "close", 5) == 0) {
            q->close = flag_on(val, vl);
        }
        s = amp ? amp + 1 : end;
    }
    free(buf);
}

void
query_split_target(const char *t, size_t n, const char **path, size_t *path_len, const char **query,
                   size_t *query_len)
{
    size_t skip = 0;
    if (n >= 7 && strncasecmp(t, "http://", 7) == 0)
        skip = 7;
    else if (n >= 8 && strncasecmp(t, "https://", 8) == 0)
        skip = 8;
    if (skip > 0) {
        while (skip < n && t[skip] != '/' && t[skip] != '?')
            skip++;
        t += skip;
        n -= skip;
    }
    const char *qm = memchr(t, '?', n);
    *path = t;
    *path_len = qm ? (size_t)(qm - t) : n;
    *query = qm ? qm + 1 : t + n;
    *query_len = qm ? n - *path_len - 1 : 0;
    if (*path_len == 0) {
        *path = "/";
        *path_len = 1;
    }
}

void
query_finish(struct query *q)
{
    if (q->extra != NULL)
        evbuffer_free(q->extra);
    q->extra = NULL;
}
