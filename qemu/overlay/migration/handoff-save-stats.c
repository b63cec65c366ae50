/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The statistics of an outgoing handoff (handoff-save.c): the engine's
 * counters and the save loop's own, published after every section part
 * for query-migrate's handoff member and info migrate (handoff-info.c).
 */
#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "handoff-save.h"

/* What the destination still waits for: the engine's estimate for the
 * round's rest, plus our bytes queued in the socket. */
uint64_t handoff_save_remaining_bytes(HandoffSaveState *s, QEMUFile *f,
                                      const HandoffEncoderStats *st)
{
    return handoff_encoder_remaining_bytes(st, s->round->len - s->next -
                                               MIN(s->round_freed,
                                                   s->round->len - s->next)) +
           (f ? handoff_save_socket_backlog(f) : 0);
}

void handoff_save_update_stats(HandoffSaveState *s)
{
    HandoffEncoderStats st = { .struct_size = sizeof(HandoffEncoderStats) };
    HandoffStats *o = &s->stats;
    uint64_t examined = 0;
    char mode[32];
    int k;

    if (handoff_encoder_stats(s->enc, &st) < 0) {
        return;
    }
    for (k = 0; k < HANDOFF_REC_KINDS; k++) {
        examined += st.chunks[k];
    }
    examined -= st.chunks[HANDOFF_REC_ZERO_RUN];
    if (handoff_mode_name(&st.mode, mode, sizeof(mode)) < 0) {
        pstrcpy(mode, sizeof(mode), "?");
    }
    g_free(o->base_id);
    g_free(o->mode);
    o->base_id = g_strdup(s->store->id);
    o->iteration = s->iteration;
    o->zero = st.chunks[HANDOFF_REC_ZERO];
    o->same = st.chunks[HANDOFF_REC_SAME];
    o->base_ref = st.chunks[HANDOFF_REC_BASE_REF];
    o->self_ref = st.chunks[HANDOFF_REC_SELF_REF];
    o->data = st.chunks[HANDOFF_REC_DATA];
    o->zero_run = st.chunks[HANDOFF_REC_ZERO_RUN];
    o->discarded = handoff_trim_discarded_bytes(s->trim);
    o->free_memory = s->free_bytes;
    o->free_hinted = s->hinted_bytes;
    handoff_agent_counters(&o->agent_reports, &o->agent_refused);
    o->agent_reports -= s->agent_reports;
    o->agent_refused -= s->agent_refused;
    o->xor_delta = st.xor_chunks;
    o->dedup_rate = examined ? 1.0 - (double)o->data / examined : 0;
    o->input_bytes = st.input_bytes;
    o->output_bytes = st.output_bytes;
    o->frames = st.frames;
    o->ratio = st.ratio;
    o->mode = g_strdup(mode);
    o->mode_switches = st.mode_switches;
    o->bandwidth = st.bandwidth_bps;
    o->link_bandwidth = st.link_bps;
    o->predicted_throughput = st.predicted_bps;
    o->remaining = handoff_save_remaining_bytes(s, NULL, &st);
    o->memory_chunks = s->memory_sent;
    o->disk_chunks = s->disk_sent;
    handoff_stats_publish(o);
}
