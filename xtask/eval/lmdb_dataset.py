"""A benign look-alike of a chain database: an ML dataset written into an
LMDB (the `lmdb` package from PyPI, as image pipelines do), busy on the CPU
for SECONDS. The format is a node's; the layout and the rest are not."""
import os
import sys
import time

import lmdb

work, seconds = sys.argv[1], float(sys.argv[2])
env = lmdb.open(os.path.join(work, "train-images.lmdb"), map_size=1 << 30)
end = time.time() + seconds
n = 0
while time.time() < end:
    with env.begin(write=True) as txn:
        for _ in range(500):
            # "Decoding" an image: CPU work, then its bytes stored.
            sample = bytes((i * n) & 0xFF for i in range(4096))
            txn.put(b"%08d" % n, sample)
            n += 1
env.sync()
print(f"{n} samples written")
