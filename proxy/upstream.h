/* proxy/upstream.h — connections to upstream servers: connecting, and the per-worker keep-alive
 * pool of idle connections per server (DESIGN §4). Worker thread only. */
#ifndef PROXY_UPSTREAM_H
#define PROXY_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>

#include <event2/bufferevent.h>
#include <llhttp.h>

#include "proxy/snapshot.h"

struct worker;
struct client;

struct upconn {
    struct bufferevent *bev; /* owned */
    struct server *srv;      /* ref: the server outlives its connections */
    struct worker *w;        /* borrowed (lives while the worker does) */
    llhttp_t parser;         /* response parser, used by the relay while in use */
    char parser_last_byte;   /* the last byte the parser took (respframe.h) */
    struct client *owner;    /* borrowed while in use; NULL when idle */
    struct upconn *next;     /* idle list of srv->w[worker] */
    struct upconn *prev;
    uint32_t requests; /* requests sent on this connection */
    bool connected;
    bool idle;
    bool tls; /* through OpenSSL: no direct reads or writes on the socket */
};

/* Takes the most recently parked idle connection to srv, or NULL. The connection comes back with
 * no callbacks set and the idle timeout still armed; the caller sets its own callbacks and
 * timeouts before returning to the event loop. */
struct upconn *upstream_take_idle(struct worker *w, struct server *srv);

/* Starts a non-blocking connect to srv, a server of pool; over TLS when the pool has a client
 * context (the handshake is part of connecting). Returns a connection whose bufferevent reports
 * BEV_EVENT_CONNECTED or an error through the callbacks the caller sets next; writes made
 * before the connection is up are queued. NULL when no socket could be made (fd limit). The
 * connect deadline, handshake included, is applied as a write timeout. */
struct upconn *upstream_connect(struct worker *w, struct server *srv, const struct pool *pool,
                                uint64_t connect_timeout_ms);

/* Why a connection failed before it was up, for the log: the TLS reason for a TLS connection,
 * else "failed". */
void upstream_connect_error(struct upconn *u, char *buf, size_t len);

/* Parks a connection whose exchange ended cleanly in its server's idle list, or closes it when
 * the list is full (max_idle), the server was removed or the worker is draining. Idle
 * connections close themselves on any input, EOF, error or after idle_timeout_ms. */
void upstream_park(struct upconn **u, uint32_t max_idle, uint64_t idle_timeout_ms);

/* Closes a connection (in use or idle) and clears *u. Accepts NULL. */
void upstream_close(struct upconn **u);

/* Closes every idle connection of this worker to srv. */
void upstream_close_idle(struct worker *w, struct server *srv);

#endif
