/*
 * test_reclaim.c: the segments dead processes leave stay bounded. Forked
 * children that write and end with _exit() (no exit handlers) each leave
 * their segment; the next producer to open, and evr_segment_reclaim as a
 * consumer that lists segments runs it, keep only the newest dead ones of
 * the name, by count and by bytes. A dead segment with a live consumer, and
 * one whose creator lives, are kept; a pid reused by another process is
 * dead. A producer removes its own segment at exit by the name it keeps,
 * whatever its header says.
 */
#include <dirent.h>

#include "producer_test.h"

#define CHILDREN 200

/* A private segment name, so that only this test's segments are counted. */
static void private_env(char *name, size_t len, const char *what, const char *keep, const char *keep_bytes)
{
	snprintf(name, len, "rcl-%s-%d", what, (int)getpid());
	setenv("EVRING_NAME", name, 1);
	setenv("EVRING_LANES", "2", 1);
	setenv("EVRING_LANE_BYTES", "4096", 1);
	setenv("EVRING_META_BYTES", "4096", 1);
	setenv("EVRING_KEEP_DEAD", keep, 1);
	if (keep_bytes)
		setenv("EVRING_KEEP_DEAD_BYTES", keep_bytes, 1);
	else
		unsetenv("EVRING_KEEP_DEAD_BYTES");
}

/* The pids of the segments named name in /dev/shm, into pids (sorted); returns how many. */
static int segments_of(const char *name, pid_t *pids, int cap)
{
	DIR *d = opendir("/dev/shm");
	struct dirent *e;
	int n = 0;

	cr_assert_not_null(d);
	while ((e = readdir(d)) != NULL) {
		char *end;
		long pid;

		if (strncmp(e->d_name, "evring.", 7) != 0)
			continue;
		pid = strtol(e->d_name + 7, &end, 10);
		if (*end != '.' || strcmp(end + 1, name) != 0)
			continue;
		cr_assert_lt(n, cap);
		pids[n++] = (pid_t)pid;
	}
	closedir(d);
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && pids[j - 1] > pids[j]; j--) {
			pid_t t = pids[j];
			pids[j] = pids[j - 1];
			pids[j - 1] = t;
		}
	return n;
}

static bool has_pid(const pid_t *v, int n, pid_t p)
{
	for (int i = 0; i < n; i++)
		if (v[i] == p)
			return true;
	return false;
}

/* Forks n children that each write a few events and _exit(); their pids in order into kids. */
static void fork_writers(pid_t *kids, int n)
{
	for (int i = 0; i < n; i++) {
		int status;

		fflush(NULL);
		kids[i] = fork();
		cr_assert_geq(kids[i], 0);
		if (kids[i] == 0) {
			for (int k = 0; k < 3; k++)
				EVR_EVENT("app", "child", EVR_I64("k", k));
			_exit(evr_enabled() ? 0 : 9);
		}
		cr_assert_eq(waitpid(kids[i], &status, 0), kids[i]);
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d could not trace: %d", i, status);
	}
}

/* The policy a consumer applies, from the same environment. */
static struct evr_reclaim_stats reclaim_as_consumer(const char *name)
{
	struct evr_reclaim_policy p;
	struct evr_reclaim_stats st;
	char err[EVR_ERR_MAX];

	cr_assert_eq(evr_reclaim_policy_from_env(&p, err, sizeof(err)), 0, "%s", err);
	p.name = name;
	cr_assert_eq(evr_segment_reclaim(&p, &st), 0);
	return st;
}

static void remove_all(const char *name)
{
	pid_t pids[CHILDREN + 8];
	int n = segments_of(name, pids, CHILDREN + 8);
	char shm[128];

	for (int i = 0; i < n; i++) {
		snprintf(shm, sizeof(shm), "/evring.%d.%s", (int)pids[i], name);
		evr_segment_unlink(shm);
	}
}

Test(reclaim, forked_children_that_exit_leave_at_most_the_bound, .timeout = 120)
{
	pid_t kids[CHILDREN], left[CHILDREN + 8];
	char name[64];
	int n;

	private_env(name, sizeof(name), "fork", "5", NULL);
	fork_writers(kids, CHILDREN);
	/* Each child reclaimed at its open: 5 dead before it, then itself. */
	n = segments_of(name, left, CHILDREN + 8);
	cr_assert_eq(n, 6, "%d segments left by %d dead children, bound 5 (+ the last, dead after its open)", n,
		     CHILDREN);
	for (int i = CHILDREN - 6; i < CHILDREN; i++)
		cr_assert(has_pid(left, n, kids[i]), "the newest are kept: child %d (pid %d) is gone", i, (int)kids[i]);
	/* A consumer listing segments applies the bound: the 5 newest stay. */
	struct evr_reclaim_stats st = reclaim_as_consumer(name);
	cr_assert_eq(st.dead, 6);
	cr_assert_eq(st.removed, 1);
	cr_assert_eq(st.errors, 0);
	n = segments_of(name, left, CHILDREN + 8);
	cr_assert_eq(n, 5);
	for (int i = CHILDREN - 5; i < CHILDREN; i++)
		cr_assert(has_pid(left, n, kids[i]), "child %d (pid %d) is gone", i, (int)kids[i]);
	remove_all(name);
}

Test(reclaim, the_byte_bound_keeps_the_newest_that_fit)
{
	pid_t kids[10], left[16];
	struct stat sb;
	char name[64], shm[160], bytes[32];
	int n;

	private_env(name, sizeof(name), "bytes", "100", NULL);
	fork_writers(kids, 1);
	snprintf(shm, sizeof(shm), "/dev/shm/evring.%d.%s", (int)kids[0], name);
	cr_assert_eq(stat(shm, &sb), 0);
	/* Room for three segments and a half: three are kept. */
	snprintf(bytes, sizeof(bytes), "%lld", (long long)sb.st_size * 7 / 2);
	setenv("EVRING_KEEP_DEAD_BYTES", bytes, 1);
	fork_writers(kids + 1, 9);
	reclaim_as_consumer(name);
	n = segments_of(name, left, 16);
	cr_assert_eq(n, 3, "%d left", n);
	for (int i = 7; i < 10; i++)
		cr_assert(has_pid(left, n, kids[i]), "child %d is gone", i);
	remove_all(name);
}

Test(reclaim, keeps_a_segment_a_live_consumer_reads_and_a_live_creators)
{
	pid_t kids[4], left[8], sleeper;
	struct evr_segment seg;
	char name[64], shm[160], err[EVR_ERR_MAX];
	int n, fd[2];
	char b;

	private_env(name, sizeof(name), "live", "5", NULL);
	fork_writers(kids, 2);
	/* The oldest, with this process as its consumer: kept while it reads. */
	snprintf(shm, sizeof(shm), "/evring.%d.%s", (int)kids[0], name);
	cr_assert_eq(evr_segment_open(&seg, shm, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(evr_consumer_slot_claim(&seg, (uint32_t)getpid(), NULL), 0);
	/* A live producer of the name. */
	cr_assert_eq(pipe(fd), 0);
	fflush(NULL);
	sleeper = fork();
	if (sleeper == 0) {
		EVR_EVENT("app", "child", EVR_I64("k", 0));
		if (write(fd[1], "r", 1) != 1)
			_exit(3);
		pause();
		_exit(0);
	}
	cr_assert_eq(read(fd[0], &b, 1), 1);
	setenv("EVRING_KEEP_DEAD", "0", 1);
	reclaim_as_consumer(name);
	n = segments_of(name, left, 8);
	cr_assert_eq(n, 2, "%d left", n);
	cr_assert(has_pid(left, n, kids[0]), "the segment being read was removed");
	cr_assert(has_pid(left, n, sleeper), "a live producer's segment was removed");
	/* Released, it goes like any dead one. */
	evr_consumer_slot_release(&seg, (uint32_t)getpid());
	evr_segment_close(&seg);
	reclaim_as_consumer(name);
	cr_assert_eq(segments_of(name, left, 8), 1);
	kill(sleeper, SIGKILL);
	waitpid(sleeper, NULL, 0);
	remove_all(name);
}

Test(reclaim, a_pid_reused_by_another_process_is_dead)
{
	pid_t left[8], sleeper;
	struct evr_segment seg;
	struct evr_segment_config cfg = { .lanes = 2, .lane_bytes = 4096, .meta_bytes = 4096 };
	char name[64], shm[160], err[EVR_ERR_MAX];
	int fd[2];
	char b;

	private_env(name, sizeof(name), "reuse", "0", NULL);
	/* A live process, and a segment under its pid as an earlier process with that pid would have left. */
	cr_assert_eq(pipe(fd), 0);
	fflush(NULL);
	sleeper = fork();
	if (sleeper == 0) {
		if (write(fd[1], "r", 1) != 1)
			_exit(3);
		pause();
		_exit(0);
	}
	cr_assert_eq(read(fd[0], &b, 1), 1);
	snprintf(shm, sizeof(shm), "/evring.%d.%s", (int)sleeper, name);
	cr_assert_eq(evr_segment_create(&seg, shm, &cfg, err, sizeof(err)), 0, "%s", err);
	seg.hdr->creator_pid = (uint32_t)sleeper;
	seg.hdr->creator_start_ticks = evr_proc_start_ticks((uint32_t)sleeper);
	cr_assert_neq(seg.hdr->creator_start_ticks, 0);
	reclaim_as_consumer(name);
	cr_assert_eq(segments_of(name, left, 8), 1, "the creator lives: kept");
	seg.hdr->creator_start_ticks -= 1; /* the creator started earlier: the pid was reused since */
	reclaim_as_consumer(name);
	cr_assert_eq(segments_of(name, left, 8), 0, "a reused pid's segment is dead");
	evr_segment_close(&seg);
	kill(sleeper, SIGKILL);
	waitpid(sleeper, NULL, 0);
}

Test(reclaim, a_bad_setting_is_refused_with_its_name)
{
	struct evr_reclaim_policy p;
	char err[EVR_ERR_MAX];

	setenv("EVRING_KEEP_DEAD", "many", 1);
	cr_assert_eq(evr_reclaim_policy_from_env(&p, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "EVRING_KEEP_DEAD=many") != NULL, "%s", err);
	setenv("EVRING_KEEP_DEAD", "3", 1);
	setenv("EVRING_KEEP_DEAD_BYTES", "12Q", 1);
	cr_assert_eq(evr_reclaim_policy_from_env(&p, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "EVRING_KEEP_DEAD_BYTES=12Q") != NULL, "%s", err);
	setenv("EVRING_KEEP_DEAD_BYTES", "2M", 1);
	cr_assert_eq(evr_reclaim_policy_from_env(&p, err, sizeof(err)), 0);
	cr_assert_eq(p.keep_count, 3);
	cr_assert_eq(p.keep_bytes, 2u << 20);
}

/* The producer removes its segment by the name it keeps, even when the header's creator_pid was overwritten. */
static void corrupt_then(bool use_close)
{
	char name[64];

	private_env(name, sizeof(name), use_close ? "close" : "exit", "8", NULL);
	EVR_EVENT("app", "first", EVR_I64("k", 1));
	PT_ASSERT(evr_enabled(), "%s", evr_last_error());
	PT_ASSERT(pt_shm_exists(getpid(), name));
	evr_segment_current()->hdr->creator_pid = 1;
	if (use_close) {
		evr_close();
		PT_ASSERT(!pt_shm_exists(getpid(), name), "evr_close left its segment behind");
		_exit(0);
	}
	exit(0);
}

Test(reclaim, a_corrupted_header_does_not_keep_the_segment_at_close)
{
	pid_t p;
	int status;
	char name[64];

	fflush(NULL);
	p = fork();
	if (p == 0) {
		pt_in_child = true;
		corrupt_then(true);
	}
	cr_assert_eq(waitpid(p, &status, 0), p);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	snprintf(name, sizeof(name), "rcl-close-%d", (int)p);
	cr_assert(!pt_shm_exists(p, name));
}

Test(reclaim, a_corrupted_header_does_not_keep_the_segment_at_exit)
{
	pid_t p;
	int status;
	char name[64];

	fflush(NULL);
	p = fork();
	if (p == 0) {
		pt_in_child = true;
		corrupt_then(false);
	}
	cr_assert_eq(waitpid(p, &status, 0), p);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	snprintf(name, sizeof(name), "rcl-exit-%d", (int)p);
	cr_assert(!pt_shm_exists(p, name), "exit left segment %s behind", name);
	{
		char shm[128];
		snprintf(shm, sizeof(shm), "/evring.%d.%s", (int)p, name);
		evr_segment_unlink(shm);
	}
}
