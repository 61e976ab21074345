/*
 * procinfo.c: a process's counters, command line, executable, build id,
 * git commit and environment, and the host's size and load (procinfo.h).
 *
 * /proc files are read whole into a bounded buffer and parsed from it; the
 * ELF file and the git directory belong to whoever wrote them, so every
 * offset and size read from them is checked against what was read before
 * it is used.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "procinfo.h"

/*
 * Reads a whole small file into buf (NUL-terminated). Returns its length or
 * -errno. Regular files only: the git files come from a directory the traced
 * user controls, where a FIFO would block the consumer's open and read for
 * ever (opened non-blocking, and refused).
 */
static ssize_t read_small(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	size_t got = 0;
	ssize_t n = 0;
	struct stat st;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	while (got + 1 < len && (n = read(fd, buf + got, len - 1 - got)) > 0)
		got += (size_t)n;
	if (n < 0 && got == 0) {
		n = -errno;
		close(fd);
		return n;
	}
	close(fd);
	buf[got] = 0;
	return (ssize_t)got;
}

/* The number after "key" at the start of a line of a "Key:   value" file; false when absent. */
static bool field_u64(const char *text, const char *key, uint64_t *out)
{
	size_t kl = strlen(key);

	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (strncmp(p, key, kl) == 0) {
			char *end;
			unsigned long long v = strtoull(p + kl, &end, 10);

			if (end == p + kl)
				return false;
			*out = v;
			return true;
		}
	}
	return false;
}

static bool read_stat(uint32_t pid, struct evr_proc_counters *c)
{
	char path[64], buf[2048], *p;
	unsigned long long ut, st;

	snprintf(path, sizeof(path), "/proc/%u/stat", pid);
	if (read_small(path, buf, sizeof(buf)) <= 0)
		return false;
	/* comm may hold spaces and parentheses: the fields start after the last ')'. */
	p = strrchr(buf, ')');
	if (!p)
		return false;
	/* After ')': state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15). */
	if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return false;
	c->utime_ticks = ut;
	c->stime_ticks = st;
	return true;
}

/*
 * status: threads and RSS of the process; its context switches are each
 * thread's (a status file counts its own thread's), so they are added up
 * over task/ (threads that exited took theirs with them: a sum can drop,
 * which the sampler's deltas clamp at 0).
 */
static bool read_status(uint32_t pid, struct evr_proc_counters *c)
{
	char path[64], buf[8192];
	uint64_t rss_kb, v;
	DIR *d;
	struct dirent *e;

	snprintf(path, sizeof(path), "/proc/%u/status", pid);
	if (read_small(path, buf, sizeof(buf)) <= 0 || !field_u64(buf, "Threads:", &c->threads))
		return false;
	/* A zombie has no VmRSS line: no memory. */
	c->rss_bytes = field_u64(buf, "VmRSS:", &rss_kb) ? rss_kb * 1024 : 0;
	snprintf(path, sizeof(path), "/proc/%u/task", pid);
	if (!(d = opendir(path)))
		return false;
	c->ctx_vol = c->ctx_invol = 0;
	while ((e = readdir(d)) != NULL) {
		char tpath[96];

		if (e->d_name[0] == '.')
			continue;
		snprintf(tpath, sizeof(tpath), "/proc/%u/task/%.20s/status", pid, e->d_name);
		if (read_small(tpath, buf, sizeof(buf)) <= 0)
			continue; /* the thread exited meanwhile */
		if (field_u64(buf, "voluntary_ctxt_switches:", &v))
			c->ctx_vol += v;
		if (field_u64(buf, "nonvoluntary_ctxt_switches:", &v))
			c->ctx_invol += v;
	}
	closedir(d);
	return true;
}

static bool read_io(uint32_t pid, struct evr_proc_counters *c)
{
	char path[64], buf[1024];

	snprintf(path, sizeof(path), "/proc/%u/io", pid);
	if (read_small(path, buf, sizeof(buf)) <= 0)
		return false; /* another user's process, or no task accounting */
	return field_u64(buf, "read_bytes:", &c->read_bytes) && field_u64(buf, "write_bytes:", &c->write_bytes);
}

static bool read_fds(uint32_t pid, struct evr_proc_counters *c)
{
	char path[64];
	DIR *d;
	struct dirent *e;

	snprintf(path, sizeof(path), "/proc/%u/fd", pid);
	d = opendir(path);
	if (!d)
		return false;
	c->fds = 0;
	while ((e = readdir(d)) != NULL)
		c->fds += e->d_name[0] != '.';
	closedir(d);
	return true;
}

int evr__proc_counters(uint32_t pid, struct evr_proc_counters *out)
{
	memset(out, 0, sizeof(*out));
	out->have_stat = read_stat(pid, out);
	out->have_status = read_status(pid, out);
	out->have_io = read_io(pid, out);
	out->have_fds = read_fds(pid, out);
	return !out->have_stat + !out->have_status + !out->have_io + !out->have_fds;
}

int evr__host_info(struct evr_host_info *out)
{
	char buf[4096];
	uint64_t kb;
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	memset(out, 0, sizeof(*out));
	out->cpus = n > 0 ? (uint64_t)n : 0;
	if (read_small("/proc/meminfo", buf, sizeof(buf)) <= 0)
		return -EIO;
	if (field_u64(buf, "MemTotal:", &kb))
		out->mem_total = kb * 1024;
	if (field_u64(buf, "MemAvailable:", &kb))
		out->mem_available = kb * 1024;
	if (getloadavg(out->load, 3) != 3)
		return -EIO;
	return 0;
}

int evr__proc_cmdline(uint32_t pid, char *buf, size_t len)
{
	char path[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%u/cmdline", pid);
	n = read_small(path, buf, len);
	if (n < 0)
		return (int)n;
	while (n > 0 && buf[n - 1] == 0)
		n--; /* the last argument's terminator */
	for (ssize_t i = 0; i < n; i++)
		if (buf[i] == 0)
			buf[i] = ' ';
	buf[n] = 0;
	return (int)n;
}

int evr__proc_exe(uint32_t pid, char *buf, size_t len)
{
	char path[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%u/exe", pid);
	n = readlink(path, buf, len - 1);
	if (n < 0)
		return -errno;
	buf[n] = 0;
	return (int)n;
}

/* ---- the build id ------------------------------------------------------------------------------ */

#define NOTES_MAX (64u << 10) /* bytes of one PT_NOTE segment read; build ids sit in the first few hundred */
#define PHDRS_MAX 256u

static bool pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	size_t got = 0;

	if (off > (uint64_t)INT64_MAX - len)
		return false;
	while (got < len) {
		ssize_t n = pread(fd, (char *)buf + got, len - got, (off_t)(off + got));

		if (n <= 0)
			return false;
		got += (size_t)n;
	}
	return true;
}

/* Looks for NT_GNU_BUILD_ID in a notes segment's bytes. Returns its hex length, -ENOENT or -ENOEXEC. */
static int notes_build_id(const unsigned char *p, size_t size, uint64_t align, char *hex, size_t len)
{
	size_t off = 0;

	align = align == 8 ? 8 : 4;
	while (size - off >= sizeof(Elf64_Nhdr)) {
		Elf64_Nhdr nh; /* the same layout as Elf32_Nhdr: three 32-bit words */
		size_t name_at, desc_at, next;

		memcpy(&nh, p + off, sizeof(nh));
		name_at = off + sizeof(nh);
		if (nh.n_namesz > size - name_at)
			return -ENOEXEC;
		/* The name, then the desc, each starting at an offset aligned to the segment's alignment. */
		desc_at = (name_at + nh.n_namesz + align - 1) & ~(align - 1);
		if (desc_at > size || nh.n_descsz > size - desc_at)
			return -ENOEXEC;
		next = (desc_at + nh.n_descsz + align - 1) & ~(align - 1);
		if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 && memcmp(p + name_at, "GNU", 4) == 0) {
			if (nh.n_descsz == 0 || 2 * (size_t)nh.n_descsz + 1 > len)
				return -ENOEXEC;
			for (uint32_t i = 0; i < nh.n_descsz; i++)
				snprintf(hex + 2 * i, 3, "%02x", p[desc_at + i]);
			return (int)(2 * nh.n_descsz);
		}
		if (next <= off || next > size)
			break;
		off = next;
	}
	return -ENOENT;
}

int evr__elf_build_id(int fd, char *hex, size_t len)
{
	unsigned char ident[EI_NIDENT];
	uint64_t phoff, phentsize, phnum;
	bool is64;

	if (!pread_all(fd, ident, sizeof(ident), 0) || memcmp(ident, ELFMAG, SELFMAG) != 0)
		return -ENOEXEC;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	if (ident[EI_DATA] != ELFDATA2LSB)
		return -ENOEXEC;
#else
	if (ident[EI_DATA] != ELFDATA2MSB)
		return -ENOEXEC;
#endif
	if (ident[EI_CLASS] == ELFCLASS64) {
		Elf64_Ehdr eh;

		if (!pread_all(fd, &eh, sizeof(eh), 0))
			return -ENOEXEC;
		phoff = eh.e_phoff, phentsize = eh.e_phentsize, phnum = eh.e_phnum;
		is64 = true;
		if (phentsize < sizeof(Elf64_Phdr))
			return -ENOEXEC;
	} else if (ident[EI_CLASS] == ELFCLASS32) {
		Elf32_Ehdr eh;

		if (!pread_all(fd, &eh, sizeof(eh), 0))
			return -ENOEXEC;
		phoff = eh.e_phoff, phentsize = eh.e_phentsize, phnum = eh.e_phnum;
		is64 = false;
		if (phentsize < sizeof(Elf32_Phdr))
			return -ENOEXEC;
	} else {
		return -ENOEXEC;
	}
	if (phnum == 0 || phnum > PHDRS_MAX)
		return phnum == 0 ? -ENOENT : -ENOEXEC;
	for (uint64_t i = 0; i < phnum; i++) {
		uint64_t type, off, size, align;
		unsigned char *notes;
		int rc;

		if (is64) {
			Elf64_Phdr ph;

			if (!pread_all(fd, &ph, sizeof(ph), phoff + i * phentsize))
				return -ENOEXEC;
			type = ph.p_type, off = ph.p_offset, size = ph.p_filesz, align = ph.p_align;
		} else {
			Elf32_Phdr ph;

			if (!pread_all(fd, &ph, sizeof(ph), phoff + i * phentsize))
				return -ENOEXEC;
			type = ph.p_type, off = ph.p_offset, size = ph.p_filesz, align = ph.p_align;
		}
		if (type != PT_NOTE || size == 0)
			continue;
		if (size > NOTES_MAX)
			size = NOTES_MAX;
		notes = malloc(size);
		if (!notes)
			return -ENOMEM;
		rc = pread_all(fd, notes, size, off) ? notes_build_id(notes, size, align, hex, len) : -ENOEXEC;
		free(notes);
		if (rc > 0 || rc == -ENOMEM)
			return rc;
	}
	return -ENOENT;
}

/* ---- the git commit ---------------------------------------------------------------------------- */

static bool is_hex_id(const char *s, size_t n)
{
	if (n != 40 && n != 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* s without trailing white space; returns the new length. */
static size_t rstrip(char *s)
{
	size_t n = strlen(s);

	while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
		s[--n] = 0;
	return n;
}

/* Looks a ref up in one git directory: its loose file, then packed-refs. */
static int ref_in(const char *gitdir, const char *ref, char *hex, size_t len)
{
	char path[PATH_MAX + 256], buf[65536];
	size_t rl = strlen(ref);

	if (snprintf(path, sizeof(path), "%s/%s", gitdir, ref) < (int)sizeof(path) &&
	    read_small(path, buf, 128) > 0 && is_hex_id(buf, rstrip(buf))) {
		if (strlen(buf) + 1 > len)
			return -EBADMSG;
		strcpy(hex, buf);
		return (int)strlen(buf);
	}
	if (snprintf(path, sizeof(path), "%s/packed-refs", gitdir) >= (int)sizeof(path) ||
	    read_small(path, buf, sizeof(buf)) <= 0)
		return -ENOENT;
	/* Lines "<id> <ref>"; '#' and '^' lines are comments and peeled tags. */
	for (char *line = buf, *nl; line && *line; line = nl ? nl + 1 : NULL) {
		char *sp;

		nl = strchr(line, '\n');
		if (nl)
			*nl = 0;
		sp = strchr(line, ' ');
		if (!sp || line[0] == '#' || line[0] == '^')
			continue;
		rstrip(sp + 1);
		if (strlen(sp + 1) == rl && memcmp(sp + 1, ref, rl) == 0 && is_hex_id(line, (size_t)(sp - line))) {
			if ((size_t)(sp - line) + 1 > len)
				return -EBADMSG;
			memcpy(hex, line, (size_t)(sp - line));
			hex[sp - line] = 0;
			return (int)(sp - line);
		}
	}
	return -ENOENT;
}

/* The git directory of the work tree at dir, into gitdir: 0, or -ENOENT when dir has no .git. */
static int git_dir_of(const char *dir, char *gitdir, size_t len)
{
	char path[PATH_MAX], buf[PATH_MAX + 16];
	struct stat st;
	size_t n;

	if (snprintf(path, sizeof(path), "%s/.git", strcmp(dir, "/") ? dir : "") >= (int)sizeof(path) ||
	    stat(path, &st) != 0)
		return -ENOENT;
	if (S_ISDIR(st.st_mode)) {
		if (strlen(path) + 1 > len)
			return -ENOENT;
		strcpy(gitdir, path);
		return 0;
	}
	/* A linked work tree or a submodule: "gitdir: <path>", relative to dir when not absolute. */
	if (!S_ISREG(st.st_mode) || read_small(path, buf, sizeof(buf)) <= 0 || strncmp(buf, "gitdir: ", 8) != 0)
		return -EBADMSG;
	n = rstrip(buf);
	if (n <= 8)
		return -EBADMSG;
	if (buf[8] == '/')
		n = (size_t)snprintf(gitdir, len, "%s", buf + 8);
	else
		n = (size_t)snprintf(gitdir, len, "%s/%s", dir, buf + 8);
	return n < len ? 0 : -ENOENT;
}

int evr__git_commit(const char *dir, char *hex, size_t len)
{
	char cur[PATH_MAX], gitdir[PATH_MAX], common[PATH_MAX], buf[512], path[PATH_MAX + 32];
	int rc = -ENOENT;
	size_t n;

	if (strlen(dir) >= sizeof(cur) || dir[0] != '/')
		return -ENOENT;
	strcpy(cur, dir);
	for (;;) {
		char *slash;

		rc = git_dir_of(cur, gitdir, sizeof(gitdir));
		if (rc != -ENOENT)
			break;
		slash = strrchr(cur, '/');
		if (!slash || (slash == cur && cur[1] == 0))
			return -ENOENT;
		if (slash == cur)
			cur[1] = 0;
		else
			*slash = 0;
	}
	if (rc)
		return rc;
	if (snprintf(path, sizeof(path), "%s/HEAD", gitdir) >= (int)sizeof(path) || read_small(path, buf, sizeof(buf)) <= 0)
		return -EBADMSG;
	n = rstrip(buf);
	if (is_hex_id(buf, n)) { /* a detached HEAD */
		if (n + 1 > len)
			return -EBADMSG;
		strcpy(hex, buf);
		return (int)n;
	}
	if (strncmp(buf, "ref: ", 5) != 0 || strstr(buf, "..") || buf[5] == '/')
		return -EBADMSG;
	rc = ref_in(gitdir, buf + 5, hex, len);
	if (rc != -ENOENT)
		return rc;
	/* A linked work tree's branches live in the main repository's directory, named by commondir. */
	if (snprintf(path, sizeof(path), "%s/commondir", gitdir) >= (int)sizeof(path) ||
	    read_small(path, common, sizeof(common) - 1) <= 0 || rstrip(common) == 0)
		return -ENOENT;
	if (common[0] != '/') {
		char rel[PATH_MAX];

		snprintf(rel, sizeof(rel), "%s", common);
		if (snprintf(common, sizeof(common), "%s/%s", gitdir, rel) >= (int)sizeof(common))
			return -ENOENT;
	}
	return ref_in(common, buf + 5, hex, len);
}

/* ---- the environment --------------------------------------------------------------------------- */

#define ENVIRON_MAX (1u << 20)

int evr__proc_env(uint32_t pid, const char *const *patterns,
		  void (*fn)(void *arg, const char *name, const char *value), void *arg)
{
	char path[64], *buf;
	ssize_t n;
	int matched = 0;

	if (!patterns || !*patterns)
		return 0; /* nothing allowed: the environment is not even read */
	buf = malloc(ENVIRON_MAX);
	if (!buf)
		return -ENOMEM;
	snprintf(path, sizeof(path), "/proc/%u/environ", pid);
	n = read_small(path, buf, ENVIRON_MAX);
	if (n < 0) {
		free(buf);
		return (int)n;
	}
	for (char *v = buf; v < buf + n; v += strlen(v) + 1) {
		char *eq = strchr(v, '=');

		if (!eq || eq == v)
			continue;
		*eq = 0;
		for (const char *const *p = patterns; *p; p++) {
			if (fnmatch(*p, v, 0) == 0) {
				fn(arg, v, eq + 1);
				matched++;
				break;
			}
		}
		*eq = '=';
	}
	free(buf);
	return matched;
}
