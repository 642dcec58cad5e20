"""Used-block images: which bytes of a disk hold data, and the stream that carries only those.

The data path reads top to bottom: `partitions` (MBR/GPT) -> `filesystems` (per partition,
the blocks its filesystem uses, from partclone's maps) -> `usedmap` (the disk's used extents)
-> `stream` (the herdcast image format: extents and their bytes, all-zero runs dropped) ->
`sink` (writing a stream back onto a disk, blank space per `blank=`).
"""
