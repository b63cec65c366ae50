// SPDX-License-Identifier: GPL-2.0-or-later
//
// The guest's free memory as extents of guest-physical addresses, from
// the kernel module's snapshot (/proc/handoff_free_pages: records whose
// layout handoff_free_pages.h defines for both). Sorted, adjacent blocks
// merged.
#ifndef HANDOFF_AGENT_FREE_LIST_H
#define HANDOFF_AGENT_FREE_LIST_H

#include <cstdint>
#include <string>
#include <vector>

#include "handoff_agent_protocol.h"
#include "handoff_free_pages.h"

namespace handoff_agent {

inline constexpr const char* kFreePagesPath = HANDOFF_FREE_PAGES_PATH;

// Reads one snapshot into *@out. Returns "" or why it could not.
std::string ReadFreeList(const char* path, uint64_t page_size,
                         std::vector<HandoffAgentExtent>* out);

// Sorts and merges touching extents, in place.
void Coalesce(std::vector<HandoffAgentExtent>* extents);

}  // namespace handoff_agent

#endif  // HANDOFF_AGENT_FREE_LIST_H
