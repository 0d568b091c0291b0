"""Federated training on Flower (`shark_hf.federated`): `shark-hf federate` on two small cohorts writes an
ordinary model folder that `from_pretrained` loads and `shark-hf evaluate` scores; the server's pooled
metrics are exactly what one evaluation over all the sites' samples gives."""

import contextlib
import dataclasses
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
import torch
from accelerate.utils import set_seed
from huggingface_hub import ModelCard

from shark_hf.cards import model_card
from shark_hf.cli import main
from shark_hf.codes import label_names as code_label_names
from shark_hf.data.cohort import build_cohort
from shark_hf.data.synthetic import write_synthetic_cohort
from shark_hf.federated import FederatedArguments, pool_metrics, simulate
from shark_hf.modeling_shark import SharkForDiagnosisPrediction
from shark_hf.tokenization_shark import SharkTokenizer
from shark_hf.training import build_model, frequency_bias, init_head_bias, label_counts


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> list[Path]:
    """Two hospitals of 60 and 40 patients (different synthetic seeds), as cohort folders."""
    datasets.disable_progress_bars()
    root = tmp_path_factory.mktemp("federated")
    folders = []
    for seed, (name, patients) in enumerate((("hospital_a", 60), ("hospital_b", 40))):
        raw = write_synthetic_cohort(root / f"raw_{name}", "mimic3", seed=seed, num_patients=patients)
        build_cohort("mimic3", root=raw).save_to_disk(root / name)
        folders.append(root / name)
    return folders


@pytest.fixture(scope="module")
def federated(sites, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("run") / "model"
    code, out, err = cli("federate", "--sites", *sites, "--rounds", 2, "--output_dir", output)
    assert code == 0, err
    assert out.startswith("Best round ") and str(output) in out
    return output


def test_federate_writes_an_ordinary_model_folder(federated, sites):
    names = sorted(p.name for p in federated.iterdir())
    assert names == [
        "config.json",
        "configuration_shark.py",
        "metrics.json",
        "model.safetensors",
        "modeling_shark.py",
        "tokenizer",
    ]
    metrics = json.loads((federated / "metrics.json").read_text())
    cohorts = [datasets.load_from_disk(str(site)) for site in sites]
    expected_samples = {
        site.name: {split: len(cohort[split]) for split in ("train", "validation", "test")}
        for site, cohort in zip(sites, cohorts, strict=True)
    }
    assert {name: site["samples"] for name, site in metrics["federated"]["sites"].items()} == expected_samples
    assert metrics["rounds"] == metrics["federated"]["num_rounds"] == 2
    assert [record["round"] for record in metrics["history"]] == [1, 2]
    assert len(metrics["federated"]["seconds_per_round"]) == 2
    best = max(metrics["history"], key=lambda record: record["validation_P@10"])
    assert metrics["best_round"] == best["round"] and metrics["best_round_at_cap"] == (best["round"] == 2)
    assert metrics["validation"]["P@10"] == best["validation_P@10"]  # the best round's model, re-evaluated
    assert set(metrics["privacy"]["sites"]) == {"hospital_a", "hospital_b"}
    for site, cohort in zip(sites, cohorts, strict=True):
        audit = metrics["privacy"]["sites"][site.name]
        assert (audit["members"], audit["nonmembers"]) == (len(cohort["train"]), len(cohort["test"]))
        assert 0.0 <= audit["auc_95ci"][0] <= audit["membership_inference_auc"] <= audit["auc_95ci"][1] <= 1.0
    # Never a row: metrics.json holds counts, metrics and options, no patient id nor visit of any site.
    patients = {pid for cohort in cohorts for split in cohort.values() for pid in split["patient_id"]}
    assert not patients & set(strings(metrics))


def strings(value):
    if isinstance(value, dict):
        yield from (s for item in value.values() for s in strings(item))
    elif isinstance(value, list):
        yield from (s for item in value for s in strings(item))
    elif isinstance(value, str):
        yield value


def test_the_model_loads_and_shark_hf_evaluate_gives_the_pooled_test_metrics(federated, sites, tmp_path):
    model = SharkForDiagnosisPrediction.from_pretrained(federated)
    assert model.config.num_labels == 283  # all CCS categories, whatever each site saw
    metrics = json.loads((federated / "metrics.json").read_text())
    per_site = {}
    for site in sites:
        report = tmp_path / f"{site.name}.json"
        code, _, err = cli(
            "evaluate", "--model", federated, "--cohort", site, "--split", "test", "--out", report
        )
        assert code == 0, err
        per_site[site.name] = json.loads(report.read_text())
        assert per_site[site.name]["P@10"] == pytest.approx(
            metrics["sites"][site.name]["test"]["P@10"], abs=1e-6
        )
    n = {name: report["num_samples"] for name, report in per_site.items()}
    pooled = sum(report["P@10"] * n[name] for name, report in per_site.items()) / sum(n.values())
    assert metrics["test"]["P@10"] == pytest.approx(pooled, abs=1e-6)
    assert metrics["test"]["num_samples"] == sum(n.values())


def test_the_card_names_the_sites_their_samples_and_the_rounds(federated):
    config = json.loads((federated / "config.json").read_text())
    tokenizer_config = json.loads((federated / "tokenizer" / "tokenizer_config.json").read_text())
    metrics = json.loads((federated / "metrics.json").read_text())
    card = str(model_card(config, tokenizer_config, metrics, "org/shark-federated"))
    sites = metrics["federated"]["sites"]
    for name, site in sites.items():
        samples = site["samples"]
        assert f"| {name} | {samples['train']} | {samples['validation']} | {samples['test']} |" in card
    assert "Trained across 2 sites with federated learning (Flower, fedavg)" in card
    assert "2\nrounds of 1 local epoch(s)" in card
    assert f"| best round | {metrics['best_round']} |" in card
    assert "At site hospital_a: A per-sample loss-threshold" in card and "At site hospital_b: AUC" in card
    assert ModelCard(card).data.model_name == "org/shark-federated"


def initial_model(sites, args: FederatedArguments) -> SharkForDiagnosisPrediction:
    """The model the server starts from, rebuilt here: `build_model` after `set_seed(seed)`, the head's
    bias at the log-odds of the label frequencies of all the sites' training samples together."""
    set_seed(args.seed)
    training = args.training_arguments()
    labels = code_label_names(args.label_space)
    model, _ = build_model(training, SharkTokenizer.from_pretrained(training.tokenizer), labels)
    trains = [datasets.load_from_disk(str(site))["train"] for site in sites]
    counts = sum(label_counts(train, labels) for train in trains)
    init_head_bias(model, frequency_bias(counts, sum(len(train) for train in trains)))
    return model


def distance(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """L2 norm of the difference of all the weights (what Flower's fixed clipping bounds)."""
    return math.sqrt(sum(((a.state_dict()[k] - v) ** 2).sum().item() for k, v in b.state_dict().items()))


def test_client_side_clipping_bounds_the_aggregated_update(sites, federated, tmp_path):
    args = FederatedArguments(output_dir=str(tmp_path / "dp"), num_rounds=1, dp_clipping_norm=1e-3)
    metrics = simulate(sites, args)
    assert metrics["federated"]["differential_privacy"] == {
        "mechanism": "client-side fixed clipping, Gaussian noise at the server (flwr)",
        "clipping_norm": 1e-3,
        "noise_multiplier": 0.0,
    }
    start = initial_model(sites, dataclasses.replace(args, min_sites=2))
    # Every site's update is clipped to L2 norm 1e-3, so their weighted mean moves the model by at most that.
    moved = distance(SharkForDiagnosisPrediction.from_pretrained(tmp_path / "dp"), start)
    assert 0 < moved <= 1e-3 * (1 + 1e-4)
    assert distance(SharkForDiagnosisPrediction.from_pretrained(federated), start) > 0.1  # unclipped: far


def test_pool_metrics_weights_each_metric_by_what_it_averages():
    a = {"test/P@10": 0.5, "test/Acc@10": 0.25, "test/loss": 0.1}
    a.update({"test/num_samples": 2, "test/num_excluded_empty": 2, "test/num_targets": 8})
    b = {"test/P@10": 0.2, "test/Acc@10": 0.5, "test/loss": 0.4}
    b.update({"test/num_samples": 3, "test/num_excluded_empty": 0, "test/num_targets": 2})
    pooled = pool_metrics([a, b], "test")
    assert pooled["P@10"] == pytest.approx((0.5 * 2 + 0.2 * 3) / 5)  # mean over samples with targets
    assert pooled["Acc@10"] == pytest.approx((2 + 1) / 10)  # hits over target labels
    assert pooled["loss"] == pytest.approx((0.1 * 4 + 0.4 * 3) / 7)  # mean over every sample
    assert (pooled["num_samples"], pooled["num_excluded_empty"], pooled["num_targets"]) == (5, 2, 10)


def test_run_config_round_trips_and_bad_options_name_the_flag():
    args = FederatedArguments(output_dir="out", num_rounds=4, strategy="fedprox", dp_clipping_norm=1.5)
    config = args.to_run_config()
    assert config["num-rounds"] == 4 and config["dp-clipping-norm"] == 1.5
    assert FederatedArguments.from_run_config(config) == args
    with pytest.raises(ValueError, match=r"unknown run config keys \['rounds'\]"):
        FederatedArguments.from_run_config({"rounds": 3})
    with pytest.raises(
        ValueError, match="--strategy must be one of \\('fedavg', 'fedprox'\\), got 'scaffold'"
    ):
        FederatedArguments(strategy="scaffold")
    with pytest.raises(ValueError, match="--label_space must be ccs or ccsr"):
        FederatedArguments(label_space="code")
    with pytest.raises(ValueError, match="--dp_noise_multiplier needs --dp_clipping_norm > 0"):
        FederatedArguments(dp_noise_multiplier=1.0)


def test_federate_refuses_a_folder_holding_a_run_and_a_missing_site(federated, sites):
    code, _, err = cli("federate", "--sites", *sites, "--output_dir", federated)
    assert code == 1 and err.strip().endswith(
        f"--output_dir {federated} already holds a model (config.json, metrics.json): pass "
        "--overwrite_output_dir to replace it"
    )
    code, _, err = cli("federate", "--sites", sites[0], sites[0].parent / "nowhere", "--output_dir", "x")
    assert code == 1 and err.strip().endswith("nowhere: no such cohort folder")


def test_fedprox_term_pulls_each_gradient_toward_the_global_weights():
    from shark_hf.federated import _proximal_hooks

    layer = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0]]))
    hooks = _proximal_hooks(layer, mu=0.5)
    with torch.no_grad():
        layer.weight += torch.tensor([[0.2, 0.4]])  # local drift from the global weights
    layer(torch.tensor([[1.0, 1.0]])).sum().backward()
    # d/dw [w.x] = x = (1, 1); plus mu (w - w_global) = 0.5 (0.2, 0.4)
    assert torch.allclose(layer.weight.grad, torch.tensor([[1.1, 1.2]]))
    for hook in hooks:
        hook.remove()
    layer.weight.grad = None
    layer(torch.tensor([[1.0, 1.0]])).sum().backward()
    assert torch.equal(layer.weight.grad, torch.tensor([[1.0, 1.0]]))  # removed: the plain gradient


# ------------------------------------------------------------------------------------- real deployment

APP = Path(__file__).resolve().parents[1] / "examples" / "shark-federated"
BIN = Path(sys.executable).parent  # flower-superlink, flower-supernode, flwr, flwr-clientapp, ...


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {seconds} s: {log.read_text()[-3000:]}")


def start(command: list, home: Path, log: Path) -> subprocess.Popen:
    """A Flower process in its own session (its children, the apps it spawns, in its process group),
    with its own FLWR_HOME, no telemetry, its output in `log`."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "FLWR_HOME": str(home)}
    env.update(FLWR_TELEMETRY_ENABLED="0", OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    with open(log, "w") as out:
        return subprocess.Popen(
            [str(c) for c in command], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM each process group (by the leader's pid), then SIGKILL what is left after 15 s."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def test_superlink_and_two_supernodes_run_two_rounds_with_flwr_run(sites, federated, tmp_path):
    """A SuperLink and one SuperNode per hospital as separate processes on 127.0.0.1 (insecure mode), the
    run started with Flower's own CLI: the model equals the one-machine run's, bit for bit."""
    link_port = free_port()
    output = tmp_path / "model"
    processes = []
    try:
        link_log = tmp_path / "superlink.log"
        link = ["flower-superlink", "--insecure", "--host", "127.0.0.1", "--port", link_port]
        processes.append(
            start(
                [BIN / link[0], *link[1:], "--disable-runtime-dependency-installation"],
                tmp_path / "link",
                link_log,
            )
        )
        wait_for_port(link_port, processes[0], link_log)
        for site in sites:
            node = [BIN / "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{link_port}"]
            node += ["--host", "127.0.0.1", "--port", free_port()]
            node += ["--node-config", f"cohort='{site}' name='{site.name}'"]
            processes.append(start(node, tmp_path / site.name, tmp_path / f"{site.name}.log"))
        user = tmp_path / "user"
        user.mkdir()
        (user / "config.toml").write_text(
            f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "127.0.0.1:{link_port}"\n'
            "insecure = true\n"
        )
        run_config = f"num-rounds=2 output-dir='{output}'"
        command = [BIN / "flwr", "run", APP, "local", "--stream", "--run-config", run_config]
        env = {**os.environ, "FLWR_HOME": str(user), "FLWR_TELEMETRY_ENABLED": "0"}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=420)
        logs = "\n".join(f"{p.name}: {p.read_text()[-2000:]}" for p in tmp_path.glob("*.log"))
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:] + logs
        assert (output / "metrics.json").is_file(), result.stdout[-3000:] + logs
    finally:
        stop(processes)
    assert all(process.poll() is not None for process in processes)
    deployed = json.loads((output / "metrics.json").read_text())
    simulated = json.loads((federated / "metrics.json").read_text())
    assert deployed["rounds"] == 2 and [r["round"] for r in deployed["history"]] == [1, 2]
    assert deployed["federated"]["sites"] == simulated["federated"]["sites"]
    assert deployed["test"] == simulated["test"] and deployed["best_round"] == simulated["best_round"]
    assert (output / "model.safetensors").read_bytes() == (federated / "model.safetensors").read_bytes()
