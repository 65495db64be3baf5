/* proxy/client.h — a client connection and the request/response exchange it carries (DESIGN §4).
 * The request side lives in client.c, the response side in relay.c, the byte tunnel after 101
 * in tunnel.c; they share this struct. Worker thread only. */
#ifndef PROXY_CLIENT_H
#define PROXY_CLIENT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/bufferevent.h>
#include <llhttp.h>

#include "proxy/http.h"
#include "proxy/reqframe.h"
#include "proxy/worker.h"

/* The header that carries routing.preview.token (stripped like the preview header). */
#define PREVIEW_TOKEN_HEADER "X-Switchyard-Token"

/* Output queued towards one side before reading from the other stops (back-pressure). */
#define RELAY_HIGH_BYTES (256 * 1024)
#define RELAY_LOW_BYTES (64 * 1024)

/* A request body up to this size (as sent upstream, chunk lines included) is kept beside the
 * head while the exchange runs, so a request that dies on a reused connection before any
 * response byte is sent again whole (DESIGN §4). A larger body is streamed only: such a request
 * gets 502 (HAProxy's L7 retries have the same limit, its buffer). */
#define RELAY_REPLAY_BYTES (16 * 1024)

enum client_state {
    CS_IDLE = 0, /* waiting for the first byte of a request */
    CS_HEAD,     /* reading a request head */
    CS_BODY,     /* streaming a request body upstream */
    CS_WAIT,     /* request complete, response in progress */
    CS_TUNNEL,   /* after 101: bytes both ways */
    CS_CLOSING,  /* flushing the last response, then closing */
};

struct client {
    struct worker *w;        /* borrowed (lives while the worker does) */
    struct bufferevent *bev; /* owned */
    struct reqframe rf;      /* request framing; rf.head is the request head */
    struct http_head rhead;  /* the response head */
    enum client_state state;
    enum route_to route_to;
    bool tls;
    struct sockaddr_storage peer;
    char peer_text[64];
    struct event *timer; /* owned: header deadline, keep-alive idle, closing deadline */
    TAILQ_ENTRY(client) link;
    struct client *next_spare; /* the worker's list of closed clients kept for reuse */

    /* The exchange in progress. */
    struct wsnap *ws;   /* the snapshot this request uses (counted) */
    struct server *srv; /* borrowed from ws; in-flight counted on it */
    enum pool_id pool;
    struct upconn *up;     /* owned while the exchange runs */
    struct http_buf req;   /* the request as sent upstream (kept to retry): the head, then the
                            * body while `replay` (at most RELAY_REPLAY_BYTES of it) */
    uint32_t req_head_len; /* the head's part of req */
    char request_id[129];
    /* Set-Cookie value to add, or "": name (CONF_COOKIE_NAME_MAX), bucket, Max-Age, flags. */
    char cookie[CONF_COOKIE_NAME_MAX + 96];
    int reject; /* status to answer after the parser returns */
    int resp_status;
    unsigned connect_tries;
    uint64_t body_bytes;
    uint64_t started_ms;
    enum http_body out_body;
    bool keepalive; /* the client connection may carry another request */
    bool req_complete;
    bool resp_started; /* a final response head went to the client */
    bool resp_bytes;   /* any byte came from upstream for this exchange */
    bool resp_complete;
    bool up_reusable;
    bool up_reused;
    bool retried; /* the keep-alive race retry (same server, fresh connection) was used */
    bool moved;   /* the dead-server retry (another server) was used */
    bool replay;  /* req holds all of the request sent so far: it can be sent again */
    bool in_feed;
    bool read_paused; /* back-pressure: upstream output full */
    bool up_paused;   /* back-pressure: client output full */
    bool peer_eof;
    bool inflight;           /* counted in srv->w[].inflight and the in-flight gauges */
    bool routed;             /* c->pool is set: the exchange counts for that pool */
    bool accounted;          /* the exchange was counted (once) */
    bool upstream_cut;       /* the upstream failed after the response started */
    bool tunnel_counted;     /* counted in the tunnels gauges */
    int local_status;        /* the status of a local response (client_fail) */
    int32_t bucket;          /* the routing bucket, -1 when none */
    uint64_t generation;     /* the routing generation the request was routed with */
    uint64_t started_us;     /* request start, for the latency histogram */
    uint64_t bytes_in;       /* request bytes forwarded (head + body) */
    uint64_t bytes_out;      /* response bytes sent to the client (head + body) */
    struct server *acct_srv; /* borrowed: the last server of the exchange, for counting */
};

/* Marks the exchange in flight on srv (on = true) or no longer (false): the balancer's count
 * and the server and pool gauges. */
void client_inflight(struct client *c, struct server *srv, bool on);

/* The worker's counter blocks for a server and a pool. */
struct stats_block *client_srv_stats(const struct client *c, const struct server *srv);
struct stats_block *client_pool_stats(const struct client *c, enum pool_id pool);

/* Adopts an accepted socket. NULL when the bufferevent cannot be made (the fd is closed). */
struct client *client_create(struct worker *w, int fd, const struct sockaddr *addr, int addrlen,
                             enum route_to route_to, struct tls_ctx *tls);

/* The one way out: frees the client and everything of its exchange. Callers return right after.
 * Never called from inside a parser callback. */
void client_close(struct client *c);

/* Sends a local response (error page) if no response started, then closes after flushing;
 * aborts the exchange's upstream connection. */
void client_fail(struct client *c, int status);

/* Frees the closed clients a worker keeps for reuse (a draining worker keeps none). Worker
 * thread, or after it ended. */
void client_free_spares(struct worker *w);

/* Parses buffered request bytes as far as the exchange allows. */
void client_feed(struct client *c);

/* Ends the exchange when both directions are complete: parks or closes the upstream
 * connection, then waits for the next request or closes. */
void client_exchange_done(struct client *c);

/* Stops reading and closes once the output is flushed (bounded by a deadline). */
void client_close_after_flush(struct client *c);

/* Begins closing idle keep-alive connections of a draining worker: closes it now if idle. */
void client_drain(struct client *c);

/* relay.c: attaches c->up and starts relaying the response. */
void relay_start(struct client *c);

/* relay.c: sets the upstream timeouts for the exchange's phase (call when the request
 * completes). */
void relay_arm_timeouts(struct client *c);

/* relay.c: parses buffered upstream bytes as far as back-pressure allows. */
void relay_feed(struct client *c);

/* relay.c: picks a server and attaches an upstream connection for the request, writing the
 * request head; false with c->reject set when none can be had. */
bool relay_attach(struct client *c);

/* tunnel.c: switches the exchange to a byte tunnel after a 101 response. */
void tunnel_start(struct client *c);

#endif
