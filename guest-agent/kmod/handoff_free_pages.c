// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * handoff_free_pages: the guest's exact list of free pages, for the
 * qemu-handoff guest agent (guest-agent/README.md).
 *
 * User space cannot know which pages are free: /proc/kpageflags marks only
 * the first page of a free buddy block, without its order, and is read
 * without the zone lock. This module walks every zone's buddy free lists
 * under zone->lock and hands out, per open of /proc/handoff_free_pages,
 * one snapshot: an array of struct handoff_free_pages_record (the
 * daemon's and this module's shared header, handoff_free_pages.h).
 *
 * Why a page in the snapshot may go unsent: the host starts dirty logging
 * before it asks for a report, and every page was free when its zone was
 * walked (under the lock: no allocation in between). A page allocated and
 * written after that is logged dirty and sent in a later round; a page
 * reported free and never written again holds nothing the guest can read
 * before writing it (the allocator hands it out for writing; Debian's
 * init_on_alloc even zeroes it) - unless init_on_free or page poisoning
 * makes free pages' contents matter: then the module does not load.
 * Pages the snapshot misses (per-CPU lists,
 * isolated blocks, a full buffer) are merely sent: missing is safe,
 * inventing is not, so nothing here guesses.
 */
#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/module.h>
#include <linux/overflow.h>
#include <linux/page-isolation.h>
#include <linux/proc_fs.h>
#include <linux/vmalloc.h>

#include "handoff_free_pages.h"

struct snapshot {
	size_t n, cap;
	struct handoff_free_pages_record e[];
};

/*
 * Every populated zone of every online node. (for_each_populated_zone
 * needs symbols the kernel does not export to modules.)
 */
#define for_each_zone_here(nid, z, zone)					\
	for_each_online_node(nid)						\
		for ((z) = 0; (z) < MAX_NR_ZONES; (z)++)			\
			if (((zone) = &NODE_DATA(nid)->node_zones[z]),		\
			    populated_zone(zone))

/* Room for the blocks free now, and for frees that race the count. */
static size_t free_block_estimate(void)
{
	struct zone *zone;
	size_t n = 0;
	int nid, z;

	for_each_zone_here(nid, z, zone) {
		unsigned int order;

		for (order = 0; order < MAX_ORDER; order++)
			n += READ_ONCE(zone->free_area[order].nr_free);
	}
	return n + n / 8 + 64;
}

/* Appends @zone's free blocks; stops quietly when @s is full. */
static void snapshot_zone(struct snapshot *s, struct zone *zone)
{
	unsigned long flags;
	unsigned int order, mt;
	struct page *page;

	spin_lock_irqsave(&zone->lock, flags);
	for (order = 0; order < MAX_ORDER; order++) {
		struct free_area *area = &zone->free_area[order];

		for (mt = 0; mt < MIGRATE_TYPES; mt++) {
			/* Isolated blocks are being taken by someone. */
			if (is_migrate_isolate(mt))
				continue;
			list_for_each_entry(page, &area->free_list[mt], buddy_list) {
				if (s->n == s->cap)
					goto out;
				s->e[s->n].pfn = page_to_pfn(page);
				s->e[s->n].pages = 1ULL << order;
				s->n++;
			}
		}
	}
out:
	spin_unlock_irqrestore(&zone->lock, flags);
}

static int free_pages_open(struct inode *inode, struct file *file)
{
	size_t cap = free_block_estimate();
	struct snapshot *s = vmalloc(struct_size(s, e, cap));
	struct zone *zone;
	int nid, z;

	if (!s)
		return -ENOMEM;
	s->n = 0;
	s->cap = cap;
	for_each_zone_here(nid, z, zone)
		snapshot_zone(s, zone);
	file->private_data = s;
	return 0;
}

static ssize_t free_pages_read(struct file *file, char __user *buf,
			       size_t len, loff_t *pos)
{
	struct snapshot *s = file->private_data;

	return simple_read_from_buffer(buf, len, pos, s->e,
				       s->n * sizeof(s->e[0]));
}

static int free_pages_release(struct inode *inode, struct file *file)
{
	vfree(file->private_data);
	return 0;
}

static const struct proc_ops free_pages_ops = {
	.proc_open = free_pages_open,
	.proc_read = free_pages_read,
	.proc_release = free_pages_release,
	.proc_lseek = default_llseek,
};

static struct proc_dir_entry *entry;

static int __init handoff_free_pages_init(void)
{
	/*
	 * With init_on_free the allocator skips zeroing __GFP_ZERO pages (free
	 * pages are zero already), and with page poisoning it checks the
	 * poison when it hands a page out: a free page's contents matter
	 * then, and a host that skipped it would break the guest. As
	 * virtio_balloon does for its hints, offer nothing.
	 */
	if (want_init_on_free() || page_poisoning_enabled_static()) {
		pr_warn("handoff_free_pages: init_on_free or page poisoning is "
			"on: free pages hold state, not loading\n");
		return -EOPNOTSUPP;
	}
	entry = proc_create(HANDOFF_FREE_PAGES_PROC_NAME, 0400, NULL, &free_pages_ops);
	return entry ? 0 : -ENOMEM;
}

static void __exit handoff_free_pages_exit(void)
{
	proc_remove(entry);
}

module_init(handoff_free_pages_init);
module_exit(handoff_free_pages_exit);
MODULE_DESCRIPTION("Exact free page list for the qemu-handoff guest agent");
MODULE_LICENSE("GPL");
