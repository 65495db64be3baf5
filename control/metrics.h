/* control/metrics.h — the /metrics exposition: the Prometheus text format 0.0.4 of the metric
 * families listed in control/API.md, rendered from the measurement history (the same numbers
 * the rollout gates and status read, DESIGN §7), the routing word and the servers' state. */
#ifndef CONTROL_METRICS_H
#define CONTROL_METRICS_H

#include "control/measure.h"
#include "proxy/http.h"
#include "proxy/route.h"
#include "proxy/snapshot.h"
#include "proxy/stats.h"

/* The Content-Type of a GET /metrics response. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4"

struct health;

/* What one rendering reads. Every pointer is borrowed for the duration of metrics_render(). */
struct metrics_input {
    const struct snapshot *snap;      /* the pools and servers to report; NULL = no servers */
    const struct route_word *routing; /* the routing word as loaded now */
    const struct measure *measure;    /* counters, gauges and histograms (latest sample) */
    const struct health *health;      /* may be NULL; not read: server health is srv->health */
    const struct stats_board *board;  /* client connections (live); NULL = 0 */
    int rollout_phase;                /* 0 stable; the rollout engine defines the others */
};

/* Appends the whole exposition to out (out is not reset; on an empty buffer the result is the
 * response body). Every family of API.md's table appears once, with one # HELP and one # TYPE
 * line, even with no traffic; pool series come first, then one series per server of in->snap in
 * config order. Counters, gauges and histograms come from measure_pool_totals() and
 * measure_server_totals() (as of the latest sample; a server not sampled yet reports zeros);
 * client connections from the board's listener blocks; server health and admin state from the
 * servers' atomics. switchyard_request_duration_seconds exposes fixed bounds (1 ms .. 10 s and
 * +Inf) whose cumulative counts are those of the internal buckets that end at or below each bound
 * (so a count may miss up to one internal bucket, ~6% of the bound); _sum is estimated from the
 * bucket midpoints. Main thread (measure is main-thread only). */
void metrics_render(struct http_buf *out, const struct metrics_input *in);

/* Appends s escaped as a label value of the text format: backslash, double quote and newline
 * become \\, \" and \n; every other byte is copied. Any thread. */
void metrics_escape_label(struct http_buf *out, const char *s);

#endif
