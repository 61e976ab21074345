/*
 * test_config.c: configuration. Settings from the environment and from
 * struct evr_config, which wins; bad settings refused with -EINVAL and a
 * message naming the setting, after which tracing stays off and every macro
 * is a no-op; EVRING=off; and the implicit open at first use, whose refusal
 * is one line on stderr. Implicit opens run in a forked child, whose state
 * is fresh.
 */
#include "producer_test.h"

/* Every call of the API with tracing off: nothing written, nothing crashes. */
static void untraced_calls(void)
{
	struct evr_span s, c, a;

	EVR_EVENT("app", "untraced", EVR_STR("s", "x"), EVR_CONTENT("c", "y"));
	s = EVR_SPAN_BEGIN("app", "untraced_span", EVR_U64("n", 1));
	PT_ASSERT(s.id == 0);
	c = EVR_SPAN_BEGIN_CHILD(s, "app", "untraced_child");
	a = EVR_SPAN_BEGIN_ASYNC(s, "app", "untraced_async");
	PT_ASSERT(c.id == 0 && a.id == 0);
	EVR_EVENT_IN(s, "app", "untraced_in");
	EVR_SPAN_END(c);
	EVR_SPAN_DROP(a, EVR_STR("e", "x"));
	EVR_SPAN_END(s, EVR_U32("n", 2));
	{
		EVR_SPAN_SCOPED(x, "app", "untraced_scoped");
		PT_ASSERT(x.id == 0);
	}
	evr_span_enter(&s);
	evr_span_exit(&s);
	evr_trace_set_id(5);
	evr_trace_tags("session", "user");
	evr_thread_release();
	PT_ASSERT(evr_span_current().id == 0);
	PT_ASSERT(evr_dispatcher("app", true) == -ENODEV);
	PT_ASSERT(!evr_enabled());
	PT_ASSERT(evr_segment_current() == NULL);
}

static void expect_refused(const char *var, const char *val)
{
	struct evr_config cfg = { .name = "cfg-bad", .capture_content = -1 };
	int rc;

	pt_env_clear();
	setenv(var, val, 1);
	rc = evr_open(&cfg);
	cr_assert_eq(rc, -EINVAL, "%s=%s: evr_open returned %d", var, val, rc);
	cr_assert_not_null(strstr(evr_last_error(), var), "the message names %s: \"%s\"", var, evr_last_error());
	cr_assert_not_null(strstr(evr_last_error(), val), "the message shows the value: \"%s\"", evr_last_error());
	cr_assert_not(evr_enabled());
	cr_assert_null(evr_segment_current());
	cr_assert_not(pt_shm_exists(getpid(), "cfg-bad"), "a refused open left a segment");
	untraced_calls();
}

Test(config, bad_lanes_are_refused)
{
	expect_refused("EVRING_LANES", "abc");
	expect_refused("EVRING_LANES", "1");
	expect_refused("EVRING_LANES", "0");
	expect_refused("EVRING_LANES", "99999");
	expect_refused("EVRING_LANES", "4097");
	expect_refused("EVRING_LANES", "-4");
	expect_refused("EVRING_LANES", "8x");
	expect_refused("EVRING_LANES", "18446744073709551617");
}

Test(config, bad_lane_bytes_are_refused)
{
	expect_refused("EVRING_LANE_BYTES", "5000");
	expect_refused("EVRING_LANE_BYTES", "1G");
	expect_refused("EVRING_LANE_BYTES", "2K");
	expect_refused("EVRING_LANE_BYTES", "128M");
	expect_refused("EVRING_LANE_BYTES", "64KB");
	expect_refused("EVRING_LANE_BYTES", "abc");
	expect_refused("EVRING_LANE_BYTES", "-4096");
}

Test(config, bad_meta_bytes_are_refused)
{
	expect_refused("EVRING_META_BYTES", "2K");
	expect_refused("EVRING_META_BYTES", "257M");
	expect_refused("EVRING_META_BYTES", "lots");
}

Test(config, bad_consumer_stale_is_refused)
{
	expect_refused("EVRING_CONSUMER_STALE", "5ms");
	expect_refused("EVRING_CONSUMER_STALE", "2h");
	expect_refused("EVRING_CONSUMER_STALE", "soon");
	expect_refused("EVRING_CONSUMER_STALE", "-1s");
	expect_refused("EVRING_CONSUMER_STALE", "3601s");
}

Test(config, bad_switches_are_refused)
{
	expect_refused("EVRING", "maybe");
	expect_refused("EVRING_CAPTURE_CONTENT", "2");
	expect_refused("EVRING_CAPTURE_CONTENT", "sometimes");
}

Test(config, bad_config_fields_are_refused)
{
	static const struct evr_config bad[] = {
		{ .name = "cfg-field", .lanes = 1 },
		{ .name = "cfg-field", .lanes = EVR_LANES_MAX + 1 },
		{ .name = "cfg-field", .lane_bytes = 5000 },
		{ .name = "cfg-field", .lane_bytes = 1024 },
		{ .name = "cfg-field", .lane_bytes = 1ull << 30 },
		{ .name = "a/b" },
		{ .name = "" },
		{ .name = "a-name-longer-than-the-sixty-three-characters-a-segment-may-have" },
	};

	pt_env_clear();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = evr_open(&bad[i]);
		cr_assert_eq(rc, -EINVAL, "config %zu: evr_open returned %d", i, rc);
		cr_assert_neq(evr_last_error()[0], 0, "config %zu: no message", i);
		cr_assert_not(evr_enabled());
		untraced_calls();
	}
	cr_assert_not(pt_shm_exists(getpid(), "cfg-field"));
}

/* An event and a span from fixed sites; returns the span's id (0: not recorded). */
static uint64_t emit_reused(void)
{
	struct evr_span s = EVR_SPAN_BEGIN("app", "reused_span");
	uint64_t id = s.id;

	EVR_EVENT("app", "reused", EVR_U32("n", 1));
	EVR_SPAN_END(s);
	return id;
}

/* Regression: a site first used while an open was refused stayed off after a good evr_open. */
Test(config, regression_site_used_while_refused_records_after_open)
{
	struct pt_log log = { 0 };
	uint64_t id;

	pt_env_clear();
	setenv("EVRING_LANES", "abc", 1);
	cr_assert_eq(evr_open(NULL), -EINVAL);
	cr_assert_eq(emit_reused(), 0);
	untraced_calls();
	pt_open("cfg-recovered", 0, 0);
	cr_assert_str_eq(evr_last_error(), "");
	id = emit_reused();
	cr_assert_neq(id, 0, "the span site stayed off");
	pt_read(&log);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "reused"), 1, "the event site stayed off");
	cr_assert_eq(pt_span_count(&log, EVR_REC_SPAN_BEGIN, id), 1);
	cr_assert_eq(pt_span_count(&log, EVR_REC_SPAN_END, id), 1);
	pt_log_free(&log);
	evr_close();
}

Test(config, settings_from_the_environment)
{
	struct pt_log log = { 0 };
	const msgpack_object *m;
	char shm[128];

	pt_env_clear();
	setenv("EVRING", "on", 1);
	setenv("EVRING_NAME", "cfg-env", 1);
	setenv("EVRING_LANES", "4", 1);
	setenv("EVRING_LANE_BYTES", "64k", 1);
	setenv("EVRING_CAPTURE_CONTENT", "1", 1);
	setenv("EVRING_META_BYTES", "64K", 1);
	setenv("EVRING_CONSUMER_STALE", "250ms", 1);
	cr_assert_eq(evr_open(NULL), 0, "%s", evr_last_error());
	cr_assert_eq(evr_segment_current()->meta_bytes, 64u << 10);
	cr_assert_eq(evr_segment_current()->hdr->stale_ns, 250000000ull);
	unsetenv("EVRING_META_BYTES");
	unsetenv("EVRING_CONSUMER_STALE");
	cr_assert(evr_enabled());
	snprintf(shm, sizeof(shm), "/evring.%d.cfg-env", (int)getpid());
	cr_assert_str_eq(evr_segment_current()->shm_name, shm);
	cr_assert_eq(evr_segment_current()->lane_count, 4);
	cr_assert_eq(evr_segment_current()->lane_bytes, 64u << 10);
	cr_assert(evr_capture_content());
	pt_read(&log);
	m = pt_meta_map(pt_meta_nth(&log, EVR_META_PROCESS, 0));
	cr_assert_eq(pt_map_u64(m, "lanes"), 4);
	cr_assert_eq(pt_map_u64(m, "lane_bytes"), 64u << 10);
	cr_assert(pt_map_bool(m, "capture_content"));
	pt_log_free(&log);
	evr_close();

	/* Other spellings, and empty values meaning the default. */
	setenv("EVRING", "yes", 1);
	setenv("EVRING_LANES", "", 1);
	setenv("EVRING_LANE_BYTES", "1M", 1);
	setenv("EVRING_CAPTURE_CONTENT", "false", 1);
	cr_assert_eq(evr_open(NULL), 0, "%s", evr_last_error());
	cr_assert_eq(evr_segment_current()->lane_count, EVR_DEFAULT_LANES);
	cr_assert_eq(evr_segment_current()->lane_bytes, 1u << 20);
	cr_assert_not(evr_capture_content());
	evr_close();
	setenv("EVRING_LANE_BYTES", "4096", 1);
	setenv("EVRING_CAPTURE_CONTENT", "TRUE", 1);
	cr_assert_eq(evr_open(NULL), 0, "%s", evr_last_error());
	cr_assert_eq(evr_segment_current()->lane_bytes, 4096);
	cr_assert(evr_capture_content());
	evr_close();
	cr_assert_not(pt_shm_exists(getpid(), "cfg-env"));
}

Test(config, config_fields_win_over_the_environment)
{
	struct evr_config cfg = { .name = "cfg-fields", .lanes = 3, .lane_bytes = 8192, .capture_content = 0 };

	pt_env_clear();
	setenv("EVRING_NAME", "cfg-not-this", 1);
	setenv("EVRING_LANES", "abc", 1); /* never read: cfg says */
	setenv("EVRING_LANE_BYTES", "1G", 1);
	setenv("EVRING_CAPTURE_CONTENT", "1", 1);
	cr_assert_eq(evr_open(&cfg), 0, "%s", evr_last_error());
	cr_assert(pt_shm_exists(getpid(), "cfg-fields"));
	cr_assert_not(pt_shm_exists(getpid(), "cfg-not-this"));
	cr_assert_eq(evr_segment_current()->lane_count, 3);
	cr_assert_eq(evr_segment_current()->lane_bytes, 8192);
	cr_assert_not(evr_capture_content());
	evr_close();
}

Test(config, evring_off_writes_nothing)
{
	static const char *offs[] = { "off", "0", "false", "no", "OFF" };
	struct evr_config cfg = { .name = "cfg-off", .capture_content = -1 };

	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		pt_env_clear();
		setenv("EVRING", offs[i], 1);
		cr_assert_eq(evr_open(&cfg), 0, "EVRING=%s is not an error", offs[i]);
		cr_assert_not(evr_enabled(), "EVRING=%s", offs[i]);
		cr_assert_null(evr_segment_current());
		cr_assert_not(pt_shm_exists(getpid(), "cfg-off"), "EVRING=%s made a segment", offs[i]);
		cr_assert_not_null(strstr(evr_last_error(), "EVRING="), "%s", evr_last_error());
		untraced_calls();
	}
}

/* ---- implicit open, in a fresh process ---------------------------------- */

static int implicit_child(void *arg)
{
	struct pt_log log = { 0 };
	struct evr_segment *seg;
	char shm[128];

	(void)arg;
	pt_env_clear();
	setenv("EVRING_NAME", "cfg-implicit", 1);
	setenv("EVRING_LANE_BYTES", "64K", 1);
	PT_ASSERT(!evr_enabled(), "nothing opens before the first use");
	PT_ASSERT(!pt_shm_exists(getpid(), "cfg-implicit"));
	EVR_EVENT("app", "first_use", EVR_U64("n", 1));
	PT_ASSERT(evr_enabled(), "%s", evr_last_error());
	PT_ASSERT(strcmp(evr_last_error(), "") == 0);
	seg = evr_segment_current();
	snprintf(shm, sizeof(shm), "/evring.%d.cfg-implicit", (int)getpid());
	PT_ASSERT(strcmp(seg->shm_name, shm) == 0, "%s", seg->shm_name);
	PT_ASSERT(seg->lane_bytes == 64u << 10);
	pt_read(&log);
	PT_ASSERT(pt_count(&log, EVR_REC_EVENT, "first_use") == 1, "the first record itself is kept");
	PT_ASSERT(pt_field(pt_find(&log, EVR_REC_EVENT, "first_use", 0), "n")->via.u64 == 1);
	PT_ASSERT(pt_meta_nth(&log, EVR_META_PROCESS, 0) != NULL);
	pt_log_free(&log);
	evr_close();
	PT_ASSERT(!pt_shm_exists(getpid(), "cfg-implicit"));
	return 0;
}

Test(config, first_use_opens_from_the_environment)
{
	pt_assert_child_ok(pt_fork_run(implicit_child, NULL), "implicit open");
}

static int implicit_dispatcher_child(void *arg)
{
	(void)arg;
	pt_env_clear();
	setenv("EVRING_NAME", "cfg-implicit-disp", 1);
	PT_ASSERT(evr_dispatcher("app.llm", false) == 0, "evr_dispatcher is a first use too");
	PT_ASSERT(evr_enabled());
	evr_close();
	return 0;
}

Test(config, first_use_may_be_a_dispatcher)
{
	pt_assert_child_ok(pt_fork_run(implicit_dispatcher_child, NULL), "implicit open by evr_dispatcher");
}

struct stderr_child {
	int fd; /* the pipe's write end */
	const char *var, *val;
};

static int implicit_bad_child(void *arg)
{
	struct stderr_child *c = arg;
	int saved = dup(2);

	pt_env_clear();
	setenv("EVRING_NAME", "cfg-implicit-bad", 1);
	setenv(c->var, c->val, 1);
	dup2(c->fd, 2);
	close(c->fd);
	for (int i = 0; i < 10; i++)
		EVR_EVENT("app", "untraced", EVR_U64("i", (uint64_t)i));
	untraced_calls();
	fflush(stderr);
	dup2(saved, 2); /* the pipe's last write end closes: the parent reads to its end */
	close(saved);
	PT_ASSERT(!evr_enabled());
	PT_ASSERT(strstr(evr_last_error(), c->var) != NULL, "%s", evr_last_error());
	PT_ASSERT(!pt_shm_exists(getpid(), "cfg-implicit-bad"));
	return 0;
}

static void expect_one_line(const char *var, const char *val)
{
	struct stderr_child c = { -1, var, val };
	char out[4096], want[128];
	size_t len = 0;
	ssize_t n;
	int fds[2], status;

	cr_assert_eq(pipe(fds), 0);
	c.fd = fds[1];
	status = pt_fork_run(implicit_bad_child, &c);
	close(fds[1]);
	while (len < sizeof(out) - 1 && (n = read(fds[0], out + len, sizeof(out) - 1 - len)) > 0)
		len += (size_t)n;
	out[len] = 0;
	close(fds[0]);
	pt_assert_child_ok(status, out);
	snprintf(want, sizeof(want), "evring: %s=%s: ", var, val);
	cr_assert_eq(strncmp(out, want, strlen(want)), 0, "stderr: \"%s\"", out);
	cr_assert_not_null(strstr(out, "running untraced\n"), "stderr: \"%s\"", out);
	cr_assert_eq(strchr(out, '\n'), out + len - 1, "one line, however many sites ran: \"%s\"", out);
}

Test(config, first_use_with_a_bad_setting_says_so_on_stderr_once)
{
	expect_one_line("EVRING_LANES", "abc");
	expect_one_line("EVRING_LANE_BYTES", "5000");
	expect_one_line("EVRING", "maybe");
	expect_one_line("EVRING_CAPTURE_CONTENT", "2");
}

static int implicit_off_child(void *arg)
{
	(void)arg;
	pt_env_clear();
	setenv("EVRING", "off", 1);
	setenv("EVRING_NAME", "cfg-implicit-off", 1);
	EVR_EVENT("app", "untraced");
	untraced_calls();
	PT_ASSERT(!pt_shm_exists(getpid(), "cfg-implicit-off"));
	return 0;
}

Test(config, first_use_with_evring_off_stays_silent)
{
	char out[256];
	ssize_t n;
	int fds[2], status, saved;

	cr_assert_eq(pipe(fds), 0);
	fflush(stderr);
	saved = dup(2);
	dup2(fds[1], 2);
	close(fds[1]);
	status = pt_fork_run(implicit_off_child, NULL);
	dup2(saved, 2);
	close(saved);
	n = read(fds[0], out, sizeof(out) - 1);
	close(fds[0]);
	out[n > 0 ? n : 0] = 0;
	pt_assert_child_ok(status, out);
	cr_assert_eq(n, 0, "EVRING=off printed: \"%s\"", out);
}

Test(config, names_from_the_environment_are_made_safe)
{
	pt_env_clear();
	setenv("EVRING_NAME", "my app/v2", 1);
	cr_assert_eq(evr_open(NULL), 0, "%s", evr_last_error());
	cr_assert(pt_shm_exists(getpid(), "my_app_v2"), "'/' and ' ' become '_'");
	evr_close();
	cr_assert_not(pt_shm_exists(getpid(), "my_app_v2"));

	/* Without EVRING_NAME the program's name is used. */
	pt_env_clear();
	cr_assert_eq(evr_open(NULL), 0, "%s", evr_last_error());
	cr_assert(pt_shm_exists(getpid(), program_invocation_short_name), "%s", evr_segment_current()->shm_name);
	evr_close();
}

static int exit_child(void *arg)
{
	(void)arg;
	pt_env_clear();
	setenv("EVRING_NAME", "cfg-at-exit", 1);
	EVR_EVENT("app", "before_exit");
	PT_ASSERT(pt_shm_exists(getpid(), "cfg-at-exit"));
	exit(0); /* the library's exit handler unlinks the segment */
}

Test(config, process_exit_unlinks_the_segment)
{
	pt_assert_child_ok(pt_fork_run(exit_child, NULL), "exit");
	cr_assert_not(pt_shm_exists(pt_last_child, "cfg-at-exit"), "the segment outlived its process");
}

struct race {
	pthread_barrier_t go;
	uint32_t idx;
};

static void *first_use_racer(void *p)
{
	struct race *r = p;
	uint32_t idx = __atomic_fetch_add(&r->idx, 1, __ATOMIC_RELAXED);

	pthread_barrier_wait(&r->go);
	EVR_EVENT("app", "raced", EVR_U32("thread", idx));
	return NULL;
}

/* Several threads whose first records race to open the segment: one opens it, every record lands there. */
static int racing_child(void *arg)
{
	enum { T = 6 };
	struct pt_log log = { 0 };
	struct race r = { .idx = 0 };
	pthread_t t[T];
	bool seen[T] = { false };

	(void)arg;
	pt_env_clear();
	setenv("EVRING_NAME", "cfg-race", 1);
	pthread_barrier_init(&r.go, NULL, T);
	for (int i = 0; i < T; i++)
		PT_ASSERT(pthread_create(&t[i], NULL, first_use_racer, &r) == 0);
	for (int i = 0; i < T; i++)
		pthread_join(t[i], NULL);
	PT_ASSERT(evr_enabled(), "%s", evr_last_error());
	pt_read(&log);
	PT_ASSERT(pt_count(&log, EVR_REC_EVENT, "raced") == T, "%zu records", pt_count(&log, EVR_REC_EVENT, "raced"));
	for (int i = 0; i < T; i++)
		seen[pt_field(pt_find(&log, EVR_REC_EVENT, "raced", (size_t)i), "thread")->via.u64 % T] = true;
	for (int i = 0; i < T; i++)
		PT_ASSERT(seen[i], "no record from thread %d", i);
	PT_ASSERT(pt_meta_nth(&log, EVR_META_PROCESS, 1) == NULL, "opened twice");
	PT_ASSERT(pt_sites_named(&log, "event", "raced") >= 1);
	pt_log_free(&log);
	pthread_barrier_destroy(&r.go);
	evr_close();
	return 0;
}

Test(config, first_uses_racing_on_many_threads_open_once)
{
	pt_assert_child_ok(pt_fork_run(racing_child, NULL), "racing first uses");
	pt_unlink_child_segment("cfg-race");
}
