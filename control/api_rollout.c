/* control/api_rollout.c — the control API's rollout endpoints (control/API.md): cutover (with
 * the plan a request may carry), pause, resume and promote. */
#include "control/api_internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <event2/http.h>
#include <jansson.h>

#include "control/api_body.h"
#include "control/daemon.h"
#include "control/rollout.h"
#include "proxy/clock.h"

static int handle_cutover_checked(struct api *a, struct evhttp_request *req, json_t *body,
                                  json_t *to, json_t *id, int target, const struct conf_plan *plan,
                                  const char *peer);

int
api_handle_cutover(struct api *a, struct evhttp_request *req, json_t *body, const char *peer)
{
    struct api_refusal no;
    struct api_cutover cut;
    if (api_check_cutover(body, api_generation(a), &cut, &no) == -1) {
        api_reply_refusal(a, req, &no);
        return no.status;
    }
    json_t *id = json_object_get(body, "id");
    int rc = handle_cutover_checked(a, req, body, json_object_get(body, "to"), id, (int)cut.to,
                                    cut.has_plan ? &cut.plan : NULL, peer);
    api_cutover_finish(&cut);
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
    struct api_refusal no;
    const char *reason = NULL;
    if (api_check_reason(body, api_generation(a), &reason, &no) == -1) {
        api_reply_refusal(a, req, &no);
        return no.status;
    }
    struct rollout *r = &a->d->rollout;
    struct rollout_step step = {0};
    char err[256];
    uint64_t now = clock_ms();
    int rc;
    const char *action;
    if (strcmp(what, "pause") == 0) {
        rc = rollout_pause(r, now, reason ? reason : "paused by an operator", &step, err,
                           sizeof(err));
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
