"""Diffusion Policy: UNet shapes, schedulers, sampling from one set of weights, queues, crops, checkpoints."""

import pytest
import torch

from helpers import fit, graphs_compiled
from policylab.datasets import LeRobotDataset
from policylab.policies import ObservationError, PreTrainedPolicy
from policylab.policies.diffusion import DiffusionConfig, DiffusionPolicy
from policylab.policies.diffusion.conditional_unet1d import ConditionalUnet1d
from policylab.policies.diffusion.modeling_diffusion import make_noise_scheduler

STATE, ENV_STATE, IMAGE = "observation.state", "observation.environment_state", "observation.image"
SHAPES = {STATE: [2], ENV_STATE: [16], IMAGE: [3, 96, 96]}


def tiny_config(keys=(ENV_STATE, STATE), **overrides) -> DiffusionConfig:
    fields = dict(
        input_shapes={k: SHAPES[k] for k in keys},
        output_shapes={"action": [2]},
        down_dims=[16, 32],
        diffusion_step_embed_dim=16,
        n_groups=4,
        spatial_softmax_num_keypoints=4,
        num_train_timesteps=20,
    )
    return DiffusionConfig(**{**fields, **overrides})


def stats_for(config) -> dict:
    stats = {}
    for key, shape in {**config.input_shapes, **config.output_shapes}.items():
        size = (shape[0], 1, 1) if len(shape) == 3 else tuple(shape)
        stats[key] = {"mean": torch.full(size, 0.5), "std": torch.full(size, 0.25), "min": torch.zeros(size),
                      "max": torch.ones(size)}  # fmt: skip
    return stats


def observation(config, batch_size=2, steps=None) -> dict:
    time = () if steps is None else (steps,)
    return {key: torch.rand(batch_size, *time, *shape) for key, shape in config.input_shapes.items()}


@pytest.mark.parametrize(
    ("horizon", "down_dims", "n_res_blocks"),
    [(16, [8, 16, 32], 2), (16, [8, 16, 32], 1), (8, [8, 16], 3), (12, [8, 16], 2), (5, [8], 1)],
)
def test_unet_keeps_the_sequence_shape(horizon, down_dims, n_res_blocks):
    unet = ConditionalUnet1d(
        action_dim=3,
        global_cond_dim=7,
        down_dims=down_dims,
        n_groups=4,
        diffusion_step_embed_dim=8,
        n_res_blocks=n_res_blocks,
    )
    out = unet(torch.randn(4, horizon, 3), torch.randint(0, 100, (4,)), torch.randn(4, 7))
    assert out.shape == (4, horizon, 3)


def test_unet_has_n_res_blocks_per_level_and_n_mid_in_the_middle_with_the_paper_layout_at_two():
    def block_names(n_res_blocks, n_mid_res_blocks=2):
        unet = ConditionalUnet1d(2, 7, [8, 16, 32], n_groups=4, diffusion_step_embed_dim=8,
                                 n_res_blocks=n_res_blocks, n_mid_res_blocks=n_mid_res_blocks)  # fmt: skip
        return {
            name.rsplit(".conv1.0.weight")[0]
            for name, _ in unet.named_parameters()
            if "conv1.0.weight" in name
        }

    # down: 3 levels, middle, up: 2 levels; the key names are those of LeRobot's checkpoints at 2
    assert len(block_names(1, 1)) == 3 + 1 + 2
    assert len(block_names(2, 0)) == 6 + 0 + 4
    assert block_names(2) == {
        *(f"down_modules.{level}.{i}" for level in range(3) for i in range(2)),
        "mid_modules.0",
        "mid_modules.1",
        *(f"up_modules.{level}.{i}" for level in range(2) for i in range(2)),
    }


def test_middle_blocks_default_to_n_res_blocks_and_may_be_none():
    assert tiny_config(n_res_blocks=1).n_mid_res_blocks == 1
    config = tiny_config(n_mid_res_blocks=0)
    policy = DiffusionPolicy(config, dataset_stats=stats_for(config))
    assert len(policy.unet.mid_modules) == 0 and len(policy.unet.down_modules[0]) == 3  # 2 blocks, downsample
    assert policy.predict_action_chunk(observation(config)).shape == (2, 16, 2)
    with pytest.raises(ValueError, match="n_mid_res_blocks=-1 must be 0 or more"):
        tiny_config(n_mid_res_blocks=-1)


def test_horizon_must_survive_the_unet_downsampling():
    with pytest.raises(ValueError, match="multiple of 4"):
        tiny_config(down_dims=[8, 16, 32], horizon=10)


@pytest.mark.parametrize("kind", ["DDPM", "DDIM"])
def test_denoising_with_the_true_noise_recovers_the_sample(kind):
    config = tiny_config(noise_scheduler_type=kind, num_train_timesteps=100, clip_sample=False)
    scheduler = make_noise_scheduler(config)
    clean = torch.rand(3, 16, 2) * 2 - 1
    noise = torch.randn_like(clean)
    t = torch.tensor([60, 60, 60])
    noisy = scheduler.add_noise(clean, noise, t)
    # with epsilon prediction, the x0 estimate from the true noise is exact
    alpha_bar = scheduler.alphas_cumprod[60]
    x0 = (noisy - (1 - alpha_bar).sqrt() * noise) / alpha_bar.sqrt()
    torch.testing.assert_close(x0, clean, rtol=1e-4, atol=1e-4)
    scheduler.set_timesteps(10 if kind == "DDIM" else 100)
    sample = torch.randn_like(clean)
    for step in scheduler.timesteps:  # an oracle network that always knows the noise
        t = int(step)
        eps = (sample - scheduler.alphas_cumprod[t].sqrt() * clean) / (1 - scheduler.alphas_cumprod[t]).sqrt()
        sample = scheduler.step(eps, step, sample, generator=torch.Generator().manual_seed(0)).prev_sample
    torch.testing.assert_close(sample, clean, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("keys", [(ENV_STATE, STATE), (IMAGE, STATE), (IMAGE, ENV_STATE, STATE)])
def test_every_input_combination_trains_and_samples(keys):
    config = tiny_config(keys)
    policy = DiffusionPolicy(config, dataset_stats=stats_for(config))
    assert (len(policy.observation_encoder.rgb_encoders) == 1) == (IMAGE in keys)
    batch = observation(config, 3, steps=2)
    batch["action"] = torch.rand(3, 16, 2)
    batch["action_is_pad"] = torch.zeros(3, 16, dtype=torch.bool)
    for key in config.input_shapes:
        batch[key + "_is_pad"] = torch.zeros(3, 2, dtype=torch.bool)
    loss = policy.forward(batch)["loss"]
    assert loss.requires_grad and loss.ndim == 0
    loss.backward()
    assert policy.predict_action_chunk(observation(config)).shape == (2, 16, 2)


def test_ddpm_100_and_ddim_10_sample_from_the_same_weights(tmp_path):
    config = tiny_config(num_train_timesteps=100)
    policy = DiffusionPolicy(config, dataset_stats=stats_for(config))
    policy.save_pretrained(tmp_path / "p")
    obs = observation(config)
    calls = []
    for kind, steps in [("DDPM", 100), ("DDIM", 10)]:
        loaded = PreTrainedPolicy.from_pretrained(
            tmp_path / "p", noise_scheduler_type=kind, num_inference_steps=steps
        )
        loaded.unet.register_forward_hook(lambda *args: calls.append(1))
        actions = loaded.predict_action_chunk(obs, generator=torch.Generator().manual_seed(0))
        assert actions.shape == (2, 16, 2) and torch.isfinite(actions).all()
        assert type(loaded.noise_scheduler).__name__ == f"{kind}Scheduler"
    assert len(calls) == 110


@pytest.mark.parametrize(
    ("spacing", "steps"), [("linspace", [99, 88, 0]), ("leading", [90, 80, 0]), ("trailing", [99, 89, 9])]
)
def test_timestep_spacing_decides_which_training_steps_ddim_visits(spacing, steps):
    config = tiny_config(num_train_timesteps=100, noise_scheduler_type="DDIM", num_inference_steps=10,
                         timestep_spacing=spacing)  # fmt: skip
    scheduler = make_noise_scheduler(config)
    scheduler.set_timesteps(config.inference_steps)
    visited = scheduler.timesteps.tolist()
    assert len(visited) == 10 and [visited[0], visited[1], visited[-1]] == steps


def test_save_and_reload_give_identical_samples_under_the_same_generator_seed(tmp_path):
    config = tiny_config((IMAGE, STATE))
    policy = DiffusionPolicy(config, dataset_stats=stats_for(config))
    policy.save_pretrained(tmp_path / "p")
    loaded = DiffusionPolicy.from_pretrained(tmp_path / "p")
    obs = observation(config)
    first = policy.predict_action_chunk(obs, generator=torch.Generator().manual_seed(3))
    again = loaded.predict_action_chunk(obs, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    other = loaded.predict_action_chunk(obs, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(first, other)


def test_compiled_for_inference_samples_as_before():
    config = tiny_config(num_inference_steps=4, noise_scheduler_type="DDIM")
    policy = DiffusionPolicy(config, dataset_stats=stats_for(config)).eval()
    obs = observation(config, batch_size=1)
    plain = policy.predict_action_chunk(obs, generator=torch.Generator().manual_seed(0))
    policy.compile_for_inference()
    compiled = []

    def sample():
        compiled.append(policy.predict_action_chunk(obs, generator=torch.Generator().manual_seed(0)))

    assert graphs_compiled(sample) > 0  # the compiled UNet ran
    assert torch.allclose(compiled[0], plain, atol=1e-5)


def test_queue_samples_every_n_action_steps_and_executes_from_the_current_step():
    config = tiny_config(n_obs_steps=2, horizon=16, n_action_steps=8)
    policy = DiffusionPolicy(config, dataset_stats=stats_for(config))
    obs = observation(config, 1)
    horizons = []
    original = policy._chunk_from_history

    def recorded(generator=None):
        assert all(len(queue) == 2 for queue in policy._history.steps.values())  # the To history
        horizons.append(original(torch.Generator().manual_seed(len(horizons))))
        return horizons[-1]

    policy._chunk_from_history = recorded
    actions = [policy.select_action(obs) for _ in range(10)]
    assert len(horizons) == 2  # steps 0 and 8
    torch.testing.assert_close(torch.stack(actions[:8], dim=1), horizons[0][:, 1:9])
    policy.reset()
    policy.select_action(obs)
    assert len(horizons) == 3


@pytest.mark.parametrize("n_action_steps", [1, 3])
def test_cached_frame_features_give_the_actions_of_encoding_every_window(n_action_steps):
    config = tiny_config((IMAGE, STATE), n_obs_steps=3, horizon=8, n_action_steps=n_action_steps,
                         crop_shape=[84, 84], vision_backbone="small_cnn", pretrained_backbone_weights=None)  # fmt: skip
    policy = DiffusionPolicy(config, dataset_stats=stats_for(config)).eval()
    frames = [observation(config, 2) for _ in range(7)]
    cached = [policy.select_action(obs, torch.Generator().manual_seed(t)) for t, obs in enumerate(frames)]
    assert policy.frame_features.reused > 0 and policy.frame_features.encoded == len(
        frames
    )  # each frame once
    uncached = []
    for t in range(0, len(frames), n_action_steps):  # the same windows, every frame encoded in each
        window = {
            k: torch.stack([frames[max(i, 0)][k] for i in range(t - 2, t + 1)], dim=1)
            for k in config.input_shapes
        }
        horizon = policy.predict_action_chunk(window, torch.Generator().manual_seed(t))
        uncached += list(horizon[:, 2 : 2 + n_action_steps].unbind(1))
    assert torch.equal(torch.stack(cached), torch.stack(uncached[: len(cached)]))


def test_a_batch_of_trunk_feature_maps_trains_as_its_frames_do():
    config = tiny_config((IMAGE, STATE), crop_shape=[84, 84], vision_backbone="small_cnn",
                         pretrained_backbone_weights=None)  # fmt: skip
    policy = DiffusionPolicy(config, dataset_stats=stats_for(config)).eval()  # centre crops, as a cache holds
    batch = observation(config, 3, steps=2)
    batch |= {"action": torch.rand(3, 16, 2), "action_is_pad": torch.zeros(3, 16, dtype=torch.bool)}
    batch |= {key + "_is_pad": torch.zeros(3, 2, dtype=torch.bool) for key in config.input_shapes}
    with torch.no_grad():
        frames = policy.normalize_inputs({IMAGE: batch[IMAGE].flatten(0, 1)})[IMAGE]
        maps = policy.camera_features(IMAGE, frames).unflatten(0, (3, 2))  # (B, To, C', h, w)
    cached = {k: v for k, v in batch.items() if k != IMAGE} | {IMAGE + ".feature_map": maps}
    losses = []
    for inputs in (batch, cached):
        torch.manual_seed(0)
        losses.append(policy.forward(inputs)["loss"])
    torch.testing.assert_close(losses[0], losses[1])
    with pytest.raises(
        ObservationError, match=r"feature_map'\] has shape \(3, 2, 15488\), expected \(B, 2, C, h, w\)"
    ):
        policy.forward(cached | {IMAGE + ".feature_map": maps.flatten(2)})


def test_first_observation_fills_the_history_after_reset():
    config = tiny_config()
    policy = DiffusionPolicy(config, dataset_stats=stats_for(config))
    first, second = observation(config, 1), observation(config, 1)
    policy.select_action(first)
    assert all(torch.equal(q[0], q[1]) for q in policy._history.steps.values())
    policy.select_action(second)
    assert all(torch.equal(q[1], second[k].float()) for k, q in policy._history.steps.items())


def test_random_crop_in_training_centre_crop_at_inference():
    config = tiny_config((IMAGE, STATE), crop_shape=[84, 84])
    encoder = DiffusionPolicy(config, dataset_stats=stats_for(config)).observation_encoder.rgb_encoders[0]
    seen = []
    encoder.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    images = torch.rand(1, 3, 96, 96)
    encoder.eval()
    encoder(images)
    torch.testing.assert_close(seen[-1], images[:, :, 6:90, 6:90])
    encoder.train()
    torch.manual_seed(0)
    crops = set()
    for _ in range(10):
        encoder(images)
        assert seen[-1].shape == (1, 3, 84, 84)
        crops.add(seen[-1].sum().item())
    assert len(crops) > 1


def test_observation_errors_name_the_key():
    config = tiny_config()
    policy = DiffusionPolicy(config, dataset_stats=stats_for(config))
    with pytest.raises(ObservationError, match=f"missing '{ENV_STATE}'"):
        policy.select_action({STATE: torch.zeros(1, 2)})
    with pytest.raises(ObservationError, match="3 observation steps, expected 2"):
        policy.predict_action_chunk(observation(config, 1, steps=3))


def test_a_dataset_without_observation_windows_says_which_delta_timestamps_to_pass(recorded_pusht):
    features = LeRobotDataset(root=recorded_pusht).features
    config = tiny_config().with_dataset_features(features)
    ds = LeRobotDataset(
        root=recorded_pusht, delta_timestamps={"action": config.delta_timestamps(10)["action"]}
    )
    policy = DiffusionPolicy(config, dataset_stats=ds.meta.stats)
    with pytest.raises(ObservationError, match="delta_timestamps=config.delta_timestamps"):
        policy.forward(ds.gather(torch.arange(4).numpy()))


def test_tiny_diffusion_overfits_recorded_windows(recorded_pusht):
    torch.manual_seed(0)
    features = LeRobotDataset(root=recorded_pusht).features
    config = tiny_config(down_dims=[32, 64], diffusion_step_embed_dim=32).with_dataset_features(features)
    ds = LeRobotDataset(root=recorded_pusht, delta_timestamps=config.delta_timestamps(10))
    batch = ds.gather(torch.arange(0, len(ds), len(ds) // 16).numpy())
    losses = fit(DiffusionPolicy(config, dataset_stats=ds.meta.stats), batch, steps=300, lr=3e-3)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < first / 5, (first, last)


def test_a_window_given_after_reset_becomes_the_history():
    config = tiny_config(n_obs_steps=2)
    policy = DiffusionPolicy(config, dataset_stats=stats_for(config))
    window = observation(config, 1, steps=2)
    policy.select_action(window)
    for key, queue in policy._history.steps.items():
        assert torch.equal(torch.stack(list(queue), dim=1), window[key])


def test_masked_loss_is_the_mean_over_real_actions():
    config = tiny_config(do_mask_loss_for_padding=True)
    policy = DiffusionPolicy(config, dataset_stats=stats_for(config))
    batch = observation(config, 2, steps=2)
    batch["action"] = torch.rand(2, 16, 2)
    batch["action_is_pad"] = torch.zeros(2, 16, dtype=torch.bool)
    for key in config.input_shapes:
        batch[key + "_is_pad"] = torch.zeros(2, 2, dtype=torch.bool)

    def loss(mask: bool):
        policy.config.do_mask_loss_for_padding = mask
        torch.manual_seed(0)
        return policy.forward(batch)["loss"]

    torch.testing.assert_close(loss(True), loss(False))  # nothing padded: the plain mean
    batch["action_is_pad"][:, 8:] = True
    assert not torch.allclose(loss(True), loss(False))
    assert config.drop_n_last_frames == 16 - 8 - 2 + 1  # LeRobot's default


def test_offline_pretrained_weights_name_the_diffusion_flag(tmp_path, monkeypatch):
    import urllib.error

    import torchvision

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(type(torchvision.models.ResNet18_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    config = tiny_config(
        (IMAGE, STATE), pretrained_backbone_weights="ResNet18_Weights.IMAGENET1K_V1", use_group_norm=False
    )
    with pytest.raises(Exception, match="pretrained_backbone_weights=null"):
        DiffusionPolicy(config)
