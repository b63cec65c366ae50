/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libhandoff — the VM handoff engine of qemu-handoff, behind a plain C API.
 *
 * This header is the whole boundary between QEMU (C) and the engine (C++).
 * It uses only POD types so that QEMU can include it from any C file, and
 * every function is noexcept on the C++ side: no exception ever unwinds into
 * QEMU's C frames or coroutine stacks.
 *
 * Versioning follows zstd.h: HANDOFF_VERSION_NUMBER is
 * MAJOR * 10000 + MINOR * 100 + RELEASE of the header a caller was compiled
 * against; handoff_version_number() is that of the library it runs with.
 * Within one MAJOR, functions and struct fields are only ever added.
 *
 * Structs that may grow begin with `uint32_t struct_size`, which the caller
 * sets to sizeof the struct as its own header declares it, e.g.
 *     HandoffEncoderStats st = { .struct_size = sizeof(st) };
 * so a library newer or older than the caller's header never reads or
 * writes beyond the caller's object:
 * - a struct the library reads (a config, a writer): fields beyond
 *   struct_size take their defaults; bytes beyond the fields this library
 *   knows must be zero, else HANDOFF_E_INVALID_ARGUMENT (the caller asks
 *   for something this library cannot do);
 * - a struct the library fills (stats): it writes the fields it knows that
 *   fit in struct_size and zeroes the rest of the caller's struct.
 * A struct_size below the struct's first published layout (version 0.3.0;
 * for HandoffWriter, the layout without zero_chunks) is
 * HANDOFF_E_INVALID_ARGUMENT. Version 0.3.0 is the first with struct_size:
 * callers built against 0.2 must be rebuilt. Structs without struct_size
 * (HandoffRegionSpec, HandoffRegionInfo, HandoffCodecInfo, HandoffMode)
 * never change; new needs get new functions.
 */
#ifndef HANDOFF_H
#define HANDOFF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
/* C++ callers and the engine itself see the no-throw guarantee. */
#define HANDOFF_NOEXCEPT noexcept
extern "C" {
#else
#define HANDOFF_NOEXCEPT
#endif

#define HANDOFF_VERSION_MAJOR   0
#define HANDOFF_VERSION_MINOR   9
#define HANDOFF_VERSION_RELEASE 0
#define HANDOFF_VERSION_NUMBER (HANDOFF_VERSION_MAJOR * 10000 + \
                                HANDOFF_VERSION_MINOR * 100 + \
                                HANDOFF_VERSION_RELEASE)

/* Version of the linked library, e.g. 100 for 0.1.0. */
unsigned handoff_version_number(void) HANDOFF_NOEXCEPT;

/* Version of the linked library as text, e.g. "0.1.0". Static storage. */
const char *handoff_version_string(void) HANDOFF_NOEXCEPT;

/*
 * Codecs the engine can compress frames with. The numeric values are part
 * of the stream format and never change meaning.
 */
typedef enum HandoffCodec {
    HANDOFF_CODEC_NONE = 0, /* stored */
    HANDOFF_CODEC_ZSTD = 1,
    HANDOFF_CODEC_LZMA = 2, /* liblzma, xz/lzma2 */
    HANDOFF_CODEC_ZLIB = 3,
} HandoffCodec;

/* Description of one codec as linked into this build. */
typedef struct HandoffCodecInfo {
    HandoffCodec codec;
    const char *name;            /* "zstd", "lzma", "zlib", "none" */
    const char *library;         /* "libzstd", "liblzma", "zlib", "" */
    const char *library_version; /* run-time version of that library */
    int min_level;               /* levels the engine accepts */
    int max_level;
} HandoffCodecInfo;

/* Number of codecs in this build; indexes 0..count-1 are valid below. */
size_t handoff_codec_count(void) HANDOFF_NOEXCEPT;

/*
 * Fills *info for codec number @index (0-based, in HandoffCodec order).
 * Returns 0, or -1 when @index is out of range or @info is NULL.
 * Strings point to static storage.
 */
int handoff_codec_info(size_t index, HandoffCodecInfo *info) HANDOFF_NOEXCEPT;


/* Chunk hash used for dedup, and its library's run-time version. */
const char *handoff_hash_name(void) HANDOFF_NOEXCEPT;    /* "xxh3-128" */
const char *handoff_hash_version(void) HANDOFF_NOEXCEPT; /* e.g. "0.8.1" */

/* ------------------------------------------------------------------------
 * Errors. Every function below returns 0 on success or one of these
 * negative codes; the codes are stable. handoff_error_name() names a code,
 * handoff_last_error_message() gives the detailed cause of the latest
 * failure in the calling thread (e.g. which chunk index was out of range).
 * ------------------------------------------------------------------------ */
typedef enum HandoffError {
    HANDOFF_OK = 0,
    HANDOFF_E_INVALID_ARGUMENT = -1,
    HANDOFF_E_NO_MEMORY = -2,
    HANDOFF_E_IO = -3,
    HANDOFF_E_INTERNAL = -4,
    HANDOFF_E_STATE = -5,             /* call not allowed in this state */
    HANDOFF_E_BAD_MAGIC = -10,        /* not a handoff stream */
    HANDOFF_E_UNSUPPORTED_VERSION = -11,
    HANDOFF_E_HEADER_CORRUPT = -12,   /* stream header checksum */
    HANDOFF_E_BAD_GEOMETRY = -13,     /* regions/chunk size beyond limits */
    HANDOFF_E_WRONG_BASE = -14,       /* stream made against another base */
    HANDOFF_E_GEOMETRY_MISMATCH = -15,/* stream regions differ from base's */
    HANDOFF_E_BAD_FRAME_TAG = -16,
    HANDOFF_E_FRAME_HEADER_CORRUPT = -17,
    HANDOFF_E_UNKNOWN_CODEC = -18,
    HANDOFF_E_BAD_LEVEL = -19,
    HANDOFF_E_LENGTH_LIMIT = -20,     /* a declared length beyond limits */
    HANDOFF_E_DECOMPRESS = -21,       /* codec rejected the payload */
    HANDOFF_E_SIZE_MISMATCH = -22,    /* plaintext not the declared length */
    HANDOFF_E_CHECKSUM = -23,         /* plaintext checksum mismatch */
    HANDOFF_E_BAD_RECORD = -24,       /* unknown record type or bad fields */
    HANDOFF_E_CHUNK_RANGE = -25,      /* chunk index outside the geometry */
    HANDOFF_E_BAD_BASE_REF = -26,     /* reference to a base chunk absent */
    HANDOFF_E_BAD_SELF_REF = -27,     /* reference to a chunk never sent */
    HANDOFF_E_FRAME_SEQUENCE = -28,   /* duplicate or impossible frame seq */
    HANDOFF_E_END_MISMATCH = -29,     /* end record totals disagree */
    HANDOFF_E_DIGEST = -30,           /* whole-stream digest mismatch */
    HANDOFF_E_TRUNCATED = -31,        /* stream ended before its end record */
    HANDOFF_E_TRAILING_DATA = -32,    /* bytes after the end record */
    HANDOFF_E_WRITE = -33,            /* a caller's writer failed */
    HANDOFF_E_BASE_CHANGED = -34,     /* base files differ from the index */
    HANDOFF_E_INDEX_CORRUPT = -35,
    /* Segmented streams (version 3, since 0.7.0). */
    HANDOFF_E_DUPLICATE_CHUNK = -36,  /* a second record for one chunk */
    HANDOFF_E_SEGMENT_DIGEST = -37,   /* a segment fails its SHA-256 */
    HANDOFF_E_SEGMENT_DUPLICATE = -38,/* segment applied already: dropped */
    HANDOFF_E_SEGMENT_DEPENDENCY = -39,/* a dependency not applied yet */
    HANDOFF_E_BAD_SEGMENT = -40,      /* segment table or header invalid */
    HANDOFF_E_ROOT_MISMATCH = -41,    /* table part differs from the root */
} HandoffError;

/* Stable name of an error code, e.g. "HANDOFF_E_CHECKSUM". */
const char *handoff_error_name(int code) HANDOFF_NOEXCEPT;

/* Cause of the latest failure in this thread; "" if none. */
const char *handoff_last_error_message(void) HANDOFF_NOEXCEPT;

/* ------------------------------------------------------------------------
 * Bases. A base is a set of named regions: memory regions (raw RAM, e.g.
 * "pc.ram") and disks (raw images). Its identity is a 128-bit content ID
 * over the geometry and the XXH3-128 hash of every 4 KiB chunk. The index
 * of those hashes is built once by handoff_base_create(), saved in one
 * file, and memory-mapped by handoff_base_open(): reopening never rehashes.
 * The index names its region files relative to its own directory, so a
 * base directory can be moved or copied as a whole. Opening trusts the
 * files' contents; handoff_base_verify() proves them. Region sizes must be
 * multiples of 4096.
 * ------------------------------------------------------------------------ */
#define HANDOFF_CHUNK_SIZE 4096
#define HANDOFF_MAX_REGIONS 64
#define HANDOFF_MAX_REGION_NAME 63

typedef enum HandoffRegionKind {
    HANDOFF_REGION_MEMORY = 0,
    HANDOFF_REGION_DISK = 1,
} HandoffRegionKind;

typedef struct HandoffBase HandoffBase;

typedef struct HandoffRegionSpec {
    const char *name;        /* unique, 1..63 bytes */
    HandoffRegionKind kind;
    const char *path;        /* file holding the region... */
    const void *data;        /* ...or memory, when path is NULL */
    uint64_t size;           /* bytes; with path, 0 means the file size */
} HandoffRegionSpec;

/*
 * Hashes the regions, writes the index to @index_path (unless NULL: then
 * the base lives in memory only, @data regions must outlive it) and returns
 * the opened base. With an index, every region is a file inside the
 * directory that holds @index_path, symbolic links resolved (else
 * HANDOFF_E_INVALID_ARGUMENT), recorded by its path relative to that
 * directory (e.g. "disk.raw", "memory/0.raw") and its size.
 */
int handoff_base_create(const HandoffRegionSpec *regions, size_t count,
                        const char *index_path,
                        HandoffBase **out) HANDOFF_NOEXCEPT;

/*
 * Opens a base from its index file, mapping index and region files. The
 * region files are opened beneath the index's directory, following no
 * symbolic link, and must be regular files of their recorded size
 * (HANDOFF_E_BASE_CHANGED otherwise); the content ID is recomputed from
 * the index's chunk hashes (HANDOFF_E_INDEX_CORRUPT when it differs).
 * Costs no read of the region files: their contents are trusted until
 * handoff_base_verify() checks them. Version 1 indexes (absolute paths)
 * are refused with HANDOFF_E_UNSUPPORTED_VERSION: re-create the base.
 */
int handoff_base_open(const char *index_path,
                      HandoffBase **out) HANDOFF_NOEXCEPT;

/*
 * @base with @count regions appended that the base VM did not have (a
 * data disk attached after the base was saved), which read as zeros in
 * it: their chunks travel like any other, as zero runs, references or
 * data. @extra gives each one's name (not one of the base's), kind and
 * size; path and data must be NULL. The ID is derived from @base's and
 * the extra regions' kinds, names and sizes, in order
 * (docs/stream-format.md): both ends must extend the same base by the
 * same regions, or the destination refuses the stream (WRONG_BASE).
 * @base must outlive *@out; free both with handoff_base_free. Verifying
 * the result verifies @base.
 */
int handoff_base_extend(const HandoffBase *base,
                        const HandoffRegionSpec *extra, size_t count,
                        HandoffBase **out) HANDOFF_NOEXCEPT;

/*
 * Reads every byte of every region again, hashes each chunk (on as many
 * threads as cores, up to HANDOFF_MAX_THREADS) and compares it with the
 * index. Returns 0 when all match; HANDOFF_E_BASE_CHANGED when a file's
 * size changed or chunks differ, the message naming the region, its file,
 * the first differing chunk and how many differ. Cost: one read of the
 * whole base, about what creating it cost. Call it before trusting a base
 * that others could have written (a changed file with its old size and
 * modification time opens without complaint).
 */
int handoff_base_verify(const HandoffBase *base) HANDOFF_NOEXCEPT;

void handoff_base_free(HandoffBase *base) HANDOFF_NOEXCEPT;

typedef struct HandoffRegionInfo {
    const char *name;        /* valid while the base lives */
    HandoffRegionKind kind;
    uint64_t size;
} HandoffRegionInfo;

size_t handoff_base_region_count(const HandoffBase *base) HANDOFF_NOEXCEPT;
int handoff_base_region_info(const HandoffBase *base, size_t index,
                             HandoffRegionInfo *info) HANDOFF_NOEXCEPT;
/* Copies the 16-byte content ID. */
int handoff_base_id(const HandoffBase *base,
                    uint8_t id[16]) HANDOFF_NOEXCEPT;
/* Copies @len bytes at @offset of base region @region into @buf, e.g. to
 * initialise a destination image or a VM's RAM before decoding: read from
 * the file the base opened (pread: no page fault per 4 KiB of a mapping),
 * so that a file cut short since gives HANDOFF_E_BASE_CHANGED. */
int handoff_base_read(const HandoffBase *base, size_t region, uint64_t offset,
                      void *buf, size_t len) HANDOFF_NOEXCEPT;
/* Chunks indexed (all) and distinct non-zero contents among them. */
int handoff_base_counts(const HandoffBase *base, uint64_t *chunks,
                        uint64_t *distinct) HANDOFF_NOEXCEPT;

/*
 * File of region @index as the index records it: relative to the index's
 * directory (as given to handoff_base_create when nothing was saved); ""
 * for a region in memory; NULL when @index is out of range. Valid while
 * the base lives.
 */
const char *handoff_base_region_file(const HandoffBase *base,
                                     size_t index) HANDOFF_NOEXCEPT;

/*
 * The bytes of region @index (handoff_base_region_info gives the size),
 * read-only and mapped from the file the base opened: copying from here
 * reads exactly what the engine encodes and decodes against, with no path
 * to open again. NULL when @index is out of range. Valid while the base
 * lives.
 */
const void *handoff_base_region_data(const HandoffBase *base,
                                     size_t index) HANDOFF_NOEXCEPT;

/* ------------------------------------------------------------------------
 * Encoder: turns the chunks of a modified VM into a stream (format in
 * docs/stream-format.md). The caller submits 4 KiB chunks of the regions of
 * the base geometry, pulls encoded bytes and reports network progress; the
 * encoder picks per chunk ZERO, SAME (nothing sent), BASE_REF, SELF_REF or
 * data, and compresses data in frames on worker threads with the mode its
 * controller chooses (or a fixed one).
 *
 * Threads: begin_iteration, submit, submit_many, flush and finish belong to
 * one producer thread at a time; pull, pull_wait, done, report_network and
 * stats may be called from any thread, concurrently with the producer.
 * A submit waits only while the workers hold queue_frames frames (about
 * one frame's compression time), or, with max_pending_bytes, for the link.
 * ------------------------------------------------------------------------ */
typedef struct HandoffEncoder HandoffEncoder;

typedef enum HandoffDelta {
    HANDOFF_DELTA_NONE = 0,    /* raw chunk bytes */
    HANDOFF_DELTA_XOR = 1,     /* XOR with the same-offset base chunk, per
                                  chunk when it has more zero words */
    HANDOFF_DELTA_PREFIX = 2,  /* zstd only: frame compressed against the
                                  same-offset base chunks ("patch-from") */
} HandoffDelta;

typedef struct HandoffMode {
    HandoffCodec codec;
    int level;
    HandoffDelta delta;
} HandoffMode;

/*
 * Compression modes by name, the one spelling every user of the engine
 * shares: "none", "CODEC-LEVEL" ("zstd-3", "lzma-0", "zlib-6"), with
 * "+xor" or "+prefix" for a delta against the base ("zstd-1+xor").
 * handoff_mode_name writes at most @capacity bytes with the NUL and
 * returns the name's length (HANDOFF_E_INVALID_ARGUMENT if it does not
 * fit); handoff_mode_parse fills @mode, or returns
 * HANDOFF_E_INVALID_ARGUMENT with handoff_last_error_message() naming
 * what is wrong (e.g. the codec's level range).
 */
int handoff_mode_name(const HandoffMode *mode, char *buf,
                      size_t capacity) HANDOFF_NOEXCEPT;
int handoff_mode_parse(const char *text, HandoffMode *mode) HANDOFF_NOEXCEPT;

/* Most worker threads the engine starts for one task (encoder workers,
 * base hashing). A thread that cannot start is reported as
 * HANDOFF_E_NO_MEMORY ("cannot start worker thread"), never a crash. */
#define HANDOFF_MAX_THREADS 64

/* A chunk: chunk @chunk_index of region @region. */
typedef struct HandoffChunkRef {
    uint32_t region;
    uint64_t chunk_index;
} HandoffChunkRef;

/* Segmented streams (stream version 3, docs/stream-format.md): remote
 * records (data, self references) travel in segments of at most this many
 * bytes, each authenticated by the SHA-256 the table part lists; the
 * table part is authenticated by its own SHA-256, the root. */
#define HANDOFF_SEGMENT_MAX_BYTES 65536
#define HANDOFF_ROOT_SIZE 32

/*
 * Since 0.8.0. Reads an order file (docs/overlay-format.md, "Working-set
 * order": "REGION INDEX [NS]" per line, '#' comments; what QEMU's
 * handoff-record-stop writes) against @base's regions, for
 * HandoffEncoderConfig.order: the one reader of the format, used by
 * `qemu-handoff encode --order` and by QEMU. On success *@refs (free it
 * with handoff_chunk_refs_free; NULL when *@count is 0) holds the
 * entries in file order. The file is untrusted: lines longer than 128
 * bytes, malformed lines, regions @base lacks, chunks past their region
 * and more entries than @base has chunks are refused
 * (HANDOFF_E_INVALID_ARGUMENT), as is a file that is not a regular one
 * or cannot be read (HANDOFF_E_IO); handoff_last_error_message() names
 * "PATH:LINE: cause".
 */
int handoff_order_file_read(const HandoffBase *base, const char *path,
                            HandoffChunkRef **refs, size_t *count)
    HANDOFF_NOEXCEPT;
void handoff_chunk_refs_free(HandoffChunkRef *refs) HANDOFF_NOEXCEPT;

typedef struct HandoffEncoderConfig {
    uint32_t struct_size;    /* sizeof(HandoffEncoderConfig), see above */
    unsigned threads;        /* compression workers, at most
                                HANDOFF_MAX_THREADS; 0 = number of cores */
    int adaptive;            /* 1: controller picks modes; 0: use @mode */
    HandoffMode mode;        /* fixed mode, or the starting one */
    uint32_t frame_bytes;    /* input per frame; 0 = 256 KiB */
    uint32_t queue_frames;   /* frames in flight; 0 = 2 * threads + 2 */
    uint64_t seed;           /* random order seed */
    /* Back-pressure from the link: when non-zero, submitting blocks while
     * more than this many encoded bytes wait to be pulled, so that modes
     * are chosen for data about to be sent, not for a backlog. Only for
     * callers that pull from another thread (0 = never block on it). */
    uint64_t max_pending_bytes;
    /* 1 (default): chunks equal to zeros, to any base chunk or to a chunk
     * already sent become ZERO, BASE_REF and SELF_REF records. 0: every
     * modified chunk is sent as data (only SAME remains), e.g. to measure
     * what dedup saves. */
    int dedup;
    /* 1 (default): modes may encode chunks as deltas against the base
     * (XOR, zstd prefix). 0: never; the adaptive controller then chooses
     * among modes without delta, and a fixed @mode with a delta is
     * refused (HANDOFF_E_INVALID_ARGUMENT). */
    int allow_delta;
    /* Since 0.7.0. 1: write a segmented stream (version 3) instead of
     * version 2. The state is taken as one version (a paused VM): every
     * chunk is submitted at most once (a second time, or inside a zero
     * run, is HANDOFF_E_DUPLICATE_CHUNK), the stream is laid out at
     * finish (the encoder holds every submitted chunk that differs from
     * its base until then) and @mode is used throughout (adaptive is
     * ignored; frames never use more than one segment). Iterations are
     * accepted and carry no meaning. */
    int segmented;
    /* Since 0.7.0, segmented only: the chunks whose data goes first, in
     * this order (e.g. a recorded working set); the rest follows by
     * address, memory regions before disks. Chunks that need no data
     * (zero, unchanged, equal to a base chunk) are skipped, and so is a
     * chunk listed again. Each entry must lie inside the geometry
     * (HANDOFF_E_INVALID_ARGUMENT). Read during handoff_encoder_create
     * only: the array need not outlive it. */
    const HandoffChunkRef *order;
    size_t order_count;
} HandoffEncoderConfig;

/* Fills @config with defaults (adaptive zstd-1, all cores, 256 KiB),
 * keeping config->struct_size, which the caller sets first. Returns 0 or
 * HANDOFF_E_INVALID_ARGUMENT (NULL, or struct_size too small). */
int handoff_encoder_config_default(HandoffEncoderConfig *config)
    HANDOFF_NOEXCEPT;

/* Whether compression may use deltas against the base (XOR, zstd prefix),
 * and what a mode naming none means: the @deltas of the call below. */
typedef enum HandoffDeltaPolicy {
    /* Never: "auto" chooses among modes without a delta, a mode naming
     * one is refused. QEMU's handoff-delta off. */
    HANDOFF_DELTAS_OFF = 0,
    /* Allowed, and a mode naming no delta gets XOR unless its codec is
     * none ("zstd-3" runs as "zstd-3+xor"). QEMU's handoff-delta on. */
    HANDOFF_DELTAS_ON = 1,
    /* Allowed, and a mode runs exactly as named ("zstd-3" without a
     * delta): qemu-handoff encode --codec, bench --modes. */
    HANDOFF_DELTAS_AS_NAMED = 2,
} HandoffDeltaPolicy;

/*
 * The engine's compression policy, one call for a compression setting and
 * a delta setting (QEMU's handoff-compression and handoff-delta): sets
 * config->adaptive, config->mode and config->allow_delta, and no other
 * field, so call it after handoff_encoder_config_default.
 * - @compression "auto" or NULL: adaptive = 1, the controller choosing
 *   modes from the one handoff_encoder_config_default starts in;
 * - a mode name as handoff_mode_parse reads it: adaptive = 0, that mode
 *   throughout, with XOR added as @deltas says;
 * - allow_delta = (@deltas != HANDOFF_DELTAS_OFF).
 * @deltas is a HandoffDeltaPolicy, passed as int so that any value a
 * caller gives is read safely (and refused unless it is one of them).
 * Returns 0, or HANDOFF_E_INVALID_ARGUMENT with @config unchanged and
 * handoff_last_error_message() naming the cause: NULL @config or a
 * struct_size below the first layout; a name handoff_mode_parse refuses
 * (its message, e.g. "mode 'zstd-20': zstd levels are 1..19"); a mode
 * naming a delta under HANDOFF_DELTAS_OFF ("mode zstd-3+xor uses a delta,
 * and deltas are not allowed", as handoff_encoder_create says of such a
 * config); an unknown @deltas.
 */
int handoff_encoder_config_set_compression(HandoffEncoderConfig *config,
                                           const char *compression,
                                           int deltas) HANDOFF_NOEXCEPT;

/* @base must outlive the encoder. The stream header is queued at once. */
int handoff_encoder_create(const HandoffBase *base,
                           const HandoffEncoderConfig *config,
                           HandoffEncoder **out) HANDOFF_NOEXCEPT;

/* Starts iteration @iteration (> previous). Iteration 0 is implicit. */
int handoff_encoder_begin_iteration(HandoffEncoder *enc,
                                    uint32_t iteration) HANDOFF_NOEXCEPT;

/* Submits one 4 KiB chunk: @data is its current content. It is copied once
 * before anything is decided, so a guest writing it concurrently yields a
 * consistent (if outdated) chunk; resubmit it when it is dirty again. */
int handoff_encoder_submit(HandoffEncoder *enc, uint32_t region,
                           uint64_t chunk_index,
                           const void *data) HANDOFF_NOEXCEPT;

/*
 * Submits chunks @indexes[0..count) of a region whose contents start at
 * @region_data (chunk i at region_data + i * 4096). With @random_order, the
 * chunks are sent in a permutation seeded by (seed, iteration, region).
 */
int handoff_encoder_submit_many(HandoffEncoder *enc, uint32_t region,
                                const void *region_data,
                                const uint64_t *indexes, size_t count,
                                int random_order) HANDOFF_NOEXCEPT;

/*
 * Chunks [@first_chunk, @first_chunk + @count) of @region read as zeros now
 * (e.g. a disk range the guest discarded, which its qcow2 overlay turned
 * into zero clusters): one record for the run, nothing read. Ordered like
 * submit: a chunk submitted later wins, one submitted earlier is
 * superseded. The caller must know the chunks are zero: the encoder does
 * not look. The destination gets them through HandoffWriter.zero_chunks.
 */
int handoff_encoder_submit_zero_run(HandoffEncoder *enc, uint32_t region,
                                    uint64_t first_chunk,
                                    uint64_t count) HANDOFF_NOEXCEPT;

/* Closes the frame being filled so that its chunks leave now (e.g. at the
 * end of an iteration) instead of when the frame is full. */
int handoff_encoder_flush(HandoffEncoder *enc) HANDOFF_NOEXCEPT;

/* Ends the stream: flushes pending chunks and queues the end record. */
int handoff_encoder_finish(HandoffEncoder *enc) HANDOFF_NOEXCEPT;

/*
 * Copies up to @capacity encoded bytes to @buf and sets *@produced. Never
 * blocks: 0 bytes means nothing is ready yet (workers still compressing)
 * or, after finish, that the stream is complete (see handoff_encoder_done).
 */
int handoff_encoder_pull(HandoffEncoder *enc, void *buf, size_t capacity,
                         size_t *produced) HANDOFF_NOEXCEPT;

/* Like pull, but waits until bytes are ready, the stream is complete, or
 * no frame is being compressed (then more bytes need more submissions or a
 * flush, and waiting would never end): 0 bytes is then returned. */
int handoff_encoder_pull_wait(HandoffEncoder *enc, void *buf,
                              size_t capacity,
                              size_t *produced) HANDOFF_NOEXCEPT;

/* 1 once finished and every byte has been pulled. */
int handoff_encoder_done(const HandoffEncoder *enc) HANDOFF_NOEXCEPT;

/* Segmented encoders, after finish: the SHA-256 of the stream's table
 * part, which a receiver passes to handoff_decoder_load_table to
 * authenticate the whole stream. HANDOFF_E_STATE before finish or for a
 * version 2 encoder. */
int handoff_encoder_segment_root(const HandoffEncoder *enc,
                                 uint8_t root[HANDOFF_ROOT_SIZE])
    HANDOFF_NOEXCEPT;

/*
 * Network progress: @bytes_sent in total so far, at time @now_ns of any
 * steadily advancing nanosecond clock (only differences between reports
 * are used). Drives the bandwidth estimate of the adaptive controller.
 */
int handoff_encoder_report_network(HandoffEncoder *enc, uint64_t bytes_sent,
                                   uint64_t now_ns) HANDOFF_NOEXCEPT;

/*
 * Network progress for callers whose pulled bytes wait in a queue of their
 * own before the link, e.g. a socket's send buffer: @bytes_sent of them
 * have left so far, @bytes_queued have been pulled but not left yet (on a
 * TCP socket, SIOCOUTQ). Pulling eagerly hides the backlog from the
 * encoder; this tells the controller when the link, not compression, is
 * the bottleneck, so that it reads the link's capacity from what the link
 * carried instead of probing beyond it.
 */
int handoff_encoder_report_link(HandoffEncoder *enc, uint64_t bytes_sent,
                                uint64_t bytes_queued,
                                uint64_t now_ns) HANDOFF_NOEXCEPT;

/* How each chunk was sent: the indexes of the per-kind counters in the
 * stats below. The arrays have HANDOFF_REC_SLOTS entries so that a new
 * kind never moves the fields after them; HANDOFF_REC_KINDS are in use. */
enum {
    HANDOFF_REC_ZERO = 0,
    HANDOFF_REC_SAME = 1,     /* nothing on the wire */
    HANDOFF_REC_BASE_REF = 2,
    HANDOFF_REC_SELF_REF = 3,
    HANDOFF_REC_DATA = 4,
    HANDOFF_REC_ZERO_RUN = 5, /* zero runs: the encoder counts the chunks
                                 of handoff_encoder_submit_zero_run, the
                                 decoder the records with the RUN flag */
    HANDOFF_REC_KINDS = 6,
    HANDOFF_REC_SLOTS = 16,
};

typedef struct HandoffEncoderStats {
    uint32_t struct_size;                 /* sizeof(HandoffEncoderStats) */
    uint64_t chunks[HANDOFF_REC_SLOTS];   /* chunks per record kind */
    uint64_t xor_chunks;                  /* DATA chunks sent as XOR */
    uint64_t input_bytes;                 /* chunks submitted * 4096 */
    uint64_t plain_bytes;                 /* frame plaintext produced */
    uint64_t output_bytes;                /* stream bytes produced */
    uint64_t frames;
    uint64_t mode_switches;
    HandoffMode mode;                     /* current mode */
    double ratio;                         /* output_bytes / input_bytes */
    double bandwidth_bps;                 /* controller's estimate, bytes/s */
    double predicted_bps;                 /* input bytes/s of current mode */
    double worker_cpu_seconds;            /* CPU time spent in frame coding */
    uint64_t pending_bytes;               /* encoded, not yet pulled */
    uint64_t unencoded_bytes;             /* frame plaintext with the
                                             workers, not yet encoded */
    /* Since 0.9.0. Bytes/s the link is known to carry: what it carried
     * the last time it was the bottleneck (the sender backlogged), or
     * what it delivered over the last window if that was more; 0 before
     * any link report. Never a probe: bandwidth_bps doubles while the
     * sender starves the link, to find its capacity for the codec
     * choice, so it overstates what the link carries near a handoff's
     * end, when little is left to send. What a downtime estimate should
     * price the last bytes at. */
    double link_bps;
} HandoffEncoderStats;

/*
 * Stream bytes the encoder is still to deliver if the caller submits
 * @chunks_to_submit more chunks: those priced at what the chunks sent so
 * far cost, plus the plaintext the workers hold (at the frames' ratio so
 * far) and the bytes waiting to be pulled. An estimate for switch-over
 * decisions; what already left the encoder (e.g. a socket's queue) is the
 * caller's to add. Pure: reads only @stats; UINT64_MAX when @stats is NULL
 * or its struct_size is invalid.
 */
uint64_t handoff_encoder_remaining_bytes(const HandoffEncoderStats *stats,
                                         uint64_t chunks_to_submit)
    HANDOFF_NOEXCEPT;

int handoff_encoder_stats(const HandoffEncoder *enc,
                          HandoffEncoderStats *stats) HANDOFF_NOEXCEPT;

/* Controller decision log as text, one line per decision:
 * "t_s bandwidth_Bps codec level delta predicted_Bps". Static until the
 * next call on this encoder. */
const char *handoff_encoder_decision_log(HandoffEncoder *enc)
    HANDOFF_NOEXCEPT;

void handoff_encoder_free(HandoffEncoder *enc) HANDOFF_NOEXCEPT;

/* ------------------------------------------------------------------------
 * Decoder: validates everything and applies records to the destination,
 * which starts as a copy of the base. Either caller memory (one buffer per
 * region) or writer callbacks receive whole chunks. Any error is sticky:
 * later calls return it again. After an error the destination may hold
 * part of the stream. One thread at a time per decoder.
 * ------------------------------------------------------------------------ */
typedef struct HandoffDecoder HandoffDecoder;

typedef struct HandoffWriter {
    uint32_t struct_size;    /* sizeof(HandoffWriter), see the top */
    void *opaque;
    /* Write/read 4096 bytes of chunk @chunk_index of @region. 0 on success.
     * read is needed for self references (reading back a sent chunk). */
    int (*write_chunk)(void *opaque, uint32_t region, uint64_t chunk_index,
                       const void *data);
    int (*read_chunk)(void *opaque, uint32_t region, uint64_t chunk_index,
                      void *data);
    /* Optional (NULL: write_chunk with zeros, chunk by chunk). Chunks
     * [first_chunk, first_chunk + count) of @region must read as zeros
     * afterwards; a disk writer may deallocate them, so that the
     * destination's image stays as sparse as the source's. */
    int (*zero_chunks)(void *opaque, uint32_t region, uint64_t first_chunk,
                       uint64_t count);
} HandoffWriter;

/* @base must outlive the decoder. Exactly one of @writer or @memory: with
 * @memory, memory[r] holds region r of the base geometry (same sizes). */
int handoff_decoder_create(const HandoffBase *base,
                           const HandoffWriter *writer, void *const *memory,
                           HandoffDecoder **out) HANDOFF_NOEXCEPT;

/* Feeds the next @len stream bytes, applying complete frames. */
int handoff_decoder_feed(HandoffDecoder *dec, const void *data,
                         size_t len) HANDOFF_NOEXCEPT;

/*
 * Applies one whole frame given on its own, in any order relative to the
 * other frames (after the header was fed). Newer records win. The stream
 * digest is then not verifiable; the end record, fed with
 * handoff_decoder_feed, still checks the totals.
 *
 * Out of order, the decoder keeps superseded data versions that a frame
 * still to come may reference, and self references waiting for a version
 * still to come. A kept version is dropped once every frame before the
 * one that superseded it has arrived. What is kept may not exceed
 * HANDOFF_DECODER_MAX_HELD_BYTES (HANDOFF_E_LENGTH_LIMIT): deliver frames
 * close to stream order.
 */
#define HANDOFF_DECODER_MAX_HELD_BYTES (64ull << 20)

int handoff_decoder_apply_frame(HandoffDecoder *dec, const void *frame,
                                size_t len) HANDOFF_NOEXCEPT;

/*
 * Segmented streams (version 3): the table part first, then segments in
 * any order that applies each after its dependencies. A segmented stream
 * fed whole with handoff_decoder_feed is read this way too, in file order
 * (then without a root).
 *
 * load_table takes the whole table part (handoff_segment_table_length
 * says how long it is) and its @root, which must not be NULL
 * (HANDOFF_E_INVALID_ARGUMENT): the table part's SHA-256 must equal it
 * (HANDOFF_E_ROOT_MISMATCH), checked before any field is read. Then the
 * table is checked and its local records (zeros, base references) are
 * applied through the writer. Only then is every segment applied
 * authenticated; handoff_decoder_feed checks no root.
 */
int handoff_decoder_load_table(HandoffDecoder *dec, const void *table,
                               size_t len,
                               const uint8_t root[HANDOFF_ROOT_SIZE])
    HANDOFF_NOEXCEPT;

/*
 * Applies segment @number, @len bytes as stored. Checked in this order
 * before any writer callback for it: @number below the table's count
 * (HANDOFF_E_BAD_SEGMENT); not applied already (HANDOFF_E_SEGMENT_DUPLICATE:
 * the bytes are dropped and the decoder goes on); @len equal to the
 * table's length (HANDOFF_E_LENGTH_LIMIT); SHA-256 equal to the table's
 * (HANDOFF_E_SEGMENT_DIGEST, the message naming "segment K of N (offset
 * O)"); every dependency applied (HANDOFF_E_SEGMENT_DEPENDENCY, naming
 * them; nothing is kept, and the decoder goes on: apply them, then this
 * one again). Its frames are then decoded with the checks of version 2
 * frames; a chunk given a second record is HANDOFF_E_DUPLICATE_CHUNK.
 * Self references are resolved from pinned data versions, which the
 * decoder holds (counted in held_bytes) until the last segment that may
 * reference them is applied: it never reads the destination.
 * All errors but the two named as going on are sticky.
 */
int handoff_decoder_apply_segment(HandoffDecoder *dec, uint32_t number,
                                  const void *bytes,
                                  size_t len) HANDOFF_NOEXCEPT;

/* Checks that the stream was complete and every reference resolved (for
 * a segmented stream: every segment applied, else HANDOFF_E_TRUNCATED
 * naming the first missing one). */
int handoff_decoder_finish(HandoffDecoder *dec) HANDOFF_NOEXCEPT;

typedef struct HandoffDecoderStats {
    uint32_t struct_size;                 /* sizeof(HandoffDecoderStats) */
    uint64_t records[HANDOFF_REC_SLOTS];  /* per kind (SAME is 0) */
    uint64_t stale_records;               /* lost to a newer version */
    uint64_t frames;
    uint64_t stream_bytes;
    uint64_t plain_bytes;
    uint32_t iteration;                   /* highest seen */
    uint64_t held_bytes;                  /* kept for frames out of order
                                             or pinned for segments still
                                             to come (estimate), at most
                                             HANDOFF_DECODER_MAX_HELD_BYTES */
} HandoffDecoderStats;

int handoff_decoder_stats(const HandoffDecoder *dec,
                          HandoffDecoderStats *stats) HANDOFF_NOEXCEPT;

void handoff_decoder_free(HandoffDecoder *dec) HANDOFF_NOEXCEPT;

/*
 * Splits a stream in memory into its parts without decoding: on success
 * *@header_len is the header size, and for each frame (up to @max_frames)
 * offsets[i]/lengths[i] locate it; *@frame_count is the number of frames,
 * and the end record follows the last. For tools and tests.
 */
int handoff_stream_split(const void *stream, size_t len, size_t *header_len,
                         size_t *offsets, size_t *lengths, size_t max_frames,
                         size_t *frame_count) HANDOFF_NOEXCEPT;

/* ------------------------------------------------------------------------
 * Segment tables: reading the table part of a segmented stream without a
 * decoder, to find and order its segments (tools, senders, tests).
 * ------------------------------------------------------------------------ */

/* Length of the table part that starts at @prefix (@len bytes of it at
 * hand): 0, or HANDOFF_E_TRUNCATED when more bytes are needed to tell
 * (*@table_len is then the number needed so far), or the error of a
 * header that is not a version 3 stream's. */
int handoff_segment_table_length(const void *prefix, size_t len,
                                 uint64_t *table_len) HANDOFF_NOEXCEPT;

typedef struct HandoffSegmentTable HandoffSegmentTable;

/* Checks and parses a whole table part, against @root unless NULL, as
 * handoff_decoder_load_table does (without applying anything). */
int handoff_segment_table_open(const void *table, size_t len,
                               const uint8_t root[HANDOFF_ROOT_SIZE],
                               HandoffSegmentTable **out) HANDOFF_NOEXCEPT;

/* Segments the table lists; 0 for NULL. */
uint32_t handoff_segment_table_count(const HandoffSegmentTable *table)
    HANDOFF_NOEXCEPT;

/* Entry @number: where the segment is (@offset from the end of the table
 * part, which is the table's length), its stored length, SHA-256 and
 * dependencies (up to @max_deps written to @deps; *@dep_count is their
 * number, at most 65535). Any output pointer may be NULL. */
int handoff_segment_table_entry(const HandoffSegmentTable *table,
                                uint32_t number, uint64_t *offset,
                                uint32_t *length,
                                uint8_t sha256[HANDOFF_ROOT_SIZE],
                                uint32_t *deps, size_t max_deps,
                                size_t *dep_count) HANDOFF_NOEXCEPT;

/* Where a chunk's record is, by the table's chunk index: the values are
 * part of the format (docs/stream-format.md, "Chunk index"). */
typedef enum HandoffChunkPlace {
    HANDOFF_CHUNK_BASE = 0,   /* no record: the base's bytes */
    HANDOFF_CHUNK_LOCAL = 1,  /* a local record (zeros, base reference) in
                                 the table part */
    HANDOFF_CHUNK_REMOTE = 2, /* a data or self reference record in a
                                 segment */
} HandoffChunkPlace;

/* Looks chunk @chunk_index of @region up in the index (O(log extents)):
 * *@place a HandoffChunkPlace, *@segment its segment when remote (else
 * 0). HANDOFF_E_INVALID_ARGUMENT outside the geometry. */
int handoff_segment_table_locate(const HandoffSegmentTable *table,
                                 uint32_t region, uint64_t chunk_index,
                                 int *place,
                                 uint32_t *segment) HANDOFF_NOEXCEPT;

void handoff_segment_table_free(HandoffSegmentTable *table) HANDOFF_NOEXCEPT;

#ifdef __cplusplus
}
#endif

#endif /* HANDOFF_H */
