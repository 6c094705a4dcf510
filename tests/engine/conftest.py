import pytest



@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A tiny synthetic set (2 scenes x 3 frames, small images) in the nuScenes/Occ3D layout."""
    from flashocc.data.synth import SynthConfig, generate_synthetic_set

    root = tmp_path_factory.mktemp("synth")
    return generate_synthetic_set(root, SynthConfig(scenes=2, frames_per_scene=3, seed=0, image_size=(176, 99),
                                                    lidar_azimuth_steps=180))
