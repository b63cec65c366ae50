/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The kernel module's snapshot of free pages, as the daemon reads it: one
 * definition for the two sides of /proc/handoff_free_pages. The module
 * (kmod/handoff_free_pages.c) writes, per open, an array of records, one
 * buddy block each, in the guest's own byte order (x86: little-endian);
 * the daemon (src/free_list.cc) reads them. Kernel and user space both
 * have <linux/types.h> (the UAPI header), so both compile this file.
 */
#ifndef HANDOFF_FREE_PAGES_H
#define HANDOFF_FREE_PAGES_H

#include <linux/types.h>

#define HANDOFF_FREE_PAGES_PROC_NAME "handoff_free_pages"
#define HANDOFF_FREE_PAGES_PATH "/proc/" HANDOFF_FREE_PAGES_PROC_NAME

struct handoff_free_pages_record {
	__u64 pfn;	/* first page frame of the free block */
	__u64 pages;	/* its length in pages (a power of two) */
};

#endif /* HANDOFF_FREE_PAGES_H */
