/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * libFuzzer target: the destination's half of the "handoff" savevm section
 * (migration/handoff-load.c) without a VM. The input is what follows the
 * section header in the migration stream: section parts of blocks (EOS,
 * DATA with a be32 length, END), separated by a byte 0xff standing for
 * QEMU's other sections in between. The real handoff_load_state() reads
 * them; its real writer callbacks apply the engine's records to a small
 * fake RAM (the regions of a base made in memory at start-up, two of
 * them: RAM and a "disk" that is RAM here too); handoff_load_verify()
 * then says whether the VM could run.
 *
 * Checked besides crashes and sanitizer reports: no write lands outside
 * a region (guard bytes around each stay intact), and handoff-load.c
 * accepts exactly the inputs that are whole sections by an independent
 * walk of the framing (reference_load), leaving the same RAM.
 *
 * The file layer is a stand-in: a QEMUFile reading the input, with
 * QEMU's semantics at its end (reads return zeros and set -EIO). What
 * handoff-load.c needs from a VM (block layer, RAM list, return path) is
 * stubbed below and never reached: the harness sets up the load state
 * itself instead of handoff_load_setup(). Built by scripts/fuzz.sh
 * (target "load") against the configured QEMU tree.
 */
#include "../overlay/migration/handoff-load.c"

#define REGIONS 2
#define REGION_BYTES (16 * HANDOFF_CHUNK_SIZE)
#define GUARD 64

/* --- the stand-in file ---------------------------------------------------- */

struct QEMUFile {
    const uint8_t *data;
    size_t size, pos;
    int error;
};

int qemu_file_get_error(QEMUFile *f)
{
    return f->error;
}

int qemu_get_byte(QEMUFile *f)
{
    if (f->pos >= f->size) {
        f->error = -EIO;
        return 0;
    }
    return f->data[f->pos++];
}

unsigned int qemu_get_be32(QEMUFile *f)
{
    unsigned int v = 0;
    int i;

    for (i = 0; i < 4; i++) {
        v = v << 8 | qemu_get_byte(f);
    }
    return v;
}

size_t qemu_get_buffer(QEMUFile *f, uint8_t *buf, size_t size)
{
    size_t n = MIN(size, f->size - f->pos);

    memcpy(buf, f->data + f->pos, n);
    f->pos += n;
    if (n < size) {
        f->error = -EIO;
    }
    return n;
}

/* --- what a VM would provide: never reached ----------------------------- */

static MigrationIncomingState incoming = {
    .state = MIGRATION_STATUS_ACTIVE,
};

MigrationIncomingState *migration_incoming_get_current(void)
{
    return &incoming;
}

bool migrate_use_handoff(void)
{
    return true;
}

#define UNREACHED(ret, name, ...) ret name(__VA_ARGS__) { abort(); }
UNREACHED(void, migrate_send_rp_handoff_error, MigrationIncomingState *mis,
          const char *msg)
UNREACHED(MigrationState *, migrate_get_current, void)
UNREACHED(int, blk_pwrite, BlockBackend *blk, int64_t offset, int64_t bytes,
          const void *buf, BdrvRequestFlags flags)
UNREACHED(int, blk_pread, BlockBackend *blk, int64_t offset, int64_t bytes,
          void *buf, BdrvRequestFlags flags)
UNREACHED(int, blk_pwrite_zeroes, BlockBackend *blk, int64_t offset,
          int64_t bytes, BdrvRequestFlags flags)
UNREACHED(const char *, blk_name, const BlockBackend *blk)
UNREACHED(BlockDriverState *, blk_bs, BlockBackend *blk)
UNREACHED(void, blk_activate, BlockBackend *blk, Error **errp)
UNREACHED(int, bdrv_is_allocated, BlockDriverState *bs, int64_t offset,
          int64_t bytes, int64_t *pnum)
UNREACHED(void *, qemu_blockalign, BlockDriverState *bs, size_t size)
UNREACHED(HandoffBaseStore *, handoff_base_store_open, const char *dir,
          Error **errp)
UNREACHED(void, handoff_base_store_free, HandoffBaseStore *store)
UNREACHED(HandoffDisks *, handoff_disks_collect, HandoffBaseStore *store,
          Error **errp)
UNREACHED(bool, handoff_disks_check_empty, HandoffDisk *d, Error **errp)
UNREACHED(void, handoff_disks_free, HandoffDisks *disks)
UNREACHED(void, handoff_trim_warn_if_ignored, BlockBackend *blk)
UNREACHED(bool, handoff_base_load_ram, HandoffBaseStore *store, Error **errp)
UNREACHED(void, handoff_error_engine, Error **errp, int code, const char *what)
UNREACHED(const char *, qemu_ram_get_idstr, RAMBlock *rb)
UNREACHED(void *, qemu_ram_get_host_addr, RAMBlock *rb)
UNREACHED(bool, qemu_ram_is_migratable, RAMBlock *rb)
/* Segmented streams and early start: never set up by this harness. */
UNREACHED(HandoffSegmentFeed *, handoff_segment_feed_new, HandoffDecoder *dec,
          const uint8_t *root, int fd, uint64_t stream_start, bool early)
UNREACHED(bool, handoff_segment_feed, HandoffSegmentFeed *f,
          const uint8_t *data, size_t len, Error **errp)
UNREACHED(bool, handoff_segment_feed_done, HandoffSegmentFeed *f,
          Error **errp)
UNREACHED(bool, handoff_segment_feed_take, HandoffSegmentFeed *f,
          HandoffSegmentTable **table, int *fd, uint64_t *start)
UNREACHED(bool, handoff_early_start_begin, const HandoffEarlyStartLoad *load,
          HandoffEarlyStart **out, Error **errp)
UNREACHED(int, handoff_early_start_write, HandoffEarlyStart *es,
          uint32_t region, uint64_t index, const void *data)

void handoff_segment_feed_free(HandoffSegmentFeed *f)
{
    if (f) {
        abort();
    }
}
RAMList ram_list;

/* Rejections are the normal outcome: keep them off the fuzzer's output. */
int error_vprintf(const char *fmt, va_list ap)
{
    return 0;
}

int error_vprintf_unless_qmp(const char *fmt, va_list ap)
{
    return 0;
}

/* No disk: every region is RAM here. */
HandoffDisk *handoff_disks_find(HandoffDisks *disks, uint32_t region)
{
    return NULL;
}

/* --- the harness --------------------------------------------------------- */

static HandoffBase *base;
static uint8_t *base_data[REGIONS];

static void make_base(void)
{
    static const char *names[REGIONS] = { "pc.ram", "disk" };
    HandoffRegionSpec spec[REGIONS];
    int i;

    for (i = 0; i < REGIONS; i++) {
        base_data[i] = g_malloc(REGION_BYTES);
        memset(base_data[i], 0x11 * (i + 1), REGION_BYTES);
        base_data[i][100] = i;          /* a chunk unlike the others */
        spec[i] = (HandoffRegionSpec){
            .name = names[i],
            .kind = i ? HANDOFF_REGION_DISK : HANDOFF_REGION_MEMORY,
            .data = base_data[i], .size = REGION_BYTES,
        };
    }
    if (handoff_base_create(spec, REGIONS, NULL, &base) < 0) {
        abort();
    }
}

/* Appends a DATA block of the encoder's output to @out; false when none. */
static bool pull_block(HandoffEncoder *enc, GByteArray *out, bool wait)
{
    g_autofree uint8_t *buf = g_malloc(HANDOFF_BLOCK_MAX);
    size_t n = 0;
    uint8_t head[5] = { HANDOFF_BLOCK_DATA };

    if ((wait ? handoff_encoder_pull_wait(enc, buf, HANDOFF_BLOCK_MAX, &n)
              : handoff_encoder_pull(enc, buf, HANDOFF_BLOCK_MAX, &n)) < 0) {
        abort();
    }
    if (!n) {
        return false;
    }
    stl_be_p(head + 1, n);
    g_byte_array_append(out, head, sizeof(head));
    g_byte_array_append(out, buf, n);
    return true;
}

/*
 * A seed: the section parts a source sends for @rounds rounds in @mode,
 * changing chunks of both regions (new data, base copies, zeros, a zero
 * run), as the source's save loop frames them (handoff-save-send.c: DATA
 * blocks; handoff-save-rounds.c: EOS and END).
 */
static void write_seed(const char *dir, const char *mode, int rounds)
{
    HandoffEncoderConfig config = { .struct_size = sizeof(config) };
    g_autoptr(GByteArray) out = g_byte_array_new();
    g_autofree char *path = NULL;
    uint8_t chunk[HANDOFF_CHUNK_SIZE];
    HandoffEncoder *enc;
    uint8_t eos = HANDOFF_BLOCK_EOS, end = HANDOFF_BLOCK_END;
    int r, i;

    handoff_encoder_config_default(&config);
    config.threads = 1;
    /* Each seed in exactly the mode it names (deltas included). */
    if (handoff_encoder_config_set_compression(
            &config, mode, HANDOFF_DELTAS_AS_NAMED) < 0 ||
        handoff_encoder_create(base, &config, &enc) < 0) {
        abort();
    }
    for (r = 0; r < rounds; r++) {
        if (r) {
            handoff_encoder_begin_iteration(enc, r);
        }
        for (i = 0; i < 6; i++) {
            uint32_t region = i % REGIONS;

            memset(chunk, 'a' + r + i, sizeof(chunk));
            if (i == 2) {
                memcpy(chunk, base_data[1], sizeof(chunk));   /* a base copy */
            } else if (i == 3) {
                memset(chunk, 0, sizeof(chunk));
            }
            handoff_encoder_submit(enc, region, (i * 3 + r) % 16, chunk);
        }
        handoff_encoder_submit_zero_run(enc, 1, 10, 4);
        handoff_encoder_flush(enc);
        while (pull_block(enc, out, true)) {
        }
        g_byte_array_append(out, &eos, 1);
        g_byte_array_append(out, (uint8_t *)"\xff", 1);
    }
    handoff_encoder_finish(enc);
    while (pull_block(enc, out, true)) {
    }
    g_byte_array_append(out, &end, 1);
    g_byte_array_append(out, &eos, 1);
    handoff_encoder_free(enc);
    path = g_strdup_printf("%s/seed-%s-%d", dir, mode, rounds);
    if (!g_file_set_contents(path, (char *)out->data, out->len, NULL)) {
        abort();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = getenv("HANDOFF_FUZZ_WRITE_SEEDS");

    make_base();
    if (dir) {
        write_seed(dir, "none", 1);
        write_seed(dir, "zstd-1", 3);
        write_seed(dir, "lzma-1", 2);
        write_seed(dir, "zlib-1+xor", 2);
        exit(0);
    }
    return 0;
}

/* A load state over fresh RAM (the base's bytes, guard bytes around). */
static HandoffLoadState *new_state(uint8_t *block_buf)
{
    HandoffLoadState *s = g_new0(HandoffLoadState, 1);
    HandoffWriter writer = {
        .struct_size = sizeof(writer),
        .opaque = s,
        .write_chunk = write_chunk,
        .read_chunk = read_chunk,
        .zero_chunks = zero_chunks,
    };
    int i;

    s->buf = block_buf;
    s->n_regions = REGIONS;
    s->host = g_new0(uint8_t *, REGIONS);
    s->size = g_new0(uint64_t, REGIONS);
    for (i = 0; i < REGIONS; i++) {
        /* RAM starts as the base's, as handoff_base_load_ram() does. */
        uint8_t *p = g_malloc(REGION_BYTES + 2 * GUARD);

        memset(p, 0xee, REGION_BYTES + 2 * GUARD);
        memcpy(p + GUARD, base_data[i], REGION_BYTES);
        s->host[i] = p + GUARD;
        s->size[i] = REGION_BYTES;
    }
    if (handoff_decoder_create(base, &writer, NULL, &s->dec) < 0) {
        abort();
    }
    return s;
}

/* Frees @s; aborts if a write landed outside a region. */
static void free_state(HandoffLoadState *s)
{
    int i, j;

    for (i = 0; i < REGIONS; i++) {
        uint8_t *p = s->host[i] - GUARD;

        for (j = 0; j < GUARD; j++) {
            if (p[j] != 0xee || p[GUARD + REGION_BYTES + j] != 0xee) {
                abort();
            }
        }
        g_free(p);
    }
    handoff_decoder_free(s->dec);
    g_free(s->host);
    g_free(s->size);
    g_free(s);
}

/*
 * The framing as handoff-stream.h defines it, walked independently of
 * handoff-load.c, with the same decoder beneath: whether the input is a
 * whole handoff section (every part ended, one end record, nothing after
 * it) that the decoder accepts.
 */
static bool reference_load(HandoffLoadState *s, const uint8_t *p, size_t n)
{
    bool in_part = false;
    size_t pos = 0;

    while (pos < n) {
        uint8_t kind = p[pos++];
        uint32_t len;

        if (!in_part && kind == 0xff) {
            continue;
        }
        in_part = true;
        switch (kind) {
        case HANDOFF_BLOCK_EOS:
            in_part = false;
            break;
        case HANDOFF_BLOCK_DATA:
            if (s->complete || n - pos < 4) {
                return false;
            }
            len = ldl_be_p(p + pos);
            pos += 4;
            if (!len || len > HANDOFF_BLOCK_MAX || n - pos < len ||
                handoff_decoder_feed(s->dec, p + pos, len) < 0) {
                return false;
            }
            pos += len;
            break;
        case HANDOFF_BLOCK_END:
            if (s->complete || handoff_decoder_finish(s->dec) < 0) {
                return false;
            }
            s->complete = true;
            break;
        default:
            return false;
        }
    }
    return s->complete && !in_part;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t *block_buf;
    QEMUFile f = { .data = data, .size = size };
    HandoffLoadState *s, *ref;
    bool loaded, expected;
    int i, rc = 0;

    if (!block_buf) {
        block_buf = g_malloc(HANDOFF_BLOCK_MAX);    /* as handoff_load_setup */
    }
    s = load_state = new_state(block_buf);
    /* Section parts until the input ends or one fails. */
    while (f.pos < f.size && rc == 0) {
        if (f.data[f.pos] == 0xff) {
            f.pos++;            /* another section went by */
            continue;
        }
        rc = handoff_load_state(&f, NULL, HANDOFF_SECTION_VERSION);
    }
    loaded = rc == 0 && handoff_load_verify() == 0;

    /* handoff-load.c's verdict and RAM must be the reference's. */
    ref = new_state(block_buf);
    expected = reference_load(ref, data, size);
    if (loaded != expected) {
        abort();
    }
    for (i = 0; loaded && i < REGIONS; i++) {
        if (memcmp(s->host[i], ref->host[i], REGION_BYTES)) {
            abort();
        }
    }
    free_state(ref);
    free_state(s);
    load_state = NULL;
    return 0;
}
