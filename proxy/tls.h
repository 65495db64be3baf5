/* proxy/tls.h — TLS (DESIGN §4): OpenSSL 3 server contexts built from a listener's tls: section,
 * with SNI choosing among its certificates, re-read on reload; client contexts for pools whose
 * servers speak TLS. */
#ifndef PROXY_TLS_H
#define PROXY_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "conf/conf.h"

struct tls_ctx;

/* Loads and checks every certificate and key of cfg (unreadable file, key not matching its
 * certificate, expired certificate → NULL with a message naming the file in err) and builds the
 * contexts: TLS 1.2 (or cfg->min_version) to 1.3, Mozilla "intermediate" TLS 1.2 suites (ECDHE
 * with AES-GCM or ChaCha20-Poly1305), groups X25519:P-256:P-384, no renegotiation, a server
 * session cache and tickets, ALPN http/1.1. Certificates with the same names (an RSA and an
 * ECDSA one) share a context. Main thread. */
struct tls_ctx *tls_ctx_create(const struct conf_listen_tls *cfg, char *err, size_t errlen);

/* One reading of a listener's certificates (the same checks as tls_ctx_create), for a reload
 * that must check everything before it changes anything. Main thread. */
struct tls_certs;
struct tls_certs *tls_certs_load(const struct conf_listen_tls *cfg, char *err, size_t errlen);
void tls_certs_free(struct tls_certs **set); /* accepts NULL */

/* Puts a freshly read set in place (takes it, clears *set): new connections get the new
 * certificates while connections and handshakes already under way keep theirs. Main thread. */
void tls_ctx_replace(struct tls_ctx *t, struct tls_certs **set);

/* Session tickets of every listener are sealed with one process-wide key that is replaced by a
 * new random one at each call; tickets sealed with the previous key are still accepted (and
 * renewed). The first context made creates the first key; the daemon calls this every
 * TLS_TICKET_ROTATE_MS. 0 ok, -1 when no random bytes could be had (the keys stay). */
#define TLS_TICKET_ROTATE_MS (60u * 60u * 1000u)
int tls_rotate_ticket_keys(void);

/* A new server SSL for an accepted connection (SNI switches its context during the
 * handshake). Any worker; OpenSSL contexts are safe to share between threads. */
SSL *tls_new_ssl(struct tls_ctx *t);

/* Frees the contexts and clears *t. Accepts NULL. */
void tls_ctx_destroy(struct tls_ctx **t);

/* A client context for a pool's upstream TLS: TLS 1.2–1.3, the same suites and groups, ALPN
 * http/1.1, certificate verification against cfg->ca (or the system store) when cfg->verify.
 * NULL with a message in err (an unreadable CA file). Main thread; shared by the workers. */
SSL_CTX *tls_client_ctx_create(const struct conf_upstream_tls *cfg, char *err, size_t errlen);

/* A client SSL for a connection to the server at addr: SNI and the verified name are cfg->sni,
 * or the server's IP address when there is none. *session (may be NULL) is offered for
 * resumption and replaced by the session the server sends; it belongs to one worker. */
SSL *tls_client_new_ssl(SSL_CTX *ctx, const struct conf_upstream_tls *cfg,
                        const struct conf_addr *addr, SSL_SESSION **session);

/* Why an upstream handshake failed, for the log: the verification error, else the OpenSSL
 * error e (bufferevent_get_openssl_error()), else a generic text. */
void tls_client_error(SSL *ssl, unsigned long e, char *buf, size_t len);

#endif
