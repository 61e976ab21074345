/*
 * test_stdio.c: run parameters (evr_run_param) and the stdio tee
 * (EVRING_CAPTURE_STDIO=1), in real forked producers whose original stdout
 * and stderr are pipes or memory files the test reads.
 */
#include "producer_test.h"

#include <poll.h>
#include <sys/mman.h>

/* ---- output the children write -------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/*
 * n bytes of mixed output: lines from empty to 300 bytes, one in 16 longer
 * than the string limit (up to 6000), one in 32 of random binary bytes (NULs
 * and newlines among them), and no newline at the end.
 */
static char *gen_output(uint64_t seed, size_t n)
{
	char *b = malloc(n);
	size_t i = 0;

	cr_assert(b);
	while (i < n) {
		uint64_t r = rng_next(&seed);
		size_t len = r % 16 == 0 ? EVR_STR_LIMIT + 1 + (r >> 8) % 6000 : (r >> 8) % 300;
		bool binary = (r >> 4) % 32 == 0;

		for (size_t k = 0; k < len && i < n; k++, i++)
			b[i] = binary ? (char)(rng_next(&seed) & 0xff) : (char)(' ' + (i + k) % 90);
		if (i < n)
			b[i++] = '\n';
	}
	b[n - 1] = 'x';
	return b;
}

/* Lines the tee writes for out: one per newline, and the last without one. */
static size_t lines_in(const char *p, size_t n)
{
	size_t lines = 0;

	for (size_t i = 0; i < n; i++)
		lines += p[i] == '\n';
	return lines + (n && p[n - 1] != '\n');
}

/* Writes all of p to fd in pieces of varied size, as an application's writes come. */
static bool write_pieces(int fd, const char *p, size_t n, uint64_t seed)
{
	while (n > 0) {
		size_t k = 1 + rng_next(&seed) % 65536;
		ssize_t w = write(fd, p, k < n ? k : n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

static void env_tee(const char *on)
{
	pt_env_clear();
	setenv("EVRING_CAPTURE_STDIO", on, 1);
}

/* The tee's lane: records written and records dropped, summed over the exclusive lanes. */
struct lane_sums {
	uint64_t records, lost;
};

static struct lane_sums lanes_sum(const struct evr_segment *seg)
{
	struct lane_sums s = { 0, 0 };

	for (uint32_t i = 0; i < seg->lane_count; i++) {
		s.records += seg->lanes[i].records;
		s.lost += seg->lanes[i].lost;
	}
	return s;
}

/* ---- 100 MB through a tee nobody drains ------------------------------------- */

#define BIG (50u << 20) /* per stream */

Test(stdio, tee_complete_under_stalled_consumer, .timeout = 60)
{
	char *out = gen_output(1, BIG), *err = gen_output(2, BIG);
	int po[2], pe[2], rep[2];
	struct lane_sums sums;
	size_t got[2] = { 0, 0 };
	bool same[2] = { true, true };
	const char *want[2] = { out, err };
	int status;
	pid_t pid;

	cr_assert_eq(pipe(po), 0);
	cr_assert_eq(pipe(pe), 0);
	cr_assert_eq(pipe(rep), 0);
	fflush(NULL);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		/* No consumer ever attaches: the tee's lane (64 KiB) fills and every later line is dropped. */
		struct evr_config cfg = { .name = "stdio_big", .lane_bytes = 64 << 10, .capture_content = 0 };
		struct evr_segment *seg;

		dup2(po[1], 1);
		dup2(pe[1], 2);
		close(po[0]), close(po[1]), close(pe[0]), close(pe[1]), close(rep[0]);
		env_tee("1");
		if (evr_open(&cfg) != 0)
			_exit(2);
		seg = evr_segment_current();
		if (!write_pieces(1, out, BIG / 2, 3) || !write_pieces(2, err, BIG / 2, 4) ||
		    !write_pieces(1, out + BIG / 2, BIG - BIG / 2, 5) || !write_pieces(2, err + BIG / 2, BIG - BIG / 2, 6))
			_exit(3);
		evr_close(); /* stops the tee: it sends on what the pipes hold; the mapping stays */
		sums = lanes_sum(seg);
		if (write(rep[1], &sums, sizeof(sums)) != sizeof(sums))
			_exit(4);
		_exit(0);
	}
	close(po[1]), close(pe[1]), close(rep[1]);

	/* Read both streams as they come, comparing with what the child wrote. */
	{
		static char buf[1 << 16];
		int fds[2] = { po[0], pe[0] };

		while (fds[0] >= 0 || fds[1] >= 0) {
			struct pollfd pf[2] = { { .fd = fds[0], .events = POLLIN }, { .fd = fds[1], .events = POLLIN } };

			cr_assert_geq(poll(pf, 2, -1), 0);
			for (int i = 0; i < 2; i++) {
				ssize_t n;

				if (!pf[i].revents)
					continue;
				n = read(fds[i], buf, sizeof(buf));
				cr_assert_geq(n, 0);
				if (n == 0) {
					close(fds[i]);
					fds[i] = -1;
					continue;
				}
				if (got[i] + (size_t)n > BIG || memcmp(buf, want[i] + got[i], (size_t)n) != 0)
					same[i] = false;
				got[i] += (size_t)n;
			}
		}
	}
	cr_assert_eq(read(rep[0], &sums, sizeof(sums)), (ssize_t)sizeof(sums), "the child did not report");
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
	cr_assert_eq(got[0], BIG, "stdout: %zu bytes of %u", got[0], BIG);
	cr_assert_eq(got[1], BIG, "stderr: %zu bytes of %u", got[1], BIG);
	cr_assert(same[0], "stdout differs from what the application wrote");
	cr_assert(same[1], "stderr differs from what the application wrote");

	/* Every line is either in the lane or counted lost: never silently missing. */
	{
		size_t lines = lines_in(out, BIG) + lines_in(err, BIG);

		cr_assert_gt(sums.lost, lines / 2, "%llu of %zu lines lost: the lane should have filled",
			     (unsigned long long)sums.lost, lines);
		/* records + lost: each line once, plus the tee thread's THREAD record and at most a LOST record. */
		cr_assert(sums.records + sums.lost >= lines && sums.records + sums.lost <= lines + 2,
			  "records %llu + lost %llu for %zu lines", (unsigned long long)sums.records,
			  (unsigned long long)sums.lost, lines);
	}
	close(rep[0]);
	free(out);
	free(err);
}

/* ---- every line as an event ---------------------------------------------------- */

static int mem_fd(const char *name)
{
	int fd = memfd_create(name, MFD_CLOEXEC);

	cr_assert_geq(fd, 0);
	return fd;
}

static char *fd_slurp(int fd, size_t *n)
{
	off_t end = lseek(fd, 0, SEEK_END);
	char *b = malloc((size_t)end + 1);

	cr_assert(b);
	cr_assert_eq(pread(fd, b, (size_t)end, 0), end);
	*n = (size_t)end;
	return b;
}

/* The event text a line gives: NUL as U+FFFD, cut at the limit on a character boundary. */
static size_t expect_text(const char *line, size_t n, char *text, bool *cut)
{
	size_t len = 0;

	*cut = false;
	for (size_t i = 0; i < n; i++) {
		size_t w = line[i] ? 1 : 3;

		if (len + w > EVR_STR_LIMIT) {
			*cut = true;
			break;
		}
		memcpy(text + len, line[i] ? &line[i] : "\xef\xbf\xbd", w);
		len += w;
	}
	if (*cut) {
		size_t i = len;
		while (i > 0 && ((unsigned char)text[i - 1] & 0xc0) == 0x80)
			i--;
		if (i > 0 && ((unsigned char)text[i - 1] & 0x80)) {
			unsigned char lead = (unsigned char)text[i - 1];
			size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
			if (len - (i - 1) < need)
				len = i - 1;
		}
	}
	return len;
}

struct lines_arg {
	int out, err, real_err;
	const char *want[2];
	size_t n[2];
};

/* Checks the events of one stream against the bytes it carried, in order. */
static void check_stream(const struct pt_log *log, const char *name, const char *p, size_t n)
{
	static char text[EVR_STR_LIMIT + 4];
	size_t nth = 0, at = 0;

	while (at < n) {
		const char *nl = memchr(p + at, '\n', n - at);
		size_t len = nl ? (size_t)(nl - (p + at)) : n - at;
		bool cut;
		size_t tn;
		struct pt_rec *r = pt_find(log, EVR_REC_EVENT, name, nth);
		const msgpack_object *t = pt_field(r, "text"), *tr = pt_field(r, "truncated");

		tn = expect_text(p + at, len, text, &cut);
		PT_ASSERT(t && t->type == MSGPACK_OBJECT_STR, "%s #%zu: no text", name, nth);
		PT_ASSERT(t->via.str.size == tn && memcmp(t->via.str.ptr, text, tn) == 0,
			  "%s #%zu: text of %u bytes, expected %zu", name, nth, t->via.str.size, tn);
		PT_ASSERT(cut ? tr && tr->type == MSGPACK_OBJECT_BOOLEAN && tr->via.boolean : tr == NULL,
			  "%s #%zu: truncated %s, expected %s", name, nth, tr ? "present" : "absent", cut ? "true" : "absent");
		nth++;
		at += len + (nl != NULL);
	}
	PT_ASSERT(pt_count(log, EVR_REC_EVENT, name) == nth, "%zu %s events for %zu lines", pt_count(log, EVR_REC_EVENT, name),
		  name, nth);
}

static int lines_child(void *arg)
{
	struct lines_arg *a = arg;
	struct evr_config cfg = { .name = "stdio_lines", .lane_bytes = 4 << 20, .capture_content = 0 };
	struct evr_segment *seg;
	struct pt_log log = { 0 };

	dup2(a->out, 1);
	dup2(a->err, 2);
	env_tee("1");
	if (evr_open(&cfg) != 0)
		return 2;
	seg = evr_segment_current();
	/* Through the descriptors and through stdio's FILE buffers alike. */
	if (!write_pieces(1, a->want[0], a->n[0] / 2, 7) || !write_pieces(2, a->want[1], a->n[1], 8))
		return 3;
	fwrite(a->want[0] + a->n[0] / 2, 1, a->n[0] - a->n[0] / 2, stdout);
	fflush(stdout);
	evr_close();
	dup2(a->real_err, 2); /* the checks report on the test's stderr */
	pt_read_seg(&log, seg);
	PT_ASSERT(log.lost == 0, "%llu lines lost with a lane that holds them all", (unsigned long long)log.lost);
	check_stream(&log, "stdout", a->want[0], a->n[0]);
	check_stream(&log, "stderr", a->want[1], a->n[1]);
	pt_log_free(&log);
	return 0;
}

Test(stdio, every_line_an_event, .timeout = 30)
{
	static const char tail[] = "crlf line\r\n\r\nunicode \xc3\xa9\xe2\x82\xac\n\0nul\0in\0line\nlast, no newline";
	struct lines_arg a = { .out = mem_fd("out"), .err = mem_fd("err"), .real_err = dup(2) };
	char *out = gen_output(11, 200000), *err = gen_output(12, 100000), *big;
	size_t no, ne;

	/* A line of multi-byte characters longer than the limit: cut on a character boundary. */
	big = malloc(100000 + sizeof(tail) + 2 * EVR_STR_LIMIT);
	memcpy(big, err, 100000);
	big[99999] = '\n';
	for (size_t i = 0; i < EVR_STR_LIMIT; i += 2)
		memcpy(big + 100000 + i, "\xc3\xa9", 2);
	big[100000 + EVR_STR_LIMIT] = '\n';
	memcpy(big + 100000 + EVR_STR_LIMIT + 1, "x\xc3\xa9", 3);
	memcpy(big + 100000 + EVR_STR_LIMIT + 4, tail, sizeof(tail) - 1);
	a.want[0] = out;
	a.n[0] = 200000;
	a.want[1] = big;
	a.n[1] = 100000 + EVR_STR_LIMIT + 4 + sizeof(tail) - 1;
	pt_assert_child_ok(pt_fork_run(lines_child, &a), "stdio lines");

	{
		char *o = fd_slurp(a.out, &no), *e = fd_slurp(a.err, &ne);

		cr_assert_eq(no, a.n[0]);
		cr_assert_eq(ne, a.n[1]);
		cr_assert(memcmp(o, a.want[0], no) == 0, "stdout differs");
		cr_assert(memcmp(e, a.want[1], ne) == 0, "stderr differs");
		free(o);
		free(e);
	}
	free(out);
	free(err);
	free(big);
}

/* ---- off, fork ------------------------------------------------------------------ */

static bool same_file(int a, int b)
{
	struct stat sa, sb;

	return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int off_child(void *arg)
{
	int fd = *(int *)arg;

	dup2(fd, 1);
	env_tee("1");
	setenv("EVRING", "off", 1);
	PT_ASSERT(evr_open(NULL) == 0 && !evr_enabled());
	PT_ASSERT(same_file(1, fd), "EVRING=off: fd 1 was replaced");
	PT_ASSERT(evr_run_param("model", "m") == -ENODEV);
	return 0;
}

Test(stdio, off_installs_nothing)
{
	int fd = mem_fd("off");

	pt_assert_child_ok(pt_fork_run(off_child, &fd), "EVRING=off");
}

static int fork_child(void *arg)
{
	int fd = *(int *)arg, status;
	pid_t pid;

	dup2(fd, 1);
	env_tee("1");
	PT_ASSERT(evr_open(&(struct evr_config){ .name = "stdio_fork", .capture_content = -1 }) == 0);
	PT_ASSERT(!same_file(1, fd), "the tee is not installed");
	PT_ASSERT(write(1, "parent before\n", 14) == 14);
	pid = fork();
	PT_ASSERT(pid >= 0);
	if (pid == 0) {
		/* No tee thread here: the original descriptor is back, and output reaches it even through _exit. */
		if (!same_file(1, fd) || write(1, "child\n", 6) != 6)
			_exit(1);
		_exit(0);
	}
	PT_ASSERT(waitpid(pid, &status, 0) == pid);
	PT_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the forked child's fd 1 is not the original");
	PT_ASSERT(write(1, "parent after\n", 13) == 13);
	evr_close();
	PT_ASSERT(same_file(1, fd), "evr_close did not give fd 1 back");
	return 0;
}

Test(stdio, fork_child_writes_to_the_original)
{
	int fd = mem_fd("fork");
	size_t n;
	char *b;

	pt_assert_child_ok(pt_fork_run(fork_child, &fd), "fork with the tee");
	b = fd_slurp(fd, &n);
	/* The child wrote straight to the file, the parent through its tee: both whole, each in its order. */
	cr_assert_eq(n, 14 + 6 + 13);
	cr_assert(memmem(b, n, "child\n", 6));
	cr_assert(memmem(b, n, "parent before\n", 14) && memmem(b, n, "parent after\n", 13));
	cr_assert_lt((char *)memmem(b, n, "parent before\n", 14), (char *)memmem(b, n, "parent after\n", 13));
	free(b);
}

static int redirect_child(void *arg)
{
	int *fd = arg;

	dup2(fd[0], 1);
	env_tee("1");
	EVR_EVENT("app", "first"); /* the implicit open starts the tee too */
	PT_ASSERT(evr_enabled() && !same_file(1, fd[0]), "the first record did not start the tee");
	PT_ASSERT(write(1, "teed\n", 5) == 5);
	dup2(fd[1], 1); /* the application points fd 1 elsewhere itself */
	PT_ASSERT(write(1, "own\n", 4) == 4);
	evr_close();
	PT_ASSERT(same_file(1, fd[1]), "evr_close took back an fd 1 the application had redirected");
	return 0;
}

Test(stdio, close_keeps_the_applications_own_redirect)
{
	int fd[2] = { mem_fd("teed"), mem_fd("own") };
	size_t n0, n1;
	char *b0, *b1;

	pt_assert_child_ok(pt_fork_run(redirect_child, fd), "redirect");
	b0 = fd_slurp(fd[0], &n0);
	b1 = fd_slurp(fd[1], &n1);
	cr_assert(n0 == 5 && !memcmp(b0, "teed\n", 5));
	cr_assert(n1 == 4 && !memcmp(b1, "own\n", 4));
	free(b0);
	free(b1);
}

static int exit_child(void *arg)
{
	int fd = *(int *)arg;

	dup2(fd, 1);
	env_tee("1");
	PT_ASSERT(evr_open(&(struct evr_config){ .name = "stdio_exit", .capture_content = -1 }) == 0);
	printf("buffered by stdio, no newline"); /* flushed at exit, through the tee */
	exit(0);
}

Test(stdio, exit_flushes_through_the_tee)
{
	int fd = mem_fd("exit");
	size_t n;
	char *b;

	pt_assert_child_ok(pt_fork_run(exit_child, &fd), "exit with the tee");
	b = fd_slurp(fd, &n);
	cr_assert_eq(n, 29);
	cr_assert(memcmp(b, "buffered by stdio, no newline", 29) == 0);
	free(b);
}

/* ---- run parameters --------------------------------------------------------------- */

static void check_params(struct pt_log *log, const char *const *kv, size_t n)
{
	size_t i = 0;
	struct pt_meta *m;

	for (; (m = pt_meta_nth(log, EVR_META_PARAM, i)) != NULL; i++) {
		const msgpack_object *a = m->u.data.via.array.ptr;

		cr_assert_lt(i, n, "more parameter entries than given");
		cr_assert(a[0].via.str.size == strlen(kv[2 * i]) &&
				  !memcmp(a[0].via.str.ptr, kv[2 * i], a[0].via.str.size),
			  "entry %zu: key", i);
		cr_assert(a[1].via.str.size == strlen(kv[2 * i + 1]) &&
				  !memcmp(a[1].via.str.ptr, kv[2 * i + 1], a[1].via.str.size),
			  "entry %zu: value", i);
	}
	cr_assert_eq(i, n);
}

Test(run_param, entries_read_back)
{
	static char key[EVR_PARAM_KEY_MAX + 2], value[EVR_PARAM_VALUE_MAX + 2];
	const char *kv[8];
	struct pt_log log = { 0 }, again = { 0 };

	memset(key, 'k', sizeof(key) - 1);
	memset(value, 'v', sizeof(value) - 1);
	pt_open("run_param", 0, 0);
	cr_assert_eq(evr_run_param("model", "llama-3-8b"), 0);
	cr_assert_eq(evr_run_param("temperature", "0.7"), 0);
	cr_assert_eq(evr_run_param("model", "llama-3-70b"), 0); /* both kept: a consumer takes the last */
	cr_assert_eq(evr_run_param(key, "v"), -E2BIG);
	cr_assert_eq(evr_run_param("k", value), -E2BIG);
	cr_assert_eq(evr_run_param("", "v"), -EINVAL);
	cr_assert_eq(evr_run_param(NULL, "v"), -EINVAL);
	cr_assert_eq(evr_run_param("k", NULL), -EINVAL);
	value[EVR_PARAM_VALUE_MAX] = 0;
	key[EVR_PARAM_KEY_MAX] = 0;
	cr_assert_eq(evr_run_param(key, value), 0); /* both at their limits */
	kv[0] = "model", kv[1] = "llama-3-8b", kv[2] = "temperature", kv[3] = "0.7";
	kv[4] = "model", kv[5] = "llama-3-70b", kv[6] = key, kv[7] = value;
	pt_read(&log);
	check_params(&log, kv, 4);
	pt_log_free(&log);

	/* A segment opened later gets the last value of each key, in the order they were last set. */
	pt_open("run_param2", 0, 0);
	pt_read(&again);
	kv[0] = "temperature", kv[1] = "0.7", kv[2] = "model", kv[3] = "llama-3-70b", kv[4] = key, kv[5] = value;
	check_params(&again, kv, 3);
	pt_log_free(&again);
	evr_close();
	cr_assert_eq(evr_run_param("model", "x"), -ENODEV);
}

Test(stdio, bad_setting_refused)
{
	env_tee("maybe");
	cr_assert_eq(evr_open(NULL), -EINVAL);
	cr_assert(strstr(evr_last_error(), "EVRING_CAPTURE_STDIO=maybe"), "error: %s", evr_last_error());
	cr_assert(!evr_enabled());
}
