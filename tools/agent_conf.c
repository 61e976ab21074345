/*
 * agent_conf.c: the configuration of `evring agent` (agent.h).
 *
 * The config file is lines of "key = value"; '#' starts a comment line,
 * blank lines are ignored, spaces around key and value are trimmed. Keys:
 *
 *   handler = SPEC        a handler, as -H (repeatable, in order)
 *   program = GLOB        follow programs whose name matches (fnmatch; repeatable; none: all)
 *   uid = N               follow segments owned by this uid (repeatable; none: all it may read)
 *   rescan = S            seconds between rescans of /dev/shm (default 2)
 *   timeout-ms = N        per handler call (default 5000)
 *   flood = N[/S]         detach a producer that delivers more than N records a second for S
 *                         seconds in a row (default S 5; default N 0: never)
 *   attach-wait-ms = N    how long a new segment may stay unreadable before it is refused (default 1000)
 *   status = PATH         the status file (default: see agent_status_default)
 *   metrics-interval = S  seconds between samples of each process (default 1; 0: off)
 *   experiment = NAME     the runs' experiment name (default "default")
 *   env-allow = PATTERN   environment variables recorded as run params (repeatable; none by default)
 *
 * A key the file sets replaces what the command line said; for the
 * repeatable keys (handler, program, uid) the file's lines replace the
 * whole list. metrics-interval, experiment and env-allow are read at start
 * only: a run's settings do not change under it. An unknown key or a bad value is an error naming the file
 * and line: at start the agent exits; on SIGHUP it keeps the configuration
 * it runs with.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "cli.h"

void agent_conf_free(struct agent_conf *c)
{
	for (int i = 0; i < c->nhandlers; i++)
		free(c->handlers[i]);
	for (int i = 0; i < c->nprograms; i++)
		free(c->programs[i]);
	for (int i = 0; i < c->nenv; i++)
		free(c->env_allow[i]);
	free(c->experiment);
	free(c->status_path);
	free(c->config_path);
	memset(c, 0, sizeof(*c));
}

static int dup_into(char **dst, const char *s)
{
	*dst = s ? strdup(s) : NULL;
	return s && !*dst ? -ENOMEM : 0;
}

int agent_conf_copy(struct agent_conf *dst, const struct agent_conf *src)
{
	int rc = 0;

	*dst = *src;
	for (int i = 0; i < src->nhandlers; i++)
		rc |= dup_into(&dst->handlers[i], src->handlers[i]);
	for (int i = 0; i < src->nprograms; i++)
		rc |= dup_into(&dst->programs[i], src->programs[i]);
	for (int i = 0; i < src->nenv; i++)
		rc |= dup_into(&dst->env_allow[i], src->env_allow[i]);
	rc |= dup_into(&dst->experiment, src->experiment);
	rc |= dup_into(&dst->status_path, src->status_path);
	rc |= dup_into(&dst->config_path, src->config_path);
	if (rc) {
		agent_conf_free(dst);
		return -ENOMEM;
	}
	return 0;
}

char *agent_status_default(void)
{
	const char *rt = getenv("RUNTIME_DIRECTORY"); /* systemd's RuntimeDirectory= */
	char buf[512];

	if (rt && *rt) {
		char one[256];

		snprintf(one, sizeof(one), "%.*s", (int)strcspn(rt, ":"), rt); /* the first of several */
		snprintf(buf, sizeof(buf), "%s/status", one);
	} else if (geteuid() == 0) {
		snprintf(buf, sizeof(buf), "/run/evring-agent/status");
	} else {
		snprintf(buf, sizeof(buf), "/tmp/evring-agent.%u.status", (unsigned)geteuid());
	}
	return strdup(buf);
}

int agent_conf_defaults(struct agent_conf *c)
{
	memset(c, 0, sizeof(*c));
	c->rescan_ns = 2000000000ull;
	c->timeout_ns = 5000000000ull;
	c->flood_secs = 5;
	c->attach_wait_ns = 1000000000ull;
	c->status_path = agent_status_default();
	return c->status_path ? 0 : -ENOMEM;
}

bool agent_conf_follows(const struct agent_conf *c, const char *program, uid_t uid)
{
	bool ok = c->nprograms == 0;

	for (int i = 0; i < c->nprograms && !ok; i++)
		ok = fnmatch(c->programs[i], program ? program : "", 0) == 0;
	if (!ok)
		return false;
	if (c->nuids == 0)
		return true;
	for (int i = 0; i < c->nuids; i++)
		if (c->uids[i] == uid)
			return true;
	return false;
}

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = 0;
	return s;
}

/* Applies one "key = value" to n (lists: the file's first line of a key clears the flags' list). */
/*
 * A repeatable string key (handler, program): the first line of a file that
 * names it replaces the list the flags gave (*seen), the next ones append.
 */
static int list_put(char **list, int *n, int max, bool *seen, const char *val, const char *what, char *why,
		    size_t whylen)
{
	int rc;

	if (!*seen) {
		for (int i = 0; i < *n; i++) {
			free(list[i]);
			list[i] = NULL; /* env_allow is read as NULL-terminated: it ends at the first freed one */
		}
		*n = 0;
		*seen = true;
	}
	if (!*val || *n == max) {
		if (*val)
			snprintf(why, whylen, "at most %d %ss", max, what);
		else
			snprintf(why, whylen, "an empty %s", what);
		return -EINVAL;
	}
	rc = dup_into(&list[*n], val);
	if (rc == 0)
		++*n;
	return rc;
}

static int apply(struct agent_conf *n, const char *key, const char *val, bool *seen_list, char *why, size_t whylen)
{
	uint64_t v;
	char *slash;

	if (!strcmp(key, "handler"))
		return list_put(n->handlers, &n->nhandlers, AGENT_MAX_HANDLERS, &seen_list[0], val, "handler", why, whylen);
	if (!strcmp(key, "program"))
		return list_put(n->programs, &n->nprograms, AGENT_MAX_FILTERS, &seen_list[1], val, "program", why, whylen);
	if (!strcmp(key, "uid")) {
		if (!seen_list[2]) {
			n->nuids = 0;
			seen_list[2] = true;
		}
		if (!evr_cli_uint(val, UINT32_MAX - 1, &v) || n->nuids == AGENT_MAX_FILTERS) {
			snprintf(why, whylen, "uid wants a number (at most %d of them), not '%s'", AGENT_MAX_FILTERS, val);
			return -EINVAL;
		}
		n->uids[n->nuids++] = (uid_t)v;
		return 0;
	}
	if (!strcmp(key, "rescan")) {
		if (!evr_cli_seconds(val, &v) || v < 10000000ull) {
			snprintf(why, whylen, "rescan wants seconds, at least 0.01, not '%s'", val);
			return -EINVAL;
		}
		n->rescan_ns = v;
		return 0;
	}
	if (!strcmp(key, "timeout-ms")) {
		if (!evr_cli_uint(val, UINT64_MAX / 1000000, &v) || !v) {
			snprintf(why, whylen, "timeout-ms wants milliseconds > 0, not '%s'", val);
			return -EINVAL;
		}
		n->timeout_ns = v * 1000000;
		return 0;
	}
	if (!strcmp(key, "attach-wait-ms")) {
		if (!evr_cli_uint(val, 3600000, &v) || !v) {
			snprintf(why, whylen, "attach-wait-ms wants milliseconds > 0, not '%s'", val);
			return -EINVAL;
		}
		n->attach_wait_ns = v * 1000000;
		return 0;
	}
	if (!strcmp(key, "flood")) {
		char num[64];
		uint64_t secs = 5;

		snprintf(num, sizeof(num), "%s", val);
		if ((slash = strchr(num, '/')) != NULL) {
			*slash = 0;
			if (!evr_cli_uint(slash + 1, 3600, &secs) || !secs) {
				snprintf(why, whylen, "flood wants RECORDS[/SECONDS], not '%s'", val);
				return -EINVAL;
			}
		}
		if (!evr_cli_uint(num, UINT64_MAX, &v)) {
			snprintf(why, whylen, "flood wants RECORDS[/SECONDS], not '%s'", val);
			return -EINVAL;
		}
		n->flood_rate = v;
		n->flood_secs = (uint32_t)secs;
		return 0;
	}
	if (!strcmp(key, "env-allow"))
		return list_put(n->env_allow, &n->nenv, AGENT_MAX_FILTERS, &seen_list[3], val, "env-allow pattern", why,
				whylen);
	if (!strcmp(key, "metrics-interval")) {
		if (!evr_cli_seconds(val, &v)) {
			snprintf(why, whylen, "metrics-interval wants seconds, 0 (off) to 1e9, not '%s'", val);
			return -EINVAL;
		}
		n->metrics_interval_ns = v ? v : EVR_METRICS_OFF;
		return 0;
	}
	if (!strcmp(key, "experiment")) {
		if (!*val) {
			snprintf(why, whylen, "experiment wants a name");
			return -EINVAL;
		}
		free(n->experiment);
		return dup_into(&n->experiment, val);
	}
	if (!strcmp(key, "status")) {
		if (!*val) {
			snprintf(why, whylen, "status wants a path");
			return -EINVAL;
		}
		free(n->status_path);
		return dup_into(&n->status_path, val);
	}
	snprintf(why, whylen, "unknown key '%s' (handler, program, uid, rescan, timeout-ms, flood, attach-wait-ms, status, "
		 "metrics-interval, experiment, env-allow)",
		 key);
	return -EINVAL;
}

int agent_conf_load(struct agent_conf *c, char *err, size_t errlen)
{
	struct agent_conf n;
	bool seen_list[4] = { false, false, false, false };
	char *line = NULL, why[256];
	size_t cap = 0;
	int lineno = 0, rc = 0;
	FILE *f;

	if (!c->config_path)
		return 0;
	if (!(f = fopen(c->config_path, "re"))) {
		rc = -errno;
		snprintf(err, errlen, "cannot read config %s: %s", c->config_path, strerror(errno));
		return rc;
	}
	if (agent_conf_copy(&n, c)) {
		fclose(f);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	while (getline(&line, &cap, f) > 0) {
		char *s = trim(line), *eq;

		lineno++;
		if (!*s || *s == '#')
			continue;
		if (!(eq = strchr(s, '='))) {
			snprintf(err, errlen, "%s:%d: wants key = value, not '%s'", c->config_path, lineno, s);
			rc = -EINVAL;
			break;
		}
		*eq = 0;
		rc = apply(&n, trim(s), trim(eq + 1), seen_list, why, sizeof(why));
		if (rc) {
			snprintf(err, errlen, "%s:%d: %s", c->config_path, lineno, rc == -ENOMEM ? "out of memory" : why);
			break;
		}
	}
	free(line);
	fclose(f);
	if (rc) {
		agent_conf_free(&n);
		return rc;
	}
	agent_conf_free(c);
	*c = n;
	return 0;
}
