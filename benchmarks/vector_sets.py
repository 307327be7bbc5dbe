"""Vectors for the scale benchmarks: real reference embeddings from art-dev, and clustered synthetic vectors
fitted to them.

Uniform random vectors are useless for an index benchmark (every point is about equally far from every
other, so no index can do better than a scan, and recall means nothing). Real embeddings are anisotropic
(a common mean direction, a steep spectrum) and clustered (many halos, many lions). The mixture here keeps
both: centres are drawn from a Gaussian with the real vectors' mean and covariance, points spread around
their centre along the same covariance, and the spread is calibrated so that two points of one cluster
have the mean cosine of two real regions with the same label in different pictures.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ART_DEV = ROOT.parent / "shared" / "datasets" / "art-dev"


@dataclass
class Reference:
    """Real vectors of art-dev regions (ground-truth boxes) and of captions composed from their labels."""

    model_key: str
    image: np.ndarray  # (n, dim) region vectors, unit length
    text: np.ndarray  # (n, dim) caption vectors, unit length
    labels: list[str]  # per region
    captions: list[str]  # per region
    pictures: list[str]  # per region: the art-dev id of its picture
    titles: list[str]  # art-dev titles, to give synthetic artworks realistic words
    iconclass: list[list[str]]  # art-dev notations per artwork


def unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def _caption(label: str, other: str | None) -> str:
    words = label.replace("_", " ")
    article = "an" if words[:1].lower() in "aeiou" else "a"
    return f"{article} {words} next to {other.replace('_', ' ')}" if other else f"{article} {words}"


def reference_vectors(cache_dir: Path, *, max_images: int = 200) -> Reference:
    """Embed art-dev's boxes with the active embedder (in this process), cached under ``cache_dir``."""
    from PIL import Image

    from workers.inference.registry import get_embedder

    embedder = get_embedder()
    model_key = embedder.model_key
    digest = hashlib.sha1(f"{model_key}:{max_images}".encode()).hexdigest()[:10]
    path = cache_dir / f"reference-{digest}-v2.npz"
    rows = [json.loads(line) for line in (ART_DEV / "metadata.jsonl").read_text().splitlines() if line]
    titles = [r["title"] for r in rows if r.get("title")]
    iconclass = [[n for n in r.get("iconclass", "").split(";") if n] for r in rows]
    if path.is_file():
        data = np.load(path, allow_pickle=False)
        meta = json.loads(str(data["meta"]))
        return Reference(
            model_key=model_key,
            image=data["image"],
            text=data["text"],
            labels=meta["labels"],
            captions=meta["captions"],
            pictures=meta["pictures"],
            titles=titles,
            iconclass=iconclass,
        )
    image_vectors, labels, captions, pictures = [], [], [], []
    for row in [r for r in rows if r.get("boxes")][:max_images]:
        boxes = [b for b in row["boxes"] if b["bbox_rel"][2] > 0 and b["bbox_rel"][3] > 0]
        if not boxes:
            continue
        with Image.open(ART_DEV / row["image_file"]) as picture:
            picture = picture.convert("RGB")
            image_vectors.append(embedder.embed_regions(picture, [tuple(b["bbox_rel"]) for b in boxes]))
        names = [b["label"] for b in boxes]
        for i, name in enumerate(names):
            labels.append(name)
            pictures.append(row["id"])
            captions.append(_caption(name, names[(i + 1) % len(names)] if len(names) > 1 and i % 2 else None))
    image = unit(np.concatenate(image_vectors))
    text = unit(embedder.embed_texts(captions))
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        image=image,
        text=text,
        meta=json.dumps({"labels": labels, "captions": captions, "pictures": pictures}),
    )
    return Reference(
        model_key=model_key,
        image=image,
        text=text,
        labels=labels,
        captions=captions,
        pictures=pictures,
        titles=titles,
        iconclass=iconclass,
    )


def same_group_cosine(vectors: np.ndarray, groups: list[str], *, rng: np.random.Generator) -> float:
    """Mean cosine of pairs of vectors that share a group (a label), over up to 20,000 random pairs."""
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    members = [np.asarray(v) for v in by_group.values() if len(v) > 1]
    weights = np.asarray([len(m) ** 2 for m in members], dtype=np.float64)
    picks = rng.choice(len(members), size=20_000, p=weights / weights.sum())
    a = np.asarray([rng.choice(members[k]) for k in picks])
    b = np.asarray([rng.choice(members[k]) for k in picks])
    keep = a != b
    return float(np.mean(np.sum(vectors[a[keep]] * vectors[b[keep]], axis=1)))


def nearest_other_cosine(vectors: np.ndarray, groups: list[str] | list[int]) -> float:
    """Median cosine of each vector to its nearest neighbour outside its own group (its picture)."""
    sims = vectors @ vectors.T
    g = np.asarray(groups)
    sims[g[:, None] == g[None, :]] = -1.0
    return float(np.median(sims.max(axis=1)))


def mean_pair_cosine(vectors: np.ndarray, *, rng: np.random.Generator, pairs: int = 20_000) -> float:
    a = rng.integers(0, len(vectors), pairs)
    b = rng.integers(0, len(vectors), pairs)
    keep = a != b
    return float(np.mean(np.sum(vectors[a[keep]] * vectors[b[keep]], axis=1)))


@dataclass
class ClusteredMixture:
    """Gaussian mixture on the unit sphere shaped like real vectors (see the module docstring)."""

    mean: np.ndarray  # (dim,)
    basis: np.ndarray  # (dim, dim): eigenvectors scaled by sqrt(eigenvalues) of the real covariance
    centres: np.ndarray  # (k, dim), before normalisation
    spread: float  # within-cluster scale, relative to the real covariance
    target_cosine: float  # real same-label cosine the spread was calibrated to

    @classmethod
    def fit(
        cls,
        vectors: np.ndarray,
        groups: list[str],
        *,
        n_centres: int,
        points_per_cluster: int,
        rng: np.random.Generator,
    ) -> ClusteredMixture:
        """Fit mean and covariance to ``vectors``; calibrate the spread so that, at ``points_per_cluster``
        points per cluster, a point's nearest neighbour is as close as a real vector's nearest neighbour
        outside its group (median cosine): another picture for regions, another wording for captions
        (identical captions are duplicates, not neighbours)."""
        mean = vectors.mean(axis=0)
        values, vecs = np.linalg.eigh(np.cov(vectors - mean, rowvar=False))
        basis = (vecs * np.sqrt(np.clip(values, 0, None))).astype(np.float32)
        z = rng.standard_normal((n_centres, vectors.shape[1])).astype(np.float32)
        target = nearest_other_cosine(vectors, groups)
        mixture = cls(mean=mean, basis=basis, centres=z, spread=0.5, target_cosine=target)
        n = len(vectors)
        k = max(2, round(n / points_per_cluster))
        low, high = 0.01, 4.0
        for _ in range(25):  # bisection: neighbours drift apart as the spread grows
            mixture.spread = (low + high) / 2
            calibration_rng = np.random.default_rng(1)
            clusters = calibration_rng.integers(0, k, n)
            points = mixture._points(mixture.centres[clusters], calibration_rng)
            if nearest_other_cosine(points, list(range(n))) > target:
                low = mixture.spread
            else:
                high = mixture.spread
        return mixture

    def _points(self, centre_z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # Centres and offsets share the real covariance, scaled so that a point's total covariance stays
        # the real one whatever the spread: only how much of it lies within a cluster changes.
        scale = 1.0 / np.sqrt(1.0 + self.spread**2)
        offsets = rng.standard_normal(centre_z.shape).astype(np.float32)
        return unit(self.mean + scale * (centre_z + self.spread * offsets) @ self.basis.T)

    def points(self, clusters: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
        """One unit vector from each of the given clusters."""
        return self._points(self.centres[clusters], rng)

    def same_cluster_cosine(self, *, rng: np.random.Generator, pairs: int = 4000) -> float:
        k = rng.integers(0, len(self.centres), pairs)
        a = self._points(self.centres[k], rng)
        b = self._points(self.centres[k], rng)
        return float(np.mean(np.sum(a * b, axis=1)))

    def sample(self, n: int, *, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` unit vectors and the cluster each came from (cluster sizes vary, as in a real catalogue)."""
        weights = rng.lognormal(0.0, 1.0, len(self.centres))
        clusters = rng.choice(len(self.centres), size=n, p=weights / weights.sum())
        return self._points(self.centres[clusters], rng), clusters


def perturbed_queries(held_out: np.ndarray, *, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """Queries near the data: held-out points (not in the index) moved to ``cosine`` of where they were."""
    noise = unit(rng.standard_normal(held_out.shape).astype(np.float32))
    noise -= np.sum(noise * held_out, axis=1, keepdims=True) * held_out  # orthogonal to the point
    noise = unit(noise)
    return unit(cosine * held_out + np.sqrt(1 - cosine**2) * noise)
