"""The ``clip-interp`` command: ``clip-interp explore --results results/`` starts the head explorer.

Bad arguments (no results folder, no processed model, a network address without ``--allow-network``, a busy port)
end with a one-line message on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import InputError
from .explorer.server import check_host, serve
from .explorer.state import DEFAULT_MAX_UPLOAD_MB, check_results_dir

USAGE_ERROR = 2


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="clip-interp", description="Tools over the clip_interp workflow's results.")
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")
    explore = commands.add_parser(
        "explore", help="start the head explorer (a web app) on a results folder",
        description="Serve every model with results/heads/<model>/explorer.json in a web page: upload an image, "
                    "pick a head, run the five analyses. Binds to 127.0.0.1 unless --allow-network is given.")
    explore.add_argument("--results", required=True, help="the workflow's results folder (the one holding heads/)")
    explore.add_argument("--host", default="127.0.0.1",
                         help="address to bind (default 127.0.0.1; any other needs --allow-network)")
    explore.add_argument("--port", type=int, default=None, help="port (default: the first free one from 7860)")
    explore.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                         help=f"largest accepted upload in MB (default {DEFAULT_MAX_UPLOAD_MB:g})")
    explore.add_argument("--threads", type=int, default=1,
                         help="torch threads for the query's forward (default 1: on a shared 2-core machine one "
                              "thread answered fastest; see the README's latency table)")
    explore.add_argument("--release-unused", action="store_true",
                         help="when memory is short: keep only the chosen model's index and model open, releasing "
                              "the others' when another model is chosen (reopened, in seconds, when chosen again)")
    explore.add_argument("--allow-network", action="store_true",
                         help="allow a non-loopback --host: anyone who can reach it can use the app, upload files "
                              "and see the image set's images")
    return main


def explore(args: argparse.Namespace) -> None:
    if args.port is not None and not 0 < args.port < 65536:
        raise InputError(f"--port {args.port} is not a port number (1..65535)")
    check_host(args.host, args.allow_network)
    if args.threads < 1:
        raise InputError(f"--threads {args.threads} must be at least 1")
    models = check_results_dir(args.results)
    print(f"clip-interp explore: {len(models)} processed model(s) under {args.results}: {', '.join(models)}",
          flush=True)
    import torch

    torch.set_num_threads(args.threads)
    serve(args.results, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
          allow_network=args.allow_network, release_unused=args.release_unused)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        explore(args)
    except InputError as exc:
        print(f"clip-interp {args.command}: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except OSError as exc:  # e.g. the port is taken
        print(f"clip-interp {args.command}: error: cannot start the server: {exc}", file=sys.stderr)
        return USAGE_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
