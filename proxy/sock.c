/* proxy/sock.c — listening sockets: SO_REUSEPORT so each worker accepts on its own socket. */
#include "proxy/sock.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>

#define LISTEN_BACKLOG 4096

int
sock_start(int fd)
{
    return listen(fd, LISTEN_BACKLOG);
}

int
sock_listen(const struct conf_addr *addr, unsigned port, char *err, size_t errlen)
{
    int fd = sock_bind(addr, port, err, errlen);
    if (fd == -1)
        return -1;
    if (sock_start(fd) == -1) {
        snprintf(err, errlen, "%s: listen: %s", addr->text, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int
sock_bind(const struct conf_addr *addr, unsigned port, char *err, size_t errlen)
{
    struct sockaddr_storage ss = addr->ss;
    if (port) {
        if (ss.ss_family == AF_INET)
            ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
        else
            ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        snprintf(err, errlen, "%s: socket: %s", addr->text, strerror(errno));
        return -1;
    }
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1) {
        snprintf(err, errlen, "%s: setsockopt: %s", addr->text, strerror(errno));
        close(fd);
        return -1;
    }
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, addr->len) == -1) {
        snprintf(err, errlen, "%s: bind: %s", addr->text, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

unsigned
sock_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == -1)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

/* A speculative SSL_write of what was staged, when it fits one TLS record and nothing is queued
 * ahead of it. On success nothing is left. On WANT_WRITE OpenSSL keeps the encrypted record and
 * must be called again with the same bytes, at least as many: they stay, in one chain (pulled
 * up), the first of the output, which libevent's next SSL_write passes whole (its OpenSSL
 * bufferevent allows a moving write buffer). On an error the bytes stay too and libevent's
 * write meets the same error and reports it. */
static void
tls_write_direct(struct bufferevent *bev, struct evbuffer *staged)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    size_t n = evbuffer_get_length(staged);
    if (ssl == NULL || n > SOCK_TLS_DIRECT_MAX || !SSL_is_init_finished(ssl) ||
        SSL_get_shutdown(ssl) != 0)
        return;
    unsigned char *p = evbuffer_pullup(staged, -1);
    if (p == NULL)
        return;
    SSL_set_mode(ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    int r = SSL_write(ssl, p, (int)n);
    if (r > 0)
        evbuffer_drain(staged, (size_t)r);
    else
        ERR_clear_error();
}

void
sock_write_staged(struct bufferevent *bev, struct evbuffer *staged, enum sock_write how)
{
    if (evbuffer_get_length(staged) == 0)
        return;
    struct evbuffer *out = bufferevent_get_output(bev);
    if (how == SOCK_WRITE_DIRECT && evbuffer_get_length(out) == 0)
        evbuffer_write(staged, bufferevent_getfd(bev)); /* -1 (EAGAIN, error): all stays */
    else if (how == SOCK_WRITE_TLS && evbuffer_get_length(out) == 0)
        tls_write_direct(bev, staged);
    if (evbuffer_get_length(staged) > 0)
        evbuffer_add_buffer(out, staged);
}

/* Reads of plain sockets, in place of bufferevent_socket's own (see sock_hook_reads()). It does
 * what libevent 2.1's bufferevent_readcb does, without its FIONREAD ioctl before every read and
 * its 4 KiB cap per read: a timeout reports BEV_EVENT_READING|BEV_EVENT_TIMEOUT; data goes into
 * the input (whose end bufferevent_socket keeps frozen outside reads), at most up to the read
 * high watermark and max_single_read, then the read callback runs when the input reaches the
 * low watermark; EOF and errors disable reading and report BEV_EVENT_READING|EOF or ERROR. A
 * refused connect is an error too: readv() has consumed the socket error, so the connect logic
 * (the write side) would find SO_ERROR 0 and report the socket connected; libevent's own read
 * callback sets a private connection_refused flag for that, which we cannot. */
static void
on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct bufferevent *bev = arg;
    if (what == EV_TIMEOUT) {
        bufferevent_disable(bev, EV_READ);
        if (bev->errorcb)
            bev->errorcb(bev, BEV_EVENT_READING | BEV_EVENT_TIMEOUT, bev->cbarg);
        return;
    }
    struct evbuffer *in = bev->input;
    size_t len = evbuffer_get_length(in);
    size_t max = (size_t)bufferevent_get_max_single_read(bev);
    if (bev->wm_read.high != 0) {
        if (len >= bev->wm_read.high)
            return; /* the watermark callback suspends reading */
        if (bev->wm_read.high - len < max)
            max = bev->wm_read.high - len;
    }
    struct evbuffer_iovec v[2];
    evbuffer_unfreeze(in, 0);
    int n = evbuffer_reserve_space(in, (ev_ssize_t)max, v, 2);
    ssize_t r = -1;
    int err = ENOMEM;
    if (n > 0) {
        /* evbuffer_reserve_space() may give more room than asked: read no more than max. */
        struct iovec iov[2];
        size_t room = max;
        for (int i = 0; i < n; i++) {
            iov[i].iov_base = v[i].iov_base;
            iov[i].iov_len = v[i].iov_len < room ? v[i].iov_len : room;
            room -= iov[i].iov_len;
        }
        r = readv(fd, iov, n);
        err = errno;
        int used = 0;
        for (size_t left = r > 0 ? (size_t)r : 0; used < n && left > 0; used++) {
            if (v[used].iov_len > left)
                v[used].iov_len = left;
            left -= v[used].iov_len;
        }
        evbuffer_commit_space(in, v, used);
    }
    evbuffer_freeze(in, 0);
    if (r > 0) {
        if (bev->readcb && evbuffer_get_length(in) >= bev->wm_read.low)
            bev->readcb(bev, bev->cbarg); /* last: it may free bev */
        return;
    }
    if (r == -1 && (err == EAGAIN || err == EWOULDBLOCK || err == EINTR))
        return;
    bufferevent_disable(bev, EV_READ);
    if (bev->errorcb)
        bev->errorcb(bev, BEV_EVENT_READING | (r == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR),
                     bev->cbarg);
}

void
sock_hook_reads(struct bufferevent *bev)
{
    bool reading = (bufferevent_get_enabled(bev) & EV_READ) != 0;
    if (reading)
        bufferevent_disable(bev, EV_READ);
    event_del(&bev->ev_read);
    event_assign(&bev->ev_read, bev->ev_base, bufferevent_getfd(bev),
                 EV_READ | EV_PERSIST | EV_FINALIZE, on_readable, bev);
    if (reading)
        bufferevent_enable(bev, EV_READ);
}

void
sock_enable_rw(struct bufferevent *bev)
{
    bufferevent_enable(bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
        bufferevent_enable(bev, EV_WRITE);
    else
        bev->enabled |= EV_WRITE;
}

void
sock_add_body(struct evbuffer *out, const char *at, size_t len, bool chunked)
{
    if (chunked) {
        char line[24];
        int n = snprintf(line, sizeof(line), "%zx\r\n", len);
        evbuffer_add(out, line, (size_t)n);
        evbuffer_add(out, at, len);
        evbuffer_add(out, "\r\n", 2);
    } else {
        evbuffer_add(out, at, len);
    }
}
