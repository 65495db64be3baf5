/* conf/validate.c — the schema walk's top level: the list of top-level keys, listeners, workers,
 * control, state, timeouts, limits, log, notify and drain. Pools are in pools.c, routing and
 * rollout in rollout.c. */
#include "conf/validate.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "conf/defaults.h"
#include "conf/units.h"
#include "conf/xalloc.h"

static const char *const TOP_KEYS[] = {
    "listen",  "workers",    "pools",         "upstream", "health", "routing", "rollout", "drain",
    "control", "state_file", "state_max_age", "timeouts", "limits", "log",     "notify",  NULL,
};

int
conf_check_token(struct walk *w, const struct node *n, const char *s)
{
    /* RFC 9110 tchar */
    static const char tchar[] = "!#$%&'*+-.^_`|~0123456789"
                                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

    if (s[0] == '\0' || s[strspn(s, tchar)] != '\0') {
        walk_error(
            w, n, "\"%s\" is not a valid header or cookie name (letters, digits, -_.!#$%%&'*+^`|~)",
            s);
        return -1;
    }
    return 0;
}

void
conf_read_listen_tls(struct walk *w, const struct node *n, struct conf_listen_tls *t)
{
    static const char *const keys[] = {"certs", "min_version", NULL};
    static const char *const cert_keys[] = {"cert", "key", NULL};
    static const char *const versions[] = {"1.2", "1.3", NULL};
    struct fields f;
    const struct node *certs;
    int version = t->min_version == 0x0304;

    if (walk_map(w, n, keys, "key", &f) == -1)
        return;
    if (walk_enum(w, &f, "min_version", versions, &version) == 0)
        t->min_version = version == 0 ? 0x0303 : 0x0304;
    if (walk_require(w, &f, "certs") == -1)
        return;
    certs = walk_get(&f, "certs");
    size_t mark = walk_push(w, "certs");
    if (walk_type(w, certs, NODE_SEQ) == 0) {
        if (certs->nitems == 0)
            walk_error(w, certs, "must list at least one {cert, key} pair");
        t->certs = xcalloc(certs->nitems, sizeof *t->certs);
        for (size_t i = 0; i < certs->nitems; i++) {
            struct fields cf;
            size_t imark = walk_push_index(w, i);
            struct conf_cert *cert = &t->certs[t->ncerts++];
            if (walk_map(w, certs->items[i], cert_keys, "key", &cf) == 0) {
                walk_require(w, &cf, "cert");
                walk_require(w, &cf, "key");
                walk_str(w, &cf, "cert", 0, &cert->cert);
                walk_str(w, &cf, "key", 0, &cert->key);
            }
            walk_pop(w, imark);
        }
    }
    walk_pop(w, mark);
}

static void
read_listener(struct walk *w, const struct node *n, struct conf_listen *l)
{
    static const char *const keys[] = {"address", "tls", "route_to", NULL};
    static const char *const routes[] = {"normal", "standby", "blue", "green", NULL};
    struct fields f;
    int route = ROUTE_TO_NORMAL;

    conf_listen_tls_init(&l->tls);
    if (walk_map(w, n, keys, "key", &f) == -1)
        return;
    walk_require(w, &f, "address");
    walk_addr(w, &f, "address", true, &l->addr);
    if (walk_enum(w, &f, "route_to", routes, &route) == 0)
        l->route_to = (enum route_to)route;
    if (walk_get(&f, "tls") != NULL) {
        size_t mark = walk_push(w, "tls");
        l->tls_enabled = true;
        conf_read_listen_tls(w, walk_get(&f, "tls"), &l->tls);
        walk_pop(w, mark);
    }
}

static void
read_listen(struct walk *w, const struct fields *top, struct conf *c)
{
    const struct node *n = walk_get(top, "listen");

    if (walk_require(w, top, "listen") == -1)
        return;
    size_t mark = walk_push(w, "listen");
    if (walk_type(w, n, NODE_SEQ) == -1)
        goto out;
    if (n->nitems == 0) {
        walk_error(w, n, "must list at least one address to listen on");
        goto out;
    }
    c->listen = xcalloc(n->nitems, sizeof *c->listen);
    for (size_t i = 0; i < n->nitems; i++) {
        struct conf_listen *l = &c->listen[c->nlisten++];
        size_t imark = walk_push_index(w, i);
        read_listener(w, n->items[i], l);
        /* Port 0 asks the kernel for a free port per listener, so those never clash. */
        bool any_port = l->addr.len != 0 && conf_addr_port(&l->addr) == 0;
        for (size_t j = 0; j < i && l->addr.len != 0 && !any_port; j++) {
            if (strcmp(c->listen[j].addr.text, l->addr.text) == 0)
                walk_error(w, n->items[i], "%s is already listed as listen[%zu]", l->addr.text, j);
        }
        walk_pop(w, imark);
    }
out:
    walk_pop(w, mark);
}

static void
read_workers(struct walk *w, const struct fields *top, struct conf *c)
{
    const struct node *n = walk_get(top, "workers");

    if (n != NULL && n->type == NODE_SCALAR && strcmp(n->text, "auto") == 0) {
        c->workers = 0;
        return;
    }
    if (n != NULL && n->type == NODE_SCALAR && n->text[strspn(n->text, "0123456789")] != '\0') {
        size_t mark = walk_push(w, "workers");
        walk_error(w, n, "expected auto or a number of threads from 1 to 64, found \"%s\"",
                   n->text);
        walk_pop(w, mark);
        return;
    }
    walk_u32(w, top, "workers", 1, 64, &c->workers);
}

/* allow_uids / allow_gids: numbers as they are, names looked up (getpwnam_r / getgrnam_r). */
static int
lookup_id(const char *name, bool group, unsigned *id)
{
    size_t size = 1024;
    int rc;

    for (;;) {
        char *buf = xmalloc(size);
        if (group) {
            struct group gr;
            struct group *res = NULL;
            rc = getgrnam_r(name, &gr, buf, size, &res);
            if (rc == 0 && res != NULL)
                *id = (unsigned)gr.gr_gid;
            else if (rc == 0)
                rc = ENOENT;
        } else {
            struct passwd pw;
            struct passwd *res = NULL;
            rc = getpwnam_r(name, &pw, buf, size, &res);
            if (rc == 0 && res != NULL)
                *id = (unsigned)pw.pw_uid;
            else if (rc == 0)
                rc = ENOENT;
        }
        free(buf);
        if (rc != ERANGE || size >= (1u << 20))
            return rc;
        size *= 2;
    }
}

static void
read_ids(struct walk *w, const struct fields *f, const char *key, bool group, unsigned **out,
         size_t *count)
{
    const struct node *n = walk_get(f, key);

    if (n == NULL)
        return;
    size_t mark = walk_push(w, key);
    if (walk_type(w, n, NODE_SEQ) == 0) {
        *out = xcalloc(n->nitems, sizeof **out);
        for (size_t i = 0; i < n->nitems; i++) {
            size_t imark = walk_push_index(w, i);
            const char *s = walk_scalar(w, n->items[i]);
            uint64_t v;
            unsigned id;
            int rc;
            if (s == NULL) {
                /* reported */
            } else if (s[0] != '\0' && s[strspn(s, "0123456789")] == '\0') {
                if (conf_parse_uint(s, UINT32_MAX - 1, &v) == 0)
                    (*out)[(*count)++] = (unsigned)v;
                else
                    walk_error(w, n->items[i], "%s id %s is out of range", group ? "group" : "user",
                               s);
            } else if ((rc = lookup_id(s, group, &id)) == 0) {
                (*out)[(*count)++] = id;
            } else if (rc == ENOENT || rc == ESRCH || rc == EBADF || rc == EPERM) {
                walk_error(w, n->items[i], "unknown %s \"%s\"", group ? "group" : "user", s);
            } else {
                char buf[128];
                walk_error(w, n->items[i], "cannot look up %s \"%s\": %s", group ? "group" : "user",
                           s, strerror_r(rc, buf, sizeof buf));
            }
            walk_pop(w, imark);
        }
    }
    walk_pop(w, mark);
}

static void
read_control(struct walk *w, const struct node *n, struct conf_control *ctl)
{
    static const char *const keys[] = {"socket",     "allow_uids", "allow_gids", "listen",
                                       "token_file", "tls",        NULL};
    struct fields f;
    const struct node *listen;
    const struct node *tls;

    if (walk_map(w, n, keys, "key", &f) == -1)
        return;
    if (walk_str(w, &f, "socket", 0, &ctl->socket) == 0 &&
        strlen(ctl->socket) >= sizeof(((struct sockaddr_un *)NULL)->sun_path)) {
        size_t mark = walk_push(w, "socket");
        walk_error(w, walk_get(&f, "socket"), "longer than the %zu bytes a unix socket path allows",
                   sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1);
        walk_pop(w, mark);
    }
    /* uid_t and gid_t are unsigned int on Linux (the compiler checks): read into them */
    read_ids(w, &f, "allow_uids", false, &ctl->allow_uids, &ctl->nallow_uids);
    read_ids(w, &f, "allow_gids", true, &ctl->allow_gids, &ctl->nallow_gids);
    walk_str(w, &f, "token_file", STR_NULLABLE, &ctl->token_file);

    listen = walk_get(&f, "listen");
    if (listen != NULL && !(listen->type == NODE_SCALAR && listen->is_null)) {
        size_t mark = walk_push(w, "listen");
        if (walk_addr_node(w, listen, true, &ctl->listen) == 0) {
            ctl->listen_enabled = true;
            if (ctl->token_file == NULL)
                walk_error(w, listen,
                           "a TCP control listener needs control.token_file (its bearer token)");
        }
        walk_pop(w, mark);
    }
    if ((tls = walk_get(&f, "tls")) != NULL) {
        size_t mark = walk_push(w, "tls");
        ctl->tls_enabled = true;
        if (listen == NULL || (listen->type == NODE_SCALAR && listen->is_null))
            walk_error(w, tls, "TLS applies to control.listen, which is not set");
        conf_read_listen_tls(w, tls, &ctl->tls);
        walk_pop(w, mark);
    }
}

/* Runs fn on the mapping at key of top, with the key on the path; nothing when absent. */
#define SECTION(w, top, key, fn, ...)                                                              \
    do {                                                                                           \
        const struct node *sec_ = walk_get((top), (key));                                          \
        if (sec_ != NULL) {                                                                        \
            size_t mark_ = walk_push((w), (key));                                                  \
            fn((w), sec_, __VA_ARGS__);                                                            \
            walk_pop((w), mark_);                                                                  \
        }                                                                                          \
    } while (0)

static void
read_timeouts(struct walk *w, const struct node *n, struct conf_timeouts *t)
{
    static const char *const keys[] = {
        "client_header",     "client_body", "keepalive", "upstream_connect",
        "upstream_response", "tunnel",      "shutdown",  NULL};
    struct fields f;

    if (walk_map(w, n, keys, "key", &f) == -1)
        return;
    walk_duration(w, &f, "client_header", 1, &t->client_header_ms);
    walk_duration(w, &f, "client_body", 1, &t->client_body_ms);
    walk_duration(w, &f, "keepalive", 1, &t->keepalive_ms);
    walk_duration(w, &f, "upstream_connect", 1, &t->upstream_connect_ms);
    walk_duration(w, &f, "upstream_response", 1, &t->upstream_response_ms);
    walk_duration(w, &f, "tunnel", 1, &t->tunnel_ms);
    walk_duration(w, &f, "shutdown", 0, &t->shutdown_ms);
}

static void
read_limits(struct walk *w, const struct node *n, struct conf_limits *l)
{
    static const char *const keys[] = {"max_header_bytes", "max_headers",    "max_uri_bytes",
                                       "max_connections",  "max_body_bytes", NULL};
    struct fields f;

    if (walk_map(w, n, keys, "key", &f) == -1)
        return;
    walk_size(w, &f, "max_header_bytes", 1024, &l->max_header_bytes);
    walk_u32(w, &f, "max_headers", 1, UINT32_MAX, &l->max_headers);
    walk_size(w, &f, "max_uri_bytes", 256, &l->max_uri_bytes);
    walk_u32(w, &f, "max_connections", 1, UINT32_MAX, &l->max_connections);
    walk_size(w, &f, "max_body_bytes", 0, &l->max_body_bytes);
}

static void
read_log(struct walk *w, const struct node *n, struct conf_log *l)
{
    static const char *const keys[] = {"access", "audit", "error", "level", NULL};
    static const char *const levels[] = {"error", "warn", "info", "debug", NULL};
    struct fields f;
    int level = (int)l->level;

    if (walk_map(w, n, keys, "key", &f) == -1)
        return;
    walk_str(w, &f, "access", STR_NULLABLE, &l->access);
    walk_str(w, &f, "audit", STR_NULLABLE, &l->audit);
    walk_str(w, &f, "error", STR_NULLABLE, &l->error);
    if (walk_enum(w, &f, "level", levels, &level) == 0)
        l->level = (enum log_level)level;
}

static void
read_notify(struct walk *w, const struct node *n, struct conf_notify *nt)
{
    static const char *const keys[] = {"webhooks", NULL};
    struct fields f;
    const struct node *hooks;

    if (walk_map(w, n, keys, "key", &f) == -1 || (hooks = walk_get(&f, "webhooks")) == NULL)
        return;
    size_t mark = walk_push(w, "webhooks");
    if (walk_type(w, hooks, NODE_SEQ) == 0) {
        nt->webhooks = xcalloc(hooks->nitems, sizeof *nt->webhooks);
        for (size_t i = 0; i < hooks->nitems; i++) {
            size_t imark = walk_push_index(w, i);
            const char *s = walk_scalar(w, hooks->items[i]);
            if (s != NULL && ((strncmp(s, "http://", 7) == 0 && s[7] != '\0') ||
                              (strncmp(s, "https://", 8) == 0 && s[8] != '\0')))
                nt->webhooks[nt->nwebhooks++] = xstrdup(s);
            else if (s != NULL)
                walk_error(w, hooks->items[i], "expected an http:// or https:// URL, found \"%s\"",
                           s);
            walk_pop(w, imark);
        }
    }
    walk_pop(w, mark);
}

static void
read_drain(struct walk *w, const struct node *n, struct conf_drain *d)
{
    static const char *const keys[] = {"tunnel_timeout", NULL};
    struct fields f;

    if (walk_map(w, n, keys, "key", &f) == 0)
        walk_duration(w, &f, "tunnel_timeout", 0, &d->tunnel_timeout_ms);
}

/* Cross-section checks, once every section is read. */
static void
check_whole(struct walk *w, const struct fields *top, struct conf *c)
{
    const struct node *ctl = walk_get(top, "control");
    const struct node *at = ctl;

    if (!c->control.listen_enabled)
        return;
    for (size_t i = 0; i < ctl->npairs; i++) {
        if (strcmp(ctl->pairs[i].key->text, "listen") == 0)
            at = ctl->pairs[i].val;
    }
    for (size_t i = 0; i < c->nlisten; i++) {
        if (strcmp(c->listen[i].addr.text, c->control.listen.text) == 0) {
            size_t mark = walk_push(w, "control");
            walk_push(w, "listen");
            walk_error(w, at, "%s is also listen[%zu]: the control API needs its own address",
                       c->control.listen.text, i);
            walk_pop(w, mark);
        }
    }
}

struct conf *
conf_from_tree(const char *file, const struct node *root, struct conf_err *err)
{
    struct walk w = {.file = file, .err = err};
    size_t before = err->count;
    struct fields top;
    struct conf *c;

    if (root->type == NODE_SCALAR && root->is_null) {
        walk_error(&w, root, "the file is empty (expected a mapping of settings)");
        return NULL;
    }
    if (walk_map(&w, root, TOP_KEYS, "key", &top) == -1)
        return NULL;

    c = xcalloc(1, sizeof *c);
    conf_init(c);
    c->path = xstrdup(file);
    read_listen(&w, &top, c);
    read_workers(&w, &top, c);
    conf_read_pools(&w, &top, c);
    SECTION(&w, &top, "routing", conf_read_routing, &c->routing);
    SECTION(&w, &top, "rollout", conf_read_rollout, &c->rollout);
    SECTION(&w, &top, "drain", read_drain, &c->drain);
    SECTION(&w, &top, "control", read_control, &c->control);
    walk_str(&w, &top, "state_file", STR_NULLABLE, &c->state_file);
    walk_duration(&w, &top, "state_max_age", 1, &c->state_max_age_ms);
    SECTION(&w, &top, "timeouts", read_timeouts, &c->timeouts);
    SECTION(&w, &top, "limits", read_limits, &c->limits);
    SECTION(&w, &top, "log", read_log, &c->log);
    SECTION(&w, &top, "notify", read_notify, &c->notify);
    check_whole(&w, &top, c);

    if (err->count != before)
        conf_destroy(&c);
    return c;
}
