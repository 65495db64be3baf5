/* proxy/sock.h — listening sockets for the workers. */
#ifndef PROXY_SOCK_H
#define PROXY_SOCK_H

#include <stddef.h>

#include "conf/conf.h"

/* Makes a non-blocking listening socket on addr with SO_REUSEADDR and SO_REUSEPORT (so each
 * worker has its own socket on the same address). When port is non-zero it replaces the port of
 * addr (used to give every worker the port the kernel picked for port 0). Returns the fd, or -1
 * with a message in err. */
int sock_listen(const struct conf_addr *addr, unsigned port, char *err, size_t errlen);

/* The local port of a bound socket, or 0. */
unsigned sock_port(int fd);

#endif
