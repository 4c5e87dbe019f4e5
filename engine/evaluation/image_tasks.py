"""The ``image-classification`` task kind: an image classifier, or CLIP zero-shot from class names.

Data: a folder with one sub-folder per class (its name is the class; images inside, any depth), or a
CSV file with an image path (relative to the CSV) and a label per row. Images are decoded with Pillow
and converted to RGB; an image that does not decode, a class folder without images, or a missing
image file is an error naming the file (and the CSV line).

Model:

- an ``…ForImageClassification`` folder (``AutoModelForImageClassification``): its classes are the
  config's ``id2label``; a label in the data is a class name or index;
- a CLIP model folder (``config.json`` with ``model_type`` ``clip``): zero-shot — each class name is
  written into ``template`` (``"a photo of a {}."``), encoded by the text tower with the folder's
  tokenizer, and an image's logits are CLIP's scaled cosine similarities with those texts. The classes
  are ``classes`` when declared, else the data's class folders (sorted) or CSV labels (in order).

Preprocessing: the model folder's image processor (``preprocessor_config.json``) when there is one;
otherwise the declared one — resize to ``image_size`` × ``image_size`` (bilinear), scale to 0…1,
subtract ``mean`` and divide by ``std`` per channel. With neither, the task says so. Inputs are
[images, 3, H, W] pixel values, labels class indices; scores are classification's (accuracy, loss,
entropy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from engine.errors import EngineInputError
from engine.evaluation.data_files import csv_rows, label_index
from engine.evaluation.hf import HF_PARAMS, HFTask, hf_options, model_folder, transformers_module
from engine.evaluation.task_kinds import TaskEntry, TaskKind, TaskParam, register_task_kind
from engine.evaluation.tasks import Split

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def image_examples(path: Path, image_field: str = "path", label_field: str = "label") -> list[tuple[Path, str, str]]:
    """(image file, label, where) of a class-folder tree or a CSV file, in a fixed order."""
    path = Path(path)
    if path.is_dir():
        classes = sorted(p for p in path.iterdir() if p.is_dir())
        if not classes:
            raise EngineInputError("the image folder holds no class folders (one folder of images per class)",
                                   path=str(path))
        out = []
        for folder in classes:
            images = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise EngineInputError(f"the class folder '{folder.name}' holds no images "
                                       f"({', '.join(IMAGE_SUFFIXES)})", path=str(folder))
            out += [(p, folder.name, str(p)) for p in images]
        return out
    if path.suffix.lower() != ".csv":
        if not path.exists():
            raise EngineInputError("image data not found", path=str(path))
        raise EngineInputError("image data must be a folder of class folders or a .csv of path,label rows",
                               path=str(path))
    out = []
    for line, row in csv_rows(path, (image_field, label_field)):
        if not row[image_field].strip():
            raise EngineInputError(f"line {line} names no image", path=str(path))
        out.append(((path.parent / row[image_field].strip()).resolve(), row[label_field].strip(),
                    f"{path}: line {line}"))
    return out


def class_names(path: Path, image_field: str = "path", label_field: str = "label") -> tuple[str, ...]:
    """The classes of image data: its class folders (sorted), or its CSV labels in order of appearance."""
    path = Path(path)
    if path.is_dir():
        return tuple(p.name for p in sorted(path.iterdir()) if p.is_dir())
    return tuple(dict.fromkeys(label for _, label, _ in image_examples(path, image_field, label_field)))


class ImageClassificationTask(HFTask):
    """Accuracy of an image-classification model on images (see the module doc).

    ``data``: the test split's folder or CSV, or ``{split: …}``; ``image_size``, ``mean``, ``std``: the
    declared preprocessing, used when the model folder has no image processor.
    """

    auto_class = "AutoModelForImageClassification"
    heads = ("ForImageClassification",)
    head_text = "an image-classification model (…ForImageClassification)"
    needs_tokenizer = False

    def __init__(self, model: str | Path, data: Any, *, image_size: int = 0, mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.5, 0.5, 0.5), image_field: str = "path", label_field: str = "label",
                 **options: Any):
        super().__init__(model, settings={"image_size": image_size, "mean": list(mean), "std": list(std),
                                          "image": image_field, "label": label_field}, **options)
        files = data if isinstance(data, dict) else {"test": data}
        self.files = {k: Path(v) for k, v in files.items()}
        self.image_field, self.label_field = image_field, label_field
        self.processor = self._processor(int(image_size), mean, std)
        self.classes = self._classes()

    def _processor(self, image_size: int, mean: Sequence[float], std: Sequence[float]) -> Any:
        if self.folder is not None and (self.folder / "preprocessor_config.json").is_file():
            try:
                return transformers_module().AutoImageProcessor.from_pretrained(str(self.folder))
            except Exception as exc:  # transformers raises many types for a broken processor config
                raise EngineInputError(f"{self._where()}: cannot load the image processor ({type(exc).__name__}: "
                                       f"{exc})", path=str(self.folder / "preprocessor_config.json")) from exc
        if image_size <= 0:
            raise EngineInputError(f"{self._where()}: the model folder has no image processor "
                                   "(preprocessor_config.json); declare 'image_size' (and 'mean', 'std')",
                                   path=str(self.folder) if self.folder else None)
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise EngineInputError(f"{self._where()}: 'mean' and 'std' need three values each (std above 0)")
        return (image_size, torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1))

    def _classes(self) -> tuple[str, ...]:
        labels = self.config.id2label
        return tuple(str(labels[i]) for i in range(self.config.num_labels))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _files(self) -> dict[str, Path]:
        return self.files

    def pixels(self, image_path: Path, where: str) -> torch.Tensor:
        """One image as [3, H, W] model input."""
        from PIL import Image, UnidentifiedImageError

        if not image_path.is_file():
            raise EngineInputError(f"{where}: image file not found", path=str(image_path))
        try:
            with Image.open(image_path) as img:
                img = img.convert("RGB")
                img.load()
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise EngineInputError(f"{where}: the image does not decode ({exc})", path=str(image_path)) from None
        if isinstance(self.processor, tuple):
            size, mean, std = self.processor
            img = img.resize((size, size), Image.Resampling.BILINEAR)
            x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(size, size, 3)
            return (x.permute(2, 0, 1).float() / 255.0 - mean) / std
        return self.processor(images=img, return_tensors="pt")["pixel_values"][0].float()

    def _load(self, path: Path, notes: list[str]) -> Split:
        examples = image_examples(path, self.image_field, self.label_field)
        labels = [label_index(label, self.classes, where, path) for _, label, where in examples]
        return Split(torch.stack([self.pixels(p, where) for p, _, where in examples]),
                     torch.tensor(labels, dtype=torch.long))

    def example_bytes(self) -> int:
        shapes = [s.inputs.shape for s in self._data.values()]
        pixels = max(int(s[1] * s[2] * s[3]) for s in shapes) if shapes else 3 * 224 * 224
        return pixels * 4 * 64

    def model_kwargs(self, inputs: torch.Tensor) -> dict[str, Any]:
        return {"pixel_values": inputs}


class ClipZeroShotTask(ImageClassificationTask):
    """CLIP zero-shot classification: class names through ``template`` into the text tower."""

    auto_class = "AutoModel"
    heads = ("CLIPModel",)
    head_text = "a CLIP model (CLIPModel)"
    needs_tokenizer = True

    def __init__(self, model: str | Path, data: Any, *, classes: Sequence[str] | None = None,
                 template: str = "a photo of a {}.", **options: Any):
        self._declared = tuple(classes or ())
        self.template = template
        super().__init__(model, data, **options)
        self.settings += f"|classes={list(self.classes)}|template={template}"
        if "{}" not in template:
            raise EngineInputError(f"{self._where()}: 'template' must hold {{}} where the class name goes")
        limit = self.context_length() or 77
        encoded = self.tokenizer([template.format(c) for c in self.classes], truncation=True, max_length=limit)
        width = max(len(ids) for ids in encoded["input_ids"])
        self.prompt_ids = torch.full((len(self.classes), width), self.pad_id, dtype=torch.long)
        self.prompt_mask = torch.zeros((len(self.classes), width), dtype=torch.long)
        for i, ids in enumerate(encoded["input_ids"]):
            self.prompt_ids[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            self.prompt_mask[i, :len(ids)] = 1

    def _classes(self) -> tuple[str, ...]:
        if self._declared:
            return self._declared
        return class_names(self.files["test"], self.image_field, self.label_field)

    def model_kwargs(self, inputs: torch.Tensor) -> dict[str, Any]:
        return {"pixel_values": inputs, "input_ids": self.prompt_ids.to(inputs.device),
                "attention_mask": self.prompt_mask.to(inputs.device)}

    def model_output(self, module: nn.Module, inputs: torch.Tensor, kwargs: dict, output: Any) -> torch.Tensor:
        return output.logits_per_image


def _build_image_classification(entry: TaskEntry) -> list[ImageClassificationTask]:
    folder = model_folder(entry)
    if not (folder / "config.json").is_file():
        raise EngineInputError("not a Hugging Face model folder (no config.json)", path=str(folder))
    try:
        config = transformers_module().AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError) as exc:
        raise EngineInputError(f"cannot read the model's config.json ({exc})", path=str(folder)) from exc
    v = entry.values
    options = {**hf_options(entry), "image_size": v["image_size"], "mean": v["mean"], "std": v["std"],
               "image_field": v["image_field"], "label_field": v["label_field"]}
    if config.model_type == "clip":
        return [ClipZeroShotTask(folder, v["data"], classes=v["classes"], template=v["template"], **options)]
    if v["classes"]:
        raise entry.error("'classes' is for CLIP zero-shot; a classifier's classes are its config's id2label")
    return [ImageClassificationTask(folder, v["data"], **options)]


IMAGE_CLASSIFICATION = register_task_kind(TaskKind(
    "image-classification", "Image classification",
    "Accuracy of an image classifier, or of CLIP zero-shot from class names, on labelled images.",
    params=(
        TaskParam("data", "path", None, "a folder with one folder of images per class, or a .csv of path,label rows; "
                                        "or {\"test\": …, \"val\": …}", required=True, per_split=True),
        TaskParam("image_field", "str", "path", "the CSV column holding the image path"),
        TaskParam("label_field", "str", "label", "the CSV column holding the label"),
        TaskParam("image_size", "int", 0, "declared preprocessing when the model has no image processor: "
                                          "resize to this square size", min=0, max=16384),
        TaskParam("mean", "float", [0.5, 0.5, 0.5], "declared preprocessing: per-channel mean", multiple=True),
        TaskParam("std", "float", [0.5, 0.5, 0.5], "declared preprocessing: per-channel standard deviation",
                  multiple=True),
        TaskParam("classes", "str", [], "CLIP zero-shot: the class names (default: the data's classes)",
                  multiple=True),
        TaskParam("template", "str", "a photo of a {}.", "CLIP zero-shot: the text a class name goes into"),
        *HF_PARAMS,
    ),
    build=_build_image_classification,
    data="a folder per class (folder name = class) or a CSV of image path and label",
    model="an …ForImageClassification model folder, or a CLIP model folder for zero-shot",
    metrics=("accuracy", "loss", "entropy"),
))
