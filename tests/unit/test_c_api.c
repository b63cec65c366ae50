/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The C API as QEMU sees it: compiled as C, linked against the C++ engine.
 */
#include "handoff.h"

#include <CUnit/Basic.h>

#include "test_support.h"
#include <lzma.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zlib.h>
#include <zstd.h>

static void test_version_matches_header(void)
{
    char expect[32];

    CU_ASSERT_EQUAL(handoff_version_number(), HANDOFF_VERSION_NUMBER);
    snprintf(expect, sizeof(expect), "%d.%d.%d", HANDOFF_VERSION_MAJOR,
             HANDOFF_VERSION_MINOR, HANDOFF_VERSION_RELEASE);
    CU_ASSERT_STRING_EQUAL(handoff_version_string(), expect);
}

static void test_codecs_listed_in_enum_order(void)
{
    static const char *const names[] = { "none", "zstd", "lzma", "zlib" };
    HandoffCodecInfo info;
    size_t i;

    CU_ASSERT_EQUAL_FATAL(handoff_codec_count(), 4);
    for (i = 0; i < handoff_codec_count(); i++) {
        CU_ASSERT_EQUAL_FATAL(handoff_codec_info(i, &info), 0);
        CU_ASSERT_EQUAL(info.codec, (HandoffCodec)i);
        CU_ASSERT_STRING_EQUAL(info.name, names[i]);
        CU_ASSERT(info.min_level <= info.max_level);
    }
}

/* The versions reported must be those of the libraries actually linked. */
static void test_codec_library_versions_are_the_linked_ones(void)
{
    HandoffCodecInfo info;

    CU_ASSERT_EQUAL_FATAL(handoff_codec_info(HANDOFF_CODEC_ZSTD, &info), 0);
    CU_ASSERT_STRING_EQUAL(info.library_version, ZSTD_versionString());
    CU_ASSERT_EQUAL(info.min_level, 1);
    CU_ASSERT_EQUAL(info.max_level, 19);

    CU_ASSERT_EQUAL_FATAL(handoff_codec_info(HANDOFF_CODEC_LZMA, &info), 0);
    CU_ASSERT_STRING_EQUAL(info.library_version, lzma_version_string());
    CU_ASSERT_EQUAL(info.min_level, 0);
    CU_ASSERT_EQUAL(info.max_level, 9);

    CU_ASSERT_EQUAL_FATAL(handoff_codec_info(HANDOFF_CODEC_ZLIB, &info), 0);
    CU_ASSERT_STRING_EQUAL(info.library_version, zlibVersion());
    CU_ASSERT_EQUAL(info.max_level, 9);
}

static void test_codec_info_rejects_bad_arguments(void)
{
    HandoffCodecInfo info;

    memset(&info, 0xa5, sizeof(info));
    CU_ASSERT_EQUAL(handoff_codec_info(handoff_codec_count(), &info), -1);
    CU_ASSERT_EQUAL(handoff_codec_info((size_t)-1, &info), -1);
    CU_ASSERT_EQUAL(handoff_codec_info(0, NULL), -1);
}

static void test_hash_identity(void)
{
    char expect[32];
    unsigned v = XXH_versionNumber();

    CU_ASSERT_STRING_EQUAL(handoff_hash_name(), "xxh3-128");
    snprintf(expect, sizeof(expect), "%u.%u.%u", v / 10000, v / 100 % 100,
             v % 100);
    CU_ASSERT_STRING_EQUAL(handoff_hash_version(), expect);
}

static void test_mode_names_round_trip(void)
{
    static const char *const good[] = {
        "none", "zstd-1", "zstd-19", "zstd-3+xor", "zstd-9+prefix",
        "lzma-0", "lzma-9", "lzma-1+xor", "zlib-1", "zlib-9+xor",
    };
    static const char *const bad[] = {
        "", "auto", "zstd", "zstd-", "zstd-0", "zstd-20", "zstd-3x",
        "lzma-10", "zlib-0", "none-1", "none+xor+xor", "zstd-3+foo",
        "zlib-1+prefix", "brotli-1",
    };
    HandoffMode m;
    char name[32];
    size_t i;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        CU_ASSERT_EQUAL(handoff_mode_parse(good[i], &m), 0);
        CU_ASSERT_EQUAL(handoff_mode_name(&m, name, sizeof(name)),
                        (int)strlen(good[i]));
        CU_ASSERT_STRING_EQUAL(name, good[i]);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CU_ASSERT_EQUAL(handoff_mode_parse(bad[i], &m),
                        HANDOFF_E_INVALID_ARGUMENT);
    }
    CU_ASSERT_EQUAL(handoff_mode_parse("zstd-20", &m),
                    HANDOFF_E_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(handoff_last_error_message(), "1..19"));
    CU_ASSERT_EQUAL(handoff_mode_parse("zstd-3+xor", &m), 0);
    CU_ASSERT_EQUAL(handoff_mode_name(&m, name, 10),
                    HANDOFF_E_INVALID_ARGUMENT);
}

/* Decision log lines: "t_s bandwidth codec level delta predicted". */
static int decisions_use_delta(const char *log)
{
    const char *line = log;

    while (line && *line) {
        double t, bw, pred;
        char codec[16];
        int level, delta;

        if (sscanf(line, "%lf %lf %15s %d %d %lf", &t, &bw, codec, &level,
                   &delta, &pred) == 6 && delta != HANDOFF_DELTA_NONE) {
            return 1;
        }
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    return 0;
}

/* Encodes with @config a VM whose every other page differs from the base
 * by one byte (where an XOR delta pays) and fills *@st. With
 * @no_delta_decisions, the controller must have chosen no delta mode. */
static void encode_one_byte_edits(const TestVm *base_vm, HandoffBase *base,
                                  const HandoffEncoderConfig *config,
                                  int no_delta_decisions,
                                  HandoffEncoderStats *st)
{
    HandoffEncoder *enc = NULL;
    TestVm vm;
    uint8_t *stream;
    size_t len;
    uint64_t c;

    test_vm_copy(&vm, base_vm);
    for (c = 0; c < vm.chunks; c += 2) {
        vm.mem[c * CHUNK + 100] ^= 1;
    }
    CU_ASSERT_EQUAL_FATAL(handoff_encoder_create(base, config, &enc), 0);
    CU_ASSERT_EQUAL(test_submit_all(enc, &vm, 0), 0);
    CU_ASSERT_EQUAL(handoff_encoder_finish(enc), 0);
    stream = test_pull_all(enc, &len);
    CU_ASSERT_EQUAL(handoff_encoder_stats(enc, st), 0);
    if (no_delta_decisions) {
        CU_ASSERT_FALSE(decisions_use_delta(handoff_encoder_decision_log(enc)));
    }
    free(stream);
    handoff_encoder_free(enc);
    test_vm_free(&vm);
}

/* The XOR-coded chunks of encode_one_byte_edits, adaptively. */
static uint64_t adaptive_xor_chunks(const TestVm *base_vm, HandoffBase *base,
                                    int allow_delta)
{
    HandoffEncoderConfig config = { .struct_size = sizeof(HandoffEncoderConfig) };
    HandoffEncoderStats st = { .struct_size = sizeof(HandoffEncoderStats) };

    handoff_encoder_config_default(&config);
    config.allow_delta = allow_delta;
    config.frame_bytes = 16 * CHUNK;
    encode_one_byte_edits(base_vm, base, &config, !allow_delta, &st);
    CU_ASSERT(st.frames > 4);
    return st.xor_chunks;
}

/*
 * handoff-delta off under auto: the controller chooses among modes
 * without delta only, and a fixed mode with one is refused.
 */
static void test_deltas_can_be_forbidden(void)
{
    HandoffEncoderConfig config = { .struct_size = sizeof(HandoffEncoderConfig) };
    HandoffEncoder *enc = NULL;
    HandoffBase *base;
    TestVm base_vm;

    test_make_base_vm(&base_vm, 512, 7);
    base = test_base_from_vm(&base_vm);
    handoff_encoder_config_default(&config);
    config.adaptive = 0;
    config.allow_delta = 0;
    config.mode.delta = HANDOFF_DELTA_XOR;
    CU_ASSERT_EQUAL(handoff_encoder_create(base, &config, &enc),
                    HANDOFF_E_INVALID_ARGUMENT);
    /* With deltas allowed the outcome depends on the controller's timing
     * (test_controller checks the candidate list); without, none. */
    CU_ASSERT_EQUAL(adaptive_xor_chunks(&base_vm, base, 0), 0);
    handoff_base_free(base);
    test_vm_free(&base_vm);
}

/* A default configuration with the compression policy applied. */
static int config_with(HandoffEncoderConfig *config, const char *compression,
                       HandoffDeltaPolicy deltas)
{
    memset(config, 0, sizeof(*config));
    config->struct_size = sizeof(*config);
    CU_ASSERT_EQUAL_FATAL(handoff_encoder_config_default(config), 0);
    return handoff_encoder_config_set_compression(config, compression,
                                                  deltas);
}

static int mode_is(const HandoffMode *m, HandoffCodec codec, int level,
                   HandoffDelta delta)
{
    return m->codec == codec && m->level == level && m->delta == delta;
}

/*
 * handoff_encoder_config_set_compression: "auto" starts where the default
 * configuration does; a fixed mode gets XOR under HANDOFF_DELTAS_ON
 * unless it names a delta or stores; OFF forbids deltas; AS_NAMED keeps
 * the name.
 */
static void test_compression_policy_resolves_modes(void)
{
    HandoffEncoderConfig defaults = { .struct_size = sizeof(defaults) };
    HandoffEncoderConfig c;

    CU_ASSERT_EQUAL_FATAL(handoff_encoder_config_default(&defaults), 0);

    CU_ASSERT_EQUAL(config_with(&c, "lzma-6", HANDOFF_DELTAS_AS_NAMED), 0);
    CU_ASSERT_EQUAL(handoff_encoder_config_set_compression(
                        &c, "auto", HANDOFF_DELTAS_ON), 0);
    CU_ASSERT_EQUAL(c.adaptive, 1);
    CU_ASSERT(mode_is(&c.mode, defaults.mode.codec, defaults.mode.level,
                      defaults.mode.delta));
    CU_ASSERT(mode_is(&c.mode, HANDOFF_CODEC_ZSTD, 1, HANDOFF_DELTA_NONE));
    CU_ASSERT_EQUAL(c.allow_delta, 1);
    CU_ASSERT_EQUAL(memcmp(&c, &defaults, sizeof(c)), 0);

    CU_ASSERT_EQUAL(config_with(&c, NULL, HANDOFF_DELTAS_OFF), 0);
    CU_ASSERT_EQUAL(c.adaptive, 1);
    CU_ASSERT_EQUAL(c.allow_delta, 0);
    CU_ASSERT(mode_is(&c.mode, defaults.mode.codec, defaults.mode.level,
                      defaults.mode.delta));

    CU_ASSERT_EQUAL(config_with(&c, "zstd-3", HANDOFF_DELTAS_ON), 0);
    CU_ASSERT_EQUAL(c.adaptive, 0);
    CU_ASSERT_EQUAL(c.allow_delta, 1);
    CU_ASSERT(mode_is(&c.mode, HANDOFF_CODEC_ZSTD, 3, HANDOFF_DELTA_XOR));
    CU_ASSERT_EQUAL(config_with(&c, "zstd-9+prefix", HANDOFF_DELTAS_ON), 0);
    CU_ASSERT(mode_is(&c.mode, HANDOFF_CODEC_ZSTD, 9, HANDOFF_DELTA_PREFIX));
    CU_ASSERT_EQUAL(config_with(&c, "none", HANDOFF_DELTAS_ON), 0);
    CU_ASSERT(mode_is(&c.mode, HANDOFF_CODEC_NONE, 0, HANDOFF_DELTA_NONE));

    CU_ASSERT_EQUAL(config_with(&c, "zlib-6", HANDOFF_DELTAS_OFF), 0);
    CU_ASSERT_EQUAL(c.adaptive, 0);
    CU_ASSERT_EQUAL(c.allow_delta, 0);
    CU_ASSERT(mode_is(&c.mode, HANDOFF_CODEC_ZLIB, 6, HANDOFF_DELTA_NONE));

    CU_ASSERT_EQUAL(config_with(&c, "zstd-3", HANDOFF_DELTAS_AS_NAMED), 0);
    CU_ASSERT_EQUAL(c.allow_delta, 1);
    CU_ASSERT(mode_is(&c.mode, HANDOFF_CODEC_ZSTD, 3, HANDOFF_DELTA_NONE));
    CU_ASSERT_EQUAL(config_with(&c, "lzma-1+xor", HANDOFF_DELTAS_AS_NAMED),
                    0);
    CU_ASSERT(mode_is(&c.mode, HANDOFF_CODEC_LZMA, 1, HANDOFF_DELTA_XOR));
}

/* Refusals name their cause and leave the configuration as it was. */
static void test_compression_policy_refusals(void)
{
    static const struct {
        const char *text;
        int deltas;
        const char *message;
    } bad[] = {
        { "zstd-20", HANDOFF_DELTAS_ON, "zstd levels are 1..19" },
        { "brotli-3", HANDOFF_DELTAS_ON,
          "codec 'brotli' is not none, zstd, lzma or zlib" },
        { "zlib-3+prefix", HANDOFF_DELTAS_ON, "+prefix needs zstd" },
        { "", HANDOFF_DELTAS_ON, "codec '' is not" },
        { "Auto", HANDOFF_DELTAS_ON, "codec 'Auto' is not" },
        { "zstd-3+xor", HANDOFF_DELTAS_OFF,
          "mode zstd-3+xor uses a delta, and deltas are not allowed" },
        { "auto", 3, "delta policy 3" },
        { "zstd-3", -1, "delta policy -1" },
    };
    HandoffEncoderConfig c, before;
    size_t i;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CU_ASSERT_EQUAL(config_with(&c, i % 2 ? "auto" : "lzma-6",
                                    HANDOFF_DELTAS_OFF), 0);
        before = c;
        CU_ASSERT_EQUAL(handoff_encoder_config_set_compression(
                            &c, bad[i].text, bad[i].deltas),
                        HANDOFF_E_INVALID_ARGUMENT);
        CU_ASSERT_PTR_NOT_NULL(strstr(handoff_last_error_message(),
                                      bad[i].message));
        CU_ASSERT_EQUAL(memcmp(&c, &before, sizeof(c)), 0);
    }
    CU_ASSERT_EQUAL(handoff_encoder_config_set_compression(
                        NULL, "auto", HANDOFF_DELTAS_ON),
                    HANDOFF_E_INVALID_ARGUMENT);
}

/* Sizes: below the first layout refused; a newer caller's larger struct
 * accepted, its bytes past this library's fields left alone; the fields
 * the policy does not own untouched. */
typedef struct NewerConfigForPolicy {
    HandoffEncoderConfig config;
    uint64_t future_field;
} NewerConfigForPolicy;

static void test_compression_policy_struct_size(void)
{
    NewerConfigForPolicy newer;
    HandoffEncoderConfig c;

    memset(&c, 0, sizeof(c));
    CU_ASSERT_EQUAL(handoff_encoder_config_set_compression(
                        &c, "auto", HANDOFF_DELTAS_ON),
                    HANDOFF_E_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(handoff_last_error_message(),
                                  "struct_size"));
    CU_ASSERT_EQUAL(c.adaptive, 0);
    c.struct_size = offsetof(HandoffEncoderConfig, allow_delta);
    CU_ASSERT_EQUAL(handoff_encoder_config_set_compression(
                        &c, "auto", HANDOFF_DELTAS_ON),
                    HANDOFF_E_INVALID_ARGUMENT);

    memset(&newer, 0, sizeof(newer));
    newer.config.struct_size = sizeof(newer);
    CU_ASSERT_EQUAL_FATAL(handoff_encoder_config_default(&newer.config), 0);
    newer.config.threads = 3;
    newer.config.seed = 99;
    newer.config.dedup = 0;
    newer.future_field = 0xA5A5A5A5A5A5A5A5ull;
    CU_ASSERT_EQUAL(handoff_encoder_config_set_compression(
                        &newer.config, "zstd-3", HANDOFF_DELTAS_ON), 0);
    CU_ASSERT(mode_is(&newer.config.mode, HANDOFF_CODEC_ZSTD, 3,
                      HANDOFF_DELTA_XOR));
    CU_ASSERT_EQUAL(newer.future_field, 0xA5A5A5A5A5A5A5A5ull);
    CU_ASSERT_EQUAL(newer.config.struct_size, sizeof(newer));
    CU_ASSERT_EQUAL(newer.config.threads, 3);
    CU_ASSERT_EQUAL(newer.config.seed, 99);
    CU_ASSERT_EQUAL(newer.config.dedup, 0);
}

/* The XOR-coded chunks of encode_one_byte_edits in a fixed mode, set by
 * the compression policy. */
static uint64_t fixed_xor_chunks(const TestVm *base_vm, HandoffBase *base,
                                 const char *compression,
                                 HandoffDeltaPolicy deltas)
{
    HandoffEncoderConfig config;
    HandoffEncoderStats st = { .struct_size = sizeof(HandoffEncoderStats) };

    CU_ASSERT_EQUAL_FATAL(config_with(&config, compression, deltas), 0);
    encode_one_byte_edits(base_vm, base, &config, 0, &st);
    CU_ASSERT_EQUAL(st.mode.delta, config.mode.delta);
    CU_ASSERT_EQUAL(st.mode_switches, 0);
    return st.xor_chunks;
}

/* What the policy resolves is what the encoder runs: "zstd-1" with deltas
 * on sends one-byte edits as XOR, as named it sends them raw. */
static void test_compression_policy_reaches_the_encoder(void)
{
    HandoffBase *base;
    TestVm base_vm;

    test_make_base_vm(&base_vm, 256, 11);
    base = test_base_from_vm(&base_vm);
    CU_ASSERT(fixed_xor_chunks(&base_vm, base, "zstd-1",
                               HANDOFF_DELTAS_ON) >= 64);
    CU_ASSERT_EQUAL(fixed_xor_chunks(&base_vm, base, "zstd-1",
                                     HANDOFF_DELTAS_AS_NAMED), 0);
    CU_ASSERT_EQUAL(fixed_xor_chunks(&base_vm, base, "zstd-1",
                                     HANDOFF_DELTAS_OFF), 0);
    handoff_base_free(base);
    test_vm_free(&base_vm);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs(text, f);
    fclose(f);
}

/* Refused with @code, naming @cause, nothing returned. */
static void order_refused(HandoffBase *base, const char *path, int code,
                          const char *cause)
{
    HandoffChunkRef *refs = (HandoffChunkRef *)1;
    size_t n = 1;

    CU_ASSERT_EQUAL(handoff_order_file_read(base, path, &refs, &n), code);
    CU_ASSERT_PTR_NOT_NULL(strstr(handoff_last_error_message(), cause));
    CU_ASSERT_PTR_NULL(refs);
    CU_ASSERT_EQUAL(n, 0);
}

/*
 * handoff_order_file_read, the reader QEMU and the CLI share: entries in
 * file order, comments, blank lines and times skipped; each refusal names
 * the file's line; a FIFO is refused at once instead of blocking.
 */
static void test_order_file_read(void)
{
    char dir[] = "/tmp/handoff-order-XXXXXX";
    char path[64], fifo[64];
    HandoffChunkRef *refs = NULL;
    size_t n = 0;
    HandoffBase *base;
    TestVm vm;

    test_make_base_vm(&vm, 64, 5);
    base = test_base_from_vm(&vm);
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/o.txt", dir);
    snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
    write_text(path, "# qemu-handoff-working-set 1\npc.ram 7 10\n\n"
                     "disk0 3\npc.ram 63 12\n");
    CU_ASSERT_EQUAL_FATAL(handoff_order_file_read(base, path, &refs, &n), 0);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT(refs[0].region == 0 && refs[0].chunk_index == 7);
    CU_ASSERT(refs[1].region == 1 && refs[1].chunk_index == 3);
    CU_ASSERT(refs[2].region == 0 && refs[2].chunk_index == 63);
    handoff_chunk_refs_free(refs);
    write_text(path, "pc.ram 1\nnosuch 2\n");
    order_refused(base, path, HANDOFF_E_INVALID_ARGUMENT,
                  "o.txt:2: no region 'nosuch' in the base");
    write_text(path, "# c\npc.ram 64\n");
    order_refused(base, path, HANDOFF_E_INVALID_ARGUMENT,
                  "o.txt:2: chunk 64 is past region 'pc.ram'");
    write_text(path, "pc.ram 1 x\n");
    order_refused(base, path, HANDOFF_E_INVALID_ARGUMENT, "o.txt:1: time");
    CU_ASSERT_EQUAL_FATAL(mkfifo(fifo, 0600), 0);
    order_refused(base, fifo, HANDOFF_E_IO, "not a regular file");
    unlink(fifo);
    unlink(path);
    order_refused(base, path, HANDOFF_E_IO, "No such file");
    rmdir(dir);
    handoff_base_free(base);
    test_vm_free(&vm);
}

/*
 * The struct_size rule of handoff.h: callers built against an older header
 * (smaller structs) or a newer one (larger) neither read nor write beyond
 * their objects, and a field this library does not know is refused, not
 * ignored.
 */
typedef struct NewerConfig {
    HandoffEncoderConfig config;
    uint64_t future_field;
} NewerConfig;

typedef struct NewerStats {
    HandoffEncoderStats stats;
    uint64_t future_field;
} NewerStats;

static void test_structs_carry_their_size(void)
{
    NewerConfig newer;
    NewerStats newer_stats;
    HandoffEncoderConfig config;
    HandoffEncoderStats older;
    HandoffEncoder *enc = NULL;
    HandoffBase *base;
    TestVm base_vm;

    test_make_base_vm(&base_vm, 64, 3);
    base = test_base_from_vm(&base_vm);

    memset(&config, 0, sizeof(config));
    CU_ASSERT_EQUAL(handoff_encoder_config_default(&config),
                    HANDOFF_E_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NOT_NULL(strstr(handoff_last_error_message(),
                                  "struct_size"));
    CU_ASSERT_EQUAL(handoff_encoder_create(base, &config, &enc),
                    HANDOFF_E_INVALID_ARGUMENT);

    /* A newer caller's zeroed extra field is what it did not ask for. */
    memset(&newer, 0xA5, sizeof(newer));
    newer.config.struct_size = sizeof(newer);
    CU_ASSERT_EQUAL(handoff_encoder_config_default(&newer.config), 0);
    CU_ASSERT_EQUAL(newer.future_field, 0);
    CU_ASSERT_EQUAL(newer.config.struct_size, sizeof(newer));
    CU_ASSERT_EQUAL(newer.config.adaptive, 1);
    CU_ASSERT_EQUAL(handoff_encoder_create(base, &newer.config, &enc), 0);
    handoff_encoder_free(enc);
    enc = NULL;
    newer.future_field = 1;
    CU_ASSERT_EQUAL(handoff_encoder_create(base, &newer.config, &enc),
                    HANDOFF_E_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NULL(enc);
    CU_ASSERT_PTR_NOT_NULL(strstr(handoff_last_error_message(),
                                  "does not know"));

    /* Stats: a size below the first layout is refused; the library
     * writes no byte past struct_size and zeroes what it does not know. */
    config.struct_size = sizeof(config);
    CU_ASSERT_EQUAL(handoff_encoder_config_default(&config), 0);
    CU_ASSERT_EQUAL(handoff_encoder_create(base, &config, &enc), 0);
    memset(&older, 0xA5, sizeof(older));
    older.struct_size = offsetof(HandoffEncoderStats, pending_bytes);
    CU_ASSERT_EQUAL(handoff_encoder_stats(enc, &older),
                    HANDOFF_E_INVALID_ARGUMENT);
    older.struct_size = sizeof(older);
    CU_ASSERT_EQUAL(handoff_encoder_stats(enc, &older), 0);
    CU_ASSERT_EQUAL(older.chunks[HANDOFF_REC_KINDS], 0);
    memset(&newer_stats, 0xA5, sizeof(newer_stats));
    newer_stats.stats.struct_size = sizeof(newer_stats);
    CU_ASSERT_EQUAL(handoff_encoder_stats(enc, &newer_stats.stats), 0);
    CU_ASSERT_EQUAL(newer_stats.future_field, 0);
    CU_ASSERT_EQUAL(newer_stats.stats.struct_size, sizeof(newer_stats));
    handoff_encoder_free(enc);

    {
        HandoffWriter unsized = { .write_chunk = NULL };
        HandoffDecoder *dec = NULL;

        CU_ASSERT_EQUAL(handoff_decoder_create(base, &unsized, NULL, &dec),
                        HANDOFF_E_INVALID_ARGUMENT);
        CU_ASSERT_PTR_NULL(dec);
    }
    handoff_base_free(base);
    test_vm_free(&base_vm);
}

/* The switch-over estimate: rest priced at sent chunks' cost, plus what
 * the workers hold at the frames' ratio, plus what waits to be pulled. */
static void test_remaining_bytes_estimate(void)
{
    HandoffEncoderStats st;

    memset(&st, 0, sizeof(st));
    /* No struct_size: the caller's layout is unknown, nothing is read. */
    CU_ASSERT_EQUAL(handoff_encoder_remaining_bytes(&st, 4), UINT64_MAX);
    st.struct_size = sizeof(st);
    CU_ASSERT_EQUAL(handoff_encoder_remaining_bytes(&st, 4), 4 * 1024);
    st.chunks[HANDOFF_REC_SAME] = 10;    /* cost nothing, not counted */
    st.chunks[HANDOFF_REC_DATA] = 8;
    st.chunks[HANDOFF_REC_ZERO] = 2;
    st.output_bytes = 20000;             /* 2000 per chunk sent */
    st.plain_bytes = 40000;              /* frames halve their input */
    st.unencoded_bytes = 8000;
    st.pending_bytes = 100;
    CU_ASSERT_EQUAL(handoff_encoder_remaining_bytes(&st, 5),
                    5 * 2000 + 4000 + 100);
    CU_ASSERT_EQUAL(handoff_encoder_remaining_bytes(NULL, 5), UINT64_MAX);
}

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS) {
        return CU_get_error();
    }
    suite = CU_add_suite("c-api", NULL, NULL);
    CU_add_test(suite, "version matches header", test_version_matches_header);
    CU_add_test(suite, "codecs listed in enum order",
                test_codecs_listed_in_enum_order);
    CU_add_test(suite, "codec library versions are the linked ones",
                test_codec_library_versions_are_the_linked_ones);
    CU_add_test(suite, "codec info rejects bad arguments",
                test_codec_info_rejects_bad_arguments);
    CU_add_test(suite, "hash identity", test_hash_identity);
    CU_add_test(suite, "mode names round trip", test_mode_names_round_trip);
    CU_add_test(suite, "deltas can be forbidden",
                test_deltas_can_be_forbidden);
    CU_add_test(suite, "compression policy resolves modes",
                test_compression_policy_resolves_modes);
    CU_add_test(suite, "compression policy refusals",
                test_compression_policy_refusals);
    CU_add_test(suite, "compression policy struct size",
                test_compression_policy_struct_size);
    CU_add_test(suite, "compression policy reaches the encoder",
                test_compression_policy_reaches_the_encoder);
    CU_add_test(suite, "structs carry their size",
                test_structs_carry_their_size);
    CU_add_test(suite, "order file read", test_order_file_read);
    CU_add_test(suite, "remaining bytes estimate",
                test_remaining_bytes_estimate);

    return test_run_registry();
}
