// SPDX-License-Identifier: GPL-2.0-or-later
//
// Status: the result of every fallible engine operation, in the LevelDB
// style. It carries one of the stable HandoffError codes of handoff.h so
// that the C boundary passes codes through unchanged, plus a message naming
// the precise cause for people.
#ifndef HANDOFF_STATUS_H
#define HANDOFF_STATUS_H

#include <string>
#include <utility>

#include "handoff.h"

namespace handoff {

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(HandoffError code, std::string message)
      : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == HANDOFF_OK; }
  HandoffError code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  HandoffError code_ = HANDOFF_OK;
  std::string message_;
};

#define HANDOFF_RETURN_IF_ERROR(expr)      \
  do {                                     \
    ::handoff::Status status_ = (expr);    \
    if (!status_.ok()) return status_;     \
  } while (0)

}  // namespace handoff

#endif  // HANDOFF_STATUS_H
