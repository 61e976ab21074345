/*
 * test_multiproc.c: the ring across processes, with processes dying.
 *
 * Writers are forked processes that open the segment by name and write
 * checksummed records until they are killed with SIGKILL at a random moment,
 * usually in the middle of a record. A reader in its own process must never
 * crash or hang, must deliver only intact records in each writer's order, and
 * must give the dead writers' lanes back. Then the other way round: the reader
 * is killed at random moments while writers keep writing; the writers must
 * never notice, and a new reader takes over the dead one's consumer slot and
 * picks up from its published head without losing an accepted record; with
 * one reader, and with two at once (two slots, each killed in turn), where
 * every record must reach each slot's readers.
 *
 * Children never return into Criterion: they report through a MAP_SHARED
 * block and _exit(), and die with the test process (PR_SET_PDEATHSIG).
 */
#include "ring_test.h"

#include <errno.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sched.h>
#include <sys/wait.h>
#include <time.h>

#define MP_LANES 9		/* 8 exclusive + the shared lane */
#define MP_LANE_BYTES (64u << 10) /* small: writers wrap the lane every few hundred records */
#define MP_FILLER_MAX 300u
#define TEST_TIMEOUT_S 120 /* the same for every test: Criterion 2.4.1 leaks when overlapping tests differ */

/* Exit codes of the children, so the parent can say what went wrong. */
enum {
	XC_OK = 0,
	XC_OPEN = 20,   /* evr_segment_open failed */
	XC_WRITER = 21, /* evr_writer_open failed */
	XC_SHARED = 22, /* no exclusive lane was free */
	XC_INIT = 23,   /* evr_reader_init failed */
	XC_NEXT = 24,   /* evr_reader_next returned an error */
};

static uint64_t rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t below(uint64_t *s, uint64_t n)
{
	return n ? rnd(s) % n : 0;
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

static void *shared_block(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	cr_assert_neq(p, MAP_FAILED, "mmap %zu shared bytes: %s", bytes, strerror(errno));
	return p;
}

static char seg_name[128]; /* unlinked by .fini even when an assertion ends the test */

static void unlink_segment(void)
{
	if (seg_name[0])
		evr_segment_unlink(seg_name);
}

static void child_setup(void)
{
	/* A child left behind by a failed or timed-out test dies with it. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() == 1)
		_exit(1);
}

static pid_t spawn(void (*fn)(void *), void *arg)
{
	pid_t pid = fork();

	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		child_setup();
		fn(arg);
		_exit(XC_OK);
	}
	return pid;
}

/* Waits for pid up to timeout_ms; kills it and returns false when it does not end. */
static bool wait_for(pid_t pid, int *status, uint64_t timeout_ms)
{
	uint64_t deadline = now_ns() + timeout_ms * 1000000u;

	for (;;) {
		pid_t got = waitpid(pid, status, WNOHANG);

		cr_assert_geq(got, 0, "waitpid %d: %s", (int)pid, strerror(errno));
		if (got == pid)
			return true;
		if (now_ns() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, status, 0);
			return false;
		}
		sleep_us(200);
	}
}

static bool still_running(pid_t pid)
{
	int st;

	return waitpid(pid, &st, WNOHANG) == 0;
}

static void describe(int st, char *buf, size_t len)
{
	if (WIFEXITED(st))
		snprintf(buf, len, "exit %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, len, "signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
	else
		snprintf(buf, len, "status %#x", st);
}

static uint32_t free_exclusive_lanes(const struct evr_segment *seg)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i + 1 < seg->lane_count; i++)
		n += evr_ld_acq_64(&seg->lanes[i].owner) == 0;
	return n;
}

/* ---- writers killed ---------------------------------------------------- */

#define K_ROUNDS 200
#define K_MAX_WRITERS 1024

struct kill_shared {
	volatile int stop;	     /* parent: no more writers, drain, reap and report */
	volatile uint64_t heartbeat; /* reader: loops so far */
	/* reader's findings */
	uint64_t events, bad_body, bad_type, bad_writer, out_of_order, lane_changed, writers_seen;
	uint64_t drain_timed_out;
	struct evr_reader_stats stats;
	/* per writer id, kept by the reader */
	uint64_t next_seq[K_MAX_WRITERS]; /* last seq + 1; 0 before the first */
	uint32_t lane_plus1[K_MAX_WRITERS];
	/* per writer id, kept by the writer: seq + 1 while a record is reserved and not committed */
	uint64_t in_record[K_MAX_WRITERS];
};

struct kill_writer_arg {
	struct kill_shared *sh;
	uint32_t id;
	uint64_t seed;
};

/* Writes until killed, filling each body in place so a kill can tear it. */
static void kill_writer(void *p)
{
	struct kill_writer_arg *a = p;
	struct evr_segment seg;
	struct evr_writer w;
	uint64_t s = a->seed;
	bool pace = below(&s, 3) == 0;
	char err[EVR_ERR_MAX];

	if (evr_segment_open(&seg, seg_name, err, sizeof(err)) != 0)
		_exit(XC_OPEN);
	if (evr_writer_open(&w, &seg, (uint32_t)getpid(), test_tid(), 0) != 0)
		_exit(XC_WRITER);
	if (w.shared) {
		/*
		 * Only exclusive lanes here: a writer killed inside a shared
		 * reservation is covered by a timeout, not by reclaiming.
		 */
		_exit(XC_SHARED);
	}
	for (uint64_t seq = 0;; seq++) {
		uint32_t filler = (uint32_t)below(&s, MP_FILLER_MAX);
		void *body = evr_writer_reserve(&w, (uint32_t)sizeof(struct test_body) + filler);

		if (!body)
			continue; /* dropped: the LOST record reports it; the seq gap is expected */
		/* Marks the window a kill tears a record in, for the parent to count. */
		__atomic_store_n(&a->sh->in_record[a->id], seq + 1, __ATOMIC_RELAXED);
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		test_body_fill(body, a->id, seq, filler);
		evr_writer_commit(&w, (uint32_t)sizeof(struct test_body) + filler, EVR_REC_EVENT);
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
		__atomic_store_n(&a->sh->in_record[a->id], 0, __ATOMIC_RELAXED);
		if (pace && seq % 4 == 0)
			sched_yield(); /* some writers leave the reader room, so lanes also run unfilled */
	}
}

static void kill_check(struct kill_shared *sh, const struct evr_record *rec)
{
	const struct test_body *b = (const struct test_body *)(const void *)rec->body;

	if (rec->type == EVR_REC_LOST || rec->type == EVR_REC_THREAD)
		return; /* LOST: decoded and counted by the reader itself; THREAD: a new owner's first record */
	if (rec->type != EVR_REC_EVENT) {
		sh->bad_type++;
		return;
	}
	if (!test_body_ok(rec->body, rec->body_len)) {
		sh->bad_body++;
		return;
	}
	if (b->writer >= K_MAX_WRITERS) {
		sh->bad_writer++;
		return;
	}
	if (sh->next_seq[b->writer] == 0)
		sh->writers_seen++;
	else if (b->seq < sh->next_seq[b->writer])
		sh->out_of_order++; /* a duplicate or a record from the past */
	sh->next_seq[b->writer] = b->seq + 1;
	/* A writer keeps its lane for life: its records coming from another lane means a mix-up. */
	if (sh->lane_plus1[b->writer] && sh->lane_plus1[b->writer] != rec->lane + 1)
		sh->lane_changed++;
	sh->lane_plus1[b->writer] = rec->lane + 1;
	sh->events++;
}

static void kill_reader(void *p)
{
	struct kill_shared *sh = p;
	static uint8_t buf[EVR_BODY_MAX];
	struct evr_segment seg;
	struct evr_reader r;
	struct evr_record rec;
	char err[EVR_ERR_MAX];
	uint64_t loops = 0, quiet = 0, stop_at = 0;

	if (evr_segment_open(&seg, seg_name, err, sizeof(err)) != 0)
		_exit(XC_OPEN);
	if (evr_reader_init(&r, &seg, EVR_READ_FROM_OLDEST) != 0)
		_exit(XC_INIT);
	for (;;) {
		bool stopping = sh->stop;
		uint64_t got = 0;
		int rc;

		for (uint32_t l = 0; l < seg.lane_count; l++) {
			while ((rc = evr_reader_next(&r, l, &rec, buf, sizeof(buf))) == 1) {
				kill_check(sh, &rec);
				got++;
			}
			if (rc < 0)
				_exit(XC_NEXT);
			evr_reader_release(&r, l);
		}
		/* Reaping reads /proc for every owned lane: not on every pass. */
		if (stopping || loops % 16 == 0)
			got += (uint64_t)evr_reader_reap(&r);
		sh->heartbeat = ++loops;
		if (stopping) {
			if (!stop_at)
				stop_at = now_ns();
			quiet = got ? 0 : quiet + 1;
			if (quiet > 200 && free_exclusive_lanes(&seg) == seg.lane_count - 1)
				break;
			if (now_ns() - stop_at > 10000000000ull) {
				sh->drain_timed_out = 1;
				break;
			}
		}
		if (!got)
			sleep_us(20); /* two cores shared with the writers: do not spin on an idle ring */
	}
	sh->stats = r.stats;
	evr_reader_fini(&r);
	evr_segment_close(&seg);
}

Test(multiproc, writers_killed, .fini = unlink_segment, .timeout = TEST_TIMEOUT_S)
{
	struct kill_shared *sh = shared_block(sizeof(*sh));
	struct evr_segment seg;
	struct kill_writer_arg args[3];
	pid_t reader, writers[3];
	uint64_t s = 0x5eed0001, forks = 0, kills = 0, torn = 0, t0 = now_ns();
	uint32_t next_id = 0;
	char how[64];
	int st;

	test_segment(&seg, "multiproc-kill", MP_LANES, MP_LANE_BYTES);
	snprintf(seg_name, sizeof(seg_name), "%s", seg.shm_name);
	reader = spawn(kill_reader, sh);

	for (int round = 0; round < K_ROUNDS; round++) {
		int n = 1 + (int)below(&s, 3);
		uint64_t deadline = now_ns() + 5000000000ull;

		/* Every lane a dead writer held comes back, or the round cannot start. */
		while (free_exclusive_lanes(&seg) < (uint32_t)n) {
			cr_assert(still_running(reader), "round %d: the reader died", round);
			cr_assert_lt(now_ns(), deadline,
				     "round %d: only %u exclusive lanes free after 5 s; the dead writers' lanes were not reclaimed",
				     round, free_exclusive_lanes(&seg));
			sleep_us(100);
		}
		cr_assert(still_running(reader), "round %d: the reader died", round);
		for (int i = 0; i < n; i++) {
			args[i] = (struct kill_writer_arg){ sh, next_id++, rnd(&s) };
			writers[i] = spawn(kill_writer, &args[i]);
			forks++;
		}
		/* A random moment: before the first record, mid-record, or after many wraps. */
		sleep_us(below(&s, 5001));
		for (int i = 0; i < n; i++)
			kill(writers[i], SIGKILL);
		for (int i = 0; i < n; i++) {
			cr_assert_eq(waitpid(writers[i], &st, 0), writers[i]);
			describe(st, how, sizeof(how));
			if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) {
				kills++;
				torn += sh->in_record[args[i].id] != 0;
				continue;
			}
			/* A writer may not stop on its own: it found no exclusive lane, or could not open. */
			cr_assert_fail("round %d: writer %u ended with %s before it was killed", round, args[i].id, how);
		}
	}

	/* No writer is left: the reader drains, reaps every lane and reports. */
	sh->stop = 1;
	if (!wait_for(reader, &st, 20000))
		cr_assert_fail("the reader hung: no exit 20 s after it was told to stop (heartbeat %llu)",
			       (unsigned long long)sh->heartbeat);
	describe(st, how, sizeof(how));
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == XC_OK, "the reader ended with %s", how);

	cr_log_info("writers_killed: %llu forks, %llu kills (%llu inside a record) in %.1f s; %llu events from %llu writers, %llu LOST "
		    "(%llu records), reclaimed %llu, skipped bad %llu dead %llu stuck %llu, pads %llu",
		    (unsigned long long)forks, (unsigned long long)kills, (unsigned long long)torn, (now_ns() - t0) / 1e9,
		    (unsigned long long)sh->events, (unsigned long long)sh->writers_seen,
		    (unsigned long long)sh->stats.lost_records, (unsigned long long)sh->stats.lost,
		    (unsigned long long)sh->stats.reclaimed, (unsigned long long)sh->stats.skipped_bad,
		    (unsigned long long)sh->stats.skipped_dead, (unsigned long long)sh->stats.skipped_stuck,
		    (unsigned long long)sh->stats.pads);

	cr_assert_geq(forks, 200, "only %llu writer processes were forked", (unsigned long long)forks);
	cr_assert_geq(kills, 200, "only %llu writers were killed", (unsigned long long)kills);
	/* The case that matters most: a body half written, its commit word never stored. */
	cr_assert_gt(torn, 0, "no kill landed inside a record");
	cr_assert_eq(sh->drain_timed_out, 0, "the reader could not free every lane within 10 s of the last kill");
	/* Every record delivered is intact and in its writer's order. */
	cr_assert_gt(sh->events, 0, "no record was ever delivered");
	cr_assert_gt(sh->writers_seen, forks / 4, "records from only %llu of %llu writers",
		     (unsigned long long)sh->writers_seen, (unsigned long long)forks);
	cr_assert_eq(sh->bad_body, 0, "%llu records delivered torn or damaged", (unsigned long long)sh->bad_body);
	cr_assert_eq(sh->bad_type, 0, "%llu records of a type nobody wrote", (unsigned long long)sh->bad_type);
	cr_assert_eq(sh->bad_writer, 0);
	cr_assert_eq(sh->out_of_order, 0, "%llu records duplicated or out of their writer's order",
		     (unsigned long long)sh->out_of_order);
	cr_assert_eq(sh->lane_changed, 0, "%llu records came from a lane their writer did not hold",
		     (unsigned long long)sh->lane_changed);
	/* A killed writer leaves an unpublished word, never a bad one. */
	cr_assert_eq(sh->stats.skipped_bad, 0, "%llu bad records counted; a killed writer must not look like corruption",
		     (unsigned long long)sh->stats.skipped_bad);
	cr_assert_eq(sh->stats.skipped_stuck, 0);
	/* Every lane a writer claimed was reclaimed exactly once, and all are free now. */
	cr_assert_gt(sh->stats.reclaimed, 0);
	cr_assert_eq(sh->stats.reclaimed, seg.hdr->lanes_reclaimed);
	cr_assert_geq(sh->stats.reclaimed, seg.hdr->lane_claims,
		      "%llu lanes claimed, only %llu reclaimed (no writer ever closes its lane here)",
		      (unsigned long long)seg.hdr->lane_claims, (unsigned long long)sh->stats.reclaimed);
	cr_assert_leq(sh->stats.reclaimed, forks, "more lanes reclaimed than writers ever lived");
	cr_assert_eq(seg.hdr->lane_fallbacks, 0, "a writer was sent to the shared lane although lanes were free");
	for (uint32_t i = 0; i + 1 < seg.lane_count; i++) {
		cr_assert_eq(seg.lanes[i].owner, 0, "lane %u still owned by %#llx after every writer died", i,
			     (unsigned long long)seg.lanes[i].owner);
		cr_assert_eq(evr_segment_head(&seg, 0, i), seg.lanes[i].tail, "lane %u: head %llu, tail %llu after the drain",
			     i, (unsigned long long)evr_segment_head(&seg, 0, i), (unsigned long long)seg.lanes[i].tail);
	}
	test_segment_destroy(&seg);
	seg_name[0] = 0;
	munmap(sh, sizeof(*sh));
}

/* ---- the reader killed ------------------------------------------------- */

#define R_WRITERS 4
#define R_RECORDS 100000u /* per writer */
#define R_MIN_KILLS 50
#define R_MAX_READERS 2000
#define R_LOSTS_MAX 4096 /* distinct LOST records per lane */

#define R_SLOTS 2	 /* readers at once, at most */

struct rk_shared {
	volatile int final;   /* parent: the next reader drains to the end and exits */
	volatile int reader_ready[R_MAX_READERS];
	int claim_rc[R_MAX_READERS];
	uint32_t claim_holder[R_MAX_READERS];
	/* readers' findings, summed over every incarnation */
	uint64_t events, bad_body, bad_type, bad_writer, bad_lost, out_of_order, next_errors, lost_overflow, overrun;
	/* LOST records by slot, lane and position: a new reader re-reads what the dead one had not released */
	uint32_t nlost[R_SLOTS][MP_LANES];
	uint64_t lost_pos[R_SLOTS][MP_LANES][R_LOSTS_MAX], lost_count[R_SLOTS][MP_LANES][R_LOSTS_MAX];
	/* writers' own accounts */
	uint32_t lane[R_WRITERS];
	uint64_t written[R_WRITERS], dropped[R_WRITERS];
	/* delivered at least once, by any reader of a slot: one bit per (slot, writer, seq) */
	uint8_t seen[R_SLOTS][R_WRITERS][R_RECORDS / 8 + 1];
	uint8_t drop_bits[R_WRITERS][R_RECORDS / 8 + 1]; /* which ones the writers dropped */
};

struct rk_arg {
	struct rk_shared *sh;
	uint32_t id;	/* writer id, or reader incarnation */
	uint64_t seed;
};

/* Writes R_RECORDS records at a steady pace whatever the readers do, then closes. */
static void rk_writer(void *p)
{
	struct rk_arg *a = p;
	struct rk_shared *sh = a->sh;
	struct evr_segment seg;
	struct evr_writer w;
	uint64_t s = a->seed, dropped = 0;
	char err[EVR_ERR_MAX];

	if (evr_segment_open(&seg, seg_name, err, sizeof(err)) != 0)
		_exit(XC_OPEN);
	if (evr_writer_open(&w, &seg, (uint32_t)getpid(), test_tid(), 0) != 0)
		_exit(XC_WRITER);
	if (w.shared)
		_exit(XC_SHARED);
	sh->lane[a->id] = (uint32_t)(w.lane - seg.lanes);
	for (uint64_t seq = 0; seq < R_RECORDS; seq++) {
		uint32_t filler = (uint32_t)below(&s, MP_FILLER_MAX);
		void *body = evr_writer_reserve(&w, (uint32_t)sizeof(struct test_body) + filler);

		if (body) {
			test_body_fill(body, a->id, seq, filler);
			evr_writer_commit(&w, (uint32_t)sizeof(struct test_body) + filler, EVR_REC_EVENT);
		} else {
			dropped++;
			sh->drop_bits[a->id][seq / 8] |= (uint8_t)(1u << (seq % 8));
		}
		if (seq % 32 == 31)
			sleep_us(100); /* long enough to outlive many readers */
	}
	sh->written[a->id] = R_RECORDS;
	sh->dropped[a->id] = dropped;
	evr_writer_close(&w);
	evr_segment_close(&seg);
}

/* Notes a LOST record once per position, whichever reader incarnation delivers it. */
static void rk_note_lost(struct rk_shared *sh, uint32_t k, const struct evr_record *rec)
{
	uint64_t ts, count, first;
	uint32_t i, l = rec->lane;

	if (l >= MP_LANES || k >= R_SLOTS || evr_lost_decode(rec->body, rec->body_len, &ts, &count, &first) != 0) {
		sh->bad_lost++;
		return;
	}
	for (i = 0; i < sh->nlost[k][l] && sh->lost_pos[k][l][i] != rec->pos; i++)
		;
	if (i < sh->nlost[k][l])
		return;
	if (i == R_LOSTS_MAX) {
		sh->lost_overflow++;
		return;
	}
	sh->lost_pos[k][l][i] = rec->pos;
	sh->lost_count[k][l][i] = count;
	/*
	 * Last, and ordered after the entry (release keeps the compiler from
	 * sinking the stores above): a reader killed before this store leaves
	 * the entry unlisted, and the next reader fills the same slot again.
	 */
	__atomic_store_n(&sh->nlost[k][l], i + 1, __ATOMIC_RELEASE);
}

static void rk_reader(void *p)
{
	struct rk_arg *a = p;
	struct rk_shared *sh = a->sh;
	static uint8_t buf[EVR_BODY_MAX];
	uint64_t next_seq[R_WRITERS] = { 0 }; /* per incarnation: a new reader may re-read what the dead one read */
	struct evr_segment seg;
	struct evr_reader r;
	struct evr_record rec;
	char err[EVR_ERR_MAX];
	uint32_t holder = 0, k;
	uint64_t quiet = 0;
	int rc;

	if (evr_segment_open(&seg, seg_name, err, sizeof(err)) != 0)
		_exit(XC_OPEN);
	/* From where the slot's last holder stopped: a dead reader's slot is taken over with its heads. */
	rc = evr_consumer_slot_claim_flags(&seg, (uint32_t)getpid(), EVR_SLOT_FROM_OLDEST, &holder, 1, NULL);
	sh->claim_rc[a->id] = rc;
	sh->claim_holder[a->id] = holder;
	if (rc < 0 || rc >= R_SLOTS || evr_reader_init_slot(&r, &seg, (uint32_t)rc) != 0)
		_exit(XC_INIT);
	k = (uint32_t)rc;
	sh->reader_ready[a->id] = 1;
	for (;;) {
		uint64_t got = 0;
		bool final = sh->final;

		for (uint32_t l = 0; l < seg.lane_count; l++) {
			while ((rc = evr_reader_next(&r, l, &rec, buf, sizeof(buf))) == 1) {
				const struct test_body *b = (const struct test_body *)(const void *)rec.body;

				got++;
				if (rec.type == EVR_REC_LOST) {
					rk_note_lost(sh, k, &rec);
					continue;
				}
				if (rec.type == EVR_REC_THREAD)
					continue; /* opens each writer's run on its lane */
				if (rec.type != EVR_REC_EVENT) {
					sh->bad_type++;
				} else if (!test_body_ok(rec.body, rec.body_len)) {
					sh->bad_body++;
				} else if (b->writer >= R_WRITERS || b->seq >= R_RECORDS) {
					sh->bad_writer++;
				} else {
					if (b->seq < next_seq[b->writer])
						sh->out_of_order++;
					next_seq[b->writer] = b->seq + 1;
					sh->seen[k][b->writer][b->seq / 8] |= (uint8_t)(1u << (b->seq % 8));
					sh->events++;
				}
			}
			if (rc < 0)
				sh->next_errors++;
			evr_reader_release(&r, l);
		}
		if (final) {
			quiet = got ? 0 : quiet + 1;
			if (quiet > 300)
				break;
		}
		if (!got)
			sleep_us(20);
	}
	sh->overrun += r.stats.overrun;
	evr_consumer_slot_release_one(&seg, k, (uint32_t)getpid());
	evr_reader_fini(&r);
	evr_segment_close(&seg);
}

static uint64_t popcount_bytes(const uint8_t *b, size_t n)
{
	uint64_t c = 0;

	for (size_t i = 0; i < n; i++)
		c += (uint64_t)__builtin_popcount(b[i]);
	return c;
}

/* Starts reader k and waits until it holds a slot and is reading: the slot the dead reader left, when one did. */
static pid_t rk_start_reader(struct rk_shared *sh, struct rk_arg *arg, struct evr_segment *seg, uint32_t k,
			     uint32_t dead_pid, int dead_slot)
{
	uint64_t epoch = seg->hdr->consumer_epoch, deadline = now_ns() + 10000000000ull;
	pid_t pid;

	/* The slot still names the reader killed last: nobody released it. */
	if (dead_slot >= 0)
		cr_assert_eq(seg->hdr->slots[dead_slot].pid, dead_pid,
			     "reader %u: slot %d holds %llu, expected the dead reader %u", k, dead_slot,
			     (unsigned long long)seg->hdr->slots[dead_slot].pid, dead_pid);
	*arg = (struct rk_arg){ sh, k, 0 };
	pid = spawn(rk_reader, arg);
	while (!sh->reader_ready[k]) {
		int st;
		char how[64];

		if (waitpid(pid, &st, WNOHANG) == pid) {
			describe(st, how, sizeof(how));
			cr_assert_fail("reader %u ended with %s before it started reading (claim %d)", k, how,
				       sh->claim_rc[k]);
		}
		cr_assert_lt(now_ns(), deadline, "reader %u did not start within 10 s", k);
		sleep_us(50);
	}
	if (dead_slot >= 0) {
		cr_assert_eq(sh->claim_rc[k], dead_slot, "reader %u: slot claim returned %d (holder %u), slot %d's holder %u is dead",
			     k, sh->claim_rc[k], sh->claim_holder[k], dead_slot, dead_pid);
		cr_assert_eq(seg->hdr->slots[dead_slot].pid, (uint64_t)pid, "reader %u did not take the slot over", k);
	}
	cr_assert_eq(seg->hdr->consumer_epoch, epoch + 1, "reader %u: the epoch did not move on", k);
	return pid;
}

static void rk_run(uint32_t nslots)
{
	struct rk_shared *sh = shared_block(sizeof(*sh));
	struct rk_arg wargs[R_WRITERS], rarg[R_SLOTS];
	struct evr_segment seg;
	pid_t writers[R_WRITERS], reader[R_SLOTS];
	int wst[R_WRITERS], slot_of[R_SLOTS];
	bool wdone[R_WRITERS] = { false };
	uint64_t s = 0x5eed0002 + nslots, t0 = now_ns(), deadline;
	uint32_t readers = 0, kills = 0, holder = 0;
	int st, running;
	char how[64];

	test_segment(&seg, "multiproc-rkill", MP_LANES, MP_LANE_BYTES);
	snprintf(seg_name, sizeof(seg_name), "%s", seg.shm_name);
	/* The first readers before the writers: each slot reads every record from the first. */
	for (uint32_t j = 0; j < nslots; j++) {
		reader[j] = rk_start_reader(sh, &rarg[j], &seg, readers++, 0, -1);
		slot_of[j] = sh->claim_rc[readers - 1];
		cr_assert_eq(slot_of[j], (int)j, "reader %u took slot %d", j, slot_of[j]);
	}
	for (uint32_t i = 0; i < R_WRITERS; i++) {
		wargs[i] = (struct rk_arg){ sh, i, rnd(&s) };
		writers[i] = spawn(rk_writer, &wargs[i]);
	}

	/* Kill readers at random moments for as long as the writers write, and at least R_MIN_KILLS times. */
	deadline = now_ns() + 60000000000ull;
	do {
		uint32_t j = (uint32_t)below(&s, nslots);
		uint32_t dead;

		cr_assert_lt(readers, R_MAX_READERS - 1);
		/* The slots arbitrate: nobody else may take one while its reader lives. */
		if (kills % 8 == 1 && nslots == 1) {
			cr_assert_eq(evr_consumer_slot_claim_flags(&seg, (uint32_t)getpid(), EVR_SLOT_ANOTHER, &holder, 1,
								   NULL), nslots == EVR_CONSUMER_SLOTS ? -EBUSY : (int)nslots);
			evr_consumer_slot_release(&seg, (uint32_t)getpid());
		}
		sleep_us(below(&s, 10001));
		kill(reader[j], SIGKILL);
		cr_assert_eq(waitpid(reader[j], &st, 0), reader[j]);
		describe(st, how, sizeof(how));
		cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "a reader ended with %s before it was killed", how);
		dead = (uint32_t)reader[j];
		kills++;
		/* Now and then no reader for a while: the lanes fill and the writers drop. */
		if (below(&s, 4) == 0)
			sleep_us(below(&s, 8001));
		reader[j] = rk_start_reader(sh, &rarg[j], &seg, readers++, dead, slot_of[j]);

		running = 0;
		for (uint32_t i = 0; i < R_WRITERS; i++) {
			if (!wdone[i])
				wdone[i] = waitpid(writers[i], &wst[i], WNOHANG) == writers[i];
			running += !wdone[i];
		}
		cr_assert_lt(now_ns(), deadline, "the writers did not finish %u records within 60 s", R_RECORDS);
	} while (running || kills < R_MIN_KILLS);

	/* The writers never waited for a reader: each finished its count and exited cleanly. */
	for (uint32_t i = 0; i < R_WRITERS; i++) {
		cr_assert(wdone[i]);
		describe(wst[i], how, sizeof(how));
		st = wst[i];
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == XC_OK, "writer %u ended with %s", i, how);
		cr_assert_eq(sh->written[i], R_RECORDS);
	}

	/* The readers still running drain what the writers left and leave. */
	sh->final = 1;
	for (uint32_t j = 0; j < nslots; j++) {
		if (!wait_for(reader[j], &st, 20000))
			cr_assert_fail("a final reader hung");
		describe(st, how, sizeof(how));
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == XC_OK, "a final reader ended with %s", how);
	}
	for (uint32_t k = 0; k < seg.slots; k++)
		cr_assert_eq(seg.hdr->slots[k].pid, 0, "slot %u: the final readers released their slots on the way out", k);

	{
		uint64_t dropped = 0;
		for (uint32_t i = 0; i < R_WRITERS; i++)
			dropped += sh->dropped[i];
		cr_log_info("reader_killed x%u: %u readers (%u killed) in %.1f s; %llu events delivered, %llu dropped",
			    nslots, readers, kills, (now_ns() - t0) / 1e9, (unsigned long long)sh->events,
			    (unsigned long long)dropped);
		/* The gaps between readers are long enough to fill a lane: the loss path ran. */
		cr_assert_gt(dropped, 0, "no record was ever dropped: the test did not exercise losses");
	}
	cr_assert_geq(kills, R_MIN_KILLS);
	cr_assert_eq(sh->bad_body, 0, "%llu records delivered damaged", (unsigned long long)sh->bad_body);
	cr_assert_eq(sh->bad_type, 0);
	cr_assert_eq(sh->bad_writer, 0);
	cr_assert_eq(sh->bad_lost, 0, "%llu LOST records did not decode", (unsigned long long)sh->bad_lost);
	cr_assert_eq(sh->next_errors, 0);
	cr_assert_eq(sh->overrun, 0, "a reader was pushed past: no reader was silent for the stale bound");
	cr_assert_eq(sh->lost_overflow, 0, "more than %d LOST records for one writer", R_LOSTS_MAX);
	cr_assert_eq(sh->out_of_order, 0, "%llu records out of order within one reader",
		     (unsigned long long)sh->out_of_order);
	/*
	 * Nothing a writer accepted was lost to a reader's death: every record
	 * not dropped by its writer reached some reader of each slot, and every
	 * drop is in the lane's count and reported to each slot exactly once.
	 */
	for (uint32_t k = 0; k < nslots; k++)
		for (uint32_t i = 0; i < R_WRITERS; i++) {
			uint64_t seen = popcount_bytes(sh->seen[k][i], sizeof(sh->seen[k][i]));
			uint32_t ln = sh->lane[i];
			struct evr_lane *l = &seg.lanes[ln];
			uint64_t reported = l->lost_pending;

			if (seen != R_RECORDS - sh->dropped[i]) {
				uint64_t first = UINT64_MAX, n = 0;
				for (uint64_t q = 0; q < R_RECORDS; q++)
					if (!((sh->seen[k][i][q / 8] | sh->drop_bits[i][q / 8]) & (1u << (q % 8)))) {
						if (first == UINT64_MAX)
							first = q;
						n++;
					}
				cr_log_warn("slot %u writer %u: %llu unseen, first %llu; pushes %llu (%llu records)", k, i,
					    (unsigned long long)n, (unsigned long long)first,
					    (unsigned long long)evr_segment_slot_lane(&seg, k, ln)->evictions,
					    (unsigned long long)evr_segment_slot_lane(&seg, k, ln)->evicted);
			}
			cr_assert_eq(seen, R_RECORDS - sh->dropped[i],
				     "slot %u, writer %u: %llu records delivered, %u written, %llu dropped", k, i,
				     (unsigned long long)seen, R_RECORDS, (unsigned long long)sh->dropped[i]);
			cr_assert_eq(l->lost, sh->dropped[i], "writer %u: lane counts %llu lost, the writer dropped %llu", i,
				     (unsigned long long)l->lost, (unsigned long long)sh->dropped[i]);
			for (uint32_t n = 0; n < sh->nlost[k][ln]; n++)
				reported += sh->lost_count[k][ln][n];
			cr_assert_eq(reported, sh->dropped[i],
				     "slot %u, writer %u: LOST records report %llu (+%llu pending), the writer dropped %llu", k,
				     i, (unsigned long long)(reported - l->lost_pending), (unsigned long long)l->lost_pending,
				     (unsigned long long)sh->dropped[i]);
			cr_assert_eq(l->owner, 0, "writer %u closed its lane", i);
			cr_assert_eq(evr_segment_head(&seg, k, ln), l->tail, "slot %u: lane %u not drained", k, ln);
		}
	test_segment_destroy(&seg);
	seg_name[0] = 0;
	munmap(sh, sizeof(*sh));
}

Test(multiproc, reader_killed, .fini = unlink_segment, .timeout = TEST_TIMEOUT_S)
{
	rk_run(1);
}

/* Two readers at once, each killed at random and replaced: each slot on its own still gets every record. */
Test(multiproc, reader_killed_two_slots, .fini = unlink_segment, .timeout = TEST_TIMEOUT_S)
{
	rk_run(2);
}
