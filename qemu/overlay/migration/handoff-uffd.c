/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The userfaultfd that recording and early start register guest RAM
 * with. QEMU 7.2 makes one only with the userfaultfd() system call,
 * which an unprivileged process may use for faults in kernel mode (a
 * vCPU's access through KVM, QEMU's own reads of guest RAM: both must be
 * caught) only when sysctl vm.unprivileged_userfaultfd is 1, a setting
 * that loosens the whole host. Linux 6.1's /dev/userfaultfd hands out
 * the same right by the device's permissions instead; passed open to
 * one QEMU (-add-fd, -handoff userfaultfd=/dev/fdset/N), it gives that
 * QEMU and nothing else the right, as the synthesis service does for
 * the confined QEMU of an early start (QEMU 8.1 opens the device itself,
 * util/userfaultfd.c, which a confined QEMU cannot).
 */
#include "qemu/osdep.h"
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include "migration/handoff.h"
#include "qapi/error.h"
#include "qemu/userfaultfd.h"
#include "handoff-internal.h"

/* Linux 6.1's, newer than QEMU 7.2's copy of the kernel headers. */
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC 0xAA
#define USERFAULTFD_IOC_NEW _IO(USERFAULTFD_IOC, 0x00)
#endif

#define NEEDED_IOCTLS ((1ULL << _UFFDIO_REGISTER) | \
                       (1ULL << _UFFDIO_UNREGISTER))

/* A non-blocking userfaultfd from the device open at @path. */
static int uffd_from_device(const char *path, Error **errp)
{
    struct uffdio_api api = { .api = UFFD_API };
    int dev = qemu_open(path, O_RDWR | O_CLOEXEC, errp);
    int fd;

    if (dev < 0) {
        error_prepend(errp, "-handoff userfaultfd: ");
        return -1;
    }
    fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
    close(dev);
    if (fd < 0) {
        error_setg_errno(errp, errno, "-handoff userfaultfd=%s: not "
                         "/dev/userfaultfd, or no userfaultfd from it",
                         path);
        return -1;
    }
    if (ioctl(fd, UFFDIO_API, &api) ||
        (api.ioctls & NEEDED_IOCTLS) != NEEDED_IOCTLS) {
        error_setg_errno(errp, errno, "userfaultfd: API handshake");
        close(fd);
        return -1;
    }
    return fd;
}

int handoff_uffd_create(const char *what, Error **errp)
{
    const char *path = handoff_cli_userfaultfd();
    int fd;

    if (path) {
        return uffd_from_device(path, errp);
    }
    fd = uffd_create_fd(0, true);
    if (fd < 0) {
        error_setg_errno(errp, errno, "cannot open a userfaultfd (%s needs "
                         "it: root, or /dev/userfaultfd passed open with "
                         "-handoff userfaultfd=/dev/fdset/N)", what);
    }
    return fd;
}
