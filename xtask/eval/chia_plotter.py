"""A real Chia plotter: chiapos (Chia's own proof-of-space library, from
PyPI) writing a plot of size K into DIR, as `chia plots create` does, then
a harvester's lookups on it. The plot's name is ordinary; what it is shows
in its header."""
import os
import sys

from chiapos import DiskPlotter, DiskProver

work, k = sys.argv[1], int(sys.argv[2])
tmp = os.path.join(work, "tmp")
os.makedirs(tmp, exist_ok=True)
# stdout is the plotter's progress log, thousands of lines: not the eval's.
devnull = os.open(os.devnull, os.O_WRONLY)
saved = os.dup(1)
os.dup2(devnull, 1)
DiskPlotter().create_plot_disk(tmp, tmp, work, "archive-0001.plot", k, b"\x01" * 48, os.urandom(32), 300, 32, 2000, 2, False)
os.dup2(saved, 1)
prover = DiskProver(os.path.join(work, "archive-0001.plot"))
found = sum(len(prover.get_qualities_for_challenge(os.urandom(32))) for _ in range(64))
print(f"plot k={prover.get_size()} written; {found} qualities over 64 challenges")
