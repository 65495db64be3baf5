/* conf/pools.c — pools:, their servers, and the settings a pool inherits: the top-level health:
 * and upstream: are read into a template pool, which each pool copies before reading its own
 * keys over it (key by key, so a pool can change one health key and keep the rest). */
#include "conf/validate.h"

#include <stdlib.h>
#include <string.h>

#include "conf/defaults.h"
#include "conf/units.h"
#include "conf/xalloc.h"

static const char *const HEALTH_KEYS[] = {"path",   "interval", "timeout",       "rise",    "fall",
                                          "expect", "host",     "body_contains", "passive", NULL};
static const char *const PASSIVE_KEYS[] = {"consecutive_failures", "ejection_time",
                                           "max_ejection_percent", "eject_on_5xx", NULL};
static const char *const UPSTREAM_KEYS[] = {"max_idle", "idle_timeout", "retries", NULL};
static const char *const POOL_KEYS[] = {"servers",      "health",  "tls", "max_idle",
                                        "idle_timeout", "retries", NULL};
static const char *const POOL_NAMES[] = {"blue", "green", NULL};

#define SERVER_NAME_MAX 64

static void
read_passive(struct walk *w, const struct node *n, struct conf_passive *p)
{
    struct fields f;

    if (walk_map(w, n, PASSIVE_KEYS, "key", &f) == -1)
        return;
    walk_u32(w, &f, "consecutive_failures", 0, UINT32_MAX, &p->consecutive_failures);
    walk_duration(w, &f, "ejection_time", 1, &p->ejection_time_ms);
    walk_u32(w, &f, "max_ejection_percent", 0, 100, &p->max_ejection_percent);
    walk_bool(w, &f, "eject_on_5xx", &p->eject_on_5xx);
}

static void
read_expect(struct walk *w, const struct fields *f, struct conf_health *h)
{
    const struct node *n = walk_get(f, "expect");
    const char *s;

    if (n == NULL)
        return;
    size_t mark = walk_push(w, "expect");
    if ((s = walk_scalar(w, n)) != NULL && conf_parse_expect(s, &h->expect_min, &h->expect_max))
        walk_error(w, n,
                   "expected a status or a range within 100-599 such as 200 or 200-399, "
                   "found \"%s\"",
                   s);
    walk_pop(w, mark);
}

/* Reads the keys present in the health: mapping n over h. */
static void
read_health(struct walk *w, const struct node *n, struct conf_health *h)
{
    struct fields f;
    const struct node *passive;

    if (walk_map(w, n, HEALTH_KEYS, "key", &f) == -1)
        return;
    if (walk_str(w, &f, "path", 0, &h->path) == 0 && walk_get(&f, "path") != NULL &&
        (h->path[0] != '/' || h->path[strcspn(h->path, " \t\r\n")] != '\0')) {
        size_t mark = walk_push(w, "path");
        walk_error(w, walk_get(&f, "path"), "must start with '/' and hold no spaces");
        walk_pop(w, mark);
    }
    walk_duration(w, &f, "interval", 1, &h->interval_ms);
    walk_duration(w, &f, "timeout", 1, &h->timeout_ms);
    walk_u32(w, &f, "rise", 1, UINT32_MAX, &h->rise);
    walk_u32(w, &f, "fall", 1, UINT32_MAX, &h->fall);
    read_expect(w, &f, h);
    walk_str(w, &f, "host", STR_NULLABLE, &h->host);
    walk_str(w, &f, "body_contains", STR_NULLABLE, &h->body_contains);
    if ((passive = walk_get(&f, "passive")) != NULL) {
        size_t mark = walk_push(w, "passive");
        read_passive(w, passive, &h->passive);
        walk_pop(w, mark);
    }
}

/* max_idle, idle_timeout and retries: the same keys at the top level and in a pool. */
static void
read_upstream(struct walk *w, const struct fields *f, struct conf_pool *p)
{
    walk_u32(w, f, "max_idle", 0, UINT32_MAX, &p->max_idle);
    walk_duration(w, f, "idle_timeout", 1, &p->idle_timeout_ms);
    walk_u32(w, f, "retries", 0, 100, &p->retries);
}

/* A DNS host name as SNI carries it (RFC 6066 §3: no IP address literal, no trailing dot). */
static bool
valid_host_name(const char *s)
{
    size_t len = strlen(s), label = 0;
    bool all_digits_or_dots = true;

    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i <= len; i++) {
        char ch = s[i];
        if (ch == '.' || ch == '\0') {
            if (label == 0 || s[i - 1] == '-')
                return false; /* empty label, or one ending with '-' */
            label = 0;
            continue;
        }
        bool alnum =
            (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (!alnum && !(ch == '-' && label > 0))
            return false; /* not a letter, digit or inner '-' */
        if (!(ch >= '0' && ch <= '9'))
            all_digits_or_dots = false;
        if (++label > 63)
            return false;
    }
    return !all_digits_or_dots; /* 10.0.0.1 is an address, not a name */
}

static void
read_tls(struct walk *w, const struct node *n, struct conf_upstream_tls *t)
{
    static const char *const keys[] = {"verify", "ca", "sni", NULL};
    struct fields f;

    t->enabled = true;
    if (walk_map(w, n, keys, "key", &f) == -1)
        return;
    walk_bool(w, &f, "verify", &t->verify);
    walk_str(w, &f, "ca", STR_NULLABLE, &t->ca);
    if (walk_str(w, &f, "sni", STR_NULLABLE, &t->sni) == 0 && t->sni != NULL &&
        !valid_host_name(t->sni)) {
        size_t mark = walk_push(w, "sni");
        walk_error(w, walk_get(&f, "sni"),
                   "\"%s\" is not a host name (labels of letters, digits and '-' up to 63 "
                   "characters, joined by '.', 253 in all; no port, no IP address)",
                   t->sni);
        walk_pop(w, mark);
    }
}

static bool
valid_server_name(const char *s)
{
    static const char chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";
    size_t len = strlen(s);

    return len >= 1 && len <= SERVER_NAME_MAX && s[strspn(s, chars)] == '\0';
}

static void
read_server(struct walk *w, const struct node *n, struct conf_pool *p, const struct node **names)
{
    static const char *const keys[] = {"name", "address", "weight", NULL};
    struct conf_server *s = &p->servers[p->nservers];
    const struct node *name;
    struct fields f;

    s->weight = 1;
    if (walk_map(w, n, keys, "key", &f) == -1)
        return;
    walk_require(w, &f, "name");
    walk_require(w, &f, "address");
    walk_addr(w, &f, "address", false, &s->addr);
    walk_u32(w, &f, "weight", 1, 100, &s->weight);
    if ((name = walk_get(&f, "name")) == NULL || walk_str(w, &f, "name", 0, &s->name) == -1)
        return;
    size_t mark = walk_push(w, "name");
    if (!valid_server_name(s->name)) {
        walk_error(w, name,
                   "\"%s\" is not a valid server name (1 to %d letters, digits, '.', '_' "
                   "or '-')",
                   s->name, SERVER_NAME_MAX);
    }
    for (size_t i = 0; i < p->nservers; i++) {
        if (p->servers[i].name != NULL && strcmp(p->servers[i].name, s->name) == 0)
            walk_error(w, name, "duplicate server name \"%s\" (first at %u:%u)", s->name,
                       names[i]->line, names[i]->col);
    }
    names[p->nservers] = name;
    walk_pop(w, mark);
}

static void
read_servers(struct walk *w, const struct node *n, struct conf_pool *p)
{
    const struct node **names;

    if (walk_type(w, n, NODE_SEQ) == -1)
        return;
    if (n->nitems == 0) {
        walk_error(w, n, "a pool needs at least one server");
        return;
    }
    p->servers = xcalloc(n->nitems, sizeof *p->servers);
    names = xcalloc(n->nitems, sizeof *names);
    for (size_t i = 0; i < n->nitems; i++) {
        size_t mark = walk_push_index(w, i);
        read_server(w, n->items[i], p, names);
        p->nservers++;
        walk_pop(w, mark);
    }
    free(names);
}

/* dst's inherited settings become a deep copy of src's. */
static void
copy_settings(struct conf_pool *dst, const struct conf_pool *src)
{
    conf_health_finish(&dst->health);
    dst->health = src->health;
    dst->health.path = xstrdup(src->health.path);
    dst->health.host = src->health.host ? xstrdup(src->health.host) : NULL;
    dst->health.body_contains =
        src->health.body_contains ? xstrdup(src->health.body_contains) : NULL;
    free(dst->tls.ca);
    free(dst->tls.sni);
    dst->tls = src->tls;
    dst->tls.ca = src->tls.ca ? xstrdup(src->tls.ca) : NULL;
    dst->tls.sni = src->tls.sni ? xstrdup(src->tls.sni) : NULL;
    dst->max_idle = src->max_idle;
    dst->idle_timeout_ms = src->idle_timeout_ms;
    dst->retries = src->retries;
}

static void
read_pool(struct walk *w, const struct node *n, const struct conf_pool *tmpl, struct conf_pool *p)
{
    struct fields f;
    const struct node *v;

    copy_settings(p, tmpl);
    if (walk_map(w, n, POOL_KEYS, "key", &f) == -1)
        return;
    if (walk_require(w, &f, "servers") == 0) {
        size_t mark = walk_push(w, "servers");
        read_servers(w, walk_get(&f, "servers"), p);
        walk_pop(w, mark);
    }
    if ((v = walk_get(&f, "health")) != NULL) {
        size_t mark = walk_push(w, "health");
        read_health(w, v, &p->health);
        walk_pop(w, mark);
    }
    if ((v = walk_get(&f, "tls")) != NULL) {
        size_t mark = walk_push(w, "tls");
        read_tls(w, v, &p->tls);
        walk_pop(w, mark);
    }
    read_upstream(w, &f, p);
}

void
conf_read_pools(struct walk *w, const struct fields *top, struct conf *c)
{
    struct conf_pool tmpl = {0};
    const struct node *n;
    struct fields f;

    conf_pool_init(&tmpl);
    if ((n = walk_get(top, "health")) != NULL) {
        size_t mark = walk_push(w, "health");
        read_health(w, n, &tmpl.health);
        walk_pop(w, mark);
    }
    if ((n = walk_get(top, "upstream")) != NULL) {
        size_t mark = walk_push(w, "upstream");
        if (walk_map(w, n, UPSTREAM_KEYS, "key", &f) == 0)
            read_upstream(w, &f, &tmpl);
        walk_pop(w, mark);
    }

    if (walk_require(w, top, "pools") == 0) {
        size_t mark = walk_push(w, "pools");
        if (walk_map(w, walk_get(top, "pools"), POOL_NAMES, "pool", &f) == 0) {
            for (int id = 0; id < POOL_COUNT; id++) {
                if (walk_require(w, &f, POOL_NAMES[id]) == -1)
                    continue;
                size_t pmark = walk_push(w, POOL_NAMES[id]);
                read_pool(w, walk_get(&f, POOL_NAMES[id]), &tmpl, &c->pools[id]);
                walk_pop(w, pmark);
            }
        }
        walk_pop(w, mark);
    }
    conf_pool_finish(&tmpl);
}
