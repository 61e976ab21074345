/*
 * test_fork.c: after fork() the child writes a segment of its own, created
 * at its first record, with its own sites; the parent's segment is left
 * exactly as it was, and the parent goes on writing to it.
 */
#include "producer_test.h"

/* Sites the parent uses before the fork and the child after it. */
static void emit_shared_site(int64_t i)
{
	EVR_EVENT("app", "forked_site", EVR_I64("i", i), EVR_CONTENT("c", "content"));
}

struct lane_snap {
	uint64_t owner, tail, records, lost, head;
};

struct seg_snap {
	uint64_t meta_used, lane_claims;
	struct lane_snap lanes[EVR_DEFAULT_LANES];
};

static void snap(struct evr_segment *seg, struct seg_snap *s)
{
	memset(s, 0, sizeof(*s));
	s->meta_used = evr_ld_64(&seg->hdr->meta_used);
	s->lane_claims = evr_ld_64(&seg->hdr->lane_claims);
	for (uint32_t i = 0; i < seg->lane_count && i < EVR_DEFAULT_LANES; i++) {
		struct evr_lane *l = &seg->lanes[i];
		s->lanes[i] = (struct lane_snap){ evr_ld_64(&l->owner), evr_ld_64(&l->tail), evr_ld_64(&l->records),
						  evr_ld_64(&l->lost), evr_ld_64(&l->head) };
	}
}

struct fork_arg {
	pid_t parent;
};

static int fork_child(void *p)
{
	struct fork_arg *a = p;
	struct pt_log log = { 0 };
	struct evr_segment *seg;
	struct evr_span s;
	struct pt_rec *r;
	char shm[128];
	uint64_t id;

	PT_ASSERT(getpid() != a->parent);
	PT_ASSERT(!evr_enabled(), "the parent's segment is not the child's");
	PT_ASSERT(evr_span_current().id == 0, "the parent's open spans are not the child's");
	emit_shared_site(100);
	PT_ASSERT(evr_enabled(), "the first record opens the child's segment: %s", evr_last_error());
	s = EVR_SPAN_BEGIN("app", "child_span");
	id = s.id;
	EVR_SPAN_END(s);

	seg = evr_segment_current();
	snprintf(shm, sizeof(shm), "/evring.%d.fork-seg", (int)getpid());
	PT_ASSERT(strcmp(seg->shm_name, shm) == 0, "child segment %s, want %s", seg->shm_name, shm);
	PT_ASSERT(pt_shm_exists(getpid(), "fork-seg"));
	PT_ASSERT(seg->hdr->creator_pid == (uint32_t)getpid());
	PT_ASSERT(seg->lane_bytes == 64u << 10, "the child keeps the parent's configuration (lane bytes %llu)",
		  (unsigned long long)seg->lane_bytes);
	PT_ASSERT(evr_capture_content(), "the child keeps the parent's content capture");

	pt_read(&log);
	PT_ASSERT(log.nrec == 3, "%zu records", log.nrec);
	r = pt_find(&log, EVR_REC_EVENT, "forked_site", 0);
	PT_ASSERT(pt_field(r, "i")->via.i64 == 100);
	PT_ASSERT(pt_str_is(pt_field(r, "c"), "content"));
	PT_ASSERT(pt_sites_named(&log, "event", "forked_site") == 1, "the child registers its own sites");
	PT_ASSERT(pt_map_u64(pt_meta_map(pt_meta_nth(&log, EVR_META_PROCESS, 0)), "pid") == (uint64_t)getpid());
	PT_ASSERT(pt_span_rec(&log, EVR_REC_SPAN_BEGIN, id) != NULL);
	PT_ASSERT(pt_u64(pt_span_rec(&log, EVR_REC_SPAN_BEGIN, id), PT_PARENT) == 0, "a root in the child");
	PT_ASSERT(pt_span_rec(&log, EVR_REC_SPAN_END, id) != NULL);
	pt_log_free(&log);
	evr_close();
	PT_ASSERT(!pt_shm_exists(getpid(), "fork-seg"));
	PT_ASSERT(pt_shm_exists(a->parent, "fork-seg"), "the child's close unlinked the parent's segment");
	return 0;
}

Test(fork, child_writes_a_segment_of_its_own)
{
	struct pt_log log = { 0 };
	struct seg_snap before, after;
	struct evr_segment *seg;
	struct fork_arg a;
	struct evr_span open_span;
	uint64_t open_id;
	size_t nrec;

	pt_open("fork-seg", 64 << 10, 1);
	seg = evr_segment_current();
	emit_shared_site(1);
	open_span = EVR_SPAN_BEGIN("app", "parent_span");
	open_id = open_span.id;
	pt_read(&log);
	nrec = log.nrec;
	snap(seg, &before);

	a = (struct fork_arg){ getpid() };
	pt_assert_child_ok(pt_fork_run(fork_child, &a), "fork child");

	snap(seg, &after);
	cr_assert_eq(memcmp(&before, &after, sizeof(before)), 0, "the child wrote into the parent's segment");
	pt_read(&log);
	cr_assert_eq(log.nrec, nrec, "the parent's segment holds records from the child");

	/* The parent goes on where it was: its lane, its sites, its open span. */
	emit_shared_site(2);
	EVR_SPAN_END(open_span);
	pt_read(&log);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "forked_site"), 2);
	cr_assert_eq(pt_field(pt_find(&log, EVR_REC_EVENT, "forked_site", 1), "i")->via.i64, 2);
	cr_assert_not_null(pt_span_rec(&log, EVR_REC_SPAN_END, open_id));
	cr_assert_eq(pt_sites_named(&log, "event", "forked_site"), 1);
	pt_log_free(&log);
	evr_close();
}

static int env_child(void *p)
{
	(void)p;
	PT_ASSERT(!evr_enabled());
	EVR_EVENT("app", "in_child");
	PT_ASSERT(evr_enabled(), "%s", evr_last_error());
	PT_ASSERT(pt_shm_exists(getpid(), "fork-env"));
	PT_ASSERT(evr_segment_current()->lane_count == 4);
	evr_close();
	return 0;
}

Test(fork, child_of_an_implicitly_opened_parent)
{
	pt_env_clear();
	setenv("EVRING_NAME", "fork-env", 1);
	setenv("EVRING_LANES", "4", 1);
	EVR_EVENT("app", "in_parent");
	cr_assert(evr_enabled());
	pt_assert_child_ok(pt_fork_run(env_child, NULL), "child of an implicit open");
	cr_assert(pt_shm_exists(getpid(), "fork-env"));
	evr_close();
}

static int untraced_child(void *p)
{
	(void)p;
	EVR_EVENT("app", "in_child");
	PT_ASSERT(!evr_enabled(), "the child of an untraced parent opened a segment");
	PT_ASSERT(!pt_shm_exists(getpid(), "fork-closed"));
	return 0;
}

Test(fork, child_of_a_closed_parent_stays_untraced)
{
	pt_open("fork-closed", 0, 0);
	EVR_EVENT("app", "in_parent");
	evr_close();
	pt_assert_child_ok(pt_fork_run(untraced_child, NULL), "child of a closed parent");
}

struct threaded_fork {
	pthread_barrier_t ready, done;
	int status;
};

static void *busy_parent_thread(void *p)
{
	struct threaded_fork *tf = p;

	EVR_EVENT("app", "parent_thread");
	pthread_barrier_wait(&tf->ready);
	pthread_barrier_wait(&tf->done);
	EVR_EVENT("app", "parent_thread_after");
	return NULL;
}

static int lone_child(void *p)
{
	struct pt_log log = { 0 };

	(void)p;
	EVR_EVENT("app", "in_child");
	pt_read(&log);
	PT_ASSERT(log.nrec == 1);
	PT_ASSERT(pt_meta_nth(&log, EVR_META_THREAD, 1) == NULL, "one thread in the child");
	pt_log_free(&log);
	evr_close();
	return 0;
}

Test(fork, fork_while_other_threads_hold_lanes)
{
	struct threaded_fork tf;
	struct pt_log log = { 0 };
	pthread_t t;

	pt_open("fork-threads", 0, 0);
	pthread_barrier_init(&tf.ready, NULL, 2);
	pthread_barrier_init(&tf.done, NULL, 2);
	cr_assert_eq(pthread_create(&t, NULL, busy_parent_thread, &tf), 0);
	pthread_barrier_wait(&tf.ready);
	tf.status = pt_fork_run(lone_child, NULL);
	pthread_barrier_wait(&tf.done);
	pthread_join(t, NULL);
	pt_assert_child_ok(tf.status, "child of a threaded parent");
	pt_read(&log);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "parent_thread"), 1);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "parent_thread_after"), 1);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "in_child"), 0);
	pt_log_free(&log);
	pthread_barrier_destroy(&tf.ready);
	pthread_barrier_destroy(&tf.done);
	evr_close();
}

static int cfg_child(void *p)
{
	(void)p;
	EVR_EVENT("app", "in_child");
	PT_ASSERT(evr_enabled(), "%s", evr_last_error());
	PT_ASSERT(pt_shm_exists(getpid(), "fork-cfg"), "the child's segment is named as the parent's was");
	PT_ASSERT(!pt_shm_exists(getpid(), "fork-env-name"));
	PT_ASSERT(evr_segment_current()->lane_count == 5);
	PT_ASSERT(evr_segment_current()->lane_bytes == 8192);
	PT_ASSERT(evr_capture_content());
	evr_close();
	return 0;
}

/* Regression: a child of a process opened with evr_open(&cfg) opened its segment from the environment. */
Test(fork, regression_child_keeps_the_config_of_evr_open)
{
	struct evr_config cfg = { .name = "fork-cfg", .lanes = 5, .lane_bytes = 8192, .capture_content = 1 };

	pt_env_clear();
	setenv("EVRING_NAME", "fork-env-name", 1);
	cr_assert_eq(evr_open(&cfg), 0, "%s", evr_last_error());
	pt_assert_child_ok(pt_fork_run(cfg_child, NULL), "child of evr_open(&cfg)");
	evr_close();
}
