/*
 * plugin_wire.h: the protocol between an isolated plug-in's wrapper in the
 * consumer (plugin_isolate.c) and the process that runs the plug-in
 * (plugin_host.c, the evring-plugin-host program), over a SOCK_STREAM
 * socketpair.
 *
 * Every message is a frame: a 32-bit little-endian length, then that many
 * bytes of one msgpack value. The consumer sends one call at a time and
 * waits for its reply, so the item a process died on is always known:
 *
 *   host -> consumer, once at start:
 *     [0, name, callbacks (bit enum evr_cb up to EVR_CB_LOST, bit 5: on_close/on_end, bit 6: on_skipped),
 *      dispatcher | nil, [ignore_begin...], [ignore_end...], queue_len]
 *     [-errno, message]                   the plug-in could not be loaded
 *   consumer -> host, a call:
 *     [cb, object]                        cb: enum evr_cb up to EVR_CB_LOST; object as below
 *     [6, skipped]                        on_skipped: a gap in the handler's stream
 *     [5]                                 the stream ended: on_end or on_close
 *   host -> consumer, its reply:
 *     [rc]                                the callback's return
 *
 * Objects carry what the callbacks receive, by value (msgpack arrays):
 *
 *   source  [index, pid, program, cmdline, shm, dead]
 *   site    nil | [id, kind, line, name, dispatcher, file, func, [[field name, type, content]...]]
 *   fields  [[name, content, value type, truncated, value]...]
 *   event   [source, site, ts_ns, mono_ns, span_id, trace_id, tid, late, fields]
 *   span    [source, site, span_id, parent_id, trace_id, start_ns, end_ns, start_mono_ns,
 *            end_mono_ns, tid, status, flags, events, begin fields, end fields]
 *   trace   [source, trace_id, root, start_ns, end_ns, incomplete, [span...], [parent...],
 *            [first_child...], [next_sibling...]]
 *   lost    [source, tid, lane, count, ts_ns, first_ns]
 *   skipped [handler | nil, count, events, span_begins, span_ends, traces, stalled, first_ns, last_ns]
 *
 * on_skipped is 6, not enum evr_cb's EVR_CB_SKIPPED: that is 5, which the
 * close took on the wire before gaps were forwarded.
 *
 * The host keeps one evr_source per source index, one evr_site_info per
 * (source, site id) and one copy of each handler name a gap carries, so a
 * plug-in that keys on those pointers (or keeps a gap) sees them stable, as
 * in the consumer. Both sides are evring built together: the protocol has no
 * version of its own (the wrapper runs the host installed beside it).
 */
#ifndef EVR_CONSUMER_PLUGIN_WIRE_H
#define EVR_CONSUMER_PLUGIN_WIRE_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define EVR_WIRE_CLOSE 5	      /* the call after EVR_CB_LOST: the stream ended */
#define EVR_WIRE_SKIPPED 6	      /* on_skipped (EVR_CB_SKIPPED's 5 is the close's here) */
#define EVR_WIRE_FRAME_MAX (64u << 20) /* a frame past this is refused (a trace of many spans fits) */
#define EVR_WIRE_HOST_FD 3	      /* the host's end of the socketpair */

/* Writes all of buf; 0 or -errno (-EPIPE: the other side is gone; never raises SIGPIPE). */
static inline int evr__wire_send(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == ECONNRESET ? -EPIPE : -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads exactly len bytes; 0, -EPIPE at end of stream, or -errno. */
static inline int evr__wire_recv(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == ECONNRESET ? -EPIPE : -errno;
		if (n == 0)
			return -EPIPE;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The 4-byte little-endian length that opens a frame. */
static inline void evr__wire_put_len(unsigned char *p, uint32_t n)
{
	p[0] = (unsigned char)n;
	p[1] = (unsigned char)(n >> 8);
	p[2] = (unsigned char)(n >> 16);
	p[3] = (unsigned char)(n >> 24);
}

static inline uint32_t evr__wire_get_len(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#endif /* EVR_CONSUMER_PLUGIN_WIRE_H */
