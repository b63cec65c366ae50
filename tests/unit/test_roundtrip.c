/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Encoder and decoder through the C API: known mixes of chunk kinds come
 * back byte-exact in every mode, with the expected record choices, in one
 * or several iterations, with frames applied in order or shuffled.
 */
#include "handoff.h"
#include "test_support.h"

#include <CUnit/Basic.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define N 256

static TestVm base_vm;
static HandoffBase *base;

static void make_modified(TestVm *vm)
{
    test_make_mixed_vm(vm, &base_vm);
}

static int init_suite(void)
{
    test_make_base_vm(&base_vm, N, 1);
    base = test_base_from_vm(&base_vm);
    return base == NULL;
}

static int clean_suite(void)
{
    handoff_base_free(base);
    test_vm_free(&base_vm);
    return 0;
}

static uint8_t *encode_vm(const HandoffEncoderConfig *cfg, const TestVm *vm,
                          int random_order, size_t *len,
                          HandoffEncoderStats *stats)
{
    HandoffEncoder *enc = NULL;
    uint8_t *stream;

    if (handoff_encoder_create(base, cfg, &enc) != 0) {
        return NULL;
    }
    if (test_submit_all(enc, vm, random_order) != 0 ||
        handoff_encoder_finish(enc) != 0) {
        handoff_encoder_free(enc);
        return NULL;
    }
    stream = test_pull_all(enc, len);
    if (stats) {
        handoff_encoder_stats(enc, stats);
    }
    handoff_encoder_free(enc);
    return stream;
}

static void roundtrip_mode(HandoffCodec codec, int level, HandoffDelta delta,
                           unsigned threads)
{
    HandoffEncoderConfig cfg = { .struct_size = sizeof(HandoffEncoderConfig) };
    HandoffEncoderStats st = { .struct_size = sizeof(HandoffEncoderStats) };
    TestVm vm, out;
    uint8_t *stream;
    size_t len = 0;
    int rc;

    handoff_encoder_config_default(&cfg);
    cfg.adaptive = 0;
    cfg.mode.codec = codec;
    cfg.mode.level = level;
    cfg.mode.delta = delta;
    cfg.threads = threads;
    cfg.frame_bytes = 64 * 1024;
    make_modified(&vm);
    stream = encode_vm(&cfg, &vm, 1, &len, &st);
    CU_ASSERT_PTR_NOT_NULL_FATAL(stream);
    CU_ASSERT_EQUAL(st.chunks[HANDOFF_REC_ZERO], 32);
    CU_ASSERT_EQUAL(st.chunks[HANDOFF_REC_SAME], 160);
    CU_ASSERT_EQUAL(st.chunks[HANDOFF_REC_BASE_REF], 64);
    CU_ASSERT_EQUAL(st.chunks[HANDOFF_REC_SELF_REF], 48);
    CU_ASSERT_EQUAL(st.chunks[HANDOFF_REC_DATA], 208);
    CU_ASSERT_EQUAL(st.input_bytes, 2 * N * CHUNK);
    CU_ASSERT_EQUAL(st.output_bytes, len);
    if (delta == HANDOFF_DELTA_XOR) {
        CU_ASSERT(st.xor_chunks >= 64);
    }
    rc = test_decode(base, &base_vm, stream, len, &out);
    if (rc != 0) {
        printf("\n%s\n", handoff_last_error_message());
    }
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(test_vm_equal(&out, &vm));
    free(stream);
    test_vm_free(&vm);
    test_vm_free(&out);
}

static void test_roundtrip_stored(void)
{
    roundtrip_mode(HANDOFF_CODEC_NONE, 0, HANDOFF_DELTA_NONE, 1);
}

static void test_roundtrip_zstd(void)
{
    roundtrip_mode(HANDOFF_CODEC_ZSTD, 1, HANDOFF_DELTA_NONE, 2);
    roundtrip_mode(HANDOFF_CODEC_ZSTD, 19, HANDOFF_DELTA_NONE, 2);
}

static void test_roundtrip_zstd_xor(void)
{
    roundtrip_mode(HANDOFF_CODEC_ZSTD, 3, HANDOFF_DELTA_XOR, 2);
}

static void test_roundtrip_zstd_prefix(void)
{
    roundtrip_mode(HANDOFF_CODEC_ZSTD, 1, HANDOFF_DELTA_PREFIX, 2);
    roundtrip_mode(HANDOFF_CODEC_ZSTD, 9, HANDOFF_DELTA_PREFIX, 1);
}

static void test_roundtrip_lzma(void)
{
    roundtrip_mode(HANDOFF_CODEC_LZMA, 0, HANDOFF_DELTA_NONE, 2);
    roundtrip_mode(HANDOFF_CODEC_LZMA, 6, HANDOFF_DELTA_XOR, 2);
}

static void test_roundtrip_zlib(void)
{
    roundtrip_mode(HANDOFF_CODEC_ZLIB, 1, HANDOFF_DELTA_NONE, 2);
    roundtrip_mode(HANDOFF_CODEC_ZLIB, 9, HANDOFF_DELTA_XOR, 1);
}

static void test_roundtrip_adaptive(void)
{
    HandoffEncoderConfig cfg = { .struct_size = sizeof(HandoffEncoderConfig) };
    TestVm vm, out;
    uint8_t *stream;
    size_t len = 0;

    handoff_encoder_config_default(&cfg);
    cfg.frame_bytes = 16 * 1024;
    make_modified(&vm);
    stream = encode_vm(&cfg, &vm, 1, &len, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(stream);
    CU_ASSERT_EQUAL(test_decode(base, &base_vm, stream, len, &out), 0);
    CU_ASSERT(test_vm_equal(&out, &vm));
    free(stream);
    test_vm_free(&vm);
    test_vm_free(&out);
}

/* Without dedup every modified chunk travels as data, and the stream still
 * rebuilds the VM; dedup's records are what make it smaller. */
static void test_without_dedup(void)
{
    HandoffEncoderConfig cfg = { .struct_size = sizeof(HandoffEncoderConfig) };
    HandoffEncoderStats st = { .struct_size = sizeof(HandoffEncoderStats) };
    HandoffEncoderStats with = { .struct_size = sizeof(HandoffEncoderStats) };
    TestVm vm, out;
    uint8_t *stream;
    size_t len = 0, dedup_len = 0;

    handoff_encoder_config_default(&cfg);
    cfg.adaptive = 0;
    cfg.mode.codec = HANDOFF_CODEC_NONE;
    cfg.mode.level = 0;
    make_modified(&vm);
    free(encode_vm(&cfg, &vm, 1, &dedup_len, &with));
    cfg.dedup = 0;
    stream = encode_vm(&cfg, &vm, 1, &len, &st);
    CU_ASSERT_PTR_NOT_NULL_FATAL(stream);
    CU_ASSERT_EQUAL(st.chunks[HANDOFF_REC_ZERO], 0);
    CU_ASSERT_EQUAL(st.chunks[HANDOFF_REC_BASE_REF], 0);
    CU_ASSERT_EQUAL(st.chunks[HANDOFF_REC_SELF_REF], 0);
    CU_ASSERT_EQUAL(st.chunks[HANDOFF_REC_SAME], with.chunks[HANDOFF_REC_SAME]);
    CU_ASSERT_EQUAL(st.chunks[HANDOFF_REC_DATA],
                    2 * N - with.chunks[HANDOFF_REC_SAME]);
    CU_ASSERT(len > dedup_len + 100 * CHUNK);
    CU_ASSERT_EQUAL(test_decode(base, &base_vm, stream, len, &out), 0);
    CU_ASSERT(test_vm_equal(&out, &vm));
    free(stream);
    test_vm_free(&vm);
    test_vm_free(&out);
}

/* Same seed, same stream; another seed, another order. */
static void test_random_order_is_seeded(void)
{
    HandoffEncoderConfig cfg = { .struct_size = sizeof(HandoffEncoderConfig) };
    TestVm vm;
    uint8_t *a, *b, *c;
    size_t la, lb, lc;

    handoff_encoder_config_default(&cfg);
    cfg.adaptive = 0;
    cfg.threads = 2;
    make_modified(&vm);
    a = encode_vm(&cfg, &vm, 1, &la, NULL);
    b = encode_vm(&cfg, &vm, 1, &lb, NULL);
    cfg.seed ^= 1;
    c = encode_vm(&cfg, &vm, 1, &lc, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT(la == lb && memcmp(a, b, la) == 0);
    CU_ASSERT(la != lc || memcmp(a, c, la) != 0);
    free(a);
    free(b);
    free(c);
    test_vm_free(&vm);
}

/* Three iterations; chunks change, revert, turn to zero, duplicate. */
static uint8_t *encode_iterations(TestVm *final_vm, size_t *len,
                                  uint32_t frame_bytes)
{
    HandoffEncoderConfig cfg = { .struct_size = sizeof(HandoffEncoderConfig) };
    HandoffEncoder *enc = NULL;
    TestVm vm;
    uint64_t i;
    uint8_t *stream;

    handoff_encoder_config_default(&cfg);
    cfg.adaptive = 0;
    cfg.threads = 2;
    cfg.frame_bytes = frame_bytes;
    make_modified(&vm);
    if (handoff_encoder_create(base, &cfg, &enc) != 0) {
        return NULL;
    }
    test_submit_all(enc, &vm, 1);

    handoff_encoder_begin_iteration(enc, 1);
    for (i = 128; i < 160; i++) {
        fill_text(vm.mem + i * CHUNK, 20000 + i);
    }
    for (i = 96; i < 104; i++) {                /* back to base */
        memcpy(vm.mem + i * CHUNK, base_vm.mem + i * CHUNK, CHUNK);
    }
    for (i = 200; i < 210; i++) {
        memset(vm.mem + i * CHUNK, 0, CHUNK);
    }
    for (i = 0; i < 4; i++) {                   /* copies of new data */
        memcpy(vm.disk + i * CHUNK, vm.mem + (128 + i) * CHUNK, CHUNK);
    }
    test_submit_all(enc, &vm, 1);

    handoff_encoder_begin_iteration(enc, 2);
    for (i = 128; i < 136; i++) {
        fill_random(vm.mem + i * CHUNK, 30000 + i);
    }
    for (i = 192; i < 200; i++) {
        memcpy(vm.disk + i * CHUNK, base_vm.disk + i * CHUNK, CHUNK);
    }
    for (i = 0; i < 32; i++) {                  /* zero pages refilled */
        fill_text(vm.mem + i * CHUNK, 40000 + i);
    }
    test_submit_all(enc, &vm, 1);
    handoff_encoder_finish(enc);
    stream = test_pull_all(enc, len);
    handoff_encoder_free(enc);
    *final_vm = vm;
    return stream;
}

static void test_iterations_in_order(void)
{
    TestVm vm, out;
    size_t len;
    uint8_t *stream = encode_iterations(&vm, &len, 64 * 1024);
    HandoffDecoder *dec = NULL;
    HandoffDecoderStats ds = { .struct_size = sizeof(HandoffDecoderStats) };
    void *mem[2];

    CU_ASSERT_PTR_NOT_NULL_FATAL(stream);
    test_vm_copy(&out, &base_vm);
    mem[0] = out.mem;
    mem[1] = out.disk;
    CU_ASSERT_EQUAL_FATAL(handoff_decoder_create(base, NULL, mem, &dec), 0);
    /* Odd-sized pieces exercise every partial-input path. */
    {
        size_t pos = 0, step = 1;
        while (pos < len) {
            size_t n = step < len - pos ? step : len - pos;
            CU_ASSERT_EQUAL_FATAL(handoff_decoder_feed(dec, stream + pos, n), 0);
            pos += n;
            step = step * 3 + 1;
            if (step > 70000) {
                step = 7;
            }
        }
    }
    CU_ASSERT_EQUAL(handoff_decoder_finish(dec), 0);
    CU_ASSERT_EQUAL(handoff_decoder_stats(dec, &ds), 0);
    CU_ASSERT_EQUAL(ds.iteration, 2);
    CU_ASSERT_EQUAL(ds.stream_bytes + 104, len);
    CU_ASSERT(test_vm_equal(&out, &vm));
    handoff_decoder_free(dec);
    free(stream);
    test_vm_free(&vm);
    test_vm_free(&out);
}

static void apply_shuffled(unsigned seed, int reverse)
{
    TestVm vm, out;
    size_t len, header_len, count, i;
    size_t offsets[4096], lengths[4096], order[4096];
    uint8_t *stream = encode_iterations(&vm, &len, 8 * 1024);
    HandoffDecoder *dec = NULL;
    HandoffDecoderStats ds = { .struct_size = sizeof(HandoffDecoderStats) };
    void *mem[2];
    size_t end_off;

    CU_ASSERT_PTR_NOT_NULL_FATAL(stream);
    CU_ASSERT_EQUAL_FATAL(handoff_stream_split(stream, len, &header_len,
                                               offsets, lengths, 4096,
                                               &count), 0);
    CU_ASSERT_FATAL(count > 20 && count <= 4096);
    for (i = 0; i < count; i++) {
        order[i] = reverse ? count - 1 - i : i;
    }
    if (!reverse) {
        srand(seed);
        for (i = count - 1; i > 0; i--) {
            size_t j = (size_t)rand() % (i + 1), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
    }
    test_vm_copy(&out, &base_vm);
    mem[0] = out.mem;
    mem[1] = out.disk;
    CU_ASSERT_EQUAL_FATAL(handoff_decoder_create(base, NULL, mem, &dec), 0);
    CU_ASSERT_EQUAL_FATAL(handoff_decoder_feed(dec, stream, header_len), 0);
    for (i = 0; i < count; i++) {
        int rc = handoff_decoder_apply_frame(dec, stream + offsets[order[i]],
                                             lengths[order[i]]);
        if (rc != 0) {
            printf("\n%s\n", handoff_last_error_message());
        }
        CU_ASSERT_EQUAL_FATAL(rc, 0);
    }
    end_off = offsets[count - 1] + lengths[count - 1];
    CU_ASSERT_EQUAL(handoff_decoder_feed(dec, stream + end_off, len - end_off), 0);
    CU_ASSERT_EQUAL(handoff_decoder_finish(dec), 0);
    handoff_decoder_stats(dec, &ds);
    CU_ASSERT(test_vm_equal(&out, &vm));
    if (reverse) {
        CU_ASSERT(ds.stale_records > 0);
    }
    handoff_decoder_free(dec);
    free(stream);
    test_vm_free(&vm);
    test_vm_free(&out);
}

static void test_iterations_frames_reversed(void)
{
    apply_shuffled(0, 1);
}

static void test_iterations_frames_shuffled(void)
{
    unsigned s;

    for (s = 1; s <= 5; s++) {
        apply_shuffled(s, 0);
    }
}

/* Writer callbacks receive the same result as caller memory. */
typedef struct { TestVm *vm; int fail_after; } WriterCtx;

static int write_chunk(void *opaque, uint32_t region, uint64_t index,
                       const void *data)
{
    WriterCtx *c = opaque;
    uint8_t *dst = region == 0 ? c->vm->mem : c->vm->disk;

    if (c->fail_after >= 0 && c->fail_after-- == 0) {
        return -1;
    }
    memcpy(dst + index * CHUNK, data, CHUNK);
    return 0;
}

static int read_chunk(void *opaque, uint32_t region, uint64_t index,
                      void *data)
{
    WriterCtx *c = opaque;
    const uint8_t *src = region == 0 ? c->vm->mem : c->vm->disk;

    memcpy(data, src + index * CHUNK, CHUNK);
    return 0;
}

/*
 * Zero runs (a discarded disk range) in a stream with data before and
 * after them: the destination ends with the newest content of every
 * chunk, frames in order or shuffled, and a writer with zero_chunks gets
 * runs, not chunks. A chunk equal to data the run erased is not sent as a
 * reference to it (the decoder would refuse that).
 */
typedef struct ZeroCtx {
    WriterCtx w;
    uint64_t calls, chunks;
} ZeroCtx;

static int zero_chunks(void *opaque, uint32_t region, uint64_t first,
                       uint64_t count)
{
    ZeroCtx *z = opaque;
    uint8_t *dst = region == 0 ? z->w.vm->mem : z->w.vm->disk;

    memset(dst + first * CHUNK, 0, count * CHUNK);
    z->calls++;
    z->chunks += count;
    return 0;
}

static int zero_write_chunk(void *opaque, uint32_t region, uint64_t index,
                            const void *data)
{
    return write_chunk(&((ZeroCtx *)opaque)->w, region, index, data);
}

static int zero_read_chunk(void *opaque, uint32_t region, uint64_t index,
                           void *data)
{
    return read_chunk(&((ZeroCtx *)opaque)->w, region, index, data);
}

static uint8_t *encode_with_zero_run(TestVm *vm, size_t *len,
                                     HandoffEncoderStats *st)
{
    HandoffEncoderConfig cfg = { .struct_size = sizeof(cfg) };
    HandoffEncoder *enc = NULL;
    uint8_t *stream;
    uint64_t i;

    test_vm_copy(vm, &base_vm);
    handoff_encoder_config_default(&cfg);
    cfg.adaptive = 0;
    cfg.threads = 2;
    cfg.frame_bytes = 16 * 1024;
    CU_ASSERT_EQUAL_FATAL(handoff_encoder_create(base, &cfg, &enc), 0);
    for (i = 0; i < 200; i++) {
        fill_random(vm->disk + i * CHUNK, 500 + i);
        CU_ASSERT_EQUAL(handoff_encoder_submit(enc, 1, i, vm->disk + i * CHUNK), 0);
    }
    CU_ASSERT_EQUAL(handoff_encoder_begin_iteration(enc, 1), 0);
    /* The guest discards 50..149: they read as zeros now. */
    memset(vm->disk + 50 * CHUNK, 0, 100 * CHUNK);
    CU_ASSERT_EQUAL(handoff_encoder_submit_zero_run(enc, 1, 50, 100), 0);
    /* ...and writes two of them again, one with what chunk 60 held. */
    fill_text(vm->disk + 100 * CHUNK, 77);
    fill_random(vm->disk + 120 * CHUNK, 500 + 60);
    CU_ASSERT_EQUAL(handoff_encoder_submit(enc, 1, 100, vm->disk + 100 * CHUNK), 0);
    CU_ASSERT_EQUAL(handoff_encoder_submit(enc, 1, 120, vm->disk + 120 * CHUNK), 0);
    /* Beyond the region, or wrapping around, is refused. */
    CU_ASSERT_EQUAL(handoff_encoder_submit_zero_run(enc, 1, N - 1, 2),
                    HANDOFF_E_CHUNK_RANGE);
    CU_ASSERT_EQUAL(handoff_encoder_submit_zero_run(enc, 1, 1, UINT64_MAX),
                    HANDOFF_E_CHUNK_RANGE);
    CU_ASSERT_EQUAL(handoff_encoder_finish(enc), 0);
    stream = test_pull_all(enc, len);
    CU_ASSERT_EQUAL(handoff_encoder_stats(enc, st), 0);
    handoff_encoder_free(enc);
    return stream;
}

static void decode_zero_run_shuffled(const uint8_t *stream, size_t len,
                                     const TestVm *vm, unsigned seed)
{
    size_t offsets[512], lengths[512], order[512];
    size_t header_len, count, i, end_off;
    HandoffDecoder *dec = NULL;
    TestVm out;
    void *mem[2];

    CU_ASSERT_EQUAL_FATAL(handoff_stream_split(stream, len, &header_len,
                                               offsets, lengths, 512,
                                               &count), 0);
    CU_ASSERT_FATAL(count > 4 && count <= 512);
    for (i = 0; i < count; i++) {
        order[i] = count - 1 - i;
    }
    srand(seed);
    for (i = count - 1; seed != 0 && i > 0; i--) {
        size_t j = (size_t)rand() % (i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    test_vm_copy(&out, &base_vm);
    mem[0] = out.mem;
    mem[1] = out.disk;
    CU_ASSERT_EQUAL_FATAL(handoff_decoder_create(base, NULL, mem, &dec), 0);
    CU_ASSERT_EQUAL_FATAL(handoff_decoder_feed(dec, stream, header_len), 0);
    for (i = 0; i < count; i++) {
        CU_ASSERT_EQUAL_FATAL(handoff_decoder_apply_frame(
            dec, stream + offsets[order[i]], lengths[order[i]]), 0);
    }
    end_off = offsets[count - 1] + lengths[count - 1];
    CU_ASSERT_EQUAL(handoff_decoder_feed(dec, stream + end_off, len - end_off), 0);
    CU_ASSERT_EQUAL(handoff_decoder_finish(dec), 0);
    CU_ASSERT(test_vm_equal(&out, vm));
    handoff_decoder_free(dec);
    test_vm_free(&out);
}

static void test_zero_runs(void)
{
    HandoffEncoderStats st = { .struct_size = sizeof(st) };
    HandoffDecoderStats ds = { .struct_size = sizeof(ds) };
    TestVm vm, out;
    size_t len;
    uint8_t *stream = encode_with_zero_run(&vm, &len, &st);
    ZeroCtx z = { .w = { .vm = &out, .fail_after = -1 } };
    HandoffWriter w = { .struct_size = sizeof(w), .opaque = &z,
                        .write_chunk = zero_write_chunk,
                        .read_chunk = zero_read_chunk,
                        .zero_chunks = zero_chunks };
    HandoffDecoder *dec = NULL;
    unsigned seed;

    CU_ASSERT_PTR_NOT_NULL_FATAL(stream);
    CU_ASSERT_EQUAL(st.chunks[HANDOFF_REC_ZERO_RUN], 100);
    CU_ASSERT_EQUAL(st.input_bytes, 202 * CHUNK);   /* runs are not read */

    test_vm_copy(&out, &base_vm);
    CU_ASSERT_EQUAL_FATAL(handoff_decoder_create(base, &w, NULL, &dec), 0);
    CU_ASSERT_EQUAL(handoff_decoder_feed(dec, stream, len), 0);
    CU_ASSERT_EQUAL(handoff_decoder_finish(dec), 0);
    CU_ASSERT(test_vm_equal(&out, &vm));
    CU_ASSERT_EQUAL(z.calls, 1);
    CU_ASSERT_EQUAL(z.chunks, 100);
    CU_ASSERT_EQUAL(handoff_decoder_stats(dec, &ds), 0);
    CU_ASSERT_EQUAL(ds.records[HANDOFF_REC_ZERO_RUN], 1);
    CU_ASSERT_EQUAL(ds.records[HANDOFF_REC_ZERO], 0);
    handoff_decoder_free(dec);
    test_vm_free(&out);

    /* Reversed (seed 0) and shuffled: newer records still win. */
    for (seed = 0; seed < 6; seed++) {
        decode_zero_run_shuffled(stream, len, &vm, seed);
    }
    free(stream);
    test_vm_free(&vm);
}

static void test_writer_callbacks(void)
{
    HandoffEncoderConfig cfg = { .struct_size = sizeof(HandoffEncoderConfig) };
    TestVm vm, out;
    uint8_t *stream;
    size_t len;
    WriterCtx ctx;
    HandoffWriter w = { .struct_size = sizeof(w), .opaque = &ctx,
                        .write_chunk = write_chunk, .read_chunk = read_chunk };
    HandoffDecoder *dec = NULL;

    handoff_encoder_config_default(&cfg);
    cfg.adaptive = 0;
    make_modified(&vm);
    stream = encode_vm(&cfg, &vm, 0, &len, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(stream);
    test_vm_copy(&out, &base_vm);
    ctx.vm = &out;
    ctx.fail_after = -1;
    CU_ASSERT_EQUAL_FATAL(handoff_decoder_create(base, &w, NULL, &dec), 0);
    CU_ASSERT_EQUAL(handoff_decoder_feed(dec, stream, len), 0);
    CU_ASSERT_EQUAL(handoff_decoder_finish(dec), 0);
    CU_ASSERT(test_vm_equal(&out, &vm));
    handoff_decoder_free(dec);

    /* A failing writer stops the decode with HANDOFF_E_WRITE. */
    ctx.fail_after = 10;
    CU_ASSERT_EQUAL_FATAL(handoff_decoder_create(base, &w, NULL, &dec), 0);
    CU_ASSERT_EQUAL(handoff_decoder_feed(dec, stream, len), HANDOFF_E_WRITE);
    CU_ASSERT(strstr(handoff_last_error_message(), "writer failed") != NULL);
    handoff_decoder_free(dec);
    free(stream);
    test_vm_free(&vm);
    test_vm_free(&out);
}

static int write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");

    if (!f) {
        return -1;
    }
    fwrite(data, 1, len, f);
    return fclose(f);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A saved index reopens without rehashing and with the same identity. */
static void test_base_files_save_and_open(void)
{
    char dir[] = "/tmp/handoff-test-XXXXXX";
    char mem_path[256], disk_path[256], idx_path[256];
    HandoffRegionSpec spec[2];
    HandoffBase *created = NULL, *opened = NULL;
    uint8_t id1[16], id2[16], id3[16];
    uint64_t chunks, distinct;
    HandoffRegionInfo info;
    TestVm vm, out;
    uint8_t *stream;
    size_t len;
    HandoffEncoderConfig cfg = { .struct_size = sizeof(HandoffEncoderConfig) };

    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    snprintf(mem_path, sizeof(mem_path), "%s/mem.img", dir);
    snprintf(disk_path, sizeof(disk_path), "%s/disk.img", dir);
    snprintf(idx_path, sizeof(idx_path), "%s/base.hidx", dir);
    CU_ASSERT_EQUAL_FATAL(write_file(mem_path, base_vm.mem, N * CHUNK), 0);
    CU_ASSERT_EQUAL_FATAL(write_file(disk_path, base_vm.disk, N * CHUNK), 0);
    spec[0] = (HandoffRegionSpec){ "pc.ram", HANDOFF_REGION_MEMORY, mem_path,
                                   NULL, 0 };
    spec[1] = (HandoffRegionSpec){ "disk0", HANDOFF_REGION_DISK, disk_path,
                                   NULL, 0 };
    CU_ASSERT_EQUAL_FATAL(handoff_base_create(spec, 2, idx_path, &created), 0);
    {
        double t0 = now_s();
        CU_ASSERT_EQUAL_FATAL(handoff_base_open(idx_path, &opened), 0);
        CU_ASSERT(now_s() - t0 < 0.05);
    }
    handoff_base_id(created, id1);
    handoff_base_id(opened, id2);
    handoff_base_id(base, id3);
    CU_ASSERT(memcmp(id1, id2, 16) == 0);
    /* Same content, same identity, whether from files or memory. */
    CU_ASSERT(memcmp(id1, id3, 16) == 0);
    CU_ASSERT_EQUAL(handoff_base_region_count(opened), 2);
    CU_ASSERT_EQUAL(handoff_base_region_info(opened, 1, &info), 0);
    CU_ASSERT_STRING_EQUAL(info.name, "disk0");
    CU_ASSERT_EQUAL(info.kind, HANDOFF_REGION_DISK);
    CU_ASSERT_EQUAL(info.size, N * CHUNK);
    CU_ASSERT_EQUAL(handoff_base_region_info(opened, 2, &info),
                    HANDOFF_E_INVALID_ARGUMENT);
    handoff_base_counts(opened, &chunks, &distinct);
    CU_ASSERT_EQUAL(chunks, 2 * N);
    CU_ASSERT_EQUAL(distinct, 2 * N);

    /* A stream made against the in-memory base decodes on the opened one. */
    handoff_encoder_config_default(&cfg);
    cfg.adaptive = 0;
    make_modified(&vm);
    stream = encode_vm(&cfg, &vm, 1, &len, NULL);
    CU_ASSERT_EQUAL(test_decode(opened, &base_vm, stream, len, &out), 0);
    CU_ASSERT(test_vm_equal(&out, &vm));
    free(stream);
    test_vm_free(&vm);
    test_vm_free(&out);
    handoff_base_free(created);
    handoff_base_free(opened);

    /* Changing a base file invalidates the index. */
    sleep(0);
    {
        uint8_t one = 1;
        FILE *f = fopen(disk_path, "ab");
        fwrite(&one, 1, 1, f);
        fclose(f);
    }
    CU_ASSERT_EQUAL(handoff_base_open(idx_path, &opened), HANDOFF_E_BASE_CHANGED);
    CU_ASSERT_PTR_NULL(opened);

    /* A damaged index is refused. */
    {
        FILE *f = fopen(idx_path, "r+b");
        fseek(f, 20, SEEK_SET);
        fputc(0x77, f);
        fclose(f);
    }
    CU_ASSERT_EQUAL(handoff_base_open(idx_path, &opened), HANDOFF_E_INDEX_CORRUPT);
    CU_ASSERT_EQUAL(handoff_base_open("/nonexistent/x.hidx", &opened),
                    HANDOFF_E_IO);
    unlink(mem_path);
    unlink(disk_path);
    unlink(idx_path);
    rmdir(dir);
}

static void test_encoder_rejects_bad_use(void)
{
    HandoffEncoderConfig cfg = { .struct_size = sizeof(HandoffEncoderConfig) };
    HandoffEncoder *enc = NULL;
    uint8_t chunk[CHUNK] = { 1 };

    handoff_encoder_config_default(&cfg);
    cfg.adaptive = 0;
    cfg.mode.level = 42;
    CU_ASSERT_EQUAL(handoff_encoder_create(base, &cfg, &enc),
                    HANDOFF_E_INVALID_ARGUMENT);
    cfg.mode.level = 1;
    cfg.mode.codec = HANDOFF_CODEC_LZMA;
    cfg.mode.delta = HANDOFF_DELTA_PREFIX;
    CU_ASSERT_EQUAL(handoff_encoder_create(base, &cfg, &enc),
                    HANDOFF_E_INVALID_ARGUMENT);
    handoff_encoder_config_default(&cfg);
    CU_ASSERT_EQUAL_FATAL(handoff_encoder_create(base, &cfg, &enc), 0);
    CU_ASSERT_EQUAL(handoff_encoder_submit(enc, 2, 0, chunk),
                    HANDOFF_E_CHUNK_RANGE);
    CU_ASSERT_EQUAL(handoff_encoder_submit(enc, 0, N, chunk),
                    HANDOFF_E_CHUNK_RANGE);
    CU_ASSERT_EQUAL(handoff_encoder_begin_iteration(enc, 0),
                    HANDOFF_E_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(handoff_encoder_finish(enc), 0);
    CU_ASSERT_EQUAL(handoff_encoder_submit(enc, 0, 0, chunk), HANDOFF_E_STATE);
    CU_ASSERT_EQUAL(handoff_encoder_finish(enc), HANDOFF_E_STATE);
    handoff_encoder_free(enc);
    CU_ASSERT_EQUAL(handoff_encoder_create(NULL, &cfg, &enc),
                    HANDOFF_E_INVALID_ARGUMENT);
}

/* One thread submitting and pulling never blocks forever, and a flush
 * sends a partial frame at once. */
static void test_single_thread_pull_and_flush(void)
{
    HandoffEncoderConfig cfg = { .struct_size = sizeof(HandoffEncoderConfig) };
    HandoffEncoder *enc = NULL;
    uint8_t chunk[CHUNK];
    uint8_t buf[1 << 16];
    size_t n, total = 0, after_flush = 0;

    handoff_encoder_config_default(&cfg);
    cfg.adaptive = 0;
    CU_ASSERT_EQUAL_FATAL(handoff_encoder_create(base, &cfg, &enc), 0);
    fill_text(chunk, 4242);
    CU_ASSERT_EQUAL(handoff_encoder_submit(enc, 0, 3, chunk), 0);
    do {
        CU_ASSERT_EQUAL_FATAL(handoff_encoder_pull_wait(enc, buf, sizeof(buf),
                                                        &n), 0);
        total += n;
    } while (n != 0);
    CU_ASSERT(total > 0);   /* the header */
    CU_ASSERT_EQUAL(handoff_encoder_flush(enc), 0);
    do {
        CU_ASSERT_EQUAL_FATAL(handoff_encoder_pull_wait(enc, buf, sizeof(buf),
                                                        &n), 0);
        after_flush += n;
    } while (n != 0);
    CU_ASSERT(after_flush > 40);   /* a frame with the chunk */
    CU_ASSERT_EQUAL(handoff_encoder_done(enc), 0);
    CU_ASSERT_EQUAL(handoff_encoder_finish(enc), 0);
    do {
        CU_ASSERT_EQUAL_FATAL(handoff_encoder_pull(enc, buf, sizeof(buf), &n), 0);
    } while (n != 0);
    CU_ASSERT_EQUAL(handoff_encoder_done(enc), 1);
    handoff_encoder_free(enc);
}

/* A slow puller holds the producer back: pending bytes stay bounded. */
typedef struct Puller {
    HandoffEncoder *enc;
    size_t total;
    int failed;
} Puller;

static void *slow_pull(void *opaque)
{
    Puller *p = opaque;
    uint8_t buf[16384];
    size_t n;

    for (;;) {
        if (handoff_encoder_pull_wait(p->enc, buf, sizeof(buf), &n) != 0) {
            p->failed = 1;
            return NULL;
        }
        if (n == 0 && handoff_encoder_done(p->enc)) {
            return NULL;
        }
        p->total += n;
        usleep(200);
    }
}

static void test_back_pressure_bounds_pending(void)
{
    HandoffEncoderConfig cfg = { .struct_size = sizeof(HandoffEncoderConfig) };
    HandoffEncoderStats st = { .struct_size = sizeof(HandoffEncoderStats) };
    Puller p = { NULL, 0, 0 };
    pthread_t thread;
    TestVm vm;
    uint64_t i, max_pending = 0;

    handoff_encoder_config_default(&cfg);
    cfg.adaptive = 0;
    cfg.mode.codec = HANDOFF_CODEC_NONE;
    cfg.mode.level = 0;
    cfg.frame_bytes = 16 * 1024;
    cfg.max_pending_bytes = 64 * 1024;
    cfg.queue_frames = 4;
    make_modified(&vm);
    CU_ASSERT_EQUAL_FATAL(handoff_encoder_create(base, &cfg, &p.enc), 0);
    pthread_create(&thread, NULL, slow_pull, &p);
    for (i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(handoff_encoder_submit(p.enc, 0, i, vm.mem + i * CHUNK), 0);
        CU_ASSERT_EQUAL(handoff_encoder_submit(p.enc, 1, i, vm.disk + i * CHUNK), 0);
        handoff_encoder_stats(p.enc, &st);
        if (st.pending_bytes > max_pending) {
            max_pending = st.pending_bytes;
        }
    }
    CU_ASSERT_EQUAL(handoff_encoder_finish(p.enc), 0);
    pthread_join(thread, NULL);
    handoff_encoder_stats(p.enc, &st);
    CU_ASSERT_EQUAL(p.failed, 0);
    CU_ASSERT_EQUAL(p.total, st.output_bytes);
    /* The limit, plus the frames in flight when it was checked. */
    CU_ASSERT(max_pending <= 64 * 1024 + 4 * (16 * 1024 + 4096 + 200));
    printf(" (max pending %llu) ", (unsigned long long)max_pending);
    handoff_encoder_free(p.enc);
    test_vm_free(&vm);
}

/* Network reports drive logged decisions; the log is one line each. */
static void test_decision_log(void)
{
    HandoffEncoderConfig cfg = { .struct_size = sizeof(HandoffEncoderConfig) };
    HandoffEncoder *enc = NULL;
    TestVm vm;
    struct timespec ts;
    uint64_t now, sent = 0;
    const char *log;
    int k, lines = 0;
    uint8_t buf[1 << 16];
    size_t n;

    handoff_encoder_config_default(&cfg);
    cfg.frame_bytes = 8 * 1024;
    make_modified(&vm);
    CU_ASSERT_EQUAL_FATAL(handoff_encoder_create(base, &cfg, &enc), 0);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    for (k = 0; k < 8; k++) {
        test_submit_all(enc, &vm, 1);
        handoff_encoder_begin_iteration(enc, (uint32_t)k + 1);
        do {
            handoff_encoder_pull_wait(enc, buf, sizeof(buf), &n);
            sent += n;
        } while (n != 0);
        /* Pretend each round took 0.3 s on a 10 MB/s link. */
        now += 300000000ull;
        handoff_encoder_report_network(enc, sent, now);
    }
    handoff_encoder_finish(enc);
    log = handoff_encoder_decision_log(enc);
    for (; *log; log++) {
        lines += *log == '\n';
    }
    CU_ASSERT(lines >= 3);
    handoff_encoder_free(enc);
    test_vm_free(&vm);
}

/* Link reports every 50 ms, the encoder's clock and byte count. */
typedef struct LinkClock {
    HandoffEncoder *enc;
    uint64_t now_ns, sent;
} LinkClock;

/* An encoder with its header pulled (nothing pending), for link reports. */
static void link_clock_start(LinkClock *c)
{
    HandoffEncoderConfig cfg = { .struct_size = sizeof(HandoffEncoderConfig) };
    uint8_t buf[1 << 16];
    size_t n;

    c->enc = NULL;
    c->now_ns = 1000000000;
    c->sent = 0;
    handoff_encoder_config_default(&cfg);
    CU_ASSERT_EQUAL_FATAL(handoff_encoder_create(base, &cfg, &c->enc), 0);
    do {
        CU_ASSERT_EQUAL_FATAL(handoff_encoder_pull(c->enc, buf, sizeof(buf),
                                                   &n), 0);
    } while (n != 0);
}

/* @seconds of reports of @rate bytes/s carried, @queued bytes waiting. */
static void link_clock_run(LinkClock *c, double seconds, double rate,
                           uint64_t queued)
{
    int i;

    for (i = 0; i < (int)(seconds * 20 + 0.5); i++) {
        c->sent += (uint64_t)(rate * 0.05);
        c->now_ns += 50000000;
        CU_ASSERT_EQUAL(handoff_encoder_report_link(c->enc, c->sent, queued,
                                                    c->now_ns), 0);
    }
}

static HandoffEncoderStats link_clock_stats(LinkClock *c)
{
    HandoffEncoderStats st = { .struct_size = sizeof(HandoffEncoderStats) };

    CU_ASSERT_EQUAL(handoff_encoder_stats(c->enc, &st), 0);
    return st;
}

/*
 * A caller that pulls eagerly into a socket: after a stretch where the
 * sender starved the link (the estimate probes upwards), a full socket
 * queue must still read as backlog, so the estimate returns to what the
 * link carries. Reading the backlog against the probed estimate instead
 * let it run away (to 1e11 B/s on a 35 Mbit/s link in a benchmark).
 */
static void test_link_backlog_ends_probe(void)
{
    const double link = 35e6 / 8;
    LinkClock c;
    HandoffEncoderStats st;
    double probed;

    link_clock_start(&c);
    link_clock_run(&c, 10, link / 8, 0);      /* starved at 1/8 rate */
    probed = link_clock_stats(&c).bandwidth_bps;
    CU_ASSERT(probed > link);                 /* it did probe */
    link_clock_run(&c, 5, link, 3000000);     /* link full, 3 MB queued */
    st = link_clock_stats(&c);
    printf("\n    probed %.3g B/s, then read %.3g B/s on a %.3g B/s link ",
           probed, st.bandwidth_bps, link);
    CU_ASSERT(st.bandwidth_bps > 0.8 * link);
    CU_ASSERT(st.bandwidth_bps < 1.25 * link);
    handoff_encoder_free(c.enc);
}

/*
 * link_bps is what the link carried while it was the bottleneck, never the
 * probe: a handoff's end starves the link, bandwidth_bps doubles upwards,
 * and a downtime priced at it would let the last round hold far more than
 * fits (handoff-save-rounds.c).
 */
static void test_link_rate_is_never_a_probe(void)
{
    const double link = 25e6 / 8;
    LinkClock c;
    HandoffEncoderStats st;

    link_clock_start(&c);
    CU_ASSERT_EQUAL(link_clock_stats(&c).link_bps, 0);   /* no report */
    link_clock_run(&c, 2, link / 8, 0);       /* starved: what it carried */
    st = link_clock_stats(&c);
    CU_ASSERT(st.link_bps > 0.8 * link / 8 && st.link_bps < 1.25 * link / 8);
    CU_ASSERT(st.bandwidth_bps > 1.5 * link / 8);        /* the probe */
    link_clock_run(&c, 5, link, 3000000);     /* link full */
    link_clock_run(&c, 10, link / 8, 0);      /* the end: starved */
    st = link_clock_stats(&c);
    printf("\n    probe at %.3g B/s, link_bps %.3g B/s on a %.3g B/s link ",
           st.bandwidth_bps, st.link_bps, link);
    CU_ASSERT(st.bandwidth_bps > 1.5 * link);  /* it probed */
    CU_ASSERT(st.link_bps > 0.8 * link);
    CU_ASSERT(st.link_bps < 1.25 * link);
    handoff_encoder_free(c.enc);
}

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS) {
        return CU_get_error();
    }
    suite = CU_add_suite("roundtrip", init_suite, clean_suite);
    CU_add_test(suite, "stored", test_roundtrip_stored);
    CU_add_test(suite, "zstd", test_roundtrip_zstd);
    CU_add_test(suite, "zstd xor", test_roundtrip_zstd_xor);
    CU_add_test(suite, "zstd prefix", test_roundtrip_zstd_prefix);
    CU_add_test(suite, "lzma", test_roundtrip_lzma);
    CU_add_test(suite, "zlib", test_roundtrip_zlib);
    CU_add_test(suite, "adaptive", test_roundtrip_adaptive);
    CU_add_test(suite, "without dedup", test_without_dedup);
    CU_add_test(suite, "random order is seeded", test_random_order_is_seeded);
    CU_add_test(suite, "iterations in order, fed in pieces",
                test_iterations_in_order);
    CU_add_test(suite, "iterations, frames reversed",
                test_iterations_frames_reversed);
    CU_add_test(suite, "iterations, frames shuffled",
                test_iterations_frames_shuffled);
    CU_add_test(suite, "writer callbacks", test_writer_callbacks);
    CU_add_test(suite, "zero runs", test_zero_runs);
    CU_add_test(suite, "base files save and open",
                test_base_files_save_and_open);
    CU_add_test(suite, "encoder rejects bad use", test_encoder_rejects_bad_use);
    CU_add_test(suite, "single thread pull and flush",
                test_single_thread_pull_and_flush);
    CU_add_test(suite, "back-pressure bounds pending bytes",
                test_back_pressure_bounds_pending);
    CU_add_test(suite, "decision log", test_decision_log);
    CU_add_test(suite, "link backlog ends a bandwidth probe",
                test_link_backlog_ends_probe);
    CU_add_test(suite, "link rate is never a probe",
                test_link_rate_is_never_a_probe);

    return test_run_registry();
}
