/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The wire between QEMU and the qemu-handoff guest agent, over the
 * virtio-serial port HANDOFF_AGENT_PORT_NAME. All integers little-endian.
 *
 * QEMU sends a request; the agent answers with one report: a header and
 * `count` extents of guest-physical memory that were free when the guest
 * kernel walked its free lists, after the request arrived. Generations
 * tie a report to the request (and so to the dirty-log round) it answers:
 * QEMU ignores a report of any generation but the one it last asked for.
 * Everything the agent sends is untrusted: QEMU checks every extent
 * against guest RAM and caps the count.
 */
#ifndef HANDOFF_AGENT_PROTOCOL_H
#define HANDOFF_AGENT_PROTOCOL_H

#include <stdint.h>

#define HANDOFF_AGENT_PORT_NAME "org.qemu-handoff.agent.0"
#define HANDOFF_AGENT_MAGIC 0x47414848u     /* "HHAG" */
#define HANDOFF_AGENT_VERSION 1u
/* Most extents a report may carry (16 MiB of extents). */
#define HANDOFF_AGENT_MAX_EXTENTS (1u << 20)

typedef struct HandoffAgentRequest {
    uint32_t magic;
    uint32_t version;
    uint64_t generation;
} HandoffAgentRequest;

typedef struct HandoffAgentReport {
    uint32_t magic;
    uint32_t version;
    uint64_t generation;    /* of the request answered */
    uint64_t count;         /* HandoffAgentExtent records that follow */
} HandoffAgentReport;

typedef struct HandoffAgentExtent {
    uint64_t gpa;           /* guest-physical address, page aligned */
    uint64_t bytes;         /* a multiple of the page size */
} HandoffAgentExtent;

#endif /* HANDOFF_AGENT_PROTOCOL_H */
