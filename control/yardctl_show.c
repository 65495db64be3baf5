/* control/yardctl_show.c — yardctl's human output: status tables with aligned columns, event
 * lines, and the shared number formats. Plain text, no colour, stable column order. */
#include "control/yardctl_show.h"

#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "conf/xalloc.h"
#include "control/yardctl_api.h"

#define TABLE_COLS 10
#define CELL_BYTES 128

/* Rows of cells printed with each column as wide as its widest cell. */
struct table {
    size_t ncols;
    size_t nrows;
    size_t cap;
    char *(*rows)[TABLE_COLS]; /* owned: nrows rows of ncols owned strings */
};

static void
table_add(struct table *t, char cells[][CELL_BYTES])
{
    if (t->nrows == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 8;
        t->rows = xrealloc(t->rows, t->cap * sizeof *t->rows);
    }
    for (size_t c = 0; c < t->ncols; c++)
        t->rows[t->nrows][c] = xstrdup(cells[c]);
    t->nrows++;
}

/* A row of fixed texts: ncols of names. */
static void
table_head(struct table *t, const char *const *names)
{
    char c[TABLE_COLS][CELL_BYTES];

    for (size_t i = 0; i < t->ncols; i++)
        snprintf(c[i], CELL_BYTES, "%s", names[i]);
    table_add(t, c);
}

/* Prints and empties t: two spaces between columns, the last one not padded. */
static void
table_flush(FILE *f, struct table *t)
{
    size_t width[TABLE_COLS] = {0};

    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < t->ncols; c++)
            if (strlen(t->rows[r][c]) > width[c])
                width[c] = strlen(t->rows[r][c]);
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            if (c + 1 < t->ncols)
                fprintf(f, "%-*s  ", (int)width[c], t->rows[r][c]);
            else
                fprintf(f, "%s\n", t->rows[r][c]);
            xfree(&t->rows[r][c]);
        }
    }
    xfree(&t->rows);
    t->nrows = 0;
    t->cap = 0;
}

/* Rounds to the nearest integer, halves away from zero (no libm); clamps what a long long cannot
 * hold (NaN gives 0). */
static long long
round_ll(double x)
{
    if (!(x == x))
        return 0;
    if (x >= 9.2e18)
        return LLONG_MAX;
    if (x <= -9.2e18)
        return LLONG_MIN;
    return (long long)(x >= 0 ? x + 0.5 : x - 0.5);
}

const char *
yardctl_field_str(const json_t *o, const char *key, const char *def)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : def;
}

long long
yardctl_field_int(const json_t *o, const char *key, long long def)
{
    const json_t *v = json_object_get(o, key);
    if (json_is_integer(v))
        return (long long)json_integer_value(v);
    if (json_is_real(v))
        return round_ll(json_real_value(v));
    return def;
}

double
yardctl_field_num(const json_t *o, const char *key, double def)
{
    const json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : def;
}

void
yardctl_show_percent(char *buf, size_t n, double pct)
{
    long long bp = round_ll(pct * 100.0);
    long long whole = bp / 100;
    long long frac = llabs(bp % 100);
    const char *sign = bp < 0 && whole == 0 ? "-" : "";

    if (frac == 0)
        snprintf(buf, n, "%lld%%", whole);
    else if (frac % 10 == 0)
        snprintf(buf, n, "%s%lld.%lld%%", sign, whole, frac / 10);
    else
        snprintf(buf, n, "%s%lld.%02lld%%", sign, whole, frac);
}

void
yardctl_show_micros(char *buf, size_t n, double us)
{
    if (us < 1e6)
        snprintf(buf, n, "%.1f ms", us / 1000.0);
    else
        snprintf(buf, n, "%.2f s", us / 1e6);
}

void
yardctl_show_json(FILE *f, const json_t *j, bool one_line)
{
    size_t flags = one_line ? YARDCTL_JSON_FLAGS
                            : (JSON_INDENT(2) | JSON_REAL_PRECISION(15) | JSON_ENCODE_ANY);
    json_dumpf(j, f, flags);
    fputc('\n', f);
}

/* An integer member as text, "-" when absent. */
static void
cell_int(char *cell, const json_t *o, const char *key)
{
    long long v = yardctl_field_int(o, key, -1);
    if (json_object_get(o, key) == NULL || v < 0)
        snprintf(cell, CELL_BYTES, "-");
    else
        snprintf(cell, CELL_BYTES, "%lld", v);
}

/* s as a cell: cut to CELL_BYTES, control characters as spaces (a server's text cannot move the
 * terminal's cursor). */
static void
cell_text(char *cell, const char *s)
{
    size_t i = 0;

    for (; s[i] != '\0' && i + 1 < CELL_BYTES; i++)
        cell[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? ' ' : s[i];
    cell[i] = '\0';
}

static void
cell_str(char *cell, const json_t *o, const char *key)
{
    cell_text(cell, yardctl_field_str(o, key, "-"));
}

/* The standby share of a routing object: the exact basis points when given. */
static double
standby_percent(const json_t *routing)
{
    if (json_is_integer(json_object_get(routing, "standby_bp")))
        return (double)yardctl_field_int(routing, "standby_bp", 0) / 100.0;
    return yardctl_field_num(routing, "standby_percent", 0.0);
}

void
yardctl_show_split(char *buf, size_t n, const json_t *routing)
{
    const char *standby = yardctl_field_str(routing, "standby", NULL);
    double sp = standby_percent(routing);
    char live_pct[32];
    char sb_pct[32];

    yardctl_show_percent(live_pct, sizeof live_pct, 100.0 - sp);
    yardctl_show_percent(sb_pct, sizeof sb_pct, sp);
    if (standby != NULL)
        snprintf(buf, n, "live %s %s, standby %s %s", yardctl_field_str(routing, "live", "?"),
                 live_pct, standby, sb_pct);
    else
        snprintf(buf, n, "live %s %s, no standby", yardctl_field_str(routing, "live", "?"),
                 live_pct);
}

/* Appends printf text to buf (size n, holding a string); cut short when full. */
static void append(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
append(char *buf, size_t n, const char *fmt, ...)
{
    size_t len = strlen(buf);
    va_list ap;

    if (len + 1 >= n)
        return;
    va_start(ap, fmt);
    vsnprintf(buf + len, n - len, fmt, ap);
    va_end(ap);
}

/* Appends s with control characters as spaces: a server's text stays on one line. */
static void
append_text(char *buf, size_t n, const char *s)
{
    size_t len = strlen(buf);

    for (; s != NULL && *s != '\0' && len + 1 < n; s++)
        buf[len++] = (unsigned char)*s < 0x20 || *s == 0x7f ? ' ' : *s;
    if (len < n)
        buf[len] = '\0';
}

/* The gates in the order the engine evaluates them. */
static const char *const GATE_ORDER[] = {"healthy_ratio", "error_rate", "error_ratio", "p99",
                                         "p99_ratio"};
#define NGATES (sizeof GATE_ORDER / sizeof GATE_ORDER[0])

/* A gate of ro's "gates" that had a verdict (enabled and evaluated), or NULL. */
static const json_t *
evaluated_gate(const json_t *ro, const char *name)
{
    const json_t *g = json_object_get(json_object_get(ro, "gates"), name);

    if (!json_is_object(g) || json_is_false(json_object_get(g, "enabled")) ||
        !json_is_true(json_object_get(g, "evaluated")))
        return NULL;
    return g;
}

enum yardctl_verdict
yardctl_rollout_verdict(const json_t *ro)
{
    bool any = false;

    for (size_t i = 0; i < NGATES; i++) {
        const json_t *g = evaluated_gate(ro, GATE_ORDER[i]);
        if (g == NULL)
            continue;
        if (!json_is_true(json_object_get(g, "pass")))
            return YARDCTL_VERDICT_FAIL;
        any = true;
    }
    if (json_is_true(json_object_get(ro, "insufficient")))
        return YARDCTL_VERDICT_HOLDING;
    return any ? YARDCTL_VERDICT_PASS : YARDCTL_VERDICT_NONE;
}

/* "800ms", "12.3ms": a latency in milliseconds. */
static void
show_ms(char *buf, size_t n, double ms)
{
    if (ms >= 100.0 || (ms >= 0 && (double)(long long)ms == ms))
        snprintf(buf, n, "%.0fms", ms);
    else
        snprintf(buf, n, "%.1fms", ms);
}

/* "error_rate 0.0000 <= 0.0100": one gate's observed value against its threshold. */
static void
append_gate(char *buf, size_t n, const char *name, const json_t *g)
{
    double obs = yardctl_field_num(g, "observed", 0.0);
    double thr = yardctl_field_num(g, "threshold", 0.0);
    bool pass = json_is_true(json_object_get(g, "pass"));
    bool at_least = strcmp(name, "healthy_ratio") == 0;
    const char *op = at_least ? (pass ? ">=" : "<") : (pass ? "<=" : ">");
    char a[32], b[32];

    if (strncmp(name, "p99", 3) == 0) {
        show_ms(a, sizeof a, obs);
        show_ms(b, sizeof b, thr);
    } else if (at_least) {
        snprintf(a, sizeof a, "%.2f", obs);
        snprintf(b, sizeof b, "%.2f", thr);
    } else {
        snprintf(a, sizeof a, "%.4f", obs);
        snprintf(b, sizeof b, "%.4f", thr);
    }
    append(buf, n, "%s%s %s %s %s", buf[0] ? ", " : "", name, a, op, b);
}

/* "12 requests in the window, need 50" from the engine's reason for a hold ("not enough
 * traffic: 12 requests in the window, the gates need 50; ..."), else the reason itself. */
static void
holding_text(char *buf, size_t n, const json_t *ro)
{
    static const char phrase[] = " requests in the window, the gates need ";
    const char *reason = yardctl_field_str(ro, "reason", "");
    const char *p = strstr(reason, phrase);

    if (p != NULL) {
        const char *d = p;
        char *end;
        unsigned long long need;

        while (d > reason && d[-1] >= '0' && d[-1] <= '9')
            d--;
        need = strtoull(p + sizeof phrase - 1, &end, 10);
        if (d < p && end != p + sizeof phrase - 1) {
            snprintf(buf, n, "%.*s requests in the window, need %llu", (int)(p - d), d, need);
            return;
        }
    }
    /* Another wording: the reason says it while the rollout progresses (a pause replaces it). */
    buf[0] = '\0';
    append_text(buf, n,
                reason[0] && strcmp(yardctl_field_str(ro, "state", ""), "progressing") == 0
                    ? reason
                    : "too few requests in the window for a verdict");
}

void
yardctl_show_gates(char *buf, size_t n, const json_t *ro)
{
    enum yardctl_verdict v = yardctl_rollout_verdict(ro);

    buf[0] = '\0';
    if (v == YARDCTL_VERDICT_HOLDING) {
        holding_text(buf, n, ro);
        return;
    }
    for (size_t i = 0; i < NGATES && v != YARDCTL_VERDICT_NONE; i++) {
        const json_t *g = evaluated_gate(ro, GATE_ORDER[i]);
        if (g != NULL && (v == YARDCTL_VERDICT_PASS || !json_is_true(json_object_get(g, "pass"))))
            append_gate(buf, n, GATE_ORDER[i], g);
    }
}

void
yardctl_show_rollout_step(char *buf, size_t n, const json_t *ro)
{
    char pct[32];

    yardctl_show_percent(pct, sizeof pct, yardctl_field_num(ro, "weight_percent", 0.0));
    snprintf(buf, n, "step %lld/%lld (%s to ", yardctl_field_int(ro, "step", 0),
             yardctl_field_int(ro, "steps", 0), pct);
    append_text(buf, n, yardctl_field_str(ro, "to", "?"));
    append(buf, n, ")");
}

void
yardctl_show_seconds(char *buf, size_t n, double s)
{
    long long t = round_ll(s);

    if (t < 60)
        snprintf(buf, n, "%llds", t < 0 ? 0 : t);
    else if (t % 60 == 0 && t < 3600)
        snprintf(buf, n, "%lldm", t / 60);
    else if (t < 3600)
        snprintf(buf, n, "%lldm%llds", t / 60, t % 60);
    else if ((t % 3600) / 60 == 0)
        snprintf(buf, n, "%lldh", t / 3600);
    else
        snprintf(buf, n, "%lldh%lldm", t / 3600, (t % 3600) / 60);
}

/* " (id ID)" when ro has a non-empty id. */
static void
append_id(char *buf, size_t n, const json_t *ro)
{
    const char *id = yardctl_field_str(ro, "id", "");

    if (id[0] != '\0') {
        append(buf, n, " (id ");
        append_text(buf, n, id);
        append(buf, n, ")");
    }
}

/* ", gates pass (error_rate ...)": the verdict and what it rests on. */
static void
append_verdict(char *buf, size_t n, const json_t *ro)
{
    static const char *const names[] = {"not evaluated yet", "pass", "fail", "holding"};
    enum yardctl_verdict v = yardctl_rollout_verdict(ro);
    char why[512];

    yardctl_show_gates(why, sizeof why, ro);
    append(buf, n, "gates %s", names[v]);
    if (why[0] != '\0')
        append(buf, n, " (%s)", why);
}

bool
yardctl_show_rollout(char *buf, size_t n, const json_t *ro)
{
    const char *state = yardctl_field_str(ro, "state", "stable");
    const char *outcome = yardctl_field_str(ro, "outcome", NULL);
    const char *reason = yardctl_field_str(ro, "reason", "");
    char pct[32], t1[32], t2[32];

    buf[0] = '\0';
    if (strcmp(state, "progressing") == 0) {
        double hold = yardctl_field_num(ro, "hold_s", 0.0);

        yardctl_show_percent(pct, sizeof pct, yardctl_field_num(ro, "weight_percent", 0.0));
        append(buf, n, "progressing to ");
        append_text(buf, n, yardctl_field_str(ro, "to", "?"));
        append_id(buf, n, ro);
        append(buf, n, ", step %lld/%lld at %s", yardctl_field_int(ro, "step", 0),
               yardctl_field_int(ro, "steps", 0), pct);
        yardctl_show_seconds(t1, sizeof t1, yardctl_field_num(ro, "step_elapsed_s", 0.0));
        yardctl_show_seconds(t2, sizeof t2, hold);
        if (hold > 0 && yardctl_field_num(ro, "step_elapsed_s", 0.0) < hold)
            append(buf, n, ", held %s of %s", t1, t2);
        else if (hold > 0)
            append(buf, n, ", held %s (%s needed)", t1, t2);
        append(buf, n, ", ");
        append_verdict(buf, n, ro);
        return true;
    }
    if (strcmp(state, "paused") == 0) {
        yardctl_show_rollout_step(t1, sizeof t1, ro);
        append(buf, n, "paused");
        append_id(buf, n, ro);
        append(buf, n, " at ");
        append_text(buf, n, t1);
        if (reason[0] != '\0') {
            append(buf, n, ": ");
            append_text(buf, n, reason);
        }
        append(buf, n, "; ");
        append_verdict(buf, n, ro);
        return true;
    }
    if (outcome == NULL)
        return false;
    append(buf, n, "%s; last rollout ", state);
    append_text(buf, n, yardctl_field_str(ro, "from", "?"));
    append(buf, n, " to ");
    append_text(buf, n, yardctl_field_str(ro, "to", "?"));
    append_id(buf, n, ro);
    append(buf, n, ": ");
    if (strcmp(outcome, "promoted") == 0)
        append(buf, n, "%s", strncmp(reason, "promoted", 8) == 0 ? "" : "promoted: ");
    else if (strcmp(outcome, "rolled_back") == 0)
        append(buf, n, "%s", strncmp(reason, "rolled back", 11) == 0 ? "" : "rolled back: ");
    else
        append(buf, n, "%s: ", outcome);
    append_text(buf, n, reason[0] ? reason : "-");
    return true;
}

static void
show_routing(FILE *f, const json_t *data)
{
    const json_t *ro = json_object_get(data, "rollout");
    char split[256];
    char line[1024];

    yardctl_show_split(split, sizeof split, json_object_get(data, "routing"));
    fprintf(f, "routing: %s, generation %lld, rollout %s\n", split,
            yardctl_field_int(data, "generation", -1), yardctl_field_str(ro, "state", "-"));
    if (yardctl_show_rollout(line, sizeof line, ro))
        fprintf(f, "rollout: %s\n", line);
}

static void
pool_row(struct table *t, const char *name, const json_t *pool)
{
    const json_t *w = json_object_get(pool, "window");
    long long requests = yardctl_field_int(w, "requests", 0);
    char c[TABLE_COLS][CELL_BYTES];

    cell_text(c[0], name);
    cell_str(c[1], pool, "role");
    yardctl_show_percent(c[2], CELL_BYTES, yardctl_field_num(pool, "share_percent", 0.0));
    snprintf(c[3], CELL_BYTES, "%lld/%lld", yardctl_field_int(pool, "healthy", 0),
             yardctl_field_int(pool, "servers_total", 0));
    cell_int(c[4], pool, "inflight");
    cell_int(c[5], pool, "tunnels");
    if (w == NULL) {
        snprintf(c[6], CELL_BYTES, "-");
        snprintf(c[7], CELL_BYTES, "-");
        snprintf(c[8], CELL_BYTES, "-");
    } else {
        snprintf(c[6], CELL_BYTES, "%.1f", yardctl_field_num(w, "rate", 0.0));
        if (requests > 0) {
            double errors = (double)yardctl_field_int(w, "errors", 0);
            double p99 = yardctl_field_num(w, "p99_ms", 0.0);
            yardctl_show_percent(c[7], CELL_BYTES, errors * 100.0 / (double)requests);
            snprintf(c[8], CELL_BYTES, p99 < 100.0 ? "%.1fms" : "%.0fms", p99);
        } else {
            snprintf(c[7], CELL_BYTES, "-");
            snprintf(c[8], CELL_BYTES, "-");
        }
    }
    table_add(t, c);
}

static void
server_row(struct table *t, const char *pool, const json_t *srv)
{
    char c[TABLE_COLS][CELL_BYTES];

    cell_text(c[0], pool);
    cell_str(c[1], srv, "name");
    cell_str(c[2], srv, "address");
    cell_int(c[3], srv, "weight");
    cell_str(c[4], srv, "health");
    if (json_is_true(json_object_get(srv, "ejected")))
        snprintf(c[4] + strlen(c[4]), CELL_BYTES - strlen(c[4]), ",ejected");
    cell_str(c[5], srv, "admin");
    cell_int(c[6], srv, "inflight");
    cell_int(c[7], srv, "conns");
    cell_str(c[8], srv, "last_check");
    table_add(t, c);
}

void
yardctl_show_status(FILE *f, json_t *data)
{
    json_t *pools = json_object_get(data, "pools");
    long long window_s = -1;
    struct table t = {.ncols = 9};
    char rate_head[32] = "REQ/S";
    const char *name;
    json_t *pool;

    show_routing(f, data);
    json_object_foreach(pools, name, pool)
    {
        if (window_s < 0)
            window_s = yardctl_field_int(json_object_get(pool, "window"), "seconds", -1);
    }
    if (window_s > 0)
        snprintf(rate_head, sizeof rate_head, "REQ/S(%llds)", window_s);
    table_head(&t, (const char *const[]){"POOL", "ROLE", "SHARE", "HEALTHY", "INFLIGHT", "TUNNELS",
                                         rate_head, "ERRORS", "P99"});
    json_object_foreach(pools, name, pool)
    {
        pool_row(&t, name, pool);
    }
    fputc('\n', f);
    table_flush(f, &t);

    table_head(&t, (const char *const[]){"POOL", "SERVER", "ADDRESS", "WEIGHT", "HEALTH", "ADMIN",
                                         "INFLIGHT", "CONNS", "LAST CHECK"});
    json_object_foreach(pools, name, pool)
    {
        size_t i;
        json_t *srv;
        json_array_foreach(json_object_get(pool, "servers"), i, srv)
        {
            server_row(&t, name, srv);
        }
    }
    fputc('\n', f);
    table_flush(f, &t);
}

/* A string as is when it reads as one word, else JSON-quoted; anything else as compact JSON. */
static void
show_value(FILE *f, const json_t *v)
{
    const char *s = json_string_value(v);
    char *text;

    if (s != NULL && s[0] != '\0' && strpbrk(s, " \t\"\\=") == NULL) {
        bool plain = true;
        for (const char *p = s; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                plain = false;
        if (plain) {
            fputs(s, f);
            return;
        }
    }
    text = json_dumps(v, YARDCTL_JSON_FLAGS);
    fputs(text ? text : "?", f);
    free(text);
}

void
yardctl_show_event(FILE *f, json_t *ev)
{
    const char *key;
    json_t *v;

    fprintf(f, "%s %lld %s", yardctl_field_str(ev, "time", "-"), yardctl_field_int(ev, "seq", -1),
            yardctl_field_str(ev, "type", "-"));
    json_object_foreach(ev, key, v)
    {
        if (strcmp(key, "time") == 0 || strcmp(key, "seq") == 0 || strcmp(key, "type") == 0)
            continue;
        fprintf(f, " %s=", key);
        show_value(f, v);
    }
    fputc('\n', f);
}
