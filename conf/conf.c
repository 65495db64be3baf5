/* conf/conf.c — the public entry points: read a file, parse text (YAML → node tree → validated
 * struct conf), and free a conf. The work is in tree.c, validate.c, pools.c and rollout.c. */
#include "conf/conf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/defaults.h"
#include "conf/tree.h"
#include "conf/validate.h"
#include "conf/xalloc.h"

/* A config is a few kilobytes; this bounds what a wrong path (a log file, a device) costs. */
#define CONF_FILE_MAX (4u << 20)

/* The one message that has no line: "FILE: cannot read: why". */
static void
read_error(struct conf_err *err, const char *path, const char *why)
{
    err->count = 1;
    int n = snprintf(err->msg[0], CONF_ERR_LEN, "%s: cannot read: %s", path, why);
    (void)n; /* a very long path is cut short, which is acceptable */
}

/* Reads the whole file into a new buffer (*text, *len). Returns 0, or an errno value. */
static int
slurp(const char *path, char **text, size_t *len)
{
    size_t cap = 8192;
    size_t n = 0;
    char *buf;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd == -1)
        return errno;
    buf = xmalloc(cap);
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r == -1 && errno == EINTR)
            continue;
        if (r == -1) {
            int e = errno;
            free(buf);
            close(fd);
            return e;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == cap) {
            if (cap >= CONF_FILE_MAX) {
                free(buf);
                close(fd);
                return EFBIG;
            }
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
    }
    close(fd);
    *text = buf;
    *len = n;
    return 0;
}

struct conf *
conf_load(const char *path, struct conf_err *err)
{
    char *text = NULL;
    size_t len = 0;
    struct conf *c;
    int rc;

    err->count = 0;
    if ((rc = slurp(path, &text, &len)) != 0) {
        char buf[128];
        read_error(err, path, rc == EFBIG ? "larger than 4 MiB" : strerror_r(rc, buf, sizeof buf));
        return NULL;
    }
    c = conf_parse(path, text, len, err);
    free(text);
    return c;
}

struct conf *
conf_parse(const char *name, const char *text, size_t len, struct conf_err *err)
{
    struct node *tree;
    struct conf *c;

    err->count = 0;
    if ((tree = tree_parse(name, text, len, err)) == NULL)
        return NULL;
    c = conf_from_tree(name, tree, err);
    tree_free(&tree);
    return c;
}

void
conf_destroy(struct conf **cp)
{
    struct conf *c = cp ? *cp : NULL;

    if (c == NULL)
        return;
    free(c->path);
    for (size_t i = 0; i < c->nlisten; i++)
        conf_listen_tls_finish(&c->listen[i].tls);
    free(c->listen);
    for (int i = 0; i < POOL_COUNT; i++)
        conf_pool_finish(&c->pools[i]);

    free(c->routing.sticky.header);
    free(c->routing.sticky.cookie_name);
    free(c->routing.preview.header);
    free(c->routing.preview.allow_from);
    free(c->routing.preview.token);
    free(c->rollout.plan.steps);

    free(c->control.socket);
    free(c->control.allow_uids);
    free(c->control.allow_gids);
    free(c->control.token_file);
    conf_listen_tls_finish(&c->control.tls);

    free(c->state_file);
    free(c->log.access);
    free(c->log.audit);
    free(c->log.error);
    for (size_t i = 0; i < c->notify.nwebhooks; i++)
        free(c->notify.webhooks[i]);
    free(c->notify.webhooks);
    free(c);
    *cp = NULL;
}

bool
conf_str_equal(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

bool
conf_upstream_tls_equal(const struct conf_upstream_tls *a, const struct conf_upstream_tls *b)
{
    return a->enabled == b->enabled && a->verify == b->verify && conf_str_equal(a->ca, b->ca) &&
           conf_str_equal(a->sni, b->sni);
}
