/* tests/unit/test_sock.c — sock_hook_reads(): a plain socket bufferevent reading with our own
 * readv instead of libevent's (no FIONREAD, no 4 KiB cap), on a socketpair: read sizes,
 * watermarks, EOF, timeout and enable/disable behave as a bufferevent's. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "proxy/sock.h"
#include "tap.h"

struct seen {
    int reads;
    size_t first_read; /* input length at the first read callback */
    size_t max_input;  /* the most the input held at a read callback */
    short events;      /* last event callback's flags */
    int nevents;
    bool drain; /* drain the input in the read callback */
    struct event_base *base;
};

static void
on_read(struct bufferevent *bev, void *arg)
{
    struct seen *s = arg;
    size_t len = evbuffer_get_length(bufferevent_get_input(bev));
    if (s->reads++ == 0)
        s->first_read = len;
    if (len > s->max_input)
        s->max_input = len;
    if (s->drain)
        evbuffer_drain(bufferevent_get_input(bev), len);
    event_base_loopbreak(s->base);
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
    struct seen *s = arg;
    s->events = what;
    s->nevents++;
    event_base_loopbreak(s->base);
}

static void
write_all(int fd, size_t n)
{
    char buf[8192];
    memset(buf, 'x', sizeof(buf));
    while (n > 0) {
        ssize_t w = write(fd, buf, n < sizeof(buf) ? n : sizeof(buf));
        if (w <= 0)
            break;
        n -= (size_t)w;
    }
}

static struct bufferevent *
hooked(struct event_base *base, int fd, struct seen *s)
{
    struct bufferevent *bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    sock_hook_reads(bev);
    bufferevent_set_max_single_read(bev, 64 * 1024);
    bufferevent_setcb(bev, on_read, NULL, on_event, s);
    bufferevent_enable(bev, EV_READ);
    return bev;
}

int
main(void)
{
    struct event_base *base = event_base_new();
    int sv[2];

    /* One wakeup reads far more than libevent's 4 KiB, up to max_single_read. */
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv);
    int big = 1 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    struct seen s = {.base = base, .drain = true};
    struct bufferevent *bev = hooked(base, sv[1], &s);
    write_all(sv[0], 200 * 1024);
    event_base_dispatch(base);
    ok(s.reads == 1 && s.first_read > 4096 && s.first_read <= 64 * 1024,
       "one read takes up to max_single_read (%zu bytes), not libevent's 4 KiB", s.first_read);
    for (int i = 0; i < 50; i++)
        event_base_loop(base, EVLOOP_NONBLOCK); /* the rest of the 200 KiB */
    ok(s.max_input <= 64 * 1024, "no read exceeds max_single_read (%zu)", s.max_input);

    /* The read high watermark bounds the input; draining resumes reading. */
    struct seen w = {.base = base};
    bufferevent_setcb(bev, on_read, NULL, on_event, &w);
    evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
    bufferevent_setwatermark(bev, EV_READ, 0, 10000);
    write_all(sv[0], 100 * 1024);
    for (int i = 0; i < 20; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    ok(evbuffer_get_length(bufferevent_get_input(bev)) <= 10000 && w.reads >= 1,
       "the high watermark bounds the input (%zu bytes, %d reads)",
       evbuffer_get_length(bufferevent_get_input(bev)), w.reads);
    w.drain = true;
    evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
    int reads_before = w.reads;
    event_base_dispatch(base);
    ok(w.reads > reads_before, "draining below the watermark resumes reading");

    /* Disabled: no reads; enabled again: the data is there. */
    bufferevent_setwatermark(bev, EV_READ, 0, 0);
    for (int i = 0; i < 50; i++)
        event_base_loop(base, EVLOOP_NONBLOCK); /* drain what the writer left */
    struct seen d = {.base = base, .drain = true};
    bufferevent_setcb(bev, on_read, NULL, on_event, &d);
    bufferevent_disable(bev, EV_READ);
    write_all(sv[0], 1000);
    for (int i = 0; i < 5; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    ok(d.reads == 0, "no read while reading is disabled");
    bufferevent_enable(bev, EV_READ);
    event_base_dispatch(base);
    ok(d.reads == 1, "enabling reads again delivers the data");

    /* EOF: reported once, as READING|EOF, and reading stops. */
    struct seen e = {.base = base, .drain = true};
    bufferevent_setcb(bev, on_read, NULL, on_event, &e);
    close(sv[0]);
    event_base_dispatch(base);
    ok(e.nevents == 1 && e.events == (BEV_EVENT_READING | BEV_EVENT_EOF),
       "EOF is reported as READING|EOF (0x%x)", e.events);
    ok(!(bufferevent_get_enabled(bev) & EV_READ), "reading is disabled after EOF");
    bufferevent_free(bev);

    /* A read timeout: READING|TIMEOUT, and reading is disabled. */
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv);
    struct seen t = {.base = base};
    bev = hooked(base, sv[1], &t);
    struct timeval tv = {0, 50000};
    bufferevent_set_timeouts(bev, &tv, NULL);
    event_base_dispatch(base);
    ok(t.nevents == 1 && t.events == (BEV_EVENT_READING | BEV_EVENT_TIMEOUT),
       "a silent peer times out as READING|TIMEOUT (0x%x)", t.events);
    ok(!(bufferevent_get_enabled(bev) & EV_READ), "reading is disabled after the timeout");

    /* Re-hooking after the fd changes (bufferevent_socket_connect re-creates the read event). */
    close(sv[0]);
    bufferevent_free(bev);
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv);
    struct seen r = {.base = base, .drain = true};
    bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setfd(bev, sv[1]);
    sock_hook_reads(bev);
    bufferevent_setcb(bev, on_read, NULL, on_event, &r);
    bufferevent_enable(bev, EV_READ);
    write_all(sv[0], 50000);
    event_base_dispatch(base);
    ok(r.reads == 1 && r.first_read > 4096, "hooked after setfd: one big read (%zu)", r.first_read);
    close(sv[0]);
    bufferevent_free(bev);

    event_base_free(base);
    return done_testing();
}
