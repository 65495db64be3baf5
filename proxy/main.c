/* proxy/main.c — the switchyard daemon: command line, config check (-t), and start-up. The one
 * file that wires conf, proxy and (later) control together. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <event2/thread.h>

#include "conf/conf.h"
#include "control/daemon.h"
#include "proxy/log.h"
#include "proxy/tls.h"

static void
usage(FILE *f)
{
    fprintf(f, "usage: switchyard [-t] -c FILE\n"
               "       switchyard --version | --help\n"
               "\n"
               "  -c, --config FILE  the configuration file (YAML)\n"
               "  -t, --test         check the configuration and exit (0 ok, 1 errors)\n"
               "  -v, --version      print the version and exit\n"
               "  -h, --help         print this help and exit\n"
               "\n"
               "Runs in the foreground; logs go to stderr unless log.error is set.\n"
               "Signals: SIGTERM/SIGINT graceful stop, SIGHUP reload, SIGUSR1 reopen logs.\n");
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"test", no_argument, NULL, 't'},
        {"version", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    int test = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "c:tvh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            break;
        case 't':
            test = 1;
            break;
        case 'v':
            printf("switchyard %s\n", SWITCHYARD_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (path == NULL || optind != argc) {
        usage(stderr);
        return 2;
    }

    struct conf_err err = {0};
    struct conf *conf = conf_load(path, &err);
    if (conf == NULL) {
        for (size_t i = 0; i < err.count && i < CONF_ERR_MAX; i++)
            fprintf(stderr, "%s\n", err.msg[i]);
        if (err.count > CONF_ERR_MAX)
            fprintf(stderr, "... and %zu more errors\n", err.count - CONF_ERR_MAX);
        fprintf(stderr, "switchyard: configuration %s has errors\n", path);
        return 1;
    }
    /* Certificates are checked here too (conf/ knows no OpenSSL): unreadable, not matching its
     * key, expired. */
    int tls_errors = 0;
    for (size_t i = 0; i < conf->nlisten; i++) {
        if (!conf->listen[i].tls_enabled)
            continue;
        char terr[512];
        struct tls_ctx *t = tls_ctx_create(&conf->listen[i].tls, terr, sizeof(terr));
        if (t == NULL) {
            fprintf(stderr, "%s: listen[%zu].tls: %s\n", path, i, terr);
            tls_errors++;
        }
        tls_ctx_destroy(&t);
    }
    if (conf->control.tls_enabled) {
        char terr[512];
        struct tls_ctx *t = tls_ctx_create(&conf->control.tls, terr, sizeof(terr));
        if (t == NULL) {
            fprintf(stderr, "%s: control.tls: %s\n", path, terr);
            tls_errors++;
        }
        tls_ctx_destroy(&t);
    }
    for (int p = 0; p < POOL_COUNT; p++) {
        if (!conf->pools[p].tls.enabled)
            continue;
        char terr[512];
        SSL_CTX *ctx = tls_client_ctx_create(&conf->pools[p].tls, terr, sizeof(terr));
        if (ctx == NULL) {
            fprintf(stderr, "%s: pools.%s.tls: %s\n", path, conf_pool_name((enum pool_id)p), terr);
            tls_errors++;
        }
        SSL_CTX_free(ctx);
    }
    if (tls_errors) {
        fprintf(stderr, "switchyard: configuration %s has errors\n", path);
        conf_destroy(&conf);
        return 1;
    }
    if (test) {
        printf("switchyard: configuration %s is ok\n", path);
        conf_destroy(&conf);
        return 0;
    }
    if (evthread_use_pthreads() == -1) {
        fprintf(stderr, "switchyard: libevent has no pthreads support\n");
        conf_destroy(&conf);
        return 1;
    }
    if (log_open(conf->log.level, conf->log.error) == -1) {
        fprintf(stderr, "switchyard: cannot open log %s\n", conf->log.error);
        conf_destroy(&conf);
        return 1;
    }
    /* libcurl's global state (health checks) is set up once, before any thread exists. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "switchyard: libcurl initialisation failed\n");
        conf_destroy(&conf);
        return 1;
    }
    int status = daemon_run(conf);
    curl_global_cleanup();
    return status;
}
