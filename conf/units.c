/* conf/units.c — parsers for the value syntaxes of the configuration and the control API:
 * durations, sizes, percentages, ratios, addresses, CIDRs, plan shorthands, pool names.
 * Everything is parsed digit by digit: no locale, no strtod, no global state. */
#include "conf/conf.h"
#include "conf/units.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "conf/xalloc.h"

static bool
is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

static char
lower(char ch)
{
    return ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
}

/* Reads the digits at *s into *out (at least one, no overflow) and advances *s past them. */
static int
digits(const char **s, uint64_t *out)
{
    const char *p = *s;
    uint64_t v = 0;

    if (!is_digit(*p))
        return -1;
    for (; is_digit(*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *s = p;
    *out = v;
    return 0;
}

int
conf_parse_uint(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v;

    if (digits(&s, &v) == -1 || *s != '\0' || v > max)
        return -1;
    *out = v;
    return 0;
}

static bool
equals_nocase(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        if (lower(*a) != lower(*b))
            return false;
    }
    return *a == *b;
}

int
conf_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};

    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (equals_nocase(s, yes[i])) {
            *out = true;
            return 0;
        }
        if (equals_nocase(s, no[i])) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

int
conf_parse_duration(const char *s, uint64_t *ms)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    uint64_t v;

    if (digits(&s, &v) == -1)
        return -1;
    if (*s == '\0') {
        if (v != 0) /* a bare number is ambiguous: "needs a unit" */
            return -1;
        *ms = 0;
        return 0;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(s, units[i].unit) == 0) {
            if (v > UINT64_MAX / units[i].ms)
                return -1;
            *ms = v * units[i].ms;
            return 0;
        }
    }
    return -1;
}

int
conf_parse_size(const char *s, uint64_t *bytes)
{
    uint64_t v;
    unsigned shift = 0;

    if (digits(&s, &v) == -1)
        return -1;
    if (*s != '\0') {
        switch (lower(*s)) {
        case 'k':
            shift = 10;
            break;
        case 'm':
            shift = 20;
            break;
        case 'g':
            shift = 30;
            break;
        default:
            return -1;
        }
        if (s[1] != '\0')
            return -1;
    }
    if (v > (UINT64_MAX >> shift))
        return -1;
    *bytes = v << shift;
    return 0;
}

int
conf_parse_percent(const char *s, uint32_t *bp)
{
    uint64_t whole;
    uint64_t frac = 0;

    if (digits(&s, &whole) == -1 || whole > 100)
        return -1;
    if (*s == '.') {
        s++;
        if (!is_digit(s[0]))
            return -1;
        frac = (uint64_t)(s[0] - '0') * 10;
        s++;
        if (is_digit(s[0])) {
            frac += (uint64_t)(s[0] - '0');
            s++;
        }
    }
    if (*s == '%')
        s++;
    if (*s != '\0')
        return -1;
    whole = whole * 100 + frac;
    if (whole > 10000)
        return -1;
    *bp = (uint32_t)whole;
    return 0;
}

int
conf_parse_ratio(const char *s, double *out)
{
    const char *start = s;
    uint64_t whole;
    uint64_t frac = 0;
    uint64_t scale = 1;

    if (digits(&s, &whole) == -1 || s - start > 9)
        return -1;
    if (*s == '.') {
        start = ++s;
        if (digits(&s, &frac) == -1 || s - start > 9)
            return -1;
        for (const char *p = start; p < s; p++)
            scale *= 10;
    }
    if (*s != '\0')
        return -1;
    *out = (double)whole + (double)frac / (double)scale;
    return 0;
}

int
conf_parse_expect(const char *s, int *min, int *max)
{
    uint64_t lo;
    uint64_t hi;

    if (digits(&s, &lo) == -1)
        return -1;
    hi = lo;
    if (*s == '-') {
        s++;
        if (digits(&s, &hi) == -1)
            return -1;
    }
    if (*s != '\0' || lo < 100 || hi > 599 || lo > hi)
        return -1;
    *min = (int)lo;
    *max = (int)hi;
    return 0;
}

/* "0".."65535", decimal, no sign. */
static int
parse_port(const char *s, in_port_t *port)
{
    uint64_t v;

    if (strlen(s) > 5 || conf_parse_uint(s, 65535, &v) == -1)
        return -1;
    *port = htons((in_port_t)v);
    return 0;
}

int
conf_parse_addr(const char *s, struct conf_addr *out)
{
    char host[INET6_ADDRSTRLEN];
    char shown[INET6_ADDRSTRLEN];
    const char *colon;
    size_t hostlen;
    struct conf_addr a;
    in_port_t port;

    memset(&a, 0, sizeof a);
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (end == NULL || end[1] != ':')
            return -1;
        hostlen = (size_t)(end - s - 1);
        if (hostlen == 0 || hostlen >= sizeof host)
            return -1;
        memcpy(host, s + 1, hostlen);
        host[hostlen] = '\0';
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a.ss;
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1 || parse_port(end + 2, &port) == -1)
            return -1;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = port;
        a.len = sizeof *sin6;
        inet_ntop(AF_INET6, &sin6->sin6_addr, shown, sizeof shown);
        snprintf(a.text, sizeof a.text, "[%s]:%u", shown, (unsigned)ntohs(port));
        *out = a;
        return 0;
    }

    colon = strrchr(s, ':');
    if (colon == NULL)
        return -1;
    hostlen = (size_t)(colon - s);
    if (hostlen == 0 || hostlen >= sizeof host)
        return -1;
    memcpy(host, s, hostlen);
    host[hostlen] = '\0';
    if (parse_port(colon + 1, &port) == -1)
        return -1;
    struct sockaddr_in *sin = (struct sockaddr_in *)&a.ss;
    if (strcmp(host, "*") == 0)
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (strcmp(host, "localhost") == 0)
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
        return -1; /* also rejects an IPv6 address without brackets */
    sin->sin_family = AF_INET;
    sin->sin_port = port;
    a.len = sizeof *sin;
    inet_ntop(AF_INET, &sin->sin_addr, shown, sizeof shown);
    snprintf(a.text, sizeof a.text, "%s:%u", shown, (unsigned)ntohs(port));
    *out = a;
    return 0;
}

int
conf_parse_cidr(const char *s, struct conf_cidr *out)
{
    char host[INET6_ADDRSTRLEN];
    const char *slash = strchr(s, '/');
    size_t hostlen = slash ? (size_t)(slash - s) : strlen(s);
    struct conf_cidr c;
    unsigned bits;

    memset(&c, 0, sizeof c);
    if (hostlen == 0 || hostlen >= sizeof host)
        return -1;
    memcpy(host, s, hostlen);
    host[hostlen] = '\0';
    if (inet_pton(AF_INET, host, c.addr) == 1) {
        c.family = AF_INET;
        bits = 32;
    } else if (inet_pton(AF_INET6, host, c.addr) == 1) {
        c.family = AF_INET6;
        bits = 128;
    } else {
        return -1;
    }
    c.prefix = bits;
    if (slash != NULL) {
        uint64_t v;
        if (strlen(slash + 1) > 3 || conf_parse_uint(slash + 1, bits, &v) == -1)
            return -1;
        c.prefix = (unsigned)v;
    }
    /* clear the host bits */
    for (unsigned i = 0; i < bits / 8; i++) {
        if (i * 8 >= c.prefix)
            c.addr[i] = 0;
        else if (i * 8 + 8 > c.prefix)
            c.addr[i] &= (uint8_t)(0xff << (8 - (c.prefix - i * 8)));
    }
    *out = c;
    return 0;
}

bool
conf_cidr_match(const struct conf_cidr *cidr, const struct sockaddr *addr)
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    uint8_t buf[16];
    const uint8_t *bytes;
    unsigned full;
    unsigned rest;

    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)addr;
        if (cidr->family == AF_INET) {
            bytes = (const uint8_t *)&sin->sin_addr;
        } else { /* compare as ::ffff:a.b.c.d */
            memcpy(buf, v4mapped, sizeof v4mapped);
            memcpy(buf + 12, &sin->sin_addr, 4);
            bytes = buf;
        }
    } else if (addr->sa_family == AF_INET6) {
        const uint8_t *a6 = ((const struct sockaddr_in6 *)addr)->sin6_addr.s6_addr;
        if (cidr->family == AF_INET6)
            bytes = a6;
        else if (memcmp(a6, v4mapped, sizeof v4mapped) == 0)
            bytes = a6 + 12;
        else
            return false;
    } else {
        return false;
    }

    full = cidr->prefix / 8;
    rest = cidr->prefix % 8;
    if (memcmp(bytes, cidr->addr, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (bytes[full] & mask) == cidr->addr[full];
}

int
conf_parse_plan_shorthand(const char *s, struct conf_plan *plan, char *err, size_t errlen)
{
    char pct[16];
    const char *colon = strchr(s, ':');
    const char *slash;
    bool linear;
    uint32_t bp;
    uint64_t hold_ms;
    size_t n;

    if (colon != NULL && (size_t)(colon - s) == 6 && strncmp(s, "linear", 6) == 0) {
        linear = true;
    } else if (colon != NULL && (size_t)(colon - s) == 6 && strncmp(s, "canary", 6) == 0) {
        linear = false;
    } else {
        snprintf(err, errlen,
                 "expected \"linear:PERCENT/DURATION\" or \"canary:PERCENT/DURATION\"");
        return -1;
    }
    slash = strchr(colon + 1, '/');
    if (slash == NULL || (size_t)(slash - colon - 1) >= sizeof pct) {
        snprintf(err, errlen, "expected \"%s:PERCENT/DURATION\"", linear ? "linear" : "canary");
        return -1;
    }
    memcpy(pct, colon + 1, (size_t)(slash - colon - 1));
    pct[slash - colon - 1] = '\0';
    if (conf_parse_percent(pct, &bp) == -1 || bp == 0 || (!linear && bp == 10000)) {
        snprintf(err, errlen, "bad step \"%s\": expected a percentage above 0 and %s 100", pct,
                 linear ? "at most" : "below");
        return -1;
    }
    if (conf_parse_duration(slash + 1, &hold_ms) == -1 || hold_ms == 0) {
        snprintf(err, errlen, "bad hold \"%.32s\": expected a duration above 0 such as 30s or 5m",
                 slash + 1);
        return -1;
    }
    n = linear ? (10000 + bp - 1) / bp : 2;
    if (n > CONF_PLAN_MAX_STEPS) {
        snprintf(err, errlen, "%s%% makes %zu steps; a plan has at most %d", pct, n,
                 CONF_PLAN_MAX_STEPS);
        return -1;
    }
    plan->steps = xcalloc(n, sizeof *plan->steps);
    plan->nsteps = n;
    for (size_t i = 0; i < n; i++) {
        uint32_t w = linear ? (uint32_t)(bp * (i + 1)) : bp;
        bool last = i + 1 == n;
        plan->steps[i].weight_bp = last || w > 10000 ? 10000 : w;
        plan->steps[i].hold_ms = last ? 0 : hold_ms;
    }
    return 0;
}

int
conf_pool_from_name(const char *name)
{
    if (strcmp(name, "blue") == 0)
        return POOL_BLUE;
    if (strcmp(name, "green") == 0)
        return POOL_GREEN;
    return -1;
}

const char *
conf_pool_name(enum pool_id id)
{
    switch (id) {
    case POOL_BLUE:
        return "blue";
    case POOL_GREEN:
        return "green";
    }
    return "?";
}

unsigned
conf_addr_port(const struct conf_addr *a)
{
    if (a->ss.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
    if (a->ss.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
    return 0;
}
