/* conf/rollout.c — routing: (live pool, split, balancing, stickiness, preview) and rollout: (the
 * plan, its gates and what happens when they fail), DESIGN §3 and §6. */
#include "conf/validate.h"

#include <stdlib.h>
#include <string.h>

#include "conf/units.h"
#include "conf/xalloc.h"

static void
read_sticky(struct walk *w, const struct node *n, struct conf_sticky *s)
{
    static const char *const keys[] = {"by", "name", "max_age", NULL};
    struct fields f;
    const struct node *by;
    const char *text;

    if (walk_map(w, n, keys, "key", &f) == -1)
        return;
    if ((by = walk_get(&f, "by")) != NULL) {
        size_t mark = walk_push(w, "by");
        if ((text = walk_scalar(w, by)) == NULL) {
            /* reported */
        } else if (strcmp(text, "cookie") == 0) {
            s->by = STICKY_COOKIE;
        } else if (strcmp(text, "ip") == 0) {
            s->by = STICKY_IP;
        } else if (strcmp(text, "none") == 0) {
            s->by = STICKY_NONE;
        } else if (strncmp(text, "header:", 7) == 0) {
            if (conf_check_token(w, by, text + 7) == 0) {
                s->by = STICKY_HEADER;
                free(s->header);
                s->header = xstrdup(text + 7);
            }
        } else {
            walk_error(w, by, "expected cookie, ip, none or header:NAME, found \"%s\"", text);
        }
        walk_pop(w, mark);
    }
    if (walk_str(w, &f, "name", 0, &s->cookie_name) == 0 && walk_get(&f, "name") != NULL) {
        size_t mark = walk_push(w, "name");
        if (conf_check_token(w, walk_get(&f, "name"), s->cookie_name) == 0 &&
            strlen(s->cookie_name) > CONF_COOKIE_NAME_MAX)
            walk_error(w, walk_get(&f, "name"), "the cookie name is longer than %d characters",
                       CONF_COOKIE_NAME_MAX);
        walk_pop(w, mark);
    }
    walk_duration(w, &f, "max_age", 1, &s->max_age_ms);
}

static void
read_preview(struct walk *w, const struct node *n, struct conf_preview *p)
{
    static const char *const keys[] = {"header", "allow_from", "token", NULL};
    struct fields f;
    const struct node *from;

    if (walk_map(w, n, keys, "key", &f) == -1)
        return;
    if (walk_str(w, &f, "header", 0, &p->header) == 0 && walk_get(&f, "header") != NULL) {
        size_t mark = walk_push(w, "header");
        conf_check_token(w, walk_get(&f, "header"), p->header);
        walk_pop(w, mark);
    }
    walk_str(w, &f, "token", STR_NULLABLE, &p->token);
    if ((from = walk_get(&f, "allow_from")) == NULL)
        return;
    size_t mark = walk_push(w, "allow_from");
    if (walk_type(w, from, NODE_SEQ) == 0) {
        p->allow_from = xcalloc(from->nitems, sizeof *p->allow_from);
        for (size_t i = 0; i < from->nitems; i++) {
            size_t imark = walk_push_index(w, i);
            const char *s = walk_scalar(w, from->items[i]);
            if (s != NULL && conf_parse_cidr(s, &p->allow_from[p->nallow_from]) == 0)
                p->nallow_from++;
            else if (s != NULL)
                walk_error(w, from->items[i],
                           "bad CIDR \"%s\": expected an address or ADDRESS/PREFIX such as "
                           "10.0.0.0/8 or ::1/128",
                           s);
            walk_pop(w, imark);
        }
    }
    walk_pop(w, mark);
}

void
conf_read_routing(struct walk *w, const struct node *n, struct conf_routing *r)
{
    static const char *const keys[] = {"live",    "standby_percent", "balance", "sticky",
                                       "preview", "failover",        NULL};
    static const char *const pools[] = {"blue", "green", NULL};
    static const char *const balances[] = {"p2c", "round_robin", "least_conn", NULL};
    struct fields f;
    const struct node *v;
    int live = (int)r->live;
    int balance = (int)r->balance;

    if (walk_map(w, n, keys, "key", &f) == -1)
        return;
    if (walk_enum(w, &f, "live", pools, &live) == 0)
        r->live = (enum pool_id)live;
    walk_percent(w, &f, "standby_percent", &r->standby_bp);
    if (walk_enum(w, &f, "balance", balances, &balance) == 0)
        r->balance = (enum balance)balance;
    walk_bool(w, &f, "failover", &r->failover);
    if ((v = walk_get(&f, "sticky")) != NULL) {
        size_t mark = walk_push(w, "sticky");
        read_sticky(w, v, &r->sticky);
        walk_pop(w, mark);
    }
    if ((v = walk_get(&f, "preview")) != NULL) {
        size_t mark = walk_push(w, "preview");
        read_preview(w, v, &r->preview);
        walk_pop(w, mark);
    }
}

/* One step of a plan written as a list; prev_bp is the weight of the step before (0 for the
 * first). Returns 0 when the step is valid. */
static int
read_step(struct walk *w, const struct node *n, bool last, uint32_t prev_bp, struct conf_step *s)
{
    static const char *const keys[] = {"weight", "hold", NULL};
    struct fields f;
    const struct node *weight;
    const struct node *hold;
    size_t before = w->err->count;

    if (walk_map(w, n, keys, "key", &f) == -1)
        return -1;
    if (walk_require(w, &f, "weight") == 0 && walk_percent(w, &f, "weight", &s->weight_bp) == 0) {
        size_t mark = walk_push(w, "weight");
        weight = walk_get(&f, "weight");
        if (s->weight_bp == 0)
            walk_error(w, weight, "must be above 0");
        else if (s->weight_bp <= prev_bp)
            walk_error(w, weight, "must be above the previous step's %u.%02u%%", prev_bp / 100,
                       prev_bp % 100);
        else if (last && s->weight_bp != 10000)
            walk_error(w, weight, "the last step must be 100 (all traffic on the new pool)");
        walk_pop(w, mark);
    }
    hold = walk_get(&f, "hold");
    if (!last && walk_require(w, &f, "hold") == -1)
        return -1;
    if (walk_duration(w, &f, "hold", 0, &s->hold_ms) == 0 && hold != NULL) {
        size_t mark = walk_push(w, "hold");
        if (!last && s->hold_ms == 0)
            walk_error(w, hold, "must be above 0 (each step but the last holds for a while)");
        if (last && s->hold_ms != 0)
            walk_error(w, hold, "the last step promotes at once: it takes no hold");
        walk_pop(w, mark);
    }
    return w->err->count == before ? 0 : -1;
}

static void
read_plan(struct walk *w, const struct node *n, struct conf_plan *plan)
{
    struct conf_plan p = {0};
    char msg[CONF_ERR_LEN / 2];
    int rc = 0;

    if (n->type == NODE_SCALAR && !n->is_null) {
        const char *s = walk_scalar(w, n);
        if (s != NULL && conf_parse_plan_shorthand(s, &p, msg, sizeof msg) == -1) {
            walk_error(w, n, "%s", msg);
            return;
        }
    } else if (walk_type(w, n, NODE_SEQ) == 0) {
        if (n->nitems == 0 || n->nitems > CONF_PLAN_MAX_STEPS) {
            walk_error(w, n, "a plan has 1 to %d steps, the last one at 100", CONF_PLAN_MAX_STEPS);
            return;
        }
        p.steps = xcalloc(n->nitems, sizeof *p.steps);
        for (size_t i = 0; i < n->nitems; i++) {
            size_t mark = walk_push_index(w, i);
            uint32_t prev = i > 0 ? p.steps[i - 1].weight_bp : 0;
            rc |= read_step(w, n->items[i], i + 1 == n->nitems, prev, &p.steps[i]);
            p.nsteps++;
            walk_pop(w, mark);
        }
    } else {
        return;
    }
    if (rc != 0 || p.steps == NULL) {
        free(p.steps);
        return;
    }
    free(plan->steps);
    *plan = p;
}

static void
read_gates(struct walk *w, const struct node *n, struct conf_gates *g)
{
    static const char *const keys[] = {
        "window",          "min_requests", "min_healthy_ratio", "max_error_rate",
        "max_error_ratio", "max_p99",      "max_p99_ratio",     NULL};
    struct fields f;

    if (walk_map(w, n, keys, "key", &f) == -1)
        return;
    walk_duration(w, &f, "window", 1, &g->window_ms);
    walk_u32(w, &f, "min_requests", 1, UINT32_MAX, &g->min_requests);
    walk_ratio(w, &f, "min_healthy_ratio", 0, 1, &g->min_healthy_ratio);
    walk_ratio(w, &f, "max_error_rate", 0, 1, &g->max_error_rate);
    walk_ratio(w, &f, "max_error_ratio", 0, 1000, &g->max_error_ratio);
    walk_duration(w, &f, "max_p99", 0, &g->max_p99_ms);
    walk_ratio(w, &f, "max_p99_ratio", 0, 1000, &g->max_p99_ratio);
}

void
conf_read_rollout(struct walk *w, const struct node *n, struct conf_rollout *r)
{
    static const char *const keys[] = {"plan",       "gates",           "progress_deadline",
                                       "on_failure", "on_insufficient", NULL};
    static const char *const failures[] = {"rollback", "pause", NULL};
    static const char *const insufficients[] = {"hold", "rollback", "promote", NULL};
    struct fields f;
    const struct node *v;
    int on_failure = (int)r->on_failure;
    int on_insufficient = (int)r->on_insufficient;

    if (walk_map(w, n, keys, "key", &f) == -1)
        return;
    if ((v = walk_get(&f, "plan")) != NULL) {
        size_t mark = walk_push(w, "plan");
        read_plan(w, v, &r->plan);
        walk_pop(w, mark);
    }
    if ((v = walk_get(&f, "gates")) != NULL) {
        size_t mark = walk_push(w, "gates");
        read_gates(w, v, &r->gates);
        walk_pop(w, mark);
    }
    walk_duration(w, &f, "progress_deadline", 1, &r->progress_deadline_ms);
    if (walk_enum(w, &f, "on_failure", failures, &on_failure) == 0)
        r->on_failure = (enum on_failure)on_failure;
    if (walk_enum(w, &f, "on_insufficient", insufficients, &on_insufficient) == 0)
        r->on_insufficient = (enum on_insufficient)on_insufficient;
}
