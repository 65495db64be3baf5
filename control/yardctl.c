/* control/yardctl.c — yardctl, the operator's client of the control API (DESIGN §8): the command
 * line (global options before or after the command word), help texts, and exit statuses. The
 * commands are in yardctl_cmd.c and yardctl_rollout.c, the HTTP client in yardctl_api.c, the
 * tables in yardctl_show.c. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "conf/units.h"
#include "conf/xalloc.h"
#include "control/yardctl_api.h"
#include "control/yardctl_cmd.h"
#include "control/yardctl_show.h"

#define DEFAULT_SOCKET "/run/switchyard/control.sock"
#define DEFAULT_TIMEOUT "5m"
/* cutover --wait: a rollout of the default plan holds 5 minutes at least, and each step may wait
 * up to progress_deadline (15m) for traffic. */
#define DEFAULT_CUTOVER_TIMEOUT "1h"
#define MAX_TOKEN_BYTES 4096

enum opt_id {
    O_SOCKET = 0,
    O_URL,
    O_TOKEN_FILE,
    O_CACERT,
    O_JSON,
    O_IF_GENERATION,
    O_TIMEOUT,
    O_HELP,
    O_VERSION,
    /* the options of one command or another */
    O_REASON,
    O_FOLLOW,
    O_SINCE,
    O_TO,
    O_PLAN,
    O_ID,
    O_WAIT,
    O_ROLLBACK_ON_TIMEOUT,
    O_COUNT,
};
#define FIRST_COMMAND_OPTION O_REASON
#define BIT(id) (1u << (id))

struct option_def {
    const char *name;
    const char *alias; /* or NULL */
    enum opt_id id;
    bool takes_value;
};

static const struct option_def option_defs[] = {
    {"--socket", NULL, O_SOCKET, true},
    {"--url", NULL, O_URL, true},
    {"--token-file", NULL, O_TOKEN_FILE, true},
    {"--cacert", NULL, O_CACERT, true},
    {"--json", NULL, O_JSON, false},
    {"--if-generation", NULL, O_IF_GENERATION, true},
    {"--timeout", NULL, O_TIMEOUT, true},
    {"--help", "-h", O_HELP, false},
    {"--version", NULL, O_VERSION, false},
    {"--reason", NULL, O_REASON, true},
    {"--follow", "-f", O_FOLLOW, false},
    {"--since", NULL, O_SINCE, true},
    {"--to", NULL, O_TO, true},
    {"--plan", NULL, O_PLAN, true},
    {"--id", NULL, O_ID, true},
    {"--wait", NULL, O_WAIT, false},
    {"--rollback-on-timeout", NULL, O_ROLLBACK_ON_TIMEOUT, false},
};

struct command {
    const char *name;
    yardctl_cmd_fn *fn;
    const char *usage; /* after "yardctl " */
    const char *help;
    unsigned options; /* BIT()s of the command options it takes */
    size_t min_args;
    size_t max_args;
    bool mutates; /* takes --if-generation */
};

static const struct command commands[] = {
    {"status", yardctl_cmd_status, "status",
     "Shows the routing (live and standby pool, standby share, generation, rollout state), one\n"
     "row per pool (role, share, healthy/total servers, in-flight requests, tunnels, request\n"
     "rate, error rate and p99 over the measurement window) and one row per server (address,\n"
     "weight, health, admin state, in-flight, connections, last health check).\n"
     "--json prints the API's status object.\n",
     0, 0, 0, false},
    {"rollback", yardctl_cmd_rollback, "rollback [--reason TEXT]",
     "Sends all traffic to the live pool at once (standby share 0) and returns when every\n"
     "worker routes by the new state. The reason goes to the event and audit logs.\n"
     "Rolling back when the standby share is already 0 succeeds too.\n",
     BIT(O_REASON), 0, 0, true},
    {"weight", yardctl_cmd_weight, "weight POOL=PERCENT",
     "Sets the traffic split by hand, no gates: POOL is the standby pool (it gets PERCENT) or\n"
     "the live pool (it gets PERCENT, the standby pool the rest), by name or as the words\n"
     "standby and live. PERCENT is 0 to 100 with at most two decimals, such as green=12.5,\n"
     "blue=90 or live=90 (both give the standby pool 10%). Reads status first, and sends the\n"
     "generation it saw, so a concurrent change of the live pool is never overwritten.\n"
     "A pool that is neither live nor standby is a usage error (exit 2).\n",
     0, 1, 1, true},
    {"server", yardctl_cmd_server, "server POOL/NAME ready|drain|maint",
     "Sets a server's admin state: ready takes traffic, drain takes no new requests (in-flight\n"
     "ones finish), maint takes nothing and is not health-checked. Kept across restarts.\n",
     0, 2, 2, true},
    {"wait", yardctl_cmd_wait, "wait healthy|drained POOL [--timeout DURATION]",
     "Polls status every 200 ms until the condition holds (exit 0) or --timeout passes\n"
     "(default 5m; exit 5). healthy: the pool has at least one server outside maint, and all\n"
     "of those are up. drained: the pool has no request in flight and no open tunnel.\n"
     "Prints a line whenever the progress changes; --json prints the pool's status when met.\n",
     0, 2, 2, false},
    {"events", yardctl_cmd_events, "events [--follow] [--since SEQ]",
     "Prints the events after SEQ (default 0: all the proxy still holds), one per line:\n"
     "TIME SEQ TYPE key=value...; --json prints one JSON object per line instead.\n"
     "--follow (-f) then waits for new events until interrupted (SIGINT or SIGTERM: exit 0).\n",
     BIT(O_FOLLOW) | BIT(O_SINCE), 0, 0, false},
    {"reload", yardctl_cmd_reload, "reload",
     "Makes the proxy re-read its config file. Prints the new config serial, or the\n"
     "FILE:LINE:COL errors on stderr and exits 1: a refused reload keeps the running config.\n",
     0, 0, 0, true},
    {"metrics", yardctl_cmd_metrics, "metrics",
     "Prints the Prometheus metrics text (GET /metrics) as the proxy sends it; --json has no\n"
     "effect.\n",
     0, 0, 0, false},
    {"cutover", yardctl_cmd_cutover,
     "cutover --to POOL [--plan PLAN] [--id ID] [--wait [--timeout DURATION] "
     "[--rollback-on-timeout]]",
     "Starts a rollout to the standby pool POOL: its share grows step by step, each step held\n"
     "while the gates (health, error rate, p99 of POOL's own traffic) pass; a failed gate rolls\n"
     "back. PLAN is a shorthand, linear:25%/2m (25, 50, 75, 100% held 2m each) or canary:5%/5m\n"
     "(5% for 5m, then 100%), or a JSON array such as '[{\"weight\": 5, \"hold\": \"30s\"},\n"
     "{\"weight\": 100}]'; without it the configured plan. ID makes the request idempotent.\n"
     "Prints the first step and exits 0; a rollout already running, or a POOL without enough\n"
     "healthy servers, exits 4.\n"
     "--wait follows the rollout and prints a line per step and per change of the gates'\n"
     "verdict, until it is promoted (exit 0) or rolled back (exit 1: the failed gate, observed\n"
     "value and threshold). Past --timeout (default " DEFAULT_CUTOVER_TIMEOUT
     " with --wait) it stops waiting\n"
     "(exit 5) and the rollout goes on, unless --rollback-on-timeout rolls it back first.\n"
     "With --json: the rollout object, then (--wait) each of its events, one JSON per line.\n",
     BIT(O_TO) | BIT(O_PLAN) | BIT(O_ID) | BIT(O_WAIT) | BIT(O_ROLLBACK_ON_TIMEOUT), 0, 0, true},
    {"pause", yardctl_cmd_gate, "pause [--reason TEXT]",
     "Holds the rollout at its current step: no gate moves it on (a manual rollback still\n"
     "does). The reason goes to the status, the events and the audit log. Exits 4 when no\n"
     "rollout is progressing.\n",
     BIT(O_REASON), 0, 0, true},
    {"resume", yardctl_cmd_gate, "resume",
     "Lets a paused rollout go on; the current step's hold starts again. Exits 4 when no\n"
     "rollout is paused.\n",
     0, 0, 0, true},
    {"promote", yardctl_cmd_gate, "promote",
     "Ends the rollout at once with the target pool live (100%), whatever the step and the\n"
     "gates. Exits 4 when no rollout is in progress.\n",
     0, 0, 0, true},
};

static const char global_help[] =
    "usage: yardctl [OPTIONS] COMMAND [ARGS]\n"
    "\n"
    "Drives a running switchyard through its control API.\n"
    "\n"
    "commands:\n"
    "  status                           routing, pools and servers\n"
    "  rollback [--reason TEXT]         all traffic back to the live pool, at once\n"
    "  weight POOL=PERCENT              set the split by hand (live=P gives standby 100-P)\n"
    "  server POOL/NAME STATE           admin state of a server: ready, drain or maint\n"
    "  wait healthy|drained POOL        block until the pool is healthy / drained\n"
    "  events [--follow] [--since SEQ]  the event log; --follow waits for more\n"
    "  reload                           re-read the config file\n"
    "  metrics                          the Prometheus metrics text\n"
    "  cutover --to POOL [--plan PLAN] [--id ID] [--wait [--rollback-on-timeout]]\n"
    "                                   start a gated rollout; --wait follows it to the end\n"
    "  pause [--reason TEXT]            hold the rollout at its step\n"
    "  resume                           let a paused rollout go on\n"
    "  promote                          end the rollout now, the target pool live\n"
    "  help [COMMAND]                   this text, or one command's\n"
    "\n"
    "options (before or after the command):\n"
    "  --socket PATH        control socket (default: $SWITCHYARD_SOCKET, else\n"
    "                       " DEFAULT_SOCKET ")\n"
    "  --url URL            the TCP control listener instead, such as http://10.0.0.5:9000\n"
    "  --token-file FILE    bearer token for --url (a trailing newline is ignored)\n"
    "  --cacert FILE        for an https:// --url: trust the CA certificates in FILE (PEM)\n"
    "                       instead of the system store\n"
    "  --json               print the API's data, or its error object, as JSON\n"
    "  --if-generation N    change nothing (exit 4) unless the routing generation is N\n"
    "  --timeout DURATION   how long waits may take, such as 30s or 2m (default " DEFAULT_TIMEOUT
    ";\n"
    "                       " DEFAULT_CUTOVER_TIMEOUT " for cutover --wait)\n"
    "  -h, --help           this text; yardctl COMMAND --help for one command\n"
    "  --version            print the version\n"
    "\n"
    "exit status: 0 ok; 1 failed (an API error, a refused reload, a rollout failed or rolled\n"
    "back); 2 usage; 3 cannot reach the proxy; 4 conflict (the generation moved); 5 timeout.\n";

static const struct option_def *
find_option(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof option_defs / sizeof option_defs[0]; i++) {
        const struct option_def *d = &option_defs[i];
        if ((strlen(d->name) == len && strncmp(d->name, name, len) == 0) ||
            (d->alias != NULL && strlen(d->alias) == len && strncmp(d->alias, name, len) == 0))
            return d;
    }
    return NULL;
}

static const struct command *
find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static void
command_help(FILE *f, const struct command *c)
{
    fprintf(f, "usage: yardctl [OPTIONS] %s\n\n%s", c->usage, c->help);
    fprintf(f,
            "\nOPTIONS: --socket, --url, --token-file, --cacert, --json%s, --timeout; see yardctl "
            "--help.\n",
            c->mutates ? ", --if-generation" : "");
}

/* A usage error: one line, then how to get help (c's usage when known). Returns
 * YARDCTL_USAGE. */
static int usage_error(const struct command *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
usage_error(const struct command *c, const char *fmt, ...)
{
    va_list ap;

    fputs("yardctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (c != NULL)
        fprintf(stderr, "usage: yardctl %s (yardctl %s --help)\n", c->usage, c->name);
    else
        fprintf(stderr, "Try 'yardctl --help'.\n");
    return YARDCTL_USAGE;
}

static const char *
option_name(int id)
{
    for (size_t i = 0; i < sizeof option_defs / sizeof option_defs[0]; i++)
        if ((int)option_defs[i].id == id)
            return option_defs[i].name;
    return "?";
}

/* strerror(e) as it reads mid-sentence: "no such file or directory". */
static const char *
errno_text(int e, char *buf, size_t n)
{
    snprintf(buf, n, "%s", strerror(e));
    if (buf[0] != '\0' && !isupper((unsigned char)buf[1]))
        buf[0] = (char)tolower((unsigned char)buf[0]);
    return buf;
}

/* Reads the bearer token: the file's text without its trailing newline. Returns an owned string,
 * or NULL after printing why. */
static char *
read_token(const char *path)
{
    char *buf = xmalloc(MAX_TOKEN_BYTES + 1);
    char why[128];
    size_t len = 0;
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd == -1) {
        fprintf(stderr, "yardctl: cannot read token file %s: %s\n", path,
                errno_text(errno, why, sizeof why));
        goto fail;
    }
    while ((n = read(fd, buf + len, MAX_TOKEN_BYTES + 1 - len)) > 0)
        len += (size_t)n;
    if (n == -1) {
        fprintf(stderr, "yardctl: cannot read token file %s: %s\n", path,
                errno_text(errno, why, sizeof why));
        goto fail;
    }
    if (len > MAX_TOKEN_BYTES) {
        fprintf(stderr, "yardctl: token file %s is over %d bytes\n", path, MAX_TOKEN_BYTES);
        goto fail;
    }
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    buf[len] = '\0';
    if (len == 0) {
        fprintf(stderr, "yardctl: token file %s is empty\n", path);
        goto fail;
    }
    for (size_t i = 0; i < len; i++) {
        if (iscntrl((unsigned char)buf[i]) || buf[i] == ' ') {
            fprintf(stderr,
                    "yardctl: token file %s: the token holds a space or control "
                    "character\n",
                    path);
            goto fail;
        }
    }
    close(fd);
    return buf;
fail:
    if (fd != -1)
        close(fd);
    xfree(&buf);
    return NULL;
}

/* Whether s is valid UTF-8 (JSON strings must be). */
static bool
is_utf8(const char *s)
{
    json_t *j = json_string(s);
    bool ok = j != NULL;
    json_decref(j);
    return ok;
}

/* Checks --plan before anything is sent: a JSON array (text starting with '[') is parsed into
 * *json (new reference) and sent as is, the proxy checking its steps; anything else must be a
 * shorthand the proxy knows (linear:P/D, canary:P/D), checked with the parser it uses. Returns
 * 0, or -1 after a usage error. */
static int
check_plan(const struct command *c, const char *plan, json_t **json)
{
    const char *p = plan;
    struct conf_plan parsed = {0};
    json_error_t jerr;
    char why[256];

    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    if (*p == '[') {
        *json = json_loads(p, JSON_REJECT_DUPLICATES, &jerr);
        if (*json == NULL) {
            usage_error(c, "bad --plan: invalid JSON: %s (column %d)", jerr.text, jerr.column);
            return -1;
        }
        if (!json_is_array(*json) || json_array_size(*json) == 0) {
            json_decref(*json);
            *json = NULL;
            usage_error(c, "bad --plan: expected a non-empty JSON array of steps such as "
                           "[{\"weight\": 5, \"hold\": \"30s\"}, {\"weight\": 100}]");
            return -1;
        }
        return 0;
    }
    if (conf_parse_plan_shorthand(plan, &parsed, why, sizeof why) == -1) {
        usage_error(c, "bad --plan \"%s\": %s, or a JSON array of steps", plan, why);
        return -1;
    }
    free(parsed.steps);
    return 0;
}

/* Everything after parsing: checks the values, runs the command, reports. */
static int
run(const struct command *c, const char *val[O_COUNT], struct yardctl_opts *o)
{
    struct yardctl_error err = {0};
    char *token = NULL;
    uint64_t v;
    int ex;

    if (val[O_SOCKET] != NULL && val[O_URL] != NULL)
        return usage_error(c, "--socket and --url exclude each other");
    if (val[O_TOKEN_FILE] != NULL && val[O_URL] == NULL)
        return usage_error(c, "--token-file goes with --url (the socket checks the peer's uid "
                              "instead)");
    if (val[O_URL] != NULL && strncmp(val[O_URL], "http://", 7) != 0 &&
        strncmp(val[O_URL], "https://", 8) != 0)
        return usage_error(c, "bad --url \"%s\": expected http://HOST:PORT or https://HOST:PORT",
                           val[O_URL]);
    if (val[O_CACERT] != NULL && (val[O_URL] == NULL || strncmp(val[O_URL], "https://", 8) != 0))
        return usage_error(c, "--cacert goes with an https:// --url");
    if (val[O_CACERT] != NULL && access(val[O_CACERT], R_OK) == -1) {
        char why[128];
        return usage_error(c, "cannot read --cacert %s: %s", val[O_CACERT],
                           errno_text(errno, why, sizeof why));
    }
    if (val[O_IF_GENERATION] != NULL && !c->mutates)
        return usage_error(c, "--if-generation is for commands that change something, not %s",
                           c->name);
    if (val[O_IF_GENERATION] != NULL) {
        if (conf_parse_uint(val[O_IF_GENERATION], LLONG_MAX, &v) == -1)
            return usage_error(c, "bad --if-generation \"%s\": expected a generation such as 7",
                               val[O_IF_GENERATION]);
        o->have_if_generation = true;
        o->if_generation = (long long)v;
    }
    o->timeout_text = val[O_TIMEOUT]                                ? val[O_TIMEOUT]
                      : c->fn == yardctl_cmd_cutover && val[O_WAIT] ? DEFAULT_CUTOVER_TIMEOUT
                                                                    : DEFAULT_TIMEOUT;
    if (conf_parse_duration(o->timeout_text, &o->timeout_ms) == -1 || o->timeout_ms == 0 ||
        o->timeout_ms > 7 * 86400000ull)
        return usage_error(c, "bad --timeout \"%s\": expected a duration such as 30s, 2m or 1h",
                           o->timeout_text);
    if (val[O_SINCE] != NULL) {
        if (conf_parse_uint(val[O_SINCE], LLONG_MAX, &v) == -1)
            return usage_error(c,
                               "bad --since \"%s\": expected an event sequence number such as 12",
                               val[O_SINCE]);
        o->since = (long long)v;
    }
    if (c->fn == yardctl_cmd_cutover && (val[O_TO] == NULL || val[O_TO][0] == '\0'))
        return usage_error(c, "cutover: --to POOL is required");
    if (val[O_ID] != NULL && (val[O_ID][0] == '\0' || strlen(val[O_ID]) > 64))
        return usage_error(c, "bad --id: expected 1 to 64 characters");
    if (val[O_ROLLBACK_ON_TIMEOUT] != NULL && val[O_WAIT] == NULL)
        return usage_error(c, "--rollback-on-timeout goes with --wait");
    for (int id = FIRST_COMMAND_OPTION; id < O_COUNT; id++)
        if (val[id] != NULL && !is_utf8(val[id]))
            return usage_error(c, "the value of %s is not valid UTF-8", option_name(id));
    if (val[O_PLAN] != NULL && check_plan(c, val[O_PLAN], &o->plan_json) == -1)
        return YARDCTL_USAGE;
    o->json = val[O_JSON] != NULL;
    o->reason = val[O_REASON];
    o->follow = val[O_FOLLOW] != NULL;
    o->to = val[O_TO];
    o->plan = val[O_PLAN];
    o->id = val[O_ID];
    o->wait = val[O_WAIT] != NULL;
    o->rollback_on_timeout = val[O_ROLLBACK_ON_TIMEOUT] != NULL;
    o->target.url = val[O_URL];
    o->target.cacert = val[O_CACERT];
    o->target.socket_path = val[O_SOCKET];
    if (o->target.socket_path == NULL) {
        const char *env = getenv("SWITCHYARD_SOCKET");
        o->target.socket_path = env && env[0] ? env : DEFAULT_SOCKET;
    }
    if (val[O_TOKEN_FILE] != NULL) {
        token = read_token(val[O_TOKEN_FILE]);
        if (token == NULL) {
            json_decref(o->plan_json);
            o->plan_json = NULL;
            return YARDCTL_USAGE;
        }
        o->target.token = token;
    }

    if (yardctl_api_init() == -1) {
        fprintf(stderr, "yardctl: cannot initialise libcurl\n");
        json_decref(o->plan_json);
        o->plan_json = NULL;
        xfree(&token);
        return YARDCTL_FAILED;
    }
    ex = c->fn(o, &err);
    yardctl_api_cleanup();
    if (ex != YARDCTL_OK) {
        if (ex == YARDCTL_USAGE) {
            usage_error(c, "%s", err.message);
        } else {
            if (o->json && err.object != NULL)
                yardctl_show_json(stdout, err.object, false);
            fprintf(stderr, "yardctl: %s\n", err.message);
        }
    }
    yardctl_error_finish(&err);
    json_decref(o->plan_json);
    o->plan_json = NULL;
    xfree(&token);
    return ex;
}

int
main(int argc, char **argv)
{
    const char *val[O_COUNT] = {0};
    const struct command *c = NULL;
    const char *word = NULL;
    struct yardctl_opts o = {0};
    bool only_words = false;
    int ex;

    o.args = xcalloc((size_t)argc + 1, sizeof *o.args);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const struct option_def *d;
        const char *eq;
        size_t len;

        if (only_words || a[0] != '-' || a[1] == '\0') {
            if (word == NULL)
                word = a;
            else
                o.args[o.nargs++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_words = true;
            continue;
        }
        eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        len = eq ? (size_t)(eq - a) : strlen(a);
        d = find_option(a, len);
        if (d == NULL) {
            ex = usage_error(NULL, "unknown option \"%.*s\"", (int)len, a);
            goto out;
        }
        if (!d->takes_value && eq != NULL) {
            ex = usage_error(NULL, "%s takes no value", d->name);
            goto out;
        }
        if (d->takes_value && eq == NULL && i + 1 >= argc) {
            ex = usage_error(NULL, "%s needs a value", d->name);
            goto out;
        }
        val[d->id] = !d->takes_value ? "" : eq ? eq + 1 : argv[++i];
    }

    if (word != NULL && strcmp(word, "help") == 0) {
        val[O_HELP] = "";
        word = o.nargs > 0 ? o.args[0] : NULL;
    }
    if (val[O_VERSION] != NULL && val[O_HELP] == NULL) {
        printf("yardctl %s\n", SWITCHYARD_VERSION);
        ex = YARDCTL_OK;
        goto out;
    }
    if (word != NULL) {
        c = find_command(word);
        if (c == NULL) {
            ex = usage_error(NULL, "unknown command \"%s\"", word);
            goto out;
        }
    }
    if (val[O_HELP] != NULL) {
        if (c != NULL)
            command_help(stdout, c);
        else
            fputs(global_help, stdout);
        ex = YARDCTL_OK;
        goto out;
    }
    if (c == NULL) {
        ex = usage_error(NULL, "no command given");
        goto out;
    }
    for (int id = FIRST_COMMAND_OPTION; id < O_COUNT; id++) {
        if (val[id] != NULL && (c->options & BIT(id)) == 0) {
            ex = usage_error(c, "%s takes no option %s", c->name, option_name(id));
            goto out;
        }
    }
    if (o.nargs < c->min_args) {
        ex =
            usage_error(c, "%s: missing argument%s", c->name, c->min_args - o.nargs > 1 ? "s" : "");
        goto out;
    }
    if (o.nargs > c->max_args) {
        ex = usage_error(c, "%s: unexpected argument \"%s\"", c->name, o.args[c->max_args]);
        goto out;
    }
    o.command = c->name;
    ex = run(c, val, &o);
out:
    if (fflush(stdout) == EOF || ferror(stdout)) {
        char why[128];
        fprintf(stderr, "yardctl: cannot write the output: %s\n",
                errno_text(errno, why, sizeof why));
        if (ex == YARDCTL_OK)
            ex = YARDCTL_FAILED;
    }
    xfree(&o.args);
    return ex;
}
