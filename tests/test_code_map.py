"""The code map: chapters, PCA, cluster names on a handmade tokenizer, determinism, uncut key, atomic save."""

import matplotlib.figure
import matplotlib.pyplot
import pytest
import torch
from matplotlib.text import Text

from shark_hf.code_map import (
    CHAPTER_NAMES,
    UNKNOWN_CHAPTER,
    ClusterLabel,
    CodeMap,
    chapter_of,
    code_map,
    pca_2d,
    reconstructed_vectors,
)
from shark_hf.codes import all_codes, label_names
from shark_hf.plots import code_map_figure, plot_code_map
from shark_hf.tokenization_shark import SharkTokenizer

# Four level-1 clusters (level 2 only to have two levels). CCS of each code in AHRQ's single-level CCS:
# 401.1, 401.9 -> 98 Essential hypertension; 401.0 -> 99 Hypertension with complications and secondary
# hypertension; 250.00, 250.01 -> 49 Diabetes mellitus without complication; 250.03 (type I, uncontrolled) ->
# 50 Diabetes mellitus with complications; 428.x -> 108 Congestive heart failure; nonhypertensive;
# 486 -> 122 Pneumonia (...); S72.001A -> 226 Fracture of neck of femur (hip).
TABLE = {
    "ICD9CM:4010": (2, 0),
    "ICD9CM:4011": (2, 1),
    "ICD9CM:4019": (2, 0),
    "ICD9CM:25003": (2, 1),  # the largest cluster: 2 of its 4 codes essential hypertension
    "ICD9CM:25000": (0, 0),
    "ICD9CM:25001": (0, 1),
    "ICD9CM:4280": (0, 0),  # next: 2 of 3 diabetes
    "ICD9CM:486": (1, 0),
    "ICD9CM:4281": (1, 1),  # a 1-1 tie: CCS 108 comes before 122 in AHRQ order
    "ICD10CM:S72001A": (3, 0),
}


@pytest.fixture(scope="module")
def tokenizer() -> SharkTokenizer:
    generator = torch.Generator().manual_seed(0)
    codebooks = torch.randn(2, 4, 6, generator=generator)
    return SharkTokenizer(
        list(TABLE), torch.tensor(list(TABLE.values())), kind="semantic", codebook_size=4, codebooks=codebooks
    )


def test_chapters_merge_icd9_and_icd10_by_body_system():
    expected = {
        "ICD9CM:0010": "Infectious and parasitic",
        "ICD9CM:3659": "Nervous system and sense organs",  # glaucoma: ICD-9-CM's 320-389
        "ICD10CM:H4010X0": "Nervous system and sense organs",  # glaucoma: ICD-10-CM's H00-H59
        "ICD9CM:4019": "Circulatory",
        "ICD10CM:I10": "Circulatory",
        "ICD9CM:V3000": "Health status and services",
        "ICD9CM:E8120": "External causes",
        "ICD10CM:V0001XA": "External causes",
        "ICD10CM:O9A111": "Pregnancy and childbirth",
        "ICD10CM:QA08": "Congenital",
        "ICD10CM:D3A010": "Neoplasms",
        "ICD10CM:U071": "Special purposes (U codes)",
        "ICD9CM:9999": "Injury and poisoning",
    }
    assert {code: chapter_of(code) for code in expected} == expected


def test_every_billable_code_has_a_chapter():
    for system in ("ICD9CM", "ICD10CM"):
        outside = [code for code in all_codes(system) if chapter_of(code) == UNKNOWN_CHAPTER]
        assert outside == [], system


def test_pca_of_points_on_a_line_is_that_line_with_all_the_variance():
    vectors = torch.tensor([[0.0, 0.0, 1.0], [2.0, 2.0, 1.0], [4.0, 4.0, 1.0]])
    xy, explained = pca_2d(vectors)
    step = 2 * 2**0.5
    assert torch.allclose(xy[:, 0], torch.tensor([-step, 0.0, step])) and torch.allclose(
        xy[:, 1], torch.zeros(3)
    )
    assert explained == pytest.approx((1.0, 0.0))
    assert torch.allclose(pca_2d(vectors.flip(0))[0], xy.flip(0))  # the sign does not hang on the row order


def test_reconstructed_vectors_sum_the_level_centroids(tokenizer):
    codebooks = tokenizer.codebooks
    assert torch.allclose(reconstructed_vectors(tokenizer)[3], codebooks[0, 2] + codebooks[1, 1])
    random = SharkTokenizer.random_ids(list(TABLE), num_levels=2, codebook_size=4, seed=0)
    with pytest.raises(ValueError, match="needs a semantic tokenizer .* not one of kind 'random'"):
        reconstructed_vectors(random)


def test_largest_clusters_are_named_by_their_most_common_ccs_category(tokenizer):
    data = code_map(tokenizer, top_clusters=3)
    assert [(c.rank, c.cluster_id, c.size, c.ccs_name) for c in data.clusters] == [
        (1, 2, 4, "Essential hypertension"),
        (2, 0, 3, "Diabetes mellitus without complication"),
        (3, 1, 2, "Congestive heart failure; nonhypertensive"),
    ]
    assert [c.ccs_share for c in data.clusters] == [0.5, 2 / 3, 0.5]
    assert [(c.chapter, c.chapter_share) for c in data.clusters] == [
        ("Circulatory", 0.75),
        ("Endocrine, nutritional, metabolic", 2 / 3),
        ("Circulatory", 0.5),  # a 1-1 tie with Respiratory: the first in CHAPTER_NAMES
    ]
    assert (data.num_codes, data.num_clusters, data.subsampled) == (10, 4, False)
    assert data.chapters[:4] == [
        "Circulatory",
        "Circulatory",
        "Circulatory",
        "Endocrine, nutritional, metabolic",
    ]
    first = data.xy[:4].median(dim=0).values
    assert data.clusters[0].center == (float(first[0]), float(first[1]))


def test_codes_and_vectors_can_be_given_and_must_be_in_the_tokenizer(tokenizer):
    vectors = torch.eye(3)
    data = code_map(tokenizer, codes=["401.0", "250.00", "486"], vectors=vectors, top_clusters=5)
    assert data.codes == ["ICD9CM:4010", "ICD9CM:25000", "ICD9CM:486"] and data.cluster_ids == [2, 0, 1]
    assert data.explained_variance == pytest.approx((0.5, 0.5))
    with pytest.raises(KeyError, match="codes not in the tokenizer: ICD9CM:4659"):
        code_map(tokenizer, codes=["4659"])
    with pytest.raises(ValueError, match="vectors has 3 rows but there are 2 codes"):
        code_map(tokenizer, codes=["4010", "486"], vectors=vectors)


def test_same_seed_same_picture_data_and_subsampling_says_so(tokenizer):
    first = code_map(tokenizer, max_points=6, seed=3)
    again = code_map(tokenizer, max_points=6, seed=3)
    assert first.codes == again.codes and torch.equal(first.xy, again.xy) and first.clusters == again.clusters
    assert len(first.codes) == 6 and first.subsampled and first.num_codes == 10
    assert first.codes == sorted(first.codes, key=list(TABLE).index)  # drawn in table order
    other = code_map(tokenizer, max_points=6, seed=4)
    assert other.codes != first.codes and other.clusters == first.clusters  # labels use every code


def _worst_case_map() -> CodeMap:
    """Every chapter present and the 12 longest CCS names as cluster names."""
    chapters = [*CHAPTER_NAMES, UNKNOWN_CHAPTER]
    longest = sorted(label_names("ccs").values(), key=len)[-12:]
    clusters = [
        ClusterLabel(
            i + 1, i, 99999 - i, name, 0.5, "Endocrine, nutritional, metabolic", 1.0, (0.0, float(i))
        )
        for i, name in enumerate(longest)
    ]
    xy = torch.arange(2.0 * len(chapters)).reshape(-1, 2)
    return CodeMap(xy, chapters, chapters, list(range(len(chapters))), (0.1, 0.05), 99999, 128, clusters)


def test_legend_lists_every_chapter_uncut_and_all_text_fits_in_the_figure():
    data = _worst_case_map()
    figure = code_map_figure(data, "Universal tokenizer", 128, rebuilt=True)
    try:
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        legend = next(ax.get_legend() for ax in figure.axes if ax.get_legend())
        assert [t.get_text() for t in legend.get_texts()] == [f"{c} (1)" for c in data.chapters]
        box = figure.bbox
        ticks = {id(t) for ax in figure.axes for t in [*ax.get_xticklabels(), *ax.get_yticklabels()]}
        texts = [t for t in figure.findobj(Text) if t.get_visible() and t.get_text() and id(t) not in ticks]
        assert len(texts) == 3 + 12 + 1 + 21 + 1 + 1  # title, axis labels, numbers, legend, key, caption
        for text in texts:
            extent = text.get_window_extent(renderer)
            assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, text.get_text()
            assert box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1, text.get_text()
        key = next(t.get_text() for t in texts if t.get_text().startswith("Largest level-1 clusters"))
        assert all(cluster.ccs_name in " ".join(key.split()) for cluster in data.clusters)  # names whole
        title = figure.axes[0].get_title()
        assert title == "Universal tokenizer: 99,999 codes in 128 level-1 clusters (of K = 128)"
        assert figure.axes[0].get_xlabel() == (
            "PCA component 1 of the reconstructed code vectors (10.0% of variance)"
        )
    finally:
        matplotlib.pyplot.close(figure)


def test_plot_code_map_writes_a_png_atomically(tokenizer, tmp_path, monkeypatch):
    path = plot_code_map(tokenizer, tmp_path / "map.png", name="Handmade", top_clusters=3)
    assert path == tmp_path / "map.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["map.png"]

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", fail)
    before = path.read_bytes()
    with pytest.raises(OSError, match="disk full"):
        plot_code_map(tokenizer, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["map.png"]
