"""A built-in synthetic driving world written in the nuScenes + Occ3D on-disk layout.

``generate_synthetic_set(out, SynthConfig(...))`` writes camera JPEGs, LiDAR sweeps, Occ3D
``labels.npz`` volumes and info files that the real-data pipeline reads unchanged, then
``synth_complete.json``; ``synthetic_set_problem(root, config)`` says whether a folder holds a complete set.
"""
from flashocc.data.synth.generate import SynthConfig, SynthFrame, generate_synthetic_set, scene_world, simulate_frame
from flashocc.data.synth.marker import MARKER_NAME, synthetic_set_problem
from flashocc.data.synth.rig import Rig, nuscenes_rig

__all__ = ["MARKER_NAME", "Rig", "SynthConfig", "SynthFrame", "generate_synthetic_set", "nuscenes_rig", "scene_world",
           "simulate_frame", "synthetic_set_problem"]
