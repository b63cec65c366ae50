/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Shared helpers of the engine's CUnit tests: synthetic bases and images
 * with a known mix of chunk kinds, and whole-stream encode/decode.
 */
#ifndef HANDOFF_TEST_SUPPORT_H
#define HANDOFF_TEST_SUPPORT_H

#include "handoff.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CHUNK HANDOFF_CHUNK_SIZE

/* Two regions: "pc.ram" (memory) and "disk0" (disk), @chunks each. */
typedef struct TestVm {
    uint64_t chunks;
    uint8_t *mem;
    uint8_t *disk;
} TestVm;

void test_vm_alloc(TestVm *vm, uint64_t chunks);
void test_vm_free(TestVm *vm);
void test_vm_copy(TestVm *dst, const TestVm *src);
int test_vm_equal(const TestVm *a, const TestVm *b);

/* Fills a chunk with text-like bytes unique to @tag. */
void fill_text(uint8_t *chunk, uint64_t tag);
/* Fills a chunk with pseudo-random bytes unique to @tag. */
void fill_random(uint8_t *chunk, uint64_t tag);

/* A base whose chunks are all distinct and non-zero. */
void test_make_base_vm(TestVm *vm, uint64_t chunks, uint64_t seed);
HandoffBase *test_base_from_vm(const TestVm *vm);

/* A copy of @base (TEST_MIXED_CHUNKS chunks per region) with the mix the
 * comments of test_make_mixed_vm document: per region, of 256 chunks,
 * 32 ZERO, 160 SAME, 64 BASE_REF, 48 SELF_REF and 208 DATA in all. */
#define TEST_MIXED_CHUNKS 256
void test_make_mixed_vm(TestVm *vm, const TestVm *base);

/* Encodes one iteration submitting every chunk of both regions. */
int test_submit_all(HandoffEncoder *enc, const TestVm *vm, int random_order);
/* Pulls every remaining byte after finish; returns malloc'd stream. */
uint8_t *test_pull_all(HandoffEncoder *enc, size_t *len);

/* Decodes @stream over a copy of @base into @out (allocated). */
int test_decode(HandoffBase *base, const TestVm *base_vm, const uint8_t *stream,
                size_t len, TestVm *out);

/* Segmented streams (version 3): encodes every chunk of @vm with @cfg
 * (made segmented here) in one call; returns the malloc'd stream and its
 * root, or NULL. */
uint8_t *test_encode_segmented(HandoffBase *base, const HandoffEncoderConfig *cfg,
                               const TestVm *vm, size_t *len,
                               uint8_t root[HANDOFF_ROOT_SIZE]);

/* Every chunk of a TestVm of @chunks per region, by address, memory
 * first: as an order input it keeps the writer's layout by address,
 * self references included (malloc'd, 2 * @chunks entries). */
HandoffChunkRef *test_address_order(uint64_t chunks);

/* A segmented stream's table, opened from the stream in memory. */
typedef struct TestSegments {
    HandoffSegmentTable *table;
    size_t table_len;
    uint32_t count;
} TestSegments;

int test_segments_open(const uint8_t *stream, size_t len, TestSegments *out);
/* Where segment @k is in @stream and its *@length. */
const uint8_t *test_segment(const TestSegments *segs, const uint8_t *stream,
                            uint32_t k, uint32_t *length);
/* Its dependencies (up to 64) in @deps; returns their number. */
size_t test_segment_deps(const TestSegments *segs, uint32_t k,
                         uint32_t deps[64]);

/* A decoder with writer callbacks over a copy of the base, counting the
 * writes and reads (a segmented decoder must never read). */
typedef struct TestDestination {
    TestVm image;
    HandoffDecoder *dec;
    unsigned writes;
    unsigned reads;
} TestDestination;

int test_destination_open(TestDestination *d, HandoffBase *base,
                          const TestVm *base_vm);
void test_destination_close(TestDestination *d);

/* Runs `cd @dir && <printf-formatted command>` with system(3). */
int test_shell_in(const char *dir, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Runs the registered suites verbosely, cleans the registry up and
 * returns main()'s exit code: non-zero when a test, an assertion or a
 * suite's setup failed (a suite whose setup failed ran nothing).
 */
int test_run_registry(void);

#ifdef __cplusplus
}
#endif

#endif
