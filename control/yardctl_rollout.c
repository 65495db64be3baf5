/* control/yardctl_rollout.c — yardctl's rollout commands (DESIGN §8): cutover, which with --wait
 * follows the rollout through its events to its end, and pause, resume and promote. */
#include "control/yardctl_cmd.h"

#include <stdio.h>
#include <string.h>

#include "control/yardctl_cmd_internal.h"
#include "control/yardctl_show.h"

/* cutover --wait: one long-poll of the events lasts at most this long, and status is read this
 * often (a step holding for traffic makes no event). */
#define FOLLOW_POLL_S 2
/* --rollback-on-timeout: the rollback carries the generation that status showed (a rollback
 * after a promotion would undo it); it is tried this often when a step moves the generation in
 * between. */
#define ROLLBACK_ATTEMPTS 3

/* src as one line (control characters as spaces) into dst: a server's text in our messages. */
static void
clean_text(char *dst, size_t n, const char *src)
{
    size_t i = 0;

    for (; src != NULL && src[i] != '\0' && i + 1 < n; i++)
        dst[i] = (unsigned char)src[i] < 0x20 || src[i] == 0x7f ? ' ' : src[i];
    if (n > 0)
        dst[i] = '\0';
}

/* Following one rollout (cutover --wait): what is known of it, so that only changes print. */
struct follow {
    const struct yardctl_opts *o;
    char to[128];
    char from[128];
    char id[128];
    long long gen0; /* the generation the cutover answered with: older events are not ours */
    char state[16]; /* progressing, paused, stable */
    long long step; /* the newest step printed */
    enum yardctl_verdict verdict;
    json_t *last; /* owned: the newest rollout object of ours (for the timeout message) */
    bool done;
    int exit_code; /* once done */
};

static void
follow_init(struct follow *f, const struct yardctl_opts *o, const json_t *ro, long long gen0)
{
    memset(f, 0, sizeof *f);
    f->o = o;
    clean_text(f->to, sizeof f->to, yardctl_field_str(ro, "to", o->to));
    clean_text(f->from, sizeof f->from, yardctl_field_str(ro, "from", ""));
    clean_text(f->id, sizeof f->id, yardctl_field_str(ro, "id", ""));
    clean_text(f->state, sizeof f->state, yardctl_field_str(ro, "state", "progressing"));
    f->gen0 = gen0;
    f->step = yardctl_field_int(ro, "step", 1);
    f->verdict = yardctl_rollout_verdict(ro);
    f->last = json_deep_copy(ro);
}

/* Whether a rollout object (an event, or status "rollout") is about the rollout followed. */
static bool
follow_ours(const struct follow *f, const json_t *ro)
{
    char to[128], from[128], id[128];

    clean_text(to, sizeof to, yardctl_field_str(ro, "to", ""));
    clean_text(from, sizeof from, yardctl_field_str(ro, "from", ""));
    clean_text(id, sizeof id, yardctl_field_str(ro, "id", ""));
    return strcmp(to, f->to) == 0 && (f->from[0] == '\0' || strcmp(from, f->from) == 0) &&
           (f->id[0] == '\0' || strcmp(id, f->id) == 0);
}

/* The rollout is over (state stable): promoted (exit 0) or rolled back (exit 1, *err says
 * why). generation: the one the news came with. */
static void
follow_end(struct follow *f, const json_t *ro, long long generation, struct yardctl_error *err)
{
    const char *outcome = yardctl_field_str(ro, "outcome", "");
    char reason[300];

    clean_text(reason, sizeof reason, yardctl_field_str(ro, "reason", ""));
    f->done = true;
    snprintf(f->state, sizeof f->state, "stable");
    if (strcmp(outcome, "promoted") == 0) {
        f->exit_code = YARDCTL_OK;
        if (!f->o->json)
            printf("%s: %s is live (generation %lld)\n",
                   strncmp(reason, "promoted by hand", 16) == 0 ? "promoted by hand" : "promoted",
                   f->to, generation);
        return;
    }
    f->exit_code = YARDCTL_FAILED;
    if (strcmp(outcome, "rolled_back") == 0) {
        const char *r = reason;
        if (strncmp(r, "rolled back: ", 13) == 0)
            r += 13;
        yardctl_error_set(err, YARDCTL_FAILED, "rolled_back",
                          "rolled back: %s (all traffic on %s, generation %lld)",
                          r[0] ? r : "no reason given", f->from[0] ? f->from : "the live pool",
                          generation);
    } else {
        yardctl_error_set(err, YARDCTL_FAILED, "rolled_back",
                          "the rollout to %s ended without being promoted (outcome %s%s%s; "
                          "generation %lld)",
                          f->to, outcome[0] ? outcome : "none", reason[0] ? ": " : "", reason,
                          generation);
    }
    /* With --json the events already said it on stdout: no second object. */
    json_decref(err->object);
    err->object = NULL;
}

/* A gate verdict that differs from the one printed last: one line. */
static void
follow_verdict(struct follow *f, const json_t *ro)
{
    enum yardctl_verdict v = yardctl_rollout_verdict(ro);
    char why[768];

    if (v == f->verdict || v == YARDCTL_VERDICT_NONE)
        return;
    f->verdict = v;
    if (f->o->json)
        return;
    yardctl_show_gates(why, sizeof why, ro);
    if (v == YARDCTL_VERDICT_HOLDING)
        printf("holding: %s\n", why);
    else
        printf("gates: %s (%s)\n", v == YARDCTL_VERDICT_PASS ? "pass" : "fail", why);
}

/* News of the rollout (a rollout event, or status): a line for a new step, a pause, a resume;
 * the end when it is stable. */
static void
follow_state(struct follow *f, const json_t *ro, long long generation, struct yardctl_error *err)
{
    const char *state = yardctl_field_str(ro, "state", "");
    long long step = yardctl_field_int(ro, "step", 0);
    char where[192], reason[300], pct[32];

    json_decref(f->last);
    f->last = json_deep_copy(ro);
    follow_verdict(f, ro);
    if (strcmp(state, "stable") == 0) {
        follow_end(f, ro, generation, err);
        return;
    }
    yardctl_show_rollout_step(where, sizeof where, ro);
    if (step > f->step) {
        f->step = step;
        yardctl_show_percent(pct, sizeof pct, yardctl_field_num(ro, "weight_percent", 0.0));
        if (!f->o->json)
            printf("step %lld/%lld: %s to %s (generation %lld)\n", step,
                   yardctl_field_int(ro, "steps", 0), pct, f->to, generation);
    }
    if (strcmp(state, f->state) != 0) {
        clean_text(reason, sizeof reason, yardctl_field_str(ro, "reason", ""));
        if (f->o->json)
            ;
        else if (strcmp(state, "paused") == 0)
            printf("paused at %s%s%s; waiting for resume, promote or rollback\n", where,
                   reason[0] ? ": " : "", reason);
        else if (strcmp(state, "progressing") == 0 && strcmp(f->state, "paused") == 0)
            printf("resumed at %s\n", where);
        clean_text(f->state, sizeof f->state, state);
    }
}

/* One GET /v1/events from *since, long-polled wait_s seconds: our rollout and gate events
 * printed (--json) and followed. *ours counts them. Returns the exit status of the request. */
static int
follow_events(struct follow *f, long long *since, int wait_s, size_t *ours,
              struct yardctl_error *err)
{
    struct yardctl_reply r = {0};
    char path[96];
    size_t i;
    json_t *ev;

    *ours = 0;
    snprintf(path, sizeof path, "/v1/events?since=%lld&wait=%d", *since, wait_s);
    if (yardctl_api_call(&f->o->target, "GET", path, NULL, (wait_s + 15) * 1000L, &r, err) == -1) {
        yardctl_reply_finish(&r);
        return (int)err->exit_code;
    }
    json_array_foreach(json_object_get(r.data, "events"), i, ev)
    {
        const char *type = yardctl_field_str(ev, "type", "");
        long long seq = yardctl_field_int(ev, "seq", -1);
        bool rollout = strcmp(type, "rollout") == 0;

        if (seq > *since)
            *since = seq;
        if (f->done || (!rollout && strcmp(type, "gate") != 0) ||
            yardctl_field_int(ev, "generation", f->gen0) < f->gen0 || !follow_ours(f, ev))
            continue;
        (*ours)++;
        if (f->o->json)
            yardctl_show_json(stdout, ev, true);
        if (rollout)
            follow_state(f, ev, yardctl_field_int(ev, "generation", -1), err);
        else
            follow_verdict(f, ev);
    }
    *since = yardctl_field_int(r.data, "next", *since);
    fflush(stdout);
    yardctl_reply_finish(&r);
    return YARDCTL_OK;
}

/* GET /v1/status: the verdict while holding for traffic (no event says so) and, should an
 * event have been missed, the end. Returns the exit status of the requests. */
static int
follow_status(struct follow *f, long long *since, struct yardctl_error *err)
{
    struct yardctl_reply r = {0};
    const json_t *ro;
    size_t n;
    int ex = cmd_call(f->o, "GET", "/v1/status", NULL, &r, err);

    if (ex != YARDCTL_OK)
        goto out;
    ro = json_object_get(r.data, "rollout");
    if (strcmp(yardctl_field_str(ro, "state", ""), "stable") == 0) {
        /* Over: the events tell it in order, unless they are gone (a restart, a full ring). */
        ex = follow_events(f, since, 0, &n, err);
        if (ex != YARDCTL_OK || f->done)
            goto out;
        if (f->o->json)
            yardctl_show_json(stdout, ro, true);
        if (follow_ours(f, ro) && yardctl_field_str(ro, "outcome", NULL) != NULL) {
            follow_state(f, ro, r.generation, err);
        } else {
            f->done = true;
            f->exit_code = YARDCTL_FAILED;
            yardctl_error_set(err, YARDCTL_FAILED, "rolled_back",
                              "the rollout to %s is no longer in progress and its outcome is "
                              "unknown (generation %lld; see yardctl events)",
                              f->to, r.generation);
        }
    } else if (follow_ours(f, ro)) {
        follow_state(f, ro, r.generation, err);
    }
    fflush(stdout);
out:
    yardctl_reply_finish(&r);
    return ex;
}

/* "step 2/4, 25% to green, progressing": where the rollout followed was last seen. */
static void
follow_where(const struct follow *f, char *buf, size_t n)
{
    char pct[32];

    yardctl_show_percent(pct, sizeof pct, yardctl_field_num(f->last, "weight_percent", 0.0));
    snprintf(buf, n, "step %lld/%lld, %s to %s, %s", yardctl_field_int(f->last, "step", 0),
             yardctl_field_int(f->last, "steps", 0), pct, f->to, f->state);
}

/* --timeout passed: say so, and with --rollback-on-timeout roll the rollout back, sending the
 * generation that status showed with it: a rollback after a promotion would swap the pools back,
 * so one that crossed a promotion must be refused (and the promotion reported). Returns the exit
 * status. */
static int
follow_timeout(struct follow *f, long long *since, struct yardctl_error *err)
{
    const struct yardctl_opts *o = f->o;
    char where[256];
    size_t n;
    int ex = follow_events(f, since, 0, &n, err);

    if (ex != YARDCTL_OK || f->done)
        return ex != YARDCTL_OK ? ex : f->exit_code;
    follow_where(f, where, sizeof where);
    if (!o->rollback_on_timeout) {
        yardctl_error_set(err, YARDCTL_TIMEOUT, "timeout",
                          "timeout: the rollout to %s is not finished after %s (%s); it goes on "
                          "(yardctl rollback ends it)",
                          f->to, o->timeout_text, where);
        return YARDCTL_TIMEOUT;
    }
    for (int attempt = 1;; attempt++) {
        struct yardctl_reply r = {0};
        json_t *body = json_pack("{s:s}", "reason", "yardctl --wait timeout");
        const json_t *ro;
        long long gen;

        ex = cmd_call(o, "GET", "/v1/status", NULL, &r, err);
        if (ex != YARDCTL_OK) {
            json_decref(body);
            yardctl_reply_finish(&r);
            return ex;
        }
        ro = json_object_get(r.data, "rollout");
        gen = yardctl_field_int(r.data, "generation", r.generation);
        if (strcmp(yardctl_field_str(ro, "state", ""), "stable") == 0 || !follow_ours(f, ro)) {
            /* It ended meanwhile: report that end. */
            json_decref(body);
            yardctl_reply_finish(&r);
            ex = follow_status(f, since, err);
            return ex != YARDCTL_OK ? ex : f->done ? f->exit_code : YARDCTL_TIMEOUT;
        }
        follow_state(f, ro, r.generation, err);
        follow_where(f, where, sizeof where);
        json_object_set_new(body, "if_generation", json_integer(gen));
        ex = cmd_call(o, "POST", "/v1/rollback", body, &r, err);
        json_decref(body);
        if (ex == YARDCTL_CONFLICT && attempt < ROLLBACK_ATTEMPTS) {
            yardctl_reply_finish(&r);
            if ((ex = follow_events(f, since, 0, &n, err)) != YARDCTL_OK || f->done)
                return ex != YARDCTL_OK ? ex : f->exit_code;
            continue;
        }
        if (ex != YARDCTL_OK) {
            char why[sizeof err->message];
            snprintf(why, sizeof why, "%s", err->message);
            yardctl_error_set(err, (enum yardctl_exit)ex, err->code,
                              "timeout: the rollout to %s is not finished after %s (%s), and the "
                              "rollback failed: %s",
                              f->to, o->timeout_text, where, why);
            yardctl_reply_finish(&r);
            return ex;
        }
        yardctl_error_set(err, YARDCTL_TIMEOUT, "timeout",
                          "timeout: the rollout to %s was not finished after %s (%s); rolled "
                          "back: all traffic on %s (generation %lld)",
                          f->to, o->timeout_text, where,
                          yardctl_field_str(json_object_get(r.data, "routing"), "live",
                                            f->from[0] ? f->from : "the live pool"),
                          r.generation);
        if (o->json)
            yardctl_show_json(stdout, r.data, true);
        yardctl_reply_finish(&r);
        return YARDCTL_TIMEOUT;
    }
}

/* cutover --wait: events long-polled (a few seconds at a time, status read in between) until
 * the rollout ends or --timeout passes. */
static int
follow_run(struct follow *f, long long since, struct yardctl_error *err)
{
    uint64_t deadline = cmd_now_ms() + f->o->timeout_ms;
    uint64_t last_status = cmd_now_ms();

    while (!f->done) {
        uint64_t now = cmd_now_ms();
        uint64_t left = deadline > now ? deadline - now : 0;
        int wait_s = (int)((left + 999) / 1000);
        size_t ours;
        int ex;

        if (left == 0)
            return follow_timeout(f, &since, err);
        if (wait_s > FOLLOW_POLL_S)
            wait_s = FOLLOW_POLL_S;
        ex = follow_events(f, &since, wait_s, &ours, err);
        if (ex != YARDCTL_OK)
            return ex;
        if (f->done)
            break;
        if (cmd_now_ms() - last_status >= FOLLOW_POLL_S * 1000u) {
            ex = follow_status(f, &since, err);
            if (ex != YARDCTL_OK)
                return ex;
            last_status = cmd_now_ms();
        }
        /* A server that answers at once with nothing new must not make us spin. */
        if (ours == 0 && cmd_now_ms() - now < 200 && !f->done)
            cmd_sleep_ms(deadline - cmd_now_ms() < 500 ? deadline - cmd_now_ms() : 500);
    }
    return f->exit_code;
}

/* "cutover to green started: step 1/4 at 5% (generation 8)", or what an idempotent repeat
 * (same --id) found. */
static void
print_started(const struct yardctl_opts *o, const json_t *ro, long long generation)
{
    const char *state = yardctl_field_str(ro, "state", "");
    long long step = yardctl_field_int(ro, "step", 0);
    char to[128], id[160] = "", pct[32], where[192];

    clean_text(to, sizeof to, yardctl_field_str(ro, "to", o->to));
    if (o->id != NULL) {
        snprintf(id, sizeof id, " (id ");
        clean_text(id + 5, sizeof id - 6, o->id);
        strcat(id, ")");
    }
    yardctl_show_percent(pct, sizeof pct, yardctl_field_num(ro, "weight_percent", 0.0));
    yardctl_show_rollout_step(where, sizeof where, ro);
    if (strcmp(state, "progressing") == 0 && step <= 1)
        printf("cutover to %s%s started: step %lld/%lld at %s (generation %lld)\n", to, id, step,
               yardctl_field_int(ro, "steps", 0), pct, generation);
    else if (strcmp(state, "progressing") == 0)
        printf("cutover to %s%s already in progress: step %lld/%lld at %s (generation %lld)\n", to,
               id, step, yardctl_field_int(ro, "steps", 0), pct, generation);
    else if (strcmp(state, "paused") == 0)
        printf("cutover to %s%s already in progress: paused at %s (generation %lld)\n", to, id,
               where, generation);
    else
        printf("cutover to %s%s already finished (generation %lld)\n", to, id, generation);
    fflush(stdout);
}

int
yardctl_cmd_cutover(struct yardctl_opts *o, struct yardctl_error *err)
{
    json_t *body = cmd_mutation_body(o);
    struct yardctl_reply r = {0};
    struct follow f = {0};
    long long since = 0;
    int ex;

    json_object_set_new(body, "to", json_string(o->to));
    if (o->plan_json != NULL)
        json_object_set(body, "plan", o->plan_json);
    else if (o->plan != NULL)
        json_object_set_new(body, "plan", json_string(o->plan));
    if (o->id != NULL)
        json_object_set_new(body, "id", json_string(o->id));
    if (o->wait) {
        /* Where the event log is now, before the rollout makes any event of its own. */
        ex = cmd_call(o, "GET", "/v1/events?since=0", NULL, &r, err);
        if (ex != YARDCTL_OK)
            goto out;
        since = yardctl_field_int(r.data, "next", 0);
    }
    ex = cmd_call(o, "POST", "/v1/cutover", body, &r, err);
    if (ex != YARDCTL_OK)
        goto out;
    if (o->json)
        yardctl_show_json(stdout, r.data, o->wait);
    else
        print_started(o, r.data, r.generation);
    follow_init(&f, o, r.data, r.generation);
    if (strcmp(yardctl_field_str(r.data, "state", ""), "stable") == 0) {
        /* An idempotent repeat of a rollout that has ended: its outcome is the answer. */
        follow_end(&f, r.data, r.generation, err);
        ex = f.exit_code;
    } else if (o->wait) {
        ex = follow_run(&f, since, err);
    }
out:
    fflush(stdout);
    json_decref(f.last);
    json_decref(body);
    yardctl_reply_finish(&r);
    return ex;
}

int
yardctl_cmd_gate(struct yardctl_opts *o, struct yardctl_error *err)
{
    json_t *body = cmd_mutation_body(o);
    struct yardctl_reply r = {0};
    char path[64];
    char where[192];
    int ex;

    if (o->reason != NULL)
        json_object_set_new(body, "reason", json_string(o->reason));
    snprintf(path, sizeof path, "/v1/%s", o->command);
    ex = cmd_call(o, "POST", path, body, &r, err);
    if (ex == YARDCTL_OK) {
        if (o->json) {
            yardctl_show_json(stdout, r.data, false);
        } else if (strcmp(o->command, "promote") == 0) {
            char to[128];
            clean_text(to, sizeof to, yardctl_field_str(r.data, "to", "the target pool"));
            printf("promoted: %s is live (generation %lld)\n", to, r.generation);
        } else {
            yardctl_show_rollout_step(where, sizeof where, r.data);
            printf("%s at %s\n", strcmp(o->command, "pause") == 0 ? "paused" : "resumed", where);
        }
    }
    json_decref(body);
    yardctl_reply_finish(&r);
    return ex;
}
