/* control/state.c — the state record, its JSON form, and the state store whose first backend is
 * the local state file (written atomically: temp file, fsync, rename, fsync of the directory). */
#include "control/state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "conf/xalloc.h"

#define STATE_VERSION 1
#define FLAGS_MAX 511u /* the routing word carries 9 bits of flags */

static const char *const ADMIN_NAMES[] = {"ready", "drain", "maint"};

static const char NAME_CHARS[] =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";

__attribute__((format(printf, 3, 4))) static int
fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static bool
name_valid(const char *s)
{
    size_t len = strlen(s);

    return len >= 1 && len <= STATE_NAME_MAX && s[strspn(s, NAME_CHARS)] == '\0';
}

void
state_init(struct state *st)
{
    memset(st, 0, sizeof(*st));
    st->live = POOL_BLUE;
}

void
state_finish(struct state *st)
{
    if (st == NULL)
        return;
    free(st->admin);
    free(st->rollout_json);
    state_init(st);
}

int
state_add_admin(struct state *st, enum pool_id pool, const char *name, enum admin_state admin)
{
    struct state_admin *e;
    size_t len = strlen(name);

    if (len == 0 || len > STATE_NAME_MAX)
        return -1;
    st->admin = xrealloc(st->admin, (st->nadmin + 1) * sizeof(*st->admin));
    e = &st->admin[st->nadmin++];
    memset(e, 0, sizeof(*e));
    e->pool = pool;
    memcpy(e->name, name, len + 1);
    e->admin = admin;
    return 0;
}

void
state_capture(struct state *st, const struct route_word *w, const struct snapshot *snap,
              const char *rollout_json, uint64_t now_ms_wall)
{
    state_init(st);
    st->generation = w->generation;
    st->live = w->live;
    st->standby_bp = w->standby_bp;
    st->flags = w->flags;
    st->saved_ms = now_ms_wall;
    st->rollout_json = rollout_json != NULL ? xstrdup(rollout_json) : NULL;
    for (int p = 0; p < POOL_COUNT; p++) {
        const struct pool *pool = &snap->pools[p];

        for (size_t i = 0; i < pool->nservers; i++) {
            const struct server *srv = pool->servers[i];
            /* relaxed: the main thread is the only writer of admin */
            int admin = atomic_load_explicit(&srv->admin, memory_order_relaxed);

            if (admin != ADMIN_READY)
                state_add_admin(st, (enum pool_id)p, srv->name, (enum admin_state)admin);
        }
    }
}

static void
format_age(char *buf, size_t len, uint64_t ms)
{
    if (ms >= 86400000)
        snprintf(buf, len, "%.1fd", (double)ms / 86400000.0);
    else if (ms >= 3600000)
        snprintf(buf, len, "%.1fh", (double)ms / 3600000.0);
    else
        snprintf(buf, len, "%.1fs", (double)ms / 1000.0);
}

int
state_applicable(const struct state *st, const struct conf *conf, uint64_t now_ms_wall, char *why,
                 size_t whylen)
{
    uint64_t age = now_ms_wall > st->saved_ms ? now_ms_wall - st->saved_ms : 0;
    char a[32], m[32];

    if ((unsigned)st->live >= POOL_COUNT || conf->pools[st->live].name == NULL)
        return fail(why, whylen, "the live pool of the state is not configured");
    for (size_t i = 0; i < st->nadmin; i++) {
        if ((unsigned)st->admin[i].pool >= POOL_COUNT ||
            conf->pools[st->admin[i].pool].name == NULL)
            return fail(why, whylen, "admin entry %zu names a pool that is not configured", i);
    }
    if (conf->state_max_age_ms > 0 && age > conf->state_max_age_ms) {
        format_age(a, sizeof(a), age);
        format_age(m, sizeof(m), conf->state_max_age_ms);
        return fail(why, whylen, "saved %s ago, older than state_max_age (%s)", a, m);
    }
    return 0;
}

size_t
state_apply_admin(const struct state *st, const struct snapshot *snap)
{
    size_t skipped = 0;

    for (size_t i = 0; i < st->nadmin; i++) {
        struct server *srv = snapshot_find_server(snap, st->admin[i].pool, st->admin[i].name);

        if (srv == NULL)
            skipped++;
        else
            server_set_admin(srv, st->admin[i].admin);
    }
    return skipped;
}

/* ---- JSON form ---- */

static uint64_t
now_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

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

/* Checks what load() would refuse, so that a store never writes a state it cannot read back. */
static int
check(const struct state *st, char *err, size_t errlen)
{
    if ((unsigned)st->live >= POOL_COUNT)
        return fail(err, errlen, "unknown live pool %d", (int)st->live);
    if (st->standby_bp > ROUTE_BUCKETS)
        return fail(err, errlen, "standby_bp %" PRIu32 " is over 10000", st->standby_bp);
    if (st->flags > FLAGS_MAX)
        return fail(err, errlen, "flags %" PRIu32 " do not fit in 9 bits", st->flags);
    if (st->generation > ROUTE_GENERATION_MAX)
        return fail(err, errlen, "generation %" PRIu64 " is over the maximum", st->generation);
    for (size_t i = 0; i < st->nadmin; i++) {
        const struct state_admin *e = &st->admin[i];

        if ((unsigned)e->pool >= POOL_COUNT || (unsigned)e->admin > ADMIN_MAINT ||
            memchr(e->name, '\0', sizeof(e->name)) == NULL || !name_valid(e->name))
            return fail(err, errlen, "admin entry %zu is not valid", i);
    }
    return 0;
}

/* The file's JSON text (owned by the caller), or NULL with err. */
static char *
encode(const struct state *st, char *err, size_t errlen)
{
    json_t *root, *admin, *rollout = NULL;
    json_error_t jerr;
    uint64_t saved_ms = st->saved_ms ? st->saved_ms : now_wall_ms();
    char when[40];
    char *text;

    if (st->rollout_json != NULL) {
        rollout = json_loads(st->rollout_json, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
        if (rollout == NULL) {
            fail(err, errlen, "the rollout state is not valid JSON: %s", jerr.text);
            return NULL;
        }
    }
    admin = json_array();
    for (size_t i = 0; i < st->nadmin; i++)
        json_array_append_new(
            admin, json_pack("{s:s, s:s, s:s}", "pool", conf_pool_name(st->admin[i].pool), "server",
                             st->admin[i].name, "state", ADMIN_NAMES[st->admin[i].admin]));
    format_time(when, sizeof(when), saved_ms);
    root = json_pack("{s:i, s:I, s:{s:s, s:I, s:I}, s:o, s:o, s:s, s:I}", "version", STATE_VERSION,
                     "generation", (json_int_t)st->generation, "routing", "live",
                     conf_pool_name(st->live), "standby_bp", (json_int_t)st->standby_bp, "flags",
                     (json_int_t)st->flags, "admin", admin, "rollout",
                     rollout != NULL ? rollout : json_null(), "saved_at", when, "saved_ms",
                     (json_int_t)saved_ms);
    text = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    return text;
}

/* Looks up key in obj and checks its type; NULL with err when absent or of another type. */
static json_t *
member(json_t *obj, const char *where, const char *key, json_type type, const char *expected,
       char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, key);

    if (v == NULL)
        fail(err, errlen, "%s%s is missing", where, key);
    else if (json_typeof(v) != type)
        fail(err, errlen, "%s%s: expected %s", where, key, expected);
    else
        return v;
    return NULL;
}

static int
member_uint(json_t *obj, const char *where, const char *key, uint64_t max, uint64_t *out, char *err,
            size_t errlen)
{
    json_t *v = member(obj, where, key, JSON_INTEGER, "an integer", err, errlen);

    if (v == NULL)
        return -1;
    if (json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
        return fail(err, errlen, "%s%s: %" JSON_INTEGER_FORMAT " is out of range 0..%" PRIu64,
                    where, key, json_integer_value(v), max);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* Fails when obj has a key not in keys (NULL-terminated). */
static int
only_keys(json_t *obj, const char *where, const char *const *keys, char *err, size_t errlen)
{
    const char *key;
    json_t *v;

    json_object_foreach(obj, key, v)
    {
        size_t i = 0;

        while (keys[i] != NULL && strcmp(keys[i], key) != 0)
            i++;
        if (keys[i] == NULL)
            return fail(err, errlen, "unknown member \"%s%.64s\"", where, key);
    }
    return 0;
}

static int
decode_admin(json_t *e, size_t i, struct state *out, char *err, size_t errlen)
{
    static const char *const keys[] = {"pool", "server", "state", NULL};
    char where[48];
    json_t *pool, *server, *state;
    int p = -1, a = -1;

    snprintf(where, sizeof(where), "admin[%zu].", i);
    if (!json_is_object(e))
        return fail(err, errlen, "admin[%zu]: expected an object", i);
    if (only_keys(e, where, keys, err, errlen) == -1 ||
        (pool = member(e, where, "pool", JSON_STRING, "a string", err, errlen)) == NULL ||
        (server = member(e, where, "server", JSON_STRING, "a string", err, errlen)) == NULL ||
        (state = member(e, where, "state", JSON_STRING, "a string", err, errlen)) == NULL)
        return -1;
    p = conf_pool_from_name(json_string_value(pool));
    if (p < 0)
        return fail(err, errlen, "%spool: unknown pool \"%.64s\"", where, json_string_value(pool));
    if (strlen(json_string_value(server)) != json_string_length(server) ||
        !name_valid(json_string_value(server)))
        return fail(err, errlen,
                    "%sserver: not a server name (1 to %d letters, digits, '.', '_' or '-')", where,
                    STATE_NAME_MAX);
    for (int k = 0; k < 3; k++)
        if (strcmp(json_string_value(state), ADMIN_NAMES[k]) == 0)
            a = k;
    if (a < 0)
        return fail(err, errlen, "%sstate: expected ready, drain or maint", where);
    state_add_admin(out, (enum pool_id)p, json_string_value(server), (enum admin_state)a);
    return 0;
}

static int
decode(json_t *root, struct state *out, char *err, size_t errlen)
{
    static const char *const keys[] = {"version", "generation", "routing",  "admin",
                                       "rollout", "saved_at",   "saved_ms", NULL};
    static const char *const rkeys[] = {"live", "standby_bp", "flags", NULL};
    json_t *routing, *live, *admin, *rollout, *v;
    uint64_t u;
    size_t i;
    int p;

    if (!json_is_object(root))
        return fail(err, errlen, "expected a JSON object");
    if (member_uint(root, "", "version", UINT32_MAX, &u, err, errlen) == -1)
        return -1;
    if (u != STATE_VERSION)
        return fail(err, errlen, "version %" PRIu64 " is not supported (this build reads 1)", u);
    if (only_keys(root, "", keys, err, errlen) == -1 ||
        member_uint(root, "", "generation", ROUTE_GENERATION_MAX, &out->generation, err, errlen) ==
            -1 ||
        member_uint(root, "", "saved_ms", INT64_MAX, &out->saved_ms, err, errlen) == -1 ||
        (routing = member(root, "", "routing", JSON_OBJECT, "an object", err, errlen)) == NULL ||
        only_keys(routing, "routing.", rkeys, err, errlen) == -1 ||
        (live = member(routing, "routing.", "live", JSON_STRING, "a string", err, errlen)) ==
            NULL ||
        member_uint(routing, "routing.", "standby_bp", ROUTE_BUCKETS, &u, err, errlen) == -1)
        return -1;
    out->standby_bp = (uint32_t)u;
    if (member_uint(routing, "routing.", "flags", FLAGS_MAX, &u, err, errlen) == -1)
        return -1;
    out->flags = (uint32_t)u;
    if ((p = conf_pool_from_name(json_string_value(live))) < 0)
        return fail(err, errlen, "routing.live: unknown pool \"%.64s\"", json_string_value(live));
    out->live = (enum pool_id)p;
    if ((v = json_object_get(root, "saved_at")) != NULL && !json_is_string(v))
        return fail(err, errlen, "saved_at: expected a string");
    if ((admin = member(root, "", "admin", JSON_ARRAY, "an array", err, errlen)) == NULL)
        return -1;
    json_array_foreach(admin, i, v)
    {
        if (decode_admin(v, i, out, err, errlen) == -1)
            return -1;
    }
    if ((rollout = json_object_get(root, "rollout")) == NULL)
        return fail(err, errlen, "rollout is missing");
    if (!json_is_null(rollout))
        out->rollout_json = json_dumps(rollout, JSON_COMPACT | JSON_ENCODE_ANY);
    return 0;
}

/* ---- the file store ---- */

struct file_store {
    struct state_store base;   /* first: the interface */
    char *path;                /* owned */
    uint64_t known_generation; /* last loaded or written; 0 = nothing usable */
};

/* Reads the whole file at fd (at most STATE_FILE_MAX_BYTES) into a new buffer. */
static char *
read_all(int fd, const char *path, size_t *len, char *err, size_t errlen)
{
    struct stat sb;
    char *buf;
    size_t n = 0;

    if (fstat(fd, &sb) == -1) {
        fail(err, errlen, "state file %s: %s", path, strerror(errno));
        return NULL;
    }
    if (!S_ISREG(sb.st_mode)) {
        fail(err, errlen, "state file %s: not a regular file", path);
        return NULL;
    }
    if (sb.st_size > STATE_FILE_MAX_BYTES) {
        fail(err, errlen, "state file %s: %lld bytes, over the limit of %d", path,
             (long long)sb.st_size, STATE_FILE_MAX_BYTES);
        return NULL;
    }
    /* one byte more than the limit, to notice a file that grew since fstat() */
    buf = xmalloc(STATE_FILE_MAX_BYTES + 1);
    for (;;) {
        ssize_t r = read(fd, buf + n, STATE_FILE_MAX_BYTES + 1 - n);

        if (r == -1 && errno == EINTR)
            continue;
        if (r == -1) {
            fail(err, errlen, "state file %s: %s", path, strerror(errno));
            free(buf);
            return NULL;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > STATE_FILE_MAX_BYTES) {
            fail(err, errlen, "state file %s: over the limit of %d bytes", path,
                 STATE_FILE_MAX_BYTES);
            free(buf);
            return NULL;
        }
    }
    *len = n;
    return buf;
}

/* Removes the "<path>.tmp.<pid>" files of processes that are gone: a kill between the open and
 * the rename of a write leaves one, and a restart writes under another pid, so they would pile
 * up (they are never read). A file whose process still exists is left alone. */
static void
remove_stale_temps(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash == NULL   ? xstrdup(".")
                : slash == path ? xstrdup("/")
                                : xstrndup(path, (size_t)(slash - path));
    const char *base = slash ? slash + 1 : path;
    size_t blen = strlen(base);
    DIR *d = opendir(dir);
    struct dirent *e;

    free(dir);
    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        const char *digits = e->d_name + blen + 5;
        char *end;
        long pid;

        if (strncmp(e->d_name, base, blen) != 0 || strncmp(e->d_name + blen, ".tmp.", 5) != 0 ||
            *digits < '0' || *digits > '9')
            continue;
        errno = 0;
        pid = strtol(digits, &end, 10);
        if (*end != '\0' || errno != 0 || pid <= 0 || pid == (long)getpid() ||
            kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        unlinkat(dirfd(d), e->d_name, 0);
    }
    closedir(d);
}

static int
file_load(struct state_store *s, struct state *out, char *err, size_t errlen)
{
    struct file_store *fs = (struct file_store *)s;
    char msg[256];
    json_error_t jerr;
    json_t *root;
    size_t len;
    char *buf;
    int fd, rc;

    state_init(out);
    fs->known_generation = 0;
    remove_stale_temps(fs->path);
    fd = open(fs->path, O_RDONLY | O_CLOEXEC);
    if (fd == -1 && errno == ENOENT)
        return 1;
    if (fd == -1)
        return fail(err, errlen, "state file %s: %s", fs->path, strerror(errno));
    buf = read_all(fd, fs->path, &len, err, errlen);
    close(fd);
    if (buf == NULL)
        return -1;
    root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    free(buf);
    if (root == NULL)
        return fail(err, errlen, "state file %s: not valid JSON: line %d column %d: %s", fs->path,
                    jerr.line, jerr.column, jerr.text);
    rc = decode(root, out, msg, sizeof(msg));
    json_decref(root);
    if (rc == -1) {
        state_finish(out);
        return fail(err, errlen, "state file %s: %s", fs->path, msg);
    }
    fs->known_generation = out->generation;
    return 0;
}

static int
write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, p, len);

        if (w == -1 && errno == EINTR)
            continue;
        if (w == -1)
            return -1;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* fsync()s the directory that holds path, so that the rename is durable. */
static int
sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash == NULL   ? xstrdup(".")
                : slash == path ? xstrdup("/")
                                : xstrndup(path, (size_t)(slash - path));
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = -1, saved;

    if (fd != -1) {
        rc = fsync(fd);
        saved = errno;
        close(fd);
        errno = saved;
    }
    free(dir);
    return rc;
}

static int
file_cas(struct state_store *s, uint64_t expect_generation, const struct state *next, char *err,
         size_t errlen)
{
    struct file_store *fs = (struct file_store *)s;
    size_t tlen = strlen(fs->path) + 32;
    char *text, *tmp;
    int fd, rc = -1;

    if (expect_generation != fs->known_generation) {
        fail(err, errlen, "the stored generation is %" PRIu64 ", not %" PRIu64,
             fs->known_generation, expect_generation);
        return 1;
    }
    if (check(next, err, errlen) == -1)
        return -1;
    if ((text = encode(next, err, errlen)) == NULL)
        return -1;
    tmp = xmalloc(tlen);
    snprintf(tmp, tlen, "%s.tmp.%ld", fs->path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd == -1) {
        fail(err, errlen, "state file %s: %s", tmp, strerror(errno));
        goto out;
    }
    /* the umask must not widen or narrow what the file is meant to be */
    if (fchmod(fd, 0640) == -1 || write_all(fd, text, strlen(text)) == -1 ||
        write_all(fd, "\n", 1) == -1 || fsync(fd) == -1) {
        fail(err, errlen, "state file %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto out;
    }
    if (close(fd) == -1) {
        fail(err, errlen, "state file %s: %s", tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, fs->path) == -1) {
        fail(err, errlen, "state file %s: rename: %s", fs->path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    /* the new state is in place from here on, durable or not */
    fs->known_generation = next->generation;
    if (sync_dir(fs->path) == -1) {
        fail(err, errlen, "state file %s: written, but the directory could not be synced: %s",
             fs->path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    free(tmp);
    free(text);
    return rc;
}

static int
file_watch(struct state_store *s, state_watch_fn fn, void *arg)
{
    errno = ENOTSUP;
    return -1;
}

static void
file_destroy(struct state_store *s)
{
    struct file_store *fs = (struct file_store *)s;

    free(fs->path);
    free(fs);
}

static const struct state_store_ops FILE_OPS = {
    .name = "file",
    .load = file_load,
    .cas = file_cas,
    .watch = file_watch,
    .destroy = file_destroy,
};

struct state_store *
state_store_file(const char *path)
{
    struct file_store *fs = xcalloc(1, sizeof(*fs));

    fs->base.ops = &FILE_OPS;
    fs->path = xstrdup(path);
    return &fs->base;
}

int
state_store_load(struct state_store *s, struct state *out, char *err, size_t errlen)
{
    return s->ops->load(s, out, err, errlen);
}

int
state_store_cas(struct state_store *s, uint64_t expect_generation, const struct state *next,
                char *err, size_t errlen)
{
    return s->ops->cas(s, expect_generation, next, err, errlen);
}

int
state_store_watch(struct state_store *s, state_watch_fn fn, void *arg)
{
    return s->ops->watch(s, fn, arg);
}

void
state_store_destroy(struct state_store **s)
{
    if (s == NULL || *s == NULL)
        return;
    (*s)->ops->destroy(*s);
    *s = NULL;
}
