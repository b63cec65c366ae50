// SPDX-License-Identifier: GPL-2.0-or-later
//
// What every page frame of the guest holds (HandoffAgentPageClass), for a
// breakdown of its memory: free from the module's exact snapshot, the
// rest from /proc/kpageflags. kpageflags is read without any lock, so a
// page may change class while it is read; a breakdown can bear that, and
// nothing is ever sent or skipped on this map's word.
#ifndef HANDOFF_AGENT_PAGE_CLASSES_H
#define HANDOFF_AGENT_PAGE_CLASSES_H

#include <cstdint>
#include <string>
#include <vector>

#include "handoff_agent_protocol.h"

namespace handoff_agent {

inline constexpr const char* kPageFlagsPath = "/proc/kpageflags";

// The class of one page from its kpageflags word (not free: see above).
uint8_t ClassOfFlags(uint64_t flags);

// One byte per page frame from 0 into *@out, at most
// HANDOFF_AGENT_MAX_CLASS_PAGES; @free: the free extents (sorted).
// Returns "" or why it could not.
std::string ReadPageClasses(const char* kpageflags,
                            const std::vector<HandoffAgentExtent>& free,
                            uint64_t page_size, std::vector<uint8_t>* out);

}  // namespace handoff_agent

#endif  // HANDOFF_AGENT_PAGE_CLASSES_H
