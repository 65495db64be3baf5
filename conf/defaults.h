/* conf/defaults.h — the default of every configuration key, in one place (private to conf/).
 *
 * The _init functions write defaults over a zeroed struct and allocate its default strings; the
 * _finish functions free what a struct owns. conf_destroy() is built on them. Any thread. */
#ifndef CONF_DEFAULTS_H
#define CONF_DEFAULTS_H

#include "conf/conf.h"

/* Every default of a whole conf (c zeroed by the caller): both pools with their names and
 * per-pool defaults but no servers, no listeners, the default plan. */
void conf_init(struct conf *c);

/* The per-pool defaults: health (with passive ejection), upstream TLS, keep-alive, retries. The
 * name and servers are left alone. */
void conf_pool_init(struct conf_pool *p);

/* Frees what p owns (name, servers, health and TLS strings) and zeroes it. */
void conf_pool_finish(struct conf_pool *p);

/* Frees what h owns and zeroes it. */
void conf_health_finish(struct conf_health *h);

/* A listener's (or the control listener's) TLS settings before its tls: keys are read. */
void conf_listen_tls_init(struct conf_listen_tls *t);

/* Frees the certificate list of t and zeroes it. */
void conf_listen_tls_finish(struct conf_listen_tls *t);

/* The default rollout plan: 5% for 1m, 25% for 2m, 50% for 2m, then 100%. */
void conf_plan_init(struct conf_plan *plan);

#endif
