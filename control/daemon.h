/* control/daemon.h — the main thread: builds the first snapshot and the listening sockets, runs
 * the workers, and handles signals (graceful stop, reload, log reopen). */
#ifndef CONTROL_DAEMON_H
#define CONTROL_DAEMON_H

#include "conf/conf.h"

/* Runs the proxy with conf (ownership taken) until it is stopped by SIGTERM/SIGINT. Returns the
 * process exit status: 0 after a graceful stop, 1 when start-up failed. Main thread. */
int daemon_run(struct conf *conf);

#endif
