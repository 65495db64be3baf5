/* control/api.c — the control API server (control/API.md): evhttp on the unix socket with
 * SO_PEERCRED checks, optionally on TCP with a bearer token (over TLS with control.tls); JSON
 * envelopes with stable error codes, authorization, request bodies, dispatch, the audit log. */
#include "control/api.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <jansson.h>

#include "conf/xalloc.h"
#include "control/api_body.h"
#include "control/api_internal.h"
#include "control/audit.h"
#include "control/daemon.h"
#include "proxy/http.h"
#include "proxy/log.h"
#include "proxy/sock.h"
#include "proxy/tls.h"

/* --- replies --- */

uint64_t
api_generation(const struct api *a)
{
    struct route_word rw;
    routing_load(&a->d->routing, &rw);
    return rw.generation;
}

void
api_send_json(struct evhttp_request *req, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    struct evbuffer *out = evbuffer_new();
    evbuffer_add(out, text, strlen(text));
    evbuffer_add(out, "\n", 1);
    free(text);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_send_reply(req, status, http_reason(status), out);
    evbuffer_free(out);
    json_decref(body);
}

/* data is stolen. */
void
api_reply_ok(struct api *a, struct evhttp_request *req, json_t *data)
{
    a->answered_status = 200;
    a->answered_code = NULL;
    api_send_json(req, 200, api_envelope_ok(api_generation(a), data));
}

void
api_reply_error(struct api *a, struct evhttp_request *req, int status, const char *code,
                const char *field, const char *fmt, ...)
{
    a->answered_status = status;
    a->answered_code = code;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    api_send_json(req, status, api_envelope_error(api_generation(a), code, field, msg));
}

void
api_reply_refusal(struct api *a, struct evhttp_request *req, const struct api_refusal *no)
{
    api_reply_error(a, req, no->status, no->code, no->field, "%s", no->message);
}

/* --- authorization --- */

static bool
gid_allowed(const struct conf_control *cc, gid_t gid)
{
    for (size_t i = 0; i < cc->nallow_gids; i++)
        if (cc->allow_gids[i] == gid)
            return true;
    return false;
}

/* Whether a unix-socket peer may use the API: root, our own uid, an allowed uid, or a member
 * (primary or supplementary) of an allowed group. */
static bool
peer_allowed(const struct conf_control *cc, uid_t uid, gid_t gid)
{
    if (uid == 0 || uid == geteuid())
        return true;
    for (size_t i = 0; i < cc->nallow_uids; i++)
        if (cc->allow_uids[i] == uid)
            return true;
    if (gid_allowed(cc, gid))
        return true;
    if (cc->nallow_gids == 0)
        return false;
    char buf[4096];
    struct passwd pw, *pwp = NULL;
    if (getpwuid_r(uid, &pw, buf, sizeof(buf), &pwp) != 0 || pwp == NULL)
        return false;
    gid_t groups[256];
    int n = 256;
    if (getgrouplist(pw.pw_name, gid, groups, &n) == -1)
        n = 256;
    for (int i = 0; i < n; i++)
        if (gid_allowed(cc, groups[i]))
            return true;
    return false;
}

/* Constant-time comparison of the presented token with ours. */
static bool
token_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char diff = (unsigned char)(alen != blen);
    size_t n = alen < blen ? alen : blen;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0 && blen > 0;
}

/* Checks the peer; fills peer (for events and the audit log). false when refused (answered). */
static bool
authorize(struct api_listener *l, struct evhttp_request *req, char *peer, size_t peerlen,
          json_t **peer_json)
{
    struct api *a = l->a;
    const struct conf_control *cc = &a->d->snap->conf->control;
    if (l->tcp) {
        const char *auth =
            evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
        const char *tok = auth && strncmp(auth, "Bearer ", 7) == 0 ? auth + 7 : NULL;
        if (tok == NULL || a->token == NULL ||
            !token_equal(a->token, strlen(a->token), tok, strlen(tok))) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
            api_reply_error(a, req, 401, "forbidden", NULL, "a valid bearer token is required");
            *peer_json = json_pack("{s:s}", "token", "(invalid)");
            return false;
        }
        snprintf(peer, peerlen, "token %s", a->token_name);
        *peer_json = json_pack("{s:s}", "token", a->token_name);
        return true;
    }
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (bev == NULL ||
        getsockopt(bufferevent_getfd(bev), SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1) {
        api_reply_error(a, req, 403, "forbidden", NULL, "cannot read the peer's credentials");
        return false;
    }
    snprintf(peer, peerlen, "uid %u pid %d", (unsigned)cred.uid, (int)cred.pid);
    *peer_json = json_pack("{s:I, s:I, s:I}", "uid", (json_int_t)cred.uid, "gid",
                           (json_int_t)cred.gid, "pid", (json_int_t)cred.pid);
    if (!peer_allowed(cc, cred.uid, cred.gid)) {
        api_reply_error(a, req, 403, "forbidden", NULL,
                        "uid %u is not in control.allow_uids or control.allow_gids",
                        (unsigned)cred.uid);
        log_warn("control: refused a request from uid %u pid %d", (unsigned)cred.uid,
                 (int)cred.pid);
        return false;
    }
    return true;
}

/* --- request bodies --- */

/* The request body as a JSON object ({} when empty), or NULL after answering 400/413. */
static json_t *
read_body(struct api *a, struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    struct api_refusal no;
    /* Over the limit, the body is refused before it is made contiguous. */
    const char *data = len > 0 && len <= API_MAX_BODY ? (const char *)evbuffer_pullup(in, -1) : "";
    json_t *j = api_body_parse(data, len, &no);
    if (j == NULL)
        api_reply_refusal(a, req, &no);
    return j;
}

/* --- the audit log --- */

static void
audit(struct api *a, json_t *peer, struct evhttp_request *req, const char *path, json_t *body,
      int status, const char *code, uint64_t gen_before)
{
    if (a->audit == NULL)
        return;
    static const char *const methods[] = {"GET",     "POST",  "HEAD",    "PUT",  "DELETE",
                                          "OPTIONS", "TRACE", "CONNECT", "PATCH"};
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    const char *method = "?";
    for (int i = 0; i < 9; i++)
        if (cmd == (enum evhttp_cmd_type)(1 << i))
            method = methods[i];
    struct audit_entry e = {
        .peer = peer,
        .method = method,
        .path = path,
        .request = body,
        .status = status,
        .code = code,
        .generation_before = gen_before,
        .generation_after = api_generation(a),
    };
    audit_write(a->audit, &e);
}

/* --- dispatch --- */

/* Splits "/v1/servers/POOL/NAME/STATE" into its parts (in buf). */
static bool
split_server_path(const char *path, char *buf, size_t len, char **pool, char **name, char **st)
{
    const char *prefix = "/v1/servers/";
    size_t pl = strlen(prefix);
    if (strncmp(path, prefix, pl) != 0 || strlen(path + pl) >= len)
        return false;
    strcpy(buf, path + pl);
    *pool = buf;
    char *s1 = strchr(buf, '/');
    if (s1 == NULL)
        return false;
    *s1 = '\0';
    *name = s1 + 1;
    char *s2 = strchr(*name, '/');
    if (s2 == NULL)
        return false;
    *s2 = '\0';
    *st = s2 + 1;
    return **pool && **name && **st && strchr(*st, '/') == NULL;
}

static void
on_request(struct evhttp_request *req, void *arg)
{
    struct api_listener *l = arg;
    struct api *a = l->a;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    if (path == NULL || *path == '\0')
        path = "/";
    char peer[96];
    json_t *peer_json = NULL;
    if (!authorize(l, req, peer, sizeof(peer), &peer_json)) {
        /* A refused attempt at a mutation is worth an audit line too. */
        if (evhttp_request_get_command(req) != EVHTTP_REQ_GET)
            audit(a, peer_json, req, path, NULL, a->answered_status, a->answered_code,
                  api_generation(a));
        json_decref(peer_json);
        return;
    }
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    bool get = cmd == EVHTTP_REQ_GET;
    char sbuf[256];
    char *spool = NULL, *sname = NULL, *sstate = NULL;

    if (strcmp(path, "/v1/status") == 0 || strcmp(path, "/v1/events") == 0 ||
        strcmp(path, "/metrics") == 0) {
        if (!get)
            api_reply_error(a, req, 405, "invalid", NULL, "%s takes GET", path);
        else if (path[1] == 'm')
            api_handle_metrics(a, req);
        else if (path[4] == 's')
            api_handle_status(a, req);
        else
            api_handle_events(a, req, query);
        json_decref(peer_json);
        return;
    }

    bool is_server = split_server_path(path, sbuf, sizeof(sbuf), &spool, &sname, &sstate);
    enum evhttp_cmd_type want = strcmp(path, "/v1/weights") == 0 ? EVHTTP_REQ_PUT : EVHTTP_REQ_POST;
    bool control = strcmp(path, "/v1/pause") == 0 || strcmp(path, "/v1/resume") == 0 ||
                   strcmp(path, "/v1/promote") == 0;
    bool known = is_server || control || strcmp(path, "/v1/rollback") == 0 ||
                 strcmp(path, "/v1/weights") == 0 || strcmp(path, "/v1/reload") == 0 ||
                 strcmp(path, "/v1/cutover") == 0;
    if (!known) {
        api_reply_error(a, req, 404, "not_found", NULL, "no such endpoint: %s", path);
        json_decref(peer_json);
        return;
    }
    if (cmd != want) {
        api_reply_error(a, req, 405, "invalid", NULL, "%s takes %s", path,
                        want == EVHTTP_REQ_PUT ? "PUT" : "POST");
        json_decref(peer_json);
        return;
    }
    uint64_t gen_before = api_generation(a);
    if (a->shutting_down) {
        api_reply_error(a, req, 503, "unavailable", NULL, "switchyard is shutting down");
        audit(a, peer_json, req, path, NULL, 503, "unavailable", gen_before);
        json_decref(peer_json);
        return;
    }
    json_t *body = read_body(a, req);
    if (body) {
        if (is_server)
            api_handle_server(a, req, body, spool, sname, sstate, peer);
        else if (strcmp(path, "/v1/rollback") == 0)
            api_handle_rollback(a, req, body, peer);
        else if (strcmp(path, "/v1/weights") == 0)
            api_handle_weights(a, req, body, peer);
        else if (strcmp(path, "/v1/cutover") == 0)
            api_handle_cutover(a, req, body, peer);
        else if (control)
            api_handle_control(a, req, body, path + 4, peer);
        else
            api_handle_reload(a, req, body);
    }
    audit(a, peer_json, req, path, body, a->answered_status, a->answered_code, gen_before);
    json_decref(body);
    json_decref(peer_json);
}

/* --- sockets --- */

static int
unix_listen(const char *path, char *err, size_t errlen, ino_t *ino)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "control.socket %s: path too long", path);
        return -1;
    }
    /* A live socket means another instance: never take it over. */
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    strcpy(sa.sun_path, path);
    if (probe != -1 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        close(probe);
        snprintf(err, errlen, "control.socket %s: another process answers there", path);
        return -1;
    }
    if (probe != -1)
        close(probe);
    /* The directory (e.g. /run/switchyard) is made when missing, as systemd's
     * RuntimeDirectory= would; one level only. */
    char dir[sizeof(sa.sun_path)];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (mkdir(dir, 0750) == -1 && errno != EEXIST) {
            snprintf(err, errlen, "control.socket %s: cannot create %s: %s", path, dir,
                     strerror(errno));
            return -1;
        }
    }
    /* Made beside its path and renamed over it: a stale socket is replaced atomically. */
    char tmp[sizeof(sa.sun_path)];
    int n = snprintf(tmp, sizeof(tmp), "%s.%d", path, (int)getpid());
    bool beside = n > 0 && (size_t)n < sizeof(tmp);
    const char *bind_path = beside ? tmp : path;
    unlink(bind_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        snprintf(err, errlen, "control.socket: socket: %s", strerror(errno));
        return -1;
    }
    strcpy(sa.sun_path, bind_path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 || chmod(bind_path, 0660) == -1 ||
        listen(fd, 128) == -1 || (beside && rename(bind_path, path) == -1)) {
        snprintf(err, errlen, "control.socket %s: %s", path, strerror(errno));
        close(fd);
        unlink(bind_path);
        return -1;
    }
    struct stat st;
    if (stat(path, &st) == 0)
        *ino = st.st_ino;
    return fd;
}

static char *
read_token(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "control.token_file %s: %s", path, strerror(errno));
        return NULL;
    }
    char buf[1024];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    if (n < 16) {
        snprintf(err, errlen, "control.token_file %s: the token must be at least 16 characters",
                 path);
        return NULL;
    }
    return xstrdup(buf);
}

#define API_ACCEPT_RETRY_MS 100

static void
on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    evconnlistener_enable(arg);
}

/* accept() failed for a reason libevent does not retry by itself (EMFILE, ENFILE, ENOBUFS):
 * without this it would call accept() again at once, as long as the listener stays readable,
 * spinning the main thread and flooding the log. The listener rests for a moment instead; the
 * connections wait in the backlog. (evhttp owns the listener's callback argument, so the
 * listener itself is the timer's.) */
static void
on_accept_error(struct evconnlistener *lev, void *arg)
{
    struct timeval tv = {0, API_ACCEPT_RETRY_MS * 1000};

    log_warn("control: accept: %s; pausing for %d ms", strerror(EVUTIL_SOCKET_ERROR()),
             API_ACCEPT_RETRY_MS);
    evconnlistener_disable(lev);
    if (event_base_once(evconnlistener_get_base(lev), -1, EV_TIMEOUT, on_accept_resume, lev, &tv) ==
        -1)
        evconnlistener_enable(lev);
}

static struct evhttp *
http_for(struct api *a, struct api_listener *l, int fd)
{
    struct evhttp *http = evhttp_new(a->d->base);
    if (http == NULL)
        return NULL;
    evhttp_set_gencb(http, on_request, l);
    evhttp_set_max_headers_size(http, 16 * 1024);
    evhttp_set_max_body_size(http, 4 * API_MAX_BODY);
    evhttp_set_timeout(http, API_MAX_WAIT_S + 30);
    /* OPTIONS and TRACE reach on_request too, which answers a wrong method with the JSON 405
     * (evhttp answers a method it does not allow with an HTML 501). Not CONNECT: evhttp sends
     * any answer to it without a length and keeps the connection open. */
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                         EVHTTP_REQ_DELETE | EVHTTP_REQ_HEAD | EVHTTP_REQ_PATCH |
                                         EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE);
    struct evhttp_bound_socket *bound = evhttp_accept_socket_with_handle(http, fd);
    if (bound == NULL) {
        evhttp_free(http);
        close(fd);
        return NULL;
    }
    evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(bound), on_accept_error);
    return http;
}

/* evhttp's bufferevent for each connection accepted on the TCP listener with control.tls: the
 * server side of a TLS handshake (evhttp sets the socket afterwards). Never NULL — evhttp would
 * then serve the connection as plain HTTP — so an SSL that cannot be made aborts, like any
 * allocation failure. Main thread. */
static struct bufferevent *
tls_bev(struct event_base *base, void *arg)
{
    struct api *a = arg;
    SSL *ssl = tls_new_ssl(a->tls);
    struct bufferevent *bev = NULL;

    if (ssl != NULL)
        bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL)
        abort(); /* out of memory */
    /* A client closing without close_notify (curl, yardctl) is an EOF, not an error. */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

struct api *
api_create(struct daemon *d, char *err, size_t errlen)
{
    const struct conf *conf = d->snap->conf;
    struct api *a = xcalloc(1, sizeof(*a));
    a->d = d;
    a->lunix = (struct api_listener){.a = a, .tcp = false};
    a->ltcp = (struct api_listener){.a = a, .tcp = true};
    if (conf->log.audit) {
        a->audit = audit_open(conf->log.audit, err, errlen);
        if (a->audit == NULL)
            goto fail;
    }
    int fd = unix_listen(conf->control.socket, err, errlen, &a->socket_ino);
    if (fd == -1)
        goto fail;
    a->socket_path = xstrdup(conf->control.socket);
    a->unix_http = http_for(a, &a->lunix, fd);
    if (a->unix_http == NULL) {
        snprintf(err, errlen, "control.socket: cannot serve HTTP");
        goto fail;
    }
    if (conf->control.listen_enabled) {
        a->token = read_token(conf->control.token_file, err, errlen);
        if (a->token == NULL)
            goto fail;
        const char *slash = strrchr(conf->control.token_file, '/');
        a->token_name = xstrdup(slash ? slash + 1 : conf->control.token_file);
        if (conf->control.tls_enabled) {
            char terr[512];
            a->tls = tls_ctx_create(&conf->control.tls, terr, sizeof(terr));
            if (a->tls == NULL) {
                snprintf(err, errlen, "control.tls: %s", terr);
                goto fail;
            }
        }
        int tfd = sock_listen(&conf->control.listen, 0, err, errlen);
        if (tfd == -1)
            goto fail;
        a->tcp_http = http_for(a, &a->ltcp, tfd);
        if (a->tcp_http == NULL) {
            snprintf(err, errlen, "control.listen: cannot serve HTTP");
            goto fail;
        }
        if (a->tls != NULL)
            evhttp_set_bevcb(a->tcp_http, tls_bev, a);
        log_info("control API on %s (%sbearer token)", conf->control.listen.text,
                 a->tls ? "TLS, " : "");
    }
    log_info("control API on unix:%s", a->socket_path);
    return a;
fail:
    api_destroy(&a);
    return NULL;
}

void
api_audit_event(struct api *a, const json_t *event)
{
    if (a && a->audit)
        audit_write_event(a->audit, event);
}

int
api_reopen_logs(struct api *a)
{
    return a && a->audit ? audit_reopen(a->audit) : 0;
}

struct tls_ctx *
api_tls(struct api *a)
{
    return a ? a->tls : NULL;
}

void
api_shutting_down(struct api *a)
{
    if (a == NULL)
        return;
    a->shutting_down = true;
    while (a->waiters)
        api_waiter_answer(a->waiters);
}

void
api_destroy(struct api **ap)
{
    struct api *a = *ap;
    if (a == NULL)
        return;
    *ap = NULL;
    while (a->waiters)
        api_waiter_answer(a->waiters);
    if (a->unix_http)
        evhttp_free(a->unix_http);
    if (a->tcp_http)
        evhttp_free(a->tcp_http);
    tls_ctx_destroy(&a->tls); /* after the connections that use it */
    if (a->socket_path) {
        /* Only our own socket: a newer instance may have replaced it. */
        struct stat st;
        if (stat(a->socket_path, &st) == 0 && st.st_ino == a->socket_ino)
            unlink(a->socket_path);
    }
    audit_close(&a->audit);
    free(a->socket_path);
    free(a->token);
    free(a->token_name);
    free(a);
}
