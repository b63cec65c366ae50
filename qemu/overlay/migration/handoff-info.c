/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What handoff reports: query-handoff / info handoff (the linked engine)
 * and the handoff member of query-migrate / info migrate.
 *
 * Engine facts come from libhandoff itself (through its C API), so that
 * the report names the engine and the codec libraries that actually run,
 * not what QEMU was configured with.
 */
#include "qemu/osdep.h"
#include "migration/handoff.h"
#include "monitor/hmp.h"
#include "monitor/monitor.h"
#include "qapi/clone-visitor.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-handoff.h"
#include "qapi/qapi-visit-handoff.h"
#include "qemu/thread.h"
#include "handoff-internal.h"

/*
 * The latest statistics of the outgoing handoff, published by the
 * migration thread and kept after it ends, for query-migrate.
 */
static QemuMutex stats_lock;
static HandoffStats *last_stats;

static void __attribute__((constructor)) handoff_info_init(void)
{
    qemu_mutex_init(&stats_lock);
}

void handoff_stats_publish(const HandoffStats *stats)
{
    HandoffStats *copy = QAPI_CLONE(HandoffStats, (HandoffStats *)stats);

    qemu_mutex_lock(&stats_lock);
    qapi_free_HandoffStats(last_stats);
    last_stats = copy;
    qemu_mutex_unlock(&stats_lock);
}

void handoff_fill_migration_info(MigrationInfo *info)
{
    qemu_mutex_lock(&stats_lock);
    if (last_stats) {
        info->has_handoff = true;
        info->handoff = QAPI_CLONE(HandoffStats, last_stats);
    }
    qemu_mutex_unlock(&stats_lock);
}

void hmp_info_migrate_handoff(Monitor *mon, HandoffStats *st)
{
    monitor_printf(mon, "handoff: base %s, round %u, mode %s%s\n",
                   st->base_id, st->iteration, st->mode,
                   st->adaptive ? " (adaptive)" : "");
    monitor_printf(mon, "handoff chunks: zero %" PRIu64 ", same %" PRIu64
                   ", base-ref %" PRIu64 ", self-ref %" PRIu64 ", data %"
                   PRIu64 " (xor %" PRIu64 "), dedup %.1f%%\n",
                   st->zero, st->same, st->base_ref, st->self_ref, st->data,
                   st->xor_delta, st->dedup_rate * 100);
    monitor_printf(mon, "handoff zero runs: %" PRIu64 " chunks; %" PRIu64
                   " bytes discarded by the guest; %" PRIu64 " bytes of "
                   "free memory (%" PRIu64 " hinted by the balloon; agent: %"
                   PRIu64 " reports, %" PRIu64 " refused)\n",
                   st->zero_run, st->discarded, st->free_memory,
                   st->free_hinted, st->agent_reports, st->agent_refused);
    monitor_printf(mon, "handoff bytes: in %" PRIu64 ", out %" PRIu64
                   " (ratio %.4f) in %" PRIu64 " frames\n",
                   st->input_bytes, st->output_bytes, st->ratio, st->frames);
    monitor_printf(mon, "handoff link: %.2f Mbit/s carried, %.2f Mbit/s "
                   "estimated, mode predicts %.2f MB/s of input, %" PRIu64
                   " mode switches, ~%" PRIu64 " bytes remaining\n",
                   st->link_bandwidth * 8 / 1e6, st->bandwidth * 8 / 1e6,
                   st->predicted_throughput / 1e6, st->mode_switches,
                   st->remaining);
}

HandoffEngineInfo *qmp_query_handoff(Error **errp)
{
    HandoffEngineInfo *info = g_new0(HandoffEngineInfo, 1);
    HandoffEngineCodecList **tail = &info->codecs;
    size_t i;

    info->version = g_strdup(handoff_version_string());
    info->hash = g_strdup(handoff_hash_name());
    info->hash_version = g_strdup(handoff_hash_version());

    for (i = 0; i < handoff_codec_count(); i++) {
        HandoffCodecInfo ci;
        HandoffEngineCodec *codec;

        if (handoff_codec_info(i, &ci) < 0) {
            error_setg(errp, "handoff engine did not describe codec %zu", i);
            qapi_free_HandoffEngineInfo(info);
            return NULL;
        }
        codec = g_new0(HandoffEngineCodec, 1);
        codec->name = g_strdup(ci.name);
        codec->library = g_strdup(ci.library);
        codec->library_version = g_strdup(ci.library_version);
        codec->min_level = ci.min_level;
        codec->max_level = ci.max_level;
        QAPI_LIST_APPEND(tail, codec);
    }
    return info;
}

void hmp_info_handoff(Monitor *mon, const QDict *qdict)
{
    Error *err = NULL;
    HandoffEngineInfo *info = qmp_query_handoff(&err);
    HandoffEngineCodecList *c;

    if (hmp_handle_error(mon, err)) {
        return;
    }
    monitor_printf(mon, "handoff engine: libhandoff %s\n", info->version);
    monitor_printf(mon, "hash: %s (xxHash %s)\n", info->hash,
                   info->hash_version);
    monitor_printf(mon, "codecs:\n");
    for (c = info->codecs; c; c = c->next) {
        HandoffEngineCodec *codec = c->value;

        if (!*codec->library) {
            monitor_printf(mon, "  %-5s (stored, no compression)\n",
                           codec->name);
            continue;
        }
        monitor_printf(mon, "  %-5s %s %s, levels %" PRId64 "..%" PRId64 "\n",
                       codec->name, codec->library, codec->library_version,
                       codec->min_level, codec->max_level);
    }
    qapi_free_HandoffEngineInfo(info);
}
