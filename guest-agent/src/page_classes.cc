// SPDX-License-Identifier: GPL-2.0-or-later
#include "page_classes.h"

#include "proc_words.h"

namespace handoff_agent {
namespace {

// Bits of /proc/kpageflags (Linux's uapi kernel-page-flags.h).
constexpr int kLru = 5, kSlab = 7, kAnon = 12, kNoPage = 20, kThp = 22,
              kZeroPage = 24, kPgTable = 26;

constexpr bool Has(uint64_t flags, int bit) { return flags >> bit & 1; }

}  // namespace

uint8_t ClassOfFlags(uint64_t flags) {
  if (Has(flags, kNoPage)) return HANDOFF_PAGE_OTHER;
  if (Has(flags, kAnon)) return HANDOFF_PAGE_ANONYMOUS;
  // File pages (shmem and tmpfs included, as the kernel's "Cached" does).
  if (Has(flags, kLru)) return HANDOFF_PAGE_CACHE;
  // The tail pages of a large page-cache folio (tmpfs huge pages) lack
  // LRU, which 6.1 copies from each page's own flags; THP follows the head
  // (set when it is LRU or anonymous, and for the huge zero page).
  if (Has(flags, kThp) && !Has(flags, kZeroPage)) return HANDOFF_PAGE_CACHE;
  if (Has(flags, kSlab) || Has(flags, kPgTable)) return HANDOFF_PAGE_KERNEL;
  return HANDOFF_PAGE_OTHER;
}

std::string ReadPageClasses(const char* kpageflags,
                            const std::vector<HandoffAgentExtent>& free,
                            uint64_t page_size, std::vector<uint8_t>* out) {
  // The file ends at the highest page frame the kernel has.
  std::vector<uint64_t> flags;
  std::string why = ReadWords(kpageflags, HANDOFF_AGENT_MAX_CLASS_PAGES,
                              &flags);
  out->clear();
  if (!why.empty()) return why;
  out->reserve(flags.size());
  for (uint64_t f : flags) out->push_back(ClassOfFlags(f));
  for (const HandoffAgentExtent& e : free) {
    const uint64_t first = e.gpa / page_size;
    for (uint64_t p = first; p < first + e.bytes / page_size &&
                             p < out->size(); p++)
      (*out)[p] = HANDOFF_PAGE_FREE;
  }
  return "";
}

}  // namespace handoff_agent
