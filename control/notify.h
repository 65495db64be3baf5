/* control/notify.h — webhooks (DESIGN §6): every event is POSTed as JSON to each
 * notify.webhooks URL by libcurl multi on the main event loop. Asynchronous: a slow or dead
 * webhook never delays routing or the API. Per webhook the events go out in order, one request
 * at a time, each with a timeout, retried with exponential backoff; a queue that grows past its
 * bound drops its oldest events (counted and logged). Main thread only. */
#ifndef CONTROL_NOTIFY_H
#define CONTROL_NOTIFY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "conf/conf.h"

#define NOTIFY_TIMEOUT_MS 5000
#define NOTIFY_MAX_QUEUE 1000
#define NOTIFY_MAX_ATTEMPTS 8
#define NOTIFY_BACKOFF_MS 500
#define NOTIFY_BACKOFF_MAX_MS 60000

struct event_base;
struct notify;

/* Makes a notifier for the URLs of cfg (copied) on base. NULL when there is no URL or libcurl
 * cannot make a multi handle. curl_global_init() must have been called. */
struct notify *notify_create(struct event_base *base, const struct conf_notify *cfg);

/* Queues event (serialized now; the caller keeps its reference) for every webhook. */
void notify_event(struct notify *n, const json_t *event);

/* Events delivered, dropped (queue full or attempts exhausted), and queued now, summed over
 * webhooks. */
void notify_counts(const struct notify *n, uint64_t *delivered, uint64_t *dropped, size_t *queued);

/* Cancels transfers in flight, frees everything, clears *n. Accepts NULL. */
void notify_destroy(struct notify **n);

#endif
