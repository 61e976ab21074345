/*
 * stdio.c: the stdio tee (EVRING_CAPTURE_STDIO=1). The process's fd 1 and
 * fd 2 become the write ends of two pipes; a thread of evring's reads them,
 * writes every byte on to the original descriptors, and writes each line
 * into the ring as an event:
 *
 *   dispatcher "evring.stdio", name "stdout" or "stderr",
 *   fields text (str, the line without its "\n") and, only when the
 *   line was longer than EVR_STR_LIMIT, truncated (true): text is then its
 *   first bytes, cut at a UTF-8 character boundary. The bytes sent on to the
 *   original descriptor are always the whole line.
 *
 * A NUL byte in a line is written in the event's text as U+FFFD (the text is
 * a C string on the event path); the original descriptor gets the NUL.
 *
 * Who waits for whom:
 *   - The application's write() only ever waits for room in the pipe (1 MiB
 *     where the system allows, else the default 64 KiB), as it would on a
 *     slow terminal. The thread empties the pipe as fast as the original
 *     descriptor takes the bytes.
 *   - The thread never waits for a consumer: an event the lane has no room
 *     for is dropped and counted as any producer drop is (the lane's lost
 *     counter, a LOST record in the stream).
 *   - An original descriptor that fails with EPIPE (its reader is gone) ends
 *     that stream's tee: its pipe is closed, so the application's next write
 *     fails (SIGPIPE or EPIPE) as it would have without the stdio_tee. Any other
 *     write error (EIO, ENOSPC) loses those bytes for the original, as it
 *     would have lost them for the application; each is reported as an event
 *     "write_error" {stream, errno, bytes}.
 *
 * Stop (evr_close, exit): fd 1 and 2 are given back their originals, then the
 * thread reads what is left in the pipes without waiting for EOF (a child
 * that inherited a write end may hold it), sends it on, writes the last line
 * even without a newline, and ends. At exit, stdout and stderr (FILE) are
 * flushed first, so the application's buffered last bytes go through the stdio_tee.
 *
 * Fork: the child has no tee thread, so it gets the original descriptors
 * back (pthread_atfork, child side) and writes straight to them; if the
 * child records and EVRING_CAPTURE_STDIO=1, its own segment starts its own
 * tee. A child started with posix_spawn, vfork or system() runs no atfork
 * handler: it inherits the pipes, and its output is the parent's while the
 * parent's tee reads them; once the parent stops the tee (evr_close, exit)
 * and a quiet time passed, the pipes are closed and such a child's next
 * write to fd 1 or 2 fails with EPIPE (SIGPIPE).
 *
 * What the tee cannot do: bytes the application wrote just before _exit,
 * abort or a fatal signal, and that the thread had not yet sent on, die with
 * the process in the pipe. An execve() without fork leaves fd 1 and 2 on
 * pipes nobody reads (the thread does not survive it): call evr_close()
 * first, which gives them back. And fd 1 and fd 2 become two pipes: when both
 * went to one file (2>&1), their interleaving there is the thread's, not the
 * application's, for writes closer together than the thread's reads.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <evring/evring.h>

#include "producer.h"

#define CHUNK (64u * 1024u)
#define STOP_QUIET_MS 20  /* stopping: a pipe this long without bytes is done */
#define STOP_MAX_MS 1000 /* stopping: at most this long in all */
#define PIPE_BYTES (1 << 20)

struct stream {
	int fd;	  /* 1 or 2: what the application writes to */
	int orig; /* the original descriptor, duplicated (O_CLOEXEC); -1: not teed */
	int rd;	  /* the pipe's read end (O_CLOEXEC); -1: closed */
	dev_t pipe_dev; /* the pipe: fd is given its original back only while it still is this pipe */
	ino_t pipe_ino;
	size_t len;
	bool cut; /* the line so far is longer than the limit: the rest is not kept */
	char line[EVR_STR_LIMIT + 4];
};

static struct {
	bool on;
	pthread_t thread;
	int wake[2]; /* stop: the thread's poll wakes on wake[0] */
	struct stream s[2];
} stdio_tee = { .wake = { -1, -1 }, .s = { { .orig = -1, .rd = -1 }, { .orig = -1, .rd = -1 } } };

static void emit(const struct stream *st, const char *text, bool cut)
{
	if (st->fd == 1) {
		if (cut)
			EVR_EVENT("evring.stdio", "stdout", EVR_STR("text", text), EVR_BOOL("truncated", true));
		else
			EVR_EVENT("evring.stdio", "stdout", EVR_STR("text", text));
	} else {
		if (cut)
			EVR_EVENT("evring.stdio", "stderr", EVR_STR("text", text), EVR_BOOL("truncated", true));
		else
			EVR_EVENT("evring.stdio", "stderr", EVR_STR("text", text));
	}
}

/* Writes the line held so far as an event and starts the next. */
static void line_end(struct stream *st)
{
	size_t n = st->len;

	if (st->cut) {
		/* Back to the start of a character cut in its middle. */
		size_t i = n;
		while (i > 0 && ((unsigned char)st->line[i - 1] & 0xc0) == 0x80)
			i--;
		if (i > 0 && ((unsigned char)st->line[i - 1] & 0x80)) {
			unsigned char lead = (unsigned char)st->line[i - 1];
			size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
			if (n - (i - 1) < need)
				n = i - 1;
		}
	}
	st->line[n] = 0;
	emit(st, st->line, st->cut);
	st->len = 0;
	st->cut = false;
}

static void scan(struct stream *st, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = p[i];

		if (c == '\n') {
			line_end(st);
		} else if (st->cut) {
			continue;
		} else if (c == 0) {
			if (st->len + 3 > EVR_STR_LIMIT) {
				st->cut = true;
				continue;
			}
			memcpy(st->line + st->len, "\xef\xbf\xbd", 3);
			st->len += 3;
		} else if (st->len < EVR_STR_LIMIT) {
			st->line[st->len++] = c;
		} else {
			st->cut = true;
		}
	}
}

/* Sends n bytes on to the original descriptor, all of them. Returns 0, or the errno that stopped it. */
static int forward(struct stream *st, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(st->orig, p, n);

		if (w > 0) {
			p += w;
			n -= (size_t)w;
		} else if (w < 0 && errno == EAGAIN) {
			struct pollfd pf = { .fd = st->orig, .events = POLLOUT };
			poll(&pf, 1, -1); /* a non-blocking original: wait as a blocking write would */
		} else if (w < 0 && errno != EINTR) {
			return errno;
		}
	}
	return 0;
}

/* Reads once from the stream's pipe. Returns the bytes read, 0 at EOF, -1 when nothing was there. */
static ssize_t pump(struct stream *st)
{
	static char buf[CHUNK]; /* the tee thread's alone */
	ssize_t n = read(st->rd, buf, sizeof(buf));
	int err;

	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? -1 : 0;
	if (n == 0)
		return 0;
	err = forward(st, buf, (size_t)n);
	if (err == EPIPE)
		return 0; /* the original's reader is gone: so is the pipe, as the application's write would find */
	if (err)
		EVR_EVENT("evring.stdio", "write_error", EVR_STR("stream", st->fd == 1 ? "stdout" : "stderr"),
			  EVR_I32("errno", err), EVR_U64("bytes", (uint64_t)n));
	scan(st, buf, (size_t)n);
	return n;
}

static void stream_end(struct stream *st)
{
	if (st->rd < 0)
		return;
	close(st->rd);
	st->rd = -1;
	if (st->len || st->cut)
		line_end(st); /* a last line without a newline */
}

static void *tee_main(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "evring-stdio");
	for (;;) {
		struct pollfd pf[3] = { { .fd = stdio_tee.wake[0], .events = POLLIN } };
		int n = 1;

		for (int i = 0; i < 2; i++)
			pf[n++] = (struct pollfd){ .fd = stdio_tee.s[i].rd, .events = POLLIN }; /* fd -1: ignored */
		if (poll(pf, 3, -1) < 0)
			continue;
		for (int i = 0; i < 2; i++)
			if (pf[1 + i].revents && pump(&stdio_tee.s[i]) == 0)
				stream_end(&stdio_tee.s[i]);
		if (pf[0].revents)
			break;
	}
	/*
	 * Stopping: fd 1 and 2 are the originals again; what is left in the
	 * pipes goes on, and what a writer still inside a write() (a thread
	 * blocked on a full pipe) or a child holding a write end sends within
	 * a quiet time of STOP_QUIET_MS, for at most STOP_MAX_MS in all.
	 */
	for (int i = 0; i < 2; i++)
		if (stdio_tee.s[i].rd >= 0)
			fcntl(stdio_tee.s[i].rd, F_SETFL, fcntl(stdio_tee.s[i].rd, F_GETFL) | O_NONBLOCK);
	for (int waited = 0; waited < STOP_MAX_MS; waited += STOP_QUIET_MS) {
		struct pollfd pf[2];
		bool any = false;

		for (int i = 0; i < 2; i++)
			pf[i] = (struct pollfd){ .fd = stdio_tee.s[i].rd, .events = POLLIN };
		if (poll(pf, 2, STOP_QUIET_MS) <= 0)
			break; /* quiet (or nothing left open) */
		for (int i = 0; i < 2; i++) {
			ssize_t n;

			if (!pf[i].revents)
				continue;
			while ((n = pump(&stdio_tee.s[i])) > 0)
				any = true;
			if (n == 0)
				stream_end(&stdio_tee.s[i]); /* EOF: every write end closed */
		}
		if (!any && stdio_tee.s[0].rd < 0 && stdio_tee.s[1].rd < 0)
			break;
	}
	for (int i = 0; i < 2; i++)
		stream_end(&stdio_tee.s[i]);
	evr_thread_release();
	return NULL;
}

static void fd_close(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/*
 * Puts the original descriptors back at 1 and 2 (which closes the pipes'
 * write ends), where they still are the tee's pipes: an application that
 * has since pointed fd 1 elsewhere (dup2 of a file) keeps its choice.
 */
static void restore(void)
{
	for (int i = 0; i < 2; i++) {
		struct stream *st = &stdio_tee.s[i];
		struct stat sb;

		if (st->orig >= 0 && fstat(st->fd, &sb) == 0 && S_ISFIFO(sb.st_mode) && sb.st_dev == st->pipe_dev &&
		    sb.st_ino == st->pipe_ino)
			dup2(st->orig, st->fd);
	}
}

int evr__stdio_start(void)
{
	sigset_t all, old;
	int rc;

	if (__atomic_load_n(&stdio_tee.on, __ATOMIC_RELAXED)) /* under evr__proc.lock, as every start */
		return 0;
	for (int i = 0; i < 2; i++) /* both, before either may fail: the failure closes what they hold */
		stdio_tee.s[i] = (struct stream){ .fd = i + 1, .orig = -1, .rd = -1 };
	if (pipe2(stdio_tee.wake, O_CLOEXEC) != 0)
		return -errno;
	for (int i = 0; i < 2; i++) {
		struct stream *st = &stdio_tee.s[i];
		int p[2];

		st->orig = fcntl(st->fd, F_DUPFD_CLOEXEC, 3);
		if (st->orig < 0)
			continue; /* a closed fd 1 or 2: nothing to tee */
		if (pipe2(p, O_CLOEXEC) != 0) {
			rc = -errno;
			goto fail;
		}
		fcntl(p[0], F_SETPIPE_SZ, PIPE_BYTES); /* best effort: above pipe-max-size it stays 64 KiB */
		st->rd = p[0];
		{
			struct stat sb;

			if (fstat(p[0], &sb) == 0) {
				st->pipe_dev = sb.st_dev;
				st->pipe_ino = sb.st_ino;
			}
		}
		if (dup2(p[1], st->fd) < 0) { /* fd 1 or 2 itself keeps no O_CLOEXEC: children inherit it */
			rc = -errno;
			close(p[1]);
			goto fail;
		}
		close(p[1]);
	}
	/* The thread takes no signal of the application's: they stay its other threads'. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = -pthread_create(&stdio_tee.thread, NULL, tee_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc)
		goto fail;
	/* Release, pairs with stop's exchange: a stop that sees the tee on sees its thread and descriptors. */
	__atomic_store_n(&stdio_tee.on, true, __ATOMIC_RELEASE);
	return 0;
fail:
	restore();
	for (int i = 0; i < 2; i++) {
		fd_close(&stdio_tee.s[i].orig);
		fd_close(&stdio_tee.s[i].rd);
	}
	fd_close(&stdio_tee.wake[0]);
	fd_close(&stdio_tee.wake[1]);
	return rc;
}

void evr__stdio_stop(bool at_exit)
{
	/* One stop joins the thread: evr_close racing another, or exit. Acquire pairs with start's release. */
	if (!__atomic_exchange_n(&stdio_tee.on, false, __ATOMIC_ACQ_REL))
		return;
	if (at_exit) {
		fflush(stdout);
		fflush(stderr);
	}
	restore();
	if (write(stdio_tee.wake[1], "", 1) != 1) {
		/* A pipe of our own, empty: cannot fail. */
	}
	pthread_join(stdio_tee.thread, NULL);
	for (int i = 0; i < 2; i++)
		fd_close(&stdio_tee.s[i].orig);
	fd_close(&stdio_tee.wake[0]);
	fd_close(&stdio_tee.wake[1]);
}

void evr__stdio_forked(void)
{
	if (!stdio_tee.on)
		return;
	/* The thread did not come along: the child writes to the originals itself. */
	stdio_tee.on = false;
	restore();
	for (int i = 0; i < 2; i++) {
		fd_close(&stdio_tee.s[i].orig);
		fd_close(&stdio_tee.s[i].rd);
		stdio_tee.s[i].len = 0;
		stdio_tee.s[i].cut = false;
	}
	fd_close(&stdio_tee.wake[0]);
	fd_close(&stdio_tee.wake[1]);
}
