/* conf/validate.h — the schema walk: a node tree to a validated struct conf (private to conf/).
 * The sections live in validate.c (top level, listeners, control, limits...), pools.c (pools,
 * servers, health, upstream) and rollout.c (routing and rollout). */
#ifndef CONF_VALIDATE_H
#define CONF_VALIDATE_H

#include "conf/conf.h"
#include "conf/tree.h"
#include "conf/walk.h"

/* Builds the conf described by root (file names the source in messages). Returns a new conf
 * (caller owns; conf_destroy) or NULL when any error was added to err. Any thread. */
struct conf *conf_from_tree(const char *file, const struct node *root, struct conf_err *err);

/* pools.c: reads pools: (reported when missing) from the top-level fields, with the top-level
 * health: and upstream: (both optional) as every pool's defaults, into c->pools. */
void conf_read_pools(struct walk *w, const struct fields *top, struct conf *c);

/* rollout.c: the routing: and rollout: mappings n, read over the defaults in r. */
void conf_read_routing(struct walk *w, const struct node *n, struct conf_routing *r);
void conf_read_rollout(struct walk *w, const struct node *n, struct conf_rollout *r);

/* Shared by the sections: a listener's tls: mapping (listen[i].tls and control.tls). */
void conf_read_listen_tls(struct walk *w, const struct node *n, struct conf_listen_tls *t);

/* Checks that s (the text of n) is a non-empty HTTP token, as header and cookie names must be:
 * 0, or -1 after reporting at n. */
int conf_check_token(struct walk *w, const struct node *n, const char *s);

#endif
