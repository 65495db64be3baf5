/* proxy/accesslog.h — the access log of DESIGN §7: one JSON object per line, formatted by each
 * worker into its own buffer and written by one writer thread, so no worker ever waits on disk. */
#ifndef PROXY_ACCESSLOG_H
#define PROXY_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct accesslog;

/* Each worker fills buffers of this size; a line never spans two. */
#define ACCESSLOG_BUF_BYTES (64 * 1024)
/* Full buffers a worker may have waiting for (or being written by) the writer before its new
 * lines are dropped (accesslog_set_max_queued() changes it). */
#define ACCESSLOG_MAX_QUEUED 16
/* Bytes of a target that are logged; the rest is cut (the line stays valid JSON). */
#define ACCESSLOG_MAX_TARGET 2048

/* One request, as the worker knows it when the response is done. Every pointer is borrowed for
 * the call only; strings are bytes with a length (no NUL needed) unless said otherwise. */
struct accesslog_entry {
    uint64_t time_ms;              /* wall clock (Unix ms) for "time"; 0 = now */
    const struct sockaddr *client; /* AF_INET or AF_INET6 (port not logged); NULL = null */
    const char *method;            /* NULL = null; cut at 64 bytes */
    size_t method_len;
    const char *target; /* NULL = null; cut at ACCESSLOG_MAX_TARGET bytes */
    size_t target_len;
    int status;             /* the status sent to the client */
    uint64_t bytes_in;      /* bytes read from the client for this request */
    uint64_t bytes_out;     /* bytes written to the client for this request */
    uint64_t duration_us;   /* logged as duration_ms with 3 decimals */
    const char *pool;       /* NUL-terminated; NULL = null (no pool chosen) */
    const char *server;     /* NUL-terminated; NULL = null (no server) */
    const char *request_id; /* NULL = null; cut at 256 bytes */
    size_t request_id_len;
    uint64_t generation; /* the routing generation the request was routed with */
    int32_t bucket;      /* 0..9999, or -1 = null (no bucket) */
};

/* Opens (O_APPEND|O_CREAT, 0640) the file at path and starts the writer thread (with every
 * signal blocked, so the main thread keeps receiving them) for workers 0..nworkers-1. Returns
 * the log, or NULL with a message in err (errlen bytes). Main thread. */
struct accesslog *accesslog_open(const char *path, int nworkers, char *err, size_t errlen);

/* Sets how many full buffers per worker may wait for the writer (default
 * ACCESSLOG_MAX_QUEUED, at least 1). Main thread, before the first write. */
void accesslog_set_max_queued(struct accesslog *l, unsigned nbuffers);

/* Formats one line into worker's buffer; a full buffer goes to the writer. Never blocks on the
 * writer or the disk: when the writer is behind by the maximum of buffers, the line is dropped
 * and counted. l may be NULL (no access log: nothing happens). Only worker's own thread. */
void accesslog_write(struct accesslog *l, int worker, const struct accesslog_entry *e);

/* Hands worker's partly filled buffer to the writer (workers call it from a 1 s timer, and
 * when they stop). Never blocks; if the writer is behind, the buffer stays and goes later.
 * l may be NULL. Only worker's own thread. */
void accesslog_flush(struct accesslog *l, int worker);

/* Reopens the path (SIGUSR1, after a rotation): the new file is opened here, and the writer
 * switches to it before its next write (lines formatted after this call land in the new
 * file). Returns 0, or -1 with errno when the file cannot be opened (the old one stays).
 * Main thread. */
int accesslog_reopen(struct accesslog *l);

/* Lines dropped so far (writer behind, or a write error). Any thread. */
uint64_t accesslog_dropped(const struct accesslog *l);

/* Writes every buffered line (partial buffers included), stops the writer, closes the file,
 * frees everything and clears *l. The workers must have stopped writing (joined). Accepts NULL
 * and *l == NULL. Main thread. */
void accesslog_close(struct accesslog **l);

/* Formats e as one JSON line with its "\n" into out (at least ACCESSLOG_LINE_MAX bytes) and
 * returns its length; now_ms stands in for e->time_ms == 0. Pure (for tests and the
 * writer-less path). */
#define ACCESSLOG_LINE_MAX (6 * (ACCESSLOG_MAX_TARGET + 64 + 256 + 256 + 256) + 512)
size_t accesslog_format(char *out, const struct accesslog_entry *e, uint64_t now_ms);

#endif
