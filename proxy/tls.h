/* proxy/tls.h — TLS termination on listeners (DESIGN §4): OpenSSL 3 server contexts built from
 * a listener's tls: section, with SNI choosing among its certificates. */
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

/* A new server SSL for an accepted connection (SNI switches its context during the
 * handshake). Any worker; OpenSSL contexts are safe to share between threads. */
SSL *tls_new_ssl(struct tls_ctx *t);

/* Frees the contexts and clears *t. Accepts NULL. */
void tls_ctx_destroy(struct tls_ctx **t);

#endif
