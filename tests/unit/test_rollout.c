/* tests/unit/test_rollout.c — the rollout engine on a fake clock and synthetic windows: plans,
 * the happy path, holds, too little traffic and on_insufficient, every gate failing (rollback
 * and pause), manual controls from every phase, verdict changes, status, save and restore. */
#include "control/rollout.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

#define N(a) (sizeof(a) / sizeof(*(a)))
#define T0 1000000u /* the fake CLOCK_MONOTONIC at the start of each rollout */
#define S 1000u     /* one second in ms */

static struct conf_step steps3[] = {
    {.weight_bp = 1000, .hold_ms = 60 * S},
    {.weight_bp = 5000, .hold_ms = 120 * S},
    {.weight_bp = 10000, .hold_ms = 0},
};
static const struct conf_plan plan3 = {.steps = steps3, .nsteps = 3};

static struct conf_step steps4[] = {
    {.weight_bp = 500, .hold_ms = 10 * S},
    {.weight_bp = 2500, .hold_ms = 10 * S},
    {.weight_bp = 5000, .hold_ms = 10 * S},
    {.weight_bp = 10000, .hold_ms = 0},
};
static const struct conf_plan plan4 = {.steps = steps4, .nsteps = 4};

/* The configuration defaults of DESIGN §9 (conf/defaults.c). */
static struct conf_rollout
config(void)
{
    struct conf_rollout c;

    memset(&c, 0, sizeof c);
    c.gates.window_ms = 30 * S;
    c.gates.min_requests = 50;
    c.gates.min_healthy_ratio = 1.0;
    c.gates.max_error_rate = 0.01;
    c.progress_deadline_ms = 900 * S;
    c.on_failure = ON_FAILURE_ROLLBACK;
    c.on_insufficient = ON_INSUFFICIENT_HOLD;
    return c;
}

/* A healthy tick: both pools with plenty of traffic, no errors, p99 50ms, all servers up. */
static struct rollout_inputs
good(uint64_t now_ms)
{
    struct rollout_inputs in;

    memset(&in, 0, sizeof in);
    in.now_ms = now_ms;
    in.standby.window_ms = in.live.window_ms = 30 * S;
    in.standby.span_ms = in.live.span_ms = 30 * S;
    in.standby.requests = 200;
    in.standby.latency_count = 200;
    in.standby.p99_us = 50000;
    in.live.requests = 2000;
    in.live.latency_count = 2000;
    in.live.p99_us = 50000;
    in.standby_healthy = 2;
    in.standby_checked = 2;
    return in;
}

static struct rollout_inputs
quiet(uint64_t now_ms, uint64_t requests)
{
    struct rollout_inputs in = good(now_ms);

    in.standby.requests = requests;
    in.standby.latency_count = requests;
    return in;
}

static int
started(struct rollout *r, const struct conf_rollout *c, const struct conf_plan *p)
{
    struct rollout_step st;
    char err[256];

    rollout_finish(r); /* r: initialized, or zeroed */
    return rollout_start(r, c, POOL_BLUE, POOL_GREEN, p, "deploy-42", T0, &st, err, sizeof err) ==
               0 &&
           st.action == ROLLOUT_ACTION_WEIGHT && st.weight_bp == p->steps[0].weight_bp;
}

static bool
has(const char *text, const char *needle)
{
    return strstr(text, needle) != NULL;
}

static void
test_plans(void)
{
    struct conf_rollout c = config();
    struct rollout r = {0};
    struct rollout_step st;
    char err[256];
    struct conf_step nonincr[] = {{1000, S}, {1000, S}, {10000, 0}};
    struct conf_step decr[] = {{5000, S}, {1000, S}, {10000, 0}};
    struct conf_step not_full[] = {{1000, S}, {9000, 0}};
    struct conf_step zero[] = {{0, S}, {10000, 0}};
    struct conf_step over[] = {{1000, S}, {10001, 0}};
    struct conf_step many[CONF_PLAN_MAX_STEPS + 1];
    struct {
        const char *name;
        struct conf_plan plan;
        const char *needle;
    } bad[] = {
        {"an empty plan", {NULL, 0}, "no step"},
        {"non-increasing weights", {nonincr, N(nonincr)}, "above the previous"},
        {"decreasing weights", {decr, N(decr)}, "above the previous"},
        {"a last step other than 100%", {not_full, N(not_full)}, "last step must be 100"},
        {"a weight of 0", {zero, N(zero)}, "above 0"},
        {"a weight over 100%", {over, N(over)}, "over 100"},
        {"too many steps", {many, N(many)}, "over the limit"},
    };

    for (size_t i = 0; i < N(many); i++)
        many[i] = (struct conf_step){.weight_bp = (uint32_t)(i + 1) * 10, .hold_ms = S};
    rollout_init(&r);
    for (size_t i = 0; i < N(bad); i++) {
        err[0] = '\0';
        ok(rollout_start(&r, &c, POOL_BLUE, POOL_GREEN, &bad[i].plan, "x", T0, &st, err,
                         sizeof err) == -1 &&
               has(err, bad[i].needle) && r.phase == ROLLOUT_STABLE &&
               st.action == ROLLOUT_ACTION_NONE,
           "start refuses %s (%s)", bad[i].name, err);
        ok(rollout_plan_check(&bad[i].plan, err, sizeof err) == -1, "rollout_plan_check refuses %s",
           bad[i].name);
    }
    ok(rollout_start(&r, &c, POOL_BLUE, POOL_GREEN, NULL, "x", T0, &st, err, sizeof err) == -1,
       "start refuses a NULL plan");
    ok(rollout_start(&r, &c, POOL_GREEN, POOL_GREEN, &plan3, "x", T0, &st, err, sizeof err) == -1,
       "start refuses from == to (%s)", err);
    char longid[80];
    memset(longid, 'a', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    ok(rollout_start(&r, &c, POOL_BLUE, POOL_GREEN, &plan3, longid, T0, &st, err, sizeof err) == -1,
       "start refuses an id over 64 bytes");
    ok(rollout_start(&r, &c, POOL_BLUE, POOL_GREEN, &plan3, "bad\nid", T0, &st, err, sizeof err) ==
           -1,
       "start refuses an id with a control character");
    ok(rollout_plan_check(&plan3, err, sizeof err) == 0, "a valid plan passes the check");

    /* the plan is copied: changing the caller's afterwards changes nothing */
    struct conf_step mine[] = {{2000, S}, {10000, 0}};
    struct conf_plan p = {mine, N(mine)};
    ok(rollout_start(&r, &c, POOL_GREEN, POOL_BLUE, &p, NULL, T0, &st, err, sizeof err) == 0 &&
           st.action == ROLLOUT_ACTION_WEIGHT && st.weight_bp == 2000 &&
           r.phase == ROLLOUT_PROGRESSING && r.from == POOL_GREEN && r.to == POOL_BLUE &&
           strcmp(r.id, "") == 0,
       "start with a NULL id publishes the first weight");
    mine[0].weight_bp = 3000;
    ok(r.plan.steps != mine && r.plan.steps[0].weight_bp == 2000 && rollout_weight_bp(&r) == 2000,
       "the plan is an owned copy");
    ok(rollout_start(&r, &c, POOL_BLUE, POOL_GREEN, &plan3, "y", T0, &st, err, sizeof err) == -1 &&
           has(err, "already") && rollout_weight_bp(&r) == 2000,
       "start refuses while a rollout runs (%s)", err);
    rollout_finish(&r);
    ok(r.phase == ROLLOUT_STABLE && r.plan.steps == NULL, "finish frees and empties");
    rollout_finish(&r);
}

static void
test_happy_path(void)
{
    struct conf_rollout c = config();
    struct rollout r = {0};
    struct rollout_step st;
    struct rollout_inputs in;
    uint32_t published[8];
    size_t npub = 0;
    bool promoted = false;
    uint64_t promoted_at = 0;

    ok(started(&r, &c, &plan3), "start: weight 10%% to publish");
    published[npub++] = rollout_weight_bp(&r);
    ok(r.phase == ROLLOUT_PROGRESSING && r.step == 0 && r.step_started_ms == T0 &&
           r.started_ms == T0 && strcmp(r.id, "deploy-42") == 0,
       "progressing at step 1 from T0");
    for (uint64_t t = T0 + S; t <= T0 + 400 * S && !promoted; t += S) {
        in = good(t);
        rollout_tick(&r, &in, &st);
        if (st.action == ROLLOUT_ACTION_WEIGHT && npub < N(published))
            published[npub++] = st.weight_bp;
        if (st.action == ROLLOUT_ACTION_PROMOTE) {
            promoted = true;
            promoted_at = t;
        }
        if (st.action == ROLLOUT_ACTION_ROLLBACK)
            break;
    }
    ok(npub == 2 && published[0] == 1000 && published[1] == 5000,
       "weights published in order: 10%%, 50%% (%zu)", npub);
    ok(promoted && promoted_at == T0 + 180 * S,
       "promoted after both holds (60s + 120s), not publishing 100%% as a weight");
    ok(r.phase == ROLLOUT_STABLE && r.outcome == ROLLOUT_OUTCOME_PROMOTED &&
           rollout_weight_bp(&r) == 0 && has(r.reason, "promoted"),
       "stable, outcome promoted: %s", r.reason);
    in = good(promoted_at + S);
    rollout_tick(&r, &in, &st);
    ok(st.action == ROLLOUT_ACTION_NONE && r.phase == ROLLOUT_STABLE, "ticks in stable do nothing");
    rollout_finish(&r);

    /* the hold: exact boundaries */
    started(&r, &c, &plan3);
    in = good(T0 + 60 * S - 1);
    rollout_tick(&r, &in, &st);
    ok(st.action == ROLLOUT_ACTION_NONE && r.step == 0 && has(st.reason, "holds"),
       "hold not elapsed (1 ms short): no advance (%s)", st.reason);
    in = good(T0 + 60 * S);
    rollout_tick(&r, &in, &st);
    ok(st.action == ROLLOUT_ACTION_WEIGHT && st.weight_bp == 5000 && r.step == 1 &&
           r.step_started_ms == T0 + 60 * S,
       "hold elapsed exactly: next step, its hold starts now");
    in = good(T0 + 179 * S);
    rollout_tick(&r, &in, &st);
    ok(st.action == ROLLOUT_ACTION_NONE && r.step == 1, "second hold not elapsed: holds");
    rollout_finish(&r);

    /* a one-step plan: 100% is the first weight and promotes at the first passing tick */
    struct conf_step one[] = {{10000, 0}};
    struct conf_plan p1 = {one, 1};
    ok(started(&r, &c, &p1) && rollout_weight_bp(&r) == 10000, "one-step plan: weight 100%%");
    in = quiet(T0 + S, 3);
    rollout_tick(&r, &in, &st);
    ok(st.action == ROLLOUT_ACTION_NONE && r.phase == ROLLOUT_PROGRESSING,
       "one-step plan waits for a verdict");
    in = good(T0 + 2 * S);
    rollout_tick(&r, &in, &st);
    ok(st.action == ROLLOUT_ACTION_PROMOTE && r.outcome == ROLLOUT_OUTCOME_PROMOTED,
       "one-step plan promotes at the first passing tick");
    rollout_finish(&r);
}

static void
test_insufficient(void)
{
    struct conf_rollout c = config();
    struct rollout r = {0};
    struct rollout_step st;
    struct rollout_inputs in;
    bool moved = false;

    /* holds and never advances, past the hold and up to the deadline */
    started(&r, &c, &plan3);
    in = quiet(T0 + S, 10);
    rollout_tick(&r, &in, &st);
    ok(st.action == ROLLOUT_ACTION_NONE && r.insufficient && r.waiting_since_ms == T0 + S,
       "too little traffic: no action, waiting since the first such tick");
    ok(!r.gates[GATE_ERROR_RATE].evaluated && r.gates[GATE_ERROR_RATE].enabled &&
           r.gates[GATE_HEALTHY_RATIO].evaluated && r.gates[GATE_HEALTHY_RATIO].pass,
       "traffic gates have no verdict; the health gate has one");
    ok(has(st.reason, "not enough traffic") && strcmp(st.reason, r.reason) == 0,
       "reason says so: %s", st.reason);
    for (uint64_t t = T0 + 2 * S; t < T0 + S + 900 * S; t += S) {
        in = quiet(t, 49);
        rollout_tick(&r, &in, &st);
        if (st.action != ROLLOUT_ACTION_NONE || r.step != 0 || r.phase != ROLLOUT_PROGRESSING)
            moved = true;
    }
    ok(!moved && r.waiting_since_ms == T0 + S, "49 requests for 15 minutes: never advances");

    /* hold after the deadline: keeps holding */
    in = quiet(T0 + S + 900 * S, 0);
    rollout_tick(&r, &in, &st);
    ok(st.action == ROLLOUT_ACTION_NONE && r.phase == ROLLOUT_PROGRESSING && r.step == 0 &&
           has(st.reason, "on_insufficient: hold") && has(st.reason, "progress deadline"),
       "on_insufficient hold: keeps holding past the deadline (%s)", st.reason);
    in = quiet(T0 + S + 2000 * S, 0);
    rollout_tick(&r, &in, &st);
    ok(st.action == ROLLOUT_ACTION_NONE && r.phase == ROLLOUT_PROGRESSING, "and still holds later");

    /* traffic returns: the run of waiting ends; a new one starts later */
    in = good(T0 + 2001 * S);
    rollout_tick(&r, &in, &st);
    ok(st.action == ROLLOUT_ACTION_WEIGHT && st.weight_bp == 5000 && !r.insufficient,
       "traffic returns, the hold long over: next step");
    in = quiet(T0 + 2002 * S, 1);
    rollout_tick(&r, &in, &st);
    ok(r.insufficient && r.waiting_since_ms == T0 + 2002 * S, "a new run of waiting starts anew");
    rollout_finish(&r);

    /* rollback after the deadline */
    c.on_insufficient = ON_INSUFFICIENT_ROLLBACK;
    started(&r, &c, &plan3);
    in = quiet(T0 + S, 0);
    rollout_tick(&r, &in, &st);
    in = quiet(T0 + S + 900 * S - 1, 0);
    rollout_tick(&r, &in, &st);
    ok(st.action == ROLLOUT_ACTION_NONE && r.phase == ROLLOUT_PROGRESSING,
       "rollback policy: nothing before the deadline");
    in = quiet(T0 + S + 900 * S, 0);
    rollout_tick(&r, &in, &st);
    ok(st.action == ROLLOUT_ACTION_ROLLBACK && r.phase == ROLLOUT_STABLE &&
           r.outcome == ROLLOUT_OUTCOME_ROLLED_BACK && has(st.reason, "on_insufficient: rollback"),
       "on_insufficient rollback: rolls back at the deadline (%s)", st.reason);
    rollout_finish(&r);

    /* promote after the deadline */
    c.on_insufficient = ON_INSUFFICIENT_PROMOTE;
    started(&r, &c, &plan3);
    in = quiet(T0 + S, 0);
    rollout_tick(&r, &in, &st);
    in = quiet(T0 + S + 900 * S, 0);
    rollout_tick(&r, &in, &st);
    ok(st.action == ROLLOUT_ACTION_PROMOTE && r.phase == ROLLOUT_STABLE &&
           r.outcome == ROLLOUT_OUTCOME_PROMOTED && has(st.reason, "on_insufficient: promote"),
       "on_insufficient promote: promotes at the deadline (%s)", st.reason);
    rollout_finish(&r);

    /* the health gate fails even without traffic */
    c = config();
    started(&r, &c, &plan3);
    in = quiet(T0 + S, 0);
    in.standby_healthy = 1;
    rollout_tick(&r, &in, &st);
    ok(st.action == ROLLOUT_ACTION_ROLLBACK && has(st.reason, "gate healthy_ratio failed"),
       "health gate fails without traffic: rollback (%s)", st.reason);
    rollout_finish(&r);

    /* min_requests 0: always a verdict */
    c.gates.min_requests = 0;
    started(&r, &c, &plan3);
    in = quiet(T0 + 60 * S, 0);
    in.live.requests = 0;
    rollout_tick(&r, &in, &st);
    ok(st.action == ROLLOUT_ACTION_WEIGHT && !r.insufficient,
       "min_requests 0: a verdict without traffic");
    rollout_finish(&r);
}

struct gate_case {
    const char *name;
    enum gate_id gate;
    const char *reason; /* expected exactly, or NULL: only the gate's name */
};

/* Makes in fail exactly the gate g (with c set up to enable it). */
static void
fail_gate(enum gate_id g, struct conf_rollout *c, struct rollout_inputs *in)
{
    switch (g) {
    case GATE_HEALTHY_RATIO:
        in->standby_healthy = 1;
        break;
    case GATE_ERROR_RATE:
        in->standby.errors = 41;
        in->standby.requests = 1000;
        in->standby.error_rate = 0.0412;
        break;
    case GATE_ERROR_RATIO:
        c->gates.max_error_ratio = 2.0;
        in->live.error_rate = 0.002;
        in->standby.error_rate = 0.005; /* under max_error_rate, over 2 x live */
        break;
    case GATE_P99:
        c->gates.max_p99_ms = 800;
        in->standby.p99_us = 950000;
        break;
    case GATE_P99_RATIO:
        c->gates.max_p99_ratio = 1.5;
        in->live.p99_us = 100000;
        in->standby.p99_us = 200000;
        break;
    case GATE_COUNT:
        break;
    }
}

static void
test_gates(void)
{
    static const struct gate_case cases[] = {
        {"healthy_ratio", GATE_HEALTHY_RATIO,
         "gate healthy_ratio failed: observed 0.5000 < threshold 1.0000"},
        {"error_rate", GATE_ERROR_RATE,
         "gate error_rate failed: observed 0.0412 > threshold 0.0100"},
        {"error_ratio", GATE_ERROR_RATIO,
         "gate error_ratio failed: observed 0.0050 > threshold 0.0040"},
        {"p99", GATE_P99, "gate p99 failed: observed 950.0ms > threshold 800.0ms"},
        {"p99_ratio", GATE_P99_RATIO,
         "gate p99_ratio failed: observed 200.0ms > threshold 150.0ms"},
    };

    for (size_t i = 0; i < N(cases); i++) {
        for (int pause = 0; pause <= 1; pause++) {
            struct conf_rollout c = config();
            struct rollout r = {0};
            struct rollout_step st;
            struct rollout_inputs in = good(T0 + 5 * S);

            c.on_failure = pause ? ON_FAILURE_PAUSE : ON_FAILURE_ROLLBACK;
            fail_gate(cases[i].gate, &c, &in);
            started(&r, &c, &plan3);
            rollout_tick(&r, &in, &st);
            if (!pause)
                ok(st.action == ROLLOUT_ACTION_ROLLBACK && r.phase == ROLLOUT_STABLE &&
                       r.outcome == ROLLOUT_OUTCOME_ROLLED_BACK &&
                       strcmp(st.reason, cases[i].reason) == 0 &&
                       strcmp(r.reason, cases[i].reason) == 0,
                   "%s failing: rollback, \"%s\"", cases[i].name, st.reason);
            else
                ok(st.action == ROLLOUT_ACTION_NONE && r.phase == ROLLOUT_PAUSED &&
                       r.outcome == ROLLOUT_OUTCOME_NONE &&
                       strcmp(r.reason, cases[i].reason) == 0 && rollout_weight_bp(&r) == 1000,
                   "%s failing with on_failure pause: paused at the step", cases[i].name);
            ok(r.gates[cases[i].gate].enabled && r.gates[cases[i].gate].evaluated &&
                   !r.gates[cases[i].gate].pass,
               "%s: the gate result says failed", cases[i].name);
            rollout_finish(&r);
        }
    }

    /* a failed gate is never held: it decides even in the first millisecond of a step */
    {
        struct conf_rollout c = config();
        struct rollout r = {0};
        struct rollout_step st;
        struct rollout_inputs in = good(T0);

        fail_gate(GATE_ERROR_RATE, &c, &in);
        started(&r, &c, &plan3);
        rollout_tick(&r, &in, &st);
        ok(st.action == ROLLOUT_ACTION_ROLLBACK, "a failure decides at once");
        rollout_finish(&r);
    }

    /* ratio gates have no verdict when the live pool lacks requests */
    {
        struct conf_rollout c = config();
        struct rollout r = {0};
        struct rollout_step st;
        struct rollout_inputs in = good(T0 + 60 * S);

        c.gates.max_error_ratio = 2.0;
        c.gates.max_p99_ratio = 1.5;
        in.live.requests = 49;
        in.live.error_rate = 0.0;
        in.standby.error_rate = 0.005;
        in.live.p99_us = 10000;
        in.standby.p99_us = 200000;
        started(&r, &c, &plan3);
        rollout_tick(&r, &in, &st);
        ok(st.action == ROLLOUT_ACTION_WEIGHT && st.weight_bp == 5000,
           "live pool under min_requests: ratio gates skipped, the step advances");
        ok(r.gates[GATE_ERROR_RATIO].enabled && !r.gates[GATE_ERROR_RATIO].evaluated &&
               r.gates[GATE_P99_RATIO].enabled && !r.gates[GATE_P99_RATIO].evaluated,
           "both ratio gates enabled but not evaluated");
        ok(r.gates[GATE_ERROR_RATE].evaluated && r.gates[GATE_ERROR_RATE].pass,
           "the absolute gates still were");
        rollout_finish(&r);
    }

    /* unset gates are disabled; set ones pass on a good window */
    {
        struct conf_rollout c = config();
        struct rollout r = {0};
        struct rollout_step st;
        struct rollout_inputs in = good(T0 + S);

        started(&r, &c, &plan3);
        rollout_tick(&r, &in, &st);
        ok(!r.gates[GATE_ERROR_RATIO].enabled && !r.gates[GATE_P99].enabled &&
               !r.gates[GATE_P99_RATIO].enabled && !r.gates[GATE_P99].evaluated,
           "unset gates: not enabled, not evaluated");
        rollout_finish(&r);

        c.gates.max_error_ratio = 2.0;
        c.gates.max_p99_ms = 800;
        c.gates.max_p99_ratio = 1.5;
        started(&r, &c, &plan3);
        in.live.error_rate = 0.004;
        in.standby.error_rate = 0.008;
        in.standby.p99_us = 75000;
        rollout_tick(&r, &in, &st);
        ok(st.action == ROLLOUT_ACTION_NONE && r.phase == ROLLOUT_PROGRESSING && r.verdict_pass,
           "every gate set, each exactly at its threshold: pass");
        ok(r.gates[GATE_P99].observed == 75.0 && r.gates[GATE_P99].threshold == 800.0 &&
               r.gates[GATE_P99_RATIO].threshold == 75.0,
           "p99 gates in milliseconds");
        rollout_finish(&r);

        /* zero servers checked counts as a ratio of 0 */
        c = config();
        started(&r, &c, &plan3);
        in = good(T0 + S);
        in.standby_checked = 0;
        in.standby_healthy = 0;
        rollout_tick(&r, &in, &st);
        ok(st.action == ROLLOUT_ACTION_ROLLBACK && has(st.reason, "healthy_ratio"),
           "no server checked: the health gate fails");
        rollout_finish(&r);
    }

    /* the first failing gate is named when several fail */
    {
        struct conf_rollout c = config();
        struct rollout r = {0};
        struct rollout_step st;
        struct rollout_inputs in = good(T0 + S);

        fail_gate(GATE_P99, &c, &in);
        fail_gate(GATE_ERROR_RATE, &c, &in);
        started(&r, &c, &plan3);
        rollout_tick(&r, &in, &st);
        ok(has(st.reason, "gate error_rate failed") && !r.gates[GATE_P99].pass,
           "several failing: the first is named, all are recorded");
        rollout_finish(&r);
    }
}

static void
test_manual(void)
{
    struct conf_rollout c = config();
    struct rollout r = {0};
    struct rollout_step st;
    struct rollout_inputs in;
    char err[256];

    /* STABLE (never started) */
    rollout_init(&r);
    ok(rollout_pause(&r, T0, NULL, &st, err, sizeof err) == -1, "pause in stable: -1 (%s)", err);
    ok(rollout_resume(&r, T0, &st, err, sizeof err) == -1, "resume in stable: -1 (%s)", err);
    ok(rollout_promote(&r, T0, &st, err, sizeof err) == -1, "promote in stable: -1 (%s)", err);
    rollout_rollback(&r, T0, NULL, &st);
    ok(st.action == ROLLOUT_ACTION_ROLLBACK && r.phase == ROLLOUT_STABLE &&
           r.outcome == ROLLOUT_OUTCOME_NONE,
       "rollback in stable: ROLLBACK all the same, no outcome");
    rollout_manual_weight(&r, T0);
    ok(r.phase == ROLLOUT_STABLE, "manual weight in stable: stays stable");

    /* PROGRESSING */
    started(&r, &c, &plan3);
    ok(rollout_resume(&r, T0, &st, err, sizeof err) == -1, "resume while progressing: -1 (%s)",
       err);
    ok(rollout_pause(&r, T0 + 30 * S, "looking at dashboards", &st, err, sizeof err) == 0 &&
           r.phase == ROLLOUT_PAUSED && st.action == ROLLOUT_ACTION_NONE &&
           strcmp(r.reason, "looking at dashboards") == 0,
       "pause while progressing: paused, with the reason");

    /* PAUSED */
    ok(rollout_pause(&r, T0, NULL, &st, err, sizeof err) == -1, "pause while paused: -1 (%s)", err);
    in = good(T0 + 100 * S);
    rollout_tick(&r, &in, &st);
    ok(st.action == ROLLOUT_ACTION_NONE && r.step == 0 && r.phase == ROLLOUT_PAUSED,
       "ticks while paused do nothing");
    ok(rollout_resume(&r, T0 + 100 * S, &st, err, sizeof err) == 0 &&
           r.phase == ROLLOUT_PROGRESSING && st.action == ROLLOUT_ACTION_NONE &&
           r.step_started_ms == T0 + 100 * S,
       "resume: progressing, the hold restarts now");
    in = good(T0 + 159 * S);
    rollout_tick(&r, &in, &st);
    ok(st.action == ROLLOUT_ACTION_NONE && r.step == 0, "the restarted hold is not over yet");
    in = good(T0 + 160 * S);
    rollout_tick(&r, &in, &st);
    ok(st.action == ROLLOUT_ACTION_WEIGHT && st.weight_bp == 5000,
       "60s after resume: the next step");

    /* promote from PROGRESSING and from PAUSED */
    ok(rollout_promote(&r, T0 + 161 * S, &st, err, sizeof err) == 0 &&
           st.action == ROLLOUT_ACTION_PROMOTE && r.phase == ROLLOUT_STABLE &&
           r.outcome == ROLLOUT_OUTCOME_PROMOTED && has(r.reason, "by hand"),
       "promote while progressing: PROMOTE, outcome promoted");
    ok(rollout_promote(&r, T0, &st, err, sizeof err) == -1, "promote again in stable: -1");
    rollout_rollback(&r, T0, "oops", &st);
    ok(st.action == ROLLOUT_ACTION_ROLLBACK && r.outcome == ROLLOUT_OUTCOME_PROMOTED,
       "rollback after a promotion: ROLLBACK, the outcome kept");
    rollout_finish(&r);

    started(&r, &c, &plan3);
    rollout_pause(&r, T0, NULL, &st, err, sizeof err);
    ok(rollout_promote(&r, T0 + S, &st, err, sizeof err) == 0 &&
           st.action == ROLLOUT_ACTION_PROMOTE && r.outcome == ROLLOUT_OUTCOME_PROMOTED,
       "promote while paused: PROMOTE");
    rollout_finish(&r);

    /* rollback from PROGRESSING and from PAUSED */
    started(&r, &c, &plan3);
    rollout_rollback(&r, T0 + S, "bad deploy", &st);
    ok(st.action == ROLLOUT_ACTION_ROLLBACK && r.phase == ROLLOUT_STABLE &&
           r.outcome == ROLLOUT_OUTCOME_ROLLED_BACK && strcmp(r.reason, "bad deploy") == 0,
       "rollback while progressing: ROLLBACK, outcome rolled_back");
    rollout_finish(&r);
    started(&r, &c, &plan3);
    rollout_pause(&r, T0, NULL, &st, err, sizeof err);
    rollout_rollback(&r, T0 + S, NULL, &st);
    ok(st.action == ROLLOUT_ACTION_ROLLBACK && r.outcome == ROLLOUT_OUTCOME_ROLLED_BACK &&
           has(st.reason, "by hand"),
       "rollback while paused: ROLLBACK, outcome rolled_back");
    /* after a finished rollout, a new one may start (the old plan is freed) */
    ok(rollout_start(&r, &c, POOL_GREEN, POOL_BLUE, &plan4, "again", T0, &st, err, sizeof err) ==
               0 &&
           st.action == ROLLOUT_ACTION_WEIGHT && st.weight_bp == 500 &&
           r.outcome == ROLLOUT_OUTCOME_NONE && r.plan.nsteps == 4 && r.from == POOL_GREEN,
       "a new rollout starts after one ended");
    rollout_finish(&r);

    /* a manual weight pauses a progressing rollout */
    started(&r, &c, &plan3);
    rollout_manual_weight(&r, T0 + S);
    ok(r.phase == ROLLOUT_PAUSED && has(r.reason, "by hand"), "manual weight pauses: %s", r.reason);
    rollout_pause(&r, T0, "first", &st, err, sizeof err);
    rollout_manual_weight(&r, T0 + 2 * S);
    ok(r.phase == ROLLOUT_PAUSED, "manual weight while paused: stays paused");
    rollout_finish(&r);
}

static void
test_verdict_changes(void)
{
    struct conf_rollout c = config();
    struct rollout r = {0};
    struct rollout_step st;
    struct rollout_inputs in;
    struct {
        uint64_t requests;
        bool fail_health;
        bool changed;
        const char *what;
    } seq[] = {
        {10, false, false, "no verdict at first: unchanged"},
        {10, false, false, "no verdict again"},
        {100, false, true, "pass: changed"},
        {100, false, false, "pass again: unchanged"},
        {100, false, false, "pass a third time: unchanged"},
        {10, false, true, "no verdict: changed"},
        {100, false, true, "pass: changed"},
        {100, true, true, "fail: changed"},
    };

    c.on_failure = ON_FAILURE_PAUSE;
    started(&r, &c, &plan4);
    for (size_t i = 0; i < N(seq); i++) {
        in = quiet(T0 + (i + 1) * S, seq[i].requests);
        if (seq[i].fail_health)
            in.standby_healthy = 0;
        rollout_tick(&r, &in, &st);
        ok(st.verdict_changed == seq[i].changed, "tick %zu: %s", i + 1, seq[i].what);
    }
    ok(r.phase == ROLLOUT_PAUSED && r.verdict_known && !r.verdict_pass, "paused on the failure");
    rollout_resume(&r, T0 + 20 * S, &st, NULL, 0);
    in = quiet(T0 + 21 * S, 100);
    in.standby_healthy = 0;
    rollout_tick(&r, &in, &st);
    ok(!st.verdict_changed && r.phase == ROLLOUT_PAUSED,
       "still failing after resume: paused again, verdict unchanged");
    rollout_finish(&r);
}

static void
test_status(void)
{
    struct conf_rollout c = config();
    struct rollout r = {0};
    struct rollout_step st;
    struct rollout_inputs in;
    json_t *j;

    rollout_init(&r);
    j = rollout_status_json(&r, T0);
    ok(j != NULL && strcmp(json_string_value(json_object_get(j, "state")), "stable") == 0 &&
           json_is_null(json_object_get(j, "outcome")) &&
           json_integer_value(json_object_get(j, "steps")) == 0 &&
           json_array_size(json_object_get(j, "plan")) == 0,
       "status before any rollout: stable, no outcome, no plan");
    json_decref(j);

    c.gates.max_p99_ms = 800;
    started(&r, &c, &plan3);
    in = good(T0 + 60 * S);
    rollout_tick(&r, &in, &st);
    in = good(T0 + 90 * S);
    rollout_tick(&r, &in, &st);
    j = rollout_status_json(&r, T0 + 90 * S);
    json_t *gates = json_object_get(j, "gates");
    json_t *p99 = json_object_get(gates, "p99");
    json_t *plan = json_object_get(j, "plan");
    ok(j != NULL && strcmp(json_string_value(json_object_get(j, "state")), "progressing") == 0 &&
           strcmp(json_string_value(json_object_get(j, "id")), "deploy-42") == 0 &&
           strcmp(json_string_value(json_object_get(j, "from")), "blue") == 0 &&
           strcmp(json_string_value(json_object_get(j, "to")), "green") == 0 &&
           json_integer_value(json_object_get(j, "step")) == 2 &&
           json_integer_value(json_object_get(j, "steps")) == 3 &&
           json_real_value(json_object_get(j, "weight_percent")) == 50.0 &&
           json_real_value(json_object_get(j, "step_elapsed_s")) == 30.0 &&
           json_real_value(json_object_get(j, "hold_s")) == 120.0 &&
           json_is_false(json_object_get(j, "insufficient")) &&
           json_is_string(json_object_get(j, "reason")),
       "status while progressing: state, id, pools, step, weight, elapsed, hold");
    ok(json_array_size(plan) == 3 &&
           json_real_value(json_object_get(json_array_get(plan, 0), "weight")) == 10.0 &&
           json_real_value(json_object_get(json_array_get(plan, 1), "hold_s")) == 120.0,
       "status plan: weights in percent, holds in seconds");
    ok(json_object_size(gates) == GATE_COUNT && json_is_true(json_object_get(p99, "enabled")) &&
           json_is_true(json_object_get(p99, "evaluated")) &&
           json_is_true(json_object_get(p99, "pass")) &&
           json_real_value(json_object_get(p99, "observed")) == 50.0 &&
           json_real_value(json_object_get(p99, "threshold")) == 800.0 &&
           json_is_false(json_object_get(json_object_get(gates, "p99_ratio"), "enabled")),
       "status gates: all five by name, p99 in ms");
    json_decref(j);

    rollout_rollback(&r, T0 + 91 * S, "n\xc3\xa9 \xff bad", &st);
    j = rollout_status_json(&r, T0 + 91 * S);
    ok(j != NULL && strcmp(json_string_value(json_object_get(j, "outcome")), "rolled_back") == 0 &&
           json_real_value(json_object_get(j, "weight_percent")) == 0.0 &&
           strcmp(json_string_value(json_object_get(j, "reason")), "n\xc3\xa9 ? bad") == 0,
       "status after a rollback: outcome rolled_back, weight 0, reason kept as valid UTF-8");
    json_decref(j);

    char big[600];
    memset(big, 'x', sizeof big);
    memcpy(big + 250, "\xe2\x82\xac\xe2\x82\xac", 6);
    big[sizeof big - 1] = '\0';
    started(&r, &c, &plan3);
    rollout_pause(&r, T0, big, &st, NULL, 0);
    j = rollout_status_json(&r, T0);
    ok(j != NULL && strlen(r.reason) == 253, "a long reason is cut between characters (%zu)",
       strlen(r.reason));
    json_decref(j);
    rollout_finish(&r);

    ok(strcmp(rollout_gate_name(GATE_P99_RATIO), "p99_ratio") == 0 &&
           strcmp(rollout_gate_name(GATE_HEALTHY_RATIO), "healthy_ratio") == 0 &&
           strcmp(rollout_phase_name(ROLLOUT_PAUSED), "paused") == 0 &&
           rollout_outcome_name(ROLLOUT_OUTCOME_NONE) == NULL &&
           strcmp(rollout_outcome_name(ROLLOUT_OUTCOME_ROLLED_BACK), "rolled_back") == 0,
       "names");
}

/* Saves r, prints it to text and parses it back, as the state file does. */
static json_t *
through_text(const struct rollout *r)
{
    json_t *j = rollout_save_json(r), *back;
    char *text = json_dumps(j, JSON_COMPACT);

    back = json_loads(text, 0, NULL);
    free(text);
    json_decref(j);
    return back;
}

static void
test_save_restore(void)
{
    struct conf_rollout c = config();
    struct rollout r = {0}, back;
    struct rollout_step st;
    struct rollout_inputs in;
    char err[256];
    json_t *j;

    /* progressing comes back paused, same step, plan and id */
    started(&r, &c, &plan4);
    in = good(T0 + 10 * S);
    rollout_tick(&r, &in, &st);
    in = good(T0 + 12 * S);
    rollout_tick(&r, &in, &st);
    ok(r.step == 1 && r.phase == ROLLOUT_PROGRESSING, "at step 2 of 4");
    j = through_text(&r);
    rollout_init(&back);
    c.gates.max_p99_ms = 700; /* the config of the new process */
    ok(rollout_restore(&back, j, &c, 5 * S, err, sizeof err) == 0, "restore: 0 (%s)", err);
    ok(back.phase == ROLLOUT_PAUSED && strcmp(back.reason, "resumed after a restart: paused") == 0,
       "a progressing rollout comes back paused: %s", back.reason);
    ok(back.step == 1 && back.plan.nsteps == 4 && back.plan.steps != r.plan.steps &&
           memcmp(back.plan.steps, r.plan.steps, 4 * sizeof *r.plan.steps) == 0 &&
           strcmp(back.id, "deploy-42") == 0 && back.from == POOL_BLUE && back.to == POOL_GREEN &&
           back.outcome == ROLLOUT_OUTCOME_NONE && rollout_weight_bp(&back) == 2500,
       "same step, plan, id and pools");
    ok(back.started_ms == 5 * S && back.step_started_ms == 5 * S &&
           back.cfg.gates.max_p99_ms == 700 && back.gates[GATE_P99].enabled &&
           back.cfg.plan.steps == NULL,
       "monotonic times reset to now, gates from the given config");
    json_decref(j);
    ok(rollout_resume(&back, 6 * S, &st, err, sizeof err) == 0, "resume after a restart");
    in = good(16 * S);
    rollout_tick(&back, &in, &st);
    ok(st.action == ROLLOUT_ACTION_WEIGHT && st.weight_bp == 5000, "and it goes on: step 3");
    rollout_finish(&back);

    /* a paused one keeps its reason */
    rollout_pause(&r, T0 + 13 * S, "hold on", &st, err, sizeof err);
    j = through_text(&r);
    rollout_init(&back);
    ok(rollout_restore(&back, j, &c, 7, err, sizeof err) == 0 && back.phase == ROLLOUT_PAUSED &&
           strcmp(back.reason, "hold on") == 0,
       "a paused rollout comes back paused with its reason");
    json_decref(j);
    rollout_finish(&back);

    /* a finished one comes back stable with its outcome */
    rollout_promote(&r, T0 + 14 * S, &st, err, sizeof err);
    j = through_text(&r);
    rollout_init(&back);
    ok(rollout_restore(&back, j, &c, 7, err, sizeof err) == 0 && back.phase == ROLLOUT_STABLE &&
           back.outcome == ROLLOUT_OUTCOME_PROMOTED && back.plan.nsteps == 4 &&
           strcmp(back.reason, r.reason) == 0,
       "a promoted rollout comes back stable, outcome promoted");
    json_decref(j);
    rollout_finish(&r);

    /* restore replaces what was there (no leak) */
    rollout_init(&r);
    j = through_text(&r);
    ok(rollout_restore(&back, j, &c, 7, err, sizeof err) == 0 && back.phase == ROLLOUT_STABLE &&
           back.plan.nsteps == 0 && back.outcome == ROLLOUT_OUTCOME_NONE,
       "a never-started engine round-trips");
    json_decref(j);
    rollout_finish(&back);
}

static void
test_restore_malformed(void)
{
    static const char *const bad[] = {
        "[]",
        "null",
        "{}",
        "{\"version\":2,\"phase\":\"stable\",\"outcome\":null,\"id\":\"\",\"from\":\"blue\","
        "\"to\":\"green\",\"plan\":[],\"step\":0,\"reason\":\"\"}",
        /* each below breaks one thing of a valid paused record */
        "{\"version\":1,\"phase\":\"paused\",\"outcome\":null,\"id\":\"a\",\"from\":\"blue\","
        "\"to\":\"green\",\"plan\":[{\"weight_bp\":500,\"hold_ms\":1000},{\"weight_bp\":10000,"
        "\"hold_ms\":0}],\"step\":0,\"reason\":\"x\",\"extra\":1}",
        "{\"version\":1,\"phase\":\"running\",\"outcome\":null,\"id\":\"a\",\"from\":\"blue\","
        "\"to\":\"green\",\"plan\":[{\"weight_bp\":500,\"hold_ms\":1000},{\"weight_bp\":10000,"
        "\"hold_ms\":0}],\"step\":0,\"reason\":\"x\"}",
        "{\"version\":1,\"phase\":\"paused\",\"outcome\":\"won\",\"id\":\"a\",\"from\":\"blue\","
        "\"to\":\"green\",\"plan\":[{\"weight_bp\":500,\"hold_ms\":1000},{\"weight_bp\":10000,"
        "\"hold_ms\":0}],\"step\":0,\"reason\":\"x\"}",
        "{\"version\":1,\"phase\":\"paused\",\"outcome\":null,\"id\":7,\"from\":\"blue\","
        "\"to\":\"green\",\"plan\":[{\"weight_bp\":500,\"hold_ms\":1000},{\"weight_bp\":10000,"
        "\"hold_ms\":0}],\"step\":0,\"reason\":\"x\"}",
        "{\"version\":1,\"phase\":\"paused\",\"outcome\":null,\"id\":\"a\",\"from\":\"red\","
        "\"to\":\"green\",\"plan\":[{\"weight_bp\":500,\"hold_ms\":1000},{\"weight_bp\":10000,"
        "\"hold_ms\":0}],\"step\":0,\"reason\":\"x\"}",
        "{\"version\":1,\"phase\":\"paused\",\"outcome\":null,\"id\":\"a\",\"from\":\"green\","
        "\"to\":\"green\",\"plan\":[{\"weight_bp\":500,\"hold_ms\":1000},{\"weight_bp\":10000,"
        "\"hold_ms\":0}],\"step\":0,\"reason\":\"x\"}",
        "{\"version\":1,\"phase\":\"paused\",\"outcome\":null,\"id\":\"a\",\"from\":\"blue\","
        "\"to\":\"green\",\"plan\":[{\"weight_bp\":5000,\"hold_ms\":1000},{\"weight_bp\":500,"
        "\"hold_ms\":1000},{\"weight_bp\":10000,\"hold_ms\":0}],\"step\":0,\"reason\":\"x\"}",
        "{\"version\":1,\"phase\":\"paused\",\"outcome\":null,\"id\":\"a\",\"from\":\"blue\","
        "\"to\":\"green\",\"plan\":[{\"weight_bp\":500,\"hold_ms\":1000},{\"weight_bp\":9000,"
        "\"hold_ms\":0}],\"step\":0,\"reason\":\"x\"}",
        "{\"version\":1,\"phase\":\"paused\",\"outcome\":null,\"id\":\"a\",\"from\":\"blue\","
        "\"to\":\"green\",\"plan\":[{\"weight_bp\":500,\"hold_ms\":-1},{\"weight_bp\":10000,"
        "\"hold_ms\":0}],\"step\":0,\"reason\":\"x\"}",
        "{\"version\":1,\"phase\":\"paused\",\"outcome\":null,\"id\":\"a\",\"from\":\"blue\","
        "\"to\":\"green\",\"plan\":[{\"weight_bp\":500,\"hold_ms\":1000},{\"weight_bp\":10000,"
        "\"hold_ms\":0,\"x\":1}],\"step\":0,\"reason\":\"x\"}",
        "{\"version\":1,\"phase\":\"paused\",\"outcome\":null,\"id\":\"a\",\"from\":\"blue\","
        "\"to\":\"green\",\"plan\":[{\"weight_bp\":500,\"hold_ms\":1000},{\"weight_bp\":10000,"
        "\"hold_ms\":0}],\"step\":2,\"reason\":\"x\"}",
        "{\"version\":1,\"phase\":\"paused\",\"outcome\":null,\"id\":\"a\",\"from\":\"blue\","
        "\"to\":\"green\",\"plan\":[],\"step\":0,\"reason\":\"x\"}",
        "{\"version\":1,\"phase\":\"paused\",\"outcome\":null,\"id\":\"a\",\"from\":\"blue\","
        "\"to\":\"green\",\"plan\":[5],\"step\":0,\"reason\":\"x\"}",
        "{\"version\":1,\"phase\":\"paused\",\"outcome\":null,\"id\":\"a\",\"from\":\"blue\","
        "\"to\":\"green\",\"plan\":[{\"weight_bp\":500,\"hold_ms\":1000},{\"weight_bp\":10000,"
        "\"hold_ms\":0}],\"step\":0}",
        "{\"version\":1,\"phase\":\"paused\",\"outcome\":null,\"id\":\"a\",\"from\":\"blue\","
        "\"to\":\"green\",\"plan\":{},\"step\":0,\"reason\":\"x\"}",
        "{\"version\":1,\"phase\":\"paused\",\"outcome\":null,\"id\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"from\":"
        "\"blue\","
        "\"to\":\"green\",\"plan\":[{\"weight_bp\":500,\"hold_ms\":1000},{\"weight_bp\":10000,"
        "\"hold_ms\":0}],\"step\":0,\"reason\":\"x\"}",
    };
    static const char good_text[] =
        "{\"version\":1,\"phase\":\"paused\",\"outcome\":null,\"id\":\"a\",\"from\":\"blue\","
        "\"to\":\"green\",\"plan\":[{\"weight_bp\":500,\"hold_ms\":1000},{\"weight_bp\":10000,"
        "\"hold_ms\":0}],\"step\":0,\"reason\":\"x\"}";
    struct conf_rollout c = config();
    struct rollout r = {0};
    char err[256];
    json_t *j;

    for (size_t i = 0; i < N(bad); i++) {
        j = json_loads(bad[i], JSON_DECODE_ANY, NULL);
        rollout_init(&r);
        err[0] = '\0';
        ok(j != NULL && rollout_restore(&r, j, &c, 1, err, sizeof err) == -1 && err[0] != '\0' &&
               r.phase == ROLLOUT_STABLE && r.plan.steps == NULL,
           "malformed record %zu refused, engine stays stable: %s", i, err);
        json_decref(j);
        rollout_finish(&r);
    }
    ok(rollout_restore(&r, NULL, &c, 1, err, sizeof err) == -1, "a NULL record is refused");
    j = json_loads(good_text, 0, NULL);
    rollout_init(&r);
    ok(rollout_restore(&r, j, &c, 1, err, sizeof err) == 0 && r.phase == ROLLOUT_PAUSED &&
           rollout_weight_bp(&r) == 500,
       "the valid record the others are built on restores (%s)", err);
    json_decref(j);
    rollout_finish(&r);
}

int
main(void)
{
    test_plans();
    test_happy_path();
    test_insufficient();
    test_gates();
    test_manual();
    test_verdict_changes();
    test_status();
    test_save_restore();
    test_restore_malformed();
    return done_testing();
}
