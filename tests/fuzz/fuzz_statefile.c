/* tests/fuzz/fuzz_statefile.c — fuzz target for the state file loader (control/state.c): the
 * input is written to a file under /dev/shm (else $TMPDIR or /tmp) and loaded through
 * state_store_file() / state_store_load(), as the daemon does at start. A load never crashes;
 * a refusal says why; a loaded state is within the limits state.h promises, and saving it and
 * loading it again gives the same state. */
#define FUZZ_NAME "fuzz_statefile"
#include "control/state.h"

#include <jansson.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_util.h"

static char dir[256];
static char path[300];
static char path2[300];

static void
setup(void)
{
    if (dir[0])
        return;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    snprintf(dir, sizeof(dir), "%s/switchyard-fuzz-state.%d", base, (int)getpid());
    CHECK(mkdir(dir, 0700) == 0);
    snprintf(path, sizeof(path), "%s/state.json", dir);
    snprintf(path2, sizeof(path2), "%s/again.json", dir);
}

/* Removes the scratch directory at exit (the replay main returns; libFuzzer exits). */
__attribute__((destructor)) static void
cleanup(void)
{
    if (dir[0] == '\0')
        return;
    unlink(path);
    unlink(path2);
    rmdir(dir);
}

static void
check_state(const struct state *st)
{
    CHECK(st->generation <= ROUTE_GENERATION_MAX);
    CHECK(st->live == POOL_BLUE || st->live == POOL_GREEN);
    CHECK(st->standby_bp <= 10000);
    CHECK(st->nadmin == 0 || st->admin != NULL);
    for (size_t i = 0; i < st->nadmin; i++) {
        const struct state_admin *a = &st->admin[i];
        CHECK(a->pool == POOL_BLUE || a->pool == POOL_GREEN);
        CHECK(a->admin == ADMIN_READY || a->admin == ADMIN_DRAIN || a->admin == ADMIN_MAINT);
        size_t n = strnlen(a->name, sizeof(a->name));
        CHECK(n >= 1 && n <= STATE_NAME_MAX);
    }
    if (st->rollout_json) {
        json_error_t jerr;
        json_t *j = json_loads(st->rollout_json, JSON_DECODE_ANY, &jerr);
        CHECK(j != NULL);
        json_decref(j);
    }
}

/* Whether b is a as saved and loaded again (a saved_ms of 0 is saved as the current time). */
static bool
same_state(const struct state *a, const struct state *b)
{
    if (a->generation != b->generation || a->live != b->live || a->standby_bp != b->standby_bp ||
        a->flags != b->flags || a->nadmin != b->nadmin ||
        (a->saved_ms != 0 && a->saved_ms != b->saved_ms))
        return false;
    for (size_t i = 0; i < a->nadmin; i++)
        if (a->admin[i].pool != b->admin[i].pool || a->admin[i].admin != b->admin[i].admin ||
            strcmp(a->admin[i].name, b->admin[i].name) != 0)
            return false;
    if ((a->rollout_json == NULL) != (b->rollout_json == NULL))
        return false;
    if (a->rollout_json) {
        /* The same JSON value (the text may be re-encoded). */
        json_t *x = json_loads(a->rollout_json, JSON_DECODE_ANY, NULL);
        json_t *y = json_loads(b->rollout_json, JSON_DECODE_ANY, NULL);
        bool eq = x && y && json_equal(x, y);
        json_decref(x);
        json_decref(y);
        return eq;
    }
    return true;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(fwrite(data, 1, size, f) == size);
    CHECK(fclose(f) == 0);

    struct state_store *s = state_store_file(path);
    struct state st;
    state_init(&st);
    char err[512];
    err[0] = '\0';
    int rc = state_store_load(s, &st, err, sizeof(err));
    CHECK(rc == 0 || rc == -1 || rc == 1);
    if (rc == -1)
        CHECK(err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL);
    if (rc == 1)
        CHECK(st.nadmin == 0 && st.rollout_json == NULL && st.generation == 0);
    if (rc == 0) {
        check_state(&st);
        /* Saved again (a fresh store: nothing loaded, generation 0 expected) and reloaded. */
        unlink(path2);
        struct state_store *s2 = state_store_file(path2);
        struct state none;
        state_init(&none);
        CHECK(state_store_load(s2, &none, err, sizeof(err)) == 1);
        state_finish(&none);
        if (state_store_cas(s2, 0, &st, err, sizeof(err)) != 0) {
            fprintf(stderr, "cas: %s\n", err);
            fuzz_fail("a loaded state cannot be saved", __LINE__);
        }
        struct state_store *s3 = state_store_file(path2);
        struct state again;
        state_init(&again);
        if (state_store_load(s3, &again, err, sizeof(err)) != 0) {
            fprintf(stderr, "load: %s\n", err);
            fuzz_fail("a saved state does not load", __LINE__);
        }
        CHECK(same_state(&st, &again));
        state_finish(&again);
        state_store_destroy(&s3);
        state_store_destroy(&s2);
        CHECK(s2 == NULL && s3 == NULL);
    }
    state_finish(&st);
    state_store_destroy(&s);
    return 0;
}
