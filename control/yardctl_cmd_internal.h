/* control/yardctl_cmd_internal.h — what yardctl's command files (yardctl_cmd.c,
 * yardctl_rollout.c) share: the clock and the request helpers defined in yardctl_cmd.c. Only for
 * those files. */
#ifndef CONTROL_YARDCTL_CMD_INTERNAL_H
#define CONTROL_YARDCTL_CMD_INTERNAL_H

#include <stdint.h>

#include <jansson.h>

#include "control/yardctl_api.h"
#include "control/yardctl_cmd.h"

/* CLOCK_MONOTONIC in milliseconds: for deadlines. */
uint64_t cmd_now_ms(void);

/* Sleeps ms milliseconds, or less when a signal arrives (callers loop and check their deadline or
 * their stop flag). */
void cmd_sleep_ms(uint64_t ms);

/* yardctl_api_call() on o->target with the ordinary request timeout (30 s). Returns YARDCTL_OK
 * with *r filled, or the exit status with *err filled; either way the caller finishes *r. */
int cmd_call(const struct yardctl_opts *o, const char *method, const char *path, const json_t *body,
             struct yardctl_reply *r, struct yardctl_error *err);

/* A mutation's body (the caller owns it): {} plus if_generation when --if-generation was
 * given. */
json_t *cmd_mutation_body(const struct yardctl_opts *o);

#endif
