/*
 * agent_producer.c: a small producer for the `evring agent` tests
 * (test_agent.c) and its benchmark (bench/bench_agent.c). It opens its
 * segment, writes events at a steady pace, and prints at exit how many it
 * wrote, so the test can hold the agent's output against its own count:
 *
 *   agent_producer NAME EVENTS DURATION_MS [pause=AT:MS] [shrink=AT] [flood] [hold=MS] [lanebytes=N] [uid=N]
 *
 *   NAME         the segment's name (the program name is this binary's)
 *   EVENTS       events written, spread over DURATION_MS
 *   pause=AT:MS  after event AT, print "paused AT" and sleep MS ms
 *   shrink=AT    after event AT, shrink its own segment to one page (a
 *                misbehaving producer: the consumer takes SIGBUS)
 *   flood        write about 100000 events a second until DURATION_MS has
 *                passed (EVENTS is ignored)
 *   hold=MS      stay MS ms after the last event before exiting
 *   lanebytes=N  lane size (EVRING_LANE_BYTES), for tests that want drops
 *   uid=N        run as user (and group) N from before the segment is made
 *                (started as root): a segment of another user than the agent's
 *
 * Output: "written N" on stdout when done (flood: how many it wrote).
 * Each event carries its sequence number ("seq") and the producer's pid.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <evring/evring.h>

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t t)
{
	uint64_t n = now_ns();

	if (t > n) {
		struct timespec ts = { (time_t)((t - n) / 1000000000ull), (long)((t - n) % 1000000000ull) };
		nanosleep(&ts, NULL);
	}
}

int main(int argc, char **argv)
{
	struct evr_config cfg = { 0 };
	long events, pause_at = -1, pause_ms = 0, shrink_at = -1, hold_ms = 0;
	uint64_t duration_ns, start, written = 0;
	bool flood = false;

	if (argc < 4) {
		fprintf(stderr, "usage: agent_producer NAME EVENTS DURATION_MS [pause=AT:MS] [shrink=AT] [flood] [hold=MS] "
				"[lanebytes=N] [uid=N]\n");
		return 2;
	}
	cfg.name = argv[1];
	events = atol(argv[2]);
	duration_ns = (uint64_t)atol(argv[3]) * 1000000ull;
	for (int i = 4; i < argc; i++) {
		if (!strncmp(argv[i], "pause=", 6))
			sscanf(argv[i] + 6, "%ld:%ld", &pause_at, &pause_ms);
		else if (!strncmp(argv[i], "shrink=", 7))
			shrink_at = atol(argv[i] + 7);
		else if (!strcmp(argv[i], "flood"))
			flood = true;
		else if (!strncmp(argv[i], "hold=", 5))
			hold_ms = atol(argv[i] + 5);
		else if (!strncmp(argv[i], "lanebytes=", 10))
			cfg.lane_bytes = (uint64_t)atoll(argv[i] + 10);
		else if (!strncmp(argv[i], "uid=", 4) &&
			 (setgid((gid_t)atol(argv[i] + 4)) != 0 || setuid((uid_t)atol(argv[i] + 4)) != 0)) {
			perror("agent_producer: setuid");
			return 1;
		}
	}
	if (evr_open(&cfg) != 0) {
		fprintf(stderr, "agent_producer: %s\n", evr_last_error());
		return 1;
	}
	start = now_ns();
	if (flood) {
		/* About 100000 a second: far past what an agent would take from one process, not a disk's worth. */
		while (now_ns() - start < duration_ns) {
			for (int k = 0; k < 1000; k++, written++)
				EVR_EVENT("agtest", "flood", EVR_U64("seq", written));
			usleep(10000);
		}
	} else {
		for (long i = 0; i < events; i++) {
			if (events > 1)
				sleep_until(start + duration_ns * (uint64_t)i / (uint64_t)events);
			EVR_EVENT("agtest", "tick", EVR_U64("seq", (uint64_t)i), EVR_U64("pid", (uint64_t)getpid()));
			written++;
			if (i == pause_at) {
				printf("paused %ld\n", i + 1);
				fflush(stdout);
				usleep((useconds_t)pause_ms * 1000);
				start = now_ns() - duration_ns * (uint64_t)(i + 1) / (uint64_t)events;
			}
			if (i == shrink_at) {
				char path[300];
				int fd;

				snprintf(path, sizeof(path), "/dev/shm/evring.%d.%s", (int)getpid(), cfg.name);
				if ((fd = open(path, O_RDWR)) >= 0) {
					if (ftruncate(fd, 4096) != 0)
						perror("ftruncate");
					close(fd);
				}
				/* Nothing more is written: its own mapping past the page would fault too. */
				printf("written %llu\n", (unsigned long long)written);
				fflush(stdout);
				usleep((useconds_t)hold_ms * 1000);
				unlink(path); /* its exit handlers would touch the lost pages: none run, the file goes here */
				_exit(0);
			}
		}
	}
	if (hold_ms)
		usleep((useconds_t)hold_ms * 1000);
	printf("written %llu\n", (unsigned long long)written);
	return 0;
}
