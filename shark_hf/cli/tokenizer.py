"""`shark-hf fit-tokenizer` and `shark-hf inspect-tokenizer`."""

from __future__ import annotations

import argparse
import json
import sys
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
    source.add_argument(
        "--code-systems",
        type=_systems,
        help="Comma-separated code systems, e.g. ICD9CM,ICD10CM: embed and fit every billable code of them "
        "(a universal tokenizer, no cohort input; --kind semantic only).",
    )
    p.add_argument(
        "--model", default=None, help="--code-systems: embedding model (default: offline all-MiniLM-L6-v2)."
    )
    p.add_argument(
        "--text",
        default="description",
        choices=["description", "hierarchy", "synonyms"],
        help="--code-systems: the text embedded for each code.",
    )
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
    p.add_argument("--seed", type=int, default=0, help="Seed of the k-means++ starts or the random IDs.")
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
    if args.code_systems:
        if args.kind != "semantic":
            raise UserError("--code-systems fits a semantic tokenizer: leave out --kind or use --system")
        device = {"device": args.device} if args.device else {}
        tokenizer = SharkTokenizer.from_code_systems(
            args.code_systems,
            model=args.model,
            text=args.text,
            num_levels=args.levels,
            codebook_size=args.codebook_size,
            seed=args.seed,
            deduplicate=args.deduplicate,
            **device,
        )
        _save(tokenizer, args.out)
        return
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
    _save(tokenizer, args.out)


def _save(tokenizer, out: Path) -> None:
    tokenizer.save_pretrained(out)
    print(
        f"{tokenizer.kind} tokenizer: {len(tokenizer)} codes, L={tokenizer.num_levels}, "
        f"K={tokenizer.codebook_size}, collision rate {tokenizer.collision_rate:.4f} -> {out}"
    )


def _systems(value: str) -> list[str]:
    systems = [part.strip().upper() for part in value.split(",") if part.strip()]
    unknown = [system for system in systems if system not in ("ICD9CM", "ICD10CM")]
    if unknown or not systems:
        raise argparse.ArgumentTypeError(f"code systems are ICD9CM and ICD10CM, got {value!r}")
    return systems


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
    p.add_argument(
        "--code-map",
        type=Path,
        default=None,
        metavar="PNG",
        help="Also draw the codes' 2-D map with the largest level-1 clusters named (semantic tokenizers).",
    )


def _inspect(args: argparse.Namespace) -> None:
    from ..tokenization_shark import SharkTokenizer

    if is_local(args.tokenizer, "tokenizer"):
        check_tokenizer_folder(Path(args.tokenizer) / (args.subfolder or ""))
    tokenizer = SharkTokenizer.from_pretrained(
        args.tokenizer, subfolder=args.subfolder, revision=args.revision
    )
    if args.code_map is not None:
        _draw_code_map(tokenizer, args.tokenizer, args.code_map)
    report = tokenizer.cluster_report(min_size=args.min_size)
    stats = tokenizer.table_stats()
    if args.json:
        settings = {k: v for k, v in tokenizer.config.items() if k != "codes"}
        print(json.dumps({"tokenizer": settings, **stats, **report.to_dict()}, indent=2))
        return
    print(repr(tokenizer))
    if errors := tokenizer.settings.get("level_errors"):
        print("reconstruction MSE after each level: " + ", ".join(f"{e:.4f}" for e in errors))
    print(_format_stats(stats, tokenizer.codebook_size))
    print()
    print(report.format(top=args.top), end="")


def _draw_code_map(tokenizer, source: str, path: Path) -> None:
    from ..plots import plot_code_map
    from ..universal import UNIVERSAL_TOKENIZER

    if tokenizer.codebooks is None:
        raise UserError(f"--code-map needs a semantic tokenizer; {source} is of kind {tokenizer.kind!r}")
    name = "Universal tokenizer" if Path(source) == Path(UNIVERSAL_TOKENIZER) else f"Tokenizer {source}"
    plot_code_map(tokenizer, path, name=name)
    print(f"code map written to {path}", file=sys.stderr)


def _format_stats(stats: dict, codebook_size: int) -> str:
    """The code table, collision and GEM-alignment lines of `inspect-tokenizer` (`table_stats`)."""
    systems, collisions, gem = stats["code_systems"], stats["collisions"], stats["gem_alignment"]
    rates = collisions["prefix_collision_rates"]
    lines = [
        f"code table: every billable code of {' and '.join(systems)} (no cohort input)"
        if systems
        else "code table: a chosen list of codes (fitted on a cohort, it lists the cohort's codes)",
        "codes sharing their IDs with another code, levels "
        + ", ".join(f"1-{level}: {100 * rate:.2f}%" for level, rate in enumerate(rates, 1))
        + f" (full tuple: {collisions['num_collision_groups']} shared tuples, largest "
        f"{collisions['largest_group']} codes)",
        f"full-tuple collisions across CCS categories: {collisions['cross_ccs_pairs']} pairs "
        f"({collisions['cross_ccs_codes']} codes)",
    ]
    if gem:
        lines.append(
            f"ICD-9-CM -> ICD-10-CM (GEM, {gem['num_pairs']} pairs): same level 1 "
            f"{100 * gem['same_level1']:.1f}%, same levels 1-2 {100 * gem['same_levels12']:.1f}% "
            f"(chance 1/K = {100 / codebook_size:.2f}%, 1/K^2 = {100 / codebook_size**2:.4f}%; "
            f"shuffled targets {100 * gem['shuffled_level1']:.2f}%, {100 * gem['shuffled_levels12']:.4f}%)"
        )
    return "\n".join(lines)


COMMANDS: dict[str, Command] = {
    "fit-tokenizer": (
        _fit_args,
        _fit_tokenizer,
        "Fit Residual K-Means codebooks: codes -> semantic IDs (or a baseline tokenizer).",
        (
            "shark-hf fit-tokenizer --code-systems ICD9CM,ICD10CM --out universal_tok/",
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
