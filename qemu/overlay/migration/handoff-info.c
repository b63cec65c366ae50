/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * query-handoff / info handoff: what the linked handoff engine can do.
 *
 * Every answer comes from libhandoff itself (through its C API), so that
 * the report names the engine and the codec libraries that actually run,
 * not what QEMU was configured with.
 */
#include "qemu/osdep.h"
#include "monitor/hmp.h"
#include "monitor/monitor.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-handoff.h"
#include "handoff.h"

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
