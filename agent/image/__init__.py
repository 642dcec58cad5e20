"""Used-block images: which bytes of a disk hold data, and the stream that carries only those.

The data path reads top to bottom: `partitions` (MBR/GPT) -> `filesystems` (per partition,
the blocks its filesystem uses, from partclone's maps) -> `usedmap` (the disk's used extents)
-> `stream` (the herdcast image format: header and metadata, extents and their bytes,
all-zero runs dropped) -> `sink` (writing a stream back onto a disk, blank space per
`blank=`). Around it: `source` (what a sender sends), `sniff` (a receiver's look at a
stream's first bytes), `store` and `catalogue` (image files kept on a server, what each
says of itself), `expand` (a stored image as the raw disk, for stock receivers) and `files`
(capture and restore without a network). Compression comes from agent.codec, below this
package; nothing here imports agent.transfer.
"""
