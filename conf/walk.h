/* conf/walk.h — helpers for walking the node tree against the schema (private to conf/): the key
 * path of the node being read, error reporting, mappings with known keys, typed values.
 *
 * Every reader reports its own errors (at the offending node, under the current key path) and
 * returns -1; on error the output is left untouched, so the walk goes on and collects more. */
#ifndef CONF_WALK_H
#define CONF_WALK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"
#include "conf/tree.h"

#define WALK_PATH_MAX 256
#define WALK_FIELDS_MAX 24

struct walk {
    const char *file;         /* borrowed (lives while the walk does) */
    struct conf_err *err;     /* borrowed */
    char path[WALK_PATH_MAX]; /* "pools.blue.servers[1].weight" */
    size_t pathlen;
};

/* Append ".key" or "[i]" to the path; each returns the previous length for walk_pop(). */
size_t walk_push(struct walk *w, const char *key);
size_t walk_push_index(struct walk *w, size_t i);
void walk_pop(struct walk *w, size_t len);

/* Reports "FILE:LINE:COL: PATH: message" at node at, under the current path. */
__attribute__((format(printf, 3, 4))) void walk_error(struct walk *w, const struct node *at,
                                                      const char *fmt, ...);

/* Reports that node n is not of the wanted type and returns -1; 0 when it is. */
int walk_type(struct walk *w, const struct node *n, enum node_type want);

/* The text of scalar n, or NULL after reporting that it is not a (NUL-free) scalar. */
const char *walk_scalar(struct walk *w, const struct node *n);

/* A mapping read against the list of the keys it may hold. */
struct fields {
    const struct node *map;                  /* borrowed */
    const char *const *keys;                 /* borrowed; NULL-terminated */
    const struct node *val[WALK_FIELDS_MAX]; /* by key index; NULL when absent */
};

/* Checks that n is a mapping whose keys are all in keys (NULL-terminated, at most
 * WALK_FIELDS_MAX), each once, and fills f. Unknown and repeated keys are reported (at the key)
 * and skipped; what names the keys in messages ("key", "pool"). Returns -1 when n is not a
 * mapping, else 0 (even with key errors, so the known keys are still checked). */
int walk_map(struct walk *w, const struct node *n, const char *const *keys, const char *what,
             struct fields *f);

/* The value of key in f (key must be one of f's keys), NULL when absent. */
const struct node *walk_get(const struct fields *f, const char *key);

/* Reports a missing key (at the mapping) and returns -1 when key is absent; 0 otherwise. */
int walk_require(struct walk *w, const struct fields *f, const char *key);

/* Readers of one key of f: when the key is absent they do nothing and return 0, else they
 * validate the value with the key on the path, store it and return 0, or report and return -1.
 * Numbers must lie in [min, max]. */
enum {
    STR_NULLABLE = 1, /* null or "" stores NULL (the key's "none"); else they are an error */
};
int walk_str(struct walk *w, const struct fields *f, const char *key, unsigned flags, char **out);
int walk_bool(struct walk *w, const struct fields *f, const char *key, bool *out);
int walk_u32(struct walk *w, const struct fields *f, const char *key, uint32_t min, uint32_t max,
             uint32_t *out);
int walk_duration(struct walk *w, const struct fields *f, const char *key, uint64_t min_ms,
                  uint64_t *out);
int walk_size(struct walk *w, const struct fields *f, const char *key, uint64_t min, uint64_t *out);
int walk_percent(struct walk *w, const struct fields *f, const char *key, uint32_t *bp);
int walk_ratio(struct walk *w, const struct fields *f, const char *key, double min, double max,
               double *out);
/* port0: whether port 0 (the kernel picks) is allowed, as for listeners. */
int walk_addr(struct walk *w, const struct fields *f, const char *key, bool port0,
              struct conf_addr *out);
/* One of names (NULL-terminated); stores its index. */
int walk_enum(struct walk *w, const struct fields *f, const char *key, const char *const *names,
              int *out);

/* Node-level readers for list items (same contract, n is the value itself). */
int walk_addr_node(struct walk *w, const struct node *n, bool port0, struct conf_addr *out);

#endif
