/* control/audit.c — the audit log: JSON lines built with jansson, request summaries bounded in
 * size, one write(2) per line on an O_APPEND descriptor, reopen for log rotation. */
#include "control/audit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf/xalloc.h"

#define SUMMARY_DEPTH 16
#define ELLIPSIS "..."
/* The most a truncation marker costs: `,"...":"..."` in an object, `,"..."` in an array. */
#define MARK_BYTES 12

struct audit {
    char *path; /* owned */
    int fd;
    uint64_t failures;
};

/* The length of the valid UTF-8 sequence at s (n bytes available), 0 when it is not one
 * (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF). */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
    size_t len;
    unsigned cp;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        len = 2, cp = s[0] & 0x1fu;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        len = 3, cp = s[0] & 0x0fu;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        len = 4, cp = s[0] & 0x07u;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3fu);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

/* A JSON string of the first bytes of s (len bytes): bytes that are not valid UTF-8 become '?';
 * when the result would be over max bytes it is cut at a character boundary and ends with
 * "...". */
static json_t *
text(const char *s, size_t len, size_t max)
{
    /* sanitizing keeps the byte count (a bad byte becomes one '?'), so the cut is decided on
     * the input: all of it when it fits, else a prefix of at most max - 3 bytes and "..." */
    size_t limit = len <= max ? len : max - (sizeof(ELLIPSIS) - 1);
    char *buf = xmalloc(max + 1);
    size_t i = 0;
    json_t *j;

    while (i < len) {
        size_t n = utf8_seq((const unsigned char *)s + i, len - i);
        size_t w = n ? n : 1;

        if (i + w > limit)
            break;
        if (n)
            memcpy(buf + i, s + i, n);
        else
            buf[i] = '?';
        i += w;
    }
    if (i < len) {
        memcpy(buf + i, ELLIPSIS, sizeof(ELLIPSIS) - 1);
        j = json_stringn(buf, i + sizeof(ELLIPSIS) - 1);
    } else {
        j = json_stringn(buf, i);
    }
    free(buf);
    return j;
}

static json_t *
text_or_null(const char *s, size_t max)
{
    return s != NULL ? text(s, strlen(s), max) : json_null();
}

/* The compact serialized size of v. */
static size_t
dumped(const json_t *v)
{
    return json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
}

static json_t *summarize(json_t *v, int depth, size_t left, size_t *size);

/* An object's members summarized while they fit in left bytes (the closing marker included). */
static json_t *
summarize_object(json_t *v, int depth, size_t left, size_t *size)
{
    json_t *o = json_object();
    size_t used = 2; /* {} */
    const char *key;
    json_t *val;
    bool cut = false;

    json_object_foreach(v, key, val)
    {
        json_t *k = text(key, strlen(key), AUDIT_STRING_MAX);
        size_t kcost = dumped(k) + 1 + (used > 2), csize;
        json_t *c = NULL;

        if (used + kcost + MARK_BYTES < left)
            c = summarize(val, depth + 1, left - used - kcost - MARK_BYTES, &csize);
        if (c == NULL) {
            json_decref(k);
            cut = true;
            break;
        }
        json_object_set_new(o, json_string_value(k), c);
        json_decref(k);
        used += kcost + csize;
    }
    if (cut) {
        json_object_set_new(o, ELLIPSIS, json_string(ELLIPSIS));
        used += MARK_BYTES;
    }
    *size = used;
    return o;
}

static json_t *
summarize_array(json_t *v, int depth, size_t left, size_t *size)
{
    json_t *a = json_array();
    size_t used = 2, i; /* [] */
    json_t *val;
    bool cut = false;

    json_array_foreach(v, i, val)
    {
        size_t sep = used > 2, csize;
        json_t *c = NULL;

        if (used + sep + MARK_BYTES < left)
            c = summarize(val, depth + 1, left - used - sep - MARK_BYTES, &csize);
        if (c == NULL) {
            cut = true;
            break;
        }
        json_array_append_new(a, c);
        used += sep + csize;
    }
    if (cut) {
        json_array_append_new(a, json_string(ELLIPSIS));
        used += MARK_BYTES;
    }
    *size = used;
    return a;
}

/* A summary of v whose compact serialization (*size bytes, an upper bound) fits in left bytes,
 * or NULL when none does. */
static json_t *
summarize(json_t *v, int depth, size_t left, size_t *size)
{
    json_t *out;

    switch (json_typeof(v)) {
    case JSON_OBJECT:
        if (depth < SUMMARY_DEPTH && left >= 2 + MARK_BYTES)
            return summarize_object(v, depth, left, size);
        out = json_string("{...}");
        break;
    case JSON_ARRAY:
        if (depth < SUMMARY_DEPTH && left >= 2 + MARK_BYTES)
            return summarize_array(v, depth, left, size);
        out = json_string("[...]");
        break;
    case JSON_STRING:
        out = text(json_string_value(v), json_string_length(v), AUDIT_STRING_MAX);
        break;
    default:
        out = json_copy(v);
        break;
    }
    *size = dumped(out);
    if (*size > left) {
        json_decref(out);
        return NULL;
    }
    return out;
}

json_t *
audit_summary(json_t *request)
{
    size_t size;
    json_t *s;

    if (request == NULL)
        return json_null();
    s = summarize(request, 0, AUDIT_REQUEST_MAX, &size);
    /* only a scalar can fail to fit, and a cut string is far below the budget */
    return s != NULL ? s : json_string(ELLIPSIS);
}

/* RFC 3339 UTC with milliseconds: "2026-11-21T06:14:25.017Z". */
static void
format_time(char *buf, size_t len, uint64_t ms)
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    size_t n;

    gmtime_r(&sec, &tm);
    n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03uZ", (unsigned)(ms % 1000));
}

static uint64_t
now_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int
open_log(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
}

struct audit *
audit_open(const char *path, char *err, size_t errlen)
{
    struct audit *a;
    int fd = open_log(path);

    if (fd == -1) {
        snprintf(err, errlen, "audit log %s: %s", path, strerror(errno));
        return NULL;
    }
    a = xcalloc(1, sizeof(*a));
    a->path = xstrdup(path);
    a->fd = fd;
    return a;
}

static void write_line(struct audit *a, const json_t *line);

void
audit_write(struct audit *a, const struct audit_entry *e)
{
    char when[40];
    json_t *line = json_object();

    format_time(when, sizeof(when), e->time_ms ? e->time_ms : now_wall_ms());
    json_object_set_new(line, "time", json_string(when));
    json_object_set_new(line, "peer", audit_summary(e->peer));
    json_object_set_new(line, "method", text_or_null(e->method, AUDIT_STRING_MAX));
    json_object_set_new(line, "path", text_or_null(e->path, AUDIT_STRING_MAX));
    json_object_set_new(line, "request", audit_summary(e->request));
    json_object_set_new(line, "status", json_integer(e->status));
    json_object_set_new(line, "code", text_or_null(e->code, AUDIT_STRING_MAX));
    json_object_set_new(line, "generation_before", json_integer((json_int_t)e->generation_before));
    json_object_set_new(line, "generation_after", json_integer((json_int_t)e->generation_after));

    write_line(a, line);
    json_decref(line);
}

void
audit_write_event(struct audit *a, const json_t *event)
{
    char when[40];
    format_time(when, sizeof(when), now_wall_ms());
    json_t *line = json_pack("{s:s, s:O}", "time", when, "event", event);
    write_line(a, line);
    json_decref(line);
}

/* One JSON line with one write(2) (O_APPEND keeps concurrent writers' lines whole). */
static void
write_line(struct audit *a, const json_t *line)
{
    size_t len;
    char *buf;
    ssize_t n;

    len = json_dumpb(line, NULL, 0, JSON_COMPACT);
    buf = xmalloc(len + 1);
    json_dumpb(line, buf, len, JSON_COMPACT);
    buf[len++] = '\n';

    do
        n = write(a->fd, buf, len);
    while (n == -1 && errno == EINTR);
    if (n != (ssize_t)len) {
        a->failures++;
        /* end a partial line so that the next one still parses */
        if (n > 0) {
            ssize_t r = write(a->fd, "\n", 1);
            (void)r;
        }
    }
    free(buf);
}

int
audit_reopen(struct audit *a)
{
    int fd = open_log(a->path);

    if (fd == -1)
        return -1;
    close(a->fd);
    a->fd = fd;
    return 0;
}

uint64_t
audit_failures(const struct audit *a)
{
    return a->failures;
}

void
audit_close(struct audit **a)
{
    if (a == NULL || *a == NULL)
        return;
    close((*a)->fd);
    free((*a)->path);
    xfree(a);
}
