/* tests/fuzz/fuzz_control.c — fuzz target for the control API's request bodies: the checks the
 * handlers of control/api_routing.c and control/api_rollout.c run before they change anything
 * (control/api_body.c), on arbitrary bytes, for every endpoint. A refusal is a 4xx with a stable
 * error code and a field, when named, from the body; the reply envelope is always JSON that
 * parses back; an accepted body yields values in range. State is out of reach by construction:
 * the checks get the current generation, nothing else. */
#define FUZZ_NAME "fuzz_control"
#include "control/api_body.h"

#include <stdbool.h>
#include <string.h>

#include "control/rollout.h"
#include "fuzz_util.h"

/* Input layout: byte 0 the endpoint, byte 1 the current generation; the rest is the body. */
#define CONF_BYTES 2

enum endpoint {
    EP_ROLLBACK = 0, /* and pause, resume, promote: {reason?, if_generation?} */
    EP_WEIGHTS,
    EP_CUTOVER,
    EP_PLAIN, /* reload, servers/POOL/NAME/STATE */
    EP_COUNT,
};

static bool
stable_code(const char *code)
{
    static const char *const codes[] = {"conflict", "invalid", "not_found", "forbidden",
                                        "unavailable"};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (code && strcmp(code, codes[i]) == 0)
            return true;
    return false;
}

/* The reply as evhttp would send it: dumped, parsed back, with the envelope's members. */
static void
check_reply(json_t *env, bool ok, uint64_t generation)
{
    CHECK(env != NULL);
    char *text = json_dumps(env, JSON_COMPACT);
    CHECK(text != NULL);
    json_error_t jerr;
    json_t *back = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    CHECK(back != NULL);
    CHECK(json_is_object(back));
    CHECK(json_is_boolean(json_object_get(back, "ok")));
    CHECK(json_is_true(json_object_get(back, "ok")) == ok);
    json_t *g = json_object_get(back, "generation");
    CHECK(json_is_integer(g) && (uint64_t)json_integer_value(g) == generation);
    if (!ok) {
        json_t *e = json_object_get(back, "error");
        CHECK(json_is_object(e));
        CHECK(stable_code(json_string_value(json_object_get(e, "code"))));
        CHECK(json_is_string(json_object_get(e, "message")));
        json_t *f = json_object_get(e, "field");
        CHECK(f == NULL || json_is_string(f));
    } else {
        CHECK(json_object_get(back, "data") != NULL);
    }
    json_decref(back);
    free(text);
}

static void
check_refusal(const struct api_refusal *no, json_t *body, uint64_t generation)
{
    CHECK(no->status == 400 || no->status == 409 || no->status == 413);
    CHECK(stable_code(no->code));
    CHECK(no->status != 409 || strcmp(no->code, "conflict") == 0);
    CHECK(memchr(no->message, '\0', sizeof(no->message)) != NULL);
    CHECK(no->message[0] != '\0');
    /* A named field is a member of the body or one the endpoint needs (the body is gone: parse
     * refusals name none). */
    static const char *const known[] = {"if_generation", "reason", "standby_percent", "to", "id",
                                        "plan"};
    if (no->field && body) {
        bool found = json_object_get(body, no->field) != NULL;
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            found = found || strcmp(no->field, known[i]) == 0;
        const char *key;
        json_t *v;
        json_object_foreach(body, key, v)
        {
            found = found || key == no->field; /* a key with a NUL is found by pointer */
        }
        CHECK(found);
    }
    if (body == NULL)
        CHECK(no->field == NULL);
    json_t *env = api_envelope_error(generation, no->code, no->field, no->message);
    check_reply(env, false, generation);
    json_decref(env);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t c0 = size > 0 ? data[0] : 0;
    uint64_t generation = size > 1 ? data[1] % 4 : 0;
    const char *text = (const char *)data + (size > CONF_BYTES ? CONF_BYTES : size);
    size_t len = size > CONF_BYTES ? size - CONF_BYTES : 0;

    struct api_refusal no;
    memset(&no, 0, sizeof(no));
    json_t *body = api_body_parse(text, len, &no);
    if (body == NULL) {
        check_refusal(&no, NULL, generation);
        return 0;
    }
    CHECK(json_is_object(body));
    /* The checks only read the body: it is the same before and after. */
    char *before = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
    CHECK(before != NULL);
    int rc = -1;
    json_t *g = json_object_get(body, "if_generation");
    switch ((enum endpoint)(c0 % EP_COUNT)) {
    case EP_ROLLBACK: {
        const char *reason = NULL;
        rc = api_check_reason(body, generation, &reason, &no);
        if (rc == 0) {
            json_t *r = json_object_get(body, "reason");
            CHECK(r == NULL ? reason == NULL : reason == json_string_value(r));
        }
        break;
    }
    case EP_WEIGHTS: {
        uint32_t bp = 99999;
        rc = api_check_weights(body, generation, &bp, &no);
        if (rc == 0) {
            CHECK(bp <= 10000);
            double v = json_number_value(json_object_get(body, "standby_percent"));
            CHECK(v >= 0.0 && v <= 100.0);
            CHECK(v * 100.0 - bp < 0.5 && bp - v * 100.0 < 0.5);
        }
        break;
    }
    case EP_CUTOVER: {
        struct api_cutover cut;
        rc = api_check_cutover(body, generation, &cut, &no);
        if (rc == 0) {
            CHECK(cut.to == POOL_BLUE || cut.to == POOL_GREEN);
            CHECK(cut.id == NULL || (strlen(cut.id) >= 1 && strlen(cut.id) <= 64));
            CHECK(cut.has_plan == (json_object_get(body, "plan") != NULL));
            if (cut.has_plan) {
                char err[256];
                CHECK(rollout_plan_check(&cut.plan, err, sizeof(err)) == 0);
                CHECK(cut.plan.steps[cut.plan.nsteps - 1].weight_bp == 10000);
            }
            api_cutover_finish(&cut);
        } else {
            CHECK(cut.plan.steps == NULL && !cut.has_plan);
        }
        break;
    }
    case EP_PLAIN:
    case EP_COUNT:
        rc = api_check_plain(body, generation, &no);
        if (rc == 0)
            CHECK(json_object_size(body) <= 1);
        break;
    }
    if (rc == 0) {
        /* Accepted: the generation matched (or was not given). */
        CHECK(g == NULL || (json_is_integer(g) && (uint64_t)json_integer_value(g) == generation));
        json_t *env = api_envelope_ok(generation, json_object());
        check_reply(env, true, generation);
        json_decref(env);
    } else {
        CHECK(rc == -1);
        CHECK(no.status != 413); /* only for the size of the bytes */
        check_refusal(&no, body, generation);
        if (g != NULL && json_is_integer(g) && json_integer_value(g) >= 0 &&
            (uint64_t)json_integer_value(g) != generation && no.status != 409)
            CHECK(strcmp(no.code, "invalid") == 0); /* an unknown field is found first */
    }
    char *after = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
    CHECK(after != NULL && strcmp(before, after) == 0);
    free(before);
    free(after);
    json_decref(body);
    return 0;
}
