/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "test_support.h"

#include <CUnit/Basic.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

void test_vm_alloc(TestVm *vm, uint64_t chunks)
{
    vm->chunks = chunks;
    vm->mem = calloc(chunks, CHUNK);
    vm->disk = calloc(chunks, CHUNK);
}

void test_vm_free(TestVm *vm)
{
    free(vm->mem);
    free(vm->disk);
    vm->mem = vm->disk = NULL;
}

void test_vm_copy(TestVm *dst, const TestVm *src)
{
    test_vm_alloc(dst, src->chunks);
    memcpy(dst->mem, src->mem, src->chunks * CHUNK);
    memcpy(dst->disk, src->disk, src->chunks * CHUNK);
}

int test_vm_equal(const TestVm *a, const TestVm *b)
{
    return a->chunks == b->chunks &&
           memcmp(a->mem, b->mem, a->chunks * CHUNK) == 0 &&
           memcmp(a->disk, b->disk, a->chunks * CHUNK) == 0;
}

void fill_text(uint8_t *chunk, uint64_t tag)
{
    static const char *const words[] = {
        "the ", "guest ", "kernel ", "page ", "cache ", "holds ", "file ",
        "data ", "while ", "handoff ", "moves ", "state ", "between ",
        "edge ", "servers ", "\n" };
    size_t pos = 0;
    uint64_t x = mix(tag + 1);
    int n = snprintf((char *)chunk, CHUNK, "record %llu: ",
                     (unsigned long long)tag);
    pos = (size_t)n;
    while (pos < CHUNK) {
        const char *w;
        size_t len;
        x = mix(x);
        w = words[x % 16];
        len = strlen(w);
        if (pos + len > CHUNK) {
            len = CHUNK - pos;
        }
        memcpy(chunk + pos, w, len);
        pos += len;
    }
}

void fill_random(uint8_t *chunk, uint64_t tag)
{
    uint64_t x = mix(tag ^ 0x5bd1e995u);
    size_t i;

    for (i = 0; i < CHUNK; i += 8) {
        x = mix(x + i);
        memcpy(chunk + i, &x, 8);
    }
}

void test_make_base_vm(TestVm *vm, uint64_t chunks, uint64_t seed)
{
    uint64_t i;

    test_vm_alloc(vm, chunks);
    for (i = 0; i < chunks; i++) {
        /* Half text, half random, all distinct. */
        if (i % 2) {
            fill_text(vm->mem + i * CHUNK, seed * 1000003 + i);
            fill_random(vm->disk + i * CHUNK, seed * 1000033 + i);
        } else {
            fill_random(vm->mem + i * CHUNK, seed * 1000003 + i);
            fill_text(vm->disk + i * CHUNK, seed * 1000033 + i);
        }
    }
}

HandoffBase *test_base_from_vm(const TestVm *vm)
{
    HandoffRegionSpec spec[2] = {
        { "pc.ram", HANDOFF_REGION_MEMORY, NULL, vm->mem, vm->chunks * CHUNK },
        { "disk0", HANDOFF_REGION_DISK, NULL, vm->disk, vm->chunks * CHUNK },
    };
    HandoffBase *base = NULL;

    if (handoff_base_create(spec, 2, NULL, &base) != 0) {
        return NULL;
    }
    return base;
}

int test_submit_all(HandoffEncoder *enc, const TestVm *vm, int random_order)
{
    uint64_t *idx = malloc(vm->chunks * sizeof(*idx));
    uint64_t i;
    int rc;

    for (i = 0; i < vm->chunks; i++) {
        idx[i] = i;
    }
    rc = handoff_encoder_submit_many(enc, 0, vm->mem, idx, vm->chunks,
                                     random_order);
    if (rc == 0) {
        rc = handoff_encoder_submit_many(enc, 1, vm->disk, idx, vm->chunks,
                                         0);
    }
    free(idx);
    return rc;
}

uint8_t *test_pull_all(HandoffEncoder *enc, size_t *len)
{
    size_t cap = 1 << 20, n = 0, got;
    uint8_t *buf = malloc(cap);

    for (;;) {
        if (cap - n < 65536) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        if (handoff_encoder_pull_wait(enc, buf + n, cap - n, &got) != 0) {
            free(buf);
            return NULL;
        }
        n += got;
        if (got == 0 && handoff_encoder_done(enc)) {
            break;
        }
    }
    *len = n;
    return buf;
}

int test_decode(HandoffBase *base, const TestVm *base_vm, const uint8_t *stream,
                size_t len, TestVm *out)
{
    HandoffDecoder *dec = NULL;
    void *mem[2];
    int rc;

    test_vm_copy(out, base_vm);
    mem[0] = out->mem;
    mem[1] = out->disk;
    rc = handoff_decoder_create(base, NULL, mem, &dec);
    if (rc != 0) {
        return rc;
    }
    rc = handoff_decoder_feed(dec, stream, len);
    if (rc == 0) {
        rc = handoff_decoder_finish(dec);
    }
    handoff_decoder_free(dec);
    return rc;
}

void test_make_mixed_vm(TestVm *vm, const TestVm *base)
{
    uint64_t i;
    const uint64_t n = TEST_MIXED_CHUNKS;

    test_vm_copy(vm, base);
    for (i = 0; i < 32; i++) {                  /* ZERO */
        memset(vm->mem + i * CHUNK, 0, CHUNK);
    }
    /* 32..63 unchanged: SAME */
    for (i = 64; i < 96; i++) {                 /* base disk, other place */
        memcpy(vm->mem + i * CHUNK, base->disk + (i + 7) * CHUNK, CHUNK);
    }
    for (i = 96; i < 112; i++) {                /* new random: DATA */
        fill_random(vm->mem + i * CHUNK, 7000 + i);
    }
    for (i = 112; i < 128; i++) {               /* duplicates: SELF_REF */
        memcpy(vm->mem + i * CHUNK, vm->mem + (i - 16) * CHUNK, CHUNK);
    }
    for (i = 128; i < n; i++) {                 /* new text: DATA */
        fill_text(vm->mem + i * CHUNK, 9000 + i);
    }
    /* disk 0..127 unchanged: SAME */
    for (i = 128; i < 160; i++) {               /* base memory: BASE_REF */
        memcpy(vm->disk + i * CHUNK, base->mem + (i + 1) * CHUNK, CHUNK);
    }
    for (i = 160; i < 192; i++) {               /* copies of memory: SELF */
        memcpy(vm->disk + i * CHUNK, vm->mem + (i - 32) * CHUNK, CHUNK);
    }
    for (i = 192; i < n; i++) {                 /* small edits: DATA (xor) */
        memcpy(vm->disk + i * CHUNK + 100, "edited!", 7);
        vm->disk[i * CHUNK + 3000] ^= 0x55;
    }
}

uint8_t *test_encode_segmented(HandoffBase *base, const HandoffEncoderConfig *cfg,
                               const TestVm *vm, size_t *len,
                               uint8_t root[HANDOFF_ROOT_SIZE])
{
    HandoffEncoderConfig c = *cfg;
    HandoffEncoder *enc = NULL;
    uint8_t *stream = NULL;

    c.segmented = 1;
    if (handoff_encoder_create(base, &c, &enc) != 0) {
        return NULL;
    }
    if (test_submit_all(enc, vm, 0) == 0 && handoff_encoder_finish(enc) == 0 &&
        handoff_encoder_segment_root(enc, root) == 0) {
        stream = test_pull_all(enc, len);
    }
    handoff_encoder_free(enc);
    return stream;
}

HandoffChunkRef *test_address_order(uint64_t chunks)
{
    HandoffChunkRef *order = malloc(2 * chunks * sizeof(*order));
    uint64_t i;

    for (i = 0; order != NULL && i < 2 * chunks; i++) {
        order[i].region = i >= chunks;
        order[i].chunk_index = i % chunks;
    }
    return order;
}

int test_segments_open(const uint8_t *stream, size_t len, TestSegments *out)
{
    uint64_t table_len = 0;
    int rc = handoff_segment_table_length(stream, len, &table_len);

    if (rc != 0) {
        return rc;
    }
    if (table_len > len) {
        return HANDOFF_E_TRUNCATED;
    }
    out->table_len = (size_t)table_len;
    rc = handoff_segment_table_open(stream, out->table_len, NULL, &out->table);
    out->count = rc == 0 ? handoff_segment_table_count(out->table) : 0;
    return rc;
}

const uint8_t *test_segment(const TestSegments *segs, const uint8_t *stream,
                            uint32_t k, uint32_t *length)
{
    uint64_t offset = 0;

    if (handoff_segment_table_entry(segs->table, k, &offset, length, NULL,
                                    NULL, 0, NULL) != 0) {
        return NULL;
    }
    return stream + segs->table_len + offset;
}

size_t test_segment_deps(const TestSegments *segs, uint32_t k,
                         uint32_t deps[64])
{
    size_t n = 0;

    handoff_segment_table_entry(segs->table, k, NULL, NULL, NULL, deps, 64, &n);
    return n < 64 ? n : 64;
}

static int destination_write(void *opaque, uint32_t region, uint64_t index,
                             const void *data)
{
    TestDestination *d = opaque;

    d->writes++;
    memcpy((region == 0 ? d->image.mem : d->image.disk) + index * CHUNK, data,
           CHUNK);
    return 0;
}

static int destination_read(void *opaque, uint32_t region, uint64_t index,
                            void *data)
{
    TestDestination *d = opaque;

    d->reads++;
    memcpy(data, (region == 0 ? d->image.mem : d->image.disk) + index * CHUNK,
           CHUNK);
    return 0;
}

int test_destination_open(TestDestination *d, HandoffBase *base,
                          const TestVm *base_vm)
{
    HandoffWriter w = { .struct_size = sizeof(w) };

    memset(d, 0, sizeof(*d));
    test_vm_copy(&d->image, base_vm);
    w.opaque = d;
    w.write_chunk = destination_write;
    w.read_chunk = destination_read;
    return handoff_decoder_create(base, &w, NULL, &d->dec);
}

void test_destination_close(TestDestination *d)
{
    handoff_decoder_free(d->dec);
    test_vm_free(&d->image);
}

int test_run_registry(void)
{
    unsigned failed;

    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
             CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}

int test_shell_in(const char *dir, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    int n;

    n = snprintf(cmd, sizeof(cmd), "cd %s && ", dir);
    va_start(ap, fmt);
    vsnprintf(cmd + n, sizeof(cmd) - n, fmt, ap);
    va_end(ap);
    return system(cmd);
}
