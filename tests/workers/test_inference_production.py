"""Production backends, exercised end to end on tiny randomly initialised models of the real classes.

Each model is built with the transformers class the backend loads (CLIPModel, SiglipModel, SamModel,
BlipForConditionalGeneration, Qwen3VLModel / Qwen3VLForConditionalGeneration), saved with a tokenizer built
offline and a directly constructed image processor, and loaded back through the backend's own code path
(``checkpoint=<folder>``), so loading, pre- and post-processing all run. The weights are random, so the
tests check what must hold for any weights: shapes, normalisation, determinism, batching equal to singles,
valid boxes, stopping between batches. Nothing reaches the network.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from workers.inference.base import CaptionRequest, ModelLoadError, RerankCandidate, StopRequested

pytestmark = pytest.mark.ml

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

WORDS = [
    "a",
    "the",
    "of",
    "with",
    "and",
    "in",
    "on",
    "painting",
    "picture",
    "saint",
    "woman",
    "man",
    "child",
    "dog",
    "horse",
    "book",
    "sword",
    "red",
    "blue",
    "gold",
    "tree",
    "sky",
    "angel",
    "crown",
    "ship",
    "sea",
    "figure",
    "holding",
    "reading",
    "riding",
    "detail",
    "region",
]


@pytest.fixture(scope="session", autouse=True)
def _offline() -> None:
    # The backends must never reach the hub from a test; these make any attempt fail loudly instead.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    torch.manual_seed(0)
    torch.set_num_threads(2)


def _tokenizer(*, specials: list[str], template: tuple[str, str] | None, **named: str):  # type: ignore[no-untyped-def]
    """A word-level fast tokenizer: vocabulary = special tokens + WORDS, built without any download."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate([*specials, *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=named["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if template:
        first, last = template
        backend.post_processor = processors.TemplateProcessing(
            single=f"{first} $A {last}", special_tokens=[(first, vocab[first]), (last, vocab[last])]
        )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **named)
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [s for s in specials if s not in named.values()]}
    )
    return tokenizer, vocab


TINY_TOWER = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 2}


def _clip_text(*, max_positions: int):  # type: ignore[no-untyped-def]
    """The CLIP-style tokenizer (<s> text </s>) and tiny text tower of the CLIP and OWLv2 checkpoints."""
    tokenizer, vocab = _tokenizer(
        specials=["<pad>", "<unk>", "<s>", "</s>"],
        template=("<s>", "</s>"),
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
    )
    text_config = {
        **TINY_TOWER,
        "vocab_size": len(vocab),
        "max_position_embeddings": max_positions,
        "bos_token_id": vocab["<s>"],
        "eos_token_id": vocab["</s>"],
        "pad_token_id": vocab["<pad>"],
    }
    return tokenizer, text_config


def _image(seed: int, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """A picture with shapes on it, so crops and masks differ from one another."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x, y = int(rng.integers(0, size[0] - 20)), int(rng.integers(0, size[1] - 20))
        colour = tuple(int(c) for c in rng.integers(120, 255, 3))
        draw.ellipse((x, y, x + int(rng.integers(10, 30)), y + int(rng.integers(10, 30))), fill=colour)
    return image


def _assert_unit_rows(matrix: np.ndarray, dim: int, rows: int) -> None:
    assert matrix.shape == (rows, dim)
    assert matrix.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(matrix).all()


# --- checkpoints ------------------------------------------------------------------------------------------


def test_checkpoint_comes_from_option_then_env_then_default(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from workers.inference.production.clip import ClipEmbedder

    monkeypatch.delenv("SEMART_CLIP_CHECKPOINT", raising=False)
    assert ClipEmbedder(device="cpu").checkpoint == "openai/clip-vit-base-patch32"
    monkeypatch.setenv("SEMART_CLIP_CHECKPOINT", "someone/clip-large")
    assert ClipEmbedder(device="cpu").checkpoint == "someone/clip-large"
    assert ClipEmbedder(device="cpu", checkpoint=str(tmp_path)).checkpoint == str(tmp_path)
    assert ClipEmbedder(device="cpu").model_key == "clip@clip-large"


def test_hub_id_mirrored_under_model_dir_is_read_from_there(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from workers.inference.production.sam import SamDetector

    monkeypatch.delenv("SEMART_SAM_CHECKPOINT", raising=False)
    assert SamDetector(device="cpu", model_dir=tmp_path).checkpoint == "facebook/sam-vit-base"
    mirror = tmp_path / "facebook" / "sam-vit-base"
    mirror.mkdir(parents=True)
    (mirror / "config.json").write_text("{}")
    detector = SamDetector(device="cpu", model_dir=tmp_path)
    assert detector.checkpoint == str(mirror)
    assert detector.model_key == "sam@sam-vit-base"


def test_options_come_from_a_json_environment_variable_under_explicit_ones(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from workers.inference.production.qwen3vl import Qwen3VLEmbedder
    from workers.inference.production.sam import SamDetector

    monkeypatch.setenv("SEMART_SAM_OPTIONS", '{"points_per_side": 3, "nms_iou": 0.5}')
    detector = SamDetector(device="cpu", nms_iou=0.6)
    assert (detector.points_per_side, detector.nms_iou) == (3, 0.6)
    monkeypatch.setenv("SEMART_QWEN3VL_EMBEDDING_OPTIONS", '{"dimensions": 1024}')
    embedder = Qwen3VLEmbedder(device="cpu")
    assert embedder.dim == 1024 and embedder.model_key == "qwen3-vl-embedding@Qwen3-VL-Embedding-2B-d1024"
    monkeypatch.setenv("SEMART_SAM_OPTIONS", "points_per_side=3")
    with pytest.raises(ValueError, match="SEMART_SAM_OPTIONS is not valid JSON"):
        SamDetector(device="cpu")
    monkeypatch.setenv("SEMART_SAM_OPTIONS", "[3]")
    with pytest.raises(ValueError, match="must be a JSON object"):
        SamDetector(device="cpu")


def test_missing_checkpoint_is_a_model_load_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from workers.inference.production.blip import BlipCaptioner

    captioner = BlipCaptioner(device="cpu", checkpoint=str(tmp_path / "nothing-here"))
    with pytest.raises(ModelLoadError, match="nothing-here"):
        captioner.load()
    assert not captioner.loaded


def test_registry_resolves_every_production_key() -> None:
    from workers.inference.registry import BACKENDS, backend_class

    for role, keys in BACKENDS.items():
        for key, dotted in keys.items():
            if ".production." in dotted:
                assert backend_class(role, key).key == key


# --- CLIP and SigLIP --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    folder = tmp_path_factory.mktemp("tiny-clip")
    tokenizer, text_config = _clip_text(max_positions=24)
    config = CLIPConfig(
        text_config=text_config,
        vision_config={**TINY_TOWER, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )
    return folder


@pytest.fixture(scope="session")
def siglip_dir(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    import io

    import sentencepiece
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel, SiglipTokenizer

    folder = tmp_path_factory.mktemp("tiny-siglip")
    # Google's SigLIP checkpoints ship a SentencePiece model, not a tokenizer.json: train a tiny one so the
    # real SiglipTokenizer (and the sentencepiece dependency) is what the backend loads.
    sentences = [" ".join(WORDS[i : i + 5]) for i in range(0, len(WORDS), 3)] * 10
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=48,
        hard_vocab_limit=False,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        minloglevel=2,
    )
    (folder / "spiece.model").write_bytes(model.getvalue())
    tokenizer = SiglipTokenizer(vocab_file=str(folder / "spiece.model"))
    config = SiglipConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
    )
    SiglipModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def clip(clip_dir):  # type: ignore[no-untyped-def]
    from workers.inference.production.clip import ClipEmbedder

    return ClipEmbedder(device="cpu", checkpoint=str(clip_dir), batch_size=2)


@pytest.fixture(scope="session")
def siglip(siglip_dir):  # type: ignore[no-untyped-def]
    from workers.inference.production.clip import SiglipEmbedder

    return SiglipEmbedder(device="cpu", checkpoint=str(siglip_dir), batch_size=2)


@pytest.mark.parametrize("name, dim", [("clip", 16), ("siglip", 32)])
def test_dual_encoder_embeds_texts_and_images_in_one_normalised_space(request, name: str, dim: int) -> None:  # type: ignore[no-untyped-def]
    embedder = request.getfixturevalue(name)
    texts = ["a saint reading a book", "a red ship on the sea", "a dog"]
    text_vectors = embedder.embed_texts(texts)
    image_vectors = embedder.embed_images([_image(1), _image(2), _image(3)])
    assert embedder.dim == dim
    _assert_unit_rows(text_vectors, dim, 3)
    _assert_unit_rows(image_vectors, dim, 3)
    assert not np.allclose(text_vectors[0], text_vectors[1])
    assert not np.allclose(image_vectors[0], image_vectors[1])
    # batch_size=2 splits three inputs over two batches; padding and batching must not change a vector.
    singles = np.concatenate([embedder.embed_texts([t]) for t in texts])
    np.testing.assert_allclose(text_vectors, singles, atol=1e-5)
    np.testing.assert_allclose(
        image_vectors, np.concatenate([embedder.embed_images([_image(i)]) for i in (1, 2, 3)]), atol=1e-5
    )
    np.testing.assert_allclose(embedder.embed_texts(texts), text_vectors, atol=1e-6)
    assert embedder.embed_texts([]).shape == (0, dim)


def test_clip_regions_are_embedded_as_crops(clip) -> None:  # type: ignore[no-untyped-def]
    image = _image(4)
    boxes = [(0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 0.5, 0.5)]
    regions = clip.embed_regions(image, boxes)
    _assert_unit_rows(regions, 16, 2)
    crop = image.crop((48, 32, 96, 64))
    np.testing.assert_allclose(regions[1], clip.embed_images([crop])[0], atol=1e-5)
    assert not np.allclose(regions[0], regions[1])


def test_checkpoint_missing_weights_is_a_model_load_error_not_a_random_model(clip_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from safetensors.torch import load_file, save_file

    from workers.inference.production.clip import ClipEmbedder

    broken = tmp_path / "clip-without-text-projection"
    shutil.copytree(clip_dir, broken)
    weights = load_file(broken / "model.safetensors")
    del weights["text_projection.weight"]
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="text_projection.weight"):
        ClipEmbedder(device="cpu", checkpoint=str(broken)).load()


def test_registry_loads_clip_from_its_environment_variable(monkeypatch, clip_dir, settings) -> None:  # type: ignore[no-untyped-def]
    from workers.inference.registry import get_model

    monkeypatch.setenv("SEMART_CLIP_CHECKPOINT", str(clip_dir))
    settings.SEMART_DEVICE = "cpu"
    get_model.cache_clear()
    try:
        embedder = get_model("embedder", "clip")
        assert embedder.checkpoint == str(clip_dir)
        _assert_unit_rows(embedder.embed_texts(["a dog"]), 16, 1)
    finally:
        get_model.cache_clear()


# --- BLIP -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def blip_dir(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil

    folder = tmp_path_factory.mktemp("tiny-blip")
    tokenizer, vocab = _tokenizer(
        specials=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[DEC]"],
        template=("[CLS]", "[SEP]"),
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        bos_token="[DEC]",
    )
    config = BlipConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "encoder_hidden_size": 32,
            "bos_token_id": vocab["[DEC]"],
            "pad_token_id": vocab["[PAD]"],
            "sep_token_id": vocab["[SEP]"],
            "eos_token_id": vocab["[SEP]"],
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    BlipForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    BlipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def blip(blip_dir):  # type: ignore[no-untyped-def]
    from workers.inference.production.blip import BlipCaptioner

    return BlipCaptioner(device="cpu", checkpoint=str(blip_dir), max_new_tokens=6, num_beams=2, batch_size=2)


def test_blip_captions_each_request_from_its_label_prompt(blip) -> None:  # type: ignore[no-untyped-def]
    image = _image(5)
    requests = [
        CaptionRequest(box=(0.0, 0.0, 0.5, 1.0), label="dog", level="entity"),
        CaptionRequest(box=(0.5, 0.0, 0.5, 1.0), label="saint", level="entity"),
        CaptionRequest(box=(0.2, 0.2, 0.6, 0.6), label="dog", level="entity"),
    ]
    captions = blip.caption(image, requests)
    assert len(captions) == 3
    # Conditional captioning continues the prompt, so each caption starts with its own label's prompt.
    assert captions[0].startswith("a painting of dog")
    assert captions[1].startswith("a painting of saint")
    assert captions[2].startswith("a painting of dog")
    assert blip.caption(image, requests) == captions
    assert blip.caption(image, []) == []


def test_blip_batches_equal_singles(blip) -> None:  # type: ignore[no-untyped-def]
    image = _image(6)
    requests = [CaptionRequest(box=(i / 4, 0.0, 0.5, 1.0), label="horse", level="entity") for i in range(3)]
    assert blip.caption(image, requests) == [blip.caption(image, [r])[0] for r in requests]


# --- SAM --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sam_dir(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    from transformers import SamConfig, SamImageProcessorPil, SamModel, SamProcessor

    folder = tmp_path_factory.mktemp("tiny-sam")
    config = SamConfig(
        vision_config={
            "hidden_size": 32,
            "output_channels": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 8,
            "mlp_dim": 64,
            "global_attn_indexes": [1],
            "window_size": 4,
            "num_pos_feats": 8,
        },
        prompt_encoder_config={
            "hidden_size": 16,
            "image_size": 64,
            "patch_size": 8,
            "mask_input_channels": 4,
        },
        mask_decoder_config={
            "hidden_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "mlp_dim": 32,
            "iou_head_hidden_dim": 16,
        },
    )
    SamModel(config).save_pretrained(folder)
    processor = SamImageProcessorPil(
        size={"longest_edge": 64},
        pad_size={"height": 64, "width": 64},
        mask_size={"longest_edge": 16},
        mask_pad_size={"height": 16, "width": 16},
    )
    SamProcessor(image_processor=processor).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def sam(sam_dir):  # type: ignore[no-untyped-def]
    from workers.inference.production.sam import SamDetector

    # Random weights predict arbitrary IoU and stability, so the quality filters are opened; what is
    # tested is the geometry from mask to box, polygon and angle, and the suppression of overlaps.
    return SamDetector(
        device="cpu",
        checkpoint=str(sam_dir),
        points_per_side=4,
        points_per_batch=5,
        pred_iou_thresh=-1e9,
        stability_thresh=0.0,
        min_area=0.0,
        nms_iou=0.7,
    )


def test_sam_regions_have_valid_boxes_polygons_and_angles(sam) -> None:  # type: ignore[no-untyped-def]
    from workers.inference.production.sam import _box_iou

    regions = sam.detect(_image(7))
    assert regions, "a 4x4 point grid on a random SAM gave no mask at all"
    assert len(regions) <= 16
    for region in regions:
        x, y, w, h = region.box
        assert 0.0 <= x < 1.0 and 0.0 <= y < 1.0 and w > 0 and h > 0
        assert x + w <= 1.0 + 1e-9 and y + h <= 1.0 + 1e-9
        assert region.label == "region" and region.source == "sam"
        assert 0.0 <= region.confidence <= 1.0
        assert -45.0 <= region.angle < 45.0
        if region.polygon is not None:
            points = np.array(region.polygon)
            assert len(points) >= 3 and (points >= 0).all() and (points <= 1).all()
            # The outline lies inside its own box.
            assert (points[:, 0] >= x - 1e-4).all() and (points[:, 0] <= x + w + 1e-4).all()
    for i, a in enumerate(regions):
        for b in regions[i + 1 :]:
            assert _box_iou(a.box, b.box) <= 0.7
    confidences = [r.confidence for r in regions]
    assert confidences == sorted(confidences, reverse=True)
    assert [r.box for r in sam.detect(_image(7))] == [r.box for r in regions]


def _through_the_entities_stage(detector, monkeypatch, picture: Image.Image):  # type: ignore[no-untyped-def]
    """A new artwork with ``picture`` through the fetch and entities stages, as their tasks run them, with
    ``detector`` as the active detector (the other roles as configured): (artwork, entities version)."""
    import io

    from django.core.files.base import ContentFile

    from collections_app.models import Stage
    from tests.factories import ArtworkFactory
    from tests.workers.stages import run_stage
    from workers.inference import registry
    from workers.pipeline import entities, fetch

    real = registry.get_model
    monkeypatch.setattr(
        registry, "get_model", lambda role, key=None: detector if role == "detector" else real(role, key)
    )
    artwork = ArtworkFactory()
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG")
    artwork.image.save("picture.jpg", ContentFile(buffer.getvalue()), save=True)
    run_stage(artwork.pk, Stage.FETCH, fetch.stage_fetch)
    return artwork, run_stage(artwork.pk, Stage.ENTITIES, entities.stage_entities)


@pytest.mark.django_db
def test_sam_details_are_named_by_the_entities_stage(sam, monkeypatch, settings) -> None:  # type: ignore[no-untyped-def]
    """SAM does not name its masks: through the pipeline's entities stage they become details named from
    the active embedder's vocabulary (here the offline one), keeping SAM's outlines."""
    from collections_app.models import Detail

    assert sam.names_regions is False
    settings.SEMART_REGION_LABELS = ["halo", "book", "horse"]
    artwork, version = _through_the_entities_stage(sam, monkeypatch, _image(7, (192, 128)))
    assert version.startswith(f"{sam.model_key}+names-")
    details = list(Detail.objects.filter(artwork=artwork))
    assert details, "the random SAM found nothing to name"
    assert {d.label for d in details} <= {"halo", "book", "horse"}
    assert all(d.model_key == version for d in details)
    assert any(d.polygon for d in details)


def test_sam_point_batches_do_not_change_the_result(sam_dir, sam) -> None:  # type: ignore[no-untyped-def]
    from workers.inference.production.sam import SamDetector

    one_batch = SamDetector(
        device="cpu",
        checkpoint=str(sam_dir),
        points_per_side=4,
        points_per_batch=16,
        pred_iou_thresh=-1e9,
        stability_thresh=0.0,
        min_area=0.0,
        nms_iou=0.7,
    )
    image = _image(8, size=(50, 90))
    expected = [(r.box, r.confidence) for r in sam.detect(image)]
    got = [(r.box, r.confidence) for r in one_batch.detect(image)]
    assert [b for b, _ in got] == [b for b, _ in expected]
    np.testing.assert_allclose([c for _, c in got], [c for _, c in expected], atol=1e-5)


def test_sam_mask_geometry_from_a_known_mask() -> None:
    from workers.inference.production.sam import _nms, _region

    mask = np.zeros((40, 80), dtype=bool)
    mask[10:30, 20:60] = True
    region = _region(mask, 0.9, 0.97)
    assert region is not None
    assert region.box == (0.25, 0.25, 0.5, 0.5)
    assert region.angle == pytest.approx(0.0, abs=1e-6)
    assert region.confidence == 0.9
    assert region.polygon is not None and len(region.polygon) == 4
    nested = _region(np.pad(mask[5:35, 10:70], ((5, 5), (10, 10))), 0.8, 0.97)
    assert nested is not None
    assert _nms([nested, region], 0.7) == [region]
    assert _region(np.zeros((10, 10), dtype=bool), 0.9, 1.0) is None


def test_sam_angle_of_a_tilted_mask() -> None:
    import cv2

    from workers.inference.production.sam import _region

    corners = cv2.boxPoints(((100.0, 100.0), (120.0, 40.0), 30.0)).astype(np.int32)
    mask = np.zeros((200, 200), dtype=np.uint8)
    cv2.fillPoly(mask, [corners], 1)
    region = _region(mask.astype(bool), 0.9, 1.0)
    assert region is not None
    assert abs(region.angle) == pytest.approx(30.0, abs=2.0)


# --- OWLv2 --------------------------------------------------------------------------------------------------

OWL_LABELS = ["halo", "book", "horse", "angel"]


@pytest.fixture(scope="session")
def owl_dir(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil

    folder = tmp_path_factory.mktemp("tiny-owlv2")
    tokenizer, text_config = _clip_text(max_positions=16)
    config = Owlv2Config(
        text_config=text_config,
        vision_config={**TINY_TOWER, "image_size": 64, "patch_size": 16},
        projection_dim=32,  # OWL compares patch embeddings with the projected queries: same width
    )
    torch.manual_seed(0)  # the same random model whichever fixtures ran before
    Owlv2ForObjectDetection(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    Owlv2ImageProcessorPil(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def owl(owl_dir):  # type: ignore[no-untyped-def]
    from workers.inference.production.owl import Owlv2Detector

    # Random weights score every phrase near 0.5, so the thresholds are opened to see every path.
    return Owlv2Detector(
        device="cpu",
        checkpoint=str(owl_dir),
        labels=OWL_LABELS,
        threshold=0.0,
        place_threshold=0.0,
        per_label=2,
    )


def test_owl_finds_each_phrase_by_name_in_valid_boxes(owl) -> None:  # type: ignore[no-untyped-def]
    from workers.inference.production.owl import MIN_SIDE

    picture = _image(3, (96, 48))
    regions = owl.detect(picture)
    assert regions and {r.label for r in regions} <= set(OWL_LABELS)
    assert all(sum(r.label == label for r in regions) <= 2 for label in OWL_LABELS)
    for r in regions:
        x, y, w, h = r.box
        assert x >= 0.0 and y >= 0.0 and w > 0 and h > 0 and x + w <= 1 + 1e-9 and y + h <= 1 + 1e-9
        assert 0.0 <= r.confidence <= 1.0 and r.source == "owlv2"
    assert [r.confidence for r in regions] == sorted((r.confidence for r in regions), reverse=True)
    boxes, probabilities = owl.scores(picture)
    assert probabilities.shape == (16, len(OWL_LABELS)) and boxes.shape == (16, 4)  # 4x4 patches
    # Slivers and boxes in the padding score nothing; each phrase's best region is its best patch.
    assert (probabilities[(boxes[:, 2] < MIN_SIDE) | (boxes[:, 3] < MIN_SIDE)] == 0).all()
    for label in {r.label for r in regions}:
        j = OWL_LABELS.index(label)
        best = max(r.confidence for r in regions if r.label == label)
        assert best == pytest.approx(float(probabilities[:, j].max()), abs=1e-6)


def test_owl_places_each_phrase_once_where_it_scores_best(owl, owl_dir) -> None:  # type: ignore[no-untyped-def]
    from workers.inference.production.owl import MIN_SIDE, Owlv2Detector

    picture = _image(4, (64, 96))
    placed = owl.place(picture)
    assert sorted(r.label for r in placed) == sorted(OWL_LABELS)
    boxes, probabilities = owl.scores(picture)
    for r in placed:
        j = OWL_LABELS.index(r.label)
        assert r.confidence == pytest.approx(float(probabilities[:, j].max()))
        assert r.box[2] >= MIN_SIDE and r.box[3] >= MIN_SIDE
    strict = Owlv2Detector(
        device="cpu", checkpoint=str(owl_dir), labels=OWL_LABELS, threshold=1.01, place_threshold=1.01
    )
    assert strict.place(picture) == [] and strict.detect(picture) == []  # nothing scores above 1


def test_owl_pads_to_a_square_and_maps_boxes_back() -> None:
    from workers.inference.production.owl import image_boxes

    # A landscape picture 200x100 padded to 200x200: the picture is the top half of the square.
    centred = np.array(
        [
            [0.5, 0.25, 1.0, 0.5],  # the whole picture
            [0.25, 0.125, 0.5, 0.25],  # its top-left quarter
            [0.5, 0.75, 1.0, 0.5],  # the padding only
            [0.5, 0.5, 1.0, 1.0],  # picture and padding: clipped to the picture
        ]
    )
    boxes = image_boxes(centred, (200, 100))
    np.testing.assert_allclose(boxes[0], [0, 0, 1, 1], atol=1e-9)
    np.testing.assert_allclose(boxes[1], [0, 0, 0.5, 0.5], atol=1e-9)
    assert boxes[2][3] == 0.0  # empty: not a place in the picture
    np.testing.assert_allclose(boxes[3], [0, 0, 1, 1], atol=1e-9)


def test_owl_version_follows_checkpoint_and_vocabulary(owl_dir) -> None:  # type: ignore[no-untyped-def]
    from workers.inference.production.owl import Owlv2Detector

    a = Owlv2Detector(checkpoint=str(owl_dir), labels=["halo"])
    b = Owlv2Detector(checkpoint=str(owl_dir), labels=["halo", "lily"])
    assert a.model_key != b.model_key and a.model_key.startswith(f"owlv2@{owl_dir.name}+v")
    assert len(a.model_key) <= 120


@pytest.mark.django_db
def test_owl_entities_and_placements_through_the_pipeline(owl, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from collections_app.models import Detail, Placement

    artwork, version = _through_the_entities_stage(owl, monkeypatch, _image(5, (160, 96)))
    assert version == owl.model_key  # OWLv2 names what it finds: no naming step
    assert {d.label for d in Detail.objects.filter(artwork=artwork)} <= set(OWL_LABELS)
    placed = Placement.objects.filter(artwork=artwork).values_list("label", flat=True)
    assert sorted(placed) == sorted(OWL_LABELS)


# --- Qwen3-VL ---------------------------------------------------------------------------------------------

QWEN_SPECIALS = [
    "<|endoftext|>",
    "<unk>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<think>",
    "</think>",
    "yes",
    "no",
    "system",
    "user",
    "assistant",
]


def _qwen_dir(tmp_path_factory, model_class_name: str) -> Path:  # type: ignore[no-untyped-def]
    from transformers import Qwen2VLImageProcessorPil, Qwen3VLConfig

    folder = tmp_path_factory.mktemp(f"tiny-{model_class_name.lower()}")
    tokenizer, vocab = _tokenizer(
        specials=QWEN_SPECIALS, template=None, pad_token="<|endoftext|>", unk_token="<unk>"
    )
    config = Qwen3VLConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "max_position_embeddings": 512,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [2, 3, 3],
                "mrope_interleaved": True,
            },
            "pad_token_id": vocab["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 32,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [1],
        },
        image_token_id=vocab["<|image_pad|>"],
        video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"],
    )
    getattr(transformers, model_class_name)(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2).save_pretrained(folder)
    return folder


# Small pictures: 64x96 px becomes a 4x6 patch grid, 6 vision tokens after the 2x2 merge.
TINY_PIXELS = {"min_pixels": 32 * 32, "max_pixels": 96 * 96}


@pytest.fixture(scope="session")
def qwen_embedder(tmp_path_factory):  # type: ignore[no-untyped-def]
    from workers.inference.production.qwen3vl import Qwen3VLEmbedder

    folder = _qwen_dir(tmp_path_factory, "Qwen3VLForConditionalGeneration")
    return Qwen3VLEmbedder(device="cpu", checkpoint=str(folder), batch_size=2, **TINY_PIXELS)


@pytest.fixture(scope="session")
def qwen_reranker_dir(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    return _qwen_dir(tmp_path_factory, "Qwen3VLForConditionalGeneration")


@pytest.fixture(scope="session")
def qwen_reranker(qwen_reranker_dir):  # type: ignore[no-untyped-def]
    from workers.inference.production.qwen3vl import Qwen3VLReranker

    return Qwen3VLReranker(device="cpu", checkpoint=str(qwen_reranker_dir), batch_size=2, **TINY_PIXELS)


def test_qwen3vl_embedder_texts_and_images(qwen_embedder) -> None:  # type: ignore[no-untyped-def]
    texts = ["a saint reading a book", "a red ship on the sea with a gold sky", "dog"]
    vectors = qwen_embedder.embed_texts(texts)
    assert qwen_embedder.dim == 32
    _assert_unit_rows(vectors, 32, 3)
    assert not np.allclose(vectors[0], vectors[1])
    # Texts of different lengths are left-padded in one batch; each must equal the text alone.
    np.testing.assert_allclose(
        vectors, np.concatenate([qwen_embedder.embed_texts([t]) for t in texts]), atol=1e-4
    )
    images = [_image(9), _image(10, size=(64, 64)), _image(11)]
    image_vectors = qwen_embedder.embed_images(images)
    _assert_unit_rows(image_vectors, 32, 3)
    singles = np.concatenate([qwen_embedder.embed_images([i]) for i in images])
    np.testing.assert_allclose(image_vectors, singles, atol=1e-4)
    np.testing.assert_allclose(qwen_embedder.embed_images(images), image_vectors, atol=1e-6)
    assert not np.allclose(image_vectors[0], image_vectors[2])


def test_qwen3vl_embedder_matryoshka_dimensions(qwen_embedder) -> None:  # type: ignore[no-untyped-def]
    from workers.inference.production.qwen3vl import Qwen3VLEmbedder

    cut = Qwen3VLEmbedder(device="cpu", checkpoint=qwen_embedder.checkpoint, dimensions=8, **TINY_PIXELS)
    assert cut.model_key.endswith("-d8") and cut.model_key != qwen_embedder.model_key
    vectors = cut.embed_texts(["a dog", "a horse"])
    _assert_unit_rows(vectors, 8, 2)
    full = qwen_embedder.embed_texts(["a dog", "a horse"])
    # The cut is the first coordinates of the same hidden state, renormalised.
    prefix = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, prefix, atol=1e-4)


def test_qwen3vl_reranker_scores_in_unit_interval_batched_like_singles(qwen_reranker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    picture = tmp_path / "panel.png"
    _image(12).save(picture)
    candidates = [
        RerankCandidate(id="1", text="a saint reading a book", image_path=str(picture)),
        RerankCandidate(id="2", text="a ship on the sea"),
        RerankCandidate(id="3", text="a dog with a child in a tree", image_path=str(picture)),
    ]
    scores = qwen_reranker.score("saint with book", candidates)
    assert len(scores) == 3
    assert all(0.0 < s < 1.0 for s in scores)
    singles = [qwen_reranker.score("saint with book", [c])[0] for c in candidates]
    np.testing.assert_allclose(scores, singles, atol=1e-4)
    assert qwen_reranker.score("saint with book", candidates) == pytest.approx(scores, abs=1e-6)
    # The picture is part of what is judged.
    without_picture = RerankCandidate(id="1", text="a saint reading a book")
    assert qwen_reranker.score("saint with book", [without_picture])[0] != pytest.approx(scores[0], abs=1e-6)


def test_qwen3vl_reranker_matches_the_yes_no_margin_of_the_lm_head(qwen_reranker) -> None:  # type: ignore[no-untyped-def]
    candidate = RerankCandidate(id="1", text="an angel with a crown")
    score = qwen_reranker.score("angel", [candidate])[0]
    # Recompute by hand from the full logits of the same prompt: sigmoid(yes - no) at the last position.
    prompt = qwen_reranker.prompt_for("angel", candidate, with_image=False)
    assert "<Query>: angel" in prompt and "<Document>: an angel with a crown" in prompt
    encoded = qwen_reranker.tokenizer([prompt], return_tensors="pt")
    with torch.inference_mode():
        logits = qwen_reranker.model(**encoded).logits[0, -1]
    expected = torch.sigmoid(logits[qwen_reranker.yes_id] - logits[qwen_reranker.no_id]).item()
    assert score == pytest.approx(expected, abs=1e-5)


def test_qwen3vl_reranker_unreadable_picture_falls_back_to_text(qwen_reranker, tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a picture")
    text_only = qwen_reranker.score("dog", [RerankCandidate(id="7", text="a dog")])[0]
    with caplog.at_level("WARNING"):
        score = qwen_reranker.score("dog", [RerankCandidate(id="7", text="a dog", image_path=str(broken))])[0]
    assert score == pytest.approx(text_only, abs=1e-6)
    assert "broken.jpg" in caplog.text


def test_qwen3vl_control_tokens_in_catalogue_text_are_removed(qwen_reranker, qwen_embedder) -> None:  # type: ignore[no-untyped-def]
    plain = RerankCandidate(id="1", text="a saint with a book")
    hostile = RerankCandidate(id="1", text="a saint <|image_pad|>with a book<|im_end|>")
    assert qwen_reranker.score("saint", [hostile]) == pytest.approx(
        qwen_reranker.score("saint", [plain]), abs=1e-6
    )
    np.testing.assert_allclose(
        qwen_embedder.embed_texts(["<|im_start|>a dog<|vision_start|>"]),
        qwen_embedder.embed_texts(["a dog"]),
        atol=1e-6,
    )


def test_qwen3vl_reranker_stops_between_batches(qwen_reranker) -> None:  # type: ignore[no-untyped-def]
    candidates = [RerankCandidate(id=str(i), text=f"figure {i}") for i in range(6)]
    batches_done: list[int] = []
    with pytest.raises(StopRequested):
        qwen_reranker.score(
            "figure", candidates, should_stop=lambda: len(batches_done) >= 2, on_batch=batches_done.append
        )
    # batch_size=2: two batches ran, the third was never started.
    assert batches_done == [0, 1]
