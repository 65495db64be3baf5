/* control/api_body.h — the control API's request-body checks and reply envelopes, apart from
 * evhttp and the daemon: bytes or JSON in, a checked request or a refusal out. The handlers in
 * api_routing.c and api_rollout.c call these before they change anything, so an invalid body
 * changes no state; tests/fuzz/fuzz_control.c drives them with arbitrary bodies. Pure; any
 * thread. Only for control/api*.c and the tests. */
#ifndef CONTROL_API_BODY_H
#define CONTROL_API_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "conf/conf.h"

/* The largest request body read (413 above). */
#define API_MAX_BODY (64 * 1024)

/* Why a body is refused: what the error envelope says (control/API.md). */
struct api_refusal {
    int status;        /* 400, 409, 413 */
    const char *code;  /* static: "invalid", "conflict" */
    const char *field; /* the member at fault, or NULL; borrowed from the body or static */
    char message[512];
};

/* The body as a JSON object ({} when len is 0), or NULL with no filled (413 over API_MAX_BODY,
 * 400 for malformed JSON, duplicate keys or anything but an object). Caller owns the result. */
json_t *api_body_parse(const char *data, size_t len, struct api_refusal *no);

/* 0 when every key of body is in allowed (NULL-terminated), else -1 with no (400). */
int api_body_fields(json_t *body, const char *const *allowed, struct api_refusal *no);

/* 0 when body's if_generation is absent or equal to generation, else -1 with no (400 when it
 * is not a non-negative integer, 409 for another generation). */
int api_body_generation(json_t *body, uint64_t generation, struct api_refusal *no);

/* POST /v1/reload, /v1/servers/...: {if_generation?}. 0 or -1 with no. */
int api_check_plain(json_t *body, uint64_t generation, struct api_refusal *no);

/* POST /v1/rollback, /v1/pause, /v1/resume, /v1/promote: {reason?, if_generation?}. 0 with
 * *reason (borrowed from body, NULL when absent), or -1 with no. */
int api_check_reason(json_t *body, uint64_t generation, const char **reason,
                     struct api_refusal *no);

/* PUT /v1/weights: {standby_percent, if_generation?}. 0 with *bp (0..10000), or -1 with no. */
int api_check_weights(json_t *body, uint64_t generation, uint32_t *bp, struct api_refusal *no);

/* A checked cutover request. */
struct api_cutover {
    enum pool_id to;
    const char *id;        /* borrowed from the body; NULL when absent */
    bool has_plan;         /* the request carries a plan (checked by rollout_plan_check) */
    struct conf_plan plan; /* owned steps when has_plan: api_cutover_finish */
};

/* POST /v1/cutover: {to, plan?, id?, if_generation?}. 0 with out filled, or -1 with no (out
 * then holds nothing). */
int api_check_cutover(json_t *body, uint64_t generation, struct api_cutover *out,
                      struct api_refusal *no);

/* Frees what a checked cutover holds. */
void api_cutover_finish(struct api_cutover *c);

/* The envelopes every reply uses: {"ok": true, "generation", "data"} (data stolen) and
 * {"ok": false, "generation", "error": {code, message, field?}}. Never NULL: text that is not
 * valid UTF-8 (a message cut inside a character) is repaired, so a reply is always JSON. */
json_t *api_envelope_ok(uint64_t generation, json_t *data);
json_t *api_envelope_error(uint64_t generation, const char *code, const char *field,
                           const char *message);

/* A JSON string of s, with each byte that is not part of valid UTF-8 replaced by '?'. */
json_t *api_json_text(const char *s);

#endif
