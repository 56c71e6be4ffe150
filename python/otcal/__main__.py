"""``python -m otcal demo`` runs the embedded demo; ``python -m otcal info`` describes the machine."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m otcal", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="solve, sparsify and calibrate small synthetic problems")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    demo.add_argument("--n", type=int, default=2000, help="source points; the target has 1.5 times as many (default 2000)")
    demo.add_argument("--records", type=int, default=20000, help="survey records (default 20000)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sub.add_parser("info", help="build options, devices, CPU threads and memory, as JSON")
    args = parser.parse_args(argv)

    from . import InvalidArgument, system_info

    if args.command == "info":
        print(json.dumps(system_info(), indent=2))
        return 0
    from .demo import run_demo

    try:
        run_demo(device=args.device, n=args.n, n_records=args.records, seed=args.seed)
    except InvalidArgument as exc:
        print(f"otcal demo: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
