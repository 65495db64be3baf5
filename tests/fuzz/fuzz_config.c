/* tests/fuzz/fuzz_config.c — fuzz target for the configuration loader: conf_parse() (conf/conf.h)
 * on arbitrary bytes never crashes; a refusal carries at least one message, each starting with
 * "NAME:LINE:COL: " and valid as text; an accepted config has the promises of conf.h (two pools
 * with servers, a plan ending at 100%, limits set) and conf_destroy()s cleanly. */
#define FUZZ_NAME "fuzz_config"
#include "conf/conf.h"

#include <stdbool.h>
#include <string.h>

#include "fuzz_util.h"

#define NAME "fuzz.yaml"

/* "NAME:LINE:COL: " with LINE and COL positive decimal numbers. */
static bool
located(const char *msg)
{
    size_t n = strlen(NAME);
    if (strncmp(msg, NAME ":", n + 1) != 0)
        return false;
    const char *p = msg + n + 1;
    for (int part = 0; part < 2; part++) {
        const char *start = p;
        unsigned long v = 0;
        while (*p >= '0' && *p <= '9' && p - start < 10)
            v = v * 10 + (unsigned long)(*p++ - '0');
        if (p == start || v == 0 || *p != ':')
            return false;
        p++;
    }
    return *p == ' ';
}

static void
check_conf(const struct conf *c)
{
    CHECK(c->nlisten >= 1);
    for (int p = 0; p < POOL_COUNT; p++) {
        const struct conf_pool *pool = &c->pools[p];
        CHECK(pool->nservers >= 1);
        for (size_t i = 0; i < pool->nservers; i++) {
            CHECK(pool->servers[i].name != NULL && pool->servers[i].name[0] != '\0');
            CHECK(pool->servers[i].addr.len > 0);
            CHECK(pool->servers[i].weight >= 1 && pool->servers[i].weight <= 100);
            for (size_t k = 0; k < i; k++)
                CHECK(strcmp(pool->servers[i].name, pool->servers[k].name) != 0);
        }
    }
    const struct conf_plan *plan = &c->rollout.plan;
    CHECK(plan->nsteps >= 1 && plan->nsteps <= CONF_PLAN_MAX_STEPS);
    uint32_t prev = 0;
    for (size_t i = 0; i < plan->nsteps; i++) {
        CHECK(plan->steps[i].weight_bp > prev);
        prev = plan->steps[i].weight_bp;
    }
    CHECK(prev == 10000);
    CHECK(c->routing.standby_bp <= 10000);
    CHECK(c->limits.max_header_bytes > 0 && c->limits.max_headers > 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct conf_err err;
    memset(&err, 0x5a, sizeof(err)); /* conf_parse must set everything it reports */
    struct conf *c = conf_parse(NAME, (const char *)data, size, &err);
    if (c == NULL) {
        CHECK(err.count >= 1);
        size_t kept = err.count < CONF_ERR_MAX ? err.count : CONF_ERR_MAX;
        for (size_t i = 0; i < kept; i++) {
            CHECK(memchr(err.msg[i], '\0', CONF_ERR_LEN) != NULL);
            if (!located(err.msg[i])) {
                fprintf(stderr, "message %zu: %s\n", i, err.msg[i]);
                fuzz_fail("an error without NAME:LINE:COL", __LINE__);
            }
        }
        return 0;
    }
    CHECK(err.count == 0);
    check_conf(c);
    conf_destroy(&c);
    CHECK(c == NULL);
    return 0;
}
