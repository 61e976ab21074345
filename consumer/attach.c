/*
 * attach.c: finding a process's segments, opening them as hostile input,
 * taking their consumer slot, and letting go of them.
 *
 * A process's segments are the shm objects /dev/shm/evring.<pid>.<name>; it
 * has one, or more if it opened several. Opening validates the header
 * against the object's size, refuses another user's segment, and takes a
 * consumer slot (one of several: each holder keeps its own while it lives).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attach.h"
#include "fault.h"

int evr__src_open(struct evr_src *s, const char *shm_name, uint32_t index, unsigned flags, char *err,
		  size_t errlen)
{
	struct evr_clock_calib cal;
	uint32_t holders[EVR_CONSUMER_SLOTS_MAX], nheld = 0;
	int rc;

	memset(s, 0, sizeof(*s));
	rc = evr_segment_open_flags(&s->seg, shm_name,
				    flags & EVR_ATTACH_ALLOW_WRITABLE ? EVR_SEGMENT_ALLOW_WRITABLE : 0, err, errlen);
	if (rc)
		return rc;
	s->fault = evr__fault_watch(s->seg.base, s->seg.bytes); /* -ENOSPC: unwatched, as before */
	rc = evr_consumer_slot_claim_flags(&s->seg, (uint32_t)getpid(),
					   flags & EVR_ATTACH_FROM_OLDEST ? EVR_SLOT_FROM_OLDEST : 0, holders,
					   EVR_CONSUMER_SLOTS_MAX, &nheld);
	if (rc < 0) {
		int at = snprintf(err, errlen, "segment %s: all %u consumer slots held, by pids", shm_name, s->seg.slots);

		for (uint32_t i = 0; i < nheld && i < EVR_CONSUMER_SLOTS_MAX && at > 0 && (size_t)at < errlen; i++)
			at += snprintf(err + at, errlen - (size_t)at, "%s %u", i ? "," : "", holders[i]);
		evr_segment_close(&s->seg);
		return rc;
	}
	s->slot_held = true;
	s->slot = (uint32_t)rc;
	rc = evr_reader_init_slot(&s->reader, &s->seg, s->slot);
	s->lanes = calloc(s->seg.lane_count, sizeof(*s->lanes));
	if (rc || !s->lanes) {
		snprintf(err, errlen, "out of memory attaching to %s", shm_name);
		evr__src_close(s);
		return -ENOMEM;
	}
	/*
	 * A thread names itself in a THREAD record at the start of its run on a
	 * lane, which a consumer attaching later never reads: until one comes,
	 * an exclusive lane's records are its current owner's.
	 */
	for (uint32_t i = 0; i + 1 < s->seg.lane_count; i++)
		s->lanes[i].tid = (uint32_t)evr_ld_64(&s->seg.lanes[i].owner); /* relaxed: a hint, no ordering */
	cal = (struct evr_clock_calib){ s->seg.clock_kind, s->seg.hdr->clock_anchor_ticks,
					s->seg.hdr->clock_anchor_mono_ns, s->seg.hdr->clock_anchor_real_ns,
					s->seg.hdr->clock_mult };
	evr_clock_map_init(&s->clock, &cal);
	/* The header is the producer's to write: copy only what fits, NUL-terminated. */
	snprintf(s->program, sizeof(s->program), "%.*s", (int)strnlen(s->seg.hdr->program, sizeof(s->seg.hdr->program)),
		 s->seg.hdr->program);
	snprintf(s->shm_name, sizeof(s->shm_name), "%s", shm_name);
	s->pub.pid = s->seg.hdr->creator_pid;
	s->trace_id_high = evr__src_trace_id_high(s->seg.hdr->trace_id_high, s->pub.pid, s->seg.hdr->start_real_ns);
	s->pub.index = index;
	s->pub.program = s->program;
	s->pub.cmdline = s->cmdline;
	s->pub.shm_name = s->shm_name;
	s->pub.dead = !evr_segment_owner_alive(&s->seg, (uint64_t)s->pub.pid << 32);
	s->exited = s->pub.dead && evr_ld_acq_64(&s->seg.hdr->exited_real_ns) != 0;
	/* Read after its death (the flight recorder): its spans still open end as abandoned, as for a death seen live. */
	if (s->pub.dead)
		s->dead_ns = evr_clock_monotonic_ns();
	return 0;
}

void evr__src_close(struct evr_src *s)
{
	if (s->slot_held && !s->faulted)
		evr_consumer_slot_release_one(&s->seg, s->slot, (uint32_t)getpid());
	s->slot_held = false;
	evr_reader_fini(&s->reader);
	evr__fault_unwatch(s->fault);
	s->fault = 0;
	evr_segment_close(&s->seg);
	evr__src_tables_free(s);
	free(s->lanes);
	s->lanes = NULL;
}

/*
 * Whether the segment file /dev/shm/<file> was made by a program called
 * name: the program field of its header (the producer's program name,
 * whatever EVRING_NAME named the segment). Read with one pread, as bytes
 * that prove nothing: a header without the magic matches nothing.
 */
static bool program_is(const char *file, const char *name)
{
	struct evr_seg_header h;
	char path[300];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/dev/shm/%s", file);
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return false;
	n = pread(fd, &h, offsetof(struct evr_seg_header, meta_used), 0);
	close(fd);
	if (n != (ssize_t)offsetof(struct evr_seg_header, meta_used) || memcmp(h.magic, EVR_MAGIC, 8) != 0)
		return false;
	h.program[sizeof(h.program) - 1] = 0;
	return strcmp(h.program, name) == 0;
}

int evr__shm_each(uint32_t pid, const char *name, int (*fn)(void *arg, const char *shm, uint32_t pid), void *arg)
{
	struct evr_reclaim_policy reclaim;
	struct dirent *e;
	int found = 0, rc = 0;
	char err[EVR_ERR_MAX];
	DIR *d;

	/* Bounds what dead processes left, sparing the one asked for: it may be read after its death. */
	if (evr_reclaim_policy_from_env(&reclaim, err, sizeof(err)) == 0) {
		reclaim.spare_pid = pid;
		evr_segment_reclaim(&reclaim, NULL);
	} else {
		fprintf(stderr, "evring: %s; nothing reclaimed\n", err);
	}
	d = opendir("/dev/shm");
	if (!d)
		return -errno;
	while (rc == 0 && (e = readdir(d)) != NULL) {
		unsigned long p;
		char *end, shm[300];

		if (strncmp(e->d_name, "evring.", 7) != 0)
			continue;
		p = strtoul(e->d_name + 7, &end, 10);
		if (end == e->d_name + 7 || *end != '.' || p == 0 || p > UINT32_MAX)
			continue;
		if ((pid && p != pid) || (name && strcmp(end + 1, name) != 0 && !program_is(e->d_name, name)))
			continue;
		snprintf(shm, sizeof(shm), "/%s", e->d_name);
		rc = fn(arg, shm, (uint32_t)p);
		found++;
	}
	closedir(d);
	return rc < 0 ? rc : found;
}

int evr__no_segment(uint32_t pid, char *err, size_t errlen)
{
	if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) {
		snprintf(err, errlen, "no such process: %u", pid);
		return -ESRCH;
	}
	snprintf(err, errlen,
		 "process %u has no evring segment (not instrumented, EVRING=off, or no record written yet)", pid);
	return -ENOENT;
}
