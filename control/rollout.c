/* control/rollout.c — the rollout engine (DESIGN §6): plan checks, the gates, the cutover state
 * machine and its two JSON forms (status, and the state file's). Pure: the caller brings the
 * clock and the measurements and performs the routing action it is handed. */
#include "control/rollout.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/xalloc.h"

#define SAVE_VERSION 1
#define FULL_BP 10000u
#define ID_MAX (sizeof(((struct rollout *)0)->id) - 1)

static const char *const GATE_NAMES[GATE_COUNT] = {"healthy_ratio", "error_rate", "error_ratio",
                                                   "p99", "p99_ratio"};
static const char *const PHASE_NAMES[] = {"stable", "progressing", "paused"};
static const char *const OUTCOME_NAMES[] = {NULL, "promoted", "rolled_back"};
static const char *const INSUFFICIENT_NAMES[] = {"hold", "rollback", "promote"};

/* The gates' overall verdict of one tick. */
enum verdict {
    VERDICT_NONE = 0, /* too little traffic and the health gate passed */
    VERDICT_PASS,
    VERDICT_FAIL,
};

__attribute__((format(printf, 3, 4))) static int
fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* The length of the well-formed UTF-8 sequence at s (n bytes left), 0 when it is not one. */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xC2 && s[0] <= 0xDF)
        len = 2;
    else if (s[0] >= 0xE0 && s[0] <= 0xEF)
        len = 3;
    else if (s[0] >= 0xF0 && s[0] <= 0xF4)
        len = 4;
    else
        return 0;
    if (s[0] == 0xE0)
        lo = 0xA0; /* overlong */
    else if (s[0] == 0xED)
        hi = 0x9F; /* surrogates */
    else if (s[0] == 0xF0)
        lo = 0x90; /* overlong */
    else if (s[0] == 0xF4)
        hi = 0x8F; /* above U+10FFFF */
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

/* Copies src into dst (len bytes) as valid UTF-8: bytes that are not are replaced by '?', and
 * a cut never splits a character, so the text always goes into JSON. */
static void
text_copy(char *dst, size_t len, const char *src)
{
    const unsigned char *s = (const unsigned char *)(src != NULL ? src : "");
    size_t n = strlen((const char *)s), o = 0;

    while (n > 0) {
        size_t k = utf8_len(s, n);

        if (k == 0) {
            if (o + 1 >= len)
                break;
            dst[o++] = '?';
            s++;
            n--;
            continue;
        }
        if (o + k >= len)
            break;
        memcpy(dst + o, s, k);
        o += k;
        s += k;
        n -= k;
    }
    dst[o] = '\0';
}

__attribute__((format(printf, 3, 4))) static void
text_printf(char *dst, size_t len, const char *fmt, ...)
{
    char buf[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    text_copy(dst, len, buf);
}

/* An id is at most ID_MAX bytes of UTF-8 without control characters. */
static bool
id_valid(const char *id)
{
    const unsigned char *s = (const unsigned char *)id;
    size_t n = strlen(id);

    if (n > ID_MAX)
        return false;
    while (n > 0) {
        size_t k = utf8_len(s, n);

        if (k == 0 || s[0] < 0x20 || s[0] == 0x7F)
            return false;
        s += k;
        n -= k;
    }
    return true;
}

static uint64_t
since(uint64_t now_ms, uint64_t t_ms)
{
    return now_ms > t_ms ? now_ms - t_ms : 0;
}

/* JSON cannot carry NaN or infinities. */
static double
num(double v)
{
    return isfinite(v) ? v : 0.0;
}

/* "2m", "90s", "1500ms" into buf. */
static const char *
dur(char *buf, size_t len, uint64_t ms)
{
    if (ms != 0 && ms % 60000 == 0)
        snprintf(buf, len, "%" PRIu64 "m", ms / 60000);
    else if (ms % 1000 == 0)
        snprintf(buf, len, "%" PRIu64 "s", ms / 1000);
    else
        snprintf(buf, len, "%" PRIu64 "ms", ms);
    return buf;
}

static void
step_clear(struct rollout_step *out)
{
    memset(out, 0, sizeof(*out));
    out->action = ROLLOUT_ACTION_NONE;
}

/* out->reason and r->reason both say why. */
static void
say(struct rollout *r, struct rollout_step *out, const char *text)
{
    text_copy(r->reason, sizeof r->reason, text);
    text_copy(out->reason, sizeof out->reason, text);
}

int
rollout_plan_check(const struct conf_plan *plan, char *err, size_t errlen)
{
    uint32_t prev = 0;

    if (plan == NULL || plan->nsteps == 0 || plan->steps == NULL)
        return fail(err, errlen, "the plan has no step");
    if (plan->nsteps > CONF_PLAN_MAX_STEPS)
        return fail(err, errlen, "the plan has %zu steps, over the limit of %d", plan->nsteps,
                    CONF_PLAN_MAX_STEPS);
    for (size_t i = 0; i < plan->nsteps; i++) {
        uint32_t w = plan->steps[i].weight_bp;

        if (w == 0)
            return fail(err, errlen, "step %zu: the weight must be above 0", i + 1);
        if (w > FULL_BP)
            return fail(err, errlen, "step %zu: the weight %u.%02u%% is over 100%%", i + 1, w / 100,
                        w % 100);
        if (w <= prev)
            return fail(err, errlen,
                        "step %zu: the weight %u.%02u%% must be above the previous step's "
                        "%u.%02u%%",
                        i + 1, w / 100, w % 100, prev / 100, prev % 100);
        if (plan->steps[i].hold_ms > (uint64_t)INT64_MAX)
            return fail(err, errlen, "step %zu: the hold is too long", i + 1);
        prev = w;
    }
    if (prev != FULL_BP)
        return fail(err, errlen,
                    "the last step must be 100%% (all traffic on the new pool), not %u.%02u%%",
                    prev / 100, prev % 100);
    return 0;
}

static void
plan_copy(struct conf_plan *dst, const struct conf_plan *src)
{
    dst->nsteps = src->nsteps;
    dst->steps = xmalloc(src->nsteps * sizeof(*dst->steps));
    memcpy(dst->steps, src->steps, src->nsteps * sizeof(*dst->steps));
}

/* The gates as configured, before any tick: what is enabled, the fixed thresholds. */
static void
gates_prepare(struct rollout *r)
{
    const struct conf_gates *g = &r->cfg.gates;

    memset(r->gates, 0, sizeof r->gates);
    r->gates[GATE_HEALTHY_RATIO].enabled = true;
    r->gates[GATE_HEALTHY_RATIO].threshold = num(g->min_healthy_ratio);
    r->gates[GATE_ERROR_RATE].enabled = true;
    r->gates[GATE_ERROR_RATE].threshold = num(g->max_error_rate);
    r->gates[GATE_ERROR_RATIO].enabled = g->max_error_ratio > 0;
    r->gates[GATE_P99].enabled = g->max_p99_ms > 0;
    r->gates[GATE_P99].threshold = (double)g->max_p99_ms;
    r->gates[GATE_P99_RATIO].enabled = g->max_p99_ratio > 0;
}

/* Fresh per-run state: no verdict yet, not waiting for traffic. */
static void
run_reset(struct rollout *r, uint64_t now_ms)
{
    r->started_ms = now_ms;
    r->step_started_ms = now_ms;
    r->waiting_since_ms = 0;
    r->verdict_pass = false;
    r->verdict_known = false;
    r->insufficient = false;
    gates_prepare(r);
}

void
rollout_init(struct rollout *r)
{
    memset(r, 0, sizeof(*r));
    r->phase = ROLLOUT_STABLE;
    r->outcome = ROLLOUT_OUTCOME_NONE;
    r->from = POOL_BLUE;
    r->to = POOL_GREEN;
    r->plan.steps = NULL;
    r->plan.nsteps = 0;
    r->cfg.plan.steps = NULL;
    r->cfg.plan.nsteps = 0;
}

void
rollout_finish(struct rollout *r)
{
    if (r == NULL)
        return;
    xfree(&r->plan.steps);
    rollout_init(r);
}

int
rollout_start(struct rollout *r, const struct conf_rollout *cfg, enum pool_id from, enum pool_id to,
              const struct conf_plan *plan, const char *id, uint64_t now_ms,
              struct rollout_step *out, char *err, size_t errlen)
{
    step_clear(out);
    if (r->phase != ROLLOUT_STABLE)
        return fail(err, errlen, "a rollout is already %s (step %zu of %zu)",
                    rollout_phase_name(r->phase), r->step + 1, r->plan.nsteps);
    if ((from != POOL_BLUE && from != POOL_GREEN) || (to != POOL_BLUE && to != POOL_GREEN) ||
        from == to)
        return fail(err, errlen, "a rollout goes from one pool to the other");
    if (id == NULL)
        id = "";
    if (!id_valid(id))
        return fail(err, errlen, "the id must be at most %zu bytes of text", ID_MAX);
    if (rollout_plan_check(plan, err, errlen) == -1)
        return -1;

    xfree(&r->plan.steps);
    plan_copy(&r->plan, plan);
    r->cfg = *cfg;
    r->cfg.plan.steps = NULL; /* borrowed from the caller's conf: never kept */
    r->cfg.plan.nsteps = 0;
    r->phase = ROLLOUT_PROGRESSING;
    r->outcome = ROLLOUT_OUTCOME_NONE;
    snprintf(r->id, sizeof r->id, "%s", id);
    r->from = from;
    r->to = to;
    r->step = 0;
    run_reset(r, now_ms);

    out->action = ROLLOUT_ACTION_WEIGHT;
    out->weight_bp = r->plan.steps[0].weight_bp;
    text_printf(r->reason, sizeof r->reason, "started: step 1 of %zu (%u.%02u%%)", r->plan.nsteps,
                out->weight_bp / 100, out->weight_bp % 100);
    text_copy(out->reason, sizeof out->reason, r->reason);
    return 0;
}

/* Fills one gate's result; pass is only meaningful when evaluated. */
static void
gate_set(struct gate_result *g, bool enabled, bool evaluated, double observed, double threshold,
         bool at_least)
{
    g->enabled = enabled;
    g->evaluated = enabled && evaluated;
    g->observed = enabled ? num(observed) : 0.0;
    g->threshold = enabled ? num(threshold) : 0.0;
    g->pass =
        g->evaluated && (at_least ? g->observed >= g->threshold : g->observed <= g->threshold);
}

/* Evaluates every gate into r->gates. Returns the overall verdict and, for VERDICT_FAIL, the
 * first gate that failed in *failed. */
static enum verdict
evaluate(struct rollout *r, const struct rollout_inputs *in, enum gate_id *failed)
{
    const struct conf_gates *g = &r->cfg.gates;
    bool enough = in->standby.requests >= g->min_requests;
    bool live_enough = in->live.requests >= g->min_requests;
    double healthy =
        in->standby_checked > 0 ? (double)in->standby_healthy / (double)in->standby_checked : 0.0;
    double sp99 = (double)in->standby.p99_us / 1000.0;
    double lp99 = (double)in->live.p99_us / 1000.0;

    gate_set(&r->gates[GATE_HEALTHY_RATIO], true, true, healthy, g->min_healthy_ratio, true);
    gate_set(&r->gates[GATE_ERROR_RATE], true, enough, in->standby.error_rate, g->max_error_rate,
             false);
    gate_set(&r->gates[GATE_ERROR_RATIO], g->max_error_ratio > 0, enough && live_enough,
             in->standby.error_rate, g->max_error_ratio * in->live.error_rate, false);
    gate_set(&r->gates[GATE_P99], g->max_p99_ms > 0, enough, sp99, (double)g->max_p99_ms, false);
    /* A live pool with no completed request has no p99 to compare with. */
    gate_set(&r->gates[GATE_P99_RATIO], g->max_p99_ratio > 0,
             enough && live_enough && in->live.latency_count > 0, sp99, g->max_p99_ratio * lp99,
             false);

    for (int i = 0; i < GATE_COUNT; i++) {
        if (r->gates[i].evaluated && !r->gates[i].pass) {
            *failed = (enum gate_id)i;
            return VERDICT_FAIL;
        }
    }
    return enough ? VERDICT_PASS : VERDICT_NONE;
}

/* Ends the rollout with outcome (phase STABLE) and the matching action. */
static void
finish_run(struct rollout *r, enum rollout_outcome outcome, struct rollout_step *out)
{
    r->phase = ROLLOUT_STABLE;
    r->outcome = outcome;
    out->action =
        outcome == ROLLOUT_OUTCOME_PROMOTED ? ROLLOUT_ACTION_PROMOTE : ROLLOUT_ACTION_ROLLBACK;
    out->weight_bp = 0;
}

static void
gate_failed(struct rollout *r, enum gate_id id, struct rollout_step *out)
{
    const struct gate_result *g = &r->gates[id];
    const char *op = id == GATE_HEALTHY_RATIO ? "<" : ">";
    char text[256];

    if (id == GATE_P99 || id == GATE_P99_RATIO)
        snprintf(text, sizeof text, "gate %s failed: observed %.1fms %s threshold %.1fms",
                 GATE_NAMES[id], g->observed, op, g->threshold);
    else
        snprintf(text, sizeof text, "gate %s failed: observed %.4f %s threshold %.4f",
                 GATE_NAMES[id], g->observed, op, g->threshold);
    say(r, out, text);
    if (r->cfg.on_failure == ON_FAILURE_PAUSE)
        r->phase = ROLLOUT_PAUSED;
    else
        finish_run(r, ROLLOUT_OUTCOME_ROLLED_BACK, out);
}

/* Too little traffic for a verdict: the step holds; past the progress deadline,
 * on_insufficient decides. */
static void
starved(struct rollout *r, const struct rollout_inputs *in, struct rollout_step *out)
{
    uint64_t waited = since(in->now_ms, r->waiting_since_ms);
    char text[256], d1[32], d2[32];
    unsigned oi = r->cfg.on_insufficient <= ON_INSUFFICIENT_PROMOTE
                      ? (unsigned)r->cfg.on_insufficient
                      : (unsigned)ON_INSUFFICIENT_HOLD;

    if (waited < r->cfg.progress_deadline_ms) {
        snprintf(text, sizeof text,
                 "not enough traffic: %" PRIu64 " requests in the window, the gates need %" PRIu32
                 "; step %zu of %zu holds (waiting %s of %s)",
                 in->standby.requests, r->cfg.gates.min_requests, r->step + 1, r->plan.nsteps,
                 dur(d1, sizeof d1, waited), dur(d2, sizeof d2, r->cfg.progress_deadline_ms));
        say(r, out, text);
        return;
    }
    snprintf(text, sizeof text,
             "not enough traffic for the progress deadline (%s): %" PRIu64
             " requests in the window, the gates need %" PRIu32 "; on_insufficient: %s%s",
             dur(d1, sizeof d1, r->cfg.progress_deadline_ms), in->standby.requests,
             r->cfg.gates.min_requests, INSUFFICIENT_NAMES[oi],
             oi == ON_INSUFFICIENT_HOLD ? ", step holds" : "");
    say(r, out, text);
    if (oi == ON_INSUFFICIENT_ROLLBACK)
        finish_run(r, ROLLOUT_OUTCOME_ROLLED_BACK, out);
    else if (oi == ON_INSUFFICIENT_PROMOTE)
        finish_run(r, ROLLOUT_OUTCOME_PROMOTED, out);
}

/* The gates passed and the hold is over: the next step, or promotion when that step is 100%
 * (or this one is: a one-step plan). */
static void
advance(struct rollout *r, uint64_t now_ms, struct rollout_step *out)
{
    size_t next = r->step + 1;
    uint32_t cur = r->plan.steps[r->step].weight_bp;
    char text[256];

    if (cur >= FULL_BP || next >= r->plan.nsteps || r->plan.steps[next].weight_bp >= FULL_BP) {
        snprintf(text, sizeof text, "promoted: the gates passed at step %zu of %zu (%u.%02u%%)",
                 r->step + 1, r->plan.nsteps, cur / 100, cur % 100);
        if (next < r->plan.nsteps)
            r->step = next;
        say(r, out, text);
        finish_run(r, ROLLOUT_OUTCOME_PROMOTED, out);
        return;
    }
    r->step = next;
    r->step_started_ms = now_ms;
    out->action = ROLLOUT_ACTION_WEIGHT;
    out->weight_bp = r->plan.steps[next].weight_bp;
    snprintf(text, sizeof text,
             "the gates passed at step %zu (%u.%02u%%): step %zu of %zu (%u.%02u%%)", next,
             cur / 100, cur % 100, next + 1, r->plan.nsteps, out->weight_bp / 100,
             out->weight_bp % 100);
    say(r, out, text);
}

void
rollout_tick(struct rollout *r, const struct rollout_inputs *in, struct rollout_step *out)
{
    enum verdict before, v;
    enum gate_id failed = GATE_HEALTHY_RATIO;
    bool was_insufficient = r->insufficient;
    const struct conf_step *cur;
    char text[256], d1[32], d2[32];

    step_clear(out);
    if (r->phase != ROLLOUT_PROGRESSING)
        return;
    before = !r->verdict_known ? VERDICT_NONE : r->verdict_pass ? VERDICT_PASS : VERDICT_FAIL;
    v = evaluate(r, in, &failed);
    out->verdict_changed = v != before;
    r->verdict_known = v != VERDICT_NONE;
    r->verdict_pass = v == VERDICT_PASS;
    r->insufficient = in->standby.requests < r->cfg.gates.min_requests;
    if (r->insufficient && !was_insufficient)
        r->waiting_since_ms = in->now_ms;

    if (v == VERDICT_FAIL) {
        gate_failed(r, failed, out); /* at once: a failed gate is never held */
        return;
    }
    if (v == VERDICT_NONE) {
        starved(r, in, out);
        return;
    }
    cur = &r->plan.steps[r->step];
    if (cur->weight_bp < FULL_BP && since(in->now_ms, r->step_started_ms) < cur->hold_ms) {
        snprintf(text, sizeof text, "step %zu of %zu (%u.%02u%%) holds: %s of %s", r->step + 1,
                 r->plan.nsteps, cur->weight_bp / 100, cur->weight_bp % 100,
                 dur(d1, sizeof d1, since(in->now_ms, r->step_started_ms)),
                 dur(d2, sizeof d2, cur->hold_ms));
        say(r, out, text);
        return;
    }
    advance(r, in->now_ms, out);
}

int
rollout_pause(struct rollout *r, uint64_t now_ms, const char *reason, struct rollout_step *out,
              char *err, size_t errlen)
{
    (void)now_ms;
    step_clear(out);
    if (r->phase == ROLLOUT_PAUSED)
        return fail(err, errlen, "the rollout is already paused");
    if (r->phase != ROLLOUT_PROGRESSING)
        return fail(err, errlen, "no rollout is in progress");
    r->phase = ROLLOUT_PAUSED;
    say(r, out, reason != NULL && reason[0] != '\0' ? reason : "paused by hand");
    return 0;
}

int
rollout_resume(struct rollout *r, uint64_t now_ms, struct rollout_step *out, char *err,
               size_t errlen)
{
    step_clear(out);
    if (r->phase == ROLLOUT_PROGRESSING)
        return fail(err, errlen, "the rollout is not paused");
    if (r->phase != ROLLOUT_PAUSED)
        return fail(err, errlen, "no rollout is in progress");
    r->phase = ROLLOUT_PROGRESSING;
    r->step_started_ms = now_ms; /* the hold restarts */
    r->insufficient = false;     /* and so does the wait for traffic */
    r->waiting_since_ms = 0;
    say(r, out, "resumed");
    return 0;
}

int
rollout_promote(struct rollout *r, uint64_t now_ms, struct rollout_step *out, char *err,
                size_t errlen)
{
    char text[256];
    uint32_t w;

    (void)now_ms;
    step_clear(out);
    if (r->phase != ROLLOUT_PROGRESSING && r->phase != ROLLOUT_PAUSED)
        return fail(err, errlen, "no rollout is in progress");
    w = r->plan.steps[r->step].weight_bp;
    snprintf(text, sizeof text, "promoted by hand at step %zu of %zu (%u.%02u%%)", r->step + 1,
             r->plan.nsteps, w / 100, w % 100);
    r->step = r->plan.nsteps - 1;
    say(r, out, text);
    finish_run(r, ROLLOUT_OUTCOME_PROMOTED, out);
    return 0;
}

void
rollout_rollback(struct rollout *r, uint64_t now_ms, const char *reason, struct rollout_step *out)
{
    const char *why = reason != NULL && reason[0] != '\0' ? reason : "rolled back by hand";

    (void)now_ms;
    step_clear(out);
    if (r->phase == ROLLOUT_STABLE) {
        /* nothing to end; the share goes to 0 all the same */
        text_copy(out->reason, sizeof out->reason, why);
        out->action = ROLLOUT_ACTION_ROLLBACK;
        return;
    }
    say(r, out, why);
    finish_run(r, ROLLOUT_OUTCOME_ROLLED_BACK, out);
}

void
rollout_manual_weight(struct rollout *r, uint64_t now_ms)
{
    (void)now_ms;
    if (r->phase != ROLLOUT_PROGRESSING)
        return;
    r->phase = ROLLOUT_PAUSED;
    text_copy(r->reason, sizeof r->reason, "paused: the weights were set by hand");
}

uint32_t
rollout_weight_bp(const struct rollout *r)
{
    if (r->phase == ROLLOUT_STABLE || r->step >= r->plan.nsteps)
        return 0;
    return r->plan.steps[r->step].weight_bp;
}

const char *
rollout_gate_name(enum gate_id g)
{
    return (unsigned)g < GATE_COUNT ? GATE_NAMES[g] : "unknown";
}

const char *
rollout_phase_name(enum rollout_phase p)
{
    return (unsigned)p <= ROLLOUT_PAUSED ? PHASE_NAMES[p] : "unknown";
}

const char *
rollout_outcome_name(enum rollout_outcome o)
{
    return (unsigned)o <= ROLLOUT_OUTCOME_ROLLED_BACK ? OUTCOME_NAMES[o] : NULL;
}

json_t *
rollout_status_json(const struct rollout *r, uint64_t now_ms)
{
    json_t *plan = json_array(), *gates = json_object();
    bool running = r->phase != ROLLOUT_STABLE;
    const struct conf_step *cur = r->step < r->plan.nsteps ? &r->plan.steps[r->step] : NULL;

    for (size_t i = 0; i < r->plan.nsteps; i++)
        json_array_append_new(plan,
                              json_pack("{s:f, s:f}", "weight", r->plan.steps[i].weight_bp / 100.0,
                                        "hold_s", (double)r->plan.steps[i].hold_ms / 1000.0));
    for (int i = 0; i < GATE_COUNT; i++) {
        const struct gate_result *g = &r->gates[i];

        json_object_set_new(gates, GATE_NAMES[i],
                            json_pack("{s:b, s:b, s:b, s:f, s:f}", "enabled", g->enabled,
                                      "evaluated", g->evaluated, "pass", g->pass, "observed",
                                      num(g->observed), "threshold", num(g->threshold)));
    }
    return json_pack(
        "{s:s, s:s?, s:s, s:s, s:s, s:I, s:I, s:f, s:o, s:f, s:f, s:s, s:b, s:o}", "state",
        rollout_phase_name(r->phase), "outcome", rollout_outcome_name(r->outcome), "id", r->id,
        "from", conf_pool_name(r->from), "to", conf_pool_name(r->to), "step",
        (json_int_t)(cur != NULL ? r->step + 1 : 0), "steps", (json_int_t)r->plan.nsteps,
        "weight_percent", rollout_weight_bp(r) / 100.0, "plan", plan, "step_elapsed_s",
        running ? (double)since(now_ms, r->step_started_ms) / 1000.0 : 0.0, "hold_s",
        cur != NULL ? (double)cur->hold_ms / 1000.0 : 0.0, "reason", r->reason, "insufficient",
        r->insufficient, "gates", gates);
}

json_t *
rollout_save_json(const struct rollout *r)
{
    json_t *plan = json_array();

    for (size_t i = 0; i < r->plan.nsteps; i++)
        json_array_append_new(plan, json_pack("{s:I, s:I}", "weight_bp",
                                              (json_int_t)r->plan.steps[i].weight_bp, "hold_ms",
                                              (json_int_t)r->plan.steps[i].hold_ms));
    return json_pack("{s:i, s:s, s:s?, s:s, s:s, s:s, s:o, s:I, s:s}", "version", SAVE_VERSION,
                     "phase", rollout_phase_name(r->phase), "outcome",
                     rollout_outcome_name(r->outcome), "id", r->id, "from", conf_pool_name(r->from),
                     "to", conf_pool_name(r->to), "plan", plan, "step", (json_int_t)r->step,
                     "reason", r->reason);
}

/* ---- reading the saved form back ---- */

/* Fails unless every member of o is one of keys (NULL-terminated). */
static int
only_keys(const json_t *o, const char *where, const char *const *keys, char *err, size_t errlen)
{
    size_t known = 0;

    for (size_t i = 0; keys[i] != NULL; i++)
        if (json_object_get(o, keys[i]) != NULL)
            known++;
    if (known != json_object_size(o))
        return fail(err, errlen, "%san unknown member", where);
    return 0;
}

static const json_t *
member(const json_t *o, const char *where, const char *key, json_type type, char *err,
       size_t errlen)
{
    const json_t *v = json_object_get(o, key);

    if (v == NULL) {
        fail(err, errlen, "%s%s is missing", where, key);
        return NULL;
    }
    if (json_typeof(v) != type) {
        fail(err, errlen, "%s%s: wrong type", where, key);
        return NULL;
    }
    return v;
}

static int
member_uint(const json_t *o, const char *where, const char *key, uint64_t max, uint64_t *out,
            char *err, size_t errlen)
{
    const json_t *v = member(o, where, key, JSON_INTEGER, err, errlen);

    if (v == NULL)
        return -1;
    if (json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
        return fail(err, errlen, "%s%s: out of range (0 to %" PRIu64 ")", where, key, max);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* A string member that must be one of names (count of them, NULL entries skipped); its index. */
static int
member_enum(const json_t *o, const char *key, const char *const *names, int count, int *out,
            char *err, size_t errlen)
{
    const json_t *v = member(o, "", key, JSON_STRING, err, errlen);

    if (v == NULL)
        return -1;
    for (int i = 0; i < count; i++) {
        if (names[i] != NULL && strcmp(json_string_value(v), names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    return fail(err, errlen, "%s: unknown value \"%.32s\"", key, json_string_value(v));
}

static int
decode_plan(const json_t *a, struct conf_plan *plan, char *err, size_t errlen)
{
    static const char *const keys[] = {"weight_bp", "hold_ms", NULL};
    char where[32], why[200];
    size_t n = json_array_size(a);

    if (n > CONF_PLAN_MAX_STEPS)
        return fail(err, errlen, "plan: %zu steps, over the limit of %d", n, CONF_PLAN_MAX_STEPS);
    if (n == 0)
        return 0;
    plan->steps = xcalloc(n, sizeof(*plan->steps));
    plan->nsteps = n;
    for (size_t i = 0; i < n; i++) {
        const json_t *s = json_array_get(a, i);
        uint64_t w, h;

        snprintf(where, sizeof where, "plan[%zu].", i);
        if (!json_is_object(s))
            return fail(err, errlen, "plan[%zu]: expected an object", i);
        if (only_keys(s, where, keys, err, errlen) == -1 ||
            member_uint(s, where, "weight_bp", FULL_BP, &w, err, errlen) == -1 ||
            member_uint(s, where, "hold_ms", INT64_MAX, &h, err, errlen) == -1)
            return -1;
        plan->steps[i].weight_bp = (uint32_t)w;
        plan->steps[i].hold_ms = h;
    }
    if (rollout_plan_check(plan, why, sizeof why) == -1)
        return fail(err, errlen, "plan: %s", why);
    return 0;
}

/* Fills t (freshly initialized) from saved; t's plan may be allocated even on failure. */
static int
decode(struct rollout *t, const json_t *saved, char *err, size_t errlen)
{
    static const char *const keys[] = {"version", "phase", "outcome", "id",     "from",
                                       "to",      "plan",  "step",    "reason", NULL};
    static const char *const pools[] = {"blue", "green"};
    const json_t *v, *plan;
    uint64_t u;
    int e;

    if (saved == NULL || !json_is_object(saved))
        return fail(err, errlen, "expected a JSON object");
    if (member_uint(saved, "", "version", UINT32_MAX, &u, err, errlen) == -1)
        return -1;
    if (u != SAVE_VERSION)
        return fail(err, errlen, "version %" PRIu64 " is not supported (this build reads %d)", u,
                    SAVE_VERSION);
    if (only_keys(saved, "", keys, err, errlen) == -1)
        return -1;
    if (member_enum(saved, "phase", PHASE_NAMES, 3, &e, err, errlen) == -1)
        return -1;
    t->phase = (enum rollout_phase)e;
    if ((v = json_object_get(saved, "outcome")) == NULL)
        return fail(err, errlen, "outcome is missing");
    if (!json_is_null(v)) {
        if (member_enum(saved, "outcome", OUTCOME_NAMES, 3, &e, err, errlen) == -1)
            return -1;
        t->outcome = (enum rollout_outcome)e;
    }
    if ((v = member(saved, "", "id", JSON_STRING, err, errlen)) == NULL)
        return -1;
    if (strlen(json_string_value(v)) != json_string_length(v) || !id_valid(json_string_value(v)))
        return fail(err, errlen, "id: at most %zu bytes of text", ID_MAX);
    snprintf(t->id, sizeof t->id, "%s", json_string_value(v));
    if (member_enum(saved, "from", pools, 2, &e, err, errlen) == -1)
        return -1;
    t->from = (enum pool_id)e;
    if (member_enum(saved, "to", pools, 2, &e, err, errlen) == -1)
        return -1;
    t->to = (enum pool_id)e;
    if (t->from == t->to)
        return fail(err, errlen, "from and to are the same pool");
    if ((plan = member(saved, "", "plan", JSON_ARRAY, err, errlen)) == NULL ||
        decode_plan(plan, &t->plan, err, errlen) == -1)
        return -1;
    if (t->plan.nsteps == 0 && t->phase != ROLLOUT_STABLE)
        return fail(err, errlen, "plan: a %s rollout needs its plan", rollout_phase_name(t->phase));
    if (member_uint(saved, "", "step", t->plan.nsteps > 0 ? t->plan.nsteps - 1 : 0, &u, err,
                    errlen) == -1)
        return -1;
    t->step = (size_t)u;
    if ((v = member(saved, "", "reason", JSON_STRING, err, errlen)) == NULL)
        return -1;
    text_copy(t->reason, sizeof t->reason, json_string_value(v));
    return 0;
}

int
rollout_restore(struct rollout *r, const json_t *saved, const struct conf_rollout *cfg,
                uint64_t now_ms, char *err, size_t errlen)
{
    struct rollout t;

    rollout_init(&t);
    if (decode(&t, saved, err, errlen) == -1) {
        rollout_finish(&t);
        return -1;
    }
    t.cfg = *cfg;
    t.cfg.plan.steps = NULL; /* borrowed from the caller's conf: never kept */
    t.cfg.plan.nsteps = 0;
    if (t.phase == ROLLOUT_PROGRESSING) {
        t.phase = ROLLOUT_PAUSED; /* a restart never silently continues */
        text_copy(t.reason, sizeof t.reason, "resumed after a restart: paused");
    }
    run_reset(&t, now_ms);
    rollout_finish(r);
    *r = t;
    return 0;
}
