"""Benchmark: SharkForDiagnosisPrediction speed on MIMIC-III-like shapes, against the bare GRU floor.

Data: a random cohort with the shapes of the paper's MIMIC-III train split (Table 1): 3,814 patients (70 % of
5,449), input visits per patient from a truncated power law with mean 1.6 and max 28 (2.6 visits per patient
minus the target visit), 1 + Poisson(12) codes per visit (max 39) drawn with Zipf-like frequencies from 3,874
real ICD-9-CM codes, 1 + Poisson(9) target labels out of the 283 CCS categories. The semantic-ID runs use a
`SharkTokenizer.random_ids` table (L=4, K=128: ids with exactly the shapes and value range of semantic ids;
the model does not care how they were found), the `learned` run a `SharkTokenizer.index` table.

Reported, all in one process on the same cores:

- bare GRU floor: forward + backward of the model's two `nn.GRU` modules alone, one after the other, on
  the packed batch of the timed step (input vectors a leaf tensor requiring grad);
- the model's own GRU pass (`run_grus`: both GRUs as one block-diagonal GRU of width 2H, so half the
  sequential steps of the floor) on the same input;
- training step (forward + backward; + default AdamW step; + fused AdamW step) and inference (eval,
  `torch.inference_mode`) on one batch of 256 patients that includes the longest patient (28 visits), as
  milliseconds, patients/s and ratio to the floor;
- one training epoch over the whole split: shuffle, collate every batch from the visit lists (tokenizer +
  multi-hot labels, `VisitCollator` when available) and take the training step;
- `semantic_id` vs `learned` (plain RETAIN, 3,874-row per-code table): step and epoch time ratios, the two
  models timed alternately in one loop.

Goals (issue 5): full step <= 3x the floor; epoch <= 1 s including collation; semantic_id no slower than
learned. Timings are medians over `--repeats`; the 1-minute load average is printed because other processes
on a 2-core machine distort every figure (`--threads 1 --clock cpu` counts only this process's CPU time).

    python benchmarks/bench_model.py
    python benchmarks/bench_model.py --threads 1 --clock cpu --repeats 100
"""

import argparse
import os
import platform
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence

from shark_hf.codes import all_codes
from shark_hf.codes import label_names as code_label_names
from shark_hf.configuration_shark import SharkConfig
from shark_hf.modeling_shark import SharkForDiagnosisPrediction, packed_reverse_layout
from shark_hf.tokenization_shark import SharkTokenizer

FIGURES = ("gru_floor", "gru_pass", "forward_backward", "train_step", "train_step_fused_adamw", "inference")
Batch = dict[str, torch.Tensor]
CLOCK = time.perf_counter  # --clock cpu: time.process_time
Collate = Callable[[Sequence[dict]], Batch]


def synthetic_rows(num_patients: int, num_codes: int, seed: int) -> tuple[list[dict], list[str], list[str]]:
    """Rows `{"visits": [[code, ...], ...], "labels": [label, ...]}`, MIMIC-III-like (see module doc)."""
    rng = np.random.default_rng(seed)
    codes = all_codes("ICD9CM")[:num_codes]
    labels = list(code_label_names("ccs"))
    visit_counts = np.arange(1, 29)
    exponent = _power_law_exponent(visit_counts, mean=1.6)
    probabilities = visit_counts**-exponent / (visit_counts**-exponent).sum()
    num_visits = rng.choice(visit_counts, size=num_patients, p=probabilities)
    num_visits[0] = visit_counts[-1]  # the longest patient of MIMIC-III: 28 input visits
    code_frequency = 1.0 / np.arange(1, num_codes + 1) ** 0.9
    code_frequency /= code_frequency.sum()
    rows = []
    for count in num_visits:
        visits = [
            list(dict.fromkeys(rng.choice(codes, size=min(1 + rng.poisson(12), 39), p=code_frequency)))
            for _ in range(count)
        ]
        target = rng.choice(labels, size=min(1 + rng.poisson(9), len(labels)), replace=False)
        rows.append({"visits": visits, "labels": target.tolist()})
    return rows, codes, labels


def _power_law_exponent(values: np.ndarray, mean: float) -> float:
    """Exponent s of p(n) ~ n^-s on `values` whose mean is `mean` (bisection)."""
    low, high = 0.0, 10.0
    for _ in range(60):
        middle = (low + high) / 2
        weights = values**-middle
        low, high = (middle, high) if (values * weights).sum() / weights.sum() > mean else (low, middle)
    return (low + high) / 2


def make_collate(tokenizer: SharkTokenizer, labels: list[str]) -> Collate:
    """The project's `VisitCollator` when it exists, else tokenizer + multi-hot labels (the same work)."""
    try:
        from shark_hf.data.collator import VisitCollator
    except ImportError:
        column = {label: i for i, label in enumerate(labels)}

        def collate(rows: Sequence[dict]) -> Batch:
            batch = dict(tokenizer([row["visits"] for row in rows]))
            target = np.zeros((len(rows), len(labels)), dtype=np.float32)
            for i, row in enumerate(rows):
                target[i, [column[label] for label in row["labels"]]] = 1.0
            batch["labels"] = torch.from_numpy(target)
            return batch

        return collate
    return VisitCollator(tokenizer, labels)


def median_ms(function: Callable[[], object], repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = CLOCK()
        function()
        times.append(CLOCK() - start)
    return float(np.median(times) * 1e3)


def time_model(model: SharkForDiagnosisPrediction, batch: Batch, repeats: int) -> dict[str, float]:
    """Median ms of: bare GRU floor, our GRU pass, forward+backward, AdamW steps, inference — on `batch`."""
    layout = packed_reverse_layout(batch["visit_mask"])
    vectors = torch.randn(len(layout.patient_index), model.config.visit_dim, requires_grad=True)

    def gru_floor() -> None:
        packed = PackedSequence(vectors, layout.batch_sizes)
        g = model.alpha_gru(packed)[0].data
        h = model.beta_gru(packed)[0].data
        (g.sum() + h.sum()).backward()

    def gru_pass() -> None:
        g, h = model.run_grus(vectors, layout.batch_sizes)
        (g.sum() + h.sum()).backward()

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()

    inputs = {key: batch[key] for key in ("input_ids", "code_mask", "visit_mask")}

    def inference() -> None:
        with torch.inference_mode():
            model(**inputs)

    model.train()
    result = {
        "gru_floor": median_ms(gru_floor, repeats),
        "gru_pass": median_ms(gru_pass, repeats),
        "forward_backward": median_ms(forward_backward, repeats),
    }
    result["train_step"] = median_ms(train_step_function(model, batch), repeats)
    result["train_step_fused_adamw"] = median_ms(train_step_function(model, batch, fused=True), repeats)
    model.eval()
    result["inference"] = median_ms(inference, repeats)
    model.train()
    return result


def train_step_function(
    model: SharkForDiagnosisPrediction, batch: Batch, fused: bool = False
) -> Callable[[], None]:
    """One AdamW training step on `batch` (`fused=False`: the default AdamW a training script gets)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()

    return step


def interleaved_ms(
    functions: dict[str, Callable[[], object]], repeats: int, warmup: int = 5
) -> dict[str, float]:
    """Median ms of each function, run in alternating order round after round."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for i in range(warmup + repeats):
        for name in list(functions)[:: 1 if i % 2 else -1]:
            start = CLOCK()
            functions[name]()
            if i >= warmup:
                times[name].append(CLOCK() - start)
    return {name: float(np.median(values) * 1e3) for name, values in times.items()}


def time_epoch(
    model: SharkForDiagnosisPrediction, rows: list[dict], collate: Collate, batch_size: int, seed: int
) -> tuple[float, float]:
    """Seconds for one shuffled epoch (collation + AdamW steps) and the part spent collating."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    order = np.random.default_rng(seed).permutation(len(rows))
    model.train()
    collating = 0.0
    start = CLOCK()
    for first in range(0, len(rows), batch_size):
        tick = CLOCK()
        batch = collate([rows[i] for i in order[first : first + batch_size]])
        collating += CLOCK() - tick
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()
    return CLOCK() - start, collating


def build(tokenizer: SharkTokenizer, labels: list[str], seed: int) -> SharkForDiagnosisPrediction:
    torch.manual_seed(seed)
    return SharkForDiagnosisPrediction(SharkConfig.from_tokenizer(tokenizer, labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=3814, help="train split size (MIMIC-III: 3,814)")
    parser.add_argument("--codes", type=int, default=3874, help="distinct diagnosis codes (MIMIC-III: 3,874)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=50, help="timed repetitions per figure (median)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: this process's CPU time, less distorted by other processes (needs --threads 1)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu counts every thread's time: use it with --threads 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter

    rows, codes, labels = synthetic_rows(args.patients, args.codes, args.seed)
    semantic = SharkTokenizer.random_ids(codes, num_levels=4, codebook_size=128, seed=args.seed)
    learned = SharkTokenizer.index(codes)
    step_rows = [rows[0]] + rows[1 : args.batch_size]  # includes the 28-visit patient

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, {args.clock} clock, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    visits = np.array([len(row["visits"]) for row in rows])
    codes_per_visit = np.array([len(visit) for row in rows for visit in row["visits"]])
    print(
        f"cohort: {len(rows)} patients, input visits mean {visits.mean():.2f} max {visits.max()}, "
        f"codes/visit mean {codes_per_visit.mean():.1f} max {codes_per_visit.max()}, {len(labels)} labels"
    )

    setups = {}
    for name, tokenizer in (("semantic_id", semantic), ("learned", learned)):
        collate = make_collate(tokenizer, labels)
        batch = collate(step_rows)
        model = build(tokenizer, labels, args.seed)
        setups[name] = (model, collate, batch)
        step = time_model(model, batch, args.repeats)
        shape = tuple(batch["input_ids"].shape)
        real = int(batch["visit_mask"].sum())
        print(
            f"\n[{name}] step batch input_ids {shape}, {real} real visits, "
            f"table {tuple(model.code_embeddings.weight.shape)}"
        )
        for key in FIGURES:
            rate = args.batch_size / step[key] * 1e3
            ratio = step[key] / step["gru_floor"]
            print(f"  {key:<22} {step[key]:8.2f} ms  {rate:>9,.0f} patients/s  {ratio:5.2f}x floor")
        if name == "semantic_id":
            ours = step

    # semantic_id vs learned, alternating the two in one loop so that load drift hits both alike
    steps = interleaved_ms(
        {name: train_step_function(model, batch) for name, (model, _, batch) in setups.items()}, args.repeats
    )
    epochs = {name: [] for name in setups}
    for i in range(args.epochs):
        for name in list(setups)[:: 1 if i % 2 else -1]:
            model, collate, _ = setups[name]
            epochs[name].append(time_epoch(model, rows, collate, args.batch_size, args.seed + i))
    for name, runs in epochs.items():
        epoch, collating = sorted(runs)[len(runs) // 2]
        epochs[name] = epoch
        print(
            f"\n[{name}] epoch ({len(rows)} patients, batch {args.batch_size}, median of {args.epochs}): "
            f"{epoch:.3f} s (collation {collating:.3f} s) = {len(rows) / epoch:,.0f} patients/s"
        )

    print("\nsummary")
    print(
        f"  full step (default AdamW) / GRU floor: {ours['train_step'] / ours['gru_floor']:.2f}x (goal <= 3x)"
    )
    print(f"  forward+backward / GRU floor: {ours['forward_backward'] / ours['gru_floor']:.2f}x")
    print(f"  epoch incl. collation: {epochs['semantic_id']:.3f} s (goal <= 1 s)")
    print(
        f"  semantic_id / learned (interleaved): step {steps['semantic_id'] / steps['learned']:.2f}x, "
        f"epoch {epochs['semantic_id'] / epochs['learned']:.2f}x (goal <= 1)"
    )


if __name__ == "__main__":
    main()
