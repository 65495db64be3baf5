/* tests/origin/respond.h — what the test origin answers: routes, query parameters and the
 * response bytes (heads, JSON bodies, generated /bytes bodies). Event-loop thread only. */
#ifndef TESTS_ORIGIN_RESPOND_H
#define TESTS_ORIGIN_RESPOND_H

#include "tests/origin/conn.h"

/* Chooses and queues the answer to the complete request in c->req (parser paused after it).
 * On return c->state is CONN_READING when the whole response is queued (c->close_after says
 * whether the connection ends after it), or the asynchronous state it started (DELAYED,
 * STREAMING, HOLDING, TUNNEL). Returns 0, or -1 when it closed the connection (c is freed). */
int respond_dispatch(struct conn *c);

/* Queues more of a /bytes body, up to CONN_OUT_HIGH_BYTES in the output. Returns 1 once the
 * whole body (and a chunked terminator) is queued, else 0. */
int respond_stream_fill(struct conn *c);

/* Queues an error response `status` (400, 414, 431) with Connection: close and sets
 * c->close_after. `why` goes into the body. */
void respond_error(struct conn *c, int status, const char *why);

#endif
