/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Segmented streams (version 3) through the C API: the image a segmented
 * stream gives equals the one a version 2 stream of the same state gives,
 * byte for byte, whether it is fed whole, or its segments are applied in
 * every order that respects their dependencies, or in random "demand"
 * orders (a segment with its missing dependencies first). The decoder
 * never reads the destination back, and holds nothing at the end.
 */
#include "handoff.h"
#include "test_support.h"

#include <CUnit/Basic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N TEST_MIXED_CHUNKS

static TestVm base_vm;
static HandoffBase *base;
static TestVm mixed_vm;
static TestVm v2_image;  /* what a version 2 stream of mixed_vm decodes to */

static int init_suite(void)
{
    HandoffEncoderConfig cfg = { .struct_size = sizeof(cfg) };
    HandoffEncoder *enc = NULL;
    uint8_t *stream;
    size_t len = 0;
    int rc;

    test_make_base_vm(&base_vm, N, 1);
    base = test_base_from_vm(&base_vm);
    if (base == NULL) {
        return 1;
    }
    test_make_mixed_vm(&mixed_vm, &base_vm);
    handoff_encoder_config_default(&cfg);
    if (handoff_encoder_create(base, &cfg, &enc) != 0 ||
        test_submit_all(enc, &mixed_vm, 0) != 0 ||
        handoff_encoder_finish(enc) != 0) {
        return 1;
    }
    stream = test_pull_all(enc, &len);
    handoff_encoder_free(enc);
    rc = test_decode(base, &base_vm, stream, len, &v2_image);
    free(stream);
    return rc != 0 || !test_vm_equal(&v2_image, &mixed_vm);
}

static int clean_suite(void)
{
    handoff_base_free(base);
    test_vm_free(&base_vm);
    test_vm_free(&mixed_vm);
    test_vm_free(&v2_image);
    return 0;
}

static HandoffEncoderConfig config_for(HandoffCodec codec, int level,
                                       HandoffDelta delta)
{
    HandoffEncoderConfig cfg = { .struct_size = sizeof(cfg) };

    handoff_encoder_config_default(&cfg);
    cfg.adaptive = 0;
    cfg.mode.codec = codec;
    cfg.mode.level = level;
    cfg.mode.delta = delta;
    return cfg;
}

typedef TestDestination Destination;

static void dest_open(Destination *d)
{
    CU_ASSERT_EQUAL_FATAL(test_destination_open(d, base, &base_vm), 0);
}

/* Finishes @d and checks the image is the version 2 one. */
static void dest_check(Destination *d)
{
    HandoffDecoderStats st = { .struct_size = sizeof(st) };
    int rc = handoff_decoder_finish(d->dec);

    if (rc != 0) {
        printf("\n%s\n", handoff_last_error_message());
    }
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(test_vm_equal(&d->image, &v2_image));
    CU_ASSERT_EQUAL(d->reads, 0);
    CU_ASSERT_EQUAL(handoff_decoder_stats(d->dec, &st), 0);
    CU_ASSERT_EQUAL(st.held_bytes, 0);
    test_destination_close(d);
}

static void roundtrip_fed_whole(HandoffCodec codec, int level,
                                HandoffDelta delta)
{
    HandoffEncoderConfig cfg = config_for(codec, level, delta);
    uint8_t root[HANDOFF_ROOT_SIZE];
    TestSegments segs;
    uint8_t *stream;
    size_t len = 0;
    uint32_t k, length;
    TestVm out;

    stream = test_encode_segmented(base, &cfg, &mixed_vm, &len, root);
    CU_ASSERT_PTR_NOT_NULL_FATAL(stream);
    CU_ASSERT_EQUAL_FATAL(test_segments_open(stream, len, &segs), 0);
    CU_ASSERT(segs.count >= 1);
    for (k = 0; k < segs.count; k++) {
        CU_ASSERT_PTR_NOT_NULL(test_segment(&segs, stream, k, &length));
        CU_ASSERT(length <= HANDOFF_SEGMENT_MAX_BYTES);
    }
    CU_ASSERT_EQUAL(test_decode(base, &base_vm, stream, len, &out), 0);
    CU_ASSERT(test_vm_equal(&out, &v2_image));
    handoff_segment_table_free(segs.table);
    test_vm_free(&out);
    free(stream);
}

/* Submits every chunk of @region (@image, mixed_vm's size), last first. */
static int submit_backwards(HandoffEncoder *enc, uint32_t region,
                            const uint8_t *image)
{
    uint64_t *idx = malloc(mixed_vm.chunks * sizeof(*idx));
    uint64_t i;
    int rc;

    for (i = 0; i < mixed_vm.chunks; i++) {
        idx[i] = mixed_vm.chunks - 1 - i;
    }
    rc = handoff_encoder_submit_many(enc, region, image, idx,
                                     mixed_vm.chunks, 0);
    free(idx);
    return rc;
}

static void test_fed_whole_stored(void)
{
    roundtrip_fed_whole(HANDOFF_CODEC_NONE, 0, HANDOFF_DELTA_NONE);
}

static void test_fed_whole_zstd(void)
{
    roundtrip_fed_whole(HANDOFF_CODEC_ZSTD, 3, HANDOFF_DELTA_NONE);
    roundtrip_fed_whole(HANDOFF_CODEC_ZSTD, 1, HANDOFF_DELTA_XOR);
    roundtrip_fed_whole(HANDOFF_CODEC_ZSTD, 3, HANDOFF_DELTA_PREFIX);
}

static void test_fed_whole_lzma_zlib(void)
{
    roundtrip_fed_whole(HANDOFF_CODEC_LZMA, 6, HANDOFF_DELTA_NONE);
    roundtrip_fed_whole(HANDOFF_CODEC_ZLIB, 6, HANDOFF_DELTA_XOR);
}

/* Fed in pieces of every size from 1 byte up (the table part and the
 * segments complete only across calls): the same image. */
static void test_fed_in_pieces(void)
{
    HandoffEncoderConfig cfg = config_for(HANDOFF_CODEC_ZSTD, 3,
                                          HANDOFF_DELTA_NONE);
    uint8_t root[HANDOFF_ROOT_SIZE];
    size_t len = 0, pos, piece;
    uint8_t *stream = test_encode_segmented(base, &cfg, &mixed_vm, &len, root);
    Destination d;

    CU_ASSERT_PTR_NOT_NULL_FATAL(stream);
    dest_open(&d);
    for (pos = 0, piece = 1; pos < len; pos += piece, piece = piece * 3 + 1) {
        if (piece > len - pos) {
            piece = len - pos;
        }
        CU_ASSERT_EQUAL_FATAL(handoff_decoder_feed(d.dec, stream + pos, piece),
                              0);
    }
    dest_check(&d);
    free(stream);
}

/* The record choices are those of version 2, one record per chunk. */
static void test_record_counts(void)
{
    HandoffEncoderConfig cfg = config_for(HANDOFF_CODEC_ZSTD, 3,
                                          HANDOFF_DELTA_NONE);
    HandoffEncoderStats st = { .struct_size = sizeof(st) };
    HandoffEncoder *enc = NULL;
    uint8_t root[HANDOFF_ROOT_SIZE], root2[HANDOFF_ROOT_SIZE];
    uint8_t *stream;
    size_t len = 0;

    cfg.segmented = 1;
    CU_ASSERT_EQUAL_FATAL(handoff_encoder_create(base, &cfg, &enc), 0);
    CU_ASSERT_EQUAL(handoff_encoder_segment_root(enc, root),
                    HANDOFF_E_STATE);
    CU_ASSERT_EQUAL(test_submit_all(enc, &mixed_vm, 1), 0);
    CU_ASSERT_EQUAL(handoff_encoder_finish(enc), 0);
    CU_ASSERT_EQUAL(handoff_encoder_segment_root(enc, root), 0);
    stream = test_pull_all(enc, &len);
    CU_ASSERT_EQUAL(handoff_encoder_done(enc), 1);
    CU_ASSERT_EQUAL(handoff_encoder_stats(enc, &st), 0);
    CU_ASSERT_EQUAL(st.chunks[HANDOFF_REC_ZERO], 32);
    CU_ASSERT_EQUAL(st.chunks[HANDOFF_REC_SAME], 160);
    CU_ASSERT_EQUAL(st.chunks[HANDOFF_REC_BASE_REF], 64);
    CU_ASSERT_EQUAL(st.chunks[HANDOFF_REC_SELF_REF], 48);
    CU_ASSERT_EQUAL(st.chunks[HANDOFF_REC_DATA], 208);
    CU_ASSERT_EQUAL(st.output_bytes, len);
    handoff_encoder_free(enc);
    /* Submission order does not change the stream: disk before memory,
     * each backwards, gives the same root. */
    CU_ASSERT_EQUAL_FATAL(handoff_encoder_create(base, &cfg, &enc), 0);
    CU_ASSERT_EQUAL(submit_backwards(enc, 1, mixed_vm.disk), 0);
    CU_ASSERT_EQUAL(submit_backwards(enc, 0, mixed_vm.mem), 0);
    CU_ASSERT_EQUAL(handoff_encoder_finish(enc), 0);
    CU_ASSERT_EQUAL(handoff_encoder_segment_root(enc, root2), 0);
    CU_ASSERT_EQUAL(memcmp(root, root2, sizeof(root)), 0);
    handoff_encoder_free(enc);
    free(stream);
}

/* XOR deltas of a segmented stream of mixed_vm, as its statistics count
 * them: only the frames kept, not the packer's trial frames. */
static uint64_t segmented_xor_chunks(HandoffDelta delta)
{
    HandoffEncoderConfig cfg = config_for(HANDOFF_CODEC_ZSTD, 1, delta);
    HandoffEncoderStats st = { .struct_size = sizeof(st) };
    HandoffEncoder *enc = NULL;
    uint8_t *stream;
    size_t len = 0;

    cfg.segmented = 1;
    CU_ASSERT_EQUAL_FATAL(handoff_encoder_create(base, &cfg, &enc), 0);
    CU_ASSERT_EQUAL(test_submit_all(enc, &mixed_vm, 1), 0);
    CU_ASSERT_EQUAL(handoff_encoder_finish(enc), 0);
    stream = test_pull_all(enc, &len);
    CU_ASSERT_EQUAL(handoff_encoder_stats(enc, &st), 0);
    handoff_encoder_free(enc);
    free(stream);
    return st.xor_chunks;
}

/* The 64 chunks mixed_vm changed in part are sent as XOR deltas; each is
 * counted once, however many trial frames the packer made. */
static void test_xor_delta_counts(void)
{
    uint64_t xor = segmented_xor_chunks(HANDOFF_DELTA_XOR);

    CU_ASSERT(xor >= 64 && xor <= 208);
    CU_ASSERT_EQUAL(segmented_xor_chunks(HANDOFF_DELTA_NONE), 0);
}

/* A VM whose records span several of the packer's parts (4096 records
 * each, cut in parallel): text and random chunks, and a self reference
 * whose source is in the first part, so that its segment depends on one
 * another thread cut. */
#define BIG_CHUNKS 5000
static void test_parallel_cut_same_stream(void)
{
    TestVm big_base, big;
    HandoffBase *bb;
    uint8_t roots[3][HANDOFF_ROOT_SIZE];
    unsigned threads[3] = { 1, 2, 3 };
    uint8_t *stream = NULL;
    size_t len = 0;
    uint64_t i;
    int t;

    test_make_base_vm(&big_base, BIG_CHUNKS, 7);
    bb = test_base_from_vm(&big_base);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bb);
    test_vm_alloc(&big, BIG_CHUNKS);
    for (i = 0; i < BIG_CHUNKS; i++) {
        fill_text(big.mem + i * CHUNK, 77 * i + 1);
        fill_random(big.disk + i * CHUNK, 77 * i + 2);
    }
    memcpy(big.disk + (BIG_CHUNKS - 1) * CHUNK, big.mem, CHUNK);
    for (t = 0; t < 3; t++) {
        HandoffEncoderConfig cfg = config_for(HANDOFF_CODEC_ZSTD, 1,
                                              HANDOFF_DELTA_NONE);
        TestSegments segs;
        TestVm out;
        uint32_t k, length;

        cfg.threads = threads[t];
        free(stream);
        stream = test_encode_segmented(bb, &cfg, &big, &len, roots[t]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(stream);
        CU_ASSERT_EQUAL_FATAL(test_segments_open(stream, len, &segs), 0);
        for (k = 0; k < segs.count; k++) {
            CU_ASSERT_PTR_NOT_NULL(test_segment(&segs, stream, k, &length));
            CU_ASSERT(length <= HANDOFF_SEGMENT_MAX_BYTES);
        }
        CU_ASSERT(segs.count > BIG_CHUNKS / 16);  /* random: 15 a segment */
        handoff_segment_table_free(segs.table);
        CU_ASSERT_EQUAL(test_decode(bb, &big_base, stream, len, &out), 0);
        CU_ASSERT(test_vm_equal(&out, &big));
        test_vm_free(&out);
    }
    CU_ASSERT_EQUAL(memcmp(roots[0], roots[1], HANDOFF_ROOT_SIZE), 0);
    CU_ASSERT_EQUAL(memcmp(roots[0], roots[2], HANDOFF_ROOT_SIZE), 0);
    free(stream);
    test_vm_free(&big);
    handoff_base_free(bb);
    test_vm_free(&big_base);
}

/* Applies segment @k after its missing dependencies, depth first: a
 * demand for @k. Before them, @k alone must be refused by name with no
 * write, and the decoder must go on. */
static void apply_on_demand(Destination *d, const TestSegments *segs,
                            const uint8_t *stream, uint8_t *applied,
                            uint32_t k)
{
    uint32_t deps[64], length;
    size_t n = test_segment_deps(segs, k, deps), i;
    const uint8_t *bytes = test_segment(segs, stream, k, &length);
    unsigned writes = d->writes;
    int missing = 0;

    for (i = 0; i < n; i++) {
        missing |= !applied[deps[i]];
    }
    if (missing) {
        CU_ASSERT_EQUAL(handoff_decoder_apply_segment(d->dec, k, bytes, length),
                        HANDOFF_E_SEGMENT_DEPENDENCY);
        CU_ASSERT_EQUAL(d->writes, writes);
    }
    for (i = 0; i < n; i++) {
        if (!applied[deps[i]]) {
            apply_on_demand(d, segs, stream, applied, deps[i]);
        }
    }
    CU_ASSERT_EQUAL(handoff_decoder_apply_segment(d->dec, k, bytes, length), 0);
    applied[k] = 1;
}

static uint8_t *stream_with_segments(HandoffCodec codec, size_t *len,
                                     uint8_t root[HANDOFF_ROOT_SIZE],
                                     TestSegments *segs)
{
    HandoffEncoderConfig cfg = config_for(codec, codec ? 3 : 0,
                                          HANDOFF_DELTA_NONE);
    uint8_t *stream;

    /* Listed by address, the disk's copies of memory chunks stay where
     * they are, in segments depending on earlier ones. */
    cfg.order = test_address_order(N);
    cfg.order_count = 2 * N;
    stream = test_encode_segmented(base, &cfg, &mixed_vm, len, root);
    free((void *)cfg.order);
    CU_ASSERT_PTR_NOT_NULL_FATAL(stream);
    CU_ASSERT_EQUAL_FATAL(test_segments_open(stream, *len, segs), 0);
    return stream;
}

static void test_random_demand_orders(void)
{
    uint8_t root[HANDOFF_ROOT_SIZE];
    TestSegments segs;
    size_t len = 0;
    uint8_t *stream = stream_with_segments(HANDOFF_CODEC_NONE, &len, root,
                                           &segs);
    uint32_t deps[64], k, with_deps = 0;
    unsigned seed;

    for (k = 0; k < segs.count; k++) {
        with_deps += test_segment_deps(&segs, k, deps) != 0;
    }
    printf("\n    %u segments, %u with dependencies ", segs.count, with_deps);
    CU_ASSERT(segs.count >= 8);
    CU_ASSERT(with_deps >= 1);  /* the disk's copies of memory chunks */
    for (seed = 1; seed <= 40; seed++) {
        uint8_t *applied = calloc(segs.count, 1);
        Destination d;

        srand(seed);
        dest_open(&d);
        CU_ASSERT_EQUAL(handoff_decoder_load_table(d.dec, stream,
                                                   segs.table_len, root), 0);
        for (k = 0; k < segs.count; k++) {
            uint32_t want = (uint32_t)rand() % segs.count;

            if (!applied[want]) {
                apply_on_demand(&d, &segs, stream, applied, want);
            }
        }
        for (k = 0; k < segs.count; k++) {  /* the rest, in file order */
            if (!applied[k]) {
                apply_on_demand(&d, &segs, stream, applied, k);
            }
        }
        dest_check(&d);
        free(applied);
    }
    handoff_segment_table_free(segs.table);
    free(stream);
}

/* Every order of a few segments that applies each after its dependencies
 * (depth-first enumeration of the topological orders). */
typedef struct Orders {
    const TestSegments *segs;
    const uint8_t *stream;
    const uint8_t *root;
    uint32_t order[16];
    uint8_t used[16];
    unsigned count;
} Orders;

static void check_order(Orders *o)
{
    Destination d;
    uint32_t i, length;

    dest_open(&d);
    CU_ASSERT_EQUAL(handoff_decoder_load_table(d.dec, o->stream,
                                               o->segs->table_len, o->root), 0);
    for (i = 0; i < o->segs->count; i++) {
        const uint8_t *bytes = test_segment(o->segs, o->stream, o->order[i],
                                            &length);
        CU_ASSERT_EQUAL(handoff_decoder_apply_segment(d.dec, o->order[i],
                                                      bytes, length), 0);
    }
    dest_check(&d);
    o->count++;
}

static void enumerate_orders(Orders *o, uint32_t depth)
{
    uint32_t k, deps[64];

    if (depth == o->segs->count) {
        check_order(o);
        return;
    }
    for (k = 0; k < o->segs->count; k++) {
        size_t n = test_segment_deps(o->segs, k, deps), i;
        int ready = !o->used[k];

        for (i = 0; i < n; i++) {
            ready &= o->used[deps[i]];
        }
        if (ready) {
            o->used[k] = 1;
            o->order[depth] = k;
            enumerate_orders(o, depth + 1);
            o->used[k] = 0;
        }
    }
}

static void test_every_dependency_order(void)
{
    uint8_t root[HANDOFF_ROOT_SIZE];
    TestSegments segs;
    size_t len = 0;
    /* zstd packs the mix into few segments: all their orders are few. */
    uint8_t *stream = stream_with_segments(HANDOFF_CODEC_ZSTD, &len, root,
                                           &segs);
    Orders o = { .segs = &segs, .stream = stream, .root = root };

    printf("\n    %u segments ", segs.count);
    CU_ASSERT_FATAL(segs.count >= 2 && segs.count <= 7);
    enumerate_orders(&o, 0);
    printf("in %u orders ", o.count);
    CU_ASSERT(o.count >= 2);
    handoff_segment_table_free(segs.table);
    free(stream);
}

/* The order input puts the listed chunks' data first: here the disk's
 * edited chunks, which by address would come after all of memory. */
static void test_order_input_goes_first(void)
{
    HandoffEncoderConfig cfg = config_for(HANDOFF_CODEC_NONE, 0,
                                          HANDOFF_DELTA_NONE);
    HandoffChunkRef order[N - 192];
    uint8_t root[HANDOFF_ROOT_SIZE];
    TestSegments segs;
    uint32_t length, flags, i;
    const uint8_t *seg0;
    uint8_t *stream;
    size_t len = 0;
    TestVm out;

    for (i = 0; i < N - 192; i++) {
        order[i].region = 1;
        order[i].chunk_index = 192 + i;
    }
    for (i = 0; i < 2; i++) {
        cfg.order = i ? order : NULL;
        cfg.order_count = i ? N - 192 : 0;
        stream = test_encode_segmented(base, &cfg, &mixed_vm, &len, root);
        CU_ASSERT_PTR_NOT_NULL_FATAL(stream);
        CU_ASSERT_EQUAL_FATAL(test_segments_open(stream, len, &segs), 0);
        seg0 = test_segment(&segs, stream, 0, &length);
        memcpy(&flags, seg0 + 12, 4);  /* bit 0 memory, bit 1 disk */
        CU_ASSERT_EQUAL(flags, i ? 2u : 1u);
        CU_ASSERT_EQUAL(test_decode(base, &base_vm, stream, len, &out), 0);
        CU_ASSERT(test_vm_equal(&out, &v2_image));
        test_vm_free(&out);
        handoff_segment_table_free(segs.table);
        free(stream);
    }
    order[0].chunk_index = N;  /* outside the disk */
    cfg.order = order;
    CU_ASSERT_PTR_NULL(test_encode_segmented(base, &cfg, &mixed_vm, &len, root));
}

/* The chunk index places every chunk: zeros and base references local,
 * data and self references remote, the rest base; and a remote chunk's
 * segment, applied on demand with its dependencies alone, gives the
 * chunk its final bytes. */
static void test_chunk_index_locates(void)
{
    uint8_t root[HANDOFF_ROOT_SIZE];
    TestSegments segs;
    size_t len = 0;
    uint8_t *stream = stream_with_segments(HANDOFF_CODEC_NONE, &len, root,
                                           &segs);
    unsigned count[3] = { 0, 0, 0 }, checked = 0;
    uint32_t region, segment;
    uint64_t i;
    int place;

    for (region = 0; region < 2; region++) {
        for (i = 0; i < N; i++) {
            CU_ASSERT_EQUAL_FATAL(handoff_segment_table_locate(
                                      segs.table, region, i, &place, &segment),
                                  0);
            CU_ASSERT_FATAL(place >= 0 && place <= 2);
            count[place]++;
            if (place == HANDOFF_CHUNK_REMOTE && i % 7 == 0) {
                uint8_t *applied = calloc(segs.count, 1);
                const uint8_t *want = (region ? v2_image.disk : v2_image.mem) +
                                      i * CHUNK;
                Destination d;

                dest_open(&d);
                CU_ASSERT_EQUAL(handoff_decoder_load_table(
                                    d.dec, stream, segs.table_len, root), 0);
                apply_on_demand(&d, &segs, stream, applied, segment);
                CU_ASSERT_EQUAL(memcmp((region ? d.image.disk : d.image.mem) +
                                           i * CHUNK, want, CHUNK), 0);
                test_destination_close(&d);
                free(applied);
                checked++;
            }
        }
    }
    CU_ASSERT_EQUAL(count[HANDOFF_CHUNK_LOCAL], 32 + 64);
    CU_ASSERT_EQUAL(count[HANDOFF_CHUNK_REMOTE], 48 + 208);
    CU_ASSERT_EQUAL(count[HANDOFF_CHUNK_BASE], 2 * N - 96 - 256);
    CU_ASSERT(checked >= 30);
    CU_ASSERT_EQUAL(handoff_segment_table_locate(segs.table, 0, N, &place,
                                                 &segment),
                    HANDOFF_E_INVALID_ARGUMENT);
    handoff_segment_table_free(segs.table);
    free(stream);
}

/* Self references far from their sources by address: S new chunks, then
 * S copies of them. Listed in that order, all S sources could be held by
 * a decoder at once (S * 4288 bytes, over HANDOFF_DECODER_MAX_HELD_BYTES),
 * and the writer refuses the stream (LENGTH_LIMIT). Unlisted, each copy
 * is moved behind its source and shares its segment, and the stream
 * decodes to the VM. */
#define FAR_SOURCES 18000
static void test_far_self_references(void)
{
    HandoffEncoderConfig cfg = config_for(HANDOFF_CODEC_NONE, 0,
                                          HANDOFF_DELTA_NONE);
    uint8_t root[HANDOFF_ROOT_SIZE];
    TestVm far_base, vm, out;
    HandoffBase *b;
    TestSegments segs;
    uint32_t seg_src, seg_ref, apart = 0;
    uint8_t *stream;
    size_t len = 0;
    uint64_t i;
    int place;

    CU_ASSERT_FATAL((uint64_t)FAR_SOURCES * (HANDOFF_CHUNK_SIZE + 192) >
                    HANDOFF_DECODER_MAX_HELD_BYTES);
    test_make_base_vm(&far_base, 2 * FAR_SOURCES, 7);
    b = test_base_from_vm(&far_base);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    test_vm_copy(&vm, &far_base);
    for (i = 0; i < FAR_SOURCES; i++) {
        fill_random(vm.mem + i * CHUNK, 5000000 + i);
        memcpy(vm.mem + (FAR_SOURCES + i) * CHUNK, vm.mem + i * CHUNK, CHUNK);
    }
    cfg.order = test_address_order(2 * FAR_SOURCES);
    cfg.order_count = 2 * FAR_SOURCES;  /* memory only */
    CU_ASSERT_PTR_NULL(test_encode_segmented(b, &cfg, &vm, &len, root));
    CU_ASSERT_PTR_NOT_NULL(strstr(handoff_last_error_message(),
                                  "pinned data versions could be held"));
    {
        /* A puller waiting for the stream's end hears the failure: it
         * never comes (qemu-handoff encode hung here). */
        HandoffEncoder *enc = NULL;
        uint8_t buf[64];
        size_t n = 1;

        cfg.segmented = 1;
        CU_ASSERT_EQUAL_FATAL(handoff_encoder_create(b, &cfg, &enc), 0);
        CU_ASSERT_EQUAL(test_submit_all(enc, &vm, 0), 0);
        CU_ASSERT_EQUAL(handoff_encoder_finish(enc), HANDOFF_E_LENGTH_LIMIT);
        CU_ASSERT_EQUAL(handoff_encoder_pull_wait(enc, buf, sizeof(buf), &n),
                        HANDOFF_E_LENGTH_LIMIT);
        CU_ASSERT_EQUAL(n, 0);
        CU_ASSERT_EQUAL(handoff_encoder_done(enc), 0);
        handoff_encoder_free(enc);
    }
    free((void *)cfg.order);
    cfg.order = NULL;
    cfg.order_count = 0;
    stream = test_encode_segmented(b, &cfg, &vm, &len, root);
    CU_ASSERT_PTR_NOT_NULL_FATAL(stream);
    CU_ASSERT_EQUAL(test_decode(b, &far_base, stream, len, &out), 0);
    CU_ASSERT(test_vm_equal(&out, &vm));
    CU_ASSERT_EQUAL_FATAL(test_segments_open(stream, len, &segs), 0);
    for (i = 0; i < FAR_SOURCES; i++) {
        CU_ASSERT_EQUAL_FATAL(handoff_segment_table_locate(
                                  segs.table, 0, i, &place, &seg_src), 0);
        CU_ASSERT_EQUAL_FATAL(place, HANDOFF_CHUNK_REMOTE);
        CU_ASSERT_EQUAL_FATAL(handoff_segment_table_locate(
                                  segs.table, 0, FAR_SOURCES + i, &place,
                                  &seg_ref), 0);
        CU_ASSERT_EQUAL_FATAL(place, HANDOFF_CHUNK_REMOTE);
        CU_ASSERT(seg_ref == seg_src || seg_ref == seg_src + 1);
        apart += seg_ref != seg_src;
    }
    /* No cut falls between a source and the copy behind it: the copy
     * comes along, or the cut moves before the source (KeepReferrers). */
    CU_ASSERT_EQUAL(apart, 0);
    handoff_segment_table_free(segs.table);
    free(stream);
    test_vm_free(&out);
    test_vm_free(&vm);
    handoff_base_free(b);
    test_vm_free(&far_base);
}

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS) {
        return CU_get_error();
    }
    suite = CU_add_suite("roundtrip-segments", init_suite, clean_suite);
    CU_add_test(suite, "fed whole, stored", test_fed_whole_stored);
    CU_add_test(suite, "fed whole, zstd (plain, xor, prefix)",
                test_fed_whole_zstd);
    CU_add_test(suite, "fed whole, lzma and zlib", test_fed_whole_lzma_zlib);
    CU_add_test(suite, "fed in pieces", test_fed_in_pieces);
    CU_add_test(suite, "record counts and root", test_record_counts);
    CU_add_test(suite, "XOR deltas counted once", test_xor_delta_counts);
    CU_add_test(suite, "parallel cut, same stream",
                test_parallel_cut_same_stream);
    CU_add_test(suite, "random demand orders", test_random_demand_orders);
    CU_add_test(suite, "every dependency-respecting order",
                test_every_dependency_order);
    CU_add_test(suite, "order input goes first", test_order_input_goes_first);
    CU_add_test(suite, "self references far from their sources",
                test_far_self_references);
    CU_add_test(suite, "chunk index locates every chunk",
                test_chunk_index_locates);

    return test_run_registry();
}
