"""A simulated 32-beam spinning LiDAR (nuScenes LIDAR_TOP, Velodyne HDL-32E geometry).

Rays form a (32, n_azimuth) grid in the LiDAR frame: ring 0 is the lowest beam, column c looks at
azimuth -pi + (c + 0.5) * 2pi / n_azimuth about the LiDAR z axis. The whole sweep is cast from the
keyframe pose (no rolling-shutter motion within the 50 ms revolution).

Intensity is a reflectivity per surface material on the 0..255 scale of nuScenes LIDAR_TOP (the real
fixture: median 12, 95th percentile 65, retro-reflectors up to 255), times the incidence cosine and a
little texture: dark asphalt with bright lane paint, concrete sidewalks and curbs, grass, foliage,
painted vehicle bodies with near-black tyres and glass, building walls with glass panes, and
retro-reflective barrier and cone stripes.
"""
from __future__ import annotations

import numpy as np

from flashocc.data.synth.raycast import RayHits, cast_primitives, intersect_ground, surface_frame
from flashocc.data.synth.render import lane_markings, surface_patterns
from flashocc.data.synth.world import BARK, FOLIAGE, World

# Reflectivity per Occ3D class of the surface hit (materials below override it).
_REFLECTIVITY = np.array([40, 60, 60, 70, 60, 70, 60, 30, 60, 70, 70, 10, 20, 28, 15, 40, 20, 0], np.float32)
_WHITE_PAINT, _YELLOW_PAINT = 150.0, 120.0  # road markings (glass beads)
_CURB = 32.0                                # the vertical concrete curb face
_GLASS, _TYRE = 5.0, 4.0                    # windows and tyres return little
_STRIPE = 230.0                             # retro-reflective sheeting on barriers and cones
_FOLIAGE, _BARK = 26.0, 14.0


def lidar_directions(pitches: np.ndarray, n_azimuth: int) -> np.ndarray:
    """(32 * n_azimuth, 3) unit directions in the LiDAR frame, ring-major."""
    az = -np.pi + (np.arange(n_azimuth) + 0.5) * (2 * np.pi / n_azimuth)
    p = pitches[:, None]
    d = np.stack([np.cos(p) * np.cos(az), np.cos(p) * np.sin(az), np.sin(p) * np.ones_like(az)], -1)
    return d.reshape(-1, 3)


def lidar_windows(corners: np.ndarray, centers: np.ndarray, global2lidar: np.ndarray, n_rings: int,
                  n_azimuth: int) -> np.ndarray:
    """(P, 4) ray windows: all rings, and the azimuth columns spanned by each bounding box."""
    cam = corners @ global2lidar[:3, :3].T + global2lidar[:3, 3]
    ctr = centers @ global2lidar[:3, :3].T + global2lidar[:3, 3]
    az_c = np.arctan2(ctr[:, 1], ctr[:, 0])
    delta = (np.arctan2(cam[..., 1], cam[..., 0]) - az_c[:, None] + np.pi) % (2 * np.pi) - np.pi
    step = 2 * np.pi / n_azimuth
    c0 = np.floor((az_c + delta.min(1) + np.pi) / step).astype(np.int64) - 1
    c1 = np.ceil((az_c + delta.max(1) + np.pi) / step).astype(np.int64) + 1
    # A box around the sensor (or nearly so) spans every azimuth.
    radius = np.linalg.norm(cam[..., :2] - ctr[:, None, :2], axis=-1).max(1)
    around = np.linalg.norm(ctr[:, :2], axis=1) <= radius + 0.5
    width = np.where(around, n_azimuth, np.minimum(c1 - c0, n_azimuth))
    c0 = np.where(around, 0, c0)
    rows = np.zeros(len(c0), np.int64)
    return np.stack([rows, rows + n_rings, c0, c0 + width], 1)


def simulate_lidar(world: World, corners: np.ndarray, lidar2global: np.ndarray, pitches: np.ndarray,
                   n_azimuth: int = 1080, max_range: float = 70.0) -> tuple[np.ndarray, np.ndarray]:
    """One sweep: points (M, 5) float32 (x, y, z, intensity, ring) in the LiDAR frame, and the
    (32, n_azimuth) range image in metres (inf where a beam returned nothing)."""
    n_rings = len(pitches)
    local_dirs = lidar_directions(pitches, n_azimuth)
    dirs = (local_dirs @ lidar2global[:3, :3].T).astype(np.float32)
    origin = lidar2global[:3, 3].copy()
    hits = intersect_ground(world, origin, dirs, max_range)
    near = np.linalg.norm(world.primitives.center[:, :2] - origin[None, :2], axis=1) < max_range + 15.0
    ids = np.nonzero(near)[0]
    windows = lidar_windows(corners[ids], world.primitives.center[ids], np.linalg.inv(lidar2global), n_rings, n_azimuth)
    cast_primitives(world, ids, windows, n_azimuth, origin, dirs, hits)
    hits.t[hits.t > max_range] = np.inf
    ok = np.nonzero(np.isfinite(hits.t))[0]
    points = local_dirs[ok] * hits.t[ok, None]
    intensity = _intensity(world, hits, origin, dirs, ok)
    ring = (ok // n_azimuth).astype(np.float32)
    cloud = np.concatenate([points, intensity[:, None], ring[:, None]], 1).astype(np.float32)
    return cloud, hits.t.reshape(n_rings, n_azimuth).copy()


def _intensity(world: World, hits: RayHits, origin: np.ndarray, dirs: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Material reflectivity x (0.3 + 0.7 cos incidence) x texture (0.85..1.15), rounded, 0..255."""
    prim = hits.prim[ok]
    cls = np.where(prim >= 0, world.primitives.label[np.maximum(prim, 0)], hits.ground_class[ok])
    refl = _REFLECTIVITY[cls].astype(np.float64)
    cos = np.abs(dirs[ok, 2]).astype(np.float64)          # flat ground faces up
    ground = np.nonzero(prim < 0)[0]
    if len(ground):
        rays = ok[ground]
        white, yellow = lane_markings(world, cls[ground], hits.road_s[rays], hits.road_d[rays])
        refl[ground[white]], refl[ground[yellow]] = _WHITE_PAINT, _YELLOW_PAINT
        curb = hits.curb[rays]
        refl[ground[curb]] = _CURB
        cos[ground[curb]] = np.hypot(dirs[rays[curb], 0], dirs[rays[curb], 1])  # a vertical face
    obj = np.nonzero(prim >= 0)[0]
    if len(obj):
        normal, local = surface_frame(world, hits, origin, dirs, ok[obj])
        cos[obj] = np.abs((normal * dirs[ok[obj]]).sum(1))
        mat = world.primitives.material[prim[obj]]
        refl[obj[mat == FOLIAGE]], refl[obj[mat == BARK]] = _FOLIAGE, _BARK
        pattern = surface_patterns(world, prim[obj], normal, local)
        refl[obj[pattern.window | pattern.glass_band | pattern.cabin_glass]] = _GLASS
        refl[obj[pattern.tyre]] = _TYRE
        refl[obj[pattern.stripe]] = _STRIPE
    hit = origin[None, :] + hits.t[ok, None].astype(np.float64) * dirs[ok].astype(np.float64)
    cells = (np.floor(hit[:, :2] * 4.0).astype(np.int64) & 255)   # 0.25 m texture cells, tiled
    texture = 0.85 + 0.3 * world.noise[cells[:, 0], cells[:, 1]].astype(np.float64)
    return np.clip(np.round(refl * (0.3 + 0.7 * cos) * texture), 0, 255)
