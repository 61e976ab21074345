/*
 * sampler.c: runs and system metrics of the followed processes (sampler.h).
 *
 * Per source it keeps the run (its id and the params read at join) and the
 * counters of the last sample. CPU is the utime/stime ticks gained over the
 * monotonic time between two samples, as a percent of one CPU; context
 * switches and io bytes are what was gained over the interval; RSS, threads
 * and open fds are the values at the sample. The first interval's deltas are
 * against a baseline taken at join, so every sample covers one interval.
 *
 * Samples are due every interval from the join (next_due advances by the
 * interval, not from when the poll came, so late polls do not drift the
 * series; a poll late by more than an interval starts the series again
 * from now rather than sampling twice at once).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <evring/clock.h>

#include "objects.h"
#include "procinfo.h"
#include "sampler.h"

#ifndef EVR_VERSION
#define EVR_VERSION "unknown"
#endif

#define DEFAULT_INTERVAL_NS 1000000000ull

struct smp_src {
	struct evr_src *s;
	uint32_t index;
	bool run_sent;	       /* its first run item went out (evr__sampler_run_due) */
	uint32_t app_gen_sent; /* s->app_gen when the last run item was made */
	uint64_t params_bad_seen;
	char run_id[33];
	uint64_t start_ns;
	struct evr_param *base; /* the params read at join (owned strings) */
	uint32_t nbase, capbase;
	uint32_t env_left_out; /* allowed variables left out: too long */
	struct evr_proc_counters prev;
	uint64_t prev_mono, next_due;
};

struct evr_sampler {
	struct evr_merge *m;
	struct evr_rec_pool *recs;
	struct evr_consumer_stats *st;
	uint64_t interval_ns; /* EVR_METRICS_OFF: none */
	const char *experiment;
	const char *const *env_allow;
	long ticks_per_s;
	bool host_done;
	struct smp_src *v;
	uint32_t n, cap;
};

struct evr_sampler *evr__sampler_new(const struct evr_consumer_opts *o, struct evr_merge *m,
				     struct evr_rec_pool *recs, struct evr_consumer_stats *st)
{
	struct evr_sampler *sm = calloc(1, sizeof(*sm));

	if (!sm)
		return NULL;
	sm->m = m;
	sm->recs = recs;
	sm->st = st;
	sm->interval_ns = o && o->metrics_interval_ns ? o->metrics_interval_ns : DEFAULT_INTERVAL_NS;
	sm->experiment = o && o->experiment && *o->experiment ? o->experiment : "default";
	sm->env_allow = o ? o->env_allow : NULL;
	sm->ticks_per_s = sysconf(_SC_CLK_TCK);
	if (sm->ticks_per_s <= 0)
		sm->ticks_per_s = 100;
	return sm;
}

static void smp_src_fini(struct smp_src *x)
{
	for (uint32_t i = 0; i < x->nbase; i++) {
		free((char *)x->base[i].key);
		free((char *)x->base[i].value);
	}
	free(x->base);
}

void evr__sampler_free(struct evr_sampler *sm)
{
	if (!sm)
		return;
	for (uint32_t i = 0; i < sm->n; i++)
		smp_src_fini(&sm->v[i]);
	free(sm->v);
	free(sm);
}

/* ---- items into the stream --------------------------------------------------------------------- */

static struct evr_rec *item_rec(struct evr_sampler *sm, struct evr_src *s, const void *item, uint64_t mono,
				uint64_t real)
{
	struct evr_rec *r = evr__rec_alloc(sm->recs);

	if (!r) {
		evr_obj_unref(item);
		return NULL;
	}
	memset(r, 0, sizeof(*r));
	r->type = EVR_REC_SAMPLE;
	r->src = s;
	r->lane = EVR_SAMPLER_LANE;
	r->mono_ns = mono;
	r->real_ns = real;
	r->item = item;
	return r;
}

/* Queues an item on the merge, in the queue of its source's samples (or the host's). */
static void queue_item(struct evr_sampler *sm, struct evr_src *s, const void *item, uint64_t mono, uint64_t real)
{
	struct evr_rec *r = item_rec(sm, s, item, mono, real);
	uint32_t src = s ? s->pub.index : EVR_SAMPLER_HOST, lane = s ? EVR_SAMPLER_LANE : 0;

	if (r && evr__merge_push(sm->m, src, lane, r) != 0)
		evr__rec_free(sm->recs, r);
}

static void metric(struct evr_sampler *sm, struct evr_src *s, uint64_t mono, uint64_t real, const char *name,
		   const char *unit, double value)
{
	struct evr_metric *m = evr__metric_new(s ? &s->pub : NULL, real, mono, name, unit, value);

	if (!m)
		return;
	sm->st->metrics++;
	queue_item(sm, s, m, mono, real);
}

/* ---- runs -------------------------------------------------------------------------------------- */

static int param_add(struct smp_src *x, const char *key, const char *value)
{
	char *k, *v;

	if (x->nbase == x->capbase) {
		uint32_t cap = x->capbase ? 2 * x->capbase : 16;
		struct evr_param *t = realloc(x->base, cap * sizeof(*t));

		if (!t)
			return -ENOMEM;
		x->base = t;
		x->capbase = cap;
	}
	k = strdup(key);
	v = strdup(value);
	if (!k || !v) {
		free(k);
		free(v);
		return -ENOMEM;
	}
	x->base[x->nbase++] = (struct evr_param){ k, v };
	return 0;
}

/* A run param's value at most (evr_run_param's EVR_PARAM_VALUE_MAX): a capture's replay holds runs to it. */
#define ENV_VALUE_MAX 4096

/* An environment variable --env-allow lets through, as env.NAME; a longer value or name is left out, counted. */
static void env_param(void *arg, const char *name, const char *value)
{
	struct smp_src *x = arg;
	char key[256];

	if (strlen(value) > ENV_VALUE_MAX || snprintf(key, sizeof(key), "env.%s", name) >= (int)sizeof(key)) {
		x->env_left_out++;
		return;
	}
	param_add(x, key, value);
}

/* The params of a process read once, at join: what it is, where, built from what. */
static void read_params(struct evr_sampler *sm, struct smp_src *x)
{
	uint32_t pid = x->s->pub.pid;
	char buf[PATH_MAX + 1], hex[160], path[64];
	struct utsname un;
	int fd;

	param_add(x, "program", x->s->program[0] ? x->s->program : "");
	if (evr__proc_cmdline(pid, buf, sizeof(buf)) >= 0)
		param_add(x, "cmdline", buf);
	else
		param_add(x, "cmdline", x->s->cmdline);
	if (evr__proc_exe(pid, buf, sizeof(buf)) > 0)
		param_add(x, "exe", buf);
	else
		sm->st->metrics_unreadable++;
	snprintf(path, sizeof(path), "/proc/%u/exe", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (evr__elf_build_id(fd, hex, sizeof(hex)) > 0)
			param_add(x, "build_id", hex);
		close(fd);
	}
	if (uname(&un) == 0) {
		param_add(x, "host", un.nodename);
		param_add(x, "kernel", un.release);
	}
	param_add(x, "evring.version", EVR_VERSION);
	snprintf(path, sizeof(path), "/proc/%u/cwd", pid);
	{
		ssize_t n = readlink(path, buf, sizeof(buf) - 1);

		if (n > 0) {
			buf[n] = 0;
			if (evr__git_commit(buf, hex, sizeof(hex)) > 0)
				param_add(x, "git.commit", hex);
		}
	}
	if (evr__proc_env(pid, sm->env_allow, env_param, x) < 0)
		sm->st->metrics_unreadable++;
	sm->st->metrics_unreadable += x->env_left_out;
}

/* A run item with the params read at join and the producer's app params now. */
static struct evr_run_info *run_item(struct evr_sampler *sm, struct smp_src *x)
{
	struct evr_src *s = x->s;
	uint32_t n = x->nbase + s->app_n;
	struct evr_param *all = malloc((n ? n : 1) * sizeof(*all));
	struct evr_run_info *run;

	if (!all)
		return NULL;
	if (x->nbase) /* memcpy's pointers must be valid even for no bytes */
		memcpy(all, x->base, x->nbase * sizeof(*all));
	if (s->app_n)
		memcpy(all + x->nbase, s->app, s->app_n * sizeof(*all));
	run = evr__run_new(&s->pub, x->run_id, sm->experiment, x->start_ns, all, n);
	free(all);
	if (run) {
		x->app_gen_sent = s->app_gen;
		sm->st->runs++;
	}
	return run;
}

static void host_samples(struct evr_sampler *sm, uint64_t mono, uint64_t real)
{
	struct evr_host_info h;

	sm->host_done = true;
	if (evr__host_info(&h) != 0) {
		sm->st->metrics_unreadable++;
		return;
	}
	evr__merge_idle(sm->m, EVR_SAMPLER_HOST, 0, UINT64_MAX); /* its queue bounds nothing while empty */
	metric(sm, NULL, mono, real, "host.cpus", "1", (double)h.cpus);
	metric(sm, NULL, mono, real, "host.memory.total", "By", (double)h.mem_total);
	metric(sm, NULL, mono, real, "host.memory.available", "By", (double)h.mem_available);
	metric(sm, NULL, mono, real, "host.load.1m", "1", h.load[0]);
	metric(sm, NULL, mono, real, "host.load.5m", "1", h.load[1]);
	metric(sm, NULL, mono, real, "host.load.15m", "1", h.load[2]);
}

int evr__sampler_join(struct evr_sampler *sm, struct evr_src *s, uint64_t now_mono)
{
	uint64_t real = evr_clock_realtime_ns();
	unsigned char rnd[16];
	struct smp_src *x;

	if (sm->n == sm->cap) {
		uint32_t cap = sm->cap ? 2 * sm->cap : 8;
		struct smp_src *t = realloc(sm->v, cap * sizeof(*t));

		if (!t)
			return -ENOMEM;
		sm->v = t;
		sm->cap = cap;
	}
	x = &sm->v[sm->n++];
	memset(x, 0, sizeof(*x));
	x->s = s;
	x->index = s->pub.index;
	x->start_ns = real;
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
		/* No entropy source: the time and the pid, still unique on this host. */
		uint64_t a = real, b = (uint64_t)s->pub.pid << 32 | s->pub.index;

		memcpy(rnd, &a, 8);
		memcpy(rnd + 8, &b, 8);
	}
	for (int i = 0; i < 16; i++)
		snprintf(x->run_id + 2 * i, 3, "%02x", rnd[i]);
	read_params(sm, x);
	evr__merge_idle(sm->m, s->pub.index, EVR_SAMPLER_LANE, UINT64_MAX); /* bounds nothing while empty */
	if (sm->interval_ns != EVR_METRICS_OFF) {
		evr__proc_counters(s->pub.pid, &x->prev); /* the baseline: what it misses, the first sample counts */
		x->prev_mono = now_mono;
		x->next_due = now_mono + sm->interval_ns;
	}
	x->params_bad_seen = s->params_bad;
	sm->st->run_params_bad += s->params_bad;
	return 0;
}

struct evr_rec *evr__sampler_run_due(struct evr_sampler *sm)
{
	for (uint32_t i = 0; i < sm->n; i++) {
		struct smp_src *x = &sm->v[i];
		struct evr_run_info *run;

		if (x->run_sent)
			continue;
		x->run_sent = true;
		run = run_item(sm, x);
		if (run)
			return item_rec(sm, x->s, run, evr_clock_monotonic_ns(), x->start_ns);
	}
	return NULL;
}

struct evr_rec *evr__sampler_run_rec(struct evr_sampler *sm, const struct evr_src *s)
{
	for (uint32_t i = 0; i < sm->n; i++) {
		struct smp_src *x = &sm->v[i];

		if (x->s == s && x->index == s->pub.index && x->run_sent) {
			struct evr_run_info *run = run_item(sm, x);

			return run ? item_rec(sm, x->s, run, evr_clock_monotonic_ns(), x->start_ns) : NULL;
		}
	}
	return NULL;
}

static const struct {
	const char *name, *unit;
} names[] = {
	{ "process.cpu.user", "%" },
	{ "process.cpu.system", "%" },
	{ "process.memory.rss", "By" },
	{ "process.threads", "1" },
	{ "process.open_fds", "1" },
	{ "process.context_switches.voluntary", "1" },
	{ "process.context_switches.involuntary", "1" },
	{ "process.io.read_bytes", "By" },
	{ "process.io.write_bytes", "By" },
	{ "host.cpus", "1" },
	{ "host.memory.total", "By" },
	{ "host.memory.available", "By" },
	{ "host.load.1m", "1" },
	{ "host.load.5m", "1" },
	{ "host.load.15m", "1" },
};

const char *evr__metric_name(const char *name, size_t len, const char **unit)
{
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strlen(names[i].name) == len && !memcmp(names[i].name, name, len)) {
			*unit = names[i].unit;
			return names[i].name;
		}
	return NULL;
}

/* ---- samples ----------------------------------------------------------------------------------- */

static uint64_t delta(uint64_t now, uint64_t before)
{
	return now >= before ? now - before : 0; /* a counter never goes back; a reused pid's might */
}

static void sample(struct evr_sampler *sm, struct smp_src *x, uint64_t mono)
{
	struct evr_proc_counters c;
	struct evr_src *s = x->s;
	/* UTC as the source's records get it: the monotonic time through its clock mapping's offset. */
	uint64_t real = s->clock.real_minus_mono_ns ? mono + (uint64_t)s->clock.real_minus_mono_ns : evr_clock_realtime_ns();
	double secs = (double)(mono - x->prev_mono) / 1e9;

	sm->st->metrics_unreadable += (uint64_t)evr__proc_counters(s->pub.pid, &c);
	if (c.have_stat && x->prev.have_stat && secs > 0) {
		double tick = 1.0 / (double)sm->ticks_per_s;

		metric(sm, s, mono, real, "process.cpu.user", "%",
		       100.0 * (double)delta(c.utime_ticks, x->prev.utime_ticks) * tick / secs);
		metric(sm, s, mono, real, "process.cpu.system", "%",
		       100.0 * (double)delta(c.stime_ticks, x->prev.stime_ticks) * tick / secs);
	}
	if (c.have_status) {
		metric(sm, s, mono, real, "process.memory.rss", "By", (double)c.rss_bytes);
		metric(sm, s, mono, real, "process.threads", "1", (double)c.threads);
		if (x->prev.have_status) {
			metric(sm, s, mono, real, "process.context_switches.voluntary", "1",
			       (double)delta(c.ctx_vol, x->prev.ctx_vol));
			metric(sm, s, mono, real, "process.context_switches.involuntary", "1",
			       (double)delta(c.ctx_invol, x->prev.ctx_invol));
		}
	}
	if (c.have_fds)
		metric(sm, s, mono, real, "process.open_fds", "1", (double)c.fds);
	if (c.have_io && x->prev.have_io) {
		metric(sm, s, mono, real, "process.io.read_bytes", "By", (double)delta(c.read_bytes, x->prev.read_bytes));
		metric(sm, s, mono, real, "process.io.write_bytes", "By",
		       (double)delta(c.write_bytes, x->prev.write_bytes));
	}
	x->prev = c;
	x->prev_mono = mono;
}

void evr__sampler_poll(struct evr_sampler *sm, struct evr_src *const *srcs, uint32_t n, uint64_t now_mono)
{
	uint32_t k = 0;

	/* Forget sources let go (srcs keeps attach order, as v does). */
	for (uint32_t i = 0; i < sm->n; i++) {
		bool listed = false;

		for (uint32_t j = 0; j < n && !listed; j++)
			listed = srcs[j] == sm->v[i].s && srcs[j]->pub.index == sm->v[i].index;
		if (listed)
			sm->v[k++] = sm->v[i];
		else
			smp_src_fini(&sm->v[i]);
	}
	sm->n = k;
	if (sm->n && !sm->host_done && sm->interval_ns != EVR_METRICS_OFF)
		host_samples(sm, now_mono, evr_clock_realtime_ns());
	for (uint32_t i = 0; i < sm->n; i++) {
		struct smp_src *x = &sm->v[i];
		struct evr_src *s = x->s;

		if (s->params_bad != x->params_bad_seen) {
			sm->st->run_params_bad += s->params_bad - x->params_bad_seen;
			x->params_bad_seen = s->params_bad;
		}
		if (s->end_sent)
			continue;
		/* Params the producer set just before it exited are read by the drain's last pass: still its run's. */
		if (s->app_gen != x->app_gen_sent) {
			struct evr_run_info *run = run_item(sm, x);

			if (run)
				queue_item(sm, s, run, now_mono, evr_clock_realtime_ns());
		}
		if (s->dead_ns || s->pub.dead || s->detached || s->faulted || sm->interval_ns == EVR_METRICS_OFF ||
		    now_mono < x->next_due)
			continue;
		sample(sm, x, now_mono);
		x->next_due += sm->interval_ns;
		if (x->next_due <= now_mono)
			x->next_due = now_mono + sm->interval_ns;
	}
}

