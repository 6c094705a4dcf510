"""A procedural driving world in a global frame: a road with lanes, curbs and sidewalks, and boxes/ellipsoids.

The ground is the plane z = ``ground_z`` whose class comes from the road layout (road, sidewalk slab,
terrain or other_flat strips); everything else is a list of primitives (yawed boxes and ellipsoids),
each with one Occ3D class. The road centre line is a circular arc (or a straight line), so the
road frame (s = arc length, d = signed lateral offset, left positive) has a closed form both ways.
All objects are static; the ego drives along one lane at constant speed, so every frame of a scene
sees one consistent world.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Occ3D class ids (flashocc.grid.OCC3D_CLASS_NAMES).
OTHERS, BARRIER, BICYCLE, BUS, CAR, CONSTRUCTION, MOTORCYCLE, PEDESTRIAN, CONE, TRAILER, TRUCK = range(11)
DRIVEABLE, OTHER_FLAT, SIDEWALK, TERRAIN, MANMADE, VEGETATION = range(11, 17)

BOX, ELLIPSOID = 0, 1
# Materials select the procedural texture in render.py.
PLAIN, WINDOWS, VEHICLE, FOLIAGE, STRIPES, BARK, BODY, GLASS = range(8)

# (length, width, height) ranges in metres, and material, per vehicle class.
_VEHICLES: dict[int, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    CAR: ((3.9, 4.9), (1.7, 2.0), (1.4, 1.9)),
    TRUCK: ((6.0, 10.0), (2.3, 2.6), (2.8, 3.6)),
    BUS: ((10.0, 12.5), (2.5, 2.7), (3.0, 3.4)),
    TRAILER: ((7.0, 12.0), (2.4, 2.6), (3.2, 3.9)),
    CONSTRUCTION: ((5.0, 7.5), (2.4, 2.9), (2.6, 3.4)),
    MOTORCYCLE: ((1.9, 2.3), (0.7, 0.9), (1.2, 1.5)),
    BICYCLE: ((1.6, 1.9), (0.5, 0.7), (1.0, 1.3)),
}
_TRAFFIC_CLASSES = (CAR, TRUCK, BUS, TRAILER, CONSTRUCTION, MOTORCYCLE, BICYCLE)
_TRAFFIC_PROBS = (0.5, 0.12, 0.08, 0.07, 0.06, 0.09, 0.08)


@dataclass(frozen=True)
class Road:
    """Centre line through ``origin`` with heading ``heading`` (rad) and constant ``curvature`` (1/m, left > 0)."""

    origin: tuple[float, float]
    heading: float
    curvature: float
    lanes_per_direction: int
    lane_width: float
    parking_width: float      # 0 when there is no parking lane
    sidewalk_width: float
    curb_height: float

    @property
    def half_width(self) -> float:
        """Distance from the centre line to the curb."""
        return self.lanes_per_direction * self.lane_width + self.parking_width

    def pose(self, s: np.ndarray, d: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Global (x, y, heading) of road coordinates (s, d)."""
        s = np.asarray(s, dtype=np.float64)
        heading = self.heading + self.curvature * s
        x0, y0 = self.origin
        if self.curvature == 0.0:
            x = x0 + s * np.cos(self.heading)
            y = y0 + s * np.sin(self.heading)
        else:
            r = 1.0 / self.curvature
            x = x0 + r * (np.sin(heading) - np.sin(self.heading))
            y = y0 - r * (np.cos(heading) - np.cos(self.heading))
        return x - d * np.sin(heading), y + d * np.cos(heading), heading

    def to_road(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Road coordinates (s, d) of global points (x, y)."""
        dx, dy = np.asarray(x, np.float64) - self.origin[0], np.asarray(y, np.float64) - self.origin[1]
        c, s0 = np.cos(self.heading), np.sin(self.heading)
        if self.curvature == 0.0:
            return dx * c + dy * s0, -dx * s0 + dy * c
        r = 1.0 / self.curvature
        vx, vy = dx + r * s0, dy - r * c          # from the centre of curvature
        heading = np.arctan2(vx / r, -vy / r)
        dh = (heading - self.heading + np.pi) % (2 * np.pi) - np.pi  # wrapped to [-pi, pi)
        return dh * r, r - np.sign(r) * np.hypot(vx, vy)


@dataclass
class Primitives:
    """Struct of arrays, P primitives in the global frame."""

    kind: np.ndarray      # (P,) uint8 BOX / ELLIPSOID
    center: np.ndarray    # (P, 3) float64
    half: np.ndarray      # (P, 3) half extents (box) or radii (ellipsoid), local axes
    yaw: np.ndarray       # (P,) rad, local x -> global
    label: np.ndarray     # (P,) uint8 Occ3D class
    color: np.ndarray     # (P, 3) float32 RGB in [0, 1]
    material: np.ndarray  # (P,) uint8
    obj: np.ndarray | None = None  # (P,) int64 object index: the parts of one vehicle share it (None: one each)

    def __len__(self) -> int:
        return len(self.kind)

    def object_ids(self) -> np.ndarray:
        """(P,) object index of each primitive (instance ids are numbered from these)."""
        return np.arange(len(self.kind), dtype=np.int64) if self.obj is None else self.obj

    def corners(self) -> np.ndarray:
        """(P, 8, 3) corners of the (bounding) boxes."""
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
        local = signs[None] * self.half[:, None, :]
        c, s = np.cos(self.yaw)[:, None], np.sin(self.yaw)[:, None]
        x = c * local[..., 0] - s * local[..., 1]
        y = s * local[..., 0] + c * local[..., 1]
        return np.stack([x, y, local[..., 2]], axis=-1) + self.center[:, None, :]


@dataclass
class World:
    road: Road
    ground_z: float            # global z of the ground plane
    primitives: Primitives
    strip_classes: np.ndarray  # (2, n_segments) class beyond the sidewalk per side (0: right, 1: left)
    segment_length: float
    s_range: tuple[float, float]
    sun: np.ndarray            # (3,) unit vector towards the sun
    noise: np.ndarray          # (256, 256) float32 smooth noise in [0, 1]
    ego_lateral: float         # d of the ego lane centre
    ego_speed: float           # m/s

    def ground_class(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ground class, top surface z and road coordinates (s, d) at global (x, y)."""
        s, d = self.road.to_road(x, y)
        road = self.road
        a = np.abs(d)
        seg = ((s - self.s_range[0]) // self.segment_length).astype(np.int64)
        seg = np.clip(seg, 0, self.strip_classes.shape[1] - 1)
        cls = self.strip_classes[(d > 0).astype(np.int64), seg]
        cls = np.where(a < road.half_width + road.sidewalk_width, SIDEWALK, cls)
        cls = np.where(a < road.half_width, DRIVEABLE, cls).astype(np.uint8)
        top = np.where(cls == SIDEWALK, self.ground_z + road.curb_height, self.ground_z)
        return cls, top, (s, d)

    def ego_pose(self, time_s: float) -> np.ndarray:
        """(4, 4) ego2global at ``time_s`` seconds after the scene start (z = 0, level, as nuScenes)."""
        x, y, h = self.road.pose(np.array(self.ego_speed * time_s), self.ego_lateral)
        out = np.eye(4)
        out[:2, :2] = [[np.cos(h), -np.sin(h)], [np.sin(h), np.cos(h)]]
        out[0, 3], out[1, 3] = float(x), float(y)
        return out


class _Builder:
    """Collects primitives placed in road coordinates."""

    def __init__(self, road: Road, ground_z: float, rng: np.random.Generator):
        self.road, self.ground_z, self.rng = road, ground_z, rng
        self.rows: list[tuple] = []
        self.objects: list[int] = []   # object index per row
        self.next_object = 0

    def add(self, s: float, d: float, size: tuple[float, float, float], label: int, color, material: int = PLAIN,
            z0: float | None = None, yaw: float = 0.0, kind: int = BOX, part: bool = False) -> None:
        """Object of (length, width, height) whose base sits at z0 (default: the ground) at road (s, d);
        ``part``: another piece of the object added last (a car's cabin), sharing its instance."""
        x, y, h = self.road.pose(np.array(s), d)
        base = self.ground_z if z0 is None else z0
        half = (size[0] / 2, size[1] / 2, size[2] / 2)
        self.rows.append((kind, (float(x), float(y), base + half[2]), half, float(h) + yaw, label,
                          np.clip(np.asarray(color, np.float64), 0, 1), material))
        if not (part and self.objects):
            self.next_object += 1
        self.objects.append(self.next_object - 1)

    def build(self) -> Primitives:
        cols = list(zip(*self.rows)) if self.rows else [[]] * 7
        return Primitives(np.array(cols[0], np.uint8), np.array(cols[1], np.float64).reshape(-1, 3),
                          np.array(cols[2], np.float64).reshape(-1, 3), np.array(cols[3], np.float64),
                          np.array(cols[4], np.uint8), np.array(cols[5], np.float32).reshape(-1, 3),
                          np.array(cols[6], np.uint8), np.array(self.objects, np.int64))


def _tint(rng: np.random.Generator, rgb: tuple[int, int, int], spread: float = 0.12) -> np.ndarray:
    return np.asarray(rgb, np.float64) / 255.0 * (1.0 + rng.uniform(-spread, spread))


def _add_vehicle(b: _Builder, cls: int, s: float, d: float, yaw: float, colors) -> None:
    rng = b.rng
    length, width, height = (rng.uniform(*r) for r in _VEHICLES[cls])
    col = _tint(rng, colors[cls])
    if cls == CAR:  # lower body plus a shorter cabin
        body = height * 0.55
        b.add(s, d, (length, width, body), cls, col, BODY, yaw=yaw)
        b.add(s - 0.1 * length * np.cos(yaw), d, (0.55 * length, width * 0.92, height - body), cls, col, GLASS,
              z0=b.ground_z + body, yaw=yaw, part=True)
    elif cls in (TRUCK, CONSTRUCTION):  # cab in front of a cargo box / machine body with an arm
        cab = 2.2
        sign = np.cos(yaw)
        b.add(s + sign * (length - cab) / 2, d, (cab, width, height * 0.85), cls, col, VEHICLE, yaw=yaw)
        b.add(s - sign * cab / 2, d, (length - cab, width, height), cls, col * 0.9, PLAIN, yaw=yaw, part=True)
        if cls == CONSTRUCTION:
            b.add(s + sign * length * 0.45, d, (length * 0.5, 0.5, 0.5), cls, col, PLAIN, z0=b.ground_z + height,
                  yaw=yaw, part=True)
    elif cls == TRAILER:  # raised box on a rear wheel block
        b.add(s, d, (length, width, height - 1.1), cls, col, PLAIN, z0=b.ground_z + 1.1, yaw=yaw)
        b.add(s - np.cos(yaw) * length * 0.3, d, (2.5, width * 0.9, 1.1), cls, col * 0.4, PLAIN, yaw=yaw, part=True)
    else:
        b.add(s, d, (length, width, height), cls, col, VEHICLE if cls == BUS else PLAIN, yaw=yaw)


def generate_world(rng: np.random.Generator, speed: float, duration: float, ground_z: float, colors) -> World:
    """One random scene around an ego path of ``speed * duration`` metres; ``colors``: per-class RGB (0..255)."""
    travel = speed * duration
    lanes = int(rng.integers(1, 3))
    road = Road(origin=tuple(rng.uniform(-500, 500, 2)), heading=float(rng.uniform(-np.pi, np.pi)),
                curvature=0.0 if rng.random() < 0.4 else float(rng.choice([-1, 1]) * rng.uniform(1 / 600, 1 / 200)),
                lanes_per_direction=lanes, lane_width=3.5, parking_width=2.4 if rng.random() < 0.7 else 0.0,
                sidewalk_width=float(rng.uniform(2.0, 4.0)), curb_height=0.15)
    s_lo, s_hi = -75.0, travel + 75.0
    seg_len = 12.0
    n_seg = int(np.ceil((s_hi - s_lo) / seg_len)) + 1
    strips = np.where(rng.random((2, n_seg)) < 0.7, TERRAIN, OTHER_FLAT).astype(np.uint8)
    ego_lane = int(rng.integers(0, lanes))
    ego_d = -(ego_lane + 0.5) * road.lane_width
    b = _Builder(road, ground_z, rng)
    hw, sw = road.half_width, road.sidewalk_width

    # Construction zones on the oncoming side (never in the ego lane): barriers with cones beside them.
    # Vehicles on that side keep clear of them (``blocked``).
    blocked: list[tuple[float, float]] = []
    for _ in range(2):
        s0 = float(rng.uniform(s_lo + 20, s_hi - 30))
        d0, d_cone = (hw - 0.5, hw - 1.7) if rng.random() < 0.5 else (0.3, 1.5)
        n_barriers, n_cones = int(rng.integers(3, 7)), int(rng.integers(3, 8))
        for k in range(n_barriers):
            b.add(s0 + 2.2 * k, d0, (2.0, 0.5, 1.0), BARRIER, _tint(rng, (215, 215, 215)), STRIPES)
        for k in range(n_cones):
            b.add(s0 - 2 + 1.6 * k, d_cone, (0.35, 0.35, 0.75), CONE, (1.0, 0.45, 0.05), STRIPES)
        blocked.append((s0 - 10.0, s0 + max(2.2 * n_barriers, 1.6 * n_cones) + 8.0))

    def clear_of_zones(side: int, s: float) -> bool:
        return side < 0 or not any(lo < s < hi for lo, hi in blocked)

    for side in (-1, 1):
        # Buildings behind a strip of terrain / other_flat, with park gaps full of trees.
        setback = hw + sw + float(rng.uniform(3.0, 10.0))
        s = s_lo + float(rng.uniform(0, 10))
        while s < s_hi:
            if rng.random() < 0.2:
                park = float(rng.uniform(12, 30))
                for ts in np.arange(s + 3, s + park - 2, rng.uniform(4, 7)):
                    _add_tree(b, ts, side * (setback + rng.uniform(1, 8)))
                s += park
                continue
            length, depth = float(rng.uniform(8, 25)), float(rng.uniform(8, 18))
            color = _tint(rng, (rng.integers(150, 230), rng.integers(140, 210), rng.integers(120, 190)), 0.0)
            b.add(s + length / 2, side * (setback + depth / 2), (length, depth, float(rng.uniform(5, 18))),
                  MANMADE, color, WINDOWS)
            s += length + float(rng.uniform(1.5, 8))
        # Street trees, hedges, lamp posts, bins and pedestrians along the sidewalk.
        for ts in np.arange(s_lo, s_hi, 1.0):
            u = rng.random()
            edge = side * (hw + sw + 0.8)
            if u < 0.06:
                _add_tree(b, ts, edge + side * rng.uniform(0, 1.5))
            elif u < 0.09:
                b.add(ts + 2.5, edge + side * 1.2, (float(rng.uniform(3, 8)), 0.9, float(rng.uniform(0.8, 1.6))),
                      VEGETATION, _tint(rng, (40, 110, 35)), FOLIAGE)
            elif u < 0.11:
                b.add(ts, side * (hw + 0.4), (0.2, 0.2, 6.0), MANMADE, (0.45, 0.45, 0.48), PLAIN,
                      z0=ground_z + road.curb_height)
            elif u < 0.125:
                b.add(ts, side * (hw + rng.uniform(0.6, sw - 0.4)), (0.6, 0.6, 1.1), OTHERS,
                      _tint(rng, colors[OTHERS]) + 0.25, PLAIN, z0=ground_z + road.curb_height)
            elif u < 0.17:
                b.add(ts, side * (hw + rng.uniform(0.5, sw - 0.3)), (0.5, 0.55, float(rng.uniform(1.5, 1.9))),
                      PEDESTRIAN, _tint(rng, colors[PEDESTRIAN], 0.3), VEHICLE, z0=ground_z + road.curb_height,
                      yaw=float(rng.uniform(-np.pi, np.pi)))
            elif u < 0.18:
                b.add(ts, side * (hw + rng.uniform(0.5, sw - 0.4)), (1.8, 0.6, 1.1), BICYCLE,
                      _tint(rng, colors[BICYCLE]), PLAIN, z0=ground_z + road.curb_height,
                      yaw=float(rng.uniform(-0.3, 0.3)))
        # Parked vehicles in the parking lane.
        if road.parking_width > 0:
            s = s_lo + float(rng.uniform(0, 8))
            while s < s_hi:
                cls = int(rng.choice([CAR, CAR, CAR, TRUCK, MOTORCYCLE, BICYCLE, TRAILER]))
                if clear_of_zones(side, s):
                    _add_vehicle(b, cls, s, side * (hw - road.parking_width / 2), 0.0 if side < 0 else np.pi, colors)
                s += float(rng.uniform(6, 16))

    # Traffic in every lane; the ego lane stays clear along the ego path.
    ego_end = travel
    for lane in range(lanes):
        for side in (-1, 1):
            d = side * (lane + 0.5) * road.lane_width
            s = s_lo + float(rng.uniform(0, 15))
            while s < s_hi:
                ego_path = side < 0 and lane == ego_lane and -12 < s < ego_end + 14
                cls = int(rng.choice(_TRAFFIC_CLASSES, p=_TRAFFIC_PROBS))
                if not ego_path and clear_of_zones(side, s):
                    _add_vehicle(b, cls, s, d + rng.uniform(-0.3, 0.3), 0.0 if side < 0 else np.pi, colors)
                s += float(rng.uniform(9, 30))

    sun_el, sun_az = rng.uniform(0.5, 1.1), rng.uniform(-np.pi, np.pi)
    sun = np.array([np.cos(sun_el) * np.cos(sun_az), np.cos(sun_el) * np.sin(sun_az), np.sin(sun_el)])
    return World(road, ground_z, b.build(), strips, seg_len, (s_lo, s_hi), sun, _smooth_noise(rng),
                 ego_d, speed)


def _add_tree(b: _Builder, s: float, d: float) -> None:
    rng = b.rng
    trunk = float(rng.uniform(1.8, 3.0))
    b.add(s, d, (0.3, 0.3, trunk + 0.5), VEGETATION, (0.36, 0.25, 0.15), BARK)
    rx, rz = float(rng.uniform(1.2, 2.3)), float(rng.uniform(1.4, 2.6))
    b.add(s, d, (2 * rx, 2 * rx, 2 * rz), VEGETATION, _tint(rng, (35, 120, 40), 0.25), FOLIAGE,
          z0=b.ground_z + trunk, kind=ELLIPSOID, part=True)


def _smooth_noise(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """Tileable value noise: two octaves of blurred white noise, in [0, 1]."""
    out = np.zeros((size, size))
    for cells, weight in ((32, 0.6), (128, 0.4)):
        coarse = rng.random((cells, cells))
        rep = size // cells
        layer = np.repeat(np.repeat(coarse, rep, 0), rep, 1)
        for axis in (0, 1):  # box blur with wrap-around makes it smooth and tileable
            layer = sum(np.roll(layer, k, axis) for k in range(-rep // 2, rep // 2 + 1)) / (2 * (rep // 2) + 1)
        out += weight * layer
    out = (out - out.min()) / max(out.max() - out.min(), 1e-9)
    return out.astype(np.float32)
