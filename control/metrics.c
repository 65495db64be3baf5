/* control/metrics.c — renders the Prometheus text format (0.0.4) of API.md's metric table from
 * the measurement history, the routing word and the servers' atomics. */
#include "control/metrics.h"

#include <assert.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/xalloc.h"

/* The exposed histogram bounds, in us and as written in the le label. */
static const struct {
    uint64_t us;
    const char *text;
} LE[] = {
    {1000, "0.001"},  {2500, "0.0025"}, {5000, "0.005"},  {10000, "0.01"}, {25000, "0.025"},
    {50000, "0.05"},  {100000, "0.1"},  {250000, "0.25"}, {500000, "0.5"}, {1000000, "1"},
    {2500000, "2.5"}, {5000000, "5"},   {10000000, "10"},
};
#define NLE (sizeof(LE) / sizeof(*LE))

static const char *const CLASS[STATS_CLASSES] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};

/* The numbers of one series (a pool or a server), condensed from a struct stats_totals so that
 * every family can be written series after series without keeping the large histograms. */
struct vals {
    uint64_t requests;
    uint64_t responses[STATS_CLASSES];
    uint64_t upstream_failures;
    uint64_t connect_errors;
    uint64_t timeouts;
    uint64_t retries;
    uint64_t failovers;
    uint64_t ejections;
    uint64_t bytes_in;
    uint64_t bytes_out;
    int64_t inflight;
    int64_t conns;
    int64_t tunnels;
    uint64_t le[NLE]; /* cumulative counts at each bound */
    uint64_t count;   /* every recorded duration (+Inf) */
    double sum_s;     /* estimated from bucket midpoints */
};

/* One series: its labels and its numbers. */
struct series {
    enum pool_id pool;
    const struct server *srv; /* borrowed (lives while in->snap does); NULL for a pool series */
    struct vals v;
};

enum scope {
    SCOPE_POOL = 1u << 0,
    SCOPE_SERVER = 1u << 1,
};

/* The plain counter and gauge families: one value per series, read at an offset of struct vals. */
struct family {
    const char *name;
    const char *type;
    const char *help;
    unsigned scope;
    size_t off;
    int is_signed;
};

#define U(f) offsetof(struct vals, f), 0
#define S(f) offsetof(struct vals, f), 1

static const struct family FAILURES[] = {
    {"switchyard_upstream_failures_total", "counter",
     "Exchanges that failed after the response had started (cut mid-body).",
     SCOPE_POOL | SCOPE_SERVER, U(upstream_failures)},
    {"switchyard_connect_errors_total", "counter", "Upstream connect errors.",
     SCOPE_POOL | SCOPE_SERVER, U(connect_errors)},
    {"switchyard_timeouts_total", "counter", "Upstream connect or response timeouts.",
     SCOPE_POOL | SCOPE_SERVER, U(timeouts)},
    {"switchyard_retries_total", "counter",
     "Connect retries on another server and retries of stale keep-alive connections.",
     SCOPE_POOL | SCOPE_SERVER, U(retries)},
    {"switchyard_failovers_total", "counter",
     "Requests sent to the other pool because this one had no usable server.", SCOPE_POOL,
     U(failovers)},
    {"switchyard_ejections_total", "counter", "Passive ejections of a server.", SCOPE_SERVER,
     U(ejections)},
    {"switchyard_bytes_in_total", "counter", "Request bytes received from clients (head and body).",
     SCOPE_POOL, U(bytes_in)},
    {"switchyard_bytes_out_total", "counter", "Response bytes sent to clients (head and body).",
     SCOPE_POOL, U(bytes_out)},
};

static const struct family GAUGES[] = {
    {"switchyard_inflight", "gauge", "Requests in flight.", SCOPE_POOL | SCOPE_SERVER, S(inflight)},
    {"switchyard_upstream_connections", "gauge", "Open upstream connections.",
     SCOPE_POOL | SCOPE_SERVER, S(conns)},
    {"switchyard_tunnels", "gauge", "Open tunnels (upgraded connections).",
     SCOPE_POOL | SCOPE_SERVER, S(tunnels)},
};

#define NFAM(a) (sizeof(a) / sizeof(*(a)))

static void
add_u64(struct http_buf *out, uint64_t v)
{
    char b[24];
    int n = snprintf(b, sizeof(b), "%" PRIu64, v);

    http_buf_add(out, b, (size_t)n);
}

static void
add_i64(struct http_buf *out, int64_t v)
{
    char b[24];
    int n = snprintf(b, sizeof(b), "%" PRId64, v);

    http_buf_add(out, b, (size_t)n);
}

void
metrics_escape_label(struct http_buf *out, const char *s)
{
    const char *run = s;

    for (; *s != '\0'; s++) {
        const char *rep = NULL;

        if (*s == '\\')
            rep = "\\\\";
        else if (*s == '"')
            rep = "\\\"";
        else if (*s == '\n')
            rep = "\\n";
        if (rep == NULL)
            continue;
        http_buf_add(out, run, (size_t)(s - run));
        http_buf_add(out, rep, 2);
        run = s + 1;
    }
    http_buf_add(out, run, (size_t)(s - run));
}

static void
head(struct http_buf *out, const char *name, const char *type, const char *help)
{
    http_buf_adds(out, "# HELP ");
    http_buf_adds(out, name);
    http_buf_adds(out, " ");
    http_buf_adds(out, help); /* static text without backslash or newline: nothing to escape */
    http_buf_adds(out, "\n# TYPE ");
    http_buf_adds(out, name);
    http_buf_adds(out, " ");
    http_buf_adds(out, type);
    http_buf_adds(out, "\n");
}

/* Writes "name{pool="..",server="..",<extra_key>="<extra_val>"} " (suffix appended to name; the
 * braces are left out when there is no label at all). */
static void
sample(struct http_buf *out, const char *name, const char *suffix, const struct series *s,
       const char *extra_key, const char *extra_val)
{
    bool any = false;

    http_buf_adds(out, name);
    if (suffix != NULL)
        http_buf_adds(out, suffix);
    if (s != NULL) {
        http_buf_adds(out, "{pool=\"");
        metrics_escape_label(out, conf_pool_name(s->pool));
        http_buf_adds(out, "\"");
        if (s->srv != NULL) {
            http_buf_adds(out, ",server=\"");
            metrics_escape_label(out, s->srv->name);
            http_buf_adds(out, "\"");
        }
        any = true;
    }
    if (extra_key != NULL) {
        http_buf_adds(out, any ? "," : "{");
        http_buf_adds(out, extra_key);
        http_buf_adds(out, "=\"");
        metrics_escape_label(out, extra_val);
        http_buf_adds(out, "\"");
        any = true;
    }
    if (any)
        http_buf_adds(out, "}");
    http_buf_adds(out, " ");
}

static bool
in_scope(const struct series *s, unsigned scope)
{
    return (s->srv == NULL) ? (scope & SCOPE_POOL) != 0 : (scope & SCOPE_SERVER) != 0;
}

/* Condenses t into v: counters and gauges, and the histogram folded onto the exposed bounds. */
static void
condense(struct vals *v, const struct stats_totals *t)
{
    size_t k = 0;
    uint64_t cum = 0;
    unsigned last[NLE];

    memset(v, 0, sizeof(*v));
    v->requests = t->requests;
    memcpy(v->responses, t->responses, sizeof(v->responses));
    v->upstream_failures = t->upstream_failures;
    v->connect_errors = t->connect_errors;
    v->timeouts = t->timeouts;
    v->retries = t->retries;
    v->failovers = t->failovers;
    v->ejections = t->ejections;
    v->bytes_in = t->bytes_in;
    v->bytes_out = t->bytes_out;
    v->inflight = t->inflight;
    v->conns = t->conns;
    v->tunnels = t->tunnels;

    /* last[k]: the highest internal bucket that ends at or below bound k (the bucket holding the
     * bound itself counts only when the bound is its high end). Every bound is at least 1000 us,
     * far above bucket 0, so last[k] is well defined. */
    for (size_t j = 0; j < NLE; j++) {
        unsigned b = hist_bucket(LE[j].us);
        last[j] = hist_bucket_high(b) <= LE[j].us ? b : b - 1;
    }
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        while (k < NLE && i > last[k])
            v->le[k++] = cum;
        cum += t->latency.n[i];
        v->sum_s += (double)t->latency.n[i] * (double)hist_bucket_mid(i) / 1e6;
    }
    while (k < NLE)
        v->le[k++] = cum;
    /* count is the sum of the buckets, so +Inf always agrees with them */
    v->count = cum;
}

static void
family_simple(struct http_buf *out, const struct family *f, const struct series *ser, size_t n)
{
    head(out, f->name, f->type, f->help);
    for (size_t i = 0; i < n; i++) {
        const char *p = (const char *)&ser[i].v + f->off;

        if (!in_scope(&ser[i], f->scope))
            continue;
        sample(out, f->name, NULL, &ser[i], NULL, NULL);
        if (f->is_signed)
            add_i64(out, *(const int64_t *)(const void *)p);
        else
            add_u64(out, *(const uint64_t *)(const void *)p);
        http_buf_adds(out, "\n");
    }
}

static void
family_histogram(struct http_buf *out, const struct series *ser, size_t n)
{
    static const char name[] = "switchyard_request_duration_seconds";
    char b[64];
    int len;

    head(out, name, "histogram",
         "Request duration from request start to response complete, in seconds. Bucket "
         "boundaries are approximate (within ~6%): each le counts the internal log-linear "
         "buckets that end at or below it; _sum is estimated from bucket midpoints.");
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < NLE; k++) {
            sample(out, name, "_bucket", &ser[i], "le", LE[k].text);
            add_u64(out, ser[i].v.le[k]);
            http_buf_adds(out, "\n");
        }
        sample(out, name, "_bucket", &ser[i], "le", "+Inf");
        add_u64(out, ser[i].v.count);
        http_buf_adds(out, "\n");
        sample(out, name, "_sum", &ser[i], NULL, NULL);
        len = snprintf(b, sizeof(b), "%.6f\n", ser[i].v.sum_s);
        http_buf_add(out, b, (size_t)len);
        sample(out, name, "_count", &ser[i], NULL, NULL);
        add_u64(out, ser[i].v.count);
        http_buf_adds(out, "\n");
    }
}

/* A gauge of every server computed by fn. */
static void
family_server(struct http_buf *out, const char *name, const char *help, const struct series *ser,
              size_t n, int (*fn)(const struct server *))
{
    head(out, name, "gauge", help);
    for (size_t i = 0; i < n; i++) {
        if (ser[i].srv == NULL)
            continue;
        sample(out, name, NULL, &ser[i], NULL, NULL);
        add_i64(out, fn(ser[i].srv));
        http_buf_adds(out, "\n");
    }
}

/* Relaxed loads: a gauge a moment stale is what a scrape shows anyway. */
static int
srv_health(const struct server *srv)
{
    return atomic_load_explicit(&srv->health, memory_order_relaxed);
}

static int
srv_up(const struct server *srv)
{
    return srv_health(srv) == HEALTH_UP;
}

static int
srv_admin(const struct server *srv)
{
    return atomic_load_explicit(&srv->admin, memory_order_relaxed);
}

/* A gauge without labels. */
static void
family_scalar(struct http_buf *out, const char *name, const char *help, const char *value)
{
    head(out, name, "gauge", help);
    http_buf_adds(out, name);
    http_buf_adds(out, " ");
    http_buf_adds(out, value);
    http_buf_adds(out, "\n");
}

void
metrics_render(struct http_buf *out, const struct metrics_input *in)
{
    struct stats_totals *t = xmalloc(sizeof(*t)); /* ~4 KiB: kept off the stack */
    struct series *ser;
    size_t n = POOL_COUNT, i = 0;
    char b[64];

    assert(in->routing != NULL && in->measure != NULL);
    if (in->snap != NULL)
        for (int p = 0; p < POOL_COUNT; p++)
            n += in->snap->pools[p].nservers;
    ser = xcalloc(n, sizeof(*ser));
    for (int p = 0; p < POOL_COUNT; p++) {
        ser[i].pool = (enum pool_id)p;
        measure_pool_totals(in->measure, (enum pool_id)p, t);
        condense(&ser[i++].v, t);
    }
    if (in->snap != NULL) {
        for (int p = 0; p < POOL_COUNT; p++) {
            const struct pool *pool = &in->snap->pools[p];

            for (size_t j = 0; j < pool->nservers; j++) {
                ser[i].pool = (enum pool_id)p;
                ser[i].srv = pool->servers[j];
                /* -1 (not sampled yet) leaves t zeroed: the series starts at 0 */
                measure_server_totals(in->measure, (enum pool_id)p, pool->servers[j]->name, t);
                condense(&ser[i++].v, t);
            }
        }
    }
    assert(i == n);

    head(out, "switchyard_requests_total", "counter", "Requests sent to a pool or server.");
    for (i = 0; i < n; i++) {
        sample(out, "switchyard_requests_total", NULL, &ser[i], NULL, NULL);
        add_u64(out, ser[i].v.requests);
        http_buf_adds(out, "\n");
    }
    head(out, "switchyard_responses_total", "counter",
         "Responses sent to clients by status class (the proxy's own 502/503/504 included; "
         "class none: no response).");
    for (i = 0; i < n; i++) {
        for (int c = 0; c < STATS_CLASSES; c++) {
            sample(out, "switchyard_responses_total", NULL, &ser[i], "class", CLASS[c]);
            add_u64(out, ser[i].v.responses[c]);
            http_buf_adds(out, "\n");
        }
    }
    for (size_t f = 0; f < NFAM(FAILURES); f++)
        family_simple(out, &FAILURES[f], ser, n);
    for (size_t f = 0; f < NFAM(GAUGES); f++)
        family_simple(out, &GAUGES[f], ser, n);

    if (in->board != NULL)
        stats_board_listener(in->board, t);
    else
        memset(t, 0, sizeof(*t));
    snprintf(b, sizeof(b), "%" PRId64, t->conns);
    family_scalar(out, "switchyard_client_connections", "Open client connections.", b);

    family_histogram(out, ser, n);
    family_server(out, "switchyard_server_up",
                  "1 when the server's health is up, 0 when down or unknown.", ser, n, srv_up);
    family_server(out, "switchyard_server_health", "Server health: 0 unknown, 1 up, 2 down.", ser,
                  n, srv_health);
    family_server(out, "switchyard_server_admin_state",
                  "Server admin state: 0 ready, 1 drain, 2 maint.", ser, n, srv_admin);

    snprintf(b, sizeof(b), "%.4g", (double)in->routing->standby_bp / 10000.0);
    family_scalar(out, "switchyard_standby_share_ratio",
                  "The standby pool's share of the traffic (0..1).", b);
    head(out, "switchyard_live_pool", "gauge", "1 for the live pool, 0 for the standby pool.");
    for (int p = 0; p < POOL_COUNT; p++) {
        struct series s = {.pool = (enum pool_id)p};

        sample(out, "switchyard_live_pool", NULL, &s, NULL, NULL);
        http_buf_adds(out, in->routing->live == (enum pool_id)p ? "1\n" : "0\n");
    }
    snprintf(b, sizeof(b), "%" PRIu64, in->routing->generation);
    family_scalar(out, "switchyard_generation",
                  "The routing generation (+1 with every routing change).", b);
    snprintf(b, sizeof(b), "%d", in->rollout_phase);
    family_scalar(out, "switchyard_rollout_phase", "The rollout phase: 0 stable.", b);

    free(ser);
    free(t);
}
