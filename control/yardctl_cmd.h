/* control/yardctl_cmd.h — yardctl's commands: each turns parsed options into control API
 * requests, prints the outcome (human text, or JSON with --json) and returns an exit status. */
#ifndef CONTROL_YARDCTL_CMD_H
#define CONTROL_YARDCTL_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "control/yardctl_api.h"

/* The command line, parsed and checked for syntax by yardctl.c. */
struct yardctl_opts {
    struct yardctl_target target;
    bool json;               /* --json */
    bool have_if_generation; /* --if-generation N given */
    long long if_generation;
    uint64_t timeout_ms;      /* --timeout, for waits */
    const char *timeout_text; /* borrowed (argv or a literal): --timeout as written, "5m" */
    const char *reason;       /* borrowed (argv), or NULL: rollback / pause --reason */
    bool follow;              /* events --follow */
    long long since;          /* events --since, 0 by default */
    const char *to;           /* borrowed (argv), or NULL: cutover --to */
    const char *plan;         /* borrowed (argv), or NULL: cutover --plan */
    json_t *plan_json;        /* borrowed (yardctl.c owns it), or NULL: --plan when it is a JSON
                                 array, parsed; the plan is then sent as that array */
    const char *id;           /* borrowed (argv), or NULL: cutover --id */
    bool wait;                /* cutover --wait */
    bool rollback_on_timeout; /* cutover --wait --rollback-on-timeout */
    char **args;              /* borrowed (argv): the words after the command */
    size_t nargs;
    const char *command; /* borrowed (argv): the command word */
};

/* A command. Returns YARDCTL_OK, or another exit status with *err filled (the caller prints
 * err->message and, with --json, err->object; YARDCTL_USAGE adds the command's usage line).
 * Output goes to stdout. Runs on the only thread. */
typedef int yardctl_cmd_fn(struct yardctl_opts *o, struct yardctl_error *err);

yardctl_cmd_fn yardctl_cmd_status;
yardctl_cmd_fn yardctl_cmd_rollback;
yardctl_cmd_fn yardctl_cmd_weight;
yardctl_cmd_fn yardctl_cmd_server;
yardctl_cmd_fn yardctl_cmd_wait;
yardctl_cmd_fn yardctl_cmd_events;
yardctl_cmd_fn yardctl_cmd_reload;
yardctl_cmd_fn yardctl_cmd_metrics;
yardctl_cmd_fn yardctl_cmd_cutover;
/* pause (with --reason), resume, promote: POST /v1/<command>. */
yardctl_cmd_fn yardctl_cmd_gate;

#endif
