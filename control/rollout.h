/* control/rollout.h — the rollout engine (DESIGN §6): the cutover state machine, plans and
 * gates. Pure: the daemon feeds it the measurements once a second (rollout_tick) and performs
 * the routing action it returns; nothing here publishes, sleeps or does I/O, so it is
 * unit-tested with a fake clock. Main thread only. */
#ifndef CONTROL_ROLLOUT_H
#define CONTROL_ROLLOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "conf/conf.h"
#include "control/measure.h"

enum rollout_phase {
    ROLLOUT_STABLE = 0, /* no rollout: the live pool takes the traffic (plus any manual split) */
    ROLLOUT_PROGRESSING = 1,
    ROLLOUT_PAUSED = 2,
};

/* The last outcome of a rollout, kept for status after it ends. */
enum rollout_outcome {
    ROLLOUT_OUTCOME_NONE = 0,
    ROLLOUT_OUTCOME_PROMOTED,
    ROLLOUT_OUTCOME_ROLLED_BACK,
};

enum gate_id {
    GATE_HEALTHY_RATIO = 0, /* standby healthy servers / servers not in maint >= min */
    GATE_ERROR_RATE,        /* standby (5xx + upstream failures) / requests <= max */
    GATE_ERROR_RATIO,       /* standby error rate <= max_error_ratio x live's (when set) */
    GATE_P99,               /* standby p99 <= max_p99 (when set) */
    GATE_P99_RATIO,         /* standby p99 <= max_p99_ratio x live's (when set) */
    GATE_COUNT,
};

struct gate_result {
    bool enabled;   /* configured (ratios and max_p99 may be unset) */
    bool evaluated; /* there was a verdict this tick (enough requests, or the health gate) */
    bool pass;
    double observed;  /* ratio, rate, or milliseconds for p99 gates */
    double threshold; /* the same unit as observed */
};

/* What the daemon measured, over gates.window, for the tick. */
struct rollout_inputs {
    uint64_t now_ms;               /* CLOCK_MONOTONIC ms */
    struct measure_result standby; /* the target pool's window */
    struct measure_result live;    /* the live pool's window */
    unsigned standby_healthy;      /* target servers up (not counting maint) */
    unsigned standby_checked;      /* target servers not in maint */
};

/* What the daemon must do after a call. */
enum rollout_action {
    ROLLOUT_ACTION_NONE = 0,
    ROLLOUT_ACTION_WEIGHT,   /* publish live = from, standby share = *weight_bp */
    ROLLOUT_ACTION_PROMOTE,  /* publish live = to, standby share 0 (roles swap) */
    ROLLOUT_ACTION_ROLLBACK, /* publish live = from, standby share 0 */
};

/* The result of one call that may change something: the action, and what to say about it. */
struct rollout_step {
    enum rollout_action action;
    uint32_t weight_bp;   /* for ROLLOUT_ACTION_WEIGHT */
    bool verdict_changed; /* the gates' overall verdict changed (emit a "gate" event) */
    char reason[256];     /* for rollbacks, pauses, holds: which gate, observed, threshold */
};

struct rollout {
    enum rollout_phase phase;
    enum rollout_outcome outcome; /* of the last finished rollout */
    char id[65];                  /* the cutover's id ("" when none was given) */
    enum pool_id from;            /* live when the rollout started */
    enum pool_id to;              /* the target (standby when it started) */
    struct conf_plan plan;        /* owned copy */
    size_t step;                  /* index in plan.steps of the current step */
    uint64_t started_ms;          /* CLOCK_MONOTONIC */
    uint64_t step_started_ms;     /* when the current step's weight was published */
    uint64_t waiting_since_ms;    /* first tick of the current run of "not enough requests" */
    struct gate_result gates[GATE_COUNT];
    bool verdict_pass; /* overall verdict of the last evaluated tick */
    bool verdict_known;
    bool insufficient;       /* the last tick had fewer than min_requests */
    char reason[256];        /* why it paused, rolled back or holds */
    struct conf_rollout cfg; /* gates, deadlines, on_failure (plan left empty: see plan) */
};

/* Sets r to STABLE with no history. */
void rollout_init(struct rollout *r);

/* Frees what r owns (the plan copy). */
void rollout_finish(struct rollout *r);

/* Starts a rollout from `from` to `to` with plan (copied; plan->nsteps >= 1, last weight
 * 10000, weights increasing) and the gates and deadlines of cfg. The first step's weight is to
 * be published: returns ROLLOUT_ACTION_WEIGHT in out. -1 with err when r is not STABLE or the
 * plan is invalid. */
int rollout_start(struct rollout *r, const struct conf_rollout *cfg, enum pool_id from,
                  enum pool_id to, const struct conf_plan *plan, const char *id, uint64_t now_ms,
                  struct rollout_step *out, char *err, size_t errlen);

/* Once a second while PROGRESSING: evaluates the gates on in and decides.
 * - Fewer than gates.min_requests in the standby window: no verdict, the step holds; once
 *   progress_deadline has passed since the hold began, on_insufficient: hold (keep holding),
 *   rollback, or promote.
 * - A failed gate (the health gate is evaluated even without traffic): on_failure rollback
 *   (ROLLOUT_ACTION_ROLLBACK, phase STABLE, outcome ROLLED_BACK) or pause (phase PAUSED).
 * - All gates pass and the step's hold has elapsed: the next step (WEIGHT), or PROMOTE after
 *   the last step (phase STABLE, outcome PROMOTED); a step of weight 10000 promotes at once.
 * In other phases it does nothing (ROLLOUT_ACTION_NONE). */
void rollout_tick(struct rollout *r, const struct rollout_inputs *in, struct rollout_step *out);

/* Manual controls (each fills out; -1 with err when not legal in the current phase):
 * pause: PROGRESSING -> PAUSED (no action). resume: PAUSED -> PROGRESSING, the step's hold
 * restarts (no action). promote: PROGRESSING or PAUSED -> STABLE, outcome PROMOTED (PROMOTE).
 * rollback: legal in every phase, never delayed: PROGRESSING or PAUSED -> STABLE with outcome
 * ROLLED_BACK; in STABLE there is nothing to end (ROLLBACK all the same: share 0). */
int rollout_pause(struct rollout *r, uint64_t now_ms, const char *reason, struct rollout_step *out,
                  char *err, size_t errlen);
int rollout_resume(struct rollout *r, uint64_t now_ms, struct rollout_step *out, char *err,
                   size_t errlen);
int rollout_promote(struct rollout *r, uint64_t now_ms, struct rollout_step *out, char *err,
                    size_t errlen);
void rollout_rollback(struct rollout *r, uint64_t now_ms, const char *reason,
                      struct rollout_step *out);

/* A manual weight change (PUT /v1/weights) during a rollout pauses it. */
void rollout_manual_weight(struct rollout *r, uint64_t now_ms);

/* The current step's weight in basis points (0 when STABLE). */
uint32_t rollout_weight_bp(const struct rollout *r);

/* Status: {"state": "stable|progressing|paused", "outcome": "promoted|rolled_back"|null, "id",
 * "from", "to", "step" (1-based), "steps", "weight_percent", "plan": [{weight, hold_s}],
 * "step_elapsed_s", "hold_s", "reason", "insufficient", "gates": {name: {enabled, evaluated,
 * pass, observed, threshold}}}. New reference. */
json_t *rollout_status_json(const struct rollout *r, uint64_t now_ms);

/* For the state file: enough to resume (phase, id, from, to, plan, step, outcome, reason).
 * rollout_restore() reads it back; a PROGRESSING rollout comes back PAUSED (a restart never
 * silently continues). -1 with err on a malformed object (r stays STABLE). */
json_t *rollout_save_json(const struct rollout *r);
int rollout_restore(struct rollout *r, const json_t *saved, const struct conf_rollout *cfg,
                    uint64_t now_ms, char *err, size_t errlen);

/* Gate names as used in JSON, events and metrics: "healthy_ratio", "error_rate",
 * "error_ratio", "p99", "p99_ratio". */
const char *rollout_gate_name(enum gate_id g);
const char *rollout_phase_name(enum rollout_phase p);

/* Added with the engine. */

/* Checks a plan as rollout_start() does (1 to CONF_PLAN_MAX_STEPS steps, weights above 0 and
 * strictly increasing, the last 10000): 0, or -1 with err. Lets the API tell a bad plan (400)
 * from a rollout already running (409) before calling rollout_start(). */
int rollout_plan_check(const struct conf_plan *plan, char *err, size_t errlen);

/* "promoted", "rolled_back", or NULL for ROLLOUT_OUTCOME_NONE (JSON null). */
const char *rollout_outcome_name(enum rollout_outcome o);

#endif
