/* control/api_rollout.c — the control API's rollout endpoints (control/API.md): cutover (with
 * the plan a request may carry), pause, resume and promote. */
#include "control/api_internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>
#include <jansson.h>

#include "conf/xalloc.h"
#include "control/daemon.h"
#include "control/rollout.h"
#include "proxy/clock.h"

/* A plan from a cutover request: absent (the configured one), a shorthand string, or a list of
 * {weight: percent, hold: duration string or seconds}. 0, or -1 after answering 400. */
static int
read_plan(struct api *a, struct evhttp_request *req, json_t *j, struct conf_plan *plan)
{
    char err[256];
    if (json_is_string(j)) {
        if (conf_parse_plan_shorthand(json_string_value(j), plan, err, sizeof(err)) == -1) {
            api_reply_error(a, req, 400, "invalid", "plan", "%s", err);
            return -1;
        }
        return 0;
    }
    if (!json_is_array(j) || json_array_size(j) == 0 || json_array_size(j) > CONF_PLAN_MAX_STEPS) {
        api_reply_error(a, req, 400, "invalid", "plan",
                        "a shorthand (linear:10%%/1m, canary:5%%/5m) or 1..%d steps {weight, hold}",
                        CONF_PLAN_MAX_STEPS);
        return -1;
    }
    plan->nsteps = json_array_size(j);
    plan->steps = xcalloc(plan->nsteps, sizeof(*plan->steps));
    for (size_t i = 0; i < plan->nsteps; i++) {
        json_t *st = json_array_get(j, i);
        json_t *w = json_object_get(st, "weight");
        json_t *h = json_object_get(st, "hold");
        char wtext[32];
        uint32_t bp = 0;
        uint64_t hold = 0;
        bool ok = json_is_object(st) && json_is_number(w) && json_object_size(st) <= 2 &&
                  (json_object_size(st) == 1 || h != NULL);
        if (ok) {
            snprintf(wtext, sizeof(wtext), "%.6g", json_number_value(w));
            ok = conf_parse_percent(wtext, &bp) == 0 && bp > 0;
        }
        if (ok && h) {
            if (json_is_string(h))
                ok = conf_parse_duration(json_string_value(h), &hold) == 0;
            else if (json_is_integer(h) && json_integer_value(h) >= 0)
                hold = (uint64_t)json_integer_value(h) * 1000u;
            else
                ok = false;
        }
        if (!ok) {
            api_reply_error(a, req, 400, "invalid", "plan",
                            "step %zu: {\"weight\": percent 0.01-100, \"hold\": \"1m\" or seconds}",
                            i + 1);
            free(plan->steps);
            plan->steps = NULL;
            return -1;
        }
        plan->steps[i].weight_bp = bp;
        plan->steps[i].hold_ms = hold;
    }
    return 0;
}

static int handle_cutover_checked(struct api *a, struct evhttp_request *req, json_t *body,
                                  json_t *to, json_t *id, int target, const struct conf_plan *plan,
                                  const char *peer);

int
api_handle_cutover(struct api *a, struct evhttp_request *req, json_t *body, const char *peer)
{
    static const char *const fields[] = {"to", "plan", "id", "if_generation", NULL};
    if (!api_only_fields(a, req, body, fields) || !api_generation_matches(a, req, body))
        return 400;
    json_t *to = json_object_get(body, "to");
    json_t *id = json_object_get(body, "id");
    int target = json_is_string(to) ? conf_pool_from_name(json_string_value(to)) : -1;
    if (target < 0) {
        api_reply_error(a, req, 400, "invalid", "to", "\"to\" must be \"blue\" or \"green\"");
        return 400;
    }
    if (id && (!json_is_string(id) || strlen(json_string_value(id)) == 0 ||
               strlen(json_string_value(id)) > 64)) {
        api_reply_error(a, req, 400, "invalid", "id", "must be a string of 1 to 64 characters");
        return 400;
    }
    struct conf_plan plan = {0};
    json_t *pj = json_object_get(body, "plan");
    if (pj && read_plan(a, req, pj, &plan) == -1)
        return 400;
    char perr[256];
    if (pj && rollout_plan_check(&plan, perr, sizeof(perr)) == -1) {
        free(plan.steps);
        api_reply_error(a, req, 400, "invalid", "plan", "%s", perr);
        return 400;
    }
    int rc = handle_cutover_checked(a, req, body, to, id, target, pj ? &plan : NULL, peer);
    free(plan.steps);
    return rc;
}

static int
handle_cutover_checked(struct api *a, struct evhttp_request *req, json_t *body, json_t *to,
                       json_t *id, int target, const struct conf_plan *plan, const char *peer)
{
    struct rollout *r = &a->d->rollout;
    const struct conf *conf = a->d->snap->conf;
    (void)body;
    (void)to;
    uint64_t now = clock_ms();
    /* The same id again is the same cutover: answer with its state, change nothing. */
    if (id && strcmp(r->id, json_string_value(id)) == 0 &&
        (r->phase != ROLLOUT_STABLE || r->outcome != ROLLOUT_OUTCOME_NONE)) {
        api_send_json(req, 202,
                      json_pack("{s:b, s:I, s:o}", "ok", 1, "generation",
                                (json_int_t)api_generation(a), "data",
                                rollout_status_json(r, now)));
        a->answered_status = 202;
        a->answered_code = NULL;
        return 202;
    }
    if (r->phase != ROLLOUT_STABLE) {
        api_reply_error(a, req, 409, "conflict", NULL, "a rollout to %s is %s",
                        conf_pool_name(r->to), rollout_phase_name(r->phase));
        return 409;
    }
    struct route_word rw;
    routing_load(&a->d->routing, &rw);
    if ((enum pool_id)target == rw.live) {
        api_reply_error(a, req, 400, "invalid", "to", "%s is already live",
                        conf_pool_name(rw.live));
        return 400;
    }
    /* Pre-check: the target has enough healthy servers. */
    const struct pool *pool = &a->d->snap->pools[target];
    unsigned checked = 0, healthy = 0;
    for (size_t i = 0; i < pool->nservers; i++) {
        if (atomic_load_explicit(&pool->servers[i]->admin, memory_order_relaxed) == ADMIN_MAINT)
            continue;
        checked++;
        if (atomic_load_explicit(&pool->servers[i]->health, memory_order_relaxed) == HEALTH_UP)
            healthy++;
    }
    double ratio = checked ? (double)healthy / checked : 0.0;
    if (checked == 0 || ratio < conf->rollout.gates.min_healthy_ratio) {
        api_reply_error(a, req, 409, "conflict", NULL,
                        "%s has %u of %u servers healthy (gates.min_healthy_ratio %.2f)",
                        conf_pool_name((enum pool_id)target), healthy, checked,
                        conf->rollout.gates.min_healthy_ratio);
        return 409;
    }
    char err[256];
    struct rollout_step step = {0};
    int rc = rollout_start(r, &conf->rollout, rw.live, (enum pool_id)target,
                           plan ? plan : &conf->rollout.plan, id ? json_string_value(id) : "", now,
                           &step, err, sizeof(err));
    if (rc == -1) {
        api_reply_error(a, req, 400, "invalid", "plan", "%s", err);
        return 400;
    }
    daemon_rollout_step(a->d, &step, "started", peer);
    api_send_json(req, 202,
                  json_pack("{s:b, s:I, s:o}", "ok", 1, "generation", (json_int_t)api_generation(a),
                            "data", rollout_status_json(r, clock_ms())));
    a->answered_status = 202;
    a->answered_code = NULL;
    return 202;
}

/* pause, resume, promote. */
int
api_handle_control(struct api *a, struct evhttp_request *req, json_t *body, const char *what,
                   const char *peer)
{
    static const char *const fields[] = {"reason", "if_generation", NULL};
    if (!api_only_fields(a, req, body, fields) || !api_generation_matches(a, req, body))
        return 400;
    json_t *reason = json_object_get(body, "reason");
    if (reason && !json_is_string(reason)) {
        api_reply_error(a, req, 400, "invalid", "reason", "must be a string");
        return 400;
    }
    struct rollout *r = &a->d->rollout;
    struct rollout_step step = {0};
    char err[256];
    uint64_t now = clock_ms();
    int rc;
    const char *action;
    if (strcmp(what, "pause") == 0) {
        rc = rollout_pause(r, now, reason ? json_string_value(reason) : "paused by an operator",
                           &step, err, sizeof(err));
        action = "paused";
    } else if (strcmp(what, "resume") == 0) {
        rc = rollout_resume(r, now, &step, err, sizeof(err));
        action = "resumed";
        if (rc == 0) {
            /* The split may have been changed by hand (or restored after a restart): the step
             * resumes at its own share. */
            step.action = ROLLOUT_ACTION_WEIGHT;
            step.weight_bp = rollout_weight_bp(r);
        }
    } else {
        rc = rollout_promote(r, now, &step, err, sizeof(err));
        action = "promoted";
    }
    if (rc == -1) {
        api_reply_error(a, req, 409, "conflict", NULL, "%s", err);
        return 409;
    }
    daemon_rollout_step(a->d, &step, action, peer);
    api_reply_ok(a, req, rollout_status_json(r, clock_ms()));
    return 200;
}
