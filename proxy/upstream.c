/* proxy/upstream.c — upstream connections: non-blocking connect and the per-worker, per-server
 * keep-alive pool. Everything here runs on the worker that owns the connection. */
#include "proxy/upstream.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include "conf/xalloc.h"
#include "proxy/clock.h"
#include "proxy/log.h"
#include "proxy/sock.h"
#include "proxy/stats.h"
#include "proxy/tls.h"
#include "proxy/worker.h"

#define UP_MAX_SINGLE_READ (64 * 1024)

static void
list_remove(struct upconn *u)
{
    struct server_wslot *slot = &u->srv->w[u->w->id];
    if (u->prev)
        u->prev->next = u->next;
    else
        slot->idle_head = u->next;
    if (u->next)
        u->next->prev = u->prev;
    u->next = u->prev = NULL;
    slot->nidle--;
    u->idle = false;
}

struct upconn *
upstream_take_idle(struct worker *w, struct server *srv)
{
    struct upconn *u = srv->w[w->id].idle_head;
    if (u == NULL)
        return NULL;
    list_remove(u);
    /* The idle timeout stays armed: the caller sets its own timeouts before the loop runs
     * again (re-arming twice per request showed in the profile). */
    bufferevent_setcb(u->bev, NULL, NULL, NULL, NULL);
    return u;
}

struct upconn *
upstream_connect(struct worker *w, struct server *srv, const struct pool *pool,
                 uint64_t connect_timeout_ms)
{
    int fd = socket(srv->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        log_warn("upstream %s/%s: socket: %s", conf_pool_name(srv->pool), srv->name,
                 strerror(errno));
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct bufferevent *bev;
    if (pool->tls) {
        SSL *ssl =
            tls_client_new_ssl(pool->tls, &pool->conf->tls, &srv->addr, &srv->w[w->id].tls_session);
        bev = ssl ? bufferevent_openssl_socket_new(w->base, fd, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                   BEV_OPT_CLOSE_ON_FREE)
                  : NULL;
        if (bev)
            bufferevent_openssl_set_allow_dirty_shutdown(bev, 1); /* EOF is EOF */
        else if (ssl)
            SSL_free(ssl); /* libevent frees it only once the bufferevent exists */
    } else {
        bev = bufferevent_socket_new(w->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (bev == NULL) {
        close(fd);
        return NULL;
    }
    bufferevent_set_max_single_read(bev, UP_MAX_SINGLE_READ);
    struct upconn *u = xcalloc(1, sizeof(*u));
    u->bev = bev;
    u->tls = pool->tls != NULL;
    u->srv = server_ref(srv);
    u->w = w;
    srv->w[w->id].open_conns++;
    stats_gauge(&srv->stats[w->id].conns, 1);
    stats_gauge(&w->board->pool[srv->pool][w->id].conns, 1);
    struct timeval tv = clock_tv(connect_timeout_ms);
    bufferevent_set_timeouts(bev, NULL, &tv);
    if (bufferevent_socket_connect(bev, (struct sockaddr *)&srv->addr.ss, (int)srv->addr.len) ==
        -1) {
        /* libevent reports an immediate refusal through the event callback, so -1 here means
         * the socket could not be used at all. */
        upstream_close(&u);
        return NULL;
    }
    if (!u->tls)
        sock_hook_reads(bev); /* after the connect, which made the read event anew */
    return u;
}

static void
on_idle_read(struct bufferevent *bev, void *arg)
{
    /* An idle connection must stay silent: data means the server is confused; close. */
    struct upconn *u = arg;
    upstream_close(&u);
}

static void
on_idle_event(struct bufferevent *bev, short events, void *arg)
{
    struct upconn *u = arg;
    upstream_close(&u);
}

void
upstream_park(struct upconn **up, uint32_t max_idle, uint64_t idle_timeout_ms)
{
    struct upconn *u = *up;
    *up = NULL;
    if (u == NULL)
        return;
    struct server_wslot *slot = &u->srv->w[u->w->id];
    bool removed = atomic_load_explicit(&u->srv->removed, memory_order_relaxed);
    if (slot->nidle >= max_idle || removed || u->w->draining ||
        evbuffer_get_length(bufferevent_get_input(u->bev)) > 0) {
        upstream_close(&u);
        return;
    }
    u->owner = NULL;
    u->idle = true;
    u->prev = NULL;
    u->next = slot->idle_head;
    if (u->next)
        u->next->prev = u;
    slot->idle_head = u;
    slot->nidle++;
    bufferevent_setcb(u->bev, on_idle_read, NULL, on_idle_event, u);
    struct timeval tv = clock_tv(idle_timeout_ms);
    bufferevent_set_timeouts(u->bev, &tv, NULL);
    bufferevent_enable(u->bev, EV_READ);
}

void
upstream_close(struct upconn **up)
{
    struct upconn *u = *up;
    if (u == NULL)
        return;
    *up = NULL;
    if (u->idle)
        list_remove(u);
    u->srv->w[u->w->id].open_conns--;
    stats_gauge(&u->srv->stats[u->w->id].conns, -1);
    stats_gauge(&u->w->board->pool[u->srv->pool][u->w->id].conns, -1);
    if (u->tls && u->connected) {
        SSL *ssl = bufferevent_openssl_get_ssl(u->bev);
        if (ssl && !(SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN))
            SSL_shutdown(ssl); /* close_notify (libevent 2.1 never sends it); one try */
    }
    bufferevent_free(u->bev);
    server_release(&u->srv);
    free(u);
}

void
upstream_close_idle(struct worker *w, struct server *srv)
{
    while (srv->w[w->id].idle_head) {
        struct upconn *u = srv->w[w->id].idle_head;
        upstream_close(&u);
    }
}

void
upstream_connect_error(struct upconn *u, char *buf, size_t len)
{
    if (!u->tls) {
        snprintf(buf, len, "failed");
        return;
    }
    unsigned long e = 0, next;
    while ((next = bufferevent_get_openssl_error(u->bev)) != 0)
        e = next; /* the last one is the most specific */
    tls_client_error(bufferevent_openssl_get_ssl(u->bev), e, buf, len);
}
