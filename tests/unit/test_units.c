/* tests/unit/test_units.c — the value parsers of conf/units.c: durations, sizes, percentages,
 * ratios, booleans, status ranges, addresses, CIDRs and their matching, plan shorthands, pool
 * names. Good inputs give exact values; bad ones are refused and leave the output untouched. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "conf/units.h"
#include "tap.h"

static void
test_duration(void)
{
    static const struct {
        const char *s;
        uint64_t ms;
    } good[] = {
        {"500ms", 500},
        {"2s", 2000},
        {"1m", 60000},
        {"1h", 3600000},
        {"1d", 86400000},
        {"0", 0},
        {"0s", 0},
        {"90s", 90000},
        {"18446744073709551615ms", UINT64_MAX},
        {"213503982334d", UINT64_C(213503982334) * 86400000},
    };
    static const char *const bad[] = {
        "",
        "2",
        "-1s",
        "+1s",
        "1.5s",
        "1 s",
        " 1s",
        "1s ",
        "1S",
        "1sec",
        "ms",
        "s",
        "1ms5",
        "1m30s",
        "1w",
        "0x10s",
        "18446744073709551616ms",
        "18446744073709551615s",
        "213503982335d",
        "-0",
    };

    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t ms = 7;
        ok(conf_parse_duration(good[i].s, &ms) == 0 && ms == good[i].ms, "duration \"%s\" = %llu",
           good[i].s, (unsigned long long)good[i].ms);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t ms = 7;
        ok(conf_parse_duration(bad[i], &ms) == -1 && ms == 7, "duration \"%s\" refused", bad[i]);
    }
}

static void
test_size(void)
{
    static const struct {
        const char *s;
        uint64_t bytes;
    } good[] = {
        {"512", 512},
        {"0", 0},
        {"32k", 32768},
        {"32K", 32768},
        {"1m", 1048576},
        {"1M", 1048576},
        {"1g", 1073741824},
        {"2G", UINT64_C(2147483648)},
        {"17179869183g", UINT64_C(17179869183) << 30},
    };
    static const char *const bad[] = {"",
                                      "k",
                                      "1t",
                                      "1kb",
                                      "1KiB",
                                      "-1",
                                      "1.5k",
                                      " 1",
                                      "1 k",
                                      "+1",
                                      "17179869184g",
                                      "1kk",
                                      "18446744073709551616"};

    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t b = 7;
        ok(conf_parse_size(good[i].s, &b) == 0 && b == good[i].bytes, "size \"%s\" = %llu",
           good[i].s, (unsigned long long)good[i].bytes);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t b = 7;
        ok(conf_parse_size(bad[i], &b) == -1 && b == 7, "size \"%s\" refused", bad[i]);
    }
}

static void
test_percent(void)
{
    static const struct {
        const char *s;
        uint32_t bp;
    } good[] = {
        {"5", 500},        {"12.5", 1250},  {"12.34", 1234}, {"12.34%", 1234}, {"100", 10000},
        {"100.00", 10000}, {"100%", 10000}, {"0", 0},        {"0.01", 1},      {"0.1", 10},
        {"5%", 500},       {"99.99", 9999}, {"007", 700},    {"33.33%", 3333},
    };
    static const char *const bad[] = {
        "1.234", "100.01", "101", "-5",  "",   "%",   "5.", ".5",   "5%%",
        "1e2",   "12.3.4", " 5",  "5 %", "+5", "abc", "5x", "200%", "99999999999999999999999",
        "100.1",
    };

    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint32_t bp = 7;
        ok(conf_parse_percent(good[i].s, &bp) == 0 && bp == good[i].bp, "percent \"%s\" = %u bp",
           good[i].s, good[i].bp);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint32_t bp = 7;
        ok(conf_parse_percent(bad[i], &bp) == -1 && bp == 7, "percent \"%s\" refused", bad[i]);
    }
}

static void
test_small_parsers(void)
{
    static const char *const bad_ratio[] = {"",    ".5",    "1.",  "-1",        "1e3",
                                            "1,5", "0.1.2", "nan", "1234567890"};
    static const char *const yes[] = {"true", "yes", "on", "TRUE", "Yes", "On"};
    static const char *const no[] = {"false", "no", "off", "False", "NO", "oFF"};
    static const char *const bad_bool[] = {"", "1", "0", "y", "n", "truee", "of"};
    double r = 7;
    bool b;
    uint64_t u = 7;
    int lo = 7;
    int hi = 7;

    ok(conf_parse_ratio("0.01", &r) == 0 && r == 0.01, "ratio 0.01");
    ok(conf_parse_ratio("1", &r) == 0 && r == 1.0, "ratio 1");
    ok(conf_parse_ratio("1.0", &r) == 0 && r == 1.0, "ratio 1.0");
    ok(conf_parse_ratio("2.5", &r) == 0 && r == 2.5, "ratio 2.5");
    ok(conf_parse_ratio("0.000000001", &r) == 0 && r == 1e-9, "ratio with nine decimals");
    for (size_t i = 0; i < sizeof bad_ratio / sizeof bad_ratio[0]; i++) {
        r = 7;
        ok(conf_parse_ratio(bad_ratio[i], &r) == -1 && r == 7, "ratio \"%s\" refused",
           bad_ratio[i]);
    }

    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        b = false;
        ok(conf_parse_bool(yes[i], &b) == 0 && b, "bool \"%s\" is true", yes[i]);
        b = true;
        ok(conf_parse_bool(no[i], &b) == 0 && !b, "bool \"%s\" is false", no[i]);
    }
    for (size_t i = 0; i < sizeof bad_bool / sizeof bad_bool[0]; i++)
        ok(conf_parse_bool(bad_bool[i], &b) == -1, "bool \"%s\" refused", bad_bool[i]);

    ok(conf_parse_uint("42", 100, &u) == 0 && u == 42, "uint 42");
    ok(conf_parse_uint("100", 100, &u) == 0 && u == 100, "uint at its maximum");
    ok(conf_parse_uint("101", 100, &u) == -1 && u == 100, "uint above its maximum refused");
    ok(conf_parse_uint("-1", 100, &u) == -1, "uint -1 refused");
    ok(conf_parse_uint("", 100, &u) == -1, "uint empty refused");
    ok(conf_parse_uint("99999999999999999999", UINT64_MAX, &u) == -1, "uint overflow refused");

    ok(conf_parse_expect("200-399", &lo, &hi) == 0 && lo == 200 && hi == 399, "expect 200-399");
    ok(conf_parse_expect("204", &lo, &hi) == 0 && lo == 204 && hi == 204, "expect 204");
    ok(conf_parse_expect("100-599", &lo, &hi) == 0 && lo == 100 && hi == 599, "expect 100-599");
    static const char *const bad_expect[] = {"99",  "600",     "399-200", "200-", "-200",
                                             "abc", "200-600", "",        "2xx",  "200 - 399"};
    for (size_t i = 0; i < sizeof bad_expect / sizeof bad_expect[0]; i++) {
        lo = hi = 7;
        ok(conf_parse_expect(bad_expect[i], &lo, &hi) == -1 && lo == 7 && hi == 7,
           "expect \"%s\" refused", bad_expect[i]);
    }
}

static unsigned
addr_port(const struct conf_addr *a)
{
    if (a->ss.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
}

static void
test_addr(void)
{
    static const struct {
        const char *s;
        int family;
        const char *text;
        unsigned port;
    } good[] = {
        {"127.0.0.1:80", AF_INET, "127.0.0.1:80", 80},
        {"*:8080", AF_INET, "0.0.0.0:8080", 8080},
        {"localhost:9000", AF_INET, "127.0.0.1:9000", 9000},
        {"10.0.1.1:8000", AF_INET, "10.0.1.1:8000", 8000},
        {"1.2.3.4:0", AF_INET, "1.2.3.4:0", 0},
        {"1.2.3.4:65535", AF_INET, "1.2.3.4:65535", 65535},
        {"[::1]:8080", AF_INET6, "[::1]:8080", 8080},
        {"[::]:443", AF_INET6, "[::]:443", 443},
        {"[2001:DB8:0:0::1]:443", AF_INET6, "[2001:db8::1]:443", 443},
        {"[::ffff:10.0.0.1]:80", AF_INET6, "[::ffff:10.0.0.1]:80", 80},
    };
    static const char *const bad[] = {
        "1.2.3.4:65536",
        "1.2.3.4",
        "1.2.3.4:",
        ":80",
        "::1:80",
        "[::1]",
        "[::1]80",
        "[::1]:",
        "example.com:80",
        "1.2.3:80",
        "1.2.3.4:-1",
        "1.2.3.4:+80",
        "1.2.3.4:080080",
        "[]:80",
        "256.1.1.1:80",
        "[1.2.3.4]:80",
        "",
        "*",
        "1.2.3.4:80 ",
        " 1.2.3.4:80",
        "[::1%lo]:80",
        "LOCALHOST:80",
        "[::1]:99999",
        "1.2.3.4:8o",
    };

    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct conf_addr a;
        memset(&a, 0, sizeof a);
        int rc = conf_parse_addr(good[i].s, &a);
        ok(rc == 0 && a.ss.ss_family == good[i].family && strcmp(a.text, good[i].text) == 0 &&
               addr_port(&a) == good[i].port &&
               a.len == (good[i].family == AF_INET ? sizeof(struct sockaddr_in)
                                                   : sizeof(struct sockaddr_in6)),
           "address \"%s\" is %s (got \"%s\")", good[i].s, good[i].text, rc == 0 ? a.text : "-");
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct conf_addr a;
        memset(&a, 0x5a, sizeof a);
        ok(conf_parse_addr(bad[i], &a) == -1 && a.text[0] == 0x5a, "address \"%s\" refused",
           bad[i]);
    }
}

static struct sockaddr_storage
sa(const char *ip)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof ss);
    if (inet_pton(AF_INET, ip, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
        ss.ss_family = AF_INET;
    } else {
        inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *)&ss)->sin6_addr);
        ss.ss_family = AF_INET6;
    }
    return ss;
}

static bool
match(const char *cidr, const char *ip)
{
    struct conf_cidr c;
    struct sockaddr_storage ss = sa(ip);

    if (conf_parse_cidr(cidr, &c) == -1)
        return false;
    return conf_cidr_match(&c, (const struct sockaddr *)&ss);
}

static void
test_cidr(void)
{
    static const char *const bad[] = {
        "10.0.0.0/33",   "::/129",   "10.0.0.0/", "/8", "10.0.0.0/-1", "10.0.0.0/8/8", "foo",
        "10.0.0.0/0008", "10.0.0/8", "[::1]/128", "",   "10.0.0.0/ 8", "10.0.0.0/8 "};
    struct conf_cidr c;

    ok(conf_parse_cidr("10.0.0.0/8", &c) == 0 && c.family == AF_INET && c.prefix == 8 &&
           c.addr[0] == 10,
       "cidr 10.0.0.0/8");
    ok(conf_parse_cidr("10.1.2.3/12", &c) == 0 && c.prefix == 12 && c.addr[0] == 10 &&
           c.addr[1] == 0 && c.addr[2] == 0 && c.addr[3] == 0,
       "cidr host bits are cleared (10.1.2.3/12 -> 10.0.0.0)");
    ok(conf_parse_cidr("10.31.2.3/12", &c) == 0 && c.addr[1] == 16,
       "cidr clears the host bits of a partial byte (10.31/12 -> 10.16)");
    ok(conf_parse_cidr("1.2.3.4", &c) == 0 && c.prefix == 32 && c.addr[3] == 4,
       "a bare IPv4 address is a /32");
    ok(conf_parse_cidr("::1", &c) == 0 && c.family == AF_INET6 && c.prefix == 128 &&
           c.addr[15] == 1,
       "a bare IPv6 address is a /128");
    ok(conf_parse_cidr("2001:db8::/32", &c) == 0 && c.family == AF_INET6 && c.prefix == 32,
       "cidr 2001:db8::/32");
    ok(conf_parse_cidr("0.0.0.0/0", &c) == 0 && c.prefix == 0, "cidr 0.0.0.0/0");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&c, 0x5a, sizeof c);
        ok(conf_parse_cidr(bad[i], &c) == -1 && c.prefix == 0x5a5a5a5a, "cidr \"%s\" refused",
           bad[i]);
    }

    ok(match("10.0.0.0/8", "10.200.3.4"), "10.200.3.4 in 10.0.0.0/8");
    ok(!match("10.0.0.0/8", "11.0.0.1"), "11.0.0.1 not in 10.0.0.0/8");
    ok(match("172.16.0.0/12", "172.31.255.255"), "172.31.255.255 in 172.16.0.0/12");
    ok(!match("172.16.0.0/12", "172.32.0.0"), "172.32.0.0 not in 172.16.0.0/12");
    ok(match("0.0.0.0/0", "203.0.113.9"), "anything in 0.0.0.0/0");
    ok(match("192.0.2.7", "192.0.2.7") && !match("192.0.2.7", "192.0.2.8"), "a /32 is exact");
    ok(match("2001:db8::/32", "2001:db8:1::5"), "2001:db8:1::5 in 2001:db8::/32");
    ok(!match("2001:db8::/32", "2001:db9::5"), "2001:db9::5 not in 2001:db8::/32");
    ok(match("::1/128", "::1") && !match("::1/128", "::2"), "::1/128 is exact");
    ok(match("10.0.0.0/8", "::ffff:10.1.2.3"), "v4-mapped ::ffff:10.1.2.3 in 10.0.0.0/8");
    ok(!match("10.0.0.0/8", "::ffff:11.1.2.3"), "v4-mapped ::ffff:11.1.2.3 not in 10.0.0.0/8");
    ok(!match("10.0.0.0/8", "::a01:203"), "a v4-compatible (not mapped) v6 address is not v4");
    ok(!match("10.0.0.0/8", "2001:db8::a01:203"), "a plain v6 address never matches a v4 CIDR");
    ok(match("::ffff:0:0/96", "10.1.2.3"), "a v4 client matches ::ffff:0:0/96");
    ok(!match("2001:db8::/32", "10.1.2.3"), "a v4 client does not match 2001:db8::/32");

    struct sockaddr_storage unix_ss;
    memset(&unix_ss, 0, sizeof unix_ss);
    unix_ss.ss_family = AF_UNIX;
    conf_parse_cidr("0.0.0.0/0", &c);
    ok(!conf_cidr_match(&c, (const struct sockaddr *)&unix_ss), "a unix peer matches no CIDR");
}

static bool
plan_is(const struct conf_plan *p, const uint32_t *bp, const uint64_t *hold, size_t n)
{
    if (p->nsteps != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (p->steps[i].weight_bp != bp[i] || p->steps[i].hold_ms != hold[i])
            return false;
    }
    return true;
}

static void
test_shorthand(void)
{
    static const char *const bad[] = {
        "linear",          "linear:",        "linear:10%",       "linear:0%/1m",   "linear:10%/0",
        "linear:10%/1",    "linear:0.5%/1m", "canary:100%/1m",   "canary:101%/1m", "step:10%/1m",
        "linear:10%/1m/2", "LINEAR:10%/1m",  "linear:1.234%/1m", "canary:0%/5m",   "",
        "linear:/1m",      "linear:-10%/1m", "linear:10%/-1m",   "canary:5%/",     "lineare:10%/1m",
    };
    struct conf_plan p = {0};
    char err[128];

    ok(conf_parse_plan_shorthand("linear:10%/1m", &p, err, sizeof err) == 0 &&
           plan_is(
               &p, (const uint32_t[]){1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000},
               (const uint64_t[]){60000, 60000, 60000, 60000, 60000, 60000, 60000, 60000, 60000, 0},
               10),
       "linear:10%%/1m is 10, 20 ... 100, each held 1m, the last not held");
    free(p.steps);
    ok(conf_parse_plan_shorthand("linear:30/30s", &p, err, sizeof err) == 0 &&
           plan_is(&p, (const uint32_t[]){3000, 6000, 9000, 10000},
                   (const uint64_t[]){30000, 30000, 30000, 0}, 4),
       "linear:30/30s is 30, 60, 90, 100");
    free(p.steps);
    ok(conf_parse_plan_shorthand("linear:12.5%/2m", &p, err, sizeof err) == 0 && p.nsteps == 8 &&
           p.steps[0].weight_bp == 1250 && p.steps[6].weight_bp == 8750 &&
           p.steps[7].weight_bp == 10000,
       "linear:12.5%%/2m has 8 steps");
    free(p.steps);
    ok(conf_parse_plan_shorthand("linear:1%/1s", &p, err, sizeof err) == 0 && p.nsteps == 100,
       "linear:1%% has the maximum of 100 steps");
    free(p.steps);
    ok(conf_parse_plan_shorthand("linear:100%/1m", &p, err, sizeof err) == 0 &&
           plan_is(&p, (const uint32_t[]){10000}, (const uint64_t[]){0}, 1),
       "linear:100%% is one step");
    free(p.steps);
    ok(conf_parse_plan_shorthand("canary:5%/5m", &p, err, sizeof err) == 0 &&
           plan_is(&p, (const uint32_t[]){500, 10000}, (const uint64_t[]){300000, 0}, 2),
       "canary:5%%/5m is 5%% for 5m, then 100");
    free(p.steps);
    ok(conf_parse_plan_shorthand("canary:0.5%/1h", &p, err, sizeof err) == 0 &&
           plan_is(&p, (const uint32_t[]){50, 10000}, (const uint64_t[]){3600000, 0}, 2),
       "canary:0.5%%/1h");
    free(p.steps);

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct conf_plan q = {0};
        err[0] = '\0';
        ok(conf_parse_plan_shorthand(bad[i], &q, err, sizeof err) == -1 && q.steps == NULL &&
               q.nsteps == 0 && err[0] != '\0',
           "shorthand \"%s\" refused: %s", bad[i], err);
    }
}

static void
test_pool_names(void)
{
    ok(conf_pool_from_name("blue") == POOL_BLUE, "blue");
    ok(conf_pool_from_name("green") == POOL_GREEN, "green");
    ok(conf_pool_from_name("Blue") == -1 && conf_pool_from_name("") == -1 &&
           conf_pool_from_name("red") == -1 && conf_pool_from_name("bluegreen") == -1,
       "other names are -1");
    ok(strcmp(conf_pool_name(POOL_BLUE), "blue") == 0 &&
           strcmp(conf_pool_name(POOL_GREEN), "green") == 0,
       "conf_pool_name");
}

int
main(void)
{
    test_duration();
    test_size();
    test_percent();
    test_small_parsers();
    test_addr();
    test_cidr();
    test_shorthand();
    test_pool_names();
    return done_testing();
}
