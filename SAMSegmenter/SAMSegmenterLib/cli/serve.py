"""``serve``: run the inference service (models, volumes and embeddings in this process).

Front ends (the Slicer effect, the web app, ``segment --server``) talk to it over HTTP with a
bearer token. Without --token-file a random token is written to a file only you can read
(its path is printed). Port 0 picks a free port; the server prints one line
``SAMSEGMENTER_SERVICE {"url": ...}`` when it is ready. Binding anything but loopback needs
--tls-cert/--tls-key, or --insecure (the token then crosses the network in clear text).
Clients choose a model by name and weights only by a name given with --named-checkpoint; a path they
send is opened only with --client-checkpoints (loopback only, for the local user's own front end).
Limits, timeouts and status codes: docs/service.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import tempfile
from pathlib import Path

from ..errors import InputError
from .checks import check_pem
from .options import add_model_options

LOOPBACK_NAMES = ("localhost",)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run the inference service (for Slicer, the web app and --server)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: a free port, printed when ready)")
    p.add_argument("--token-file", type=Path,
                   help="file holding the access token (created with a new random token if missing)")
    p.add_argument("--tls-cert", type=Path, help="TLS certificate (PEM) to serve HTTPS")
    p.add_argument("--tls-key", type=Path, help="TLS private key (PEM)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback address without TLS (warns)")
    p.add_argument("--ready-file", type=Path, help="also write the ready line to this file (for launchers)")
    p.add_argument("--watch-stdin", action="store_true",
                   help="exit when standard input closes (the process that started the server is gone)")
    limits = p.add_argument_group("limits")
    limits.add_argument("--max-sessions", type=int, default=16, help="open volumes at a time (default 16)")
    limits.add_argument("--max-volume-mb", type=int, default=1024, help="largest volume in MiB (default 1024)")
    limits.add_argument("--max-total-volume-mb", type=int, default=4096,
                        help="all open volumes and uploads in flight together, in MiB (default 4096)")
    limits.add_argument("--session-idle", type=float, default=1800.0, metavar="S",
                        help="close volumes unused for this many seconds (default 1800)")
    limits.add_argument("--job-lease", type=float, default=60.0, metavar="S",
                        help="cancel a propagation nobody has polled for this many seconds (default 60)")
    limits.add_argument("--cache-mb", type=int, default=1024, help="embedding cache in MiB (default 1024)")
    limits.add_argument("--max-jobs", type=int, default=4,
                        help="propagations running at a time; one more is refused with 503 (default 4)")
    limits.add_argument("--max-json-mb", type=int, default=8,
                        help="largest JSON request (prompts, masks, propagations) in MiB (default 8)")
    limits.add_argument("--max-connections", type=int, default=64,
                        help="open connections at a time (default 64, fewer if the open-file limit is low)")
    limits.add_argument("--request-timeout", type=float, default=10.0, metavar="S",
                        help="close a connection whose request head is not complete, or whose upload stalls, "
                             "after this many seconds (default 10)")
    limits.add_argument("--shutdown-timeout", type=float, default=5.0, metavar="S",
                        help="on SIGTERM or Ctrl+C, wait this long for running requests, then exit (default 5)")
    weights = p.add_argument_group("weights clients may ask for")
    weights.add_argument("--named-checkpoint", action="append", default=[], metavar="NAME=PATH",
                         help="a weights file clients may choose by NAME (checkpoint=NAME); repeatable")
    weights.add_argument("--client-checkpoints", action="store_true",
                         help="let clients name a weights file on this machine by its path (loopback only: "
                              "for a service started by the local user's own front end)")
    add_model_options(p)
    p.set_defaults(run=run)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or name (only this machine can connect)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# (flag, attribute, least value): whole numbers of at least 1, except the port (0: a free one); the seconds
# are checked as positive and finite.
_COUNTS = (("--max-sessions", "max_sessions", 1), ("--max-volume-mb", "max_volume_mb", 1),
           ("--max-total-volume-mb", "max_total_volume_mb", 1), ("--cache-mb", "cache_mb", 0),
           ("--max-jobs", "max_jobs", 1), ("--max-json-mb", "max_json_mb", 1),
           ("--max-connections", "max_connections", 1))
_SECONDS = (("--session-idle", "session_idle"), ("--job-lease", "job_lease"), ("--request-timeout", "request_timeout"),
            ("--shutdown-timeout", "shutdown_timeout"))


def check_limits(args: argparse.Namespace) -> None:
    """One-line errors for a port or limit the server could not work with, before anything starts."""
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be 0 (a free port) to 65535, got {args.port}")
    for flag, name, least in _COUNTS:
        if getattr(args, name) < least:
            raise InputError(f"{flag} must be at least {least}, got {getattr(args, name)}")
    if args.max_total_volume_mb < args.max_volume_mb:
        raise InputError(f"--max-total-volume-mb ({args.max_total_volume_mb}) must be at least --max-volume-mb "
                         f"({args.max_volume_mb})")
    for flag, name in _SECONDS:
        value = getattr(args, name)
        if not 0 < value < float("inf"):
            raise InputError(f"{flag} must be a positive number of seconds, got {value:g}")


def run(args: argparse.Namespace) -> int:
    from ..service.server import ServerConfig, serve
    from ..service.sessions import Limits
    from ..service.tokens import token_for_server

    check_limits(args)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise InputError("TLS needs both --tls-cert and --tls-key")
    for path in (args.tls_cert, args.tls_key):
        if path is not None and not path.is_file():
            raise InputError(f"TLS file {path} does not exist")
    if args.tls_cert:
        check_pem(str(args.tls_cert), "--tls-cert/--tls-key", keyfile=str(args.tls_key))
    if not is_loopback(args.host) and not args.tls_cert:
        if not args.insecure:
            raise InputError(f"listening on {args.host} exposes the service to the network: give --tls-cert and "
                             "--tls-key, or --insecure to send the token in clear text")
        print(f"warning: serving on {args.host} without TLS: the access token and the images cross the network "
              "unencrypted", file=sys.stderr)
    if args.client_checkpoints and not is_loopback(args.host):
        raise InputError("--client-checkpoints lets clients open files on this machine: it is refused with a "
                         "non-loopback --host; name the weights with --named-checkpoint NAME=PATH instead")
    named = {}
    for item in args.named_checkpoint:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--named-checkpoint takes NAME=PATH, got {item!r}")
        if not Path(path).expanduser().is_file():
            raise InputError(f"--named-checkpoint {name}: {path} is not a file")
        named[name] = str(Path(path).expanduser())
    token_file = args.token_file
    if token_file is None:
        token_file = Path(tempfile.mkdtemp(prefix="samsegmenter-")) / "token"  # the folder is private (0700)
    token = token_for_server(token_file)
    limits = Limits(max_sessions=args.max_sessions, max_volume_bytes=args.max_volume_mb << 20,
                    max_total_volume_bytes=args.max_total_volume_mb << 20, session_idle_s=args.session_idle,
                    job_lease_s=args.job_lease, max_jobs=args.max_jobs)
    config = ServerConfig(token=token, model=args.model, device=args.device, precision=args.precision,
                          backend=args.backend, checkpoint=args.checkpoint, limits=limits,
                          cache_bytes=args.cache_mb << 20, named_checkpoints=named,
                          client_paths=args.client_checkpoints, max_json_bytes=args.max_json_mb << 20,
                          request_timeout=args.request_timeout, max_connections=args.max_connections,
                          shutdown_timeout=args.shutdown_timeout)
    print(f"access token in {token_file}", file=sys.stderr)
    tls = (str(args.tls_cert), str(args.tls_key)) if args.tls_cert else None
    serve(config, host=args.host, port=args.port, tls=tls, token_file=token_file, ready_file=args.ready_file,
          watch_stdin=args.watch_stdin)
    return 0
