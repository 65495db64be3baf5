/* tests/unit/test_tls.c — session tickets across key rotations and certificate reloads, with
 * in-memory handshakes (memory BIOs) between a client SSL and a server SSL from proxy/tls.c.
 * Certificates are made with the openssl CLI in a temporary directory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "proxy/tls.h"
#include "tap.h"

static char dir[] = "/tmp/sy-test-tls-XXXXXX";

static int
make_cert(const char *name, const char *cn)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -nodes -days 2 -subj /CN=%s -addext subjectAltName=DNS:%s "
             "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout %s/%s.key -out %s/%s.crt "
             ">/dev/null 2>&1",
             cn, cn, dir, name, dir, name);
    return system(cmd) == 0 ? 0 : -1;
}

/* Moves what one side wrote to the other side's input. */
static void
pump(SSL *from, SSL *to)
{
    char buf[16384];
    int n;
    while ((n = BIO_read(SSL_get_wbio(from), buf, sizeof(buf))) > 0)
        BIO_write(SSL_get_rbio(to), buf, n);
}

static SSL *
memory_ssl(SSL *ssl)
{
    SSL_set_bio(ssl, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
    return ssl;
}

/* A clean close (close_notify both ways): OpenSSL marks the session of an SSL freed without
 * one as not resumable. */
static void
close_pair(SSL *c, SSL *s)
{
    SSL_shutdown(c);
    pump(c, s);
    SSL_shutdown(s);
    pump(s, c);
    SSL_shutdown(c);
    SSL_free(c);
    SSL_free(s);
}

struct result {
    bool ok;
    bool reused;
    char subject[128];
    SSL_SESSION *session; /* owned: the client's session after the exchange (new ticket) */
};

/* One connection: handshake, one byte from the server (which carries TLS 1.3 tickets), then the
 * client's session and what it saw. */
static struct result
connect_once(struct tls_ctx *t, SSL_CTX *cctx, SSL_SESSION *resume)
{
    struct result r = {0};
    SSL *s = memory_ssl(tls_new_ssl(t));
    SSL *c = memory_ssl(SSL_new(cctx));
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    SSL_set_tlsext_host_name(c, "a.example.test");
    if (resume)
        SSL_set_session(c, resume);
    for (int i = 0; i < 20 && !(SSL_is_init_finished(s) && SSL_is_init_finished(c)); i++) {
        SSL_do_handshake(c);
        pump(c, s);
        SSL_do_handshake(s);
        pump(s, c);
    }
    if (SSL_is_init_finished(s) && SSL_is_init_finished(c)) {
        char b = 0;
        SSL_write(s, "x", 1);
        pump(s, c);
        r.ok = SSL_read(c, &b, 1) == 1 && b == 'x';
        r.reused = SSL_session_reused(c);
        X509 *peer = SSL_get1_peer_certificate(c);
        if (peer) {
            X509_NAME_oneline(X509_get_subject_name(peer), r.subject, sizeof(r.subject));
            X509_free(peer);
        }
        r.session = SSL_get1_session(c);
    }
    ERR_clear_error();
    close_pair(c, s);
    return r;
}

static SSL_CTX *
client_ctx(int version)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, version);
    SSL_CTX_set_max_proto_version(ctx, version);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT);
    return ctx;
}

/* Every session is offered once: OpenSSL clients use a TLS 1.3 ticket only once. */
static void
test_rotation(struct tls_ctx *t, int version, const char *vname)
{
    SSL_CTX *cctx = client_ctx(version);
    struct result full1 = connect_once(t, cctx, NULL);
    struct result full2 = connect_once(t, cctx, NULL);
    ok(full1.ok && !full1.reused && full1.session && full2.ok && full2.session,
       "%s: full handshakes give sessions", vname);

    struct result r1 = connect_once(t, cctx, full1.session);
    ok(r1.ok && r1.reused, "%s: a ticket resumes under the same key", vname);

    ok(tls_rotate_ticket_keys() == 0, "%s: rotate once", vname);
    struct result r2 = connect_once(t, cctx, full2.session);
    ok(r2.ok && r2.reused, "%s: a ticket of the previous key still resumes", vname);
    ok(r2.session != NULL && r2.session != full2.session,
       "%s: ... and the client got a renewed ticket", vname);

    ok(tls_rotate_ticket_keys() == 0, "%s: rotate twice", vname);
    struct result r3 = connect_once(t, cctx, r1.session);
    ok(r3.ok && !r3.reused, "%s: a ticket two keys old is refused (full handshake, not an error)",
       vname);
    struct result r4 = connect_once(t, cctx, r2.session);
    ok(r4.ok && r4.reused, "%s: the ticket renewed after one rotation resumes", vname);

    struct result *all[] = {&full1, &full2, &r1, &r2, &r3, &r4};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        SSL_SESSION_free(all[i]->session);
    SSL_CTX_free(cctx);
}

static void
test_reload(struct tls_ctx *t, struct conf_listen_tls *cfg_b)
{
    SSL_CTX *cctx = client_ctx(TLS1_3_VERSION);
    struct result before = connect_once(t, cctx, NULL);
    ok(before.ok && strstr(before.subject, "a.example.test") != NULL,
       "before the reload the first certificate (%s)", before.subject);

    char err[512] = "";
    struct tls_certs *set = tls_certs_load(cfg_b, err, sizeof(err));
    ok(set != NULL, "the new certificate loads (%s)", err);
    /* A handshake under way when the set is replaced: its SSL keeps the old contexts. */
    SSL *s = memory_ssl(tls_new_ssl(t));
    tls_ctx_replace(t, &set);
    ok(set == NULL, "tls_ctx_replace takes the set");
    SSL *c = memory_ssl(SSL_new(cctx));
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    SSL_set_tlsext_host_name(c, "a.example.test");
    for (int i = 0; i < 20 && !(SSL_is_init_finished(s) && SSL_is_init_finished(c)); i++) {
        SSL_do_handshake(c);
        pump(c, s);
        SSL_do_handshake(s); /* runs the old set's SNI callback (ASan: no use after free) */
        pump(s, c);
    }
    char subject[128] = "";
    X509 *peer = SSL_get1_peer_certificate(c);
    if (peer) {
        X509_NAME_oneline(X509_get_subject_name(peer), subject, sizeof(subject));
        X509_free(peer);
    }
    ok(SSL_is_init_finished(c) && strstr(subject, "a.example.test") != NULL,
       "a handshake begun before the replacement finishes on the old certificate (%s)", subject);
    close_pair(c, s);

    struct result after = connect_once(t, cctx, NULL);
    ok(after.ok && strstr(after.subject, "b.example.test") != NULL,
       "new connections get the new certificate (%s)", after.subject);
    struct result resumed = connect_once(t, cctx, before.session);
    ok(resumed.ok && resumed.reused, "a ticket issued before the reload still resumes after it");
    SSL_SESSION_free(resumed.session);

    struct conf_cert missing = {.cert = "/nonexistent/x.crt", .key = "/nonexistent/x.key"};
    struct conf_listen_tls bad = {.certs = &missing, .ncerts = 1, .min_version = 0x0303};
    err[0] = '\0';
    set = tls_certs_load(&bad, err, sizeof(err));
    ok(set == NULL && strstr(err, "/nonexistent/x.crt") != NULL,
       "a missing certificate fails to load, naming the file (%s)", err);
    tls_certs_free(&set); /* accepts NULL */

    SSL_SESSION_free(before.session);
    SSL_SESSION_free(after.session);
    SSL_CTX_free(cctx);
}

int
main(void)
{
    if (mkdtemp(dir) == NULL || make_cert("a", "a.example.test") == -1 ||
        make_cert("b", "b.example.test") == -1) {
        printf("1..0 # SKIP cannot make certificates with the openssl CLI\n");
        return 0;
    }
    char acrt[256], akey[256], bcrt[256], bkey[256];
    snprintf(acrt, sizeof(acrt), "%s/a.crt", dir);
    snprintf(akey, sizeof(akey), "%s/a.key", dir);
    snprintf(bcrt, sizeof(bcrt), "%s/b.crt", dir);
    snprintf(bkey, sizeof(bkey), "%s/b.key", dir);
    struct conf_cert ca = {.cert = acrt, .key = akey};
    struct conf_cert cb = {.cert = bcrt, .key = bkey};
    struct conf_listen_tls cfg_a = {.certs = &ca, .ncerts = 1, .min_version = 0x0303};
    struct conf_listen_tls cfg_b = {.certs = &cb, .ncerts = 1, .min_version = 0x0303};

    char err[512] = "";
    struct tls_ctx *t = tls_ctx_create(&cfg_a, err, sizeof(err));
    ok(t != NULL, "a listener context (%s)", err);
    if (t) {
        test_rotation(t, TLS1_2_VERSION, "TLS 1.2");
        test_rotation(t, TLS1_3_VERSION, "TLS 1.3");
        test_reload(t, &cfg_b);
        tls_ctx_destroy(&t);
    }
    ok(t == NULL, "tls_ctx_destroy clears the pointer");

    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        diag("could not remove %s", dir);
    return done_testing();
}
