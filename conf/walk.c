/* conf/walk.c — the schema walk's building blocks: key paths, error messages, mappings checked
 * against their known keys, and typed readers built on conf/units.c. */
#include "conf/walk.h"

#include <assert.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/units.h"
#include "conf/xalloc.h"

#define SHOW_MAX 48 /* characters of a value or key quoted in a message */

/* A printable, bounded copy of user text for messages. */
static const char *
show(const char *s, char buf[SHOW_MAX + 4])
{
    size_t i;

    for (i = 0; s[i] && i < SHOW_MAX; i++)
        buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    if (s[i])
        memcpy(buf + i, "...", 4);
    else
        buf[i] = '\0';
    return buf;
}

size_t
walk_push(struct walk *w, const char *key)
{
    char shown[SHOW_MAX + 4];
    size_t old = w->pathlen;
    int n = snprintf(w->path + old, sizeof w->path - old, "%s%s", old ? "." : "", show(key, shown));

    if (n > 0)
        w->pathlen = old + (size_t)n < sizeof w->path ? old + (size_t)n : sizeof w->path - 1;
    return old;
}

size_t
walk_push_index(struct walk *w, size_t i)
{
    size_t old = w->pathlen;
    int n = snprintf(w->path + old, sizeof w->path - old, "[%zu]", i);

    if (n > 0)
        w->pathlen = old + (size_t)n < sizeof w->path ? old + (size_t)n : sizeof w->path - 1;
    return old;
}

void
walk_pop(struct walk *w, size_t len)
{
    w->pathlen = len;
    w->path[len] = '\0';
}

void
walk_error(struct walk *w, const struct node *at, const char *fmt, ...)
{
    char msg[CONF_ERR_LEN];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tree_error(w->err, w->file, at->line, at->col, w->path, "%s", msg);
}

/* "a, b or c" into buf (cut short if it does not fit). */
static const char *
join(const char *const *names, char *buf, size_t size)
{
    buf[0] = '\0';
    for (size_t i = 0; names[i]; i++) {
        if (i > 0)
            strncat(buf, names[i + 1] ? ", " : " or ", size - strlen(buf) - 1);
        strncat(buf, names[i], size - strlen(buf) - 1);
    }
    return buf;
}

static const char *
type_name(const struct node *n, char buf[SHOW_MAX + 8])
{
    switch (n->type) {
    case NODE_SCALAR:
        if (n->is_null)
            return "null";
        buf[0] = '"';
        show(n->text, buf + 1);
        strcat(buf, "\"");
        return buf;
    case NODE_SEQ:
        return "a list";
    case NODE_MAP:
        return "a mapping";
    }
    return "?";
}

int
walk_type(struct walk *w, const struct node *n, enum node_type want)
{
    static const char *const names[] = {"a single value", "a list", "a mapping"};
    char buf[SHOW_MAX + 8];

    if (n->type == want)
        return 0;
    walk_error(w, n, "expected %s, found %s", names[want], type_name(n, buf));
    return -1;
}

const char *
walk_scalar(struct walk *w, const struct node *n)
{
    if (walk_type(w, n, NODE_SCALAR) == -1)
        return NULL;
    if (strlen(n->text) != n->len) {
        walk_error(w, n, "contains a NUL character");
        return NULL;
    }
    return n->text;
}

/* Levenshtein distance of two short strings, capped: enough to suggest a misspelt key. */
static size_t
distance(const char *a, const char *b)
{
    size_t la = strlen(a);
    size_t lb = strlen(b);
    size_t row[SHOW_MAX + 1];

    if (la > SHOW_MAX || lb > SHOW_MAX)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static void
unknown_key(struct walk *w, const struct node *key, const char *const *keys, const char *what)
{
    const char *near = NULL;
    size_t best = 3; /* suggest only within two edits */
    size_t mark = walk_push(w, key->text);

    for (size_t i = 0; keys[i]; i++) {
        size_t d = distance(key->text, keys[i]);
        if (d < best && d < strlen(keys[i])) {
            best = d;
            near = keys[i];
        }
    }
    if (near != NULL) {
        walk_error(w, key, "unknown %s (did you mean \"%s\"?)", what, near);
    } else if (strcmp(what, "key") != 0) { /* a short list of names: show it */
        char list[128];
        walk_error(w, key, "unknown %s (expected %s)", what, join(keys, list, sizeof list));
    } else {
        walk_error(w, key, "unknown %s", what);
    }
    walk_pop(w, mark);
}

int
walk_map(struct walk *w, const struct node *n, const char *const *keys, const char *what,
         struct fields *f)
{
    const struct node *first[WALK_FIELDS_MAX] = {0};

    for (size_t k = 0; keys[k]; k++)
        assert(k < WALK_FIELDS_MAX); /* a schema list longer than struct fields holds */
    memset(f, 0, sizeof *f);
    f->map = n;
    f->keys = keys;
    if (walk_type(w, n, NODE_MAP) == -1)
        return -1;
    for (size_t i = 0; i < n->npairs; i++) {
        const struct node *key = n->pairs[i].key;
        size_t k;

        if (key->type != NODE_SCALAR || strlen(key->text) != key->len) {
            walk_error(w, key, "a key must be a plain string");
            continue;
        }
        for (k = 0; keys[k] && strcmp(keys[k], key->text) != 0; k++)
            ;
        if (keys[k] == NULL) {
            unknown_key(w, key, keys, what);
        } else if (first[k] != NULL) {
            size_t mark = walk_push(w, key->text);
            walk_error(w, key, "duplicate key (first at %u:%u)", first[k]->line, first[k]->col);
            walk_pop(w, mark);
        } else {
            first[k] = key;
            f->val[k] = n->pairs[i].val;
        }
    }
    return 0;
}

const struct node *
walk_get(const struct fields *f, const char *key)
{
    for (size_t k = 0; f->keys[k]; k++) {
        if (strcmp(f->keys[k], key) == 0)
            return f->val[k];
    }
    abort(); /* a key missing from the schema list is a bug in conf/, not in the file */
}

int
walk_require(struct walk *w, const struct fields *f, const char *key)
{
    if (walk_get(f, key) != NULL)
        return 0;
    size_t mark = walk_push(w, key);
    walk_error(w, f->map, "missing (this key is required)");
    walk_pop(w, mark);
    return -1;
}

/* The scalar text of key, with the key pushed on the path (*mark to pop), or NULL when the key
 * is absent (nothing pushed), not a scalar, or null where null is not allowed (reported,
 * popped). */
static const char *
begin(struct walk *w, const struct fields *f, const char *key, bool allow_null,
      const struct node **n, size_t *mark)
{
    const char *s;

    if ((*n = walk_get(f, key)) == NULL)
        return NULL;
    *mark = walk_push(w, key);
    if ((s = walk_scalar(w, *n)) != NULL && (*n)->is_null && !allow_null) {
        walk_error(w, *n, "needs a value");
        s = NULL;
    }
    if (s == NULL)
        walk_pop(w, *mark);
    return s;
}

/* Pops the path and returns rc: the readers' common exit. */
static int
end(struct walk *w, size_t mark, int rc)
{
    walk_pop(w, mark);
    return rc;
}

#define BEGIN(key, allow_null)                                                                     \
    const struct node *n;                                                                          \
    size_t mark;                                                                                   \
    char shown[SHOW_MAX + 4];                                                                      \
    const char *s = begin(w, f, (key), (allow_null), &n, &mark);                                   \
    if (s == NULL)                                                                                 \
        return n == NULL ? 0 : -1;                                                                 \
    (void)shown

int
walk_str(struct walk *w, const struct fields *f, const char *key, unsigned flags, char **out)
{
    BEGIN(key, true);
    if (n->is_null || s[0] == '\0') {
        if (!(flags & STR_NULLABLE)) {
            walk_error(w, n, "must not be empty");
            return end(w, mark, -1);
        }
        xfree(out);
        return end(w, mark, 0);
    }
    free(*out);
    *out = xstrdup(s);
    return end(w, mark, 0);
}

int
walk_bool(struct walk *w, const struct fields *f, const char *key, bool *out)
{
    BEGIN(key, false);
    if (conf_parse_bool(s, out) == -1) {
        walk_error(w, n, "expected true or false (or yes/no, on/off), found \"%s\"",
                   show(s, shown));
        return end(w, mark, -1);
    }
    return end(w, mark, 0);
}

int
walk_u32(struct walk *w, const struct fields *f, const char *key, uint32_t min, uint32_t max,
         uint32_t *out)
{
    uint64_t v;

    BEGIN(key, false);
    if (s[strspn(s, "0123456789")] != '\0' || s[0] == '\0') {
        walk_error(w, n, "expected a whole number, found \"%s\"", show(s, shown));
        return end(w, mark, -1);
    }
    if (conf_parse_uint(s, max, &v) == -1 || v < min) {
        if (max == UINT32_MAX)
            walk_error(w, n, "must be at least %" PRIu32 ", found %s", min, show(s, shown));
        else
            walk_error(w, n, "must be between %" PRIu32 " and %" PRIu32 ", found %s", min, max,
                       show(s, shown));
        return end(w, mark, -1);
    }
    *out = (uint32_t)v;
    return end(w, mark, 0);
}

int
walk_duration(struct walk *w, const struct fields *f, const char *key, uint64_t min_ms,
              uint64_t *out)
{
    uint64_t v;

    BEGIN(key, false);
    if (conf_parse_duration(s, &v) == -1) {
        if (s[0] != '\0' && s[strspn(s, "0123456789")] == '\0')
            walk_error(w, n, "\"%s\" needs a unit: ms, s, m, h or d (like 2s)", show(s, shown));
        else
            walk_error(w, n, "expected a duration such as 500ms, 2s, 1m, 1h or 1d, found \"%s\"",
                       show(s, shown));
        return end(w, mark, -1);
    }
    if (v < min_ms) {
        if (min_ms == 1)
            walk_error(w, n, "must be above 0");
        else
            walk_error(w, n, "must be at least %" PRIu64 "ms", min_ms);
        return end(w, mark, -1);
    }
    *out = v;
    return end(w, mark, 0);
}

int
walk_size(struct walk *w, const struct fields *f, const char *key, uint64_t min, uint64_t *out)
{
    uint64_t v;

    BEGIN(key, false);
    if (conf_parse_size(s, &v) == -1) {
        walk_error(w, n, "expected a size in bytes such as 512, 32k, 1m or 1g, found \"%s\"",
                   show(s, shown));
        return end(w, mark, -1);
    }
    if (v < min) {
        if (min % 1024 == 0)
            walk_error(w, n, "must be at least %" PRIu64 "k", min / 1024);
        else
            walk_error(w, n, "must be at least %" PRIu64, min);
        return end(w, mark, -1);
    }
    *out = v;
    return end(w, mark, 0);
}

int
walk_percent(struct walk *w, const struct fields *f, const char *key, uint32_t *bp)
{
    BEGIN(key, false);
    if (conf_parse_percent(s, bp) == -1) {
        walk_error(w, n,
                   "expected a percentage from 0 to 100 with at most two decimals "
                   "(like 5, 12.5 or 12.34%%), found \"%s\"",
                   show(s, shown));
        return end(w, mark, -1);
    }
    return end(w, mark, 0);
}

int
walk_ratio(struct walk *w, const struct fields *f, const char *key, double min, double max,
           double *out)
{
    double v;

    BEGIN(key, false);
    if (conf_parse_ratio(s, &v) == -1) {
        walk_error(w, n, "expected a number such as 0.5 or 1, found \"%s\"", show(s, shown));
        return end(w, mark, -1);
    }
    if (v < min || v > max) {
        walk_error(w, n, "must be between %g and %g, found %s", min, max, show(s, shown));
        return end(w, mark, -1);
    }
    *out = v;
    return end(w, mark, 0);
}

int
walk_addr_node(struct walk *w, const struct node *n, bool port0, struct conf_addr *out)
{
    char shown[SHOW_MAX + 4];
    struct conf_addr a;
    const char *s = walk_scalar(w, n);

    if (s == NULL)
        return -1;
    if (n->is_null) {
        walk_error(w, n, "needs a value");
        return -1;
    }
    if (conf_parse_addr(s, &a) == -1) {
        walk_error(w, n,
                   "bad address \"%s\": expected IPv4:PORT, [IPv6]:PORT, *:PORT or "
                   "localhost:PORT (numeric addresses, port 0-65535)",
                   show(s, shown));
        return -1;
    }
    if (!port0 && a.ss.ss_family == AF_INET && ((struct sockaddr_in *)&a.ss)->sin_port == 0) {
        walk_error(w, n, "port 0 is allowed only where we listen, not here");
        return -1;
    }
    if (!port0 && a.ss.ss_family == AF_INET6 && ((struct sockaddr_in6 *)&a.ss)->sin6_port == 0) {
        walk_error(w, n, "port 0 is allowed only where we listen, not here");
        return -1;
    }
    *out = a;
    return 0;
}

int
walk_addr(struct walk *w, const struct fields *f, const char *key, bool port0,
          struct conf_addr *out)
{
    const struct node *n = walk_get(f, key);

    if (n == NULL)
        return 0;
    size_t mark = walk_push(w, key);
    return end(w, mark, walk_addr_node(w, n, port0, out));
}

int
walk_enum(struct walk *w, const struct fields *f, const char *key, const char *const *names,
          int *out)
{
    char list[256];

    BEGIN(key, false);
    for (int i = 0; names[i]; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = i;
            return end(w, mark, 0);
        }
    }
    walk_error(w, n, "expected %s, found \"%s\"", join(names, list, sizeof list), show(s, shown));
    return end(w, mark, -1);
}
