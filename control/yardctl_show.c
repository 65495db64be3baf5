/* control/yardctl_show.c — yardctl's human output: status tables with aligned columns, event
 * lines, and the shared number formats. Plain text, no colour, stable column order. */
#include "control/yardctl_show.h"

#include <limits.h>
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

static void
show_routing(FILE *f, const json_t *data)
{
    char split[256];

    yardctl_show_split(split, sizeof split, json_object_get(data, "routing"));
    fprintf(f, "routing: %s, generation %lld, rollout %s\n", split,
            yardctl_field_int(data, "generation", -1),
            yardctl_field_str(json_object_get(data, "rollout"), "state", "-"));
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
