"""Training loops for the classifier and the U-Net: seeded, deterministic, on defect-centred crops.

Same seed, same samples, same machine and thread count -> the same weights, bit for bit: all randomness
flows from `params.seed` through explicit generators, data is prepared in this thread, and torch is held to
deterministic algorithms while training.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.classifier import ARCHITECTURES, STRIDE, DefectClassifier
from models.data import OK_CLASS, Box, Sample, SampleSet, augment, crop_centre, imitate_drift, to_input
from models.evaluation import evaluate_classifier, evaluate_segmenter
from models.segmenter import DefectSegmenter
from models.synthetic import CutDefect, cut_defect, paint_anomaly, paste_defect

# cuBLAS is deterministic only with a fixed workspace; it reads this when CUDA first starts.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

Progress = Callable[[int, int], None]
EpochReport = Callable[[dict[str, Any]], None]  # after each epoch: epoch, loss, seconds, validation (or None)
P = TypeVar("P", bound="TrainParams")
M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class TrainParams:
    """Hyper-parameters shared by both trainings; subclasses add their own."""

    def to_dict(self) -> dict[str, Any]:
        """Plain values, to record as JSON next to the model."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[P], values: dict[str, Any]) -> P:
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {sorted(unknown)}")
        return cls(**values)

    def __post_init__(self) -> None:
        v = self.to_dict()
        for name in ("epochs", "batch_size", "crop_size", "width"):
            if v[name] < 1:
                raise ValueError(f"{name} must be >= 1, not {v[name]}")
        if v["lr"] <= 0 or v["seed"] < 0 or v["samples_per_epoch"] < 0 or not 0 <= v["centre_jitter"] < 0.5:
            raise ValueError("need lr > 0, seed >= 0, samples_per_epoch >= 0 and 0 <= centre_jitter < 0.5")


@dataclass(frozen=True)
class ClassifierParams(TrainParams):
    # Measured on real photographed surfaces (bench/bench_model_quality.py): with masks, average precision
    # 0.17 after 20 epochs, 0.23 after 100 without painted anomalies, 0.66 after 150 with them (~6 min for
    # 1,200 training images on two cores); the loss was still falling.
    epochs: int = 150
    batch_size: int = 32
    lr: float = 5e-3  # peak of the one-cycle schedule
    weight_decay: float = 1e-4
    crop_size: int = 128  # training crop; a multiple of the classifier's 16 px cell
    # Channels after the stem; the embedding has 4 x width ("multiscale", "fast") or 8 x width. On real
    # surfaces with masks, 40 epochs: width 16 AP 0.45, width 24 AP 0.53, for 18 % more training time.
    width: int = 24
    arch: str = "multiscale"  # models.classifier.ARCHITECTURES
    seed: int = 0
    # "sampler": draw images with probability proportional to the manifest weight (each draw a fresh crop),
    # then rescaled so that `ok_fraction` of the draws are ok images; "loss": every image once per epoch, the
    # image-level loss weighted by the manifest weight.
    balance: str = "sampler"
    # Half the crops from ok images, not the quarter that four balanced classes would give: an image is
    # called defective by its worst cell, so the clean textures need as many looks as the defects.
    ok_fraction: float = 0.5
    samples_per_epoch: int = 0  # 0: as many as there are training images
    centre_jitter: float = 0.25  # the defect centre moves up to this fraction of the crop off its middle
    validation_every: int = 0  # epochs between validations; 0: only after the last epoch
    # Scales the weight of defect samples without a mask. Their label is then the only evidence of a defect,
    # and a labeler's false alarm (a region drawn on a clean surface) is exactly such a sample: at full weight
    # the rare classes' few images are largely false alarms, and the network learns to flag clean texture.
    unmasked_defect_weight: float = 0.5
    # Share of the ok crops that get a synthetic anomaly painted on (models.synthetic) and count as defect
    # crops with a known mask: where labels say only "this image", they teach what a defect looks like.
    synthetic_fraction: float = 0.5
    # Of those painted ok crops, the share that get a real defect instead, cut from a masked training example
    # (models.synthetic.cut_defect) and pasted at a random place: where masks exist, a few dozen real defects
    # become thousands of examples of the line's own defect shapes on every kind of surface it has.
    pasted_fraction: float = 0.5
    # Share of the crops blurred, and share given stuck pixels (models.data.imitate_drift): the dust and the
    # dying pixels of the cameras, met in training rather than first on the line. A fifth cost clean images
    # average precision at 40 epochs (0.53 -> 0.47, masks), hence a tenth.
    drift_fraction: float = 0.1
    # Multiple-instance learning for defect images with neither mask nor region: for the first `mil_warmup`
    # of the epochs they wait (ok crops and painted anomalies teach what is unusual), then each epoch crops
    # them where the classifier finds the image's worst cell. The `mil_drop` share whose worst cell still
    # looks cleanest is left out that epoch: that is where a labeler's false alarm hides. Off by default
    # (1.0: they never join): on real surfaces the worst cell was too often look-alike texture, and MIL
    # took average precision from 0.36 (painted anomalies alone) down to 0.17.
    mil_warmup: float = 1.0
    mil_drop: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.ok_fraction < 1:
            raise ValueError(f"ok_fraction must lie strictly between 0 and 1, not {self.ok_fraction}")
        if not 0 <= self.unmasked_defect_weight <= 1:
            raise ValueError(f"unmasked_defect_weight must lie in [0, 1], not {self.unmasked_defect_weight}")
        if not (0 <= self.mil_warmup <= 1 and 0 <= self.mil_drop < 1):
            raise ValueError(f"mil_warmup must lie in [0, 1] and mil_drop in [0, 1), not {self.mil_warmup}, "
                             f"{self.mil_drop}")
        if not 0 <= self.synthetic_fraction < 1:
            raise ValueError(f"synthetic_fraction must lie in [0, 1), not {self.synthetic_fraction}")
        if not (0 <= self.pasted_fraction <= 1 and 0 <= self.drift_fraction <= 1):
            raise ValueError(f"pasted_fraction and drift_fraction must lie in [0, 1], not {self.pasted_fraction}, "
                             f"{self.drift_fraction}")
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {ARCHITECTURES}, not {self.arch!r}")
        if self.crop_size % STRIDE:
            raise ValueError(f"crop_size must be a multiple of {STRIDE}, not {self.crop_size}")
        if self.balance not in ("sampler", "loss"):
            raise ValueError(f"balance must be 'sampler' or 'loss', not {self.balance!r}")


@dataclass(frozen=True)
class SegmenterParams(TrainParams):
    epochs: int = 25
    batch_size: int = 16
    lr: float = 5e-3
    weight_decay: float = 1e-4
    crop_size: int = 128
    width: int = 16
    depth: int = 3  # below half resolution: the deepest level is at 1/16, where a cell sees a whole spot
    seed: int = 0
    ok_fraction: float = 0.25  # share of crops from ok images, so the U-Net learns to stay silent on them
    samples_per_epoch: int = 0  # 0: as many as there are training images
    centre_jitter: float = 0.25
    validation_every: int = 0


@dataclass
class TrainingResult(Generic[M]):
    """The trained network, its hyper-parameters, per-epoch history and the last validation's figures."""

    model: M
    params: TrainParams
    history: dict[str, list[Any]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@contextmanager
def deterministic(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Seed torch and hold it to deterministic algorithms, leaving the caller's RNG and settings as they were.

    On CUDA a few backward kernels (max pooling's) have no deterministic version; there torch warns instead of
    failing, so a GPU run is reproducible only up to those.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    cuda = device is not None and device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=cuda)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous)


def class_order(labels: Sequence[str]) -> tuple[str, ...]:
    """ok first, then the defect classes alphabetically: a stable order whatever the manifest's row order."""
    return (OK_CLASS, *sorted(set(labels) - {OK_CLASS}))


def _schedule(model: nn.Module, params: TrainParams, steps: int) -> tuple[torch.optim.Optimizer, Any]:
    v = params.to_dict()
    optimizer = torch.optim.AdamW(model.parameters(), lr=v["lr"], weight_decay=v["weight_decay"])
    # One-cycle: a short warm-up then a cosine decay; trains a from-scratch CNN quickly without tuning.
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=v["lr"], total_steps=max(1, steps))
    return optimizer, scheduler


@dataclass
class _Crops:
    images: torch.Tensor  # N x 1 x size x size, normalised
    masks: torch.Tensor  # N x 1 x size x size, 0 / 1
    known: torch.Tensor  # N: whether the mask is known (ok samples: empty; defect samples: if they have one)
    corners: list[tuple[int, int]]  # (top, left) of each crop in its image
    cells: list[np.ndarray]  # per crop, the unturned index of each classifier cell, as the turned crop has it
    defect: torch.Tensor | None = None  # N: 1.0 for a defect crop (a defect sample's, or a painted ok crop)
    typed: torch.Tensor | None = None  # N: whether the crop's defect class is known (not for synthetic ones)
    pasted: list[str | None] = field(default_factory=list)  # N: the class of a real defect pasted on, or None


def _crop_batch(
    samples: SampleSet,
    indices: Sequence[int],
    size: int,
    jitter: float,
    rng: np.random.Generator,
    hard: dict[int, tuple[float, float]] | None = None,
    located: dict[int, tuple[float, float]] | None = None,
    synthetic_fraction: float = 0.0,
    bank: Sequence[CutDefect] = (),
    pasted_fraction: float = 0.0,
    drift_fraction: float = 0.0,
) -> _Crops:
    """Crops of the samples, randomly turned: defect samples around their defect (their mask, else their
    region, else the `located` point where the classifier last found the image's worst cell), ok samples
    anywhere or, half the time, around the `hard` point where the classifier last raised a false alarm on
    them. A `synthetic_fraction` of the ok crops become defect crops: a `pasted_fraction` of those get a real
    defect from `bank`, the others a synthetic anomaly. Then a `drift_fraction` are blurred, and as many given
    stuck pixels."""
    images, masks, known, defect, typed, corners, cells, pasted = [], [], [], [], [], [], [], []
    grid = np.arange((size // STRIDE) ** 2).reshape(size // STRIDE, size // STRIDE)
    for i in indices:
        sample, image = samples[i], samples.image(i)
        mask = samples.mask(i) if sample.is_defect else None
        pixels = samples.defect_pixels(i) if mask is not None else None
        boxes = sample.boxes if sample.is_defect else ()
        if sample.is_defect and mask is None and not boxes and located and i in located:
            y, x = located[i]
            boxes = (Box(x, y, x, y),)
        if hard and i in hard and rng.random() < 0.5:
            y, x = hard[i]
            boxes = (Box(x, y, x, y),)
        top, left = crop_centre(image.shape, pixels, boxes, size, jitter, rng)
        window = (slice(top, top + size), slice(left, left + size))
        crop_mask = mask[window] if mask is not None else np.zeros((size, size), bool)
        crop, crop_mask, turn = augment(image[window], crop_mask, rng)
        painted = not sample.is_defect and synthetic_fraction > 0 and rng.random() < synthetic_fraction
        real = bank[int(rng.integers(len(bank)))] if painted and bank and rng.random() < pasted_fraction else None
        if real is not None:
            crop, crop_mask = paste_defect(crop, real, rng)
        elif painted:
            crop, crop_mask = paint_anomaly(crop, rng)
        if drift_fraction:
            crop = imitate_drift(crop, rng, drift_fraction)
        images.append(crop)
        masks.append(crop_mask)
        known.append(mask is not None or not sample.is_defect)
        defect.append(sample.is_defect or painted)
        typed.append(sample.is_defect or real is not None)
        pasted.append(real.label if real is not None else None)
        corners.append((top, left))
        cells.append(turn(grid))
    return _Crops(
        to_input(np.stack(images)),
        torch.from_numpy(np.stack(masks)[:, None].astype(np.float32)),
        torch.tensor(known),
        corners,
        cells,
        defect=torch.tensor(defect, dtype=torch.float32),
        typed=torch.tensor(typed),
        pasted=pasted,
    )


@torch.no_grad()
def _locate_worst_cells(model: DefectClassifier, samples: SampleSet, indices: Sequence[int],
                        device: torch.device) -> tuple[dict[int, tuple[float, float]], dict[int, float]]:
    """Multiple-instance learning's step: for images labelled defective with no mask or region, where the
    classifier now finds the image's worst cell (its centre in image pixels), and that cell's logit.
    Training crops there, so the image label meets the cell that decides the image, as it will when the
    whole image is served."""
    model.eval()
    found: dict[int, tuple[float, float]] = {}
    logits: dict[int, float] = {}
    for start in range(0, len(indices), 16):
        chunk = list(indices[start : start + 16])
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i in chunk:
            by_shape.setdefault(samples.image(i).shape, []).append(i)
        for same in by_shape.values():
            cells, _, _ = model.heads(model.features(to_input(np.stack([samples.image(i) for i in same])).to(device)))
            per_row = cells.shape[-1]
            peak = cells.flatten(1).max(dim=1)
            for i, worst, logit in zip(same, peak.indices.tolist(), peak.values.tolist(), strict=True):
                row, col = divmod(worst, per_row)
                found[i] = ((row + 0.5) * STRIDE, (col + 0.5) * STRIDE)
                logits[i] = logit
    model.train()
    return found, logits


def _remember_false_alarms(
    hard: dict[int, tuple[float, float]],
    indices: Sequence[int],
    crops: _Crops,
    cell_logits: torch.Tensor,
    is_ok: torch.Tensor,
) -> None:
    """Hard-negative mining at no extra cost: where an ok crop's worst cell is called defective, remember the
    spot (in image pixels) so the next crop of that image is likely to look there again; forget it once the
    crop there comes out clean."""
    worst = cell_logits.flatten(1).max(dim=1)
    per_row = cell_logits.shape[-1]
    for b, i in enumerate(indices):
        if not is_ok[b]:
            continue
        if worst.values[b] <= 0:  # p(defect) <= 0.5: clean
            hard.pop(i, None)
            continue
        row, col = divmod(int(crops.cells[b].flat[int(worst.indices[b])]), per_row)
        top, left = crops.corners[b]
        hard[i] = (top + (row + 0.5) * STRIDE, left + (col + 0.5) * STRIDE)


def _cell_targets(masks: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """1 for every classifier cell the defect mask touches, 0 elsewhere. The ring of cells around a defect
    sees it within its field of view yet holds none of it, so it is left out of the loss (NaN), as is every
    cell of a defect sample without a mask."""
    defect = F.max_pool2d(masks, STRIDE)
    near = F.max_pool2d(defect, 3, stride=1, padding=1)
    targets = defect.clone()
    targets[(near > 0) & (defect == 0)] = float("nan")
    targets[~known] = float("nan")
    return targets


def _with_ok_share(weights: torch.Tensor, is_ok: torch.Tensor, ok_fraction: float) -> torch.Tensor:
    """Draw probabilities proportional to `weights` within ok and within defect samples, `ok_fraction` ok."""
    ok_total, defect_total = weights[is_ok].sum(), weights[~is_ok].sum()
    if ok_total == 0 or defect_total == 0:  # one kind only: nothing to share out
        return weights / weights.sum()
    return torch.where(is_ok, weights * ok_fraction / ok_total, weights * (1 - ok_fraction) / defect_total)


def _classifier_loss(
    model: DefectClassifier,
    fmap: torch.Tensor,
    cell_targets: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None,
    is_defect: torch.Tensor,
    typed: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training loss, and the image probabilities and cell logits it saw.

    Three terms: every labelled cell's defect probability; the crop's defect probability (its worst cell)
    against `is_defect`, weighted per sample when `weights` is given; the defect type, for crops whose class
    is known (`typed`).
    """
    cells, types, _ = model.heads(fmap)
    labelled = ~cell_targets.isnan()
    # A plain mean over cells, not one balanced between defect and clean cells: an image is as defective as
    # its worst cell, so among its thousand clean cells even a rare false alarm costs the whole image.
    loss = (
        F.binary_cross_entropy_with_logits(cells[labelled], cell_targets[labelled])
        if labelled.any()
        else cells.sum() * 0
    )
    worst = cells.flatten(1).amax(dim=1)
    per_image = F.binary_cross_entropy_with_logits(worst, is_defect, reduction="none")
    loss = loss + (per_image.mean() if weights is None
                   else (per_image * weights).sum() / weights.sum().clamp_min(1e-6))
    if typed.any():
        # Defect classes are numbered in `classes` order without ok.
        type_target = labels - (labels > model.ok_index).long()
        loss = loss + F.cross_entropy(types[typed], type_target[typed])
    cells, types = cells.detach(), types.detach()
    return loss, model.image_probabilities(cells, types), cells


def _defect_bank(samples: SampleSet) -> list[CutDefect]:
    """Every masked defect of the training samples, cut from its image (models.synthetic.cut_defect)."""
    bank = []
    for i, sample in enumerate(samples):
        mask = samples.mask(i) if sample.is_defect else None
        if mask is not None and (cut := cut_defect(samples.image(i), mask, sample.label)) is not None:
            bank.append(cut)
    return bank


def _validate(
    epoch: int, params: TrainParams, validation: SampleSet | None, evaluate: Callable[[], dict[str, Any]]
) -> dict[str, Any] | None:
    every = params.to_dict()["validation_every"]
    last = epoch + 1 == params.to_dict()["epochs"]
    if validation is None or not len(validation) or not (last or (every and (epoch + 1) % every == 0)):
        return None
    return {"epoch": epoch + 1, **evaluate()}


def train_classifier(
    train: SampleSet,
    params: ClassifierParams | None = None,
    *,
    validation: SampleSet | None = None,
    classes: Sequence[str] | None = None,
    progress: Progress | None = None,
    device: str | torch.device = "cpu",
    on_epoch: EpochReport | None = None,
) -> TrainingResult[DefectClassifier]:
    """Train the classifier on crops of `train`; `classes` defaults to ok plus the defect classes present
    (pass the ontology's classes to keep ones the data lacks). The crops are cut on the CPU and the network
    learns on `device`; the trained model comes back on the CPU."""
    params = params or ClassifierParams()
    classes = tuple(classes) if classes else class_order(train.labels)
    # Checked before training, not after it: a class the model lacks would only fail the final validation.
    unknown = sorted((set(train.labels) | set(validation.labels if validation else ())) - set(classes))
    if unknown:
        raise ValueError(f"samples carry class(es) {unknown} missing from classes {list(classes)}")
    if not len(train):
        raise ValueError("no training samples")
    started = time.perf_counter()
    targets = torch.tensor([classes.index(label) for label in train.labels])
    mil = params.mil_warmup < 1

    def unplaced(s: Sample) -> bool:  # a defect somewhere in the image, and no mask or region saying where
        return s.is_defect and not s.mask_uri and not s.boxes

    def draw_weight(s: Sample) -> float:
        if unplaced(s) and not mil:
            return 0.0  # nothing to crop
        return s.weight * (params.unmasked_defect_weight if s.is_defect and not s.mask_uri else 1.0)

    weights = torch.tensor([draw_weight(s) for s in train], dtype=torch.float64)
    if not weights.sum() > 0:
        raise ValueError("every training sample has weight 0; raise unmasked_defect_weight or add masks")
    draw = _with_ok_share(weights, torch.tensor([not s.is_defect for s in train]), params.ok_fraction)
    bank = _defect_bank(train) if params.pasted_fraction and params.synthetic_fraction else []
    per_epoch = params.samples_per_epoch or len(train)
    steps = math.ceil(per_epoch / params.batch_size)
    history: dict[str, list[Any]] = {"loss": [], "accuracy": [], "lr": [], "validation": []}
    device = torch.device(device)
    with deterministic(params.seed, device):
        model = DefectClassifier(classes, width=params.width, arch=params.arch).to(device)
        optimizer, scheduler = _schedule(model, params, params.epochs * steps)
        generator = torch.Generator().manual_seed(params.seed)
        rng = np.random.default_rng(params.seed)
        hard: dict[int, tuple[float, float]] = {}
        to_locate = [i for i, s in enumerate(train) if mil and unplaced(s)]
        to_locate_set = set(to_locate)
        located: dict[int, tuple[float, float]] = {}
        for epoch in range(params.epochs):
            if to_locate and epoch >= params.mil_warmup * params.epochs:
                located, worst = _locate_worst_cells(model, train, to_locate, device)
                cut = int(params.mil_drop * len(to_locate))
                for i in sorted(to_locate, key=worst.__getitem__)[:cut]:
                    located.pop(i)
            model.train()
            if params.balance == "sampler":
                order = torch.multinomial(draw, per_epoch, replacement=True, generator=generator)
            else:
                order = torch.randperm(len(train), generator=generator).repeat(
                    math.ceil(per_epoch / len(train))
                )
            order = order[:per_epoch]
            losses, correct = [], 0
            for step in range(steps):
                batch = order[step * params.batch_size : (step + 1) * params.batch_size]
                indices = batch.tolist()
                crops = _crop_batch(train, indices, params.crop_size, params.centre_jitter, rng, hard,
                                    located, params.synthetic_fraction, bank, params.pasted_fraction,
                                    params.drift_fraction)
                labels = torch.tensor([classes.index(c) if c else int(t)
                                       for c, t in zip(crops.pasted, targets[batch], strict=True)]).to(device)
                w = weights[batch].to(device, torch.float32) if params.balance == "loss" else None
                if to_locate:
                    # Before a worst cell is located (or when left out), a random crop of an image labelled
                    # defective most likely misses its defect: such crops teach nothing.
                    w = (torch.ones(len(indices), device=device) if w is None else w) * torch.tensor(
                        [i not in to_locate_set or i in located for i in indices], dtype=torch.float32,
                        device=device)
                cell_targets = _cell_targets(crops.masks.to(device), crops.known.to(device))
                loss, probabilities, cells = _classifier_loss(
                    model, model.features(crops.images.to(device)), cell_targets, labels, w,
                    crops.defect.to(device), crops.typed.to(device),
                )
                clean = ((labels == model.ok_index) & (crops.defect.to(device) == 0)).cpu()
                _remember_false_alarms(hard, indices, crops, cells.cpu(), clean)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
                correct += int((probabilities.argmax(1) == labels).sum())
                if progress:
                    progress(epoch * steps + step + 1, params.epochs * steps)
            history["loss"].append(float(np.mean(losses)))
            history["accuracy"].append(correct / len(order))
            history["lr"].append(float(scheduler.get_last_lr()[0]))
            figures = _validate(epoch, params, validation, lambda: evaluate_classifier(model, validation))
            if figures:
                history["validation"].append(figures)
            if on_epoch:
                on_epoch({"epoch": epoch + 1, "loss": history["loss"][-1], "validation": figures,
                          "seconds": time.perf_counter() - started})
    model.eval().cpu()
    metrics = history["validation"][-1] if history["validation"] else {}
    return TrainingResult(model, params, history, metrics, time.perf_counter() - started)


def _soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # Over the whole batch, so crops of ok images (no defect pixel) do not make the ratio undefined.
    p = torch.sigmoid(logits)
    return 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)


def train_segmenter(
    train: SampleSet,
    params: SegmenterParams | None = None,
    *,
    validation: SampleSet | None = None,
    progress: Progress | None = None,
    device: str | torch.device = "cpu",
    on_epoch: EpochReport | None = None,
) -> TrainingResult[DefectSegmenter]:
    """Train the U-Net on crops of the samples with a defect mask, mixed with crops of ok samples.

    Defect samples without a mask (a region only) are left out: their pixels are unknown. As for the
    classifier, the network learns on `device` and comes back on the CPU.
    """
    params = params or SegmenterParams()
    masked = [i for i, s in enumerate(train) if s.is_defect and s.mask_uri]
    ok = [i for i, s in enumerate(train) if not s.is_defect]
    if not masked:
        raise ValueError("no training sample has a defect mask; the U-Net learns from masks")
    if params.crop_size % 2 ** (params.depth + 1):
        raise ValueError(
            f"crop_size must be a multiple of {2 ** (params.depth + 1)} for a depth-{params.depth} U-Net"
        )
    started = time.perf_counter()
    ok_share = params.ok_fraction if ok else 0.0
    per_epoch = params.samples_per_epoch or len(train)
    steps = math.ceil(per_epoch / params.batch_size)
    history: dict[str, list[Any]] = {"loss": [], "dice": [], "lr": [], "validation": []}
    device = torch.device(device)
    with deterministic(params.seed, device):
        model = DefectSegmenter(width=params.width, depth=params.depth).to(device)
        optimizer, scheduler = _schedule(model, params, params.epochs * steps)
        rng = np.random.default_rng(params.seed)
        for epoch in range(params.epochs):
            model.train()
            from_ok = rng.random(per_epoch) < ok_share
            order = [int(rng.choice(ok)) if o else int(rng.choice(masked)) for o in from_ok]
            losses, dices = [], []
            for step in range(steps):
                batch = order[step * params.batch_size : (step + 1) * params.batch_size]
                crops = _crop_batch(train, batch, params.crop_size, params.centre_jitter, rng)
                target = crops.masks.to(device)
                logits = model(crops.images.to(device))
                dice_loss = _soft_dice_loss(logits, target)
                loss = F.binary_cross_entropy_with_logits(logits, target) + dice_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
                dices.append(1 - dice_loss.item())
                if progress:
                    progress(epoch * steps + step + 1, params.epochs * steps)
            history["loss"].append(float(np.mean(losses)))
            history["dice"].append(float(np.mean(dices)))  # soft dice of the training crops
            history["lr"].append(float(scheduler.get_last_lr()[0]))
            figures = _validate(epoch, params, validation, lambda: evaluate_segmenter(model, validation))
            if figures:
                history["validation"].append(figures)
            if on_epoch:
                on_epoch({"epoch": epoch + 1, "loss": history["loss"][-1], "validation": figures,
                          "seconds": time.perf_counter() - started})
    model.eval().cpu()
    metrics = history["validation"][-1] if history["validation"] else {}
    return TrainingResult(model, params, history, metrics, time.perf_counter() - started)
