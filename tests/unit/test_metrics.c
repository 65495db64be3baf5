/* tests/unit/test_metrics.c — the /metrics exposition: a hand-built snapshot, board and measure
 * with known counts, rendered and parsed back here (syntax, HELP/TYPE, label sets, histogram
 * shape, values), then checked with the prometheus_client parser when Debian's python3 has it. */
#include "control/metrics.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/xalloc.h"
#include "tap.h"

#define NW 2 /* workers */
#define N(a) (sizeof(a) / sizeof(*(a)))

struct spec {
    const char *name;
    const char *ip;
    int port;
};

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

static void
fill_pool(struct conf_pool *cp, const char *name, const struct spec *sp, size_t n)
{
    cp->name = xstrdup(name);
    cp->nservers = n;
    cp->servers = xcalloc(n, sizeof(*cp->servers));
    for (size_t i = 0; i < n; i++) {
        cp->servers[i].name = xstrdup(sp[i].name);
        set_addr(&cp->servers[i].addr, sp[i].ip, sp[i].port);
        cp->servers[i].weight = 1;
    }
}

static struct conf *
mkconf(const struct spec *blue, size_t nb, const struct spec *green, size_t ng)
{
    struct conf *c = xcalloc(1, sizeof(*c));

    fill_pool(&c->pools[POOL_BLUE], "blue", blue, nb);
    fill_pool(&c->pools[POOL_GREEN], "green", green, ng);
    return c;
}

/* ---- a small parser of the text format, strict about what we emit ---- */

#define MAXS 2000
#define MAXF 64

struct smp {
    char name[96];
    char labels[192]; /* "k=v,k=v" unescaped, in order */
    char keys[64];    /* "pool,server" (without class and le) */
    char value[48];
    double v;
    int fam;
};

struct fam {
    char name[96];
    char type[16];
    int nhelp;
    int ntype;
    bool closed; /* samples of another family followed */
};

static struct smp S[MAXS];
static int nS;
static struct fam F[MAXF];
static int nF;
static char perr[256];

static int
fam_find(const char *name)
{
    for (int i = 0; i < nF; i++)
        if (strcmp(F[i].name, name) == 0)
            return i;
    return -1;
}

static int
fam_get(const char *name)
{
    int i = fam_find(name);

    if (i >= 0)
        return i;
    snprintf(F[nF].name, sizeof(F[nF].name), "%s", name);
    return nF++;
}

static bool
name_char(int c, bool first)
{
    return isalpha(c) || c == '_' || c == ':' || (!first && isdigit(c));
}

static int
parse_sample(const char *line, struct smp *s)
{
    const char *p = line;
    size_t n = 0, ln = 0;

    memset(s, 0, sizeof(*s));
    while (name_char((unsigned char)*p, n == 0) && n + 1 < sizeof(s->name))
        s->name[n++] = *p++;
    if (n == 0)
        return snprintf(perr, sizeof(perr), "no metric name: %.200s", line), -1;
    if (*p == '{') {
        p++;
        while (*p != '}') {
            char key[32];
            size_t k = 0;

            while ((isalnum((unsigned char)*p) || *p == '_') && k + 1 < sizeof(key))
                key[k++] = *p++;
            key[k] = '\0';
            if (k == 0 || *p++ != '=' || *p++ != '"')
                return snprintf(perr, sizeof(perr), "bad label: %.200s", line), -1;
            if (ln > 0)
                s->labels[ln++] = ',';
            ln += (size_t)snprintf(s->labels + ln, sizeof(s->labels) - ln, "%s=", key);
            while (*p != '"') {
                char c = *p++;

                if (c == '\0' || c == '\n')
                    return snprintf(perr, sizeof(perr), "unterminated label: %.200s", line), -1;
                if (c == '\\') {
                    c = *p++;
                    if (c == 'n')
                        c = '\n';
                    else if (c != '\\' && c != '"')
                        return snprintf(perr, sizeof(perr), "bad escape: %.200s", line), -1;
                }
                if (ln + 1 < sizeof(s->labels))
                    s->labels[ln++] = c;
            }
            p++;
            if (strcmp(key, "class") != 0 && strcmp(key, "le") != 0) {
                size_t kl = strlen(s->keys);
                snprintf(s->keys + kl, sizeof(s->keys) - kl, "%s%s", kl ? "," : "", key);
            }
            if (*p == ',')
                p++;
            else if (*p != '}')
                return snprintf(perr, sizeof(perr), "expected , or }: %.200s", line), -1;
        }
        p++;
    }
    if (*p++ != ' ')
        return snprintf(perr, sizeof(perr), "no space before the value: %.200s", line), -1;
    snprintf(s->value, sizeof(s->value), "%s", p);
    if (strcmp(p, "+Inf") == 0) {
        s->v = INFINITY;
    } else {
        char *end;
        s->v = strtod(p, &end);
        if (end == p || *end != '\0')
            return snprintf(perr, sizeof(perr), "bad value: %.200s", line), -1;
    }
    return 0;
}

/* Parses text; 0 when every line is a well-formed comment or sample. */
static int
parse(const char *text)
{
    const char *p = text;
    int cur = -1;

    nS = nF = 0;
    memset(F, 0, sizeof(F));
    perr[0] = '\0';
    while (*p != '\0') {
        const char *nl = strchr(p, '\n');
        char line[512];
        size_t len;

        if (nl == NULL)
            return snprintf(perr, sizeof(perr), "last line has no newline"), -1;
        len = (size_t)(nl - p);
        if (len >= sizeof(line))
            return snprintf(perr, sizeof(perr), "line too long"), -1;
        memcpy(line, p, len);
        line[len] = '\0';
        p = nl + 1;
        if (strncmp(line, "# HELP ", 7) == 0 || strncmp(line, "# TYPE ", 7) == 0) {
            char name[96], rest[400];
            int f;

            if (sscanf(line + 7, "%95s %399[^\n]", name, rest) != 2)
                return snprintf(perr, sizeof(perr), "bad comment: %.200s", line), -1;
            f = fam_get(name);
            if (line[2] == 'H') {
                F[f].nhelp++;
            } else {
                F[f].ntype++;
                snprintf(F[f].type, sizeof(F[f].type), "%.15s", rest);
            }
            continue;
        }
        if (line[0] == '#')
            return snprintf(perr, sizeof(perr), "unexpected comment: %.200s", line), -1;
        if (nS == MAXS)
            return snprintf(perr, sizeof(perr), "too many samples"), -1;
        if (parse_sample(line, &S[nS]) == -1)
            return -1;
        {
            int f = fam_find(S[nS].name);
            if (f < 0) {
                char base[96];
                size_t l = strlen(S[nS].name);
                static const char *const suf[] = {"_bucket", "_sum", "_count"};

                for (size_t i = 0; i < N(suf) && f < 0; i++) {
                    size_t sl = strlen(suf[i]);
                    if (l > sl && strcmp(S[nS].name + l - sl, suf[i]) == 0) {
                        snprintf(base, sizeof(base), "%.*s", (int)(l - sl), S[nS].name);
                        f = fam_find(base);
                        if (f >= 0 && strcmp(F[f].type, "histogram") != 0)
                            f = -1;
                    }
                }
            }
            if (f < 0 || F[f].ntype == 0)
                return snprintf(perr, sizeof(perr), "sample before its TYPE: %.200s", line), -1;
            if (F[f].closed)
                return snprintf(perr, sizeof(perr), "family not contiguous: %.200s", line), -1;
            if (cur >= 0 && cur != f)
                F[cur].closed = true;
            cur = f;
            S[nS].fam = f;
        }
        nS++;
    }
    return 0;
}

static const struct smp *
get(const char *name, const char *labels)
{
    for (int i = 0; i < nS; i++)
        if (strcmp(S[i].name, name) == 0 && strcmp(S[i].labels, labels) == 0)
            return &S[i];
    return NULL;
}

static double
val(const char *name, const char *labels)
{
    const struct smp *s = get(name, labels);

    return s != NULL ? s->v : -12345.0;
}

/* ---- the fixture ---- */

struct expect_fam {
    const char *name;
    const char *type;
    const char *keysets; /* "|"-separated label key sets, "" for none */
};

static const struct expect_fam FAMS[] = {
    {"switchyard_requests_total", "counter", "pool|pool,server"},
    {"switchyard_responses_total", "counter", "pool|pool,server"},
    {"switchyard_upstream_failures_total", "counter", "pool|pool,server"},
    {"switchyard_connect_errors_total", "counter", "pool|pool,server"},
    {"switchyard_timeouts_total", "counter", "pool|pool,server"},
    {"switchyard_retries_total", "counter", "pool|pool,server"},
    {"switchyard_failovers_total", "counter", "pool"},
    {"switchyard_ejections_total", "counter", "pool,server"},
    {"switchyard_bytes_in_total", "counter", "pool"},
    {"switchyard_bytes_out_total", "counter", "pool"},
    {"switchyard_inflight", "gauge", "pool|pool,server"},
    {"switchyard_upstream_connections", "gauge", "pool|pool,server"},
    {"switchyard_tunnels", "gauge", "pool|pool,server"},
    {"switchyard_client_connections", "gauge", ""},
    {"switchyard_request_duration_seconds", "histogram", "pool|pool,server"},
    {"switchyard_server_up", "gauge", "pool,server"},
    {"switchyard_server_health", "gauge", "pool,server"},
    {"switchyard_server_admin_state", "gauge", "pool,server"},
    {"switchyard_standby_share_ratio", "gauge", ""},
    {"switchyard_live_pool", "gauge", "pool"},
    {"switchyard_generation", "gauge", ""},
    {"switchyard_rollout_phase", "gauge", ""},
};

/* Durations recorded on blue (us): 10 and 700 end below 1 ms; 1000 sits in the internal bucket
 * 992..1023, so it counts from le=0.0025 on (the documented approximation); 2000 (..2047) too;
 * 30 ms, 3 s, and 20 s (only +Inf). */
static const uint64_t BLUE_LAT[] = {10, 700, 1000, 2000, 30000, 3000000, 20000000};

static bool
keyset_ok(const char *sets, const char *keys)
{
    char buf[128];
    char *save = NULL;

    snprintf(buf, sizeof(buf), "%s", sets);
    if (sets[0] == '\0')
        return keys[0] == '\0';
    for (char *t = strtok_r(buf, "|", &save); t != NULL; t = strtok_r(NULL, "|", &save))
        if (strcmp(t, keys) == 0)
            return true;
    return false;
}

static void
test_escape(void)
{
    struct http_buf b = {0};

    metrics_escape_label(&b, "plain-name_1.2");
    http_buf_add(&b, "", 1);
    ok(strcmp(b.p, "plain-name_1.2") == 0, "escape: plain text unchanged");
    b.len = 0;
    metrics_escape_label(&b, "a\\b\"c\nd");
    http_buf_add(&b, "", 1);
    ok(strcmp(b.p, "a\\\\b\\\"c\\nd") == 0, "escape: backslash, quote, newline (%s)", b.p);
    b.len = 0;
    metrics_escape_label(&b, "\\\"\n");
    http_buf_add(&b, "", 1);
    ok(strcmp(b.p, "\\\\\\\"\\n") == 0, "escape: only specials");
    b.len = 0;
    metrics_escape_label(&b, "");
    ok(b.len == 0, "escape: empty string adds nothing");
    metrics_escape_label(&b, "tab\there\r");
    http_buf_add(&b, "", 1);
    ok(strcmp(b.p, "tab\there\r") == 0, "escape: other bytes copied as they are");
    http_buf_finish(&b);
}

static int
have_prom_parser(void)
{
    return access("/usr/bin/python3", X_OK) == 0 &&
           system("/usr/bin/python3 -c 'import prometheus_client.parser' >/dev/null 2>&1") == 0;
}

static const char PY[] =
    "import math, sys\n"
    "from prometheus_client.parser import text_string_to_metric_families\n"
    "fams = list(text_string_to_metric_families(open(sys.argv[1]).read()))\n"
    "def fail(m):\n"
    "    sys.stderr.write('prometheus_client: ' + m + '\\n'); sys.exit(1)\n"
    "if len(fams) != int(sys.argv[2]): fail('%d families' % len(fams))\n"
    "by = {}\n"
    "for f in fams:\n"
    "    for s in f.samples:\n"
    "        by[(s.name, tuple(sorted(s.labels.items())))] = s.value\n"
    "    if f.type == 'histogram':\n"
    "        series = {}\n"
    "        for s in f.samples:\n"
    "            if s.name.endswith('_bucket'):\n"
    "                k = tuple(sorted((a, b) for a, b in s.labels.items() if a != 'le'))\n"
    "                series.setdefault(k, []).append((float(s.labels['le']), s.value))\n"
    "        for k, bs in series.items():\n"
    "            if [b[1] for b in bs] != sorted(b[1] for b in bs): fail('not monotonic')\n"
    "            if bs[-1][0] != math.inf: fail('no +Inf')\n"
    "            if by[(f.name + '_count', k)] != bs[-1][1]: fail('+Inf != _count')\n"
    "req = by[('switchyard_requests_total', (('pool', 'blue'),))]\n"
    "if req != float(sys.argv[3]): fail('requests %r' % req)\n"
    "adm = by[('switchyard_server_admin_state', (('pool', 'blue'), ('server', 'b2')))]\n"
    "if adm != 1: fail('admin %r' % adm)\n";

static void
python_check(const char *text, size_t len, uint64_t blue_requests)
{
    char path[] = "/tmp/test_metrics.XXXXXX", script[] = "/tmp/test_metrics_py.XXXXXX";
    char cmd[256];
    int fd, fd2, rc;

    if (!have_prom_parser()) {
        tap_count++;
        printf("ok %d # skip /usr/bin/python3 with prometheus_client not available\n", tap_count);
        return;
    }
    fd = mkstemp(path);
    fd2 = mkstemp(script);
    if (fd == -1 || fd2 == -1) {
        ok(0, "temp files for the python check");
        return;
    }
    rc = (write(fd, text, len) == (ssize_t)len &&
          write(fd2, PY, sizeof(PY) - 1) == (ssize_t)(sizeof(PY) - 1))
             ? 0
             : -1;
    close(fd);
    close(fd2);
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s %s %zu %llu 1>&2", script, path, N(FAMS),
             (unsigned long long)blue_requests);
    if (rc == 0)
        rc = system(cmd);
    ok(rc == 0, "prometheus_client's parser accepts the exposition (families, histograms, "
                "values)");
    unlink(path);
    unlink(script);
}

static void
test_render(void)
{
    static const struct spec blue[] = {{"b1", "10.0.1.1", 8000}, {"b2", "10.0.1.2", 8000}};
    static const struct spec blue3[] = {
        {"b1", "10.0.1.1", 8000}, {"b2", "10.0.1.2", 8000}, {"b3", "10.0.1.3", 8000}};
    static const struct spec green[] = {{"g1", "10.0.2.1", 8000}};
    struct stats_board *board = stats_board_create(NW);
    struct measure *m = measure_create(board);
    struct snapshot *snap =
        snapshot_create(mkconf(blue, N(blue), green, N(green)), NULL, NW, HEALTH_UNKNOWN);
    struct snapshot *snap2;
    struct server *b1 = snapshot_find_server(snap, POOL_BLUE, "b1");
    struct server *b2 = snapshot_find_server(snap, POOL_BLUE, "b2");
    struct server *g1 = snapshot_find_server(snap, POOL_GREEN, "g1");
    struct stats_block *bp = board->pool[POOL_BLUE];
    struct route_word w = {.live = POOL_BLUE, .standby_bp = 2500, .generation = 42};
    struct metrics_input in = {
        .snap = snap, .routing = &w, .measure = m, .board = board, .rollout_phase = 3};
    struct http_buf out = {0};
    double sum_s = 0;
    bool good;

    /* blue pool: 17 requests over two workers */
    stats_add(&bp[0].requests, 10);
    stats_add(&bp[1].requests, 7);
    stats_add(&bp[0].responses[2], 8);
    stats_add(&bp[1].responses[2], 4);
    stats_add(&bp[1].responses[5], 3);
    stats_add(&bp[0].responses[0], 2);
    stats_add(&bp[0].upstream_failures, 1);
    stats_add(&bp[1].connect_errors, 2);
    stats_add(&bp[0].timeouts, 3);
    stats_add(&bp[1].retries, 4);
    stats_add(&bp[0].failovers, 5);
    stats_add(&bp[0].bytes_in, 1000);
    stats_add(&bp[1].bytes_out, 2000);
    stats_gauge(&bp[0].inflight, 3);
    stats_gauge(&bp[1].conns, 4);
    stats_gauge(&bp[1].tunnels, 1);
    for (size_t i = 0; i < N(BLUE_LAT); i++) {
        hist_record(&bp[i % NW].latency, BLUE_LAT[i]);
        sum_s += (double)hist_bucket_mid(hist_bucket(BLUE_LAT[i])) / 1e6;
    }
    stats_add(&board->pool[POOL_GREEN][1].requests, 9);
    /* servers */
    stats_add(&b1->stats[0].requests, 6);
    stats_add(&b2->stats[1].requests, 11);
    stats_add(&b2->stats[0].ejections, 2);
    stats_add(&b2->stats[1].responses[4], 5);
    stats_gauge(&b2->stats[0].inflight, 2);
    hist_record(&b1->stats[0].latency, 10);
    hist_record(&b1->stats[1].latency, 12);
    atomic_store(&b1->health, HEALTH_UP);
    atomic_store(&b2->health, HEALTH_DOWN);
    server_set_admin(b2, ADMIN_DRAIN);
    server_set_admin(g1, ADMIN_MAINT);
    /* client connections: live from the listener blocks */
    stats_gauge(&board->listener[0].conns, 5);
    stats_gauge(&board->listener[1].conns, 2);
    measure_sample(m, 1000, snap);

    metrics_render(&out, &in);
    http_buf_add(&out, "", 1);
    out.len--;
    if (!ok(parse(out.p) == 0, "every line is a comment or `name{labels} value` (%s)", perr))
        diag("%s", out.p);

    good = true;
    for (int f = 0; f < nF; f++) {
        if (F[f].nhelp != 1 || F[f].ntype != 1) {
            diag("%s: %d HELP, %d TYPE", F[f].name, F[f].nhelp, F[f].ntype);
            good = false;
        }
    }
    ok(good, "every family has one HELP and one TYPE line");
    good = nF == (int)N(FAMS);
    for (size_t i = 0; i < N(FAMS); i++) {
        int f = fam_find(FAMS[i].name);
        if (f < 0 || strcmp(F[f].type, FAMS[i].type) != 0) {
            diag("family %s missing or of type %s", FAMS[i].name, f < 0 ? "-" : F[f].type);
            good = false;
        }
    }
    ok(good, "exactly API.md's %zu families with their types (%d found)", N(FAMS), nF);
    good = true;
    for (int f = 0; f < nF; f++) {
        size_t l = strlen(F[f].name);
        bool total = l > 6 && strcmp(F[f].name + l - 6, "_total") == 0;
        if (strncmp(F[f].name, "switchyard_", 11) != 0 ||
            (strcmp(F[f].type, "counter") == 0) != total)
            good = false;
    }
    ok(good, "names prefixed switchyard_; counters, and only counters, end with _total");
    good = true;
    for (int i = 0; i < nS; i++) {
        const struct expect_fam *e = NULL;
        for (size_t j = 0; j < N(FAMS); j++)
            if (strcmp(FAMS[j].name, F[S[i].fam].name) == 0)
                e = &FAMS[j];
        if (e == NULL || !keyset_ok(e->keysets, S[i].keys)) {
            diag("unexpected labels %s on %s", S[i].keys, S[i].name);
            good = false;
        }
    }
    ok(good, "label sets per family as in API.md");

    /* histogram shape: per series, buckets ascending and monotonic, ending with +Inf = _count */
    good = true;
    {
        int nseries = 0;
        for (int i = 0; i < nS; i++) {
            char prefix[192], want[192];
            double prev_le = -1, prev = -1;
            int j;

            if (strcmp(S[i].name, "switchyard_request_duration_seconds_bucket") != 0 ||
                strstr(S[i].labels, "le=0.001") == NULL)
                continue;
            nseries++;
            snprintf(prefix, sizeof(prefix), "%.*s",
                     (int)(strstr(S[i].labels, "le=") - S[i].labels), S[i].labels);
            for (j = i; j < nS && strcmp(S[j].name, S[i].name) == 0 &&
                        strncmp(S[j].labels, prefix, strlen(prefix)) == 0;
                 j++) {
                double le = strcmp(S[j].labels + strlen(prefix) + 3, "+Inf") == 0
                                ? INFINITY
                                : strtod(S[j].labels + strlen(prefix) + 3, NULL);
                if (le <= prev_le || S[j].v < prev)
                    good = false;
                prev_le = le;
                prev = S[j].v;
            }
            snprintf(want, sizeof(want), "%.*s", prefix[0] ? (int)strlen(prefix) - 1 : 0, prefix);
            if (prev_le != INFINITY ||
                prev != val("switchyard_request_duration_seconds_count", want) ||
                get("switchyard_request_duration_seconds_sum", want) == NULL) {
                diag("series {%s}: last le %g, +Inf %g", want, prev_le, prev);
                good = false;
            }
        }
        ok(good && nseries == 5,
           "histogram: %d series (2 pools, 3 servers), le ascending, counts monotonic, +Inf == "
           "_count, _sum present",
           nseries);
    }

    /* values */
    ok(val("switchyard_requests_total", "pool=blue") == 17 &&
           val("switchyard_requests_total", "pool=green") == 9 &&
           val("switchyard_requests_total", "pool=blue,server=b1") == 6 &&
           val("switchyard_requests_total", "pool=blue,server=b2") == 11 &&
           val("switchyard_requests_total", "pool=green,server=g1") == 0,
       "requests per pool and server");
    ok(val("switchyard_responses_total", "pool=blue,class=2xx") == 12 &&
           val("switchyard_responses_total", "pool=blue,class=5xx") == 3 &&
           val("switchyard_responses_total", "pool=blue,class=none") == 2 &&
           val("switchyard_responses_total", "pool=blue,class=1xx") == 0 &&
           val("switchyard_responses_total", "pool=blue,server=b2,class=4xx") == 5,
       "responses by class, zero classes present");
    ok(val("switchyard_upstream_failures_total", "pool=blue") == 1 &&
           val("switchyard_connect_errors_total", "pool=blue") == 2 &&
           val("switchyard_timeouts_total", "pool=blue") == 3 &&
           val("switchyard_retries_total", "pool=blue") == 4 &&
           val("switchyard_failovers_total", "pool=blue") == 5 &&
           val("switchyard_ejections_total", "pool=blue,server=b2") == 2 &&
           val("switchyard_bytes_in_total", "pool=blue") == 1000 &&
           val("switchyard_bytes_out_total", "pool=blue") == 2000,
       "failure, failover, ejection and byte counters");
    ok(val("switchyard_inflight", "pool=blue") == 3 &&
           val("switchyard_upstream_connections", "pool=blue") == 4 &&
           val("switchyard_tunnels", "pool=blue") == 1 &&
           val("switchyard_inflight", "pool=blue,server=b2") == 2 &&
           val("switchyard_client_connections", "") == 7,
       "gauges: in flight, upstream connections, tunnels, client connections");
    ok(val("switchyard_request_duration_seconds_bucket", "pool=blue,le=0.001") == 2 &&
           val("switchyard_request_duration_seconds_bucket", "pool=blue,le=0.0025") == 4 &&
           val("switchyard_request_duration_seconds_bucket", "pool=blue,le=0.025") == 4 &&
           val("switchyard_request_duration_seconds_bucket", "pool=blue,le=0.05") == 5 &&
           val("switchyard_request_duration_seconds_bucket", "pool=blue,le=2.5") == 5 &&
           val("switchyard_request_duration_seconds_bucket", "pool=blue,le=5") == 6 &&
           val("switchyard_request_duration_seconds_bucket", "pool=blue,le=10") == 6 &&
           val("switchyard_request_duration_seconds_bucket", "pool=blue,le=+Inf") == 7 &&
           val("switchyard_request_duration_seconds_count", "pool=blue") == 7,
       "histogram counts at each bound (1000 us lands in the bucket 992..1023: counted at "
       "0.0025)");
    ok(fabs(val("switchyard_request_duration_seconds_sum", "pool=blue") - sum_s) < 2e-6,
       "histogram _sum from bucket midpoints (%.6f)", sum_s);
    ok(val("switchyard_request_duration_seconds_count", "pool=blue,server=b1") == 2 &&
           val("switchyard_request_duration_seconds_bucket", "pool=blue,server=b1,le=0.001") == 2 &&
           fabs(val("switchyard_request_duration_seconds_sum", "pool=blue,server=b1") - 22e-6) <
               1e-9,
       "per-server histogram (10 us + 12 us = 0.000022 s)");
    ok(val("switchyard_server_up", "pool=blue,server=b1") == 1 &&
           val("switchyard_server_up", "pool=blue,server=b2") == 0 &&
           val("switchyard_server_up", "pool=green,server=g1") == 0,
       "server_up: 1 up, 0 down or unknown");
    ok(val("switchyard_server_health", "pool=blue,server=b1") == 1 &&
           val("switchyard_server_health", "pool=blue,server=b2") == 2 &&
           val("switchyard_server_health", "pool=green,server=g1") == 0,
       "server_health: 0 unknown, 1 up, 2 down");
    ok(val("switchyard_server_admin_state", "pool=blue,server=b1") == 0 &&
           val("switchyard_server_admin_state", "pool=blue,server=b2") == 1 &&
           val("switchyard_server_admin_state", "pool=green,server=g1") == 2,
       "admin state: 0 ready, 1 drain, 2 maint");
    ok(val("switchyard_standby_share_ratio", "") == 0.25 &&
           val("switchyard_live_pool", "pool=blue") == 1 &&
           val("switchyard_live_pool", "pool=green") == 0 &&
           val("switchyard_generation", "") == 42 && val("switchyard_rollout_phase", "") == 3,
       "routing gauges: share 0.25, live blue, generation 42, rollout phase 3");
    ok(out.p[out.len - 1] == '\n' && strstr(out.p, "\n\n") == NULL && strchr(out.p, '\r') == NULL,
       "LF line ends, no blank lines");

    if (getenv("TEST_METRICS_DUMP") != NULL) { /* for a person: the rendered sample */
        FILE *f = fopen(getenv("TEST_METRICS_DUMP"), "w");
        if (f != NULL) {
            fwrite(out.p, 1, out.len, f);
            fclose(f);
        }
    }
    python_check(out.p, out.len, 17);

    /* a server the measure has not sampled yet (added by a reload) reports zeros */
    snap2 = snapshot_create(mkconf(blue3, N(blue3), green, N(green)), snap, NW, HEALTH_UNKNOWN);
    in.snap = snap2;
    out.len = 0;
    metrics_render(&out, &in);
    http_buf_add(&out, "", 1);
    ok(parse(out.p) == 0 && val("switchyard_requests_total", "pool=blue,server=b3") == 0 &&
           val("switchyard_request_duration_seconds_count", "pool=blue,server=b3") == 0 &&
           val("switchyard_requests_total", "pool=blue,server=b2") == 11,
       "a server not sampled yet: zeros; the others keep their totals");

    /* no snapshot, no board: pool series only, still every family */
    in.snap = NULL;
    in.board = NULL;
    out.len = 0;
    metrics_render(&out, &in);
    http_buf_add(&out, "", 1);
    ok(parse(out.p) == 0 && nF == (int)N(FAMS) &&
           get("switchyard_requests_total", "pool=blue,server=b1") == NULL &&
           val("switchyard_client_connections", "") == 0,
       "without snapshot and board: every family, pool series only");

    http_buf_finish(&out);
    snapshot_release(&snap2);
    measure_destroy(&m);
    snapshot_release(&snap);
    stats_board_destroy(&board);
}

/* An empty history (before the first sample): every family, zero values, valid histograms. */
static void
test_empty(void)
{
    struct stats_board *board = stats_board_create(1);
    struct measure *m = measure_create(board);
    struct route_word w = {.live = POOL_GREEN, .standby_bp = 1, .generation = 1};
    struct metrics_input in = {.routing = &w, .measure = m, .board = board};
    struct http_buf out = {0};

    metrics_render(&out, &in);
    http_buf_add(&out, "", 1);
    ok(parse(out.p) == 0 && nF == (int)N(FAMS), "empty history: every family (%s)", perr);
    ok(val("switchyard_request_duration_seconds_bucket", "pool=green,le=+Inf") == 0 &&
           val("switchyard_request_duration_seconds_sum", "pool=green") == 0 &&
           val("switchyard_standby_share_ratio", "") == 0.0001 &&
           val("switchyard_live_pool", "pool=green") == 1,
       "empty history: zeros; share 1 bp = 0.0001; live green");
    http_buf_finish(&out);
    measure_destroy(&m);
    stats_board_destroy(&board);
}

int
main(void)
{
    test_escape();
    test_render();
    test_empty();
    return done_testing();
}
