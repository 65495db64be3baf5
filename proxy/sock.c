/* proxy/sock.c — listening sockets: SO_REUSEPORT so each worker accepts on its own socket. */
#include "proxy/sock.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#define LISTEN_BACKLOG 4096

int
sock_listen(const struct conf_addr *addr, unsigned port, char *err, size_t errlen)
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
    if (listen(fd, LISTEN_BACKLOG) == -1) {
        snprintf(err, errlen, "%s: listen: %s", addr->text, strerror(errno));
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
