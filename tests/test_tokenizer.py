"""SharkTokenizer: construction, batches, unseen codes, collisions, save/load/push, errors, cluster report."""

import json
import math
import time
from pathlib import Path

import jinja2
import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard, ModelCardData, hf_hub_download
from safetensors.torch import load_file, save_file

from shark_hf.cards import render_card
from shark_hf.codes import all_codes, ancestors
from shark_hf.embeddings import DEFAULT_MODEL, CodeEmbeddings, embed_codes, load_text_encoder, resolve_model
from shark_hf.rkmeans import ResidualKMeans
from shark_hf.tokenization_shark import CONFIG_NAME, TENSORS_NAME, SharkTokenizer
from shark_hf.tokenizer_format import table_fingerprint

MODEL_ID = "test/structured-vectors"

# Five real ICD-9-CM codes with hand-chosen ID tuples (L = 2, K = 10) for exact batch expectations.
CODES = ["ICD9CM:4019", "ICD9CM:25000", "ICD9CM:4280", "ICD9CM:5849", "ICD9CM:486"]
IDS = [[1, 2], [3, 4], [5, 6], [7, 8], [9, 0]]


def structured_embeddings(num_codes: int = 120, dim: int = 16, seed: int = 0) -> CodeEmbeddings:
    """Real ICD-9-CM codes with vectors around 6 random centres (so k-means has structure to find)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(6, dim, generator=generator) * 3
    vectors = centres[torch.arange(num_codes) % 6] + torch.randn(num_codes, dim, generator=generator)
    return CodeEmbeddings(all_codes("ICD9CM")[:num_codes], vectors, MODEL_ID, "description")


@pytest.fixture(scope="module")
def embeddings() -> CodeEmbeddings:
    return structured_embeddings()


@pytest.fixture(scope="module")
def semantic(embeddings) -> SharkTokenizer:
    return SharkTokenizer.fit(embeddings, num_levels=3, codebook_size=8, seed=0)


def hand_tokenizer() -> SharkTokenizer:
    return SharkTokenizer(CODES, torch.tensor(IDS), kind="random", codebook_size=10)


def assert_same_tokenizer(a: SharkTokenizer, b: SharkTokenizer) -> None:
    assert a.codes == b.codes
    assert torch.equal(a.ids, b.ids)
    assert (a.codebooks is None and b.codebooks is None) or torch.equal(a.codebooks, b.codebooks)
    assert a.fingerprint == b.fingerprint
    assert a.config == b.config


# ------------------------------------------------------------------------------------------ building


def test_fit_same_seed_gives_identical_codebooks_and_ids(embeddings, semantic):
    again = SharkTokenizer.fit(embeddings, num_levels=3, codebook_size=8, seed=0)
    assert_same_tokenizer(semantic, again)
    assert semantic.kind == "semantic"
    assert (len(semantic), semantic.num_levels, semantic.codebook_size) == (120, 3, 8)
    assert semantic.codebooks.shape == (3, 8, 16) and semantic.codebooks.dtype == torch.float32
    assert semantic.ids.dtype == torch.int64 and semantic.ids.shape == (120, 3)
    assert (semantic.embedding_model, semantic.embedding_text) == (MODEL_ID, "description")
    # The IDs are exactly the Residual K-Means encoding of the vectors.
    reference = ResidualKMeans(num_levels=3, codebook_size=8, seed=0).fit(embeddings.vectors)
    assert torch.equal(semantic.codebooks, reference.codebooks)
    assert torch.equal(semantic.ids, reference.encode(embeddings.vectors))
    assert semantic.config["level_errors"] == reference.level_errors
    other_seed = SharkTokenizer.fit(embeddings, num_levels=3, codebook_size=8, seed=1)
    assert other_seed.fingerprint != semantic.fingerprint


def test_random_ids_are_seeded_uniform_draws():
    codes = all_codes("ICD9CM")[:300]
    tokenizer = SharkTokenizer.random_ids(codes, num_levels=4, codebook_size=128, seed=7)
    expected = torch.randint(0, 128, (300, 4), generator=torch.Generator().manual_seed(7))
    assert torch.equal(tokenizer.ids, expected)
    assert torch.equal(SharkTokenizer.random_ids(codes, 4, 128, seed=7).ids, expected)
    assert not torch.equal(SharkTokenizer.random_ids(codes, 4, 128, seed=8).ids, expected)
    assert tokenizer.kind == "random" and tokenizer.codebooks is None
    assert (tokenizer.num_levels, tokenizer.codebook_size) == (4, 128)


def test_index_gives_each_code_its_row():
    tokenizer = SharkTokenizer.index(["401.9", "250.00", "E11.9"])
    assert tokenizer.codes == ["ICD9CM:4019", "ICD9CM:25000", "ICD10CM:E119"]
    assert torch.equal(tokenizer.ids, torch.tensor([[0], [1], [2]]))
    assert (tokenizer.kind, tokenizer.num_levels, tokenizer.codebook_size) == ("index", 1, 3)


def test_encode_len_contains_accept_any_spelling():
    tokenizer = hand_tokenizer()
    assert len(tokenizer) == 5
    assert tokenizer.encode("401.9") == (1, 2) == tokenizer.encode("ICD9CM:4019")
    assert tokenizer.encode("icd9cm:486") == (9, 0)
    assert "428.0" in tokenizer and "ICD9CM:4011" not in tokenizer and "garbage!" not in tokenizer
    with pytest.raises(KeyError, match="ICD9CM:4011"):
        tokenizer.encode("401.1")


# ------------------------------------------------------------------------------------------ batches


def test_call_shapes_padding_and_masks_exact():
    tokenizer = hand_tokenizer()
    patients = [
        [["401.9", "250.00"], ["428.0"]],
        [["ICD9CM:5849"]],
        [["486", "4019", "4280"], ["25000"], ["5849"]],
    ]
    batch = tokenizer(patients)
    pad = [0, 0]
    expected_ids = [
        [[[1, 2], [3, 4], pad], [[5, 6], pad, pad], [pad, pad, pad]],
        [[[7, 8], pad, pad], [pad, pad, pad], [pad, pad, pad]],
        [[[9, 0], [1, 2], [5, 6]], [[3, 4], pad, pad], [[7, 8], pad, pad]],
    ]
    expected_code_mask = [
        [[1, 1, 0], [1, 0, 0], [0, 0, 0]],
        [[1, 0, 0], [0, 0, 0], [0, 0, 0]],
        [[1, 1, 1], [1, 0, 0], [1, 0, 0]],
    ]
    assert torch.equal(batch["input_ids"], torch.tensor(expected_ids, dtype=torch.int64))
    assert torch.equal(batch["code_mask"], torch.tensor(expected_code_mask, dtype=torch.bool))
    assert torch.equal(batch["visit_mask"], torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.bool))
    as_numpy = tokenizer(patients, return_tensors="np")
    assert isinstance(as_numpy["input_ids"], np.ndarray)
    assert np.array_equal(as_numpy["input_ids"], np.array(expected_ids))


def test_max_visits_keeps_the_most_recent_visits():
    tokenizer = hand_tokenizer()
    patients = [[["401.9", "250.00"], ["428.0"]], [["486", "4019", "4280"], ["25000"], ["5849"]]]
    batch = tokenizer(patients, max_visits=2)
    pad = [0, 0]
    assert torch.equal(
        batch["input_ids"],
        torch.tensor([[[[1, 2], [3, 4]], [[5, 6], pad]], [[[3, 4], pad], [[7, 8], pad]]]),
    )
    assert torch.equal(batch["visit_mask"], torch.ones(2, 2, dtype=torch.bool))
    assert torch.equal(
        tokenizer(patients, max_visits=1)["input_ids"][:, 0, 0], torch.tensor([[5, 6], [7, 8]])
    )


def test_unknown_codes_error_lists_all_of_them_normalised():
    tokenizer = hand_tokenizer()
    patients = [[["401.9", "401.1"]], [["E11.9"], ["not-a-code", "401.1"]]]
    with pytest.raises(KeyError) as caught:
        tokenizer(patients)  # a random tokenizer cannot embed: the default policy is "error"
    message = str(caught.value)
    assert "2 codes not in the tokenizer: [ICD10CM:E119, ICD9CM:4011]" in message and "not-a-code" in message
    many = [[[f"ICD9CM:{code}" for code in range(1000, 1030)]]]
    with pytest.raises(
        KeyError,
        match=r"30 codes not in the tokenizer: \[ICD9CM:1000, .*, ICD9CM:1019, \.\.\. \(30 in all\)\]",
    ):
        tokenizer(many)
    with pytest.raises(ValueError, match="unknown='embed' needs a semantic tokenizer"):
        tokenizer(patients, unknown="embed")
    with pytest.raises(ValueError, match="unknown must be one of"):
        tokenizer(patients, unknown="ignore")


def test_unknown_skip_drops_codes_and_emptied_visits():
    tokenizer = hand_tokenizer()
    patients = [[["401.1"], ["401.9", "E11.9"], ["428.0"]], [["401.1"]], [[], ["486"]]]
    batch = tokenizer(patients, unknown="skip")
    pad = [0, 0]
    assert torch.equal(
        batch["input_ids"],
        torch.tensor([[[[1, 2]], [[5, 6]]], [[pad], [pad]], [[[9, 0]], [pad]]]),
    )
    assert torch.equal(batch["code_mask"][..., 0], torch.tensor([[1, 1], [0, 0], [1, 0]], dtype=torch.bool))
    assert torch.equal(batch["visit_mask"], torch.tensor([[1, 1], [0, 0], [1, 0]], dtype=torch.bool))


def test_call_rejects_a_single_patient_and_empty_input():
    tokenizer = hand_tokenizer()
    with pytest.raises(TypeError, match="pass \\[patient\\]"):
        tokenizer([["401.9"], ["428.0"]])
    with pytest.raises(ValueError, match="non-empty list of patients"):
        tokenizer([])


def test_call_is_fast_on_a_collator_sized_batch():
    """256 patients x 3 visits x 13 codes (~10k codes). Typical: ~1-2 ms; bound is loose for busy CI."""
    codes = all_codes("ICD9CM")
    tokenizer = SharkTokenizer.random_ids(codes, 4, 128, seed=0)
    generator = np.random.default_rng(0)
    patients = [
        [[codes[i] for i in generator.integers(0, len(codes), 13)] for _ in range(3)] for _ in range(256)
    ]
    timings = []
    for _ in range(20):
        start = time.perf_counter()
        batch = tokenizer(patients)
        timings.append(time.perf_counter() - start)
    assert batch["input_ids"].shape == (256, 3, 13, 4)
    assert min(timings) < 0.02, f"tokenizer call took {min(timings) * 1e3:.1f} ms"


# ------------------------------------------------------------------------------------------ unseen codes


def test_held_out_code_added_later_gets_rkmeans_encoding(embeddings):
    seen = CodeEmbeddings(embeddings.codes[:110], embeddings.vectors[:110], MODEL_ID, "description")
    held_out = CodeEmbeddings(embeddings.codes[110:], embeddings.vectors[110:], MODEL_ID, "description")
    tokenizer = SharkTokenizer.fit(seen, num_levels=3, codebook_size=8, seed=0)
    reference = ResidualKMeans(num_levels=3, codebook_size=8, seed=0).fit(seen.vectors)
    before = (tokenizer.ids, tokenizer.fingerprint, tokenizer.codebook_fingerprint)

    assert tokenizer.add_codes(held_out) == held_out.codes
    assert len(tokenizer) == 120 and tokenizer.codes[110:] == held_out.codes
    assert torch.equal(tokenizer.ids[110:], reference.encode(held_out.vectors))
    assert torch.equal(tokenizer.ids[:110], before[0])  # existing codes keep their IDs
    assert tokenizer.encode(held_out.codes[0]) == tuple(reference.encode(held_out.vectors[:1])[0].tolist())
    assert tokenizer.fingerprint != before[1] and tokenizer.codebook_fingerprint == before[2]
    assert tokenizer.add_codes(held_out) == []  # already present: nothing added


def test_add_codes_rejects_other_dimensions_models_and_kinds(semantic):
    narrow = CodeEmbeddings(["ICD9CM:4011"], torch.zeros(1, 8), MODEL_ID, "description")
    with pytest.raises(ValueError, match="dimension mismatch: the codebooks are 16-d .* new vectors are 8-d"):
        semantic.add_codes(narrow)
    other = CodeEmbeddings(["ICD9CM:4011"], torch.zeros(1, 16), "another/model", "description")
    with pytest.raises(ValueError, match="'another/model'.*allow_other_model=True"):
        semantic.add_codes(other)
    with pytest.raises(ValueError, match="add_codes needs codebooks, and a 'random' tokenizer has none"):
        hand_tokenizer().add_codes(other)


def test_unseen_codes_are_embedded_on_the_fly_with_a_real_model():
    """One real (small) embedding: 24 ICD-9 codes with the offline all-MiniLM-L6-v2."""
    codes = all_codes("ICD9CM")[:24]
    encoder = load_text_encoder()  # loaded once; a tokenizer would load it lazily from its embedding_model
    embeddings = embed_codes(codes, model=encoder, show_progress=False)
    tokenizer = SharkTokenizer.fit(embeddings, num_levels=2, codebook_size=4, seed=0)
    assert tokenizer.embedding_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert resolve_model(tokenizer.embedding_model).source == str(Path(DEFAULT_MODEL).resolve())
    tokenizer.text_encoder = encoder
    fingerprint = tokenizer.fingerprint
    with pytest.raises(KeyError, match="1 codes not in the tokenizer: \\[ICD9CM:4019\\]"):
        tokenizer([[["ICD9CM:4019", codes[0]]]])  # the default is "error": embedding is an opt-in
    batch = tokenizer([[["ICD9CM:4019", codes[0]]]], unknown="embed")
    unseen = embed_codes(["ICD9CM:4019"], model=encoder, show_progress=False)
    expected = ResidualKMeans.from_codebooks(tokenizer.codebooks).encode(unseen.vectors)[0]
    assert torch.equal(batch["input_ids"][0, 0, 0], expected)
    assert torch.equal(batch["input_ids"][0, 0, 1], tokenizer.ids[0])
    assert len(tokenizer) == 24 and tokenizer.fingerprint == fingerprint  # table unchanged
    assert tokenizer.add_codes(unseen) == ["ICD9CM:4019"]
    assert tokenizer.encode("401.9") == tuple(expected.tolist())
    with pytest.raises(KeyError, match="cannot embed the unseen codes \\['ICD9CM:4018'\\]"):
        tokenizer([[["401.8"]]], unknown="embed")  # well-formed, but no such code: it has no text to embed


# ------------------------------------------------------------------------------------------ collisions


def test_collisions_and_deduplicate_exact(embeddings):
    small = embeddings.select(embeddings.codes[:40])
    base = SharkTokenizer.fit(small, num_levels=1, codebook_size=20, seed=0)
    by_id: dict[int, list[str]] = {}
    for code, (first,) in zip(base.codes, base.ids.tolist(), strict=True):
        by_id.setdefault(first, []).append(code)
    groups = [group for group in by_id.values() if len(group) > 1]  # 40 codes, 20 IDs: some must collide
    assert groups and base.collisions() == groups
    assert base.collision_rate == sum(map(len, groups)) / 40

    unique = SharkTokenizer.fit(small, num_levels=1, codebook_size=20, seed=0, deduplicate=True)
    assert unique.num_levels == 2 and unique.deduplicated
    assert torch.equal(unique.ids[:, :1], base.ids)
    position = {code: index for group in by_id.values() for index, code in enumerate(group)}
    assert unique.ids[:, 1].tolist() == [position[code] for code in small.codes]
    assert unique.collisions() == [] and unique.collision_rate == 0.0


def test_deduplicated_tokenizer_places_added_codes_after_their_group(embeddings):
    small = embeddings.select(embeddings.codes[:41])
    seen = CodeEmbeddings(small.codes[:40], small.vectors[:40], MODEL_ID, "description")
    tokenizer = SharkTokenizer.fit(seen, num_levels=1, codebook_size=20, seed=0, deduplicate=True)
    tokenizer.add_codes(small.select(small.codes[40:]))
    first = tokenizer.ids[40, 0]
    assert tokenizer.ids[40, 1] == int((tokenizer.ids[:40, 0] == first).sum())
    assert tokenizer.collisions() == []


def test_deduplicate_needs_codebook_size_at_least_the_largest_group():
    # 8 identical vectors and 4 distinct ones: with K = 5 distinct points each point is its own cluster,
    # so the 8 identical codes share one ID and a deduplication level of K = 5 slots cannot separate them.
    vectors = torch.cat([torch.zeros(8, 4), torch.eye(4) * 100])
    embeddings = CodeEmbeddings(all_codes("ICD9CM")[:12], vectors, MODEL_ID, "description")
    with pytest.raises(ValueError, match="largest collision group, but 8 codes share .*codebook_size=5"):
        SharkTokenizer.fit(embeddings, num_levels=1, codebook_size=5, seed=0, deduplicate=True)


# ------------------------------------------------------------------------------------------ save / load


@pytest.mark.parametrize("kind", ["semantic", "random", "index", "deduplicated"])
def test_save_load_round_trip_is_bit_identical_and_pickle_free(tmp_path, embeddings, kind):
    tokenizer = {
        "semantic": lambda: SharkTokenizer.fit(embeddings, 3, 8, seed=0),
        "random": lambda: SharkTokenizer.random_ids(embeddings.codes, 4, 16, seed=3),
        "index": lambda: SharkTokenizer.index(embeddings.codes),
        "deduplicated": lambda: SharkTokenizer.fit(embeddings, 1, 30, seed=0, deduplicate=True),
    }[kind]()
    tokenizer.save_pretrained(tmp_path / "a")
    loaded = SharkTokenizer.from_pretrained(tmp_path / "a")
    assert_same_tokenizer(tokenizer, loaded)
    assert (loaded.kind, loaded.deduplicated) == (tokenizer.kind, tokenizer.deduplicated)
    loaded.save_pretrained(tmp_path / "b")
    for name in (CONFIG_NAME, TENSORS_NAME, "README.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sorted(path.name for path in (tmp_path / "a").iterdir()) == [
        "README.md",
        TENSORS_NAME,
        CONFIG_NAME,
    ]
    for path in (tmp_path / "a").iterdir():  # no pickle (0x80 protocol byte) and no torch.save zip
        head = path.read_bytes()[:8]
        assert head[:1] != b"\x80" and head[:4] != b"PK\x03\x04"
    config = json.loads((tmp_path / "a" / CONFIG_NAME).read_text())
    assert config["format_version"] == 2 and config["fingerprint"] == tokenizer.fingerprint
    assert config["codes"] == tokenizer.codes
    ids_dtype = torch.int32 if kind == "index" and tokenizer.codebook_size > 256 else torch.uint8
    assert load_file(tmp_path / "a" / TENSORS_NAME)["ids"].dtype == ids_dtype  # stored small, read as int64


def test_fingerprint_is_the_documented_sha256():
    import hashlib

    tokenizer = hand_tokenizer()
    digest = hashlib.sha256(
        b"shark-tokenizer\nkind=random\nids=5x2\ncodebooks=none\nK=10\n"
        b"embedding_model=none\nembedding_text=none\n"
    )
    digest.update(np.array(IDS, dtype="<i8").tobytes())
    digest.update("\n".join(CODES).encode())
    assert tokenizer.fingerprint == digest.hexdigest()


def test_subfolder_card_and_neighbouring_files(tmp_path, semantic):
    (tmp_path / "config.json").write_text("{}")  # a model saved in the same folder
    semantic.save_pretrained(tmp_path / "tokenizer")
    assert SharkTokenizer.from_pretrained(tmp_path, subfolder="tokenizer").fingerprint == semantic.fingerprint
    card = ModelCard.load(tmp_path / "tokenizer" / "README.md")
    assert "shark-tokenizer" in card.data.tags and card.data.library_name == "shark-hf"
    assert semantic.fingerprint in card.text and "no patient data" in card.text
    semantic.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").read_text() == "{}"
    (tmp_path / "README.md").write_text("# A model card\n")
    semantic.save_pretrained(tmp_path)  # a README.md that is not a tokenizer card is left alone
    assert (tmp_path / "README.md").read_text() == "# A model card\n"


def test_card_usage_snippet_runs(tmp_path):
    folder = tmp_path / "tokenizer"
    hand_tokenizer().save_pretrained(folder, model_card_kwargs={"repo_id": str(folder)})
    text = ModelCard.load(folder / "README.md").text
    usage = text.split("## Usage")[1].split("```python")[1].split("```")[0]
    namespace: dict = {}
    exec(usage, namespace)  # noqa: S102 - the card's own snippet
    assert namespace["batch"]["input_ids"].shape == (1, 2, 2, 2)


def test_render_card_is_strict_about_templates_and_placeholders():
    with pytest.raises(
        FileNotFoundError, match="card template 'missing.md' not found at .*hub_cards/missing.md"
    ):
        render_card("missing.md", ModelCardData())
    with pytest.raises(jinja2.UndefinedError, match="'num_levels' is undefined"):
        render_card("tokenizer_card.md", ModelCardData(), repo_id=None)


def test_loading_a_folder_that_is_not_a_tokenizer_says_why(tmp_path, semantic):
    with pytest.raises(
        FileNotFoundError, match=f"{tmp_path} is not a SharkTokenizer folder: it has no {CONFIG_NAME}"
    ):
        SharkTokenizer.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        SharkTokenizer.from_pretrained(str(tmp_path / "missing"))
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"tokenizer_class": "BertTokenizer"}))
    with pytest.raises(FileNotFoundError, match=f"it has no {TENSORS_NAME}"):
        SharkTokenizer.from_pretrained(tmp_path)
    semantic.save_pretrained(tmp_path / "shark")
    (tmp_path / TENSORS_NAME).write_bytes((tmp_path / "shark" / TENSORS_NAME).read_bytes())
    with pytest.raises(
        ValueError, match="not a SharkTokenizer config \\(tokenizer_class is 'BertTokenizer'\\)"
    ):
        SharkTokenizer.from_pretrained(tmp_path)


def edit_config(folder, **changes):
    config = json.loads((folder / CONFIG_NAME).read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    (folder / CONFIG_NAME).write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        (
            {"format_version": 3, "shark_hf_version": "9.0.0"},
            "written by shark-hf 9.0.0 with tokenizer format_version 3",
        ),
        ({"format_version": None}, "has no format_version: it was not written by SharkTokenizer"),
        ({"format_version": 0}, "format_version 0 cannot be migrated: no migration step from version 0"),
        ({"format_version": "1"}, "format_version must be an integer"),
        ({"codes": None}, "incomplete SharkTokenizer files, missing \\['codes'\\]"),
    ],
)
def test_other_format_versions_are_refused_with_the_reason(tmp_path, semantic, changes, error):
    semantic.save_pretrained(tmp_path)
    edit_config(tmp_path, **changes)
    with pytest.raises(ValueError, match=error):
        SharkTokenizer.from_pretrained(tmp_path)


def test_tampered_table_fails_the_fingerprint_check(tmp_path, semantic):
    semantic.save_pretrained(tmp_path)
    codes = semantic.codes
    edit_config(tmp_path, codes=[codes[1], codes[0], *codes[2:]])
    with pytest.raises(ValueError, match="fingerprint mismatch"):
        SharkTokenizer.from_pretrained(tmp_path)


def test_push_and_pull_through_a_hub_with_revision_and_subfolder(local_hub, tmp_path, semantic):
    first = semantic
    second = SharkTokenizer.random_ids(semantic.codes, 3, 8, seed=0)
    first.push_to_hub("hospital-a/tokenizer")
    first_commit = HfApi().model_info("hospital-a/tokenizer").sha
    second.push_to_hub("hospital-a/tokenizer")
    assert_same_tokenizer(SharkTokenizer.from_pretrained("hospital-a/tokenizer"), second)
    pinned = SharkTokenizer.from_pretrained("hospital-a/tokenizer", revision=first_commit)
    assert_same_tokenizer(pinned, first)
    card = ModelCard.load(hf_hub_download("hospital-a/tokenizer", "README.md", revision=first_commit))
    assert "shark-tokenizer" in card.data.tags and 'from_pretrained("hospital-a/tokenizer")' in card.text

    first.save_pretrained(tmp_path / "tokenizer")
    HfApi().upload_folder(
        repo_id="hospital-a/tokenizer", folder_path=tmp_path / "tokenizer", path_in_repo="tokenizer"
    )
    assert_same_tokenizer(
        SharkTokenizer.from_pretrained("hospital-a/tokenizer", subfolder="tokenizer"), first
    )
    with pytest.raises(FileNotFoundError, match="subfolder 'missing' is not a SharkTokenizer folder"):
        SharkTokenizer.from_pretrained("hospital-a/tokenizer", subfolder="missing")


# ------------------------------------------------------------------------------------------ input errors


def test_fit_errors_name_the_offending_codes(embeddings):
    broken = CodeEmbeddings(embeddings.codes[:20], embeddings.vectors[:20].clone(), MODEL_ID, "description")
    broken.vectors[3, 0] = math.nan
    broken.vectors[7, 2] = math.inf
    with pytest.raises(
        ValueError, match=f"NaN or inf in the rows of \\['{broken.codes[3]}', '{broken.codes[7]}'\\]"
    ):
        SharkTokenizer.fit(broken, 1, 4)
    twice = CodeEmbeddings(["401.9", "ICD9CM:4019", "428.0"], torch.randn(3, 4), MODEL_ID, "description")
    with pytest.raises(
        ValueError, match="duplicate codes in embeddings.codes \\(after normalisation\\): \\['ICD9CM:4019'\\]"
    ):
        SharkTokenizer.fit(twice, 1, 2)
    with pytest.raises(ValueError, match="codebook_size=32 is larger than the number of codes \\(20\\)"):
        SharkTokenizer.fit(embeddings.select(embeddings.codes[:20]), 1, 32)
    with pytest.raises(ValueError, match="duplicate codes in codes"):
        SharkTokenizer.random_ids(["401.9", "4019"])
    with pytest.raises(ValueError, match="not a valid"):
        SharkTokenizer.index(["401.9", "12"])


def test_constructor_validates_the_table():
    with pytest.raises(ValueError, match="outside \\[0, codebook_size=10\\)"):
        SharkTokenizer(CODES, torch.tensor(IDS) + 5, kind="random", codebook_size=10)
    with pytest.raises(ValueError, match="ids has 4 rows but there are 5 codes"):
        SharkTokenizer(CODES, torch.tensor(IDS[:4]), kind="random", codebook_size=10)
    with pytest.raises(ValueError, match="codebooks are required for kind 'semantic' and only for it"):
        SharkTokenizer(CODES, torch.tensor(IDS), kind="semantic", codebook_size=10)
    with pytest.raises(ValueError, match="codebooks must be \\[2, 10, D\\]"):
        SharkTokenizer(
            CODES, torch.tensor(IDS), kind="semantic", codebook_size=10, codebooks=torch.zeros(3, 10, 4)
        )


# ------------------------------------------------------------------------------------------ interpretability


def report_tokenizer() -> SharkTokenizer:
    codes = ["ICD9CM:0796", "ICD9CM:46611", "ICD9CM:4019", "ICD9CM:4011", "ICD9CM:25000", "ICD9CM:2724"]
    ids = [[0, 1, 2], [1, 1, 2], [2, 3, 0], [2, 3, 0], [3, 3, 0], [3, 0, 1]]
    return SharkTokenizer(codes, torch.tensor(ids), kind="random", codebook_size=4)


def test_cluster_report_purity_and_cross_chapter_pairs_exact():
    labels = {
        "ICD9CM:0796": "inf",
        "ICD9CM:46611": "resp",
        "ICD9CM:4019": "htn",
        "ICD9CM:4011": "htn",
        "ICD9CM:25000": "dm",
    }  # ICD9CM:2724 has no label: counts in the size, never in the majority
    names = {"htn": "Hypertension", "dm": "Diabetes", "inf": "Infection"}
    report = report_tokenizer().cluster_report(label_fn=labels.__getitem__, label_names=names, min_size=2)
    rows = [(c.level, c.cluster, c.size, c.majority_label, c.majority_count) for c in report.clusters]
    assert rows == [
        (1, 2, 2, "htn", 2),
        (1, 3, 2, "dm", 1),
        (2, 1, 2, "inf", 1),  # a tie (inf, resp) goes to the label that sorts first
        (2, 3, 3, "htn", 2),
        (3, 0, 3, "htn", 2),
        (3, 2, 2, "inf", 1),
    ]
    assert [c.purity for c in report.clusters] == [1.0, 0.5, 0.5, 2 / 3, 2 / 3, 0.5]
    assert report.clusters[0].majority_name == "Hypertension"

    chapters = {code: ancestors(code)[0].code for code in ("ICD9CM:0796", "ICD9CM:46611", "ICD9CM:4019")}
    assert chapters == {"ICD9CM:0796": "001-139", "ICD9CM:46611": "460-519", "ICD9CM:4019": "390-459"}
    pairs = [(p.codes, p.shared_ids) for p in report.cross_chapter_pairs]
    assert pairs == [
        (("ICD9CM:0796", "ICD9CM:46611"), (1, 2)),
        (("ICD9CM:4019", "ICD9CM:25000"), (3, 0)),
        (("ICD9CM:4011", "ICD9CM:25000"), (3, 0)),
    ]  # 4019/4011 share (3, 0) too, but both are in chapter 390-459
    assert report.num_cross_chapter_pairs == 3
    assert report.cross_chapter_pairs[0].chapters == ("001-139", "460-519")

    data = report.to_dict()
    assert data["clusters"][3]["purity"] == 2 / 3 and data["num_cross_chapter_pairs"] == 3
    json.dumps(data)
    text = str(report)
    assert "[2, -, -]" in text and "2/2" in text and "htn: Hypertension" in text and "[-, 1, 2]" in text


def test_cluster_report_defaults_to_ccs_categories():
    report = report_tokenizer().cluster_report(min_size=2)
    first = report.clusters[0]
    assert (first.level, first.cluster, first.majority_label, first.majority_count) == (1, 2, "98", 2)
    assert "hypertension" in first.majority_name.lower()


# ------------------------------------------------------------------------------------------ provenance


@pytest.mark.parametrize(
    ("key", "value"), [("embedding_model", "attacker/any-model"), ("embedding_text", "synonyms")]
)
def test_editing_the_embedding_model_or_text_breaks_the_fingerprint(tmp_path, semantic, key, value):
    """A downloaded config cannot be edited to make `unknown="embed"` load another model (issue 14.4)."""
    semantic.save_pretrained(tmp_path)
    edit_config(tmp_path, **{key: value})
    with pytest.raises(ValueError, match=f"{tmp_path}: fingerprint mismatch"):
        SharkTokenizer.from_pretrained(tmp_path)


def test_loaded_tokenizers_do_not_embed_unseen_codes_unless_asked(tmp_path, semantic):
    semantic.save_pretrained(tmp_path)
    loaded = SharkTokenizer.from_pretrained(tmp_path)
    with pytest.raises(KeyError, match="1 codes not in the tokenizer: \\[ICD9CM:4019\\]"):
        loaded([[["401.9"]]])
    assert loaded.text_encoder is None  # nothing was loaded


def test_a_format_version_1_folder_is_migrated_after_its_old_fingerprint_is_checked(tmp_path, semantic):
    semantic.save_pretrained(tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    tensors = load_file(tmp_path / TENSORS_NAME)
    v1 = table_fingerprint(
        "semantic", 8, semantic.ids.numpy(), semantic.codes, semantic.codebooks, None, None, format_version=1
    )
    save_file({**tensors, "ids": semantic.ids}, tmp_path / TENSORS_NAME)  # version 1 stored int64
    edit_config(tmp_path, format_version=1, fingerprint=v1)
    loaded = SharkTokenizer.from_pretrained(tmp_path)
    assert loaded.fingerprint == semantic.fingerprint == config["fingerprint"]
    edit_config(tmp_path, fingerprint="0" * 64)
    with pytest.raises(ValueError, match="fingerprint mismatch"):
        SharkTokenizer.from_pretrained(tmp_path)
