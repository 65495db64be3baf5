/* proxy/respframe.h — response framing: llhttp (strict) on an upstream's bytes, turning them into
 * a checked head (interim, final or 101), body pieces and the message end, with the HEAD / 1xx /
 * 204 / 304 / close-delimited rules. Pure: bytes in, calls out; no I/O, so it is unit-tested and
 * fuzzed as it is.
 *
 * The parser state between calls lives in the caller's llhttp_t (one per upstream connection) and
 * the head in the caller's http_head; a struct respframe is bound to both for the span of the
 * calls that feed them, so an exchange costs no allocation. */
#ifndef PROXY_RESPFRAME_H
#define PROXY_RESPFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

#include "proxy/http.h"

struct respframe;

/* What the owner does with a parsed response; f is the framing that calls (its status, body and
 * keepalive describe the response). head returns 0 to go on, or -1 to refuse the response
 * (framing then stops with RESPFRAME_ERROR, as for a malformed response). */
struct respframe_ops {
    void (*interim)(void *arg, const struct respframe *f);  /* a 1xx head other than 101 */
    int (*head)(void *arg, const struct respframe *f);      /* a final or 101 head */
    void (*body)(void *arg, const char *at, size_t len);    /* a piece of the de-chunked body */
    void (*complete)(void *arg, const struct respframe *f); /* the final response is complete */
};

/* How the upstream delimits the body of the current response. */
enum respframe_body {
    RESPFRAME_BODY_NONE = 0, /* HEAD request, 1xx, 204, 304 */
    RESPFRAME_BODY_LENGTH,   /* Content-Length (may be 0) */
    RESPFRAME_BODY_CHUNKED,  /* Transfer-Encoding ending in chunked */
    RESPFRAME_BODY_CLOSE,    /* up to the end of the connection */
};

/* What follows a head (on_headers_complete's result for llhttp). */
enum respframe_skip {
    RESPFRAME_SKIP_NONE = 0, /* a body as the head describes */
    RESPFRAME_SKIP_BODY,     /* no body: HEAD, 1xx, 204, 304 */
    RESPFRAME_SKIP_UPGRADE,  /* 101: the rest is another protocol */
};

enum respframe_result {
    RESPFRAME_OK = 0,  /* all bytes used; more may come */
    RESPFRAME_DONE,    /* the final response is complete; bytes after it are not its */
    RESPFRAME_UPGRADE, /* a 101 head is complete: the rest is another protocol */
    RESPFRAME_ERROR,   /* a bad response (f->error, llhttp_get_error_reason(f->parser)) */
};

struct respframe {
    llhttp_t *parser;                /* borrowed: the connection's parser (respframe_start) */
    struct http_head *head;          /* borrowed: where the head is collected */
    const struct respframe_ops *ops; /* borrowed */
    void *arg;
    bool head_request;    /* the request was HEAD: no body, whatever the head says */
    bool upgrade_request; /* the request asked for an upgrade: a 101 is acceptable */
    /* Set when a head is reported. */
    int status;
    enum respframe_body body;
    bool chunked;         /* the upstream sent Transfer-Encoding ending in chunked */
    bool keepalive;       /* set at complete: the upstream connection may carry another exchange */
    llhttp_errno_t error; /* after RESPFRAME_ERROR */
    /* The end of a chunked body is checked before it is reported (llhttp 8 takes a bare LF as
     * its last line). The byte before the final LF may have come in an earlier pass. */
    bool complete_deferred;
    /* The head is complete but not yet reported: its empty line is checked first (llhttp 8 takes
     * a bare LF there). head_skip is what llhttp does after it. */
    bool head_pending;
    enum respframe_skip head_skip;
    char *last_byte; /* borrowed: the last byte of the previous call, kept beside the parser */
};

/* Resets the parser for a new exchange on a connection. */
void respframe_start(llhttp_t *parser);

/* Binds f to a connection's parser and head for the calls that follow (sets parser->data; the
 * caller clears it with respframe_unbind before f goes out of scope). last_byte is one byte of
 * storage that lives beside the parser (the last byte a call took, for the next one). The request's
 * head_request / upgrade_request are set by the caller after this. */
void respframe_bind(struct respframe *f, llhttp_t *parser, char *last_byte, struct http_head *head,
                    const struct respframe_ops *ops, void *arg);

/* Clears parser->data, so that no pointer to f outlives it. */
void respframe_unbind(struct respframe *f);

/* Parses bytes. *used receives how many were consumed: after RESPFRAME_DONE or
 * RESPFRAME_UPGRADE the rest is not part of this response. After RESPFRAME_DONE or
 * RESPFRAME_ERROR nothing more may be fed (respframe_start begins the next exchange). */
enum respframe_result respframe_execute(struct respframe *f, const char *data, size_t len,
                                        size_t *used);

/* The upstream closed: completes a close-delimited body (ops->complete runs then). */
void respframe_eof(struct respframe *f);

#endif
