/* control/yardctl_show.h — yardctl's human output: the status tables, event lines, and the
 * number formats (percentages, durations) the commands share. Reads API data, never changes it. */
#ifndef CONTROL_YARDCTL_SHOW_H
#define CONTROL_YARDCTL_SHOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

/* Typed reads of o[key] with a default for a missing or mistyped member (o may be NULL).
 * yardctl_field_num accepts integers and reals. */
const char *yardctl_field_str(const json_t *o, const char *key, const char *def);
long long yardctl_field_int(const json_t *o, const char *key, long long def);
double yardctl_field_num(const json_t *o, const char *key, double def);

/* "25%", "12.5%", "33.33%": pct rounded to two decimals, trailing zeros dropped. */
void yardctl_show_percent(char *buf, size_t n, double pct);

/* "0.4 ms", "12.0 ms", "1.25 s": a duration given in microseconds. */
void yardctl_show_micros(char *buf, size_t n, double us);

/* "live blue 75%, standby green 25%" for a routing object ({live, standby, standby_percent,
 * standby_bp}; standby_bp wins when present, being exact). */
void yardctl_show_split(char *buf, size_t n, const json_t *routing);

/* j as JSON and a newline: indented, or on one line (JSON lines). */
void yardctl_show_json(FILE *f, const json_t *j, bool one_line);

/* The `yardctl status` tables for GET /v1/status data: a routing line, one row per pool, one row
 * per server. */
void yardctl_show_status(FILE *f, json_t *data);

/* One event as "TIME SEQ TYPE key=value ...", the keys in the server's order. */
void yardctl_show_event(FILE *f, json_t *ev);

/* The overall gate verdict in a rollout object (status "rollout", or a rollout or gate event,
 * which carry the same fields): FAIL when an evaluated gate failed, HOLDING when the window has
 * too few requests for a verdict, PASS when every evaluated gate passed, NONE before the first
 * evaluation. */
enum yardctl_verdict {
    YARDCTL_VERDICT_NONE = 0,
    YARDCTL_VERDICT_PASS,
    YARDCTL_VERDICT_FAIL,
    YARDCTL_VERDICT_HOLDING,
};
enum yardctl_verdict yardctl_rollout_verdict(const json_t *ro);

/* What the verdict rests on: "error_rate 0.0000 <= 0.0100, p99 12.3ms <= 800ms" (every evaluated
 * gate for PASS, the failed ones for FAIL), "12 requests in the window, need 50" (HOLDING), or ""
 * (NONE). */
void yardctl_show_gates(char *buf, size_t n, const json_t *ro);

/* "step 2/4 (25% to green)". */
void yardctl_show_rollout_step(char *buf, size_t n, const json_t *ro);

/* "12s", "2m", "2m30s", "1h5m": seconds, rounded. */
void yardctl_show_seconds(char *buf, size_t n, double s);

/* The `status` line about the rollout, after "rollout: ": "progressing to green, step 2/4 at
 * 25%, held 12s of 30s, gates pass (...)", "paused at step 2/4 (25% to green): REASON; gates
 * ...", or "stable; last rollout blue to green: promoted: ..." Returns false (and buf "") when
 * there is nothing to say: stable with no finished rollout. */
bool yardctl_show_rollout(char *buf, size_t n, const json_t *ro);

#endif
