/* proxy/tunnel.c — after a 101 response the client and upstream connections become a byte
 * tunnel: bytes move both ways without copying (evbuffer_add_buffer), with back-pressure and an
 * idle timeout. The tunnel stays on the server it was opened on. */
#include "proxy/client.h"

#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "proxy/clock.h"
#include "proxy/log.h"
#include "proxy/sock.h"
#include "proxy/stats.h"
#include "proxy/upstream.h"

static void on_client_read(struct bufferevent *bev, void *arg);
static void on_client_write(struct bufferevent *bev, void *arg);
static void on_up_read(struct bufferevent *bev, void *arg);
static void on_up_write(struct bufferevent *bev, void *arg);
static void on_tunnel_event(struct bufferevent *bev, short events, void *arg);

/* Moves what src has read to dst, pausing src while dst has too much queued. */
static void
pump(struct bufferevent *src, struct bufferevent *dst)
{
    struct evbuffer *out = bufferevent_get_output(dst);
    evbuffer_add_buffer(out, bufferevent_get_input(src));
    if (evbuffer_get_length(out) >= RELAY_HIGH_BYTES)
        bufferevent_disable(src, EV_READ);
}

void
tunnel_start(struct client *c)
{
    const struct conf *conf = c->ws->snap->conf;
    c->state = CS_TUNNEL;
    evtimer_del(c->timer);
    /* The tunnel is a long-lived connection, not a request in flight. */
    if (c->inflight)
        client_inflight(c, c->srv, false);
    stats_gauge(&client_pool_stats(c, c->pool)->tunnels, 1);
    stats_gauge(&client_srv_stats(c, c->srv)->tunnels, 1);
    c->tunnel_counted = true;
    struct timeval tv = clock_tv(conf->timeouts.tunnel_ms);
    bufferevent_setcb(c->bev, on_client_read, on_client_write, on_tunnel_event, c);
    bufferevent_setcb(c->up->bev, on_up_read, on_up_write, on_tunnel_event, c);
    bufferevent_setwatermark(c->bev, EV_READ, 0, 0);
    bufferevent_setwatermark(c->bev, EV_WRITE, RELAY_LOW_BYTES, 0);
    bufferevent_setwatermark(c->up->bev, EV_WRITE, RELAY_LOW_BYTES, 0);
    bufferevent_set_timeouts(c->bev, &tv, NULL);
    bufferevent_set_timeouts(c->up->bev, &tv, NULL);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    bufferevent_enable(c->up->bev, EV_READ | EV_WRITE);
    /* Bytes that arrived with the 101 or right after the request belong to the tunnel. */
    pump(c->up->bev, c->bev);
    pump(c->bev, c->up->bev);
    c->started_ms = clock_ms();
}

static void
on_client_read(struct bufferevent *bev, void *arg)
{
    struct client *c = arg;
    c->started_ms = clock_ms();
    pump(bev, c->up->bev);
}

static void
on_up_read(struct bufferevent *bev, void *arg)
{
    struct client *c = arg;
    c->started_ms = clock_ms();
    pump(bev, c->bev);
}

static void
on_client_write(struct bufferevent *bev, void *arg)
{
    struct client *c = arg;
    if (c->peer_eof) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            client_close(c);
        return;
    }
    if (evbuffer_get_length(bufferevent_get_output(bev)) <= RELAY_LOW_BYTES)
        bufferevent_enable(c->up->bev, EV_READ);
}

static void
on_up_write(struct bufferevent *bev, void *arg)
{
    struct client *c = arg;
    if (c->peer_eof) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            client_close(c);
        return;
    }
    if (evbuffer_get_length(bufferevent_get_output(bev)) <= RELAY_LOW_BYTES)
        bufferevent_enable(c->bev, EV_READ);
}

static void
on_tunnel_event(struct bufferevent *bev, short events, void *arg)
{
    struct client *c = arg;
    if (events & BEV_EVENT_CONNECTED)
        return;
    if (events & BEV_EVENT_TIMEOUT) {
        /* Idle means idle both ways: the other direction may have moved meanwhile. */
        uint64_t idle_ms = c->ws->snap->conf->timeouts.tunnel_ms;
        if (clock_ms() - c->started_ms < idle_ms) {
            bufferevent_enable(bev, EV_READ);
            return;
        }
        client_close(c);
        return;
    }
    if (events & BEV_EVENT_EOF) {
        /* One side finished: flush what it sent to the other, then close both. */
        struct bufferevent *other = bev == c->bev ? c->up->bev : c->bev;
        evbuffer_add_buffer(bufferevent_get_output(other), bufferevent_get_input(bev));
        if (!c->peer_eof && evbuffer_get_length(bufferevent_get_output(other)) > 0) {
            c->peer_eof = true;
            bufferevent_disable(bev, EV_READ);
            bufferevent_setwatermark(other, EV_WRITE, 0, 0);
            struct timeval tv = clock_tv(5000); /* bounded flush */
            evtimer_add(c->timer, &tv);
            return;
        }
    }
    client_close(c);
}
