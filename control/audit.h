/* control/audit.h — the audit log of DESIGN §8: one JSON line per control-API mutation (time,
 * peer, method, path, a bounded summary of the request, result, generation before and after),
 * appended with a single write(2) so that lines of one file never interleave. */
#ifndef CONTROL_AUDIT_H
#define CONTROL_AUDIT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* The longest string value (and object key) kept in a request summary, in bytes; longer ones
 * are cut at a UTF-8 boundary and end with "...". */
#define AUDIT_STRING_MAX 256

/* The longest request summary, in bytes of compact JSON. */
#define AUDIT_REQUEST_MAX 4096

struct audit;

/* One mutation. Every pointer is borrowed for the duration of audit_write() and not modified. */
struct audit_entry {
    uint64_t time_ms;   /* wall-clock ms since the epoch; 0 = now */
    json_t *peer;       /* {"uid":N,"gid":N,"pid":N} or {"token":"NAME"}; NULL is written as null */
    const char *method; /* "POST", "PUT"...; NULL is written as null */
    const char *path;   /* the request path; NULL is written as null */
    json_t *request;    /* the parsed request body; NULL (none, or it did not parse) → null */
    int status;         /* the HTTP status answered */
    const char *code;   /* the error code ("conflict"...), NULL on success (written as null) */
    uint64_t generation_before;
    uint64_t generation_after;
};

/* Opens (creating it with mode 0640 when absent) the audit log at path for appending. Returns
 * the log, or NULL with a message in err (errlen bytes). Main thread. */
struct audit *audit_open(const char *path, char *err, size_t errlen);

/* Appends one line for e:
 *   {"time":"2026-11-21T06:14:25.017Z","peer":{...},"method":"POST","path":"/v1/rollback",
 *    "request":{...},"status":200,"code":null,"generation_before":7,"generation_after":8}
 * time is RFC 3339 UTC with milliseconds; request is audit_summary(e->request); strings that are
 * not valid UTF-8 have their bad bytes replaced by '?', and method and path are cut to
 * AUDIT_STRING_MAX bytes. The line goes out in one write(2) on an O_APPEND descriptor. A failed
 * or short write is counted (audit_failures()), never reported otherwise: the caller's request
 * does not fail because the log did. Main thread. */
void audit_write(struct audit *a, const struct audit_entry *e);

/* The request summary audit_write() records: a copy of request whose string values and keys are
 * cut to AUDIT_STRING_MAX bytes, containers nested deeper than 16 levels replaced by "{...}" or
 * "[...]", and whose compact serialization is at most AUDIT_REQUEST_MAX bytes: once that budget
 * is spent, the remaining members of an object are replaced by one "...":"..." member and the
 * remaining elements of an array by one "..." element. NULL gives JSON null. Returns a new
 * reference. Any thread. */
json_t *audit_summary(json_t *request);

/* Reopens the log's path (after logrotate renamed it: SIGUSR1). Returns 0, or -1 with errno set
 * and the old descriptor kept. Main thread. */
int audit_reopen(struct audit *a);

/* Writes a control-plane event (DESIGN §6: every transition and verdict) as one line
 * {"time", "event": {...}}. */
void audit_write_event(struct audit *a, const json_t *event);

/* Lines that could not be written completely since the log was opened. Main thread. */
uint64_t audit_failures(const struct audit *a);

/* Closes and frees the log and clears *a. Accepts NULL and *a == NULL. Main thread. */
void audit_close(struct audit **a);

#endif
