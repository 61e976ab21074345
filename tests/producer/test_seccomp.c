/*
 * test_seccomp.c: the hot path never enters the kernel. After a thread's
 * first record (lane claim, site registration) the thread installs a seccomp
 * filter that lets through only what strict mode does (read, write, exit,
 * rt_sigreturn) and kills the process on any other system call, then emits
 * a million rounds of events and spans of every kind. Lanes fill and records
 * drop: the drop path must not enter the kernel either. The thread reports
 * through a pipe with write() and leaves with the raw exit system call
 * (exit_group, what exit() and a thread's return end in, is not allowed).
 * Surviving is the proof; the counts then say every record was written or
 * counted lost.
 *
 * Why a filter and not SECCOMP_MODE_STRICT itself: on x86 strict mode also
 * sets TIF_NOTSC, so rdtsc traps with SIGSEGV, and the segment clock is the
 * TSC (clock_gettime in the vDSO reads it too). The filter allows exactly the
 * system calls strict mode allows and leaves the TSC readable.
 *
 * The segment clock must be the TSC, or CLOCK_MONOTONIC through the vDSO: a
 * clock_gettime that falls back to the system call would be killed.
 */
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>

#include "producer_test.h"

#if defined(__x86_64__)
#define PT_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define PT_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

/* Strict mode's allow-list as a filter: read, write, exit, rt_sigreturn; anything else kills the process. */
static int enter_strict_filter(void)
{
	static struct sock_filter insns[] = {
#ifdef PT_AUDIT_ARCH
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PT_AUDIT_ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
#endif
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_read, 4, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_write, 3, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_exit, 2, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_rt_sigreturn, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { (unsigned short)(sizeof(insns) / sizeof(insns[0])), insns };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		return -errno;
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
		return -errno;
	return 0;
}

#define ROUNDS 1000000u
#define FULL_EVERY 16u /* every 16th round also uses every other kind of span call */

/* One round: an event and a span pair; now and then the rest of the API's hot calls. Returns records emitted. */
static uint64_t emit_round(uint64_t i)
{
	struct evr_span root, child, async;
	uint64_t n = 3;

	EVR_EVENT("strict", "event", EVR_U64("i", i), EVR_I64("neg", -(int64_t)i), EVR_F64("f", 0.5),
		  EVR_BOOL("odd", i & 1), EVR_STR("s", "a short string"), EVR_CONTENT("c", "content"));
	root = EVR_SPAN_BEGIN("strict", "span", EVR_U32("i", (uint32_t)i));
	if (i % FULL_EVERY < 2) {
		{
			EVR_SPAN_SCOPED(sc, "strict", "scoped");
			EVR_EVENT_IN(root, "strict", "event_in");
		}
		child = EVR_SPAN_BEGIN_CHILD(root, "strict", "child");
		async = EVR_SPAN_BEGIN_ASYNC(child, "strict", "async");
		evr_span_enter(&async);
		evr_trace_tags("session", "user");
		evr_span_exit(&async);
		EVR_SPAN_END(async, EVR_U64("tokens", i));
		EVR_SPAN_END(child);
		n += 8;
	}
	if (i & 1)
		EVR_SPAN_END(root, EVR_BOOL("ok", true));
	else
		EVR_SPAN_DROP(root, EVR_STR("error", "failed"));
	return n;
}

/* Rounds 0 and 1 run every site once, each branch included. */
#define WARM_ROUNDS 2u

struct strict_report {
	char ok;
	uint64_t emitted, records, lost;
};

static int strict_child(void *arg)
{
	int fd = *(int *)arg;
	struct evr_config cfg = { .name = "seccomp-one", .lane_bytes = 64 << 10, .capture_content = 1 };
	struct strict_report rep = { 'k', 0, 0, 0 };
	struct evr_segment *seg;

	PT_ASSERT(evr_open(&cfg) == 0, "%s", evr_last_error());
	seg = evr_segment_current();
	PT_ASSERT(seg->clock_kind == EVR_CLOCK_TSC || seg->clock_kind == EVR_CLOCK_MONOTONIC);
	for (uint64_t i = 0; i < WARM_ROUNDS; i++)
		rep.emitted += emit_round(i);

	PT_ASSERT(enter_strict_filter() == 0, "seccomp: %s", strerror(errno));
	for (uint64_t i = WARM_ROUNDS; i < ROUNDS; i++)
		rep.emitted += emit_round(i);
	for (uint32_t l = 0; l < seg->lane_count; l++) {
		rep.records += seg->lanes[l].records;
		rep.lost += seg->lanes[l].lost;
	}
	if (write(fd, &rep, sizeof(rep)) != (ssize_t)sizeof(rep))
		rep.ok = 0;
	syscall(SYS_exit, rep.ok == 'k' ? 0 : 3);
	return 4; /* not reached */
}

Test(seccomp, hot_path_makes_no_system_call, .timeout = 120)
{
	struct strict_report rep = { 0, 0, 0, 0 };
	int fds[2], status;
	bool left;
	ssize_t n;

	cr_assert_eq(pipe(fds), 0);
	status = pt_fork_run(strict_child, &fds[1]);
	close(fds[1]);
	n = read(fds[0], &rep, sizeof(rep));
	close(fds[0]);
	/* The child left by SYS_exit (or was killed), past the exit handler that unlinks its segment. */
	left = pt_unlink_child_segment("seccomp-one");
	cr_assert_not(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS,
		      "killed by SIGSYS: a system call after the first record");
	pt_assert_child_ok(status, "strict child");
	cr_assert_eq(n, (ssize_t)sizeof(rep), "no report from the strict child");
	cr_assert_eq(rep.ok, 'k');
	cr_assert(left, "the child wrote no segment");
	cr_assert_geq(rep.emitted, 3ull * ROUNDS);
	cr_assert_eq(rep.records + rep.lost, rep.emitted, "records %llu + lost %llu != emitted %llu",
		     (unsigned long long)rep.records, (unsigned long long)rep.lost, (unsigned long long)rep.emitted);
	cr_assert_gt(rep.lost, 0, "no reader: the lane filled and the drop path ran in strict mode");
}

/*
 * The same with a reader: the writer thread goes strict while the child's
 * main thread drains and decodes, so lanes keep emptying and the write path,
 * the LOST records and the drop path all run under the filter.
 */
struct strict_run {
	int fd;
	int done;
	uint64_t emitted;
	uint32_t lane;
};

static void *strict_writer(void *p)
{
	struct strict_run *run = p;
	uint64_t emitted = 0;
	char ok = 'k';

	for (uint64_t i = 0; i < WARM_ROUNDS; i++)
		emitted += emit_round(i);
	if (enter_strict_filter() != 0)
		ok = 'p';
	for (uint64_t i = WARM_ROUNDS; ok == 'k' && i < ROUNDS; i++)
		emitted += emit_round(i);
	run->emitted = emitted;
	if (write(run->fd, &ok, 1) != 1)
		ok = 0;
	__atomic_store_n(&run->done, 1, __ATOMIC_RELEASE);
	syscall(SYS_exit, 0); /* a return would end in exit_group and munmap */
	return NULL;
}

struct drained {
	uint64_t by_type[EVR_REC_PAD + 1], lost, max_i, threads;
	uint64_t bad;
};

static void drain(struct evr_reader *rd, struct drained *d)
{
	static uint8_t buf[EVR_BODY_MAX];
	struct evr_record rec;
	msgpack_unpacked u;

	msgpack_unpacked_init(&u);
	for (uint32_t lane = 0; lane < rd->seg->lane_count; lane++) {
		while (evr_reader_next(rd, lane, &rec, buf, sizeof(buf)) == 1) {
			size_t off = 0;

			if (rec.type == EVR_REC_THREAD) {
				d->threads++;
				continue;
			}
			if (rec.type > EVR_REC_PAD) {
				d->bad++;
				continue;
			}
			d->by_type[rec.type]++;
			if (msgpack_unpack_next(&u, (const char *)buf, rec.body_len, &off) != MSGPACK_UNPACK_SUCCESS ||
			    u.data.type != MSGPACK_OBJECT_ARRAY || u.data.via.array.size < 3) {
				d->bad++;
				continue;
			}
			if (rec.type == EVR_REC_LOST) {
				d->lost += u.data.via.array.ptr[1].via.u64;
			} else if (rec.type == EVR_REC_EVENT && u.data.via.array.size == 9) {
				uint64_t i = u.data.via.array.ptr[3].via.u64; /* "strict"/"event": i */
				if (i > d->max_i)
					d->max_i = i;
			}
		}
		evr_reader_release(rd, lane);
	}
	msgpack_unpacked_destroy(&u);
}

static int strict_reader_child(void *arg)
{
	struct evr_config cfg = { .name = "seccomp-two", .lane_bytes = 64 << 10, .capture_content = 1 };
	struct strict_run run = { *(int *)arg, 0, 0, 0 };
	struct drained d;
	struct evr_reader rd;
	struct evr_segment *seg;
	uint64_t delivered, pending = 0;
	pthread_t t;

	memset(&d, 0, sizeof(d));
	PT_ASSERT(evr_open(&cfg) == 0, "%s", evr_last_error());
	seg = evr_segment_current();
	PT_ASSERT(evr_reader_init(&rd, seg, EVR_READ_FROM_OLDEST) == 0);
	PT_ASSERT(pthread_create(&t, NULL, strict_writer, &run) == 0);
	while (!__atomic_load_n(&run.done, __ATOMIC_ACQUIRE))
		drain(&rd, &d);
	drain(&rd, &d);
	drain(&rd, &d);
	/* The writer is gone without closing its lane (no thread exit ran): what it could not report is pending. */
	for (uint32_t l = 0; l < seg->lane_count; l++)
		pending += seg->lanes[l].lost_pending;
	delivered = d.by_type[EVR_REC_EVENT] + d.by_type[EVR_REC_SPAN_BEGIN] + d.by_type[EVR_REC_SPAN_END];
	PT_ASSERT(d.bad == 0, "%llu records did not decode", (unsigned long long)d.bad);
	PT_ASSERT(d.lost == rd.stats.lost);
	PT_ASSERT(delivered + d.lost + pending == run.emitted,
		  "delivered %llu + lost %llu + pending %llu != emitted %llu", (unsigned long long)delivered,
		  (unsigned long long)d.lost, (unsigned long long)pending, (unsigned long long)run.emitted);
	PT_ASSERT(d.max_i >= WARM_ROUNDS, "no record written in strict mode was read (max i %llu)",
		  (unsigned long long)d.max_i);
	evr_reader_fini(&rd);
	evr_close();
	return 0;
}

Test(seccomp, hot_path_makes_no_system_call_while_a_reader_drains, .timeout = 120)
{
	char ok = 0;
	int fds[2], status;
	ssize_t n;

	cr_assert_eq(pipe(fds), 0);
	status = pt_fork_run(strict_reader_child, &fds[1]);
	close(fds[1]);
	n = read(fds[0], &ok, 1);
	close(fds[0]);
	pt_unlink_child_segment("seccomp-two"); /* if it died before its evr_close */
	cr_assert_not(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS,
		      "killed by SIGSYS: a system call after the first record");
	pt_assert_child_ok(status, "strict writer with a reader");
	cr_assert_eq(n, 1, "no report from the strict writer");
	cr_assert_eq(ok, 'k', "the writer could not enter strict mode ('p') or report");
}
