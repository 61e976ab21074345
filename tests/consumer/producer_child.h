/*
 * producer_child.h: a real producer in a child process for the consumer
 * tests. The child opens its segment with cfg, runs pre, tells the parent
 * ("r"), waits for "go", runs fn, says "d", then exits (its exit handlers
 * unlink the segment; an attached consumer keeps its mapping) or hangs
 * until killed.
 */
#ifndef EVRING_TESTS_PRODUCER_CHILD_H
#define EVRING_TESTS_PRODUCER_CHILD_H

#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <criterion/criterion.h>
#include <evring/evring.h>

struct child {
	pid_t pid;
	int go[2], ready[2];
};

static inline void child_start_cfg(struct child *ch, const struct evr_config *cfg, void (*pre)(void),
				   void (*fn)(void), bool hang)
{
	char b = 0;

	cr_assert_eq(pipe(ch->go), 0);
	cr_assert_eq(pipe(ch->ready), 0);
	fflush(NULL);
	ch->pid = fork();
	cr_assert_geq(ch->pid, 0);
	if (ch->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test must not leave its producer behind */
		if (evr_open(cfg) != 0)
			_exit(2);
		if (pre)
			pre();
		if (write(ch->ready[1], "r", 1) != 1 || read(ch->go[0], &b, 1) != 1)
			_exit(3);
		fn();
		if (write(ch->ready[1], "d", 1) != 1)
			_exit(4);
		if (hang)
			for (;;)
				pause();
		exit(0);
	}
	cr_assert_eq(read(ch->ready[0], &b, 1), 1, "the producer could not open its segment");
	cr_assert_eq(b, 'r');
}

static inline void child_go(struct child *ch)
{
	cr_assert_eq(write(ch->go[1], "g", 1), 1);
}

static inline void child_wait_done(struct child *ch)
{
	char b = 0;

	cr_assert_eq(read(ch->ready[0], &b, 1), 1);
	cr_assert_eq(b, 'd');
}

/* Waits for the child: killed by expect_signal, or (0) exited with status 0. */
static inline void child_reap(struct child *ch, int expect_signal)
{
	int status;

	cr_assert_eq(waitpid(ch->pid, &status, 0), ch->pid);
	if (expect_signal)
		cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == expect_signal);
	else
		cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "producer exit status %d", status);
	close(ch->go[0]);
	close(ch->go[1]);
	close(ch->ready[0]);
	close(ch->ready[1]);
}

#endif
