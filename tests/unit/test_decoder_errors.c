/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The decoder trusts nothing: each kind of damaged or hostile input gets
 * its own error code and a message, never a crash. Streams are crafted
 * byte by byte following docs/stream-format.md, which doubles as a check
 * that the document is precise enough to write a stream from.
 */
#include "handoff.h"
#include "test_support.h"

#include <CUnit/Basic.h>
#include <lzma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zlib.h>
#include <zstd.h>

#define N 64
#define BIG (16u << 20)

static TestVm base_vm;
static HandoffBase *base;
static uint8_t header[1024];
static size_t header_len;

enum { ZERO = 1, DATA = 2, BASE_REF = 3, SELF_REF = 4, ITER = 5 };

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* Stream under construction, with the totals its end record needs. */
typedef struct Crafted {
    uint8_t *buf;
    size_t len;
    uint64_t frames, records, per_type[5], plain_bytes;
} Crafted;

static void crafted_init(Crafted *c)
{
    memset(c, 0, sizeof(*c));
    c->buf = malloc(BIG);
    memcpy(c->buf, header, header_len);
    c->len = header_len;
}

/* Plaintext builder. */
typedef struct Plain {
    uint8_t buf[1 << 18];
    size_t len;
    uint32_t records;
    uint64_t per_type[5];
} Plain;

static void rec(Plain *p, int type, int region, int flags, uint32_t iter,
                uint64_t seq, uint64_t index)
{
    uint8_t *h = p->buf + p->len;

    h[0] = type;
    h[1] = region;
    h[2] = flags;
    h[3] = 0;
    put32(h + 4, iter);
    put64(h + 8, seq);
    put64(h + 16, index);
    p->len += 24;
    p->records++;
    if (type >= 1 && type <= 5) {
        p->per_type[type - 1]++;
    }
}

static void rec_data(Plain *p, uint64_t seq, int region, uint64_t index,
                     uint8_t fill)
{
    rec(p, DATA, region, 0, 0, seq, index);
    memset(p->buf + p->len, fill, CHUNK);
    p->len += CHUNK;
}

static void rec_ref(Plain *p, int type, uint64_t seq, int region,
                    uint64_t index, int src_region, uint64_t src_index,
                    uint64_t src_seq)
{
    uint8_t *b;

    rec(p, type, region, 0, 0, seq, index);
    b = p->buf + p->len;
    memset(b, 0, 24);
    b[0] = src_region;
    put64(b + 8, src_index);
    if (type == SELF_REF) {
        put64(b + 16, src_seq);
        p->len += 24;
    } else {
        p->len += 16;
    }
}

static void plain_reset(Plain *p)
{
    p->len = 0;
    p->records = 0;
    memset(p->per_type, 0, sizeof(p->per_type));
}

/* A ZERO record with the run flag and its u64 count. */
static void rec_run(Plain *p, uint64_t seq, int region, uint64_t index,
                    uint64_t count)
{
    rec(p, ZERO, region, 2, 0, seq, index);
    put64(p->buf + p->len, count);
    p->len += 8;
}

/* Appends a frame with an explicit payload and declared fields. */
static void add_frame_raw(Crafted *c, int codec, int level, int flags,
                          const uint8_t *payload, size_t payload_len,
                          uint32_t plain_len, uint64_t seq, uint64_t checksum,
                          uint32_t records)
{
    uint8_t *h = c->buf + c->len;

    put32(h, 0x4D415246);
    h[4] = codec;
    h[5] = (uint8_t)level;
    put16(h + 6, flags);
    put32(h + 8, (uint32_t)payload_len);
    put32(h + 12, plain_len);
    put64(h + 16, seq);
    put64(h + 24, checksum);
    put32(h + 32, records);
    put32(h + 36, (uint32_t)XXH3_64bits(h, 36));
    memcpy(h + 40, payload, payload_len);
    c->len += 40 + payload_len;
    c->frames++;
}

/* Appends @p as a stored frame with correct fields. */
static void add_frame(Crafted *c, const Plain *p)
{
    int i;

    add_frame_raw(c, HANDOFF_CODEC_NONE, 0, 0, p->buf, p->len, p->len,
                  c->frames, XXH3_64bits(p->buf, p->len), p->records);
    c->records += p->records;
    c->plain_bytes += p->len;
    for (i = 0; i < 5; i++) {
        c->per_type[i] += p->per_type[i];
    }
}

static void add_end(Crafted *c)
{
    uint8_t *e = c->buf + c->len;
    XXH128_canonical_t d;
    int i;

    XXH128_canonicalFromHash(&d, XXH3_128bits(c->buf, c->len));
    memset(e, 0, 104);
    put32(e, 0x21444E45);
    put64(e + 8, c->frames);
    put64(e + 16, c->records);
    for (i = 0; i < 5; i++) {
        put64(e + 24 + 8 * i, c->per_type[i]);
    }
    put64(e + 64, c->plain_bytes);
    put64(e + 72, c->len);
    memcpy(e + 80, d.digest, 16);
    put64(e + 96, XXH3_64bits(e, 96));
    c->len += 104;
}

static int decode(const uint8_t *buf, size_t len)
{
    TestVm out;
    int rc = test_decode(base, &base_vm, buf, len, &out);

    test_vm_free(&out);
    if (rc != 0) {
        /* Every failure names its cause. */
        CU_ASSERT(strlen(handoff_last_error_message()) > 20);
    }
    return rc;
}

static int decode_crafted(Crafted *c)
{
    int rc;

    add_end(c);
    rc = decode(c->buf, c->len);
    free(c->buf);
    return rc;
}

static int init_suite(void)
{
    HandoffEncoder *enc = NULL;
    HandoffEncoderConfig cfg = { .struct_size = sizeof(HandoffEncoderConfig) };
    uint8_t *s;
    size_t len, count;

    test_make_base_vm(&base_vm, N, 3);
    base = test_base_from_vm(&base_vm);
    handoff_encoder_config_default(&cfg);
    if (!base || handoff_encoder_create(base, &cfg, &enc) != 0 ||
        handoff_encoder_finish(enc) != 0) {
        return 1;
    }
    s = test_pull_all(enc, &len);
    handoff_encoder_free(enc);
    if (!s || handoff_stream_split(s, len, &header_len, NULL, NULL, 0,
                                   &count) != 0 || count != 0) {
        return 1;
    }
    memcpy(header, s, header_len);
    free(s);
    return 0;
}

static int clean_suite(void)
{
    handoff_base_free(base);
    test_vm_free(&base_vm);
    return 0;
}

static void test_crafted_valid_stream_decodes(void)
{
    Crafted c;
    Plain p = { .len = 0 };

    crafted_init(&c);
    rec(&p, ITER, 0, 0, 0, 1, 0);
    rec_data(&p, 2, 0, 5, 0xab);
    rec(&p, ZERO, 1, 0, 0, 3, 7);
    rec_ref(&p, BASE_REF, 4, 0, 6, 1, 9, 0);
    rec_ref(&p, SELF_REF, 5, 1, 8, 0, 5, 2);
    add_frame(&c, &p);
    CU_ASSERT_EQUAL(decode_crafted(&c), 0);
}

/*
 * Zero runs (stream version 2): the chunks they cover read as zeros, a
 * newer record of one of them wins, and no run reaches past its region
 * or counts fewer than 2 chunks.
 */
static void test_zero_runs(void)
{
    static const uint8_t zeros[CHUNK];
    Crafted c;
    Plain p = { .len = 0 };
    TestVm out;
    uint64_t i;

    crafted_init(&c);
    rec_data(&p, 1, 1, 5, 0xcd);
    rec_run(&p, 2, 1, 3, 8);            /* chunks 3..10 of region 1 */
    rec_data(&p, 3, 1, 7, 0xab);        /* newer than the run */
    add_frame(&c, &p);
    add_end(&c);
    CU_ASSERT_EQUAL_FATAL(test_decode(base, &base_vm, c.buf, c.len, &out), 0);
    for (i = 0; i < N; i++) {
        const uint8_t *got = out.disk + i * CHUNK;
        if (i == 7) {
            CU_ASSERT_EQUAL(got[0], 0xab);
        } else if (i >= 3 && i <= 10) {
            CU_ASSERT(memcmp(got, zeros, CHUNK) == 0);
        } else {
            CU_ASSERT(memcmp(got, base_vm.disk + i * CHUNK, CHUNK) == 0);
        }
    }
    CU_ASSERT(memcmp(out.mem, base_vm.mem, N * CHUNK) == 0);
    test_vm_free(&out);
    free(c.buf);

    plain_reset(&p);
    crafted_init(&c);
    rec_run(&p, 1, 1, 0, 1);
    add_frame(&c, &p);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_BAD_RECORD);
    CU_ASSERT_PTR_NOT_NULL(strstr(handoff_last_error_message(),
                                  "fewer than 2"));

    plain_reset(&p);
    crafted_init(&c);
    rec_run(&p, 1, 1, N - 2, 3);
    add_frame(&c, &p);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_CHUNK_RANGE);
    CU_ASSERT_PTR_NOT_NULL(strstr(handoff_last_error_message(),
                                  "runs past the region"));

    plain_reset(&p);
    crafted_init(&c);
    rec_run(&p, 1, 1, 1, UINT64_MAX);   /* index + count wraps around */
    add_frame(&c, &p);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_CHUNK_RANGE);

    plain_reset(&p);
    crafted_init(&c);
    rec(&p, ZERO, 1, 2, 0, 1, 0);       /* run flag, count cut off */
    add_frame(&c, &p);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_BAD_RECORD);
}

static void test_unknown_record_type(void)
{
    Crafted c;
    Plain p = { .len = 0 };

    crafted_init(&c);
    rec(&p, 9, 0, 0, 0, 1, 0);
    add_frame(&c, &p);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_BAD_RECORD);
    CU_ASSERT(strstr(handoff_last_error_message(), "unknown record type") != NULL);
}

static void test_bad_record_fields(void)
{
    Crafted c;
    Plain p = { .len = 0 };

    /* Sequence numbers must increase. */
    crafted_init(&c);
    rec(&p, ZERO, 0, 0, 0, 5, 1);
    rec(&p, ZERO, 0, 0, 0, 5, 2);
    add_frame(&c, &p);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_BAD_RECORD);

    /* XOR flag only on data. */
    p.len = 0;
    crafted_init(&c);
    rec(&p, ZERO, 0, 1, 0, 1, 1);
    add_frame(&c, &p);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_BAD_RECORD);

    /* Data cut short by the end of the plaintext. */
    p.len = 0;
    crafted_init(&c);
    rec(&p, DATA, 0, 0, 0, 1, 1);
    memset(p.buf + p.len, 1, 100);
    p.len += 100;
    add_frame(&c, &p);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_BAD_RECORD);
}

static void test_record_count_mismatch(void)
{
    Crafted c;
    Plain p = { .len = 0 };

    crafted_init(&c);
    rec(&p, ZERO, 0, 0, 0, 1, 1);
    add_frame_raw(&c, 0, 0, 0, p.buf, p.len, p.len, 0,
                  XXH3_64bits(p.buf, p.len), 2);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_BAD_RECORD);
}

static void test_chunk_outside_geometry(void)
{
    Crafted c;
    Plain p = { .len = 0 };

    crafted_init(&c);
    rec(&p, ZERO, 0, 0, 0, 1, N);
    add_frame(&c, &p);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_CHUNK_RANGE);

    p.len = 0;
    crafted_init(&c);
    rec_data(&p, 1, 2, 0, 1);
    add_frame(&c, &p);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_CHUNK_RANGE);
}

static void test_base_ref_outside_base(void)
{
    Crafted c;
    Plain p = { .len = 0 };

    crafted_init(&c);
    rec_ref(&p, BASE_REF, 1, 0, 0, 0, N + 5, 0);
    add_frame(&c, &p);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_BAD_BASE_REF);

    p.len = 0;
    crafted_init(&c);
    rec_ref(&p, BASE_REF, 1, 0, 0, 7, 0, 0);
    add_frame(&c, &p);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_BAD_BASE_REF);
}

static void test_self_ref_to_nothing(void)
{
    Crafted c;
    Plain p = { .len = 0 };

    /* Never sent. */
    crafted_init(&c);
    rec_ref(&p, SELF_REF, 5, 0, 0, 0, 3, 2);
    add_frame(&c, &p);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_BAD_SELF_REF);

    /* From the future. */
    p.len = 0;
    crafted_init(&c);
    rec_data(&p, 1, 0, 3, 9);
    rec_ref(&p, SELF_REF, 2, 0, 0, 0, 3, 7);
    add_frame(&c, &p);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_BAD_SELF_REF);

    /* To a record that carried no data. */
    p.len = 0;
    crafted_init(&c);
    rec(&p, ZERO, 0, 0, 0, 1, 3);
    rec_ref(&p, SELF_REF, 2, 0, 0, 0, 3, 1);
    add_frame(&c, &p);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_BAD_SELF_REF);

    /* Outside the geometry. */
    p.len = 0;
    crafted_init(&c);
    rec_ref(&p, SELF_REF, 2, 0, 0, 0, N, 1);
    add_frame(&c, &p);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_BAD_SELF_REF);
}

static void test_unknown_codec_and_level(void)
{
    Crafted c;
    uint8_t payload[8] = { 0 };

    crafted_init(&c);
    add_frame_raw(&c, 9, 0, 0, payload, 8, 8, 0, XXH3_64bits(payload, 8), 0);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_UNKNOWN_CODEC);

    crafted_init(&c);
    add_frame_raw(&c, HANDOFF_CODEC_ZSTD, 42, 0, payload, 8, 8, 0, 0, 0);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_BAD_LEVEL);
}

static void test_lengths_beyond_limits(void)
{
    Crafted c;
    uint8_t payload[8] = { 0 };

    crafted_init(&c);
    add_frame_raw(&c, 0, 0, 0, payload, 8, 100u << 20, 0, 0, 0);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_LENGTH_LIMIT);

    /* A huge declared payload is refused before any of it is awaited. */
    crafted_init(&c);
    add_frame_raw(&c, 0, 0, 0, payload, 8, 8, 0, 0, 0);
    put32(c.buf + header_len + 8, 0xfffffff0u);
    put32(c.buf + header_len + 36, (uint32_t)XXH3_64bits(c.buf + header_len, 36));
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_LENGTH_LIMIT);
}

/* A payload that inflates beyond its declared length: decompression bomb. */
static void bomb(int codec)
{
    static uint8_t zeros[1 << 20];
    uint8_t *out = malloc(1 << 20);
    size_t n = 0;
    Crafted c;

    if (codec == HANDOFF_CODEC_ZSTD) {
        n = ZSTD_compress(out, 1 << 20, zeros, sizeof(zeros), 3);
    } else if (codec == HANDOFF_CODEC_ZLIB) {
        uLongf z = 1 << 20;
        compress2(out, &z, zeros, sizeof(zeros), 6);
        n = z;
    } else {
        size_t pos = 0;
        lzma_easy_buffer_encode(1, LZMA_CHECK_NONE, NULL, zeros,
                                sizeof(zeros), out, &pos, 1 << 20);
        n = pos;
    }
    crafted_init(&c);
    add_frame_raw(&c, codec, codec == HANDOFF_CODEC_LZMA ? 1 : 3, 0, out, n,
                  4096, 0, XXH3_64bits(zeros, 4096), 0);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_SIZE_MISMATCH);
    CU_ASSERT(strstr(handoff_last_error_message(), "beyond the declared") != NULL);

    /* And one that stops short of it. */
    crafted_init(&c);
    add_frame_raw(&c, codec, codec == HANDOFF_CODEC_LZMA ? 1 : 3, 0, out, n,
                  (2u << 20), 0, 0, 0);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_SIZE_MISMATCH);
    free(out);
}

static void test_decompression_bombs(void)
{
    bomb(HANDOFF_CODEC_ZSTD);
    bomb(HANDOFF_CODEC_LZMA);
    bomb(HANDOFF_CODEC_ZLIB);
}

static void test_garbage_payload(void)
{
    Crafted c;
    uint8_t junk[64];

    memset(junk, 0x5a, sizeof(junk));
    crafted_init(&c);
    add_frame_raw(&c, HANDOFF_CODEC_ZSTD, 1, 0, junk, 64, 4096, 0, 0, 0);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_DECOMPRESS);
    crafted_init(&c);
    add_frame_raw(&c, HANDOFF_CODEC_LZMA, 1, 0, junk, 64, 4096, 0, 0, 0);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_DECOMPRESS);
    crafted_init(&c);
    add_frame_raw(&c, HANDOFF_CODEC_ZLIB, 1, 0, junk, 64, 4096, 0, 0, 0);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_DECOMPRESS);
}

static void test_checksum_mismatch(void)
{
    Crafted c;
    Plain p = { .len = 0 };

    crafted_init(&c);
    rec_data(&p, 1, 0, 3, 9);
    add_frame_raw(&c, 0, 0, 0, p.buf, p.len, p.len, 0,
                  XXH3_64bits(p.buf, p.len) ^ 1, 1);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_CHECKSUM);
}

static void test_prefix_abuse(void)
{
    Crafted c;
    uint8_t payload[32] = { 0 };

    /* Prefix flag on a codec that has no prefix. */
    crafted_init(&c);
    put32(payload, 1);
    add_frame_raw(&c, HANDOFF_CODEC_LZMA, 1, 1, payload, 16, 4096, 0, 0, 0);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_FRAME_HEADER_CORRUPT);

    /* Prefix naming a base chunk that does not exist. */
    crafted_init(&c);
    put32(payload, 1);
    put64(payload + 8, 2 * N);
    add_frame_raw(&c, HANDOFF_CODEC_ZSTD, 1, 1, payload, 24, 4096, 0, 0, 0);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_BAD_BASE_REF);

    /* Prefix list longer than the payload. */
    crafted_init(&c);
    put32(payload, 1000);
    add_frame_raw(&c, HANDOFF_CODEC_ZSTD, 1, 1, payload, 24, 4096, 0, 0, 0);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_LENGTH_LIMIT);
}

static void test_frame_sequence(void)
{
    Crafted c;
    Plain p = { .len = 0 };

    crafted_init(&c);
    rec(&p, ZERO, 0, 0, 0, 1, 1);
    add_frame_raw(&c, 0, 0, 0, p.buf, p.len, p.len, 3,
                  XXH3_64bits(p.buf, p.len), 1);
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_FRAME_SEQUENCE);
}

static void test_out_of_order_duplicate_frame(void)
{
    Crafted c;
    Plain p = { .len = 0 };
    TestVm out;
    void *mem[2];
    HandoffDecoder *dec = NULL;

    crafted_init(&c);
    rec(&p, ZERO, 0, 0, 0, 1, 1);
    add_frame(&c, &p);
    test_vm_copy(&out, &base_vm);
    mem[0] = out.mem;
    mem[1] = out.disk;
    CU_ASSERT_EQUAL_FATAL(handoff_decoder_create(base, NULL, mem, &dec), 0);
    CU_ASSERT_EQUAL(handoff_decoder_apply_frame(dec, c.buf + header_len,
                                                c.len - header_len),
                    HANDOFF_E_STATE);
    CU_ASSERT_EQUAL(handoff_decoder_feed(dec, c.buf, header_len), 0);
    CU_ASSERT_EQUAL(handoff_decoder_apply_frame(dec, c.buf + header_len,
                                                c.len - header_len), 0);
    CU_ASSERT_EQUAL(handoff_decoder_apply_frame(dec, c.buf + header_len,
                                                c.len - header_len),
                    HANDOFF_E_FRAME_SEQUENCE);
    handoff_decoder_free(dec);

    /* A frame cut short when given on its own. */
    CU_ASSERT_EQUAL_FATAL(handoff_decoder_create(base, NULL, mem, &dec), 0);
    CU_ASSERT_EQUAL(handoff_decoder_feed(dec, c.buf, header_len), 0);
    CU_ASSERT_EQUAL(handoff_decoder_apply_frame(dec, c.buf + header_len,
                                                c.len - header_len - 1),
                    HANDOFF_E_TRUNCATED);
    handoff_decoder_free(dec);
    test_vm_free(&out);
    free(c.buf);
}

/* Chunks per region the out-of-order tests rewrite: their data records
 * fill one Plain. */
#define M (N / 2)

/* Appends a zstd frame of @plain (whose records @per_type counts). */
static void add_frame_zstd(Crafted *c, const uint8_t *plain, size_t len,
                           uint32_t records, const uint64_t per_type[5],
                           uint64_t frame_seq)
{
    size_t cap = ZSTD_compressBound(len);
    uint8_t *z = malloc(cap);
    size_t zlen = ZSTD_compress(z, cap, plain, len, 1);
    int i;

    CU_ASSERT_FATAL(!ZSTD_isError(zlen));
    CU_ASSERT_FATAL(c->len + 40 + zlen + 104 <= BIG);
    add_frame_raw(c, HANDOFF_CODEC_ZSTD, 1, 0, z, zlen, (uint32_t)len,
                  frame_seq, XXH3_64bits(plain, len), records);
    c->records += records;
    c->plain_bytes += len;
    for (i = 0; i < 5; i++) {
        c->per_type[i] += per_type[i];
    }
    free(z);
}

static HandoffDecoder *out_of_order_decoder(TestVm *out)
{
    HandoffDecoder *dec = NULL;
    void *mem[2];

    test_vm_copy(out, &base_vm);
    mem[0] = out->mem;
    mem[1] = out->disk;
    CU_ASSERT_FATAL(handoff_decoder_create(base, NULL, mem, &dec) == 0);
    CU_ASSERT_FATAL(handoff_decoder_feed(dec, header, header_len) == 0);
    return dec;
}

static uint64_t held_bytes(const HandoffDecoder *dec)
{
    HandoffDecoderStats st = { .struct_size = sizeof(HandoffDecoderStats) };

    CU_ASSERT_EQUAL(handoff_decoder_stats(dec, &st), 0);
    return st.held_bytes;
}

/* Applies frames @order[0..count) of @c (located by @offsets/@lengths)
 * until one fails; returns that error, 0 if none did. Checks the held
 * bytes never exceed the limit. */
static int apply_frames(HandoffDecoder *dec, const Crafted *c,
                        const size_t *offsets, const size_t *lengths,
                        const size_t *order, size_t count, uint64_t *peak)
{
    size_t i;

    *peak = 0;
    for (i = 0; i < count; i++) {
        int rc = handoff_decoder_apply_frame(dec, c->buf + offsets[order[i]],
                                             lengths[order[i]]);
        uint64_t held = held_bytes(dec);

        CU_ASSERT(held <= HANDOFF_DECODER_MAX_HELD_BYTES);
        if (held > *peak) {
            *peak = held;
        }
        if (rc != 0) {
            printf("\n    frame %zu of %zu: %s", i + 1, count,
                   handoff_last_error_message());
            return rc;
        }
    }
    return 0;
}

/*
 * Out of order, a stale DATA version is kept in case a later frame
 * references it. Highly compressible stale versions used to be kept
 * without bound (a small stream could make the decoder hold gigabytes);
 * now the decoder refuses to hold more than the documented limit.
 */
static void test_out_of_order_stale_data_bounded(void)
{
    enum { FRAMES = 12, PER_FRAME = 2000 };
    size_t offsets[FRAMES + 1], lengths[FRAMES + 1], order[FRAMES + 1];
    uint64_t per_type[5] = { 0 }, peak, f, j;
    uint8_t *plain = malloc(PER_FRAME * (24 + CHUNK));
    HandoffDecoder *dec;
    Crafted c;
    TestVm out;
    int rc;

    crafted_init(&c);
    /* The newest versions of region 0, in the last frame... */
    {
        Plain *p = calloc(1, sizeof(*p));

        for (j = 0; j < M; j++) {
            rec_data(p, (1ull << 40) + j, 0, j, 0x11);
        }
        offsets[FRAMES] = c.len;
        add_frame_zstd(&c, p->buf, p->len, p->records, p->per_type, FRAMES);
        lengths[FRAMES] = c.len - offsets[FRAMES];
        free(p);
    }
    /* ...applied first, so that every older one arriving later is stale. */
    order[0] = FRAMES;
    per_type[DATA - 1] = PER_FRAME;
    for (f = 0; f < FRAMES; f++) {
        size_t len = 0;

        for (j = 0; j < PER_FRAME; j++) {
            uint8_t *h = plain + len;

            memset(h, 0, 24);
            h[0] = DATA;
            put64(h + 8, f * PER_FRAME + j + 1);
            put64(h + 16, j % M);
            memset(h + 24, 0x22, CHUNK);
            len += 24 + CHUNK;
        }
        offsets[f] = c.len;
        add_frame_zstd(&c, plain, len, PER_FRAME, per_type, f);
        lengths[f] = c.len - offsets[f];
        order[f + 1] = f;
    }
    printf("\n    %zu-byte stream, %d stale data versions",
           c.len, FRAMES * PER_FRAME);
    dec = out_of_order_decoder(&out);
    rc = apply_frames(dec, &c, offsets, lengths, order, FRAMES + 1, &peak);
    CU_ASSERT_EQUAL(rc, HANDOFF_E_LENGTH_LIMIT);
    CU_ASSERT_PTR_NOT_NULL(strstr(handoff_last_error_message(), "out of order"));
    CU_ASSERT(peak > HANDOFF_DECODER_MAX_HELD_BYTES / 2);
    /* The error is sticky. */
    CU_ASSERT_EQUAL(handoff_decoder_finish(dec), HANDOFF_E_LENGTH_LIMIT);
    handoff_decoder_free(dec);
    test_vm_free(&out);
    free(plain);
    free(c.buf);
}

/* Self references waiting for a version that never comes are bounded the
 * same way. */
static void test_out_of_order_waiting_refs_bounded(void)
{
    enum { FRAMES = 6, PER_FRAME = 150000 };
    size_t offsets[FRAMES], lengths[FRAMES], order[FRAMES];
    uint64_t per_type[5] = { 0 }, peak, f, j;
    uint8_t *plain = malloc((size_t)PER_FRAME * 48);
    HandoffDecoder *dec;
    Crafted c;
    TestVm out;
    int rc;

    crafted_init(&c);
    per_type[SELF_REF - 1] = PER_FRAME;
    for (f = 0; f < FRAMES; f++) {
        for (j = 0; j < PER_FRAME; j++) {
            uint8_t *h = plain + j * 48;
            uint64_t seq = 2 * (f * PER_FRAME + j) + 2;

            memset(h, 0, 48);
            h[0] = SELF_REF;
            h[1] = 1;
            put64(h + 8, seq);
            put64(h + 16, j % N);
            put64(h + 24 + 8, 3);          /* source chunk 3 of region 0 */
            put64(h + 24 + 16, seq - 1);   /* a version never sent */
        }
        offsets[f] = c.len;
        add_frame_zstd(&c, plain, (size_t)PER_FRAME * 48, PER_FRAME,
                       per_type, f);
        lengths[f] = c.len - offsets[f];
        order[FRAMES - 1 - f] = f;         /* reversed */
    }
    printf("\n    %zu-byte stream, %d waiting references", c.len,
           FRAMES * PER_FRAME);
    dec = out_of_order_decoder(&out);
    rc = apply_frames(dec, &c, offsets, lengths, order, FRAMES, &peak);
    CU_ASSERT_EQUAL(rc, HANDOFF_E_LENGTH_LIMIT);
    CU_ASSERT_PTR_NOT_NULL(strstr(handoff_last_error_message(), "out of order"));
    handoff_decoder_free(dec);
    test_vm_free(&out);
    free(plain);
    free(c.buf);
}

/*
 * A valid stream that rewrites the same chunks frame after frame, with
 * self references to the previous frame's versions, decodes out of order
 * however long it is: a superseded version is dropped as soon as every
 * record that could still reference it has arrived, so the decoder holds
 * little more than what the reordering window needs.
 */
static void test_out_of_order_long_stream_stays_small(void)
{
    enum { FRAMES = 400 };
    size_t *offsets = calloc(FRAMES, sizeof(size_t));
    size_t *lengths = calloc(FRAMES, sizeof(size_t));
    size_t *order = calloc(FRAMES, sizeof(size_t));
    uint64_t peak, f, j;
    HandoffDecoder *dec;
    Crafted c;
    TestVm out, want;
    int rc;

    crafted_init(&c);
    test_vm_copy(&want, &base_vm);
    for (f = 0; f < FRAMES; f++) {
        Plain *p = calloc(1, sizeof(*p));

        for (j = 0; f > 0 && j < M; j++) {
            /* Region 1 takes the previous frame's version of region 0. */
            rec_ref(p, SELF_REF, f * 1000 + 1 + j, 1, j, 0, j,
                    (f - 1) * 1000 + 500 + j);
            memset(want.disk + j * CHUNK, (int)(f - 1) & 0xff, CHUNK);
        }
        for (j = 0; j < M; j++) {
            rec_data(p, f * 1000 + 500 + j, 0, j, (uint8_t)f);
            memset(want.mem + j * CHUNK, (int)f & 0xff, CHUNK);
        }
        offsets[f] = c.len;
        add_frame_zstd(&c, p->buf, p->len, p->records, p->per_type, f);
        lengths[f] = c.len - offsets[f];
        /* Pairs swapped: 1 0 3 2 5 4 ... */
        order[f] = f ^ 1;
        free(p);
    }
    add_end(&c);
    dec = out_of_order_decoder(&out);
    rc = apply_frames(dec, &c, offsets, lengths, order, FRAMES, &peak);
    CU_ASSERT_EQUAL(rc, 0);
    printf("\n    %d frames of %d superseded versions each, peak %llu bytes "
           "held", FRAMES, M, (unsigned long long)peak);
    CU_ASSERT(peak < 4 * 2 * M * (CHUNK + 512));
    CU_ASSERT_EQUAL(handoff_decoder_feed(dec, c.buf + c.len - 104, 104), 0);
    CU_ASSERT_EQUAL(handoff_decoder_finish(dec), 0);
    CU_ASSERT(test_vm_equal(&out, &want));
    CU_ASSERT(held_bytes(dec) < 2 * M * (CHUNK + 512));
    handoff_decoder_free(dec);
    test_vm_free(&out);
    test_vm_free(&want);
    free(offsets);
    free(lengths);
    free(order);
    free(c.buf);
}

static void test_end_record_checks(void)
{
    Crafted c;
    Plain p = { .len = 0 };
    uint8_t *e;

    /* Totals that disagree. */
    crafted_init(&c);
    rec(&p, ZERO, 0, 0, 0, 1, 1);
    add_frame(&c, &p);
    c.per_type[0]++;
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_END_MISMATCH);
    CU_ASSERT(strstr(handoff_last_error_message(), "zero records") != NULL);

    crafted_init(&c);
    add_frame(&c, &p);
    c.frames = 7;
    CU_ASSERT_EQUAL(decode_crafted(&c), HANDOFF_E_END_MISMATCH);

    /* Digest wrong but end record intact. */
    crafted_init(&c);
    add_frame(&c, &p);
    add_end(&c);
    e = c.buf + c.len - 104;
    e[80] ^= 1;
    put64(e + 96, XXH3_64bits(e, 96));
    CU_ASSERT_EQUAL(decode(c.buf, c.len), HANDOFF_E_DIGEST);

    /* End record damaged. */
    e[50] ^= 1;
    CU_ASSERT_EQUAL(decode(c.buf, c.len), HANDOFF_E_FRAME_HEADER_CORRUPT);
    free(c.buf);
}

/* A real stream to damage in the tests below. */
static uint8_t *real_stream(size_t *len)
{
    HandoffEncoderConfig cfg = { .struct_size = sizeof(HandoffEncoderConfig) };
    HandoffEncoder *enc = NULL;
    TestVm vm;
    uint64_t i;
    uint8_t *s;

    test_vm_copy(&vm, &base_vm);
    for (i = 0; i < N; i += 2) {
        fill_text(vm.mem + i * CHUNK, 555 + i);
    }
    handoff_encoder_config_default(&cfg);
    cfg.adaptive = 0;
    cfg.threads = 1;
    cfg.frame_bytes = 32 * 1024;
    handoff_encoder_create(base, &cfg, &enc);
    test_submit_all(enc, &vm, 1);
    handoff_encoder_finish(enc);
    s = test_pull_all(enc, len);
    handoff_encoder_free(enc);
    test_vm_free(&vm);
    return s;
}

static void test_stream_header_checks(void)
{
    size_t len;
    uint8_t *s = real_stream(&len);
    uint8_t *d = malloc(len);
    uint32_t hl;

    CU_ASSERT_EQUAL_FATAL(decode(s, len), 0);
    memcpy(&hl, s + 12, 4);

    memcpy(d, s, len);
    d[0] = 'X';
    CU_ASSERT_EQUAL(decode(d, len), HANDOFF_E_BAD_MAGIC);

    memcpy(d, s, len);
    put16(d + 8, 4);                    /* from the future */
    CU_ASSERT_EQUAL(decode(d, len), HANDOFF_E_UNSUPPORTED_VERSION);
    /* Version 3 (segmented) has a segment table after the header, which
     * frames are not. */
    put16(d + 8, 3);
    put64(d + hl - 8, XXH3_64bits(d, hl - 8));
    CU_ASSERT_EQUAL(decode(d, len), HANDOFF_E_BAD_SEGMENT);
    memcpy(d, s, len);
    put16(d + 8, 0);
    CU_ASSERT_EQUAL(decode(d, len), HANDOFF_E_UNSUPPORTED_VERSION);
    /* Version 1 streams (no zero runs) are still read: the header is
     * resealed, the digest of the stream then differs. */
    put16(d + 8, 1);
    put64(d + hl - 8, XXH3_64bits(d, hl - 8));
    CU_ASSERT_EQUAL(decode(d, len), HANDOFF_E_DIGEST);

    memcpy(d, s, len);
    d[45] ^= 0x20;                      /* inside the region table */
    CU_ASSERT_EQUAL(decode(d, len), HANDOFF_E_HEADER_CORRUPT);

    memcpy(d, s, len);
    put32(d + 32, 512);                 /* chunk size */
    put64(d + hl - 8, XXH3_64bits(d, hl - 8));
    CU_ASSERT_EQUAL(decode(d, len), HANDOFF_E_BAD_GEOMETRY);

    memcpy(d, s, len);
    d[16] ^= 1;                         /* base ID */
    put64(d + hl - 8, XXH3_64bits(d, hl - 8));
    CU_ASSERT_EQUAL(decode(d, len), HANDOFF_E_WRONG_BASE);

    memcpy(d, s, len);
    d[40 + 2 + 6 + 2] ^= 1;             /* size of region 0 ("pc.ram") */
    put64(d + hl - 8, XXH3_64bits(d, hl - 8));
    CU_ASSERT_EQUAL(decode(d, len), HANDOFF_E_GEOMETRY_MISMATCH);

    memcpy(d, s, len);
    d[hl] = 'X';                        /* first frame's tag */
    CU_ASSERT_EQUAL(decode(d, len), HANDOFF_E_BAD_FRAME_TAG);

    memcpy(d, s, len);
    d[hl + 20] ^= 1;                    /* first frame's sequence */
    CU_ASSERT_EQUAL(decode(d, len), HANDOFF_E_FRAME_HEADER_CORRUPT);

    free(d);
    free(s);
}

static void test_truncation_and_trailing_bytes(void)
{
    size_t len, cut;
    uint8_t *s = real_stream(&len);
    uint8_t *d = malloc(len + 1);

    for (cut = 0; cut < len; cut += (cut < 200 ? 1 : 997)) {
        CU_ASSERT_EQUAL(decode(s, cut), HANDOFF_E_TRUNCATED);
    }
    CU_ASSERT_EQUAL(decode(s, len - 1), HANDOFF_E_TRUNCATED);
    memcpy(d, s, len);
    d[len] = 0;
    CU_ASSERT_EQUAL(decode(d, len + 1), HANDOFF_E_TRAILING_DATA);
    free(d);
    free(s);
}

/* Any single flipped bit anywhere is detected, and nothing crashes. */
static void test_every_bit_flip_detected(void)
{
    size_t len, i;
    uint8_t *s = real_stream(&len);
    uint8_t *d = malloc(len);
    unsigned seed = 12345, undetected = 0;

    for (i = 0; i < 400; i++) {
        size_t pos;

        seed = seed * 1103515245 + 12345;
        pos = (seed >> 4) % len;
        memcpy(d, s, len);
        d[pos] ^= (uint8_t)(1u << (seed % 8));
        if (decode(d, len) == 0) {
            undetected++;
        }
    }
    CU_ASSERT_EQUAL(undetected, 0);
    free(d);
    free(s);
}

static void test_error_names(void)
{
    CU_ASSERT_STRING_EQUAL(handoff_error_name(HANDOFF_E_CHECKSUM),
                           "HANDOFF_E_CHECKSUM");
    CU_ASSERT_STRING_EQUAL(handoff_error_name(HANDOFF_E_BAD_SELF_REF),
                           "HANDOFF_E_BAD_SELF_REF");
    CU_ASSERT_STRING_EQUAL(handoff_error_name(12345), "HANDOFF_E_UNKNOWN");
}

/* ---- Segmented streams (version 3) ---------------------------------- */

/* Starts a table part by hand: the header as version 3, the fixed fields
 * of a table of no segment, then a chunk index of @n local extents
 * {region, first, count}; local frames follow with add_frame. */
static void table_init(Crafted *c, const uint64_t (*extents)[3], size_t n)
{
    uint8_t raw[16 * 24], *fixed;
    size_t i, packed = 0;

    crafted_init(c);
    put16(c->buf + 8, 3);
    put64(c->buf + header_len - 8, XXH3_64bits(c->buf, header_len - 8));
    fixed = c->buf + c->len;
    memset(fixed, 0, 40);
    put32(fixed, 0x42415451);                    /* "QTAB" */
    c->len += 40;
    memset(raw, 0, sizeof(raw));
    for (i = 0; i < n; i++) {
        raw[24 * i] = (uint8_t)extents[i][0];
        raw[24 * i + 1] = HANDOFF_CHUNK_LOCAL;
        put64(raw + 24 * i + 8, extents[i][1]);
        put64(raw + 24 * i + 16, extents[i][2]);
    }
    if (n > 0) {
        packed = ZSTD_compress(c->buf + c->len, 4096, raw, 24 * n, 3);
    }
    put32(fixed + 32, (uint32_t)n);
    put32(fixed + 36, (uint32_t)packed);
    c->len += packed;
}

/* Ends it: frame count and local bytes, then the checksum. */
static size_t table_end(Crafted *c)
{
    uint8_t *fixed = c->buf + header_len;
    uint32_t index_bytes;

    memcpy(&index_bytes, fixed + 36, 4);
    put32(fixed + 12, (uint32_t)c->frames);
    put64(fixed + 16, c->len - header_len - 40 - index_bytes);
    put64(c->buf + c->len, XXH3_64bits(c->buf, c->len));
    c->len += 8;
    return c->len;
}

static void test_segmented_crafted_table(void)
{
    static const uint64_t two[][3] = { { 0, 3, 1 }, { 1, 4, 1 } };
    static const uint64_t run[][3] = { { 0, 2, 4 } };
    static const uint64_t unsorted[][3] = { { 1, 4, 1 }, { 0, 3, 1 } };
    static const uint64_t extra[][3] = { { 0, 3, 1 }, { 1, 4, 2 } };
    Crafted c;
    Plain *p = calloc(1, sizeof(*p));

    /* Local records only, indexed: valid, and decodes. */
    table_init(&c, two, 2);
    rec(p, ZERO, 0, 0, 0, 1, 3);
    rec_ref(p, BASE_REF, 2, 1, 4, 0, 9, 0);
    add_frame(&c, p);
    CU_ASSERT_EQUAL(decode(c.buf, table_end(&c)), 0);
    free(c.buf);

    /* The index must place each record's chunk, and hold no more. */
    table_init(&c, two, 1);
    add_frame(&c, p);
    CU_ASSERT_EQUAL(decode(c.buf, table_end(&c)), HANDOFF_E_BAD_RECORD);
    free(c.buf);
    table_init(&c, extra, 2);
    add_frame(&c, p);
    CU_ASSERT_EQUAL(decode(c.buf, table_end(&c)), HANDOFF_E_BAD_SEGMENT);
    free(c.buf);
    table_init(&c, unsorted, 2);
    add_frame(&c, p);
    CU_ASSERT_EQUAL(decode(c.buf, table_end(&c)), HANDOFF_E_BAD_SEGMENT);
    free(c.buf);

    /* A second record for one chunk. */
    table_init(&c, run, 1);
    plain_reset(p);
    rec(p, ZERO, 0, 0, 0, 1, 3);
    rec_run(p, 2, 0, 2, 4);
    add_frame(&c, p);
    CU_ASSERT_EQUAL(decode(c.buf, table_end(&c)), HANDOFF_E_DUPLICATE_CHUNK);
    free(c.buf);

    /* Data belongs in segments, not in the table part. */
    table_init(&c, run, 1);
    plain_reset(p);
    rec_data(p, 1, 0, 5, 0x11);
    add_frame(&c, p);
    CU_ASSERT_EQUAL(decode(c.buf, table_end(&c)), HANDOFF_E_BAD_RECORD);
    free(c.buf);

    /* A damaged table part fails its checksum. */
    table_init(&c, two, 2);
    plain_reset(p);
    rec(p, ZERO, 0, 0, 0, 1, 3);
    add_frame(&c, p);
    table_end(&c);
    c.buf[c.len - 20] ^= 1;
    CU_ASSERT_EQUAL(decode(c.buf, c.len), HANDOFF_E_BAD_SEGMENT);
    free(c.buf);

    /* Counts beyond the bounds, before anything is sized by them. */
    table_init(&c, two, 0);
    put32(c.buf + header_len + 4, 0xFFFFFFFFu);  /* segments */
    CU_ASSERT_EQUAL(decode(c.buf, table_end(&c)), HANDOFF_E_LENGTH_LIMIT);
    free(c.buf);
    table_init(&c, two, 0);
    put32(c.buf + header_len + 32, 0xFFFFFFFFu); /* index extents */
    CU_ASSERT_EQUAL(decode(c.buf, table_end(&c)), HANDOFF_E_LENGTH_LIMIT);
    free(c.buf);
    /* Within that bound but beyond the geometry's chunks: refused before
     * the index is decompressed (it was sized by the count, ~400 MiB). */
    table_init(&c, two, 0);
    put32(c.buf + header_len + 32, 1u << 24);
    CU_ASSERT_EQUAL(decode(c.buf, table_end(&c)), HANDOFF_E_BAD_SEGMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(handoff_last_error_message(),
                                  "more extents than the geometry"));
    free(c.buf);
    free(p);
}

/* Memory all new data (several segments); the first disk chunks copies of
 * memory ones (self references, so dependencies); some disk zeros. */
static uint8_t *segmented_stream(size_t *len, uint8_t root[HANDOFF_ROOT_SIZE],
                                 TestSegments *segs, TestVm *vm)
{
    HandoffEncoderConfig cfg = { .struct_size = sizeof(cfg) };
    uint8_t *s;
    uint64_t i;

    test_vm_copy(vm, &base_vm);
    for (i = 0; i < N; i++) {
        fill_random(vm->mem + i * CHUNK, 500 + i);
    }
    for (i = 0; i < 16; i++) {
        memcpy(vm->disk + i * CHUNK, vm->mem + i * CHUNK, CHUNK);
        memset(vm->disk + (16 + i) * CHUNK, 0, CHUNK);
    }
    handoff_encoder_config_default(&cfg);
    cfg.adaptive = 0;
    cfg.mode.codec = HANDOFF_CODEC_NONE;
    cfg.mode.level = 0;
    cfg.mode.delta = HANDOFF_DELTA_NONE;
    /* Listed by address, the disk's copies stay behind the memory: they
     * depend on segments before theirs. */
    cfg.order = test_address_order(N);
    cfg.order_count = 2 * N;
    s = test_encode_segmented(base, &cfg, vm, len, root);
    free((void *)cfg.order);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL_FATAL(test_segments_open(s, *len, segs), 0);
    CU_ASSERT_FATAL(segs->count >= 4);
    return s;
}

typedef TestDestination Counted;

static HandoffDecoder *counted_decoder(Counted *c)
{
    CU_ASSERT_EQUAL_FATAL(test_destination_open(c, base, &base_vm), 0);
    return c->dec;
}

static int apply(HandoffDecoder *dec, const TestSegments *segs,
                 const uint8_t *s, uint32_t k)
{
    uint32_t length;
    const uint8_t *bytes = test_segment(segs, s, k, &length);

    return handoff_decoder_apply_segment(dec, k, bytes, length);
}

/* A byte changed anywhere in segment k: HANDOFF_E_SEGMENT_DIGEST naming
 * k, before a single write for it; the decoder stays failed. */
static void test_segment_byte_changed(void)
{
    uint8_t root[HANDOFF_ROOT_SIZE];
    TestSegments segs;
    TestVm vm;
    size_t len;
    uint8_t *s = segmented_stream(&len, root, &segs, &vm);
    uint32_t k, j, length, at;
    char name[48];

    for (k = 0; k < segs.count; k++) {
        uint8_t *bytes = (uint8_t *)test_segment(&segs, s, k, &length);

        for (at = 0; at < length; at += length / 5 + 1) {
            Counted c;
            HandoffDecoder *dec = counted_decoder(&c);
            unsigned before;

            CU_ASSERT_EQUAL(handoff_decoder_load_table(dec, s, segs.table_len,
                                                       root), 0);
            for (j = 0; j < k; j++) {
                CU_ASSERT_EQUAL(apply(dec, &segs, s, j), 0);
            }
            before = c.writes;
            bytes[at] ^= 0x20;
            CU_ASSERT_EQUAL(apply(dec, &segs, s, k), HANDOFF_E_SEGMENT_DIGEST);
            snprintf(name, sizeof(name), "segment %u of %u ", k, segs.count);
            CU_ASSERT_PTR_NOT_NULL(strstr(handoff_last_error_message(), name));
            CU_ASSERT_EQUAL(c.writes, before);
            bytes[at] ^= 0x20;
            /* Sticky: the good bytes do not revive it. */
            CU_ASSERT_EQUAL(apply(dec, &segs, s, k), HANDOFF_E_SEGMENT_DIGEST);
            CU_ASSERT_EQUAL(c.writes, before);
            test_destination_close(&c);
        }
    }
    handoff_segment_table_free(segs.table);
    test_vm_free(&vm);
    free(s);
}

static void test_segment_root_checked(void)
{
    uint8_t root[HANDOFF_ROOT_SIZE];
    TestSegments segs;
    TestVm vm;
    size_t len;
    uint8_t *s = segmented_stream(&len, root, &segs, &vm);
    HandoffDecoder *dec;
    Counted c;

    dec = counted_decoder(&c);
    /* No root, no authentication: refused, not read unchecked. */
    CU_ASSERT_EQUAL(handoff_decoder_load_table(dec, s, segs.table_len, NULL),
                    HANDOFF_E_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(c.writes, 0);
    root[31] ^= 1;
    CU_ASSERT_EQUAL(handoff_decoder_load_table(dec, s, segs.table_len, root),
                    HANDOFF_E_ROOT_MISMATCH);
    CU_ASSERT_EQUAL(c.writes, 0);
    CU_ASSERT_EQUAL(apply(dec, &segs, s, 0), HANDOFF_E_ROOT_MISMATCH);
    test_destination_close(&c);
    root[31] ^= 1;

    /* Any byte of the table part changed, with the right root. */
    dec = counted_decoder(&c);
    s[segs.table_len - 9] ^= 1;
    CU_ASSERT_EQUAL(handoff_decoder_load_table(dec, s, segs.table_len, root),
                    HANDOFF_E_ROOT_MISMATCH);
    CU_ASSERT_EQUAL(c.writes, 0);
    s[segs.table_len - 9] ^= 1;
    test_destination_close(&c);
    handoff_segment_table_free(segs.table);
    test_vm_free(&vm);
    free(s);
}

/* Duplicates and early segments are refused without harm; the stream
 * then completes. Wrong lengths and numbers, and a missing segment at the
 * end, are named. */
static void test_segment_duplicate_and_dependency(void)
{
    uint8_t root[HANDOFF_ROOT_SIZE];
    uint32_t deps[64], k, length, with_deps = UINT32_MAX;
    TestSegments segs;
    TestVm vm;
    size_t len;
    uint8_t *s = segmented_stream(&len, root, &segs, &vm);
    Counted c;
    HandoffDecoder *dec = counted_decoder(&c);
    unsigned before;

    for (k = segs.count; k-- > 0;) {
        if (test_segment_deps(&segs, k, deps) != 0) {
            with_deps = k;
        }
    }
    CU_ASSERT_FATAL(with_deps != UINT32_MAX);
    CU_ASSERT_EQUAL(handoff_decoder_load_table(dec, s, segs.table_len, root), 0);
    before = c.writes;
    CU_ASSERT_EQUAL(apply(dec, &segs, s, with_deps),
                    HANDOFF_E_SEGMENT_DEPENDENCY);
    CU_ASSERT_EQUAL(c.writes, before);
    CU_ASSERT_EQUAL(handoff_decoder_apply_segment(dec, segs.count,
                                                  s + segs.table_len, 100),
                    HANDOFF_E_BAD_SEGMENT);
    test_destination_close(&c);

    dec = counted_decoder(&c);
    CU_ASSERT_EQUAL(handoff_decoder_load_table(dec, s, segs.table_len, root), 0);
    CU_ASSERT_EQUAL(apply(dec, &segs, s, 0), 0);
    before = c.writes;
    CU_ASSERT_EQUAL(apply(dec, &segs, s, 0), HANDOFF_E_SEGMENT_DUPLICATE);
    CU_ASSERT_EQUAL(c.writes, before);
    for (k = 1; k + 1 < segs.count; k++) {
        CU_ASSERT_EQUAL(apply(dec, &segs, s, k), 0);
    }
    CU_ASSERT_EQUAL(handoff_decoder_finish(dec), HANDOFF_E_TRUNCATED);
    test_destination_close(&c);

    dec = counted_decoder(&c);
    CU_ASSERT_EQUAL(handoff_decoder_load_table(dec, s, segs.table_len, root), 0);
    for (k = 0; k < segs.count; k++) {
        CU_ASSERT_EQUAL(apply(dec, &segs, s, k), 0);
        CU_ASSERT_EQUAL(apply(dec, &segs, s, k), HANDOFF_E_SEGMENT_DUPLICATE);
    }
    CU_ASSERT_EQUAL(handoff_decoder_finish(dec), 0);
    CU_ASSERT(test_vm_equal(&c.image, &vm));
    test_destination_close(&c);

    dec = counted_decoder(&c);
    CU_ASSERT_EQUAL(handoff_decoder_load_table(dec, s, segs.table_len, root), 0);
    test_segment(&segs, s, 0, &length);
    CU_ASSERT_EQUAL(handoff_decoder_apply_segment(
                        dec, 0, s + segs.table_len, length - 1),
                    HANDOFF_E_LENGTH_LIMIT);
    test_destination_close(&c);
    handoff_segment_table_free(segs.table);
    test_vm_free(&vm);
    free(s);
}

static void test_segmented_encoder_one_record_per_chunk(void)
{
    HandoffEncoderConfig cfg = { .struct_size = sizeof(cfg) };
    HandoffEncoder *enc = NULL;

    handoff_encoder_config_default(&cfg);
    cfg.segmented = 1;
    CU_ASSERT_EQUAL_FATAL(handoff_encoder_create(base, &cfg, &enc), 0);
    CU_ASSERT_EQUAL(handoff_encoder_submit(enc, 0, 5, base_vm.disk), 0);
    CU_ASSERT_EQUAL(handoff_encoder_submit(enc, 0, 5, base_vm.disk),
                    HANDOFF_E_DUPLICATE_CHUNK);
    CU_ASSERT_EQUAL(handoff_encoder_submit_zero_run(enc, 0, 2, 8),
                    HANDOFF_E_DUPLICATE_CHUNK);
    CU_ASSERT_EQUAL(handoff_encoder_submit_zero_run(enc, 0, 6, 8), 0);
    CU_ASSERT_EQUAL(handoff_encoder_submit(enc, 0, 13, base_vm.disk),
                    HANDOFF_E_DUPLICATE_CHUNK);
    CU_ASSERT_EQUAL(handoff_encoder_submit(enc, 0, N, base_vm.disk),
                    HANDOFF_E_CHUNK_RANGE);
    handoff_encoder_free(enc);
}

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS) {
        return CU_get_error();
    }
    suite = CU_add_suite("decoder errors", init_suite, clean_suite);
    CU_add_test(suite, "crafted valid stream decodes",
                test_crafted_valid_stream_decodes);
    CU_add_test(suite, "unknown record type", test_unknown_record_type);
    CU_add_test(suite, "zero runs", test_zero_runs);
    CU_add_test(suite, "bad record fields", test_bad_record_fields);
    CU_add_test(suite, "record count mismatch", test_record_count_mismatch);
    CU_add_test(suite, "chunk outside geometry", test_chunk_outside_geometry);
    CU_add_test(suite, "base ref outside base", test_base_ref_outside_base);
    CU_add_test(suite, "self ref to nothing", test_self_ref_to_nothing);
    CU_add_test(suite, "unknown codec and level", test_unknown_codec_and_level);
    CU_add_test(suite, "lengths beyond limits", test_lengths_beyond_limits);
    CU_add_test(suite, "decompression bombs", test_decompression_bombs);
    CU_add_test(suite, "garbage payload", test_garbage_payload);
    CU_add_test(suite, "checksum mismatch", test_checksum_mismatch);
    CU_add_test(suite, "prefix abuse", test_prefix_abuse);
    CU_add_test(suite, "frame sequence", test_frame_sequence);
    CU_add_test(suite, "out of order duplicate frame",
                test_out_of_order_duplicate_frame);
    CU_add_test(suite, "out of order: stale data bounded",
                test_out_of_order_stale_data_bounded);
    CU_add_test(suite, "out of order: waiting references bounded",
                test_out_of_order_waiting_refs_bounded);
    CU_add_test(suite, "out of order: long stream stays small",
                test_out_of_order_long_stream_stays_small);
    CU_add_test(suite, "end record checks", test_end_record_checks);
    CU_add_test(suite, "stream header checks", test_stream_header_checks);
    CU_add_test(suite, "truncation and trailing bytes",
                test_truncation_and_trailing_bytes);
    CU_add_test(suite, "every bit flip detected", test_every_bit_flip_detected);
    CU_add_test(suite, "error names", test_error_names);
    CU_add_test(suite, "segmented: crafted table part",
                test_segmented_crafted_table);
    CU_add_test(suite, "segmented: a byte changed in segment k",
                test_segment_byte_changed);
    CU_add_test(suite, "segmented: root checked",
                test_segment_root_checked);
    CU_add_test(suite, "segmented: duplicate, dependency, length, missing",
                test_segment_duplicate_and_dependency);
    CU_add_test(suite, "segmented: encoder, one record per chunk",
                test_segmented_encoder_one_record_per_chunk);

    return test_run_registry();
}
