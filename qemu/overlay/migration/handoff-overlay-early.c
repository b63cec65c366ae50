/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The "early-start" object of a VM overlay's description
 * (docs/overlay-format.md, "Early start"): the overlay's stream carries a
 * segmented engine stream (version 3, docs/stream-format.md) whose table
 * part has the SHA-256 named here, the root. The header's digest covers
 * the description, so a destination that checked it authenticates the
 * table part with the root, and each segment with the hash the table
 * lists for it, as the segment arrives.
 *
 * The root is known only once the stream is finished, long after the
 * description was written in front of it: the save writes a placeholder
 * of the same length and fills it in at the end (handoff-overlay-save.c).
 */
#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qmp/qnum.h"
#include "handoff-overlay.h"

#define ROOT_KEY "\"root\": \""
#define SEGMENTS_BYTES_KEY "\"segments-bytes\": "
/* 20 digits, as wide as the largest u64, so the value fits in its place. */
#define SEGMENTS_BYTES_PLACEHOLDER 10000000000000000000ULL

void handoff_overlay_describe_early_start(QDict *description,
                                          uint64_t order_chunks)
{
    QDict *early = qdict_new();
    char placeholder[HANDOFF_OVERLAY_ROOT_HEX + 1];

    memset(placeholder, '0', HANDOFF_OVERLAY_ROOT_HEX);
    placeholder[HANDOFF_OVERLAY_ROOT_HEX] = '\0';
    qdict_put_int(early, "stream-version", HANDOFF_OVERLAY_SEGMENTED_STREAM);
    qdict_put_str(early, "root", placeholder);
    qdict_put_int(early, "order-chunks", order_chunks);
    qdict_put(early, "segments-bytes",
              qnum_from_uint(SEGMENTS_BYTES_PLACEHOLDER));
    qdict_put(description, HANDOFF_OVERLAY_EARLY_START, early);
}

/*
 * Where the placeholder's hex digits are in @json, the description as
 * written (qobject_to_json_pretty writes '"key": value'), or -1 unless
 * the placeholder is there exactly once: a device property that happened
 * to look the same must not be overwritten instead.
 */
ssize_t handoff_overlay_root_offset(const char *json)
{
    g_autofree char *needle = g_strdup_printf(ROOT_KEY "%0*d\"",
                                              HANDOFF_OVERLAY_ROOT_HEX, 0);
    const char *at = strstr(json, needle);

    if (!at || strstr(at + 1, needle)) {
        return -1;
    }
    return at - json + strlen(ROOT_KEY);
}

/* Where the segments-bytes placeholder's digits are, as for the root. */
ssize_t handoff_overlay_segments_bytes_offset(const char *json)
{
    g_autofree char *needle = g_strdup_printf(SEGMENTS_BYTES_KEY "%llu",
                                              SEGMENTS_BYTES_PLACEHOLDER);
    const char *at = strstr(json, needle);

    if (!at || strstr(at + 1, needle)) {
        return -1;
    }
    return at - json + strlen(SEGMENTS_BYTES_KEY);
}

void handoff_overlay_root_hex(const uint8_t root[HANDOFF_ROOT_SIZE],
                              char hex[HANDOFF_OVERLAY_ROOT_HEX + 1])
{
    size_t i;

    for (i = 0; i < HANDOFF_ROOT_SIZE; i++) {
        snprintf(hex + 2 * i, 3, "%02x", root[i]);
    }
}

static bool parse_root(const char *hex, uint8_t root[HANDOFF_ROOT_SIZE])
{
    size_t i;

    if (!hex || strlen(hex) != HANDOFF_OVERLAY_ROOT_HEX ||
        strspn(hex, "0123456789abcdef") != HANDOFF_OVERLAY_ROOT_HEX) {
        return false;
    }
    for (i = 0; i < HANDOFF_ROOT_SIZE; i++) {
        root[i] = g_ascii_xdigit_value(hex[2 * i]) << 4 |
                  g_ascii_xdigit_value(hex[2 * i + 1]);
    }
    return true;
}

bool handoff_overlay_early_start(QDict *description, bool *segmented,
                                 uint8_t root[HANDOFF_ROOT_SIZE],
                                 Error **errp)
{
    QObject *obj = qdict_get(description, HANDOFF_OVERLAY_EARLY_START);
    QDict *early = qobject_to(QDict, obj);
    QNum *version;
    uint64_t v;

    *segmented = false;
    if (!obj) {
        return true;
    }
    if (!early) {
        error_setg(errp, "overlay description: early-start is not an object");
        return false;
    }
    version = qobject_to(QNum, qdict_get(early, "stream-version"));
    if (!version || !qnum_get_try_uint(version, &v) ||
        v != HANDOFF_OVERLAY_SEGMENTED_STREAM) {
        error_setg(errp, "overlay description: early-start.stream-version "
                   "must be %d (a segmented stream), the one this QEMU "
                   "loads", HANDOFF_OVERLAY_SEGMENTED_STREAM);
        return false;
    }
    if (!parse_root(qdict_get_try_str(early, "root"), root)) {
        error_setg(errp, "overlay description: early-start.root is not a "
                   "SHA-256 (%d lowercase hex digits)",
                   HANDOFF_OVERLAY_ROOT_HEX);
        return false;
    }
    *segmented = true;
    return true;
}
