/*
 * bench_peer.c: the processes a benchmark starts beside itself, and
 * `evring-bench attach`, the consumer such a benchmark attaches to its own
 * segment (or to evring-demo's).
 *
 *   evring-bench attach PID [--handler SPEC]... [--cpu N] [--seconds S]
 *
 * runs the consumer library in a process of its own, as `evring attach`
 * does: it attaches to every segment of PID (retrying for 5 s while the
 * segment does not exist yet), adds the built-in handlers named (their
 * printed output goes to /dev/null), says "attached" on stdout, and drains
 * until PID exits, S seconds pass or SIGTERM / SIGINT arrives. Then it says
 * what it saw, on one line:
 *
 *   report records=N lost=N skipped=N cpu=SECONDS
 *
 * (records read from the lanes, records the producer reported lost, handler
 * skips, and the CPU time of the whole consumer, every thread). It is a
 * peer of the benchmarks, not a tool: `evring attach` is the one for people.
 *
 * A benchmark pins the peer where it must not disturb the measured threads
 * (--cpu, applied before the consumer starts a thread, so every thread of
 * it inherits it) and stops it with SIGSTOP when it measures what a stalled
 * consumer costs the producer (nothing, as evring promises).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <evring/consumer.h>

#include "bench.h"

extern char **environ;

#define PEER_HANDLERS_MAX 8
#define PEER_ENV_MAX 512
#define PEER_ATTACH_WAIT_MS 5000u

/* ---- child processes -------------------------------------------------- */

static void nap_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

const char *bench_self_exe(void)
{
	static char path[PATH_MAX];
	ssize_t n;

	if (path[0])
		return path;
	n = readlink("/proc/self/exe", path, sizeof(path) - 1);
	if (n <= 0)
		snprintf(path, sizeof(path), "evring-bench");
	else
		path[n] = '\0';
	return path;
}

/* Whether env entry e sets the variable that entry s names. */
static bool env_same(const char *e, const char *s)
{
	size_t n = strcspn(s, "=");

	return !strncmp(e, s, n) && e[n] == '=';
}

int bench_proc_start(struct bench_proc *p, char *const argv[], char *const setenv[], int cpu, bool merge_stderr,
		     char *why, size_t whylen)
{
	char *envp[PEER_ENV_MAX];
	int out[2], err[2], n = 0, child_errno = 0;
	ssize_t got;
	pid_t pid;

	memset(p, 0, sizeof(*p));
	p->out = -1;
	/* The environment is built before fork: the child only execs. */
	for (char **e = environ; *e && n < PEER_ENV_MAX - 16; e++) {
		bool replaced = false;
		for (char *const *s = setenv; s && *s; s++)
			replaced |= env_same(*e, *s);
		if (!replaced)
			envp[n++] = *e;
	}
	for (char *const *s = setenv; s && *s && n < PEER_ENV_MAX - 1; s++)
		envp[n++] = *s;
	envp[n] = NULL;

	if (pipe2(out, O_CLOEXEC) != 0)
		goto fail_errno;
	if (pipe2(err, O_CLOEXEC) != 0) {
		close(out[0]);
		close(out[1]);
		goto fail_errno;
	}
	pid = fork();
	if (pid < 0) {
		close(out[0]);
		close(out[1]);
		close(err[0]);
		close(err[1]);
		goto fail_errno;
	}
	if (pid == 0) {
		/* Only async-signal-safe calls from here: the parent may have threads. */
		int devnull = open("/dev/null", O_RDONLY);

		prctl(PR_SET_PDEATHSIG, SIGKILL); /* a bench that dies leaves nothing behind */
		if (cpu >= 0) {
			cpu_set_t set;
			CPU_ZERO(&set);
			CPU_SET(cpu, &set);
			sched_setaffinity(0, sizeof(set), &set);
		}
		if (devnull >= 0)
			dup2(devnull, 0);
		dup2(out[1], 1);
		if (merge_stderr)
			dup2(out[1], 2);
		if (strchr(argv[0], '/'))
			execve(argv[0], argv, envp);
		else
			execvpe(argv[0], argv, envp);
		child_errno = errno;
		if (write(err[1], &child_errno, sizeof(child_errno)) < 0)
			_exit(127);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	/* exec closed err[1] (O_CLOEXEC) when it worked; otherwise the child wrote why. */
	got = read(err[0], &child_errno, sizeof(child_errno));
	close(err[0]);
	if (got == (ssize_t)sizeof(child_errno)) {
		waitpid(pid, NULL, 0);
		close(out[0]);
		snprintf(why, whylen, "cannot run %s: %s", argv[0], strerror(child_errno));
		return -child_errno;
	}
	p->pid = pid;
	p->out = out[0];
	return 0;
fail_errno:
	snprintf(why, whylen, "cannot start %s: %s", argv[0], strerror(errno));
	return -errno;
}

int bench_proc_line(struct bench_proc *p, char *line, size_t len, unsigned timeout_ms)
{
	uint64_t deadline = bench_now_ns() + (uint64_t)timeout_ms * 1000000u;

	for (;;) {
		char *nl = memchr(p->buf, '\n', p->have);
		struct pollfd pf = { p->out, POLLIN, 0 };
		uint64_t now;
		ssize_t n;

		if (nl || p->have == sizeof(p->buf)) {
			size_t take = nl ? (size_t)(nl - p->buf) : p->have;
			size_t copy = take < len - 1 ? take : len - 1;

			memcpy(line, p->buf, copy);
			line[copy] = '\0';
			take += nl ? 1 : 0;
			memmove(p->buf, p->buf + take, p->have - take);
			p->have -= take;
			return 1;
		}
		if (p->out < 0)
			return 0; /* p->have is 0 here: the end returned what was left */
		now = bench_now_ns();
		if (now >= deadline)
			return -ETIMEDOUT;
		if (poll(&pf, 1, (int)((deadline - now) / 1000000u) + 1) <= 0)
			continue;
		n = read(p->out, p->buf + p->have, sizeof(p->buf) - p->have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			size_t copy = p->have < len - 1 ? p->have : len - 1;

			close(p->out);
			p->out = -1;
			if (!p->have)
				return 0;
			memcpy(line, p->buf, copy); /* a last line without its newline */
			line[copy] = '\0';
			p->have = 0;
			return 1;
		}
		p->have += (size_t)n;
	}
}

int bench_proc_stop(struct bench_proc *p, int sig, unsigned timeout_ms)
{
	uint64_t deadline = bench_now_ns() + (uint64_t)timeout_ms * 1000000u;
	int st = -1;

	if (p->pid > 0) {
		if (sig) {
			kill(p->pid, sig);
			kill(p->pid, SIGCONT); /* a stopped child takes sig only once it runs */
		}
		for (;;) {
			pid_t w = waitpid(p->pid, &st, WNOHANG);
			if (w == p->pid)
				break;
			if (w < 0 && errno != EINTR) {
				st = -1;
				break;
			}
			if (bench_now_ns() >= deadline) {
				kill(p->pid, SIGKILL);
				waitpid(p->pid, NULL, 0);
				st = -1;
				break;
			}
			nap_ms(5);
		}
	}
	if (p->out >= 0)
		close(p->out);
	p->out = -1;
	p->pid = 0;
	return st;
}

/* ---- the OTLP receiver ------------------------------------------------ */

#define RX_START_MS 20000u /* node loads protobufjs and the generated code first */

/* The number after "key": in a JSON object's text; 0 when absent. */
static uint64_t rx_json_u64(const char *text, const char *key)
{
	char pat[48];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(text, pat);
	return p ? strtoull(p + strlen(pat), NULL, 10) : 0;
}

static void rx_clean(struct bench_otlp_rx *r)
{
	char path[96];

	if (!r->dir[0])
		return;
	snprintf(path, sizeof(path), "%s/port", r->dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/summary", r->dir);
	unlink(path);
	rmdir(r->dir);
	r->dir[0] = '\0';
}

int bench_otlp_rx_start(struct bench_otlp_rx *r, int cpu, bool count_only, char *why, size_t whylen)
{
#ifdef EVR_BENCH_OTLP_RECEIVER
	const char *script = EVR_BENCH_OTLP_RECEIVER;
#else
	const char *script = NULL;
#endif
	const char *modules = getenv("EVRING_OTLP_NODE_DIR");
	char portf[96], summf[96], line[512] = "", last[512] = "";
	char *argv[] = { "node", (char *)script, "--modules", NULL, "--port-file", portf, "--summary", summf,
			 "--discard", NULL, NULL };
	int lr;

	memset(r, 0, sizeof(*r));
	r->p.out = -1;
#ifdef EVR_BENCH_OTLP_NODE
	if (!modules || !*modules)
		modules = EVR_BENCH_OTLP_NODE;
#endif
	if (!script || access(script, R_OK) != 0) {
		snprintf(why, whylen, "no OTLP receiver (tests/otlp/receiver.js of the source tree) at %s",
			 script ? script : "(not built from a source tree)");
		return -1;
	}
	if (!modules || !*modules) {
		snprintf(why, whylen, "no directory for the receiver's npm packages (set EVRING_OTLP_NODE_DIR)");
		return -1;
	}
	argv[3] = (char *)modules;
	if (count_only)
		argv[9] = "--count-only";
	snprintf(r->dir, sizeof(r->dir), "/tmp/evr-bench-otlp.XXXXXX");
	if (!mkdtemp(r->dir)) {
		snprintf(why, whylen, "cannot make a temporary directory: %s", strerror(errno));
		r->dir[0] = '\0';
		return -1;
	}
	snprintf(portf, sizeof(portf), "%s/port", r->dir);
	snprintf(summf, sizeof(summf), "%s/summary", r->dir);
	if (bench_proc_start(&r->p, argv, NULL, cpu, true, why, whylen) != 0) {
		rx_clean(r);
		return -1;
	}
	/* It says "receiver: listening on 127.0.0.1:PORT" on stderr once it listens, or why it cannot. */
	while ((lr = bench_proc_line(&r->p, line, sizeof(line), RX_START_MS)) == 1) {
		const char *p = strstr(line, "listening on 127.0.0.1:");

		if (p) {
			r->port = (unsigned)strtoul(p + strlen("listening on 127.0.0.1:"), NULL, 10);
			if (r->port)
				return 0;
		}
		if (!strncmp(last, "receiver: ", 10))
			continue; /* its own message says why; what follows is a stack */
		snprintf(last, sizeof(last), "%s", line);
	}
	snprintf(why, whylen, "the OTLP receiver (node %s) did not start: %s%s", script,
		 last[0] ? last : lr ? "no answer in 20 s" : "it exited",
		 strstr(last, "cannot load") ? " (sh tests/otlp/install.sh DIR installs them)" : "");
	bench_proc_stop(&r->p, SIGKILL, 2000);
	rx_clean(r);
	return -1;
}

int bench_otlp_rx_stop(struct bench_otlp_rx *r, struct bench_otlp_rx_summary *s, char *why, size_t whylen)
{
	char path[96], text[1024];
	FILE *f;
	size_t n;
	int st, rc = -1;

	memset(s, 0, sizeof(*s));
	if (!r->p.pid) {
		snprintf(why, whylen, "the OTLP receiver was not running");
		rx_clean(r);
		return -1;
	}
	st = bench_proc_stop(&r->p, SIGTERM, 10000);
	snprintf(path, sizeof(path), "%s/summary", r->dir);
	f = fopen(path, "re");
	if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || !f) {
		snprintf(why, whylen, "the OTLP receiver %s", !f ? "wrote no summary" : "did not exit cleanly");
	} else {
		n = fread(text, 1, sizeof(text) - 1, f);
		text[n] = '\0';
		s->requests = rx_json_u64(text, "requests");
		s->spans = rx_json_u64(text, "spans");
		s->logs = rx_json_u64(text, "logs");
		s->invalid = rx_json_u64(text, "invalid");
		s->bytes = rx_json_u64(text, "bytes");
		rc = 0;
	}
	if (f)
		fclose(f);
	rx_clean(r);
	return rc;
}

double bench_proc_cpu_s(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long utime, stime;
	long hz = sysconf(_SC_CLK_TCK);
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	if (hz <= 0 || !(f = fopen(path, "re")))
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* After the command's closing parenthesis: state (field 3) ... utime (14), stime (15). */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
		return -1;
	return (double)(utime + stime) / (double)hz;
}

/* ---- the consumer peer, from the benchmark's side --------------------- */

int bench_consumer_peer_start(struct bench_proc *p, pid_t pid, const char *const *handlers, int cpu, char *why,
			      size_t whylen)
{
	char *argv[4 + 2 * PEER_HANDLERS_MAX + 4];
	char pidbuf[24], cpubuf[16], line[512];
	int n = 0, rc;

	snprintf(pidbuf, sizeof(pidbuf), "%ld", (long)pid);
	argv[n++] = (char *)bench_self_exe();
	argv[n++] = "attach";
	argv[n++] = pidbuf;
	for (unsigned i = 0; handlers && handlers[i] && i < PEER_HANDLERS_MAX; i++) {
		argv[n++] = "--handler";
		argv[n++] = (char *)handlers[i];
	}
	if (cpu >= 0) {
		snprintf(cpubuf, sizeof(cpubuf), "%d", cpu);
		argv[n++] = "--cpu";
		argv[n++] = cpubuf;
	}
	argv[n] = NULL;
	rc = bench_proc_start(p, argv, NULL, cpu, false, why, whylen);
	if (rc)
		return -1;
	rc = bench_proc_line(p, line, sizeof(line), PEER_ATTACH_WAIT_MS + 5000);
	if (rc == 1 && !strcmp(line, "attached"))
		return 0;
	snprintf(why, whylen, "the consumer did not attach to pid %ld (%s)", (long)pid,
		 rc == 1 ? line : rc == 0 ? "it exited; see its message above" : "no answer in 10 s");
	bench_proc_stop(p, SIGKILL, 2000);
	return -1;
}

int bench_consumer_peer_end(struct bench_proc *p, bool stop, unsigned timeout_ms, struct bench_peer_report *r)
{
	char line[512];
	int rc = -1;

	memset(r, 0, sizeof(*r));
	if (stop && p->pid > 0) {
		kill(p->pid, SIGTERM);
		kill(p->pid, SIGCONT);
	}
	while (bench_proc_line(p, line, sizeof(line), timeout_ms) == 1) {
		unsigned long long rec, lost, skipped;
		double cpu;

		if (sscanf(line, "report records=%llu lost=%llu skipped=%llu cpu=%lf", &rec, &lost, &skipped, &cpu) ==
		    4) {
			r->records = rec;
			r->lost = lost;
			r->skipped = skipped;
			r->cpu_s = cpu;
			rc = 0;
		}
	}
	bench_proc_stop(p, SIGTERM, 2000);
	return rc;
}

/* ---- evring-bench attach ---------------------------------------------- */

static struct evr_consumer *attach_consumer;
static volatile int attach_stop;

static void attach_on_signal(int sig)
{
	(void)sig;
	attach_stop = 1;
	if (attach_consumer)
		evr_consumer_stop(attach_consumer); /* async-signal-safe */
}

static void attach_usage(FILE *f)
{
	fprintf(f, "usage: evring-bench attach PID [--handler SPEC]... [--cpu N] [--seconds S]\n\n"
		   "The consumer the benchmarks start beside themselves: attaches to PID's segments, runs\n"
		   "the built-in handlers named (stats, jsonl=PATH, ...; printed output to /dev/null),\n"
		   "says \"attached\", drains until PID exits, S seconds pass or SIGTERM, then prints\n"
		   "\"report records=N lost=N skipped=N cpu=S\".\n");
}

/* attach's command line. */
struct attach_args {
	const char *handlers[PEER_HANDLERS_MAX];
	unsigned nh;
	long pid;
	int cpu;	/* -1: not pinned */
	double seconds; /* 0: until the process exits */
};

/* Parses argv into *a. Returns -1 to go on, or the exit status (0 after --help). */
static int attach_parse(struct attach_args *a, int argc, char **argv)
{
	memset(a, 0, sizeof(*a));
	a->cpu = -1;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--handler") && i + 1 < argc && a->nh < PEER_HANDLERS_MAX) {
			a->handlers[a->nh++] = argv[++i];
		} else if (!strcmp(argv[i], "--cpu") && i + 1 < argc) {
			a->cpu = atoi(argv[++i]);
		} else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
			a->seconds = atof(argv[++i]);
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			attach_usage(stdout);
			return 0;
		} else if (!a->pid && argv[i][0] >= '1' && argv[i][0] <= '9') {
			a->pid = strtol(argv[i], NULL, 10);
		} else {
			fprintf(stderr, "evring-bench attach: unexpected argument '%s' (try --help)\n", argv[i]);
			return 2;
		}
	}
	if (a->pid <= 0) {
		attach_usage(stderr);
		return 2;
	}
	return -1;
}

/* Pins this process when asked, and makes SIGTERM and SIGINT end the run. */
static void attach_process(const struct attach_args *a)
{
	struct sigaction sa;

	if (a->cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(a->cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set) != 0)
			fprintf(stderr, "evring-bench attach: cannot pin to CPU %d: %s (continuing unpinned)\n", a->cpu,
				strerror(errno));
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = attach_on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
}

/*
 * The consumer with its handlers (printing to devnull), attached to the
 * process: its segment may not exist yet (a program that opens it at
 * start-up), so attaching is tried for a while. 0, or 1 after a message
 * (the consumer then closed).
 */
static int attach_open(const struct attach_args *a, FILE *devnull)
{
	struct evr_consumer_opts opts = { 0 };
	char err[512] = "";
	uint64_t deadline;
	int rc;

	opts.quiet = false;
	attach_consumer = evr_consumer_new(&opts, err, sizeof(err));
	if (!attach_consumer || !devnull) {
		fprintf(stderr, "evring-bench attach: %s\n", err[0] ? err : "cannot open /dev/null");
		return 1;
	}
	for (unsigned i = 0; i < a->nh; i++) {
		rc = evr_consumer_add_builtin(attach_consumer, a->handlers[i], devnull, err, sizeof(err));
		if (rc < 0) {
			fprintf(stderr, "evring-bench attach: handler %s: %s\n", a->handlers[i], err[0] ? err : strerror(-rc));
			evr_consumer_close(attach_consumer);
			return 1;
		}
	}
	deadline = bench_now_ns() + (uint64_t)PEER_ATTACH_WAIT_MS * 1000000u;
	for (;;) {
		rc = evr_consumer_attach_pid(attach_consumer, (uint32_t)a->pid, 0, err, sizeof(err));
		if (rc >= 0 || (rc != -ENOENT && rc != -EAGAIN) || bench_now_ns() >= deadline || attach_stop)
			break;
		nap_ms(10);
	}
	if (rc < 0) {
		fprintf(stderr, "evring-bench attach: pid %ld: %s\n", a->pid, err[0] ? err : strerror(-rc));
		evr_consumer_close(attach_consumer);
		return 1;
	}
	return 0;
}

/* After the run: the counters, then the consumer closed, then the report line (bench_consumer_peer_end reads it). */
static void attach_report(void)
{
	struct evr_consumer_stats st;
	struct evr_handler_stats hs[PEER_HANDLERS_MAX];
	struct rusage ru;
	uint64_t skipped = 0;
	int n;

	evr_consumer_stats(attach_consumer, &st);
	n = evr_consumer_handler_stats(attach_consumer, hs, PEER_HANDLERS_MAX);
	for (int i = 0; i < n; i++)
		skipped += hs[i].skipped;
	evr_consumer_close(attach_consumer);
	attach_consumer = NULL;
	getrusage(RUSAGE_SELF, &ru);
	printf("report records=%" PRIu64 " lost=%" PRIu64 " skipped=%" PRIu64 " cpu=%.3f\n", st.records, st.lost,
	       skipped,
	       (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
		       (double)ru.ru_stime.tv_usec / 1e6);
	fflush(stdout);
}

int bench_attach_main(int argc, char **argv)
{
	struct attach_args a;
	FILE *devnull;
	int rc;

	if ((rc = attach_parse(&a, argc, argv)) >= 0)
		return rc;
	attach_process(&a);
	devnull = fopen("/dev/null", "we");
	if (attach_open(&a, devnull) != 0)
		return 1;
	printf("attached\n");
	fflush(stdout);

	rc = evr_consumer_run(attach_consumer, a.seconds > 0 ? (uint64_t)(a.seconds * 1e9) : 0, &attach_stop);
	if (rc < 0)
		fprintf(stderr, "evring-bench attach: %s\n", strerror(-rc));
	attach_report();
	fclose(devnull);
	return 0;
}
