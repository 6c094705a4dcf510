"""Panoptic-FlashOcc (models/panoptic): parameter counts against the README, official state-dict names,
the class-mapping bug and its fix, centre decoding and targets, the loss terms, config refusals."""
from dataclasses import replace

import pytest
import torch

from flashocc.errors import ConfigError
from flashocc.grid import OCC3D_NUSCENES
from flashocc.models.panoptic.assign import Centres, assign_instances, decode_centres
from flashocc.models.panoptic.losses import (distance_weights, focal_occupancy_loss, gaussian_focal_loss,
                                             lovasz_softmax)
from flashocc.models.panoptic.targets import centre_targets
from flashocc.models.presets import build_model, count_parameters, get_config

G = OCC3D_NUSCENES
CAR, PED, BIKE, CONE, ROAD, FREE = 4, 7, 2, 8, 11, 17
DET = {"car": 0, "bicycle": 7, "pedestrian": 8, "traffic_cone": 9}  # config order labels


def _meta(cfg):
    with torch.device("meta"):
        return build_model(cfg)


def test_readme_counts_are_the_models_without_the_centre_head():
    # README: 45.32 M for depth-tiny and depth-tiny-pano alike; the pano model adds the centre head.
    pano = _meta("panoptic-flashocc-depth-tiny-pano")
    head = count_parameters(pano.aux_centerness_head)
    assert head == 307_348
    assert round((count_parameters(pano) - head) / 1e6, 2) == 45.32
    assert count_parameters(_meta("panoptic-flashocc-depth-tiny")) == count_parameters(pano) - head
    # README 50.12 M for depth / depth-pano: the configs' numC_Trans=80 gives 57.83 M; 50.12 M is numC_Trans=64.
    depth = get_config("panoptic-flashocc-depth")
    assert round(count_parameters(_meta(depth)) / 1e6, 2) == 57.83
    as_64 = replace(depth, bev_channels=64, encoder_channels=(128, 256, 512))
    assert count_parameters(_meta(as_64)) == 50_123_118


def test_state_dict_names_follow_the_official_centre_head():
    sd = _meta("panoptic-flashocc-depth-tiny-pano").state_dict()
    for key in ("aux_centerness_head.shared_conv.conv.weight", "aux_centerness_head.shared_conv.bn.running_var",
                "aux_centerness_head.task_heads.0.heatmap.0.conv.weight",
                "aux_centerness_head.task_heads.0.heatmap.1.bias", "aux_centerness_head.task_heads.0.vel.1.weight",
                "img_view_transformer.depth_net.depth_mlp.fc1.weight", "occ_head.predicter.2.weight"):
        assert key in sd, key
    assert tuple(sd["aux_centerness_head.task_heads.0.heatmap.1.weight"].shape) == (10, 64, 3, 3)
    assert not any("cost_volumn_net" in k for k in sd)  # BEVDepth: no stereo branch
    assert not any(k.startswith("aux_") for k in _meta("panoptic-flashocc-depth").state_dict())


def _scene():
    occ = torch.full(G.shape, FREE, dtype=torch.long)
    occ[:, :, 0] = ROAD
    occ[100:103, 100:103, 3] = PED        # a pedestrian
    occ[120:122, 80:82, 3] = BIKE         # a bicycle
    occ[60:62, 60:62, 3] = CONE           # a cone
    occ[140:150, 140:145, 3] = CAR        # a car
    # Centres in metres (voxel centre = lower + (i + 0.5) * 0.4): one per object, in config-order labels.
    xyz = torch.tensor([[0.6, 0.6, 0.6], [8.4, -7.6, 0.6], [-15.6, -15.6, 0.6], [18.0, 17.0, 0.6]])
    labels = torch.tensor([DET["pedestrian"], DET["bicycle"], DET["traffic_cone"], DET["car"]])
    return occ, Centres(xyz, torch.ones(4), labels)


def test_fixed_mapping_gives_each_thing_its_own_centre():
    occ, centres = _scene()
    ids = assign_instances(occ, centres, G)
    # Centres are numbered after sorting by label: car (0), bicycle (1), pedestrian (2), cone (3).
    assert (ids[occ == CAR] == 18 + 0).all()
    assert (ids[occ == BIKE] == 18 + 1).all()
    assert (ids[occ == PED] == 18 + 2).all()
    assert (ids[occ == CONE] == CONE).all() and (ids[occ == ROAD] == ROAD).all()  # stuff keeps its class id


def test_official_mapping_reproduces_the_released_tables():
    occ, centres = _scene()
    ids = assign_instances(occ, centres, G, official_mapping=True)
    fixed = assign_instances(occ, centres, G)
    # Pedestrian voxels go to the bicycle centre (devkit label 7 is pedestrian, config label 7 is bicycle).
    assert (ids[occ == PED] == 18 + 1).all()
    # Bicycle voxels (occ 2) would look for barrier centres, but no centre label maps to occ 2: class id kept.
    assert (ids[occ == BIKE] == BIKE).all()
    # The detected pedestrian (label 8) puts traffic_cone (8) in the key set, whose lookup is -1: id 0.
    assert (ids[occ == CONE] == 0).all()
    assert (ids[occ == CAR] == 18).all()  # car agrees in both orders
    assert not torch.equal(ids, fixed)


def test_radius_limits_the_assignment():
    occ, centres = _scene()
    far = Centres(centres.xyz + torch.tensor([20.0, 0, 0]), centres.scores, centres.labels)
    assert (assign_instances(occ, far, G, radius=5.0)[occ == PED] == PED).all()
    assert (assign_instances(occ, far, G)[occ == PED] >= 18).all()  # official: no limit


def test_decode_centres_reads_peak_offset_and_height():
    heat = torch.full((1, 10, 200, 200), -10.0)
    heat[0, DET["pedestrian"], 120, 30] = 5.0   # row = y cell, column = x cell
    heat[0, DET["car"], 10, 10] = -1.0          # sigmoid 0.27 < 0.3: dropped
    reg = torch.zeros(1, 2, 200, 200)
    reg[0, :, 120, 30] = torch.tensor([0.25, 0.5])
    height = torch.full((1, 1, 200, 200), 1.5)
    (c,) = decode_centres(heat, reg, height, G)
    assert c.labels.tolist() == [DET["pedestrian"]]
    assert c.xyz[0].tolist() == pytest.approx([(30 + 0.25) * 0.4 - 40, (120 + 0.5) * 0.4 - 40, 1.5])


def test_centre_targets_from_instance_ids():
    sem = torch.full((1, *G.shape), FREE, dtype=torch.uint8)
    inst = torch.zeros_like(sem)
    sem[0, 50:54, 70:72, 2:4] = CAR
    inst[0, 50:54, 70:72, 2:4] = 3
    sem[0, :, :, 0] = ROAD
    inst[0, :, :, 0] = 1                      # stuff: no centre
    t = centre_targets(inst, sem, G)
    assert t.cells.tolist() == [[0, 71, 52]]  # row = y cell 70 + 1, column = x cell 50 + 2
    assert t.heatmap[0, DET["car"], 71, 52] == 1 and t.heatmap[0, DET["car"]].sum() > 1  # a Gaussian
    assert t.heatmap[0, [c for c in range(10) if c != DET["car"]]].sum() == 0
    assert t.reg.shape == (1, 2) and t.reg[0].tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    assert t.height.tolist() == pytest.approx([-1.0 + 3 * 0.4])  # the mean of z cells 2 and 3


def test_loss_terms():
    d = distance_weights(200, 200)
    assert d[100, 100] == 1 and float(d.max()) == pytest.approx(2.0)
    labels = torch.tensor([0, 1, 2, 1])
    perfect = torch.nn.functional.one_hot(labels, 3).float()
    assert float(lovasz_softmax(perfect, labels)) == pytest.approx(0.0)
    assert float(lovasz_softmax(perfect.flip(0), labels)) > 0
    target = torch.zeros(1, 1, 5, 5)
    target[0, 0, 2, 2] = 1
    good, bad = torch.full((1, 1, 5, 5), -8.0), torch.full((1, 1, 5, 5), -8.0)
    good[0, 0, 2, 2] = 8.0
    assert float(gaussian_focal_loss(good, target)) < float(gaussian_focal_loss(bad, target))
    # Focal loss: distance weights scale the far cells; ignored voxels do not count.
    logits = torch.zeros(1, 2, 1, 1, 3)
    lab = torch.zeros(1, 2, 1, 1, dtype=torch.long)
    keep = torch.tensor([True, False]).view(1, 2, 1, 1)
    near = focal_occupancy_loss(logits, lab, keep, None, torch.tensor([[1.0], [2.0]]))
    far = focal_occupancy_loss(logits, lab, keep.flip(1), None, torch.tensor([[1.0], [2.0]]))
    assert float(far) == pytest.approx(2 * float(near))


def test_config_refusals_name_the_field():
    with pytest.raises(ConfigError, match="model.centre_channels"):
        replace(get_config("panoptic-flashocc-depth"), centre_channels=32).check()
    with pytest.raises(ConfigError, match="model.assign_radius"):
        replace(get_config("panoptic-flashocc-tiny"), assign_radius=-1.0)
    cfg = get_config("panoptic-flashocc-tiny")
    assert cfg.use_mask is False and cfg.data_requirements()["load_instances"] is True
    assert "load_instances" not in get_config("panoptic-flashocc-depth").data_requirements()
