"""The zoo's tasks as image generators: real handwritten digits plus procedurally drawn tasks.

Every task draws 16×16 grayscale images in [0, 1] with balanced labels from a
``numpy.random.Generator``; the same generator state gives the same images. The tasks are chosen to
pull a shared backbone different ways: glyph identity (digits, letters) versus glyph style (fonts),
outlines (shapes), global frequency content (orientation, textures), position (where) and
global structure (symmetry). The pre-training corpus (``symbols``) is a broad symbol-recognition
task (lower-case Latin and Greek letters and signs in many fonts) that no evaluation task uses.

``digits`` is scikit-learn's bundled copy of the UCI handwritten digits (1,797 8×8 scans, no
download); its source images are split disjointly between train/val/test/unlabeled, then warped.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from engine.zoo import render
from engine.zoo.render import SIDE, SUPER, TAU, column, coordinates, finish, polar, smoothstep_edge, warp

Images = tuple[torch.Tensor, torch.Tensor]  # images [n, 16, 16] float32 in [0, 1], labels [n] int64
SPLITS = ("train", "val", "test", "unlabeled")


@dataclass(frozen=True)
class FontChoice:
    """How many fonts per family the glyph tasks use (fewer for a fast reduced zoo)."""

    per_family: int = 4
    computer_modern: bool = True

    def styled(self) -> list[tuple[str, int]]:
        """(font file, style index 0–3) pairs: regular, bold, italic, bold-italic of each family."""
        families = list(render.FONT_FAMILIES.values())[: self.per_family]
        return [(font, style) for family in families for style, font in enumerate(family)]

    def all_fonts(self) -> list[str]:
        """Every font the letter task draws from: the styled families plus Computer Modern."""
        fonts = [font for font, _ in self.styled()]
        return fonts + (list(render.CM_FONTS) if self.computer_modern else [])


@dataclass(frozen=True)
class TaskSpec:
    """One zoo task: its class names and an image generator ``make(rng, n, split, fonts)``."""

    name: str
    classes: tuple[str, ...]
    description: str
    make: Callable[[np.random.Generator, int, str, FontChoice], Images]


def balanced_labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """``n`` labels with every class as equally often as possible, in random order."""
    return rng.permutation(np.arange(n) % k)


# ---------------------------------------------------------------- real data


@lru_cache(maxsize=1)
def _digit_bunch():
    from sklearn.datasets import load_digits

    return load_digits()


def _digit_sources(split: str) -> tuple[np.ndarray, np.ndarray]:
    bunch = _digit_bunch()
    order = np.random.default_rng(1797).permutation(len(bunch.target))  # fixed, seed-independent split
    bounds = {"train": (0, 0.55), "val": (0.55, 0.7), "test": (0.7, 0.9), "unlabeled": (0.9, 1.0)}[split]
    lo, hi = (int(b * len(order)) for b in bounds)
    chosen = order[lo:hi]
    return bunch.images[chosen].astype(np.float32) / 16.0, bunch.target[chosen].astype(np.int64)


def make_digits(rng: np.random.Generator, n: int, split: str, fonts: FontChoice) -> Images:
    """Handwritten digits 0–9: scikit-learn's scans of this split, warped (rotation, zoom, shear, shift)."""
    images, targets = _digit_sources(split)
    y = balanced_labels(rng, n, 10)
    pick = np.empty(n, dtype=np.int64)
    for digit in range(10):  # cycle through each class's source scans in a random order
        slots = np.flatnonzero(y == digit)
        pick[slots] = np.resize(rng.permutation(np.flatnonzero(targets == digit)), len(slots))
    ink = warp(torch.from_numpy(images[pick]), rng, rotate_deg=12, scale=(0.8, 1.05), shift=0.12, shear=0.15)
    return finish(ink, rng), torch.from_numpy(targets[pick])


# ---------------------------------------------------------------- glyphs

LETTERS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
STYLES = ("regular", "bold", "italic", "bold-italic")
STYLE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
SYMBOLS = tuple("abcdefghijklmnopqrstuvwxyzαβγδεζηθικλμνξπρστυφχψω+×÷=<>?!&#@%$§¶∞√∑∫∂")


def _glyph_task(rng: np.random.Generator, pairs: list[tuple[str, str]], labels: np.ndarray,
                **warp_args: float) -> Images:
    """Warp the glyph of each (font, char) pair; ``labels`` are the targets, aligned with ``pairs``."""
    unique = sorted(set(pairs))
    index = {p: i for i, p in enumerate(unique)}
    templates = render.glyph_templates(unique)
    ink = warp(templates[[index[p] for p in pairs]], rng, **warp_args)
    return finish(ink, rng), torch.from_numpy(labels.astype(np.int64))


def make_letters(rng: np.random.Generator, n: int, split: str, fonts: FontChoice) -> Images:
    """Upper-case letters A–Z in every chosen font, warped."""
    y = balanced_labels(rng, n, len(LETTERS))
    choices = fonts.all_fonts()
    font = rng.integers(0, len(choices), n)
    pairs = [(choices[f], LETTERS[c]) for f, c in zip(font, y)]
    return _glyph_task(rng, pairs, y, rotate_deg=15, scale=(0.7, 1.05), shift=0.15, shear=0.2)


def make_fonts(rng: np.random.Generator, n: int, split: str, fonts: FontChoice) -> Images:
    """Style of a random letter or digit: regular, bold, italic or bold-italic (barely rotated)."""
    y = balanced_labels(rng, n, len(STYLES))
    by_style = {s: [f for f, st in fonts.styled() if st == s] for s in range(len(STYLES))}
    pairs = []
    for style in y:
        options = by_style[style]
        font = options[rng.integers(0, len(options))]
        chars = [c for c in STYLE_CHARS if render.has_glyph(font, c)]
        pairs.append((font, chars[rng.integers(0, len(chars))]))
    return _glyph_task(rng, pairs, y, rotate_deg=3, scale=(0.75, 1.05), shift=0.12)


def make_symbols(rng: np.random.Generator, n: int, split: str, fonts: FontChoice) -> Images:
    """The pre-training corpus: lower-case Latin and Greek letters and signs in the styled fonts."""
    y = balanced_labels(rng, n, len(SYMBOLS))
    choices = [font for font, _ in fonts.styled()]
    pairs = []
    for label in y:
        usable = [f for f in choices if render.has_glyph(f, SYMBOLS[label])]
        pairs.append((usable[rng.integers(0, len(usable))], SYMBOLS[label]))
    return _glyph_task(rng, pairs, y, rotate_deg=15, scale=(0.7, 1.05), shift=0.15, shear=0.2)


# ---------------------------------------------------------------- procedural

SHAPES = ("circle", "ring", "square", "triangle", "plus", "star", "crescent", "ellipse")


def _shape_distance(kind: str, u: torch.Tensor, v: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    r, theta = polar(u, v)
    if kind == "circle":
        return r - size
    if kind == "ring":
        return (r - 0.75 * size).abs() - 0.25 * size
    if kind == "square":
        return torch.maximum(u.abs(), v.abs()) - 0.8 * size
    if kind == "triangle":
        sector = torch.remainder(theta, TAU / 3) - TAU / 6
        return r * torch.cos(sector) - 0.6 * size
    if kind == "plus":
        arm = 0.3 * size
        return torch.minimum(torch.maximum(u.abs() - size, v.abs() - arm),
                             torch.maximum(v.abs() - size, u.abs() - arm))
    if kind == "star":
        tri = (torch.remainder(theta, TAU / 5) / (TAU / 5) - 0.5).abs() * 2  # 1 at the points
        return r - size * (0.45 + 0.65 * tri)
    if kind == "crescent":
        return torch.maximum(r - size, 0.85 * size - torch.sqrt((u - 0.45 * size) ** 2 + v**2))
    if kind == "ellipse":
        b = 0.45 * size
        return (torch.sqrt((u / size) ** 2 + (v / b) ** 2) - 1) * b
    raise ValueError(kind)


def make_shapes(rng: np.random.Generator, n: int, split: str, fonts: FontChoice) -> Images:
    """Eight filled outlines at random size (0.4–0.75 of the half-width), place and rotation."""
    y = balanced_labels(rng, n, len(SHAPES))
    x_grid, y_grid = coordinates(n)
    cx, cy = column(rng, -0.3, 0.3, n), column(rng, -0.3, 0.3, n)
    phi = column(rng, 0, TAU, n)
    size = column(rng, 0.4, 0.75, n)
    dx, dy = x_grid - cx, y_grid - cy
    u = dx * torch.cos(phi) + dy * torch.sin(phi)
    v = -dx * torch.sin(phi) + dy * torch.cos(phi)
    ink = torch.empty(n, SIDE * SUPER, SIDE * SUPER)
    for k, kind in enumerate(SHAPES):
        sel = torch.from_numpy(y == k)
        ink[sel] = smoothstep_edge(_shape_distance(kind, u[sel], v[sel], size[sel]))
    return finish(render.downsample(ink), rng), torch.from_numpy(y.astype(np.int64))


ORIENTATIONS = tuple(f"{a:g}°" for a in np.arange(8) * 22.5)


def make_orientation(rng: np.random.Generator, n: int, split: str, fonts: FontChoice) -> Images:
    """Sinusoidal gratings at 8 angles (±6° jitter), random frequency and phase, in a soft window."""
    y = balanced_labels(rng, n, len(ORIENTATIONS))
    angle = torch.from_numpy(np.deg2rad(y * 22.5 + rng.uniform(-6, 6, n)).astype(np.float32))[:, None, None]
    freq = column(rng, 1.5, 3.5, n) * (TAU / 2)
    phase = column(rng, 0, TAU, n)
    x_grid, y_grid = coordinates(n)
    wave = 0.5 + 0.5 * torch.sin(freq * (x_grid * torch.cos(angle) + y_grid * torch.sin(angle)) + phase)
    cx, cy, radius = column(rng, -0.3, 0.3, n), column(rng, -0.3, 0.3, n), column(rng, 0.5, 1.3, n)
    window = smoothstep_edge(torch.sqrt((x_grid - cx) ** 2 + (y_grid - cy) ** 2) - radius)
    ink = render.downsample(wave * window)
    return finish(ink, rng, noise=(0.05, 0.2)), torch.from_numpy(y.astype(np.int64))


POSITIONS = ("top-left", "top", "top-right", "left", "centre", "right", "bottom-left", "bottom", "bottom-right")


def make_position(rng: np.random.Generator, n: int, split: str, fonts: FontChoice) -> Images:
    """A small random shape in one of 3×3 cells (jittered), over faint blob clutter."""
    y = balanced_labels(rng, n, len(POSITIONS))
    kinds = rng.integers(0, len(SHAPES), n)
    cx = torch.from_numpy(((y % 3 - 1) * 0.55 + rng.uniform(-0.15, 0.15, n)).astype(np.float32))[:, None, None]
    cy = torch.from_numpy(((1 - y // 3) * 0.55 + rng.uniform(-0.15, 0.15, n)).astype(np.float32))[:, None, None]
    phi, size = column(rng, 0, TAU, n), column(rng, 0.18, 0.3, n)
    x_grid, y_grid = coordinates(n)
    dx, dy = x_grid - cx, y_grid - cy
    u = dx * torch.cos(phi) + dy * torch.sin(phi)
    v = -dx * torch.sin(phi) + dy * torch.cos(phi)
    ink = torch.empty(n, SIDE * SUPER, SIDE * SUPER)
    for k, kind in enumerate(SHAPES):
        sel = torch.from_numpy(kinds == k)
        ink[sel] = smoothstep_edge(_shape_distance(kind, u[sel], v[sel], size[sel]))
    clutter = 0.35 * torch.sigmoid(3 * render.lowpass_noise(rng, n, cutoff=4.0))
    return finish(render.downsample(torch.maximum(ink, clutter)), rng), torch.from_numpy(y.astype(np.int64))


TEXTURES = ("blobs", "grain", "checker", "lattice", "maze", "scratches")


def _texture(kind: str, rng: np.random.Generator, n: int) -> torch.Tensor:
    x_grid, y_grid = coordinates(n)
    phi = column(rng, 0, TAU, n)
    u = x_grid * torch.cos(phi) + y_grid * torch.sin(phi)
    v = -x_grid * torch.sin(phi) + y_grid * torch.cos(phi)
    if kind == "blobs":
        return torch.sigmoid(3 * render.lowpass_noise(rng, n, cutoff=float(rng.uniform(1.5, 2.5))))
    if kind == "grain":
        return torch.sigmoid(3 * render.lowpass_noise(rng, n, cutoff=float(rng.uniform(5, 7))))
    if kind == "checker":
        period = column(rng, 0.25, 0.45, n)
        return (torch.sign(torch.sin(torch.pi * u / period) * torch.sin(torch.pi * v / period)) + 1) / 2
    if kind == "lattice":
        period = column(rng, 0.35, 0.55, n)
        du = torch.remainder(u / period, 1) - 0.5
        dv = torch.remainder(v / period, 1) - 0.5
        return smoothstep_edge(torch.sqrt(du**2 + dv**2) * period - 0.22 * period)
    if kind == "maze":
        band = render.lowpass_noise(rng, n, cutoff=3.5)
        return smoothstep_edge(band.abs() - 0.3)
    if kind == "scratches":
        ink = torch.zeros(n, SIDE * SUPER, SIDE * SUPER)
        for _ in range(5):
            angle = column(rng, 0, TAU, n)
            offset = column(rng, -0.8, 0.8, n)
            dist = (x_grid * torch.cos(angle) + y_grid * torch.sin(angle) - offset).abs()
            ink = torch.maximum(ink, smoothstep_edge(dist - 0.04))
        return ink
    raise ValueError(kind)


def make_textures(rng: np.random.Generator, n: int, split: str, fonts: FontChoice) -> Images:
    """Six texture families: blobs, grain, checkerboard, dot lattice, maze lines, scratches."""
    y = balanced_labels(rng, n, len(TEXTURES))
    ink = torch.empty(n, SIDE * SUPER, SIDE * SUPER)
    for k, kind in enumerate(TEXTURES):
        sel = np.flatnonzero(y == k)
        ink[sel] = _texture(kind, rng, len(sel))
    return finish(render.downsample(ink), rng), torch.from_numpy(y.astype(np.int64))


SYMMETRIES = ("none", "left-right", "up-down", "both")


def make_symmetry(rng: np.random.Generator, n: int, split: str, fonts: FontChoice) -> Images:
    """A smooth random field made mirror-symmetric left-right, up-down, both, or not at all."""
    y = balanced_labels(rng, n, len(SYMMETRIES))
    field = render.lowpass_noise(rng, n, cutoff=float(rng.uniform(2.5, 3.5)))
    half = SIDE * SUPER // 2
    lr = torch.from_numpy((y == 1) | (y == 3))
    ud = torch.from_numpy((y == 2) | (y == 3))
    field[lr, :, half:] = field[lr, :, :half].flip(-1)
    field[ud, half:, :] = field[ud, :half, :].flip(-2)
    ink = render.downsample(torch.sigmoid(2.5 * field))
    return finish(ink, rng, noise=(0.05, 0.15)), torch.from_numpy(y.astype(np.int64))


TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec("digits", tuple(str(d) for d in range(10)),
             "scikit-learn's bundled handwritten digits (UCI), warped and noised", make_digits),
    TaskSpec("letters", LETTERS, "upper-case letters in 21 of matplotlib's fonts", make_letters),
    TaskSpec("fonts", STYLES, "the style (regular/bold/italic/bold-italic) of a random glyph", make_fonts),
    TaskSpec("shapes", SHAPES, "eight outlines at random size, place and rotation", make_shapes),
    TaskSpec("orientation", ORIENTATIONS, "the angle of a windowed grating, in 22.5° steps", make_orientation),
    TaskSpec("position", POSITIONS, "where a small shape sits on a 3×3 grid, over clutter", make_position),
    TaskSpec("textures", TEXTURES, "six stochastic texture families at random rotation", make_textures),
    TaskSpec("symmetry", SYMMETRIES, "which mirror symmetries a random field has", make_symmetry),
)}

PRETRAIN = TaskSpec("symbols", SYMBOLS, "lower-case Latin and Greek letters and signs (pre-training only)",
                    make_symbols)


CHUNK = 2048  # images drawn at once: bounds the memory of the 48×48 drawing grids


def generate(spec: TaskSpec, n: int, split: str, seed: int, fonts: FontChoice) -> Images:
    """``n`` images of one task's split, fixed by (seed, task, split); drawn in chunks of ``CHUNK``."""
    split_index = SPLITS.index(split) if split in SPLITS else len(SPLITS)
    parts = [spec.make(np.random.default_rng([seed, split_index, chunk, *spec.name.encode()]),
                       min(CHUNK, n - start), split, fonts)
             for chunk, start in enumerate(range(0, n, CHUNK))]
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])
