// SPDX-License-Identifier: GPL-2.0-or-later
//
// The virtio-serial port QEMU talks to the agent on, found by its name in
// sysfs (no udev in small guests to make /dev/virtio-ports links).
#ifndef HANDOFF_AGENT_PORT_H
#define HANDOFF_AGENT_PORT_H

#include <string>

namespace handoff_agent {

// The /dev node of the port named @name, or "" if the guest has none.
std::string FindPort(const std::string& name);

// Reads or writes exactly @len bytes on the port, opened O_NONBLOCK;
// false on EOF or error. A write also fails when the host end closes
// (POLLHUP): QEMU resets the port when an answer lost its framing, and the
// rest of that answer must not reach the next session. A blocking write
// would wait for the host to come back and then send it.
bool ReadFully(int fd, void* buf, size_t len);
bool WriteFully(int fd, const void* buf, size_t len);

}  // namespace handoff_agent

#endif  // HANDOFF_AGENT_PORT_H
