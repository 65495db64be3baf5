/* proxy/log.c — the daemon's error log (stderr or a file), safe from any thread. */
#include "proxy/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf/xalloc.h"

/* The fd and level are read by every thread; relaxed is enough: a message written to the old fd
 * or filtered by the old level during a switch is harmless. */
static atomic_int log_fd = 2;
static atomic_int log_level = LOG_LEVEL_INFO;
static char *log_path; /* owned; main thread only */

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int
log_open(enum log_level level, const char *path)
{
    atomic_store_explicit(&log_level, (int)level, memory_order_relaxed);
    if (path == NULL) {
        xfree(&log_path);
        int old = atomic_exchange_explicit(&log_fd, 2, memory_order_relaxed);
        if (old > 2)
            close(old);
        return 0;
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd == -1)
        return -1;
    char *copy = xstrdup(path);
    xfree(&log_path);
    log_path = copy;
    int old = atomic_exchange_explicit(&log_fd, fd, memory_order_relaxed);
    if (old > 2)
        close(old);
    return 0;
}

int
log_reopen(void)
{
    if (log_path == NULL)
        return 0;
    int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd == -1)
        return -1;
    int old = atomic_exchange_explicit(&log_fd, fd, memory_order_relaxed);
    if (old > 2)
        close(old);
    return 0;
}

void
log_set_level(enum log_level level)
{
    atomic_store_explicit(&log_level, (int)level, memory_order_relaxed);
}

int
log_enabled(enum log_level level)
{
    return (int)level <= atomic_load_explicit(&log_level, memory_order_relaxed);
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ %s ", ts.tv_nsec / 1000000,
                          level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    if (k < 0)
        k = 0;
    n += (size_t)k;
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    int fd = atomic_load_explicit(&log_fd, memory_order_relaxed);
    ssize_t w;
    do {
        w = write(fd, line, n);
    } while (w == -1 && errno == EINTR);
}
