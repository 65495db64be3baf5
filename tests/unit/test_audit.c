/* tests/unit/test_audit.c — the audit log: every line parses as JSON with every field, request
 * summaries are bounded (string values, total size, depth), bad UTF-8 is replaced, reopen after
 * a rename (log rotation), open errors. */
#include "control/audit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tap.h"

static char dir[] = "/tmp/test_audit.XXXXXX";

/* The lines of the file at path, parsed; returns how many (at most max). */
static size_t
read_lines(const char *path, json_t **lines, size_t max, int *bad)
{
    FILE *f = fopen(path, "r");
    char buf[65536];
    size_t n = 0;

    *bad = 0;
    if (f == NULL)
        return 0;
    while (fgets(buf, sizeof(buf), f) != NULL) {
        json_error_t jerr;
        size_t len = strlen(buf);
        json_t *j;

        if (len == 0 || buf[len - 1] != '\n') {
            (*bad)++;
            continue;
        }
        j = json_loadb(buf, len - 1, 0, &jerr);
        if (j == NULL || n == max) {
            (*bad)++;
            json_decref(j);
            continue;
        }
        lines[n++] = j;
    }
    fclose(f);
    return n;
}

static void
free_lines(json_t **lines, size_t n)
{
    for (size_t i = 0; i < n; i++)
        json_decref(lines[i]);
}

static size_t
compact_size(json_t *j)
{
    return json_dumpb(j, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* Whether every string (values and keys) in j is at most max bytes. */
static int
strings_within(json_t *j, size_t max)
{
    const char *key;
    json_t *v;
    size_t i;

    switch (json_typeof(j)) {
    case JSON_STRING:
        return json_string_length(j) <= max;
    case JSON_OBJECT:
        json_object_foreach(j, key, v)
        {
            if (strlen(key) > max || !strings_within(v, max))
                return 0;
        }
        return 1;
    case JSON_ARRAY:
        json_array_foreach(j, i, v)
        {
            if (!strings_within(v, max))
                return 0;
        }
        return 1;
    default:
        return 1;
    }
}

static void
test_lines(void)
{
    char path[512], err[512];
    struct audit *a;
    json_t *lines[8];
    json_t *peer1 = json_pack("{s:i, s:i, s:i}", "uid", 1000, "gid", 1001, "pid", 4242);
    json_t *peer2 = json_pack("{s:s}", "token", "deploy-bot");
    json_t *body = json_pack("{s:f, s:i}", "standby_percent", 25.5, "if_generation", 7);
    struct stat sb;
    size_t n;
    int bad;

    snprintf(path, sizeof(path), "%s/audit.log", dir);
    a = audit_open(path, err, sizeof(err));
    ok(a != NULL, "open creates the log (%s)", a ? "" : err);
    ok(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0640, "created with mode 0640");
    audit_write(a, &(struct audit_entry){.time_ms = 1795155265017ull,
                                         .peer = peer1,
                                         .method = "PUT",
                                         .path = "/v1/weights",
                                         .request = body,
                                         .status = 200,
                                         .generation_before = 7,
                                         .generation_after = 8});
    audit_write(a, &(struct audit_entry){.peer = peer2,
                                         .method = "POST",
                                         .path = "/v1/rollback",
                                         .status = 409,
                                         .code = "conflict",
                                         .generation_before = 8,
                                         .generation_after = 8});
    audit_write(a, &(struct audit_entry){0});
    n = read_lines(path, lines, 8, &bad);
    ok(n == 3 && bad == 0, "three lines, each one JSON object ending in a newline");
    if (n == 3) {
        static const char *const fields[] = {"time",
                                             "peer",
                                             "method",
                                             "path",
                                             "request",
                                             "status",
                                             "code",
                                             "generation_before",
                                             "generation_after"};
        int all = 1;

        for (size_t i = 0; i < n; i++)
            for (size_t k = 0; k < sizeof(fields) / sizeof(*fields); k++)
                if (json_object_get(lines[i], fields[k]) == NULL)
                    all = 0;
        ok(all && json_object_size(lines[0]) == 9, "every line has the nine fields");
        ok(strcmp(json_string_value(json_object_get(lines[0], "time")),
                  "2026-11-20T06:14:25.017Z") == 0,
           "time: RFC 3339 UTC with milliseconds (%s)",
           json_string_value(json_object_get(lines[0], "time")));
        ok(json_equal(json_object_get(lines[0], "peer"), peer1) &&
               json_equal(json_object_get(lines[1], "peer"), peer2) &&
               json_is_null(json_object_get(lines[2], "peer")),
           "peer: uid/gid/pid, token name, or null");
        ok(strcmp(json_string_value(json_object_get(lines[0], "method")), "PUT") == 0 &&
               strcmp(json_string_value(json_object_get(lines[0], "path")), "/v1/weights") == 0 &&
               json_equal(json_object_get(lines[0], "request"), body) &&
               json_is_null(json_object_get(lines[1], "request")),
           "method, path, request (a small body kept whole; none → null)");
        ok(json_integer_value(json_object_get(lines[0], "status")) == 200 &&
               json_is_null(json_object_get(lines[0], "code")) &&
               json_integer_value(json_object_get(lines[1], "status")) == 409 &&
               strcmp(json_string_value(json_object_get(lines[1], "code")), "conflict") == 0,
           "status and code (null on success)");
        ok(json_integer_value(json_object_get(lines[0], "generation_before")) == 7 &&
               json_integer_value(json_object_get(lines[0], "generation_after")) == 8 &&
               json_integer_value(json_object_get(lines[1], "generation_after")) == 8,
           "generation before and after");
        {
            const char *t = json_string_value(json_object_get(lines[1], "time"));
            ok(t != NULL && strlen(t) == 24 && t[4] == '-' && t[10] == 'T' && t[19] == '.' &&
                   t[23] == 'Z' && strncmp(t, "20", 2) == 0,
               "time 0 means now (%s)", t ? t : "-");
        }
    }
    free_lines(lines, n);

    /* rotation: rename, reopen, and the next line goes to the new file */
    {
        char rotated[600];

        snprintf(rotated, sizeof(rotated), "%s.1", path);
        ok(rename(path, rotated) == 0, "rename the log (logrotate)");
        audit_write(a, &(struct audit_entry){.method = "POST", .path = "/v1/a", .status = 200});
        ok(audit_reopen(a) == 0, "reopen");
        audit_write(a, &(struct audit_entry){.method = "POST", .path = "/v1/b", .status = 200});
        n = read_lines(rotated, lines, 8, &bad);
        ok(n == 4 && bad == 0 &&
               strcmp(json_string_value(json_object_get(lines[3], "path")), "/v1/a") == 0,
           "before reopen, lines go to the renamed file");
        free_lines(lines, n);
        n = read_lines(path, lines, 8, &bad);
        ok(n == 1 && bad == 0 &&
               strcmp(json_string_value(json_object_get(lines[0], "path")), "/v1/b") == 0,
           "after reopen, to a new file at the path");
        free_lines(lines, n);
        unlink(rotated);
    }
    ok(audit_failures(a) == 0, "no write failures");

    /* reopen failure keeps the old descriptor */
    {
        char sub[300];

        snprintf(sub, sizeof(sub), "%s/sub", dir);
        mkdir(sub, 0700);
        snprintf(path, sizeof(path), "%s/audit2.log", sub);
        audit_close(&a);
        a = audit_open(path, err, sizeof(err));
        unlink(path);
        rmdir(sub);
        errno = 0;
        ok(a != NULL && audit_reopen(a) == -1 && errno == ENOENT,
           "reopen fails (directory gone): -1, errno set");
        audit_write(a, &(struct audit_entry){.method = "POST", .status = 200});
        ok(audit_failures(a) == 0, "and the old descriptor still takes lines");
    }
    audit_close(&a);
    ok(a == NULL, "close clears the pointer");
    audit_close(&a);
    audit_close(NULL);

    snprintf(path, sizeof(path), "%s/no/such/dir/audit.log", dir);
    err[0] = '\0';
    ok(audit_open(path, err, sizeof(err)) == NULL && strstr(err, path) != NULL &&
           strstr(err, "No such file") != NULL,
       "open error names the path and the cause (%s)", err);

    json_decref(peer1);
    json_decref(peer2);
    json_decref(body);
}

static void
test_summary(void)
{
    char big[2000], path[256], err[256];
    json_t *req, *s, *v;
    struct audit *a;
    json_t *lines[2];
    size_t n;
    int bad;

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';

    s = audit_summary(NULL);
    ok(json_is_null(s), "summary of nothing: null");
    json_decref(s);

    /* a long string value: 256 bytes, ending in "..." */
    req = json_pack("{s:s, s:s}", "reason", big, "short", "ok");
    s = audit_summary(req);
    v = json_object_get(s, "reason");
    ok(json_string_length(v) == AUDIT_STRING_MAX &&
           strcmp(json_string_value(v) + AUDIT_STRING_MAX - 3, "...") == 0 &&
           strncmp(json_string_value(v), big, AUDIT_STRING_MAX - 3) == 0 &&
           strcmp(json_string_value(json_object_get(s, "short")), "ok") == 0,
       "string values cut to %d bytes ending in ...; short ones kept", AUDIT_STRING_MAX);
    json_decref(s);
    json_decref(req);

    /* exactly 256 bytes is kept whole, 257 is cut */
    big[AUDIT_STRING_MAX] = '\0';
    req = json_pack("[s]", big);
    s = audit_summary(req);
    ok(json_equal(s, req), "a string of exactly %d bytes is kept whole", AUDIT_STRING_MAX);
    json_decref(s);
    json_decref(req);
    big[AUDIT_STRING_MAX] = 'x';
    big[AUDIT_STRING_MAX + 1] = '\0';
    req = json_pack("[s]", big);
    s = audit_summary(req);
    ok(json_string_length(json_array_get(s, 0)) == AUDIT_STRING_MAX, "a string of %d bytes is cut",
       AUDIT_STRING_MAX + 1);
    json_decref(s);
    json_decref(req);
    big[AUDIT_STRING_MAX + 1] = 'x';

    /* multi-byte characters are never split */
    {
        char u[400];
        size_t o = 0;

        size_t kept;

        u[o++] = 'a';
        u[o++] = 'b';
        while (o + 3 < sizeof(u)) {
            memcpy(u + o, "\xe2\x82\xac", 3); /* the euro sign */
            o += 3;
        }
        u[o] = '\0';
        req = json_pack("{s:s}", "reason", u);
        s = audit_summary(req);
        v = json_object_get(s, "reason");
        kept = v != NULL ? json_string_length(v) - 3 : 0;
        /* 2 + 3 * 83 = 251 bytes fit in 253, the next character would not */
        ok(v != NULL && kept == 251 && memcmp(json_string_value(v), u, kept) == 0 &&
               strcmp(json_string_value(v) + kept, "...") == 0,
           "a cut never splits a UTF-8 character (%zu bytes kept)", kept);
        json_decref(s);
        json_decref(req);
    }

    /* long keys are cut too */
    req = json_object();
    json_object_set_new(req, big, json_true());
    s = audit_summary(req);
    ok(strings_within(s, AUDIT_STRING_MAX) && json_object_size(s) == 1, "long keys are cut");
    json_decref(s);
    json_decref(req);

    /* many members: at most 4 KiB, with a marker */
    req = json_object();
    for (int i = 0; i < 100; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%03d", i);
        json_object_set_new(req, k, json_string(big));
    }
    s = audit_summary(req);
    ok(compact_size(s) <= AUDIT_REQUEST_MAX && compact_size(s) > AUDIT_REQUEST_MAX - 300 &&
           json_object_get(s, "...") != NULL && strings_within(s, AUDIT_STRING_MAX) &&
           json_object_size(s) > 10,
       "a large object: %zu bytes (<= %d), %zu members, \"...\" marks the cut", compact_size(s),
       AUDIT_REQUEST_MAX, json_object_size(s));
    json_decref(s);
    json_decref(req);

    /* a large array of numbers */
    req = json_array();
    for (int i = 0; i < 5000; i++)
        json_array_append_new(req, json_integer(1000000 + i));
    s = audit_summary(req);
    ok(compact_size(s) <= AUDIT_REQUEST_MAX &&
           strcmp(json_string_value(json_array_get(s, json_array_size(s) - 1)), "...") == 0 &&
           json_integer_value(json_array_get(s, 0)) == 1000000,
       "a large array: %zu bytes, ends with \"...\"", compact_size(s));
    json_decref(s);
    json_decref(req);

    /* nested: arrays of objects of long strings, and deep nesting */
    req = json_array();
    for (int i = 0; i < 50; i++)
        json_array_append_new(req, json_pack("{s:s, s:[s, s]}", "a", big, "b", big, big));
    s = audit_summary(req);
    ok(compact_size(s) <= AUDIT_REQUEST_MAX && strings_within(s, AUDIT_STRING_MAX),
       "nested containers of long strings: %zu bytes", compact_size(s));
    json_decref(s);
    json_decref(req);
    req = json_string("leaf");
    for (int i = 0; i < 100; i++)
        req = json_pack("{s:o}", "d", req);
    s = audit_summary(req);
    {
        json_t *p = s;
        int depth = 0;
        while (json_is_object(p)) {
            p = json_object_get(p, "d");
            depth++;
        }
        ok(depth == 16 && json_is_string(p) && strcmp(json_string_value(p), "{...}") == 0,
           "nesting deeper than 16 becomes \"{...}\" (depth %d)", depth);
    }
    json_decref(s);
    json_decref(req);

    /* every line of a big request stays parseable and bounded; bad UTF-8 in path replaced */
    snprintf(path, sizeof(path), "%s/big.log", dir);
    a = audit_open(path, err, sizeof(err));
    req = json_object();
    for (int i = 0; i < 100; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%03d", i);
        json_object_set_new(req, k, json_string(big));
    }
    audit_write(a, &(struct audit_entry){.method = "POST",
                                         .path = "/v1/servers/blue/\xff\xfe/drain",
                                         .request = req,
                                         .status = 400,
                                         .code = "invalid"});
    n = read_lines(path, lines, 2, &bad);
    ok(n == 1 && bad == 0 &&
           compact_size(json_object_get(lines[0], "request")) <= AUDIT_REQUEST_MAX &&
           strcmp(json_string_value(json_object_get(lines[0], "path")), "/v1/servers/blue/?"
                                                                        "?/drain") == 0,
       "a big request: one parseable line, request <= 4 KiB, invalid UTF-8 → '?'");
    free_lines(lines, n);
    json_decref(req);
    audit_close(&a);
    unlink(path);
}

int
main(void)
{
    char path[256];

    umask(022);
    if (mkdtemp(dir) == NULL) {
        ok(0, "mkdtemp");
        return done_testing();
    }
    test_lines();
    test_summary();
    snprintf(path, sizeof(path), "%s/audit.log", dir);
    unlink(path);
    ok(rmdir(dir) == 0, "no file left behind");
    return done_testing();
}
