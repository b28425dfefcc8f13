"""``python -m SAMSegmenterWeb``: serve the SAMSegmenter web app (3D Slicer's libraries through
trame-slicer) to a browser. ``python -m SAMSegmenterLib web ...`` starts this as a child process.

Prints the app's URL (and a ``SAMSEGMENTER_WEB_URL <url>`` line for scripts), then serves until
interrupted. The model runs in an inference service: a local one started with the app (with the
model options given here), or the one at --server. Needs the ``web`` extra (trame-slicer); trame
is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from SAMSegmenterLib.cli import Parser, run_command
from SAMSegmenterLib.cli.engine import add_server_options, check_server_args
from SAMSegmenterLib.cli.options import add_model_options
from SAMSegmenterLib.cli.serve import is_loopback
from SAMSegmenterLib.errors import InputError

URL_LINE = "SAMSEGMENTER_WEB_URL"
WEB_SAMPLES = ("mni152",)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m SAMSegmenterWeb", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--volume", nargs="+", type=Path, metavar="FILE_OR_DICOM_FOLDER",
                   help="volume to open: a file Slicer reads (NIfTI, NRRD, ...) or a folder of DICOM files "
                        "(default: the MNI152 sample)")
    p.add_argument("--sample", choices=WEB_SAMPLES, help="open a sample volume (the default without --volume)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; anything else needs --allow-remote)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0 picks a free port)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --host: the app has no login and serves one user per process")
    add_model_options(p)
    add_server_options(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and serve; the engine CLI's error contract (one ``error:`` line, exit 2; Ctrl-C 130)."""
    return run_command(lambda: run(build_parser().parse_args(argv)))


def check_args(args: argparse.Namespace) -> None:
    """Raise InputError (with the flag to use) for a contradictory or unsafe command line."""
    if args.volume and args.sample:
        raise InputError("give --volume or --sample, not both")
    for path in args.volume or ():
        if not path.exists():
            raise InputError(f"--volume {path} does not exist")
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be between 0 and 65535, got {args.port}")
    if not is_loopback(args.host) and not args.allow_remote:
        raise InputError(f"--host {args.host} is reachable from other machines; add --allow-remote to serve there "
                         "(the app has no login)")
    check_server_args(args)


def check_port(host: str, port: int) -> None:
    """Raise InputError when ``host:port`` cannot be listened on (in use, not an address of this machine)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port "
                         "(0 picks a free one) or --host") from None


def url_host(host: str) -> str:
    """The host name to put in the printed URL (a wildcard address is not browsable)."""
    if host in ("0.0.0.0", "::", ""):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


def run(args: argparse.Namespace) -> int:
    check_args(args)
    check_port(args.host, args.port)
    if not is_loopback(args.host):
        print(f"warning: serving on {args.host}: anyone who can reach port {args.port} can use this app and its "
              "data (no login; trame serves one user per process)", file=sys.stderr)
    if importlib.util.find_spec("trame_slicer") is None:
        raise InputError("the web app needs trame-slicer: pip install 'samsegmenter[web]'")
    from SAMSegmenterWeb.rendering import configure_headless

    window = configure_headless()
    from SAMSegmenterLib.service.client import ServiceClient
    from SAMSegmenterMRML.engines import ServiceEngine
    from SAMSegmenterWeb.app import SAMSegmenterWebApp, ServiceOptions
    from SAMSegmenterWeb.controller_host import service_support

    if args.server:
        engine = ServiceEngine(ServiceClient.remote(args.server, token_file=args.token_file, cafile=args.cafile))
    else:
        options = ["--model", args.model, "--device", args.device, "--precision", args.precision, "--backend",
                   args.backend, *(["--checkpoint", args.checkpoint] if args.checkpoint else [])]
        engine = ServiceEngine(server_args=options)
        engine.local.start()  # loads the model while the app starts: the first box does not wait for it
    service = ServiceOptions(args.server, args.token_file) if args.server else None
    app = SAMSegmenterWebApp(service=service, controller_support=service_support(engine, args.model, args.checkpoint))
    with tempfile.TemporaryDirectory(prefix="samsegmenter-web-") as tmp:
        if args.volume:
            app.load(args.volume)
        else:
            from SAMSegmenterLib.io.sample_data import write_sample

            sample = args.sample or "mni152"
            app.load([write_sample(sample, Path(tmp) / f"{sample}.nii.gz")])

    def announce(**_: object) -> None:
        url = f"http://{url_host(args.host)}:{app.server.port}/"
        print(f"SAMSegmenter web app ({window}): {url}", flush=True)
        print(f"{URL_LINE} {url}", flush=True)

    app.server.controller.on_server_ready.add(announce)
    sys.argv = sys.argv[:1]  # trame parses sys.argv for its own flags (e.g. its --server): ours are parsed already
    app.server.start(port=args.port, host=args.host, open_browser=False, show_connection_info=False, timeout=0)
    return 0
