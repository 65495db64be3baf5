/* proxy/accesslog.c — JSON access-log lines formatted per worker and written by one writer
 * thread (DESIGN §7): a worker hands full buffers over through its own small queue and never
 * waits on the disk; when the writer falls behind, lines are dropped and counted. */
#include "proxy/accesslog.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf/xalloc.h"

#define MAX_METHOD 64
#define MAX_REQUEST_ID 256
#define MAX_NAME 256

struct albuf {
    struct albuf *next;
    size_t len;
    uint32_t nlines;
    char data[ACCESSLOG_BUF_BYTES];
};

/* One worker's side. `cur` and `dropped` belong to the worker alone; the queue and the free
 * list are under `lock`, which only this worker and the writer take (DESIGN §2), each time for
 * a few pointer moves. Aligned so that two workers never share a cache line. */
struct alworker {
    _Alignas(64) pthread_mutex_t lock;
    struct albuf *cur;             /* owned: being filled (worker only) */
    struct albuf *q_head, *q_tail; /* owned: full buffers for the writer (lock) */
    struct albuf *free_list;       /* owned: written buffers to refill (lock) */
    unsigned outstanding;          /* queued + being written by the writer (lock) */
    atomic_uint_fast64_t dropped;  /* written by the worker only; read by anyone */
};

struct accesslog {
    char *path; /* owned */
    int fd;     /* the writer's (the main thread's before the writer starts / after join) */
    atomic_int pending_fd; /* -1, or a reopened file for the writer to switch to */
    int nworkers;
    unsigned max_queued;
    struct alworker *w; /* owned: nworkers, 64-byte aligned */
    pthread_t writer;
    bool writer_started;
    sem_t wake; /* posted on every hand-over, reopen and stop */
    atomic_bool stopping;
    atomic_uint_fast64_t write_dropped; /* lines lost to write errors (writer) */
};

/* ---- formatting ------------------------------------------------------------------------ */

static const char hex[] = "0123456789abcdef";

/* Appends s (n bytes) as a JSON string: quotes and backslash escaped, control characters and
 * DEL as \u00XX (or their short forms), and each byte >= 0x80 as \u00XX (the byte as a Latin-1
 * code point), so that every line is valid JSON whatever the client sent. At most 6n+2 bytes. */
static char *
put_str(char *o, const char *s, size_t n)
{
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"':
            *o++ = '"';
            break;
        case '\\':
            *o++ = '\\';
            break;
        case '\n':
            *o++ = 'n';
            break;
        case '\r':
            *o++ = 'r';
            break;
        case '\t':
            *o++ = 't';
            break;
        case '\b':
            *o++ = 'b';
            break;
        case '\f':
            *o++ = 'f';
            break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
            break;
        }
    }
    *o++ = '"';
    return o;
}

static char *
put_lit(char *o, const char *lit)
{
    size_t n = strlen(lit);
    memcpy(o, lit, n);
    return o + n;
}

static char *
put_u64(char *o, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0)
        *o++ = tmp[--n];
    return o;
}

static char *
put_opt(char *o, const char *s, size_t n, size_t max)
{
    if (s == NULL)
        return put_lit(o, "null");
    return put_str(o, s, n < max ? n : max);
}

static char *
put_name(char *o, const char *s)
{
    return s == NULL ? put_lit(o, "null") : put_str(o, s, strnlen(s, MAX_NAME));
}

static char *
put_client(char *o, const struct sockaddr *sa)
{
    char ip[INET6_ADDRSTRLEN];

    if (sa != NULL && sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
    } else if (sa != NULL && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) /* a dual-stack listener: show the v4 */
            inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], ip, sizeof(ip));
        else
            inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
    } else {
        return put_lit(o, "null");
    }
    return put_str(o, ip, strlen(ip));
}

/* "2024-05-01T12:00:00.123Z" */
static char *
put_time(char *o, uint64_t unix_ms)
{
    time_t sec = (time_t)(unix_ms / 1000);
    struct tm tm;
    char tmp[40];
    int n;

    gmtime_r(&sec, &tm);
    n = snprintf(tmp, sizeof(tmp), "\"%04d-%02d-%02dT%02d:%02d:%02d.%03uZ\"", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (unsigned)(unix_ms % 1000));
    memcpy(o, tmp, (size_t)n);
    return o + n;
}

static uint64_t
wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

size_t
accesslog_format(char *out, const struct accesslog_entry *e, uint64_t now_ms)
{
    char *o = out;

    o = put_lit(o, "{\"time\":");
    o = put_time(o, e->time_ms ? e->time_ms : now_ms);
    o = put_lit(o, ",\"client\":");
    o = put_client(o, e->client);
    o = put_lit(o, ",\"method\":");
    o = put_opt(o, e->method, e->method_len, MAX_METHOD);
    o = put_lit(o, ",\"target\":");
    o = put_opt(o, e->target, e->target_len, ACCESSLOG_MAX_TARGET);
    o = put_lit(o, ",\"status\":");
    o = put_u64(o, e->status > 0 ? (uint64_t)e->status : 0);
    o = put_lit(o, ",\"bytes_in\":");
    o = put_u64(o, e->bytes_in);
    o = put_lit(o, ",\"bytes_out\":");
    o = put_u64(o, e->bytes_out);
    o = put_lit(o, ",\"duration_ms\":");
    o = put_u64(o, e->duration_us / 1000);
    *o++ = '.';
    *o++ = (char)('0' + e->duration_us % 1000 / 100);
    *o++ = (char)('0' + e->duration_us % 100 / 10);
    *o++ = (char)('0' + e->duration_us % 10);
    o = put_lit(o, ",\"pool\":");
    o = put_name(o, e->pool);
    o = put_lit(o, ",\"server\":");
    o = put_name(o, e->server);
    o = put_lit(o, ",\"request_id\":");
    o = put_opt(o, e->request_id, e->request_id_len, MAX_REQUEST_ID);
    o = put_lit(o, ",\"generation\":");
    o = put_u64(o, e->generation);
    o = put_lit(o, ",\"bucket\":");
    if (e->bucket >= 0)
        o = put_u64(o, (uint64_t)e->bucket);
    else
        o = put_lit(o, "null");
    o = put_lit(o, "}\n");
    assert((size_t)(o - out) <= ACCESSLOG_LINE_MAX);
    return (size_t)(o - out);
}

/* ---- the hand-over --------------------------------------------------------------------- */

static struct albuf *
buf_new(void)
{
    struct albuf *b = xmalloc(sizeof(*b));
    b->next = NULL;
    b->len = 0;
    b->nlines = 0;
    return b;
}

/* Queues cur for the writer unless `bounded` and the worker already has max_queued out; takes
 * a fresh buffer from the free list (or allocates one: at most max_queued + 2 per worker ever
 * exist). Returns whether cur was handed over. */
static bool
hand_over(struct accesslog *l, struct alworker *w, bool bounded)
{
    struct albuf *b = w->cur, *fresh;

    pthread_mutex_lock(&w->lock);
    if (bounded && w->outstanding >= l->max_queued) {
        pthread_mutex_unlock(&w->lock);
        return false;
    }
    if (w->q_tail)
        w->q_tail->next = b;
    else
        w->q_head = b;
    w->q_tail = b;
    w->outstanding++;
    fresh = w->free_list;
    if (fresh)
        w->free_list = fresh->next;
    pthread_mutex_unlock(&w->lock);

    if (fresh == NULL)
        fresh = buf_new();
    fresh->next = NULL;
    fresh->len = 0;
    fresh->nlines = 0;
    w->cur = fresh;
    sem_post(&l->wake);
    return true;
}

static size_t
cap(size_t n, size_t max)
{
    return n < max ? n : max;
}

/* An upper bound of the line's length, cheaper than formatting it. */
static size_t
line_bound(const struct accesslog_entry *e)
{
    size_t strings = cap(e->method_len, MAX_METHOD) + cap(e->target_len, ACCESSLOG_MAX_TARGET) +
                     cap(e->request_id_len, MAX_REQUEST_ID) +
                     (e->pool ? strnlen(e->pool, MAX_NAME) : 0) +
                     (e->server ? strnlen(e->server, MAX_NAME) : 0);
    return 6 * strings + 512; /* 512: keys, numbers, time, client, quotes */
}

void
accesslog_write(struct accesslog *l, int worker, const struct accesslog_entry *e)
{
    struct alworker *w;

    if (l == NULL)
        return;
    assert(worker >= 0 && worker < l->nworkers);
    w = &l->w[worker];
    if (w->cur->len + line_bound(e) > sizeof(w->cur->data) && !hand_over(l, w, true)) {
        /* Relaxed: a statistic; only this worker writes it. */
        atomic_store_explicit(&w->dropped,
                              atomic_load_explicit(&w->dropped, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        return;
    }
    w->cur->len += accesslog_format(w->cur->data + w->cur->len, e, wall_ms());
    w->cur->nlines++;
}

void
accesslog_flush(struct accesslog *l, int worker)
{
    if (l == NULL)
        return;
    assert(worker >= 0 && worker < l->nworkers);
    if (l->w[worker].cur->len > 0)
        hand_over(l, &l->w[worker], true);
}

uint64_t
accesslog_dropped(const struct accesslog *l)
{
    uint64_t n;

    if (l == NULL)
        return 0;
    n = atomic_load_explicit(&l->write_dropped, memory_order_relaxed);
    for (int i = 0; i < l->nworkers; i++)
        n += atomic_load_explicit(&l->w[i].dropped, memory_order_relaxed);
    return n;
}

/* ---- the writer thread ----------------------------------------------------------------- */

static int
open_log(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

/* Before each write: switch to a file accesslog_reopen() opened. The exchange hands the fd
 * over whole; acq_rel pairs with the reopen's exchange (the fd is a plain int, nothing else
 * to publish, but the acquire keeps "after the reopen" meaningful). */
static void
maybe_switch(struct accesslog *l)
{
    int fd = atomic_exchange_explicit(&l->pending_fd, -1, memory_order_acq_rel);
    if (fd != -1) {
        close(l->fd);
        l->fd = fd;
    }
}

static bool
write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = write(fd, p, n);
        if (r == -1) {
            if (errno == EINTR)
                continue;
            return false;
        }
        p += r;
        n -= (size_t)r;
    }
    return true;
}

/* Writes what every worker has queued. Returns whether anything was written. */
static bool
drain(struct accesslog *l)
{
    bool any = false;

    for (int i = 0; i < l->nworkers; i++) {
        struct alworker *w = &l->w[i];
        struct albuf *list, *last = NULL;
        unsigned n = 0;

        pthread_mutex_lock(&w->lock);
        list = w->q_head;
        w->q_head = w->q_tail = NULL;
        pthread_mutex_unlock(&w->lock);
        if (list == NULL)
            continue;
        any = true;
        for (struct albuf *b = list; b != NULL; b = b->next) {
            maybe_switch(l);
            if (!write_all(l->fd, b->data, b->len))
                atomic_fetch_add_explicit(&l->write_dropped, b->nlines, memory_order_relaxed);
            last = b;
            n++;
        }
        pthread_mutex_lock(&w->lock);
        last->next = w->free_list;
        w->free_list = list;
        w->outstanding -= n;
        pthread_mutex_unlock(&w->lock);
    }
    return any;
}

static void *
writer_main(void *arg)
{
    struct accesslog *l = arg;

    for (;;) {
        bool stop;
        while (sem_wait(&l->wake) == -1 && errno == EINTR)
            ;
        /* Acquire: accesslog_close() queued the last buffers before its release store. */
        stop = atomic_load_explicit(&l->stopping, memory_order_acquire);
        maybe_switch(l);
        while (drain(l))
            ;
        if (stop)
            return NULL;
    }
}

/* ---- life cycle ------------------------------------------------------------------------ */

struct accesslog *
accesslog_open(const char *path, int nworkers, char *err, size_t errlen)
{
    struct accesslog *l;
    sigset_t all, old;
    size_t bytes;
    int rc;

    assert(nworkers >= 1);
    l = xcalloc(1, sizeof(*l));
    l->path = xstrdup(path);
    l->nworkers = nworkers;
    l->max_queued = ACCESSLOG_MAX_QUEUED;
    atomic_init(&l->pending_fd, -1);
    atomic_init(&l->stopping, false);
    atomic_init(&l->write_dropped, 0);
    l->fd = open_log(path);
    if (l->fd == -1) {
        snprintf(err, errlen, "cannot open access log %s: %s", path, strerror(errno));
        free(l->path);
        free(l);
        return NULL;
    }
    bytes = (size_t)nworkers * sizeof(struct alworker);
    _Static_assert(sizeof(struct alworker) % 64 == 0, "workers must not share cache lines");
    l->w = aligned_alloc(64, bytes);
    if (l->w == NULL)
        abort(); /* out of memory, like xmalloc */
    memset(l->w, 0, bytes);
    for (int i = 0; i < nworkers; i++) {
        pthread_mutex_init(&l->w[i].lock, NULL);
        atomic_init(&l->w[i].dropped, 0);
        l->w[i].cur = buf_new();
    }
    sem_init(&l->wake, 0, 0);

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    rc = pthread_create(&l->writer, NULL, writer_main, l);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the access log writer: %s", strerror(rc));
        accesslog_close(&l);
        return NULL;
    }
    l->writer_started = true;
    return l;
}

void
accesslog_set_max_queued(struct accesslog *l, unsigned nbuffers)
{
    l->max_queued = nbuffers ? nbuffers : 1;
}

int
accesslog_reopen(struct accesslog *l)
{
    int fd, old;

    if (l == NULL)
        return 0;
    fd = open_log(l->path);
    if (fd == -1)
        return -1;
    old = atomic_exchange_explicit(&l->pending_fd, fd, memory_order_acq_rel);
    if (old != -1)
        close(old);     /* a second reopen before the writer took the first */
    sem_post(&l->wake); /* switch now, not at the next write: the old file is let go */
    return 0;
}

static void
free_list(struct albuf *b)
{
    while (b != NULL) {
        struct albuf *next = b->next;
        free(b);
        b = next;
    }
}

void
accesslog_close(struct accesslog **lp)
{
    struct accesslog *l = lp ? *lp : NULL;
    int fd;

    if (l == NULL)
        return;
    /* The workers are gone: their current buffers are ours now. Unbounded: closing may wait. */
    for (int i = 0; i < l->nworkers; i++)
        if (l->w[i].cur->len > 0)
            hand_over(l, &l->w[i], false);
    if (l->writer_started) {
        /* Release: the buffers queued above are visible to the writer's acquire load. */
        atomic_store_explicit(&l->stopping, true, memory_order_release);
        sem_post(&l->wake);
        pthread_join(l->writer, NULL);
    }
    fd = atomic_exchange_explicit(&l->pending_fd, -1, memory_order_acq_rel);
    if (fd != -1)
        close(fd);
    close(l->fd);
    for (int i = 0; i < l->nworkers; i++) {
        free_list(l->w[i].cur);
        free_list(l->w[i].q_head);
        free_list(l->w[i].free_list);
        pthread_mutex_destroy(&l->w[i].lock);
    }
    free(l->w);
    sem_destroy(&l->wake);
    free(l->path);
    xfree(lp);
}
