/* control/yardctl_api.c — one control API request with libcurl (unix socket or TCP), the JSON
 * envelope, and the mapping of every failure to one readable line and an exit code. */
#include "control/yardctl_api.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "conf/xalloc.h"

/* The biggest answer we keep: /metrics of a large fleet is a few MiB. */
#define MAX_ANSWER_BYTES (64u << 20)
#define CONNECT_TIMEOUT_MS 5000L

struct sink {
    char *buf; /* owned */
    size_t len;
    size_t cap;
    bool too_big;
};

static size_t
on_data(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct sink *s = arg;
    size_t n = size * nmemb;

    if (n > MAX_ANSWER_BYTES - s->len) {
        s->too_big = true;
        return 0; /* CURLE_WRITE_ERROR */
    }
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n + 1)
            cap *= 2;
        s->buf = xrealloc(s->buf, cap);
        s->cap = cap;
    }
    memcpy(s->buf + s->len, ptr, n);
    s->len += n;
    s->buf[s->len] = '\0';
    return n;
}

/* Abandons the transfer once *stop is set (curl calls this at least once a second). */
static int
on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    const volatile sig_atomic_t *stop = arg;
    return *stop ? 1 : 0;
}

void
yardctl_error_set(struct yardctl_error *err, enum yardctl_exit exit_code, const char *code,
                  const char *fmt, ...)
{
    va_list ap;

    json_decref(err->object);
    err->exit_code = exit_code;
    snprintf(err->code, sizeof err->code, "%s", code);
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    err->object = json_pack("{s:s, s:s}", "code", err->code, "message", err->message);
}

void
yardctl_error_finish(struct yardctl_error *err)
{
    json_decref(err->object);
    err->object = NULL;
    err->code[0] = '\0';
    err->message[0] = '\0';
    err->exit_code = YARDCTL_OK;
}

void
yardctl_reply_finish(struct yardctl_reply *r)
{
    xfree(&r->body);
    r->len = 0;
    json_decref(r->envelope);
    r->envelope = NULL;
    r->data = NULL;
    r->status = 0;
    r->generation = -1;
}

int
yardctl_api_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

void
yardctl_api_cleanup(void)
{
    curl_global_cleanup();
}

/* Copies src into dst (size n), control characters as spaces and no trailing space: a server's
 * text stays one line. */
static void
one_line(char *dst, size_t n, const char *src)
{
    size_t i = 0;

    for (; src != NULL && src[i] != '\0' && i + 1 < n; i++)
        dst[i] = iscntrl((unsigned char)src[i]) ? ' ' : src[i];
    while (i > 0 && dst[i - 1] == ' ')
        i--;
    if (n > 0)
        dst[i] = '\0';
}

/* "connection refused": strerror with a lower-case first letter, as it reads mid-sentence. */
static void
errno_text(char *dst, size_t n, int e)
{
    one_line(dst, n, strerror(e));
    if (dst[0] != '\0' && dst[1] != '\0' && !isupper((unsigned char)dst[1]))
        dst[0] = (char)tolower((unsigned char)dst[0]);
}

/* The one line for a transfer that brought back nothing usable. */
static void
transport_error(const struct yardctl_target *t, CURLcode rc, long os_errno, const char *errbuf,
                long timeout_ms, struct yardctl_error *err)
{
    const char *where = t->url ? t->url : t->socket_path;
    const char *hint = t->url ? "(is the proxy running? --url)"
                              : "(is the proxy running? --socket / SWITCHYARD_SOCKET)";
    char why[256];

    if (rc == CURLE_ABORTED_BY_CALLBACK) {
        yardctl_error_set(err, YARDCTL_OK, "interrupted", "interrupted");
        return;
    }
    if (rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL) {
        yardctl_error_set(err, YARDCTL_USAGE, "usage", "bad --url %s: %s", where,
                          errbuf[0] ? errbuf : curl_easy_strerror(rc));
        return;
    }
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
        if (os_errno != 0)
            errno_text(why, sizeof why, (int)os_errno);
        else
            one_line(why, sizeof why, errbuf[0] ? errbuf : curl_easy_strerror(rc));
        if (os_errno == EACCES || os_errno == EPERM)
            hint = t->url ? "" : "(check the socket's permissions)";
        break;
    case CURLE_OPERATION_TIMEDOUT:
        snprintf(why, sizeof why, "no answer within %.1f s", (double)timeout_ms / 1000.0);
        break;
    case CURLE_COULDNT_RESOLVE_HOST:
        snprintf(why, sizeof why, "cannot resolve the host name");
        hint = "(check --url)";
        break;
    case CURLE_GOT_NOTHING:
        snprintf(why, sizeof why, "the connection closed without an answer");
        if (t->url != NULL && strncmp(t->url, "http://", 7) == 0)
            hint = "(a TLS listener? then https:// in --url)";
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
        /* "SSL certificate problem: self-signed certificate", "...: unable to get local issuer
         * certificate", "SSL: no alternative certificate subject name matches ..." */
        one_line(why, sizeof why, errbuf[0] ? errbuf : curl_easy_strerror(rc));
        hint = t->cacert ? "(the certificate does not verify against --cacert for this host)"
                         : "(not trusted by the system store: pass its CA with --cacert)";
        break;
    case CURLE_SSL_CACERT_BADFILE:
        one_line(why, sizeof why, errbuf[0] ? errbuf : curl_easy_strerror(rc));
        hint = "(check --cacert: PEM certificates)";
        break;
    case CURLE_SSL_CONNECT_ERROR:
        snprintf(why, sizeof why, "TLS handshake failed: ");
        one_line(why + strlen(why), sizeof why - strlen(why),
                 errbuf[0] ? errbuf : curl_easy_strerror(rc));
        hint = "(a plain HTTP listener? then http:// in --url)";
        break;
    case CURLE_WRITE_ERROR:
        snprintf(why, sizeof why, "the answer is larger than %u MiB", MAX_ANSWER_BYTES >> 20);
        hint = "";
        break;
    default:
        one_line(why, sizeof why, errbuf[0] ? errbuf : curl_easy_strerror(rc));
        break;
    }
    yardctl_error_set(err, YARDCTL_UNREACHABLE, "unreachable",
                      "cannot reach switchyard at %s: %s%s%s", where, why, hint[0] ? " " : "",
                      hint);
}

/* The URL to ask: the TCP base without its trailing slashes, or a fixed host for the socket. */
static char *
make_url(const struct yardctl_target *t, const char *path)
{
    const char *base = t->url ? t->url : "http://localhost";
    size_t blen = strlen(base);
    char *url;

    while (blen > 0 && base[blen - 1] == '/')
        blen--;
    url = xmalloc(blen + strlen(path) + 1);
    memcpy(url, base, blen);
    strcpy(url + blen, path);
    return url;
}

int
yardctl_api_raw(const struct yardctl_target *t, const char *method, const char *path,
                const json_t *body, long timeout_ms, struct yardctl_reply *r,
                struct yardctl_error *err)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    struct sink sink = {0};
    struct curl_slist *headers = NULL;
    char *url = make_url(t, path);
    char *payload = NULL;
    char *auth = NULL;
    long os_errno = 0;
    CURLcode rc;
    CURL *h;
    int ret = -1;

    yardctl_reply_finish(r);
    h = curl_easy_init();
    if (h == NULL) {
        yardctl_error_set(err, YARDCTL_UNREACHABLE, "unreachable", "cannot set up libcurl");
        goto fail;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    if (t->url == NULL)
        curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, t->socket_path);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    /* https://: the certificate is verified (libcurl's default) against the system store, or
     * --cacert; TLS 1.2 at least, as the proxy's own listeners. */
    curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    if (t->cacert != NULL)
        curl_easy_setopt(h, CURLOPT_CAINFO, t->cacert);
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "yardctl/" SWITCHYARD_VERSION);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
    if (t->stop != NULL) {
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
        /* The callback only reads the flag; curl hands the pointer back untouched. */
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)(uintptr_t)t->stop);
    }
    headers = curl_slist_append(headers, "Accept: application/json");
    headers = curl_slist_append(headers, "Expect:");
    if (t->token != NULL) {
        size_t n = strlen("Authorization: Bearer ") + strlen(t->token) + 1;
        auth = xmalloc(n);
        snprintf(auth, n, "Authorization: Bearer %s", t->token);
        headers = curl_slist_append(headers, auth);
    }
    if (strcmp(method, "GET") != 0) {
        payload = body ? json_dumps(body, YARDCTL_JSON_FLAGS) : xstrdup("{}");
        headers = curl_slist_append(headers, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);

    rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
    if (rc == CURLE_WRITE_ERROR && !sink.too_big)
        rc = CURLE_RECV_ERROR;
    if (rc != CURLE_OK) {
        transport_error(t, rc, os_errno, errbuf, timeout_ms, err);
        goto fail;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    r->body = sink.buf ? sink.buf : xstrdup("");
    r->len = sink.len;
    sink.buf = NULL;
    ret = 0;
fail:
    xfree(&sink.buf);
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
    xfree(&url);
    xfree(&auth);
    free(payload); /* json_dumps() or xstrdup(): both malloc() */
    return ret;
}

void
yardctl_api_error_from(long status, const json_t *error, struct yardctl_error *err)
{
    const char *code = json_string_value(json_object_get(error, "code"));
    const char *msg = json_string_value(json_object_get(error, "message"));
    const char *field = json_string_value(json_object_get(error, "field"));
    enum yardctl_exit ex = YARDCTL_FAILED;
    char line[sizeof err->message];

    if (code == NULL)
        code = "error";
    if (status == 409 || strcmp(code, "conflict") == 0)
        ex = YARDCTL_CONFLICT;
    else if (strcmp(code, "unavailable") == 0)
        ex = YARDCTL_UNREACHABLE;
    one_line(line, sizeof line, msg ? msg : "(no message)");
    yardctl_error_set(err, ex, code, "%s: %s", code, line);
    if (field != NULL && strstr(line, field) == NULL) {
        size_t n = strlen(err->message);
        snprintf(err->message + n, sizeof err->message - n, " (field %s)", field);
    }
    if (json_is_object(error)) {
        json_decref(err->object);
        err->object = json_deep_copy(error);
    }
}

int
yardctl_api_call(const struct yardctl_target *t, const char *method, const char *path,
                 const json_t *body, long timeout_ms, struct yardctl_reply *r,
                 struct yardctl_error *err)
{
    json_t *ok;
    json_t *gen;

    if (yardctl_api_raw(t, method, path, body, timeout_ms, r, err) == -1)
        return -1;
    r->envelope = json_loadb(r->body, r->len, 0, NULL);
    ok = json_object_get(r->envelope, "ok");
    if (!json_is_boolean(ok)) {
        yardctl_error_set(err, YARDCTL_UNREACHABLE, "bad_answer",
                          "cannot reach switchyard at %s: HTTP %ld answer to %s %s is not a "
                          "control API envelope (wrong --url or --socket?)",
                          t->url ? t->url : t->socket_path, r->status, method, path);
        return -1;
    }
    gen = json_object_get(r->envelope, "generation");
    r->generation = json_is_integer(gen) ? (long long)json_integer_value(gen) : -1;
    if (json_is_false(ok)) {
        yardctl_api_error_from(r->status, json_object_get(r->envelope, "error"), err);
        return -1;
    }
    r->data = json_object_get(r->envelope, "data");
    if (r->data == NULL) {
        json_object_set_new(r->envelope, "data", json_null());
        r->data = json_object_get(r->envelope, "data");
    }
    return 0;
}
