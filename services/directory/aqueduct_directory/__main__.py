"""``python -m aqueduct_directory`` serves the directory; ``python -m aqueduct_directory replay`` rebuilds
the KV snapshot from the event store and exits."""

from __future__ import annotations

import sys

from aqueduct_directory import bootstrap


def main(argv: list[str]) -> None:
    if argv[:1] == ["replay"]:
        bootstrap.run_replay()
    elif not argv:
        bootstrap.run()
    else:
        sys.exit("usage: python -m aqueduct_directory [replay]")


if __name__ == "__main__":
    main(sys.argv[1:])
