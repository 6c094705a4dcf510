"""Logits and losses against values computed before the parts/criterion refactor (issue #15).

The reference was recorded with the code of commit c33f0dc (one thread, the seeds below): the
depth/context split moved into one base class, the losses into ``OccupancyCriterion``, and the
temporal model's stages were reorganised; none of it may change a logit or a loss for the same
weights. (On the recording machine the outputs are bit-identical; the tolerance only absorbs a
different CPU's summation order.) Covers the official loss settings: M0/M1's (occupancy only),
BEVDetOcc with class balance, M2's (SID bins, LiDAR depth 0.05), and every training aid at once.
"""
from dataclasses import replace

import pytest
import torch

from flashocc.grid import OccGrid
from flashocc.models.examples import example_batch, example_sequence, temporal_batch
from flashocc.models.presets import build_model, get_config

SMALL = OccGrid(lower=(-12.8, -12.8, -1.0), upper=(12.8, 12.8, 5.4))  # 64x64x16

CONFIGS = {
    "tiny": lambda: replace(get_config("flashocc-tiny"), grid=SMALL),
    "tiny_aids": lambda: replace(get_config("flashocc-tiny"), grid=SMALL, depth_loss_weight=1.0,
                                 depth_target="occupancy", semantic_loss_weight=1.0, affinity_loss_weight=0.5,
                                 class_weights=tuple(0.5 + 0.1 * i for i in range(18))),
    "tiny_lidar_depth": lambda: replace(get_config("flashocc-tiny"), grid=SMALL, depth_loss_weight=0.05,
                                        class_balance=True),
    "bevdet_tiny": lambda: replace(get_config("bevdetocc-tiny"), grid=SMALL, class_balance=True),
    "tiny_m2": lambda: replace(get_config("flashocc-tiny-m2"), grid=SMALL, input_size=(64, 176)),
}

REFERENCE = {
    "tiny": {
        "logits_sum": -59666.575455106795, "logits_abs_sum": 398462.46065910906,
        "logits_at": [-0.11636030673980713, -0.3037024438381195, 0.7271012663841248, 0.8203433156013489,
                      -1.0948314666748047, 0.27847784757614136, -0.3316965401172638, 0.02719912678003311,
                      0.12191396951675415, 0.2105526328086853, 0.19715310633182526, -0.09991279989480972,
                      0.041398968547582626, 0.4602445960044861, 0.08964351564645767, 0.19867724180221558,
                      -0.4381096363067627, -0.04039697349071503, 0.7013462781906128, -0.26364850997924805,
                      0.5580071210861206, 0.2955121099948883, 0.3521620035171509, -0.2354501187801361],
        "losses": {'loss_occ': 2.978966236114502},
    },
    "tiny_aids": {
        "logits_sum": -59666.575455106795, "logits_abs_sum": 398462.46065910906,
        "logits_at": [-0.11636030673980713, -0.3037024438381195, 0.7271012663841248, 0.8203433156013489,
                      -1.0948314666748047, 0.27847784757614136, -0.3316965401172638, 0.02719912678003311,
                      0.12191396951675415, 0.2105526328086853, 0.19715310633182526, -0.09991279989480972,
                      0.041398968547582626, 0.4602445960044861, 0.08964351564645767, 0.19867724180221558,
                      -0.4381096363067627, -0.04039697349071503, 0.7013462781906128, -0.26364850997924805,
                      0.5580071210861206, 0.2955121099948883, 0.3521620035171509, -0.2354501187801361],
        "losses": {'loss_occ': 2.9797770977020264,
                   'loss_affinity': 5.534297943115234,
                   'loss_depth': 4.581846237182617,
                   'loss_semantic': 2.9402239322662354},
    },
    "tiny_lidar_depth": {
        "logits_sum": -59666.575455106795, "logits_abs_sum": 398462.46065910906,
        "logits_at": [-0.11636030673980713, -0.3037024438381195, 0.7271012663841248, 0.8203433156013489,
                      -1.0948314666748047, 0.27847784757614136, -0.3316965401172638, 0.02719912678003311,
                      0.12191396951675415, 0.2105526328086853, 0.19715310633182526, -0.09991279989480972,
                      0.041398968547582626, 0.4602445960044861, 0.08964351564645767, 0.19867724180221558,
                      -0.4381096363067627, -0.04039697349071503, 0.7013462781906128, -0.26364850997924805,
                      0.5580071210861206, 0.2955121099948883, 0.3521620035171509, -0.2354501187801361],
        "losses": {'loss_occ': 2.9800949096679688, 'loss_depth': 0.24400417506694794},
    },
    "bevdet_tiny": {
        "logits_sum": -66747.26687512547, "logits_abs_sum": 392171.23825416714,
        "logits_at": [-0.36727792024612427, -0.03556780517101288, -0.019801218062639236, -0.2809406518936157,
                      -1.1534690856933594, -0.03659030795097351, 0.16528908908367157, 0.1879032850265503,
                      -0.5674668550491333, -0.27415600419044495, 0.4845293462276459, 0.34506961703300476,
                      -0.04807799682021141, 0.9035699367523193, 0.05598728358745575, -0.5308462381362915,
                      0.34044283628463745, -0.18707162141799927, -0.36727631092071533, -0.03556752949953079,
                      -0.01980115845799446, -0.2809401750564575, -1.1534696817398071, -0.03659290075302124],
        "losses": {'loss_occ': 2.968848705291748},
    },
    "tiny_m2": {
        "logits_sum": 2804.9575201133266, "logits_abs_sum": 386265.4906583531,
        "logits_at": [0.13292710483074188, 0.31773239374160767, 0.8127378821372986, 0.6749764084815979,
                      -0.09602858126163483, 0.0619552880525589, -0.0012367535382509232, 0.2591841518878937,
                      -0.3707587718963623, 0.30321934819221497, -0.614850640296936, 0.2161213606595993,
                      0.283260703086853, -0.9948254823684692, -0.08448803424835205, 0.12541303038597107,
                      0.2880741059780121, 0.23952427506446838, -0.33564290404319763, -0.13211023807525635,
                      0.4563957750797272, 0.25199854373931885, 0.31200721859931946, -0.13968712091445923],
        "losses": {'loss_occ': 3.0555760860443115, 'loss_depth': 0.24691760540008545},
    },
}


def _targets(shape, seed):
    g = torch.Generator().manual_seed(seed)
    sem = torch.randint(0, 18, shape, generator=g)
    sem = torch.where(torch.rand(shape, generator=g) < 0.7, torch.full_like(sem, 17), sem).to(torch.uint8)
    return {"voxel_semantics": sem[None], "mask_camera": (torch.rand(1, *shape, generator=g) > 0.3).to(torch.uint8)}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("case", list(CONFIGS))
def test_logits_and_losses_match_the_reference(case):
    cfg = CONFIGS[case]()
    torch.manual_seed(0)
    model = build_model(cfg)
    if cfg.temporal:
        batch = temporal_batch(example_sequence(cfg, num_frames=3, seed=1), 2)
    else:
        torch.manual_seed(1)
        batch = example_batch(cfg)
    with torch.no_grad():
        logits = model.eval()(batch)
    h, w = cfg.input_size
    g = torch.Generator().manual_seed(2)
    depth = torch.rand(1, 6, h, w, generator=g) * 40 + 2
    gt_depth = torch.where(torch.rand(depth.shape, generator=g) > 0.8, depth, torch.zeros_like(depth))
    torch.manual_seed(4)  # the dropout of the stereo depth net's ASPP draws in train mode
    losses = model.train()({**batch, **_targets(SMALL.shape, 3), "gt_depth": gt_depth})

    ref = REFERENCE[case]
    flat = logits.reshape(-1)
    at = flat[torch.linspace(0, flat.numel() - 1, len(ref["logits_at"])).long()]
    torch.testing.assert_close(at, torch.tensor(ref["logits_at"]), rtol=1e-5, atol=1e-6)
    assert logits.double().sum().item() == pytest.approx(ref["logits_sum"], rel=1e-6, abs=1e-2)
    assert logits.double().abs().sum().item() == pytest.approx(ref["logits_abs_sum"], rel=1e-6)
    assert list(losses) == list(ref["losses"])  # the same terms in the same order (their sum is reproducible)
    for name, value in ref["losses"].items():
        assert losses[name].item() == pytest.approx(value, rel=1e-5), name
