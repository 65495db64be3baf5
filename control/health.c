/* control/health.c — active health checks (DESIGN §5): one reusable libcurl easy handle per
 * server (https with the pool's upstream TLS settings when it has tls:), all in one multi handle
 * whose sockets and timer are libevent events on the main event_base, and the rise/fall state
 * machine that publishes server->health. */
#include "control/health.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "conf/xalloc.h"

#define FIRST_ROUND_MARGIN_MS 100

/* One checked server. A check reuses the connection of the previous one (HTTP keep-alive, in
 * the multi handle's connection cache) for at most HEALTH_CONN_CHECKS checks (2 s when the
 * interval is shorter); then it opens a new one, so the accept path a new upstream connection
 * takes is still tested (a full backlog or a process that stopped accepting shows within that
 * many intervals), while most checks cost a request instead of a TCP (and TLS) handshake. A
 * server that closes the kept connection costs nothing: libcurl finds it closed before reusing
 * it, or retries once on a new connection when it closes just as the request goes out. A dead
 * process closes the connection (refused on the next check), a hung one times out.
 * Only for intervals under HEALTH_REUSE_BELOW_MS.
 * 200 servers at 1 s: 4.0% of a core with a new connection per check (HAProxy, which does that:
 * 2.6%), 2.8% reusing connections, 1.3% with checks grouped (HEALTH_SLACK_MS). */
#define HEALTH_CONN_CHECKS 10
/* Checks this far apart open a new connection each: they cost little, and a connection idle that
 * long would often be closed by the server's own keep-alive timeout (Apache, Node: 5 s). */
#define HEALTH_REUSE_BELOW_MS 5000

struct hsrv {
    struct health *h;                    /* borrowed: the owner */
    struct server *srv;                  /* borrowed (lives while h->snap does) */
    const struct conf_health *hc;        /* borrowed (lives while h->snap does) */
    const struct conf_upstream_tls *tls; /* borrowed (lives while h->snap does): the pool's */
    CURL *easy;                          /* owned, reused by every check of this server */
    char *url;                           /* owned */
    struct curl_slist *headers;          /* owned; read by libcurl while a check is in flight */
    struct curl_slist *connect_to;       /* owned: tls.sni → the server's address; or NULL */
    char errbuf[CURL_ERROR_SIZE];        /* libcurl's detailed text of the last failure */
    struct event *timer;                 /* owned: the next check */
    enum health_state state;
    uint32_t passes, failures;
    uint64_t checks;
    bool checked;
    bool in_flight;
    bool fresh;      /* made by the current set_snapshot: first check due */
    uint64_t due_ms; /* when the check in flight (or the next one) was due to start */
    uint64_t start_ms, last_ms;
    uint32_t last_duration_ms;
    uint64_t next_gap_ms; /* the gap after the next check only (spreads a batch), 0 = interval */
    char reason[HEALTH_REASON_LEN];
    bool collect_body; /* body_contains set when the check started */
    size_t body_len;
    char body[HEALTH_BODY_PREFIX_BYTES];
};

/* One socket libcurl asked us to watch. */
struct hsock {
    struct health *h; /* borrowed */
    curl_socket_t fd;
    struct event *ev; /* owned */
    struct hsock *prev, *next;
};

struct health {
    struct event_base *base;  /* borrowed (outlives the checker) */
    CURLM *multi;             /* owned */
    struct event *curl_timer; /* owned: libcurl's single timeout */
    health_change_fn fn;
    void *arg;
    struct snapshot *snap; /* ref */
    struct hsrv **srvs;    /* owned array of owned entries */
    size_t nsrvs;
    struct hsock *socks; /* owned list */
    health_done_fn first_done;
    void *first_arg;
    struct event *first_ev; /* owned */
};

/* CLOCK_MONOTONIC in ms, not the coarse clock: a 1 ms interval should mean 1 ms. */
static uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct timeval
ms_tv(uint64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

const char *
health_state_name(enum health_state s)
{
    switch (s) {
    case HEALTH_UNKNOWN:
        return "unknown";
    case HEALTH_UP:
        return "up";
    case HEALTH_DOWN:
        return "down";
    }
    return "?";
}

static bool
in_maint(const struct hsrv *hs)
{
    /* Relaxed: the control API writes admin on this same thread. */
    return atomic_load_explicit(&hs->srv->admin, memory_order_relaxed) == ADMIN_MAINT;
}

/* ---- libcurl ↔ libevent ---------------------------------------------------------------- */

static void check_done(struct health *h);

static void
on_curl_timer(evutil_socket_t fd, short what, void *arg)
{
    struct health *h = arg;
    int running;

    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(h);
}

static void
on_sock_event(evutil_socket_t fd, short what, void *arg)
{
    struct hsock *hk = arg;
    struct health *h = hk->h; /* hk may be freed by the call below */
    int flags =
        ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    int running;

    curl_multi_socket_action(h->multi, fd, flags, &running);
    check_done(h);
}

static void
sock_free(struct health *h, struct hsock *hk)
{
    if (hk->prev)
        hk->prev->next = hk->next;
    else
        h->socks = hk->next;
    if (hk->next)
        hk->next->prev = hk->prev;
    event_free(hk->ev);
    free(hk);
}

/* CURLMOPT_SOCKETFUNCTION: libcurl tells which events it wants on s (or that it is done with
 * it, before closing it, so the event is deleted before the fd number can be reused). */
static int
on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct health *h = userp;
    struct hsock *hk = socketp;
    short kind;

    if (what == CURL_POLL_REMOVE) {
        if (hk != NULL) {
            curl_multi_assign(h->multi, s, NULL);
            sock_free(h, hk);
        }
        return 0;
    }
    kind = (short)(((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0) |
                   EV_PERSIST);
    if (hk == NULL) {
        hk = xcalloc(1, sizeof(*hk));
        hk->h = h;
        hk->fd = s;
        hk->next = h->socks;
        if (h->socks)
            h->socks->prev = hk;
        h->socks = hk;
        curl_multi_assign(h->multi, s, hk);
    } else {
        event_free(hk->ev);
    }
    hk->ev = event_new(h->base, s, kind, on_sock_event, hk);
    event_add(hk->ev, NULL);
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: one timer for the whole multi handle; -1 deletes it. libcurl must not
 * be called back from here, so even 0 goes through the event loop. */
static int
on_curl_timeout(CURLM *multi, long timeout_ms, void *userp)
{
    struct health *h = userp;

    if (timeout_ms < 0) {
        evtimer_del(h->curl_timer);
    } else {
        struct timeval tv = ms_tv((uint64_t)timeout_ms);
        evtimer_add(h->curl_timer, &tv);
    }
    return 0;
}

/* CURLOPT_WRITEFUNCTION: keeps a bounded prefix of the body when body_contains is set, else
 * discards; never fails, so a big body is read (and dropped) up to the timeout. */
static size_t
on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct hsrv *hs = userdata;
    size_t n = size * nmemb;

    if (hs->collect_body && hs->body_len < sizeof(hs->body)) {
        size_t room = sizeof(hs->body) - hs->body_len;
        size_t take = n < room ? n : room;
        memcpy(hs->body + hs->body_len, ptr, take);
        hs->body_len += take;
    }
    return n;
}

/* ---- one check ------------------------------------------------------------------------- */

/* A check due later than now starts at the next multiple of HEALTH_SLACK_MS (of the monotonic
 * clock) at or after it is due, so the checks of many servers share wake-ups of the main thread
 * instead of taking one each: 200 servers at 1 s cost 2.8% of a core without it. The bounds
 * stay those of due_ms plus at most this much. */
#define HEALTH_SLACK_MS 50

static void
arm(struct hsrv *hs, uint64_t delay_ms)
{
    uint64_t now = now_ms();
    uint64_t at = now + delay_ms;

    hs->due_ms = at;
    if (delay_ms > 0)
        at = (at + HEALTH_SLACK_MS - 1) / HEALTH_SLACK_MS * HEALTH_SLACK_MS;
    struct timeval tv = ms_tv(at - now);
    evtimer_add(hs->timer, &tv);
}

/* Sets every option of hs->easy for the current hc and tls (a reset first, so that nothing of
 * an older config lingers, such as a CA file). Not while a check is in flight.
 *
 * Over TLS the name checked against the certificate (and sent as SNI) is tls->sni when set —
 * the URL names it and CURLOPT_CONNECT_TO sends the connection to the server's address, so no
 * DNS is involved — and the server's IP address otherwise (no SNI; the certificate needs an IP
 * SAN). The proxy's own upstream connections follow the same rule. */
static void
build_request(struct hsrv *hs)
{
    const struct sockaddr_storage *ss = &hs->srv->addr.ss;
    const struct conf_upstream_tls *tls = hs->tls;
    char host[INET6_ADDRSTRLEN + 16] = "";
    const char *scheme = tls->enabled ? "https" : "http";
    const char *url_host = host;
    unsigned port = 0;
    size_t len;

    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        char ip[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        if (s6->sin6_scope_id != 0)
            snprintf(host, sizeof(host), "[%s%%25%u]", ip, (unsigned)s6->sin6_scope_id);
        else
            snprintf(host, sizeof(host), "[%s]", ip);
        port = ntohs(s6->sin6_port);
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        port = ntohs(s4->sin_port);
    }
    curl_slist_free_all(hs->connect_to);
    hs->connect_to = NULL;
    if (tls->enabled && tls->sni != NULL) {
        size_t clen = 2 * strlen(tls->sni) + strlen(host) + 16;
        char *map = xmalloc(clen);
        url_host = tls->sni;
        snprintf(map, clen, "%s:%u:%s:%u", tls->sni, port, host, port);
        hs->connect_to = curl_slist_append(NULL, map);
        free(map);
        if (hs->connect_to == NULL)
            abort(); /* out of memory, like xmalloc */
    }
    free(hs->url);
    len = strlen(scheme) + strlen("://") + strlen(url_host) + 8 + strlen(hs->hc->path) + 1;
    hs->url = xmalloc(len);
    snprintf(hs->url, len, "%s://%s:%u%s", scheme, url_host, port, hs->hc->path);

    curl_slist_free_all(hs->headers);
    hs->headers = NULL;
    if (hs->hc->host != NULL) {
        size_t hlen = strlen("Host: ") + strlen(hs->hc->host) + 1;
        char *line = xmalloc(hlen);
        snprintf(line, hlen, "Host: %s", hs->hc->host);
        hs->headers = curl_slist_append(NULL, line);
        free(line);
        if (hs->headers == NULL)
            abort(); /* out of memory, like xmalloc */
    }

    curl_easy_reset(hs->easy);
    curl_easy_setopt(hs->easy, CURLOPT_PRIVATE, (char *)hs);
    curl_easy_setopt(hs->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(hs->easy, CURLOPT_PROXY, "");
    curl_easy_setopt(hs->easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(hs->easy, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(hs->easy, CURLOPT_PROTOCOLS_STR, scheme);
    curl_easy_setopt(hs->easy, CURLOPT_USERAGENT, "switchyard-health/" SWITCHYARD_VERSION);
    curl_easy_setopt(hs->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(hs->easy, CURLOPT_WRITEDATA, hs);
    curl_easy_setopt(hs->easy, CURLOPT_ERRORBUFFER, hs->errbuf);
    curl_easy_setopt(hs->easy, CURLOPT_URL, hs->url);
    curl_easy_setopt(hs->easy, CURLOPT_HTTPHEADER, hs->headers);
    if (tls->enabled) {
        curl_easy_setopt(hs->easy, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
        curl_easy_setopt(hs->easy, CURLOPT_SSL_VERIFYPEER, tls->verify ? 1L : 0L);
        curl_easy_setopt(hs->easy, CURLOPT_SSL_VERIFYHOST, tls->verify ? 2L : 0L);
        if (tls->ca != NULL)
            curl_easy_setopt(hs->easy, CURLOPT_CAINFO, tls->ca);
        if (hs->connect_to != NULL)
            curl_easy_setopt(hs->easy, CURLOPT_CONNECT_TO, hs->connect_to);
    }
}

static void result(struct hsrv *hs, bool pass, const char *reason);

/* Starts a check; its result arrives through check_done(). */
static void
start_check(struct hsrv *hs)
{
    struct health *h = hs->h;
    CURLMcode mc;

    assert(!hs->in_flight);
    hs->collect_body = hs->hc->body_contains != NULL;
    hs->body_len = 0;
    hs->start_ms = now_ms();
    hs->errbuf[0] = '\0';
    curl_easy_setopt(hs->easy, CURLOPT_TIMEOUT_MS, (long)hs->hc->timeout_ms);
    curl_easy_setopt(hs->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)hs->hc->timeout_ms);
    /* libcurl replaces a connection older than this many whole seconds plus one (it compares
     * the age truncated to seconds with ">"): a new connection after HEALTH_CONN_CHECKS
     * checks, or 2 s when the interval is under 200 ms. */
    long life_s = (long)(HEALTH_CONN_CHECKS * hs->hc->interval_ms / 1000) - 1;
    curl_easy_setopt(hs->easy, CURLOPT_MAXLIFETIME_CONN, life_s < 1 ? 1L : life_s);
    curl_easy_setopt(hs->easy, CURLOPT_FORBID_REUSE,
                     hs->hc->interval_ms >= HEALTH_REUSE_BELOW_MS ? 1L : 0L);
    mc = curl_multi_add_handle(h->multi, hs->easy);
    if (mc != CURLM_OK) {
        result(hs, false, curl_multi_strerror(mc));
        return;
    }
    hs->in_flight = true;
}

static void
on_check_timer(evutil_socket_t fd, short what, void *arg)
{
    struct hsrv *hs = arg;

    if (hs->in_flight)
        return;
    if (in_maint(hs)) {
        arm(hs, hs->hc->interval_ms); /* look again later; health_check_now() is quicker */
        return;
    }
    start_check(hs);
    /* Start the transfer now rather than through libcurl's 0 ms timer: one trip through the
     * event loop less per check. We are not inside a libcurl callback, so this is allowed. */
    if (hs->in_flight) {
        int running;
        curl_multi_socket_action(hs->h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        check_done(hs->h);
    }
}

static void first_round_check(struct health *h);

/* Counts a result, runs the rise/fall state machine and schedules the next check: checks are
 * due every interval from when the previous one was due (timer lateness does not add up), so a
 * server that dies is down at most fall × interval + timeout later. */
static void
result(struct hsrv *hs, bool pass, const char *reason)
{
    struct health *h = hs->h;
    uint64_t now = now_ms();
    uint64_t gap = hs->next_gap_ms ? hs->next_gap_ms : hs->hc->interval_ms;
    uint64_t due = hs->due_ms + gap;
    enum health_state from = hs->state, to = hs->state;

    hs->in_flight = false;
    hs->next_gap_ms = 0;
    arm(hs, due > now ? due - now : 0);
    if (in_maint(hs)) {
        first_round_check(h); /* a server in maintenance is not waited for */
        return;               /* nor is its result counted: it is not checked */
    }

    hs->checks++;
    hs->last_ms = now;
    hs->last_duration_ms = (uint32_t)(now - hs->start_ms);
    snprintf(hs->reason, sizeof(hs->reason), "%s", pass ? "ok" : reason);
    if (pass) {
        hs->passes++;
        hs->failures = 0;
        if (from == HEALTH_UNKNOWN || (from == HEALTH_DOWN && hs->passes >= hs->hc->rise))
            to = HEALTH_UP;
    } else {
        hs->failures++;
        hs->passes = 0;
        if (from == HEALTH_UNKNOWN || (from == HEALTH_UP && hs->failures >= hs->hc->fall))
            to = HEALTH_DOWN;
    }
    hs->checked = true;
    if (to != from) {
        hs->state = to;
        /* Relaxed: workers read it relaxed per request; seeing it a request late is harmless
         * (snapshot.h). */
        atomic_store_explicit(&hs->srv->health, (int)to, memory_order_relaxed);
        if (h->fn)
            h->fn(h->arg, hs->srv, from, to, hs->reason);
    }
    first_round_check(h);
}

/* Whether a libcurl failure is the TLS layer's: handshake, certificate, name, CA file. */
static bool
tls_failure(CURLcode rc)
{
    switch (rc) {
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CLIENTCERT:
    case CURLE_USE_SSL_FAILED:
        return true;
    default:
        return false;
    }
}

/* Classifies a finished transfer. */
static void
finish(struct hsrv *hs, CURLcode rc)
{
    const struct conf_health *hc = hs->hc;
    char reason[HEALTH_REASON_LEN];
    long status = 0, oserr = 0;

    curl_multi_remove_handle(hs->h->multi, hs->easy);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(hs->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status < hc->expect_min || status > hc->expect_max) {
            snprintf(reason, sizeof(reason), "status %ld", status);
            result(hs, false, reason);
        } else if (hc->body_contains != NULL &&
                   (!hs->collect_body || memmem(hs->body, hs->body_len, hc->body_contains,
                                                strlen(hc->body_contains)) == NULL)) {
            result(hs, false, "body mismatch");
        } else {
            result(hs, true, NULL);
        }
        return;
    }
    if (rc == CURLE_OPERATION_TIMEDOUT) {
        result(hs, false, "timeout");
        return;
    }
    if (tls_failure(rc)) {
        /* libcurl's own text says what was wrong (which certificate problem, which name). */
        if (snprintf(reason, sizeof(reason), "TLS: %s",
                     hs->errbuf[0] ? hs->errbuf : curl_easy_strerror(rc)) >= (int)sizeof(reason))
            memcpy(reason + sizeof(reason) - 4, "...", 4); /* cut short: say so */
        result(hs, false, reason);
        return;
    }
    curl_easy_getinfo(hs->easy, CURLINFO_OS_ERRNO, &oserr);
    if (rc == CURLE_COULDNT_CONNECT && oserr == ECONNREFUSED) {
        result(hs, false, "connection refused");
    } else if (rc == CURLE_COULDNT_CONNECT && oserr != 0) {
        snprintf(reason, sizeof(reason), "%s (%s)", curl_easy_strerror(rc), strerror((int)oserr));
        result(hs, false, reason);
    } else {
        result(hs, false, curl_easy_strerror(rc));
    }
}

/* Reads the completions libcurl has queued. */
static void
check_done(struct health *h)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
        char *priv = NULL;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
        finish((struct hsrv *)priv, msg->data.result);
    }
}

/* Drops a check in flight without counting it. */
static void
cancel(struct hsrv *hs)
{
    if (hs->in_flight) {
        curl_multi_remove_handle(hs->h->multi, hs->easy);
        hs->in_flight = false;
    }
}

/* ---- the set of checked servers -------------------------------------------------------- */

static struct hsrv *
hsrv_create(struct health *h, struct server *srv, const struct conf_health *hc,
            const struct conf_upstream_tls *tls)
{
    struct hsrv *hs = xcalloc(1, sizeof(*hs));

    hs->h = h;
    hs->srv = srv;
    hs->hc = hc;
    hs->tls = tls;
    /* DESIGN §5: a server starts unknown (no traffic) whatever it was created with; its first
     * result decides. Relaxed, as every store of health (see result()). */
    hs->state = HEALTH_UNKNOWN;
    atomic_store_explicit(&srv->health, (int)HEALTH_UNKNOWN, memory_order_relaxed);
    hs->easy = curl_easy_init();
    if (hs->easy == NULL)
        abort(); /* out of memory, like xmalloc */
    hs->timer = evtimer_new(h->base, on_check_timer, hs);
    build_request(hs);
    return hs;
}

static void
hsrv_destroy(struct hsrv **p)
{
    struct hsrv *hs = *p;

    if (hs == NULL)
        return;
    cancel(hs);
    curl_easy_cleanup(hs->easy);
    curl_slist_free_all(hs->headers);
    curl_slist_free_all(hs->connect_to);
    event_free(hs->timer);
    free(hs->url);
    xfree(p);
}

/* Whether a check started under a (and tls ta) would be judged or sent differently under b
 * (and tb). */
static bool
request_changed(const struct conf_health *a, const struct conf_upstream_tls *ta,
                const struct conf_health *b, const struct conf_upstream_tls *tb)
{
    return !conf_str_equal(a->path, b->path) || !conf_str_equal(a->host, b->host) ||
           !conf_str_equal(a->body_contains, b->body_contains) || a->timeout_ms != b->timeout_ms ||
           a->expect_min != b->expect_min || a->expect_max != b->expect_max ||
           !conf_upstream_tls_equal(ta, tb);
}

static struct hsrv *
find_old(struct health *h, const struct server *srv)
{
    /* The same server first, then one a weight change replaced (same pool, name, address). */
    for (size_t i = 0; i < h->nsrvs; i++)
        if (h->srvs[i] != NULL && h->srvs[i]->srv == srv)
            return h->srvs[i];
    for (size_t i = 0; i < h->nsrvs; i++) {
        const struct server *o = h->srvs[i] ? h->srvs[i]->srv : NULL;
        if (o != NULL && o->pool == srv->pool && strcmp(o->name, srv->name) == 0 &&
            strcmp(o->addr.text, srv->addr.text) == 0)
            return h->srvs[i];
    }
    return NULL;
}

struct health *
health_create(struct event_base *base, health_change_fn fn, void *arg)
{
    struct health *h = xcalloc(1, sizeof(*h));

    h->base = base;
    h->fn = fn;
    h->arg = arg;
    h->multi = curl_multi_init();
    if (h->multi == NULL) {
        free(h);
        return NULL;
    }
    h->curl_timer = evtimer_new(base, on_curl_timer, h);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_curl_timeout);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    return h;
}

void
health_set_snapshot(struct health *h, struct snapshot *snap)
{
    size_t n = 0, nnew = 0, k = 0;
    struct hsrv **next;

    for (int p = 0; p < POOL_COUNT; p++)
        n += snap->pools[p].nservers;
    /* One kept connection per checked server (libcurl's default keeps 4 per transfer in flight,
     * which would close most of them between checks). */
    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, (long)n + 16);
    next = xcalloc(n ? n : 1, sizeof(*next));
    n = 0;
    for (int p = 0; p < POOL_COUNT; p++) {
        const struct pool *pool = &snap->pools[p];
        const struct conf_health *hc = &pool->conf->health;
        const struct conf_upstream_tls *tls = &pool->conf->tls;
        for (size_t i = 0; i < pool->nservers; i++) {
            struct server *srv = pool->servers[i];
            struct hsrv *hs = find_old(h, srv);
            if (hs != NULL) {
                bool changed = request_changed(hs->hc, hs->tls, hc, tls);
                /* Take it out of the old list so that it is neither matched twice nor freed. */
                for (size_t j = 0; j < h->nsrvs; j++)
                    if (h->srvs[j] == hs)
                        h->srvs[j] = NULL;
                hs->hc = hc;
                hs->tls = tls;
                if (hs->srv != srv) {
                    hs->srv = srv;
                    atomic_store_explicit(&srv->health, (int)hs->state, memory_order_relaxed);
                }
                if (changed) {
                    /* Cancel first: libcurl reads the old headers while a check is in flight. */
                    if (hs->in_flight) {
                        cancel(hs);
                        arm(hs, 0);
                    }
                    build_request(hs);
                }
            } else {
                hs = hsrv_create(h, srv, hc, tls);
                hs->fresh = true;
                nnew++;
            }
            next[n++] = hs;
        }
    }
    /* New servers: the first check now, then spread over the interval (server k of a batch of
     * nnew has its second check interval × (1 - k/nnew) after the first, never later than one
     * interval, so the detection bound holds from the start). */
    for (size_t i = 0; i < n; i++) {
        struct hsrv *hs = next[i];
        if (!hs->fresh)
            continue;
        hs->fresh = false;
        hs->next_gap_ms = hs->hc->interval_ms - hs->hc->interval_ms * k / nnew;
        if (hs->next_gap_ms == 0)
            hs->next_gap_ms = 1;
        k++;
        arm(hs, 0);
    }
    for (size_t j = 0; j < h->nsrvs; j++)
        hsrv_destroy(&h->srvs[j]); /* gone: checks cancelled */
    free(h->srvs);
    h->srvs = next;
    h->nsrvs = n;
    {
        struct snapshot *prev = h->snap;
        h->snap = snapshot_ref(snap); /* before the release: snap may be the same snapshot */
        snapshot_release(&prev);
    }
    first_round_check(h);
}

/* ---- first round ----------------------------------------------------------------------- */

static void
on_first_round(evutil_socket_t fd, short what, void *arg)
{
    struct health *h = arg;
    health_done_fn done = h->first_done;
    void *done_arg = h->first_arg;

    h->first_done = NULL;
    h->first_arg = NULL;
    if (done)
        done(done_arg); /* last: it may destroy h */
}

static void
first_round_check(struct health *h)
{
    if (h->first_done == NULL)
        return;
    for (size_t i = 0; i < h->nsrvs; i++)
        if (!h->srvs[i]->checked && !in_maint(h->srvs[i]))
            return;
    event_active(h->first_ev, EV_TIMEOUT, 0);
}

void
health_first_round(struct health *h, health_done_fn done, void *arg)
{
    uint64_t max_timeout_ms = 0;
    struct timeval tv;

    if (h->first_ev == NULL)
        h->first_ev = evtimer_new(h->base, on_first_round, h);
    evtimer_del(h->first_ev);
    h->first_done = done;
    h->first_arg = arg;
    for (size_t i = 0; i < h->nsrvs; i++)
        if (h->srvs[i]->hc->timeout_ms > max_timeout_ms)
            max_timeout_ms = h->srvs[i]->hc->timeout_ms;
    tv = ms_tv(max_timeout_ms + FIRST_ROUND_MARGIN_MS);
    evtimer_add(h->first_ev, &tv);
    first_round_check(h);
}

/* ---- queries and teardown -------------------------------------------------------------- */

static struct hsrv *
lookup(const struct health *h, const struct server *srv)
{
    for (size_t i = 0; i < h->nsrvs; i++)
        if (h->srvs[i]->srv == srv)
            return h->srvs[i];
    return NULL;
}

int
health_check_now(struct health *h, const struct server *srv)
{
    struct hsrv *hs = lookup(h, srv);

    if (hs == NULL || in_maint(hs))
        return -1;
    if (!hs->in_flight) {
        evtimer_del(hs->timer);
        hs->due_ms = now_ms();
        start_check(hs);
    }
    return 0;
}

int
health_server_status(const struct health *h, const struct server *srv, struct health_status *out)
{
    const struct hsrv *hs = lookup(h, srv);

    if (hs == NULL)
        return -1;
    memset(out, 0, sizeof(*out));
    out->state = hs->state;
    out->passes = hs->passes;
    out->failures = hs->failures;
    out->checks = hs->checks;
    out->checked = hs->checked;
    out->in_flight = hs->in_flight;
    out->maint = in_maint(hs);
    out->last_ms = hs->last_ms;
    out->last_duration_ms = hs->last_duration_ms;
    snprintf(out->reason, sizeof(out->reason), "%s", hs->reason);
    return 0;
}

void
health_destroy(struct health **hp)
{
    struct health *h = hp ? *hp : NULL;

    if (h == NULL)
        return;
    for (size_t i = 0; i < h->nsrvs; i++)
        hsrv_destroy(&h->srvs[i]);
    free(h->srvs);
    curl_multi_cleanup(h->multi); /* may still call on_curl_socket / on_curl_timeout */
    while (h->socks != NULL)
        sock_free(h, h->socks);
    event_free(h->curl_timer);
    if (h->first_ev)
        event_free(h->first_ev);
    snapshot_release(&h->snap);
    xfree(hp);
}
