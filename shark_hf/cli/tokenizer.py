"""`shark-hf fit-tokenizer` and `shark-hf inspect-tokenizer`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import (
    Command,
    UserError,
    add_code_source,
    check_tokenizer_folder,
    is_local,
    positive,
    read_codes,
)


def _fit_args(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--embeddings", type=Path, help="Embeddings file (.safetensors from embed, .npy, .parquet, .json)."
    )
    add_code_source(source)
    p.add_argument("--key", default=None, help="Which set of a multi-set file (Dryad embeddings.json).")
    p.add_argument("--out", type=Path, required=True, help="Output tokenizer folder.")
    p.add_argument(
        "--kind",
        default="semantic",
        choices=["semantic", "random", "index"],
        help="semantic: Residual K-Means on --embeddings; random: the paper's random-ID baseline; "
        "index: one ID per code (plain RETAIN). random and index take any code source.",
    )
    p.add_argument("--levels", type=positive, default=4, help="L, the number of IDs per code.")
    p.add_argument("--codebook-size", type=positive, default=128, help="K, the clusters per level.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--deduplicate", action="store_true", help="semantic: append a level making tuples unique."
    )
    p.add_argument("--device", default=None, help="semantic: torch device of the k-means (default: cpu).")


def _fit_tokenizer(args: argparse.Namespace) -> None:
    from ..tokenization_shark import SharkTokenizer

    if args.kind != "semantic" and args.deduplicate:
        raise UserError("--deduplicate applies to --kind semantic only")
    if args.key and not args.embeddings:
        raise UserError("--key selects a set of an --embeddings file")
    embeddings = _load_embeddings(args.embeddings, args.key) if args.embeddings else None
    if args.kind == "semantic":
        if embeddings is None:
            raise UserError("--kind semantic needs --embeddings (make them with `shark-hf embed`)")
        device = {"device": args.device} if args.device else {}
        tokenizer = SharkTokenizer.fit(
            embeddings,
            args.levels,
            args.codebook_size,
            seed=args.seed,
            deduplicate=args.deduplicate,
            show_progress=True,
            **device,
        )
    else:
        codes = embeddings.codes if embeddings is not None else read_codes(args)
        if args.kind == "random":
            tokenizer = SharkTokenizer.random_ids(codes, args.levels, args.codebook_size, seed=args.seed)
        else:
            tokenizer = SharkTokenizer.index(codes)
    tokenizer.save_pretrained(args.out)
    print(
        f"{tokenizer.kind} tokenizer: {len(tokenizer)} codes, L={tokenizer.num_levels}, "
        f"K={tokenizer.codebook_size}, collision rate {tokenizer.collision_rate:.4f} -> {args.out}"
    )


def _load_embeddings(path: Path, key: str | None):
    from ..embeddings import load_embeddings

    try:
        return load_embeddings(path, key=key)
    except json.JSONDecodeError as error:  # load_embeddings does not name the file in this case
        raise UserError(f"{path} is not valid JSON: {error}") from None


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("tokenizer", help="A tokenizer folder or Hub repo id.")
    p.add_argument("--subfolder", default=None, help="Subfolder of a repo (a model repo's: tokenizer).")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit.")
    p.add_argument(
        "--top", type=positive, default=10, help="Purest clusters shown per level, and pairs shown."
    )
    p.add_argument("--min-size", type=positive, default=5, help="Leave out clusters with fewer codes.")
    p.add_argument("--json", action="store_true", help="Print the tokenizer's settings and report as JSON.")


def _inspect(args: argparse.Namespace) -> None:
    from ..tokenization_shark import SharkTokenizer

    if is_local(args.tokenizer, "tokenizer"):
        check_tokenizer_folder(Path(args.tokenizer) / (args.subfolder or ""))
    tokenizer = SharkTokenizer.from_pretrained(
        args.tokenizer, subfolder=args.subfolder, revision=args.revision
    )
    report = tokenizer.cluster_report(min_size=args.min_size)
    if args.json:
        settings = {k: v for k, v in tokenizer.config.items() if k != "codes"}
        print(json.dumps({"tokenizer": settings, **report.to_dict()}, indent=2))
        return
    print(f"{tokenizer!r}\ncollision rate {tokenizer.collision_rate:.4f}")
    if errors := tokenizer.settings.get("level_errors"):
        print("reconstruction MSE after each level: " + ", ".join(f"{e:.4f}" for e in errors))
    print()
    print(report.format(top=args.top), end="")


COMMANDS: dict[str, Command] = {
    "fit-tokenizer": (
        _fit_args,
        _fit_tokenizer,
        "Fit Residual K-Means codebooks: codes -> semantic IDs (or a baseline tokenizer).",
        (
            "shark-hf fit-tokenizer --embeddings emb.safetensors --levels 4 --codebook-size 128 --out tok/",
            "shark-hf fit-tokenizer --kind random --cohort cohort/ --out random_tok/",
            "shark-hf fit-tokenizer --kind index --cohort cohort/ --out index_tok/",
        ),
    ),
    "inspect-tokenizer": (
        _inspect_args,
        _inspect,
        "Report clusters with purity and cross-chapter ID sharing (the paper's Tables 4 and 5).",
        (
            "shark-hf inspect-tokenizer tok/",
            "shark-hf inspect-tokenizer tok/ --json > report.json",
            "shark-hf inspect-tokenizer my-org/shark-mimic3 --subfolder tokenizer",
        ),
    ),
}
