/* tests/unit/test_route.c — the routing word, buckets, the standby threshold, cookie parsing,
 * balancing, and concurrent publishing (run it under ThreadSanitizer too). */
#include "proxy/route.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

#define NCLIENTS 100000

/* ---- routing word ---- */

static int
word_is(const struct route_word *w, enum pool_id live, uint32_t bp, uint32_t flags, uint64_t gen)
{
    return w->live == live && w->standby_bp == bp && w->flags == flags && w->generation == gen;
}

static void
test_word(void)
{
    struct routing r;
    struct route_word w;
    static const uint32_t shares[] = {0, 1, 2999, 3000, 9999, 10000};
    static const uint32_t flags[] = {0, ROUTE_FLAG_ROLLOUT, 0x100, 0x1ff};
    static const uint64_t gens[] = {0, 1, 12345, ROUTE_GENERATION_MAX - 1, ROUTE_GENERATION_MAX};
    int bad = 0, n = 0;

    for (int live = 0; live < POOL_COUNT; live++)
        for (size_t s = 0; s < sizeof(shares) / sizeof(*shares); s++)
            for (size_t f = 0; f < sizeof(flags) / sizeof(*flags); f++)
                for (size_t g = 0; g < sizeof(gens) / sizeof(*gens); g++) {
                    routing_init(&r, (enum pool_id)live, shares[s], flags[f], gens[g]);
                    routing_load(&r, &w);
                    n++;
                    if (!word_is(&w, (enum pool_id)live, shares[s], flags[f], gens[g])) {
                        bad++;
                        diag("init(%d, %u, %#x, %llu) read back (%d, %u, %#x, %llu)", live,
                             shares[s], flags[f], (unsigned long long)gens[g], (int)w.live,
                             w.standby_bp, w.flags, (unsigned long long)w.generation);
                    }
                }
    ok(bad == 0, "init/load round trips for every field extreme (%d combinations)", n);

    routing_init(&r, POOL_BLUE, 0, 0, 41);
    ok(routing_publish(&r, POOL_GREEN, 10000, ROUTE_FLAG_ROLLOUT) == 42,
       "publish returns generation + 1");
    routing_load(&r, &w);
    ok(word_is(&w, POOL_GREEN, 10000, ROUTE_FLAG_ROLLOUT, 42), "published green/10000/rollout");
    ok(routing_publish(&r, POOL_BLUE, 0, 0) == 43, "next publish returns 43");
    routing_load(&r, &w);
    ok(word_is(&w, POOL_BLUE, 0, 0, 43), "published blue/0/none");
    ok(routing_publish(&r, POOL_BLUE, 12000, 0) == 44, "clamped publish still +1");
    routing_load(&r, &w);
    ok(w.standby_bp == 10000, "share above 10000 is clamped to 10000 (got %u)", w.standby_bp);

    bad = 0;
    routing_init(&r, POOL_BLUE, 0, 0, 0);
    for (uint64_t i = 1; i <= 1000; i++) {
        uint64_t g = routing_publish(&r, (enum pool_id)(i & 1), (uint32_t)(i * 13 % 10001),
                                     (uint32_t)(i & 0x1ff));
        routing_load(&r, &w);
        if (g != i || !word_is(&w, (enum pool_id)(i & 1), (uint32_t)(i * 13 % 10001),
                               (uint32_t)(i & 0x1ff), i))
            bad++;
    }
    ok(bad == 0, "1000 publishes: generation +1 each time, fields exact");

    routing_init(&r, POOL_GREEN, 0, 0, ROUTE_GENERATION_MAX - 1);
    ok(routing_publish(&r, POOL_GREEN, 5, 0) == ROUTE_GENERATION_MAX,
       "publish reaches the 40-bit maximum without touching other fields");
    routing_load(&r, &w);
    ok(word_is(&w, POOL_GREEN, 5, 0, ROUTE_GENERATION_MAX), "fields intact at max generation");

    ok(route_other_pool(POOL_BLUE) == POOL_GREEN && route_other_pool(POOL_GREEN) == POOL_BLUE,
       "route_other_pool");
}

/* ---- threshold ---- */

static void
test_threshold(void)
{
    struct route_word w = {.live = POOL_BLUE, .standby_bp = 3000};
    int bad = 0;

    ok(route_pool_for_bucket(&w, 0) == POOL_GREEN, "bucket 0 < 3000 goes to standby");
    ok(route_pool_for_bucket(&w, 2999) == POOL_GREEN, "bucket 2999 goes to standby");
    ok(route_pool_for_bucket(&w, 3000) == POOL_BLUE, "bucket 3000 goes to live");
    ok(route_pool_for_bucket(&w, 9999) == POOL_BLUE, "bucket 9999 goes to live");
    w.live = POOL_GREEN;
    ok(route_pool_for_bucket(&w, 2999) == POOL_BLUE &&
           route_pool_for_bucket(&w, 3000) == POOL_GREEN,
       "live green: standby is blue");

    w.standby_bp = 0;
    for (uint32_t b = 0; b < ROUTE_BUCKETS; b++)
        bad += route_pool_for_bucket(&w, b) != POOL_GREEN;
    ok(bad == 0, "share 0: every bucket goes to live");
    w.standby_bp = 10000;
    bad = 0;
    for (uint32_t b = 0; b < ROUTE_BUCKETS; b++)
        bad += route_pool_for_bucket(&w, b) != POOL_BLUE;
    ok(bad == 0, "share 10000: every bucket goes to standby");
    w.standby_bp = 1;
    bad = 0;
    for (uint32_t b = 0; b < ROUTE_BUCKETS; b++)
        bad += route_pool_for_bucket(&w, b) != (b == 0 ? POOL_BLUE : POOL_GREEN);
    ok(bad == 0, "share 1bp: exactly bucket 0 goes to standby");
}

/* ---- clients: random and hashed buckets ---- */

static uint32_t rand_buckets[NCLIENTS];
static uint32_t hash_buckets[NCLIENTS];

static void
make_clients(void)
{
    uint64_t rng = 0x9e3779b97f4a7c15u;
    char ip[32];

    for (int i = 0; i < NCLIENTS; i++) {
        int n = snprintf(ip, sizeof(ip), "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        rand_buckets[i] = route_bucket_random(&rng);
        hash_buckets[i] = route_bucket_hash(ip, (size_t)n);
    }
}

static double
standby_percent(const uint32_t *buckets, const struct route_word *w)
{
    int n = 0;

    for (int i = 0; i < NCLIENTS; i++)
        n += route_pool_for_bucket(w, buckets[i]) != w->live;
    return 100.0 * n / NCLIENTS;
}

static void
test_split(void)
{
    struct routing r;
    struct route_word w;
    double pr, ph;

    routing_init(&r, POOL_BLUE, 0, 0, 1);
    routing_publish(&r, POOL_BLUE, 3000, ROUTE_FLAG_ROLLOUT);
    routing_load(&r, &w);
    pr = standby_percent(rand_buckets, &w);
    ph = standby_percent(hash_buckets, &w);
    ok(pr >= 29.5 && pr <= 30.5, "30%% share, 100k random buckets: %.3f%% standby (error %+.3f)",
       pr, pr - 30.0);
    ok(ph >= 29.5 && ph <= 30.5,
       "30%% share, 100k hashed IPs 10.0.0.0..10.1.134.159: %.3f%% standby (error %+.3f)", ph,
       ph - 30.0);
}

/* Every client at every step of a ramp: never back from standby to live; a rollback moves
 * every client back at once. */
static void
ramp(const uint32_t *buckets, const char *what)
{
    static const uint32_t steps[] = {0, 500, 2500, 5000, 10000};
    static unsigned char on_standby[NCLIENTS];
    struct routing r;
    struct route_word w;
    int back = 0, bad_share = 0, after_rollback = 0;

    memset(on_standby, 0, sizeof(on_standby));
    routing_init(&r, POOL_BLUE, 0, 0, 1);
    for (size_t s = 0; s < sizeof(steps) / sizeof(*steps); s++) {
        double pct;
        int n = 0;

        routing_publish(&r, POOL_BLUE, steps[s], ROUTE_FLAG_ROLLOUT);
        routing_load(&r, &w);
        for (int i = 0; i < NCLIENTS; i++) {
            bool sb = route_pool_for_bucket(&w, buckets[i]) == POOL_GREEN;
            if (on_standby[i] && !sb)
                back++;
            on_standby[i] = sb;
            n += sb;
        }
        pct = 100.0 * n / NCLIENTS;
        if (pct < steps[s] / 100.0 - 0.5 || pct > steps[s] / 100.0 + 0.5) {
            bad_share++;
            diag("%s: share %u bp gave %.3f%% standby", what, steps[s], pct);
        }
    }
    ok(back == 0, "%s: ramp 0/5/25/50/100%% never moves a client back to live (%d moves)", what,
       back);
    ok(bad_share == 0, "%s: every ramp step within 0.5 points of its share", what);

    routing_publish(&r, POOL_BLUE, 0, 0);
    routing_load(&r, &w);
    for (int i = 0; i < NCLIENTS; i++)
        after_rollback += route_pool_for_bucket(&w, buckets[i]) != POOL_BLUE;
    ok(after_rollback == 0, "%s: rollback (share 0) moves every client back to live", what);
}

/* ---- bucket distribution ---- */

#define NBINS 100
/* chi-square with 99 degrees of freedom: mean 99, P(> 160) is about 1e-4 */
#define CHI2_LIMIT 160.0

static double
chi2(const uint32_t *buckets, int n)
{
    int bins[NBINS] = {0};
    double expect = (double)n / NBINS, x = 0;

    for (int i = 0; i < n; i++)
        bins[buckets[i] * NBINS / ROUTE_BUCKETS]++;
    for (int b = 0; b < NBINS; b++)
        x += (bins[b] - expect) * (bins[b] - expect) / expect;
    return x;
}

/* The largest relative deviation of a decile of buckets ([0,1000), [1000,2000), ...). */
static double
max_decile_dev(const uint32_t *buckets, int n)
{
    int dec[10] = {0};
    double worst = 0, expect = n / 10.0;

    for (int i = 0; i < n; i++)
        dec[buckets[i] / 1000]++;
    for (int d = 0; d < 10; d++) {
        double dev = (dec[d] - expect) / expect;
        if (dev < 0)
            dev = -dev;
        if (dev > worst)
            worst = dev;
    }
    return worst;
}

static uint32_t tmp_buckets[NCLIENTS];

static void
test_hash_uniformity(void)
{
    char s[32];
    int n = 0, out_of_range = 0;
    double x, d;

    /* Sequential IPv4 addresses as text, 10.0.0.1 .. 10.0.255.255. */
    for (int i = 1; i <= 0xffff; i++) {
        int len = snprintf(s, sizeof(s), "10.0.%d.%d", i >> 8, i & 255);
        tmp_buckets[n] = route_bucket_hash(s, (size_t)len);
        out_of_range += tmp_buckets[n] >= ROUTE_BUCKETS;
        n++;
    }
    x = chi2(tmp_buckets, n);
    d = max_decile_dev(tmp_buckets, n);
    ok(out_of_range == 0, "hashed buckets are in [0, 10000)");
    ok(x < CHI2_LIMIT, "sequential IP strings: chi-square %.1f over 100 bins (limit %.0f)", x,
       CHI2_LIMIT);
    ok(d < 0.03, "sequential IP strings: worst decile off by %.2f%%", d * 100);

    /* The same addresses as 4 network-order bytes (what the proxy hashes for sticky: ip). */
    n = 0;
    for (int i = 1; i <= 0xffff; i++) {
        unsigned char a[4] = {10, 0, (unsigned char)(i >> 8), (unsigned char)i};
        tmp_buckets[n++] = route_bucket_hash(a, sizeof(a));
    }
    x = chi2(tmp_buckets, n);
    ok(x < CHI2_LIMIT, "sequential IPv4 bytes: chi-square %.1f", x);

    /* Header values user-1 .. user-100000. */
    n = 0;
    for (int i = 1; i <= NCLIENTS; i++) {
        int len = snprintf(s, sizeof(s), "user-%d", i);
        tmp_buckets[n++] = route_bucket_hash(s, (size_t)len);
    }
    x = chi2(tmp_buckets, n);
    d = max_decile_dev(tmp_buckets, n);
    ok(x < CHI2_LIMIT, "user-1..user-100000: chi-square %.1f", x);
    ok(d < 0.03, "user-1..user-100000: worst decile off by %.2f%%", d * 100);

    /* The detector has teeth: a byte-sum "hash" of the same IPs fails it badly. */
    n = 0;
    for (int i = 1; i <= 0xffff; i++) {
        int len = snprintf(s, sizeof(s), "10.0.%d.%d", i >> 8, i & 255);
        uint32_t sum = 0;
        for (int k = 0; k < len; k++)
            sum = sum * 31 + (unsigned char)s[k];
        tmp_buckets[n++] = sum % ROUTE_BUCKETS;
    }
    x = chi2(tmp_buckets, n);
    ok(x > CHI2_LIMIT, "self-check: a weak hash (x31 mod 10000) is rejected (chi-square %.0f)", x);

    ok(route_bucket_hash("abc", 3) == route_bucket_hash("abc", 3), "hash is stable");
    ok(route_bucket_hash("", 0) < ROUTE_BUCKETS, "hash of empty input is in range");
}

static void
test_random_buckets(void)
{
    uint64_t rng = 1;
    int out = 0;
    double x;

    for (int i = 0; i < NCLIENTS; i++) {
        tmp_buckets[i] = route_bucket_random(&rng);
        out += tmp_buckets[i] >= ROUTE_BUCKETS;
    }
    x = chi2(tmp_buckets, NCLIENTS);
    ok(out == 0, "random buckets are in [0, 10000)");
    ok(x < CHI2_LIMIT, "random buckets: chi-square %.1f", x);
    ok(rng != 0, "generator state stays non-zero");
}

/* ---- parsing ---- */

static int
parses(const char *s, uint32_t want)
{
    uint32_t b = 77777;
    return route_bucket_parse(s, strlen(s), &b) == 0 && b == want;
}

static int
rejects(const char *s)
{
    uint32_t b = 77777;
    return route_bucket_parse(s, strlen(s), &b) == -1 && b == 77777;
}

static void
test_bucket_parse(void)
{
    uint32_t b = 0;

    ok(parses("0", 0) && parses("7", 7) && parses("1234", 1234) && parses("9999", 9999),
       "bucket parse: 0, 7, 1234, 9999");
    ok(rejects("10000") && rejects("99999") && rejects("123456"), "bucket parse: >= 10000");
    ok(rejects("") && rejects("00") && rejects("01") && rejects("0999"),
       "bucket parse: empty and leading zeros");
    ok(rejects("+1") && rejects("-1") && rejects(" 1") && rejects("1 ") && rejects("1a") &&
           rejects("0x1") && rejects("1.5"),
       "bucket parse: sign, spaces, junk");
    ok(route_bucket_parse("123456", 3, &b) == 0 && b == 123, "bucket parse honours len");
    {
        static const char nul[] = {'1', '2', '\0', '3'};
        ok(route_bucket_parse(nul, sizeof(nul), &b) == -1, "bucket parse: embedded NUL");
    }
}

static int
cookie_is(const char *hdr, const char *name, const char *want)
{
    const char *v = NULL;
    size_t len = 0;

    if (route_cookie_find(hdr, strlen(hdr), name, &v, &len) != 0)
        return 0;
    if (v < hdr || v + len > hdr + strlen(hdr))
        return 0; /* must point inside the header */
    return len == strlen(want) && memcmp(v, want, len) == 0;
}

static int
cookie_absent(const char *hdr, const char *name)
{
    const char *v = NULL;
    size_t len = 0;
    return route_cookie_find(hdr, strlen(hdr), name, &v, &len) == -1;
}

static void
test_cookie(void)
{
    const char *v = NULL;
    size_t len = 0;

    ok(cookie_is("a=1; b=2", "a", "1") && cookie_is("a=1; b=2", "b", "2"), "cookie: a=1; b=2");
    ok(cookie_is("sy_bucket=42", "sy_bucket", "42"), "cookie: single pair");
    ok(cookie_is("a=1;b=2;sy_bucket=3", "sy_bucket", "3"), "cookie: no spaces");
    ok(cookie_is("  a=1 ;   sy_bucket=3  ;b=2 ", "sy_bucket", "3"), "cookie: extra spaces/tabs");
    ok(cookie_is("a=1;\tsy_bucket = 3", "sy_bucket", "3"), "cookie: spaces around =");
    ok(cookie_is("xsy_bucket=5; sy_bucket=7", "sy_bucket", "7"), "cookie: name is a suffix");
    ok(cookie_is("sy_bucket_old=5; sy_bucket=7", "sy_bucket", "7"), "cookie: name is a prefix");
    ok(cookie_is("sy_bucket=7; xsy_bucket=5", "sy_bucket", "7"), "cookie: suffix after match");
    ok(cookie_absent("xsy_bucket=5; sy_bucketx=6; sy=1", "sy_bucket"),
       "cookie: only look-alikes → absent");
    ok(cookie_is("sy_bucket=\"42\"", "sy_bucket", "42"), "cookie: quoted value");
    ok(cookie_is("sy_bucket=\"", "sy_bucket", "\""), "cookie: lone quote kept");
    ok(cookie_is("sy_bucket=; a=1", "sy_bucket", ""), "cookie: empty value found, length 0");
    ok(cookie_is("t=a=b; sy_bucket=1", "t", "a=b"), "cookie: value containing =");
    ok(cookie_is("sy_bucket=1; sy_bucket=2", "sy_bucket", "1"), "cookie: first of duplicates");
    ok(cookie_absent("", "sy_bucket"), "cookie: empty header");
    ok(route_cookie_find(NULL, 0, "sy_bucket", &v, &len) == -1, "cookie: NULL, 0 header");
    ok(cookie_absent(";;; ;", "sy_bucket"), "cookie: only separators");
    ok(cookie_absent("sy_bucket; a=1", "sy_bucket"), "cookie: name without =");
    ok(cookie_absent("SY_BUCKET=1", "sy_bucket"), "cookie: names are case-sensitive");
    ok(cookie_absent("a=1", ""), "cookie: empty name never matches");
    ok(route_cookie_find("sy_bucket=12345", 12, "sy_bucket", &v, &len) == 0 && len == 2 &&
           memcmp(v, "12", 2) == 0,
       "cookie: hdr_len honoured");
}

/* ---- balancing ---- */

#define NW 2
#define MAXS 8

static struct server_wslot slots[MAXS][NW];
static struct server servers[MAXS];
static struct server *ptrs[MAXS];
static char names[MAXS][8];

static struct pool
mkpool(size_t n, const uint32_t *weights)
{
    struct pool pool = {.id = POOL_BLUE, .servers = ptrs, .nservers = n};

    memset(slots, 0, sizeof(slots));
    for (size_t i = 0; i < n; i++) {
        struct server *s = &servers[i];
        memset(s, 0, sizeof(*s));
        snprintf(names[i], sizeof(names[i]), "s%zu", i);
        atomic_init(&s->refs, 1);
        s->name = names[i];
        s->pool = POOL_BLUE;
        s->weight = weights[i];
        atomic_init(&s->health, HEALTH_UP);
        atomic_init(&s->admin, ADMIN_READY);
        atomic_init(&s->ejected_until_ms, 0);
        atomic_init(&s->removed, false);
        s->nworkers = NW;
        s->w = slots[i];
        ptrs[i] = s;
        pool.total_weight += weights[i];
    }
    return pool;
}

/* Picks n times; counts[i] gets the picks of server i; returns the number of NULL picks. */
static int
pick_n(const struct pool *pool, enum balance bal, int worker, uint64_t *rng, uint64_t now,
       const struct server *exclude, int n, int *counts)
{
    int nulls = 0;

    memset(counts, 0, MAXS * sizeof(*counts));
    for (int i = 0; i < n; i++) {
        struct server *s = route_pick_server(pool, bal, worker, rng, now, exclude);
        if (s == NULL)
            nulls++;
        else
            counts[s - servers]++;
    }
    return nulls;
}

static const char *const bal_names[] = {"p2c", "round_robin", "least_conn"};

static void
test_weights(void)
{
    static const uint32_t w21[] = {2, 1};
    static const uint32_t w123[] = {1, 2, 3};
    uint64_t rng = 12345;
    int counts[MAXS];

    for (int b = 0; b < 3; b++) {
        struct pool pool = mkpool(2, w21);
        double share;
        pick_n(&pool, (enum balance)b, 0, &rng, 1000, NULL, 30000, counts);
        share = counts[0] / 30000.0;
        ok(share > 2.0 / 3 - 0.03 && share < 2.0 / 3 + 0.03,
           "%s, weights 2:1, idle: weight-2 server gets %.2f%% of 30k picks", bal_names[b],
           share * 100);
    }
    for (int b = 0; b < 3; b++) {
        struct pool pool = mkpool(3, w123);
        int bad = 0;
        pick_n(&pool, (enum balance)b, 1, &rng, 1000, NULL, 30000, counts);
        for (int i = 0; i < 3; i++) {
            double share = counts[i] / 30000.0, want = w123[i] / 6.0;
            if (share < want - 0.03 || share > want + 0.03)
                bad++;
        }
        ok(bad == 0, "%s, weights 1:2:3, idle: %.1f%% %.1f%% %.1f%%", bal_names[b],
           counts[0] / 300.0, counts[1] / 300.0, counts[2] / 300.0);
    }

    /* nginx's smooth weighted round robin: 5,1,1 gives a a b a c a a. */
    {
        static const uint32_t w511[] = {5, 1, 1};
        static const int want[] = {0, 0, 1, 0, 2, 0, 0};
        struct pool pool = mkpool(3, w511);
        int bad = 0;
        for (int round = 0; round < 3; round++)
            for (int i = 0; i < 7; i++) {
                struct server *s = route_pick_server(&pool, BALANCE_ROUND_ROBIN, 0, &rng, 0, NULL);
                bad += s != &servers[want[i]];
            }
        ok(bad == 0, "round robin 5:1:1 is smooth (a a b a c a a, three rounds)");
    }

    /* Round robin state is per worker: worker 1 starts its own sequence. */
    {
        static const uint32_t w11[] = {1, 1};
        struct pool pool = mkpool(2, w11);
        struct server *a0 = route_pick_server(&pool, BALANCE_ROUND_ROBIN, 0, &rng, 0, NULL);
        struct server *a1 = route_pick_server(&pool, BALANCE_ROUND_ROBIN, 1, &rng, 0, NULL);
        struct server *b0 = route_pick_server(&pool, BALANCE_ROUND_ROBIN, 0, &rng, 0, NULL);
        ok(a0 == a1 && a0 != b0, "round robin keeps one sequence per worker");
    }
}

static void
test_load(void)
{
    static const uint32_t w11[] = {1, 1};
    static const uint32_t w111[] = {1, 1, 1};
    static const uint32_t w21[] = {2, 1};
    uint64_t rng = 777;
    int counts[MAXS];
    struct pool pool;

    pool = mkpool(2, w11);
    servers[0].w[0].inflight = 100;
    pick_n(&pool, BALANCE_P2C, 0, &rng, 0, NULL, 10000, counts);
    ok(counts[0] == 0 && counts[1] == 10000,
       "p2c: loaded server (100 in flight) gets %d of 10k picks when the other is idle", counts[0]);

    pool = mkpool(3, w111);
    servers[0].w[0].inflight = 100;
    pick_n(&pool, BALANCE_P2C, 0, &rng, 0, NULL, 10000, counts);
    ok(counts[0] == 0 && counts[1] > 4000 && counts[2] > 4000,
       "p2c, 3 servers, one loaded: %d / %d / %d", counts[0], counts[1], counts[2]);

    pool = mkpool(3, w111);
    servers[0].w[0].inflight = 10;
    servers[1].w[0].inflight = 5;
    pick_n(&pool, BALANCE_P2C, 0, &rng, 0, NULL, 30000, counts);
    /* the most loaded never wins a pair; the middle one wins only against it (1/3 of pairs) */
    ok(counts[0] == 0 && counts[1] > 8000 && counts[1] < 12000 && counts[2] > 18000,
       "p2c, loads 10/5/0: %d / %d / %d", counts[0], counts[1], counts[2]);

    pool = mkpool(2, w11);
    servers[0].w[0].inflight = 100;
    pick_n(&pool, BALANCE_P2C, 1, &rng, 0, NULL, 10000, counts);
    ok(counts[0] > 4500 && counts[1] > 4500,
       "p2c reads the calling worker's in-flight only: worker 1 splits %d / %d", counts[0],
       counts[1]);

    pool = mkpool(2, w21);
    servers[0].w[0].inflight = 3; /* 3/2 = 1.5 per weight */
    servers[1].w[0].inflight = 1; /* 1/1 = 1 */
    pick_n(&pool, BALANCE_P2C, 0, &rng, 0, NULL, 1000, counts);
    ok(counts[1] == 1000, "p2c compares in-flight per unit of weight (3/2 vs 1/1)");

    pool = mkpool(2, w11);
    servers[0].w[0].inflight = 5;
    pick_n(&pool, BALANCE_LEAST_CONN, 0, &rng, 0, NULL, 1000, counts);
    ok(counts[1] == 1000, "least_conn: always the idle server when the other has 5 in flight");

    pool = mkpool(3, w111);
    pick_n(&pool, BALANCE_LEAST_CONN, 0, &rng, 0, NULL, 30000, counts);
    ok(counts[0] > 9000 && counts[1] > 9000 && counts[2] > 9000,
       "least_conn, idle equal servers: ties spread %d / %d / %d", counts[0], counts[1], counts[2]);

    /* Requests that stay in flight: least_conn keeps in-flight proportional to weight. */
    pool = mkpool(2, w21);
    for (int i = 0; i < 30; i++)
        route_pick_server(&pool, BALANCE_LEAST_CONN, 0, &rng, 0, NULL)->w[0].inflight++;
    ok(servers[0].w[0].inflight == 20 && servers[1].w[0].inflight == 10,
       "least_conn with weights 2:1 and 30 held requests: %u / %u", servers[0].w[0].inflight,
       servers[1].w[0].inflight);

    pool = mkpool(2, w11);
    for (int i = 0; i < 1000; i++) {
        struct server *s = route_pick_server(&pool, BALANCE_P2C, 0, &rng, 0, NULL);
        s->w[0].inflight++;
    }
    ok(servers[0].w[0].inflight >= 499 && servers[0].w[0].inflight <= 501,
       "p2c with 1000 held requests on 2 servers stays balanced: %u / %u", servers[0].w[0].inflight,
       servers[1].w[0].inflight);
}

static void
test_unusable(void)
{
    static const uint32_t w[] = {1, 1, 1, 1, 1, 1, 1, 1};
    const uint64_t now = 50000;
    uint64_t rng = 99;
    int counts[MAXS];

    for (int b = 0; b < 3; b++) {
        struct pool pool = mkpool(8, w);
        int nulls, bad;
        /* 0: up; 1: down; 2: unknown; 3: drain; 4: maint; 5: ejected; 6: removed;
         * 7: ejection that ended exactly now (usable). */
        atomic_store(&servers[1].health, HEALTH_DOWN);
        atomic_store(&servers[2].health, HEALTH_UNKNOWN);
        atomic_store(&servers[3].admin, ADMIN_DRAIN);
        atomic_store(&servers[4].admin, ADMIN_MAINT);
        atomic_store(&servers[5].ejected_until_ms, now + 1);
        atomic_store(&servers[6].removed, true);
        atomic_store(&servers[7].ejected_until_ms, now);
        nulls = pick_n(&pool, (enum balance)b, 0, &rng, now, NULL, 3000, counts);
        bad = counts[1] + counts[2] + counts[3] + counts[4] + counts[5] + counts[6];
        ok(nulls == 0 && bad == 0 && counts[0] > 1200 && counts[7] > 1200,
           "%s: down/unknown/drain/maint/ejected/removed never picked (%d bad; up %d, "
           "ejection over %d)",
           bal_names[b], bad, counts[0], counts[7]);

        /* exclude: only the other usable one */
        nulls = pick_n(&pool, (enum balance)b, 0, &rng, now, &servers[0], 500, counts);
        ok(nulls == 0 && counts[7] == 500, "%s: exclude honoured", bal_names[b]);

        /* exclude the last usable: nothing left */
        atomic_store(&servers[7].health, HEALTH_DOWN);
        ok(route_pool_usable(&pool, now), "%s: pool usable with one server up", bal_names[b]);
        nulls = pick_n(&pool, (enum balance)b, 0, &rng, now, &servers[0], 100, counts);
        ok(nulls == 100, "%s: NULL when the only usable server is excluded", bal_names[b]);
        nulls = pick_n(&pool, (enum balance)b, 0, &rng, now, NULL, 100, counts);
        ok(nulls == 0 && counts[0] == 100, "%s: one usable server is always picked", bal_names[b]);

        atomic_store(&servers[0].health, HEALTH_DOWN);
        nulls = pick_n(&pool, (enum balance)b, 0, &rng, now, NULL, 100, counts);
        ok(nulls == 100, "%s: NULL when nothing is usable", bal_names[b]);
        ok(!route_pool_usable(&pool, now), "%s: pool not usable", bal_names[b]);

        /* the ejection ends: usable again */
        ok(route_pool_usable(&pool, now + 1), "%s: usable once the ejection ends", bal_names[b]);
        ok(route_pick_server(&pool, (enum balance)b, 0, &rng, now + 1, NULL) == &servers[5],
           "%s: the server whose ejection ended is picked", bal_names[b]);
    }
    {
        struct pool empty = {.id = POOL_GREEN};
        ok(route_pick_server(&empty, BALANCE_P2C, 0, &rng, 0, NULL) == NULL &&
               route_pick_server(&empty, BALANCE_ROUND_ROBIN, 0, &rng, 0, NULL) == NULL &&
               route_pick_server(&empty, BALANCE_LEAST_CONN, 0, &rng, 0, NULL) == NULL &&
               !route_pool_usable(&empty, 0),
           "empty pool: NULL, not usable");
    }
}

/* ---- concurrent publishing (run under ThreadSanitizer) ---- */

#define NPUBLISH 100000
#define NREADERS 3

static struct routing shared_r;
static atomic_bool pub_done;
static atomic_int readers_ready;
static atomic_uint_fast64_t acked; /* the last generation the publisher "acknowledged" */
static atomic_uint_fast64_t seen;  /* a generation some reader has seen (sync points) */
#define SYNC_EVERY 1000            /* the publisher waits for a reader every 1000 publishes */

struct reader {
    pthread_t tid;
    long loads;
    long bad_invariant;
    long went_back;
    long stale_after_ack;
    long distinct;
    uint64_t last;
};

static enum pool_id
inv_live(uint64_t g)
{
    return (g & 1) ? POOL_GREEN : POOL_BLUE;
}

static uint32_t
inv_share(uint64_t g)
{
    return (uint32_t)(g * 7 % 10001);
}

static uint32_t
inv_flags(uint64_t g)
{
    return (uint32_t)(g * 3 & 0x1ff);
}

static void *
reader_main(void *arg)
{
    struct reader *rd = arg;
    struct route_word w;

    atomic_fetch_add(&readers_ready, 1);
    for (;;) {
        bool done = atomic_load_explicit(&pub_done, memory_order_acquire);
        uint64_t a = atomic_load_explicit(&acked, memory_order_acquire);

        routing_load(&shared_r, &w);
        rd->loads++;
        if (w.live != inv_live(w.generation) || w.standby_bp != inv_share(w.generation) ||
            w.flags != inv_flags(w.generation))
            rd->bad_invariant++;
        if (w.generation < rd->last)
            rd->went_back++;
        if (w.generation != rd->last) {
            rd->distinct++;
            atomic_store_explicit(&seen, w.generation, memory_order_relaxed);
        }
        /* §3's guarantee: a change acknowledged before this load is visible to it. */
        if (w.generation < a)
            rd->stale_after_ack++;
        rd->last = w.generation;
        if (done)
            break;
    }
    return NULL;
}

static void *
publisher_main(void *arg)
{
    long *bad = arg;

    while (atomic_load(&readers_ready) < NREADERS)
        ;
    for (uint64_t g = 1; g <= NPUBLISH; g++) {
        if (routing_publish(&shared_r, inv_live(g), inv_share(g), inv_flags(g)) != g)
            (*bad)++;
        atomic_store_explicit(&acked, g, memory_order_release);
        /* Make the threads interleave even when the scheduler runs the publisher alone. */
        if (g % SYNC_EVERY == 0)
            while (atomic_load_explicit(&seen, memory_order_relaxed) < g)
                sched_yield();
    }
    atomic_store_explicit(&pub_done, true, memory_order_release);
    return NULL;
}

static void
test_concurrent(void)
{
    struct reader rd[NREADERS];
    pthread_t pub;
    long pub_bad = 0, bad = 0, back = 0, stale = 0, distinct = 0, loads = 0, final_ok = 0;

    memset(rd, 0, sizeof(rd));
    routing_init(&shared_r, inv_live(0), inv_share(0), inv_flags(0), 0);
    atomic_init(&pub_done, false);
    atomic_init(&readers_ready, 0);
    atomic_init(&acked, 0);
    atomic_init(&seen, 0);
    for (int i = 0; i < NREADERS; i++)
        pthread_create(&rd[i].tid, NULL, reader_main, &rd[i]);
    pthread_create(&pub, NULL, publisher_main, &pub_bad);
    pthread_join(pub, NULL);
    for (int i = 0; i < NREADERS; i++) {
        pthread_join(rd[i].tid, NULL);
        bad += rd[i].bad_invariant;
        back += rd[i].went_back;
        stale += rd[i].stale_after_ack;
        distinct += rd[i].distinct;
        loads += rd[i].loads;
        final_ok += rd[i].last == NPUBLISH;
    }
    diag("%d readers: %ld loads, %ld generation changes seen", NREADERS, loads, distinct);
    ok(pub_bad == 0, "publisher: %d publishes, each returned generation + 1", NPUBLISH);
    ok(bad == 0, "readers: every word seen satisfies the invariant (%ld bad)", bad);
    ok(back == 0, "readers: generation never goes backwards (%ld times)", back);
    ok(stale == 0, "readers: never older than an acknowledged generation (%ld times)", stale);
    ok(final_ok == NREADERS, "readers: all see the final generation after the publisher is done");
    ok(distinct >= NPUBLISH / SYNC_EVERY, "readers observed publishes while they ran");
}

/* ---- the acknowledgement waits for decisions in progress (route_decisions_wait) ---- */

#define NDECIDE_PUBLISH 20000

static struct route_decisions dec;
static atomic_uint_fast64_t dec_acked; /* the last generation acknowledged after the wait */
static atomic_bool dec_done;
static atomic_long dec_count; /* decisions taken, for the publisher to interleave with */

/* A worker: each decision reads the word, works a little (as route_request parses cookies),
 * then ends. A decision that read an older generation than one acknowledged before it ended
 * breaks DESIGN §3: the caller was told the change was in force while it was not. */
static void *
decider_main(void *arg)
{
    long *late = arg;
    struct route_word w;
    volatile unsigned sink = 0;

    while (!atomic_load_explicit(&dec_done, memory_order_acquire)) {
        long n = atomic_load_explicit(&dec_count, memory_order_relaxed);
        route_decision_begin(&dec, &shared_r, &w);
        for (unsigned i = 0; i < 50 + (unsigned)(n % 7) * 20; i++)
            sink += i;
        (void)sink;
        uint64_t a = atomic_load_explicit(&dec_acked, memory_order_acquire);
        route_decision_end(&dec);
        if (w.generation < a)
            (*late)++;
        atomic_store_explicit(&dec_count, n + 1, memory_order_relaxed);
    }
    return NULL;
}

static void
test_decision_wait(void)
{
    struct route_word w;
    long late = 0, timeouts = 0;
    pthread_t tid;

    /* One thread, step by step: a decision begun before a publish holds the acknowledgement
     * until it ends; one begun after reads the new word. */
    routing_init(&shared_r, POOL_BLUE, 0, 0, 7);
    atomic_init(&dec.seq, 0);
    ok(route_decisions_wait(&dec, 0) == 0, "no decision in progress: the wait returns at once");
    route_decision_begin(&dec, &shared_r, &w);
    routing_publish(&shared_r, POOL_GREEN, 0, 0);
    ok(w.generation == 7 && route_decisions_wait(&dec, 20) == -1,
       "a decision that read the old word and has not ended holds the acknowledgement");
    route_decision_end(&dec);
    ok(route_decisions_wait(&dec, 0) == 0, "once it ended, the wait returns");
    route_decision_begin(&dec, &shared_r, &w);
    ok(w.generation == 8 && w.live == POOL_GREEN, "a decision begun after reads the new word");
    route_decision_end(&dec);

    /* Two threads: no decision ever ends with an older word after a newer acknowledgement. */
    routing_init(&shared_r, POOL_BLUE, 0, 0, 0);
    atomic_init(&dec.seq, 0);
    atomic_init(&dec_acked, 0);
    atomic_init(&dec_done, false);
    atomic_init(&dec_count, 0);
    pthread_create(&tid, NULL, decider_main, &late);
    for (uint64_t g = 1; g <= NDECIDE_PUBLISH; g++) {
        long n = atomic_load_explicit(&dec_count, memory_order_relaxed);
        uint64_t gen = routing_publish(&shared_r, g & 1 ? POOL_GREEN : POOL_BLUE, 0, 0);
        if (route_decisions_wait(&dec, 2000) != 0)
            timeouts++;
        atomic_store_explicit(&dec_acked, gen, memory_order_release);
        if (g % 16 == 0) /* interleave even on a busy or single CPU */
            while (atomic_load_explicit(&dec_count, memory_order_relaxed) == n)
                sched_yield();
    }
    atomic_store_explicit(&dec_done, true, memory_order_release);
    pthread_join(tid, NULL);
    long n = atomic_load(&dec_count);
    diag("%ld decisions during %d publishes", n, NDECIDE_PUBLISH);
    ok(late == 0 && timeouts == 0,
       "no decision ended with an older word after a newer one was acknowledged (%ld late, "
       "%ld timeouts)",
       late, timeouts);
    ok(n >= NDECIDE_PUBLISH / 16, "the decider ran between publishes (%ld decisions)", n);
}

int
main(void)
{
    test_word();
    test_threshold();
    make_clients();
    test_split();
    ramp(rand_buckets, "random buckets");
    ramp(hash_buckets, "hashed IPs");
    test_hash_uniformity();
    test_random_buckets();
    test_bucket_parse();
    test_cookie();
    test_weights();
    test_load();
    test_unusable();
    test_concurrent();
    test_decision_wait();
    return done_testing();
}
