/* control/events.c — the ring of control-plane events. */
#include "control/events.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "conf/xalloc.h"

struct events {
    json_t *ring[EVENTS_RING]; /* owned refs; ring[seq % EVENTS_RING] */
    uint64_t last;             /* seq of the newest event */
    events_fn fn;
    void *arg;
};

struct events *
events_create(events_fn fn, void *arg)
{
    struct events *ev = xcalloc(1, sizeof(*ev));
    ev->fn = fn;
    ev->arg = arg;
    return ev;
}

void
events_destroy(struct events **evp)
{
    struct events *ev = *evp;
    if (ev == NULL)
        return;
    *evp = NULL;
    for (size_t i = 0; i < EVENTS_RING; i++)
        json_decref(ev->ring[i]);
    free(ev);
}

static void
now_rfc3339(char *out, size_t len)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, len - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

uint64_t
events_emit(struct events *ev, uint64_t generation, const char *type, json_t *obj)
{
    char when[40];
    now_rfc3339(when, sizeof(when));
    uint64_t seq = ++ev->last;
    json_object_set_new(obj, "seq", json_integer((json_int_t)seq));
    json_object_set_new(obj, "time", json_string(when));
    json_object_set_new(obj, "generation", json_integer((json_int_t)generation));
    json_object_set_new(obj, "type", json_string(type));
    json_t **slot = &ev->ring[seq % EVENTS_RING];
    json_decref(*slot);
    *slot = obj;
    if (ev->fn)
        ev->fn(ev->arg, obj);
    return seq;
}

json_t *
events_since(const struct events *ev, uint64_t since, size_t max)
{
    json_t *arr = json_array();
    uint64_t first = ev->last > EVENTS_RING ? ev->last - EVENTS_RING + 1 : 1;
    if (since + 1 > first)
        first = since + 1;
    for (uint64_t s = first; s <= ev->last && json_array_size(arr) < max; s++)
        json_array_append(arr, ev->ring[s % EVENTS_RING]);
    return arr;
}

uint64_t
events_last(const struct events *ev)
{
    return ev->last;
}
