/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Worker threads that cannot start are an error the caller gets back, not
 * the end of the process: QEMU must survive an encoder or base it could
 * not create. Thread creation is made to fail for real, in a forked child
 * whose address space limit leaves no room for another thread stack.
 */
#define _GNU_SOURCE
#include "handoff.h"
#include "test_support.h"

#include <CUnit/Basic.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

#define N 64
#define HASHED_CHUNKS 4096 /* enough for base create to hash in parallel */

static TestVm small_vm, big_vm;
static HandoffBase *small_base;

enum { CHILD_REFUSED = 0, CHILD_CREATED = 1, CHILD_OTHER_ERROR = 2 };

static int init_suite(void)
{
    uint64_t i;

    test_make_base_vm(&small_vm, N, 11);
    small_base = test_base_from_vm(&small_vm);
    /* Distinct chunks without the cost of test_make_base_vm. */
    test_vm_alloc(&big_vm, HASHED_CHUNKS);
    for (i = 0; i < HASHED_CHUNKS; i++) {
        memcpy(big_vm.mem + i * CHUNK, &i, sizeof(i));
        big_vm.disk[i * CHUNK] = 1;
        memcpy(big_vm.disk + i * CHUNK + 8, &i, sizeof(i));
    }
    return small_base == NULL;
}

static int clean_suite(void)
{
    handoff_base_free(small_base);
    test_vm_free(&small_vm);
    test_vm_free(&big_vm);
    return 0;
}

static size_t default_stack_size(void)
{
    pthread_attr_t attr;
    size_t size = 8u << 20;

    if (pthread_getattr_default_np(&attr) == 0) {
        pthread_attr_getstacksize(&attr, &size);
        pthread_attr_destroy(&attr);
    }
    return size;
}

static size_t address_space_in_use(void)
{
    unsigned long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f) {
        if (fscanf(f, "%lu", &pages) != 1) {
            pages = 0;
        }
        fclose(f);
    }
    return pages * (size_t)sysconf(_SC_PAGESIZE);
}

static int classify(int rc)
{
    if (rc == 0) {
        return CHILD_CREATED;
    }
    if (rc == HANDOFF_E_NO_MEMORY &&
        strstr(handoff_last_error_message(), "cannot start worker thread")) {
        return CHILD_REFUSED;
    }
    fprintf(stderr, "    child: %s\n", handoff_last_error_message());
    return CHILD_OTHER_ERROR;
}

static int child_encoder(void)
{
    HandoffEncoderConfig cfg = { .struct_size = sizeof(HandoffEncoderConfig) };
    HandoffEncoder *enc = NULL;
    int rc;

    handoff_encoder_config_default(&cfg);
    cfg.threads = 8;
    rc = handoff_encoder_create(small_base, &cfg, &enc);
    handoff_encoder_free(enc);
    return classify(rc);
}

static int child_base(void)
{
    HandoffRegionSpec spec[2] = {
        { "pc.ram", HANDOFF_REGION_MEMORY, NULL, big_vm.mem,
          HASHED_CHUNKS * CHUNK },
        { "disk0", HANDOFF_REGION_DISK, NULL, big_vm.disk,
          HASHED_CHUNKS * CHUNK },
    };
    HandoffBase *b = NULL;
    int rc = handoff_base_create(spec, 2, NULL, &b);

    handoff_base_free(b);
    return classify(rc);
}

/*
 * Runs @fn in a child limited to its current address space plus
 * @headroom bytes, so that no more than @headroom / stack size thread
 * stacks can be mapped. Returns the child's exit code, or 100 + signal when it
 * was killed (std::terminate is SIGABRT).
 */
static int run_limited(int (*fn)(void), size_t headroom)
{
    pid_t pid;
    int status;

    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        struct rlimit lim;
        size_t used = address_space_in_use();

        lim.rlim_cur = lim.rlim_max = used + headroom;
        if (used == 0 || setrlimit(RLIMIT_AS, &lim) != 0) {
            _exit(99);
        }
        _exit(fn());
    }
    if (pid < 0 || waitpid(pid, &status, 0) != pid) {
        return -1;
    }
    if (WIFSIGNALED(status)) {
        return 100 + WTERMSIG(status);
    }
    return WEXITSTATUS(status);
}

/*
 * Headroom for no thread stack at all, then for one and two stacks: the
 * first case fails on the first thread, the others after some workers
 * started, which must then be stopped and joined.
 */
static void check_thread_failure(int (*fn)(void), const char *what,
                                 int may_succeed)
{
    size_t stack = default_stack_size();
    int refused = 0;
    int k;

    for (k = 0; k < 3; k++) {
        size_t headroom = stack / 2 + (size_t)k * (stack + stack / 8);
        int code = run_limited(fn, headroom);

        printf("\n    %s, room for %d thread stack(s): %s", what, k,
               code == CHILD_REFUSED   ? "refused"
               : code == CHILD_CREATED ? "created"
               : code >= 100           ? strsignal(code - 100)
                                       : "other error");
        CU_ASSERT(code == CHILD_REFUSED ||
                  (may_succeed && code == CHILD_CREATED));
        refused += code == CHILD_REFUSED;
    }
    CU_ASSERT(refused > 0);
}

static void test_encoder_survives_thread_start_failure(void)
{
#ifdef UNDER_ASAN
    printf("\n    skipped: AddressSanitizer needs more address space");
    return;
#endif
    check_thread_failure(child_encoder, "encoder, 8 workers", 0);
}

static void test_base_create_survives_thread_start_failure(void)
{
#ifdef UNDER_ASAN
    printf("\n    skipped: AddressSanitizer needs more address space");
    return;
#endif
    if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
        printf("\n    skipped: one core, base hashing starts no thread");
        return;
    }
    /* With few cores, one stack of room is enough: success is fine. */
    check_thread_failure(child_base, "base create", 1);
}

static void test_thread_count_is_capped(void)
{
    HandoffEncoderConfig cfg = { .struct_size = sizeof(HandoffEncoderConfig) };
    HandoffEncoder *enc = NULL;

    handoff_encoder_config_default(&cfg);
    cfg.threads = HANDOFF_MAX_THREADS + 1;
    CU_ASSERT_EQUAL(handoff_encoder_create(small_base, &cfg, &enc),
                    HANDOFF_E_INVALID_ARGUMENT);
    CU_ASSERT_PTR_NULL(enc);
    CU_ASSERT_PTR_NOT_NULL(strstr(handoff_last_error_message(), "threads"));
    handoff_encoder_free(enc);
    enc = NULL;
    cfg.threads = 1000000;
    CU_ASSERT_EQUAL(handoff_encoder_create(small_base, &cfg, &enc),
                    HANDOFF_E_INVALID_ARGUMENT);
    handoff_encoder_free(enc);
    enc = NULL;
    cfg.threads = HANDOFF_MAX_THREADS;
    CU_ASSERT_EQUAL(handoff_encoder_create(small_base, &cfg, &enc), 0);
    handoff_encoder_free(enc);
}

int main(void)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS) {
        return CU_get_error();
    }
    suite = CU_add_suite("threads", init_suite, clean_suite);
    CU_add_test(suite, "encoder survives thread start failure",
                test_encoder_survives_thread_start_failure);
    CU_add_test(suite, "base create survives thread start failure",
                test_base_create_survives_thread_start_failure);
    CU_add_test(suite, "thread count is capped", test_thread_count_is_capped);
    return test_run_registry();
}
