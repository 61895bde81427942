"""The ``guidino`` command line."""

import argparse
import sys


def _demo(args):
    print("GuiDINO demo: trains on a few labelled slices of the bundled sample volume, segments the")
    print("whole volume and writes the segmentation, the guide and a PNG montage. (The engine lands next.)")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="guidino", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the end-to-end demo on the bundled sample volume")
    demo.set_defaults(run=_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
