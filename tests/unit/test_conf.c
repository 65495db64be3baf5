/* tests/unit/test_conf.c — conf_load/conf_parse: valid configs (minimal, full, every file of
 * conf/), defaults, the per-pool health merge, and every kind of error with its exact
 * FILE:LINE:COL and key path. */
#include <errno.h>
#include <glob.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "tap.h"

#define LISTEN "listen: [{address: 127.0.0.1:8080}]\n"
#define POOLS                                                                                      \
    "pools:\n"                                                                                     \
    "  blue: {servers: [{name: b1, address: 127.0.0.1:9001}]}\n"                                   \
    "  green: {servers: [{name: g1, address: 127.0.0.1:9002}]}\n"
#define BASE LISTEN POOLS

static struct conf_err err;

static struct conf *
parse(const char *yaml)
{
    return conf_parse("test.yaml", yaml, strlen(yaml), &err);
}

static void
show_errors(void)
{
    for (size_t i = 0; i < err.count && i < CONF_ERR_MAX; i++)
        diag("%s", err.msg[i]);
}

/* "test.yaml:LINE:COL" of the first occurrence of needle in yaml (1-based, counted here
 * independently of libyaml). */
static void
position(const char *yaml, const char *needle, char *out, size_t outlen)
{
    const char *hit = strstr(yaml, needle);
    unsigned line = 1;
    unsigned col = 1;

    if (hit == NULL) {
        snprintf(out, outlen, "(needle \"%s\" not in the test's yaml)", needle);
        return;
    }
    for (const char *p = yaml; p < hit; p++) {
        if (*p == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    snprintf(out, outlen, "test.yaml:%u:%u", line, col);
}

static bool
starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Parsing yaml fails with exactly nerr errors, the first one being "POS: expect..." where POS is
 * where needle is in yaml (needle NULL: expect holds the position). */
static void
bad_n(size_t nerr, const char *yaml, const char *needle, const char *expect)
{
    char want[CONF_ERR_LEN];
    char pos[128];
    struct conf *c = parse(yaml);

    if (needle != NULL) {
        position(yaml, needle, pos, sizeof pos);
        snprintf(want, sizeof want, "%s: %s", pos, expect);
    } else {
        snprintf(want, sizeof want, "%s", expect);
    }
    if (!ok(c == NULL && err.count == nerr && starts(err.msg[0], want), "error %s", want))
        show_errors();
    conf_destroy(&c);
}

static void
bad(const char *yaml, const char *needle, const char *expect)
{
    bad_n(1, yaml, needle, expect);
}

static void
test_minimal_and_defaults(void)
{
    struct conf *c = parse(BASE);

    if (!ok(c != NULL && err.count == 0, "the minimal config loads"))
        show_errors();
    if (c == NULL)
        return;
    ok(strcmp(c->path, "test.yaml") == 0, "path is the name given");
    ok(c->nlisten == 1 && strcmp(c->listen[0].addr.text, "127.0.0.1:8080") == 0 &&
           !c->listen[0].tls_enabled && c->listen[0].route_to == ROUTE_TO_NORMAL,
       "one plain listener routing normally");
    ok(c->workers == 0, "workers default to auto (0)");
    for (int i = 0; i < POOL_COUNT; i++) {
        const struct conf_pool *p = &c->pools[i];
        const struct conf_health *h = &p->health;
        ok(strcmp(p->name, i == POOL_BLUE ? "blue" : "green") == 0 && p->nservers == 1 &&
               p->servers[0].weight == 1,
           "pool %d: name, one server of weight 1", i);
        ok(strcmp(h->path, "/health") == 0 && h->interval_ms == 2000 && h->timeout_ms == 1000 &&
               h->rise == 2 && h->fall == 3 && h->expect_min == 200 && h->expect_max == 399 &&
               h->host == NULL && h->body_contains == NULL,
           "pool %d: health defaults (/health, 2s, 1s, 2, 3, 200-399)", i);
        ok(h->passive.consecutive_failures == 5 && h->passive.ejection_time_ms == 30000 &&
               h->passive.max_ejection_percent == 50 && !h->passive.eject_on_5xx,
           "pool %d: passive defaults (5, 30s, 50%%, no 5xx)", i);
        ok(!p->tls.enabled && p->tls.verify && p->tls.ca == NULL && p->tls.sni == NULL &&
               p->max_idle == 1024 && p->idle_timeout_ms == 60000 && p->retries == 1,
           "pool %d: no TLS, 1024 idle, 60s idle timeout, 1 retry", i);
    }
    ok(c->routing.live == POOL_BLUE && c->routing.standby_bp == 0 &&
           c->routing.balance == BALANCE_P2C && c->routing.failover,
       "routing defaults: blue live, 0%%, p2c, failover");
    ok(c->routing.sticky.by == STICKY_COOKIE && c->routing.sticky.header == NULL &&
           strcmp(c->routing.sticky.cookie_name, "sy_bucket") == 0 &&
           c->routing.sticky.max_age_ms == 86400000,
       "sticky defaults: cookie sy_bucket for 1d");
    ok(strcmp(c->routing.preview.header, "X-Switchyard-Pool") == 0 &&
           c->routing.preview.nallow_from == 0 && c->routing.preview.token == NULL,
       "preview defaults: X-Switchyard-Pool, nobody allowed, no token");
    const struct conf_plan *plan = &c->rollout.plan;
    ok(plan->nsteps == 4 && plan->steps[0].weight_bp == 500 && plan->steps[0].hold_ms == 60000 &&
           plan->steps[1].weight_bp == 2500 && plan->steps[1].hold_ms == 120000 &&
           plan->steps[2].weight_bp == 5000 && plan->steps[2].hold_ms == 120000 &&
           plan->steps[3].weight_bp == 10000 && plan->steps[3].hold_ms == 0,
       "default plan 5%%/1m, 25%%/2m, 50%%/2m, 100%%");
    const struct conf_gates *g = &c->rollout.gates;
    ok(g->window_ms == 30000 && g->min_requests == 50 && g->min_healthy_ratio == 1.0 &&
           g->max_error_rate == 0.01 && g->max_error_ratio == 0 && g->max_p99_ms == 0 &&
           g->max_p99_ratio == 0,
       "gate defaults");
    ok(c->rollout.progress_deadline_ms == 900000 && c->rollout.on_failure == ON_FAILURE_ROLLBACK &&
           c->rollout.on_insufficient == ON_INSUFFICIENT_HOLD,
       "rollout defaults: 15m, rollback, hold");
    ok(c->drain.tunnel_timeout_ms == 0, "drain.tunnel_timeout defaults to never");
    ok(strcmp(c->control.socket, "/run/switchyard/control.sock") == 0 &&
           c->control.nallow_uids == 0 && c->control.nallow_gids == 0 &&
           !c->control.listen_enabled && c->control.token_file == NULL && !c->control.tls_enabled,
       "control defaults");
    ok(c->state_file == NULL && c->state_max_age_ms == 7 * 86400000ull, "state defaults");
    const struct conf_timeouts *t = &c->timeouts;
    ok(t->client_header_ms == 10000 && t->client_body_ms == 30000 && t->keepalive_ms == 60000 &&
           t->upstream_connect_ms == 3000 && t->upstream_response_ms == 60000 &&
           t->tunnel_ms == 3600000 && t->shutdown_ms == 30000,
       "timeout defaults (DESIGN §4)");
    const struct conf_limits *l = &c->limits;
    ok(l->max_header_bytes == 32768 && l->max_headers == 100 && l->max_uri_bytes == 8192 &&
           l->max_connections == 20000 && l->max_body_bytes == 0,
       "limit defaults (DESIGN §4)");
    ok(c->log.access == NULL && c->log.audit == NULL && c->log.error == NULL &&
           c->log.level == LOG_LEVEL_INFO && c->notify.nwebhooks == 0,
       "log and notify defaults");
    conf_destroy(&c);
    ok(c == NULL, "conf_destroy clears the pointer");
}

static const char FULL[] =
    "listen:\n"
    "  - {address: '*:80', route_to: normal}\n"
    "  - address: '[::1]:443'\n"
    "    tls:\n"
    "      certs: [{cert: /a.pem, key: /a.key}, {cert: /b.pem, key: /b.key}]\n"
    "      min_version: '1.3'\n"
    "  - {address: 127.0.0.1:0, route_to: standby}\n"
    "  - {address: 127.0.0.2:81, route_to: green}\n"
    "workers: 4\n"
    "upstream: {max_idle: 8, idle_timeout: 10s, retries: 2}\n"
    "health:\n"
    "  path: /hz\n"
    "  interval: 500ms\n"
    "  timeout: 250ms\n"
    "  rise: 1\n"
    "  fall: 5\n"
    "  expect: 204\n"
    "  host: app.internal\n"
    "  body_contains: OK\n"
    "  passive: {consecutive_failures: 0, ejection_time: 1m, max_ejection_percent: 100,\n"
    "            eject_on_5xx: yes}\n"
    "pools:\n"
    "  green:\n"
    "    servers:\n"
    "      - {name: g-1, address: '[2001:db8::1]:8000', weight: 100}\n"
    "      - {name: g_2.x, address: localhost:8001, weight: 3}\n"
    "    tls: {verify: off, ca: /ca.pem, sni: green.internal}\n"
    "    max_idle: 0\n"
    "    idle_timeout: 1h\n"
    "    retries: 0\n"
    "    health: {expect: 200-299, passive: {eject_on_5xx: false}}\n"
    "  blue:\n"
    "    servers: [{name: b1, address: 10.0.0.1:80}]\n"
    "    tls: {}\n"
    "routing:\n"
    "  live: green\n"
    "  standby_percent: 12.34%\n"
    "  balance: least_conn\n"
    "  sticky: {by: 'header:X-User', name: bucket, max_age: 2h}\n"
    "  preview: {header: X-Preview, allow_from: [10.0.0.0/8, '::1'], token: s3cret}\n"
    "  failover: false\n"
    "rollout:\n"
    "  plan: [{weight: 0.5, hold: 30s}, {weight: 50, hold: 1m}, {weight: 100, hold: 0}]\n"
    "  gates: {window: 1m, min_requests: 10, min_healthy_ratio: 0.5, max_error_rate: 0.05,\n"
    "          max_error_ratio: 2, max_p99: 800ms, max_p99_ratio: 1.5}\n"
    "  progress_deadline: 1h\n"
    "  on_failure: pause\n"
    "  on_insufficient: promote\n"
    "drain: {tunnel_timeout: 10m}\n"
    "control:\n"
    "  socket: /tmp/sy.sock\n"
    "  allow_uids: [0, root, 1234]\n"
    "  allow_gids: [root, 5678]\n"
    "  listen: 127.0.0.1:9900\n"
    "  token_file: /etc/token\n"
    "  tls: {certs: [{cert: /c.pem, key: /c.key}]}\n"
    "state_file: /var/lib/sy/state.json\n"
    "state_max_age: 1d\n"
    "timeouts: {client_header: 5s, client_body: 6s, keepalive: 7s, upstream_connect: 8s,\n"
    "           upstream_response: 9s, tunnel: 10s, shutdown: 0}\n"
    "limits: {max_header_bytes: 1k, max_headers: 1, max_uri_bytes: 256, max_connections: 1,\n"
    "         max_body_bytes: 1g}\n"
    "log: {access: /a.log, audit: /b.log, error: /c.log, level: debug}\n"
    "notify: {webhooks: ['https://hooks.example/x', 'http://127.0.0.1:1/y']}\n";

static void
test_full(void)
{
    struct conf *c = parse(FULL);

    if (!ok(c != NULL && err.count == 0, "a config with every key loads"))
        show_errors();
    if (c == NULL)
        return;
    ok(c->nlisten == 4 && strcmp(c->listen[0].addr.text, "0.0.0.0:80") == 0 &&
           strcmp(c->listen[1].addr.text, "[::1]:443") == 0 &&
           strcmp(c->listen[2].addr.text, "127.0.0.1:0") == 0,
       "listeners (port 0 allowed)");
    ok(c->listen[1].tls_enabled && c->listen[1].tls.ncerts == 2 &&
           strcmp(c->listen[1].tls.certs[1].key, "/b.key") == 0 &&
           c->listen[1].tls.min_version == 0x0304 && !c->listen[0].tls_enabled,
       "listener TLS: two certs, TLS 1.3");
    ok(c->listen[0].route_to == ROUTE_TO_NORMAL && c->listen[2].route_to == ROUTE_TO_STANDBY &&
           c->listen[3].route_to == ROUTE_TO_GREEN,
       "route_to");
    ok(c->workers == 4, "workers: 4");
    const struct conf_pool *g = &c->pools[POOL_GREEN];
    const struct conf_pool *b = &c->pools[POOL_BLUE];
    ok(g->nservers == 2 && strcmp(g->servers[0].name, "g-1") == 0 &&
           strcmp(g->servers[0].addr.text, "[2001:db8::1]:8000") == 0 &&
           g->servers[0].weight == 100 && strcmp(g->servers[1].addr.text, "127.0.0.1:8001") == 0 &&
           g->servers[1].weight == 3,
       "green's servers");
    ok(g->tls.enabled && !g->tls.verify && strcmp(g->tls.ca, "/ca.pem") == 0 &&
           strcmp(g->tls.sni, "green.internal") == 0,
       "green's upstream TLS");
    ok(b->tls.enabled && b->tls.verify && b->tls.ca == NULL,
       "blue: tls {} enables TLS with defaults");
    ok(g->max_idle == 0 && g->idle_timeout_ms == 3600000 && g->retries == 0,
       "green's own upstream keys");
    ok(b->max_idle == 8 && b->idle_timeout_ms == 10000 && b->retries == 2,
       "blue inherits the top-level upstream keys");
    ok(strcmp(b->health.path, "/hz") == 0 && b->health.interval_ms == 500 &&
           b->health.timeout_ms == 250 && b->health.rise == 1 && b->health.fall == 5 &&
           b->health.expect_min == 204 && b->health.expect_max == 204 &&
           strcmp(b->health.host, "app.internal") == 0 &&
           strcmp(b->health.body_contains, "OK") == 0,
       "blue: the top-level health");
    ok(b->health.passive.consecutive_failures == 0 && b->health.passive.ejection_time_ms == 60000 &&
           b->health.passive.max_ejection_percent == 100 && b->health.passive.eject_on_5xx,
       "blue: the top-level passive keys");
    ok(g->health.expect_min == 200 && g->health.expect_max == 299 &&
           strcmp(g->health.path, "/hz") == 0 && !g->health.passive.eject_on_5xx &&
           g->health.passive.ejection_time_ms == 60000,
       "green: its own expect and eject_on_5xx over the top-level health");
    ok(c->routing.live == POOL_GREEN && c->routing.standby_bp == 1234 &&
           c->routing.balance == BALANCE_LEAST_CONN && !c->routing.failover,
       "routing");
    ok(c->routing.sticky.by == STICKY_HEADER && strcmp(c->routing.sticky.header, "X-User") == 0 &&
           strcmp(c->routing.sticky.cookie_name, "bucket") == 0 &&
           c->routing.sticky.max_age_ms == 7200000,
       "sticky by header");
    ok(strcmp(c->routing.preview.header, "X-Preview") == 0 && c->routing.preview.nallow_from == 2 &&
           c->routing.preview.allow_from[0].family == AF_INET &&
           c->routing.preview.allow_from[0].prefix == 8 &&
           c->routing.preview.allow_from[1].family == AF_INET6 &&
           strcmp(c->routing.preview.token, "s3cret") == 0,
       "preview");
    const struct conf_rollout *r = &c->rollout;
    ok(r->plan.nsteps == 3 && r->plan.steps[0].weight_bp == 50 &&
           r->plan.steps[0].hold_ms == 30000 && r->plan.steps[2].weight_bp == 10000,
       "plan as a list");
    ok(r->gates.window_ms == 60000 && r->gates.min_requests == 10 &&
           r->gates.min_healthy_ratio == 0.5 && r->gates.max_error_rate == 0.05 &&
           r->gates.max_error_ratio == 2.0 && r->gates.max_p99_ms == 800 &&
           r->gates.max_p99_ratio == 1.5,
       "gates");
    ok(r->progress_deadline_ms == 3600000 && r->on_failure == ON_FAILURE_PAUSE &&
           r->on_insufficient == ON_INSUFFICIENT_PROMOTE,
       "rollout policies");
    ok(c->drain.tunnel_timeout_ms == 600000, "drain");
    ok(strcmp(c->control.socket, "/tmp/sy.sock") == 0 && c->control.nallow_uids == 3 &&
           c->control.allow_uids[0] == 0 && c->control.allow_uids[1] == 0 &&
           c->control.allow_uids[2] == 1234 && c->control.nallow_gids == 2 &&
           c->control.allow_gids[0] == 0 && c->control.allow_gids[1] == 5678,
       "control ids (root resolved to 0)");
    ok(c->control.listen_enabled && strcmp(c->control.listen.text, "127.0.0.1:9900") == 0 &&
           strcmp(c->control.token_file, "/etc/token") == 0 && c->control.tls_enabled &&
           c->control.tls.ncerts == 1 && c->control.tls.min_version == 0x0303,
       "control TCP listener with TLS");
    ok(strcmp(c->state_file, "/var/lib/sy/state.json") == 0 && c->state_max_age_ms == 86400000,
       "state");
    ok(c->timeouts.client_header_ms == 5000 && c->timeouts.client_body_ms == 6000 &&
           c->timeouts.keepalive_ms == 7000 && c->timeouts.upstream_connect_ms == 8000 &&
           c->timeouts.upstream_response_ms == 9000 && c->timeouts.tunnel_ms == 10000 &&
           c->timeouts.shutdown_ms == 0,
       "timeouts (shutdown may be 0)");
    ok(c->limits.max_header_bytes == 1024 && c->limits.max_headers == 1 &&
           c->limits.max_uri_bytes == 256 && c->limits.max_connections == 1 &&
           c->limits.max_body_bytes == 1073741824,
       "limits at their minimums");
    ok(strcmp(c->log.access, "/a.log") == 0 && strcmp(c->log.audit, "/b.log") == 0 &&
           strcmp(c->log.error, "/c.log") == 0 && c->log.level == LOG_LEVEL_DEBUG,
       "log");
    ok(c->notify.nwebhooks == 2 && strcmp(c->notify.webhooks[1], "http://127.0.0.1:1/y") == 0,
       "webhooks");
    conf_destroy(&c);
}

static void
test_merge_and_values(void)
{
    struct conf *c =
        parse(LISTEN "health: {interval: 5s, path: /ready, passive: {ejection_time: 5s}}\n"
                     "upstream: {retries: 3}\n"
                     "pools:\n"
                     "  blue:\n"
                     "    servers: [{name: b1, address: 127.0.0.1:9001}]\n"
                     "    health: {rise: 5, passive: {eject_on_5xx: on}}\n"
                     "    retries: 0\n"
                     "  green: {servers: [{name: g1, address: 127.0.0.1:9002}]}\n");
    if (!ok(c != NULL, "per-pool overrides load"))
        show_errors();
    if (c == NULL)
        return;
    const struct conf_health *b = &c->pools[POOL_BLUE].health;
    const struct conf_health *g = &c->pools[POOL_GREEN].health;
    ok(b->rise == 5 && b->interval_ms == 5000 && strcmp(b->path, "/ready") == 0 && b->fall == 3,
       "blue: its rise, the top-level interval and path, the default fall");
    ok(b->passive.eject_on_5xx && b->passive.ejection_time_ms == 5000 &&
           b->passive.consecutive_failures == 5,
       "blue: passive merged key by key");
    ok(g->rise == 2 && g->interval_ms == 5000 && strcmp(g->path, "/ready") == 0 &&
           !g->passive.eject_on_5xx && g->passive.ejection_time_ms == 5000,
       "green: the top-level health only");
    ok(b->path != g->path, "each pool owns its copy of the strings");
    ok(c->pools[POOL_BLUE].retries == 0 && c->pools[POOL_GREEN].retries == 3,
       "upstream retries: blue's own, green the top-level one");
    conf_destroy(&c);

    c = parse("listen:\n"
              "  - {address: 127.0.0.1:8080}\n"
              "servers: &s [{name: a, address: 127.0.0.1:1}]\n");
    ok(c == NULL && err.count == 2, "an anchor on an unknown key is still an unknown key");
    conf_destroy(&c);

    c = parse(LISTEN "pools:\n"
                     "  blue: &p {servers: [{name: a, address: 127.0.0.1:1}], health: {rise: 7}}\n"
                     "  green: *p\n");
    ok(c != NULL && c->pools[POOL_GREEN].health.rise == 7 &&
           strcmp(c->pools[POOL_GREEN].servers[0].name, "a") == 0,
       "YAML aliases work");
    conf_destroy(&c);

    c = parse("workers: 64\nstate_file: ~\nlog: {access: null, level: error}\n"
              "routing: {standby_percent: 100.00, sticky: {by: none}}\n"
              "rollout: {plan: 'linear:20%/30s', gates: {min_healthy_ratio: 0}}\n" BASE);
    ok(c != NULL && c->workers == 64 && c->state_file == NULL && c->log.access == NULL &&
           c->log.level == LOG_LEVEL_ERROR && c->routing.standby_bp == 10000 &&
           c->routing.sticky.by == STICKY_NONE && c->rollout.plan.nsteps == 5 &&
           c->rollout.plan.steps[0].weight_bp == 2000 && c->rollout.plan.steps[0].hold_ms == 30000,
       "edge values: 64 workers, nulls, 100.00%%, a plan shorthand, a 0 ratio");
    if (c == NULL)
        show_errors();
    conf_destroy(&c);

    c = parse("routing: {sticky: {by: ip}, failover: no}\ncontrol: {listen: null}\n" BASE);
    ok(c != NULL && c->routing.sticky.by == STICKY_IP && !c->routing.failover &&
           !c->control.listen_enabled,
       "sticky by ip, failover no, control.listen null");
    conf_destroy(&c);
}

static void
test_errors_keys_and_types(void)
{
    bad("bogus: 1\n" BASE, "bogus", "bogus: unknown key");
    bad("helth: {rise: 2}\n" BASE, "helth", "helth: unknown key (did you mean \"health\"?)");
    bad("health: {passive: {ejection: 1s}}\n" BASE, "ejection",
        "health.passive.ejection: unknown key");
    bad(LISTEN "pools:\n"
               "  blue: {servers: [{name: b1, address: 127.0.0.1:9001, port: 1}]}\n"
               "  green: {servers: [{name: g1, address: 127.0.0.1:9002}]}\n",
        "port", "pools.blue.servers[0].port: unknown key");
    bad(LISTEN "pools:\n"
               "  blue: {servers: [{name: b1, address: 127.0.0.1:9001}], helth: {}}\n"
               "  green: {servers: [{name: g1, address: 127.0.0.1:9002}]}\n",
        "helth", "pools.blue.helth: unknown key (did you mean \"health\"?)");
    bad("routing: {sticky: {by: ip, cookie: x}}\n" BASE, "cookie",
        "routing.sticky.cookie: unknown key");
    bad("limits: {max_header: 1k}\n" BASE, "max_header",
        "limits.max_header: unknown key (did you mean \"max_headers\"?)");
    bad("listen: [{address: 127.0.0.1:8080, tls: {certs: [{cert: a, key: b, chain: c}]}}]\n" POOLS,
        "chain", "listen[0].tls.certs[0].chain: unknown key");
    bad("rollout: {plan: [{weight: 100, wait: 1m}]}\n" BASE, "wait",
        "rollout.plan[0].wait: unknown key");
    bad("control: {sockets: /x}\n" BASE, "sockets",
        "control.sockets: unknown key (did you mean \"socket\"?)");
    bad("log: {file: x}\n" BASE, "file", "log.file: unknown key");
    bad("timeouts: {idle: 1s}\n" BASE, "idle", "timeouts.idle: unknown key");
    bad("notify: {urls: []}\n" BASE, "urls", "notify.urls: unknown key");
    bad("drain: {timeout: 1s}\n" BASE, "timeout", "drain.timeout: unknown key");
    bad("upstream: {max_conns: 1}\n" BASE, "max_conns", "upstream.max_conns: unknown key");
    bad("rollout: {gates: {p99: 1s}}\n" BASE, "p99", "rollout.gates.p99: unknown key");
    bad("routing: {preview: {cidrs: []}}\n" BASE, "cidrs", "routing.preview.cidrs: unknown key");
    bad(LISTEN "pools:\n"
               "  blue: {servers: [{name: b1, address: 127.0.0.1:9001}], tls: {check: no}}\n"
               "  green: {servers: [{name: g1, address: 127.0.0.1:9002}]}\n",
        "check", "pools.blue.tls.check: unknown key");
    bad("? [a, b]\n: c\n" BASE, "[a", "(root): a key must be a plain string");

    bad("health: [1]\n" BASE, "[1]", "health: expected a mapping, found a list");
    bad("listen: {address: 127.0.0.1:80}\n" POOLS, "{address",
        "listen: expected a list, found a mapping");
    bad("health: {path: [a]}\n" BASE, "[a]", "health.path: expected a single value, found a list");
    bad("health: {rise: two}\n" BASE, "two", "health.rise: expected a whole number, found \"two\"");
    bad("health: {fall: 2.5}\n" BASE, "2.5", "health.fall: expected a whole number");
    bad("health: {rise: -1}\n" BASE, "-1", "health.rise: expected a whole number");
    bad("health:\n  rise:\n" BASE, NULL, "test.yaml:2:8: health.rise: needs a value");
    bad("health:\n" BASE, NULL, "test.yaml:1:8: health: expected a mapping, found null");
    bad("routing: {failover: maybe}\n" BASE, "maybe",
        "routing.failover: expected true or false (or yes/no, on/off), found \"maybe\"");
    bad("health: {passive: {eject_on_5xx: 1}}\n" BASE, "1}",
        "health.passive.eject_on_5xx: expected true or false");
    bad("pools: [a]\n" LISTEN, "[a]", "pools: expected a mapping, found a list");
    bad("health: {passive: 5}\n" BASE, "5", "health.passive: expected a mapping, found \"5\"");
    bad("notify: {webhooks: http://x}\n" BASE, "http", "notify.webhooks: expected a list");
    bad("health: {host: \"a\\0b\"}\n" BASE, "\"a", "health.host: contains a NUL character");
    bad("pools:\n  blue: {servers: {name: b1}}\n  green: {servers: [{name: g1, address: "
        "127.0.0.1:9002}]}\n" LISTEN,
        "{name: b1", "pools.blue.servers: expected a list, found a mapping");
}

static void
test_errors_values(void)
{
    bad("health: {rise: 0}\n" BASE, "0}", "health.rise: must be at least 1, found 0");
    bad("health: {fall: 0}\n" BASE, "0}", "health.fall: must be at least 1");
    bad("health: {interval: 0}\n" BASE, "0}", "health.interval: must be above 0");
    bad("health: {interval: 2}\n" BASE, "2}", "health.interval: \"2\" needs a unit");
    bad("health: {timeout: -1s}\n" BASE, "-1s", "health.timeout: expected a duration");
    bad("health: {timeout: 1.5s}\n" BASE, "1.5s", "health.timeout: expected a duration");
    bad("health: {expect: 600}\n" BASE, "600", "health.expect: expected a status or a range");
    bad("health: {expect: 399-200}\n" BASE, "399", "health.expect: expected a status");
    bad("health: {path: health}\n" BASE, "health}", "health.path: must start with '/'");
    bad("health: {path: ''}\n" BASE, "''", "health.path: must not be empty");
    bad("health: {passive: {max_ejection_percent: 101}}\n" BASE, "101",
        "health.passive.max_ejection_percent: must be between 0 and 100, found 101");
    bad(LISTEN "pools:\n"
               "  blue:\n"
               "    servers:\n"
               "      - {name: b1, address: 127.0.0.1:9001}\n"
               "      - {name: b2, address: 127.0.0.1:9003, weight: 101}\n"
               "  green: {servers: [{name: g1, address: 127.0.0.1:9002}]}\n",
        "101", "pools.blue.servers[1].weight: must be between 1 and 100, found 101");
    bad(LISTEN "pools:\n"
               "  blue: {servers: [{name: b1, address: 127.0.0.1:9001}]}\n"
               "  green: {servers: [{name: g1, address: 127.0.0.1:9002, weight: 0}]}\n",
        "0}]}", "pools.green.servers[0].weight: must be between 1 and 100");
    bad("routing: {standby_percent: 101}\n" BASE, "101",
        "routing.standby_percent: expected a percentage from 0 to 100");
    bad("routing: {standby_percent: 100.01}\n" BASE, "100.01",
        "routing.standby_percent: expected a percentage");
    bad("routing: {standby_percent: 1.234}\n" BASE, "1.234",
        "routing.standby_percent: expected a percentage");
    bad("rollout: {gates: {max_error_rate: 1.5}}\n" BASE, "1.5",
        "rollout.gates.max_error_rate: must be between 0 and 1, found 1.5");
    bad("rollout: {gates: {min_healthy_ratio: -0.1}}\n" BASE, "-0.1",
        "rollout.gates.min_healthy_ratio: expected a number");
    bad("rollout: {gates: {min_healthy_ratio: 1.01}}\n" BASE, "1.01",
        "rollout.gates.min_healthy_ratio: must be between 0 and 1");
    bad("rollout: {gates: {min_requests: 0}}\n" BASE, "0}",
        "rollout.gates.min_requests: must be at least 1");
    bad("rollout: {plan: [{weight: 50, hold: 1m}, {weight: 25, hold: 1m}, {weight: 100}]}\n" BASE,
        "25", "rollout.plan[1].weight: must be above the previous step's 50.00%");
    bad("rollout: {plan: [{weight: 50, hold: 1m}, {weight: 50, hold: 1m}, {weight: 100}]}\n" BASE,
        "50, hold: 1m}, {weight: 100", "rollout.plan[1].weight: must be above the previous");
    bad("rollout: {plan: [{weight: 10, hold: 1m}, {weight: 75}]}\n" BASE, "75",
        "rollout.plan[1].weight: the last step must be 100");
    bad("rollout: {plan: [{weight: 0, hold: 1m}, {weight: 100}]}\n" BASE, "0,",
        "rollout.plan[0].weight: must be above 0");
    bad("rollout: {plan: [{weight: 10}, {weight: 100}]}\n" BASE, "{weight: 10}",
        "rollout.plan[0].hold: missing (this key is required)");
    bad("rollout: {plan: [{weight: 10, hold: 0}, {weight: 100}]}\n" BASE, "0}",
        "rollout.plan[0].hold: must be above 0");
    bad("rollout: {plan: [{weight: 100, hold: 5m}]}\n" BASE, "5m",
        "rollout.plan[0].hold: the last step promotes at once");
    bad("rollout: {plan: [{hold: 5m}, {weight: 100}]}\n" BASE, "{hold",
        "rollout.plan[0].weight: missing");
    bad("rollout: {plan: []}\n" BASE, "[]", "rollout.plan: a plan has 1 to 100 steps");
    bad("rollout: {plan: 'linear:0%/1m'}\n" BASE, "'linear", "rollout.plan: bad step \"0%\"");
    bad("rollout: {plan: 'steps:5%/1m'}\n" BASE, "'steps", "rollout.plan: expected \"linear:");
    bad("rollout: {progress_deadline: 0}\n" BASE, "0}",
        "rollout.progress_deadline: must be above 0");
    bad("rollout: {on_failure: explode}\n" BASE, "explode",
        "rollout.on_failure: expected rollback or pause, found \"explode\"");
    bad("rollout: {on_insufficient: wait}\n" BASE, "wait",
        "rollout.on_insufficient: expected hold, rollback or promote");
    bad("workers: 0\n" BASE, "0", "workers: must be between 1 and 64, found 0");
    bad("workers: 65\n" BASE, "65", "workers: must be between 1 and 64, found 65");
    bad("workers: many\n" BASE, "many", "workers: expected auto or a number of threads");
    bad("limits: {max_headers: 0}\n" BASE, "0}", "limits.max_headers: must be at least 1");
    bad("limits: {max_header_bytes: 1000}\n" BASE, "1000",
        "limits.max_header_bytes: must be at least 1k");
    bad("limits: {max_uri_bytes: 255}\n" BASE, "255", "limits.max_uri_bytes: must be at least 256");
    bad("limits: {max_connections: 0}\n" BASE, "0}", "limits.max_connections: must be at least 1");
    bad("limits: {max_body_bytes: 1t}\n" BASE, "1t", "limits.max_body_bytes: expected a size");
    bad("timeouts: {keepalive: 0}\n" BASE, "0}", "timeouts.keepalive: must be above 0");
    bad("routing: {balance: random}\n" BASE, "random",
        "routing.balance: expected p2c, round_robin or least_conn");
    bad("routing: {live: red}\n" BASE, "red",
        "routing.live: expected blue or green, found \"red\"");
    bad("routing: {live: \"r\\ne\\td\"}\n" BASE, "\"r",
        "routing.live: expected blue or green, found \"r?e?d\"");
    bad("routing: {sticky: {by: session}}\n" BASE, "session",
        "routing.sticky.by: expected cookie, ip, none or header:NAME");
    bad("routing: {sticky: {by: 'header:'}}\n" BASE, "'header",
        "routing.sticky.by: \"\" is not a valid header or cookie name");
    bad("routing: {sticky: {name: 'my cookie'}}\n" BASE, "'my",
        "routing.sticky.name: \"my cookie\" is not a valid header or cookie name");
    bad("routing: {sticky: {name: "
        "c234567890123456789012345678901234567890123456789012345678901234x}}\n" BASE,
        "c2345", "routing.sticky.name: the cookie name is longer than 64 characters");
    bad("routing: {preview: {header: 'X:Pool'}}\n" BASE,
        "'X:", "routing.preview.header: \"X:Pool\" is not a valid");
    bad("routing: {preview: {allow_from: [10.0.0.0/8, 10.0.0.0/33]}}\n" BASE, "10.0.0.0/33",
        "routing.preview.allow_from[1]: bad CIDR \"10.0.0.0/33\"");
    bad("log: {level: verbose}\n" BASE, "verbose",
        "log.level: expected error, warn, info or debug, found \"verbose\"");
    bad("notify: {webhooks: [https://ok.example, ftp://x]}\n" BASE, "ftp",
        "notify.webhooks[1]: expected an http:// or https:// URL");
    bad("state_max_age: 7\n" BASE, "7", "state_max_age: \"7\" needs a unit");
    bad("drain: {tunnel_timeout: forever}\n" BASE, "forever",
        "drain.tunnel_timeout: expected a duration");
}

static void
test_errors_structure(void)
{
    bad(LISTEN "pools:\n"
               "  blue:\n"
               "    servers:\n"
               "      - {name: b1, address: 127.0.0.1:9001}\n"
               "      - {name: b1, address: 127.0.0.1:9003}\n"
               "  green: {servers: [{name: g1, address: 127.0.0.1:9002}]}\n",
        "b1, address: 127.0.0.1:9003",
        "pools.blue.servers[1].name: duplicate server name \"b1\" (first at 5:16)");
    bad(LISTEN "pools:\n"
               "  blue: {servers: [{name: 'b 1', address: 127.0.0.1:9001}]}\n"
               "  green: {servers: [{name: g1, address: 127.0.0.1:9002}]}\n",
        "'b 1'", "pools.blue.servers[0].name: \"b 1\" is not a valid server name");
    {
        static const char *const bad_sni[] = {"a.example:443", "https://a.example", "a..b",
                                              "-a.example",    "a-.example",        "10.0.0.1",
                                              "a_b.example",   "a.example."};
        for (size_t i = 0; i < sizeof(bad_sni) / sizeof(bad_sni[0]); i++) {
            char yaml[512], want[256], needle[64];
            snprintf(yaml, sizeof(yaml),
                     LISTEN "pools:\n"
                            "  blue: {servers: [{name: b1, address: 127.0.0.1:9001}], "
                            "tls: {sni: \"%s\"}}\n"
                            "  green: {servers: [{name: g1, address: 127.0.0.1:9002}]}\n",
                     bad_sni[i]);
            snprintf(want, sizeof(want), "pools.blue.tls.sni: \"%s\" is not a host name",
                     bad_sni[i]);
            snprintf(needle, sizeof(needle), "\"%s\"", bad_sni[i]);
            bad(yaml, needle, want);
        }
        char yaml[512];
        snprintf(yaml, sizeof(yaml),
                 LISTEN "pools:\n"
                        "  blue: {servers: [{name: b1, address: 127.0.0.1:9001}], "
                        "tls: {sni: green-1.Internal.example}}\n"
                        "  green: {servers: [{name: g1, address: 127.0.0.1:9002}]}\n");
        struct conf *c = parse(yaml);
        ok(c != NULL && strcmp(c->pools[POOL_BLUE].tls.sni, "green-1.Internal.example") == 0,
           "a host name with digits, '-' and capitals is a valid sni");
        conf_destroy(&c);
    }
    bad(LISTEN "pools:\n"
               "  blue: {servers: []}\n"
               "  green: {servers: [{name: g1, address: 127.0.0.1:9002}]}\n",
        "[]", "pools.blue.servers: a pool needs at least one server");
    bad(LISTEN "pools:\n"
               "  blue: {health: {rise: 3}}\n"
               "  green: {servers: [{name: g1, address: 127.0.0.1:9002}]}\n",
        "{health", "pools.blue.servers: missing (this key is required)");
    bad(LISTEN "pools:\n"
               "  blue: {servers: [{address: 127.0.0.1:9001}]}\n"
               "  green: {servers: [{name: g1, address: 127.0.0.1:9002}]}\n",
        "{address: 127.0.0.1:9001", "pools.blue.servers[0].name: missing");
    bad(LISTEN "pools:\n"
               "  blue: {servers: [{name: b1, address: 127.0.0.1:9001}]}\n",
        "blue", "pools.green: missing (this key is required)");
    bad(LISTEN, "listen", "pools: missing (this key is required)");
    bad(POOLS, "pools", "listen: missing (this key is required)");
    bad(LISTEN "pools:\n"
               "  blue: {servers: [{name: b1, address: 127.0.0.1:9001}]}\n"
               "  green: {servers: [{name: g1, address: 127.0.0.1:9002}]}\n"
               "  red: {servers: [{name: r1, address: 127.0.0.1:9003}]}\n",
        "red", "pools.red: unknown pool (expected blue or green)");
    bad_n(2,
          LISTEN "pools:\n"
                 "  blue: {servers: [{name: b1, address: 127.0.0.1:9001}]}\n"
                 "  gren: {servers: [{name: g1, address: 127.0.0.1:9002}]}\n",
          "gren", "pools.gren: unknown pool (did you mean \"green\"?)");
    ok(strncmp(err.msg[1], "test.yaml:3:3: pools.green: missing", 35) == 0,
       "then green is missing: %s", err.msg[1]);
    bad(LISTEN "pools:\n"
               "  blue: {servers: [{name: b1, address: 127.0.0.1:9001}]}\n"
               "  green: {servers: [{name: g1, address: 10.0.0.256:9002}]}\n",
        "10.0.0.256", "pools.green.servers[0].address: bad address \"10.0.0.256:9002\"");
    bad(LISTEN "pools:\n"
               "  blue: {servers: [{name: b1, address: backend.local:80}]}\n"
               "  green: {servers: [{name: g1, address: 127.0.0.1:9002}]}\n",
        "backend", "pools.blue.servers[0].address: bad address");
    bad(LISTEN "pools:\n"
               "  blue: {servers: [{name: b1, address: 127.0.0.1:0}]}\n"
               "  green: {servers: [{name: g1, address: 127.0.0.1:9002}]}\n",
        "127.0.0.1:0", "pools.blue.servers[0].address: port 0 is allowed only where we listen");
    bad("listen: [{address: '127.0.0.1:70000'}]\n" POOLS, "'127",
        "listen[0].address: bad address \"127.0.0.1:70000\"");
    bad("listen: [{tls: {certs: [{cert: a, key: b}]}}]\n" POOLS, "{tls",
        "listen[0].address: missing (this key is required)");
    bad("listen: []\n" POOLS, "[]", "listen: must list at least one address to listen on");
    bad("listen: [{address: '*:80'}, {address: 0.0.0.0:80}]\n" POOLS, "{address: 0.0.0.0",
        "listen[1]: 0.0.0.0:80 is already listed as listen[0]");
    bad("listen: [{address: 127.0.0.1:80, route_to: sideways}]\n" POOLS, "sideways",
        "listen[0].route_to: expected normal, standby, blue or green");
    bad("listen: [{address: 127.0.0.1:80, tls: {certs: []}}]\n" POOLS, "[]",
        "listen[0].tls.certs: must list at least one {cert, key} pair");
    bad("listen: [{address: 127.0.0.1:80, tls: {min_version: '1.1', certs: [{cert: a, key: "
        "b}]}}]\n" POOLS,
        "'1.1'", "listen[0].tls.min_version: expected 1.2 or 1.3, found \"1.1\"");
    bad("listen: [{address: 127.0.0.1:80, tls: {certs: [{cert: a}]}}]\n" POOLS, "{cert: a}",
        "listen[0].tls.certs[0].key: missing");
    bad("control: {listen: 127.0.0.1:9900}\n" BASE, "127.0.0.1:9900",
        "control.listen: a TCP control listener needs control.token_file");
    bad("control: {listen: 127.0.0.1:8080, token_file: /t}\n" BASE, "127.0.0.1:8080,",
        "control.listen: 127.0.0.1:8080 is also listen[0]");
    bad("control: {tls: {certs: [{cert: a, key: b}]}}\n" BASE, "{certs",
        "control.tls: TLS applies to control.listen, which is not set");
    bad("control: {allow_uids: [no-such-user-xyz]}\n" BASE, "no-such",
        "control.allow_uids[0]: unknown user \"no-such-user-xyz\"");
    bad("control: {allow_gids: [0, no-such-group-xyz]}\n" BASE, "no-such",
        "control.allow_gids[1]: unknown group \"no-such-group-xyz\"");
    bad("control: {allow_uids: [4294967295]}\n" BASE, "4294967295",
        "control.allow_uids[0]: user id 4294967295 is out of range");
    bad("control: {socket: /run/switchyard/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock}\n" BASE,
        "/run", "control.socket: longer than the 107 bytes a unix socket path allows");

    /* duplicate keys, at the top level, in a section, among the pools */
    bad("health: {rise: 2, rise: 3}\n" BASE, "rise: 3",
        "health.rise: duplicate key (first at 1:10)");
    bad(BASE "listen: [{address: 127.0.0.1:8081}]\n", "listen: [{address: 127.0.0.1:8081",
        "listen: duplicate key (first at 1:1)");
    bad(LISTEN "pools:\n"
               "  blue: {servers: [{name: b1, address: 127.0.0.1:9001}]}\n"
               "  green: {servers: [{name: g1, address: 127.0.0.1:9002}]}\n"
               "  blue: {servers: [{name: b2, address: 127.0.0.1:9003}]}\n",
        "blue: {servers: [{name: b2", "pools.blue: duplicate key (first at 3:3)");

    /* the document itself */
    bad("", "", "(root): the file is empty");
    bad("# only a comment\n\n", "#", "(root): the file is empty");
    bad("~\n", "~", "(root): the file is empty");
    bad("- a\n- b\n", "- a", "(root): expected a mapping, found a list");
    bad("hello\n", "hello", "(root): expected a mapping, found \"hello\"");
    bad("a: b: c\n", ": c", "(yaml): mapping values are not allowed in this context");
    bad(LISTEN "pools: {blue: [\n", NULL,
        "test.yaml:3:1: (yaml): did not find expected node content (while parsing a flow node "
        "at 3:1)");
    bad("listen: [{address: 127.0.0.1:80}]\nhealth: \xff\n", "\xff",
        "(yaml): invalid leading UTF-8");
    bad(BASE "---\n" BASE, "---", "(yaml): a second document; a config file holds exactly one");
    bad("x: &a [*a]\n", "&a", "(yaml): nested deeper than 64 levels");
}

static void
test_errors_many(void)
{
    /* an alias bomb: 10 levels of 10 aliases would be 10^10 values */
    char bomb[2048];
    size_t n = 0;
    n += (size_t)snprintf(bomb + n, sizeof bomb - n, "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for (int i = 1; i < 10; i++)
        n += (size_t)snprintf(bomb + n, sizeof bomb - n,
                              "a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, "
                              "*a%d]\n",
                              i, i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1,
                              i - 1);
    struct conf *c = parse(bomb);
    ok(c == NULL && err.count == 1 &&
           strstr(err.msg[0], ": (yaml): more than 100000 values") != NULL,
       "an alias bomb is stopped: %s", err.msg[0]);

    /* errors in several sections are all collected, in order */
    c = parse("health: {rise: 0}\n"
              "routing: {live: red}\n" LISTEN "pools:\n"
              "  blue: {servers: [{name: b1, address: 127.0.0.1:9001, weight: 0}]}\n"
              "  green: {servers: [{name: g1, address: 127.0.0.1:9002}]}\n"
              "limits: {max_headers: 0}\n");
    ok(c == NULL && err.count == 4, "four errors are reported, not only the first");
    ok(starts(err.msg[0], "test.yaml:1:16: health.rise: "), "1st: %s", err.msg[0]);
    ok(starts(err.msg[1], "test.yaml:5:64: pools.blue.servers[0].weight: "), "2nd: %s", err.msg[1]);
    ok(starts(err.msg[2], "test.yaml:2:17: routing.live: "), "3rd: %s", err.msg[2]);
    ok(starts(err.msg[3], "test.yaml:7:23: limits.max_headers: "), "4th: %s", err.msg[3]);

    /* more errors than CONF_ERR_MAX: all counted, the first CONF_ERR_MAX kept */
    char many[1024] = BASE;
    for (int i = 0; i < 20; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "unknown_%02d: x\n", i);
    c = parse(many);
    ok(c == NULL && err.count == 20, "20 errors counted (got %zu)", err.count);
    ok(strcmp(err.msg[CONF_ERR_MAX - 1], "test.yaml:20:1: unknown_15: unknown key") == 0,
       "the 16th is kept: %s", err.msg[CONF_ERR_MAX - 1]);
}

static void
test_load(void)
{
    char path[] = "/tmp/test_conf_XXXXXX";
    int fd = mkstemp(path);
    struct conf *c;

    ok(fd != -1 && write(fd, BASE, strlen(BASE)) == (ssize_t)strlen(BASE), "temp file written");
    close(fd);
    c = conf_load(path, &err);
    ok(c != NULL && strcmp(c->path, path) == 0, "conf_load reads a file and keeps its path");
    conf_destroy(&c);
    unlink(path);

    c = conf_load("/nonexistent/switchyard.yaml", &err);
    ok(c == NULL && err.count == 1 &&
           strcmp(err.msg[0],
                  "/nonexistent/switchyard.yaml: cannot read: No such file or directory") == 0,
       "missing file: %s", err.msg[0]);
    c = conf_load("/", &err);
    ok(c == NULL && err.count == 1 && strcmp(err.msg[0], "/: cannot read: Is a directory") == 0,
       "a directory: %s", err.msg[0]);

    /* parse errors from conf_load carry the path */
    char bad_path[] = "/tmp/test_conf_XXXXXX";
    fd = mkstemp(bad_path);
    ok(fd != -1 && write(fd, BASE "workers: 0\n", strlen(BASE) + 11) == (ssize_t)strlen(BASE) + 11,
       "bad temp file written");
    close(fd);
    c = conf_load(bad_path, &err);
    char want[128];
    snprintf(want, sizeof want, "%s:5:10: workers: must be between 1 and 64", bad_path);
    ok(c == NULL && err.count == 1 && starts(err.msg[0], want), "errors name the file: %s",
       err.msg[0]);
    unlink(bad_path);

    conf_destroy(NULL);
    c = NULL;
    conf_destroy(&c);
    ok(1, "conf_destroy(NULL) and conf_destroy(&NULL) are fine");
}

/* The reference shows every key at its default: it must agree with conf/defaults.c. */
static void
test_reference_is_defaults(void)
{
    struct conf *ref = conf_load(SOURCE_ROOT "/conf/switchyard.yaml", &err);
    struct conf *def = parse(BASE);

    if (!ok(ref != NULL && def != NULL, "reference and minimal configs load")) {
        show_errors();
        conf_destroy(&ref);
        conf_destroy(&def);
        return;
    }
    ok(ref->workers == def->workers, "reference: workers");
    for (int i = 0; i < POOL_COUNT; i++) {
        const struct conf_pool *a = &ref->pools[i];
        const struct conf_pool *b = &def->pools[i];
        const struct conf_health *x = &a->health;
        const struct conf_health *y = &b->health;
        ok(strcmp(x->path, y->path) == 0 && x->interval_ms == y->interval_ms &&
               x->timeout_ms == y->timeout_ms && x->rise == y->rise && x->fall == y->fall &&
               x->expect_min == y->expect_min && x->expect_max == y->expect_max &&
               x->host == y->host && x->body_contains == y->body_contains &&
               memcmp(&x->passive, &y->passive, sizeof x->passive) == 0,
           "reference: pool %d health", i);
        ok(a->tls.enabled == b->tls.enabled && a->tls.verify == b->tls.verify &&
               a->max_idle == b->max_idle && a->idle_timeout_ms == b->idle_timeout_ms &&
               a->retries == b->retries,
           "reference: pool %d upstream", i);
    }
    const struct conf_routing *r = &ref->routing;
    const struct conf_routing *d = &def->routing;
    ok(r->live == d->live && r->standby_bp == d->standby_bp && r->balance == d->balance &&
           r->failover == d->failover && r->sticky.by == d->sticky.by &&
           strcmp(r->sticky.cookie_name, d->sticky.cookie_name) == 0 &&
           r->sticky.max_age_ms == d->sticky.max_age_ms &&
           strcmp(r->preview.header, d->preview.header) == 0 &&
           r->preview.nallow_from == d->preview.nallow_from && r->preview.token == d->preview.token,
       "reference: routing");
    ok(ref->rollout.plan.nsteps == def->rollout.plan.nsteps &&
           memcmp(ref->rollout.plan.steps, def->rollout.plan.steps,
                  def->rollout.plan.nsteps * sizeof *def->rollout.plan.steps) == 0,
       "reference: plan");
    ok(memcmp(&ref->rollout.gates, &def->rollout.gates, sizeof ref->rollout.gates) == 0 &&
           ref->rollout.progress_deadline_ms == def->rollout.progress_deadline_ms &&
           ref->rollout.on_failure == def->rollout.on_failure &&
           ref->rollout.on_insufficient == def->rollout.on_insufficient,
       "reference: gates and policies");
    ok(ref->drain.tunnel_timeout_ms == def->drain.tunnel_timeout_ms, "reference: drain");
    ok(strcmp(ref->control.socket, def->control.socket) == 0 && ref->control.nallow_uids == 0 &&
           ref->control.nallow_gids == 0 &&
           ref->control.listen_enabled == def->control.listen_enabled &&
           ref->control.token_file == NULL,
       "reference: control");
    ok(ref->state_file == def->state_file && ref->state_max_age_ms == def->state_max_age_ms,
       "reference: state");
    ok(memcmp(&ref->timeouts, &def->timeouts, sizeof ref->timeouts) == 0, "reference: timeouts");
    ok(memcmp(&ref->limits, &def->limits, sizeof ref->limits) == 0, "reference: limits");
    ok(ref->log.access == NULL && ref->log.audit == NULL && ref->log.error == NULL &&
           ref->log.level == def->log.level && ref->notify.nwebhooks == 0,
       "reference: log and notify");
    ok(ref->nlisten == 3 && ref->listen[1].tls_enabled &&
           ref->listen[1].tls.min_version == def->control.tls.min_version &&
           ref->listen[2].route_to == ROUTE_TO_STANDBY,
       "reference: listeners");
    conf_destroy(&ref);
    conf_destroy(&def);
}

static void
test_shipped_files(void)
{
    glob_t g;
    bool reference = false;

    ok(glob(SOURCE_ROOT "/conf/*.yaml", 0, NULL, &g) == 0 && g.gl_pathc >= 1, "conf/*.yaml found");
    for (size_t i = 0; i < g.gl_pathc; i++) {
        struct conf *c = conf_load(g.gl_pathv[i], &err);
        if (!ok(c != NULL, "%s loads", g.gl_pathv[i]))
            show_errors();
        if (strstr(g.gl_pathv[i], "/conf/switchyard.yaml") != NULL)
            reference = true;
        conf_destroy(&c);
    }
    ok(reference, "conf/switchyard.yaml is among them");
    globfree(&g);
}

int
main(void)
{
    test_minimal_and_defaults();
    test_full();
    test_merge_and_values();
    test_errors_keys_and_types();
    test_errors_values();
    test_errors_structure();
    test_errors_many();
    test_load();
    test_reference_is_defaults();
    test_shipped_files();
    return done_testing();
}
