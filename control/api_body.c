/* control/api_body.c — the control API's request-body checks and reply envelopes (see
 * api_body.h): what a body may hold for each endpoint, with the refusal the reply carries. */
#include "control/api_body.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/xalloc.h"
#include "control/rollout.h"

__attribute__((format(printf, 5, 6))) static int
refuse(struct api_refusal *no, int status, const char *code, const char *field, const char *fmt,
       ...)
{
    no->status = status;
    no->code = code;
    no->field = field;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(no->message, sizeof(no->message), fmt, ap);
    va_end(ap);
    return -1;
}

json_t *
api_body_parse(const char *data, size_t len, struct api_refusal *no)
{
    if (len > API_MAX_BODY) {
        refuse(no, 413, "invalid", NULL, "request body over %d bytes", API_MAX_BODY);
        return NULL;
    }
    if (len == 0)
        return json_object();
    json_error_t jerr;
    json_t *j = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL) {
        refuse(no, 400, "invalid", NULL, "malformed JSON at line %d column %d: %s", jerr.line,
               jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        refuse(no, 400, "invalid", NULL, "the request body must be a JSON object");
        return NULL;
    }
    return j;
}

int
api_body_fields(json_t *body, const char *const *allowed, struct api_refusal *no)
{
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        bool known = false;
        for (const char *const *k = allowed; *k; k++)
            if (strcmp(*k, key) == 0)
                known = true;
        if (!known)
            return refuse(no, 400, "invalid", key, "unknown field \"%s\"", key);
    }
    return 0;
}

int
api_body_generation(json_t *body, uint64_t generation, struct api_refusal *no)
{
    json_t *g = json_object_get(body, "if_generation");
    if (g == NULL)
        return 0;
    if (!json_is_integer(g) || json_integer_value(g) < 0)
        return refuse(no, 400, "invalid", "if_generation", "must be a non-negative integer");
    if ((uint64_t)json_integer_value(g) != generation)
        return refuse(no, 409, "conflict", "if_generation", "generation is %llu, not %lld",
                      (unsigned long long)generation, (long long)json_integer_value(g));
    return 0;
}

/* The fields, then the generation: every endpoint starts so. */
static int
fields_and_generation(json_t *body, const char *const *allowed, uint64_t generation,
                      struct api_refusal *no)
{
    if (api_body_fields(body, allowed, no) == -1)
        return -1;
    return api_body_generation(body, generation, no);
}

int
api_check_plain(json_t *body, uint64_t generation, struct api_refusal *no)
{
    static const char *const fields[] = {"if_generation", NULL};
    return fields_and_generation(body, fields, generation, no);
}

int
api_check_reason(json_t *body, uint64_t generation, const char **reason, struct api_refusal *no)
{
    static const char *const fields[] = {"reason", "if_generation", NULL};
    *reason = NULL;
    if (fields_and_generation(body, fields, generation, no) == -1)
        return -1;
    json_t *r = json_object_get(body, "reason");
    if (r && !json_is_string(r))
        return refuse(no, 400, "invalid", "reason", "must be a string");
    *reason = r ? json_string_value(r) : NULL;
    return 0;
}

int
api_check_weights(json_t *body, uint64_t generation, uint32_t *bp, struct api_refusal *no)
{
    static const char *const fields[] = {"standby_percent", "if_generation", NULL};
    if (fields_and_generation(body, fields, generation, no) == -1)
        return -1;
    json_t *p = json_object_get(body, "standby_percent");
    if (p == NULL || !json_is_number(p))
        return refuse(no, 400, "invalid", "standby_percent", "a number from 0 to 100 is required");
    double v = json_number_value(p);
    double x = v * 100.0;
    /* The range first: converting a double beyond long long's range is undefined. */
    long long ibp = v >= 0.0 && v <= 100.0 ? (long long)(x + 0.5) : -1;
    if (ibp < 0 || x - (double)ibp > 1e-6 || (double)ibp - x > 1e-6)
        return refuse(no, 400, "invalid", "standby_percent",
                      "must be from 0 to 100 with at most two decimals, found %g", v);
    *bp = (uint32_t)ibp;
    return 0;
}

/* A plan from a cutover request: a shorthand string, or a list of {weight: percent, hold:
 * duration string or seconds}. 0, or -1 with no (plan then holds nothing). */
static int
read_plan(json_t *j, struct conf_plan *plan, struct api_refusal *no)
{
    char err[256];
    if (json_is_string(j)) {
        if (conf_parse_plan_shorthand(json_string_value(j), plan, err, sizeof(err)) == -1)
            return refuse(no, 400, "invalid", "plan", "%s", err);
        return 0;
    }
    if (!json_is_array(j) || json_array_size(j) == 0 || json_array_size(j) > CONF_PLAN_MAX_STEPS)
        return refuse(no, 400, "invalid", "plan",
                      "a shorthand (linear:10%%/1m, canary:5%%/5m) or 1..%d steps {weight, hold}",
                      CONF_PLAN_MAX_STEPS);
    plan->nsteps = json_array_size(j);
    plan->steps = xcalloc(plan->nsteps, sizeof(*plan->steps));
    for (size_t i = 0; i < plan->nsteps; i++) {
        json_t *st = json_array_get(j, i);
        json_t *w = json_object_get(st, "weight");
        json_t *h = json_object_get(st, "hold");
        char wtext[32];
        uint32_t bp = 0;
        uint64_t hold = 0;
        bool ok = json_is_object(st) && json_is_number(w) && json_object_size(st) <= 2 &&
                  (json_object_size(st) == 1 || h != NULL);
        if (ok) {
            snprintf(wtext, sizeof(wtext), "%.6g", json_number_value(w));
            ok = conf_parse_percent(wtext, &bp) == 0 && bp > 0;
        }
        if (ok && h) {
            if (json_is_string(h))
                ok = conf_parse_duration(json_string_value(h), &hold) == 0;
            else if (json_is_integer(h) && json_integer_value(h) >= 0 &&
                     (uint64_t)json_integer_value(h) <= (uint64_t)INT64_MAX / 1000u)
                hold = (uint64_t)json_integer_value(h) * 1000u; /* cannot wrap */
            else
                ok = false;
        }
        if (!ok) {
            free(plan->steps);
            plan->steps = NULL;
            plan->nsteps = 0;
            return refuse(no, 400, "invalid", "plan",
                          "step %zu: {\"weight\": percent 0.01-100, \"hold\": \"1m\" or seconds}",
                          i + 1);
        }
        plan->steps[i].weight_bp = bp;
        plan->steps[i].hold_ms = hold;
    }
    return 0;
}

int
api_check_cutover(json_t *body, uint64_t generation, struct api_cutover *out,
                  struct api_refusal *no)
{
    static const char *const fields[] = {"to", "plan", "id", "if_generation", NULL};
    memset(out, 0, sizeof(*out));
    if (fields_and_generation(body, fields, generation, no) == -1)
        return -1;
    json_t *to = json_object_get(body, "to");
    json_t *id = json_object_get(body, "id");
    int target = json_is_string(to) ? conf_pool_from_name(json_string_value(to)) : -1;
    if (target < 0)
        return refuse(no, 400, "invalid", "to", "\"to\" must be \"blue\" or \"green\"");
    if (id && (!json_is_string(id) || strlen(json_string_value(id)) == 0 ||
               strlen(json_string_value(id)) > 64))
        return refuse(no, 400, "invalid", "id", "must be a string of 1 to 64 characters");
    json_t *pj = json_object_get(body, "plan");
    if (pj && read_plan(pj, &out->plan, no) == -1)
        return -1;
    char perr[256];
    if (pj && rollout_plan_check(&out->plan, perr, sizeof(perr)) == -1) {
        api_cutover_finish(out);
        return refuse(no, 400, "invalid", "plan", "%s", perr);
    }
    out->to = (enum pool_id)target;
    out->id = id ? json_string_value(id) : NULL;
    out->has_plan = pj != NULL;
    return 0;
}

void
api_cutover_finish(struct api_cutover *c)
{
    free(c->plan.steps);
    c->plan.steps = NULL;
    c->plan.nsteps = 0;
    c->has_plan = false;
}

/* The length of the valid UTF-8 sequence at s (1..4), or 0 when the byte there starts none
 * (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF). */
static size_t
utf8_seq(const unsigned char *s)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return n;
}

json_t *
api_json_text(const char *s)
{
    json_t *j = json_string(s);
    if (j != NULL)
        return j;
    /* Not valid UTF-8 (vsnprintf may cut a message inside a character): repair it. */
    size_t len = strlen(s);
    char *fixed = xmalloc(len + 1);
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, o = 0;
    while (i < len) {
        size_t n = utf8_seq(p + i); /* a NUL ends a sequence early: never read past it */
        if (n == 0) {
            fixed[o++] = '?';
            i++;
            continue;
        }
        memcpy(fixed + o, p + i, n);
        o += n;
        i += n;
    }
    fixed[o] = '\0';
    j = json_string(fixed);
    free(fixed);
    return j ? j : json_string("?");
}

json_t *
api_envelope_ok(uint64_t generation, json_t *data)
{
    json_t *e = json_object();
    json_object_set_new(e, "ok", json_true());
    json_object_set_new(e, "generation", json_integer((json_int_t)generation));
    json_object_set_new(e, "data", data ? data : json_null());
    return e;
}

json_t *
api_envelope_error(uint64_t generation, const char *code, const char *field, const char *message)
{
    json_t *err = json_object();
    json_object_set_new(err, "code", json_string(code));
    json_object_set_new(err, "message", api_json_text(message));
    if (field)
        json_object_set_new(err, "field", api_json_text(field));
    json_t *e = json_object();
    json_object_set_new(e, "ok", json_false());
    json_object_set_new(e, "generation", json_integer((json_int_t)generation));
    json_object_set_new(e, "error", err);
    return e;
}
