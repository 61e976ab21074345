/*
 * bench_lttng_session.c: the LTTng-UST side of `evring-bench producer` and
 * `evring-bench loss` that runs in evring-bench itself: a session daemon
 * (started here, as a child of this process, when none answers, and stopped
 * here), a user-space session in discard mode writing to a temporary
 * directory, and the tracepoint module opened once the session records
 * (bench_lttng.h). A benchmark may end the session and start another with
 * other buffers (bench_lttng_session_restart): the module stays registered
 * with the daemon, which enables the tracepoint again for the new session;
 * each session's trace is removed when it ends. Every lttng command runs
 * through posix_spawn with a timeout, its output captured for the one line
 * that says why LTTng-UST was not measured when a step fails.
 *
 * Without LTTng-UST at build time (no EVR_BENCH_LTTNG_MODULE) setting up
 * fails at once with that reason, and nothing is started.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <libgen.h>
#include <unistd.h>

#include "bench.h"
#include "bench_lttng.h"

#ifdef EVR_BENCH_LTTNG_MODULE
extern char **environ;

/* Milliseconds on CLOCK_MONOTONIC, for the waits below. */
static uint64_t now_ms(void)
{
	return bench_now_ns() / 1000000u;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/*
 * Runs argv (found on PATH) with stdin from /dev/null and stdout and stderr
 * captured into out (the first outlen - 1 bytes). Returns its exit status, or
 * -1 when it could not be started, was killed, or ran past timeout_ms (out
 * then says so). posix_spawn runs no fork handlers of this process.
 */
static int cmd_run(char *const argv[], char *out, size_t outlen, unsigned timeout_ms)
{
	posix_spawn_file_actions_t fa;
	uint64_t deadline = now_ms() + timeout_ms;
	size_t got = 0;
	int pfd[2], rc, st;
	bool late = false;
	pid_t pid;

	out[0] = 0;
	if (pipe2(pfd, O_CLOEXEC) != 0) {
		snprintf(out, outlen, "pipe: %s", strerror(errno));
		return -1;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
	rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(pfd[1]);
	if (rc != 0) {
		close(pfd[0]);
		snprintf(out, outlen, "cannot run %s: %s", argv[0], strerror(rc));
		return -1;
	}
	for (;;) {
		struct pollfd p = { pfd[0], POLLIN, 0 };
		uint64_t now = now_ms();
		char chunk[512];
		ssize_t n;

		if (now >= deadline) {
			late = true;
			kill(pid, SIGKILL);
			break;
		}
		if (poll(&p, 1, (int)(deadline - now)) <= 0)
			continue;
		n = read(pfd[0], chunk, sizeof(chunk));
		if (n <= 0)
			break;
		for (ssize_t k = 0; k < n && got + 1 < outlen; k++)
			out[got++] = chunk[k];
		out[got] = 0;
	}
	close(pfd[0]);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (late) {
		snprintf(out, outlen, "%s did not finish in %u ms", argv[0], timeout_ms);
		return -1;
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The first line of s, trimmed to fit a note. */
static const char *first_line(char *s)
{
	char *nl = strchr(s, '\n');

	if (nl)
		*nl = 0;
	if (strlen(s) > 160)
		s[160] = 0;
	return s;
}

/* Runs an lttng command; on failure fills why with the command and its first line of output. */
static int lttng_cmd(char *const argv[], char *why, size_t whylen)
{
	char out[4096];
	int rc = cmd_run(argv, out, sizeof(out), 30000);

	if (rc != 0)
		snprintf(why, whylen, "'%s %s' failed: %s", argv[0], argv[1], out[0] ? first_line(out) : "no output");
	return rc;
}

static bool sessiond_up(void)
{
	char out[1024];
	char *const argv[] = { "lttng", "list", NULL };

	return cmd_run(argv, out, sizeof(out), 10000) == 0;
}

/* Starts lttng-sessiond as a child of this process and waits until it answers. 0 or -1 with why. */
static int sessiond_start(struct bench_lttng *L, char *why, size_t whylen)
{
	char *const argv[] = { "lttng-sessiond", "--no-kernel", NULL };
	posix_spawn_file_actions_t fa;
	char log[300];
	uint64_t deadline;
	int rc, st;

	snprintf(log, sizeof(log), "%s/sessiond.log", L->dir);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	rc = posix_spawnp(&L->sessiond, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc != 0) {
		snprintf(why, whylen, "cannot start lttng-sessiond: %s", strerror(rc));
		return -1;
	}
	L->own_sessiond = true;
	for (deadline = now_ms() + 10000; now_ms() < deadline; sleep_ms(50)) {
		if (waitpid(L->sessiond, &st, WNOHANG) == L->sessiond) {
			char line[200] = "";
			FILE *f = fopen(log, "re");

			if (f) {
				if (!fgets(line, sizeof(line), f))
					line[0] = 0;
				fclose(f);
			}
			L->own_sessiond = false;
			snprintf(why, whylen, "lttng-sessiond exited at start (%s%d)%s%s",
				 WIFEXITED(st) ? "status " : "signal ", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st),
				 line[0] ? ": " : "", first_line(line));
			return -1;
		}
		if (sessiond_up())
			return 0;
	}
	snprintf(why, whylen, "lttng-sessiond did not answer within 10 s");
	return -1;
}

static void sessiond_stop(struct bench_lttng *L)
{
	uint64_t deadline;
	int st;

	if (!L->own_sessiond)
		return;
	kill(L->sessiond, SIGTERM); /* it stops its consumer daemons */
	for (deadline = now_ms() + 5000; now_ms() < deadline; sleep_ms(20))
		if (waitpid(L->sessiond, &st, WNOHANG) == L->sessiond) {
			L->own_sessiond = false;
			return;
		}
	kill(L->sessiond, SIGKILL);
	waitpid(L->sessiond, &st, 0);
	L->own_sessiond = false;
}

/* Removes the trace output directory (files and subdirectories, no links followed). */
static void rm_tree(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;

	if (!d) {
		unlink(path);
		return;
	}
	while ((e = readdir(d)) != NULL) {
		char sub[1024];
		struct stat st;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
		if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
			rm_tree(sub);
		else
			unlink(sub);
	}
	closedir(d);
	rmdir(path);
}

/* The number after "key:" on the first line of out that holds key; 0 when none. */
static uint64_t list_value(const char *out, const char *key)
{
	const char *p = strstr(out, key);

	return p ? strtoull(p + strlen(key), NULL, 10) : 0;
}

/*
 * Reads what `lttng list <session>` says of the running session: the
 * sub-buffers of its channel into L->buffers; with final set (the session
 * is stopped) the sum of its channels' "Discarded events" into L->discarded.
 */
static void lttng_read_list(struct bench_lttng *L, bool final)
{
	char out[16384];
	char *const argv[] = { "lttng", "list", L->session, NULL };
	uint64_t size, count;

	if (cmd_run(argv, out, sizeof(out), 30000) != 0)
		return;
	if (!final) {
		const char *sch = strstr(out, "Buffering scheme:");

		if (sch) {
			sch += strlen("Buffering scheme:");
			sch += strspn(sch, " ");
			snprintf(L->scheme, sizeof(L->scheme), "%.*s", (int)strcspn(sch, "\n"), sch);
		}
		size = list_value(out, "Sub-buffer size:");
		count = list_value(out, "Sub-buffer count:");
		if (size && count)
			snprintf(L->buffers, sizeof(L->buffers), "%" PRIu64 " x %" PRIu64 " %s", count,
				 size >= (1u << 20) ? size >> 20 : size >> 10, size >= (1u << 20) ? "MiB" : "KiB");
		return;
	}
	for (char *p = out; (p = strstr(p, "Discarded event")) != NULL; p++) {
		char *colon = strchr(p, ':');

		if (!colon)
			break;
		L->discarded += strtoull(colon + 1, NULL, 10);
		L->discarded_known = true;
	}
}

void bench_lttng_session_stop(struct bench_lttng *L)
{
	char why[256];
	char *const stop[] = { "lttng", "stop", L->session, NULL };

	if (!L->session[0] || L->stopped)
		return;
	L->discarded = 0;
	L->discarded_known = false;
	lttng_cmd(stop, why, sizeof(why));
	lttng_read_list(L, true);
	L->stopped = true;
}

/*
 * Stops, reads and destroys the running session, removes its trace, then
 * waits (up to 5 s) until the tracepoint is off here.
 */
static void session_end(struct bench_lttng *L)
{
	char why[256], trace[300];
	char *const destroy[] = { "lttng", "destroy", L->session, NULL };

	if (!L->session[0])
		return;
	bench_lttng_session_stop(L);
	lttng_cmd(destroy, why, sizeof(why));
	snprintf(trace, sizeof(trace), "%s/trace-%u", L->dir, L->sessions - 1);
	rm_tree(trace);
	L->session[0] = 0;
	L->stopped = false;
	L->on = false;
	for (uint64_t deadline = now_ms() + 5000; L->enabled && L->enabled() && now_ms() < deadline;)
		sleep_ms(10);
}

/* A process's comm, parent and owner from /proc/PID/stat and status. false when unreadable. */
static bool proc_info(pid_t pid, char *comm, size_t commlen, pid_t *ppid, uid_t *uid)
{
	char path[64], buf[1024], *open, *close;
	struct stat st;
	FILE *f;
	size_t n;
	long pp;

	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	if (stat(path, &st) != 0 || !(f = fopen(path, "re")))
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	open = strchr(buf, '(');
	close = strrchr(buf, ')');
	if (!open || !close || close < open || sscanf(close + 1, " %*c %ld", &pp) != 1)
		return false;
	snprintf(comm, commlen, "%.*s", (int)(close - open - 1), open + 1);
	*ppid = (pid_t)pp;
	*uid = st.st_uid;
	return true;
}

/*
 * Calls fn for each consumer daemon of the session daemon(s) this bench
 * talks to (see bench_lttng_daemons_cpu), and for each of those session
 * daemons with consumer false.
 */
static void daemons_each(const struct bench_lttng *L, void (*fn)(pid_t pid, bool consumer, void *arg), void *arg)
{
	pid_t sessiond[8];
	unsigned ns = 0;
	DIR *d = opendir("/proc");
	struct dirent *e;

	if (!d)
		return;
	if (L->own_sessiond)
		sessiond[ns++] = L->sessiond;
	for (int pass = 0; pass < 2; pass++) { /* first the session daemons, then their consumer daemons */
		rewinddir(d);
		while ((e = readdir(d)) != NULL) {
			char comm[64];
			pid_t pid = (pid_t)strtol(e->d_name, NULL, 10), ppid;
			uid_t uid;

			if (pid <= 0 || !proc_info(pid, comm, sizeof(comm), &ppid, &uid))
				continue;
			if (pass == 0 && !L->own_sessiond && !strcmp(comm, "lttng-sessiond") && uid == getuid() &&
			    ns < sizeof(sessiond) / sizeof(sessiond[0]))
				sessiond[ns++] = pid;
			if (pass == 1 && !strcmp(comm, "lttng-consumerd"))
				for (unsigned k = 0; k < ns; k++)
					if (ppid == sessiond[k])
						fn(pid, true, arg);
		}
	}
	closedir(d);
	for (unsigned k = 0; k < ns; k++)
		fn(sessiond[k], false, arg);
}

struct daemons_cpu {
	double sessiond, consumerd;
};

static void add_cpu(pid_t pid, bool consumer, void *arg)
{
	struct daemons_cpu *c = arg;
	double s = bench_proc_cpu_s(pid);
	double *into = consumer ? &c->consumerd : &c->sessiond;

	if (s < 0)
		return;
	*into = *into < 0 ? s : *into + s;
}

void bench_lttng_daemons_cpu(const struct bench_lttng *L, double *sessiond_s, double *consumerd_s)
{
	struct daemons_cpu c = { -1, -1 };

	daemons_each(L, add_cpu, &c);
	*sessiond_s = c.sessiond;
	*consumerd_s = c.consumerd;
}

struct buffer_maps {
	uint64_t bytes;
	unsigned maps;
};

/* Adds a consumer daemon's shm-ust-consumer mappings (the ring buffers it shares with the traced processes). */
static void add_maps(pid_t pid, bool consumer, void *arg)
{
	struct buffer_maps *b = arg;
	char path[64], line[1024];
	FILE *f;

	if (!consumer)
		return;
	snprintf(path, sizeof(path), "/proc/%ld/maps", (long)pid);
	if (!(f = fopen(path, "re")))
		return;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long lo, hi;

		if (strstr(line, "shm-ust-consumer") && sscanf(line, "%llx-%llx", &lo, &hi) == 2 && hi > lo) {
			b->bytes += hi - lo;
			b->maps++;
		}
	}
	fclose(f);
}

int bench_lttng_buffer_bytes(const struct bench_lttng *L, uint64_t *bytes, unsigned *maps)
{
	struct buffer_maps b = { 0, 0 };

	daemons_each(L, add_maps, &b);
	*bytes = b.bytes;
	*maps = b.maps;
	return b.maps ? 0 : -1;
}

/*
 * Creates and starts a session evring-bench-<pid>-<n> writing to a directory
 * under L->dir: one user-space channel in discard mode with ch's buffers,
 * evring_bench:* enabled. 0, or -1 with why.
 */
static int session_begin(struct bench_lttng *L, const struct bench_lttng_channel *ch, char *why, size_t whylen)
{
	char out_opt[300], size_opt[48], count_opt[48];
	char *channel[16];
	int n = 0;

	snprintf(L->session, sizeof(L->session), "evring-bench-%ld-%u", (long)getpid(), L->sessions);
	snprintf(out_opt, sizeof(out_opt), "--output=%s/trace-%u", L->dir, L->sessions);
	L->sessions++;
	L->buffers[0] = 0;
	channel[n++] = "lttng";
	channel[n++] = "enable-channel";
	channel[n++] = "--userspace";
	channel[n++] = "--session";
	channel[n++] = L->session;
	channel[n++] = "--discard";
	if (ch->subbuf_bytes) {
		snprintf(size_opt, sizeof(size_opt), "--subbuf-size=%" PRIu64, ch->subbuf_bytes);
		channel[n++] = size_opt;
	}
	if (ch->count) {
		snprintf(count_opt, sizeof(count_opt), "--num-subbuf=%u", ch->count);
		channel[n++] = count_opt;
	}
	channel[n++] = "evrbench";
	channel[n] = NULL;
	{
		char *const create[] = { "lttng", "create", L->session, out_opt, NULL };
		char *const event[] = { "lttng", "enable-event", "--userspace", "--session", L->session,
					"--channel", "evrbench", "evring_bench:*", NULL };
		char *const start[] = { "lttng", "start", L->session, NULL };

		if (lttng_cmd(create, why, whylen) != 0) {
			L->session[0] = 0;
			return -1;
		}
		if (lttng_cmd(channel, why, whylen) != 0 || lttng_cmd(event, why, whylen) != 0 ||
		    lttng_cmd(start, why, whylen) != 0)
			return -1;
	}
	lttng_read_list(L, false);
	return 0;
}

/* Waits (up to 5 s) until the running session has enabled the tracepoint in this process. */
static int wait_enabled(struct bench_lttng *L, char *why, size_t whylen)
{
	for (uint64_t deadline = now_ms() + 5000; !L->enabled() && now_ms() < deadline;)
		sleep_ms(10);
	if (!L->enabled()) {
		snprintf(why, whylen, "the session started but never enabled the tracepoint in this process "
				      "(it did not register with lttng-sessiond)");
		return -1;
	}
	L->on = true;
	return 0;
}

void bench_lttng_teardown(struct bench_lttng *L)
{
	session_end(L);
	sessiond_stop(L);
	if (L->dir[0])
		rm_tree(L->dir);
	L->dir[0] = 0;
	L->on = false;
}

/*
 * Makes LTTng-UST ready to measure: a session daemon (started here when none
 * answers), a session with one user-space channel in discard mode with ch's
 * buffers, evring_bench:* enabled and started; then the module is opened,
 * registers, and the tracepoint must be enabled. 0, or -1 with why (and
 * everything undone).
 */
int bench_lttng_setup(struct bench_lttng *L, const struct bench_lttng_channel *ch, char *why, size_t whylen)
{
	const char *tmp = getenv("TMPDIR");

	return bench_lttng_setup_in(L, ch, tmp && *tmp ? tmp : "/tmp", why, whylen);
}

int bench_lttng_setup_in(struct bench_lttng *L, const struct bench_lttng_channel *ch, const char *parent, char *why,
			 size_t whylen)
{
	memset(L, 0, sizeof(*L));
	{
		char out[256];
		char *const version[] = { "lttng", "--version", NULL };
		if (cmd_run(version, out, sizeof(out), 10000) != 0) {
			snprintf(why, whylen, "lttng-tools is not installed (no working 'lttng' command)");
			return -1;
		}
	}
	snprintf(L->dir, sizeof(L->dir), "%s/evring-bench-lttng.XXXXXX", parent);
	if (!mkdtemp(L->dir)) {
		snprintf(why, whylen, "cannot make a directory for the trace: %s", strerror(errno));
		L->dir[0] = 0;
		return -1;
	}
	if (!sessiond_up() && sessiond_start(L, why, whylen) != 0)
		goto fail;
	if (session_begin(L, ch, why, whylen) != 0)
		goto fail;
	/* dlopen after the session started: the module registers inside dlopen and is enabled at once. */
	L->module = dlopen(EVR_BENCH_LTTNG_MODULE, RTLD_NOW | RTLD_LOCAL);
	if (!L->module) { /* an installed evring-bench: PREFIX/lib/evring/evring-bench-lttng.so */
		char self[4096], mod[4200];
		snprintf(self, sizeof(self), "%s", bench_self_exe());
		snprintf(mod, sizeof(mod), "%s/../lib/evring/evring-bench-lttng.so", dirname(self));
		L->module = dlopen(mod, RTLD_NOW | RTLD_LOCAL);
	}
	if (!L->module) {
		snprintf(why, whylen, "cannot open the tracepoint module: %s", dlerror());
		goto fail;
	}
	*(void **)&L->loop = dlsym(L->module, BENCH_LTTNG_SYM_LOOP);
	*(void **)&L->enabled = dlsym(L->module, BENCH_LTTNG_SYM_ENABLED);
	if (!L->loop || !L->enabled) {
		snprintf(why, whylen, "the tracepoint module lacks %s", BENCH_LTTNG_SYM_LOOP);
		L->enabled = NULL;
		goto fail;
	}
	if (wait_enabled(L, why, whylen) != 0)
		goto fail;
	return 0;
fail:
	L->loop = NULL;
	bench_lttng_teardown(L);
	return -1;
}

int bench_lttng_session_restart(struct bench_lttng *L, const struct bench_lttng_channel *ch, char *why,
				size_t whylen)
{
	uint64_t discarded;
	bool known;

	session_end(L);
	discarded = L->discarded;
	known = L->discarded_known;
	if (!L->enabled) {
		snprintf(why, whylen, "LTTng-UST was not set up");
		return -1;
	}
	if (session_begin(L, ch, why, whylen) != 0 || wait_enabled(L, why, whylen) != 0) {
		session_end(L);
		L->discarded = discarded;
		L->discarded_known = known;
		return -1;
	}
	L->discarded = discarded;
	L->discarded_known = known;
	return 0;
}
#else
int bench_lttng_setup(struct bench_lttng *L, const struct bench_lttng_channel *ch, char *why, size_t whylen)
{
	return bench_lttng_setup_in(L, ch, "/tmp", why, whylen);
}

int bench_lttng_setup_in(struct bench_lttng *L, const struct bench_lttng_channel *ch, const char *parent, char *why,
			 size_t whylen)
{
	(void)ch;
	(void)parent;
	memset(L, 0, sizeof(*L));
	snprintf(why, whylen, "evring-bench was built without LTTng-UST (install liblttng-ust-dev and "
			      "lttng-tools, then configure again)");
	return -1;
}

int bench_lttng_session_restart(struct bench_lttng *L, const struct bench_lttng_channel *ch, char *why,
				size_t whylen)
{
	(void)L;
	(void)ch;
	snprintf(why, whylen, "evring-bench was built without LTTng-UST");
	return -1;
}

void bench_lttng_teardown(struct bench_lttng *L)
{
	(void)L;
}

void bench_lttng_session_stop(struct bench_lttng *L)
{
	(void)L;
}

void bench_lttng_daemons_cpu(const struct bench_lttng *L, double *sessiond_s, double *consumerd_s)
{
	(void)L;
	*sessiond_s = *consumerd_s = -1;
}

int bench_lttng_buffer_bytes(const struct bench_lttng *L, uint64_t *bytes, unsigned *maps)
{
	(void)L;
	*bytes = 0;
	*maps = 0;
	return -1;
}
#endif
