"""Federated training of `SharkForDiagnosisPrediction` across hospitals, on Flower (`flwr` 1.x).

Each hospital (a Flower *SuperNode*) keeps its cohort folder and shares only weights and aggregate counts;
the shared tokenizer (default: the universal tokenizer, every ICD-9-CM and ICD-10-CM code) gives ICD-9 and
ICD-10 sites the same input ids, and the label space is fixed (all CCS categories), so every site trains the
same model. The server (the Flower *ServerApp*) runs:

1. a `query` round: each site reports its patient and sample counts per split and how many of its training
   samples carry each label (counts only); the pooled counts set the head's starting bias as in `train`;
2. `--num-rounds` rounds of Flower's FedAvg (or FedProx): the sampled sites train `local-epochs` epochs
   with the training code of `shark_hf.training` (same defaults), then every site evaluates the new global
   model on its own validation split; the server pools the metrics exactly (P@k and R@k weighted by
   samples, Acc@k by target labels, the loss by samples x labels) and keeps the best round on pooled
   validation P@10;
3. a final evaluation of the best round's model: each site reports its validation and test metrics and
   runs the membership-inference audit (`shark_hf.evaluation.membership_audit`) on its own data.

It writes an ordinary model folder: `config.json`, `model.safetensors`, `tokenizer/`, and `metrics.json`
(pooled and per-site metrics, per-site audits, the sites' counts, rounds, seconds per round; never a row).

Entry points: `server_app` and `client_app` (a Flower app: `flwr run` with a SuperLink and one SuperNode
per hospital, `--node-config "cohort='/data/cohort'"`; see `examples/shark-federated/`), and `simulate` (the
same apps in one process, over `LocalGrid`; `shark-hf federate`). Options travel as the Flower run config
(`FederatedArguments.to_run_config`). Optional privacy: client-side update clipping with Gaussian noise
added by the server (Flower's `DifferentialPrivacyClientSideFixedClipping` and `fixedclipping_mod`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from datasets import DatasetDict, load_from_disk
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg, FedProx

from .codes import label_names as code_label_names
from .configuration_shark import SharkConfig
from .data.collator import VisitCollator, check_cohort_codes
from .evaluation import REPORT_KS, membership_audit, predict_scores, restrict_labels, split_metrics
from .modeling_shark import SharkForDiagnosisPrediction
from .output_folder import check_output_dir
from .privacy import BOOTSTRAP_RESAMPLES
from .tokenization_shark import SharkTokenizer
from .training import (
    SELECTION_METRIC,
    TrainerState,
    build_model,
    cohort_summary,
    frequency_bias,
    init_head_bias,
    label_counts,
    make_loaders,
    make_scheduler,
    train_epoch,
)
from .training_args import TrainingArguments
from .universal import UNIVERSAL_TOKENIZER
from .utils import TOKENIZER_SUBFOLDER, atomic_write_text

logger = logging.getLogger(__name__)

STRATEGIES = ("fedavg", "fedprox")
UNIVERSAL = "universal"  # the run config's name for shark_hf.UNIVERSAL_TOKENIZER (resolved on each machine)
SPLITS = ("train", "validation", "test")
CLIPPING_NORM_KEY = "clipping_norm"  # the config key Flower's DP wrapper sends (flwr.common.constant)


@dataclass
class FederatedArguments:
    """Options of a federated run; each is a key of the Flower run config (`to_run_config`: `num_rounds`
    is `num-rounds`), shared by the ServerApp and every ClientApp. Training options not listed keep the
    defaults of `TrainingArguments`."""

    output_dir: str = ""  # where the server writes the model folder
    tokenizer: str = UNIVERSAL  # a SharkTokenizer folder or repo id present at every site, or "universal"
    label_space: str = "ccs"  # ccs or ccsr: fixed lists, the same at every site
    num_rounds: int = 20  # best rounds 15-19 of 20 on the built-in cohort (RESULTS.md, federated)
    local_epochs: int = 1
    strategy: str = "fedavg"  # fedavg or fedprox
    proximal_mu: float = 0.01  # FedProx's proximal weight
    fraction_train: float = 1.0  # share of the sites that train in a round (all evaluate)
    min_sites: int = 2  # the server waits for this many sites before starting
    seed: int = 0
    batch_size: int = 64
    eval_batch_size: int = 256
    learning_rate: float = 1e-2
    embed_dim: int = 16
    hidden_size: int = 16
    max_visits: int = 0  # 0: all visits
    unknown: str = "error"
    dp_clipping_norm: float = 0.0  # > 0: clip each site's update to this L2 norm and add server noise
    dp_noise_multiplier: float = 0.0  # noise std = multiplier x clipping norm / sampled sites
    round_timeout: float = 3600.0  # seconds to wait for the sites' replies in a round
    overwrite_output_dir: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.label_space not in ("ccs", "ccsr"):
            raise ValueError(
                f"--label_space must be ccs or ccsr for federated training (a fixed list the same at every "
                f"site), got {self.label_space!r}"
            )
        for name in ("num_rounds", "local_epochs", "min_sites", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 < self.fraction_train <= 1.0:
            raise ValueError(f"--fraction_train must be in (0, 1], got {self.fraction_train}")
        if self.dp_clipping_norm < 0 or self.dp_noise_multiplier < 0:
            raise ValueError("--dp_clipping_norm and --dp_noise_multiplier must be >= 0")
        if self.dp_noise_multiplier > 0 and self.dp_clipping_norm == 0:
            raise ValueError("--dp_noise_multiplier needs --dp_clipping_norm > 0 (noise is scaled by it)")

    def to_run_config(self) -> dict[str, bool | int | float | str]:
        return {field.name.replace("_", "-"): value for field, value in _items(self)}

    @classmethod
    def from_run_config(cls, run_config: dict) -> FederatedArguments:
        """The arguments from a Flower run config (unknown keys are an error; missing ones take defaults)."""
        names = {field.name.replace("_", "-"): field for field in dataclasses.fields(cls)}
        unknown = sorted(set(run_config) - set(names))
        if unknown:
            raise ValueError(f"unknown run config keys {unknown}; known: {sorted(names)}")
        values = {}
        for key, value in run_config.items():
            default = names[key].default
            values[names[key].name] = type(default)(value)
        return cls(**values)

    def training_arguments(self, cohort: str = "") -> TrainingArguments:
        """The `TrainingArguments` of one site's local training (`local_epochs` epochs per round)."""
        return TrainingArguments(
            output_dir=self.output_dir,
            cohort=cohort,
            tokenizer=resolve_tokenizer(self.tokenizer),
            label_space=self.label_space,
            embed_dim=self.embed_dim,
            hidden_size=self.hidden_size,
            learning_rate=self.learning_rate,
            num_epochs=self.local_epochs,
            batch_size=self.batch_size,
            eval_batch_size=self.eval_batch_size,
            max_visits=self.max_visits or None,
            unknown=self.unknown,
            seed=self.seed,
        )


def _items(args: FederatedArguments):
    return ((field, getattr(args, field.name)) for field in dataclasses.fields(args))


def resolve_tokenizer(name: str) -> str:
    return UNIVERSAL_TOKENIZER if name == UNIVERSAL else name


# ----------------------------------------------------------------------------------------------- sites


@dataclass
class Site:
    """One hospital's data, loaded once per process: its name, cohort and tokenizer."""

    name: str
    cohort: DatasetDict
    tokenizer: SharkTokenizer


_SITES: dict[tuple, Site] = {}


def load_site(context: Context) -> Site:
    """The site of a SuperNode: `node_config["cohort"]` (a cohort folder), named `node_config["name"]`
    (default: the folder's name). Codes are checked against the tokenizer once, when first loaded."""
    if "cohort" not in context.node_config:
        raise ValueError(
            "this SuperNode has no cohort: start it with --node-config \"cohort='/path/to/cohort'\""
        )
    args = FederatedArguments.from_run_config(dict(context.run_config))
    folder = str(context.node_config["cohort"])
    key = (folder, args.tokenizer, args.unknown)
    if key not in _SITES:
        cohort = load_from_disk(folder)
        missing = [split for split in SPLITS if split not in cohort]
        if missing:
            raise ValueError(f"{folder}: the cohort has no {', '.join(missing)} split")
        tokenizer = SharkTokenizer.from_pretrained(resolve_tokenizer(args.tokenizer))
        check_cohort_codes(tokenizer, cohort, args.unknown)
        name = str(context.node_config.get("name", Path(folder).name))
        _SITES[key] = Site(name, cohort, tokenizer)
    return _SITES[key]


def _model_from(message: Message, site: Site) -> SharkForDiagnosisPrediction:
    """The global model a message carries: its config (`config["model-config"]`, JSON) and weights."""
    config = SharkConfig.from_dict(json.loads(message.content["config"]["model-config"]))
    model = SharkForDiagnosisPrediction(config)
    model.check_tokenizer(site.tokenizer)
    load_arrays(model, message.content["arrays"])
    return model


def to_arrays(state: dict[str, torch.Tensor]) -> ArrayRecord:
    """The weights as Flower arrays; a 0-d tensor travels as shape `[1]`, because Flower's update clipping
    (`flwr.supercore.differential_privacy.compute_clip_model_update`) leaves 0-d arrays unclipped."""
    return ArrayRecord({name: t.reshape(1) if t.dim() == 0 else t for name, t in state.items()})


def load_arrays(model: torch.nn.Module, arrays: ArrayRecord) -> None:
    """Load `to_arrays` weights into `model` (shapes restored)."""
    shapes = {name: t.shape for name, t in model.state_dict().items()}
    model.load_state_dict({name: t.reshape(shapes[name]) for name, t in arrays.to_torch_state_dict().items()})


def _accelerator(seed: int) -> Accelerator:
    return Accelerator(dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=seed))


def _loaders(args: TrainingArguments, site: Site, config: SharkConfig) -> dict:
    """`make_loaders` over the site's cohort, target labels outside the label space left out."""
    cohort = DatasetDict(site.cohort)
    for split in ("validation", "test"):
        cohort[split], _ = restrict_labels(cohort[split], dict.fromkeys(config.label2id))
    collator = VisitCollator.for_model(
        site.tokenizer, config, max_visits=args.max_visits, unknown=args.unknown
    )
    return make_loaders(args, cohort, collator)


# ---------------------------------------------------------------------------------------------- client

client_app = ClientApp()


def _clip_when_asked(message: Message, context: Context, call_next) -> Message:
    """Flower's `fixedclipping_mod` when the server's DP wrapper sends a clipping norm, else nothing."""
    if CLIPPING_NORM_KEY in message.content["config"]:
        return fixedclipping_mod(message, context, call_next)
    return call_next(message, context)


@client_app.query()
def site_summary(message: Message, context: Context) -> Message:
    """Counts only: patients and samples per split, and the training samples carrying each label."""
    site = load_site(context)
    labels = json.loads(message.content["config"]["labels"])
    summary = cohort_summary(site.cohort)
    counts = label_counts(site.cohort["train"], dict.fromkeys(labels))
    metrics = {"label-counts": [int(c) for c in counts.tolist()]}
    for kind in ("patients", "samples"):
        metrics.update({f"{split}/{kind}": int(summary[kind][split]) for split in SPLITS})
    site_record = ConfigRecord({"name": site.name, "task": json.dumps(summary["task"])})
    return Message(RecordDict({"metrics": MetricRecord(metrics), "site": site_record}), reply_to=message)


@client_app.train(mods=[_clip_when_asked])
def train_site(message: Message, context: Context) -> Message:
    """`local-epochs` epochs of `shark_hf.training.train_epoch` on the site's training split, from the
    global weights; FedProx adds mu (w - w_global) to every gradient. Replies the new weights."""
    site = load_site(context)
    federated = FederatedArguments.from_run_config(dict(context.run_config))
    args = federated.training_arguments()
    server_round = int(message.content["config"]["server-round"])
    set_seed(args.seed + server_round)
    model = _model_from(message, site)
    accelerator = _accelerator(args.seed)
    loader = _loaders(args, site, model.config)["train"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    scheduler = accelerator.prepare(make_scheduler(args, accelerator, optimizer, len(loader)))
    hooks = _proximal_hooks(model, float(message.content["config"].get("proximal-mu", 0.0)))
    state = TrainerState(epoch=(server_round - 1) * args.num_epochs)  # a new shuffling order each epoch
    losses = []
    for epoch in range(args.num_epochs):
        desc = f"{site.name}: round {server_round}, local epoch {epoch + 1}/{args.num_epochs}"
        losses.append(train_epoch(args, accelerator, model, optimizer, scheduler, loader, state, desc))
        state.epoch, state.step_in_epoch, state.epoch_samples, state.epoch_loss_sum = (
            state.epoch + 1,
            0,
            0,
            0.0,
        )
    for hook in hooks:
        hook.remove()
    weights = accelerator.unwrap_model(model).state_dict()
    metrics = MetricRecord({"num-examples": len(site.cohort["train"]), "train_loss": losses[-1]})
    content = RecordDict({"arrays": to_arrays(weights), "metrics": metrics})
    return Message(content, reply_to=message)


def _proximal_hooks(model: torch.nn.Module, mu: float) -> list:
    """Gradient hooks adding FedProx's mu (w - w_global) (the gradient of mu/2 ||w - w_global||^2)."""
    if mu == 0.0:
        return []
    hooks = []
    for parameter in model.parameters():
        anchor = parameter.detach().clone()
        hooks.append(
            parameter.register_hook(lambda grad, p=parameter, a=anchor: grad + mu * (p.detach() - a))
        )
    return hooks


@client_app.evaluate()
def evaluate_site(message: Message, context: Context) -> Message:
    """The global model's metrics on the site's validation split (and, when `config["final"]`, its test
    split and the membership audit of its training against its test samples)."""
    site = load_site(context)
    args = FederatedArguments.from_run_config(dict(context.run_config)).training_arguments()
    final = bool(message.content["config"].get("final", False))
    model = _model_from(message, site)
    accelerator = _accelerator(args.seed)
    loaders = _loaders(args, site, model.config)
    model = accelerator.prepare(model)
    metrics: dict[str, float | int] = {}
    scores = {}
    for split in ("validation", "test") if final else ("validation",):
        logits, labels, loss = predict_scores(model, accelerator.prepare(loaders[split]), accelerator)
        scores[split] = logits, labels
        metrics.update({f"{split}/{k}": v for k, v in _poolable(split_metrics(logits, labels, loss), labels)})
    metrics["num-examples"] = metrics["validation/num_samples"]
    if final:
        patients = {name: list(site.cohort[name]["patient_id"]) for name in ("train", "test")}
        members = accelerator.prepare(loaders["members"])
        audit = membership_audit(model, members, *scores["test"], accelerator, patients, args.seed)
        metrics["audit/auc"] = audit["membership_inference_auc"]
        metrics["audit/auc_low"], metrics["audit/auc_high"] = audit["auc_95ci"]
        for key in ("members", "nonmembers", "member_patients", "nonmember_patients"):
            metrics[f"audit/{key}"] = audit[key]
    content = RecordDict({"metrics": MetricRecord(metrics), "site": ConfigRecord({"name": site.name})})
    return Message(content, reply_to=message)


def _poolable(metrics: dict, labels: torch.Tensor) -> Iterable[tuple[str, float | int]]:
    """The metrics whose pooled value follows from the sites' (P@k, R@k, Acc@k, loss) and their weights:
    samples with targets, samples without, and target labels."""
    keep = {f"{m}@{k}" for m in ("P", "R", "Acc") for k in REPORT_KS} | {"loss"}
    yield from ((k, v) for k, v in metrics.items() if k in keep)
    yield "num_samples", metrics["num_samples"]
    yield "num_excluded_empty", metrics["num_excluded_empty"]
    yield "num_targets", int(labels.sum().item())


def pool_metrics(site_metrics: Sequence[dict], split: str) -> dict[str, float | int]:
    """Pooled metrics of `split` from each site's `_poolable` metrics (keys `"{split}/P@10"`, ...): what one
    evaluation over all the sites' samples gives. P@k and R@k are means over samples with targets, Acc@k a
    ratio over target labels, the loss a mean over all samples (x labels)."""
    weight_of = {"P": "num_samples", "R": "num_samples", "Acc": "num_targets"}
    pooled: dict[str, float | int] = {}
    for key in site_metrics[0]:
        if not key.startswith(f"{split}/"):
            continue
        name = key.split("/", 1)[1]
        if name in ("num_samples", "num_excluded_empty", "num_targets"):
            pooled[name] = sum(int(m[key]) for m in site_metrics)
            continue
        if name == "loss":
            weights = [m[f"{split}/num_samples"] + m[f"{split}/num_excluded_empty"] for m in site_metrics]
        else:
            weights = [m[f"{split}/{weight_of[name.split('@')[0]]}"] for m in site_metrics]
        total = sum(weights)
        pooled[name] = sum(w * m[key] for w, m in zip(weights, site_metrics, strict=True)) / max(total, 1)
    return pooled


# ---------------------------------------------------------------------------------------------- server

server_app = ServerApp()


@server_app.main()
def run_server(grid: Grid, context: Context) -> None:
    """The ServerApp: `federate` with the run config's arguments."""
    federate(grid, FederatedArguments.from_run_config(dict(context.run_config)))


@dataclass
class _Rounds:
    """What the server keeps per round: the global weights after it (to return the best round), the
    sites' reports, and when it ended. Called by the strategy after every round (`evaluate_fn`)."""

    expected_train: int
    expected_evaluate: int
    arrays: dict = dataclasses.field(default_factory=dict)
    ended: list = dataclasses.field(default_factory=list)
    site_validation: list = dataclasses.field(default_factory=list)

    def __call__(self, server_round: int, arrays: ArrayRecord) -> None:
        self.arrays[server_round] = arrays
        self.ended.append(time.perf_counter())

    def aggregate_train(self, records: list[RecordDict], weight_key: str) -> MetricRecord:
        _check_replies(len(records), self.expected_train, "training")
        weights = [r["metrics"][weight_key] for r in records]
        loss = sum(w * r["metrics"]["train_loss"] for w, r in zip(weights, records, strict=True))
        return MetricRecord({"train_loss": loss / sum(weights)})

    def aggregate_evaluate(self, records: list[RecordDict], weight_key: str) -> MetricRecord:
        _check_replies(len(records), self.expected_evaluate, "evaluation")
        sites = {r["site"]["name"]: dict(r["metrics"]) for r in records}
        self.site_validation.append({name: m["validation/P@10"] for name, m in sites.items()})
        return MetricRecord(pool_metrics(list(sites.values()), "validation"))


def _check_replies(received: int, expected: int, what: str) -> None:
    if received != expected:
        raise RuntimeError(
            f"{expected - received} of {expected} sites did not return their {what} reply (see the "
            "SuperNodes' logs): stopping rather than aggregating fewer sites"
        )


def federate(grid: Grid, args: FederatedArguments) -> dict:
    """Run the federation over `grid` and write the model folder `args.output_dir`; returns metrics.json."""
    if not args.output_dir:
        raise ValueError("the run config needs output-dir: the folder the server writes the model into")
    check_output_dir(args.output_dir, overwrite=args.overwrite_output_dir)
    random.seed(args.seed)  # Flower's node sampling
    np.random.seed(args.seed)  # the DP wrapper's noise
    set_seed(args.seed)
    training = args.training_arguments()
    tokenizer = SharkTokenizer.from_pretrained(training.tokenizer)
    label_names = code_label_names(args.label_space)
    model, _ = build_model(training, tokenizer, label_names)
    model_config = ConfigRecord({"model-config": model.config.to_json_string()})
    nodes = _wait_for_sites(grid, args)
    sites = _query_sites(grid, nodes, model_config, list(label_names), args.round_timeout)
    counts = torch.tensor([s["metrics"]["label-counts"] for s in sites.values()], dtype=torch.float64)
    pooled_train = sum(s["metrics"]["train/samples"] for s in sites.values())
    init_head_bias(model, frequency_bias(counts.sum(0), pooled_train))

    sampled = max(int(len(nodes) * args.fraction_train), 1)
    rounds = _Rounds(expected_train=sampled, expected_evaluate=len(nodes))
    strategy = _strategy(args, len(nodes), sampled, rounds)
    start = time.perf_counter()
    result = strategy.start(
        grid=grid,
        initial_arrays=to_arrays(model.state_dict()),
        num_rounds=args.num_rounds,
        timeout=args.round_timeout,
        train_config=model_config,
        evaluate_config=model_config,
        evaluate_fn=rounds,
    )
    history = _history(result, rounds, args.num_rounds)
    best = max(history, key=lambda record: record[f"validation_{SELECTION_METRIC}"])["round"]
    load_arrays(model, rounds.arrays[best])
    final = _final_evaluation(grid, nodes, rounds.arrays[best], model_config, args.round_timeout)
    results = _results(args, sites, history, best, final, time.perf_counter() - start)
    write_model_folder(Path(args.output_dir), model, tokenizer, results)
    return results


def _strategy(args: FederatedArguments, num_sites: int, sampled: int, rounds: _Rounds):
    """FedAvg or FedProx over all sites (evaluation always on every site), wrapped in Flower's client-side
    fixed-clipping DP when `dp_clipping_norm` > 0."""
    common = dict(
        fraction_train=args.fraction_train,
        fraction_evaluate=1.0,
        min_train_nodes=sampled,
        min_evaluate_nodes=num_sites,
        min_available_nodes=num_sites,
        train_metrics_aggr_fn=rounds.aggregate_train,
        evaluate_metrics_aggr_fn=rounds.aggregate_evaluate,
    )
    strategy = (
        FedProx(proximal_mu=args.proximal_mu, **common) if args.strategy == "fedprox" else FedAvg(**common)
    )
    if args.dp_clipping_norm > 0:
        strategy = DifferentialPrivacyClientSideFixedClipping(
            strategy,
            noise_multiplier=args.dp_noise_multiplier,
            clipping_norm=args.dp_clipping_norm,
            num_sampled_clients=sampled,
        )
    return strategy


def _wait_for_sites(grid: Grid, args: FederatedArguments) -> list[int]:
    """The connected node ids, once at least `min_sites` are (error after `round_timeout` seconds)."""
    deadline = time.monotonic() + args.round_timeout
    while len(nodes := sorted(grid.get_node_ids())) < args.min_sites:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(nodes)} of the {args.min_sites} sites connected in time")
        time.sleep(1.0)
    return nodes


def _send(grid: Grid, nodes: list[int], message_type: str, content: RecordDict, timeout: float) -> dict:
    """Send `content` to every node and return {site name: reply content}; any failed site is an error."""
    messages = [Message(content, node, message_type) for node in nodes]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    failed = [reply.error.reason for reply in replies if reply.has_error()]
    if failed or len(replies) != len(nodes):
        raise RuntimeError(
            f"{len(nodes) - len(replies) + len(failed)} sites failed ({message_type}): {failed}"
        )
    return {reply.content["site"]["name"]: reply.content for reply in replies}


def _query_sites(grid, nodes, model_config: ConfigRecord, labels: list[str], timeout: float) -> dict:
    config = ConfigRecord({**model_config, "labels": json.dumps(labels)})
    sites = _send(grid, nodes, MessageType.QUERY, RecordDict({"config": config}), timeout)
    if len(sites) != len(nodes):
        raise ValueError(f"two SuperNodes share a site name: {sorted(sites)}; give each its own name=")
    return sites


def _final_evaluation(grid, nodes, arrays: ArrayRecord, model_config: ConfigRecord, timeout: float) -> dict:
    config = ConfigRecord({**model_config, "final": True})
    content = RecordDict({"arrays": arrays, "config": config})
    return {
        name: dict(reply["metrics"])
        for name, reply in _send(grid, nodes, MessageType.EVALUATE, content, timeout).items()
    }


def _history(result, rounds: _Rounds, num_rounds: int) -> list[dict]:
    """One record per round: pooled training loss, pooled validation metrics, per-site validation P@10,
    seconds (training and evaluation of the round)."""
    missing = [r for r in range(1, num_rounds + 1) if r not in result.evaluate_metrics_clientapp]
    if missing:
        raise RuntimeError(f"rounds {missing} returned no evaluation: the sites' replies failed")
    history = []
    for r in range(1, num_rounds + 1):
        record = {"round": r, "seconds": round(rounds.ended[r] - rounds.ended[r - 1], 3)}
        record["train_loss"] = result.train_metrics_clientapp[r]["train_loss"]
        record.update({f"validation_{k}": v for k, v in result.evaluate_metrics_clientapp[r].items()})
        record["site_validation_P@10"] = rounds.site_validation[r - 1]
        history.append(record)
    return history


def _results(args, sites: dict, history: list[dict], best: int, final: dict, seconds: float) -> dict:
    """metrics.json: pooled and per-site metrics of the best round, audits, counts, options, history."""
    site_counts = {
        name: {
            kind: {s: int(reply["metrics"][f"{s}/{kind}"]) for s in SPLITS}
            for kind in ("patients", "samples")
        }
        for name, reply in sites.items()
    }
    tasks = {reply["site"]["task"] for reply in sites.values()}
    pooled_counts = {
        kind: {s: sum(c[kind][s] for c in site_counts.values()) for s in SPLITS}
        for kind in ("patients", "samples")
    }
    finals = list(final.values())
    return {
        "best_round": best,
        "best_round_at_cap": best == args.num_rounds,
        "rounds": args.num_rounds,
        "train_seconds": round(seconds, 3),
        "validation": pool_metrics(finals, "validation"),
        "test": pool_metrics(finals, "test"),
        "sites": {
            name: {split: pool_metrics([m], split) for split in ("validation", "test")}
            for name, m in final.items()
        },
        "privacy": {"sites": {name: _audit(m, args.seed) for name, m in final.items()}},
        "cohort": {"task": json.loads(tasks.pop()) if len(tasks) == 1 else None, **pooled_counts},
        "federated": {
            "framework": "flwr",
            "strategy": args.strategy,
            "proximal_mu": args.proximal_mu if args.strategy == "fedprox" else None,
            "num_rounds": args.num_rounds,
            "local_epochs": args.local_epochs,
            "fraction_train": args.fraction_train,
            "sites": site_counts,
            "differential_privacy": (
                {
                    "mechanism": "client-side fixed clipping, Gaussian noise at the server (flwr)",
                    "clipping_norm": args.dp_clipping_norm,
                    "noise_multiplier": args.dp_noise_multiplier,
                }
                if args.dp_clipping_norm > 0
                else None
            ),
            "seconds_per_round": [record["seconds"] for record in history],
        },
        "history": history,
        "args": {"cohort": f"federated ({len(sites)} sites)", **dataclasses.asdict(args)},
    }


def _audit(metrics: dict, seed: int) -> dict:
    return {
        "attack": "per-sample loss threshold",
        "membership_inference_auc": metrics["audit/auc"],
        "auc_95ci": [metrics["audit/auc_low"], metrics["audit/auc_high"]],
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "unit": "patient", "seed": seed},
        **{
            key: int(metrics[f"audit/{key}"])
            for key in ("members", "nonmembers", "member_patients", "nonmember_patients")
        },
    }


def write_model_folder(output_dir: Path, model, tokenizer: SharkTokenizer, results: dict) -> None:
    """An ordinary model folder: `save_pretrained`, `tokenizer/`, `metrics.json`."""
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir / TOKENIZER_SUBFOLDER)
    atomic_write_text(output_dir / "metrics.json", json.dumps(results, indent=2) + "\n")


# ------------------------------------------------------------------------------------------ simulation


RUN_ID = 1  # the one run of a `LocalGrid`


class LocalGrid(Grid):
    """A Flower `Grid` whose nodes are ClientApps in this process: `push_messages` runs each message's
    ClientApp at once (no SuperLink, no Ray). For trying a federation on one machine and for tests; the
    ServerApp and ClientApp are the very ones a deployment runs."""

    def __init__(self, app: ClientApp, node_configs: Sequence[dict], run_config: dict) -> None:
        from flwr.common.constant import SUPERLINK_NODE_ID
        from flwr.supercore.task_identity import TaskIdentity

        # Who sends the server's messages (what a SuperLink sets in the ServerApp's process).
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, RUN_ID, SUPERLINK_NODE_ID
        self._app = app
        self._contexts = {
            node_id: Context(RUN_ID, node_id, dict(node_config), RecordDict(), dict(run_config))
            for node_id, node_config in enumerate(node_configs, start=SUPERLINK_NODE_ID + 1)
        }
        self._replies: dict[str, Message] = {}
        self._run = None

    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> list[int]:
        return list(self._contexts)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid4().hex  # as Flower's in-memory grid does
            reply = self._app(message, self._contexts[message.metadata.dst_node_id])
            reply.metadata.__dict__["_message_id"] = uuid4().hex
            self._replies[message.metadata.message_id] = reply
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        return self.pull_messages(self.push_messages(messages))


def simulate(sites: Sequence[str | Path], args: FederatedArguments) -> dict:
    """Run `server_app` over `client_app` at each cohort folder of `sites`, in this process; returns
    metrics.json's content. Site names are the folders' names."""
    names = [Path(site).name for site in sites]
    if len(set(names)) != len(names):
        raise ValueError(f"the site folders must have distinct names, got {names}")
    args = dataclasses.replace(args, min_sites=len(sites))
    run_config = args.to_run_config()
    grid = LocalGrid(
        client_app,
        [{"cohort": str(site), "name": name} for site, name in zip(sites, names, strict=True)],
        run_config,
    )
    return federate(grid, args)
