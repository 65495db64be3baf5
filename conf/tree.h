/* conf/tree.h — YAML text to a tree of nodes that remember where they were written (private to
 * conf/). The tree keeps the config's schema walk independent of libyaml. */
#ifndef CONF_TREE_H
#define CONF_TREE_H

#include <stdbool.h>
#include <stddef.h>

#include "conf/conf.h"

enum node_type {
    NODE_SCALAR = 0,
    NODE_SEQ,
    NODE_MAP,
};

struct node_pair;

struct node {
    enum node_type type;
    unsigned line; /* 1-based position of the node's first character */
    unsigned col;
    /* NODE_SCALAR */
    char *text;   /* owned; NUL-terminated (a "\0" escape makes strlen(text) < len) */
    size_t len;   /* bytes of text */
    bool is_null; /* plain "", "~", "null", "Null" or "NULL" */
    /* NODE_SEQ */
    struct node **items; /* owned: array of nitems owned nodes */
    size_t nitems;
    /* NODE_MAP, in the order written (duplicate keys are kept: the schema walk reports them) */
    struct node_pair *pairs; /* owned: array of npairs */
    size_t npairs;
};

struct node_pair {
    struct node *key; /* owned */
    struct node *val; /* owned */
};

/* Aliases are expanded into copies; these bound what a small file can make us build. */
#define TREE_MAX_DEPTH 64
#define TREE_MAX_NODES 100000

/* Parses the single YAML document in text[0..len). Returns its root (caller owns; tree_free), or
 * NULL with the errors added to err: a syntax error at libyaml's problem mark, an empty document,
 * more than one document, or a tree beyond the bounds above. name is the file name shown in
 * messages. Any thread. */
struct node *tree_parse(const char *name, const char *text, size_t len, struct conf_err *err);

/* Frees a tree and clears *n. Accepts NULL and *n == NULL. */
void tree_free(struct node **n);

/* Adds "FILE:LINE:COL: PATH: message" to err (counted always, kept while there is room). An
 * empty path is shown as "(root)". */
__attribute__((format(printf, 6, 7))) void tree_error(struct conf_err *err, const char *file,
                                                      unsigned line, unsigned col, const char *path,
                                                      const char *fmt, ...);

#endif
