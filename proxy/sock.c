/* proxy/sock.c — listening sockets: SO_REUSEPORT so each worker accepts on its own socket. */
#include "proxy/sock.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

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

void
sock_write_staged(struct bufferevent *bev, struct evbuffer *staged, bool direct)
{
    if (evbuffer_get_length(staged) == 0)
        return;
    struct evbuffer *out = bufferevent_get_output(bev);
    if (direct && evbuffer_get_length(out) == 0)
        evbuffer_write(staged, bufferevent_getfd(bev)); /* -1 (EAGAIN, error): all stays */
    if (evbuffer_get_length(staged) > 0)
        evbuffer_add_buffer(out, staged);
}

#define LIBEVENT_MAX_READ 4096

static size_t read_into(struct evbuffer *in, int fd, size_t max);

size_t
sock_read_more(struct bufferevent *bev, size_t max)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    if (evbuffer_get_length(in) < LIBEVENT_MAX_READ)
        return 0;
    /* bufferevent_socket freezes the end of its input outside its own reads; do as it does. */
    evbuffer_unfreeze(in, 0);
    size_t got = read_into(in, bufferevent_getfd(bev), max);
    evbuffer_freeze(in, 0);
    return got;
}

static size_t
read_into(struct evbuffer *in, int fd, size_t max)
{
    struct evbuffer_iovec v[2];
    int n = evbuffer_reserve_space(in, (ev_ssize_t)max, v, 2);
    if (n <= 0)
        return 0;
    struct iovec iov[2];
    for (int i = 0; i < n; i++) {
        iov[i].iov_base = v[i].iov_base;
        iov[i].iov_len = v[i].iov_len;
    }
    ssize_t r = readv(fd, iov, n);
    if (r <= 0) {
        evbuffer_commit_space(in, NULL, 0);
        return 0;
    }
    size_t left = (size_t)r;
    int used = 0;
    for (int i = 0; i < n && left > 0; i++, used++) {
        if (v[i].iov_len > left)
            v[i].iov_len = left;
        left -= v[i].iov_len;
    }
    evbuffer_commit_space(in, v, used);
    return (size_t)r;
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
