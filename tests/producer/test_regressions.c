/*
 * test_regressions.c: one test per bug found in review, named after it.
 */
#include "producer_test.h"

static uint64_t inner_emits(uint64_t v)
{
	EVR_EVENT("app", "inner", EVR_U64("v", v));
	return v * 2;
}

Test(regression, field_value_that_emits_does_not_corrupt_the_lane)
{
	struct pt_log log = { 0 };

	pt_open("reg-nested", 0, 0);
	for (uint64_t i = 0; i < 100; i++)
		EVR_EVENT("app", "outer", EVR_U64("a", i), EVR_U64("b", inner_emits(i)));
	pt_read(&log); /* every record decodes and matches its site, or this fails */
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "inner"), 100);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "outer"), 100);
	for (size_t n = 0; n < 100; n++) {
		struct pt_rec *r = pt_find(&log, EVR_REC_EVENT, "outer", n);
		cr_assert_eq(pt_field(r, "b")->via.u64, 2 * pt_field(r, "a")->via.u64);
	}
	pt_log_free(&log);
	evr_close();
}

Test(regression, emit_while_a_record_is_being_written_is_refused_and_counted)
{
	struct pt_log log = { 0 };

	pt_open("reg-reenter", 0, 0);
	EVR_EVENT("app", "first");
	/* As a signal handler would find it: this thread is between reserve and commit. */
	uint64_t limit = evr__thread.w.limit;
	evr__thread.w.limit = EVR_WRITER_BUSY;
	EVR_EVENT("app", "from_handler", EVR_U32("n", 1));
	evr__thread.w.limit = limit;
	EVR_EVENT("app", "after");
	pt_read(&log);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "from_handler"), 0);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "after"), 1);
	cr_assert_eq(evr_segment_current()->hdr->writer_reentrant, 1);
	pt_log_free(&log);
	evr_close();
}

static void victim(void)
{
	EVR_EVENT("app", "victim");
}

Test(regression, flag_bits_a_consumer_writes_never_make_the_producer_register_again)
{
	struct evr_segment *seg;
	struct evr_meta_view v;
	uint64_t cursor = 0, used;

	pt_open("reg-flagbit", 0, 0);
	victim(); /* registers the one site used below */
	seg = evr_segment_current();
	while (evr_meta_next(seg, &cursor, &v, false) == 1)
		if (v.kind == EVR_META_SITE)
			evr_meta_entry_at(seg, v.id)->flags = 0x80000000u; /* the old "unregistered" bit */
	used = seg->hdr->meta_used;
	for (int i = 0; i < 1000; i++)
		victim();
	cr_assert_eq(seg->hdr->meta_used, used, "the site registered again: %llu metadata bytes added",
		     (unsigned long long)(seg->hdr->meta_used - used));
	evr_close();
}

static int child_span_ids(void *arg)
{
	struct evr_span *inherited = arg;
	struct pt_log log = { 0 };
	struct evr_span mine = EVR_SPAN_BEGIN("app", "child_root");

	PT_ASSERT(mine.id != inherited->id, "the child's span id repeats the parent's");
	EVR_SPAN_END(*inherited); /* begun in the parent's segment: nothing to write here */
	EVR_SPAN_END(mine);
	pt_read(&log);
	PT_ASSERT(pt_count(&log, EVR_REC_SPAN_END, NULL) == 1, "%zu ends in the child's segment",
		  pt_count(&log, EVR_REC_SPAN_END, NULL));
	pt_log_free(&log);
	evr_close();
	return 0;
}

Test(regression, span_ids_differ_across_fork_and_old_spans_stay_in_their_segment)
{
	pt_open("reg-forkspan", 0, 0);
	struct evr_span open_span = EVR_SPAN_BEGIN("app", "parent_root");
	int status = pt_fork_run(child_span_ids, &open_span);
	pt_unlink_child_segment("reg-forkspan");
	pt_assert_child_ok(status, "child");
	EVR_SPAN_END(open_span);
	evr_close();
}

/* One call site, called before and after the metadata area fills. */
static void early_site(void)
{
	EVR_EVENT("app", "early_site");
}

Test(regression, site_parked_on_a_full_metadata_area_records_after_the_next_open)
{
	struct pt_log log = { 0 };
	char path[200];
	int rc = 0;

	pt_open("reg-full", 0, 0);
	memset(path, 'd', sizeof(path) - 1);
	path[sizeof(path) - 1] = 0;
	early_site(); /* registered while there is room */
	for (int i = 0; i < 100000 && rc == 0; i++)
		rc = evr_dispatcher("filler", true); /* fill the metadata area */
	cr_assert_eq(rc, -ENOSPC);
	/*
	 * Every call of a site with no entry is lost, and counted as lost: an
	 * event one record, a span begin two (its end is never written).
	 */
	for (int i = 0; i < 5; i++)
		EVR_EVENT("app", "late_site");
	for (int i = 0; i < 3; i++) {
		struct evr_span s = EVR_SPAN_BEGIN("app", "late_span");
		EVR_SPAN_END(s);
	}
	early_site(); /* the next record written reports them */
	pt_read(&log);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "late_site"), 0);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "early_site"), 2);
	cr_assert_eq(log.lost, 5 + 3 * 2, "lost %llu, expected 11", (unsigned long long)log.lost);
	cr_assert_eq(log.lost_records, 1, "one LOST record reports them");
	pt_log_free(&log);
	pt_open("reg-full2", 0, 0);
	EVR_EVENT("app", "late_site");
	memset(&log, 0, sizeof(log));
	pt_read(&log);
	cr_assert_eq(pt_count(&log, EVR_REC_EVENT, "late_site"), 1, "the parked site stayed off");
	pt_log_free(&log);
	evr_close();
}

/*
 * The event path compares no generations: a thread whose writer belongs to
 * an earlier segment must still never write there. evr_open and evr_close
 * send every open thread's next record down the slow path, which opens its
 * writer in the new segment. Here a worker writes, the main thread reopens
 * tracing (while the worker is idle, as evr_open's contract asks), and the
 * worker's next records must all be in the new segment, none in the old.
 */
struct reopen_worker {
	pthread_barrier_t step;
};

static void *reopen_worker_main(void *arg)
{
	struct reopen_worker *w = arg;

	for (int i = 0; i < 10; i++)
		EVR_EVENT("app", "before", EVR_U32("i", (uint32_t)i));
	pthread_barrier_wait(&w->step); /* main reopens */
	pthread_barrier_wait(&w->step);
	for (int i = 0; i < 10; i++)
		EVR_EVENT("app", "after", EVR_U32("i", (uint32_t)i));
	pthread_barrier_wait(&w->step); /* main closes */
	pthread_barrier_wait(&w->step);
	EVR_EVENT("app", "closed");
	return NULL;
}

Test(regression, a_thread_writes_into_the_segment_opened_after_it_last_wrote)
{
	struct reopen_worker w;
	struct pt_log first = { 0 }, second = { 0 }, stale = { 0 };
	struct evr_segment old;
	pthread_t th;

	pthread_barrier_init(&w.step, NULL, 2);
	pt_open("reg-reopen-1", 0, 0);
	cr_assert_eq(pthread_create(&th, NULL, reopen_worker_main, &w), 0);
	pthread_barrier_wait(&w.step);
	old = *evr_segment_current(); /* still mapped after the reopen: never unmapped while threads may write */
	pt_read(&first);
	pt_open("reg-reopen-2", 0, 0);
	cr_assert_neq(evr_segment_current()->base, old.base, "a new segment");
	pthread_barrier_wait(&w.step);
	pthread_barrier_wait(&w.step);
	pt_read(&second);
	pt_read_seg(&stale, &old);
	cr_assert_eq(pt_count(&stale, EVR_REC_EVENT, "after"), 0, "no record went to the earlier segment");
	cr_assert_eq(pt_count(&first, EVR_REC_EVENT, "before"), 10);
	cr_assert_eq(pt_count(&second, EVR_REC_EVENT, "after"), 10, "the worker's records after the reopen");
	cr_assert_eq(pt_count(&second, EVR_REC_EVENT, "before"), 0);
	evr_close();
	pthread_barrier_wait(&w.step);
	pthread_join(th, NULL);
	cr_assert(!evr_enabled());
	pt_log_free(&first);
	pt_log_free(&second);
	pt_log_free(&stale);
	pthread_barrier_destroy(&w.step);
}
