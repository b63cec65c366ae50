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
#include <unistd.h>

#define N 512

static const char *tool;
static char dir[] = "/tmp/handoff-cli-XXXXXX";

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
    strncat(cmd, " >/dev/null 2>&1", sizeof(cmd) - strlen(cmd) - 1);
    return system(cmd);
}

static void write_file(const char *name, const void *data, size_t len)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(fwrite(data, 1, len, f), len);
    fclose(f);
}

static int files_equal(const char *a, const char *b)
{
    char cmd[1024];

    snprintf(cmd, sizeof(cmd), "cd %s && cmp -s %s %s", dir, a, b);
    return system(cmd) == 0;
}

static void test_cli_round_trip(void)
{
    TestVm base, mod;
    uint64_t i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    test_make_base_vm(&base, N, 5);
    test_vm_copy(&mod, &base);
    for (i = 0; i < N; i += 3) {
        fill_text(mod.mem + i * CHUNK, 100000 + i);
    }
    for (i = 0; i < N; i += 10) {
        memset(mod.disk + i * CHUNK, 0, CHUNK);
        memcpy(mod.mem + (i + 1) * CHUNK, base.disk + i * CHUNK, CHUNK);
    }
    write_file("mem.img", base.mem, N * CHUNK);
    write_file("disk.img", base.disk, N * CHUNK);
    write_file("mem2.img", mod.mem, N * CHUNK);
    write_file("disk2.img", mod.disk, N * CHUNK);

    CU_ASSERT_EQUAL(run("base create --mem mem.img --disk disk.img -o base.hidx"), 0);
    CU_ASSERT_EQUAL(run("base info base.hidx --json"), 0);
    CU_ASSERT_EQUAL(run("encode --base base.hidx --mem mem2.img --disk disk2.img "
                        "-o s.hos --threads 2 --json"), 0);
    CU_ASSERT_EQUAL(run("inspect s.hos --json"), 0);
    CU_ASSERT_EQUAL(run("decode --base base.hidx -i s.hos --mem out-mem.img "
                        "--disk out-disk.img --json"), 0);
    CU_ASSERT(files_equal("out-mem.img", "mem2.img"));
    CU_ASSERT(files_equal("out-disk.img", "disk2.img"));

    /* Fixed mode with delta, then a damaged copy that must be refused. */
    CU_ASSERT_EQUAL(run("encode --base base.hidx --mem mem2.img --disk disk2.img "
                        "-o x.hos --codec zstd --level 3 --delta prefix --quiet"), 0);
    CU_ASSERT_EQUAL(run("decode --base base.hidx -i x.hos --mem o2.img "
                        "--disk o3.img --quiet"), 0);
    CU_ASSERT(files_equal("o2.img", "mem2.img"));
    CU_ASSERT_EQUAL(system("true"), 0);
    {
        char cmd[512];
        snprintf(cmd, sizeof(cmd),
                 "cd %s && head -c 5000 x.hos > t.hos && "
                 "printf 'Z' | dd of=x.hos bs=1 seek=3000 conv=notrunc "
                 "2>/dev/null", dir);
        CU_ASSERT_EQUAL(system(cmd), 0);
    }
    CU_ASSERT_NOT_EQUAL(run("decode --base base.hidx -i x.hos --mem o2.img "
                            "--disk o3.img --quiet"), 0);
    CU_ASSERT_NOT_EQUAL(run("decode --base base.hidx -i t.hos --mem o2.img "
                            "--disk o3.img --quiet"), 0);
    CU_ASSERT_NOT_EQUAL(run("inspect t.hos"), 0);
    /* Missing region image and unknown codec are usage errors. */
    CU_ASSERT_NOT_EQUAL(run("encode --base base.hidx --mem mem2.img -o y.hos"), 0);
    CU_ASSERT_NOT_EQUAL(run("encode --base base.hidx --mem mem2.img --disk "
                            "disk2.img -o y.hos --codec brotli"), 0);
    {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        CU_ASSERT_EQUAL(system(cmd), 0);
    }
    test_vm_free(&base);
    test_vm_free(&mod);
}

int main(int argc, char **argv)
{
    CU_pSuite suite;
    unsigned failed;

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
    suite = CU_add_suite("cli", NULL, NULL);
    CU_add_test(suite, "round trip through files", test_cli_round_trip);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
