/* control/api_internal.h — what the control API's files share (api.c: the server core;
 * api_routing.c, api_rollout.c, api_events.c: the endpoints): the server's state, the reply and
 * request-body helpers, and the handlers that api.c dispatches to. Only for control/api*.c. */
#ifndef CONTROL_API_INTERNAL_H
#define CONTROL_API_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/http.h>
#include <jansson.h>

/* The longest an events long-poll is held (the ?wait= cap); the HTTP timeout allows for it. */
#define API_MAX_WAIT_S 60

struct daemon;
struct audit;
struct tls_ctx;
struct waiter; /* a long-poll waiting for events: private to api_events.c */
struct api_refusal;

struct api_listener {
    struct api *a; /* borrowed: the owner */
    bool tcp;
};

struct api {
    struct daemon *d;
    struct evhttp *unix_http; /* owned */
    struct evhttp *tcp_http;  /* owned; NULL without control.listen */
    struct api_listener lunix;
    struct api_listener ltcp;
    char *socket_path; /* owned */
    ino_t socket_ino;
    char *token;         /* owned; NULL without control.listen */
    struct tls_ctx *tls; /* owned; NULL without control.tls (then TCP is plain HTTP) */
    char *token_name;    /* owned: how the audit log names a token peer */
    struct audit *audit; /* owned; NULL without log.audit */
    struct waiter *waiters;
    size_t nwaiters;
    bool shutting_down;
    int answered_status;       /* what the last reply said (for the audit log) */
    const char *answered_code; /* static string or NULL */
};

/* --- replies and request bodies (api.c); all on the main thread --- */

/* The routing generation now: what every envelope carries. */
uint64_t api_generation(const struct api *a);

/* Answers req with status and body as JSON (body is stolen). Does not record the answer in
 * a->answered_status/answered_code: a caller that bypasses api_reply_ok/api_reply_error sets
 * them itself. */
void api_send_json(struct evhttp_request *req, int status, json_t *body);

/* Answers 200 with the ok envelope around data (stolen), and records it for the audit log. */
void api_reply_ok(struct api *a, struct evhttp_request *req, json_t *data);

/* Answers status with the error envelope {code, message, field (when not NULL)} and records it
 * for the audit log. code is a static string (control/API.md's error codes). */
void api_reply_error(struct api *a, struct evhttp_request *req, int status, const char *code,
                     const char *field, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Answers with the refusal a body check (api_body.h) made, and records it for the audit log. */
void api_reply_refusal(struct api *a, struct evhttp_request *req, const struct api_refusal *no);

/* --- handlers, called by api.c's dispatch once the peer is authorized. The mutations get the
 * request body (a JSON object, borrowed) and peer (the text naming the peer, for events); they
 * always answer and return the HTTP status they answered with. --- */

/* GET /v1/status (api_routing.c). */
void api_handle_status(struct api *a, struct evhttp_request *req);

/* POST /v1/rollback, PUT /v1/weights, POST /v1/servers/POOL/NAME/STATE, POST /v1/reload
 * (api_routing.c). */
int api_handle_rollback(struct api *a, struct evhttp_request *req, json_t *body, const char *peer);
int api_handle_weights(struct api *a, struct evhttp_request *req, json_t *body, const char *peer);
int api_handle_server(struct api *a, struct evhttp_request *req, json_t *body,
                      const char *pool_name, const char *name, const char *state, const char *peer);
int api_handle_reload(struct api *a, struct evhttp_request *req, json_t *body);

/* POST /v1/cutover (api_rollout.c). */
int api_handle_cutover(struct api *a, struct evhttp_request *req, json_t *body, const char *peer);

/* POST /v1/pause, /v1/resume, /v1/promote: what is "pause", "resume" or "promote"
 * (api_rollout.c). */
int api_handle_control(struct api *a, struct evhttp_request *req, json_t *body, const char *what,
                       const char *peer);

/* GET /v1/events?since=N&wait=S: answers at once when there is news (or no wait, or shutdown), else
 * holds req as a waiter on a->waiters until an event, the wait, or the client's close
 * (api_events.c). query is borrowed, may be NULL. */
void api_handle_events(struct api *a, struct evhttp_request *req, const char *query);

/* GET /metrics in Prometheus text (api_events.c). */
void api_handle_metrics(struct api *a, struct evhttp_request *req);

/* Answers a waiting long-poll with the events it has not seen and frees w (it leaves
 * a->waiters). Used to let every waiter go: while (a->waiters) api_waiter_answer(a->waiters). */
void api_waiter_answer(struct waiter *w);

#endif
