/* proxy/clock.h — the monotonic clock in milliseconds, shared by every thread. */
#ifndef PROXY_CLOCK_H
#define PROXY_CLOCK_H

#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC_COARSE: a vDSO read, precise to a few ms, plenty for deadlines. */
static inline uint64_t
clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* CLOCK_MONOTONIC in microseconds, for latency measurements. */
static inline uint64_t
clock_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static inline struct timeval
clock_tv(uint64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

#endif
