"""``forgetmi convert-sweep SOURCE TARGET``: the release's sweep file with forgetmi's key names,
commented with what became what and what was dropped and why (:mod:`forgetmi.hpc.convert`)."""

from __future__ import annotations

import argparse

from forgetmi.errors import exit_on_error
from forgetmi.hpc.convert import convert_file


@exit_on_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="forgetmi convert-sweep",
                                     description="rewrite the Forget-MI release's sweep file "
                                                 "with forgetmi's key names, commented")
    parser.add_argument("source", help="the release's sweep file (config.yaml)")
    parser.add_argument("target", help="the forgetmi sweep file to write")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a file convert-sweep wrote before (nothing else)")
    args = parser.parse_args(argv)
    convert_file(args.source, args.target, overwrite=args.overwrite)
    return 0
