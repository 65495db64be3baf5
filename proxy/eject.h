/* proxy/eject.h — passive ejection (DESIGN §5): connect errors and timeouts (and 5xx when
 * eject_on_5xx) counted per server across workers; a server with consecutive_failures in a row
 * is ejected for ejection_time, doubled on repeats up to 5 minutes, never more than
 * max_ejection_percent of its pool at once. Any worker thread. */
#ifndef PROXY_EJECT_H
#define PROXY_EJECT_H

#include <stdbool.h>
#include <stdint.h>

#include "proxy/snapshot.h"

#define EJECT_MAX_MS (5 * 60 * 1000)

/* Records a failure of srv (a server of pool). Returns true when this call ejected it. */
bool eject_failure(const struct pool *pool, struct server *srv, uint64_t now_ms);

/* Records a success: the run of failures is over. Cheap when there was none (a load). */
void eject_success(struct server *srv);

/* How many servers of the pool are ejected at now_ms. */
unsigned eject_count(const struct pool *pool, uint64_t now_ms);

#endif
