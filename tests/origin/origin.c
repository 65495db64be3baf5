/* tests/origin/origin.c — the test origin's main: options, the listening socket, signals.
 * One thread, one event_base; tests/origin/README.md is the contract. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tests/origin/conn.h"

/* How long accepting pauses when the process is out of file descriptors. */
#define ACCEPT_PAUSE_MS 100

static void
usage(FILE *f)
{
    fprintf(
        f, "usage: origin [--listen HOST:PORT|[V6]:PORT] [--pool NAME] [--name NAME]\n"
           "              [--health up|down] [--tls-cert FILE --tls-key FILE [--tls-max 1.2|1.3]]\n"
           "              [--quiet]\n");
}

/* "host:port" or "[v6]:port" → a bound-ready address. Returns 0 or -1 (message printed). */
static int
parse_listen(const char *spec, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[256];
    const char *port;
    size_t hl;

    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (close == NULL || close[1] != ':')
            goto bad;
        hl = (size_t)(close - spec - 1);
        memcpy(host, spec + 1, hl < sizeof(host) ? hl : 0);
        port = close + 2;
    } else {
        const char *colon = strrchr(spec, ':');
        if (colon == NULL)
            goto bad;
        hl = (size_t)(colon - spec);
        memcpy(host, spec, hl < sizeof(host) ? hl : 0);
        port = colon + 1;
    }
    if (hl == 0 || hl >= sizeof(host) || port[0] == '\0' || strlen(port) > 5 ||
        strspn(port, "0123456789") != strlen(port) || atoi(port) > 65535)
        goto bad;
    host[hl] = '\0';

    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "origin: --listen %s: %s\n", spec, gai_strerror(rc));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
bad:
    fprintf(stderr, "origin: --listen wants HOST:PORT or [V6]:PORT, got '%s'\n", spec);
    return -1;
}

static int
on_servername(SSL *ssl, int *alert, void *arg)
{
    return SSL_TLSEXT_ERR_OK; /* any name: acknowledged, and kept for conn_sni() */
}

/* The server context for --tls-cert/--tls-key: TLS 1.2 and 1.3, OpenSSL's default suites, a
 * peer's close without close_notify read as an ordinary EOF. NULL with a message printed. */
static SSL_CTX *
tls_context(const char *cert, const char *key, int max_version)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    const char *what = "cannot create a TLS context";
    const char *file = "";
    char buf[256] = "";

    if (ctx == NULL)
        goto fail;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, max_version);
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    what = "cannot load the certificate";
    file = cert;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        goto fail;
    what = "cannot load the key";
    file = key;
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        goto fail;
    what = "the key does not match the certificate";
    if (SSL_CTX_check_private_key(ctx) != 1)
        goto fail;
    return ctx;
fail : {
    unsigned long e = ERR_get_error();
    if (e != 0)
        ERR_error_string_n(e, buf, sizeof(buf));
}
    fprintf(stderr, "origin: %s%s%s%s%s\n", file, file[0] ? ": " : "", what, buf[0] ? ": " : "",
            buf);
    SSL_CTX_free(ctx);
    return NULL;
}

static void
on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    struct origin *o = arg;
    int one = 1;
    /* Small responses must not wait for Nagle; failure only costs latency. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    conn_create(o, fd);
}

static void
on_resume_accept(evutil_socket_t fd, short what, void *arg)
{
    evconnlistener_enable(arg);
}

static struct event *accept_pause;

static void
on_accept_error(struct evconnlistener *l, void *arg)
{
    struct origin *o = arg;
    int err = EVUTIL_SOCKET_ERROR();
    origin_log(o, "accept: %s", evutil_socket_error_to_string(err));
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
        evconnlistener_disable(l);
        evtimer_add(accept_pause, &tv);
    }
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
    event_base_loopbreak(arg);
}

int
main(int argc, char **argv)
{
    struct origin o = {.pool = "default", .name = "origin", .healthy = true};
    const char *listen_spec = "127.0.0.1:0";
    const char *tls_cert = NULL, *tls_key = NULL;
    int tls_max = TLS1_3_VERSION;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--quiet") == 0) {
            o.quiet = true;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (v == NULL) {
            usage(stderr);
            return 2;
        }
        if (strcmp(a, "--listen") == 0) {
            listen_spec = v;
        } else if (strcmp(a, "--pool") == 0) {
            o.pool = v;
        } else if (strcmp(a, "--name") == 0) {
            o.name = v;
        } else if (strcmp(a, "--tls-cert") == 0) {
            tls_cert = v;
        } else if (strcmp(a, "--tls-key") == 0) {
            tls_key = v;
        } else if (strcmp(a, "--tls-max") == 0 && strcmp(v, "1.2") == 0) {
            tls_max = TLS1_2_VERSION;
        } else if (strcmp(a, "--tls-max") == 0 && strcmp(v, "1.3") == 0) {
            tls_max = TLS1_3_VERSION;
        } else if (strcmp(a, "--health") == 0 && strcmp(v, "up") == 0) {
            o.healthy = true;
        } else if (strcmp(a, "--health") == 0 && strcmp(v, "down") == 0) {
            o.healthy = false;
        } else {
            usage(stderr);
            return 2;
        }
        i++;
    }

    if ((tls_cert == NULL) != (tls_key == NULL)) {
        fprintf(stderr, "origin: --tls-cert and --tls-key go together\n");
        return 2;
    }

    struct sockaddr_storage ss;
    socklen_t sslen;
    if (parse_listen(listen_spec, &ss, &sslen) == -1)
        return 2;
    if (tls_cert != NULL && (o.tls = tls_context(tls_cert, tls_key, tls_max)) == NULL)
        return 1;

    signal(SIGPIPE, SIG_IGN);
    o.base = event_base_new();
    if (o.base == NULL) {
        fprintf(stderr, "origin: event_base_new failed\n");
        SSL_CTX_free(o.tls);
        return 1;
    }
    struct evconnlistener *l = evconnlistener_new_bind(
        o.base, on_accept, &o, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
        1024, (struct sockaddr *)&ss, (int)sslen);
    if (l == NULL) {
        fprintf(stderr, "origin: cannot listen on %s: %s\n", listen_spec, strerror(errno));
        event_base_free(o.base);
        SSL_CTX_free(o.tls);
        return 1;
    }
    evconnlistener_set_error_cb(l, on_accept_error);
    /* Signals are caught before the listening line is printed: a test may stop us right after
     * reading it. */
    struct event *sigterm = evsignal_new(o.base, SIGTERM, on_signal, o.base);
    struct event *sigint = evsignal_new(o.base, SIGINT, on_signal, o.base);
    evsignal_add(sigterm, NULL);
    evsignal_add(sigint, NULL);
    accept_pause = evtimer_new(o.base, on_resume_accept, l);

    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);
    char host[NI_MAXHOST], port[NI_MAXSERV];
    if (getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&bound, &blen) == -1 ||
        getnameinfo((struct sockaddr *)&bound, blen, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        fprintf(stderr, "origin: cannot read the bound address: %s\n", strerror(errno));
        return 1;
    }
    const char *lb = bound.ss_family == AF_INET6 ? "[" : "";
    const char *rb = bound.ss_family == AF_INET6 ? "]" : "";
    printf("origin listening on %s%s%s:%s\n", lb, host, rb, port);
    fflush(stdout);

    origin_log(&o, "listening on %s%s%s:%s%s", lb, host, rb, port, o.tls ? " (TLS)" : "");

    event_base_dispatch(o.base);

    conn_close_all(&o);
    event_free(sigterm);
    event_free(sigint);
    event_free(accept_pause);
    evconnlistener_free(l);
    event_base_free(o.base);
    SSL_CTX_free(o.tls);
    libevent_global_shutdown();
    return 0;
}
