"""What happens on a node after its digest agreed: the clone made its own machine.

The image on the disk is byte for byte the master's, which the digest has proved; from here
the disk is finished for this node, in this order, each step one console line:

- `fit`: a GPT moved to the end of a disk larger than the master's (always, on every
  write: agent.image.partitions.fit_gpt);
- `grow` (grow=yes): the last partition extended to the disk's end and its filesystem
  grown with the filesystem's own tool;
- `roots`: the Linux roots of the image found (GPT root types, /etc/os-release), mounted
  read-write with the kernel's own filesystems through a loop device over the partition
  (no partition nodes or udev needed); what cannot be opened (LVM, LUKS) is reported;
- `identity` (hostname=, identity=fresh): /etc/hostname, /etc/hosts, an empty
  /etc/machine-id and new SSH host keys;
- `cloudinit`: a NoCloud seed where the image has cloud-init.

`run.personalize` is the library entry; `herdcast receive`, `herdcast image restore` and the
node call it with a `Wishes` built from their options. A plain clone (no wishes) is only
fitted: its filesystems stay byte-faithful.
"""
