/* proxy/tls.c — OpenSSL 3 server contexts for TLS listeners, with SNI. */
#include "proxy/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "conf/xalloc.h"

/* Mozilla "intermediate" (v5.7/6.0) TLS 1.2 suites: ECDHE only, AEAD only. */
#define TLS12_CIPHERS                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS_GROUPS "X25519:P-256:P-384"
#define TLS_SESSION_ID "switchyard"
#define MAX_NAMES 32

/* One SSL_CTX and the names its certificates answer for. */
struct tls_entry {
    SSL_CTX *ctx;           /* owned */
    char *names[MAX_NAMES]; /* owned: DNS names (SAN, else CN), lower case */
    size_t nnames;
};

struct tls_ctx {
    struct tls_entry *entries; /* owned: nentries; [0] is the default */
    size_t nentries;
};

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
    struct tls_ctx *t = arg;
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
new_ctx(const struct conf_listen_tls *cfg, struct tls_ctx *t, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        openssl_error(err, errlen, "cannot create a TLS context", "tls");
        return NULL;
    }
    int min = cfg->min_version == 0x0304 ? TLS1_3_VERSION : TLS1_2_VERSION;
    SSL_CTX_set_min_proto_version(ctx, min);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
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
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, t);
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
add_cert(struct tls_ctx *t, const struct conf_listen_tls *cfg, const struct conf_cert *c, char *err,
         size_t errlen)
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
        e->ctx = new_ctx(cfg, t, err, errlen);
        if (e->ctx == NULL) {
            for (size_t i = 0; i < n; i++)
                free(names[i]);
            return -1;
        }
        memcpy(e->names, names, n * sizeof(*names));
        e->nnames = n;
        t->nentries++;
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

struct tls_ctx *
tls_ctx_create(const struct conf_listen_tls *cfg, char *err, size_t errlen)
{
    if (cfg->ncerts == 0) {
        snprintf(err, errlen, "tls: no certificate");
        return NULL;
    }
    struct tls_ctx *t = xcalloc(1, sizeof(*t));
    for (size_t i = 0; i < cfg->ncerts; i++) {
        if (add_cert(t, cfg, &cfg->certs[i], err, errlen) == -1) {
            tls_ctx_destroy(&t);
            return NULL;
        }
    }
    return t;
}

SSL *
tls_new_ssl(struct tls_ctx *t)
{
    return SSL_new(t->entries[0].ctx);
}

void
tls_ctx_destroy(struct tls_ctx **tp)
{
    struct tls_ctx *t = *tp;
    if (t == NULL)
        return;
    *tp = NULL;
    for (size_t i = 0; i < t->nentries; i++) {
        SSL_CTX_free(t->entries[i].ctx);
        for (size_t j = 0; j < t->entries[i].nnames; j++)
            free(t->entries[i].names[j]);
    }
    free(t->entries);
    free(t);
}
