/* control/yardctl_api.h — yardctl's client side of the control API (control/API.md): one HTTP
 * request over the unix socket or TCP (libcurl), the JSON envelope, and every failure turned into
 * one line for a person plus a yardctl exit code. Nothing in here prints. */
#ifndef CONTROL_YARDCTL_API_H
#define CONTROL_YARDCTL_API_H

#include <signal.h>
#include <stddef.h>

#include <jansson.h>

/* yardctl's exit statuses (DESIGN §8). */
enum yardctl_exit {
    YARDCTL_OK = 0,
    YARDCTL_FAILED = 1,      /* rollout failed or rolled back; a refused reload; API errors */
    YARDCTL_USAGE = 2,       /* bad command line */
    YARDCTL_UNREACHABLE = 3, /* cannot reach the proxy (or it is shutting down) */
    YARDCTL_CONFLICT = 4,    /* if_generation mismatch (HTTP 409, code "conflict") */
    YARDCTL_TIMEOUT = 5,     /* a wait ran out of time */
};

/* Where the control API is. */
struct yardctl_target {
    const char *socket_path; /* borrowed (argv or environ); used when url is NULL */
    const char *url;         /* borrowed (argv): TCP base URL such as http://127.0.0.1:9000, or
                                NULL for the unix socket */
    const char *token;       /* borrowed (lives while the target does): bearer token, or NULL */
    const char *cacert;      /* borrowed (argv): for an https:// url, the CA file (PEM) the
                                server's certificate must chain to; NULL = the system store */
    /* borrowed, or NULL: a request in progress is abandoned soon after this becomes non-zero
       (set from a signal handler) and fails with code "interrupted" */
    const volatile sig_atomic_t *stop;
};

/* A failure: what to tell a person and how to exit. */
struct yardctl_error {
    enum yardctl_exit exit_code;
    char code[32];      /* the API's error code, or "unreachable", "interrupted", "timeout",
                           "usage", "bad_answer" */
    char message[1024]; /* one line without the "yardctl: " prefix */
    json_t *object;     /* owned: the API's error object ({code, message, field?, errors?}), or
                           one made here ({code, message}) */
};

/* An answer. */
struct yardctl_reply {
    long status;          /* HTTP status */
    char *body;           /* owned: NUL-terminated */
    size_t len;           /* of body, without the NUL */
    json_t *envelope;     /* owned: the parsed envelope (yardctl_api_call only), or NULL */
    json_t *data;         /* borrowed from envelope: "data" (JSON null when absent) */
    long long generation; /* the envelope's "generation"; -1 when absent */
};

/* Sets up libcurl; call once from main before any request. Returns 0 or -1. */
int yardctl_api_init(void);

/* Tears down what yardctl_api_init() set up. */
void yardctl_api_cleanup(void);

/* Sends one request: method "GET", "POST" or "PUT"; path starts with '/' and is sent as is (the
 * caller escapes it); body (may be NULL) is sent as JSON, NULL meaning no body for GET and "{}"
 * otherwise. timeout_ms bounds the whole exchange. On 0, *r holds the answer whatever its HTTP
 * status; the caller finishes it. On -1, *err says why nothing usable came back (exit code
 * YARDCTL_UNREACHABLE, or YARDCTL_USAGE for a malformed --url); the caller finishes it. */
int yardctl_api_raw(const struct yardctl_target *t, const char *method, const char *path,
                    const json_t *body, long timeout_ms, struct yardctl_reply *r,
                    struct yardctl_error *err);

/* yardctl_api_raw() and the envelope: 0 when it says ok (r->data, r->generation set); -1 with
 * *err on a transport failure, an answer that is not an envelope (YARDCTL_UNREACHABLE), or an
 * API error (conflict → YARDCTL_CONFLICT, unavailable → YARDCTL_UNREACHABLE, any other →
 * YARDCTL_FAILED; err->object is the API's error object). *r is filled in either case. */
int yardctl_api_call(const struct yardctl_target *t, const char *method, const char *path,
                     const json_t *body, long timeout_ms, struct yardctl_reply *r,
                     struct yardctl_error *err);

/* Turns the error object of a failed envelope (HTTP status, {"code", "message", "field"?}) into
 * *err. Exposed for the raw GET /metrics, whose errors are still envelopes. */
void yardctl_api_error_from(long status, const json_t *error, struct yardctl_error *err);

/* Fills *err from a printf-style message. object becomes {"code": code, "message": ...}. */
void yardctl_error_set(struct yardctl_error *err, enum yardctl_exit exit_code, const char *code,
                       const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Frees what *r / *err own and leaves them empty; both accept an already-empty struct. */
void yardctl_reply_finish(struct yardctl_reply *r);
void yardctl_error_finish(struct yardctl_error *err);

/* The body of a request as the API wants it: compact JSON with reals written the short way
 * ("12.34", not "12.339999999999999"); jansson flags for the same style when printing. */
#define YARDCTL_JSON_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15) | JSON_ENCODE_ANY)

#endif
