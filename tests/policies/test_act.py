"""ACT: shapes for every input combination, loss terms, acting (queue, temporal ensembling), checkpoints."""

import dataclasses
import math
import urllib.error

import pytest
import torch
import torchvision

from helpers import fit, graphs_compiled
from policylab.datasets import LeRobotDataset
from policylab.policies import ObservationError
from policylab.policies.act import ACTConfig, ACTPolicy, ACTTemporalEnsembler
from policylab.policies.backbones import BackboneWeightsError

STATE, ENV_STATE, IMAGE = "observation.state", "observation.environment_state", "observation.image"
SHAPES = {STATE: [2], ENV_STATE: [16], IMAGE: [3, 96, 96]}
INPUTS = {
    "image+state": [IMAGE, STATE],
    "keypoints+state": [ENV_STATE, STATE],
    "all": [IMAGE, ENV_STATE, STATE],
}


def tiny_config(keys=(ENV_STATE, STATE), **overrides) -> ACTConfig:
    fields = dict(
        input_shapes={k: SHAPES[k] for k in keys},
        output_shapes={"action": [2]},
        dim_model=32,
        n_heads=2,
        dim_feedforward=64,
        n_encoder_layers=1,
        n_vae_encoder_layers=1,
        latent_dim=4,
        chunk_size=6,
        n_action_steps=6,
        pretrained_backbone=False,
    )
    return ACTConfig(**{**fields, **overrides})


def stats_for(config: ACTConfig) -> dict:
    stats = {}
    for key, shape in {**config.input_shapes, **config.output_shapes}.items():
        size = (shape[0], 1, 1) if len(shape) == 3 else tuple(shape)
        stats[key] = {"mean": torch.full(size, 0.5), "std": torch.full(size, 2.0)}
    return stats


def random_batch(config: ACTConfig, batch_size=3) -> dict:
    batch = {key: torch.rand(batch_size, *shape) for key, shape in config.input_shapes.items()}
    batch["action"] = torch.randn(batch_size, config.chunk_size, 2)
    batch["action_is_pad"] = torch.zeros(batch_size, config.chunk_size, dtype=torch.bool)
    return batch


@pytest.mark.parametrize("inputs", INPUTS)
def test_every_input_combination_trains_and_acts(inputs):
    config = tiny_config(INPUTS[inputs])
    policy = ACTPolicy(config, dataset_stats=stats_for(config))
    assert hasattr(policy.model, "backbone") == (IMAGE in config.input_shapes)  # no camera, no backbone
    batch = random_batch(config)
    out = policy.forward(batch)
    assert set(out) == {"loss", "l1_loss", "kld_loss"} and out["loss"].requires_grad
    out["loss"].backward()
    obs = {key: batch[key] for key in config.input_shapes}
    assert policy.predict_action_chunk(obs).shape == (3, 6, 2)
    assert policy.select_action(obs).shape == (3, 2)


@pytest.mark.parametrize("inputs", INPUTS)
def test_observation_history_trains_on_windows_and_acts_on_single_steps(inputs):
    config = tiny_config(INPUTS[inputs], n_obs_steps=3)
    assert config.delta_timestamps(fps=10)[STATE] == pytest.approx([-0.2, -0.1, 0.0])
    policy = ACTPolicy(config, dataset_stats=stats_for(config))
    batch = random_batch(config)
    for key, shape in config.input_shapes.items():
        batch[key] = torch.rand(3, 3, *shape)
        batch[key + "_is_pad"] = torch.zeros(3, 3, dtype=torch.bool)
    policy.forward(batch)["loss"].backward()
    assert policy.predict_action_chunk({key: batch[key] for key in config.input_shapes}).shape == (3, 6, 2)
    assert policy.select_action({key: batch[key][:, -1] for key in config.input_shapes}).shape == (3, 2)


def test_observation_history_changes_the_actions_and_starts_from_the_first_step():
    config = tiny_config(n_obs_steps=2, n_action_steps=1)
    policy = ACTPolicy(config, dataset_stats=stats_for(config))
    first, second = ({key: torch.rand(1, *shape) for key, shape in config.input_shapes.items()} for _ in "12")
    window = {key: torch.stack([first[key], second[key]], dim=1) for key in first}
    repeated = {key: torch.stack([second[key], second[key]], dim=1) for key in first}
    assert not torch.allclose(policy.predict_action_chunk(window), policy.predict_action_chunk(repeated))
    torch.testing.assert_close(policy.select_action(second), policy.predict_action_chunk(repeated)[:, 0])
    policy.reset()
    policy.select_action(first)
    torch.testing.assert_close(policy.select_action(second), policy.predict_action_chunk(window)[:, 0])


def test_observation_history_needs_observation_windows_in_the_batch():
    config = tiny_config(n_obs_steps=2)
    policy = ACTPolicy(config, dataset_stats=stats_for(config))
    with pytest.raises(ObservationError, match="windows of 2 frames"):
        policy.forward(random_batch(config))


def test_env_observations_uint8_hwc_give_the_same_actions_as_float_chw():
    config = tiny_config(INPUTS["image+state"])
    policy = ACTPolicy(config, dataset_stats=stats_for(config))
    image = torch.randint(0, 256, (2, 96, 96, 3), dtype=torch.uint8)
    state = torch.rand(2, 2)
    from_env = policy.predict_action_chunk({IMAGE: image, STATE: state})
    from_dataset = policy.predict_action_chunk(
        {IMAGE: image.permute(0, 3, 1, 2) / 255, STATE: state.unsqueeze(1)}
    )
    torch.testing.assert_close(from_env, from_dataset)


@pytest.mark.parametrize("use_vae", [False, True])
def test_loss_ignores_padded_actions(use_vae):
    config = tiny_config(use_vae=use_vae, dropout=0.0)
    policy = ACTPolicy(config, dataset_stats=stats_for(config))  # training mode: the CVAE encoder runs

    def loss(batch):
        torch.manual_seed(0)  # the same latent sample each time
        return policy.forward(batch)["loss"]

    batch = random_batch(config)
    batch["action_is_pad"][:, 4:] = True
    before = loss(batch)
    batch["action"][:, 4:] += 1000.0  # padded targets are clamped copies; their values must not matter
    torch.testing.assert_close(loss(batch), before, rtol=0, atol=1e-6)  # L1, and the CVAE's key padding mask
    batch["action"][:, 3] += 1000.0  # far beyond any prediction: every term of a real action grows
    assert loss(batch) > before + 1.0


def test_kl_term_is_zero_without_vae_and_positive_with_it():
    for use_vae in (False, True):
        config = tiny_config(use_vae=use_vae)
        policy = ACTPolicy(config, dataset_stats=stats_for(config))
        out = policy.forward(random_batch(config))
        assert (out["kld_loss"] > 0) == use_vae
        torch.testing.assert_close(out["loss"], out["l1_loss"] + config.kl_weight * out["kld_loss"])
    assert not hasattr(ACTPolicy(tiny_config(use_vae=False), stats_for(tiny_config())).model, "vae_encoder")


def test_temporal_ensemble_matches_hand_computed_weighted_means():
    coeff, k = 0.5, 3
    ensembler = ACTTemporalEnsembler(coeff, k)
    chunks = [
        torch.tensor([[[10.0], [20.0], [30.0]]]),
        torch.tensor([[[21.0], [31.0], [41.0]]]),
        torch.tensor([[[32.0], [42.0], [52.0]]]),
    ]
    actions = [ensembler.update(chunk).item() for chunk in chunks]
    w = [math.exp(-coeff * i) for i in range(k)]  # oldest prediction first
    assert actions[0] == pytest.approx(10.0)
    assert actions[1] == pytest.approx((20.0 * w[0] + 21.0 * w[1]) / (w[0] + w[1]))
    assert actions[2] == pytest.approx((30.0 * w[0] + 31.0 * w[1] + 32.0 * w[2]) / sum(w))
    ensembler.reset()
    assert ensembler.update(chunks[2]).item() == pytest.approx(32.0)


def test_queue_runs_the_model_once_per_n_action_steps_and_reset_clears_it():
    config = tiny_config(chunk_size=6, n_action_steps=4)
    policy = ACTPolicy(config, dataset_stats=stats_for(config))
    calls = []
    original = policy.predict_action_chunk
    policy.predict_action_chunk = lambda obs: calls.append(1) or original(obs)
    obs = {key: torch.rand(1, *shape) for key, shape in config.input_shapes.items()}
    chunk = original(obs)
    actions = [policy.select_action(obs) for _ in range(9)]
    assert len(calls) == 3  # steps 0, 4 and 8
    torch.testing.assert_close(torch.stack(actions[:4], 1), chunk[:, :4])
    policy.reset()
    policy.select_action(obs)
    assert len(calls) == 4


def test_temporal_ensembling_runs_the_model_every_step():
    config = tiny_config(n_action_steps=1, temporal_ensemble_coeff=0.01)
    policy = ACTPolicy(config, dataset_stats=stats_for(config))
    obs = {key: torch.rand(2, *shape) for key, shape in config.input_shapes.items()}
    first = policy.predict_action_chunk(obs)[:, 0]
    calls = []
    policy.model.register_forward_hook(lambda *args: calls.append(1))
    torch.testing.assert_close(policy.select_action(obs), first)
    for _ in range(4):
        policy.select_action(obs)
    assert len(calls) == 5
    with pytest.raises(ValueError, match="n_action_steps=1"):
        tiny_config(n_action_steps=2, temporal_ensemble_coeff=0.01)


def test_save_and_reload_give_identical_actions(tmp_path):
    config = tiny_config(INPUTS["all"])
    policy = ACTPolicy(config, dataset_stats=stats_for(config))
    obs = {key: torch.rand(2, *shape) for key, shape in config.input_shapes.items()}
    policy.save_pretrained(tmp_path / "act")
    loaded = ACTPolicy.from_pretrained(tmp_path / "act")
    assert loaded.config == config
    assert torch.equal(loaded.predict_action_chunk(obs), policy.predict_action_chunk(obs))


def test_compiled_for_inference_acts_as_before():
    config = tiny_config()
    policy = ACTPolicy(config, dataset_stats=stats_for(config)).eval()
    obs = {key: torch.rand(1, *shape) for key, shape in config.input_shapes.items()}
    plain = policy.predict_action_chunk(obs)
    policy.compile_for_inference()
    compiled = []
    assert graphs_compiled(lambda: compiled.append(policy.predict_action_chunk(obs))) > 0  # compiled code ran
    assert torch.allclose(compiled[0], plain, atol=1e-5)
    assert graphs_compiled(lambda: policy.predict_action_chunk(obs)) == 0  # and is reused


def test_a_checkpoint_of_a_pretrained_backbone_loads_offline(tmp_path, monkeypatch):
    config = tiny_config(INPUTS["image+state"])
    policy = ACTPolicy(config, dataset_stats=stats_for(config))
    policy.config = dataclasses.replace(config, pretrained_backbone=True)  # as trained from ImageNet weights
    policy.save_pretrained(tmp_path / "act")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(type(torchvision.models.ResNet18_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    loaded = ACTPolicy.from_pretrained(
        tmp_path / "act"
    )  # the checkpoint holds every weight: nothing to fetch
    assert loaded.config.pretrained_backbone
    obs = {key: torch.rand(1, *shape) for key, shape in config.input_shapes.items()}
    assert torch.equal(loaded.predict_action_chunk(obs), policy.predict_action_chunk(obs))


def offline(*args, **kwargs):
    raise urllib.error.URLError("no network")


def test_tutorial_field_names_construct():
    config = ACTConfig(
        input_shapes={IMAGE: [3, 96, 96], STATE: [2]},
        output_shapes={"action": [2]},
        input_normalization_modes={IMAGE: "mean_std", STATE: "mean_std"},
        output_normalization_modes={"action": "mean_std"},
        chunk_size=100, n_action_steps=100, dim_model=512, n_heads=8, n_layers=1, latent_dim=32,
        use_vae=True, kl_weight=10.0, vision_backbone="resnet18", pretrained_backbone=False,
    )  # fmt: skip
    assert config.n_decoder_layers == 1 and ACTConfig(n_layers=3).n_decoder_layers == 3
    assert ACTConfig(n_decoder_layers=2).n_layers == 2


def test_missing_key_and_wrong_shape_name_the_key():
    config = tiny_config()
    policy = ACTPolicy(config, dataset_stats=stats_for(config))
    with pytest.raises(ObservationError, match=f"missing '{ENV_STATE}'.*16"):
        policy.select_action({STATE: torch.zeros(1, 2)})
    with pytest.raises(ObservationError, match=f"'{STATE}' has shape \\(1, 3\\), expected \\(B, 2\\)"):
        policy.select_action({STATE: torch.zeros(1, 3), ENV_STATE: torch.zeros(1, 16)})


def test_without_dataset_stats_the_first_forward_says_to_pass_them():
    policy = ACTPolicy(tiny_config())
    with pytest.raises(ValueError, match="dataset_stats"):
        policy.forward(random_batch(policy.config))


def test_offline_pretrained_backbone_fails_with_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(type(torchvision.models.ResNet18_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(
        BackboneWeightsError, match=f"{tmp_path}/hub/checkpoints/resnet18-.*pretrained_backbone=false"
    ):
        ACTPolicy(tiny_config(INPUTS["image+state"], pretrained_backbone=True))


def test_a_dataset_without_the_action_chunk_says_which_delta_timestamps_to_pass(recorded_pusht):
    ds = LeRobotDataset(root=recorded_pusht)
    config = tiny_config().with_dataset_features(ds.features)
    policy = ACTPolicy(config, dataset_stats=ds.meta.stats)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    with pytest.raises(ObservationError, match="delta_timestamps=config.delta_timestamps"):
        policy.forward(batch)


def test_tiny_act_overfits_recorded_windows(recorded_pusht):
    torch.manual_seed(0)
    config = tiny_config(
        dim_model=64, dim_feedforward=128, use_vae=False, dropout=0.0, chunk_size=10, n_action_steps=10
    )
    config = config.with_dataset_features(LeRobotDataset(root=recorded_pusht).features)
    ds = LeRobotDataset(root=recorded_pusht, delta_timestamps=config.delta_timestamps(10))
    batch = ds.gather(torch.arange(0, len(ds), len(ds) // 16).numpy())  # 16 windows across the episodes
    losses = fit(ACTPolicy(config, dataset_stats=ds.meta.stats), batch, steps=300, lr=1e-3, record="l1_loss")
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
