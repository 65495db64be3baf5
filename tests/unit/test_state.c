/* tests/unit/test_state.c — the state record and the file store: round trip, atomic writes (no
 * temporary file left, stale ones ignored), corrupt files of many kinds refused with a message,
 * compare-and-swap conflicts, applicability (age, pools), capture from and apply to a
 * snapshot. */
#include "control/state.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "conf/xalloc.h"
#include "tap.h"

static char dir[] = "/tmp/test_state.XXXXXX";
static char path[256];

#define N(a) (sizeof(a) / sizeof(*(a)))

static void
put(const char *p, const char *text, size_t len)
{
    FILE *f = fopen(p, "w");

    if (f == NULL || fwrite(text, 1, len, f) != len) {
        diag("cannot write %s", p);
        exit(1);
    }
    fclose(f);
}

static char *
slurp(const char *p)
{
    FILE *f = fopen(p, "r");
    char *buf;
    long n;

    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = xmalloc((size_t)n + 1);
    buf[fread(buf, 1, (size_t)n, f)] = '\0';
    fclose(f);
    return buf;
}

/* The names in dir other than . and .., joined with spaces. */
static void
list_dir(char *out, size_t len)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t o = 0;

    out[0] = '\0';
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        o += (size_t)snprintf(out + o, len - o, "%s%s", o ? " " : "", e->d_name);
        if (o >= len)
            break;
    }
    if (d != NULL)
        closedir(d);
}

static void
sample_state(struct state *st)
{
    state_init(st);
    st->generation = 42;
    st->live = POOL_GREEN;
    st->standby_bp = 2500;
    st->flags = ROUTE_FLAG_ROLLOUT;
    st->saved_ms = 1795155265017ull;
    st->rollout_json = xstrdup("{\"state\": \"paused\", \"step\": 2, \"plan\": [5, 100]}");
    state_add_admin(st, POOL_BLUE, "b1", ADMIN_DRAIN);
    state_add_admin(st, POOL_GREEN, "g-2.x_y", ADMIN_MAINT);
}

static int
rollout_equal(const char *a, const char *b)
{
    json_t *ja = json_loads(a, JSON_DECODE_ANY, NULL), *jb = json_loads(b, JSON_DECODE_ANY, NULL);
    int eq = ja != NULL && jb != NULL && json_equal(ja, jb);

    json_decref(ja);
    json_decref(jb);
    return eq;
}

static void
test_round_trip(void)
{
    struct state_store *s = state_store_file(path), *s2;
    struct state st, got;
    char err[512] = "", names[512];
    struct stat sb;
    int rc;

    rc = state_store_load(s, &got, err, sizeof(err));
    ok(rc == 1 && got.nadmin == 0 && got.rollout_json == NULL && got.generation == 0,
       "missing file: 1 (nothing stored), out empty");
    state_finish(&got);

    sample_state(&st);
    rc = state_store_cas(s, 0, &st, err, sizeof(err));
    ok(rc == 0, "cas from generation 0 writes (%s)", rc ? err : "ok");
    list_dir(names, sizeof(names));
    ok(strcmp(names, "state.json") == 0, "no temporary file left behind (%s)", names);
    memset(&sb, 0, sizeof(sb));
    rc = stat(path, &sb);
    ok(rc == 0 && (sb.st_mode & 0777) == 0640, "mode 0640 (%o)", (unsigned)(sb.st_mode & 0777));

    s2 = state_store_file(path);
    rc = state_store_load(s2, &got, err, sizeof(err));
    ok(rc == 0, "load (%s)", rc ? err : "ok");
    ok(got.generation == 42 && got.live == POOL_GREEN && got.standby_bp == 2500 &&
           got.flags == ROUTE_FLAG_ROLLOUT && got.saved_ms == st.saved_ms,
       "routing word, generation and saved_ms survive");
    ok(got.nadmin == 2 && got.admin[0].pool == POOL_BLUE && strcmp(got.admin[0].name, "b1") == 0 &&
           got.admin[0].admin == ADMIN_DRAIN && got.admin[1].pool == POOL_GREEN &&
           strcmp(got.admin[1].name, "g-2.x_y") == 0 && got.admin[1].admin == ADMIN_MAINT,
       "admin states survive");
    ok(got.rollout_json != NULL && rollout_equal(got.rollout_json, st.rollout_json),
       "rollout JSON survives (%s)", got.rollout_json ? got.rollout_json : "NULL");
    {
        char *text = slurp(path);
        json_t *j = json_loads(text, 0, NULL);
        ok(j != NULL && json_integer_value(json_object_get(j, "version")) == 1 &&
               strcmp(json_string_value(json_object_get(j, "saved_at")),
                      "2026-11-20T06:14:25.017Z") == 0 &&
               strcmp(json_string_value(json_object_get(json_object_get(j, "routing"), "live")),
                      "green") == 0 &&
               strcmp(json_string_value(
                          json_object_get(json_array_get(json_object_get(j, "admin"), 0), "state")),
                      "drain") == 0,
           "the file: version 1, saved_at RFC 3339, pool and state names");
        json_decref(j);
        free(text);
    }
    state_finish(&got);

    /* cas: against the generation the store last loaded or wrote */
    st.generation = 43;
    rc = state_store_cas(s2, 41, &st, err, sizeof(err));
    ok(rc == 1 && strstr(err, "42") != NULL, "cas with a stale generation: conflict (%s)", err);
    rc = state_store_cas(s2, 42, &st, err, sizeof(err));
    ok(rc == 0, "cas with the loaded generation: stored");
    st.generation = 44;
    rc = state_store_cas(s2, 42, &st, err, sizeof(err));
    ok(rc == 1, "the same expectation again: conflict (the store now holds 43)");
    rc = state_store_cas(s2, 43, &st, err, sizeof(err));
    ok(rc == 0, "cas 43 → 44");
    rc = state_store_load(s, &got, err, sizeof(err));
    ok(rc == 0 && got.generation == 44, "another store loads generation 44");
    state_finish(&got);

    /* a state a store would not read back is refused before anything is written */
    st.standby_bp = 10001;
    st.generation = 45;
    rc = state_store_cas(s2, 44, &st, err, sizeof(err));
    ok(rc == -1 && strstr(err, "standby_bp") != NULL, "cas refuses standby_bp 10001 (%s)", err);
    st.standby_bp = 0;
    free(st.rollout_json);
    st.rollout_json = xstrdup("{not json");
    rc = state_store_cas(s2, 44, &st, err, sizeof(err));
    ok(rc == -1 && strstr(err, "rollout") != NULL, "cas refuses rollout text that is not JSON");
    free(st.rollout_json);
    st.rollout_json = NULL;
    st.generation = ROUTE_GENERATION_MAX + 1;
    ok(state_store_cas(s2, 44, &st, err, sizeof(err)) == -1, "cas refuses a generation over "
                                                             "40 bits");
    rc = state_store_load(s, &got, err, sizeof(err));
    ok(rc == 0 && got.generation == 44 && got.standby_bp == 2500,
       "after the refusals the file still holds generation 44");
    state_finish(&got);

    /* rollout null, saved_ms 0 = now */
    st.generation = 45;
    st.saved_ms = 0;
    rc = state_store_cas(s2, 44, &st, err, sizeof(err));
    rc = rc == 0 ? state_store_load(s, &got, err, sizeof(err)) : rc;
    ok(rc == 0 && got.rollout_json == NULL && got.saved_ms > 1700000000000ull,
       "no rollout → null; saved_ms 0 → now");
    state_finish(&got);

    errno = 0;
    ok(state_store_watch(s, NULL, NULL) == -1 && errno == ENOTSUP, "watch: -1 ENOTSUP");
    state_finish(&st);
    state_store_destroy(&s);
    state_store_destroy(&s2);
    ok(s == NULL, "destroy clears the pointer");
    state_store_destroy(&s);
    state_store_destroy(NULL);
}

/* A crash between writing the temporary file and the rename leaves it behind: load never reads
 * it, and removes it when its process is gone (a child we made and reaped), while one whose
 * process exists (pid 1) stays. The next write works. */
static void
test_crash(void)
{
    struct state_store *s = state_store_file(path);
    struct state st, got;
    char stale[300], alive[300], err[512], names[512];
    int rc;

    pid_t dead = fork();

    if (dead == 0)
        _exit(0);
    waitpid(dead, NULL, 0);
    snprintf(stale, sizeof(stale), "%s.tmp.%d", path, (int)dead);
    snprintf(alive, sizeof(alive), "%s.tmp.1", path);
    put(stale, "{\"version\":1,\"generation\":9", 27); /* a half-written newer state */
    put(alive, "{\"version\":1,\"generation\":9", 27);
    rc = state_store_load(s, &got, err, sizeof(err));
    ok(rc == 0 && got.generation == 45, "a stale half-written temporary file is ignored");
    list_dir(names, sizeof(names));
    ok(strcmp(names, "state.json state.json.tmp.1") == 0 ||
           strcmp(names, "state.json.tmp.1 state.json") == 0,
       "load removed the temporary file of a dead process, kept pid 1's (%s)", names);
    sample_state(&st);
    st.generation = 46;
    rc = state_store_cas(s, got.generation, &st, err, sizeof(err));
    state_finish(&got);
    list_dir(names, sizeof(names));
    ok(rc == 0 && (strcmp(names, "state.json state.json.tmp.1") == 0 ||
                   strcmp(names, "state.json.tmp.1 state.json") == 0),
       "writes still work; no temporary file of ours is left (%s)", names);
    unlink(alive);
    state_finish(&st);
    state_store_destroy(&s);
}

struct corrupt {
    const char *what;
    const char *text;
    const char *msg; /* a piece of the expected message */
};

#define GOOD_ROUTING "\"routing\":{\"live\":\"blue\",\"standby_bp\":0,\"flags\":0}"
#define GOOD_TAIL "\"admin\":[],\"rollout\":null,\"saved_at\":\"x\",\"saved_ms\":1"

static const struct corrupt CORRUPT[] = {
    {"empty file", "", "not valid JSON"},
    {"truncated JSON", "{\"version\":1,\"generation\":3,\"routing\":{\"live\":\"bl",
     "not valid JSON"},
    {"not an object", "[1,2,3]", "expected a JSON object"},
    {"trailing garbage", "{\"version\":1} x", "not valid JSON"},
    {"version 2", "{\"version\":2,\"generation\":1," GOOD_ROUTING "," GOOD_TAIL "}", "version 2"},
    {"version missing", "{\"generation\":1," GOOD_ROUTING "," GOOD_TAIL "}", "version is missing"},
    {"version a string", "{\"version\":\"1\",\"generation\":1," GOOD_ROUTING "," GOOD_TAIL "}",
     "version: expected an integer"},
    {"generation a string", "{\"version\":1,\"generation\":\"7\"," GOOD_ROUTING "," GOOD_TAIL "}",
     "generation: expected an integer"},
    {"generation negative", "{\"version\":1,\"generation\":-1," GOOD_ROUTING "," GOOD_TAIL "}",
     "out of range"},
    {"generation over 40 bits",
     "{\"version\":1,\"generation\":1099511627776," GOOD_ROUTING "," GOOD_TAIL "}", "out of range"},
    {"generation over 64 bits",
     "{\"version\":1,\"generation\":99999999999999999999999," GOOD_ROUTING "," GOOD_TAIL "}",
     "not valid JSON"},
    {"generation 1e400", "{\"version\":1,\"generation\":1e400," GOOD_ROUTING "," GOOD_TAIL "}",
     "not valid JSON"},
    {"generation a real", "{\"version\":1,\"generation\":1.5," GOOD_ROUTING "," GOOD_TAIL "}",
     "expected an integer"},
    {"routing missing", "{\"version\":1,\"generation\":1," GOOD_TAIL "}", "routing is missing"},
    {"routing an array", "{\"version\":1,\"generation\":1,\"routing\":[]," GOOD_TAIL "}",
     "routing: expected an object"},
    {"unknown pool",
     "{\"version\":1,\"generation\":1,\"routing\":{\"live\":\"red\",\"standby_bp\":0,\"flags\":0}"
     "," GOOD_TAIL "}",
     "unknown pool \"red\""},
    {"live a number",
     "{\"version\":1,\"generation\":1,\"routing\":{\"live\":0,\"standby_bp\":0,\"flags\":0}"
     "," GOOD_TAIL "}",
     "routing.live: expected a string"},
    {"standby_bp 10001",
     "{\"version\":1,\"generation\":1,\"routing\":{\"live\":\"blue\",\"standby_bp\":10001,"
     "\"flags\":0}," GOOD_TAIL "}",
     "standby_bp: 10001 is out of range"},
    {"flags over 9 bits",
     "{\"version\":1,\"generation\":1,\"routing\":{\"live\":\"blue\",\"standby_bp\":0,"
     "\"flags\":512}," GOOD_TAIL "}",
     "flags"},
    {"unknown member",
     "{\"version\":1,\"generation\":1,\"extra\":true," GOOD_ROUTING "," GOOD_TAIL "}",
     "unknown member \"extra\""},
    {"unknown routing member",
     "{\"version\":1,\"generation\":1,\"routing\":{\"live\":\"blue\",\"standby_bp\":0,"
     "\"flags\":0,\"x\":1}," GOOD_TAIL "}",
     "unknown member \"routing.x\""},
    {"admin an object",
     "{\"version\":1,\"generation\":1," GOOD_ROUTING
     ",\"admin\":{},\"rollout\":null,\"saved_ms\":1}",
     "admin: expected an array"},
    {"admin entry a number",
     "{\"version\":1,\"generation\":1," GOOD_ROUTING
     ",\"admin\":[5],\"rollout\":null,\"saved_ms\":1}",
     "admin[0]: expected an object"},
    {"admin unknown pool",
     "{\"version\":1,\"generation\":1," GOOD_ROUTING
     ",\"admin\":[{\"pool\":\"red\",\"server\":\"a\",\"state\":\"drain\"}],\"rollout\":null,"
     "\"saved_ms\":1}",
     "admin[0].pool: unknown pool"},
    {"admin unknown state",
     "{\"version\":1,\"generation\":1," GOOD_ROUTING
     ",\"admin\":[{\"pool\":\"blue\",\"server\":\"a\",\"state\":\"sleep\"}],\"rollout\":null,"
     "\"saved_ms\":1}",
     "admin[0].state"},
    {"admin name too long",
     "{\"version\":1,\"generation\":1," GOOD_ROUTING ",\"admin\":[{\"pool\":\"blue\",\"server\":"
     "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
     "\"state\":\"drain\"}],\"rollout\":null,\"saved_ms\":1}",
     "admin[0].server: not a server name"},
    {"admin name with a space",
     "{\"version\":1,\"generation\":1," GOOD_ROUTING
     ",\"admin\":[{\"pool\":\"blue\",\"server\":\"a b\",\"state\":\"drain\"}],\"rollout\":null,"
     "\"saved_ms\":1}",
     "not a server name"},
    {"admin name with a NUL",
     "{\"version\":1,\"generation\":1," GOOD_ROUTING
     ",\"admin\":[{\"pool\":\"blue\",\"server\":\"a\\u0000b\",\"state\":\"drain\"}],"
     "\"rollout\":null,\"saved_ms\":1}",
     "not valid JSON"},
    {"admin server missing",
     "{\"version\":1,\"generation\":1," GOOD_ROUTING
     ",\"admin\":[{\"pool\":\"blue\",\"state\":\"drain\"}],\"rollout\":null,\"saved_ms\":1}",
     "admin[0].server is missing"},
    {"rollout missing",
     "{\"version\":1,\"generation\":1," GOOD_ROUTING ",\"admin\":[],\"saved_ms\":1}",
     "rollout is missing"},
    {"saved_ms missing",
     "{\"version\":1,\"generation\":1," GOOD_ROUTING ",\"admin\":[],\"rollout\":null}",
     "saved_ms is missing"},
    {"saved_at a number",
     "{\"version\":1,\"generation\":1," GOOD_ROUTING
     ",\"admin\":[],\"rollout\":null,\"saved_at\":5,\"saved_ms\":1}",
     "saved_at: expected a string"},
    {"duplicate key",
     "{\"version\":1,\"version\":1,\"generation\":1," GOOD_ROUTING "," GOOD_TAIL "}", "duplicate"},
};

static void
test_corrupt(void)
{
    struct state_store *s = state_store_file(path);
    struct state got;
    char err[512];
    int rc;

    /* the baseline the corrupt variants are made from is accepted */
    put(path, "{\"version\":1,\"generation\":1," GOOD_ROUTING "," GOOD_TAIL "}",
        strlen("{\"version\":1,\"generation\":1," GOOD_ROUTING "," GOOD_TAIL "}"));
    rc = state_store_load(s, &got, err, sizeof(err));
    ok(rc == 0 && got.generation == 1, "the baseline file loads (%s)", rc ? err : "ok");
    state_finish(&got);

    for (size_t i = 0; i < N(CORRUPT); i++) {
        put(path, CORRUPT[i].text, strlen(CORRUPT[i].text));
        err[0] = '\0';
        rc = state_store_load(s, &got, err, sizeof(err));
        ok(rc == -1 && strstr(err, "state file") != NULL && strstr(err, CORRUPT[i].msg) != NULL &&
               got.nadmin == 0 && got.rollout_json == NULL,
           "%s: refused (%s)", CORRUPT[i].what, err);
        state_finish(&got);
    }

    /* 2 MiB of valid JSON: refused by size before it is read */
    {
        size_t n = 2 * 1024 * 1024;
        char *big = xmalloc(n);
        const char *body = "{\"version\":1,\"generation\":1," GOOD_ROUTING "," GOOD_TAIL "}";

        memset(big, ' ', n);
        memcpy(big + n - strlen(body), body, strlen(body));
        put(path, big, n);
        free(big);
        rc = state_store_load(s, &got, err, sizeof(err));
        ok(rc == -1 && strstr(err, "over the limit") != NULL, "a 2 MiB file: refused (%s)", err);
        state_finish(&got);
    }

    /* a directory at the path */
    unlink(path);
    mkdir(path, 0700);
    rc = state_store_load(s, &got, err, sizeof(err));
    ok(rc == -1 && strstr(err, "state file") != NULL, "a directory at the path: -1 (%s)", err);
    state_finish(&got);
    rmdir(path);

    /* after a refused load, cas expects generation 0 (nothing usable stored) */
    put(path, "junk", 4);
    rc = state_store_load(s, &got, err, sizeof(err));
    state_finish(&got);
    sample_state(&got);
    ok(rc == -1 && state_store_cas(s, 0, &got, err, sizeof(err)) == 0,
       "after a refused load, cas(0) overwrites the corrupt file");
    state_finish(&got);
    state_store_destroy(&s);

    /* a write that cannot happen */
    {
        char bad[300];
        struct state_store *s2;

        snprintf(bad, sizeof(bad), "%s/no/such/dir/state.json", dir);
        s2 = state_store_file(bad);
        sample_state(&got);
        rc = state_store_cas(s2, 0, &got, err, sizeof(err));
        ok(rc == -1 && strstr(err, "No such file") != NULL,
           "write into a missing directory: -1 "
           "(%s)",
           err);
        state_finish(&got);
        state_store_destroy(&s2);
    }
}

static void
set_addr(struct conf_addr *a, const char *ip, int port)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;

    memset(a, 0, sizeof(*a));
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, ip, &sin->sin_addr);
    a->len = sizeof(*sin);
    snprintf(a->text, sizeof(a->text), "%s:%d", ip, port);
}

static struct conf *
mkconf(const char *const *blue, size_t nb, const char *const *green, size_t ng)
{
    struct conf *c = xcalloc(1, sizeof(*c));
    const char *const *names[POOL_COUNT] = {blue, green};
    size_t n[POOL_COUNT] = {nb, ng};

    for (int p = 0; p < POOL_COUNT; p++) {
        struct conf_pool *cp = &c->pools[p];

        cp->name = xstrdup(conf_pool_name((enum pool_id)p));
        cp->nservers = n[p];
        cp->servers = xcalloc(n[p], sizeof(*cp->servers));
        for (size_t i = 0; i < n[p]; i++) {
            cp->servers[i].name = xstrdup(names[p][i]);
            set_addr(&cp->servers[i].addr, "10.0.0.1", 8000 + (int)i + 100 * p);
            cp->servers[i].weight = 1;
        }
    }
    c->state_max_age_ms = 3600 * 1000;
    return c;
}

static void
test_applicable(void)
{
    static const char *const blue[] = {"b1", "b2"}, *const green[] = {"g1"};
    struct conf *c = mkconf(blue, 2, green, 1);
    uint64_t now = 1795155265017ull;
    struct state st;
    char why[256];
    char *saved;

    sample_state(&st);
    st.saved_ms = now - 30 * 60 * 1000;
    ok(state_applicable(&st, c, now, why, sizeof(why)) == 0, "saved 30 min ago, max 1h: usable");
    st.saved_ms = now - 2 * 3600 * 1000;
    ok(state_applicable(&st, c, now, why, sizeof(why)) == -1 && strstr(why, "older") != NULL &&
           strstr(why, "2.0h") != NULL,
       "saved 2h ago, max 1h: not usable (%s)", why);
    st.saved_ms = now + 60000;
    ok(state_applicable(&st, c, now, why, sizeof(why)) == 0,
       "saved in the future (clock went back): usable");
    st.saved_ms = now;
    saved = c->pools[POOL_GREEN].name;
    c->pools[POOL_GREEN].name = NULL;
    ok(state_applicable(&st, c, now, why, sizeof(why)) == -1 && strstr(why, "pool") != NULL,
       "a pool the config does not have: not usable (%s)", why);
    c->pools[POOL_GREEN].name = saved;
    state_finish(&st);
    conf_destroy(&c);
}

static void
test_snapshot(void)
{
    static const char *const blue[] = {"b1", "b2"}, *const green[] = {"g1"};
    static const char *const blue2[] = {"b1"}, *const green2[] = {"g1", "g2"};
    struct snapshot *snap = snapshot_create(mkconf(blue, 2, green, 1), NULL, 1, HEALTH_UP);
    struct snapshot *snap2;
    struct route_word w = {.live = POOL_GREEN, .standby_bp = 100, .flags = 0, .generation = 9};
    struct state st;
    size_t skipped;

    server_set_admin(snapshot_find_server(snap, POOL_BLUE, "b2"), ADMIN_DRAIN);
    server_set_admin(snapshot_find_server(snap, POOL_GREEN, "g1"), ADMIN_MAINT);
    state_capture(&st, &w, snap, "{\"state\":\"stable\"}", 12345);
    ok(st.generation == 9 && st.live == POOL_GREEN && st.standby_bp == 100 &&
           st.saved_ms == 12345 && st.nadmin == 2 && strcmp(st.admin[0].name, "b2") == 0 &&
           st.admin[0].admin == ADMIN_DRAIN && st.admin[1].pool == POOL_GREEN &&
           st.admin[1].admin == ADMIN_MAINT &&
           strcmp(st.rollout_json, "{\"state\":\"stable\"}") == 0,
       "capture: routing word, non-ready admin states, rollout copy");

    /* a new config without b2 (and with g2): b2's entry is skipped */
    snap2 = snapshot_create(mkconf(blue2, 1, green2, 2), NULL, 1, HEALTH_UP);
    skipped = state_apply_admin(&st, snap2);
    ok(skipped == 1 &&
           atomic_load(&snapshot_find_server(snap2, POOL_GREEN, "g1")->admin) == ADMIN_MAINT &&
           atomic_load(&snapshot_find_server(snap2, POOL_GREEN, "g2")->admin) == ADMIN_READY &&
           atomic_load(&snapshot_find_server(snap2, POOL_BLUE, "b1")->admin) == ADMIN_READY,
       "apply: known servers set, unknown ones skipped (%zu)", skipped);
    ok(state_add_admin(&st, POOL_BLUE, "", ADMIN_DRAIN) == -1 &&
           state_add_admin(&st, POOL_BLUE,
                           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                           ADMIN_DRAIN) == -1 &&
           state_add_admin(&st, POOL_BLUE,
                           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                           ADMIN_DRAIN) == 0 &&
           st.nadmin == 3,
       "add_admin: empty and 65-byte names refused, 64 accepted");
    state_finish(&st);
    state_finish(&st);
    state_finish(NULL);
    ok(st.admin == NULL && st.nadmin == 0 && st.rollout_json == NULL, "finish empties, twice is "
                                                                      "fine");
    snapshot_release(&snap2);
    snapshot_release(&snap);
}

int
main(void)
{
    char names[256];

    umask(022);
    if (mkdtemp(dir) == NULL) {
        ok(0, "mkdtemp");
        return done_testing();
    }
    snprintf(path, sizeof(path), "%s/state.json", dir);
    test_round_trip();
    test_crash();
    test_corrupt();
    test_applicable();
    test_snapshot();
    unlink(path);
    list_dir(names, sizeof(names));
    ok(names[0] == '\0', "nothing else left in the directory (%s)", names);
    rmdir(dir);
    return done_testing();
}
