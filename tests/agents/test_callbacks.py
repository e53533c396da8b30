"""SB3 callbacks: perception training during RL (weights pushed into the wrapper) and rollout videos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

import aime_rl  # noqa: F401  (registers the built-in envs)
from aime_rl.agents.builders import make_agent
from aime_rl.agents.callbacks import (
    PerceptionTrainingCallback,
    RolloutVideoCallback,
    find_context_envs,
    find_replay_store,
)
from aime_rl.perception import CausalPerceiverIO
from aime_rl.replay import ReplayStore, VecRecordFrames
from aime_rl.training.trainer import TrainerConfig
from aime_rl.utils.tensorboard import read_event_images
from aime_rl.world_model import VRNN, WorldModelRolloutCallback
from aime_rl.wrappers import VecContextObservation, env_factory
from aime_rl.wrappers.core import fork_stream

FRAMES = 6  # video_shape[0]: training windows and rollout videos are 6 frames long
WINDOW = 4
SHORT_CATCH = dict(
    balls_per_episode=1
)  # 11-16 steps per episode: windows of 6 frames exist after one episode
PPO_SETTINGS = dict(n_steps=32, batch_size=32, n_epochs=1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    """A tiny random CausalPerceiverIO for 32×32 frames (dropout on, so train/eval mode matters)."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("perceiver")
    model = CausalPerceiverIO.from_preset("tiny", video_shape=(FRAMES, 3, 32, 32), dropout=0.1)
    model.save_pretrained(directory)
    return str(directory)


def make_env(tmp_path, model_dir) -> VecContextObservation:
    """Two short Catch envs, recorded at 32×32 under a context wrapper (frames resized 64 → 32 on both paths)."""
    venv = DummyVecEnv([env_factory("aime_rl/Catch-v0", **SHORT_CATCH)] * 2)
    venv.seed(0)
    recorder = VecRecordFrames(venv, tmp_path / "replay", frame_shape=(32, 32, 3))
    return VecContextObservation(recorder, model_dir, window=WINDOW)


def silent_agent(env: VecContextObservation):
    """A PPO agent with an output-less logger, for callbacks driven by hand (``learn`` sets the logger itself)."""
    agent = make_agent("ppo", env, **PPO_SETTINGS)
    agent.set_logger(configure(None, []))
    return agent


def collect(env: VecContextObservation, steps: int) -> None:
    """Random actions for ``steps`` vectorised steps (several episodes end in 40)."""
    env.reset()
    rng = np.random.default_rng(0)
    for _ in range(steps):
        env.step(rng.integers(0, 3, size=env.num_envs))


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def changed(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(value, before[name]) for name, value in module.state_dict().items())


def scalar_tags(logdir) -> set[str]:
    """Tags of every scalar summary in the event files under ``logdir``."""
    tags = set()
    for path in logdir.rglob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:  # old-style simple values or the scalars plugin's tensors
                if value.HasField("simple_value") or value.metadata.plugin_data.plugin_name == "scalars":
                    tags.add(value.tag)
    return tags


# -- PerceptionTrainingCallback ----------------------------------------------------------------------------------


def test_update_trains_context_model_only_by_default(tmp_path, model_dir):
    env = make_env(tmp_path, model_dir)
    agent = silent_agent(env)
    collect(env, 40)
    callback = PerceptionTrainingCallback(gradient_steps=2, batch_size=2, lr=1e-3)
    callback.init_callback(agent)
    assert callback.context_envs == [env]
    model = env.model
    tokenizer_before, predictor_before = snapshot(model.tokenizer), snapshot(model.predictor)
    rng_before = torch.random.get_rng_state()

    scalars = callback.update()

    assert scalars is not None and np.isfinite(scalars["perception/context_model/total"])
    assert not any(key.startswith("perception/tokenizer/") for key in scalars)
    assert changed(model.predictor, predictor_before)
    assert not changed(model.tokenizer, tokenizer_before)  # frozen, and no EMA codebook update
    assert all(not module.training for module in model.modules())
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the agent's random stream is untouched
    assert callback.model_copy is not model  # the wrapper's model was updated in place, not replaced
    env.close()


@pytest.fixture(scope="module")
def motion_model_dir(tmp_path_factory) -> str:
    """A tiny model whose local motion encoder reads 2 steps of history and trains at 3× the learning rate."""
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("motion")
    model = CausalPerceiverIO.from_preset(
        "tiny",
        video_shape=(FRAMES, 3, 32, 32),
        local_motion_frames=3,
        local_motion_history=True,
        local_motion_lr_scale=3.0,
    )
    model.save_pretrained(directory)
    return str(directory)


def test_update_trains_the_local_motion_encoder_at_its_lr_scale(tmp_path, motion_model_dir):
    env = make_env(tmp_path, motion_model_dir)
    callback = PerceptionTrainingCallback(gradient_steps=1, batch_size=2, lr=1e-3)
    callback.init_callback(silent_agent(env))
    predictor = callback.model_copy.predictor
    rates = {
        id(p): group["lr"]
        for group in callback.optimizers["context_model"].param_groups
        for p in group["params"]
    }
    encoder_rates = [rates[id(p)] for p in predictor.local_motion.parameters()]
    assert encoder_rates == pytest.approx([3e-3] * 8)
    assert rates[id(predictor.input_adapter.embeddings)] == pytest.approx(1e-3)
    assert not any(id(p) in rates for p in predictor.tokenizer.parameters())
    env.close()


def test_update_reads_the_motion_history_before_each_window(tmp_path, motion_model_dir):
    env = make_env(tmp_path, motion_model_dir)
    collect(env, 40)
    callback = PerceptionTrainingCallback(gradient_steps=1, batch_size=2)
    callback.init_callback(silent_agent(env))
    predictor = callback.model_copy.predictor
    seen = []
    forward = predictor.forward

    def spy(video, *args, **kwargs):
        seen.append((video.shape[1], kwargs.get("history_frames")))
        return forward(video, *args, **kwargs)

    predictor.forward = spy
    assert callback.update() is not None
    assert seen == [(FRAMES + 2, 2)]  # the offline trainer's windows: 2 frames of the encoder's history first
    env.close()


def test_update_resets_the_context_stream(tmp_path, model_dir):
    env = make_env(tmp_path, model_dir)
    agent = silent_agent(env)
    collect(env, 40)
    callback = PerceptionTrainingCallback(gradient_steps=1, batch_size=2)
    callback.init_callback(agent)
    frame = torch.randint(0, 256, (env.num_envs, 3, 32, 32), dtype=torch.uint8)

    def next_contexts() -> tuple[torch.Tensor, torch.Tensor]:
        """(the wrapper's stream on ``frame``, a fresh stream of the same model on ``frame``)."""
        with torch.inference_mode():
            running = fork_stream(env._stream, env.model).step(frame)
            fresh = env.model.stream(env.num_envs, window=WINDOW).step(frame)
        return running, fresh

    running, fresh = next_contexts()
    assert not torch.allclose(running, fresh, atol=1e-4)  # the stream carries the episodes' history
    callback.update()
    running, fresh = next_contexts()
    torch.testing.assert_close(running, fresh, atol=1e-5, rtol=0)  # no cache of the old weights is left
    env.close()


def test_update_is_postponed_without_long_episodes(tmp_path, model_dir):
    env = make_env(tmp_path, model_dir)
    agent = silent_agent(env)
    callback = PerceptionTrainingCallback(gradient_steps=1, batch_size=2)
    callback.init_callback(agent)
    before = snapshot(env.model)
    assert callback.update() is None
    assert callback.num_updates == 0 and not changed(env.model, before)
    env.close()


def test_joint_training_during_ppo(tmp_path, model_dir):
    env = make_env(tmp_path, model_dir)
    agent = make_agent("ppo", env, tensorboard_log=str(tmp_path / "tb"), **PPO_SETTINGS)
    config = TrainerConfig(steps=2, batch_size=2, sequence_length=FRAMES, lr=1e-3)
    callback = PerceptionTrainingCallback.from_trainer_config(
        config, train_every=64, parts=("tokenizer", "context_model")
    )
    model = env.model
    tokenizer_before, predictor_before = snapshot(model.tokenizer), snapshot(model.predictor)

    agent.learn(256, callback=callback)

    assert agent.num_timesteps >= 256  # PPO kept training on the moving features
    assert callback.num_updates >= 2
    assert env.model is model and changed(model.tokenizer, tokenizer_before)
    assert changed(model.predictor, predictor_before)
    assert all(not module.training for module in model.modules())
    tags = scalar_tags(tmp_path / "tb")
    assert {"perception/tokenizer/total", "perception/context_model/total", "perception/updates"} <= tags
    env.close()


@pytest.mark.parametrize(
    ("settings", "match"),
    [(dict(parts=("policy",)), "parts"), (dict(train_every=0), "train_every")],
    ids=["unknown-part", "zero-train_every"],
)
def test_training_callback_rejects_bad_settings(settings, match):
    with pytest.raises(ValueError, match=match):
        PerceptionTrainingCallback(**settings)


def test_wrappers_must_be_found():
    venv = DummyVecEnv([env_factory("aime_rl/Catch-v0", **SHORT_CATCH)])
    with pytest.raises(ValueError, match="VecContextObservation"):
        find_context_envs(venv)
    with pytest.raises(ValueError, match="VecRecordFrames"):
        find_replay_store(venv)
    venv.close()


# -- RolloutVideoCallback ----------------------------------------------------------------------------------------


def test_rollout_video_in_sb3_tensorboard(tmp_path, model_dir):
    env = make_env(tmp_path, model_dir)
    agent = make_agent("ppo", env, tensorboard_log=str(tmp_path / "tb"), **PPO_SETTINGS)
    callback = RolloutVideoCallback(every_n_steps=64, num_videos=2)

    agent.learn(128, callback=callback)

    assert callback.num_videos_logged >= 1
    gifs = read_event_images(tmp_path / "tb")["rollout/open_loop"]
    assert gifs and all(gif.startswith(b"GIF89a") for gif in gifs)
    tags = scalar_tags(tmp_path / "tb")
    assert {
        "rollout/psnr/step_1",
        "rollout/psnr/step_3",
        "rollout/psnr/mean",
        "rollout/copy_last_psnr/step_1",
    } <= tags
    assert "time/fps" in tags  # written next to SB3's own scalars
    env.close()


def test_rollout_video_own_writer(tmp_path, model_dir):
    env = make_env(tmp_path, model_dir)
    agent = silent_agent(env)  # no TensorBoard output
    with pytest.raises(ValueError, match="logdir"):
        RolloutVideoCallback().init_callback(agent)
    collect(env, 40)
    callback = RolloutVideoCallback(
        model=model_dir, store=tmp_path / "replay", logdir=tmp_path / "videos", tag="video"
    )
    callback.init_callback(agent)

    assert callback.log_rollout()
    callback.on_training_end()  # closes its own writer

    gifs = read_event_images(tmp_path / "videos")["video"]
    assert len(gifs) == 1 and gifs[0].startswith(b"GIF89a")
    env.close()


@pytest.mark.parametrize(
    "settings", [dict(every_n_steps=0), dict(num_videos=0)], ids=["every_n_steps", "num_videos"]
)
def test_rollout_video_rejects_a_setting_below_one(settings):
    name = next(iter(settings))
    with pytest.raises(ValueError, match=f"RolloutVideoCallback: {name} must be an integer >= 1"):
        RolloutVideoCallback(**settings)


def test_rollout_video_every_is_a_deprecated_spelling_of_every_n_steps():
    with pytest.warns(DeprecationWarning, match="every_n_steps"):
        callback = RolloutVideoCallback(every=64, num_videos=2)
    assert callback.every_n_steps == 64 and callback.num_videos == 2
    with pytest.raises(TypeError, match="every_n_steps"):
        RolloutVideoCallback(every=64, every_n_steps=32)


# -- WorldModelRolloutCallback -----------------------------------------------------------------------------------


def test_world_model_rollout_max_videos_is_a_deprecated_spelling_of_num_videos(tmp_path, model_dir):
    vrnn = VRNN(
        CausalPerceiverIO.from_pretrained(model_dir), 3, hidden_dim=16, latent_dim=4, embed_dim=16, mlp_dim=16
    )
    store = ReplayStore(tmp_path / "replay", frame_shape=(32, 32, 3))
    with pytest.warns(DeprecationWarning, match="num_videos"):
        callback = WorldModelRolloutCallback(vrnn, store, every_n_steps=64, max_videos=2)
    assert callback.every_n_steps == 64 and callback.num_videos == 2
    with pytest.warns(DeprecationWarning, match="num_videos"):
        assert callback.max_videos == 2
    with pytest.raises(TypeError, match="num_videos"):
        WorldModelRolloutCallback(vrnn, store, max_videos=2, num_videos=3)


def test_world_model_rollout_rejects_a_setting_below_one(tmp_path, model_dir):
    vrnn = VRNN(
        CausalPerceiverIO.from_pretrained(model_dir), 3, hidden_dim=16, latent_dim=4, embed_dim=16, mlp_dim=16
    )
    store = ReplayStore(tmp_path / "replay", frame_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="WorldModelRolloutCallback: every_n_steps must be an integer >= 1"):
        WorldModelRolloutCallback(vrnn, store, every_n_steps=0)
