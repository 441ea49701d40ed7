"""Serving the explorer: which addresses it may bind to, and :func:`serve`."""

from __future__ import annotations

import os
from pathlib import Path

from .layout import build_app
from .request_checks import ExplorerInputError
from .state import DEFAULT_MAX_UPLOAD_MB, Explorer

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def check_host(host: str, allow_network: bool) -> None:
    """An ExplorerInputError for a non-loopback ``host`` unless ``allow_network``."""
    if not allow_network and host not in LOOPBACK_HOSTS:
        raise ExplorerInputError(f"host {host!r} would expose the explorer on the network; pass --allow-network to do "
                                 "that on purpose (anyone who can reach it can upload files and see the images)")


def serve(results_dir: str | Path, *, host: str = "127.0.0.1", port: int | None = None,
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, allow_network: bool = False, block: bool = True,
          release_unused: bool = False):
    """Start the explorer on ``host:port`` (Gradio picks a free port from 7860 when ``port`` is None).

    A host other than a loopback address needs ``allow_network``: anyone who can reach it can run analyses, upload
    files and read the image set's images. ``release_unused``: keep only the chosen model's index open
    (:class:`~clip_interp.heads.explorer.state.Explorer`).
    """
    check_host(host, allow_network)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    explorer = Explorer(results_dir, max_upload_mb=max_upload_mb, release_unused=release_unused)
    app = build_app(explorer)
    app.queue(default_concurrency_limit=1)
    app.launch(server_name=host, server_port=port, max_file_size=int(max_upload_mb * 2**20), share=False,
               ssr_mode=False, prevent_thread_lock=not block, show_error=False, quiet=False, footer_links=[])
    return app
