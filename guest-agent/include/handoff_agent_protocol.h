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
 *
 * A second kind of request, with HANDOFF_AGENT_CLASSES_MAGIC, asks what
 * every page frame holds (for scripts/vm-breakdown.py, never for what a
 * handoff sends): the answer is a HandoffAgentReport with that magic and
 * `count` bytes that follow, one HandoffAgentPageClass per page frame
 * from guest-physical address 0, at most HANDOFF_AGENT_MAX_CLASS_PAGES.
 */
#ifndef HANDOFF_AGENT_PROTOCOL_H
#define HANDOFF_AGENT_PROTOCOL_H

#include <stdint.h>

#define HANDOFF_AGENT_PORT_NAME "org.qemu-handoff.agent.0"
#define HANDOFF_AGENT_MAGIC 0x47414848u     /* "HHAG" */
#define HANDOFF_AGENT_VERSION 1u
/* Most extents a report may carry (16 MiB of extents). */
#define HANDOFF_AGENT_MAX_EXTENTS (1u << 20)

#define HANDOFF_AGENT_CLASSES_MAGIC 0x43414848u    /* "HHAC" */
/* Most page frames a class map may cover (1 TiB of 4 KiB pages). */
#define HANDOFF_AGENT_MAX_CLASS_PAGES (1ull << 28)

/*
 * What a page frame holds, as the guest kernel says (free: its buddy free
 * lists; the others: /proc/kpageflags). Only a breakdown reads these.
 */
typedef enum HandoffAgentPageClass {
    HANDOFF_PAGE_OTHER = 0,      /* kernel text, reserved, holes, unknown */
    HANDOFF_PAGE_FREE = 1,       /* in a buddy free list */
    HANDOFF_PAGE_CACHE = 2,      /* file pages on the LRU: page cache */
    HANDOFF_PAGE_ANONYMOUS = 3,  /* process memory (and its swap cache) */
    HANDOFF_PAGE_KERNEL = 4,     /* slab caches and page tables */
    HANDOFF_PAGE_CLASS_COUNT
} HandoffAgentPageClass;

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
