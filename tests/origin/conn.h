/* tests/origin/conn.h — one client connection of the test origin: llhttp parsing, the
 * per-connection state machine and the in-order response discipline (one request at a time).
 * Everything here runs on the single event-loop thread. */
#ifndef TESTS_ORIGIN_CONN_H
#define TESTS_ORIGIN_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <llhttp.h>
#include <openssl/ssl.h>

/* Bytes kept queued in the output while a generated body streams out; refilled when the output
 * drops to CONN_OUT_LOW_BYTES (write low watermark). Also the tunnel's echo back-pressure. */
#define CONN_OUT_HIGH_BYTES (256u * 1024u)
#define CONN_OUT_LOW_BYTES (64u * 1024u)

/* Slots for SNI names counted in /_origin/stats (once all but the last are taken, every further
 * handshake counts under "(other)" in the last), and the longest name kept. */
#define ORIGIN_SNI_MAX 32
#define ORIGIN_SNI_LEN 256

/* Completed TLS handshakes that sent one server name ("-": none, "(invalid)": not a host name). */
struct origin_sni {
    char name[ORIGIN_SNI_LEN];
    uint64_t handshakes;
};

/* Process-wide state of the origin. */
struct origin {
    struct event_base *base; /* borrowed (lives while main runs) */
    const char *pool;        /* borrowed (argv) */
    const char *name;        /* borrowed (argv) */
    bool healthy;
    bool quiet;
    uint64_t requests;
    uint64_t conns_accepted;
    uint64_t conns_open;
    struct conn *conns; /* owned: every open connection, for cleanup at exit */
    SSL_CTX *tls;       /* owned; NULL = plain HTTP, else every connection is TLS */
    uint64_t tls_handshakes;
    uint64_t tls_resumed;                  /* of those, abbreviated handshakes (session resumed) */
    struct origin_sni sni[ORIGIN_SNI_MAX]; /* by first appearance */
    size_t nsni;
};

enum conn_state {
    CONN_READING = 0, /* parsing; no response pending */
    CONN_DELAYED,     /* request complete, waiting for its delay= timer */
    CONN_STREAMING,   /* generating a /bytes body as the socket drains */
    CONN_HOLDING,     /* /hold: never answers, input discarded */
    CONN_TUNNEL,      /* after 101: every input byte is echoed */
    CONN_DRAINING,    /* last response flushing, then FIN and close */
};

/* One header of the request: offsets into req.arena. */
struct hdr_span {
    size_t name_off;
    size_t name_len;
    size_t value_off;
    size_t value_len;
};

/* The request being parsed or answered. */
struct req {
    char *arena; /* owned: target and header bytes, in arrival order */
    size_t arena_len;
    size_t arena_cap;
    size_t mark; /* start of the element being received */
    size_t target_off;
    size_t target_len;
    struct hdr_span *hdrs; /* owned */
    size_t n_hdrs;
    size_t hdrs_cap;
    uint8_t method; /* llhttp_method_t */
    uint8_t http_major;
    uint8_t http_minor;
    bool keep_alive;
    bool headers_done; /* later header callbacks are chunked-body trailers */
    bool delay_done;   /* its delay= already elapsed */
    uint64_t body_bytes;
    uint64_t body_fnv1a;
};

/* /bytes generator state. */
struct stream {
    uint64_t left;   /* body bytes still to queue */
    uint64_t offset; /* index of the next body byte */
    uint64_t chunk_bytes;
    uint64_t chunk_left; /* bytes left in the current chunk; 0 = next chunk header due */
    bool chunked;
};

struct conn {
    struct origin *o;        /* borrowed (lives while the process runs) */
    struct bufferevent *bev; /* owned, owns the socket */
    struct event *timer;     /* owned, created on first delay= */
    llhttp_t parser;
    struct req req;
    struct stream stream;
    enum conn_state state;
    int reject_status;   /* set by a parser callback refusing the request (414/431) */
    bool paused_upgrade; /* llhttp stopped with HPE_PAUSED_UPGRADE for this request */
    bool close_after;    /* close once the current response is queued and flushed */
    bool peer_eof;       /* the client shut down its side */
    bool fin_sent;       /* DRAINING: output flushed and FIN sent, discarding input */
    bool read_throttled; /* TUNNEL: reading off until the echo drains */
    struct conn *prev;   /* borrowed: origin.conns list */
    struct conn *next;   /* borrowed: origin.conns list */
};

/* Takes ownership of the accepted, non-blocking socket `fd` and starts reading requests.
 * Returns the connection (owned by o->conns until conn_close()). */
struct conn *conn_create(struct origin *o, evutil_socket_t fd);

/* Frees the connection and closes its socket at once (unsent output is lost). The caller must
 * not touch `c` afterwards and returns right away. */
void conn_close(struct conn *c);

/* Closes every open connection (shutdown). */
void conn_close_all(struct origin *o);

/* Arms the connection's delay timer: respond_dispatch() is called again after `ms`
 * milliseconds with c->req.delay_done set. Sets c->state to CONN_DELAYED. */
void conn_delay(struct conn *c, uint64_t ms);

/* Switches to the 101 tunnel: bytes already received after the request are echoed at once.
 * Returns -1 if the connection was closed (c is freed). */
int conn_tunnel(struct conn *c);

/* The server name the client of a TLS connection sent: the name, "-" when it sent none, or
 * "(invalid)" when it is not made of host-name characters (so it is safe in a header and in
 * JSON). NULL for a plain connection. Borrowed: valid until c is closed. */
const char *conn_sni(const struct conn *c);

/* Prints one line to stderr unless --quiet. */
void origin_log(const struct origin *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
