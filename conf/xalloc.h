/* conf/xalloc.h — allocation that aborts on failure (STYLE: no untested NULL branches). */
#ifndef CONF_XALLOC_H
#define CONF_XALLOC_H

#include <stddef.h>

/* Each aborts the process with a message when the allocation fails; never returns NULL
 * (xmalloc(0) returns a unique pointer). Any thread. */
void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* free() and NULL the pointer: no reachable pointer may point to freed memory. */
#define xfree(pp)                                                                                  \
    do {                                                                                           \
        free(*(pp));                                                                               \
        *(pp) = NULL;                                                                              \
    } while (0)

#endif
