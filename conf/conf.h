/* conf/conf.h — the validated, immutable configuration of DESIGN §9.
 *
 * conf_load() turns a YAML file into a struct conf with every default filled in (defaults live in
 * conf/defaults.c and nowhere else). A struct conf is never modified after it is returned; any
 * thread may read it. Errors name FILE:LINE:COL and the key path. */
#ifndef CONF_CONF_H
#define CONF_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

enum pool_id {
    POOL_BLUE = 0,
    POOL_GREEN = 1,
};
#define POOL_COUNT 2

/* Where a listener sends its traffic (DESIGN §3 step 1). */
enum route_to {
    ROUTE_TO_NORMAL = 0, /* the usual split */
    ROUTE_TO_STANDBY,
    ROUTE_TO_BLUE,
    ROUTE_TO_GREEN,
};

enum balance {
    BALANCE_P2C = 0,
    BALANCE_ROUND_ROBIN,
    BALANCE_LEAST_CONN,
};

enum sticky_by {
    STICKY_COOKIE = 0,
    STICKY_HEADER,
    STICKY_IP,
    STICKY_NONE,
};

enum on_failure {
    ON_FAILURE_ROLLBACK = 0,
    ON_FAILURE_PAUSE,
};

enum on_insufficient {
    ON_INSUFFICIENT_HOLD = 0,
    ON_INSUFFICIENT_ROLLBACK,
    ON_INSUFFICIENT_PROMOTE,
};

enum log_level {
    LOG_LEVEL_ERROR = 0,
    LOG_LEVEL_WARN,
    LOG_LEVEL_INFO,
    LOG_LEVEL_DEBUG,
};

/* A socket address as written in the config. */
struct conf_addr {
    struct sockaddr_storage ss; /* AF_INET or AF_INET6, port set */
    socklen_t len;
    char text[80]; /* normalized "1.2.3.4:80" or "[::1]:80" */
};

struct conf_cidr {
    int family;       /* AF_INET or AF_INET6 */
    uint8_t addr[16]; /* network bytes, host bits cleared */
    unsigned prefix;  /* 0..32 or 0..128 */
};

struct conf_cert {
    char *cert; /* owned: path */
    char *key;  /* owned: path */
};

struct conf_listen_tls {
    struct conf_cert *certs; /* owned: array of ncerts */
    size_t ncerts;
    int min_version; /* 0x0303 (TLS 1.2, default) or 0x0304 (TLS 1.3) */
};

struct conf_listen {
    struct conf_addr addr;
    bool tls_enabled;
    struct conf_listen_tls tls;
    enum route_to route_to;
};

struct conf_passive {
    uint32_t consecutive_failures; /* default 5; 0 disables passive ejection */
    uint64_t ejection_time_ms;     /* default 30s */
    uint32_t max_ejection_percent; /* default 50, 0..100 */
    bool eject_on_5xx;             /* default false */
};

struct conf_health {
    char *path;           /* owned; default "/health"; must start with '/' */
    uint64_t interval_ms; /* default 2s; > 0 */
    uint64_t timeout_ms;  /* default 1s; > 0 */
    uint32_t rise;        /* default 2; >= 1 */
    uint32_t fall;        /* default 3; >= 1 */
    int expect_min;       /* default 200; "200-399" or "200" */
    int expect_max;       /* default 399 */
    char *host;           /* owned; NULL = server address */
    char *body_contains;  /* owned; NULL = no check */
    struct conf_passive passive;
};

/* Upstream TLS of a pool (used by a later issue; parsed and validated now). */
struct conf_upstream_tls {
    bool enabled; /* true when the pool has a tls: key */
    bool verify;  /* default true */
    char *ca;     /* owned; NULL = system store */
    char *sni;    /* owned; NULL = none */
};

struct conf_server {
    char *name; /* owned; unique within its pool */
    struct conf_addr addr;
    uint32_t weight; /* 1..100, default 1 */
};

struct conf_pool {
    char *name;                  /* owned: "blue" or "green" */
    struct conf_server *servers; /* owned: array of nservers, nservers >= 1 */
    size_t nservers;
    struct conf_health health; /* top-level health: merged with the pool's own health: keys */
    struct conf_upstream_tls tls;
    uint32_t max_idle;        /* idle keep-alive connections per worker per server; default 64 */
    uint64_t idle_timeout_ms; /* default 60s */
    uint32_t retries;         /* connect retries on other servers of the pool; default 1 */
};

struct conf_step {
    uint32_t weight_bp; /* 1..10000 basis points */
    uint64_t hold_ms;   /* 0 = none (the last step) */
};

/* A plan has at most this many steps (config lists and shorthands alike), which also bounds what
 * a control-API client can make us allocate. */
#define CONF_COOKIE_NAME_MAX 64 /* routing.sticky.name with by: cookie */
#define CONF_PLAN_MAX_STEPS 100

struct conf_plan {
    struct conf_step *steps; /* owned: array of nsteps, 1 <= nsteps <= CONF_PLAN_MAX_STEPS;
                                weights strictly increasing, last weight is 10000 */
    size_t nsteps;
};

struct conf_gates {
    uint64_t window_ms;       /* default 30s */
    uint32_t min_requests;    /* default 50 */
    double min_healthy_ratio; /* default 1.0, 0..1 */
    double max_error_rate;    /* default 0.01, 0..1 */
    double max_error_ratio;   /* default 0 = unset */
    uint64_t max_p99_ms;      /* default 0 = unset */
    double max_p99_ratio;     /* default 0 = unset */
};

struct conf_rollout {
    struct conf_plan plan; /* default: 5%/1m, 25%/2m, 50%/2m, 100% */
    struct conf_gates gates;
    uint64_t progress_deadline_ms; /* default 15m */
    enum on_failure on_failure;
    enum on_insufficient on_insufficient;
};

struct conf_sticky {
    enum sticky_by by;   /* default cookie */
    char *header;        /* owned; the header name when by == STICKY_HEADER ("header:NAME") */
    char *cookie_name;   /* owned; default "sy_bucket" */
    uint64_t max_age_ms; /* default 1d */
};

struct conf_preview {
    char *header;                 /* owned; default "X-Switchyard-Pool" */
    struct conf_cidr *allow_from; /* owned: array of nallow_from */
    size_t nallow_from;
    char *token; /* owned; NULL = none */
};

struct conf_routing {
    enum pool_id live;    /* default blue */
    uint32_t standby_bp;  /* standby_percent in basis points, default 0 */
    enum balance balance; /* default p2c */
    struct conf_sticky sticky;
    struct conf_preview preview;
    bool failover; /* default true */
};

struct conf_control {
    char *socket;      /* owned; default "/run/switchyard/control.sock" */
    uid_t *allow_uids; /* owned: array of nallow_uids (names resolved at load) */
    size_t nallow_uids;
    gid_t *allow_gids; /* owned: array of nallow_gids (names resolved at load) */
    size_t nallow_gids;
    bool listen_enabled;
    struct conf_addr listen; /* optional TCP listener */
    char *token_file;        /* owned; required when listen is set */
    bool tls_enabled;
    struct conf_listen_tls tls;
};

struct conf_timeouts {
    uint64_t client_header_ms;     /* 10s, total deadline for the header block */
    uint64_t client_body_ms;       /* 30s, idle */
    uint64_t keepalive_ms;         /* 60s */
    uint64_t upstream_connect_ms;  /* 3s */
    uint64_t upstream_response_ms; /* 60s */
    uint64_t tunnel_ms;            /* 1h, idle */
    uint64_t shutdown_ms;          /* 30s */
};

struct conf_limits {
    uint64_t max_header_bytes; /* 32k */
    uint32_t max_headers;      /* 100 */
    uint64_t max_uri_bytes;    /* 8k */
    uint32_t max_connections;  /* 20000 */
    uint64_t max_body_bytes;   /* 0 = unlimited */
};

struct conf_log {
    char *access;         /* owned; NULL = no access log */
    char *audit;          /* owned; NULL = no audit log */
    char *error;          /* owned; NULL = stderr */
    enum log_level level; /* default info */
};

struct conf_notify {
    char **webhooks; /* owned: array of nwebhooks URLs (http:// or https://) */
    size_t nwebhooks;
};

struct conf_drain {
    uint64_t tunnel_timeout_ms; /* 0 = never (default) */
};

struct conf {
    char *path;                 /* owned: the file it was loaded from */
    struct conf_listen *listen; /* owned: array of nlisten, nlisten >= 1 */
    size_t nlisten;
    uint32_t workers;                   /* 0 = auto (CPU count) */
    struct conf_pool pools[POOL_COUNT]; /* indexed by enum pool_id; both required */
    struct conf_routing routing;
    struct conf_rollout rollout;
    struct conf_drain drain;
    struct conf_control control;
    char *state_file;          /* owned; NULL = none */
    uint64_t state_max_age_ms; /* default 7d */
    struct conf_timeouts timeouts;
    struct conf_limits limits;
    struct conf_log log;
    struct conf_notify notify;
};

/* Errors: each message reads "FILE:LINE:COL: key.path: message". At most CONF_ERR_MAX are kept;
 * count says how many were found in all. */
#define CONF_ERR_MAX 16
#define CONF_ERR_LEN 512
struct conf_err {
    size_t count;
    char msg[CONF_ERR_MAX][CONF_ERR_LEN];
};

/* Reads and validates the YAML file at path. Returns a new conf (caller owns; conf_destroy) or
 * NULL with err filled. Any thread; no global state. */
struct conf *conf_load(const char *path, struct conf_err *err);

/* Same from memory; name is used in error messages in place of the file name. */
struct conf *conf_parse(const char *name, const char *text, size_t len, struct conf_err *err);

/* Frees a conf and clears *c. Accepts NULL and *c == NULL. */
void conf_destroy(struct conf **c);

/* Value parsers, shared with the control API. Each returns 0 and stores the value, or -1 when the
 * text is not valid. Durations: "500ms", "2s", "1m", "1h", "1d" (integer + unit; "0" alone is 0).
 * Sizes: "512", "32k", "1m", "1g" (binary multiples). Percentages: "12.34" or "12.34%" with at
 * most two decimals, 0..100, stored as basis points. */
int conf_parse_duration(const char *s, uint64_t *ms);
int conf_parse_size(const char *s, uint64_t *bytes);
int conf_parse_percent(const char *s, uint32_t *bp);

/* "host:port", "[v6]:port", "*:port" (all IPv4), numeric hosts and "localhost" only. */
int conf_parse_addr(const char *s, struct conf_addr *out);

/* The port of an address (host order). */
unsigned conf_addr_port(const struct conf_addr *a);

/* "10.0.0.0/8", "::1/128", or a bare address (full prefix). */
int conf_parse_cidr(const char *s, struct conf_cidr *out);

/* Whether addr (AF_INET or AF_INET6 sockaddr; v4-mapped v6 matches v4 CIDRs) is in cidr. */
bool conf_cidr_match(const struct conf_cidr *cidr, const struct sockaddr *addr);

/* A rollout plan: "linear:10%/1m" (10,20..100, each held 1m), "canary:5%/5m" (5% for 5m, then
 * 100). Fills plan (caller frees plan->steps with free()). On failure writes a message to
 * err (errlen bytes) and returns -1. */
int conf_parse_plan_shorthand(const char *s, struct conf_plan *plan, char *err, size_t errlen);

/* "blue" / "green" → enum; -1 when neither. */
int conf_pool_from_name(const char *name);
const char *conf_pool_name(enum pool_id id);

/* Whether two optional strings are equal (both NULL, or the same text). */
bool conf_str_equal(const char *a, const char *b);

/* Whether two pools' upstream TLS settings are the same (connections and health checks made
 * under a stay valid under b). */
bool conf_upstream_tls_equal(const struct conf_upstream_tls *a, const struct conf_upstream_tls *b);

#endif
