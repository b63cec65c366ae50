// SPDX-License-Identifier: GPL-2.0-or-later
#include "free_list.h"

#include <algorithm>
#include <cstdint>

#include "proc_words.h"

namespace handoff_agent {

std::string ReadFreeList(const char* path, uint64_t page_size,
                         std::vector<HandoffAgentExtent>* out) {
  out->clear();
  std::vector<uint64_t> words;
  std::string why = ReadWords(path, SIZE_MAX, &words);
  if (!why.empty()) return why;
  // The module's records, read as the words they are made of.
  static_assert(sizeof(handoff_free_pages_record) == 2 * sizeof(uint64_t));
  for (size_t i = 0; i + 1 < words.size(); i += 2) {
    handoff_free_pages_record r = {words[i], words[i + 1]};
    out->push_back({r.pfn * page_size, r.pages * page_size});
  }
  Coalesce(out);
  return "";
}

void Coalesce(std::vector<HandoffAgentExtent>* extents) {
  std::sort(extents->begin(), extents->end(),
            [](const HandoffAgentExtent& a, const HandoffAgentExtent& b) {
              return a.gpa < b.gpa;
            });
  size_t w = 0;
  for (const HandoffAgentExtent& e : *extents) {
    if (e.bytes == 0) continue;
    if (w > 0 && (*extents)[w - 1].gpa + (*extents)[w - 1].bytes >= e.gpa) {
      HandoffAgentExtent& last = (*extents)[w - 1];
      last.bytes = std::max(last.gpa + last.bytes, e.gpa + e.bytes) - last.gpa;
    } else {
      (*extents)[w++] = e;
    }
  }
  extents->resize(w);
}

}  // namespace handoff_agent
