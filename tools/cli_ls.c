/*
 * cli_ls.c: `evring ls` and `evring stats`, which read segments' counters
 * and consumer slots without taking a slot and without writing a byte to them.
 *
 * Segments live in /dev/shm as evring.<pid>.<name>. A segment whose creator
 * is gone is stale: `ls` lists it as such and `ls --clean` removes it (only a
 * segment this user owns unless --all-users, and only once its creator is
 * seen dead). Before it lists, `ls` reclaims the oldest dead segments beyond
 * the EVRING_KEEP_DEAD bound (evr_segment_reclaim), as a producer does.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <evring/ring.h>

#include "cli.h"

struct seg_info {
	char shm[300];
	uint32_t pid;
	uid_t uid;	/* the file's owner */
	int open_rc;	/* 0, or why it could not be read */
	char err[256];
	char program[65];
	uint32_t lanes, lanes_in_use;
	uint64_t records, lost, skipped;
	uint32_t consumer_pid;	/* the first live consumer's, for scripts of one consumer */
	bool consumer_alive;
	bool stale;
	uint32_t nslots;
	struct evr_slot_info slots[EVR_CONSUMER_SLOTS_MAX]; /* pid 0: free */
};


/* Reads the counters of an open segment (everything through evr_ld_64: the producers write them). */
static void seg_read(struct seg_info *si, const struct evr_segment *seg)
{
	const struct evr_seg_header *h = seg->hdr;

	snprintf(si->program, sizeof(si->program), "%.*s", (int)strnlen(h->program, sizeof(h->program)),
		 h->program);
	si->lanes = seg->lane_count;
	for (uint32_t i = 0; i < seg->lane_count; i++) {
		const struct evr_lane *l = &seg->lanes[i];

		if (i + 1 < seg->lane_count && evr_ld_64(&l->owner) != 0)
			si->lanes_in_use++;
		si->records += evr_ld_64(&l->records);
		si->lost += evr_ld_64(&l->lost);
		si->skipped += evr_ld_64(&l->skipped);
	}
	si->nslots = seg->slots;
	for (uint32_t k = 0; k < seg->slots; k++) {
		evr_consumer_slot_info(seg, k, &si->slots[k]);
		if (!si->consumer_alive && si->slots[k].pid && si->slots[k].alive) {
			si->consumer_pid = si->slots[k].pid;
			si->consumer_alive = true;
		}
	}
	si->stale = !evr_segment_owner_alive(seg, (uint64_t)si->pid << 32);
}

/* One segment by its file name in /dev/shm; fills si (open_rc tells whether it could be read). */
static void seg_inspect(const char *file, uint32_t pid, struct seg_info *si)
{
	struct evr_segment seg;
	char path[320];
	struct stat st;

	memset(si, 0, sizeof(*si));
	snprintf(si->shm, sizeof(si->shm), "/%s", file);
	snprintf(path, sizeof(path), "/dev/shm/%s", file);
	si->uid = lstat(path, &st) == 0 ? st.st_uid : (uid_t)-1;
	si->pid = pid;
	si->open_rc = evr_segment_open(&seg, si->shm, si->err, sizeof(si->err));
	if (si->open_rc == 0) {
		seg_read(si, &seg);
		evr_segment_close(&seg);
	} else {
		/* Unreadable (another user's, being created, invalid): stale if its pid is gone. */
		si->stale = kill((pid_t)pid, 0) != 0 && errno == ESRCH;
	}
}

/* "evring.<pid>.<name>" -> pid and name; false for anything else. */
static bool parse_shm(const char *file, uint32_t *pid, const char **name)
{
	char *end;
	unsigned long p;

	if (strncmp(file, "evring.", 7) != 0)
		return false;
	p = strtoul(file + 7, &end, 10);
	if (end == file + 7 || *end != '.' || !end[1] || p == 0 || p > UINT32_MAX)
		return false;
	*pid = (uint32_t)p;
	*name = end + 1;
	return true;
}

/* Every segment matching pid (0: any) and name (NULL: any), sorted by pid. Returns the count or -errno. */
static int seg_list(uint32_t pid, const char *name, struct seg_info **out)
{
	DIR *d = opendir("/dev/shm");
	struct seg_info *v = NULL;
	struct dirent *e;
	int n = 0;

	if (!d)
		return -errno;
	while ((e = readdir(d)) != NULL) {
		uint32_t p;
		const char *nm;
		struct seg_info *t;

		if (!parse_shm(e->d_name, &p, &nm) || (pid && p != pid) || (name && strcmp(nm, name) != 0))
			continue;
		t = realloc(v, (size_t)(n + 1) * sizeof(*v));
		if (!t) {
			free(v);
			closedir(d);
			return -ENOMEM;
		}
		v = t;
		seg_inspect(e->d_name, p, &v[n++]);
	}
	closedir(d);
	for (int i = 1; i < n; i++) /* insertion sort by pid: a handful of segments */
		for (int j = i; j > 0 && v[j - 1].pid > v[j].pid; j--) {
			struct seg_info t = v[j];
			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	*out = v;
	return n;
}

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

static const char *state_of(const struct seg_info *si)
{
	if (si->stale)
		return "stale";
	switch (si->open_rc) {
	case 0:
		return "live";
	case -EACCES:
		return "other-user";
	case -EPROTO:
		return "other-abi";
	case -EAGAIN:
		return "creating";
	default:
		return "invalid";
	}
}

/* A consumer's state: live, stale (silent past the segment's bound: it holds no lane back) or dead. */
static const char *consumer_state(const struct evr_slot_info *c)
{
	return !c->alive ? "dead" : c->stale ? "stale" : "live";
}

static void json_consumers(FILE *f, const struct seg_info *si)
{
	bool first = true;

	fputs(",\"consumers\":[", f);
	for (uint32_t k = 0; k < si->nslots; k++) {
		const struct evr_slot_info *c = &si->slots[k];

		if (!c->pid)
			continue;
		fprintf(f, "%s{\"slot\":%u,\"pid\":%u,\"state\":\"%s\",\"heartbeat_age_ms\":%llu,\"pushed_past\":%llu}",
			first ? "" : ",", k, c->pid, consumer_state(c), (unsigned long long)(c->heartbeat_age_ns / 1000000),
			(unsigned long long)c->evicted);
		first = false;
	}
	fprintf(f, "],\"consumer_slots\":%u", si->nslots);
}

/* A line per held slot under the segment's line. */
static void text_consumers(FILE *f, const struct seg_info *si)
{
	for (uint32_t k = 0; k < si->nslots; k++) {
		const struct evr_slot_info *c = &si->slots[k];

		if (c->pid)
			fprintf(f, "  consumer slot %u: pid %u, %s, heartbeat %llu ms ago, %llu records pushed past\n", k,
				c->pid, consumer_state(c), (unsigned long long)(c->heartbeat_age_ns / 1000000),
				(unsigned long long)c->evicted);
	}
}

static void ls_usage(FILE *f)
{
	fprintf(f, "usage: evring ls [--json] [--clean [--all-users]]\n"
		   "  Lists the evring segments on this machine: pid, program, exclusive lanes in use,\n"
		   "  records written, records lost, its live consumers' pids, and the state\n"
		   "  (live; stale: its process is gone; other-user, other-abi, creating, invalid).\n"
		   "  Under each segment, a line per consumer slot held: pid, live / stale (silent\n"
		   "  past the segment's bound, 1 s by default: it holds no lane back) / dead, the\n"
		   "  age of its heartbeat, and the records writers pushed its head past.\n"
		   "  --json   one JSON array\n"
		   "  --clean  remove the stale segments this user owns\n"
		   "  --all-users  with --clean: also other users' stale segments (root may remove them)\n"
		   "  Before listing, the dead processes' segments beyond EVRING_KEEP_DEAD (default %u a name)\n"
		   "  and EVRING_KEEP_DEAD_BYTES (default %lluM) are removed, oldest first (this user's only).\n"
		   "examples:\n"
		   "  evring ls                the segments, a line each\n"
		   "  evring ls --json | jq .  the same for a script\n"
		   "  evring ls --clean        remove what killed processes left in /dev/shm\n",
		EVR_KEEP_DEAD_DEFAULT, (unsigned long long)(EVR_KEEP_DEAD_BYTES_DEFAULT >> 20));
}

int evr_cmd_ls(int argc, char **argv)
{
	static const struct option opts[] = { { "json", no_argument, NULL, 'j' },
					      { "clean", no_argument, NULL, 'c' },
					      { "all-users", no_argument, NULL, 'a' },
					      { "help", no_argument, NULL, 'h' },
					      { NULL, 0, NULL, 0 } };
	bool json = false, clean = false, all_users = false;
	struct evr_reclaim_policy reclaim;
	struct seg_info *v = NULL;
	char err[EVR_ERR_MAX];
	int n, ch, status = EVR_EXIT_OK;

	optind = 0; /* a full reset of getopt, as for a new program */
	while ((ch = evr_cli_getopt("ls", argc, argv, "", opts)) != -1) {
		if (ch == 'j')
			json = true;
		else if (ch == 'c')
			clean = true;
		else if (ch == 'a')
			all_users = true;
		else if (ch == 'h') {
			ls_usage(stdout);
			return EVR_EXIT_OK;
		} else {
			return EVR_EXIT_USAGE;
		}
	}
	if (optind < argc)
		return evr_cli_fail("ls", EVR_EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
	if (all_users && !clean)
		return evr_cli_fail("ls", EVR_EXIT_USAGE, "--all-users goes with --clean");
	if (evr_reclaim_policy_from_env(&reclaim, err, sizeof(err)) != 0)
		return evr_cli_fail("ls", EVR_EXIT_USAGE, "%s", err);
	evr_segment_reclaim(&reclaim, NULL);
	n = seg_list(0, NULL, &v);
	if (n < 0)
		return evr_cli_fail("ls", EVR_EXIT_FAIL, "cannot read /dev/shm: %s", strerror(-n));
	if (json)
		fputc('[', stdout);
	else
		printf("%-8s %-16s %-32s %7s %12s %10s %9s %s\n", "PID", "PROGRAM", "SEGMENT", "LANES", "RECORDS",
		       "LOST", "CONSUMERS", "STATE");
	for (int i = 0; i < n; i++) {
		struct seg_info *si = &v[i];
		bool removed = false;

		if (clean && si->stale && (all_users || (si->uid == geteuid() && si->open_rc != -EACCES))) {
			int rc = evr_segment_unlink(si->shm);
			if (rc == 0)
				removed = true;
			else
				status = evr_cli_fail("ls", EVR_EXIT_FAIL, "cannot remove %s: %s", si->shm,
						      strerror(-rc));
		}
		if (json) {
			printf("%s{\"pid\":%u,\"program\":", i ? "," : "", si->pid);
			json_str(stdout, si->program);
			printf(",\"segment\":");
			json_str(stdout, si->shm);
			printf(",\"lanes\":%u,\"lanes_in_use\":%u,\"records\":%llu,\"lost\":%llu,\"skipped\":%llu,"
			       "\"consumer_pid\":%u,\"consumer_alive\":%s,\"state\":\"%s\",\"removed\":%s",
			       si->lanes ? si->lanes - 1 : 0, si->lanes_in_use, (unsigned long long)si->records,
			       (unsigned long long)si->lost, (unsigned long long)si->skipped, si->consumer_pid,
			       si->consumer_alive ? "true" : "false", state_of(si), removed ? "true" : "false");
			if (si->open_rc) {
				printf(",\"error\":");
				json_str(stdout, si->err);
			} else {
				json_consumers(stdout, si);
			}
			fputc('}', stdout);
		} else {
			char lanes[32], cons[32];

			snprintf(lanes, sizeof(lanes), "%u/%u", si->lanes_in_use, si->lanes ? si->lanes - 1 : 0);
			uint32_t live = 0;

			for (uint32_t k = 0; k < si->nslots; k++)
				live += si->slots[k].pid && si->slots[k].alive && !si->slots[k].stale;
			if (live)
				snprintf(cons, sizeof(cons), "%u/%u", live, si->nslots);
			else
				snprintf(cons, sizeof(cons), "-");
			printf("%-8u %-16s %-32s %7s %12llu %10llu %9s %s%s\n", si->pid,
			       si->program[0] ? si->program : "?", si->shm, lanes, (unsigned long long)si->records,
			       (unsigned long long)si->lost, cons, state_of(si), removed ? " (removed)" : "");
			text_consumers(stdout, si);
		}
	}
	if (json)
		fputs("]\n", stdout);
	free(v);
	if (fflush(stdout) != 0)
		return evr_cli_fail("ls", EVR_EXIT_FAIL, "cannot write output: %s", strerror(errno));
	return status;
}

/* ---- stats ---------------------------------------------------------------------------- */

static void stats_usage(FILE *f)
{
	fprintf(f, "usage: evring stats PID|NAME [--json]\n"
		   "  Prints the counters of the process's segments, read-only: it takes no consumer\n"
		   "  slot, so it works while consumers are attached: the header's counters\n"
		   "  (lane claims and fallbacks to the shared lane, records refused as oversize or\n"
		   "  reentrant, metadata refused, lanes reclaimed, records skipped) and per lane its\n"
		   "  owner, records, lost, pending loss, unread bytes (behind the slowest live\n"
		   "  consumer) and skipped; then a line per consumer slot held.\n"
		   "  NAME: a segment name (/evring.PID.NAME or PID.NAME) or a program name.\n"
		   "  --json   one JSON array, an object per segment\n"
		   "examples:\n"
		   "  evring stats 1234           the counters of process 1234\n"
		   "  evring stats my-server --json\n"
		   "                              every my-server process's, for a script\n");
}

/* The segments a target names; exits with a status when there are none. */
static int resolve(const char *cmd, const char *target, struct seg_info **v, int *n)
{
	uint64_t pid = 0;
	uint32_t p;
	const char *name = target;

	if (evr_cli_uint(target, UINT32_MAX, &pid)) {
		if (pid == 0)
			return evr_cli_fail(cmd, EVR_EXIT_NO_PROCESS, "no such process: 0");
		name = NULL;
	} else if (parse_shm(target[0] == '/' ? target + 1 : target, &p, &name)) {
		pid = p;
	} else {
		char buf[200];
		snprintf(buf, sizeof(buf), "evring.%s", target);
		if (parse_shm(buf, &p, &name)) {
			pid = p;
			name = target + (name - buf) - 7;
		}
	}
	*n = seg_list((uint32_t)pid, name, v);
	if (*n < 0)
		return evr_cli_fail(cmd, EVR_EXIT_FAIL, "cannot read /dev/shm: %s", strerror(-*n));
	if (*n > 0)
		return EVR_EXIT_OK;
	free(*v);
	if (pid && kill((pid_t)pid, 0) != 0 && errno == ESRCH)
		return evr_cli_fail(cmd, EVR_EXIT_NO_PROCESS, "no such process: %llu", (unsigned long long)pid);
	if (pid)
		return evr_cli_fail(cmd, EVR_EXIT_NO_SEGMENT, "process %llu has no evring segment in /dev/shm",
				    (unsigned long long)pid);
	return evr_cli_fail(cmd, EVR_EXIT_NO_SEGMENT, "no evring segment named %s in /dev/shm", target);
}

static void print_stats(const struct evr_segment *seg, const struct seg_info *si, bool json, bool first)
{
	const struct evr_seg_header *h = seg->hdr;
	uint64_t age = 0;

	for (uint32_t k = 0; k < si->nslots; k++)
		if (si->slots[k].pid && si->slots[k].pid == si->consumer_pid)
			age = si->slots[k].heartbeat_age_ns / 1000000;
	const struct {
		const char *name;
		uint64_t v;
	} c[] = {
		{ "records", si->records },
		{ "lost", si->lost },
		{ "skipped", si->skipped },
		{ "lanes", si->lanes ? si->lanes - 1 : 0 },
		{ "lanes_in_use", si->lanes_in_use },
		{ "lane_bytes", seg->lane_bytes },
		{ "lane_claims", evr_ld_64(&h->lane_claims) },
		{ "lane_fallbacks", evr_ld_64(&h->lane_fallbacks) },
		{ "lanes_reclaimed", evr_ld_64(&h->lanes_reclaimed) },
		{ "records_skipped", evr_ld_64(&h->records_skipped) },
		{ "writer_oversize", evr_ld_64(&h->writer_oversize) },
		{ "writer_reentrant", evr_ld_64(&h->writer_reentrant) },
		{ "meta_used", evr_ld_64(&h->meta_used) },
		{ "meta_bytes", seg->meta_bytes },
		{ "meta_dropped", evr_ld_64(&h->meta_dropped) },
		{ "consumer_pid", si->consumer_alive ? si->consumer_pid : 0 },
		{ "consumer_epoch", evr_ld_64(&h->consumer_epoch) },
		{ "consumer_heartbeat_age_ms", age },
		{ "consumer_slots", si->nslots },
	};
	size_t nc = sizeof(c) / sizeof(c[0]);

	if (json) {
		printf("%s{\"pid\":%u,\"program\":", first ? "" : ",", si->pid);
		json_str(stdout, si->program);
		printf(",\"segment\":");
		json_str(stdout, si->shm);
		printf(",\"state\":\"%s\"", state_of(si));
		for (size_t i = 0; i < nc; i++)
			printf(",\"%s\":%llu", c[i].name, (unsigned long long)c[i].v);
		json_consumers(stdout, si);
		printf(",\"lanes_detail\":[");
	} else {
		printf("%s %s (pid %u, %s)\n", si->shm, si->program, si->pid, state_of(si));
		for (size_t i = 0; i < nc; i++)
			printf("  %-26s %llu\n", c[i].name, (unsigned long long)c[i].v);
		text_consumers(stdout, si);
		printf("  %-6s %-8s %-10s %12s %10s %10s %12s %10s\n", "LANE", "KIND", "OWNER_TID", "RECORDS", "LOST",
		       "PENDING", "UNREAD_B", "SKIPPED");
	}
	for (uint32_t i = 0, k = 0; i < seg->lane_count; i++) {
		const struct evr_lane *l = &seg->lanes[i];
		uint64_t owner = evr_ld_64(&l->owner), rec = evr_ld_64(&l->records), tail = evr_ld_64(&l->tail);
		uint64_t head = tail, unread;

		/* Unread: behind the tail by the slowest live consumer's head (none: nothing is waiting). */
		for (uint32_t s = 0; s < seg->slots; s++) {
			uint64_t hk = evr_segment_head(seg, s, i);
			if (si->slots[s].pid && si->slots[s].alive && !si->slots[s].stale && tail - hk <= seg->lane_bytes &&
			    tail - hk > tail - head)
				head = hk;
		}
		unread = tail - head;
		bool shared = i + 1 == seg->lane_count;

		if (!owner && !rec && !shared)
			continue; /* never used */
		if (json)
			printf("%s{\"lane\":%u,\"kind\":\"%s\",\"owner_tid\":%u,\"records\":%llu,\"lost\":%llu,"
			       "\"lost_pending\":%llu,\"unread_bytes\":%llu,\"skipped\":%llu}",
			       k++ ? "," : "", i, shared ? "shared" : "exclusive", (uint32_t)owner,
			       (unsigned long long)rec, (unsigned long long)evr_ld_64(&l->lost),
			       (unsigned long long)evr_ld_64(&l->lost_pending), (unsigned long long)unread,
			       (unsigned long long)evr_ld_64(&l->skipped));
		else
			printf("  %-6u %-8s %-10u %12llu %10llu %10llu %12llu %10llu\n", i,
			       shared ? "shared" : "excl", (uint32_t)owner, (unsigned long long)rec,
			       (unsigned long long)evr_ld_64(&l->lost), (unsigned long long)evr_ld_64(&l->lost_pending),
			       (unsigned long long)unread, (unsigned long long)evr_ld_64(&l->skipped));
	}
	if (json)
		printf("]}");
}

int evr_cmd_stats(int argc, char **argv)
{
	static const struct option opts[] = { { "json", no_argument, NULL, 'j' },
					      { "help", no_argument, NULL, 'h' },
					      { NULL, 0, NULL, 0 } };
	struct seg_info *v = NULL;
	bool json = false;
	int n = 0, ch, status, shown = 0;

	optind = 0; /* a full reset of getopt, as for a new program */
	while ((ch = evr_cli_getopt("stats", argc, argv, "", opts)) != -1) {
		if (ch == 'j')
			json = true;
		else if (ch == 'h') {
			stats_usage(stdout);
			return EVR_EXIT_OK;
		} else {
			return EVR_EXIT_USAGE;
		}
	}
	if (optind + 1 != argc)
		return evr_cli_fail("stats", EVR_EXIT_USAGE, "wants one PID or NAME (try evring stats --help)");
	status = resolve("stats", argv[optind], &v, &n);
	if (status)
		return status;
	if (json)
		fputc('[', stdout);
	for (int i = 0; i < n; i++) {
		struct evr_segment seg;
		char err[256];
		int rc = evr_segment_open(&seg, v[i].shm, err, sizeof(err));

		if (rc) {
			status = evr_cli_fail("stats", evr_cli_exit_of(rc), "%s", err);
			continue;
		}
		print_stats(&seg, &v[i], json, shown++ == 0);
		evr_segment_close(&seg);
	}
	if (json)
		fputs("]\n", stdout);
	free(v);
	if (fflush(stdout) != 0)
		return evr_cli_fail("stats", EVR_EXIT_FAIL, "cannot write output: %s", strerror(errno));
	return status;
}
