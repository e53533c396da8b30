"""SB3 callbacks of the perception model, in one import; each lives in its own module:

- :class:`~aime_rl.agents.perception_callback.PerceptionTrainingCallback` (:mod:`aime_rl.agents.perception_callback`):
  trains the perception model on the recorded frames and pushes the new weights into the running wrapper(s) —
  read the caveats in that module before turning it on;
- :class:`~aime_rl.agents.video_callback.RolloutVideoCallback` (:mod:`aime_rl.agents.video_callback`): every
  ``every_n_steps`` env steps, writes an open-loop rollout GIF and per-step PSNR scalars to TensorBoard;
- the helpers that find the context wrapper, the replay store and SB3's TensorBoard writer in the training env
  (:mod:`aime_rl.agents.lookup`), and the shared schedule (:mod:`aime_rl.agents.schedule`, re-exported from
  :mod:`aime_rl.utils.schedule`).
"""

from __future__ import annotations

from .lookup import (
    StoreLike,
    find_context_envs,
    find_replay_store,
    find_tensorboard_writer,
    reset_context_stream,
)
from .perception_callback import PERCEPTION_PARTS, PerceptionTrainingCallback
from .video_callback import RolloutVideoCallback

__all__ = [
    "PERCEPTION_PARTS",
    "PerceptionTrainingCallback",
    "RolloutVideoCallback",
    "StoreLike",
    "find_context_envs",
    "find_replay_store",
    "find_tensorboard_writer",
    "reset_context_stream",
]
