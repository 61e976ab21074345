/*
 * evring/ring.h: the shared-memory segment, its lanes and the record protocol.
 *
 * THE SEGMENT
 * ===========
 * One POSIX shared-memory object per producer process,
 * /dev/shm/evring.<pid>.<name>, created O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600.
 * It holds offsets only, never pointers, and every size and offset in it is
 * checked by a reader against the size of its own mapping before use.
 *
 *   0        struct evr_seg_header (4096 bytes). Written once by the creator,
 *            except the producer counters (line at 192), the consumer line at
 *            256 and the consumer slot table at 384 (a line per slot, each
 *            written by its holder). The magic is stored last, with release,
 *            so a reader never sees a half-built header under a valid magic.
 *   4096     lane table: lane_count x struct evr_lane (128 bytes). Bytes 0-63
 *            are written by the lane's producer; 64-127 held 1.x's consumer
 *            head, retired (its skipped counter stays).
 *   slot_lanes_offset  consumer_slots x lane_count struct evr_slot_lane, slot
 *            major, 64 bytes each: slot k's head on lane i on a line of its
 *            own, so no two consumers and no producer share one.
 *   meta_offset   metadata area: append-only entries (struct evr_meta_entry
 *            followed by a payload), never overwritten, so a consumer that
 *            attaches late still reads every definition.
 *   lanes_offset  lane data: lane_count x lane_bytes, lane_bytes a power of
 *            two, records 8-byte aligned. The last lane is the shared lane.
 *
 * Fields are only ever appended to the header and lane entries; changing an
 * existing offset alters the format and requires a new EVR_ABI_MAJOR.
 *
 * RECORDS
 * =======
 * A record is an 8-byte commit word followed by its body (msgpack), padded to
 * a multiple of 8. Positions are absolute byte counts since the lane was
 * created (they never wrap); the offset in the lane is pos & (lane_bytes - 1).
 *
 *   commit word:  bits  0-31  tag  = (uint32_t)(pos >> 3) ^ salt
 *                 bits 32-55  size of the whole record in 8-byte units
 *                 bits 56-63  type (EVR_REC_*)
 *
 * The tag ties a word to the position it was written for, so bytes left from
 * an earlier lap (or the middle of an earlier record) never pass for a record
 * at the position a reader expects, and nothing ever has to be cleared. The
 * salt is random per segment. Tags repeat every 32 GiB of a lane's traffic
 * (2^32 eight-byte slots): a stale word would have to survive, unread and
 * unoverwritten, exactly that far behind, which the lane's size rules out for
 * records and makes astronomically unlikely inside padding. A record never
 * wraps: when it does not fit before the end of the lane, a PAD record fills
 * the rest.
 *
 * EXCLUSIVE LANES have one writer, the thread that claimed the lane. It keeps
 * the tail privately, so reserving is a bounds check and committing is a
 * release store of the commit word: no read-modify-write on the write path.
 *
 * THE SHARED LANE takes the threads that found every exclusive lane taken.
 * Writers reserve with a CAS on the tail, mark the reservation BUSY (tag and
 * reserved size), fill the body and commit by CAS-ing BUSY into the final word.
 * A reservation that stays BUSY past the reader's timeout is CAS-ed to
 * SKIPPED by the reader, which reads on past it but keeps its published head
 * at the skipped record until the writer, finding its commit CAS lost,
 * stores ABANDONED and counts the record as lost (or until the writer's
 * process is seen dead). A stalled writer therefore never writes into space
 * that was handed back to other writers.
 *
 * Free space is pos + size - head <= lane_bytes, compared by unsigned
 * difference, where head is the lowest of the live consumers' heads (SEVERAL
 * CONSUMERS below). A writer caches it and re-reads the heads only when the
 * cached value says the record does not fit. When it still does not fit
 * the record is dropped and counted; the next record that fits is preceded by
 * a LOST record, [ts, count, first_ts] (when it was written, how many were
 * dropped, when the first of them was), so the loss appears in the stream
 * where it happened. On an exclusive lane a thread's first record is preceded
 * by a THREAD record, [ts, tid]: a lane passes from thread to thread and its
 * records carry no thread id of their own. On the shared lane, where the
 * writers of neighbouring records differ, each record names its own: its
 * type has EVR_REC_TID set and its last 8 bytes, after the body's padding,
 * hold the writer's tid (a little-endian uint64). The trailer is written
 * before the commit CAS (S3) and costs nothing on the exclusive lanes.
 *
 * SEVERAL CONSUMERS
 * =================
 * A segment has consumer_slots slots (EVR_CONSUMER_SLOTS, 8). A consumer
 * claims one (K1: a CAS of its pid from 0, or from a holder that is gone:
 * its pid dead, or alive with another start time than the slot recorded,
 * which is a reused pid), and reads every lane from its own heads. It stores
 * a heartbeat (K2) on each drain pass: the segment clock, which producers
 * compare against their own read of it, and CLOCK_MONOTONIC for tools.
 *
 * A writer whose cached room runs out computes the lowest head over the
 * claimed slots (W1). A slot whose heartbeat is older than the segment's
 * bound (stale_ticks, from the producer's config, 1 s by default) holds the
 * lane back only until it is in the way: then the writer pushes its head (E1
 * to E3). With no slot claimed, slot 0's heads bound the lane: a reader that
 * claims nothing (tests, tools) reads as 1.x's one consumer did, and what the
 * last consumer left unread stays until a consumer comes back.
 *
 * THE PUSH, AND EXACT LOSS. The pushing writer takes the slot-lane's flag
 * (E1, a try-CAS: a writer that finds it taken does not wait, it keeps the
 * head), checks the slot stale again under it, walks the committed records
 * from the slot's head to its own position, counting what a reader would
 * have taken (a record; a LOST record for its count; PAD and THREAD for
 * nothing; nothing before the slot's count_from, where its holder attached),
 * stopping at anything it must not write over (a shared-lane reservation
 * BUSY or SKIPPED) or cannot read as a record. Then E2 CASes the head from
 * what it read to where the walk stopped, with EVR_HEAD_EVICTED (bit 0) set,
 * and E3 adds the count to the slot-lane's evicted. Only then does it write
 * over what it pushed past. The fast path is untouched: all of this is in
 * the slow path's W1, when the cached room runs out.
 *
 * The reader publishes its head with a CAS from the value it last published
 * (R3), at each release and after EVR_READ_LOG records returned, and after
 * copying each record loads its head again (R8). Both see a push: a flagged
 * head. The push counted everything from the reader's published head to the
 * pushed one; the reader keeps a log of the records it returned since it
 * last published (position, count) and takes back those below the pushed
 * head (it returned them) before it reports any push's count (R9), drops the
 * record it just copied if the push went past it (the copy may be torn: the
 * writer may be writing over it), clears the flag (R7, a CAS: a newer push
 * sets it again) and goes on from the pushed head. The difference between
 * E3's count and what it took back is handed to the caller as a LOST record
 * [now, count, now]: for each consumer, records delivered + lost == records
 * written since it attached, exactly. A consumer's copy that a push
 * overlapped is a read racing a write, thrown away as a seqlock's reader
 * throws away such a read; ThreadSanitizer builds copy with an
 * uninstrumented loop.
 *
 * ORDERING
 * ========
 * Each atomic access in ring/ carries one of these labels.
 *
 *   producer (exclusive)                       consumer
 *   --------------------                       --------
 *   W1  head = min load-acquire(slot-lane.head)  R1  w = load-acquire(commit word)
 *       over the live slots, only when the         tag(w) != tag(pos): nothing yet
 *       cached head is short
 *       -- pairs with R3: the consumer has         -- pairs with W2 / S3
 *       finished reading what it released      R2  copy the body out (plain loads)
 *   write body (plain stores)                  R3  store-release(lane.head, pos)
 *   W2  store-release(commit word)                 after a batch: the bodies read
 *       -- publishes the body to R1                in R2 are no longer needed
 *   W3  store(lane.tail), store(lane.records)      -- pairs with W1
 *       relaxed: the reader takes the tail as a  R6  load(lane.tail) relaxed: where
 *       hint (how far to skip, where "from now"      the writers are; bounded by the
 *       starts), never as proof a record is there    lane before use, never trusted
 *
 *   producer (shared lane)                     consumer, stuck reservation
 *   ----------------------                     ---------------------------
 *   S1  CAS(lane.tail, pos, pos + size)        R4  CAS(word, BUSY, SKIPPED) after
 *       reserves; W1 bounds it                     the timeout -- races with S3,
 *   S2  store(word, BUSY | size)  relaxed          exactly one wins
 *   write body                                 R5  load-acquire(word) == ABANDONED
 *   S3  CAS(word, BUSY, final)  release            releases the hold
 *       -- publishes the body to R1                -- pairs with S4
 *   S4  on a lost S3: store-release(word,
 *       ABANDONED), count the record lost
 *
 *   header                                     site enable flags
 *   ------                                     -----------------
 *   H1  store-release(magic) after every       F0  producer: CAS(site.id, 0, id) after
 *       other field (segment.c)                    the entry's M2, then store-release(
 *   H2  reader: load-acquire(magic), then          site.head = id packed), store-release(
 *       one copy of the header, validated          site.flag = &entry.flags)
 *       and used (never read twice)            F1  producer: load-acquire(site.flag), then
 *                                              F2  load(*flag) relaxed: a consumer
 *                                                  may set EVR_SITE_DISABLED any time
 *                                              F3  producer: load-acquire(site.head) --
 *                                                  pairs with F0: the entry is published
 *
 *   several consumers (slots.c, reader.c)
 *   -------------------------------------
 *   K1  CAS(slot.pid, 0 or gone holder, me); the claim's heartbeat (K2) goes
 *       before it, so no writer takes a just-claimed slot for stale; then
 *       faa(hdr.consumer_epoch): a writer that load-acquires the new epoch
 *       takes its mask of claimed slots again and sees the pid
 *   K2  store(slot.heartbeat_ticks, segment clock) relaxed, at each pass; the
 *       claim follows it with a full fence and reads E1 (a Dekker pair with
 *       E1 + K2 in the writer: a push either sees the claim or is waited for)
 *   E1  writer: CAS(slot-lane.evicting, 0, 1); store-release(evicting, 0) at
 *       the end -- one pusher at a time; the claim waits for it to clear
 *   E2  writer: CAS(slot-lane.head, h, to | EVICTED) -- races with R3: one of
 *       a publish and a push from h wins; before any store over [h, to)
 *   E3  writer: store-release(slot-lane.evicted, + count) under E1 -- a
 *       reader that load-acquires the count (R9) then sees E2 in the head
 *   E4  writer: load-acquire(commit word) while walking, pairs with W2 / S3
 *   R3  claimed reader: CAS(slot-lane.head, published, pos), pairs with W1,
 *       races with E2 (a bare reader: store-release, as in 1.x)
 *   R7  reader: CAS(head, to | EVICTED, to): the push taken
 *   R8  reader: after R2, load-acquire(head) (and an acquire fence): the copy
 *       was whole unless a push went past it
 *   R9  reader: load-acquire(evicted), pairs with E3, then the head again: a
 *       push's take-back of what was returned comes before its count
 *
 *   lane ownership                             metadata
 *   --------------                             --------
 *   C1  CAS(lane.owner, 0, pid:tid) acquire    M1  faa(hdr.meta_used, size) reserves
 *       -- pairs with C2 / C3: sees the        M2  store-release(entry.commit)
 *       last owner's tail and lost fields          -- publishes the entry to M3
 *   C2  store-release(lane.owner, 0) at        M3  load-acquire(entry.commit)
 *       thread exit, after tail and lost
 *   C3  reader reclaim of a dead owner:
 *       store tail, CAS(owner, dead, 0)
 *
 * A writer that dies inside a record leaves its commit word unpublished. On an
 * exclusive lane the reader sees the owning thread is gone, reads what was
 * committed, sets the lane's tail to where it stopped and frees the lane (C3);
 * on the shared lane the stuck reservation is skipped as above. A verdict of
 * death (or of a wait timed out) comes after the R1 that found no record, and
 * in between the writer may have committed it, freed its lane and exited: the
 * reader loads the word again (R1) after the verdict and reads the record if
 * it is there. A writer seen dead stores nothing more, so that load is final.
 *
 * WHO MAY CALL WHAT
 * =================
 *   evr_segment_create / close / unlink      any thread, not concurrently on one segment
 *   evr_writer_open / reserve / commit / close   the thread that owns the writer
 *   evr_meta_append                           any thread, concurrently
 *   evr_reader_*                              one thread per reader; several readers
 *                                             per segment, each in its own slot
 *   evr_consumer_slot_*                       any process; K1 arbitrates
 */
#ifndef EVRING_RING_H
#define EVRING_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include <evring/atomic.h>
#include <evring/clock.h>
#include <evring/visibility.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EVR_MAGIC "EVRING\0\0"
/*
 * 2.0: several consumers (the slot table at 384 and the slot-lane area); the
 * single slot at 256 and struct evr_lane.head are retired. A major step, not
 * a minor one, because readers of 1.x check only the major: a 1.x consumer
 * would accept a 1.2 segment, take a slot no producer honours any more and
 * write heads nobody reads. With major 2 it refuses the segment and names
 * both versions ("segment ABI version 2.0, this reader supports 1.1"). From
 * 2.0 on, abi_minor_required lets a later minor step refuse older readers
 * the same way without a major step.
 * 1.1 (history): shared-lane records carry their writer's tid (EVR_REC_TID); trace_id_high.
 */
#define EVR_ABI_MAJOR 2
#define EVR_ABI_MINOR 0

#define EVR_HEADER_BYTES 4096u
#define EVR_LANE_ENTRY_BYTES 128u
#define EVR_WORD_BYTES 8u
#define EVR_LANES_MAX 4096u
#define EVR_LANE_BYTES_MIN 4096u
#define EVR_LANE_BYTES_MAX (64u << 20) /* record size field: 24 bits of 8-byte units */
#define EVR_RECORD_MAX 65536u	       /* a whole record, commit word included */
#define EVR_BODY_MAX (EVR_RECORD_MAX - EVR_WORD_BYTES)
#define EVR_TID_BYTES 8u /* the trailer of an EVR_REC_TID record; not counted in EVR_RECORD_MAX */
#define EVR_META_BYTES_MAX (256u << 20)
#define EVR_META_FIRST 64u /* offset of the first metadata entry: id 0 means none */
#define EVR_NAME_MAX 63u
#define EVR_ERR_MAX 256u

#define EVR_CONSUMER_SLOTS 8u	       /* consumer slots in a segment this library creates */
#define EVR_CONSUMER_SLOTS_MAX 32u     /* what a reader accepts ((4096 - 384) / 64 would fit 58) */
#define EVR_SLOT_TABLE_OFFSET 384u     /* the slot table in the header */
#define EVR_SLOT_LANE_BYTES 64u	       /* one cache line per (slot, lane) */
#define EVR_STALE_NS_DEFAULT 1000000000ull /* a consumer silent this long no longer holds lanes back */
#define EVR_HEAD_EVICTED 1u	       /* bit 0 of a slot-lane head: a producer pushed it (E2) */

#define EVR_DEFAULT_LANES 16u
#define EVR_DEFAULT_LANE_BYTES (1u << 20)
#define EVR_DEFAULT_META_BYTES (1u << 20)

/*
 * Record types (bits 56-63 of a commit word). 1-63 are records a reader
 * delivers; with EVR_REC_TID added, the same records ending with an 8-byte
 * trailer naming the thread that wrote them (the shared lane's).
 */
enum evr_rec_type {
	EVR_REC_EVENT = 1,
	EVR_REC_SPAN_BEGIN = 2,
	EVR_REC_SPAN_END = 3,
	EVR_REC_LOST = 4,
	EVR_REC_PAD = 5,
	EVR_REC_THREAD = 6, /* [ts, tid]: the lane's records from here on are this thread's */
	EVR_REC_USER_FIRST = 16, /* 16-63: free for other record kinds */
	EVR_REC_DELIVERABLE_MAX = 63,
	EVR_REC_TID = 0x40,	  /* flag on a deliverable type: the record ends with its writer's tid */
	EVR_REC_BUSY = 0x80,	  /* shared lane: reserved, body being written */
	EVR_REC_SKIPPED = 0x81,	  /* shared lane: the reader gave up waiting (R4) */
	EVR_REC_ABANDONED = 0x82, /* shared lane: the writer saw it was skipped (S4) */
};

/* msgpack ext type of a string the producer truncated: its first bytes. */
#define EVR_EXT_TRUNCATED 1

/*
 * Metadata entry kinds (struct evr_meta_entry.kind). Payloads are msgpack maps,
 * except PARAM's: an array [key, value] of two str, a run parameter the
 * application gave (evr_run_param). A reader skips a kind it does not know.
 */
enum evr_meta_kind {
	EVR_META_PROCESS = 1,
	EVR_META_SITE = 2,
	EVR_META_DISPATCHER = 3,
	EVR_META_THREAD = 4,
	EVR_META_PARAM = 5, /* a run parameter (evr_run_param): an array [key, value] of two str, not a map */
};

enum evr_clock_kind_field { EVR_SEG_CLOCK_TSC = EVR_CLOCK_TSC, EVR_SEG_CLOCK_MONO = EVR_CLOCK_MONOTONIC };

/*
 * The segment header. Every field below byte 192 is written once by the
 * creator before it stores the magic and never changes after.
 */
struct evr_seg_header {
	char magic[8];		      /*   0  "EVRING\0\0", stored last */
	uint16_t abi_major;	      /*   8 */
	uint16_t abi_minor;	      /*  10 */
	uint32_t header_bytes;	      /*  12  EVR_HEADER_BYTES */
	uint64_t segment_bytes;	      /*  16  the whole object */
	uint32_t creator_pid;	      /*  24 */
	uint32_t creator_uid;	      /*  28 */
	uint64_t start_real_ns;	      /*  32  CLOCK_REALTIME at creation */
	uint32_t clock_kind;	      /*  40  enum evr_clock_kind */
	uint32_t tag_salt;	      /*  44 */
	uint64_t clock_anchor_ticks;  /*  48 */
	uint64_t clock_anchor_mono_ns;/*  56 */
	uint64_t clock_anchor_real_ns;/*  64 */
	uint64_t clock_mult;	      /*  72  ns per tick << EVR_CLOCK_SHIFT */
	uint32_t lane_count;	      /*  80  exclusive lanes + the shared lane (the last) */
	uint32_t lane_entry_bytes;    /*  84  EVR_LANE_ENTRY_BYTES */
	uint64_t lane_bytes;	      /*  88  power of two */
	uint64_t lane_table_offset;   /*  96  EVR_HEADER_BYTES */
	uint64_t meta_offset;	      /* 104 */
	uint64_t meta_bytes;	      /* 112 */
	uint64_t lanes_offset;	      /* 120 */
	char program[64];	      /* 128  NUL-terminated */

	/* 192: producer side, any producer thread (atomic RMW, off the hot path). */
	uint64_t meta_used;	      /* 192  bump pointer of the metadata area (M1) */
	uint64_t meta_dropped;	      /* 200  entries refused: metadata area full */
	uint64_t lane_claims;	      /* 208  exclusive lanes claimed */
	uint64_t lane_fallbacks;      /* 216  writers sent to the shared lane */
	uint64_t writer_oversize;     /* 224  records refused: larger than EVR_RECORD_MAX */
	uint64_t writer_reentrant;    /* 232  records refused: emitted from a signal handler mid-record */
	uint64_t creator_pidns;	      /* 240  inode of the creator's pid namespace (written once) */
	uint64_t exited_real_ns;      /* 248  CLOCK_REALTIME when it ended normally (exit, evr_close); 0 while
					       running, or when it died (the consumer tells the two apart) */

	/* 256: consumer side. */
	uint64_t consumer_pid;	      /* 256  retired in 2.0 (the slot of 1.x): always 0, see slots[] */
	uint64_t consumer_epoch;      /* 264  bumped at each claim of any slot (K1) */
	uint64_t consumer_heartbeat_ns; /* 272  retired in 2.0: always 0, see slots[].heartbeat_ns */
	uint64_t lanes_reclaimed;     /* 280  lanes freed after their owner died */
	uint64_t records_skipped;     /* 288  bad or stuck records stepped over */
	uint64_t creator_start_ticks; /* 296  the creator's start time, field 22 of /proc/<pid>/stat (clock
					       ticks since boot), written once before the magic; 0 unknown. A live
					       process with the creator's pid and another start time reused the pid */
	uint64_t trace_id_high;	      /* 304  random, drawn at creation, written once before the magic: the
					       high half of the 16-byte trace ids evring's traces take in OTLP
					       (the low half is evring's trace id); 0 in segments before ABI 1.1 */
	/* 312: several consumers (2.0), written once by the creator before the magic. */
	uint32_t consumer_slots;      /* 312  entries in slots[], 1..EVR_CONSUMER_SLOTS_MAX */
	uint16_t abi_minor_required;  /* 316  readers of this major older than this minor must refuse */
	uint16_t pad_316;
	uint64_t stale_ns;	      /* 320  a slot whose heartbeat is older holds no lane back */
	uint64_t stale_ticks;	      /* 328  the same bound in segment clock ticks (what producers compare) */
	uint64_t slot_lanes_offset;   /* 336  consumer_slots x lane_count struct evr_slot_lane, slot-major */
	uint8_t pad_344[EVR_SLOT_TABLE_OFFSET - 344];
	struct evr_consumer_slot {    /* 384 + 64 k: slot k's line, written by its consumer */
		uint64_t pid;	      /*  0  holder, 0 when free (K1) */
		uint64_t start_ticks; /*  8  the holder's start, field 22 of /proc/<pid>/stat: a reused pid differs */
		uint64_t heartbeat_ns;/* 16  CLOCK_MONOTONIC of its last drain pass (for tools) */
		uint64_t heartbeat_ticks; /* 24  the segment clock at that pass: what producers judge staleness by (K2) */
		uint64_t epoch;	      /* 32  bumped at each claim of this slot */
		uint64_t attached_real_ns; /* 40  CLOCK_REALTIME of the claim */
		uint64_t pad[2];
	} slots[EVR_CONSUMER_SLOTS_MAX];
	uint8_t pad_consumer[EVR_HEADER_BYTES - EVR_SLOT_TABLE_OFFSET - EVR_CONSUMER_SLOTS_MAX * 64];
};

/*
 * Slot k's line for lane i, at slot_lanes_offset + (k * lane_count + i) * 64:
 * a cache line of its own, so consumers never share a line with each other
 * or with a lane's producer fields. head and count_from are the consumer's;
 * evicting, evicted and evictions are written by producers only while they
 * push a stale slot's head (E1-E3).
 */
struct evr_slot_lane {
	uint64_t head;	     /*  0  consumer (R3, a CAS); a producer pushing it sets EVR_HEAD_EVICTED (E2) */
	uint64_t count_from; /*  8  consumer, at the claim: a push counts only records at or after it */
	uint64_t evicted;    /* 16  producers (E3): records pushed past unread, all time */
	uint64_t evicting;   /* 24  producers (E1): 1 while one of them pushes this head */
	uint64_t evictions;  /* 32  producers: pushes */
	uint64_t reported;   /* 40  consumer: of evicted, what this slot's holders have taken into their counts;
				 a FROM_OLDEST claim of a dead holder's slot goes on from it, so the pushes made
				 while nobody held it are the new holder's losses */
	uint64_t pad[2];
};

/*
 * A lane entry. Bytes 0-63 are written by the lane's producer (or, for the
 * shared lane, by all of them with atomic RMW; after the owner died, by the
 * reclaiming reader); bytes 64-127 by the consumer only.
 */
struct evr_lane {
	uint64_t owner;		/*   0  (pid << 32) | tid; 0 free; tid 0 on the shared lane */
	uint64_t tail;		/*   8  exclusive: end of the last committed record; shared: reserved */
	uint64_t records;	/*  16  records committed */
	uint64_t lost;		/*  24  records dropped, all time */
	uint64_t lost_pending;	/*  32  dropped and not yet reported by a LOST record */
	uint64_t lost_first_ts; /*  40  clock ticks of the first pending drop */
	uint64_t lost_last_ts;	/*  48  unused since 2.0 (0): a drop reads the clock only for the first of a run */
	uint32_t claims;	/*  56  times the lane was claimed */
	uint32_t kind;		/*  60  EVR_LANE_EXCLUSIVE or EVR_LANE_SHARED */
	uint64_t head;		/*  64  retired in 2.0 (1.x's consumer head): see struct evr_slot_lane */
	uint64_t skipped;	/*  72  consumer: records stepped over on this lane */
	uint8_t pad_consumer[48];
};

enum evr_lane_kind { EVR_LANE_EXCLUSIVE = 1, EVR_LANE_SHARED = 2 };

/* A metadata entry header; the payload follows, padded to 8 bytes. */
struct evr_meta_entry {
	uint32_t len;	 /* payload bytes; stored before the commit */
	uint32_t kind;	 /* what the payload describes (producer-defined) */
	uint32_t commit; /* EVR_META_COMMITTED once published (M2) */
	uint32_t flags;	 /* free for the consumer to write (e.g. a site's enable bit) */
};
#define EVR_META_COMMITTED 0x4d455441u /* "META" */

/* A mapped segment, as seen by one process. */
struct evr_segment {
	uint8_t *base;
	uint64_t bytes;
	struct evr_seg_header *hdr;
	struct evr_lane *lanes;
	struct evr_slot_lane *slot_lanes; /* consumer_slots x lane_count */
	uint32_t slots;			  /* consumer_slots */
	uint64_t stale_ticks;
	uint8_t *meta;
	uint8_t *data;
	uint32_t lane_count;
	uint64_t lane_bytes;
	uint64_t meta_bytes;
	uint32_t clock_kind;
	uint32_t salt;
	bool creator;
	bool foreign_pidns; /* created in another pid namespace: its pids are not ours to check */
	char shm_name[128];
	uint64_t slot_cache; /* writers: the slots claimed as of consumer_epoch (slots.c, claimed_mask) */
};

struct evr_segment_config {
	uint32_t lanes;	     /* exclusive lanes + 1 shared; 0: EVR_DEFAULT_LANES */
	uint64_t lane_bytes; /* power of two; 0: EVR_DEFAULT_LANE_BYTES */
	uint64_t meta_bytes; /* 0: EVR_DEFAULT_META_BYTES */
	uint32_t clock_kind; /* 0: evr_clock_detect() */
	const char *program; /* stored in the header; NULL: none */
	uint64_t stale_ns;   /* a consumer silent this long stops holding lanes back; 0: EVR_STALE_NS_DEFAULT */
};

/*
 * Builds the shm name "/evring.<pid>.<name>" into buf. Returns its length, or
 * -EINVAL when name is empty, holds '/' or is longer than EVR_NAME_MAX.
 */
EVR_API int evr_segment_name(char *buf, size_t len, pid_t pid, const char *name);

/*
 * Creates, sizes, maps and initialises a segment under shm_name (as built by
 * evr_segment_name). Errors: -EEXIST, -EINVAL (bad config; err says which
 * setting), -ENOMEM / -ENOSPC, or the errno of shm_open / ftruncate / mmap.
 * err receives a one-line message on failure.
 */
EVR_API int evr_segment_create(struct evr_segment *seg, const char *shm_name,
			       const struct evr_segment_config *cfg, char *err, size_t errlen);

/*
 * Opens and maps an existing segment for reading and consuming, after checking
 * the object's owner (-EACCES when another uid owns it), its mode (-EACCES
 * when its group or others may write it: they could shrink or rewrite it
 * under the consumer; producers create 0600) and validating the header (see
 * evr_segment_validate). Errors: -ENOENT, -EACCES, -EPROTO (another ABI
 * major), -EBADMSG (invalid header), -EAGAIN (still being created).
 */
EVR_API int evr_segment_open(struct evr_segment *seg, const char *shm_name, char *err, size_t errlen);

/* evr_segment_open's checks, but with EVR_SEGMENT_ALLOW_WRITABLE a mode others may write is accepted. */
enum evr_segment_open_flags { EVR_SEGMENT_ALLOW_WRITABLE = 1u };
EVR_API int evr_segment_open_flags(struct evr_segment *seg, const char *shm_name, unsigned flags, char *err,
				   size_t errlen);

/*
 * Checks a header against the size of the mapping that holds it: magic, ABI,
 * every size and offset, the clock fields. Pure function over bytes (the
 * fuzzer calls it directly). Returns 0 or -EBADMSG / -EPROTO / -EAGAIN.
 */
EVR_API int evr_segment_validate(const void *base, uint64_t bytes, char *err, size_t errlen);

/*
 * For tools and fuzzers: a segment image in memory. Validates a private copy
 * of the header at base (8-byte aligned) against bytes, as evr_segment_open
 * does, and fills *seg over the buffer. The caller keeps the memory: such a
 * segment is never passed to evr_segment_close, which would unmap it.
 * Returns 0, -EINVAL (misaligned base) or evr_segment_validate's errors.
 */
EVR_API int evr_segment_map_buffer(struct evr_segment *seg, void *base, uint64_t bytes, char *err, size_t errlen);

/* Unmaps; the creator's close does not unlink. */
EVR_API void evr_segment_close(struct evr_segment *seg);

/* Removes the shm object. Returns 0 or -errno. */
EVR_API int evr_segment_unlink(const char *shm_name);

/* The lane entry and data of lane i (i < seg->lane_count). */
static inline struct evr_lane *evr_segment_lane(const struct evr_segment *seg, uint32_t i)
{
	return &seg->lanes[i];
}
static inline uint8_t *evr_segment_lane_data(const struct evr_segment *seg, uint32_t i)
{
	return seg->data + (uint64_t)i * seg->lane_bytes;
}
static inline uint32_t evr_segment_shared_lane(const struct evr_segment *seg)
{
	return seg->lane_count - 1;
}
/* Slot k's line for lane i (k < seg->slots, i < seg->lane_count). */
static inline struct evr_slot_lane *evr_segment_slot_lane(const struct evr_segment *seg, uint32_t k, uint32_t i)
{
	return &seg->slot_lanes[(uint64_t)k * seg->lane_count + i];
}
/* Where slot k has read lane i up to, the EVR_HEAD_EVICTED bit taken off. */
static inline uint64_t evr_segment_head(const struct evr_segment *seg, uint32_t k, uint32_t i)
{
	return evr_ld_acq_64(&evr_segment_slot_lane(seg, k, i)->head) & ~(uint64_t)EVR_HEAD_EVICTED;
}

/* A 64-bit mix (splitmix64's finaliser): distinct inputs, well-spread outputs. */
static inline uint64_t evr_mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* ---- records ---------------------------------------------------------- */

static inline uint64_t evr_rec_bytes(uint32_t body_len)
{
	return ((uint64_t)body_len + EVR_WORD_BYTES + 7u) & ~(uint64_t)7u;
}
static inline uint32_t evr_rec_tag(uint64_t pos, uint32_t salt)
{
	return (uint32_t)(pos >> 3) ^ salt;
}
static inline uint64_t evr_rec_word(uint64_t pos, uint32_t salt, uint64_t bytes, uint32_t type)
{
	return (uint64_t)evr_rec_tag(pos, salt) | ((bytes >> 3) << 32) | ((uint64_t)type << 56);
}
static inline uint32_t evr_word_tag(uint64_t w) { return (uint32_t)w; }
static inline uint64_t evr_word_bytes(uint64_t w) { return ((w >> 32) & 0xffffffu) << 3; }
static inline uint32_t evr_word_type(uint64_t w) { return (uint32_t)(w >> 56); }

/* ---- writer (producer side) ------------------------------------------- */

/*
 * A thread's handle on its lane. Private to the thread; the lane entry it
 * points to is in shared memory. The fast path's fields come first, on one
 * cache line.
 *
 * The fast path is one comparison: a record of `need` bytes at tail fits
 * when tail + need <= limit, where limit = min(head_cache, start of tail's
 * lap) + lane size bounds both the consumer's head (W1) and the end of the
 * lap (a record never wraps). Whatever must go through the slow path first
 * (the shared lane's CAS, a THREAD record due, a LOST record pending, a
 * writer its owner must open again) sets limit to 0, so the fast path needs
 * no flag of its own. The slow path computes the limit again whenever it
 * moves tail.
 *
 * limit is also the reentrancy guard. A reservation takes it and leaves
 * EVR_WRITER_BUSY in its place until the record is published, when it puts
 * back the value it took (or the one the slow path computed): a signal
 * handler that writes a record on this thread meanwhile finds BUSY, takes
 * the slow path, and is refused and counted there (hdr.writer_reentrant).
 * tail is read after BUSY is stored, so a handler that ran before that store
 * has finished its record, and the value taken can only be stale in the safe
 * direction for tail (it bounds a tail that moved on). A handler that ran
 * between the load of limit and the store of BUSY and dropped a record may
 * see its LOST record come after this one record: the count stays exact.
 * Cost: two stores.
 */
#define EVR_WRITER_BUSY 1u /* limit while a record is being written: no record fits below it */
struct evr_writer {
	uint64_t tail;	     /* exclusive: next position to write; the open reservation's */
	uint64_t limit;	     /* records ending at or below it take the fast path; 0: none; BUSY: in a record */
	uintptr_t base;	     /* data + 8 - start of tail's lap: base + pos is where the body at pos goes */
	struct evr_lane *lane;
	uint32_t salt;
	uint32_t clock_kind;
	bool shared;
	bool thread_pending; /* exclusive lane: the THREAD record opening this thread's run is due */
	uint8_t *data;
	uint64_t mask;	     /* lane_bytes - 1 */
	uint64_t head_cache; /* last consumer head read (W1) */
	uint64_t resv_pos;   /* shared lane: the open reservation */
	uint64_t resv_bytes; /* shared lane: bytes reserved for it */
	uint64_t resv_limit; /* the one-call forms: the limit to put back at the commit */
	struct evr_segment *seg;
	uint64_t owner;
};

enum evr_writer_flags { EVR_WRITER_FORCE_SHARED = 1u };

/*
 * Claims a free exclusive lane for (pid, tid) with C1, scanning from tid; when
 * none is free, or with EVR_WRITER_FORCE_SHARED, writes to the shared lane.
 * On an exclusive lane the writer's first record is preceded by a THREAD
 * record naming tid, since a lane passes from thread to thread. Returns 0
 * and sets w->shared accordingly, or -EINVAL.
 */
EVR_API int evr_writer_open(struct evr_writer *w, struct evr_segment *seg, uint32_t pid, uint32_t tid,
			    unsigned flags);

/*
 * Reports a pending loss if it can, then frees an exclusive lane (C2). The
 * loss stays counted in the lane for its next owner to report otherwise.
 */
EVR_API void evr_writer_close(struct evr_writer *w);

/*
 * Counts n records the caller could not write (a call site that could not
 * register: the metadata area was full) as lost, as a full lane's drops: in
 * the lane's lost and lost_pending, so that the next record reports them in
 * a LOST record. Inside a record (a signal handler interrupted one) they are
 * counted in hdr.writer_reentrant instead. Owner thread (exclusive lane);
 * any thread on the shared lane.
 */
EVR_API void evr_writer_count_lost(struct evr_writer *w, uint64_t n);

/*
 * Writes the pending LOST record now if there is room. Returns 1 written, 0
 * none due, -ENOSPC, or -EBUSY when called inside a record.
 */
EVR_API int evr_writer_flush_lost(struct evr_writer *w);

/*
 * For tests that place records at exact offsets: forgets the THREAD record
 * due before the writer's first record on an exclusive lane.
 */
EVR_API void evr_writer_skip_thread_record(struct evr_writer *w);

EVR_API void evr__writer_commit_shared(struct evr_writer *w, uint32_t body_len, uint32_t type);

/*
 * An open reservation: where its body goes and what its commit needs, read
 * from the writer before the body is written. A body is written with byte
 * stores, which the compiler must assume may land on the writer's fields, so
 * whatever the commit needs is in hand before them and nothing is read again.
 */
struct evr_resv {
	uint8_t *body; /* where the body goes; NULL: dropped */
	uint64_t pos;  /* its commit word's position (exclusive lane) */
	struct evr_lane *lane;
	uint64_t limit; /* what the writer's limit goes back to when the record is done */
	uint32_t salt;
	bool shared;
};

/*
 * The fast path of a reservation for a body of body_len bytes: marks the
 * writer busy, then true with *r filled when the record fits as things
 * stand, false (with r->limit set) when it must go through
 * evr_writer_reserve_slow. The two are split so that a caller writes
 *
 *   if (evr_writer_reserve_fast(w, len, &r)) {
 *           ... write len bytes or fewer at r.body ...
 *           evr_writer_publish_exclusive(w, &r, len_written, type);
 *   } else if ((r = evr_writer_reserve_slow(w, len, r.limit)).body) {
 *           ... the same ...
 *           evr_writer_publish(w, &r, len_written, type);
 *   }
 *   w->limit = r.limit;
 *
 * and the fast path carries no test of whether a body came back, nor of
 * which lane it is on.
 */
EVR_INLINE bool evr_writer_reserve_fast(struct evr_writer *w, uint32_t body_len, struct evr_resv *r)
{
	uint64_t tail;

	r->limit = w->limit;
	w->limit = EVR_WRITER_BUSY;
	__asm__ __volatile__("" ::: "memory"); /* a signal fence: BUSY is stored before tail is read */
	tail = w->tail;
	if (EVR_UNLIKELY(tail + evr_rec_bytes(body_len) > r->limit || body_len > EVR_BODY_MAX))
		return false;
	r->body = (uint8_t *)(w->base + (uintptr_t)tail);
	r->pos = tail;
	r->lane = w->lane;
	r->salt = w->salt;
	r->shared = false; /* the shared lane's limit is 0 */
	return true;
}

/*
 * Reserves through the slow path (padding at the lap's end, the LOST and
 * THREAD records due, the shared lane's CAS), after evr_writer_reserve_fast
 * said no, with the limit it took. The reservation comes back by value (so
 * that the caller's copy can live in registers); its body is NULL when the
 * record was dropped (counted in the lane and reported by the next LOST
 * record; or, when the writer was already busy, counted as reentrant).
 * A reservation with a body must be followed by evr_writer_publish with a
 * body_len no larger than reserved; every reservation, by putting r.limit
 * back into w->limit. Neither path blocks, locks, allocates or enters the
 * kernel.
 */
EVR_API struct evr_resv evr_writer_reserve_slow(struct evr_writer *w, uint32_t body_len, uint64_t limit);

/* Publishes a reservation of the fast path (an exclusive lane) as a record of type (1-63) with its final body_len. */
EVR_INLINE void evr_writer_publish_exclusive(struct evr_writer *w, const struct evr_resv *r, uint32_t body_len,
					      uint32_t type)
{
	uint64_t need = evr_rec_bytes(body_len);

	w->tail = r->pos + need;
	/* W2, pairs with R1: the body stores above are visible before the word. */
	evr_st_rel_64((uint64_t *)(void *)(r->body - EVR_WORD_BYTES), evr_rec_word(r->pos, r->salt, need, type));
	/* W3: relaxed, counters for evring stats; the reader never relies on them. */
	evr_st_64(&r->lane->tail, r->pos + need);
	evr_inc_own_64(&r->lane->records); /* only this writer stores it */
}

/* Publishes any reservation r as a record of type (1-63) with its final body_len. */
static inline void evr_writer_publish(struct evr_writer *w, const struct evr_resv *r, uint32_t body_len, uint32_t type)
{
	if (EVR_UNLIKELY(r->shared))
		evr__writer_commit_shared(w, body_len, type);
	else
		evr_writer_publish_exclusive(w, r, body_len, type);
}

/*
 * The one-call forms, for callers that keep only the body: reserve returns
 * where to write a body of body_len bytes (<= EVR_BODY_MAX), or NULL when the
 * record was dropped (counted in the lane and reported by the next LOST
 * record); commit publishes it, with a body_len no larger than reserved. The
 * writer holds the reservation in between (resv_pos, resv_limit). Never
 * blocks, locks, allocates or enters the kernel.
 */
static inline void *evr_writer_reserve(struct evr_writer *w, uint32_t body_len)
{
	struct evr_resv r;

	if (!evr_writer_reserve_fast(w, body_len, &r))
		r = evr_writer_reserve_slow(w, body_len, r.limit);
	if (!r.body) {
		w->limit = r.limit; /* refused as reentrant: BUSY, the outer reservation's to put back */
		return NULL;
	}
	w->resv_limit = r.limit;
	return r.body;
}

/* Where the open reservation's record starts in the lane (its commit word). */
static inline uint64_t evr_writer_resv_pos(const struct evr_writer *w)
{
	return w->shared ? w->resv_pos : w->tail;
}

/* Publishes the open reservation (evr_writer_reserve) as type (1-63) with its final body_len. */
static inline void evr_writer_commit(struct evr_writer *w, uint32_t body_len, uint32_t type)
{
	struct evr_resv r = { (uint8_t *)(w->base + (uintptr_t)w->tail), w->tail, w->lane, w->resv_limit, w->salt,
			      w->shared };

	evr_writer_publish(w, &r, body_len, type);
	w->limit = r.limit;
}

/* Copies body into a new record in one call. Returns true when written, false when dropped. */
static inline bool evr_writer_write(struct evr_writer *w, uint32_t type, const void *body, uint32_t len)
{
	void *p = evr_writer_reserve(w, len);
	if (EVR_UNLIKELY(!p))
		return false;
	memcpy(p, body, len);
	evr_writer_commit(w, len, type);
	return true;
}

/* ---- msgpack into fixed buffers ---------------------------------------- */

/*
 * A msgpack-c write callback (msgpack_packer_init(&pk, &b, evr_mpbuf_write))
 * into a fixed buffer: what does not fit is refused and remembered, never
 * written past the end. For record bodies and metadata entries built off the
 * hot path.
 */
struct evr_mpbuf {
	uint8_t *p;
	size_t len, cap;
	bool overflow;
};
#define EVR_MPBUF(array) { (uint8_t *)(array), 0, sizeof(array), false }

static inline int evr_mpbuf_write(void *data, const char *src, size_t len)
{
	struct evr_mpbuf *b = (struct evr_mpbuf *)data;

	if (len > b->cap - b->len) {
		b->overflow = true;
		return -1;
	}
	memcpy(b->p + b->len, src, len);
	b->len += len;
	return 0;
}

/* ---- LOST record bodies ----------------------------------------------- */

/* msgpack [ts, count, first_ts] into buf (>= 32 bytes). Returns its length. */
EVR_API uint32_t evr_lost_encode(void *buf, uint64_t ts, uint64_t count, uint64_t first_ts);

/* Decodes a LOST body with msgpack-c. Returns 0 or -EBADMSG. */
EVR_API int evr_lost_decode(const void *body, uint32_t len, uint64_t *ts, uint64_t *count, uint64_t *first_ts);

/* ---- metadata area ---------------------------------------------------- */

/*
 * Appends an entry (M1, M2) and returns its id, its offset in the metadata
 * area (>= EVR_META_FIRST), through *id. Any thread, concurrently, no lock.
 * Errors: -ENOSPC when the area is full (counted in hdr.meta_dropped), -EINVAL.
 */
EVR_API int evr_meta_append(struct evr_segment *seg, uint32_t kind, const void *payload, uint32_t len,
			    uint64_t *id);

/* The entry with this id, or NULL when id is not a valid entry offset. */
EVR_API struct evr_meta_entry *evr_meta_entry_at(const struct evr_segment *seg, uint64_t id);

struct evr_meta_view {
	uint64_t id;
	uint32_t kind;
	uint32_t len;
	const uint8_t *payload; /* in the segment: copy before trusting it */
};

/*
 * Reads the entry at *cursor (start with 0) and advances it. Returns 1 with
 * *out filled, 0 at the end or at an entry still being written, -EBADMSG when
 * the area is corrupt (the cursor then stays). With writer_dead, an entry
 * whose writer died before publishing it is stepped over and -ESTALE returned
 * for it.
 */
EVR_API int evr_meta_next(const struct evr_segment *seg, uint64_t *cursor, struct evr_meta_view *out,
			  bool writer_dead);

/*
 * Reads the one entry with this id, out of order: for a reader whose
 * in-order scan (evr_meta_next) is held at an entry another thread reserved
 * earlier and has not yet published, while a record already names a later
 * one. Returns 1 with *out filled, 0 when the entry is not published (yet),
 * -EBADMSG when id is no entry or its length runs past the area.
 */
EVR_API int evr_meta_read(const struct evr_segment *seg, uint64_t id, struct evr_meta_view *out);

/* ---- reader (consumer side) ------------------------------------------- */

struct evr_record {
	uint32_t type; /* 1-63, EVR_REC_TID taken off */
	uint32_t lane;
	uint32_t body_len;
	uint32_t tid; /* the writer's, from an EVR_REC_TID trailer; 0: the lane's THREAD record says */
	uint64_t pos;
	const uint8_t *body; /* the caller's buffer: a private copy */
};

struct evr_reader_stats {
	uint64_t delivered;	  /* records handed to the caller */
	uint64_t lost_records;	  /* LOST records among them */
	uint64_t lost;		  /* sum of their counts */
	uint64_t pads;		  /* PAD records stepped over */
	uint64_t skipped_bad;	  /* corrupt words or lengths: bytes stepped over, counted per event */
	uint64_t skipped_stuck;	  /* shared-lane reservations given up on (R4) */
	uint64_t skipped_dead;	  /* unpublished records of dead writers */
	uint64_t reclaimed;	  /* lanes freed after their owner died */
	uint64_t overrun;	  /* records a producer pushed this reader's stale head past, unread (in lost too) */
	uint64_t overruns;	  /* times it found its head pushed */
};

struct evr_cursor {
	uint64_t pos;	       /* next position to read */
	uint64_t published;    /* last head stored (R3) */
	uint64_t held;	       /* a SKIPPED reservation not yet ABANDONED, or UINT64_MAX */
	uint64_t wait_pos;     /* position the reader is waiting at */
	uint64_t wait_since;   /* CLOCK_MONOTONIC ns it started waiting there */
	uint64_t deliver_from; /* records before this were written before a "from now" attach */
	uint32_t gap_polls;    /* polls that found nothing since the writers' tail was last read */
	uint64_t evict_seen;   /* the slot-lane's evicted count already accounted for */
	int64_t overrun_due;   /* pushed past unread and not yet reported in a LOST record */
	uint32_t log_n;	       /* records returned since the head was last published (their positions: log) */
};

struct evr_reader {
	struct evr_segment *seg;
	struct evr_cursor *cur;
	uint64_t stuck_timeout_ns; /* shared-lane BUSY and unexplained gaps; default 1 s */
	struct evr_reader_stats stats;
	uint32_t slot;		   /* whose heads it reads and publishes */
	bool claimed;		   /* a claimed slot: heads go out by CAS (R3), pushes are taken (R7, R8) */
	struct evr_read_log *log;  /* claimed: per lane, what was returned since the last R3 */
};

enum evr_reader_flags { EVR_READ_FROM_OLDEST = 1u };
#define EVR_READ_LOG 32u /* records a claimed reader returns before it publishes its head */

/*
 * Starts reading every lane: from now (the lanes' tails, published as the new
 * head so writers get the whole lane), or with EVR_READ_FROM_OLDEST from what
 * the lanes still hold. Returns 0 or -ENOMEM.
 */
EVR_API int evr_reader_init(struct evr_reader *r, struct evr_segment *seg, unsigned flags);

/*
 * Starts reading every lane as the holder of slot (evr_consumer_slot_claim,
 * which placed its heads): from where the claim put them. Heads go out with
 * a CAS (R3) at each release, and after EVR_READ_LOG records. Each record is
 * checked after its copy (R8): when a producer has pushed the head past
 * unread records (the slot was stale, E2), the reader resumes where it was
 * pushed to and hands the count over as a LOST record, less what it had
 * itself returned in between. Returns 0, -EINVAL or -ENOMEM.
 */
EVR_API int evr_reader_init_slot(struct evr_reader *r, struct evr_segment *seg, uint32_t slot);

/* Stores the slot's heartbeat (K2): now on CLOCK_MONOTONIC and on the segment clock. */
EVR_API void evr_reader_heartbeat(struct evr_reader *r);
EVR_API void evr_reader_fini(struct evr_reader *r);

/*
 * Reads the next record of a lane, copying its body into buf (cap >=
 * EVR_BODY_MAX). Returns 1 with *rec filled, 0 when the lane has nothing
 * more for now. Validates every word and length; a bad one is counted and
 * stepped over, never followed outside the lane.
 */
EVR_API int evr_reader_next(struct evr_reader *r, uint32_t lane, struct evr_record *rec, void *buf, size_t cap);

/* Publishes what was read on a lane so writers may reuse it (R3). */
EVR_API void evr_reader_release(struct evr_reader *r, uint32_t lane);

/*
 * RUNS (`evring record --raw`). A run is committed records that follow one
 * another in a lane, copied out whole: commit words, bodies, padding, the
 * shared lane's tid trailers, PAD records. Its bytes are the lane's bytes
 * from run.pos on, so whoever reads it back checks every record with the
 * same rule a live reader does (evr_run_next): the tag of each commit word
 * ties it to its position, its length stays in the lane.
 */
struct evr_run {
	uint64_t pos;	  /* the lane position of its first byte (a commit word) */
	uint32_t bytes;	  /* whole records, a multiple of 8 */
	uint32_t records; /* records a reader delivers among them (THREAD included, PAD not) */
};

/*
 * Copies the run at the lane's cursor into buf (at most cap bytes, never
 * past the end of the lap) and returns 1 with *run filled, after giving the
 * run's room back to the writers (R3, as evr_reader_release): checking only
 * commit words on the way (R1 each), one copy (R2), and for a claimed slot
 * R8 after it. Returns 0 when the cursor stands at anything a run does not
 * take: nothing yet, a LOST record, a BUSY, SKIPPED or ABANDONED
 * reservation, a bad word, a record from before a "from now" attach, a push
 * to report. evr_reader_next deals with each (delivering LOST records and
 * counting what it skips), so a caller alternates:
 *
 *   while (evr_reader_next_run(r, lane, buf, cap, &run) == 1 ||
 *          evr_reader_next(r, lane, &rec, body, sizeof(body)) == 1) ...
 *
 * and keeps the reader's exact accounting: delivered + lost == written.
 * The reader's thread; -EINVAL for a lane the segment does not have.
 */
EVR_API int evr_reader_next_run(struct evr_reader *r, uint32_t lane, void *buf, size_t cap, struct evr_run *run);

/*
 * Reads the record at *off of a run (len bytes whose first is at lane
 * position pos0, in a lane of lane_bytes with this tag salt), stepping over
 * PAD records, and advances *off past it. Returns 1 with *rec filled (its
 * body points into run; lane is left to the caller), 0 at the end, or
 * -EBADMSG (*off then stays) when the bytes at *off are not a committed
 * record at that position: a word whose tag or length does not fit, a
 * reservation, a record running past len. Pure function over bytes.
 */
EVR_API int evr_run_next(const void *run, size_t len, uint64_t pos0, size_t *off, uint32_t salt, uint64_t lane_bytes,
			 struct evr_record *rec);

/*
 * Frees exclusive lanes whose owning thread is dead and whose committed
 * records have all been read (C3). Returns the number of lanes freed.
 */
EVR_API int evr_reader_reap(struct evr_reader *r);

/*
 * True unless the thread (tid 0: the process) is known to be gone or a
 * zombie. Any doubt (an unreadable /proc entry) counts as alive: a live
 * writer's lane must never be taken from it.
 */
EVR_API bool evr_owner_alive(uint64_t owner);

/* evr_owner_alive for a segment's owners; always true for a segment of another pid namespace. */
EVR_API bool evr_segment_owner_alive(const struct evr_segment *seg, uint64_t owner);

/* The inode of this process's pid namespace (0 when /proc cannot tell). */
EVR_API uint64_t evr_pidns(void);

/*
 * Field 22 of /proc/<pid>/stat (pid 0: this process): when it started, in
 * clock ticks since boot. 0 when it cannot be read (the process is gone).
 */
EVR_API uint64_t evr_proc_start_ticks(uint32_t pid);

/* ---- reclaiming the segments of dead processes ------------------------ */

/*
 * A producer that dies (a signal, _exit in a forked child) leaves its segment
 * in /dev/shm for a consumer to read after the death. evr_segment_reclaim
 * bounds what is left: among the segments of one name (the part after
 * "evring.<pid>."), those whose creator is dead (its pid is gone or a zombie,
 * or was reused by a process with another start time) are kept newest first
 * (by creation time) while at most keep_count of them and keep_bytes in all,
 * and the older ones are unlinked. Never reclaimed: another user's segment,
 * one whose creator lives, one of another pid namespace (its pids are not ours
 * to check), one with a live consumer attached, one whose header is not an
 * evring header, and spare_pid's.
 */
struct evr_reclaim_policy {
	uint32_t keep_count; /* dead segments kept per name */
	uint64_t keep_bytes; /* their bytes in all, per name */
	const char *name;    /* only this name; NULL: every name, each bounded on its own */
	uint32_t spare_pid;  /* never reclaim this pid's segments (0: none) */
	const char *dir;     /* where the shm objects are; NULL: /dev/shm */
};

struct evr_reclaim_stats {
	uint32_t dead;	      /* dead segments seen */
	uint32_t removed;     /* of those, unlinked */
	uint64_t removed_bytes;
	uint32_t errors;      /* unlinks that failed (besides one already gone) */
};

#define EVR_KEEP_DEAD_DEFAULT 8u
#define EVR_KEEP_DEAD_BYTES_DEFAULT (256ull << 20)

/*
 * The policy from EVRING_KEEP_DEAD (a count, 0 or more) and
 * EVRING_KEEP_DEAD_BYTES (a size, with K, M or G), else the defaults above.
 * Returns 0, or -EINVAL with err saying which setting is wrong (the policy
 * then holds the defaults).
 */
EVR_API int evr_reclaim_policy_from_env(struct evr_reclaim_policy *p, char *err, size_t errlen);

/* Applies p once over the directory. Returns 0 or -errno of opendir; *st (may be NULL) says what was done. */
EVR_API int evr_segment_reclaim(const struct evr_reclaim_policy *p, struct evr_reclaim_stats *st);

/* ---- consumer slot ---------------------------------------------------- */

/*
 * Takes a free consumer slot for pid (K1), or takes over one whose holder is
 * gone (its pid dead, or reused by a process with another start time), and
 * returns its index. Its heads start at the lanes' tails, or with
 * EVR_SLOT_FROM_OLDEST where the slot's last holder left them (what it left
 * unread: a reader that takes over a dead one's slot goes on from there). A pid that already holds a slot gets that one back, unless
 * EVR_SLOT_ANOTHER (a second reader in one process). Errors: -EBUSY when
 * every slot is held by a live process, with the first nholders holders'
 * pids in holders (may be NULL) and their count in *nheld.
 */
enum evr_slot_flags { EVR_SLOT_FROM_OLDEST = 1u, EVR_SLOT_ANOTHER = 2u };
EVR_API int evr_consumer_slot_claim_flags(struct evr_segment *seg, uint32_t pid, unsigned flags, uint32_t *holders,
					  uint32_t nholders, uint32_t *nheld);

/* evr_consumer_slot_claim_flags(seg, pid, 0, holder, 1, NULL): a slot index, or -EBUSY with *holder the first holder. */
EVR_API int evr_consumer_slot_claim(struct evr_segment *seg, uint32_t pid, uint32_t *holder);

/* Frees every slot pid holds. */
EVR_API void evr_consumer_slot_release(struct evr_segment *seg, uint32_t pid);

/* Frees slot k if pid holds it. */
EVR_API void evr_consumer_slot_release_one(struct evr_segment *seg, uint32_t k, uint32_t pid);

/* What a slot says of its holder, for tools. */
struct evr_slot_info {
	uint32_t pid;		  /* 0: free */
	bool alive;		  /* the holder lives (and is the process that claimed: same start time) */
	bool stale;		  /* its heartbeat is older than the segment's bound: it holds no lane back */
	uint64_t heartbeat_age_ns; /* since its last heartbeat (CLOCK_MONOTONIC) */
	uint64_t epoch;
	uint64_t evicted;	  /* records pushed past unread, all lanes */
};
EVR_API void evr_consumer_slot_info(const struct evr_segment *seg, uint32_t k, struct evr_slot_info *out);

#ifdef __cplusplus
}
#endif

#endif /* EVRING_RING_H */
