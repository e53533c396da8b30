"""The perception models' configs: one dataclass per model, nested for the combined model.

- :class:`TokenizerConfig`: the arguments of :class:`~aime_rl.perception.VQPTTokenizer`.
- :class:`PredictorConfig`: the arguments of :class:`~aime_rl.perception.PerceiverTokenPredictor` (its tokenizer
  aside).
- :class:`CausalPerceiverConfig`: ``video_shape`` plus one of each. ``CausalPerceiverIO.save_pretrained`` writes it
  as ``config.json`` (with ``"class"``); :func:`config_from_json` reads it back key by key.

Every model takes plain keyword arguments (the seed's API), has ``from_config(config)`` and exposes ``.config``.
:class:`~aime_rl.perception.CausalPerceiverIO` takes flat keyword arguments; :func:`with_arguments` is the one place
that says which part each of them configures. Model directories written before the nested config hold a flat
``config.json`` of those arguments (:class:`FlatPerceiverConfig`); :func:`config_from_json` reads both formats.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..utils.validation import config_kwargs


@dataclass
class TokenizerConfig:
    """Arguments of :class:`~aime_rl.perception.VQPTTokenizer` (the seed's hyperparameters are the defaults).

    Attributes:
        in_channels: image channels (3 for RGB).
        code_dim: channels of the encoder output that are quantized (split across the heads).
        num_codes: codebook size per head; token ids are in ``[0, num_codes)``.
        downsample: spatial factor (power of two): 64×64 with 8 gives 8×8 tokens, with 4 gives 16×16.
        base_channels: channels of the first UNet level.
        use_3d_conv: causal spatio-temporal convs (kernel 3 in time) instead of per-frame 2D convs.
        temporal_downsample: halve T causally (the decoder restores it).
        num_quantizers: G, the number of VQ heads, each with its own codebook.
        commitment_weight: weight of the commitment loss.
        diversity_weight: weight of the entropy diversity loss.
        perceptual_weight: weight of the LPIPS term (off automatically when LPIPS weights are unavailable).
        num_res_blocks: residual blocks per UNet level.
        dropout: dropout inside the residual blocks.
        use_ema, ema_decay, dead_code_threshold, kmeans_iters: codebook maintenance (see ``VectorQuantize``).
        patch_size: space-to-depth factor before the first conv (power of two dividing ``downsample``); the conv
            levels then cover ``downsample / patch_size``. 1 (the seed's UNet) keeps a full-resolution level.
        frame_size: ``(H, W)`` of the frames this tokenizer accepts (in a :class:`CausalPerceiverConfig`, taken from
            its ``video_shape``); None accepts any size divisible by ``downsample``.
        foreground_weight: weight of the reconstruction MSE over the foreground — the pixels that differ from the
            clip's static background (its per-pixel temporal median). Small moving objects (a ball: a few pixels of
            thousands) barely move the plain MSE, so without this term the tokens learn the background and drop
            them. 0 (the seed's objective) turns it off.
        stability_weight: weight of the temporal-stability term: the encoder features of a token cell whose pixels
            did not change since the previous frame are pulled to their previous value, so its token does not flip
            when something elsewhere in the frame moves (see :func:`~aime_rl.perception.losses.temporal_stability`).
            Needs clips of T ≥ 2 frames without ``temporal_downsample``. 0 (the seed's objective) turns it off.
        padding: how the encoder's and decoder's convs pad H and W
            (:data:`~aime_rl.perception.modules.conv.SPATIAL_PADDINGS`). "zeros" (the seed)
            puts a dark frame around every image, so on a uniform background each layer writes the distance to the
            border into its features: the first tokens say where a cell is more than what it shows, the quantizer
            spends its codes on positions (16 codes for the 16 cells of a 4×4 grid) and a small ball changes no
            token. "replicate" repeats the border pixels: a uniform background stays uniform, identical patches get
            the same features wherever they are, and the codes go to content.
        encoder: what computes a token cell's features (:data:`TOKENIZER_ENCODERS`). "unet" (the seed) is the
            causal conv UNet: every cell sees most of the frame, so a moving ball changes the features of cells it
            never touches and their tokens flip. "patch" is a small MLP of the cell's own
            ``downsample × downsample`` pixels (:class:`~aime_rl.perception.modules.patch_encoder.PatchEncoder`):
            a static cell keeps its token by construction, and identical patches get identical tokens. Motion is
            left to the Perceiver's window. ``use_3d_conv`` and ``patch_size`` then shape only the decoder, and
            ``temporal_downsample`` needs "unet".
        decoder: what draws a token cell's pixels back (:data:`TOKENIZER_DECODERS`). "unet" (the seed) is the
            causal conv UNet decoder. "patch" is a small MLP of the cell's own code vector
            (:class:`~aime_rl.perception.modules.patch_decoder.PatchDecoder`), the patch encoder's mirror: each
            cell's pixels from its own code, so small objects are drawn where they are from the first hundred steps
            (32×32 Catch, 600 steps: foreground PSNR 22.3 → 25.1 dB, in half the time). Needs frames of one token
            step each (no ``temporal_downsample``).
    """

    in_channels: int = 3
    code_dim: int = 256
    num_codes: int = 1024
    downsample: int = 8
    base_channels: int = 64
    use_3d_conv: bool = True
    temporal_downsample: bool = False
    num_quantizers: int = 4
    commitment_weight: float = 0.05
    diversity_weight: float = 0.1
    perceptual_weight: float = 0.1
    num_res_blocks: int = 1
    dropout: float = 0.0
    use_ema: bool = True
    ema_decay: float = 0.99
    dead_code_threshold: float = 1.0
    kmeans_iters: int = 10
    patch_size: int = 1
    frame_size: tuple[int, int] | None = None
    foreground_weight: float = 0.0
    stability_weight: float = 0.0
    padding: str = "zeros"
    encoder: str = "unet"
    decoder: str = "unet"


#: Keys added after tokenizer directories were first written (older ``config.json`` files lack them).
TOKENIZER_ADDED_KEYS = (
    "frame_size",
    "foreground_weight",
    "stability_weight",
    "padding",
    "encoder",
    "decoder",
)

#: What computes a token cell's features (``TokenizerConfig.encoder``).
TOKENIZER_ENCODERS = ("unet", "patch")

#: What draws a token cell's pixels back (``TokenizerConfig.decoder``).
TOKENIZER_DECODERS = ("unet", "patch")


@dataclass
class PredictorConfig:
    """Arguments of :class:`~aime_rl.perception.PerceiverTokenPredictor` besides its tokenizer.

    Attributes:
        num_latents, num_latent_channels: N latents of D channels per frame; D is the context size.
        num_cross_attention_heads, num_self_attention_layers, widening_factor, dropout: Perceiver block sizes.
        sequence_length: longest horizon of future token steps the decoder can address.
        num_self_attention_heads: heads of the self-attention blocks (None: ``num_cross_attention_heads``).
        num_decoder_self_attention_layers: self-attention among output queries (MaskGIT needs ≥ 1).
        num_condition_channels: size of the ``condition`` vector. None builds a model without conditioning:
            passing ``condition=`` to it raises ``ValueError`` (its projection, of size D, is kept for checkpoint
            compatibility but never trained, so a condition would only add noise).
        label_smoothing: for the token cross-entropy.
        perceptual_weight: λ of the LPIPS term on predicted frames (off when LPIPS weights are unavailable).
        next_frame_weight: weight of next-frame prediction from every earlier frame's latents (or, in training,
            ``next_frame_samples`` of them).
        window: default causal window (frames) of the encoder during training; None = all past frames.
        context_prediction_weight: weight of next-frame prediction from every earlier frame's pooled context alone
            (or, in training, ``next_frame_samples`` of them; one 256-d vector, no latents, and no copy of the previous frame's tokens): a bottleneck that makes the
            context — what agents and the world model see — carry the state of the next frame, static objects
            included (with the copy prior of the main objective, the latents only need to carry what changes).
            1 in the "small" preset (Catch); 0 in the Atari recipe, where a 256-d context cannot name a busy screen
            and the term takes what the latents hold to serve the screen's bulk (Space Invaders 0.557 untrained →
            0.241 at step 300 of a 1500-step training with it, 0.566 without; forty-first session). 0 (the seed's
            model) turns it off.
        mark_changes: add to each input token a learned embedding of whether its cell changed since the previous
            token step (:func:`~aime_rl.perception.predictor.change_marks`). The latent queries are the same at every
            frame, so what they attend to is decided by the keys alone; with this mark a moving object's few tokens
            stand out from the static background by content, not only by the codes. The stream keeps each row's
            previous tokens (reset with the episode). False is the seed's model.
        change_weight: weight of the token cross-entropy averaged over the positions whose token changed since the
            frame before (added to the plain mean over all positions). With the copy prior almost every target
            token is the previous one (99.5 % on random Pong), so the plain mean is met by copying and nothing
            teaches the latents where the ball goes; averaged over the changed positions alone, the few moving
            tokens weigh as much as the whole static frame. 0 is the seed's objective.
        contrastive_weight: weight of a temporal contrastive term on the pooled context (global-local InfoNCE, as
            in ST-DIM): the context of frame t must pick, at every token position of frame t + 1, its own clip's
            token embedding among those of the other clips in the batch. Positions that look the same in every
            clip (a static background) cancel out of the gradient, so what the context learns is what differs
            between clips — the moving objects. 0 is the seed's objective.
        motion_attention_bias: a score bonus, in the encoder's cross-attention, for the tokens whose cell moved since
            the previous token step — some pixel of the cell changed by more than the tokenizer's foreground
            threshold (:func:`~aime_rl.perception.modules.temporal.motion_marks`; read from the pixels because the
            tokens of static cells flip and those of a small moving object often do not) — so the few tokens of a
            moving object stand out among the static ones from the first training step: ``e^bias`` more weight
            each. It starts at this value in the first half of the heads (the other half start unbiased, so what
            stands still stays seen) and is learned per head and mark from there
            (:func:`~aime_rl.perception.predictor.initial_motion_bias`). Without it the latent queries start near
            uniform over thousands of keys, and the gradient that would sharpen them onto a moving object scales
            with the weight they give it, so at small budgets they never do. The stream keeps each row's previous
            frame; such a model trains on frames, not on a token cache. 0 is the seed's model.
        context_pooling: how the N latents of a frame become its D-channel context (:data:`CONTEXT_POOLINGS`).
            "mean" (the seed) averages them: latents that each hold a different object's state blur into one
            vector, and a linear probe of it reads less than one of the latents side by side (Catch, 32×32 frames:
            ball x 0.61 against 0.85). "projection" maps the N latents side by side with one learned linear layer
            (``N · D → D``), so each latent's state keeps its own directions in the context.
        recency_bias: a score penalty per frame of a key's age, in the encoder's cross-attention: a token emitted
            ``a`` frames before the query frame weighs ``e^(−a · slope)`` less. It starts at this slope in every
            other head (the others start at 0 and see the whole window alike) and is learned per head. Without
            it the latents average each object over the window — a ball seen at six places reads as their mean,
            and a probe of where it is now scores as if through that blur (Catch: ball x 0.74 over a 6-frame
            window against 0.89 over 1 frame) — while the window is what carries velocity. With it some heads
            read the present and the others the past. 0 is the seed's model.
        context_whitening: decorrelate the context (:class:`~aime_rl.perception.modules.whitening.
            ContextWhitening`): a ZCA map fitted, like BatchNorm's statistics, to the contexts of the training
            steps, applied to every context the model hands out (``extract_context``, the stream, the world model)
            and not inside its own losses. The pooled context keeps almost all of its variance in a few directions
            and the state of small objects in directions of tiny variance, so readers trained by gradient descent
            (a policy, a probe trained with Adam) barely see them; whitening makes every direction equally easy to
            read without adding or removing information (Pong, the same weights: AtariARI score 0.39 → 0.66). False is the seed's
            model.
        context_prediction_horizon: how many token steps ahead the context-prediction term asks the pooled
            context for (1: the next frame, the seed's). Further frames need the velocity as well as the position,
            which a next frame seen through 8×8-pixel tokens barely does.
        previous_tokens: each key of the encoder's cross-attention also embeds the tokens its cell had one token
            step before (a learned linear map of their embedding, added to the key's input; at an episode's first
            step, the cell's own tokens). A key then says how its cell changed, so one cross-attention read sees
            where a small object moved within a cell and from which side it entered one; without it a velocity is
            the difference of two positions read from two keys and averaged away by the softmax. The stream keeps
            each row's previous tokens. False is the seed's model.
        embeddings_from_codes: the code embeddings start at a random projection of the trained tokenizer's code
            vectors (``CausalPerceiverIO.init_embeddings_from_codebook``, which the pipeline calls when it builds a
            context model around a trained tokenizer) instead of independent random rows: codes of similar patches
            (the ball a pixel apart) start near each other, so what the model learns for one carries to the others.
            False is the seed's model.
        pixel_changes: each key of the encoder's cross-attention also embeds how its cell's pixels changed since
            the previous token step (a learned linear map of the cell's signed difference patch,
            :func:`~aime_rl.perception.modules.temporal.pixel_changes`; zero bias, so a cell where nothing moved
            gets nothing added). The tokens say where things are, each frame on its own; a velocity is then the
            difference of two code identities in two keys, which the model must learn to compute and the softmax
            averages away. The first moment of a cell's difference patch is a small object's displacement times its
            mass — linear in the patch — so with this embedding one key carries the motion inside its cell at
            pixel precision. Read from the frames, like ``motion_attention_bias``: such a model trains on frames,
            not on a token cache; the stream keeps each row's previous frame. False is the seed's model.
        spatial_attention_bias: a score penalty, in the encoder's cross-attention, of ``slope · d²`` for a key whose
            cell lies at distance ``d`` from the latent's home on the token grid (cell centres and homes in
            ``[−1, 1]²``; the N homes start on a square grid, :func:`~aime_rl.perception.modules.position.
            latent_homes`). It starts at this slope in the second half of the heads (the ones without the motion
            bonus; the others start at 0 and see the whole frame) and slopes and homes are learned from there.
            Without it every latent query starts near uniform over all cells, so each latent holds about the same
            average of the frame and a small object that does not move is one cell in 64 of every average
            (Freeway's chicken: pixels 0.34, code vectors 0.32, the 16 latents side by side 0.29); with it the
            latents start as a coarse map of the frame, each summarising its own region, as a conv stack's features
            do. The offline pass holds the bias of every latent query and key, ``[B or 1, heads, T · N, L]`` (the
            "small" preset at 64×64: 6 × 16 × 384 per head; the paper preset's 128 latents over 16 frames: 2048 ×
            1024 per head and row). 0 is the seed's model.
        encoder_iterations: how many times each frame's latents cross-attend to the tokens and self-attend, with
            the same layers each time (the Perceiver's iterative attention, weights shared). The first pass queries
            with the learned latents, the same at every frame, so what they find is decided by the keys alone; a
            second pass queries with what the first found (a sprite seen somewhere), so it can look there again.
            Costs the cross- and self-attention once more per pass; the stream reuses the same cached keys. 1 is
            the seed's model.
        decoder_channels: the width of the decoder that predicts the tokens from the latents (a training head:
            the context never passes through it). Its queries are one per predicted token position — 120 a frame
            at 96×80, against 16 latents — so at the latents' width it holds most of a training step's work (Pong,
            96×80: ≈ 85 % of the multiply-adds). A narrower decoder takes its queries in through one linear map,
            reads the latents through its cross-attention's key/value maps, and its output adapter maps each
            position to the code embeddings' width to score the codes.
            None is the seed's model (the latents' width).
        latent_memory: after its own pass, each frame's latents attend to those of the ``latent_memory`` frames
            before it (and their own; a rotary time position gives each key's age): a latent that found a sprite
            at t − 1 meets where it is at t, so a displacement is one attention and one MLP away, where from the
            tokens alone it must be assembled from two cells' codes. The receptive field grows by that many frames
            beyond ``window``; the stream keeps the last frames' latents (``[B, k, N, D]``). 0 is the seed's model.
        context_readout_tokens: the context-prediction term's decoder reads the pooled context as this many memory
            tokens (one learned linear map ``[D] → [k, D]``). With one token, every output query's cross-attention
            returns the same value vector, so the term reads the context through one value map, at most
            ``decoder_channels`` wide: a 64-wide decoder asks a 64-dimensional image of the context for the whole
            next frame, and the rest of the context is not held to anything. With k tokens each query reads its own
            mix of k such images. A training head only: the context is computed the same way. 1 is the seed's.
        latent_reconstruction_weight: weight of a term that asks the pooled context to keep what the frame's
            latents hold: a learned linear map of the context ``[D]`` reconstructs the N latents side by side
            ``[N · D]`` (the latents pooled detached: the term trains the pooling and the map), scored by the squared error
            over their variance in the batch.
            The other terms ask the context only for the next frame, read through one decoder-wide value map, so
            nothing holds the rest of the pooling to what the latents know, and it keeps less of the ball's position
            than a random 256-d projection of the same latents does (Catch, three demo models: ball x / ball y / paddle x
            0.883 / 0.870 / 0.900 from the context, 0.897 / 0.872 / 0.894 random, 0.904 / 0.898 / 0.921 the latents'
            256 principal components). At 0.1: Catch at the demo's budget, 18 agents −2.07 → −0.94, probes
            unchanged; Pong −0.010 on each of three seeds; Breakout 0.787 → 0.708, the ball and the paddle lost —
            also at w = 0.01 (0.732) and with every latent channel standardised (0.711), so it is not the squared
            error's weighting by variance (``benchmarks/README.md``, twentieth and twenty-first sessions). A
            training head only. 0 is the seed's model.
        next_frame_samples: how many of a clip's earlier frames the next-frame and context-prediction terms decode
            from at each training step, drawn without replacement for each clip (every frame in eval mode, and when
            k is at least their number; each term draws its own). Each of those decodes is a whole frame of token
            queries, so on an Atari frame the two terms' decodes are ≈ 28 % of a training step, while consecutive
            frames of one clip ask nearly the same question (the copy prior covers what did not move); a different
            k frames each step covers the same frames over training. The Atari recipe uses 1
            (``aime_rl/experiments/atari.toml``: Pong 0.834 → 0.833 over three seeds, four games not tuned on 0.606
            → 0.615, steps ≈ 16 % faster; on Catch's 32×32 frames a decode is 16 queries and it saves nothing;
            ``benchmarks/README.md``, twenty-first session). None (every frame) is the seed's objective.
        local_motion_frames: k ≥ 2 turns on a local motion encoder
            (:class:`~aime_rl.perception.modules.local_motion.LocalMotionEncoder`): a small convolution over the code
            embeddings of each cell's 3×3 neighbourhood in the last k token steps (stacked as channels, so it knows
            which step each code is from; steps before the clip's or episode's first are the mask id, "unknown"),
            whose features are added, through a learned linear map, to the cell's key input. The latents read
            tokens through attention, a weighted average of values that do not say how old they are, so a velocity
            must be assembled from two cells' code identities, and at small budgets it is not (Catch: the predicted
            next frame keeps the ball where it was). The convolution learns the motion from the same tokens over a short gradient path, and
            one key then says what moved there and from where. A context of a ``window`` of w frames then depends
            on the last w + k − 1 token steps (the oldest key's cell saw k − 1 steps before it). The stream keeps
            each row's last k − 1 token steps. 0 is the seed's model.
        local_motion_weight: weight of the local motion encoder's own term: a head on its features of step s names
            each cell's tokens of step s + 1 (the token cross-entropy, with ``label_smoothing`` and
            ``change_weight``). A training head only.
        local_motion_context: with ``local_motion_frames``, the motion features of every cell of the frame, side by
            side ``[h · w · C]``, also enter its pooled context through their own linear map (added before the
            context's LayerNorm; the map starts at zero, so the latents lead and the motion enters as the context's
            terms ask for it). The convolution's features hold the motion the keys are given, but the latents
            pass only part of it on to the pooled context (Catch: ball vx 0.69 from the features of the 16 cells,
            0.62 from the context); this path hands the context what the convolution computed (Catch, 3 models at
            the demo's budget, 6 agents each: see ``benchmarks/README.md``, twenty-seventh session). It adds one
            slot to the latents ``encode_tokens`` returns (``[B, T, N + 1, D]``, the last the mapped features); the
            decoder and the latent memory read the N latents only. Needs a tokenizer with a ``frame_size`` (the map's
            size is the token grid's) and no temporal downsampling. False is the seed's model.
        local_motion_horizon: H, how many steps ahead the local motion encoder's head names each neighbourhood's
            tokens: from step s, those of s + 1 … s + H (a term per step ahead, summed; one map per step ahead
            into the same tied head). Where an object will be in two steps depends on its velocity twice as much
            as where it will be in one, so H = 2 asks the convolution for the velocity more sharply. 1 (the next
            step only) by default; 2 in the demo's recipe (``benchmarks/README.md``, twenty-eighth session).
        local_motion_inputs: what the local motion encoder reads of each cell and token step: ``"codes"`` (its
            code embeddings, the default) or ``"pixels"`` (its patch of the frame,
            :func:`~aime_rl.perception.modules.local_motion.pixel_motion_inputs`). The codes place a small object
            inside its cell only as precisely as one learned embedding per code can say, and a velocity is the
            difference of a few such places; the pixels place it exactly. A ``"pixels"`` model reads the frames as
            well as the tokens (no token cache; the stream keeps each row's last k − 1 cell patches); for tokens
            with no frames (generated ones) it reads the tokenizer's decoding of them.
        local_motion_history: training clips start k − 1 token steps early, and those steps are only the local
            motion encoder's history (their features also train its term): its features at a clip's first steps
            then see the k steps a stream's do, where without it they see only the steps since the clip began (a
            clip of the demo's 6 frames has 3 of context, so a k of 6 would never be trained with its whole
            history). The windows the trainer samples are ``PerceiverTokenPredictor.motion_history_frames``
            longer; the model is the same.
        local_motion_lr_scale: the optimiser trains the local motion encoder and its term's head at this multiple
            of the learning rate (:func:`~aime_rl.training.optim.make_optimizer`; the code table its head scores
            against is the model's and keeps the base rate). The encoder learns from its own term alone, and
            under the trainer's warm-up and cosine decay a short run leaves it under-trained (Catch, the pixel
            encoder trained alone for 320 steps: ball vy 0.54 from its features at a constant rate, 0.15 under the
            schedule, 0.58 under it at 3×; the whole model with pixel inputs, k = 6, H = 5: the context's ball vx /
            ball vy 0.695 / 0.143 at 1×, 0.795 / 0.336 at 3× over three models; ``benchmarks/README.md``,
            thirty-sixth session). 1 is the seed's.
        copy_logit: c > 0 adds to the next-frame decoder's logits ``[..., G, num_codes]`` a learned bonus per code
            head, c nats at first, on each cell's last observed token wherever the decoder is given that token (the
            copy prior of the next-frame and token terms, and of generation; not the context-prediction term,
            which has no copy). The copy prior otherwise enters only as an embedding added to each output query, so
            "this cell stays as it was" — the right answer for most cells of most frames — is an identity map the
            decoder has to learn through its narrow queries, and until it has, the token terms spend their gradient
            on it; with the bonus the decoder starts at copy-last, and the terms ask the latents for what changes.
            Measured at 3 (``benchmarks/README.md``, thirty-eighth session): CartPole from pixels and Boxing, below
            copy-last without it, are not with it, and Pong's and Boxing's probes are the same; but the three Catch
            demos read the ball less well (ball x and vx lower on every seed) and two of their three agents score
            less, so no preset has it; the Atari recipe (``aime_rl/experiments/atari.toml``) does (3; Space
            Invaders 0.502 → 0.540, Pong through the CLI the same: fortieth session). 0 (no bonus, no parameter)
            is the seed's.
        frozen_embeddings: the input adapter — each code's embedding and the map of a cell's grid position — is not
            trained: it stays as drawn (or as ``embeddings_from_codes`` set it). That table is what the encoder's
            cross-attention reads every cell as, and it is also the decoder's query embedding and, tied, the table
            every predicted token is scored against; the token terms reshape it to name a busy screen's next tokens,
            and on the screens where the next frame teaches nothing (a scrolling river, a sprite a random policy
            moves) the reshaped table loses what the drawn one told apart. Riverraid through the Atari recipe,
            three models, 4000 probe frames: AtariARI score 0.165 / 0.173 / 0.094 → 0.183 / 0.195 / 0.195, the
            untrained architecture's level (0.193 / 0.198), still below the random CNN; Frostbite 0.499 → 0.510,
            Boxing 0.403 → 0.416, Breakout and Freeway +0.006 / +0.003; elsewhere level or up to 0.01 below (Pong
            through the CLI 0.829 / 0.843 / 0.830 → 0.825 / 0.846 / 0.828; Ms. Pac-Man, Seaquest, Berzerk,
            Asteroids, Space Invaders 0.000 to −0.010, three models each; ``benchmarks/README.md``, forty-third and
            forty-fourth sessions). So the Atari recipe (``aime_rl/experiments/atari.toml``) has it; the presets
            and the demo's recipe, not measured on Catch with it, do not. The context-model trainer leaves these
            parameters out (``requires_grad`` False, and ``trainable_parameters()`` of the
            predictor skips them); the context is computed the same way. False is the seed's model.
    """

    num_latents: int = 128
    num_latent_channels: int = 256
    num_cross_attention_heads: int = 8
    num_self_attention_layers: int = 6
    widening_factor: int = 4
    dropout: float = 0.1
    sequence_length: int = 16
    num_self_attention_heads: int | None = None
    num_decoder_self_attention_layers: int = 1
    num_condition_channels: int | None = None
    label_smoothing: float = 0.1
    perceptual_weight: float = 0.1
    next_frame_weight: float = 1.0
    window: int | None = None
    context_prediction_weight: float = 0.0
    mark_changes: bool = False
    change_weight: float = 0.0
    contrastive_weight: float = 0.0
    motion_attention_bias: float = 0.0
    context_pooling: str = "mean"
    recency_bias: float = 0.0
    context_whitening: bool = False
    previous_tokens: bool = False
    context_prediction_horizon: int = 1
    embeddings_from_codes: bool = False
    pixel_changes: bool = False
    spatial_attention_bias: float = 0.0
    encoder_iterations: int = 1
    decoder_channels: int | None = None
    latent_memory: int = 0
    context_readout_tokens: int = 1
    latent_reconstruction_weight: float = 0.0
    next_frame_samples: int | None = None
    local_motion_frames: int = 0
    local_motion_weight: float = 1.0
    local_motion_context: bool = False
    local_motion_horizon: int = 1
    local_motion_inputs: str = "codes"
    local_motion_history: bool = False
    local_motion_lr_scale: float = 1.0
    copy_logit: float = 0.0
    frozen_embeddings: bool = False


#: The ways a frame's latents ``[N, D]`` become its context ``[D]`` (``PredictorConfig.context_pooling``).
CONTEXT_POOLINGS = ("mean", "projection")


def _seed_predictor() -> PredictorConfig:
    """The predictor of ``CausalPerceiverIO()``: the class defaults with 8 self-attention heads."""
    return PredictorConfig(num_self_attention_heads=8)


@dataclass
class CausalPerceiverConfig:
    """Config of :class:`~aime_rl.perception.CausalPerceiverIO`: the clip shape and its two parts.

    ``video_shape = (T, C, H, W)`` is the source of the tokenizer's ``in_channels`` (C) and ``frame_size`` (H, W):
    the config sets them from it whenever it is built (``dataclasses.replace`` included). The defaults are the
    seed's model, ``CausalPerceiverIO()``. The sections are copies: changing the config a model was built from
    never changes the model's ``.config``.

    For code written against the former flat config, the arguments of ``CausalPerceiverIO`` read through to the
    sections (``config.num_latents`` is ``config.predictor.num_latents``, ``config.num_codes`` is
    ``config.tokenizer.num_codes``; a name in both — ``dropout``, ``perceptual_weight`` — reads the predictor's);
    set them on the section.
    """

    video_shape: tuple[int, int, int, int] = (16, 3, 64, 64)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    predictor: PredictorConfig = field(default_factory=_seed_predictor)

    def __post_init__(self) -> None:
        self.video_shape = tuple(self.video_shape)
        if len(self.video_shape) != 4:
            raise ValueError(f"video_shape must be (T, C, H, W), got {self.video_shape}")
        for name, kind in (("tokenizer", TokenizerConfig), ("predictor", PredictorConfig)):
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}")
        _, channels, height, width = self.video_shape
        self.tokenizer = replace(self.tokenizer, in_channels=channels, frame_size=(height, width))
        self.predictor = replace(self.predictor)

    def __getattr__(self, name: str) -> Any:  # only called when normal lookup fails: the flat names
        if not name.startswith("_"):
            for section in ("predictor", "tokenizer"):
                part = self.__dict__.get(section)
                if part is not None and name in SECTION_FIELDS[section]:
                    return getattr(part, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in CONFIG_FIELDS:
            section = "predictor" if name in SECTION_FIELDS["predictor"] else "tokenizer"
            hint = f"; set config.{section}.{name}" if name in SECTION_FIELDS[section] else ""
            raise AttributeError(f"CausalPerceiverConfig has no field {name!r}{hint}")
        object.__setattr__(self, name, value)


CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(CausalPerceiverConfig))
SECTION_FIELDS: dict[str, frozenset[str]] = {
    "tokenizer": frozenset(f.name for f in dataclasses.fields(TokenizerConfig)),
    "predictor": frozenset(f.name for f in dataclasses.fields(PredictorConfig)),
}
#: Keys added to the nested ``config.json`` after it was first written, as ``"section.key"``.
ADDED_CONFIG_KEYS: tuple[str, ...] = (
    "predictor.change_weight",
    "predictor.contrastive_weight",
    "predictor.motion_attention_bias",
    "predictor.context_pooling",
    "predictor.recency_bias",
    "predictor.context_whitening",
    "predictor.previous_tokens",
    "predictor.context_prediction_horizon",
    "predictor.embeddings_from_codes",
    "predictor.pixel_changes",
    "predictor.spatial_attention_bias",
    "predictor.encoder_iterations",
    "predictor.decoder_channels",
    "predictor.latent_memory",
    "predictor.context_readout_tokens",
    "predictor.latent_reconstruction_weight",
    "predictor.next_frame_samples",
    "predictor.local_motion_frames",
    "predictor.local_motion_weight",
    "predictor.local_motion_context",
    "predictor.local_motion_horizon",
    "predictor.local_motion_inputs",
    "predictor.local_motion_history",
    "predictor.local_motion_lr_scale",
    "predictor.copy_logit",
    "predictor.frozen_embeddings",
    "tokenizer.padding",
    "tokenizer.encoder",
    "tokenizer.decoder",
)

# -- CausalPerceiverIO's flat keyword arguments ------------------------------------------------------------------

#: Tokenizer keys that ``video_shape`` sets.
DERIVED_TOKENIZER_KEYS = ("in_channels", "frame_size")
#: ``CausalPerceiverIO`` arguments that configure the tokenizer (the other tokenizer keys go in
#: ``tokenizer_options``). ``perceptual_weight`` configures both parts.
TOKENIZER_ARGUMENTS = (
    "code_dim",
    "num_codes",
    "downsample",
    "base_channels",
    "use_3d_conv",
    "temporal_downsample",
    "num_quantizers",
    "commitment_weight",
    "diversity_weight",
    "perceptual_weight",
)
#: Tokenizer keys that ``tokenizer_options`` may hold.
TOKENIZER_OPTIONS = sorted(SECTION_FIELDS["tokenizer"] - {*TOKENIZER_ARGUMENTS, *DERIVED_TOKENIZER_KEYS})
#: Where an argument of :func:`with_arguments` goes, by name: every tokenizer key but the derived ones, every
#: predictor key (``dropout``, in both, is the predictor's: the tokenizer's is a ``tokenizer_options`` key), and
#: ``perceptual_weight`` to both.
ROUTES: dict[str, tuple[str, ...]] = {
    **{name: ("tokenizer",) for name in SECTION_FIELDS["tokenizer"] - set(DERIVED_TOKENIZER_KEYS)},
    **{name: ("predictor",) for name in SECTION_FIELDS["predictor"]},
    "perceptual_weight": ("tokenizer", "predictor"),
}


def with_arguments(
    config: CausalPerceiverConfig, arguments: Mapping[str, Any], what: str = "argument", context: str = ""
) -> CausalPerceiverConfig:
    """A copy of ``config`` with flat ``arguments`` applied by name (see :data:`ROUTES`).

    ``arguments`` are ``CausalPerceiverIO``'s keyword arguments — ``video_shape``, ``tokenizer_options`` (a dict
    of :data:`TOKENIZER_OPTIONS` keys; an unknown key or a value of the wrong type raises ``ValueError`` naming
    it) and the tokenizer's and predictor's arguments — or any other tokenizer or predictor key. An unknown name
    raises ``ValueError``: ``unknown {what} 'name'{context}; allowed: [...]``; so does a value of the wrong type
    (``frozen_embeddings='yes'``: ``{what}s: key 'frozen_embeddings' must be bool, got 'yes' (str)``).
    """
    video_shape = config.video_shape
    parts: dict[str, dict[str, Any]] = {"tokenizer": {}, "predictor": {}}
    for name, value in arguments.items():
        if name == "video_shape":
            video_shape = value
        elif name == "tokenizer_options":
            parts["tokenizer"].update(tokenizer_options(value))
        elif name in ROUTES:
            for section in ROUTES[name]:
                parts[section][name] = value
        else:
            hint = " (set by video_shape)" if name in DERIVED_TOKENIZER_KEYS else ""
            allowed = sorted({"video_shape", "tokenizer_options", *ROUTES})
            raise ValueError(f"unknown {what} {name!r}{context}{hint}; allowed: {allowed}")
    checked = {
        section: config_kwargs(config_class, parts[section], f"{what}s", require_all=False)
        for section, config_class in (("tokenizer", TokenizerConfig), ("predictor", PredictorConfig))
    }
    return CausalPerceiverConfig(
        video_shape=video_shape,
        tokenizer=replace(config.tokenizer, **checked["tokenizer"]),
        predictor=replace(config.predictor, **checked["predictor"]),
    )


def tokenizer_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``CausalPerceiverIO(tokenizer_options=...)`` checked: keys of :data:`TOKENIZER_OPTIONS`, typed values."""
    options = dict(options or {})
    for key in options:
        if key not in TOKENIZER_OPTIONS:
            raise ValueError(f"tokenizer_options: unknown key {key!r}; allowed keys: {TOKENIZER_OPTIONS}")
    return config_kwargs(TokenizerConfig, options, "tokenizer_options", require_all=False)


# -- config.json -------------------------------------------------------------------------------------------------


@dataclass
class FlatPerceiverConfig:
    """The flat ``config.json`` that ``CausalPerceiverIO.save_pretrained`` wrote before :class:`CausalPerceiverConfig`
    was nested: ``CausalPerceiverIO``'s keyword arguments. Read-only and frozen: it describes files that exist;
    never add to it."""

    video_shape: tuple[int, int, int, int]
    num_latents: int
    num_latent_channels: int
    num_codes: int
    downsample: int
    code_dim: int
    base_channels: int
    num_quantizers: int
    use_3d_conv: bool
    temporal_downsample: bool
    commitment_weight: float
    diversity_weight: float
    perceptual_weight: float
    num_cross_attention_heads: int
    num_self_attention_heads: int
    num_self_attention_layers: int
    widening_factor: int
    dropout: float
    sequence_length: int
    num_condition_channels: int | None
    label_smoothing: float
    next_frame_weight: float
    context_prediction_weight: float
    tokenizer_options: dict
    mark_changes: bool = False


#: Keys added to the flat format after directories were first written (older ``config.json`` files lack them).
FLAT_ADDED_KEYS = ("mark_changes",)
_FLAT_ONLY_KEYS = frozenset(f.name for f in dataclasses.fields(FlatPerceiverConfig)) - CONFIG_FIELDS


def is_flat_config(data: Mapping[str, Any]) -> bool:
    """Whether a ``config.json`` (without ``"class"``) is in the flat format written before the nested config."""
    return not {"tokenizer", "predictor"} & set(data) and bool(_FLAT_ONLY_KEYS & set(data))


def config_from_json(data: Mapping[str, Any], source: Any) -> CausalPerceiverConfig:
    """A ``CausalPerceiverIO`` ``config.json`` (without ``"class"``), nested or flat, checked key by key.

    Unknown or missing keys and values of the wrong type raise ``ValueError`` naming ``source``, the section and
    the key (``config.json: predictor: missing key 'num_latents'``), and so does a tokenizer ``in_channels`` or
    ``frame_size`` that disagrees with ``video_shape``. A flat config (see :class:`FlatPerceiverConfig`) may lack
    the keys added to it later (:data:`FLAT_ADDED_KEYS`: their defaults apply, as then).
    """
    if is_flat_config(data):
        flat = config_kwargs(FlatPerceiverConfig, data, source, optional=FLAT_ADDED_KEYS)
        return with_arguments(CausalPerceiverConfig(), flat)
    config = CausalPerceiverConfig(**config_kwargs(CausalPerceiverConfig, data, source, ADDED_CONFIG_KEYS))
    for key in DERIVED_TOKENIZER_KEYS:
        given, expected = data["tokenizer"][key], getattr(config.tokenizer, key)
        if (tuple(given) if isinstance(given, list) else given) != expected:
            raise ValueError(
                f"{source}: tokenizer: key {key!r} must match video_shape {config.video_shape}: "
                f"expected {list(expected) if isinstance(expected, tuple) else expected}, got {given!r}"
            )
    return config


def as_frame_size(value: Any) -> tuple[int, int]:
    """``frame_size``: an int (square frames) or ``(H, W)`` → ``(H, W)``; ``ValueError`` naming it otherwise."""
    size = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not (
        isinstance(size, list | tuple)
        and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)
    ):
        raise ValueError(f"frame_size must be an integer >= 1 or (H, W), got {value!r}")
    return tuple(size)
