"""`physteer collect`: balanced renders → tap-layer activations in an ActivationStore."""

from __future__ import annotations

import argparse
import os

from rich.console import Console
from rich.progress import Progress


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `collect`."""
    p = subparsers.add_parser(
        "collect", help="render balanced frames and store the VLM's tap-layer activations"
    )
    p.add_argument("--out", default="runs/collect/store", help="store folder (must be new)")
    p.add_argument("--images", type=int, default=2048, help="number of frames (default 2048)")
    p.add_argument(
        "--seed",
        type=int,
        default=1_000_000,
        help="first env seed (keep apart from training seeds)",
    )
    p.add_argument("--model", default="tiny")
    p.add_argument("--layer", type=int, default=None, help="decoder layer (default: 2/3 depth)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=1,
                   help="processes rendering the next frames while the model reads (the same frames; default 1)")  # fmt: skip
    p.add_argument(
        "--random-weights",
        type=int,
        metavar="SEED",
        default=None,
        help="the discovery control: same architecture, freshly initialised weights (seeded)",
    )
    p.set_defaults(func=cmd_collect)


def cmd_collect(args: argparse.Namespace) -> int:
    """Run the collection and print the store's size."""
    from agents.backend import load_vlm
    from agents.vlm_agent import default_tap_layer
    from studies.collect import collect_activations

    backend = load_vlm(args.model)
    if args.random_weights is not None:
        from studies.collect import random_weights_backend

        backend = random_weights_backend(backend, seed=args.random_weights)
    layer = default_tap_layer(backend.n_layers) if args.layer is None else args.layer
    console = Console()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("frames", total=args.images)
        store = collect_activations(
            backend,
            layer,
            args.out,
            args.images,
            seed=args.seed,
            batch_size=args.batch_size,
            progress=lambda n: bar.update(task, completed=n),
            workers=args.workers,
        )
    console.print(
        f"{store}  (layer {layer}); steering vector: {os.path.join(args.out, 'dom_vector.safetensors')}"
    )
    return 0
