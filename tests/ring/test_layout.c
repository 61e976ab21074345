/*
 * test_layout.c: the segment's byte layout is an ABI: pinned offsets, the
 * geometry a creator lays out, names, and the checks on a configuration.
 */
#include <errno.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "ring_test.h"

Test(layout, header_offsets_are_pinned)
{
	cr_assert_eq(sizeof(struct evr_seg_header), 4096);
	cr_assert_eq(offsetof(struct evr_seg_header, magic), 0);
	cr_assert_eq(offsetof(struct evr_seg_header, abi_major), 8);
	cr_assert_eq(offsetof(struct evr_seg_header, abi_minor), 10);
	cr_assert_eq(offsetof(struct evr_seg_header, header_bytes), 12);
	cr_assert_eq(offsetof(struct evr_seg_header, segment_bytes), 16);
	cr_assert_eq(offsetof(struct evr_seg_header, creator_pid), 24);
	cr_assert_eq(offsetof(struct evr_seg_header, creator_uid), 28);
	cr_assert_eq(offsetof(struct evr_seg_header, start_real_ns), 32);
	cr_assert_eq(offsetof(struct evr_seg_header, clock_kind), 40);
	cr_assert_eq(offsetof(struct evr_seg_header, tag_salt), 44);
	cr_assert_eq(offsetof(struct evr_seg_header, clock_anchor_ticks), 48);
	cr_assert_eq(offsetof(struct evr_seg_header, clock_mult), 72);
	cr_assert_eq(offsetof(struct evr_seg_header, lane_count), 80);
	cr_assert_eq(offsetof(struct evr_seg_header, lane_bytes), 88);
	cr_assert_eq(offsetof(struct evr_seg_header, lane_table_offset), 96);
	cr_assert_eq(offsetof(struct evr_seg_header, meta_offset), 104);
	cr_assert_eq(offsetof(struct evr_seg_header, lanes_offset), 120);
	cr_assert_eq(offsetof(struct evr_seg_header, program), 128);
	/* Producer counters and the consumer slot sit on cache lines of their own. */
	cr_assert_eq(offsetof(struct evr_seg_header, meta_used), 192);
	cr_assert_eq(offsetof(struct evr_seg_header, exited_real_ns), 248);
	cr_assert_eq(offsetof(struct evr_seg_header, consumer_pid), 256);
	cr_assert_eq(offsetof(struct evr_seg_header, consumer_heartbeat_ns), 272);
	cr_assert_eq(offsetof(struct evr_seg_header, records_skipped), 288);
	/* ABI 2.0: appended, the slot table on lines of its own. */
	cr_assert_eq(offsetof(struct evr_seg_header, consumer_slots), 312);
	cr_assert_eq(offsetof(struct evr_seg_header, abi_minor_required), 316);
	cr_assert_eq(offsetof(struct evr_seg_header, stale_ns), 320);
	cr_assert_eq(offsetof(struct evr_seg_header, stale_ticks), 328);
	cr_assert_eq(offsetof(struct evr_seg_header, slot_lanes_offset), 336);
	cr_assert_eq(offsetof(struct evr_seg_header, slots), 384);
	cr_assert_eq(sizeof(struct evr_consumer_slot), 64);
	cr_assert_eq(offsetof(struct evr_consumer_slot, heartbeat_ticks), 24);
	cr_assert_eq(sizeof(struct evr_slot_lane), 64);
	cr_assert_eq(offsetof(struct evr_slot_lane, evicted), 16);
}

Test(layout, slot_lanes_are_lines_of_their_own)
{
	struct evr_segment seg;

	test_segment(&seg, "layout-slots", 5, EVR_LANE_BYTES_MIN);
	cr_assert_eq(seg.slots, EVR_CONSUMER_SLOTS);
	cr_assert_geq(seg.slots, 4u);
	cr_assert_eq(seg.hdr->abi_major, 2);
	cr_assert_eq(seg.hdr->stale_ns, EVR_STALE_NS_DEFAULT);
	cr_assert_gt(seg.hdr->stale_ticks, 0);
	/* After the lane table, before the metadata, each line 64-aligned and apart from the others. */
	cr_assert_geq(seg.hdr->slot_lanes_offset, EVR_HEADER_BYTES + 5u * EVR_LANE_ENTRY_BYTES);
	cr_assert_leq(seg.hdr->slot_lanes_offset + (uint64_t)seg.slots * 5 * 64, seg.hdr->meta_offset);
	cr_assert_eq(((uintptr_t)evr_segment_slot_lane(&seg, 0, 0)) % 64, 0);
	cr_assert_eq((uint8_t *)evr_segment_slot_lane(&seg, 1, 0) - (uint8_t *)evr_segment_slot_lane(&seg, 0, 4), 64);
	test_segment_destroy(&seg);
}

Test(layout, lane_entry_keeps_the_two_sides_on_separate_lines)
{
	cr_assert_eq(sizeof(struct evr_lane), 128);
	cr_assert_eq(offsetof(struct evr_lane, owner), 0);
	cr_assert_eq(offsetof(struct evr_lane, tail), 8);
	cr_assert_eq(offsetof(struct evr_lane, records), 16);
	cr_assert_eq(offsetof(struct evr_lane, lost), 24);
	cr_assert_eq(offsetof(struct evr_lane, lost_pending), 32);
	cr_assert_eq(offsetof(struct evr_lane, claims), 56);
	cr_assert_eq(offsetof(struct evr_lane, kind), 60);
	cr_assert(offsetof(struct evr_lane, kind) + sizeof(uint32_t) <= 64, "producer fields fit the first line");
	cr_assert_eq(offsetof(struct evr_lane, head), 64);
	cr_assert_eq(offsetof(struct evr_lane, skipped), 72);
	cr_assert_eq(sizeof(struct evr_meta_entry), 16);
}

Test(layout, commit_word_round_trips)
{
	uint64_t w = evr_rec_word(123456, 0xdeadbeef, 4096, EVR_REC_SPAN_END);

	cr_assert_eq(evr_word_tag(w), evr_rec_tag(123456, 0xdeadbeef));
	cr_assert_eq(evr_word_bytes(w), 4096);
	cr_assert_eq(evr_word_type(w), EVR_REC_SPAN_END);
	cr_assert_eq(evr_word_bytes(evr_rec_word(0, 0, EVR_LANE_BYTES_MAX, EVR_REC_PAD)), EVR_LANE_BYTES_MAX,
		     "a pad as long as the largest lane fits the size field");
	cr_assert_eq(evr_rec_bytes(0), 8);
	cr_assert_eq(evr_rec_bytes(1), 16);
	cr_assert_eq(evr_rec_bytes(8), 16);
	cr_assert_eq(evr_rec_bytes(9), 24);
	/* Positions one lap apart get different tags. */
	cr_assert_neq(evr_rec_tag(64, 7), evr_rec_tag(64 + 4096, 7));
}

Test(layout, created_segment_geometry)
{
	struct evr_segment seg;
	struct stat st;
	char err[EVR_ERR_MAX];

	test_segment(&seg, "geom", 5, 8192);
	struct evr_seg_header *h = seg.hdr;
	cr_assert_eq(memcmp(h->magic, "EVRING\0\0", 8), 0);
	cr_assert_eq(h->abi_major, EVR_ABI_MAJOR);
	cr_assert_eq(h->header_bytes, 4096);
	cr_assert_eq(h->creator_pid, (uint32_t)getpid());
	cr_assert_eq(h->creator_uid, (uint32_t)geteuid());
	cr_assert_eq(h->lane_count, 5);
	cr_assert_eq(h->lane_bytes, 8192);
	cr_assert_eq(h->lane_table_offset, 4096);
	cr_assert_eq((uint8_t *)seg.lanes - seg.base, 4096);
	cr_assert_eq(h->meta_offset % 4096, 0);
	cr_assert_geq(h->meta_offset, 4096 + 5 * 128);
	cr_assert_eq(h->lanes_offset, h->meta_offset + h->meta_bytes);
	cr_assert_eq(h->segment_bytes, h->lanes_offset + 5 * 8192);
	cr_assert_eq(h->meta_used, EVR_META_FIRST);
	cr_assert_str_eq(h->program, "evring-test");
	for (uint32_t i = 0; i < 4; i++) {
		cr_assert_eq(seg.lanes[i].kind, EVR_LANE_EXCLUSIVE);
		cr_assert_eq(seg.lanes[i].owner, 0);
	}
	cr_assert_eq(seg.lanes[4].kind, EVR_LANE_SHARED);
	cr_assert_eq(seg.lanes[4].owner >> 32, (uint64_t)getpid());
	cr_assert_eq(evr_segment_validate(seg.base, seg.bytes, err, sizeof(err)), 0, "%s", err);

	/* The object in /dev/shm is the creator's alone. */
	char path[160];
	snprintf(path, sizeof(path), "/dev/shm%s", seg.shm_name);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0600);
	cr_assert_eq((uint64_t)st.st_size, seg.bytes);

	/* An opener sees the same geometry. */
	struct evr_segment r;
	cr_assert_eq(evr_segment_open(&r, seg.shm_name, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(r.lane_count, 5);
	cr_assert_eq(r.lane_bytes, 8192);
	cr_assert_eq(r.salt, seg.salt);
	cr_assert(!r.creator);
	evr_segment_close(&r);
	test_segment_destroy(&seg);
}

Test(layout, names_and_bad_configurations)
{
	struct evr_segment seg;
	struct evr_segment_config cfg = { 0 };
	char name[128], err[EVR_ERR_MAX];

	cr_assert_gt(evr_segment_name(name, sizeof(name), 42, "server"), 0);
	cr_assert_str_eq(name, "/evring.42.server");
	cr_assert_eq(evr_segment_name(name, sizeof(name), 42, ""), -EINVAL);
	cr_assert_eq(evr_segment_name(name, sizeof(name), 42, "a/b"), -EINVAL);

	evr_segment_name(name, sizeof(name), getpid(), "badcfg");
	cfg.lanes = 1;
	cr_assert_eq(evr_segment_create(&seg, name, &cfg, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "lanes=1"), "message names the setting: %s", err);
	cfg.lanes = 4;
	cfg.lane_bytes = 5000;
	cr_assert_eq(evr_segment_create(&seg, name, &cfg, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "power of two"), "%s", err);
	cfg.lane_bytes = 2048;
	cr_assert_eq(evr_segment_create(&seg, name, &cfg, err, sizeof(err)), -EINVAL);
	cr_assert_eq(access("/dev/shm/evring.badcfg", F_OK), -1, "nothing is left behind");

	/* A second creator under the same name is refused. */
	test_segment(&seg, "twice", 2, 4096);
	struct evr_segment again;
	cr_assert_eq(evr_segment_create(&again, seg.shm_name, NULL, err, sizeof(err)), -EEXIST);
	cr_assert(strstr(err, "cannot create"), "%s", err);
	test_segment_destroy(&seg);
	cr_assert_eq(evr_segment_open(&again, seg.shm_name, err, sizeof(err)), -ENOENT);
}

Test(layout, metadata_entries_append_and_read_back)
{
	struct evr_segment seg;
	struct evr_meta_view v;
	uint64_t id1, id2, cursor = 0;

	test_segment(&seg, "meta", 2, 4096);
	cr_assert_eq(evr_meta_append(&seg, 1, "site-one", 8, &id1), 0);
	cr_assert_eq(evr_meta_append(&seg, 2, "dispatcher", 10, &id2), 0);
	cr_assert_eq(id1, EVR_META_FIRST);
	cr_assert_gt(id2, id1);
	cr_assert_eq(evr_meta_next(&seg, &cursor, &v, false), 1);
	cr_assert_eq(v.id, id1);
	cr_assert_eq(v.kind, 1);
	cr_assert_eq(memcmp(v.payload, "site-one", 8), 0);
	cr_assert_eq(evr_meta_next(&seg, &cursor, &v, false), 1);
	cr_assert_eq(v.id, id2);
	cr_assert_eq(v.len, 10);
	cr_assert_eq(evr_meta_next(&seg, &cursor, &v, false), 0);
	cr_assert_not_null(evr_meta_entry_at(&seg, id2));
	cr_assert_null(evr_meta_entry_at(&seg, 3));

	/* A full area refuses and counts; what was there stays readable. */
	static uint8_t big[4096];
	int rc = 0;
	for (int i = 0; i < 10000 && rc == 0; i++)
		rc = evr_meta_append(&seg, 3, big, sizeof(big), NULL);
	cr_assert_eq(rc, -ENOSPC);
	cr_assert_geq(seg.hdr->meta_dropped, 1);
	cursor = 0;
	cr_assert_eq(evr_meta_next(&seg, &cursor, &v, false), 1);
	cr_assert_eq(v.id, id1);
	test_segment_destroy(&seg);
}

/*
 * A user is refused another user's segment, even one whose mode lets it in;
 * root opens any user's (a host-wide agent follows them all).
 */
Test(layout, segment_of_another_user_is_refused_but_to_root)
{
	struct evr_segment seg, r;
	char path[160], err[EVR_ERR_MAX];
	pid_t child;
	int st;

	if (geteuid() != 0) {
		cr_log_info("needs root to give the segment away: skipped");
		return;
	}
	test_segment(&seg, "otheruser", 2, 4096);
	snprintf(path, sizeof(path), "/dev/shm%s", seg.shm_name);
	cr_assert_eq(chown(path, 65534, 65534), 0);
	cr_assert_eq(evr_segment_open(&r, seg.shm_name, err, sizeof(err)), 0, "root opens nobody's segment: %s", err);
	evr_segment_close(&r);
	/* Root's own, open to everyone's writes: nobody gets past the mode, and is refused for the owner. */
	cr_assert_eq(chown(path, 0, 0), 0);
	cr_assert_eq(chmod(path, 0666), 0);
	fflush(NULL);
	child = fork();
	cr_assert_geq(child, 0);
	if (child == 0) {
		int rc;

		if (setgid(65534) != 0 || setuid(65534) != 0)
			_exit(10);
		rc = evr_segment_open_flags(&r, seg.shm_name, EVR_SEGMENT_ALLOW_WRITABLE, err, sizeof(err));
		_exit(rc == -EACCES && strstr(err, "owned by uid 0, not by this user (uid 65534)") ? 0 : 1);
	}
	cr_assert_eq(waitpid(child, &st, 0), child);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "nobody was not refused root's segment (status %d)", st);
	test_segment_destroy(&seg);
}
