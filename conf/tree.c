/* conf/tree.c — YAML text to a node tree with 1-based line:col marks (libyaml's document API).
 * libyaml's own document is freed before returning: nothing outside this file sees libyaml. */
#include "conf/tree.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "conf/xalloc.h"

/* The conversion's running state: the source document and the expansion budget. */
struct build {
    yaml_document_t *doc;
    size_t nodes; /* built so far, against TREE_MAX_NODES */
    const char *file;
    struct conf_err *err;
};

void
tree_error(struct conf_err *err, const char *file, unsigned line, unsigned col, const char *path,
           const char *fmt, ...)
{
    char *out;
    va_list ap;
    int n;

    if (err->count++ >= CONF_ERR_MAX)
        return;
    out = err->msg[err->count - 1];
    n = snprintf(out, CONF_ERR_LEN, "%s:%u:%u: %s: ", file, line, col, path[0] ? path : "(root)");
    if (n < 0 || (size_t)n >= CONF_ERR_LEN)
        return; /* cut short by a very long file name */
    va_start(ap, fmt);
    vsnprintf(out + n, CONF_ERR_LEN - (size_t)n, fmt, ap);
    va_end(ap);
    /* messages quote the file's text: keep them on one printable line */
    for (; *out; out++) {
        if ((unsigned char)*out < 0x20 || *out == 0x7f)
            *out = '?';
    }
}

void
tree_free(struct node **n)
{
    struct node *p = *n;

    if (p == NULL)
        return;
    for (size_t i = 0; i < p->nitems; i++)
        tree_free(&p->items[i]);
    for (size_t i = 0; i < p->npairs; i++) {
        tree_free(&p->pairs[i].key);
        tree_free(&p->pairs[i].val);
    }
    free(p->items);
    free(p->pairs);
    free(p->text);
    free(p);
    *n = NULL;
}

static bool
is_null_text(const char *s)
{
    return s[0] == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
           strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

/* Converts the libyaml node yn; an alias is met again as the node it names, so it is copied. The
 * depth bound also stops an alias that refers to its own ancestor. */
static struct node *
build(struct build *b, yaml_node_t *yn, unsigned depth)
{
    unsigned line = (unsigned)yn->start_mark.line + 1;
    unsigned col = (unsigned)yn->start_mark.column + 1;
    struct node *n;

    if (depth > TREE_MAX_DEPTH) {
        tree_error(b->err, b->file, line, col, "(yaml)",
                   "nested deeper than %d levels (an alias that contains itself?)", TREE_MAX_DEPTH);
        return NULL;
    }
    if (++b->nodes > TREE_MAX_NODES) {
        tree_error(b->err, b->file, line, col, "(yaml)",
                   "more than %d values once aliases are expanded", TREE_MAX_NODES);
        return NULL;
    }
    n = xcalloc(1, sizeof *n);
    n->line = line;
    n->col = col;
    switch (yn->type) {
    case YAML_SCALAR_NODE:
        n->type = NODE_SCALAR;
        n->len = yn->data.scalar.length;
        n->text = xmalloc(n->len + 1);
        memcpy(n->text, yn->data.scalar.value, n->len);
        n->text[n->len] = '\0';
        n->is_null = yn->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && is_null_text(n->text);
        return n;
    case YAML_SEQUENCE_NODE: {
        size_t count = (size_t)(yn->data.sequence.items.top - yn->data.sequence.items.start);
        n->type = NODE_SEQ;
        n->items = xcalloc(count, sizeof *n->items);
        for (size_t i = 0; i < count; i++) {
            yaml_node_t *child = yaml_document_get_node(b->doc, yn->data.sequence.items.start[i]);
            if ((n->items[i] = build(b, child, depth + 1)) == NULL)
                goto fail;
            n->nitems++;
        }
        return n;
    }
    case YAML_MAPPING_NODE: {
        size_t count = (size_t)(yn->data.mapping.pairs.top - yn->data.mapping.pairs.start);
        n->type = NODE_MAP;
        n->pairs = xcalloc(count, sizeof *n->pairs);
        for (size_t i = 0; i < count; i++) {
            yaml_node_pair_t *yp = &yn->data.mapping.pairs.start[i];
            struct node_pair *p = &n->pairs[i];
            p->key = build(b, yaml_document_get_node(b->doc, yp->key), depth + 1);
            if (p->key != NULL)
                p->val = build(b, yaml_document_get_node(b->doc, yp->value), depth + 1);
            n->npairs++; /* counted before the check so that tree_free sees a half-built pair */
            if (p->key == NULL || p->val == NULL)
                goto fail;
        }
        return n;
    }
    case YAML_NO_NODE:
        break;
    }
fail:
    tree_free(&n);
    return NULL;
}

/* A reader error (bad UTF-8, control character) has an offset but no mark: count lines. */
static void
offset_mark(const char *text, size_t len, size_t offset, unsigned *line, unsigned *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < offset && i < len; i++) {
        if (text[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

static void
syntax_error(const yaml_parser_t *p, const char *name, const char *text, size_t len,
             struct conf_err *err)
{
    unsigned line = (unsigned)p->problem_mark.line + 1;
    unsigned col = (unsigned)p->problem_mark.column + 1;
    const char *problem = p->problem ? p->problem : "cannot parse";

    if (p->error == YAML_READER_ERROR)
        offset_mark(text, len, p->problem_offset, &line, &col);
    if (p->error == YAML_MEMORY_ERROR)
        problem = "out of memory";
    if (p->context != NULL)
        tree_error(err, name, line, col, "(yaml)", "%s (%s at %u:%u)", problem, p->context,
                   (unsigned)p->context_mark.line + 1, (unsigned)p->context_mark.column + 1);
    else
        tree_error(err, name, line, col, "(yaml)", "%s", problem);
}

struct node *
tree_parse(const char *name, const char *text, size_t len, struct conf_err *err)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_document_t next;
    yaml_node_t *root;
    struct build b = {.doc = &doc, .file = name, .err = err};
    struct node *tree = NULL;
    bool second;

    if (!yaml_parser_initialize(&parser)) {
        tree_error(err, name, 1, 1, "(yaml)", "out of memory");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        syntax_error(&parser, name, text, len, err);
        yaml_parser_delete(&parser);
        return NULL;
    }
    root = yaml_document_get_root_node(&doc);
    if (root == NULL) {
        tree_error(err, name, 1, 1, "", "the file is empty (expected a mapping of settings)");
        goto done;
    }

    /* a second document would be silently ignored: refuse it */
    if (!yaml_parser_load(&parser, &next)) {
        syntax_error(&parser, name, text, len, err);
        goto done;
    }
    second = yaml_document_get_root_node(&next) != NULL;
    if (second)
        tree_error(err, name, (unsigned)next.start_mark.line + 1,
                   (unsigned)next.start_mark.column + 1, "(yaml)",
                   "a second document; a config file holds exactly one");
    yaml_document_delete(&next);
    if (!second)
        tree = build(&b, root, 0);
done:
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return tree;
}
