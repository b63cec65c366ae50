/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The qemu-handoff tool end to end on small files: base create and info,
 * encode, inspect, decode back to identical images, and refusal of a
 * damaged stream with a non-zero exit.
 */
#include "test_support.h"

#include <CUnit/Basic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#define N 512

static const char *tool;
static char dir[] = "/tmp/handoff-cli-XXXXXX";
static TestVm base, mod;

/* Runs the tool in the scratch directory; its stderr goes to err.txt.
 * Returns the shell's wait status: a tool killed by a signal shows as an
 * exit status of 128 + signal, which no test accepts. */
static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    int n;

    n = snprintf(cmd, sizeof(cmd), "cd %s && %s ", dir, tool);
    va_start(ap, fmt);
    vsnprintf(cmd + n, sizeof(cmd) - n, fmt, ap);
    va_end(ap);
    strncat(cmd, " >out.txt 2>err.txt", sizeof(cmd) - strlen(cmd) - 1);
    return system(cmd);
}

#define shell(...) test_shell_in(dir, __VA_ARGS__)

/* Exit code of a run that ended normally, -1 when it was killed. */
static int exit_code(int status)
{
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) >= 128) {
        return -1;
    }
    return WEXITSTATUS(status);
}

/* Contents of a scratch file (static buffer). */
static const char *slurp(const char *name)
{
    static char buf[65536];
    char path[512];
    size_t n = 0;
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    buf[0] = '\0';
    f = fopen(path, "rb");
    if (f) {
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
    return buf;
}

static int write_file(const char *name, const void *data, size_t len)
{
    char path[512];
    FILE *f;
    int ok;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (f == NULL) {
        return -1;
    }
    ok = fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static int files_equal(const char *a, const char *b)
{
    return shell("cmp -s %s %s", a, b) == 0;
}

static int init_suite(void)
{
    uint64_t i;

    if (mkdtemp(dir) == NULL) {
        return 1;
    }
    test_make_base_vm(&base, N, 5);
    test_vm_copy(&mod, &base);
    for (i = 0; i < N; i += 3) {
        fill_text(mod.mem + i * CHUNK, 100000 + i);
    }
    for (i = 0; i < N; i += 10) {
        memset(mod.disk + i * CHUNK, 0, CHUNK);
        memcpy(mod.mem + (i + 1) * CHUNK, base.disk + i * CHUNK, CHUNK);
    }
    if (write_file("mem.img", base.mem, N * CHUNK) != 0 ||
        write_file("disk.img", base.disk, N * CHUNK) != 0 ||
        write_file("mem2.img", mod.mem, N * CHUNK) != 0 ||
        write_file("disk2.img", mod.disk, N * CHUNK) != 0) {
        return 1;
    }
    /* Pristine copies, to prove that no command wrote to the base. */
    return shell("cp -p mem.img mem.orig && cp -p disk.img disk.orig") != 0 ||
           run("base create --mem mem.img --disk disk.img -o base.hidx") != 0 ||
           run("encode --base base.hidx --mem mem2.img --disk disk2.img "
               "-o s.hos --codec zstd --level 1 --quiet") != 0;
}

static int clean_suite(void)
{
    char cmd[512];

    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    test_vm_free(&base);
    test_vm_free(&mod);
    return system(cmd) != 0;
}

static void test_cli_round_trip(void)
{
    CU_ASSERT_EQUAL(run("base info base.hidx --json"), 0);
    CU_ASSERT_EQUAL(run("encode --base base.hidx --mem mem2.img --disk disk2.img "
                        "-o a.hos --threads 2 --json"), 0);
    CU_ASSERT_EQUAL(run("inspect a.hos --json"), 0);
    CU_ASSERT_EQUAL(run("decode --base base.hidx -i a.hos --mem out-mem.img "
                        "--disk out-disk.img --json"), 0);
    CU_ASSERT(files_equal("out-mem.img", "mem2.img"));
    CU_ASSERT(files_equal("out-disk.img", "disk2.img"));

    /* Fixed mode with delta, then a damaged copy that must be refused. */
    CU_ASSERT_EQUAL(run("encode --base base.hidx --mem mem2.img --disk disk2.img "
                        "-o x.hos --codec zstd --level 3 --delta prefix --quiet"), 0);
    CU_ASSERT_EQUAL(run("decode --base base.hidx -i x.hos --mem o2.img "
                        "--disk o3.img --quiet"), 0);
    CU_ASSERT(files_equal("o2.img", "mem2.img"));
    CU_ASSERT_EQUAL(shell("head -c 5000 x.hos > t.hos && "
                          "printf 'Z' | dd of=x.hos bs=1 seek=3000 conv=notrunc "
                          "2>/dev/null"), 0);
    CU_ASSERT_NOT_EQUAL(run("decode --base base.hidx -i x.hos --mem o2.img "
                            "--disk o3.img --quiet"), 0);
    CU_ASSERT_NOT_EQUAL(run("decode --base base.hidx -i t.hos --mem o2.img "
                            "--disk o3.img --quiet"), 0);
    CU_ASSERT_EQUAL(exit_code(run("inspect t.hos")), 1);
    /* Missing region image and unknown codec are usage errors. */
    CU_ASSERT_NOT_EQUAL(run("encode --base base.hidx --mem mem2.img -o y.hos"), 0);
    CU_ASSERT_NOT_EQUAL(run("encode --base base.hidx --mem mem2.img --disk "
                            "disk2.img -o y.hos --codec brotli"), 0);
    CU_ASSERT(files_equal("mem.img", "mem.orig"));
    CU_ASSERT(files_equal("disk.img", "disk.orig"));
}

/* encode's --codec, --level and --delta name the mode that runs, exactly
 * (the engine's XOR rule for a mode without a delta is QEMU's, not the
 * tool's); --level and --delta without --codec, or with --adaptive, are
 * refused rather than ignored. */
static void test_encode_compression_options(void)
{
    static const struct {
        const char *options;
        const char *mode;
    } named[] = {
        { "--codec zstd --level 1", "\"mode\": \"zstd-1\"," },
        { "--codec zstd", "\"mode\": \"zstd-1\"," },
        { "--codec zlib --level 6 --delta none", "\"mode\": \"zlib-6\"," },
        { "--codec zstd --level 3 --delta xor", "\"mode\": \"zstd-3+xor\"," },
        { "--codec zstd --level 9 --delta prefix",
          "\"mode\": \"zstd-9+prefix\"," },
        { "--codec none", "\"mode\": \"none\"," },
    };
    static const struct {
        const char *options;
        const char *message;
    } refused[] = {
        { "--level 3", "--level and --delta need --codec" },
        { "--delta xor", "--level and --delta need --codec" },
        { "--adaptive --codec lzma --level 6", "--adaptive takes none" },
        { "--codec zstd --level 20", "zstd levels are 1..19" },
        { "--codec zlib --delta prefix", "+prefix needs zstd" },
        { "--codec auto", "codec 'auto' is not" },
    };
    size_t i;

    for (i = 0; i < sizeof(named) / sizeof(named[0]); i++) {
        CU_ASSERT_EQUAL(run("encode --base base.hidx --mem mem2.img --disk "
                            "disk2.img -o m.hos --json %s", named[i].options),
                        0);
        CU_ASSERT_PTR_NOT_NULL(strstr(slurp("out.txt"), named[i].mode));
    }
    for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        CU_ASSERT_EQUAL(exit_code(run("encode --base base.hidx --mem mem2.img "
                                      "--disk disk2.img -o m.hos %s",
                                      refused[i].options)), 2);
        CU_ASSERT_PTR_NOT_NULL(strstr(slurp("err.txt"), refused[i].message));
    }
}

/* A stream cut anywhere (inside the header, a frame header or a frame's
 * payload) is reported as truncated with exit 1, never read beyond its
 * end. The first frame's payload extends well past the page holding the
 * cut, so reading on past the end used to fault. */
static void test_inspect_truncated_streams(void)
{
    static const char *const fmt[] = { "", " --json" };
    uint8_t *stream;
    size_t len, header_len, off[4], lens[4], frames, cut, last = 0;
    FILE *f;
    char path[512];
    int failures = 0, crashes = 0;

    snprintf(path, sizeof(path), "%s/s.hos", dir);
    f = fopen(path, "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fseek(f, 0, SEEK_END);
    len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    stream = malloc(len);
    CU_ASSERT_EQUAL_FATAL(fread(stream, 1, len, f), len);
    fclose(f);
    CU_ASSERT_EQUAL_FATAL(handoff_stream_split(stream, len, &header_len, off,
                                               lens, 4, &frames), 0);
    CU_ASSERT_FATAL(frames >= 1 && lens[0] > 12000);

    CU_ASSERT_EQUAL(exit_code(run("inspect s.hos")), 0);
    for (cut = 0; cut < off[0] + lens[0];) {
        int code;
        const char *err;

        CU_ASSERT_EQUAL_FATAL(write_file("cut.hos", stream, cut), 0);
        code = exit_code(run("inspect cut.hos%s", fmt[cut % 2]));
        err = slurp("err.txt");
        crashes += code == -1;
        if ((code != 1 || strstr(err, "truncated") == NULL) && failures++ < 3) {
            printf("\n    cut at %zu of %zu: exit %d, stderr '%s'", cut, len,
                   code, err);
        }
        CU_ASSERT_EQUAL(code, 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, "truncated"));
        last = cut;
        /* Every byte of the header and the first frame header, then
         * steps through the first frame's payload. */
        cut += cut < 200 || cut < off[0] + 48 ? 1 : lens[0] / 61;
    }
    if (failures) {
        printf("\n    %d of the cuts failed, %d of them killed the tool",
               failures, crashes);
    }
    CU_ASSERT(last > off[0] + lens[0] / 2);
    /* What could be parsed is still shown. */
    CU_ASSERT_EQUAL_FATAL(write_file("cut.hos", stream, off[0] + lens[0] - 1),
                          0);
    CU_ASSERT_EQUAL(exit_code(run("inspect cut.hos")), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(slurp("out.txt"), "base id"));
    CU_ASSERT_PTR_NOT_NULL(strstr(slurp("err.txt"), "frame 0"));
    free(stream);
}

/* A frame whose codec byte names no codec (a decoder refuses it with
 * UNKNOWN_CODEC) is listed by inspect under that byte. Inspect used to
 * make the byte a HandoffCodec, which cannot hold it (undefined
 * behaviour, found by the inspect fuzz target under UBSan). */
static void test_inspect_unknown_codec(void)
{
    /* Frame header fields (docs/stream-format.md, "Frame"). */
    enum { FRAME_CODEC = 4, FRAME_CHECKED = 36 };
    uint8_t *stream;
    size_t len, header_len, off[4], lens[4], frames;
    uint32_t check;
    FILE *f;
    char path[512];

    snprintf(path, sizeof(path), "%s/s.hos", dir);
    f = fopen(path, "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fseek(f, 0, SEEK_END);
    len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    stream = malloc(len);
    CU_ASSERT_EQUAL_FATAL(fread(stream, 1, len, f), len);
    fclose(f);
    CU_ASSERT_EQUAL_FATAL(handoff_stream_split(stream, len, &header_len, off,
                                               lens, 4, &frames), 0);
    stream[off[0] + FRAME_CODEC] = 38;
    check = (uint32_t)XXH3_64bits(stream + off[0], FRAME_CHECKED);
    for (int i = 0; i < 4; i++) {
        stream[off[0] + FRAME_CHECKED + i] = (uint8_t)(check >> (8 * i));
    }
    CU_ASSERT_EQUAL_FATAL(write_file("codec.hos", stream, len), 0);
    CU_ASSERT_EQUAL(exit_code(run("inspect codec.hos --json")), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(slurp("out.txt"), "\"unknown-codec-38\""));
    CU_ASSERT_EQUAL(exit_code(run("inspect codec.hos")), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(slurp("out.txt"), "unknown-codec-38"));
    free(stream);
}

/* Decoding into a file of the base itself would truncate the base while
 * it is mapped: any spelling of a base file (the same path, a symbolic
 * link, a hard link) and the index are refused before anything is opened
 * for writing. */
static void test_decode_refuses_base_files_as_output(void)
{
    static const char *const outputs[] = {
        "--mem mem.img --disk out-disk.img",
        "--mem out-mem.img --disk ./disk.img",
        "--mem link-mem.img --disk out-disk.img",
        "--mem out-mem.img --disk hard-disk.img",
        "--mem out-mem.img --disk base.hidx",
    };
    size_t i;

    CU_ASSERT_EQUAL(shell("ln -sf mem.img link-mem.img && "
                          "ln -f disk.img hard-disk.img && "
                          "cp -p base.hidx base.hidx.orig"), 0);
    for (i = 0; i < sizeof(outputs) / sizeof(outputs[0]); i++) {
        int code = exit_code(run("decode --base base.hidx -i s.hos %s --quiet",
                                 outputs[i]));
        int intact = files_equal("mem.img", "mem.orig") &&
                     files_equal("disk.img", "disk.orig") &&
                     files_equal("base.hidx", "base.hidx.orig");

        CU_ASSERT_EQUAL(code, 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(slurp("err.txt"), "refus"));
        CU_ASSERT(intact);
        if (code != 1 || !intact) {
            printf("\n    %s: exit %d, base %s", outputs[i], code,
                   intact ? "intact" : "overwritten");
            /* Put the base back (mtimes too) for the next case. */
            CU_ASSERT_EQUAL(shell("cp -p mem.orig mem.img && "
                                  "cp -p disk.orig disk.img && "
                                  "cp -p base.hidx.orig base.hidx"), 0);
        }
    }
    /* The same holds for encode's output. */
    CU_ASSERT_EQUAL(exit_code(run("encode --base base.hidx --mem mem2.img "
                                  "--disk disk2.img -o hard-disk.img --quiet")),
                    1);
    CU_ASSERT(files_equal("disk.img", "disk.orig"));
    CU_ASSERT_EQUAL(shell("cp -p disk.orig disk.img"), 0);
    /* An ordinary output still works after the refusals. */
    CU_ASSERT_EQUAL(run("decode --base base.hidx -i s.hos --mem out-mem.img "
                        "--disk out-disk.img --quiet"), 0);
    CU_ASSERT(files_equal("out-mem.img", "mem2.img"));
    CU_ASSERT_EQUAL(shell("rm -f link-mem.img hard-disk.img base.hidx.orig"), 0);
}

/* base verify reads the files: a chunk rewritten under the same size and
 * modification time passes base info but not verify. */
static void test_base_verify(void)
{
    CU_ASSERT_EQUAL(exit_code(run("base verify base.hidx")), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(slurp("out.txt"), "verified"));
    CU_ASSERT_PTR_NOT_NULL(strstr(slurp("out.txt"), "GB/s"));
    CU_ASSERT_EQUAL(exit_code(run("base verify base.hidx --json")), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(slurp("out.txt"), "\"ok\": true"));
    CU_ASSERT_EQUAL(exit_code(run("base verify base.hidx --quiet")), 0);
    CU_ASSERT_STRING_EQUAL(slurp("out.txt"), "");

    CU_ASSERT_EQUAL(shell("printf 'Z' | dd of=disk.img bs=1 seek=40000 "
                          "conv=notrunc 2>/dev/null && "
                          "touch -r disk.orig disk.img"), 0);
    CU_ASSERT_EQUAL(exit_code(run("base info base.hidx")), 0);
    CU_ASSERT_EQUAL(exit_code(run("base verify base.hidx")), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(slurp("err.txt"), "HANDOFF_E_BASE_CHANGED"));
    CU_ASSERT_PTR_NOT_NULL(strstr(slurp("err.txt"), "first is chunk 9 "));
    CU_ASSERT_EQUAL(exit_code(run("base verify base.hidx --json")), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(slurp("out.txt"), "\"ok\": false"));
    CU_ASSERT_PTR_NOT_NULL(strstr(slurp("out.txt"), "disk.img"));
    CU_ASSERT_EQUAL(shell("cp -p disk.orig disk.img"), 0);
    CU_ASSERT_EQUAL(exit_code(run("base verify base.hidx")), 0);
    CU_ASSERT_EQUAL(exit_code(run("base verify")), 2);
}

/* encode --segmented writes a version 3 stream that decodes to the same
 * images, with the order file's chunks first (the stream differs from
 * one without it); inspect lists its segments and their state; a bad
 * order file is refused by line. */
static void test_segmented_encode_and_inspect(void)
{
    /* As handoff-record-stop writes it (times after the index), and by
     * hand (none): memory data chunks from the end (every third is new
     * text), a zeroed disk chunk. */
    static const char order[] =
        "# qemu-handoff-working-set 1\n"
        "\n"
        "pc.ram 510 1200\n"
        "pc.ram 507\n"
        "disk0 20 1250\n"
        "pc.ram 510 1300\n";  /* listed again: skipped */

    CU_ASSERT_EQUAL_FATAL(write_file("order.txt", order, sizeof(order) - 1), 0);
    CU_ASSERT_EQUAL(run("encode --base base.hidx --mem mem2.img --disk disk2.img "
                        "-o v3plain.hos --segmented --codec zstd --level 3 "
                        "--quiet"), 0);
    CU_ASSERT_EQUAL(run("encode --base base.hidx --mem mem2.img --disk disk2.img "
                        "-o v3.hos --segmented --order order.txt --codec zstd "
                        "--level 3 --json"), 0);
    CU_ASSERT_NOT_EQUAL(shell("cmp -s v3.hos v3plain.hos"), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(slurp("out.txt"), "\"root\": \""));
    CU_ASSERT_EQUAL(run("decode --base base.hidx -i v3.hos --mem o4.img "
                        "--disk o5.img --quiet"), 0);
    CU_ASSERT(files_equal("o4.img", "mem2.img"));
    CU_ASSERT(files_equal("o5.img", "disk2.img"));
    CU_ASSERT_EQUAL(exit_code(run("inspect v3.hos")), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(slurp("out.txt"), "format v3 (segmented)"));
    CU_ASSERT_PTR_NOT_NULL(strstr(slurp("out.txt"), "segment   0      offset"));
    CU_ASSERT_EQUAL(exit_code(run("inspect v3.hos --json")), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(slurp("out.txt"), "\"state\": \"ok\""));
    /* A byte changed in the last segment: damaged, named by inspect and
     * refused by decode. */
    CU_ASSERT_EQUAL(shell("cp v3.hos v3bad.hos && size=$(stat -c %%s v3bad.hos) && "
                          "printf 'Z' | dd of=v3bad.hos bs=1 seek=$((size - 10)) "
                          "conv=notrunc 2>/dev/null"), 0);
    CU_ASSERT_EQUAL(exit_code(run("inspect v3bad.hos")), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(slurp("out.txt"), "sha256-mismatch"));
    CU_ASSERT_NOT_EQUAL(run("decode --base base.hidx -i v3bad.hos --mem o4.img "
                            "--disk o5.img --quiet"), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(slurp("err.txt"), "HANDOFF_E_SEGMENT_DIGEST"));
    /* Order files: unknown region, index past it, garbage; --order alone. */
    CU_ASSERT_EQUAL(write_file("bad1.txt", "disk9 1\n", 8), 0);
    CU_ASSERT_EQUAL(write_file("bad2.txt", "# x\ndisk0 999999\n", 17), 0);
    CU_ASSERT_EQUAL(write_file("bad3.txt", "disk0 1x\n", 9), 0);
    CU_ASSERT_EQUAL(exit_code(run("encode --base base.hidx --mem mem2.img "
                                  "--disk disk2.img -o y.hos --segmented "
                                  "--order bad1.txt")), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(slurp("err.txt"), "bad1.txt:1: no region"));
    CU_ASSERT_EQUAL(exit_code(run("encode --base base.hidx --mem mem2.img "
                                  "--disk disk2.img -o y.hos --segmented "
                                  "--order bad2.txt")), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(slurp("err.txt"), "bad2.txt:2: chunk"));
    CU_ASSERT_EQUAL(exit_code(run("encode --base base.hidx --mem mem2.img "
                                  "--disk disk2.img -o y.hos --segmented "
                                  "--order bad3.txt")), 1);
    CU_ASSERT_EQUAL(write_file("bad4.txt", "disk0 1 12x\n", 12), 0);
    CU_ASSERT_EQUAL(exit_code(run("encode --base base.hidx --mem mem2.img "
                                  "--disk disk2.img -o y.hos --segmented "
                                  "--order bad4.txt")), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(slurp("err.txt"), "bad4.txt:1: time"));
    CU_ASSERT_EQUAL(exit_code(run("encode --base base.hidx --mem mem2.img "
                                  "--disk disk2.img -o y.hos --order order.txt")),
                    2);
}

/* A stream the file could not take whole is not left behind, looking
 * like one: the file system refuses past 1 KiB (RLIMIT_FSIZE, its signal
 * ignored so that write fails with EFBIG instead). Both stream formats. */
static void test_encode_leaves_no_partial_stream(void)
{
    static const char *const formats[] = { "", "--segmented" };
    size_t i;

    for (i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL(exit_code(shell("trap '' XFSZ; ulimit -f 1; %s encode "
                                        "--base base.hidx --mem mem2.img "
                                        "--disk disk2.img -o cut.hos %s "
                                        "--quiet 2>err.txt",
                                        tool, formats[i])), 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(slurp("err.txt"), "cannot write 'cut.hos'"));
        CU_ASSERT_NOT_EQUAL(shell("test -e cut.hos"), 0);
    }
    /* The same command, unlimited, writes the stream. */
    CU_ASSERT_EQUAL(run("encode --base base.hidx --mem mem2.img "
                        "--disk disk2.img -o cut.hos --segmented --quiet"), 0);
    CU_ASSERT_EQUAL(shell("test -s cut.hos"), 0);
}

int main(int argc, char **argv)
{
    CU_pSuite suite;

    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH-TO-qemu-handoff\n", argv[0]);
        return 2;
    }
    /* The commands run in a scratch directory. */
    tool = realpath(argv[1], NULL);
    if (tool == NULL) {
        perror(argv[1]);
        return 2;
    }
    if (CU_initialize_registry() != CUE_SUCCESS) {
        return CU_get_error();
    }
    suite = CU_add_suite("cli", init_suite, clean_suite);
    CU_add_test(suite, "round trip through files", test_cli_round_trip);
    CU_add_test(suite, "encode compression options",
                test_encode_compression_options);
    CU_add_test(suite, "inspect truncated streams",
                test_inspect_truncated_streams);
    CU_add_test(suite, "inspect names an unknown codec",
                test_inspect_unknown_codec);
    CU_add_test(suite, "decode refuses base files as output",
                test_decode_refuses_base_files_as_output);
    CU_add_test(suite, "base verify", test_base_verify);
    CU_add_test(suite, "segmented encode and inspect",
                test_segmented_encode_and_inspect);
    CU_add_test(suite, "encode leaves no partial stream",
                test_encode_leaves_no_partial_stream);
    return test_run_registry();
}
