/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libhandoff — the VM handoff engine of qemu-handoff, behind a plain C API.
 *
 * This header is the whole boundary between QEMU (C) and the engine (C++).
 * It uses only POD types so that QEMU can include it from any C file, and
 * every function is noexcept on the C++ side: no exception ever unwinds into
 * QEMU's C frames or coroutine stacks.
 *
 * Versioning follows zstd.h: HANDOFF_VERSION_NUMBER is
 * MAJOR * 10000 + MINOR * 100 + RELEASE of the header a caller was compiled
 * against; handoff_version_number() is that of the library it runs with.
 * Within one MAJOR, functions and struct fields are only ever added.
 */
#ifndef HANDOFF_H
#define HANDOFF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
/* C++ callers and the engine itself see the no-throw guarantee. */
#define HANDOFF_NOEXCEPT noexcept
extern "C" {
#else
#define HANDOFF_NOEXCEPT
#endif

#define HANDOFF_VERSION_MAJOR   0
#define HANDOFF_VERSION_MINOR   1
#define HANDOFF_VERSION_RELEASE 0
#define HANDOFF_VERSION_NUMBER (HANDOFF_VERSION_MAJOR * 10000 + \
                                HANDOFF_VERSION_MINOR * 100 + \
                                HANDOFF_VERSION_RELEASE)

/* Version of the linked library, e.g. 100 for 0.1.0. */
unsigned handoff_version_number(void) HANDOFF_NOEXCEPT;

/* Version of the linked library as text, e.g. "0.1.0". Static storage. */
const char *handoff_version_string(void) HANDOFF_NOEXCEPT;

/*
 * Codecs the engine can compress frames with. The numeric values are part
 * of the stream format and never change meaning.
 */
typedef enum HandoffCodec {
    HANDOFF_CODEC_NONE = 0, /* stored */
    HANDOFF_CODEC_ZSTD = 1,
    HANDOFF_CODEC_LZMA = 2, /* liblzma, xz/lzma2 */
    HANDOFF_CODEC_ZLIB = 3,
} HandoffCodec;

/* Description of one codec as linked into this build. */
typedef struct HandoffCodecInfo {
    HandoffCodec codec;
    const char *name;            /* "zstd", "lzma", "zlib", "none" */
    const char *library;         /* "libzstd", "liblzma", "zlib", "" */
    const char *library_version; /* run-time version of that library */
    int min_level;               /* levels the engine accepts */
    int max_level;
} HandoffCodecInfo;

/* Number of codecs in this build; indexes 0..count-1 are valid below. */
size_t handoff_codec_count(void) HANDOFF_NOEXCEPT;

/*
 * Fills *info for codec number @index (0-based, in HandoffCodec order).
 * Returns 0, or -1 when @index is out of range or @info is NULL.
 * Strings point to static storage.
 */
int handoff_codec_info(size_t index, HandoffCodecInfo *info) HANDOFF_NOEXCEPT;

/* Chunk hash used for dedup, and its library's run-time version. */
const char *handoff_hash_name(void) HANDOFF_NOEXCEPT;    /* "xxh3-128" */
const char *handoff_hash_version(void) HANDOFF_NOEXCEPT; /* e.g. "0.8.1" */

#ifdef __cplusplus
}
#endif

#endif /* HANDOFF_H */
