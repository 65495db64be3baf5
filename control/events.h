/* control/events.h — the event ring (DESIGN §6, §8): every transition is an event
 * {seq, time, generation, type, ...}, kept in a ring of the last EVENTS_RING, readable from the
 * API (long-polled) and written to the error log. Main thread only. */
#ifndef CONTROL_EVENTS_H
#define CONTROL_EVENTS_H

#include <stdint.h>

#include <jansson.h>

#define EVENTS_RING 1024

struct events;

/* Called after each event is added, with the event (borrowed for the call): the API wakes its
 * long-polls, webhooks queue it. */
typedef void (*events_fn)(void *arg, const json_t *event);

struct events *events_create(events_fn fn, void *arg);
void events_destroy(struct events **ev);

/* Adds an event: obj (reference stolen) gets "seq", "time" and "generation" and is kept.
 * Returns its seq. */
uint64_t events_emit(struct events *ev, uint64_t generation, const char *type, json_t *obj);

/* A new array (caller owns) of the events with seq > since, oldest first, at most `max`. */
json_t *events_since(const struct events *ev, uint64_t since, size_t max);

/* The seq of the newest event (0 when none). */
uint64_t events_last(const struct events *ev);

#endif
