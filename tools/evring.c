/*
 * evring: the command-line tool. One binary, a subcommand per job:
 *
 *   evring ls [--json] [--clean [--all-users]] live segments on this machine
 *   evring attach PID|NAME... [-H h[=arg]]   run handlers over live processes
 *   evring record PID|NAME -o FILE           write a capture file
 *   evring replay FILE [-H h[=arg]]          run handlers over a capture
 *   evring stats PID|NAME [--json]           a segment's counters, read-only
 *   evring top PID|NAME [--once]             a live table per span name
 *   evring agent [--config FILE] [-H h[=arg]] follow every process as it comes and goes
 *   evring runs DB [--compare RUN_A RUN_B]   the runs a run store (-H sqlite=DB) holds
 *
 * Exit statuses: see cli.h (0 ok, 2 usage, 3 no such process, 4 no segment,
 * 5 permission denied, 6 ABI version, 7 all consumer slots held, 8 bad input,
 * 9 a handler failed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int evr_cli_exit_of(int rc)
{
	switch (rc) {
	case 0:
		return EVR_EXIT_OK;
	case -ESRCH:
		return EVR_EXIT_NO_PROCESS;
	case -ENOENT:
		return EVR_EXIT_NO_SEGMENT;
	case -EACCES:
	case -EPERM:
		return EVR_EXIT_ACCESS;
	case -EPROTO:
		return EVR_EXIT_ABI;
	case -EBUSY:
		return EVR_EXIT_BUSY;
	case -EBADMSG:
		return EVR_EXIT_BAD_INPUT;
	case -EINVAL:
		return EVR_EXIT_USAGE;
	default:
		return EVR_EXIT_FAIL;
	}
}

int evr_cli_fail(const char *cmd, int status, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "evring %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return status;
}

bool evr_cli_uint(const char *s, uint64_t max, uint64_t *v)
{
	char *end;
	unsigned long long x;

	if (!s || !*s || *s == '-' || *s == '+')
		return false;
	errno = 0;
	x = strtoull(s, &end, 10);
	if (errno || *end || x > max)
		return false;
	*v = x;
	return true;
}

bool evr_cli_seconds(const char *s, uint64_t *ns)
{
	char *end;
	double x;

	if (!s || !*s || *s == '-' || *s == '+')
		return false;
	errno = 0;
	x = strtod(s, &end);
	if (errno || *end || !(x >= 0) || x > 1e9)
		return false;
	*ns = (uint64_t)(x * 1e9 + 0.5);
	return true;
}

int evr_cli_attach(const char *cmd, struct evr_consumer *c, const char *target, unsigned flags)
{
	char err[512] = "";
	uint64_t pid;
	int rc;

	if (evr_cli_uint(target, UINT32_MAX, &pid))
		rc = evr_consumer_attach_pid(c, (uint32_t)pid, flags, err, sizeof(err));
	else
		rc = evr_consumer_attach_name(c, target, flags, err, sizeof(err));
	if (rc < 0)
		return evr_cli_fail(cmd, evr_cli_exit_of(rc), "%s", err[0] ? err : strerror(-rc));
	return 0;
}

static volatile int *stop_flag;
static struct evr_consumer *stop_consumer;
volatile int evr_cli_output_closed;

static void on_signal(int sig)
{
	if (sig == SIGPIPE)
		evr_cli_output_closed = 1;
	if (stop_flag)
		*stop_flag = 1;
	if (stop_consumer)
		evr_consumer_stop(stop_consumer); /* async-signal-safe */
}

void evr_cli_signals(volatile int *flag, struct evr_consumer *c)
{
	struct sigaction sa;

	stop_flag = flag;
	stop_consumer = c;
	if (!flag && !c)
		return; /* forgotten: a second signal now takes the default action */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESETHAND; /* the first stops the run cleanly; a second one kills */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	/* A closed output ends the run; every later write fails with EPIPE, which is not reported. */
	sa.sa_flags = 0;
	sigaction(SIGPIPE, &sa, NULL);
}

int evr_cli_getopt(const char *cmd, int argc, char **argv, const char *shortopts, const struct option *longopts)
{
	char opts[64];
	int ch;

	snprintf(opts, sizeof(opts), ":%s", shortopts); /* ':' tells a missing value from an unknown option */
	opterr = 0;
	ch = getopt_long(argc, argv, opts, longopts, NULL);
	if (ch == ':') {
		if (optopt > 0 && optopt < 128)
			evr_cli_fail(cmd, EVR_EXIT_USAGE, "option -%c wants a value (try evring %s --help)", optopt, cmd);
		else
			evr_cli_fail(cmd, EVR_EXIT_USAGE, "option '%s' wants a value (try evring %s --help)",
				     argv[optind - 1], cmd);
		return '?';
	}
	if (ch == '?') {
		if (optopt > 0 && optopt < 128)
			evr_cli_fail(cmd, EVR_EXIT_USAGE, "unknown option '-%c' (try evring %s --help)", optopt, cmd);
		else
			evr_cli_fail(cmd, EVR_EXIT_USAGE, "unknown option '%s' (try evring %s --help)", argv[optind - 1],
				     cmd);
	}
	return ch;
}

void evr_cli_version(FILE *f)
{
	fprintf(f, "evring %s\n", EVR_VERSION);
}

void evr_cli_summary(const char *cmd, struct evr_consumer *c)
{
	struct evr_consumer_stats st;
	struct evr_handler_stats hs[64];
	int n;

	evr_consumer_stats(c, &st);
	/*
	 * What was delivered first (events and spans: a replay of a capture
	 * gives the same figures as the live run that wrote it), then the
	 * records read, named by where from: a lane holds records a capture
	 * does not keep as records (THREAD records, for one), so the two counts
	 * differ with identical output.
	 */
	fprintf(stderr,
		"evring %s: %llu events, %llu spans, %llu lost, %llu skipped, %llu handler timeouts"
		" (%llu records read from %s, %llu late, %llu bad, %llu handler errors, %llu ring skips,"
		" %llu abandoned spans, %llu segments faulted)\n",
		cmd, (unsigned long long)st.events, (unsigned long long)st.spans_ended, (unsigned long long)st.lost,
		(unsigned long long)st.handler_skipped, (unsigned long long)st.handler_timeouts,
		(unsigned long long)st.records, strcmp(cmd, "replay") ? "the lanes" : "the capture",
		(unsigned long long)st.late, (unsigned long long)st.bad, (unsigned long long)st.handler_errors,
		(unsigned long long)st.ring_skipped, (unsigned long long)st.spans_abandoned,
		(unsigned long long)st.segments_faulted);
	if (st.metrics_unreadable || st.run_params_bad)
		fprintf(stderr,
			"evring %s: %llu metric samples, %llu runs; %llu /proc reads failed (their samples left out), "
			"%llu run params malformed (skipped)\n",
			cmd, (unsigned long long)st.metrics, (unsigned long long)st.runs,
			(unsigned long long)st.metrics_unreadable, (unsigned long long)st.run_params_bad);
	n = evr_consumer_handler_stats(c, hs, (int)(sizeof(hs) / sizeof(hs[0])));
	for (int i = 0; i < n; i++)
		if (hs[i].skipped || hs[i].errors || hs[i].timeouts || hs[i].crashes)
			fprintf(stderr,
				"evring %s: handler %s: %llu delivered, %llu skipped (queue full, stalled, or its "
				"plug-in process down), %llu errors, %llu timeouts, %llu crashes\n",
				cmd, hs[i].name, (unsigned long long)hs[i].delivered, (unsigned long long)hs[i].skipped,
				(unsigned long long)hs[i].errors, (unsigned long long)hs[i].timeouts,
				(unsigned long long)hs[i].crashes);
	for (int i = 0; i < n; i++)
		if (hs[i].exported || hs[i].export_retries || hs[i].export_dropped || hs[i].export_failed)
			fprintf(stderr,
				"evring %s: handler %s: %llu exported, %llu requests retried, %llu dropped unsent, "
				"%llu failed\n",
				cmd, hs[i].name, (unsigned long long)hs[i].exported,
				(unsigned long long)hs[i].export_retries, (unsigned long long)hs[i].export_dropped,
				(unsigned long long)hs[i].export_failed);
}

static const struct {
	const char *name;
	int (*fn)(int, char **);
	const char *what;
} commands[] = {
	{ "ls", evr_cmd_ls, "list the live evring segments on this machine" },
	{ "attach", evr_cmd_attach, "attach to live processes and run handlers" },
	{ "record", evr_cmd_record, "write a capture file from a live process" },
	{ "replay", evr_cmd_replay, "run handlers over a capture file" },
	{ "stats", evr_cmd_stats, "print a segment's counters (read-only)" },
	{ "top", evr_cmd_top, "a live table per span name: rate, latency, errors, tokens" },
	{ "agent", evr_cmd_agent, "follow every traced process on this machine as it comes and goes" },
	{ "runs", evr_cmd_runs, "list the runs of a run store (-H sqlite=DB), or compare two" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: evring COMMAND [ARGS]   (evring COMMAND --help for each)\n\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-7s %s\n", commands[i].name, commands[i].what);
	fprintf(f, "\n  evring --version   the version\n"
		   "\nexamples:\n"
		   "  evring ls                                  what is traced on this machine\n"
		   "  evring attach 1234 -H stats --duration 10  a latency table for ten seconds\n"
		   "  evring top my-server                       a live view of every my-server process\n"
		   "  evring agent -H jsonl=all.jsonl            every process, as they come and go\n"
		   "\nexit status: 0 ok, 1 failure, 2 usage, 3 no such process, 4 no evring segment,\n"
		   "             5 permission denied, 6 other ABI version, 7 all consumer slots held, 8 bad input,\n"
		   "             9 a handler failed (errors, timeouts, output it could not write)\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EVR_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return EVR_EXIT_OK;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
		evr_cli_version(stdout);
		return EVR_EXIT_OK;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "evring: unknown command '%s' (try evring --help)\n", argv[1]);
	return EVR_EXIT_USAGE;
}
