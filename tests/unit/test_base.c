/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Base indexes on disk: relocatable (files named relative to the index),
 * opened without leaving the base directory, trusted for their content ID
 * only when it matches their hashes, and verifiable against the files.
 * Indexes are edited following docs/stream-format.md ("Base index").
 */
#define _GNU_SOURCE
#include "handoff.h"
#include "test_support.h"

#include <CUnit/Basic.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

/* 2 x 2048 chunks: enough for hashing and verification to use threads. */
#define N 2048

static TestVm vm;
static HandoffBase *mem_base;      /* the same content, from memory */
static char root[] = "/tmp/handoff-base-XXXXXX";
static char dir[512];              /* the base directory of each test */

#define sh(...) test_shell_in(root, __VA_ARGS__)

static const char *in_dir(const char *name)
{
    static char path[4][1024];
    static int next;
    char *p = path[next++ % 4];

    snprintf(p, sizeof(path[0]), "%s/%s", dir, name);
    return p;
}

static int write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    int ok;

    if (!f) {
        return -1;
    }
    ok = fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf;

    if (!f) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc(*len + 1);
    if (fread(buf, 1, *len, f) != *len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

/* A base directory @name under the root: "mem.raw" and "sub/disk.raw"
 * holding the test VM, indexed as "base.hidx". */
static HandoffBase *make_base_dir(const char *name)
{
    HandoffRegionSpec spec[2];
    HandoffBase *b = NULL;

    snprintf(dir, sizeof(dir), "%s/%s", root, name);
    CU_ASSERT_EQUAL_FATAL(sh("mkdir -p %s/sub", name), 0);
    CU_ASSERT_EQUAL_FATAL(write_file(in_dir("mem.raw"), vm.mem, N * CHUNK), 0);
    CU_ASSERT_EQUAL_FATAL(write_file(in_dir("sub/disk.raw"), vm.disk,
                                     N * CHUNK), 0);
    spec[0] = (HandoffRegionSpec){ "pc.ram", HANDOFF_REGION_MEMORY,
                                   in_dir("mem.raw"), NULL, 0 };
    spec[1] = (HandoffRegionSpec){ "disk0", HANDOFF_REGION_DISK,
                                   in_dir("sub/disk.raw"), NULL, 0 };
    CU_ASSERT_EQUAL_FATAL(handoff_base_create(spec, 2, in_dir("base.hidx"), &b),
                          0);
    return b;
}

static int open_base(const char *index, HandoffBase **b)
{
    *b = NULL;
    return handoff_base_open(index, b);
}

static int message_has(const char *what)
{
    if (strstr(handoff_last_error_message(), what) != NULL) {
        return 1;
    }
    printf("\n    message without '%s': %s", what, handoff_last_error_message());
    return 0;
}

static void same_id(const HandoffBase *a, const HandoffBase *b)
{
    uint8_t ia[16], ib[16];

    handoff_base_id(a, ia);
    handoff_base_id(b, ib);
    CU_ASSERT(memcmp(ia, ib, 16) == 0);
}

/* ---- index surgery, from the documented layout -------------------- */

enum {
    IDX_VERSION = 8, IDX_LENGTH = 12, IDX_ID = 40, IDX_HASHES = 56,
    IDX_REGION_COUNT = 72, IDX_REGIONS = 76,
};

static uint32_t le32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t le64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static void fix_header_checksum(uint8_t *idx)
{
    uint32_t h = le32(idx + IDX_LENGTH);
    uint64_t sum = XXH3_64bits(idx, h - 8);

    memcpy(idx + h - 8, &sum, 8);
}

/* Rewrites the index at @path with region @region's file name set to
 * @name (@name_len bytes), everything else kept. */
static void set_file_name(const char *path, unsigned region, const char *name,
                          size_t name_len)
{
    size_t len, pos = IDX_REGIONS, out_len = IDX_REGIONS;
    uint8_t *idx = read_all(path, &len);
    uint8_t *out = calloc(1, len + 65536);
    uint32_t count, i;
    uint64_t hashes;

    CU_ASSERT_PTR_NOT_NULL_FATAL(idx);
    count = le32(idx + IDX_REGION_COUNT);
    hashes = le64(idx + IDX_HASHES);
    memcpy(out, idx, IDX_REGIONS);
    for (i = 0; i < count; i++) {
        /* u8 kind, u8 name length, name, u64 size, u16 file name length,
         * file name, u64 file size */
        size_t head = 2 + idx[pos + 1] + 8;
        uint16_t flen, nlen = (uint16_t)name_len;

        memcpy(out + out_len, idx + pos, head);
        out_len += head;
        pos += head;
        memcpy(&flen, idx + pos, 2);
        if (i == region) {
            memcpy(out + out_len, &nlen, 2);
            memcpy(out + out_len + 2, name, name_len);
            out_len += 2 + name_len;
        } else {
            memcpy(out + out_len, idx + pos, 2 + flen);
            out_len += 2 + flen;
        }
        pos += 2 + flen;
        memcpy(out + out_len, idx + pos, 8);
        out_len += 8;
        pos += 8;
    }
    CU_ASSERT_FATAL(out_len + 8 <= hashes);
    {
        uint32_t h = (uint32_t)(out_len + 8);
        memcpy(out + IDX_LENGTH, &h, 4);
    }
    fix_header_checksum(out);
    memcpy(out + hashes, idx + hashes, len - hashes);
    CU_ASSERT_EQUAL(write_file(path, out, len), 0);
    free(idx);
    free(out);
}

static void patch_index(const char *path, size_t offset, uint8_t xor_with,
                        int fix_checksum)
{
    size_t len;
    uint8_t *idx = read_all(path, &len);

    CU_ASSERT_PTR_NOT_NULL_FATAL(idx);
    CU_ASSERT_FATAL(offset < len);
    idx[offset] ^= xor_with;
    if (fix_checksum) {
        fix_header_checksum(idx);
    }
    CU_ASSERT_EQUAL(write_file(path, idx, len), 0);
    free(idx);
}

static void set_version(const char *path, uint32_t version)
{
    size_t len;
    uint8_t *idx = read_all(path, &len);

    CU_ASSERT_PTR_NOT_NULL_FATAL(idx);
    memcpy(idx + IDX_VERSION, &version, 4);
    fix_header_checksum(idx);
    CU_ASSERT_EQUAL(write_file(path, idx, len), 0);
    free(idx);
}

/* ---- tests --------------------------------------------------------- */

/*
 * A base directory copied elsewhere (fresh modification times) and the
 * original removed: the copy opens, names its files relative to itself,
 * maps their bytes, verifies and decodes streams made for the content.
 */
static void test_relocated_copy_opens_and_decodes(void)
{
    HandoffBase *created = make_base_dir("orig"), *b;
    HandoffEncoderConfig cfg = { .struct_size = sizeof(HandoffEncoderConfig) };
    HandoffEncoder *enc = NULL;
    TestVm mod, out;
    uint8_t *stream;
    size_t len;
    uint64_t i;

    CU_ASSERT_STRING_EQUAL(handoff_base_region_file(created, 0), "mem.raw");
    CU_ASSERT_STRING_EQUAL(handoff_base_region_file(created, 1), "sub/disk.raw");
    handoff_base_free(created);
    CU_ASSERT_EQUAL_FATAL(sh("sleep 0.01 && cp -r orig copy && rm -rf orig && "
                             "mkdir elsewhere && "
                             "ln -s ../copy/base.hidx elsewhere/link.hidx"), 0);
    snprintf(dir, sizeof(dir), "%s/copy", root);
    CU_ASSERT_EQUAL_FATAL(open_base(in_dir("base.hidx"), &b), 0);
    same_id(b, mem_base);
    CU_ASSERT_STRING_EQUAL(handoff_base_region_file(b, 0), "mem.raw");
    CU_ASSERT_STRING_EQUAL(handoff_base_region_file(b, 1), "sub/disk.raw");
    CU_ASSERT_PTR_NULL(handoff_base_region_file(b, 2));
    CU_ASSERT_PTR_NULL(handoff_base_region_data(b, 2));
    CU_ASSERT_PTR_NULL(handoff_base_region_file(NULL, 0));
    CU_ASSERT_FATAL(handoff_base_region_data(b, 1) != NULL);
    CU_ASSERT(memcmp(handoff_base_region_data(b, 0), vm.mem, N * CHUNK) == 0);
    CU_ASSERT(memcmp(handoff_base_region_data(b, 1), vm.disk, N * CHUNK) == 0);
    CU_ASSERT_EQUAL(handoff_base_verify(b), 0);

    /* A stream made against the in-memory base decodes on the copy. */
    test_vm_copy(&mod, &vm);
    for (i = 0; i < N; i += 7) {
        fill_text(mod.mem + i * CHUNK, 777 + i);
    }
    memcpy(mod.disk + 3 * CHUNK, vm.mem + 9 * CHUNK, CHUNK);
    handoff_encoder_config_default(&cfg);
    cfg.adaptive = 0;
    CU_ASSERT_EQUAL_FATAL(handoff_encoder_create(mem_base, &cfg, &enc), 0);
    CU_ASSERT_EQUAL(test_submit_all(enc, &mod, 1), 0);
    CU_ASSERT_EQUAL(handoff_encoder_finish(enc), 0);
    stream = test_pull_all(enc, &len);
    handoff_encoder_free(enc);
    CU_ASSERT_PTR_NOT_NULL_FATAL(stream);
    CU_ASSERT_EQUAL(test_decode(b, &vm, stream, len, &out), 0);
    CU_ASSERT(test_vm_equal(&out, &mod));
    handoff_base_free(b);

    /* Through a link to the index, the files are found beside the index
     * itself, not beside the link. */
    snprintf(dir, sizeof(dir), "%s/elsewhere", root);
    CU_ASSERT_EQUAL(open_base(in_dir("link.hidx"), &b), 0);
    handoff_base_free(b);
    free(stream);
    test_vm_free(&mod);
    test_vm_free(&out);
    CU_ASSERT_EQUAL(sh("rm -rf copy elsewhere"), 0);
}

/*
 * Opening checks sizes, not contents: two chunks rewritten with the file's
 * size and modification time put back open as before. Verification reads
 * the bytes and names what changed.
 */
static void test_verify_finds_changed_chunks(void)
{
    HandoffBase *b = make_base_dir("changed");
    struct stat st;
    struct timespec times[2];
    uint8_t junk[CHUNK];
    int fd;

    handoff_base_free(b);
    CU_ASSERT_EQUAL_FATAL(stat(in_dir("sub/disk.raw"), &st), 0);
    memset(junk, 0x5a, sizeof(junk));
    fd = open(in_dir("sub/disk.raw"), O_WRONLY);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(pwrite(fd, junk, 100, 5 * CHUNK + 17), 100);
    CU_ASSERT_EQUAL(pwrite(fd, junk, 1, (N - 2) * CHUNK), 1);
    times[0] = st.st_atim;
    times[1] = st.st_mtim;
    CU_ASSERT_EQUAL(futimens(fd, times), 0);
    close(fd);

    CU_ASSERT_EQUAL_FATAL(open_base(in_dir("base.hidx"), &b), 0);
    CU_ASSERT_EQUAL(handoff_base_verify(b), HANDOFF_E_BASE_CHANGED);
    CU_ASSERT(message_has("region 'disk0'"));
    CU_ASSERT(message_has("file 'sub/disk.raw'"));
    CU_ASSERT(message_has("2 of 2048 chunks differ"));
    CU_ASSERT(message_has("first is chunk 5 "));
    /* The memory region is untouched. */
    CU_ASSERT(strstr(handoff_last_error_message(), "other region") == NULL);
    /* handoff_base_read reads the file as it is now (pread), at offsets. */
    {
        uint8_t got[2 * CHUNK];

        CU_ASSERT_EQUAL(handoff_base_read(b, 1, 5 * CHUNK, got, sizeof(got)),
                        0);
        CU_ASSERT_EQUAL(memcmp(got + 17, junk, 100), 0);
        CU_ASSERT_EQUAL(handoff_base_read(b, 1, N * CHUNK - 1, got, 2),
                        HANDOFF_E_INVALID_ARGUMENT);
    }

    /* A file cut short under an open base: an error, not SIGBUS. */
    CU_ASSERT_EQUAL(truncate(in_dir("mem.raw"), 100 * CHUNK), 0);
    {
        uint8_t got[CHUNK];

        CU_ASSERT_EQUAL(handoff_base_read(b, 0, 100 * CHUNK, got, CHUNK),
                        HANDOFF_E_BASE_CHANGED);
        CU_ASSERT(message_has("is shorter than when the base was opened"));
    }
    CU_ASSERT_EQUAL(handoff_base_verify(b), HANDOFF_E_BASE_CHANGED);
    CU_ASSERT(message_has("'mem.raw'"));
    CU_ASSERT(message_has("is now 409600 bytes"));
    handoff_base_free(b);
    /* ...and refused when opening. */
    CU_ASSERT_EQUAL(open_base(in_dir("base.hidx"), &b), HANDOFF_E_BASE_CHANGED);
    CU_ASSERT(message_has("the index recorded"));
    CU_ASSERT_PTR_NULL(b);
    CU_ASSERT_EQUAL(handoff_base_verify(NULL), HANDOFF_E_INVALID_ARGUMENT);
    CU_ASSERT_EQUAL(handoff_base_verify(mem_base), 0);
    CU_ASSERT_EQUAL(sh("rm -rf changed"), 0);
}

/* File names an index may not hold, whatever else it says. */
static void test_index_names_outside_the_directory_refused(void)
{
    static const struct {
        const char *name;
        const char *why;
    } bad[] = {
        { "../x", "'..' in path" },
        { "/etc/passwd", "absolute path" },
        { "sub/../mem.raw", "'..' in path" },
        { "./mem.raw", "'.' in path" },
        { "sub//disk.raw", "empty path component" },
        { "", "empty file name" },
    };
    char long_part[300];
    HandoffBase *b = make_base_dir("names");
    size_t i;

    handoff_base_free(b);
    CU_ASSERT_EQUAL_FATAL(sh("cp names/base.hidx names/good.hidx"), 0);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CU_ASSERT_EQUAL(sh("cp names/good.hidx names/base.hidx"), 0);
        set_file_name(in_dir("base.hidx"), 1, bad[i].name, strlen(bad[i].name));
        CU_ASSERT_EQUAL(open_base(in_dir("base.hidx"), &b),
                        HANDOFF_E_INDEX_CORRUPT);
        CU_ASSERT(message_has(bad[i].why));
        CU_ASSERT(message_has("region 'disk0'"));
        CU_ASSERT_PTR_NULL(b);
    }
    memset(long_part, 'a', sizeof(long_part));
    CU_ASSERT_EQUAL(sh("cp names/good.hidx names/base.hidx"), 0);
    set_file_name(in_dir("base.hidx"), 0, long_part, sizeof(long_part));
    CU_ASSERT_EQUAL(open_base(in_dir("base.hidx"), &b), HANDOFF_E_INDEX_CORRUPT);
    CU_ASSERT(message_has("longer than 255"));
    CU_ASSERT_EQUAL(sh("cp names/good.hidx names/base.hidx"), 0);
    set_file_name(in_dir("base.hidx"), 0, "mem.raw\0x", 9);
    CU_ASSERT_EQUAL(open_base(in_dir("base.hidx"), &b), HANDOFF_E_INDEX_CORRUPT);
    CU_ASSERT(message_has("NUL"));
    /* The untouched copy still opens: the edits were all it took. */
    CU_ASSERT_EQUAL(open_base(in_dir("good.hidx"), &b), 0);
    handoff_base_free(b);
    CU_ASSERT_EQUAL(sh("rm -rf names"), 0);
}

/* Links and special files put in place of base files, even with the
 * right content, are not followed or read. */
static void test_links_and_special_files_refused(void)
{
    static const struct {
        const char *setup;
        const char *why;
    } cases[] = {
        { "cp links/mem.raw outside.raw && ln -sf ../outside.raw links/mem.raw",
          "'mem.raw' is a symbolic link" },
        { "cp -r links/sub outsub && rm -r links/sub && "
          "ln -s ../outsub links/sub", "'sub' is a symbolic link" },
        { "rm links/mem.raw && mkfifo links/mem.raw", "not a regular file" },
        { "rm links/mem.raw && mkdir links/mem.raw", "not a regular file" },
        { "rm links/sub/disk.raw", "'sub/disk.raw' does not exist" },
        { "rm -r links/sub && touch links/sub", "'sub' is not a directory" },
    };
    HandoffBase *b = make_base_dir("links");
    size_t i;

    handoff_base_free(b);
    CU_ASSERT_EQUAL_FATAL(sh("cp -rp links pristine"), 0);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        CU_ASSERT_EQUAL(sh("rm -rf links outside.raw outsub && "
                           "cp -rp pristine links && %s", cases[i].setup), 0);
        CU_ASSERT_EQUAL(open_base(in_dir("base.hidx"), &b),
                        HANDOFF_E_BASE_CHANGED);
        CU_ASSERT(message_has(cases[i].why));
        CU_ASSERT_PTR_NULL(b);
    }
    CU_ASSERT_EQUAL(sh("rm -rf links pristine outside.raw outsub"), 0);
}

/* The content ID is recomputed on open: an index claiming another ID, or
 * whose hashes were changed, is refused. */
static void test_content_id_recomputed_on_open(void)
{
    HandoffBase *b = make_base_dir("id");

    handoff_base_free(b);
    CU_ASSERT_EQUAL_FATAL(sh("cp id/base.hidx id/good.hidx"), 0);
    patch_index(in_dir("base.hidx"), IDX_ID + 3, 0x01, 1);
    CU_ASSERT_EQUAL(open_base(in_dir("base.hidx"), &b), HANDOFF_E_INDEX_CORRUPT);
    CU_ASSERT(message_has("content ID does not match the index's hashes"));

    /* The hash array has no checksum of its own: the ID covers it. */
    {
        size_t len;
        uint8_t *idx = read_all(in_dir("good.hidx"), &len);

        CU_ASSERT_PTR_NOT_NULL_FATAL(idx);
        CU_ASSERT_EQUAL(sh("cp id/good.hidx id/base.hidx"), 0);
        patch_index(in_dir("base.hidx"), le64(idx + IDX_HASHES) + 16 * 100 + 5,
                    0x80, 0);
        free(idx);
    }
    CU_ASSERT_EQUAL(open_base(in_dir("base.hidx"), &b), HANDOFF_E_INDEX_CORRUPT);
    CU_ASSERT(message_has("content ID does not match"));

    /* Without fixing the header checksum, that is what is reported. */
    CU_ASSERT_EQUAL(sh("cp id/good.hidx id/base.hidx"), 0);
    patch_index(in_dir("base.hidx"), IDX_ID, 0x01, 0);
    CU_ASSERT_EQUAL(open_base(in_dir("base.hidx"), &b), HANDOFF_E_INDEX_CORRUPT);
    CU_ASSERT(message_has("checksum"));
    CU_ASSERT_EQUAL(open_base(in_dir("good.hidx"), &b), 0);
    handoff_base_free(b);
    CU_ASSERT_EQUAL(sh("rm -rf id"), 0);
}

static void test_version_1_index_refused(void)
{
    HandoffBase *b = make_base_dir("v1");

    handoff_base_free(b);
    set_version(in_dir("base.hidx"), 1);
    CU_ASSERT_EQUAL(open_base(in_dir("base.hidx"), &b),
                    HANDOFF_E_UNSUPPORTED_VERSION);
    CU_ASSERT(message_has("version 1"));
    CU_ASSERT(message_has("re-create the base"));
    set_version(in_dir("base.hidx"), 3);
    CU_ASSERT_EQUAL(open_base(in_dir("base.hidx"), &b),
                    HANDOFF_E_UNSUPPORTED_VERSION);
    CU_ASSERT(message_has("version 3"));
    CU_ASSERT_EQUAL(sh("rm -rf v1"), 0);
}

/* Create records files relative to the index's directory: a file outside
 * it, directly or through a link, cannot be recorded, and the index may
 * not be written over a base file. */
/*
 * An extended base: a data disk the base VM did not have travels as a
 * region that reads as zeros in the base. Its chunks come back exact, a
 * copy of a base chunk in it is a reference, the ID depends on the
 * extension, and a destination extended otherwise refuses the stream.
 */
static void test_extended_base_carries_a_new_disk(void)
{
    enum { DATA_CHUNKS = 32 };
    TestVm vm;
    HandoffBase *base, *extended = NULL, *other = NULL, *clash = NULL;
    HandoffRegionSpec data = { "data0", HANDOFF_REGION_DISK, NULL, NULL,
                               DATA_CHUNKS * CHUNK };
    HandoffRegionSpec bigger = data, same_name = { "disk0",
        HANDOFF_REGION_DISK, NULL, NULL, CHUNK };
    HandoffEncoderConfig cfg = { .struct_size = sizeof(cfg) };
    HandoffEncoderStats st = { .struct_size = sizeof(st) };
    HandoffEncoder *enc = NULL;
    HandoffDecoder *dec = NULL;
    HandoffRegionInfo info;
    uint8_t *disk = calloc(DATA_CHUNKS, CHUNK), *out;
    uint8_t id[16], ext_id[16];
    uint8_t *stream;
    void *mem[3];
    size_t len;
    uint64_t i;

    test_make_base_vm(&vm, 64, 11);
    base = test_base_from_vm(&vm);
    CU_ASSERT_EQUAL_FATAL(handoff_base_extend(base, &data, 1, &extended), 0);
    CU_ASSERT_EQUAL(handoff_base_region_count(extended), 3);
    CU_ASSERT_EQUAL(handoff_base_region_info(extended, 2, &info), 0);
    CU_ASSERT_STRING_EQUAL(info.name, "data0");
    handoff_base_id(base, id);
    handoff_base_id(extended, ext_id);
    CU_ASSERT(memcmp(id, ext_id, 16) != 0);
    CU_ASSERT_EQUAL(handoff_base_verify(extended), 0);
    CU_ASSERT_EQUAL(handoff_base_extend(base, &same_name, 1, &clash),
                    HANDOFF_E_BAD_GEOMETRY);
    CU_ASSERT_PTR_NULL(clash);

    for (i = 0; i < 8; i++) {
        fill_random(disk + i * CHUNK, 900 + i);               /* DATA */
    }
    memcpy(disk + 10 * CHUNK, vm.mem + 5 * CHUNK, CHUNK);     /* BASE_REF */
    memcpy(disk + 11 * CHUNK, disk + 3 * CHUNK, CHUNK);       /* SELF_REF */
    handoff_encoder_config_default(&cfg);
    cfg.adaptive = 0;
    CU_ASSERT_EQUAL_FATAL(handoff_encoder_create(extended, &cfg, &enc), 0);
    for (i = 0; i < DATA_CHUNKS; i++) {
        CU_ASSERT_EQUAL(handoff_encoder_submit(enc, 2, i, disk + i * CHUNK), 0);
    }
    CU_ASSERT_EQUAL(handoff_encoder_finish(enc), 0);
    stream = test_pull_all(enc, &len);
    handoff_encoder_stats(enc, &st);
    handoff_encoder_free(enc);
    CU_ASSERT_EQUAL(st.chunks[HANDOFF_REC_DATA], 8);
    CU_ASSERT_EQUAL(st.chunks[HANDOFF_REC_BASE_REF], 1);
    CU_ASSERT_EQUAL(st.chunks[HANDOFF_REC_SELF_REF], 1);
    CU_ASSERT_EQUAL(st.chunks[HANDOFF_REC_SAME], DATA_CHUNKS - 10);

    out = calloc(DATA_CHUNKS, CHUNK);
    mem[0] = vm.mem;
    mem[1] = vm.disk;
    mem[2] = out;
    CU_ASSERT_EQUAL_FATAL(handoff_decoder_create(extended, NULL, mem, &dec), 0);
    CU_ASSERT_EQUAL(handoff_decoder_feed(dec, stream, len), 0);
    CU_ASSERT_EQUAL(handoff_decoder_finish(dec), 0);
    CU_ASSERT(memcmp(out, disk, DATA_CHUNKS * CHUNK) == 0);
    handoff_decoder_free(dec);

    /* A destination whose data disk has another size is another base. */
    bigger.size = 2 * DATA_CHUNKS * CHUNK;
    CU_ASSERT_EQUAL_FATAL(handoff_base_extend(base, &bigger, 1, &other), 0);
    CU_ASSERT_EQUAL_FATAL(handoff_decoder_create(other, NULL, mem, &dec), 0);
    CU_ASSERT_EQUAL(handoff_decoder_feed(dec, stream, len),
                    HANDOFF_E_WRONG_BASE);
    CU_ASSERT_PTR_NOT_NULL(strstr(handoff_last_error_message(),
                                  "regions this base lacks: data0 (131072"));
    handoff_decoder_free(dec);

    free(stream);
    free(out);
    free(disk);
    handoff_base_free(other);
    handoff_base_free(extended);
    handoff_base_free(base);
    test_vm_free(&vm);
}

static void test_create_refuses_files_outside_the_directory(void)
{
    HandoffRegionSpec spec[2];
    HandoffBase *b = make_base_dir("create");

    handoff_base_free(b);
    CU_ASSERT_EQUAL_FATAL(sh("mkdir create/idx && "
                             "ln -s ../mem.raw create/idx/mem.raw && "
                             "cp create/sub/disk.raw create/idx/disk.raw"), 0);
    spec[0] = (HandoffRegionSpec){ "pc.ram", HANDOFF_REGION_MEMORY,
                                   in_dir("mem.raw"), NULL, 0 };
    spec[1] = (HandoffRegionSpec){ "disk0", HANDOFF_REGION_DISK,
                                   in_dir("idx/disk.raw"), NULL, 0 };
    CU_ASSERT_EQUAL(handoff_base_create(spec, 2, in_dir("idx/base.hidx"), &b),
                    HANDOFF_E_INVALID_ARGUMENT);
    CU_ASSERT(message_has("region 'pc.ram'"));
    CU_ASSERT(message_has("mem.raw' is not inside the index's directory"));
    CU_ASSERT_PTR_NULL(b);
    /* A link inside the directory to a file outside it: the same. */
    spec[0].path = in_dir("idx/mem.raw");
    CU_ASSERT_EQUAL(handoff_base_create(spec, 2, in_dir("idx/base.hidx"), &b),
                    HANDOFF_E_INVALID_ARGUMENT);
    CU_ASSERT(message_has("is not inside"));
    /* The index would replace a base file. */
    spec[0].path = in_dir("mem.raw");
    spec[1].path = in_dir("sub/disk.raw");
    CU_ASSERT_EQUAL(handoff_base_create(spec, 2, in_dir("mem.raw"), &b),
                    HANDOFF_E_INVALID_ARGUMENT);
    CU_ASSERT(message_has("refusing to overwrite"));
    {
        size_t len;
        uint8_t *mem = read_all(in_dir("mem.raw"), &len);

        CU_ASSERT(mem != NULL && len == N * CHUNK &&
                  memcmp(mem, vm.mem, len) == 0);
        free(mem);
    }
    /* Regions given through a link in the directory are recorded by the
     * file's own name. */
    CU_ASSERT_EQUAL(sh("ln -s sub/disk.raw create/disk-link.raw"), 0);
    spec[1].path = in_dir("disk-link.raw");
    CU_ASSERT_EQUAL(handoff_base_create(spec, 2, in_dir("base.hidx"), &b), 0);
    CU_ASSERT_STRING_EQUAL(handoff_base_region_file(b, 1), "sub/disk.raw");
    handoff_base_free(b);
    /* In memory: no file, and the bytes are the caller's. */
    CU_ASSERT_STRING_EQUAL(handoff_base_region_file(mem_base, 0), "");
    CU_ASSERT(handoff_base_region_data(mem_base, 1) == (const void *)vm.disk);
    CU_ASSERT_EQUAL(sh("rm -rf create"), 0);
}

static int init_suite(void)
{
    if (mkdtemp(root) == NULL) {
        return 1;
    }
    test_make_base_vm(&vm, N, 9);
    mem_base = test_base_from_vm(&vm);
    return mem_base == NULL;
}

static int clean_suite(void)
{
    char cmd[600];

    snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
    handoff_base_free(mem_base);
    test_vm_free(&vm);
    return system(cmd) != 0;
}

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS) {
        return CU_get_error();
    }
    suite = CU_add_suite("base", init_suite, clean_suite);
    CU_add_test(suite, "relocated copy opens and decodes",
                test_relocated_copy_opens_and_decodes);
    CU_add_test(suite, "verify finds changed chunks",
                test_verify_finds_changed_chunks);
    CU_add_test(suite, "index names outside the directory refused",
                test_index_names_outside_the_directory_refused);
    CU_add_test(suite, "links and special files refused",
                test_links_and_special_files_refused);
    CU_add_test(suite, "content ID recomputed on open",
                test_content_id_recomputed_on_open);
    CU_add_test(suite, "version 1 index refused", test_version_1_index_refused);
    CU_add_test(suite, "extended base carries a new disk",
                test_extended_base_carries_a_new_disk);
    CU_add_test(suite, "create refuses files outside the directory",
                test_create_refuses_files_outside_the_directory);
    return test_run_registry();
}
