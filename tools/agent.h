/*
 * agent.h: what the files of `evring agent` share. cli_agent.c is the
 * command (the loop: discovery, attach, detach, signals, the status file);
 * agent_conf.c reads its configuration (flags and the config file).
 */
#ifndef EVRING_TOOLS_AGENT_H
#define EVRING_TOOLS_AGENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define AGENT_MAX_HANDLERS 32
#define AGENT_MAX_FILTERS 32

/*
 * One configuration: from the command line, then the config file on top
 * (a key the file sets replaces what the flags said; a repeatable key the
 * file names replaces the flags' whole list). Strings are owned.
 */
struct agent_conf {
	char *handlers[AGENT_MAX_HANDLERS]; /* -H specs, in order */
	int nhandlers;
	char *programs[AGENT_MAX_FILTERS]; /* fnmatch globs on the program name; none: every program */
	int nprograms;
	uid_t uids[AGENT_MAX_FILTERS]; /* owners followed; none: every one the agent may read */
	int nuids;
	uint64_t rescan_ns;	/* the backstop rescan of /dev/shm */
	uint64_t timeout_ns;	/* per handler call */
	uint64_t flood_rate;	/* records a second that, held for flood_secs, detach a producer; 0: never */
	uint32_t flood_secs;
	uint64_t attach_wait_ns; /* how long a segment may stay unreadable (header not published) before it is refused */
	uint64_t metrics_interval_ns; /* 0: 1 s; EVR_METRICS_OFF: off (read once, at start) */
	char *experiment;	      /* the runs' experiment; NULL: "default" (read once, at start) */
	char *env_allow[AGENT_MAX_FILTERS + 1]; /* fnmatch patterns, NULL-terminated (read once, at start) */
	int nenv;
	char *status_path;	/* where the status is published */
	char *config_path;	/* the file itself (NULL: flags only) */
};

/* Frees what c owns and zeroes it. */
void agent_conf_free(struct agent_conf *c);

/* Copies src into dst (deep). Returns 0 or -ENOMEM. */
int agent_conf_copy(struct agent_conf *dst, const struct agent_conf *src);

/* Defaults: rescan 2 s, flood off, attach wait 1 s, the default status path. Returns 0 or -ENOMEM. */
int agent_conf_defaults(struct agent_conf *c);

/*
 * Reads the config file c->config_path over c. Returns 0, or -errno with
 * err set ("FILE:LINE: what is wrong"); c is then unchanged.
 */
int agent_conf_load(struct agent_conf *c, char *err, size_t errlen);

/* Whether the configuration follows a segment of this program and owner. */
bool agent_conf_follows(const struct agent_conf *c, const char *program, uid_t uid);

/* The default status path: $RUNTIME_DIRECTORY/status, /run/evring-agent/status as root, else per user under /tmp. */
char *agent_status_default(void);

#endif /* EVRING_TOOLS_AGENT_H */
