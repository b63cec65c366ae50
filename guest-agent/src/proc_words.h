// SPDX-License-Identifier: GPL-2.0-or-later
//
// The kernel's binary /proc files the agent reads (the module's free list,
// /proc/kpageflags) are arrays of u64 words.
#ifndef HANDOFF_AGENT_PROC_WORDS_H
#define HANDOFF_AGENT_PROC_WORDS_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace handoff_agent {

// Reads at most @max words of @path into *@out, in one open (for the
// module, one open is one snapshot). Returns "" or why it could not.
std::string ReadWords(const char* path, size_t max,
                      std::vector<uint64_t>* out);

}  // namespace handoff_agent

#endif  // HANDOFF_AGENT_PROC_WORDS_H
