/* control/notify.c — webhook delivery with libcurl multi driven by the main event_base
 * (socket and timer callbacks; no thread, no blocking call). */
#include "control/notify.h"

#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "conf/xalloc.h"
#include "proxy/log.h"

struct payload {
    char *body; /* owned: compact JSON */
    size_t len;
    struct payload *next;
};

struct hook {
    struct notify *n;     /* borrowed: the owner */
    char *url;            /* owned */
    struct payload *head; /* owned queue, oldest first */
    struct payload *tail;
    size_t queued;
    unsigned attempts;          /* of the head payload */
    CURL *easy;                 /* owned while a request is in flight */
    struct curl_slist *headers; /* owned */
    struct event *retry;        /* owned: backoff timer */
    uint64_t delivered;
    uint64_t dropped;
};

struct notify {
    struct event_base *base;
    CURLM *multi;
    struct event *timer; /* owned: libcurl's timeout */
    struct hook *hooks;  /* owned: nhooks */
    size_t nhooks;
};

/* Per socket libcurl watches: our event, kept as libcurl's socket pointer. */
struct sockev {
    struct event *ev;
};

static void kick(struct hook *h);

/* Drops the head payload (delivered or given up) and resets the attempt count. */
static void
pop_head(struct hook *h)
{
    struct payload *p = h->head;
    h->head = p->next;
    if (h->head == NULL)
        h->tail = NULL;
    h->queued--;
    free(p->body);
    free(p);
    h->attempts = 0;
}

static void
check_done(struct notify *n)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(n->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct hook *h = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&h);
        long code = 0;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &code);
        CURLcode res = msg->data.result;
        curl_multi_remove_handle(n->multi, h->easy);
        curl_easy_cleanup(h->easy);
        h->easy = NULL;
        if (res == CURLE_OK && code >= 200 && code < 300) {
            pop_head(h);
            h->delivered++;
            kick(h);
            continue;
        }
        h->attempts++;
        const char *why = res != CURLE_OK ? curl_easy_strerror(res) : "HTTP status";
        if (h->attempts >= NOTIFY_MAX_ATTEMPTS) {
            log_warn("webhook %s: giving up on an event after %u attempts (%s %ld)", h->url,
                     h->attempts, why, code);
            pop_head(h);
            h->dropped++;
            kick(h);
            continue;
        }
        uint64_t ms = NOTIFY_BACKOFF_MS;
        for (unsigned i = 1; i < h->attempts && ms < NOTIFY_BACKOFF_MAX_MS; i++)
            ms *= 2;
        if (ms > NOTIFY_BACKOFF_MAX_MS)
            ms = NOTIFY_BACKOFF_MAX_MS;
        log_info("webhook %s: attempt %u failed (%s %ld), retrying in %llu ms", h->url, h->attempts,
                 why, code, (unsigned long long)ms);
        struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
        evtimer_add(h->retry, &tv);
    }
}

static void
on_socket_event(evutil_socket_t fd, short what, void *arg)
{
    struct notify *n = arg;
    int flags = (what & EV_READ ? CURL_CSELECT_IN : 0) | (what & EV_WRITE ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(n->multi, fd, flags, &running);
    check_done(n);
}

static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct notify *n = arg;
    int running;
    curl_multi_socket_action(n->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(n);
}

static int
socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct notify *n = userp;
    struct sockev *se = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (se) {
            event_free(se->ev);
            free(se);
            curl_multi_assign(n->multi, s, NULL);
        }
        return 0;
    }
    short flags =
        EV_PERSIST | (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);
    if (se == NULL) {
        se = xcalloc(1, sizeof(*se));
        curl_multi_assign(n->multi, s, se);
    } else {
        event_free(se->ev);
    }
    se->ev = event_new(n->base, s, flags, on_socket_event, n);
    event_add(se->ev, NULL);
    return 0;
}

static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct notify *n = userp;
    if (timeout_ms < 0) {
        evtimer_del(n->timer);
        return 0;
    }
    /* Even a 0 timeout goes through the loop: never call back into libcurl from here. */
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(n->timer, &tv);
    return 0;
}

static size_t
discard(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    return size * nmemb;
}

/* Starts the head payload's request unless one is in flight or a retry is pending. */
static void
kick(struct hook *h)
{
    if (h->easy || h->head == NULL || evtimer_pending(h->retry, NULL))
        return;
    CURL *e = curl_easy_init();
    if (e == NULL)
        return;
    curl_easy_setopt(e, CURLOPT_URL, h->url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, h->head->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)h->head->len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->headers);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)NOTIFY_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)h);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "switchyard/" SWITCHYARD_VERSION);
    h->easy = e;
    curl_multi_add_handle(h->n->multi, e);
}

static void
on_retry(evutil_socket_t fd, short what, void *arg)
{
    kick(arg);
}

struct notify *
notify_create(struct event_base *base, const struct conf_notify *cfg)
{
    if (cfg->nwebhooks == 0)
        return NULL;
    CURLM *multi = curl_multi_init();
    if (multi == NULL)
        return NULL;
    struct notify *n = xcalloc(1, sizeof(*n));
    n->base = base;
    n->multi = multi;
    n->timer = evtimer_new(base, on_timer, n);
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, n);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(multi, CURLMOPT_TIMERDATA, n);
    n->nhooks = cfg->nwebhooks;
    n->hooks = xcalloc(n->nhooks, sizeof(*n->hooks));
    for (size_t i = 0; i < n->nhooks; i++) {
        struct hook *h = &n->hooks[i];
        h->n = n;
        h->url = xstrdup(cfg->webhooks[i]);
        h->headers = curl_slist_append(NULL, "Content-Type: application/json");
        h->retry = evtimer_new(base, on_retry, h);
    }
    return n;
}

void
notify_event(struct notify *n, const json_t *event)
{
    if (n == NULL)
        return;
    char *text = json_dumps(event, JSON_COMPACT);
    if (text == NULL)
        return;
    size_t len = strlen(text);
    for (size_t i = 0; i < n->nhooks; i++) {
        struct hook *h = &n->hooks[i];
        if (h->queued >= NOTIFY_MAX_QUEUE) {
            /* Drop the oldest that is not in flight. */
            struct payload *victim = h->easy ? h->head->next : h->head;
            if (victim) {
                if (h->easy)
                    h->head->next = victim->next;
                else
                    h->head = victim->next;
                if (h->tail == victim)
                    h->tail = h->head; /* the in-flight head, or NULL: nothing left */
                free(victim->body);
                free(victim);
                h->queued--;
                h->dropped++;
                if (h->dropped == 1 || h->dropped % 100 == 0)
                    log_warn("webhook %s: queue full, %llu events dropped so far", h->url,
                             (unsigned long long)h->dropped);
            }
        }
        struct payload *p = xcalloc(1, sizeof(*p));
        p->body = xstrndup(text, len);
        p->len = len;
        if (h->tail)
            h->tail->next = p;
        else
            h->head = p;
        h->tail = p;
        h->queued++;
        kick(h);
    }
    free(text);
}

void
notify_counts(const struct notify *n, uint64_t *delivered, uint64_t *dropped, size_t *queued)
{
    *delivered = *dropped = 0;
    *queued = 0;
    for (size_t i = 0; n && i < n->nhooks; i++) {
        *delivered += n->hooks[i].delivered;
        *dropped += n->hooks[i].dropped;
        *queued += n->hooks[i].queued;
    }
}

void
notify_destroy(struct notify **np)
{
    struct notify *n = *np;
    if (n == NULL)
        return;
    *np = NULL;
    for (size_t i = 0; i < n->nhooks; i++) {
        struct hook *h = &n->hooks[i];
        if (h->easy) {
            curl_multi_remove_handle(n->multi, h->easy);
            curl_easy_cleanup(h->easy);
        }
        while (h->head) {
            struct payload *p = h->head;
            h->head = p->next;
            free(p->body);
            free(p);
        }
        curl_slist_free_all(h->headers);
        event_free(h->retry);
        free(h->url);
    }
    free(n->hooks);
    curl_multi_cleanup(n->multi);
    event_free(n->timer);
    free(n);
}
