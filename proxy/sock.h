/* proxy/sock.h — listening sockets for the workers. */
#ifndef PROXY_SOCK_H
#define PROXY_SOCK_H

#include <stdbool.h>
#include <stddef.h>

#include "conf/conf.h"

/* Makes a non-blocking listening socket on addr with SO_REUSEADDR and SO_REUSEPORT (so each
 * worker has its own socket on the same address). When port is non-zero it replaces the port of
 * addr (used to give every worker the port the kernel picked for port 0). Returns the fd, or -1
 * with a message in err. */
int sock_listen(const struct conf_addr *addr, unsigned port, char *err, size_t errlen);

/* Like sock_listen() without the listen(): the address is taken (port conflicts show now) but
 * no connection is accepted into a backlog until sock_start() (listeners open after the first
 * round of health checks). */
int sock_bind(const struct conf_addr *addr, unsigned port, char *err, size_t errlen);

/* listen() on a socket from sock_bind(). 0 ok, -1 with errno. */
int sock_start(int fd);

struct bufferevent;
struct evbuffer;

enum sock_write {
    SOCK_WRITE_QUEUE,  /* through the bufferevent (a connection still connecting) */
    SOCK_WRITE_DIRECT, /* a plain socket: writev now */
    SOCK_WRITE_TLS,    /* an OpenSSL bufferevent past its handshake: SSL_write now */
};

/* Up to this much is written by SOCK_WRITE_TLS at once (one TLS record); more is queued. */
#define SOCK_TLS_DIRECT_MAX 16384

/* Sends what was staged during one parse pass: written now when nothing is queued ahead of it
 * (a speculative write: no EPOLLOUT arm and disarm, no wait for the next loop), the rest queued
 * on the bufferevent. Leaves staged empty. */
void sock_write_staged(struct bufferevent *bev, struct evbuffer *staged, enum sock_write how);

/* Makes a plain socket bufferevent read with one readv of up to its max_single_read (bounded by
 * the read high watermark), in place of libevent 2.1's reads, which ask the kernel FIONREAD
 * before every read (an ioctl per read, 5% of the proxy's CPU at small requests) and read at
 * most 4 KiB per wakeup whatever max_single_read says. Callbacks, watermarks, timeouts and
 * enable/disable behave as before. Call again after bufferevent_socket_connect() (which
 * re-creates the read event). Not for OpenSSL bufferevents. */
void sock_hook_reads(struct bufferevent *bev);

/* bufferevent_enable(bev, EV_READ | EV_WRITE) for a plain socket bufferevent, except that the
 * write event is registered only when there is something to write. libevent registers it at
 * once and, when it fires with nothing to send, removes it again: two epoll_ctl calls and a
 * wake-up for nothing on every new connection and every lingering close. The state left is the
 * one libevent leaves after writing everything (writing enabled, event not pending), where
 * adding output registers the event. Not for TLS bufferevents. */
void sock_enable_rw(struct bufferevent *bev);

/* Appends a body piece to out, framed as one chunk when `chunked` (size line, data, CRLF),
 * as it is otherwise. Used for both directions when a body is re-chunked. */
void sock_add_body(struct evbuffer *out, const char *at, size_t len, bool chunked);

/* The local port of a bound socket, or 0. */
unsigned sock_port(int fd);

#endif
