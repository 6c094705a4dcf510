"""Camera images of the synthetic world: one ray per pixel, flat per-class colours, texture and sun shading.

Pixel (u, v) looks along K^-1 (u, v, 1): pixel centres sit at integer coordinates, the convention of
``flashocc.geometry.project_to_image``, so a point projected with the written intrinsics lands on
the pixel that shows it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from flashocc.data.synth.raycast import RayHits, cast_primitives, intersect_ground, surface_frame
from flashocc.data.synth.world import (
    BARK, BODY, DRIVEABLE, FOLIAGE, GLASS, OTHER_FLAT, SIDEWALK, STRIPES, TERRAIN, VEHICLE, WINDOWS, World,
)

# Natural colours of the ground classes (RGB 0..1); objects carry their own colour.
_GROUND_RGB = {
    DRIVEABLE: (0.30, 0.30, 0.32), OTHER_FLAT: (0.55, 0.48, 0.40), SIDEWALK: (0.66, 0.64, 0.60),
    TERRAIN: (0.34, 0.52, 0.20),
}
_GROUND_TABLE = np.full((256, 3), 0.5, np.float32)
for _cls, _rgb in _GROUND_RGB.items():
    _GROUND_TABLE[_cls] = _rgb
_SKY_TOP = np.array([0.33, 0.52, 0.85], np.float32)
_SKY_HORIZON = np.array([0.78, 0.85, 0.93], np.float32)
_FOG_DISTANCE = 180.0  # metres: 1/e visibility of the exponential haze


def camera_rays(intrinsics: np.ndarray, cam2global: np.ndarray, image_size: tuple[int, int]):
    """Origin (3,) and unit ray directions (H*W, 3) float32 in the global frame, row-major pixels."""
    local = _camera_frame_rays(tuple(np.asarray(intrinsics, np.float64).ravel()), tuple(image_size))
    return cam2global[:3, 3].copy(), np.einsum("nj,ij->ni", local, cam2global[:3, :3].astype(np.float32))


@lru_cache(maxsize=12)
def _camera_frame_rays(k: tuple[float, ...], image_size: tuple[int, int]) -> np.ndarray:
    width, height = image_size
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], 1)
    d = pix @ np.linalg.inv(np.array(k).reshape(3, 3)).T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    d = d.astype(np.float32)
    d.flags.writeable = False
    return d


# The 12 edges of a box, as pairs of indices into Primitives.corners() (corner = 4*sx + 2*sy + sz).
_EDGES = np.array([(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1])
_NEAR = 0.05  # metres: near clipping plane


def camera_windows(corners: np.ndarray, global2cam: np.ndarray, intrinsics: np.ndarray,
                   image_size: tuple[int, int]) -> np.ndarray:
    """(P, 4) pixel windows (row0, row1, col0, col1) covering each primitive's bounding box.

    The projection of a convex box is the hull of its projected vertices; a box crossing the near
    plane is first clipped by it (its vertices in front plus the edge crossings), so objects beside
    the camera get a tight window rather than the whole image.
    """
    width, height = image_size
    cam = corners @ global2cam[:3, :3].T + global2cam[:3, 3]       # (P, 8, 3)
    a, b = cam[:, _EDGES[:, 0]], cam[:, _EDGES[:, 1]]              # (P, 12, 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = (_NEAR - a[..., 2]) / (b[..., 2] - a[..., 2])
    crossing = (f > 0) & (f < 1)
    cut = a + np.where(crossing, f, 0.0)[..., None] * (b - a)
    pts = np.concatenate([cam, cut], 1)                             # (P, 20, 3)
    valid = np.concatenate([cam[..., 2] >= _NEAR, crossing], 1)
    z = np.maximum(pts[..., 2], _NEAR)
    u = intrinsics[0, 0] * pts[..., 0] / z + intrinsics[0, 2]
    v = intrinsics[1, 1] * pts[..., 1] / z + intrinsics[1, 2]
    big = 1e9
    c0 = np.floor(np.where(valid, u, big).min(1)).clip(0, width)
    c1 = (np.ceil(np.where(valid, u, -big).max(1)) + 1).clip(0, width)
    r0 = np.floor(np.where(valid, v, big).min(1)).clip(0, height)
    r1 = (np.ceil(np.where(valid, v, -big).max(1)) + 1).clip(0, height)
    win = np.stack([r0, r1, c0, c1], 1)
    win[~valid.any(1)] = 0
    return win.astype(np.int64)


def render_camera(world: World, corners: np.ndarray, intrinsics: np.ndarray, cam2global: np.ndarray,
                  image_size: tuple[int, int], max_range: float = 250.0) -> tuple[np.ndarray, np.ndarray]:
    """RGB (H, W, 3) uint8 and per-pixel hit distance (H, W) float32 (inf for sky)."""
    width, height = image_size
    origin, dirs = camera_rays(intrinsics, cam2global, image_size)
    hits = intersect_ground(world, origin, dirs, max_range)
    near = np.linalg.norm(world.primitives.center[:, :2] - origin[None, :2], axis=1) < max_range
    ids = np.nonzero(near)[0]
    windows = camera_windows(corners[ids], np.linalg.inv(cam2global), intrinsics, image_size)
    cast_primitives(world, ids, windows, width, origin, dirs, hits)
    rgb = shade(world, hits, origin, dirs)
    return rgb.reshape(height, width, 3), hits.t.reshape(height, width)


def shade(world: World, hits: RayHits, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """(R, 3) uint8 colours of the hits: class colour x procedural texture x Lambert sun + sky/haze."""
    n = len(dirs)
    color = np.zeros((n, 3), np.float32)
    noise = world.noise.ravel()

    def tex(a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
        ia = (a * np.float32(scale)).astype(np.int32) & 255
        ib = (b * np.float32(scale)).astype(np.int32) & 255
        return np.take(noise, (ia << 8) | ib)

    ground = np.nonzero(np.isfinite(hits.t) & (hits.prim < 0))[0]
    if len(ground):
        t = hits.t[ground]
        x = (origin[0] + t * dirs[ground, 0]).astype(np.float32)
        y = (origin[1] + t * dirs[ground, 1]).astype(np.float32)
        cls, curb = hits.ground_class[ground], hits.curb[ground]
        s, d = hits.road_s[ground], hits.road_d[ground]
        base = _GROUND_TABLE[cls]
        rough = np.where(cls == TERRAIN, 0.55 + 0.7 * tex(x, y, 1.5), 0.8 + 0.35 * tex(x, y, 6.0))
        rough = np.where((cls == SIDEWALK) & ((s % 1.6) < 0.06), rough * 0.7, rough)
        sun = np.float32(0.45 + 0.55 * world.sun[2])
        light = np.where(curb, np.float32(0.45 + 0.55 * 0.3), sun) * rough
        base = _lane_markings(world, base, cls, s, d)
        base[curb] = 0.5
        color[ground] = base * light[:, None]
    obj = np.nonzero(hits.prim >= 0)[0]
    if len(obj):
        prims = world.primitives
        p = hits.prim[obj]
        normal, local = surface_frame(world, hits, origin, dirs, obj)
        local = local.astype(np.float32)
        mat = prims.material[p]
        base = prims.color[p] * (0.85 + 0.3 * tex(local[:, 0] + local[:, 2], local[:, 1] - local[:, 2], 4.0))[:, None]
        pattern = surface_patterns(world, p, normal, local)
        base[pattern.window] = (0.18, 0.24, 0.32)
        base[pattern.glass_band] *= 0.35
        base[pattern.tyre] = (0.08, 0.08, 0.08)
        base[pattern.cabin_glass] *= 0.3
        base[pattern.stripe] = (0.85, 0.1, 0.1)
        leaf = np.nonzero((mat == FOLIAGE) | (mat == BARK))[0]
        base[leaf] *= (0.6 + 0.8 * tex(local[leaf, 0] + local[leaf, 2], local[leaf, 1] + local[leaf, 2], 9.0))[:, None]
        sun = world.sun.astype(np.float32)
        lambert = normal[:, 0] * sun[0] + normal[:, 1] * sun[1] + normal[:, 2] * sun[2]
        color[obj] = base * (0.45 + 0.55 * np.clip(lambert, 0.0, 1.0))[:, None]
    # Haze towards the horizon colour, then the sky for rays that hit nothing.
    fog = np.exp(hits.t * np.float32(-1.0 / _FOG_DISTANCE))[:, None]     # 0 where nothing was hit
    color *= fog
    color += (1 - fog) * _SKY_HORIZON
    miss = np.nonzero(~np.isfinite(hits.t))[0]
    up = np.clip(dirs[miss, 2:3], 0.0, 1.0) ** np.float32(0.6)
    color[miss] = _SKY_HORIZON * (1 - up) + _SKY_TOP * up
    color *= 255
    color += 0.5
    return np.clip(color, 0, 255, out=color).astype(np.uint8)


@dataclass
class SurfacePattern:
    """Where the procedural patterns of object surfaces lie, per primitive hit (boolean masks).

    The camera colours and the LiDAR reflectivity (``lidar._intensity``) both read them, so the dark
    glass a camera sees is also where the LiDAR returns little.
    """

    window: np.ndarray        # building window panes
    glass_band: np.ndarray    # the dark band near the top of buses, vans and pedestrians
    tyre: np.ndarray          # tyres (and legs) at the bottom of vehicles
    cabin_glass: np.ndarray   # the side windows of a car's cabin
    stripe: np.ndarray        # the red stripes of barriers and cones (retro-reflective)


def surface_patterns(world: World, prim: np.ndarray, normal: np.ndarray, local: np.ndarray) -> SurfacePattern:
    """Patterns at primitive hits ``prim`` (K,) with global normals and local hit points (``surface_frame``)."""
    prims = world.primitives
    local = local.astype(np.float32)
    half = prims.half[prim].astype(np.float32)
    mat = prims.material[prim]
    side = np.abs(normal[:, 2]) < 0.5
    across = np.abs(local[:, 0]) * half[:, 1] > np.abs(local[:, 1]) * half[:, 0]
    horiz = np.where(across, local[:, 1], local[:, 0])
    height = local[:, 2] + half[:, 2]
    floor = height % 3.2                                  # storeys of 3.2 m, a pane every 3 m
    rel = height / np.maximum(2 * half[:, 2], 1e-6)
    return SurfacePattern(
        window=(mat == WINDOWS) & side & ((horiz % 3.0) > 1.1) & (floor > 1.0) & (floor < 2.4),
        glass_band=(mat == VEHICLE) & side & (rel > 0.55) & (rel < 0.9),
        tyre=((mat == VEHICLE) | (mat == BODY)) & (height < 0.35),
        cabin_glass=(mat == GLASS) & side & (rel > 0.12) & (rel < 0.85),
        stripe=(mat == STRIPES) & (((horiz + local[:, 2]) % 0.5) < 0.25),
    )


def lane_markings(world: World, cls: np.ndarray, s: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(white, yellow) masks of the painted road markings at ground points of road coordinates (s, d)."""
    road = world.road
    a = np.abs(d)
    on_road = cls == DRIVEABLE
    drive = road.lanes_per_direction * road.lane_width
    white = on_road & (np.abs(a - (drive - 0.15)) < 0.075)           # solid edge lines
    yellow = on_road & (a > 0.06) & (a < 0.2)                           # double centre line
    for k in range(1, road.lanes_per_direction):                        # dashed lane separators
        white |= on_road & (np.abs(a - k * road.lane_width) < 0.075) & ((s % 9.0) < 3.0)
    if road.parking_width > 0:                                          # parking bay ticks
        white |= on_road & (a > drive) & ((s % 6.0) < 0.12)
    return white, yellow


def _lane_markings(world: World, base: np.ndarray, cls: np.ndarray, s: np.ndarray, d: np.ndarray) -> np.ndarray:
    white, yellow = lane_markings(world, cls, s, d)
    base = np.where(white[:, None], np.float32(0.92), base)
    return np.where(yellow[:, None], np.array([0.95, 0.78, 0.15], np.float32), base)
