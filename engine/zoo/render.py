"""Rasterisation for the zoo's image tasks: glyphs from matplotlib's bundled fonts, warps, noise.

Every image is drawn at ``SUPER`` × the zoo's side (``SIDE`` = 16 pixels) and box-filtered down, so
edges are anti-aliased. Glyphs are rasterised once per (font, character) into templates with
matplotlib's ``TextPath`` (no figure, no screen) and then placed with random affine warps; procedural
shapes are drawn from signed distances on a coordinate grid. All randomness comes from the
``numpy.random.Generator`` the caller passes, so a seed fixes every pixel.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

SIDE = 16
SUPER = 3
TEMPLATE = 32

# Fonts matplotlib ships, grouped by family; each family lists (regular, bold, italic, bold-italic).
FONT_FAMILIES: dict[str, tuple[str, str, str, str]] = {
    "sans": ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf"),
    "serif": ("DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf"),
    "mono": ("DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
             "DejaVuSansMono-BoldOblique.ttf"),
    "stix": ("STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf"),
}
# Computer Modern faces (Latin letters and digits only).
CM_FONTS = ("cmr10.ttf", "cmb10.ttf", "cmti10.ttf", "cmss10.ttf", "cmtt10.ttf")


def font_path(file_name: str) -> str:
    """Absolute path of one of the fonts in matplotlib's data folder."""
    import matplotlib

    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", file_name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"matplotlib's bundled font {file_name} is missing ({path})")
    return path


@lru_cache(maxsize=None)
def _charmap(file_name: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    return frozenset(FT2Font(font_path(file_name)).get_charmap())


def has_glyph(file_name: str, char: str) -> bool:
    """Whether the font maps ``char`` to a glyph of its own."""
    return ord(char) in _charmap(file_name)


@lru_cache(maxsize=None)
def _glyph(file_name: str, char: str) -> np.ndarray:
    from matplotlib.font_manager import FontProperties
    from matplotlib.path import Path
    from matplotlib.textpath import TextPath

    path = TextPath((0, 0), char, size=1, prop=FontProperties(fname=font_path(file_name)))
    ext = path.get_extents()
    scale = 0.8 / max(ext.width, ext.height, 1e-6)
    centre = np.array([(ext.x0 + ext.x1) / 2, (ext.y0 + ext.y1) / 2])
    ys, xs = np.mgrid[0:TEMPLATE, 0:TEMPLATE]
    points = np.stack([(xs.ravel() + 0.5) / TEMPLATE, 1 - (ys.ravel() + 0.5) / TEMPLATE], 1)
    inside = np.zeros(TEMPLATE * TEMPLATE, dtype=bool)
    for polygon in path.to_polygons():  # even-odd rule: holes toggle back to outside
        inside ^= Path((polygon - centre) * scale + 0.5).contains_points(points)
    return inside.reshape(TEMPLATE, TEMPLATE).astype(np.float32)


def glyph_templates(pairs: list[tuple[str, str]]) -> torch.Tensor:
    """Binary ``TEMPLATE``² rasters of (font file, character) pairs, each glyph centred and fit to 80 %."""
    return torch.from_numpy(np.stack([_glyph(f, c) for f, c in pairs]))


def warp(templates: torch.Tensor, rng: np.random.Generator, *, rotate_deg: float = 0.0,
         scale: tuple[float, float] = (1.0, 1.0), shift: float = 0.0, shear: float = 0.0) -> torch.Tensor:
    """Random affine copies of ``templates`` [n, h, w] at ``SIDE``² (anti-aliased), values kept in [0, 1].

    Per image: rotation uniform in ±``rotate_deg``, zoom uniform in ``scale`` (>1 is larger), a shift
    uniform in ±``shift`` (fraction of the half-width) and a horizontal shear uniform in ±``shear``.
    """
    n = templates.shape[0]
    angle = np.deg2rad(rng.uniform(-rotate_deg, rotate_deg, n))
    zoom = rng.uniform(scale[0], scale[1], n)
    dx, dy = rng.uniform(-shift, shift, (2, n))
    sh = rng.uniform(-shear, shear, n)
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    # output -> input coordinates: inverse rotation/zoom, then shear, then shift
    theta = np.zeros((n, 2, 3), dtype=np.float32)
    theta[:, 0, 0], theta[:, 0, 1] = cos + sh * sin, -sin + sh * cos
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    theta[:, 0, 2], theta[:, 1, 2] = -dx, -dy
    size = SIDE * SUPER
    grid = F.affine_grid(torch.from_numpy(theta), [n, 1, size, size], align_corners=False)
    out = F.grid_sample(templates[:, None].float(), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return downsample(out[:, 0])


def downsample(images: torch.Tensor) -> torch.Tensor:
    """Box-filter [n, SIDE·SUPER, SIDE·SUPER] drawings to [n, SIDE, SIDE]."""
    return F.avg_pool2d(images[:, None], SUPER)[:, 0]


def coordinates(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x and y pixel-centre coordinates in [-1, 1] (y up) at drawing resolution, shaped [n, S, S]."""
    size = SIDE * SUPER
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(-axis, axis, indexing="ij")
    return x.expand(n, size, size), y.expand(n, size, size)


def column(rng: np.random.Generator, low: float, high: float, n: int) -> torch.Tensor:
    """``n`` uniform draws shaped [n, 1, 1] for broadcasting against drawings."""
    return torch.from_numpy(rng.uniform(low, high, n).astype(np.float32))[:, None, None]


def lowpass_noise(rng: np.random.Generator, n: int, cutoff: float, size: int = SIDE * SUPER) -> torch.Tensor:
    """Gaussian noise with a Gaussian spectrum of width ``cutoff`` cycles per image, scaled to unit std."""
    white = torch.from_numpy(rng.standard_normal((n, size, size)).astype(np.float32))
    freq = torch.fft.fftfreq(size) * size
    fy, fx = torch.meshgrid(freq, freq, indexing="ij")
    spectrum = torch.exp(-(fx**2 + fy**2) / (2 * cutoff**2))
    smooth = torch.fft.ifft2(torch.fft.fft2(white) * spectrum).real
    return smooth / smooth.flatten(1).std(1).clamp_min(1e-6)[:, None, None]


def finish(ink: torch.Tensor, rng: np.random.Generator, noise: tuple[float, float] = (0.02, 0.12)) -> torch.Tensor:
    """Turn ink coverage in [0, 1] into a photo-like image: random background/ink levels plus pixel noise."""
    n = ink.shape[0]
    background = column(rng, 0.0, 0.35, n)
    foreground = column(rng, 0.65, 1.0, n)
    sigma = column(rng, noise[0], noise[1], n)
    grain = torch.from_numpy(rng.standard_normal(ink.shape).astype(np.float32))
    return (background + (foreground - background) * ink + sigma * grain).clamp(0, 1)


def smoothstep_edge(distance: torch.Tensor) -> torch.Tensor:
    """Ink coverage from a signed distance (negative inside), softened over about one drawing pixel."""
    width = 2.0 / (SIDE * SUPER)
    return torch.sigmoid(-distance / (0.5 * width))


def polar(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Radius and angle of coordinate grids."""
    return torch.sqrt(x**2 + y**2), torch.atan2(y, x)


TAU = 2 * math.pi
