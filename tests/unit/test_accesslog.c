/* tests/unit/test_accesslog.c — the JSON access log: every line parses (jansson), escaping of
 * hostile targets, 4 worker threads x 50k lines all written in order, reopen after a rename,
 * drop counting while the writer is stalled on a full pipe (run it under TSan and ASan too). */
#include "proxy/accesslog.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "conf/xalloc.h"
#include "tap.h"

static char tmpdir[256];

static double
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    *len = 0;
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = xmalloc((size_t)n + 1);
    *len = fread(buf, 1, (size_t)n, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

/* A line's request_id is "w<worker>-<seq>". */
struct tally {
    int nworkers;
    long *next_seq; /* per worker: the next expected seq (lines of a worker stay in order) */
    long lines, bad_json, out_of_order, bad_fields;
};

static void
tally_init(struct tally *t, int nworkers)
{
    memset(t, 0, sizeof(*t));
    t->nworkers = nworkers;
    t->next_seq = xcalloc((size_t)nworkers, sizeof(long));
}

/* Parses one line; with `gaps`, a worker's seq may skip (dropped lines) but never go back. */
static void
tally_line(struct tally *t, const char *line, size_t len, bool gaps)
{
    json_error_t jerr;
    json_t *j = json_loadb(line, len, 0, &jerr);
    const char *rid;
    int w;
    long seq;

    t->lines++;
    if (j == NULL || !json_is_object(j)) {
        if (t->bad_json++ < 3)
            diag("bad JSON (%s): %.*s", jerr.text, (int)(len > 200 ? 200 : len), line);
        json_decref(j);
        return;
    }
    rid = json_string_value(json_object_get(j, "request_id"));
    if (rid == NULL || sscanf(rid, "w%d-%ld", &w, &seq) != 2 || w < 0 || w >= t->nworkers) {
        t->bad_fields++;
    } else if (gaps ? seq < t->next_seq[w] : seq != t->next_seq[w]) {
        if (t->out_of_order++ < 3)
            diag("worker %d: seq %ld, expected %ld", w, seq, t->next_seq[w]);
    } else {
        t->next_seq[w] = seq + 1;
    }
    if (json_integer_value(json_object_get(j, "status")) != 200 ||
        !json_is_string(json_object_get(j, "time")))
        t->bad_fields++;
    json_decref(j);
}

static void
tally_buf(struct tally *t, const char *buf, size_t len, bool gaps)
{
    const char *p = buf, *end = buf + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL) {
            t->bad_json++;
            diag("unterminated last line");
            break;
        }
        tally_line(t, p, (size_t)(nl - p), gaps);
        p = nl + 1;
    }
}

static void
tally_file(struct tally *t, const char *path)
{
    size_t len;
    char *buf = slurp(path, &len);
    if (buf)
        tally_buf(t, buf, len, false);
    free(buf);
}

static struct sockaddr_in client4;

static void
fill(struct accesslog_entry *e, char *rid, size_t rid_cap, int worker, long seq)
{
    static const char target[] = "/api/v1/items?id=42&q=blue%20green";
    memset(e, 0, sizeof(*e));
    e->client = (const struct sockaddr *)&client4;
    e->method = "GET";
    e->method_len = 3;
    e->target = target;
    e->target_len = sizeof(target) - 1;
    e->status = 200;
    e->bytes_in = 123;
    e->bytes_out = 4567;
    e->duration_us = 1234;
    e->pool = "blue";
    e->server = "b1";
    e->request_id = rid;
    e->request_id_len = (size_t)snprintf(rid, rid_cap, "w%d-%ld", worker, seq);
    e->generation = 7;
    e->bucket = (int32_t)(seq % 10000);
}

/* ---- formatting ------------------------------------------------------------------------ */

static json_t *
format_parse(const struct accesslog_entry *e, char *line, size_t *len, size_t flags)
{
    json_error_t jerr;
    json_t *j;

    *len = accesslog_format(line, e, 0);
    j = json_loadb(line, *len, flags, &jerr);
    if (j == NULL)
        diag("json: %s in %.*s", jerr.text, (int)(*len > 300 ? 300 : *len), line);
    return j;
}

static bool
raw_clean(const char *line, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++)
        if ((unsigned char)line[i] < 0x20 || (unsigned char)line[i] >= 0x7f)
            return false;
    return len > 0 && line[len - 1] == '\n';
}

static void
test_format(void)
{
    static char line[ACCESSLOG_LINE_MAX];
    struct accesslog_entry e;
    char rid[32];
    size_t len;
    json_t *j;
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};

    fill(&e, rid, sizeof(rid), 0, 5);
    e.time_ms = 1714564800123ull; /* 2024-05-01T12:00:00.123Z */
    e.duration_us = 12345678;
    e.generation = 9223372036854775807ull; /* jansson's limit (int64); real ones are small */
    j = format_parse(&e, line, &len, 0);
    ok(j != NULL && raw_clean(line, len), "a line is one valid JSON object ending in \\n");
    ok(j && strcmp(json_string_value(json_object_get(j, "time")), "2024-05-01T12:00:00.123Z") == 0,
       "time: RFC 3339 UTC with milliseconds");
    ok(j && strcmp(json_string_value(json_object_get(j, "client")), "192.0.2.7") == 0 &&
           strcmp(json_string_value(json_object_get(j, "method")), "GET") == 0 &&
           strcmp(json_string_value(json_object_get(j, "target")),
                  "/api/v1/items?id=42&q=blue%20green") == 0 &&
           json_integer_value(json_object_get(j, "status")) == 200 &&
           json_integer_value(json_object_get(j, "bytes_in")) == 123 &&
           json_integer_value(json_object_get(j, "bytes_out")) == 4567 &&
           strcmp(json_string_value(json_object_get(j, "pool")), "blue") == 0 &&
           strcmp(json_string_value(json_object_get(j, "server")), "b1") == 0 &&
           strcmp(json_string_value(json_object_get(j, "request_id")), "w0-5") == 0 &&
           json_integer_value(json_object_get(j, "bucket")) == 5,
       "client, method, target, status, bytes, pool, server, request_id, bucket");
    ok(strstr(line, "\"duration_ms\":12345.678,") != NULL && j &&
           json_is_real(json_object_get(j, "duration_ms")),
       "duration_ms: a number with 3 decimals");
    ok(strstr(line, "\"generation\":9223372036854775807,") != NULL && j &&
           json_integer_value(json_object_get(j, "generation")) == 9223372036854775807ll,
       "generation: a 63-bit value");
    {
        static const char *const keys[] = {
            "time",        "client", "method", "target",     "status",     "bytes_in", "bytes_out",
            "duration_ms", "pool",   "server", "request_id", "generation", "bucket"};
        bool all = j && json_object_size(j) == 13;
        for (size_t i = 0; all && i < 13; i++)
            all = json_object_get(j, keys[i]) != NULL;
        ok(all, "exactly the 13 fields of DESIGN §7");
    }
    json_decref(j);

    e.duration_us = 7;
    e.bucket = -1;
    e.pool = NULL;
    e.server = NULL;
    e.request_id = NULL;
    e.client = NULL;
    e.status = 503;
    j = format_parse(&e, line, &len, 0);
    ok(j && json_is_null(json_object_get(j, "bucket")) &&
           json_is_null(json_object_get(j, "pool")) && json_is_null(json_object_get(j, "server")) &&
           json_is_null(json_object_get(j, "request_id")) &&
           json_is_null(json_object_get(j, "client")) && strstr(line, "\"duration_ms\":0.007,"),
       "no bucket, pool, server, request id, client: null; 7 us is 0.007");
    json_decref(j);

    inet_pton(AF_INET6, "2001:db8::1", &s6.sin6_addr);
    e.client = (const struct sockaddr *)&s6;
    j = format_parse(&e, line, &len, 0);
    ok(j && strcmp(json_string_value(json_object_get(j, "client")), "2001:db8::1") == 0,
       "IPv6 client");
    json_decref(j);
    inet_pton(AF_INET6, "::ffff:198.51.100.9", &s6.sin6_addr);
    j = format_parse(&e, line, &len, 0);
    ok(j && strcmp(json_string_value(json_object_get(j, "client")), "198.51.100.9") == 0,
       "v4-mapped client shown as IPv4");
    json_decref(j);

    e.time_ms = 0;
    len = accesslog_format(line, &e, 1000);
    ok(strncmp(line, "{\"time\":\"1970-01-01T00:00:01.000Z\"", 34) == 0,
       "time_ms 0: the formatter's now is used");
}

/* The target decoded by a JSON parser: each byte >= 0x80 was logged as \u00XX (Latin-1). */
static size_t
latin1_to_utf8(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i] < 0x80) {
            out[o++] = (char)in[i];
        } else {
            out[o++] = (char)(0xc0 | (in[i] >> 6));
            out[o++] = (char)(0x80 | (in[i] & 0x3f));
        }
    }
    return o;
}

static void
test_escaping(void)
{
    static char line[ACCESSLOG_LINE_MAX];
    static const char nasty[] = "/a\"b\\c\nd\re\tf\bg\fh\x01i\x1fj\x7fk\xc3\xa9l\xffm</script>";
    unsigned char all[256];
    char want[600], big[5000], rid[32];
    struct accesslog_entry e;
    size_t len, wlen;
    json_t *j;
    const char *got;

    fill(&e, rid, sizeof(rid), 0, 1);
    e.target = nasty;
    e.target_len = sizeof(nasty) - 1;
    j = format_parse(&e, line, &len, 0);
    wlen = latin1_to_utf8((const unsigned char *)nasty, sizeof(nasty) - 1, want);
    got = j ? json_string_value(json_object_get(j, "target")) : NULL;
    ok(j && raw_clean(line, len), "quotes, backslash, controls, DEL, high bytes: valid JSON, "
                                  "only printable ASCII in the line");
    ok(got && strlen(got) == wlen && memcmp(got, want, wlen) == 0,
       "the target decodes back to its bytes (high bytes as U+0080..U+00FF)");
    ok(strstr(line, "\\u00ff") && strstr(line, "\\u0001") && strstr(line, "\\u007f") &&
           strstr(line, "\\\"b\\\\c\\nd\\re\\tf\\bg\\fh"),
       "escapes: \\u00XX for bytes, short forms for \\\" \\\\ \\n \\r \\t \\b \\f");
    json_decref(j);

    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    e.target = (const char *)all;
    e.target_len = 256;
    e.method = (const char *)all + 250; /* bytes 250..255 as a method */
    e.method_len = 6;
    e.request_id = "\"}{\"x\":1";
    e.request_id_len = strlen(e.request_id);
    j = format_parse(&e, line, &len, JSON_ALLOW_NUL);
    {
        size_t glen = 0;
        wlen = latin1_to_utf8(all, 256, want);
        got = NULL;
        if (j) {
            json_t *tv = json_object_get(j, "target");
            got = json_string_value(tv);
            glen = json_string_length(tv);
        }
        ok(j && raw_clean(line, len) && got && glen == wlen && memcmp(got, want, wlen) == 0,
           "all 256 byte values (NUL included) round-trip");
        ok(j && json_object_size(j) == 13 &&
               strcmp(json_string_value(json_object_get(j, "request_id")), "\"}{\"x\":1") == 0,
           "a request id cannot inject fields");
    }
    json_decref(j);

    memset(big, 'a', sizeof(big));
    big[0] = '/';
    e.target = big;
    e.target_len = sizeof(big);
    e.method = "GET";
    e.method_len = 3;
    j = format_parse(&e, line, &len, 0);
    got = j ? json_string_value(json_object_get(j, "target")) : NULL;
    ok(got && strlen(got) == ACCESSLOG_MAX_TARGET, "a 5000-byte target is cut to 2 KiB (%zu)",
       got ? strlen(got) : 0);
    json_decref(j);

    memset(big, 0xff, sizeof(big));
    e.target = big;
    j = format_parse(&e, line, &len, 0);
    ok(j && len <= ACCESSLOG_LINE_MAX, "worst case (2 KiB of escaped bytes): %zu bytes <= %d", len,
       ACCESSLOG_LINE_MAX);
    json_decref(j);
}

/* ---- the writer ------------------------------------------------------------------------ */

#define NTHREADS 4
#define NLINES 50000

struct wargs {
    struct accesslog *l;
    int worker;
    long from, count;
    int flush_every;
};

static void *
worker_main(void *arg)
{
    struct wargs *a = arg;
    struct accesslog_entry e;
    char rid[32];

    for (long i = a->from; i < a->from + a->count; i++) {
        fill(&e, rid, sizeof(rid), a->worker, i);
        accesslog_write(a->l, a->worker, &e);
        if (a->flush_every && i % a->flush_every == 0)
            accesslog_flush(a->l, a->worker);
    }
    accesslog_flush(a->l, a->worker);
    return NULL;
}

static void
test_threads(void)
{
    char path[300], err[256];
    struct accesslog *l;
    pthread_t t[NTHREADS];
    struct wargs a[NTHREADS];
    struct tally ty;
    double t0;

    snprintf(path, sizeof(path), "%s/threads.log", tmpdir);
    l = accesslog_open(path, NTHREADS, err, sizeof(err));
    ok(l != NULL, "open %s", l ? path : err);
    /* Room for everything: this test is about every line arriving, not about the bound. */
    accesslog_set_max_queued(l, 1u << 20);
    t0 = now_ms();
    for (int i = 0; i < NTHREADS; i++) {
        a[i] = (struct wargs){
            .l = l, .worker = i, .from = 0, .count = NLINES, .flush_every = i == 0 ? 997 : 0};
        pthread_create(&t[i], NULL, worker_main, &a[i]);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    accesslog_close(&l);
    ok(l == NULL, "close clears the pointer");
    diag("%d x %d lines written and closed in %.0f ms", NTHREADS, NLINES, now_ms() - t0);

    tally_init(&ty, NTHREADS);
    tally_file(&ty, path);
    ok(ty.lines == (long)NTHREADS * NLINES && ty.bad_json == 0,
       "%ld lines, all valid JSON (%ld bad)", ty.lines, ty.bad_json);
    ok(ty.out_of_order == 0 && ty.bad_fields == 0, "every worker's lines present once, in order");
    {
        bool all = true;
        for (int i = 0; i < NTHREADS; i++)
            all = all && ty.next_seq[i] == NLINES;
        ok(all, "each worker's last line is seq %d", NLINES - 1);
    }
    free(ty.next_seq);
    {
        struct stat st = {0};
        int rc = stat(path, &st);
        ok(rc == 0 && (st.st_mode & 0777) == 0640, "file mode 0640 (%o)",
           (unsigned)(st.st_mode & 0777));
    }
    unlink(path);
}

static long
count_lines(const char *path)
{
    size_t len;
    char *buf = slurp(path, &len);
    long n = 0;
    for (size_t i = 0; i < len; i++)
        n += buf[i] == '\n';
    free(buf);
    return n;
}

static void
write_range(struct accesslog *l, int worker, long from, long count)
{
    struct wargs a = {.l = l, .worker = worker, .from = from, .count = count};
    worker_main(&a);
}

static void
test_reopen(void)
{
    char path[400], rotated[300], dir[300], moved[300], err[256];
    struct accesslog *l;
    struct tally ty;
    double deadline;

    snprintf(path, sizeof(path), "%s/access.log", tmpdir);
    snprintf(rotated, sizeof(rotated), "%s/access.log.1", tmpdir);
    l = accesslog_open(path, 1, err, sizeof(err));
    write_range(l, 0, 0, 100);
    deadline = now_ms() + 3000;
    while (count_lines(path) < 100 && now_ms() < deadline)
        usleep(1000);
    ok(count_lines(path) == 100, "flushed lines reach the file without close");
    ok(rename(path, rotated) == 0, "rotate: rename");
    ok(accesslog_reopen(l) == 0, "reopen");
    write_range(l, 0, 100, 100);
    accesslog_close(&l);

    tally_init(&ty, 1);
    tally_file(&ty, rotated);
    ok(ty.lines == 100 && ty.next_seq[0] == 100 && ty.out_of_order == 0,
       "lines before the reopen are in the rotated file (%ld)", ty.lines);
    free(ty.next_seq);
    tally_init(&ty, 1);
    ty.next_seq[0] = 100;
    tally_file(&ty, path);
    ok(ty.lines == 100 && ty.next_seq[0] == 200 && ty.out_of_order == 0 && ty.bad_json == 0,
       "lines after the reopen are in the new file (%ld)", ty.lines);
    free(ty.next_seq);
    unlink(path);
    unlink(rotated);

    /* A reopen that fails keeps the old file. */
    snprintf(dir, sizeof(dir), "%s/d", tmpdir);
    snprintf(moved, sizeof(moved), "%s/d2", tmpdir);
    mkdir(dir, 0700);
    snprintf(path, sizeof(path), "%s/access.log", dir);
    l = accesslog_open(path, 1, err, sizeof(err));
    write_range(l, 0, 0, 10);
    rename(dir, moved);
    errno = 0;
    ok(accesslog_reopen(l) == -1 && errno == ENOENT, "reopen fails (directory gone): -1, ENOENT");
    write_range(l, 0, 10, 10);
    accesslog_close(&l);
    snprintf(path, sizeof(path), "%s/access.log", moved);
    ok(count_lines(path) == 20, "after a failed reopen, lines go on to the old file (%ld)",
       count_lines(path));
    unlink(path);
    rmdir(moved);

    snprintf(path, sizeof(path), "%s/nope/access.log", tmpdir);
    ok(accesslog_open(path, 1, err, sizeof(err)) == NULL && strstr(err, "nope") != NULL,
       "open failure: NULL and a message (%s)", err);
}

/* Rotations while two workers write flat out (default bound: drops allowed): every line is in
 * exactly one of the files or counted as dropped, and the files in rotation order keep each
 * worker's lines in order. */
static void
test_reopen_under_load(void)
{
    enum { ROTATIONS = 20, PER_WORKER = 40000 };
    char path[300], rotated[400], err[256];
    struct accesslog *l;
    pthread_t t[2];
    struct wargs a[2];
    struct tally ty;
    uint64_t dropped;
    int failed = 0;

    snprintf(path, sizeof(path), "%s/rot.log", tmpdir);
    l = accesslog_open(path, 2, err, sizeof(err));
    for (int i = 0; i < 2; i++) {
        a[i] =
            (struct wargs){.l = l, .worker = i, .from = 0, .count = PER_WORKER, .flush_every = 499};
        pthread_create(&t[i], NULL, worker_main, &a[i]);
    }
    for (int r = 1; r <= ROTATIONS; r++) {
        usleep(2000);
        snprintf(rotated, sizeof(rotated), "%s.%02d", path, r);
        failed += rename(path, rotated) != 0;
        failed += accesslog_reopen(l) != 0;
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    dropped = accesslog_dropped(l);
    accesslog_close(&l);

    tally_init(&ty, 2);
    for (int r = 1; r <= ROTATIONS + 1; r++) {
        size_t len;
        char *buf;
        if (r <= ROTATIONS)
            snprintf(rotated, sizeof(rotated), "%s.%02d", path, r);
        else
            snprintf(rotated, sizeof(rotated), "%s", path);
        buf = slurp(rotated, &len);
        if (buf)
            tally_buf(&ty, buf, len, true);
        free(buf);
        unlink(rotated);
    }
    ok(failed == 0, "%d renames and reopens while writing", ROTATIONS);
    ok(ty.bad_json == 0 && ty.out_of_order == 0,
       "%ld lines over %d files, all valid, each worker in order across the files", ty.lines,
       ROTATIONS + 1);
    ok(ty.lines + (long)dropped == 2L * PER_WORKER, "in files + dropped = written (%ld + %llu)",
       ty.lines, (unsigned long long)dropped);
    free(ty.next_seq);
}

struct reader {
    int fd;
    char *buf;
    size_t len, cap;
};

static void *
reader_main(void *arg)
{
    struct reader *r = arg;
    for (;;) {
        ssize_t n;
        if (r->cap - r->len < 65536) {
            r->cap = r->cap * 2 + 65536;
            r->buf = xrealloc(r->buf, r->cap);
        }
        n = read(r->fd, r->buf + r->len, r->cap - r->len);
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        r->len += (size_t)n;
    }
    return NULL;
}

/* The writer blocks on a full pipe nobody reads: workers keep going and drop, counted. */
static void
test_stalled_writer(void)
{
    char path[300], err[256];
    struct accesslog *l;
    struct reader r = {0};
    pthread_t rt;
    struct tally ty;
    const long total = 20000;
    double t0, el;
    uint64_t dropped;

    snprintf(path, sizeof(path), "%s/fifo", tmpdir);
    mkfifo(path, 0600);
    r.fd = open(path, O_RDONLY | O_NONBLOCK); /* so that the log's open does not wait */
    l = accesslog_open(path, 2, err, sizeof(err));
    ok(l != NULL && r.fd != -1, "log on a FIFO that nobody reads yet");
    fcntl(r.fd, F_SETFL, fcntl(r.fd, F_GETFL) & ~O_NONBLOCK);

    t0 = now_ms();
    write_range(l, 0, 0, total);
    el = now_ms() - t0;
    dropped = accesslog_dropped(l);
    ok(dropped > 0, "writer stalled: %llu of %ld lines dropped", (unsigned long long)dropped,
       total);
    ok(el < 2000, "the worker never blocked (%ld lines in %.1f ms)", total, el);
    /* Worker 1 still has room: its bound is its own. */
    write_range(l, 1, 0, 10);
    ok(accesslog_dropped(l) == dropped, "another worker is not affected by worker 0's backlog");

    pthread_create(&rt, NULL, reader_main, &r);
    /* Let the reader start draining, then close (which writes what is left). */
    usleep(50000);
    accesslog_close(&l);
    pthread_join(rt, NULL);
    close(r.fd);

    tally_init(&ty, 2);
    tally_buf(&ty, r.buf, r.len, true);
    ok(ty.bad_json == 0 && ty.out_of_order == 0,
       "%ld lines read from the pipe, all valid, in order", ty.lines);
    ok(ty.lines + (long)dropped == total + 10, "read + dropped = written (%ld + %llu = %ld)",
       ty.lines, (unsigned long long)dropped, total + 10);
    ok(ty.lines >= (long)ACCESSLOG_MAX_QUEUED * 100,
       "the backlog allowed (%d buffers) was kept, not dropped", ACCESSLOG_MAX_QUEUED);
    free(ty.next_seq);
    free(r.buf);
    unlink(path);
}

static void
test_null(void)
{
    struct accesslog *l = NULL;
    struct accesslog_entry e;
    char rid[32];

    fill(&e, rid, sizeof(rid), 0, 0);
    accesslog_write(NULL, 0, &e);
    accesslog_flush(NULL, 0);
    accesslog_close(&l);
    accesslog_close(NULL);
    ok(accesslog_dropped(NULL) == 0 && accesslog_reopen(NULL) == 0,
       "no log (NULL): write, flush, reopen, close do nothing");
}

int
main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_accesslog.XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    umask(022);
    client4.sin_family = AF_INET;
    inet_pton(AF_INET, "192.0.2.7", &client4.sin_addr);

    test_format();
    test_escaping();
    test_null();
    test_threads();
    test_reopen();
    test_reopen_under_load();
    test_stalled_writer();
    rmdir(tmpdir);
    return done_testing();
}
