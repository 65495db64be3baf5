/* tests/unit/test_eject.c — passive ejection: threshold, doubling, cap, the pool's share. */
#include "proxy/eject.h"

#include <stdlib.h>
#include <string.h>

#include "conf/xalloc.h"
#include "tests/unit/tap.h"

struct fixture {
    struct conf_pool pc;
    struct pool pool;
    struct server srv[4];
    struct server *ptrs[4];
};

static void
setup(struct fixture *f, size_t n, uint32_t threshold, uint32_t max_percent)
{
    memset(f, 0, sizeof(*f));
    f->pc.health.passive.consecutive_failures = threshold;
    f->pc.health.passive.ejection_time_ms = 1000;
    f->pc.health.passive.max_ejection_percent = max_percent;
    f->pool.conf = &f->pc;
    f->pool.nservers = n;
    f->pool.servers = f->ptrs;
    for (size_t i = 0; i < n; i++) {
        f->srv[i].name = "s";
        f->ptrs[i] = &f->srv[i];
    }
}

static uint64_t
until(struct server *s)
{
    return atomic_load(&s->ejected_until_ms);
}

int
main(void)
{
    struct fixture f;
    uint64_t now = 1000000;

    setup(&f, 4, 3, 50);
    ok(!eject_failure(&f.pool, &f.srv[0], now) && !eject_failure(&f.pool, &f.srv[0], now),
       "two failures of three: still in");
    ok(eject_failure(&f.pool, &f.srv[0], now) && until(&f.srv[0]) == now + 1000,
       "the third consecutive failure ejects for ejection_time");
    ok(atomic_load(&f.srv[0].consecutive_failures) == 0, "the run restarts after an ejection");

    eject_failure(&f.pool, &f.srv[1], now);
    eject_failure(&f.pool, &f.srv[1], now);
    eject_success(&f.srv[1]);
    ok(!eject_failure(&f.pool, &f.srv[1], now), "a success ends the run of failures");
    ok(atomic_load(&f.srv[1].consecutive_failures) == 1, "counting starts again after success");

    /* Second ejection of server 0 after the first ended: doubled. */
    now += 1500;
    for (int i = 0; i < 2; i++)
        eject_failure(&f.pool, &f.srv[0], now);
    ok(eject_failure(&f.pool, &f.srv[0], now) && until(&f.srv[0]) == now + 2000,
       "a repeat ejection doubles the time (2000 ms)");

    /* 50% of 4 servers: at most 2 out at once. */
    for (int i = 0; i < 3; i++)
        eject_failure(&f.pool, &f.srv[1], now);
    ok(eject_count(&f.pool, now) == 2, "two of four ejected");
    for (int i = 0; i < 3; i++)
        eject_failure(&f.pool, &f.srv[2], now);
    ok(until(&f.srv[2]) == 0 && eject_count(&f.pool, now) == 2,
       "a third is not ejected: max_ejection_percent 50 keeps half the pool");

    /* Doubling is capped at 5 minutes. */
    setup(&f, 2, 1, 100);
    uint64_t t = 1000000;
    uint64_t last = 0;
    for (int i = 0; i < 12; i++) {
        ok(eject_failure(&f.pool, &f.srv[0], t), "ejection %d", i + 1);
        last = until(&f.srv[0]) - t;
        t = until(&f.srv[0]) + 1;
    }
    ok(last == EJECT_MAX_MS, "doubling stops at 5 minutes (%llu ms)", (unsigned long long)last);
    t += EJECT_MAX_MS + 1000;
    ok(eject_failure(&f.pool, &f.srv[0], t) && until(&f.srv[0]) - t == 1000,
       "long after the last ejection the time starts over at ejection_time");

    /* consecutive_failures 0 disables; a one-server pool at 50% is never ejected. */
    setup(&f, 1, 0, 50);
    ok(!eject_failure(&f.pool, &f.srv[0], now) && until(&f.srv[0]) == 0,
       "consecutive_failures 0: passive ejection off");
    setup(&f, 1, 1, 50);
    ok(!eject_failure(&f.pool, &f.srv[0], now) && until(&f.srv[0]) == 0,
       "the only server of a pool is not ejected at 50%%");
    return done_testing();
}
