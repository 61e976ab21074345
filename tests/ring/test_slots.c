/*
 * test_slots.c: several consumer processes on one segment.
 *
 * A writer process writes numbered records at a steady pace for 10 s. Two
 * consumer processes read them, each in its own slot; one is stopped with
 * SIGSTOP for 3 s in the middle. The running one must lose nothing: the
 * stopped one holds the lane back only until its heartbeat is older than the
 * segment's bound (1 s, the default), then the writer pushes its head past
 * what it had not read. The stopped one, continued, must find that out and
 * count it exactly: delivered + lost == written for each of them, with no
 * record twice and none torn. Then a consumer killed with SIGKILL: its slot
 * stops holding the lane back and is taken over by the next claim.
 *
 * Children report through a MAP_SHARED block and _exit(); they die with the
 * test process (PR_SET_PDEATHSIG).
 */
#include "ring_test.h"

#include <errno.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>

#define LANES 2		     /* one exclusive lane, the shared one */
#define LANE_BYTES (4u << 20) /* more than a second of the writer's records: only a stop past the bound costs */
#define RUN_NS 10000000000ull
#define STOP_AT_NS 3500000000ull
#define STOP_NS 3000000000ull
#define MAX_RECORDS (4u << 20)
#define TEST_TIMEOUT_S 120

struct shared {
	volatile int writer_done, ready[2], stop_readers;
	uint64_t written, dropped;
	struct {
		uint64_t delivered, lost, overrun, overruns, torn, dup_or_reorder, bad_type, next_seq;
		int slot;
	} c[2];
	uint8_t seen[2][MAX_RECORDS / 8];
};

static char seg_name[128];

static void unlink_segment(void)
{
	if (seg_name[0])
		evr_segment_unlink(seg_name);
}

static uint64_t now_ns(void)
{
	return evr_clock_monotonic_ns();
}

static void sleep_us(uint64_t us)
{
	struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000 };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static pid_t spawn(void (*fn)(struct shared *, int), struct shared *sh, int arg)
{
	pid_t pid = fork();

	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() == 1)
			_exit(1);
		fn(sh, arg);
		_exit(0);
	}
	return pid;
}

/* Writes numbered records for RUN_NS (or until stop_readers), a few each 100 us, whatever the readers do. */
static void writer(struct shared *sh, int unused)
{
	struct evr_segment seg;
	struct evr_writer w;
	char err[EVR_ERR_MAX];
	uint8_t body[128];
	uint64_t seq = 0, end = now_ns() + RUN_NS;

	(void)unused;
	if (evr_segment_open(&seg, seg_name, err, sizeof(err)) != 0 ||
	    evr_writer_open(&w, &seg, (uint32_t)getpid(), (uint32_t)getpid(), 0) != 0 || w.shared)
		_exit(20);
	while (now_ns() < end && seq < MAX_RECORDS && !sh->stop_readers) {
		for (int i = 0; i < 8 && seq < MAX_RECORDS; i++, seq++) {
			uint32_t len = test_body_fill(body, 0, seq, (uint32_t)(test_mix(seq) % 33));
			if (!evr_writer_write(&w, EVR_REC_EVENT, body, len))
				__atomic_add_fetch(&sh->dropped, 1, __ATOMIC_RELAXED);
		}
		__atomic_store_n(&sh->written, seq, __ATOMIC_RELEASE);
		sleep_us(100);
	}
	__atomic_store_n(&sh->written, seq, __ATOMIC_RELEASE);
	evr_writer_close(&w);
	__atomic_store_n(&sh->writer_done, 1, __ATOMIC_RELEASE);
	evr_segment_close(&seg);
}

/* Claims a slot and reads every lane until the writer is done and a pass finds nothing. */
static void consumer(struct shared *sh, int k)
{
	static uint8_t buf[EVR_BODY_MAX];
	struct evr_segment seg;
	struct evr_reader r;
	struct evr_record rec;
	char err[EVR_ERR_MAX];
	int slot;

	if (evr_segment_open(&seg, seg_name, err, sizeof(err)) != 0)
		_exit(21);
	slot = evr_consumer_slot_claim(&seg, (uint32_t)getpid(), NULL);
	if (slot < 0 || evr_reader_init_slot(&r, &seg, (uint32_t)slot) != 0)
		_exit(22);
	sh->c[k].slot = slot;
	__atomic_store_n(&sh->ready[k], 1, __ATOMIC_RELEASE);
	for (;;) {
		bool done = __atomic_load_n(&sh->writer_done, __ATOMIC_ACQUIRE) || sh->stop_readers;
		uint64_t n = 0;

		for (uint32_t l = 0; l < seg.lane_count; l++) {
			while (evr_reader_next(&r, l, &rec, buf, sizeof(buf)) == 1) {
				const struct test_body *b = (const void *)rec.body;

				n++;
				if (rec.type == EVR_REC_THREAD || rec.type == EVR_REC_LOST)
					continue; /* LOST: counted in r.stats.lost */
				if (rec.type != EVR_REC_EVENT) {
					sh->c[k].bad_type++;
				} else if (!test_body_ok(rec.body, rec.body_len) || b->seq >= MAX_RECORDS) {
					sh->c[k].torn++;
				} else {
					if (b->seq < sh->c[k].next_seq ||
					    (sh->seen[k][b->seq / 8] & (1u << (b->seq % 8))))
						sh->c[k].dup_or_reorder++;
					sh->seen[k][b->seq / 8] |= (uint8_t)(1u << (b->seq % 8));
					sh->c[k].next_seq = b->seq + 1;
					sh->c[k].delivered++;
				}
			}
			evr_reader_release(&r, l);
		}
		sh->c[k].lost = r.stats.lost;
		sh->c[k].overrun = r.stats.overrun;
		sh->c[k].overruns = r.stats.overruns;
		if (done && n == 0)
			break;
		if (n == 0)
			sleep_us(200);
	}
	evr_consumer_slot_release_one(&seg, (uint32_t)slot, (uint32_t)getpid());
	evr_reader_fini(&r);
	evr_segment_close(&seg);
}

static struct shared *shared_block(void)
{
	struct shared *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(sh, MAP_FAILED);
	return sh;
}

static void wait_ready(struct shared *sh, int k)
{
	uint64_t deadline = now_ns() + 10000000000ull;

	while (!__atomic_load_n(&sh->ready[k], __ATOMIC_ACQUIRE)) {
		cr_assert_lt(now_ns(), deadline, "consumer %d did not start", k);
		sleep_us(100);
	}
}

static void reap(pid_t pid, const char *who)
{
	int st;

	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s ended with status %#x", who, st);
}

Test(slots, two_consumers_one_stopped, .fini = unlink_segment, .timeout = TEST_TIMEOUT_S)
{
	struct shared *sh = shared_block();
	struct evr_segment seg;
	pid_t w, c[2];

	test_segment(&seg, "slots-stop", LANES, LANE_BYTES);
	snprintf(seg_name, sizeof(seg_name), "%s", seg.shm_name);
	cr_assert_eq(seg.hdr->stale_ns, EVR_STALE_NS_DEFAULT, "the bound is 1 s unless configured");
	for (int k = 0; k < 2; k++) {
		c[k] = spawn(consumer, sh, k);
		wait_ready(sh, k);
	}
	cr_assert_neq(sh->c[0].slot, sh->c[1].slot, "each consumer has its own slot");
	w = spawn(writer, sh, 0);

	sleep_us(STOP_AT_NS / 1000);
	cr_assert_eq(kill(c[1], SIGSTOP), 0);
	sleep_us(STOP_NS / 1000);
	{
		struct evr_slot_info in;
		evr_consumer_slot_info(&seg, (uint32_t)sh->c[1].slot, &in);
		cr_assert(in.alive && in.stale, "the stopped consumer's slot: alive %d, stale %d (heartbeat %llu ms old)",
			  in.alive, in.stale, (unsigned long long)(in.heartbeat_age_ns / 1000000));
		evr_consumer_slot_info(&seg, (uint32_t)sh->c[0].slot, &in);
		cr_assert(in.alive && !in.stale, "the running consumer's slot is live");
	}
	cr_assert_eq(kill(c[1], SIGCONT), 0);
	reap(w, "the writer");
	for (int k = 0; k < 2; k++)
		reap(c[k], k ? "the stopped consumer" : "the running consumer");

	cr_log_info("written %llu, dropped %llu; running: %llu delivered, %llu lost; stopped: %llu delivered, %llu lost "
		    "(%llu pushed past in %llu pushes)",
		    (unsigned long long)sh->written, (unsigned long long)sh->dropped,
		    (unsigned long long)sh->c[0].delivered, (unsigned long long)sh->c[0].lost,
		    (unsigned long long)sh->c[1].delivered, (unsigned long long)sh->c[1].lost,
		    (unsigned long long)sh->c[1].overrun, (unsigned long long)sh->c[1].overruns);
	for (int k = 0; k < 2; k++) {
		cr_assert_eq(sh->c[k].torn, 0, "consumer %d: %llu torn records", k, (unsigned long long)sh->c[k].torn);
		cr_assert_eq(sh->c[k].bad_type, 0);
		cr_assert_eq(sh->c[k].dup_or_reorder, 0, "consumer %d: a record twice or out of order", k);
		/* Exact for each: what it got and what it was told it lost is everything written. */
		cr_assert_eq(sh->c[k].delivered + sh->c[k].lost, sh->written,
			     "consumer %d: %llu delivered + %llu lost, %llu written", k,
			     (unsigned long long)sh->c[k].delivered, (unsigned long long)sh->c[k].lost,
			     (unsigned long long)sh->written);
	}
	/* The stopped one held nothing back past its bound: the writer never dropped, the running one lost nothing. */
	cr_assert_eq(sh->dropped, 0, "the writer dropped %llu records while a consumer was stopped",
		     (unsigned long long)sh->dropped);
	cr_assert_eq(sh->c[0].lost, 0);
	cr_assert_eq(sh->c[0].delivered, sh->written);
	/* The stopped one was pushed past what it had not read, and counted exactly that. */
	cr_assert_gt(sh->c[1].overrun, 0, "the writer wrote more than a lane during the stop; nothing was pushed past");
	cr_assert_eq(sh->c[1].lost, sh->c[1].overrun);
	/* The writer counted from the head last published: what the reader had returned beyond it is taken back. */
	cr_assert_leq(sh->c[1].overrun, evr_segment_slot_lane(&seg, (uint32_t)sh->c[1].slot, 0)->evicted);
	test_segment_destroy(&seg);
	seg_name[0] = 0;
	munmap(sh, sizeof(*sh));
}

/* A consumer that claims a slot and keeps its heartbeat, reading nothing, until it is killed. */
static void idle_consumer(struct shared *sh, int k)
{
	struct evr_segment seg;
	struct evr_reader r;
	char err[EVR_ERR_MAX];
	int slot;

	if (evr_segment_open(&seg, seg_name, err, sizeof(err)) != 0)
		_exit(21);
	slot = evr_consumer_slot_claim(&seg, (uint32_t)getpid(), NULL);
	if (slot < 0 || evr_reader_init_slot(&r, &seg, (uint32_t)slot) != 0)
		_exit(22);
	sh->c[k].slot = slot;
	__atomic_store_n(&sh->ready[k], 1, __ATOMIC_RELEASE);
	for (;;) {
		evr_reader_heartbeat(&r);
		sleep_us(10000);
	}
}

Test(slots, killed_consumer_slot_reclaimed, .fini = unlink_segment, .timeout = TEST_TIMEOUT_S)
{
	struct shared *sh = shared_block();
	struct evr_segment seg;
	struct evr_writer w;
	struct evr_slot_info in;
	uint8_t body[64];
	uint64_t seq = 0, dropped = 0, epoch;
	uint32_t holder = 0;
	int st, slot;
	pid_t c;

	test_segment_stale(&seg, "slots-kill", LANES, 65536, 200000000ull); /* a 200 ms bound */
	snprintf(seg_name, sizeof(seg_name), "%s", seg.shm_name);
	c = spawn(idle_consumer, sh, 0);
	wait_ready(sh, 0);
	slot = sh->c[0].slot;
	epoch = seg.hdr->slots[slot].epoch;
	cr_assert_eq(evr_writer_open(&w, &seg, (uint32_t)getpid(), 7, 0), 0);
	evr_writer_skip_thread_record(&w);
	/* The live consumer reads nothing: the lane fills, and records are dropped. */
	for (int i = 0; i < 10000; i++)
		dropped += !evr_writer_write(&w, EVR_REC_EVENT, body, test_body_fill(body, 0, seq++, 16));
	cr_assert_gt(dropped, 0, "a live consumer's head holds the lane back");

	kill(c, SIGKILL);
	cr_assert_eq(waitpid(c, &st, 0), c);
	evr_consumer_slot_info(&seg, (uint32_t)slot, &in);
	cr_assert_eq(in.pid, (uint32_t)c);
	cr_assert(!in.alive, "a killed consumer's slot reads dead");
	sleep_us(300000); /* past the bound: the dead slot holds nothing back */
	evr_consumer_slot_info(&seg, (uint32_t)slot, &in);
	cr_assert(in.stale);
	dropped = 0;
	for (int i = 0; i < 10000; i++)
		dropped += !evr_writer_write(&w, EVR_REC_EVENT, body, test_body_fill(body, 0, seq++, 16));
	cr_assert_eq(dropped, 0, "%llu records dropped for a dead consumer's sake", (unsigned long long)dropped);
	cr_assert_gt(evr_segment_slot_lane(&seg, (uint32_t)slot, 0)->evictions, 0, "its head was pushed");

	/* The next claim takes the dead one's slot over. */
	cr_assert_eq(evr_consumer_slot_claim(&seg, (uint32_t)getpid(), &holder), slot);
	cr_assert_eq(seg.hdr->slots[slot].pid, (uint64_t)getpid());
	cr_assert_eq(seg.hdr->slots[slot].epoch, epoch + 1);
	evr_consumer_slot_info(&seg, (uint32_t)slot, &in);
	cr_assert(in.alive && !in.stale);
	evr_consumer_slot_release(&seg, (uint32_t)getpid());
	evr_writer_close(&w);
	test_segment_destroy(&seg);
	seg_name[0] = 0;
	munmap(sh, sizeof(*sh));
}
