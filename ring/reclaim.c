/*
 * reclaim.c: bounding the segments dead processes leave in /dev/shm. A
 * segment outlives a producer that dies without exit handlers (a signal,
 * _exit in a forked child), so that a consumer can still read it; here the
 * dead ones are kept newest first, up to a count and a size per name, and the
 * rest unlinked. Every segment file is read as hostile input: one pread of
 * its header's first bytes, checked before use.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <evring/ring.h>

uint64_t evr_proc_start_ticks(uint32_t pid)
{
	char path[64], buf[1024], *p, *end;
	unsigned long long v;
	ssize_t n;
	int fd;

	if (pid == 0)
		snprintf(path, sizeof(path), "/proc/self/stat");
	else if (pid <= INT_MAX)
		snprintf(path, sizeof(path), "/proc/%u/stat", pid);
	else
		return 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
	if (!p)
		return 0;
	p++;
	/* After the name: field 3 (state) onwards; starttime is field 22. */
	for (int field = 3; field < 22; field++) {
		p = strchr(p + 1, ' ');
		if (!p)
			return 0;
	}
	errno = 0;
	v = strtoull(p + 1, &end, 10);
	if (errno || end == p + 1)
		return 0;
	return v;
}

static bool parse_size(const char *s, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return false;
	if (*end == 'K' || *end == 'k')
		v = v > (UINT64_MAX >> 10) ? UINT64_MAX : v << 10, end++;
	else if (*end == 'M' || *end == 'm')
		v = v > (UINT64_MAX >> 20) ? UINT64_MAX : v << 20, end++;
	else if (*end == 'G' || *end == 'g')
		v = v > (UINT64_MAX >> 30) ? UINT64_MAX : v << 30, end++;
	if (*end)
		return false;
	*out = v;
	return true;
}

int evr_reclaim_policy_from_env(struct evr_reclaim_policy *p, char *err, size_t errlen)
{
	const char *v;
	uint64_t n;

	memset(p, 0, sizeof(*p));
	p->keep_count = EVR_KEEP_DEAD_DEFAULT;
	p->keep_bytes = EVR_KEEP_DEAD_BYTES_DEFAULT;
	v = getenv("EVRING_KEEP_DEAD");
	if (v && *v) {
		char *end;
		unsigned long c;

		errno = 0;
		c = strtoul(v, &end, 10);
		if (errno || *end || *v < '0' || *v > '9' || c > 1000000) {
			snprintf(err, errlen, "EVRING_KEEP_DEAD=%s: expected a number of segments from 0 to 1000000", v);
			return -EINVAL;
		}
		p->keep_count = (uint32_t)c;
	}
	v = getenv("EVRING_KEEP_DEAD_BYTES");
	if (v && *v) {
		if (!parse_size(v, &n)) {
			snprintf(err, errlen, "EVRING_KEEP_DEAD_BYTES=%s: expected a size such as 256M or 1G", v);
			p->keep_count = EVR_KEEP_DEAD_DEFAULT;
			return -EINVAL;
		}
		p->keep_bytes = n;
	}
	return 0;
}

struct dead_seg {
	char file[NAME_MAX + 1];
	const char *name; /* inside file: the part after "evring.<pid>." */
	uint64_t created; /* start_real_ns */
	uint64_t bytes;
};

/* Groups by name, newest first within one. */
static int dead_cmp(const void *a, const void *b)
{
	const struct dead_seg *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	if (c)
		return c;
	if (x->created != y->created)
		return x->created > y->created ? -1 : 1;
	return strcmp(x->file, y->file);
}

/*
 * Whether the segment file is a dead process's, ours to remove: fills d.
 * Anything unsure (cannot read it, not an evring header, another user's,
 * another pid namespace's, a live creator or consumer) says no.
 */
static bool is_dead(int dirfd, const char *file, uint32_t pid, uint64_t pidns, struct dead_seg *d)
{
	struct evr_seg_header h;
	struct stat st;
	ssize_t n;
	int fd;

	fd = openat(dirfd, file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return false;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
	    st.st_size < (off_t)EVR_HEADER_BYTES) {
		close(fd);
		return false;
	}
	n = pread(fd, &h, offsetof(struct evr_seg_header, pad_consumer), 0);
	close(fd);
	if (n != (ssize_t)offsetof(struct evr_seg_header, pad_consumer))
		return false;
	if (memcmp(h.magic, EVR_MAGIC, 8) != 0) {
		/* Still being created (the magic is stored last), or not evring's: only a dead creator's half-made one. */
		static const char zero[8];
		if (memcmp(h.magic, zero, 8) != 0 || evr_owner_alive((uint64_t)pid << 32))
			return false;
		h.start_real_ns = 0; /* the oldest of its name */
		h.consumer_pid = 0;
	} else {
		if (h.creator_pid != pid || (h.creator_pidns != 0 && h.creator_pidns != pidns))
			return false;
		if (evr_owner_alive((uint64_t)pid << 32)) {
			uint64_t now = h.creator_start_ticks ? evr_proc_start_ticks(pid) : 0;
			/* Alive unless the pid was reused: a process with that pid that started at another time. */
			if (!now || now == h.creator_start_ticks)
				return false;
		}
	}
	if (h.consumer_pid != 0 && (h.consumer_pid > UINT32_MAX || evr_owner_alive(h.consumer_pid << 32)))
		return false; /* someone is reading it (a 1.x segment's one slot) */
	if (h.abi_major == EVR_ABI_MAJOR)
		for (uint32_t k = 0; k < h.consumer_slots && k < EVR_CONSUMER_SLOTS_MAX; k++)
			if (h.slots[k].pid != 0 && (h.slots[k].pid > UINT32_MAX || evr_owner_alive(h.slots[k].pid << 32)))
				return false; /* someone is reading it */
	d->created = h.start_real_ns;
	d->bytes = (uint64_t)st.st_size;
	return true;
}

int evr_segment_reclaim(const struct evr_reclaim_policy *p, struct evr_reclaim_stats *st)
{
	struct evr_reclaim_stats local = { 0, 0, 0, 0 };
	const char *dir = p->dir ? p->dir : "/dev/shm";
	struct dead_seg *v = NULL;
	size_t nv = 0, cap = 0;
	uint64_t pidns = evr_pidns();
	uint32_t self = (uint32_t)getpid(), kept = 0;
	uint64_t kept_bytes = 0;
	bool full = false;
	struct dirent *e;
	DIR *d;

	if (!st)
		st = &local;
	memset(st, 0, sizeof(*st));
	d = opendir(dir);
	if (!d)
		return -errno;
	while ((e = readdir(d)) != NULL) {
		unsigned long pid;
		char *end;
		struct dead_seg s;

		if (strncmp(e->d_name, "evring.", 7) != 0)
			continue;
		errno = 0;
		pid = strtoul(e->d_name + 7, &end, 10);
		if (errno || end == e->d_name + 7 || *end != '.' || !end[1] || pid == 0 || pid > INT_MAX)
			continue;
		if (pid == self || pid == p->spare_pid || (p->name && strcmp(end + 1, p->name) != 0))
			continue;
		if (!is_dead(dirfd(d), e->d_name, (uint32_t)pid, pidns, &s))
			continue;
		if (nv == cap) {
			struct dead_seg *n = realloc(v, (cap ? cap * 2 : 32) * sizeof(*v));
			if (!n)
				break; /* what was found so far is still bounded below */
			v = n;
			cap = cap ? cap * 2 : 32;
		}
		snprintf(s.file, sizeof(s.file), "%s", e->d_name);
		v[nv++] = s;
	}
	for (size_t i = 0; i < nv; i++)
		v[i].name = strchr(v[i].file + 7, '.') + 1;
	if (nv) /* qsort wants an array, even of none */
		qsort(v, nv, sizeof(*v), dead_cmp);
	st->dead = (uint32_t)nv;
	for (size_t i = 0, first = 0; i < nv; i++) {
		if (i == 0 || strcmp(v[i].name, v[first].name) != 0) {
			first = i;
			kept = 0;
			kept_bytes = 0;
			full = false;
		}
		/* Newest first: once one is over the bound, every older one of its name is too. */
		full = full || kept >= p->keep_count || v[i].bytes > p->keep_bytes - kept_bytes;
		if (!full) {
			kept++;
			kept_bytes += v[i].bytes;
			continue;
		}
		if (unlinkat(dirfd(d), v[i].file, 0) == 0) {
			st->removed++;
			st->removed_bytes += v[i].bytes;
		} else if (errno != ENOENT) {
			st->errors++; /* ENOENT: another process reclaimed it first */
		}
	}
	closedir(d);
	free(v);
	return 0;
}
