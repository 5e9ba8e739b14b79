"""A block of a docs page that a script writes: what lies between `<!-- NAME:start -->` and
`<!-- NAME:end -->`, read back (`block`), rewritten alone (`write`), and the command line of a
script that prints it or, with `--write`, writes it (`main`). Used by scripts/settings_table.py
and scripts/route_table.py; tests/docs checks each committed block equals what its script prints."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GeneratedBlock:
    """The block named `name` of the page `doc`, made by `make` (markdown ending with a newline)."""

    name: str
    doc: Path
    make: Callable[[], str]
    description: str

    @property
    def start(self) -> str:
        return f"<!-- {self.name}:start -->"

    @property
    def end(self) -> str:
        return f"<!-- {self.name}:end -->"

    def block(self, text: str) -> str:
        """What lies between the markers in `text`; ValueError when they are missing."""
        start, end = text.find(self.start), text.find(self.end)
        if start < 0 or end < start:
            raise ValueError(f"no {self.start} ... {self.end} block")
        return text[start + len(self.start):end].lstrip("\n")

    def write(self, doc: Path) -> None:
        """Replace the block of `doc` with what `make` gives; ValueError when it has no markers."""
        text = doc.read_text()
        self.block(text)  # refuses a page without the markers
        start, end = text.find(self.start) + len(self.start), text.find(self.end)
        doc.write_text(f"{text[:start]}\n{self.make()}{text[end:]}")

    def main(self, argv: list[str] | None = None) -> None:
        """Print the block, or with `--write [DOC]` write it into DOC (default `doc`)."""
        parser = argparse.ArgumentParser(description=self.description)
        parser.add_argument("--write", nargs="?", const=self.doc, type=Path, metavar="DOC",
                            help=f"rewrite the block in DOC (default {self.doc.name}) instead of printing it")
        args = parser.parse_args(argv)
        if args.write:
            self.write(args.write)
        else:
            print(self.make(), end="")
