/* proxy/tls.c — OpenSSL 3 contexts: listeners (SNI, reload, rotating ticket keys) and upstream
 * clients (verification, per-worker session resumption). */
#include "proxy/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>
#include <pthread.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "conf/xalloc.h"
#include "proxy/log.h"

/* Mozilla "intermediate" (v5.7/6.0) TLS 1.2 suites: ECDHE only, AEAD only. */
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS_GROUPS "X25519:P-256:P-384"
#define TLS_SESSION_ID "switchyard"
#define MAX_NAMES 32
#define TLS_EXPIRY_WARN_DAYS 30 /* an expiring certificate is a warning this long before */

/* One SSL_CTX and the names its certificates answer for. */
struct tls_entry {
    SSL_CTX *ctx;           /* ref ([0]: see struct tls_certs) */
    char *names[MAX_NAMES]; /* owned: DNS names (SAN, else CN), lower case */
    size_t nnames;
};

/* The contexts made from one reading of a listener's certificates. The set hangs off its default
 * context (entries[0].ctx) as ex_data and is freed with it: every connection's SSL holds a
 * reference on the context it started with, so a set replaced by a reload lives exactly as long
 * as the last handshake or connection that may still look at it (its SNI callback reads it). */
struct tls_certs {
    struct tls_entry *entries; /* owned: nentries; [0] is the default */
    size_t nentries;
};

/* A listener's handle: the current certificate set, replaced whole by a reload. */
struct tls_ctx {
    pthread_mutex_t mu; /* guards cur against a reload while a worker makes an SSL */
    SSL_CTX *cur;       /* ref: the default context of the current set */
};

static int certs_index = -1;   /* SSL_CTX ex_data slot of struct tls_certs */
static int session_index = -1; /* SSL ex_data slot: where an upstream SSL stores its session */
static pthread_once_t index_once = PTHREAD_ONCE_INIT;

static void
certs_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    struct tls_certs *set = ptr;
    if (set == NULL)
        return;
    for (size_t i = 0; i < set->nentries; i++) {
        if (i > 0) /* [0] is the context being freed */
            SSL_CTX_free(set->entries[i].ctx);
        for (size_t j = 0; j < set->entries[i].nnames; j++)
            free(set->entries[i].names[j]);
    }
    free(set->entries);
    free(set);
}

static void
index_init(void)
{
    certs_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, certs_free);
    session_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* --- session ticket keys ---
 * One ring for the whole process, so a ticket stays valid across reloads (which rebuild the
 * contexts) and across the contexts of one listener. Tickets are sealed with the current key;
 * the previous one still opens them (and the ticket is renewed), so keys rotate every
 * TLS_TICKET_ROTATE_MS and a ticket lives between one and two rotations, well beyond the session
 * lifetime OpenSSL gives it (5 minutes). */
#define TICKET_KEYS 2

struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
};

static pthread_mutex_t keys_mu = PTHREAD_MUTEX_INITIALIZER;
static struct ticket_key keys[TICKET_KEYS]; /* [0] current, [1] previous */
static size_t nkeys;

int
tls_rotate_ticket_keys(void)
{
    struct ticket_key k;
    if (RAND_bytes(k.name, sizeof(k.name)) != 1 || RAND_bytes(k.aes, sizeof(k.aes)) != 1 ||
        RAND_bytes(k.hmac, sizeof(k.hmac)) != 1)
        return -1;
    pthread_mutex_lock(&keys_mu);
    memmove(&keys[1], &keys[0], (TICKET_KEYS - 1) * sizeof(keys[0]));
    keys[0] = k;
    if (nkeys < TICKET_KEYS)
        nkeys++;
    pthread_mutex_unlock(&keys_mu);
    OPENSSL_cleanse(&k, sizeof(k));
    return 0;
}

static int
ticket_mac_init(EVP_MAC_CTX *hctx, unsigned char *key)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key, 32),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "sha256", 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_CTX_set_params(hctx, params) == 1 ? 0 : -1;
}

/* OpenSSL's ticket key callback: enc 1 seals a new ticket with the current key; enc 0 finds the
 * key a ticket names (0: unknown, full handshake; 1: current; 2: previous, renew it). */
static int
on_ticket_key(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
              EVP_MAC_CTX *hctx, int enc)
{
    int r = 0;
    pthread_mutex_lock(&keys_mu);
    if (enc) {
        if (nkeys > 0 && RAND_bytes(iv, 16) == 1) {
            memcpy(name, keys[0].name, 16);
            if (EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, keys[0].aes, iv) == 1 &&
                ticket_mac_init(hctx, keys[0].hmac) == 0)
                r = 1;
            else
                r = -1;
        } else {
            r = -1;
        }
    } else {
        for (size_t i = 0; i < nkeys; i++) {
            if (memcmp(name, keys[i].name, 16) != 0)
                continue;
            if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, keys[i].aes, iv) == 1 &&
                ticket_mac_init(hctx, keys[i].hmac) == 0)
                r = i == 0 ? 1 : 2;
            else
                r = -1;
            break;
        }
    }
    pthread_mutex_unlock(&keys_mu);
    return r;
}

static void
openssl_error(char *err, size_t errlen, const char *what, const char *path)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    snprintf(err, errlen, "%s: %s%s%s", path, what, buf[0] ? ": " : "", buf);
}

static int
alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
            unsigned int inlen, void *arg)
{
    static const unsigned char http11[] = "\x08http/1.1";
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, http11, sizeof(http11) - 1, in, inlen) ==
        OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK; /* go on without ALPN: we speak HTTP/1.1 only */
}

/* Whether name matches pattern: exactly, or "*.rest" against one leading label. */
static bool
name_matches(const char *pattern, const char *name, bool wildcard)
{
    if (!wildcard)
        return strcasecmp(pattern, name) == 0;
    if (strncmp(pattern, "*.", 2) != 0)
        return false;
    const char *dot = strchr(name, '.');
    return dot && dot != name && strcasecmp(pattern + 1, dot) == 0;
}

static int
on_servername(SSL *ssl, int *alert, void *arg)
{
    struct tls_certs *t = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name == NULL || t->nentries < 2)
        return SSL_TLSEXT_ERR_OK;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < t->nentries; i++) {
            for (size_t j = 0; j < t->entries[i].nnames; j++) {
                if (name_matches(t->entries[i].names[j], name, pass == 1)) {
                    if (i != 0)
                        SSL_set_SSL_CTX(ssl, t->entries[i].ctx);
                    return SSL_TLSEXT_ERR_OK;
                }
            }
        }
    }
    return SSL_TLSEXT_ERR_OK; /* no match: the default certificate */
}

static SSL_CTX *
new_ctx(const struct conf_listen_tls *cfg, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        openssl_error(err, errlen, "cannot create a TLS context", "tls");
        return NULL;
    }
    int min = cfg->min_version == 0x0304 ? TLS1_3_VERSION : TLS1_2_VERSION;
    SSL_CTX_set_min_proto_version(ctx, min);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    /* The server's order (strongest first), as HAProxy does; ChaCha20 first for a client that
     * prefers it (one without AES hardware). testssl rates the client's order HIGH. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA);
    if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1 ||
        SSL_CTX_set1_groups_list(ctx, TLS_GROUPS) != 1) {
        openssl_error(err, errlen, "cannot set the cipher suites or groups", "tls");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)TLS_SESSION_ID,
                                   sizeof(TLS_SESSION_ID) - 1);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key);
    return ctx;
}

/* The DNS names of a certificate: its SAN entries, else its CN. */
static size_t
cert_names(X509 *x, char **names, size_t max)
{
    size_t n = 0;
    GENERAL_NAMES *san = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; san && i < sk_GENERAL_NAME_num(san) && n < max; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(san, i);
        if (g->type != GEN_DNS)
            continue;
        const unsigned char *d = ASN1_STRING_get0_data(g->d.dNSName);
        int len = ASN1_STRING_length(g->d.dNSName);
        names[n++] = xstrndup((const char *)d, (size_t)len);
    }
    GENERAL_NAMES_free(san);
    if (n == 0) {
        char cn[256];
        if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn)) > 0)
            names[n++] = xstrdup(cn);
    }
    return n;
}

static bool
same_names(const struct tls_entry *e, char **names, size_t n)
{
    if (e->nnames != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(e->names[i], names[i]) != 0)
            return false;
    return true;
}

/* Adds one certificate and key: to the entry with the same names (RSA beside ECDSA) or to a
 * new one. */
static int
add_cert(struct tls_certs *t, const struct conf_listen_tls *cfg, const struct conf_cert *c,
         char *err, size_t errlen)
{
    FILE *f = fopen(c->cert, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot read the certificate", c->cert);
        return -1;
    }
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (x == NULL) {
        openssl_error(err, errlen, "not a PEM certificate", c->cert);
        return -1;
    }
    if (X509_cmp_current_time(X509_get0_notAfter(x)) < 0) {
        snprintf(err, errlen, "%s: the certificate has expired", c->cert);
        X509_free(x);
        return -1;
    }
    int days = 0, secs = 0;
    if (ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)) == 1 &&
        days < TLS_EXPIRY_WARN_DAYS)
        log_warn("%s: the certificate expires in %d day%s", c->cert, days, days == 1 ? "" : "s");
    char *names[MAX_NAMES];
    size_t n = cert_names(x, names, MAX_NAMES);
    X509_free(x);
    struct tls_entry *e = NULL;
    for (size_t i = 0; i < t->nentries; i++)
        if (same_names(&t->entries[i], names, n))
            e = &t->entries[i];
    if (e) {
        for (size_t i = 0; i < n; i++)
            free(names[i]);
    } else {
        t->entries = xrealloc(t->entries, (t->nentries + 1) * sizeof(*t->entries));
        e = &t->entries[t->nentries];
        memset(e, 0, sizeof(*e));
        e->ctx = new_ctx(cfg, err, errlen);
        if (e->ctx == NULL) {
            for (size_t i = 0; i < n; i++)
                free(names[i]);
            return -1;
        }
        memcpy(e->names, names, n * sizeof(*names));
        e->nnames = n;
        t->nentries++;
        if (t->nentries == 1) {
            /* The default context owns the set from now on (certs_free). */
            SSL_CTX_set_ex_data(e->ctx, certs_index, t);
            SSL_CTX_set_tlsext_servername_callback(e->ctx, on_servername);
            SSL_CTX_set_tlsext_servername_arg(e->ctx, t);
        }
    }
    if (SSL_CTX_use_certificate_chain_file(e->ctx, c->cert) != 1) {
        openssl_error(err, errlen, "cannot load the certificate", c->cert);
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(e->ctx, c->key, SSL_FILETYPE_PEM) != 1) {
        openssl_error(err, errlen, "cannot load the key", c->key);
        return -1;
    }
    if (SSL_CTX_check_private_key(e->ctx) != 1) {
        snprintf(err, errlen, "%s: the key does not match the certificate %s", c->key, c->cert);
        ERR_clear_error();
        return -1;
    }
    return 0;
}

struct tls_certs *
tls_certs_load(const struct conf_listen_tls *cfg, char *err, size_t errlen)
{
    pthread_once(&index_once, index_init);
    if (cfg->ncerts == 0) {
        snprintf(err, errlen, "tls: no certificate");
        return NULL;
    }
    pthread_mutex_lock(&keys_mu);
    bool need_keys = nkeys == 0;
    pthread_mutex_unlock(&keys_mu);
    if (need_keys && tls_rotate_ticket_keys() == -1) {
        snprintf(err, errlen, "tls: cannot make session ticket keys");
        return NULL;
    }
    struct tls_certs *t = xcalloc(1, sizeof(*t));
    for (size_t i = 0; i < cfg->ncerts; i++) {
        if (add_cert(t, cfg, &cfg->certs[i], err, errlen) == -1) {
            tls_certs_free(&t);
            return NULL;
        }
    }
    return t;
}

void
tls_certs_free(struct tls_certs **tp)
{
    struct tls_certs *t = *tp;
    if (t == NULL)
        return;
    *tp = NULL;
    if (t->nentries > 0) {
        SSL_CTX_free(t->entries[0].ctx); /* frees the set too (certs_free) */
    } else {
        free(t->entries);
        free(t);
    }
}

struct tls_ctx *
tls_ctx_create(const struct conf_listen_tls *cfg, char *err, size_t errlen)
{
    struct tls_certs *set = tls_certs_load(cfg, err, errlen);
    if (set == NULL)
        return NULL;
    struct tls_ctx *t = xcalloc(1, sizeof(*t));
    pthread_mutex_init(&t->mu, NULL);
    t->cur = set->entries[0].ctx; /* the set's reference moves to the handle */
    return t;
}

void
tls_ctx_replace(struct tls_ctx *t, struct tls_certs **setp)
{
    struct tls_certs *set = *setp;
    *setp = NULL;
    pthread_mutex_lock(&t->mu);
    SSL_CTX *old = t->cur;
    t->cur = set->entries[0].ctx;
    pthread_mutex_unlock(&t->mu);
    SSL_CTX_free(old); /* connections and handshakes that started on it keep it alive */
}

SSL *
tls_new_ssl(struct tls_ctx *t)
{
    pthread_mutex_lock(&t->mu);
    SSL *ssl = SSL_new(t->cur);
    pthread_mutex_unlock(&t->mu);
    return ssl;
}

void
tls_ctx_destroy(struct tls_ctx **tp)
{
    struct tls_ctx *t = *tp;
    if (t == NULL)
        return;
    *tp = NULL;
    SSL_CTX_free(t->cur);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

/* --- upstream TLS --- */

/* A new session from an upstream server (TLS 1.3 sends it after the handshake): kept in the
 * slot the connection was made for, for the next connection to resume. */
static int
on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    SSL_SESSION **slot = SSL_get_ex_data(ssl, session_index);
    if (slot == NULL)
        return 0;
    SSL_SESSION_free(*slot);
    *slot = sess;
    return 1; /* we keep the reference */
}

SSL_CTX *
tls_client_ctx_create(const struct conf_upstream_tls *cfg, char *err, size_t errlen)
{
    pthread_once(&index_once, index_init);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        openssl_error(err, errlen, "cannot create a TLS context", "tls");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    static const unsigned char http11[] = "\x08http/1.1";
    if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1 ||
        SSL_CTX_set1_groups_list(ctx, TLS_GROUPS) != 1 ||
        SSL_CTX_set_alpn_protos(ctx, http11, sizeof(http11) - 1) != 0) {
        openssl_error(err, errlen, "cannot set the cipher suites or groups", "tls");
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (cfg->ca) {
        if (SSL_CTX_load_verify_locations(ctx, cfg->ca, NULL) != 1) {
            openssl_error(err, errlen, "cannot load the CA certificates", cfg->ca);
            SSL_CTX_free(ctx);
            return NULL;
        }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        openssl_error(err, errlen, "cannot load the system CA store", "tls");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, cfg->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    return ctx;
}

SSL *
tls_client_new_ssl(SSL_CTX *ctx, const struct conf_upstream_tls *cfg, const struct conf_addr *addr,
                   SSL_SESSION **session)
{
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL)
        return NULL;
    bool ok = true;
    if (cfg->sni) {
        ok = SSL_set_tlsext_host_name(ssl, cfg->sni) == 1 && SSL_set1_host(ssl, cfg->sni) == 1;
    } else {
        /* No name: the certificate must name the server's address. */
        char ip[INET6_ADDRSTRLEN] = "";
        const void *a = addr->ss.ss_family == AF_INET6
                            ? (const void *)&((const struct sockaddr_in6 *)&addr->ss)->sin6_addr
                            : (const void *)&((const struct sockaddr_in *)&addr->ss)->sin_addr;
        ok = inet_ntop(addr->ss.ss_family, a, ip, sizeof(ip)) != NULL &&
             X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), ip) == 1;
    }
    if (!ok) {
        ERR_clear_error();
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_ex_data(ssl, session_index, session);
    if (session && *session)
        SSL_set_session(ssl, *session);
    return ssl;
}

void
tls_client_error(SSL *ssl, unsigned long e, char *buf, size_t len)
{
    long v = SSL_get_verify_result(ssl);
    if (v != X509_V_OK) {
        snprintf(buf, len, "certificate verify failed: %s", X509_verify_cert_error_string(v));
    } else if (e) {
        char ebuf[256];
        ERR_error_string_n(e, ebuf, sizeof(ebuf));
        snprintf(buf, len, "TLS: %s", ebuf);
    } else {
        snprintf(buf, len, "TLS handshake failed");
    }
    ERR_clear_error();
}
