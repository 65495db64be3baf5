/* proxy/log.h — the daemon's error log: one line per message, written with a single write(2) so
 * lines from several threads never interleave. */
#ifndef PROXY_LOG_H
#define PROXY_LOG_H

#include "conf/conf.h"

/* Sets the level and the destination (path NULL = stderr). Returns 0, or -1 with errno when the
 * file cannot be opened (the previous destination stays). Main thread. */
int log_open(enum log_level level, const char *path);

/* Reopens the file given to log_open (SIGUSR1). No-op for stderr. Main thread. */
int log_reopen(void);

/* Changes the level. Main thread; workers see it on their next message. */
void log_set_level(enum log_level level);

/* Whether messages of this level are written. Any thread. */
int log_enabled(enum log_level level);

/* Writes "TIME LEVEL message\n". Any thread. */
__attribute__((format(printf, 2, 3))) void log_msg(enum log_level level, const char *fmt, ...);

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_enabled(LOG_LEVEL_DEBUG))                                                          \
            log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__);                                                 \
    } while (0)

#endif
