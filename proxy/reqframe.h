/* proxy/reqframe.h — request framing: llhttp (strict) plus the checks switchyard adds, turning
 * client bytes into a checked head, body pieces and message ends. Pure: bytes in, calls out; no
 * I/O, so it is unit-tested and fuzzed as it is. */
#ifndef PROXY_REQFRAME_H
#define PROXY_REQFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

#include "proxy/http.h"

/* What the owner does with a parsed request. Each returns 0 to go on, or an HTTP status
 * (400..599) to reject the request: framing then stops with REQFRAME_ERROR and that status. */
struct reqframe_ops {
    int (*begin)(void *arg);                            /* first byte of a request */
    int (*head)(void *arg);                             /* head complete and checked */
    int (*body)(void *arg, const char *at, size_t len); /* a piece of the (de-chunked) body */
    void (*complete)(void *arg);                        /* the request is complete */
};

struct reqframe_limits {
    size_t max_header_bytes;
    uint32_t max_headers;
    size_t max_uri_bytes;
    uint64_t max_body_bytes; /* 0 = unlimited */
};

enum reqframe_result {
    REQFRAME_OK = 0, /* all bytes used; more may come */
    REQFRAME_PAUSED, /* a request is complete; call reqframe_resume() before the next */
    REQFRAME_ERROR,  /* reject with f->status and close */
};

struct reqframe {
    llhttp_t parser;
    struct http_head head;
    struct reqframe_limits limits;
    const struct reqframe_ops *ops; /* borrowed */
    void *arg;
    int status;  /* the status of a rejection */
    bool failed; /* a rejection happened: the connection is done */
    /* Set when the head is complete. */
    bool http10;
    bool head_method;
    bool upgrade;
    bool chunked;
    bool has_body;
    bool keepalive; /* the client asked to keep the connection */
    uint64_t body_bytes;
    /* obs-fold detection: llhttp 8 unfolds silently, so a second piece of one value that does
     * not start a new buffer is a fold. */
    const char *buf_start;
    const char *buf_end;
    bool in_value;
    bool value_at_end;
    bool tail_fold;       /* the previous buffer ended with LF and optional blanks */
    bool value_piece;     /* a value piece was reported from the current buffer */
    bool in_head;         /* between message begin and head complete */
    bool counting;        /* the target has started: raw head bytes count */
    int64_t head_bytes;   /* raw head bytes before the current buffer (from the target on) */
    bool upgrade_pending; /* llhttp will report the upgrade pause after a resume */
    /* Request-line shape (llhttp 8 lets through what RFC 9112 §3 warns can be smuggled: more
     * than one SP between the parts, a bare LF after the version): stream offsets of the parts
     * of the current request line, counted from the first byte reqframe_execute ever saw. */
    uint64_t consumed;    /* stream offset of buf_start */
    uint64_t method_end;  /* one past the method */
    uint64_t url_end;     /* one past the target */
    uint64_t version_end; /* one past the version digits */
    bool version_seen;    /* a piece of the version was reported */
    bool cr_pending;      /* the version ended a buffer: the next byte must be CR */
    /* The end of a chunked message is checked before it is reported (llhttp 8 takes a bare LF
     * as its last line: "0\r\n\n"): the byte before the final LF may be the last one of the
     * previous buffer. */
    bool complete_deferred;
    /* The head is complete but not yet reported: its empty line is checked first (llhttp 8
     * takes a bare LF there). */
    bool head_pending;
    char last_byte; /* the last byte reqframe_execute consumed before this call */
};

/* Sets up f (allocates nothing until bytes come). */
void reqframe_init(struct reqframe *f, const struct reqframe_ops *ops, void *arg);

/* Sets the limits for the next request (call from ops->begin to apply a reloaded config). */
void reqframe_set_limits(struct reqframe *f, const struct reqframe_limits *limits);

/* Parses bytes. *used receives how many were consumed (the rest stays for later: after
 * REQFRAME_PAUSED they belong to the next request, or after an upgrade to the tunnel). */
enum reqframe_result reqframe_execute(struct reqframe *f, const char *data, size_t len,
                                      size_t *used);

/* Prepares for the next request after REQFRAME_PAUSED (clears the head). */
void reqframe_resume(struct reqframe *f);

/* Frees what f holds. */
void reqframe_finish(struct reqframe *f);

/* The method name of the current request. */
const char *reqframe_method(const struct reqframe *f);

#endif
