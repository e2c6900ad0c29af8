"""The README's main command: plan a SpaceCoMP job and print it as a table.

    ./testbed demo            (= python3 -m experiments.demo)

Until the emulator and the node application land this plans the reference's CI job
(11x11, AOI 3..8, 15 collectors, bipartite, center reducer) without a network.
Extra arguments go to ``python3 -m node_app.job``.
"""

import sys

from node_app import job

DEFAULT_ARGS = ["--grid", "11x11", "-a", "bipartite", "-r", "center", "-s", "1",
                "-mi", "3", "-ma", "8", "-c", "15", "--dry-run"]

if __name__ == "__main__":
    sys.exit(job.main(sys.argv[1:] or DEFAULT_ARGS))
