/*
 * cli_attach.c: `evring attach`, `evring record` and `evring replay`: a
 * consumer over live processes or over a capture file, with handlers given
 * as -H specs (the built-ins of <evring/consumer.h>, plugin=PATH.so[,isolate][:ARG], and
 * python=MODULE:CLASS[,isolate][:ARG]: the plug-in evring-python-handler.so).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define MAX_HANDLERS 32

struct run_opts {
	const char *handlers[MAX_HANDLERS];
	int nhandlers;
	uint64_t duration_ns;
	uint64_t timeout_ns;
	unsigned flags;
	const char *filter;
	const char *output; /* record: -o */
	bool raw;	    /* record: --raw */
	uint64_t metrics_interval_ns; /* 0: the default (1 s); EVR_METRICS_OFF: --metrics-interval 0 */
	const char *experiment;
	const char *env_allow[MAX_HANDLERS + 1]; /* NULL-terminated */
	int nenv;
};

enum {
	OPT_DURATION = 256,
	OPT_TIMEOUT,
	OPT_FROM,
	OPT_FILTER,
	OPT_ALLOW_WRITABLE,
	OPT_RAW,
	OPT_METRICS_INTERVAL,
	OPT_EXPERIMENT,
	OPT_ENV_ALLOW
};

static const struct option run_options[] = {
	{ "handler", required_argument, NULL, 'H' },  { "duration", required_argument, NULL, OPT_DURATION },
	{ "timeout-ms", required_argument, NULL, OPT_TIMEOUT }, { "from", required_argument, NULL, OPT_FROM },
	{ "filter", required_argument, NULL, OPT_FILTER },    { "output", required_argument, NULL, 'o' },
	{ "allow-writable", no_argument, NULL, OPT_ALLOW_WRITABLE }, { "raw", no_argument, NULL, OPT_RAW },
	{ "metrics-interval", required_argument, NULL, OPT_METRICS_INTERVAL },
	{ "experiment", required_argument, NULL, OPT_EXPERIMENT },
	{ "env-allow", required_argument, NULL, OPT_ENV_ALLOW },
	{ "help", no_argument, NULL, 'h' },		      { NULL, 0, NULL, 0 }
};

static const char handler_help[] =
	"  -H, --handler SPEC   a handler (repeatable): tail, debug, tokens, stats, jsonl[=PATH]\n"
	"                       (default PATH evring.log), chrome=PATH, plugin=PATH.so[,isolate][:ARG]\n"
	"                       (a PATH.so without '/' is taken from the current directory if there,\n"
	"                       else from the library path; ,isolate runs it in a process of its own,\n"
	"                       restarted when it crashes, so a crash does not end the run),\n"
	"                       otlp[=URL][,encoding=json][,compression=gzip][,timeout=MS][,queue=MIB]\n"
	"                       [,flush=MS][,service=NAME] (OTLP/HTTP to a Collector; default URL\n"
	"                       $OTEL_EXPORTER_OTLP_ENDPOINT, else http://localhost:4318),\n"
	"                       sqlite=PATH[,experiment=NAME][,batch=N][,flush-ms=T][,busy-ms=T]\n"
	"                       (the run store: runs, spans, events, metrics, logs in SQLite;\n"
	"                       evring runs PATH lists them),\n"
	"                       python=MODULE:CLASS[,isolate][:ARG] (a handler written in Python:\n"
	"                       CLASS(ARG) from MODULE, found in the current directory or on PYTHONPATH)\n";

static const char metrics_help[] =
	"  --metrics-interval S sample each process's CPU, memory, threads, fds, context switches and\n"
	"                       io from /proc every S seconds (default 1; 0: off); the host once\n"
	"  --experiment NAME    the experiment the runs belong to (default \"default\")\n"
	"  --env-allow PATTERN  record the producer's environment variables whose names match this\n"
	"                       fnmatch pattern as run params env.NAME (repeatable; default none)\n";

static const char run_help[] =
	"  The run exits 9 when a handler failed (returned errors, timed out, or could not write\n"
	"  its output), and quietly when its standard output is closed (`... | head`).\n";

static void attach_usage(FILE *f)
{
	fprintf(f,
		"usage: evring attach PID|NAME... [-H SPEC]... [--duration S] [--timeout-ms N]\n"
		"                     [--from now|oldest] [--filter DISPATCHER] [--allow-writable]\n"
		"                     [--metrics-interval S] [--experiment NAME] [--env-allow PATTERN]...\n"
		"  Attaches to live processes and runs the handlers until every process exits, SIGINT,\n"
		"  or the duration ends; then prints a one-line summary on stderr. Default handler: tail.\n"
		"  NAME: a segment name (/evring.PID.NAME or PID.NAME) or a program name (all its processes).\n"
		"%s"
		"  --duration S         stop after S seconds (fractions allowed)\n"
		"  --timeout-ms N       per handler call timeout (default 5000)\n"
		"  --from now|oldest    start with what is written from now (default) or read what the lanes still hold\n"
		"  --filter DISPATCHER  only records of this dispatcher and those below it that propagate\n"
		"  --allow-writable     attach to a segment others may write (refused otherwise, exit 5)\n"
		"%s%s"
		"examples:\n"
		"  evring attach 1234                               a line per event and span end, as they come\n"
		"  evring attach my-server -H stats --duration 30   latency per span name over 30 s, every process\n"
		"  evring attach 1234 -H debug -H chrome=trace.json --from oldest\n"
		"                                                   trace trees, and a file for ui.perfetto.dev\n",
		handler_help, metrics_help, run_help);
}

static void record_usage(FILE *f)
{
	fprintf(f,
		"usage: evring record PID|NAME... -o FILE [--raw] [--duration S] [-H SPEC]... [--from now|oldest]\n"
		"                     [--filter DISPATCHER] [--timeout-ms N] [--allow-writable]\n"
		"                     [--metrics-interval S] [--experiment NAME] [--env-allow PATTERN]...\n"
		"  Writes a capture file (a msgpack stream: a header, the metadata, every record in the\n"
		"  order it was delivered) until the processes exit, SIGINT, or the duration ends.\n"
		"  Handlers given with -H run live as well. `evring replay FILE` runs handlers over it.\n"
		"  -o, --output FILE    the capture file (created or truncated)\n"
		"  --raw                copy the lanes' committed record bytes as they are, at memory speed,\n"
		"                       with the metadata, clock mapping, LOST records and deaths; decoding,\n"
		"                       merging and span building wait for `evring replay` (with -H: also\n"
		"                       decoded live, as the replay will decode them)\n"
		"%s"
		"  --duration S         stop after S seconds (fractions allowed)\n"
		"  --timeout-ms N       per handler call timeout for the -H handlers (default 5000)\n"
		"  --from now|oldest    start with what is written from now (default) or read what the lanes still hold\n"
		"  --filter DISPATCHER  handlers see only this dispatcher and those below it that propagate;\n"
		"                       the capture keeps every record\n"
		"  --allow-writable     record a segment others may write (refused otherwise, exit 5)\n"
		"%s%s"
		"examples:\n"
		"  evring record 1234 -o run.evr --duration 60      a minute of one process, decoded later\n"
		"  evring record my-server -o run.evr -H stats      every my-server process, with a live table\n"
		"  evring record 1234 -o /dev/shm/run.evr --raw     the lanes' bytes, decoded at replay\n",
		handler_help, metrics_help, run_help);
}

static void replay_usage(FILE *f)
{
	fprintf(f,
		"usage: evring replay FILE [-H SPEC]... [--filter DISPATCHER] [--timeout-ms N]\n"
		"  Runs handlers over a capture file written by `evring record`: the same records in the\n"
		"  same order as the live run, so the same output. Default handler: tail.\n"
		"%s"
		"  --filter DISPATCHER  only records of this dispatcher and those below it that propagate\n"
		"  --timeout-ms N       per handler call timeout (default 5000; offline, a slow handler is waited for)\n"
		"%s"
		"examples:\n"
		"  evring replay run.evr -H debug                   the trace trees of a recorded run\n"
		"  evring replay run.evr -H jsonl=run.jsonl --filter llm\n"
		"                                                   the LLM records as JSON lines\n",
		handler_help, run_help);
}

/*
 * Handler failures, counted as the consumer reports them (on_error, from
 * the handler threads) and printed here: the first few, then at powers of
 * two. Writes that failed because the output was closed are not failures.
 */
static struct {
	const char *cmd;
	struct evr_consumer *c;
	uint64_t failures;
} fails;

/* Parses the options the three commands share; returns 0, -1 for --help, or an exit status. */
static int parse(const char *cmd, int argc, char **argv, struct run_opts *o, void (*usage)(FILE *))
{
	uint64_t v;
	int ch;

	memset(o, 0, sizeof(*o));
	fails.cmd = cmd;
	optind = 0; /* a full reset of getopt, as for a new program */
	while ((ch = evr_cli_getopt(cmd, argc, argv, "H:o:h", run_options)) != -1) {
		switch (ch) {
		case 'H':
			if (o->nhandlers == MAX_HANDLERS)
				return evr_cli_fail(cmd, EVR_EXIT_USAGE, "at most %d handlers", MAX_HANDLERS);
			o->handlers[o->nhandlers++] = optarg;
			break;
		case 'o':
			o->output = optarg;
			break;
		case OPT_DURATION:
			if (!evr_cli_seconds(optarg, &o->duration_ns) || o->duration_ns == 0)
				return evr_cli_fail(cmd, EVR_EXIT_USAGE,
						    "--duration wants seconds, more than 0 and at most 1e9, not '%s'", optarg);
			break;
		case OPT_TIMEOUT:
			if (!evr_cli_uint(optarg, UINT64_MAX / 1000000, &v) || v == 0)
				return evr_cli_fail(cmd, EVR_EXIT_USAGE, "--timeout-ms wants milliseconds > 0, not '%s'",
						    optarg);
			o->timeout_ns = v * 1000000;
			break;
		case OPT_FROM:
			if (!strcmp(optarg, "oldest"))
				o->flags |= EVR_ATTACH_FROM_OLDEST;
			else if (strcmp(optarg, "now") != 0)
				return evr_cli_fail(cmd, EVR_EXIT_USAGE, "--from wants now or oldest, not '%s'", optarg);
			break;
		case OPT_FILTER:
			o->filter = optarg;
			break;
		case OPT_ALLOW_WRITABLE:
			o->flags |= EVR_ATTACH_ALLOW_WRITABLE;
			break;
		case OPT_RAW:
			o->raw = true;
			break;
		case OPT_METRICS_INTERVAL:
			if (!evr_cli_seconds(optarg, &o->metrics_interval_ns))
				return evr_cli_fail(cmd, EVR_EXIT_USAGE,
						    "--metrics-interval wants seconds, 0 (off) to 1e9, not '%s'", optarg);
			if (o->metrics_interval_ns == 0)
				o->metrics_interval_ns = EVR_METRICS_OFF;
			break;
		case OPT_EXPERIMENT:
			if (!*optarg)
				return evr_cli_fail(cmd, EVR_EXIT_USAGE, "--experiment wants a name");
			o->experiment = optarg;
			break;
		case OPT_ENV_ALLOW:
			if (o->nenv == MAX_HANDLERS)
				return evr_cli_fail(cmd, EVR_EXIT_USAGE, "at most %d --env-allow patterns", MAX_HANDLERS);
			if (!*optarg)
				return evr_cli_fail(cmd, EVR_EXIT_USAGE, "--env-allow wants a pattern");
			o->env_allow[o->nenv++] = optarg;
			break;
		case 'h':
			usage(stdout);
			return -1;
		default: /* evr_cli_getopt said which option */
			return EVR_EXIT_USAGE;
		}
	}
	return 0;
}


static void on_handler_error(void *arg, const struct evr_handler_error *e)
{
	struct evr_consumer *c = __atomic_load_n(&fails.c, __ATOMIC_ACQUIRE);
	uint64_t n;

	(void)arg;
	if (e->rc == -EPIPE) { /* the reader went away (a handler thread may block SIGPIPE): stop, quietly */
		evr_cli_output_closed = 1;
		if (c)
			evr_consumer_stop(c);
	}
	if (evr_cli_output_closed)
		return;
	if (e->message) { /* an isolated plug-in's process: counted in the summary as crashes, not a failure */
		fprintf(stderr, "evring %s: handler \"%s\": %s\n", fails.cmd, e->handler, e->message);
		return;
	}
	n = __atomic_add_fetch(&fails.failures, 1, __ATOMIC_RELAXED);
	if (n > 8 && (n & (n - 1)))
		return;
	if (e->timeout)
		fprintf(stderr, "evring %s: handler \"%s\" %s(\"%s\") overran its timeout (%.2f s); %llu failure%s so far\n",
			fails.cmd, e->handler, e->callback, e->what ? e->what : "", (double)e->elapsed_ns / 1e9,
			(unsigned long long)n, n == 1 ? "" : "s");
	else
		fprintf(stderr, "evring %s: handler \"%s\" %s(\"%s\") failed: %s; %llu failure%s so far\n", fails.cmd,
			e->handler, e->callback, e->what ? e->what : "",
			e->rc < 0 && e->rc > -4096 ? strerror(-e->rc) : "returned an error", (unsigned long long)n,
			n == 1 ? "" : "s");
}

/*
 * The plug-in behind -H python=: $EVRING_PYTHON_HANDLER, else
 * evring-python-handler.so beside this program (the build tree, or an
 * install that put both in one place), else where evring installed it.
 */
static bool python_plugin(char *out, size_t n)
{
	const char *env = getenv("EVRING_PYTHON_HANDLER");
	char self[PATH_MAX];
	ssize_t len;

	if (env && *env) {
		snprintf(out, n, "%s", env);
		return true;
	}
	len = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (len > 0) {
		char *slash;

		self[len] = 0;
		if ((slash = strrchr(self, '/')) != NULL) {
			snprintf(out, n, "%.*s/evring-python-handler.so", (int)(slash - self), self);
			if (access(out, R_OK) == 0)
				return true;
		}
	}
#ifdef EVR_PYTHON_HANDLER_INSTALLED
	snprintf(out, n, "%s", EVR_PYTHON_HANDLER_INSTALLED);
	if (access(out, R_OK) == 0)
		return true;
#endif
	return false;
}

/*
 * "python=MODULE:CLASS[,isolate][:ARG]" as the plug-in spec
 * "plugin=PATH[,isolate]:MODULE:CLASS[:ARG]" in buf; 0, -EINVAL (a bad
 * spec), -ENOPKG (no plug-in) or -ENAMETOOLONG, with err set.
 */
static int python_spec(const char *spec, char *buf, size_t n, char *err, size_t errlen)
{
	const char *mod = spec + strlen("python="), *colon = strchr(mod, ':'), *cls, *rest;
	char path[PATH_MAX];
	size_t clen;
	bool isolate = false;

	if (!colon || colon == mod || !colon[1])
		goto usage;
	cls = colon + 1;
	clen = strcspn(cls, ":,");
	rest = cls + clen;
	if (clen == 0)
		goto usage;
	if (*rest == ',') {
		if (strncmp(rest, ",isolate", 8) != 0 || (rest[8] != 0 && rest[8] != ':')) {
			snprintf(err, errlen, "-H python: the only option is ,isolate (in '%s')", spec);
			return -EINVAL;
		}
		isolate = true;
		rest += 8;
	}
	if (!python_plugin(path, sizeof(path))) {
		snprintf(err, errlen,
			 "-H %s: the Python handler plug-in evring-python-handler.so is neither beside this program nor "
			 "installed (EVRING_PYTHON_HANDLER names it; it is not built where CMake found no libpython to "
			 "embed)",
			 spec);
		return -ENOPKG;
	}
	if ((size_t)snprintf(buf, n, "plugin=%s%s:%.*s:%.*s%s", path, isolate ? ",isolate" : "", (int)(colon - mod), mod,
			     (int)clen, cls, rest) >= n) {
		snprintf(err, errlen, "-H %s: too long", spec);
		return -ENAMETOOLONG;
	}
	return 0;
usage:
	snprintf(err, errlen, "-H python wants MODULE:CLASS[,isolate][:ARG], not '%s'", spec);
	return -EINVAL;
}

int evr_cli_add_handler(struct evr_consumer *c, const char *spec, FILE *out, char *err, size_t errlen)
{
	char pyspec[PATH_MAX + 1024];

	if (!strncmp(spec, "python=", 7)) {
		int rc = python_spec(spec, pyspec, sizeof(pyspec), err, errlen);

		if (rc < 0)
			return rc;
		spec = pyspec;
	}
	return evr_consumer_add_builtin(c, spec, out, err, errlen);
}

bool evr_cli_handler_usage(const char *spec, int rc)
{
	/* A spec that names nothing loadable is the command line's fault; an output it cannot write is not. */
	return rc == -EINVAL || rc == -ENAMETOOLONG ||
	       ((!strncmp(spec, "plugin=", 7) || !strncmp(spec, "python=", 7)) && rc != -ENOMEM && rc != -ENOPKG);
}

/* A consumer with the handlers of o; NULL with *status set on failure. */
static struct evr_consumer *consumer_new(const char *cmd, const struct run_opts *o, const char *dflt, int *status)
{
	struct evr_consumer_opts co = { .timeout_ns = o->timeout_ns,
					.dispatcher = o->filter,
					.on_error = on_handler_error,
					.quiet = true,
					.metrics_interval_ns = o->metrics_interval_ns,
					.experiment = o->experiment,
					.env_allow = o->env_allow };
	char err[512] = "";
	struct evr_consumer *c = evr_consumer_new(&co, err, sizeof(err));

	if (!c) {
		*status = evr_cli_fail(cmd, EVR_EXIT_FAIL, "%s", err);
		return NULL;
	}
	__atomic_store_n(&fails.c, c, __ATOMIC_RELEASE);
	for (int i = 0; i < o->nhandlers || (i == 0 && dflt); i++) {
		const char *spec = o->nhandlers ? o->handlers[i] : dflt;
		int rc = evr_cli_add_handler(c, spec, stdout, err, sizeof(err));

		if (rc < 0) {
			*status = evr_cli_fail(cmd, evr_cli_handler_usage(spec, rc) ? EVR_EXIT_USAGE : EVR_EXIT_FAIL, "%s", err);
			evr_consumer_close(c);
			return NULL;
		}
		if (!o->nhandlers)
			break;
	}
	return c;
}

static int attach_all(const char *cmd, struct evr_consumer *c, int argc, char **argv, unsigned flags)
{
	for (int i = optind; i < argc; i++) {
		int status = evr_cli_attach(cmd, c, argv[i], flags);
		if (status)
			return status;
	}
	return 0;
}

/* Runs the live consumer; returns an exit status. */
static volatile int stop_requested; /* static: a signal handler may still write it after run_live */

static int run_live(const char *cmd, struct evr_consumer *c, const struct run_opts *o)
{
	int rc;

	evr_cli_signals(&stop_requested, c);
	rc = evr_consumer_run(c, o->duration_ns, &stop_requested);
	if (rc < 0)
		return evr_cli_fail(cmd, EVR_EXIT_FAIL, "%s", strerror(-rc));
	return EVR_EXIT_OK;
}

/*
 * Closes the consumer (handlers flush and print their last output, and may
 * fail doing it), then gives the run's status: a closed output ends it
 * quietly with 0, a handler that failed makes it 9.
 */
static int finish(const char *cmd, struct evr_consumer *c, int status)
{
	evr_cli_signals(&stop_requested, NULL); /* still catches SIGPIPE; no longer stops c */
	__atomic_store_n(&fails.c, NULL, __ATOMIC_RELEASE);
	evr_consumer_close(c); /* the handler threads are gone when it returns */
	evr_cli_signals(NULL, NULL);
	if (!evr_cli_output_closed && fflush(stdout) != 0) {
		if (errno == EPIPE)
			return status; /* closed at the very end: as quiet as before */
		if (status == EVR_EXIT_OK)
			status = evr_cli_fail(cmd, EVR_EXIT_FAIL, "cannot write output: %s", strerror(errno));
	}
	if (evr_cli_output_closed)
		return status;
	if (status == EVR_EXIT_OK && fails.failures) {
		fprintf(stderr, "evring %s: %llu handler failure%s: exit status 9\n", cmd,
			(unsigned long long)fails.failures, fails.failures == 1 ? "" : "s");
		status = EVR_EXIT_HANDLER;
	}
	return status;
}

int evr_cmd_attach(int argc, char **argv)
{
	struct run_opts o;
	struct evr_consumer *c;
	int status = parse("attach", argc, argv, &o, attach_usage);

	if (status)
		return status < 0 ? EVR_EXIT_OK : status;
	if (o.output || o.raw)
		return evr_cli_fail("attach", EVR_EXIT_USAGE, "-o and --raw are for evring record");
	if (optind == argc)
		return evr_cli_fail("attach", EVR_EXIT_USAGE, "wants a PID or NAME (try evring attach --help)");
	if (!(c = consumer_new("attach", &o, "tail", &status)))
		return status;
	status = attach_all("attach", c, argc, argv, o.flags);
	if (!status)
		status = run_live("attach", c, &o);
	evr_consumer_end(c); /* the last records delivered, the handlers ended: the summary is final */
	if (!status && !evr_cli_output_closed)
		evr_cli_summary("attach", c);
	return finish("attach", c, status);
}

int evr_cmd_record(int argc, char **argv)
{
	struct run_opts o;
	struct evr_consumer *c;
	char err[512] = "";
	int status = parse("record", argc, argv, &o, record_usage), rc;

	if (status)
		return status < 0 ? EVR_EXIT_OK : status;
	if (!o.output)
		return evr_cli_fail("record", EVR_EXIT_USAGE, "no capture file given (-o FILE)");
	if (optind == argc)
		return evr_cli_fail("record", EVR_EXIT_USAGE, "wants a PID or NAME (try evring record --help)");
	if (!(c = consumer_new("record", &o, NULL, &status)))
		return status;
	status = attach_all("record", c, argc, argv, o.flags);
	if (!status) {
		rc = o.raw ? evr_consumer_capture_raw(c, o.output, o.nhandlers ? EVR_CAPTURE_RAW_DECODE : 0, err,
						      sizeof(err))
			   : evr_consumer_capture(c, o.output, err, sizeof(err));
		if (rc != 0)
			status = evr_cli_fail("record", EVR_EXIT_FAIL, "%s", err);
	}
	if (!status)
		status = run_live("record", c, &o);
	if (!status && o.raw && !evr_cli_output_closed) {
		struct evr_raw_stats rs;

		/* Every record written since the attach is in the capture or counted lost: the exact count. */
		if (evr_consumer_raw_stats(c, &rs) == 0)
			fprintf(stderr,
				"evring record: raw: %llu runs (%llu bytes, %llu records), %llu single records; "
				"%llu records delivered, %llu lost (%llu pushed past), %llu skipped\n",
				(unsigned long long)rs.runs, (unsigned long long)rs.run_bytes,
				(unsigned long long)rs.run_records, (unsigned long long)rs.singles,
				(unsigned long long)rs.delivered, (unsigned long long)rs.lost,
				(unsigned long long)rs.overrun, (unsigned long long)rs.skipped);
	}
	if (!status && (rc = evr_consumer_capture_end(c)) != 0)
		status = evr_cli_fail("record", EVR_EXIT_FAIL, "cannot write capture %s: %s", o.output, strerror(-rc));
	evr_consumer_end(c); /* handlers ended (an exporter flushed): the summary is final */
	if (!status && !evr_cli_output_closed) {
		evr_cli_summary("record", c);
		fprintf(stderr, "evring record: capture written to %s\n", o.output);
	}
	return finish("record", c, status);
}

int evr_cmd_replay(int argc, char **argv)
{
	struct run_opts o;
	struct evr_consumer *c;
	struct evr_consumer_stats st;
	char err[512] = "";
	int status = parse("replay", argc, argv, &o, replay_usage), rc;

	if (status)
		return status < 0 ? EVR_EXIT_OK : status;
	if (o.output || o.duration_ns || o.flags || o.raw)
		return evr_cli_fail("replay", EVR_EXIT_USAGE, "-o, --raw, --duration and --from are for live runs");
	if (optind + 1 != argc)
		return evr_cli_fail("replay", EVR_EXIT_USAGE, "wants one capture FILE (try evring replay --help)");
	if (!(c = consumer_new("replay", &o, "tail", &status)))
		return status;
	evr_cli_signals(&stop_requested, c); /* SIGINT ends the replay where it is, handlers flushed */
	rc = evr_consumer_replay(c, argv[optind], err, sizeof(err));
	if (rc < 0)
		status = evr_cli_fail("replay", evr_cli_exit_of(rc == -ENOENT ? -EIO : rc), "%s", err);
	evr_consumer_end(c); /* handlers ended (an exporter flushed): the summary is final */
	evr_consumer_stats(c, &st);
	if (st.records && !evr_cli_output_closed) /* what came before a bad entry was delivered: say how much */
		evr_cli_summary("replay", c);
	return finish("replay", c, status);
}
