/*
 * procinfo.h: what /proc, an ELF file and a git directory say about a
 * process (procinfo.c), for the sampler. Everything read is treated as
 * hostile: bounded reads, sizes checked before use; a thing that cannot be
 * read is reported as such, never guessed.
 */
#ifndef EVR_CONSUMER_PROCINFO_H
#define EVR_CONSUMER_PROCINFO_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A process's counters at one time; have_* say which files could be read. */
struct evr_proc_counters {
	bool have_stat, have_status, have_io, have_fds;
	uint64_t utime_ticks, stime_ticks;		/* stat */
	uint64_t rss_bytes, threads, ctx_vol, ctx_invol; /* status */
	uint64_t read_bytes, write_bytes;		/* io */
	uint64_t fds;					/* entries of fd/ */
};

/* Reads what it can; returns how many of the four sources could not be read (0-4). */
int evr__proc_counters(uint32_t pid, struct evr_proc_counters *out);

/* The host: CPUs online, memory total and available (bytes), load averages. Returns 0 or -errno. */
struct evr_host_info {
	uint64_t cpus, mem_total, mem_available;
	double load[3];
};
int evr__host_info(struct evr_host_info *out);

/* Into buf (NUL-terminated): the command line, arguments joined by spaces. Returns its length or -errno. */
int evr__proc_cmdline(uint32_t pid, char *buf, size_t len);

/* The executable's path (readlink of /proc/pid/exe). Returns its length or -errno. */
int evr__proc_exe(uint32_t pid, char *buf, size_t len);

/*
 * The GNU build id of an ELF file (open fd) as lower-case hex, from its
 * PT_NOTE segments (the note is in the first page's loaded notes of every
 * linker that writes one). Returns its length in hex digits, or -ENOENT
 * (no build id), -ENOEXEC (not an ELF file of this machine's byte order,
 * or malformed), -errno.
 */
int evr__elf_build_id(int fd, char *hex, size_t len);

/*
 * The commit checked out in the git work tree holding dir (or dir's
 * nearest parent that has a .git directory or a .git file naming one):
 * HEAD, followed through loose refs and packed-refs (and a linked work
 * tree's commondir). Returns its length (40 or 64 hex digits), -ENOENT (not
 * in a repository, or an unborn branch) or -EBADMSG.
 */
int evr__git_commit(const char *dir, char *hex, size_t len);

/*
 * Calls fn for each variable of the process's environment whose name
 * matches one of the NULL-terminated fnmatch patterns. Returns how many
 * matched, or -errno when the environment could not be read.
 */
int evr__proc_env(uint32_t pid, const char *const *patterns,
		  void (*fn)(void *arg, const char *name, const char *value), void *arg);

#endif /* EVR_CONSUMER_PROCINFO_H */
