/* control/health.h — the active health checker of DESIGN §5: HTTP checks of every server with
 * the libcurl multi interface driven by the main thread's event_base (no blocking call, no
 * thread per check), and the rise/fall state machine that writes server->health. */
#ifndef CONTROL_HEALTH_H
#define CONTROL_HEALTH_H

#include <stdbool.h>
#include <stdint.h>

#include "proxy/snapshot.h"

struct event_base;
struct health;

/* The longest reason kept, including the NUL ("status 503", "timeout", a curl error text, "TLS:
 * " and libcurl's account of a certificate or handshake failure, which names hosts). */
#define HEALTH_REASON_LEN 192

/* The longest body prefix searched for body_contains: the text must start within the first
 * HEALTH_BODY_PREFIX_BYTES bytes of the response body. */
#define HEALTH_BODY_PREFIX_BYTES 4096

/* Called on every state change of a server, unknown → up/down included, on the main thread,
 * after server->health has been stored. srv is borrowed (lives at least while the callback
 * runs); reason is "ok" for a change to up, else the failure that decided it ("timeout",
 * "connection refused", "status 503", "body mismatch", "TLS: " and libcurl's text for a
 * handshake or certificate failure, or a libcurl error text). The callback
 * must not call health_set_snapshot() or health_destroy() (it runs inside the checker's event
 * processing); anything else is fine. */
typedef void (*health_change_fn)(void *arg, const struct server *srv, enum health_state from,
                                 enum health_state to, const char *reason);

/* Called once by health_first_round(), from its own event on the main thread: it may do
 * anything, including health_destroy(). */
typedef void (*health_done_fn)(void *arg);

/* What the checker knows about one server (for the control API's status). */
struct health_status {
    enum health_state state; /* the checker's state (equal to server->health) */
    uint32_t passes;         /* consecutive passes (0 after a failure) */
    uint32_t failures;       /* consecutive failures (0 after a pass) */
    uint64_t checks;         /* checks completed and counted (maint results are not) */
    bool checked;            /* has had at least one counted result */
    bool in_flight;          /* a check is running now */
    bool maint;              /* in maintenance: not checked */
    uint64_t last_ms;        /* CLOCK_MONOTONIC ms when the last counted check ended, 0 = none */
    uint32_t last_duration_ms;
    char reason[HEALTH_REASON_LEN]; /* last counted result: "ok" or the failure, "" = none */
};

/* Makes a checker whose checks and timers run on base (borrowed: must outlive the checker).
 * fn (may be NULL) is told of every state change. No server is checked until
 * health_set_snapshot(). curl_global_init() must have been called. Returns NULL only when
 * libcurl cannot make a multi handle. Main thread (the thread running base). */
struct health *health_create(struct event_base *base, health_change_fn fn, void *arg);

/* Checks the servers of snap from now on (a ref is taken; the previous one is dropped). A
 * server of a pool with tls: is checked over https with the pool's verify, ca and sni (the name
 * verified and sent as SNI is sni when set, else the server's IP address), as the proxy's own
 * upstream connections are.
 * A server of the previous snapshot that is still there — the same struct server, or one with
 * the same pool, name and address (a weight change makes a new struct server) — keeps its
 * state, counters, schedule and any check in flight (restarted when its pool's path, host,
 * expect, body, timeout or tls changed); a server new to the checker is set to HEALTH_UNKNOWN (no
 * change callback for that) and checked right away, and its first result decides (a batch of
 * new servers then spreads its later checks over the interval); a server that is gone stops
 * being checked (a check in flight is cancelled). Main thread; not from a health_change_fn. */
void health_set_snapshot(struct health *h, struct snapshot *snap);

/* Calls done(arg) once every server not in maintenance has a first result, or when the largest
 * pool timeout plus a 100 ms margin has passed since this call, whichever comes first; always
 * from an event (never from inside this call), so at the earliest on the next loop turn. A new
 * call replaces a pending one (whose done is then never called). Main thread. */
void health_first_round(struct health *h, health_done_fn done, void *arg);

/* Starts a check of srv now (e.g. when it leaves maintenance) unless one is in flight. Returns
 * 0, or -1 when srv is not checked (not in the snapshot) or is in maintenance. Main thread. */
int health_check_now(struct health *h, const struct server *srv);

/* Fills out for srv. Returns 0, or -1 when srv is not checked. Main thread. */
int health_server_status(const struct health *h, const struct server *srv,
                         struct health_status *out);

/* Cancels every check and timer, frees everything (libcurl handles included), drops the
 * snapshot ref and clears *h. server->health keeps its last value. Accepts NULL and *h ==
 * NULL. Main thread; not from a health_change_fn. */
void health_destroy(struct health **h);

/* "unknown", "up", "down". */
const char *health_state_name(enum health_state s);

#endif
