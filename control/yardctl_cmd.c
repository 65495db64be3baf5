/* control/yardctl_cmd.c — yardctl's commands (DESIGN §8): each is a few control API requests
 * (control/API.md), their output, and the exit status they mean. The rollout commands (cutover,
 * pause, resume, promote) are in yardctl_rollout.c. */
#include "control/yardctl_cmd.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conf/conf.h"
#include "conf/xalloc.h"
#include "control/yardctl_cmd_internal.h"
#include "control/yardctl_show.h"

/* One ordinary request; the rollback guarantee makes even mutations answer in milliseconds. */
#define REQUEST_TIMEOUT_MS 30000L
/* wait: one status request every POLL_MS. */
#define POLL_MS 200
/* events --follow: the server holds a request this long when there is nothing new. */
#define FOLLOW_WAIT_S 30
/* weight: a generation that moves between our status read and our PUT is retried this often. */
#define WEIGHT_ATTEMPTS 3

uint64_t
cmd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void
cmd_sleep_ms(uint64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL); /* a signal may cut it short: callers loop */
}

/* yardctl_api_call() with the ordinary timeout; returns the exit status. */
int
cmd_call(const struct yardctl_opts *o, const char *method, const char *path, const json_t *body,
         struct yardctl_reply *r, struct yardctl_error *err)
{
    if (yardctl_api_call(&o->target, method, path, body, REQUEST_TIMEOUT_MS, r, err) == -1)
        return (int)err->exit_code;
    return YARDCTL_OK;
}

/* {} plus if_generation when --if-generation was given. */
json_t *
cmd_mutation_body(const struct yardctl_opts *o)
{
    json_t *b = json_object();
    if (o->have_if_generation)
        json_object_set_new(b, "if_generation", json_integer(o->if_generation));
    return b;
}

/* "a/b c" → "a%2Fb%20c": a pool or server name as one path segment. */
static char *
escape_segment(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = xmalloc(strlen(s) * 3 + 1);
    char *p = out;

    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            *p++ = (char)ch;
        } else {
            *p++ = '%';
            *p++ = hex[ch >> 4];
            *p++ = hex[ch & 15];
        }
    }
    *p = '\0';
    return out;
}

/* ", acknowledged by all workers in 0.4 ms", or "" when the answer has no ack_us. */
static void
ack_text(char *buf, size_t n, const json_t *data)
{
    char t[32];

    buf[0] = '\0';
    if (json_is_number(json_object_get(data, "ack_us"))) {
        yardctl_show_micros(t, sizeof t, yardctl_field_num(data, "ack_us", 0.0));
        snprintf(buf, n, ", acknowledged by all workers in %s", t);
    }
}

int
yardctl_cmd_status(struct yardctl_opts *o, struct yardctl_error *err)
{
    struct yardctl_reply r = {0};
    int ex = cmd_call(o, "GET", "/v1/status", NULL, &r, err);

    if (ex == YARDCTL_OK) {
        if (o->json)
            yardctl_show_json(stdout, r.data, false);
        else
            yardctl_show_status(stdout, r.data);
    }
    yardctl_reply_finish(&r);
    return ex;
}

int
yardctl_cmd_rollback(struct yardctl_opts *o, struct yardctl_error *err)
{
    struct yardctl_reply r = {0};
    json_t *body = cmd_mutation_body(o);
    char ack[96];
    int ex;

    if (o->reason != NULL)
        json_object_set_new(body, "reason", json_string(o->reason));
    ex = cmd_call(o, "POST", "/v1/rollback", body, &r, err);
    if (ex == YARDCTL_OK) {
        if (o->json) {
            yardctl_show_json(stdout, r.data, false);
        } else {
            ack_text(ack, sizeof ack, r.data);
            printf("rolled back: all traffic on %s (generation %lld%s)\n",
                   yardctl_field_str(json_object_get(r.data, "routing"), "live", "the live pool"),
                   r.generation, ack);
        }
    }
    json_decref(body);
    yardctl_reply_finish(&r);
    return ex;
}

/* The standby share that "pool=bp" asks for, given the current routing: pool must be the live
 * or the standby pool, by name or as the words "live" and "standby". Returns the basis points,
 * or -1 with *err (usage). */
static long
weight_target(const json_t *routing, const char *pool, uint32_t bp, struct yardctl_error *err)
{
    const char *live = yardctl_field_str(routing, "live", "");
    const char *standby = yardctl_field_str(routing, "standby", NULL);

    if (standby != NULL && (strcmp(pool, standby) == 0 || strcmp(pool, "standby") == 0))
        return (long)bp;
    if (strcmp(pool, live) == 0 || strcmp(pool, "live") == 0)
        return 10000L - (long)bp;
    yardctl_error_set(err, YARDCTL_USAGE, "usage",
                      "weight: pool \"%s\" is neither the live pool (%s) nor the standby pool "
                      "(%s)",
                      pool, live, standby ? standby : "none");
    return -1;
}

int
yardctl_cmd_weight(struct yardctl_opts *o, struct yardctl_error *err)
{
    const char *arg = o->args[0];
    const char *eq = strchr(arg, '=');
    struct yardctl_reply r = {0};
    char *pool = NULL;
    uint32_t bp;
    int ex = YARDCTL_USAGE;

    if (eq == NULL || eq == arg) {
        yardctl_error_set(err, YARDCTL_USAGE, "usage",
                          "weight: expected POOL=PERCENT such as green=25, not \"%s\"", arg);
        return YARDCTL_USAGE;
    }
    if (conf_parse_percent(eq + 1, &bp) == -1) {
        yardctl_error_set(err, YARDCTL_USAGE, "usage",
                          "weight: bad percentage \"%s\": expected 0 to 100 with at most two "
                          "decimals, such as 12.5",
                          eq + 1);
        return YARDCTL_USAGE;
    }
    pool = xstrndup(arg, (size_t)(eq - arg));
    /* Which pool is live decides what "green=25" means, so the PUT carries the generation that
     * status showed; should it move in between (unless the user pinned one), read again. */
    for (int attempt = 1; attempt <= WEIGHT_ATTEMPTS; attempt++) {
        json_t *body;
        long target;
        long long gen;

        ex = cmd_call(o, "GET", "/v1/status", NULL, &r, err);
        if (ex != YARDCTL_OK)
            goto out;
        target = weight_target(json_object_get(r.data, "routing"), pool, bp, err);
        if (target < 0) {
            ex = YARDCTL_USAGE;
            goto out;
        }
        gen = o->have_if_generation ? o->if_generation
                                    : yardctl_field_int(r.data, "generation", r.generation);
        body = json_pack("{s:f}", "standby_percent", (double)target / 100.0);
        if (gen >= 0)
            json_object_set_new(body, "if_generation", json_integer(gen));
        ex = cmd_call(o, "PUT", "/v1/weights", body, &r, err);
        json_decref(body);
        if (ex != YARDCTL_CONFLICT || o->have_if_generation)
            break;
        if (attempt == WEIGHT_ATTEMPTS) {
            size_t n = strlen(err->message);
            snprintf(err->message + n, sizeof err->message - n,
                     "; the routing changed %d times while weight ran, try again", WEIGHT_ATTEMPTS);
        }
    }
    if (ex == YARDCTL_OK) {
        if (o->json) {
            yardctl_show_json(stdout, r.data, false);
        } else {
            char split[256];
            char ack[96];

            yardctl_show_split(split, sizeof split, json_object_get(r.data, "routing"));
            ack_text(ack, sizeof ack, r.data);
            printf("split: %s (generation %lld%s)\n", split, r.generation, ack);
        }
    }
out:
    xfree(&pool);
    yardctl_reply_finish(&r);
    return ex;
}

int
yardctl_cmd_server(struct yardctl_opts *o, struct yardctl_error *err)
{
    const char *target = o->args[0];
    const char *state = o->args[1];
    const char *slash = strchr(target, '/');
    struct yardctl_reply r = {0};
    char *pool;
    char *name;
    char *path;
    size_t n;
    json_t *body;
    int ex;

    if (slash == NULL || slash == target || slash[1] == '\0' || strchr(slash + 1, '/') != NULL) {
        yardctl_error_set(err, YARDCTL_USAGE, "usage",
                          "server: expected POOL/NAME such as blue/b1, not \"%s\"", target);
        return YARDCTL_USAGE;
    }
    if (strcmp(state, "ready") != 0 && strcmp(state, "drain") != 0 && strcmp(state, "maint") != 0) {
        yardctl_error_set(err, YARDCTL_USAGE, "usage",
                          "server: unknown state \"%s\": expected ready, drain or maint", state);
        return YARDCTL_USAGE;
    }
    name = escape_segment(slash + 1);
    {
        char *p = xstrndup(target, (size_t)(slash - target));
        pool = escape_segment(p);
        xfree(&p);
    }
    n = strlen("/v1/servers///") + strlen(pool) + strlen(name) + strlen(state) + 1;
    path = xmalloc(n);
    snprintf(path, n, "/v1/servers/%s/%s/%s", pool, name, state);
    body = cmd_mutation_body(o);
    ex = cmd_call(o, "POST", path, body, &r, err);
    if (ex == YARDCTL_OK) {
        if (o->json)
            yardctl_show_json(stdout, r.data, false);
        else
            printf("%s: admin %s (health %s, in-flight %lld, conns %lld; generation %lld)\n",
                   target, yardctl_field_str(r.data, "admin", state),
                   yardctl_field_str(r.data, "health", "?"),
                   yardctl_field_int(r.data, "inflight", 0), yardctl_field_int(r.data, "conns", 0),
                   r.generation);
    }
    json_decref(body);
    xfree(&path);
    xfree(&pool);
    xfree(&name);
    yardctl_reply_finish(&r);
    return ex;
}

/* Whether pool is healthy: at least one server not in maint, and all of those up. *summary
 * says how far it is, for progress lines and the timeout message. */
static bool
pool_healthy(const json_t *pool, char *summary, size_t n)
{
    const json_t *servers = json_object_get(pool, "servers");
    size_t counted = 0;
    size_t up = 0;
    size_t maint = 0;
    size_t i;
    const json_t *srv;
    char others[512] = "";
    size_t olen = 0;

    json_array_foreach(servers, i, srv)
    {
        const char *health = yardctl_field_str(srv, "health", "unknown");
        if (strcmp(yardctl_field_str(srv, "admin", "ready"), "maint") == 0) {
            maint++;
            continue;
        }
        counted++;
        if (strcmp(health, "up") == 0) {
            up++;
        } else if (olen < sizeof others) {
            int w = snprintf(others + olen, sizeof others - olen, "%s%s %s", olen ? ", " : "",
                             yardctl_field_str(srv, "name", "?"), health);
            olen += w > 0 ? (size_t)w : 0;
        }
    }
    if (counted == 0)
        snprintf(summary, n, "no servers outside maint (%zu in maint)", maint);
    else if (maint > 0)
        snprintf(summary, n, "%zu/%zu servers up%s%s%s, %zu in maint", up, counted,
                 others[0] ? " (" : "", others, others[0] ? ")" : "", maint);
    else
        snprintf(summary, n, "%zu/%zu servers up%s%s%s", up, counted, others[0] ? " (" : "", others,
                 others[0] ? ")" : "");
    return counted > 0 && up == counted;
}

static bool
pool_drained(const json_t *pool, char *summary, size_t n)
{
    long long inflight = yardctl_field_int(pool, "inflight", -1);
    long long tunnels = yardctl_field_int(pool, "tunnels", -1);

    if (inflight < 0 || tunnels < 0) {
        snprintf(summary, n, "status has no inflight/tunnels for the pool");
        return false;
    }
    snprintf(summary, n, "%lld in flight, %lld tunnel%s", inflight, tunnels,
             tunnels == 1 ? "" : "s");
    return inflight == 0 && tunnels == 0;
}

/* "blue, green": the pools status knows, for a message about an unknown one. */
static void
pool_names(char *buf, size_t n, json_t *pools)
{
    const char *name;
    json_t *pool;
    size_t len = 0;

    buf[0] = '\0';
    json_object_foreach(pools, name, pool)
    {
        int w = snprintf(buf + len, n - len, "%s%s", len ? ", " : "", name);
        if (w < 0 || (size_t)w >= n - len)
            break;
        len += (size_t)w;
    }
}

int
yardctl_cmd_wait(struct yardctl_opts *o, struct yardctl_error *err)
{
    const char *what = o->args[0];
    const char *name = o->args[1];
    bool healthy = strcmp(what, "healthy") == 0;
    uint64_t deadline = cmd_now_ms() + o->timeout_ms;
    struct yardctl_reply r = {0};
    char summary[640];
    char last[640] = "";
    int ex = YARDCTL_OK;

    if (!healthy && strcmp(what, "drained") != 0) {
        yardctl_error_set(err, YARDCTL_USAGE, "usage",
                          "wait: unknown condition \"%s\": expected healthy or drained", what);
        return YARDCTL_USAGE;
    }
    for (;;) {
        uint64_t now = cmd_now_ms();
        long left = now < deadline ? (long)(deadline - now) : 0;
        json_t *pools;
        json_t *pool;
        bool met;

        /* A poll never outlives the deadline by more than a second; one that fails ends the
         * wait with its own status, unless the deadline passed meanwhile (a slow answer). */
        if (yardctl_api_call(&o->target, "GET", "/v1/status", NULL,
                             left + 1000 < REQUEST_TIMEOUT_MS ? left + 1000 : REQUEST_TIMEOUT_MS,
                             &r, err) == -1) {
            ex = (int)err->exit_code;
            if (ex == YARDCTL_UNREACHABLE && cmd_now_ms() >= deadline && last[0] != '\0') {
                yardctl_error_set(err, YARDCTL_TIMEOUT, "timeout",
                                  "timeout: %s not %s after %s: %s", name, what, o->timeout_text,
                                  last);
                ex = YARDCTL_TIMEOUT;
            }
            break;
        }
        pools = json_object_get(r.data, "pools");
        pool = json_object_get(pools, name);
        if (!json_is_object(pool)) {
            char names[256];
            pool_names(names, sizeof names, pools);
            yardctl_error_set(err, YARDCTL_USAGE, "usage", "wait: no pool \"%s\" (pools: %s)", name,
                              names);
            ex = YARDCTL_USAGE;
            break;
        }
        met = healthy ? pool_healthy(pool, summary, sizeof summary)
                      : pool_drained(pool, summary, sizeof summary);
        if (met) {
            if (o->json)
                yardctl_show_json(stdout, pool, false);
            else
                printf("%s: %s: %s\n", name, what, summary);
            break;
        }
        if (strcmp(summary, last) != 0) {
            if (!o->json) {
                printf("%s: waiting until %s: %s\n", name, what, summary);
                fflush(stdout);
            }
            snprintf(last, sizeof last, "%s", summary);
        }
        now = cmd_now_ms();
        if (now >= deadline) {
            yardctl_error_set(err, YARDCTL_TIMEOUT, "timeout", "timeout: %s not %s after %s: %s",
                              name, what, o->timeout_text, summary);
            ex = YARDCTL_TIMEOUT;
            break;
        }
        cmd_sleep_ms(deadline - now < POLL_MS ? deadline - now : POLL_MS);
    }
    yardctl_reply_finish(&r);
    return ex;
}

static volatile sig_atomic_t stop_flag;

static void
on_stop(int sig)
{
    stop_flag = 1;
}

/* Prints data.events; returns data.next (or the highest seq seen, or since). */
static long long
print_events(const struct yardctl_opts *o, json_t *data, long long since, size_t *count)
{
    json_t *events = json_object_get(data, "events");
    long long next = since;
    size_t i;
    json_t *ev;

    *count = 0;
    json_array_foreach(events, i, ev)
    {
        long long seq = yardctl_field_int(ev, "seq", -1);
        if (o->json)
            yardctl_show_json(stdout, ev, true);
        else
            yardctl_show_event(stdout, ev);
        if (seq > next)
            next = seq;
        (*count)++;
    }
    fflush(stdout);
    return yardctl_field_int(data, "next", next);
}

int
yardctl_cmd_events(struct yardctl_opts *o, struct yardctl_error *err)
{
    struct yardctl_reply r = {0};
    struct sigaction sa = {0};
    long long since = o->since;
    char path[96];
    int ex = YARDCTL_OK;

    if (!o->follow) {
        snprintf(path, sizeof path, "/v1/events?since=%lld", since);
        ex = cmd_call(o, "GET", path, NULL, &r, err);
        if (ex == YARDCTL_OK) {
            size_t count;
            print_events(o, r.data, since, &count);
        }
        yardctl_reply_finish(&r);
        return ex;
    }
    /* --follow: until SIGINT or SIGTERM, which end the request in flight (through
     * target.stop) and exit 0. No SA_RESTART: a sleep ends early too. */
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    o->target.stop = &stop_flag;
    while (!stop_flag) {
        uint64_t start = cmd_now_ms();
        size_t count;

        snprintf(path, sizeof path, "/v1/events?since=%lld&wait=%d", since, FOLLOW_WAIT_S);
        if (yardctl_api_call(&o->target, "GET", path, NULL, (FOLLOW_WAIT_S + 15) * 1000L, &r,
                             err) == -1) {
            ex = stop_flag || strcmp(err->code, "interrupted") == 0 ? YARDCTL_OK
                                                                    : (int)err->exit_code;
            break;
        }
        since = print_events(o, r.data, since, &count);
        /* A server that answers at once with nothing new must not make us spin. */
        if (count == 0 && cmd_now_ms() - start < 1000)
            cmd_sleep_ms(1000);
    }
    o->target.stop = NULL;
    yardctl_reply_finish(&r);
    return ex;
}

int
yardctl_cmd_reload(struct yardctl_opts *o, struct yardctl_error *err)
{
    struct yardctl_reply r = {0};
    json_t *body = cmd_mutation_body(o);
    int ex = cmd_call(o, "POST", "/v1/reload", body, &r, err);

    if (ex == YARDCTL_OK) {
        if (o->json)
            yardctl_show_json(stdout, r.data, false);
        else
            printf("reload ok: config serial %lld (generation %lld)\n",
                   yardctl_field_int(r.data, "serial", -1), r.generation);
    } else if (strcmp(err->code, "invalid") == 0) {
        /* A refused reload: the FILE:LINE:COL lines on stderr, as `switchyard -t` prints
         * them (with --json too: stdout has them in the error object), then one summary. */
        json_t *lines = json_object_get(err->object, "errors");
        size_t i;
        json_t *line;

        json_array_foreach(lines, i, line)
        {
            if (json_is_string(line))
                fprintf(stderr, "%s\n", json_string_value(line));
        }
        if (json_array_size(lines) > 0)
            snprintf(err->message, sizeof err->message,
                     "invalid: reload refused (%zu error%s); the running config stays",
                     json_array_size(lines), json_array_size(lines) == 1 ? "" : "s");
        else
            snprintf(err->message + strlen(err->message),
                     sizeof err->message - strlen(err->message),
                     "; reload refused, the running config stays");
        ex = YARDCTL_FAILED;
    }
    json_decref(body);
    yardctl_reply_finish(&r);
    return ex;
}

int
yardctl_cmd_metrics(struct yardctl_opts *o, struct yardctl_error *err)
{
    struct yardctl_reply r = {0};
    int ex = YARDCTL_OK;

    if (yardctl_api_raw(&o->target, "GET", "/metrics", NULL, REQUEST_TIMEOUT_MS, &r, err) == -1) {
        ex = (int)err->exit_code;
    } else if (r.status == 200) {
        fwrite(r.body, 1, r.len, stdout);
    } else {
        json_t *env = json_loadb(r.body, r.len, 0, NULL);
        json_t *error = json_object_get(env, "error");
        if (json_is_object(error))
            yardctl_api_error_from(r.status, error, err);
        else
            yardctl_error_set(err, YARDCTL_UNREACHABLE, "bad_answer",
                              "cannot reach switchyard at %s: HTTP %ld answer to GET /metrics",
                              o->target.url ? o->target.url : o->target.socket_path, r.status);
        ex = (int)err->exit_code;
        json_decref(env);
    }
    yardctl_reply_finish(&r);
    return ex;
}
