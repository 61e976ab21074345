/*
 * test_metrics.c: runs and system metrics of real producer processes. A
 * child whose CPU use, memory, environment, working directory and run
 * params the test sets; a consumer that samples it and hands the samples
 * and the run to a handler that keeps them; what the handler saw is
 * checked against what the child did.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>

#include <criterion/criterion.h>

#include <evring/consumer.h>
#include <evring/ring.h>

#include "procinfo.h"
#include "producer_child.h"

#define MAX_SAMPLES 4096

struct sample {
	char name[48];
	double value;
	uint64_t ts_ns, mono_ns;
	uint32_t pid; /* 0: the host */
};

struct seen {
	pthread_mutex_t mu;
	struct sample s[MAX_SAMPLES];
	uint32_t n;
	uint32_t runs;
	char run_id[40];
	char params[64][2][256];
	uint32_t nparams;
	uint32_t run_pid;
	char experiment[64];
	bool record_before_run; /* an event of the source came before its run */
	bool got_event;
};

static int seen_metric(void *ctx, const struct evr_metric *m)
{
	struct seen *v = ctx;

	pthread_mutex_lock(&v->mu);
	if (v->n < MAX_SAMPLES) {
		struct sample *s = &v->s[v->n++];

		snprintf(s->name, sizeof(s->name), "%s", m->name);
		s->value = m->value;
		s->ts_ns = m->ts_ns;
		s->mono_ns = m->mono_ns;
		s->pid = m->src ? m->src->pid : 0;
	}
	pthread_mutex_unlock(&v->mu);
	return 0;
}

static int seen_run(void *ctx, const struct evr_run_info *r)
{
	struct seen *v = ctx;

	pthread_mutex_lock(&v->mu);
	if (v->runs++ == 0)
		snprintf(v->run_id, sizeof(v->run_id), "%s", r->run_id);
	else
		cr_expect_str_eq(r->run_id, v->run_id, "a run's update keeps its id");
	snprintf(v->experiment, sizeof(v->experiment), "%s", r->experiment);
	v->run_pid = r->src ? r->src->pid : 0;
	v->nparams = r->nparams < 64 ? r->nparams : 64;
	for (uint32_t i = 0; i < v->nparams; i++) {
		snprintf(v->params[i][0], 256, "%s", r->params[i].key);
		snprintf(v->params[i][1], 256, "%s", r->params[i].value);
	}
	pthread_mutex_unlock(&v->mu);
	return 0;
}

static int seen_event(void *ctx, const struct evr_event *ev)
{
	struct seen *v = ctx;

	(void)ev;
	pthread_mutex_lock(&v->mu);
	if (v->runs == 0)
		v->record_before_run = true;
	v->got_event = true;
	pthread_mutex_unlock(&v->mu);
	return 0;
}

static const char *param(struct seen *v, const char *key)
{
	for (uint32_t i = 0; i < v->nparams; i++)
		if (!strcmp(v->params[i][0], key))
			return v->params[i][1];
	return NULL;
}

/*
 * Follows a producer until it exits; samples every interval_ns. ch: a forked
 * child (told to go once attached); else pid, a program exec'ed, attached
 * to as soon as its segment is there.
 */
static void follow_any(struct child *ch, pid_t pid, struct seen *v, uint64_t interval_ns, const char *experiment,
		       const char *const *env_allow, struct evr_consumer_stats *st)
{
	struct evr_consumer_opts o = { .merge_window_ns = 1000000,
				       .metrics_interval_ns = interval_ns,
				       .experiment = experiment,
				       .env_allow = env_allow };
	struct evr_handler h = { .name = "seen", .ctx = v, .on_metric = seen_metric, .on_run = seen_run,
				 .on_event = seen_event };
	char err[256];
	struct evr_consumer *c = evr_consumer_new(&o, err, sizeof(err));

	cr_assert_not_null(c, "%s", err);
	pthread_mutex_init(&v->mu, NULL);
	cr_assert_geq(evr_consumer_add_handler(c, &h), 0);
	if (ch) {
		cr_assert_geq(evr_consumer_attach_pid(c, (uint32_t)ch->pid, 0, err, sizeof(err)), 0, "%s", err);
		child_go(ch);
	} else {
		int tries = 0, status;

		while (evr_consumer_attach_pid(c, (uint32_t)pid, EVR_ATTACH_FROM_OLDEST, err, sizeof(err)) < 0) {
			struct timespec t = { 0, 10000000 };

			cr_assert_lt(++tries, 500, "%s", err);
			nanosleep(&t, NULL);
		}
		cr_assert_eq(evr_consumer_run(c, 30000000000ull, NULL), 0);
		cr_assert_eq(waitpid(pid, &status, 0), pid);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	if (ch) {
		cr_assert_eq(evr_consumer_run(c, 30000000000ull, NULL), 0);
		child_reap(ch, 0);
	}
	evr_consumer_end(c);
	if (st)
		evr_consumer_stats(c, st);
	evr_consumer_close(c);
}

static void follow(struct child *ch, struct seen *v, uint64_t interval_ns, const char *experiment,
		   const char *const *env_allow, struct evr_consumer_stats *st)
{
	follow_any(ch, 0, v, interval_ns, experiment, env_allow, st);
}

/*
 * The demo program, exec'ed with these variables as its whole environment
 * (a forked child's /proc/pid/environ is its parent's, from exec time).
 */
static pid_t spawn_demo(char *const envp[])
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		char *argv[] = { (char *)EVR_DEMO, "--rate", "50", "--duration", "1.5", "--quiet", NULL };

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execve(EVR_DEMO, argv, envp);
		_exit(127);
	}
	return pid;
}

static void start(struct child *ch, void (*pre)(void), void (*fn)(void))
{
	struct evr_config cfg = { .name = "metrics" };

	child_start_cfg(ch, &cfg, pre, fn, false);
}

static uint64_t mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- CPU ------------------------------------------------------------------------------------------ */

static uint64_t cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* What the busy child measured of itself: CPU time over wall time, in percent (shared with the test). */
static double *cpu_truth;

/*
 * Busy half the time: 50 ms of CPU spinning, 50 ms asleep, for 3 s. On a
 * machine with a CPU to spare that is 50 %; on a loaded one the spin takes
 * longer than 50 ms of wall time, and the child's own count says how much.
 */
static void half_busy(void)
{
	uint64_t t0 = mono_now(), c0 = cpu_now(), end = t0 + 3000000000ull;

	while (mono_now() < end) {
		uint64_t spin = cpu_now() + 50000000ull;
		struct timespec nap = { 0, 50000000 };

		while (cpu_now() < spin)
			;
		nanosleep(&nap, NULL);
	}
	*cpu_truth = 100.0 * (double)(cpu_now() - c0) / (double)(mono_now() - t0);
	EVR_EVENT("app", "done", EVR_U32("n", 1));
}

Test(metrics, cpu_of_a_half_busy_process_is_reported_near_50_percent, .timeout = 60)
{
	static struct seen v;
	struct child ch;
	double sum = 0;
	uint32_t n = 0, user = 0, sys = 0;

	cpu_truth = mmap(NULL, sizeof(*cpu_truth), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert_neq(cpu_truth, MAP_FAILED);
	start(&ch, NULL, half_busy);
	follow(&ch, &v, 500000000ull, NULL, NULL, NULL);
	/* user + system of each sample time (they share ts_ns), the first and last left out: partial. */
	for (uint32_t i = 0; i < v.n; i++) {
		if (!strcmp(v.s[i].name, "process.cpu.user")) {
			user++;
			for (uint32_t j = 0; j < v.n; j++)
				if (!strcmp(v.s[j].name, "process.cpu.system") && v.s[j].ts_ns == v.s[i].ts_ns) {
					if (user > 1 && v.s[i].ts_ns < v.s[v.n - 1].ts_ns) {
						sum += v.s[i].value + v.s[j].value;
						n++;
					}
					sys++;
				}
		}
	}
	cr_assert_eq(user, sys, "a system sample with every user sample");
	cr_assert_geq(n, 3, "%u whole intervals sampled in 3 s at 0.5 s", n);
	/* What /proc said agrees with what the child counted; and is 50 % where the child got its CPU. */
	cr_assert(fabs(sum / n - *cpu_truth) <= 6.0, "CPU %.1f %% over %u samples, the child counted %.1f %%", sum / n, n,
		  *cpu_truth);
	if (*cpu_truth >= 45.0)
		cr_assert(sum / n >= 40.0 && sum / n <= 60.0, "CPU %.1f %% over %u samples, want 40-60", sum / n, n);
	else
		fprintf(stderr, "test_metrics: the machine is loaded: the child got %.1f %% of a CPU instead of 50 %%; "
				"reported %.1f %%\n",
			*cpu_truth, sum / n);
	munmap(cpu_truth, sizeof(*cpu_truth));
}

/* ---- the interval ------------------------------------------------------------------------------- */

static void sleep_2s(void)
{
	struct timespec t = { 2, 0 };

	nanosleep(&t, NULL);
}

Test(metrics, samples_come_at_the_interval_within_10_percent, .timeout = 60)
{
	static struct seen v;
	struct child ch;
	uint64_t prev = 0, gaps = 0, sum = 0, t0, t1;
	uint32_t rss = 0, host = 0;
	const uint64_t iv = 200000000ull;

	start(&ch, NULL, sleep_2s);
	t0 = mono_now();
	follow(&ch, &v, iv, NULL, NULL, NULL);
	t1 = mono_now();
	for (uint32_t i = 0; i < v.n; i++) {
		host += v.s[i].pid == 0;
		if (strcmp(v.s[i].name, "process.memory.rss"))
			continue;
		cr_assert_eq(v.s[i].pid, (uint32_t)ch.pid);
		rss++;
		if (prev) {
			cr_assert_gt(v.s[i].mono_ns, prev, "samples in time order");
			sum += v.s[i].mono_ns - prev;
			gaps++;
		}
		prev = v.s[i].mono_ns;
	}
	cr_assert_eq(host, 6, "the host's six samples, once");
	cr_assert_geq(gaps, 5);
	cr_assert(fabs((double)sum / (double)gaps - (double)iv) <= 0.1 * (double)iv, "mean spacing %.1f ms, want 200 +- 20",
		  (double)sum / (double)gaps / 1e6);
	/* As many as the time followed holds, less one for the partial interval at each end. */
	cr_assert_geq(rss + 1, (uint32_t)(0.9 * (double)(t1 - t0 - iv) / (double)iv), "%u samples in %.2f s", rss,
		      (double)(t1 - t0) / 1e9);
	cr_assert_leq(rss, (uint32_t)((double)(t1 - t0) / (double)iv) + 1);
}

Test(metrics, interval_0_means_no_samples_but_a_run, .timeout = 60)
{
	static struct seen v;
	struct child ch;

	start(&ch, NULL, sleep_2s);
	follow(&ch, &v, EVR_METRICS_OFF, NULL, NULL, NULL);
	cr_assert_eq(v.n, 0);
	cr_assert_eq(v.runs, 1);
}

/* ---- memory --------------------------------------------------------------------------------------- */

static void allocate_100mib(void)
{
	size_t n = 100u << 20;
	char *p = malloc(n);
	struct timespec t = { 1, 0 };

	if (!p)
		_exit(9);
	memset(p, 1, n);
	nanosleep(&t, NULL);
	__asm__ volatile("" : : "r"(p) : "memory");
	free(p);
}

Test(metrics, rss_of_a_process_that_touches_100_mib_shows_it, .timeout = 60)
{
	static struct seen v;
	struct child ch;
	double max = 0;

	start(&ch, NULL, allocate_100mib);
	follow(&ch, &v, 200000000ull, NULL, NULL, NULL);
	for (uint32_t i = 0; i < v.n; i++)
		if (!strcmp(v.s[i].name, "process.memory.rss") && v.s[i].value > max)
			max = v.s[i].value;
	cr_assert_geq(max, 100.0 * 1024 * 1024, "max RSS %.1f MiB", max / 1048576);
}

/* ---- run params ----------------------------------------------------------------------------------- */

static void emit_one(void)
{
	EVR_EVENT("app", "hello", EVR_U32("n", 1));
	sleep_2s();
}

Test(metrics, run_params_are_present_and_the_environment_only_where_allowed, .timeout = 60)
{
	static struct seen v, none;
	static const char *const allow[] = { "EVR_TEST_ALLOWED*", NULL };
	char *const envp[] = { "EVR_TEST_SECRET=s3cret", "EVR_TEST_ALLOWED_X=yes", "EVRING_NAME=metrics", NULL };
	pid_t pid;

	pid = spawn_demo(envp);
	follow_any(NULL, pid, &v, 0, "exp-t", allow, NULL);
	cr_assert_eq(v.runs, 1);
	cr_assert_eq(strlen(v.run_id), 32);
	cr_assert_eq(strspn(v.run_id, "0123456789abcdef"), 32);
	cr_assert_str_eq(v.experiment, "exp-t");
	cr_assert_eq(v.run_pid, (uint32_t)pid);
	cr_assert(v.got_event && !v.record_before_run, "the run reaches the handler before any record of its source");
	for (const char *const *k = (const char *const[]){ "program", "cmdline", "exe", "build_id", "host", "kernel",
							   "evring.version", NULL };
	     *k; k++)
		cr_assert(param(&v, *k) && *param(&v, *k), "param %s present and not empty", *k);
	{
		static char self[4096];
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

		char demo[4096];

		self[n > 0 ? n : 0] = 0;
		cr_assert_not_null(realpath(EVR_DEMO, demo));
		cr_assert_str_eq(param(&v, "exe"), demo, "the program exec'ed");
		cr_assert_str_neq(param(&v, "exe"), self);
	}
	cr_assert_str_eq(param(&v, "env.EVR_TEST_ALLOWED_X"), "yes");
	cr_assert_null(param(&v, "env.EVR_TEST_SECRET"), "a variable not allowed stays out");

	cr_assert(strstr(param(&v, "cmdline"), "--rate 50 --duration 1.5 --quiet"), "%s", param(&v, "cmdline"));
	cr_assert_str_eq(param(&v, "program"), "evring-demo");

	/* Without --env-allow: no env.* at all; the experiment is "default". */
	pid = spawn_demo(envp);
	follow_any(NULL, pid, &none, 0, NULL, NULL, NULL);
	cr_assert_str_eq(none.experiment, "default");
	for (uint32_t i = 0; i < none.nparams; i++)
		cr_assert_neq(strncmp(none.params[i][0], "env.", 4), 0, "%s", none.params[i][0]);
	cr_assert_str_neq(none.run_id, v.run_id);
}

/* The producer's own params: EVR_META_PARAM entries, one before the attach, one after, and a bad one. */
static void put_param(const unsigned char *body, uint32_t len)
{
	char name[128], err[128];
	struct evr_segment seg;
	uint64_t id;

	evr_segment_name(name, sizeof(name), getpid(), "metrics");
	if (evr_segment_open(&seg, name, err, sizeof(err)) != 0 || evr_meta_append(&seg, EVR_META_PARAM, body, len, &id) != 0)
		_exit(7);
	evr_segment_close(&seg);
}

static void param_before(void)
{
	static const unsigned char model[] = { 0x92, 0xa5, 'm', 'o', 'd', 'e', 'l', 0xa6, 'g', 'p', 't', '-', '4', 'o' };

	put_param(model, sizeof(model));
}

static void param_after(void)
{
	static const unsigned char temp[] = { 0x92, 0xa4, 't', 'e', 'm', 'p', 0xa3, '0', '.', '2' };
	static const unsigned char bad[] = { 0x92, 0x01, 0x02 }; /* [1, 2]: not two str */
	struct timespec t = { 0, 500000000 };

	nanosleep(&t, NULL);
	put_param(temp, sizeof(temp));
	put_param(bad, sizeof(bad));
	nanosleep(&t, NULL);
}

Test(metrics, producer_params_at_attach_and_later_reach_the_run, .timeout = 60)
{
	static struct seen v;
	struct evr_consumer_stats st;
	struct child ch;

	start(&ch, param_before, param_after);
	follow(&ch, &v, 0, NULL, NULL, &st);
	cr_assert_eq(v.runs, 2, "the run at attach, and its update once the later param came");
	cr_assert_str_eq(param(&v, "app.model"), "gpt-4o");
	cr_assert_str_eq(param(&v, "app.temp"), "0.2");
	cr_assert_eq(st.run_params_bad, 1);
	cr_assert_eq(st.runs, 2);
}

/* ---- git ------------------------------------------------------------------------------------------ */

static char git_dir[256];

static void into_git_dir(void)
{
	if (chdir(git_dir) != 0)
		_exit(8);
}

static bool sh(const char *cmd, char *out, size_t len)
{
	FILE *p = popen(cmd, "r");
	size_t n = 0;

	if (!p)
		return false;
	if (out) {
		n = fread(out, 1, len - 1, p);
		out[n] = 0;
		while (n && (out[n - 1] == '\n'))
			out[--n] = 0;
	}
	return pclose(p) == 0;
}

Test(metrics, git_commit_is_the_head_of_the_working_directory_repository, .timeout = 60)
{
	static struct seen v;
	struct child ch;
	char root[128], cmd[1024], head[128];

	cr_assert(sh("git --version >/dev/null 2>&1", NULL, 0), "git is needed (tools/install-deps.sh installs it)");
	snprintf(root, sizeof(root), "/tmp/evr-git-%d", (int)getpid());
	snprintf(cmd, sizeof(cmd),
		 "set -e; rm -rf %s; mkdir -p %s/sub/dir; cd %s; git init -q; git config user.email t@t; "
		 "git config user.name t; echo a > f; git add f; git commit -qm one; echo b > f; git commit -qam two; "
		 "git pack-refs --all",
		 root, root, root);
	cr_assert(sh(cmd, NULL, 0), "making a repository");
	snprintf(cmd, sizeof(cmd), "git -C %s rev-parse HEAD", root);
	cr_assert(sh(cmd, head, sizeof(head)));
	/* A subdirectory, and the branch only in packed-refs: the walk up and the packed lookup. */
	snprintf(git_dir, sizeof(git_dir), "%s/sub/dir", root);
	start(&ch, into_git_dir, emit_one);
	follow(&ch, &v, 0, NULL, NULL, NULL);
	cr_assert_not_null(param(&v, "git.commit"));
	cr_assert_str_eq(param(&v, "git.commit"), head);

	/* A linked work tree: a .git file, HEAD in its own git dir, the branch in the common one. */
	{
		char wt[160], wthead[128], got[128];

		snprintf(wt, sizeof(wt), "%s-wt", root);
		snprintf(cmd, sizeof(cmd), "set -e; rm -rf %s; cd %s; git worktree add -q -b side %s; cd %s; "
			 "echo c > g; git add g; git commit -qm three", wt, root, wt, wt);
		cr_assert(sh(cmd, NULL, 0), "a linked work tree");
		snprintf(cmd, sizeof(cmd), "git -C %s rev-parse HEAD", wt);
		cr_assert(sh(cmd, wthead, sizeof(wthead)));
		cr_assert_eq(evr__git_commit(wt, got, sizeof(got)), 40);
		cr_assert_str_eq(got, wthead);
		cr_assert_str_neq(got, head);
		snprintf(cmd, sizeof(cmd), "rm -rf %s %s", root, wt);
		sh(cmd, NULL, 0);
	}
	cr_assert_eq(evr__git_commit("/", head, sizeof(head)), -ENOENT);
}

/* ---- hostile files -------------------------------------------------------------------------------- */

Test(metrics, build_id_reader_refuses_bad_elf_files)
{
	char path[64], hex[160];
	unsigned char buf[4096];
	int fd;

	snprintf(path, sizeof(path), "/tmp/evr-elf-%d", (int)getpid());
	/* Not ELF; truncated; then the test's own executable with random bytes over its notes. */
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "hello", 5), 5);
	cr_assert_eq(evr__elf_build_id(fd, hex, sizeof(hex)), -ENOEXEC);
	close(fd);
	fd = open("/proc/self/exe", O_RDONLY);
	cr_assert_gt(evr__elf_build_id(fd, hex, sizeof(hex)), 0, "the test binary has a build id");
	cr_assert_eq(pread(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	close(fd);
	srand(7);
	for (int round = 0; round < 2000; round++) {
		unsigned char m[sizeof(buf)];
		int rc;

		memcpy(m, buf, sizeof(m));
		for (int k = 0; k < 8; k++)
			m[64 + rand() % (int)(sizeof(m) - 64)] = (unsigned char)rand();
		if (round % 3 == 0)
			m[32 + rand() % 32] = (unsigned char)rand(); /* the program header table's offset or counts */
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		cr_assert_eq(write(fd, m, (size_t)(64 + rand() % (int)(sizeof(m) - 64))) > 0, true);
		rc = evr__elf_build_id(fd, hex, sizeof(hex));
		cr_assert(rc == -ENOEXEC || rc == -ENOENT || (rc > 0 && rc < (int)sizeof(hex) && strlen(hex) == (size_t)rc),
			  "rc %d", rc);
		close(fd);
	}
	unlink(path);
}

/* ---- captures ------------------------------------------------------------------------------------- */

/* The metric and run lines of a jsonl file, in order. */
static char *item_lines(const char *path)
{
	FILE *f = fopen(path, "r");
	char *line = NULL, *out = NULL;
	size_t cap = 0, len = 0;
	FILE *m = open_memstream(&out, &len);

	cr_assert_not_null(f);
	while (getline(&line, &cap, f) > 0)
		if (strstr(line, "{\"kind\":\"metric\"") == line || strstr(line, "{\"kind\":\"run\"") == line)
			fputs(line, m);
	free(line);
	fclose(f);
	fclose(m);
	return out;
}

Test(metrics, a_capture_keeps_metrics_and_runs_and_a_replay_gives_the_same_lines, .timeout = 60)
{
	struct evr_consumer_opts o = { .merge_window_ns = 1000000, .metrics_interval_ns = 200000000ull };
	char err[256], cap[64], live[64], rep[64], spec[96];
	struct evr_consumer *c;
	struct child ch;
	char *a, *b;

	snprintf(cap, sizeof(cap), "/tmp/evr-metrics-%d.evr", (int)getpid());
	snprintf(live, sizeof(live), "/tmp/evr-metrics-%d.live.jsonl", (int)getpid());
	snprintf(rep, sizeof(rep), "/tmp/evr-metrics-%d.replay.jsonl", (int)getpid());
	unlink(live);
	unlink(rep);
	start(&ch, param_before, param_after);
	c = evr_consumer_new(&o, err, sizeof(err));
	cr_assert_not_null(c, "%s", err);
	snprintf(spec, sizeof(spec), "jsonl=%s", live);
	cr_assert_geq(evr_consumer_add_builtin(c, spec, NULL, err, sizeof(err)), 0, "%s", err);
	cr_assert_geq(evr_consumer_attach_pid(c, (uint32_t)ch.pid, 0, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(evr_consumer_capture(c, cap, err, sizeof(err)), 0, "%s", err); /* after the attach, as record does */
	child_go(&ch);
	cr_assert_eq(evr_consumer_run(c, 30000000000ull, NULL), 0);
	child_reap(&ch, 0);
	cr_assert_eq(evr_consumer_capture_end(c), 0);
	evr_consumer_end(c);
	evr_consumer_close(c);

	c = evr_consumer_new(&o, err, sizeof(err));
	cr_assert_not_null(c, "%s", err);
	snprintf(spec, sizeof(spec), "jsonl=%s", rep);
	cr_assert_geq(evr_consumer_add_builtin(c, spec, NULL, err, sizeof(err)), 0, "%s", err);
	cr_assert_geq(evr_consumer_replay(c, cap, err, sizeof(err)), 0, "%s", err);
	evr_consumer_end(c);
	evr_consumer_close(c);

	a = item_lines(live);
	b = item_lines(rep);
	cr_assert(strstr(a, "\"kind\":\"run\"") && strstr(a, "process.memory.rss") && strstr(a, "host.cpus") &&
			  strstr(a, "\"app.temp\":\"0.2\""),
		  "the live run has runs, process and host samples, and the later param");
	cr_assert_str_eq(b, a, "the replay's metric and run lines are the live run's");
	free(a);
	free(b);
	unlink(cap);
	unlink(live);
	unlink(rep);
}

/* ---- chrome ----------------------------------------------------------------------------------------- */

Test(metrics, chrome_draws_cpu_and_rss_as_counter_tracks_of_the_process, .timeout = 60)
{
	struct evr_consumer_opts o = { .merge_window_ns = 1000000, .metrics_interval_ns = 200000000ull };
	char err[256], path[64], spec[96], cmd[1024], out[256] = "";
	struct evr_consumer *c;
	struct child ch;

	snprintf(path, sizeof(path), "/tmp/evr-metrics-%d.chrome.json", (int)getpid());
	start(&ch, NULL, emit_one);
	c = evr_consumer_new(&o, err, sizeof(err));
	cr_assert_not_null(c, "%s", err);
	snprintf(spec, sizeof(spec), "chrome=%s", path);
	cr_assert_geq(evr_consumer_add_builtin(c, spec, NULL, err, sizeof(err)), 0, "%s", err);
	cr_assert_geq(evr_consumer_attach_pid(c, (uint32_t)ch.pid, 0, err, sizeof(err)), 0, "%s", err);
	child_go(&ch);
	cr_assert_eq(evr_consumer_run(c, 30000000000ull, NULL), 0);
	child_reap(&ch, 0);
	evr_consumer_end(c);
	evr_consumer_close(c);
	/* Strict JSON; per counter name, the samples of the child's pid; its labels name the run. */
	snprintf(cmd, sizeof(cmd),
		 "python3 -c \"import json,sys\n"
		 "e=json.load(open(sys.argv[1]))['traceEvents']\n"
		 "c=[x for x in e if x['ph']=='C' and x['pid']==%d]\n"
		 "n={k:sum(x['name']==k for x in c) for k in ('process.cpu.user','process.memory.rss')}\n"
		 "assert all(isinstance(x['args']['value'],(int,float)) and x['ts']>0 for x in c)\n"
		 "l=[x for x in e if x['name']=='process_labels' and x['pid']==%d]\n"
		 "print(n['process.cpu.user']>=5, n['process.memory.rss']>=5, len(l)==1 and 'run=' in l[0]['args']['labels'])\" %s",
		 (int)ch.pid, (int)ch.pid, path);
	cr_assert(sh(cmd, out, sizeof(out)), "the chrome file did not parse");
	cr_assert_str_eq(out, "True True True");
	unlink(path);
}
