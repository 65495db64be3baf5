/* tests/unit/fixture.h — hand-built configs for the unit tests that need pools and servers
 * without going through the YAML loader (snapshot, measure, metrics). */
#ifndef TESTS_UNIT_FIXTURE_H
#define TESTS_UNIT_FIXTURE_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "conf/conf.h"
#include "conf/xalloc.h"

/* One server of a hand-built pool. */
struct spec {
    const char *name;
    const char *ip;
    int port;
    uint32_t weight;
};

#define N(a) (sizeof(a) / sizeof(*(a)))

__attribute__((unused)) static void
set_addr(struct conf_addr *a, const char *ip, int port)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;

    memset(a, 0, sizeof(*a));
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, ip, &sin->sin_addr);
    a->len = sizeof(*sin);
    snprintf(a->text, sizeof(a->text), "%s:%d", ip, port);
}

__attribute__((unused)) static void
fill_pool(struct conf_pool *cp, const char *name, const struct spec *sp, size_t n)
{
    cp->name = xstrdup(name);
    cp->nservers = n;
    cp->servers = xcalloc(n, sizeof(*cp->servers));
    for (size_t i = 0; i < n; i++) {
        cp->servers[i].name = xstrdup(sp[i].name);
        set_addr(&cp->servers[i].addr, sp[i].ip, sp[i].port);
        cp->servers[i].weight = sp[i].weight;
    }
}

/* A conf with only its two pools filled (caller owns; conf_destroy). */
__attribute__((unused)) static struct conf *
mkconf(const struct spec *blue, size_t nb, const struct spec *green, size_t ng)
{
    struct conf *c = xcalloc(1, sizeof(*c));

    fill_pool(&c->pools[POOL_BLUE], "blue", blue, nb);
    fill_pool(&c->pools[POOL_GREEN], "green", green, ng);
    return c;
}

#endif
