/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The discard map through its C API. What matters most is soundness: a
 * chunk is reported only if every byte of it was discarded and not written
 * since, whatever the bound forced the map to forget. Randomized tests
 * compare the map with a byte-per-byte reference of the disk; chunk size 1
 * makes the map report its extents byte for byte.
 */
#include "trim_map.h"
#include "test_support.h"

#include <CUnit/Basic.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KiB 1024ULL
#define MiB (1024ULL * KiB)

static TrimMap *new_map(uint64_t disk, size_t max_extents)
{
    TrimMap *map = NULL;

    CU_ASSERT_EQUAL_FATAL(trim_map_new(disk, max_extents, &map), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(map);
    return map;
}

static TrimMapStats stats_of(const TrimMap *map)
{
    TrimMapStats st = { .struct_size = sizeof(st) };

    CU_ASSERT_EQUAL(trim_map_stats(map, &st), 0);
    return st;
}

typedef struct Run {
    uint64_t first;
    uint64_t count;
} Run;

/* The map's runs at @chunk_size, in order; returns how many (<= max). */
static size_t runs_of(const TrimMap *map, uint32_t chunk_size, Run *runs,
                      size_t max)
{
    uint64_t from = 0, first, count;
    size_t n = 0;
    int rc;

    while ((rc = trim_map_next_run(map, from, chunk_size, &first, &count))
           == 1) {
        if (n < max) {
            runs[n].first = first;
            runs[n].count = count;
        }
        n++;
        from = first + count;
    }
    CU_ASSERT_EQUAL(rc, 0);
    return n;
}

/* Asserts the map's runs at @chunk_size are exactly @n_expect pairs. */
static void expect_runs(const TrimMap *map, uint32_t chunk_size,
                        const uint64_t *expect, size_t n_expect)
{
    Run runs[64];
    size_t n = runs_of(map, chunk_size, runs, 64), i;

    CU_ASSERT_EQUAL(n, n_expect);
    for (i = 0; i < n && i < n_expect && i < 64; i++) {
        CU_ASSERT_EQUAL(runs[i].first, expect[2 * i]);
        CU_ASSERT_EQUAL(runs[i].count, expect[2 * i + 1]);
    }
}

/* Byte extents [start, end) written as (first, count) pairs. */
#define EXTENTS(...) ((const uint64_t[]){ __VA_ARGS__ })
#define N_PAIRS(...) (sizeof((const uint64_t[]){ __VA_ARGS__ }) / 16)
#define EXPECT_BYTES(map, ...) \
    expect_runs((map), 1, EXTENTS(__VA_ARGS__), N_PAIRS(__VA_ARGS__))
#define EXPECT_CHUNKS(map, cs, ...) \
    expect_runs((map), (cs), EXTENTS(__VA_ARGS__), N_PAIRS(__VA_ARGS__))
#define EXPECT_NO_RUN(map, cs) expect_runs((map), (cs), NULL, 0)

static void test_arguments(void)
{
    TrimMap *map = NULL;
    TrimMapStats st;
    uint64_t first, count;
    unsigned char big[sizeof(TrimMapStats) + 16];

    CU_ASSERT_EQUAL(trim_map_new(MiB, 0, NULL), -EINVAL);
    map = new_map(MiB, 0);
    CU_ASSERT_EQUAL(stats_of(map).max_extents, TRIM_MAP_DEFAULT_MAX_EXTENTS);
    CU_ASSERT_EQUAL(trim_map_next_run(NULL, 0, 4096, &first, &count),
                    -EINVAL);
    CU_ASSERT_EQUAL(trim_map_next_run(map, 0, 0, &first, &count), -EINVAL);
    CU_ASSERT_EQUAL(trim_map_next_run(map, 0, 4096, NULL, &count), -EINVAL);
    CU_ASSERT_EQUAL(trim_map_next_run(map, 0, 4096, &first, NULL), -EINVAL);
    CU_ASSERT_EQUAL(trim_map_next_run(map, UINT64_MAX, 4096, &first, &count),
                    0);
    /* Too small a struct_size: refused, nothing written. */
    memset(&st, 0xab, sizeof(st));
    st.struct_size = TRIM_MAP_STATS_SIZE_V1 - 8;
    CU_ASSERT_EQUAL(trim_map_stats(map, &st), -EINVAL);
    CU_ASSERT_EQUAL(st.discards, 0xababababababababULL);
    CU_ASSERT_EQUAL(trim_map_stats(NULL, &st), -EINVAL);
    CU_ASSERT_EQUAL(trim_map_stats(map, NULL), -EINVAL);
    /* A caller's larger struct: the tail is zeroed, struct_size kept. */
    trim_map_discard(map, 0, 4096);
    memset(big, 0xab, sizeof(big));
    st.struct_size = sizeof(big);
    memcpy(big, &st.struct_size, sizeof(st.struct_size));
    CU_ASSERT_EQUAL(trim_map_stats(map, (TrimMapStats *)big), 0);
    memcpy(&st, big, sizeof(st));
    CU_ASSERT_EQUAL(st.struct_size, sizeof(big));
    CU_ASSERT_EQUAL(st.discards, 1);
    CU_ASSERT_EQUAL(st.covered_bytes, 4096);
    for (size_t i = sizeof(st); i < sizeof(big); i++) {
        CU_ASSERT_EQUAL(big[i], 0);
    }
    /* NULL maps are ignored by the recording calls. */
    trim_map_discard(NULL, 0, 1);
    trim_map_write(NULL, 0, 1);
    trim_map_clear(NULL);
    trim_map_free(NULL);
    trim_map_free(map);
}

static void test_coalescing(void)
{
    TrimMap *map = new_map(MiB, 0);

    trim_map_discard(map, 0, 100);
    trim_map_discard(map, 50, 100);           /* overlapping */
    EXPECT_BYTES(map, 0, 150);
    trim_map_discard(map, 150, 50);           /* adjacent after */
    EXPECT_BYTES(map, 0, 200);
    trim_map_discard(map, 10, 20);            /* contained */
    EXPECT_BYTES(map, 0, 200);
    trim_map_discard(map, 300, 100);
    trim_map_discard(map, 250, 50);           /* adjacent before */
    EXPECT_BYTES(map, 0, 200, 250, 150);
    trim_map_discard(map, 200, 50);           /* fills the gap exactly */
    EXPECT_BYTES(map, 0, 400);
    trim_map_discard(map, 1000, 100);
    trim_map_discard(map, 1200, 100);
    trim_map_discard(map, 1400, 100);
    trim_map_discard(map, 1050, 400);         /* spans three */
    EXPECT_BYTES(map, 0, 400, 1000, 500);
    trim_map_discard(map, 900, 700);          /* contains one */
    EXPECT_BYTES(map, 0, 400, 900, 700);
    trim_map_discard(map, 400, 500);          /* touches both sides */
    EXPECT_BYTES(map, 0, 1600);
    CU_ASSERT_EQUAL(stats_of(map).extents, 1);
    CU_ASSERT_EQUAL(stats_of(map).covered_bytes, 1600);
    CU_ASSERT_EQUAL(stats_of(map).discards, 13);
    CU_ASSERT_EQUAL(stats_of(map).discard_bytes,
                    100 + 100 + 50 + 20 + 100 + 50 + 50 + 300 + 400 + 700 +
                    500);
    trim_map_free(map);
}

static void test_write_splits(void)
{
    TrimMap *map = new_map(MiB, 0);

    trim_map_discard(map, 0, 4 * 4096);
    trim_map_write(map, 4096 + 100, 4096 - 100);  /* inside: splits */
    EXPECT_BYTES(map, 0, 4196, 8192, 8192);
    EXPECT_CHUNKS(map, 4096, 0, 1, 2, 2);
    trim_map_write(map, 0, 10);                   /* trims the front */
    EXPECT_BYTES(map, 10, 4186, 8192, 8192);
    EXPECT_CHUNKS(map, 4096, 2, 2);
    trim_map_write(map, 16384 - 1, 1);            /* trims the back */
    EXPECT_BYTES(map, 10, 4186, 8192, 8191);
    EXPECT_CHUNKS(map, 4096, 2, 1);
    trim_map_write(map, 4000, 5000);              /* across two */
    EXPECT_BYTES(map, 10, 3990, 9000, 7383);
    trim_map_write(map, 20000, 100);              /* nothing there */
    EXPECT_BYTES(map, 10, 3990, 9000, 7383);
    CU_ASSERT_EQUAL(stats_of(map).extents, 2);
    trim_map_write(map, 0, MiB);                  /* everything */
    EXPECT_NO_RUN(map, 1);
    CU_ASSERT_EQUAL(stats_of(map).extents, 0);
    CU_ASSERT_EQUAL(stats_of(map).covered_bytes, 0);
    CU_ASSERT_EQUAL(stats_of(map).dropped_extents, 0);
    trim_map_free(map);
}

static void test_whole_chunks_only(void)
{
    TrimMap *map = new_map(MiB, 0);
    uint64_t first = 99, count = 99;

    trim_map_discard(map, 2048, 4096);
    EXPECT_NO_RUN(map, 4096);
    CU_ASSERT_EQUAL(trim_map_next_run(map, 0, 4096, &first, &count), 0);
    CU_ASSERT_EQUAL(first, 99);
    trim_map_clear(map);
    trim_map_discard(map, 2048, 8192);
    EXPECT_CHUNKS(map, 4096, 1, 1);
    trim_map_clear(map);
    CU_ASSERT_EQUAL(stats_of(map).extents, 0);
    CU_ASSERT_EQUAL(stats_of(map).dropped_extents, 0);
    /* A run is reported from the chunk asked for, and runs are maximal. */
    trim_map_discard(map, 0, 10 * 4096);
    trim_map_discard(map, 12 * 4096 - 1, 3 * 4096 + 2);
    EXPECT_CHUNKS(map, 4096, 0, 10, 12, 3);
    CU_ASSERT_EQUAL(trim_map_next_run(map, 3, 4096, &first, &count), 1);
    CU_ASSERT_EQUAL(first, 3);
    CU_ASSERT_EQUAL(count, 7);
    CU_ASSERT_EQUAL(trim_map_next_run(map, 10, 4096, &first, &count), 1);
    CU_ASSERT_EQUAL(first, 12);
    CU_ASSERT_EQUAL(trim_map_next_run(map, 15, 4096, &first, &count), 0);
    /* Other chunk sizes, a power of two or not. */
    EXPECT_CHUNKS(map, 8192, 0, 5, 6, 1);
    EXPECT_CHUNKS(map, 3000, 0, 13, 17, 3);
    EXPECT_NO_RUN(map, 65536);
    trim_map_free(map);
}

static void test_clamping(void)
{
    TrimMap *map = new_map(10000, 0);

    trim_map_discard(map, 8000, UINT64_MAX);   /* would wrap */
    EXPECT_BYTES(map, 8000, 2000);
    /* Chunk 2 would end beyond the disk: never reported. */
    EXPECT_NO_RUN(map, 4096);
    trim_map_discard(map, 10000, 1);           /* beyond the end */
    trim_map_discard(map, UINT64_MAX, 1);
    trim_map_discard(map, 0, 0);               /* empty */
    CU_ASSERT_EQUAL(stats_of(map).discards, 1);
    CU_ASSERT_EQUAL(stats_of(map).discard_bytes, 2000);
    trim_map_discard(map, 0, 10000);
    EXPECT_BYTES(map, 0, 10000);
    EXPECT_CHUNKS(map, 4096, 0, 2);
    EXPECT_CHUNKS(map, 1000, 0, 10);
    trim_map_write(map, 9999, UINT64_MAX);     /* would wrap */
    EXPECT_BYTES(map, 0, 9999);
    trim_map_free(map);

    map = new_map(16384, 0);
    trim_map_discard(map, 12288, 1ULL << 40);
    EXPECT_CHUNKS(map, 4096, 3, 1);
    trim_map_free(map);

    map = new_map(0, 0);                       /* no medium */
    trim_map_discard(map, 0, 4096);
    EXPECT_NO_RUN(map, 1);
    CU_ASSERT_EQUAL(stats_of(map).discards, 0);
    trim_map_free(map);
}

static void test_bound_keeps_the_largest(void)
{
    static const uint64_t chunks[10] = { 5, 9, 2, 7, 1, 10, 3, 8, 6, 4 };
    TrimMap *map = new_map(MiB, 4);
    TrimMapStats st;
    int i;

    for (i = 0; i < 10; i++) {
        trim_map_discard(map, i * 64 * KiB, chunks[i] * 4096);
    }
    st = stats_of(map);
    CU_ASSERT_EQUAL(st.extents, 4);
    CU_ASSERT_EQUAL(st.max_extents, 4);
    CU_ASSERT_EQUAL(st.discards, 10);
    CU_ASSERT_EQUAL(st.discard_bytes, 55 * 4096);
    CU_ASSERT_EQUAL(st.covered_bytes, (10 + 9 + 8 + 7) * 4096);
    CU_ASSERT_EQUAL(st.dropped_extents, 6);
    CU_ASSERT_EQUAL(st.dropped_bytes, (1 + 2 + 3 + 4 + 5 + 6) * 4096);
    EXPECT_BYTES(map, 1 * 64 * KiB, 9 * 4096, 3 * 64 * KiB, 7 * 4096,
                 5 * 64 * KiB, 10 * 4096, 7 * 64 * KiB, 8 * 4096);
    /* A write splitting an extent at the bound drops the smaller piece. */
    trim_map_write(map, 5 * 64 * KiB + 4 * 4096, 4096);
    st = stats_of(map);
    CU_ASSERT_EQUAL(st.extents, 4);
    CU_ASSERT_EQUAL(st.dropped_extents, 7);
    CU_ASSERT_EQUAL(st.dropped_bytes, (21 + 4) * 4096);
    EXPECT_BYTES(map, 1 * 64 * KiB, 9 * 4096, 3 * 64 * KiB, 7 * 4096,
                 5 * 64 * KiB + 5 * 4096, 5 * 4096, 7 * 64 * KiB, 8 * 4096);
    /* Merging never needs room, even when full. */
    trim_map_discard(map, 0, 8 * 64 * KiB);
    EXPECT_BYTES(map, 0, 8 * 64 * KiB);
    CU_ASSERT_EQUAL(stats_of(map).dropped_extents, 7);
    trim_map_free(map);
}

/* ------------------------------------------------------------------------
 * Randomized tests against a reference: one byte per disk byte, 1 when
 * discarded and not written since.
 * ------------------------------------------------------------------------ */

static uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/*
 * A request within [base, base + span): sector-aligned or not, from a few
 * bytes to many chunks, sometimes empty or running far past the end, and
 * often starting or ending on the area's edges, where merging happens.
 */
static void random_request(uint64_t *rng, uint64_t base, uint64_t span,
                           uint64_t *offset, uint64_t *bytes)
{
    uint64_t r = next_random(rng), len;

    r %= 100;
    if (r < 3) {
        len = 0;
    } else if (r < 4) {
        len = UINT64_MAX - (next_random(rng) >> 40);
    } else if (r < 40) {
        len = 1 + next_random(rng) % 600;
    } else if (r < 85) {
        len = 512 * (1 + next_random(rng) % 32);
    } else {
        len = 4096 * (1 + next_random(rng) % 16);
    }
    r = next_random(rng);
    switch (r % 8) {
    case 0:  *offset = 0; break;
    case 1:  *offset = span - (len < span ? len : span); break;
    case 2:
    case 3:  *offset = (r >> 8) % span; break;
    default: *offset = ((r >> 8) % span) & ~511ULL; break;
    }
    *offset += base;
    *bytes = len;
}

static void ref_apply(uint8_t *ref, uint64_t disk, uint64_t offset,
                      uint64_t bytes, uint8_t value)
{
    if (bytes && offset < disk) {
        memset(ref + offset, value,
               bytes < disk - offset ? bytes : disk - offset);
    }
}

static int ref_chunk_full(const uint8_t *ref, uint64_t chunk, uint32_t cs)
{
    return memchr(ref + chunk * cs, 0, cs) == NULL;
}

/*
 * Walks the map's runs at @cs. Every reported chunk must be full in the
 * reference (soundness); with @exact, every full chunk must be reported.
 * Returns the number of runs, or -1 after a mismatch (printed).
 */
static long check_runs(const TrimMap *map, const uint8_t *ref, uint64_t disk,
                       uint32_t cs, int exact)
{
    uint64_t chunks = disk / cs, from = 0, first, count, c;
    long runs = 0;
    int rc;

    while ((rc = trim_map_next_run(map, from, cs, &first, &count)) == 1) {
        if (first < from || count == 0 || first + count > chunks) {
            printf("\nbad run %" PRIu64 "+%" PRIu64 " from %" PRIu64 "\n",
                   first, count, from);
            return -1;
        }
        for (c = exact ? from : first; c < first + count; c++) {
            if ((c >= first) != ref_chunk_full(ref, c, cs)) {
                printf("\nchunk %" PRIu64 " of %u bytes: map %d\n", c, cs,
                       c >= first);
                return -1;
            }
        }
        runs++;
        from = first + count;
    }
    for (c = from; exact && c < chunks; c++) {
        if (ref_chunk_full(ref, c, cs)) {
            printf("\nchunk %" PRIu64 " of %u bytes missing\n", c, cs);
            return -1;
        }
    }
    return rc == 0 ? runs : -1;
}

static uint64_t ref_count(const uint8_t *ref, uint64_t disk)
{
    uint64_t n = 0, i;

    for (i = 0; i < disk; i++) {
        n += ref[i];
    }
    return n;
}

/* The map equals the reference, byte for byte and chunk for chunk. */
static int check_exact(const TrimMap *map, const uint8_t *ref, uint64_t disk)
{
    static const uint32_t sizes[] = { 512, 3000, 4096, 65536 };
    TrimMapStats st = stats_of(map);
    long extents = check_runs(map, ref, disk, 1, 1);
    size_t i;

    if (extents < 0 || (uint64_t)extents != st.extents ||
        st.covered_bytes != ref_count(ref, disk) || st.dropped_extents) {
        printf("\nextents %ld/%" PRIu64 " covered %" PRIu64 "/%" PRIu64
               " dropped %" PRIu64 "\n", extents, st.extents,
               st.covered_bytes, ref_count(ref, disk), st.dropped_extents);
        return 0;
    }
    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        if (check_runs(map, ref, disk, sizes[i], 1) < 0) {
            return 0;
        }
    }
    return 1;
}

/* The map reports only what the reference holds, within its bound. */
static int check_sound(const TrimMap *map, const uint8_t *ref, uint64_t disk,
                       size_t max_extents)
{
    TrimMapStats st = stats_of(map);
    long extents = check_runs(map, ref, disk, 1, 0);

    return extents >= 0 && (uint64_t)extents == st.extents &&
           st.extents <= max_extents &&
           st.covered_bytes <= ref_count(ref, disk) &&
           check_runs(map, ref, disk, 4096, 0) >= 0;
}

/*
 * @ops random discards and writes (two discards for each write, so that
 * extents accumulate), checked every @every operations and at the end;
 * the bound must have bitten when there is one.
 */
static void run_random(uint64_t disk, size_t max_extents, int ops, int every,
                       uint64_t seed)
{
    uint8_t *ref = calloc(disk, 1);
    TrimMap *map = new_map(disk, max_extents);
    uint64_t rng = seed, offset, bytes, peak = 0;
    int i, ok = 1;

    for (i = 1; i <= ops && ok; i++) {
        int discard = next_random(&rng) % 3 != 0;

        random_request(&rng, 0, disk, &offset, &bytes);
        if (discard) {
            trim_map_discard(map, offset, bytes);
        } else {
            trim_map_write(map, offset, bytes);
        }
        ref_apply(ref, disk, offset, bytes, discard);
        if (i % every == 0 || i == ops) {
            uint64_t extents = stats_of(map).extents;

            peak = extents > peak ? extents : peak;
            ok = max_extents ? check_sound(map, ref, disk, max_extents)
                             : check_exact(map, ref, disk);
            if (!ok) {
                printf("seed %" PRIu64 ", operation %d\n", seed, i);
            }
        }
    }
    CU_ASSERT(ok);
    printf("[seed %" PRIu64 ": peak %" PRIu64 " extents, %" PRIu64
           " dropped] ", seed, peak, stats_of(map).dropped_extents);
    CU_ASSERT(peak > 10 || max_extents < 10);   /* not trivially small */
    CU_ASSERT((stats_of(map).dropped_extents > 0) == (max_extents > 0));
    trim_map_free(map);
    free(ref);
}

static void test_random_matches_reference(void)
{
    run_random(1 * MiB, 0, 4000, 16, 1);
    run_random(1 * MiB, 0, 4000, 16, 2);
    run_random(64 * KiB, 0, 3000, 1, 3);  /* small disk, crowded, every op */
}

static void test_random_with_eviction_is_sound(void)
{
    run_random(1 * MiB, 8, 4000, 4, 4);
    run_random(1 * MiB, 32, 4000, 4, 5);
    run_random(64 * KiB, 1, 2000, 1, 6);
}

/* ------------------------------------------------------------------------
 * Concurrency: four writers, each recording requests in its own quarter
 * of the disk (so its quarter of the reference is its own), and a reader
 * walking the map meanwhile, as the send loop does while iothreads record.
 * Extents still merge across the quarters' borders, inside the map.
 * ------------------------------------------------------------------------ */

#define WRITERS 4
#define QUARTER (1 * MiB)
#define WRITER_OPS 20000

typedef struct Writer {
    pthread_t thread;
    TrimMap *map;
    uint8_t *ref;   /* the whole disk's reference */
    uint64_t base;
    uint64_t seed;
} Writer;

static void *writer_main(void *opaque)
{
    Writer *w = opaque;
    uint64_t rng = w->seed, offset, bytes;
    int i;

    for (i = 0; i < WRITER_OPS; i++) {
        int discard = next_random(&rng) % 3 != 0;

        random_request(&rng, w->base, QUARTER, &offset, &bytes);
        if (bytes > w->base + QUARTER - offset) {
            bytes = w->base + QUARTER - offset;  /* stay in the quarter */
        }
        if (discard) {
            trim_map_discard(w->map, offset, bytes);
        } else {
            trim_map_write(w->map, offset, bytes);
        }
        ref_apply(w->ref, WRITERS * QUARTER, offset, bytes, discard);
    }
    return NULL;
}

typedef struct Reader {
    pthread_t thread;
    const TrimMap *map;
    atomic_int stop;
    int bad;        /* runs out of order or beyond the disk */
    long walks;
} Reader;

static void *reader_main(void *opaque)
{
    Reader *r = opaque;
    uint64_t chunks = WRITERS * QUARTER / 4096;

    while (!atomic_load(&r->stop)) {
        uint64_t from = 0, first, count;
        TrimMapStats st = { .struct_size = sizeof(st) };

        while (trim_map_next_run(r->map, from, 4096, &first, &count) == 1) {
            r->bad |= first < from || count == 0 || first + count > chunks;
            from = first + count;
        }
        r->bad |= trim_map_stats(r->map, &st) != 0 ||
                  st.covered_bytes > WRITERS * QUARTER;
        r->walks++;
    }
    return NULL;
}

static void test_threads(void)
{
    uint8_t *ref = calloc(WRITERS * QUARTER, 1);
    TrimMap *map = new_map(WRITERS * QUARTER, 0);
    Writer w[WRITERS];
    Reader reader = { .map = map };
    int i;

    atomic_init(&reader.stop, 0);
    CU_ASSERT_EQUAL_FATAL(pthread_create(&reader.thread, NULL, reader_main,
                                         &reader), 0);
    for (i = 0; i < WRITERS; i++) {
        w[i] = (Writer){ .map = map, .ref = ref, .base = i * QUARTER,
                         .seed = 100 + i };
        CU_ASSERT_EQUAL_FATAL(pthread_create(&w[i].thread, NULL, writer_main,
                                             &w[i]), 0);
    }
    for (i = 0; i < WRITERS; i++) {
        pthread_join(w[i].thread, NULL);
    }
    atomic_store(&reader.stop, 1);
    pthread_join(reader.thread, NULL);
    CU_ASSERT_EQUAL(reader.bad, 0);
    CU_ASSERT(reader.walks > 0);
    CU_ASSERT(check_exact(map, ref, WRITERS * QUARTER));
    CU_ASSERT(stats_of(map).discards > WRITERS * WRITER_OPS / 2);
    trim_map_free(map);
    free(ref);
}

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS) {
        return CU_get_error();
    }
    suite = CU_add_suite("trim_map", NULL, NULL);
    CU_add_test(suite, "arguments and stats sizes", test_arguments);
    CU_add_test(suite, "overlapping, adjacent, contained ranges merge",
                test_coalescing);
    CU_add_test(suite, "writes split and trim extents", test_write_splits);
    CU_add_test(suite, "whole chunks only", test_whole_chunks_only);
    CU_add_test(suite, "clamped to the disk", test_clamping);
    CU_add_test(suite, "bound keeps the largest extents",
                test_bound_keeps_the_largest);
    CU_add_test(suite, "random requests match a reference",
                test_random_matches_reference);
    CU_add_test(suite, "random requests with eviction stay sound",
                test_random_with_eviction_is_sound);
    CU_add_test(suite, "concurrent writers and a reader", test_threads);
    return test_run_registry();
}
