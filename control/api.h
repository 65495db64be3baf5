/* control/api.h — the control API (control/API.md): HTTP/1.1 + JSON on the unix socket
 * control.socket (peer credentials checked) and optionally on TCP control.listen (bearer
 * token; HTTPS only with control.tls), served on the main thread with libevent's evhttp. */
#ifndef CONTROL_API_H
#define CONTROL_API_H

#include <stddef.h>

#include <jansson.h>

struct daemon;
struct api;

/* Opens the control socket(s) for d (borrowed: outlives the API). The unix socket is created
 * beside its path and renamed over it (a stale socket is replaced; a live one — another
 * instance answering — is an error), mode 0660. With control.tls the TCP listener speaks TLS
 * only (certificates loaded here, once: a reload does not change them); the unix socket stays
 * plain. Returns NULL with a message in err (a bad certificate: "control.tls: FILE: ...").
 * Main thread. */
struct api *api_create(struct daemon *d, char *err, size_t errlen);

/* Wakes long-polls waiting for events (the event ring's callback). Main thread. */
void api_events_added(void *api);

/* Reopens the audit log (SIGUSR1). 0, or -1 with errno (the old file stays). */
int api_reopen_logs(struct api *a);

/* Writes an event to the audit log (when there is one). */
void api_audit_event(struct api *a, const json_t *event);

/* The TLS context of the TCP listener (control.tls), or NULL: the daemon re-reads its
 * certificates on reload. */
struct tls_ctx *api_tls(struct api *a);

/* Answers 503 to new mutations from now on (shutdown). */
void api_shutting_down(struct api *a);

/* Closes the sockets, answers waiting long-polls, removes the socket file. Accepts NULL. */
void api_destroy(struct api **a);

#endif
