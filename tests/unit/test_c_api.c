/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The C API as QEMU sees it: compiled as C, linked against the C++ engine.
 */
#include "handoff.h"

#include <CUnit/Basic.h>

#include "test_support.h"
#include <lzma.h>
#include <stdio.h>
#include <string.h>
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

    return test_run_registry();
}
