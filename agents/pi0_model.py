"""π0 checkpoints through transformers' own `PI0ForConditionalGeneration`: loading by path,
normalisation statistics, inputs, and flow-matching sampling that physteer can tap and steer.

A π0 model is a PaliGemma VLM (the prefix: image tokens, then the instruction) whose KV cache
an action expert (a Gemma "DiT") attends to while it denoises a chunk of actions from noise in
`num_inference_steps` Euler steps of flow matching. physteer drives it through `PI0Backend`:

- Loading: a local folder with `config.json` of model_type "pi0" (never remote code), its
  tokenizer, and the dataset's normalisation statistics in `processor_config.json` (the
  `PI0Processor`'s own fields: state_mean, state_std, actions_mean, actions_std), refused
  without them: un-normalised actions would move the arm by nonsense.
- Inputs: the frame resized (bicubic, antialiased) to the vision tower's size, scaled to
  [-1, 1] as PI0ImageProcessor does (ImageNet-standard mean and std 0.5); the prompt is the
  processor's: `<image>` × tokens per image, BOS, the instruction, a newline (left-padded here,
  so the last position is the newline in every row). The env's 17-float state is normalised
  and zero-padded to `max_state_dim`; the model's actions are de-normalised and the env's 4
  (dx, dy, dz, grip) read from the first dimensions of its padded action space.
- Sampling: `sample` runs the prefix once through `prefix` (a small module whose forward takes
  `input_ids`, so taps and steering find the image positions as on any VLM), then the expert
  `steps` times on the cropped cache, from the noise it is given (the agent seeds it).
- Layers: the expert reads each VLM layer's keys and values, which that layer computes from its
  input, so the output of the VLM's last layer reaches no action (measured: an edit there leaves
  every action bit-identical). `layers` (what taps and interventions index) are the VLM's
  decoder layers but the last.

    backend = load_pi0("runs/pi0")                       # refuses a folder without statistics
    actions = backend.sample(frames, texts, states, noise)  # B × chunk × 4, env units
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.action_tokens import ENV_STATE_SIZE
from agents.pi0_folder import (
    ENV_ACTION_SIZE,
    PI0Stats,
    check_pi0_folder,
    pi0_dir,
    processor_doc,
)
from agents.token_groups import token_groups

IMAGE_TOKEN = "<image>"
#: Ids the expert stream's positions carry for hooks (never vocabulary ids): the state token,
#: then the action tokens, which taps and edits on that stream address as its "image" positions.
EXPERT_STATE_ID, EXPERT_ACTION_ID = -2, -1


class PI0Prefix(torch.nn.Module):
    """The VLM prefix pass as a module whose forward takes `input_ids` (hooks record them)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.pi0 = [model]  # a list: not a submodule, so the PI0 weights are not re-registered
        self.config = model.config.vlm_config

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, pixel_attention_mask: torch.Tensor,
                attention_mask: torch.Tensor) -> Any:  # fmt: skip
        """The prefix's KV cache (embed the image into its token positions, run the VLM)."""
        inner = self.pi0[0].model
        embeds = inner.embed_prefix(input_ids, pixel_values, pixel_attention_mask)
        return inner.vlm(inputs_embeds=embeds, attention_mask=attention_mask,
                         position_ids=(attention_mask.cumsum(-1) - 1).clamp_min(0),
                         token_type_ids=torch.zeros_like(input_ids), use_cache=True).cache  # fmt: skip


class ExpertStep(torch.nn.Module):
    """One denoising step of the action expert as a module whose forward takes `input_ids`
    (sentinels marking the state and action tokens), so that hooks find the action positions."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.pi0 = [model]  # not a submodule (see PI0Prefix)
        self.config = model.config.dit_config

    def forward(self, input_ids: torch.Tensor, **inputs: Any) -> torch.Tensor:
        """The predicted velocity (B × chunk × max_action_dim); `inputs` go to PI0's forward."""
        return self.pi0[0](**inputs).logits


class PI0ExpertView:
    """The action expert's stream, for taps, SAEs, steering and monitors: its decoder layers,
    and as its "image" positions the action tokens (the state token left out), at every
    denoising step (a tap keeps the last step's: the one that sets the actions)."""

    model_type = "pi0-expert"

    def __init__(self, backend: PI0Backend) -> None:
        self.policy = backend
        self.name = f"{backend.name}/expert"
        self.layers = backend.model.model.dit.layers
        self.n_layers = len(self.layers)
        self.hidden_size = int(backend.model.config.dit_config.hidden_size)
        self.image_token_id = EXPERT_ACTION_ID
        self.image_check: dict[str, Any] | None = None

    @property
    def device(self) -> torch.device:
        return self.policy.device

    def check_image_reaches(self, layer: int) -> dict[str, Any]:
        """A changed frame must change the action tokens at expert layer `layer` (the image
        reaches the expert through the VLM's cache); ValueError otherwise. Recorded once."""
        from agents.image_check import MIN_CHANGE, probe_frames
        from agents.taps import ResidualTap

        if self.image_check is not None and self.image_check.get("layer") == layer:
            return self.image_check
        b = self.policy
        noise = torch.zeros(1, b.chunk_size, b.action_dim)
        states = np.zeros((1, ENV_STATE_SIZE), np.float32)
        seen = []
        with ResidualTap(layer, include_last=False).attach(self) as tap:
            for frame in probe_frames():
                b.sample([frame], ["Put the object in the bin."], states, noise, steps=1)
                seen.append(tap.latest_batch.clone())
        change = float((seen[0] - seen[1]).abs().max())
        if change < MIN_CHANGE:
            raise ValueError(f"model {self.name}: the action tokens at expert layer {layer} do not change when "
                             f"the frame changes (largest change {change:.2g}); physteer refuses to tap them")  # fmt: skip
        self.image_check = {"layer": layer, "frame_change": {layer: change}}
        return self.image_check

    def token_groups(self) -> dict[str, torch.Tensor]:
        """No text, state or slot groups on this stream (only "image" = actions, "all", "last")."""
        return {}

    def hook_view(self) -> tuple[torch.nn.Module, torch.nn.ModuleList]:
        """(the denoising step module, the expert's decoder layers)."""
        return self.policy.expert_step, self.layers


class PI0Backend:
    """A loaded π0 checkpoint (see module docstring). Taps and interventions attach to it as to
    a VLMBackend: its decoder layers are the VLM's, its hooked model the prefix pass."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, stats: PI0Stats, name: str = "pi0") -> None:  # fmt: skip
        self.model, self.tokenizer, self.stats, self.name = model.eval(), tokenizer, stats, name
        cfg = model.config
        self.model_type = "pi0"
        self.chunk_size, self.action_dim = int(cfg.chunk_size), int(cfg.max_action_dim)
        self.state_dim, self.default_steps = int(cfg.max_state_dim), int(cfg.num_inference_steps)
        # Actions executed per decision unless an agent is told otherwise (LeRobot's π0 calls it
        # n_action_steps; read from the checkpoint's processor_config.json by load_pi0).
        self.n_action_steps = self.chunk_size
        # The scale of the starting noise unless an agent is told otherwise (processor_config.json's
        # "noise_scale", physteer's own key; 1 is π0's sampling, < 1 samples nearer the flow's mode).
        self.noise_scale = 1.0
        # How much of each executed action the previous decision's overlapping prediction makes
        # (processor_config.json's "blend", physteer's own key; 0: none, π0's own execution).
        self.blend = 0.0
        if self.action_dim < ENV_ACTION_SIZE:
            raise ValueError(f"π0 checkpoint {name}: max_action_dim={self.action_dim} is smaller than the env's "
                             f"{ENV_ACTION_SIZE} action dimensions (dx, dy, dz, grip)")  # fmt: skip
        if self.state_dim < ENV_STATE_SIZE:
            raise ValueError(f"π0 checkpoint {name}: max_state_dim={self.state_dim} is smaller than the env's "
                             f"{ENV_STATE_SIZE} state dimensions")  # fmt: skip
        vision = cfg.vlm_config.vision_config
        self.image_size = int(vision.image_size)
        self.image_tokens = (self.image_size // int(vision.patch_size)) ** 2
        self.image_token_id = int(cfg.vlm_config.image_token_id)
        if self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) != self.image_token_id:
            raise ValueError(f"π0 checkpoint {name}: its tokenizer's {IMAGE_TOKEN} is not the config's image_token_id "
                             f"{self.image_token_id}")  # fmt: skip
        self.prefix = PI0Prefix(model)
        self.expert_step = ExpertStep(model)
        # The expert attends to each VLM layer's keys and values, computed from that layer's
        # input: the last layer's output reaches no action, so taps and edits act at the others.
        self.layers = model.model.vlm.language_model.layers[:-1]
        if not len(self.layers):
            raise ValueError(
                f"π0 checkpoint {name}: its VLM has one decoder layer, whose output no action reads"
            )
        self.expert_layers = model.model.dit.layers
        self.hidden_size = int(cfg.vlm_config.text_config.hidden_size)
        self.n_layers = len(self.layers)
        self.tokenizer.padding_side = "left"
        self.image_check: dict[str, Any] | None = None
        self.expert = PI0ExpertView(self)

    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype (inputs are cast to it; the flow is integrated in float32)."""
        return next(self.model.parameters()).dtype

    def token_groups(self) -> dict[str, torch.Tensor]:
        """agents.token_groups of the tokenizer (the "text" positions: the instruction)."""
        if not hasattr(self, "_groups"):
            self._groups = token_groups(self.tokenizer)
        return self._groups

    def hook_view(self) -> tuple[torch.nn.Module, torch.nn.ModuleList]:
        """(the module whose forward takes input_ids, the decoder layers) for agents.hooks."""
        return self.prefix, self.layers

    # --- inputs ---------------------------------------------------------------------------
    def pixel_values(self, frames: list[np.ndarray] | np.ndarray) -> torch.Tensor:
        """(B × 1 × 3 × S × S) in [-1, 1]: bicubic antialiased resize to the vision tower's S."""
        x = (
            torch.as_tensor(np.stack([np.asarray(f) for f in frames])).permute(0, 3, 1, 2).float()
            / 255.0
        )
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = torch.nn.functional.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic",
                                                align_corners=False, antialias=True).clamp(0, 1)  # fmt: skip
        return ((x - 0.5) / 0.5).unsqueeze(1)

    def prepare(self, frames: list[np.ndarray] | np.ndarray, texts: str | list[str]) -> dict[str, torch.Tensor]:  # fmt: skip
        """Prefix inputs: input_ids and attention_mask (left-padded), pixel values and mask."""
        texts = [texts] * len(frames) if isinstance(texts, str) else list(texts)
        bos = self.tokenizer.bos_token or ""
        prompts = [f"{IMAGE_TOKEN * self.image_tokens}{bos}{t}\n" for t in texts]
        tok = self.tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=False)
        device = self.device
        return {"input_ids": tok["input_ids"].to(device), "attention_mask": tok["attention_mask"].to(device),
                "pixel_values": self.pixel_values(frames).to(device, self.dtype),
                "pixel_attention_mask": torch.ones(len(frames), 1, dtype=torch.bool, device=device)}  # fmt: skip

    def state_input(self, states: np.ndarray) -> torch.Tensor:
        """(B × max_state_dim) normalised env states, zero-padded."""
        s = (np.asarray(states, dtype=np.float32) - self.stats.state_mean) / self.stats.state_std
        out = torch.zeros(len(s), self.state_dim)
        out[:, :ENV_STATE_SIZE] = torch.from_numpy(s)
        return out.to(self.device, self.dtype)

    def env_actions(self, actions: torch.Tensor) -> np.ndarray:
        """(B × chunk × 4) env actions from the model's (B × chunk × max_action_dim) output."""
        a = actions[..., :ENV_ACTION_SIZE].float().cpu().numpy()
        return a * self.stats.actions_std + self.stats.actions_mean

    # --- running --------------------------------------------------------------------------
    @torch.no_grad()
    def prefix_forward(self, frames: list[np.ndarray] | np.ndarray, texts: str | list[str]) -> Any:
        """Run the prefix alone (what taps at the VLM's layers see); returns its cache."""
        return self.prefix(**self.prepare(frames, texts))

    @torch.no_grad()
    def sample(self, frames: list[np.ndarray] | np.ndarray, texts: list[str], states: np.ndarray,
               noise: torch.Tensor, steps: int | None = None) -> np.ndarray:  # fmt: skip
        """Denoise `noise` (B × chunk × max_action_dim) in `steps` Euler steps (default the
        config's) conditioned on the frames, instructions and env states; env actions out."""
        steps = self.default_steps if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"denoising steps={steps!r}: must be an int >= 1")
        inputs = self.prepare(frames, texts)
        cache = self.prefix(**inputs)
        length = cache.get_seq_length()
        state = self.state_input(states)
        x = noise.to(self.device, torch.float32)
        ids = torch.full((len(x), 1 + x.shape[1]), EXPERT_ACTION_ID, device=self.device)
        ids[:, 0] = EXPERT_STATE_ID
        dt = -1.0 / steps
        for k in range(steps):
            t = torch.full((len(x),), 1.0 + k * dt, device=self.device)
            velocity = self.expert_step(input_ids=ids, state=state, noise=x.to(self.dtype), timestep=t,
                                        attention_mask=inputs["attention_mask"], cache=cache).float()  # fmt: skip
            cache.crop(length - cache.get_seq_length())  # drop the expert's tokens
            x = x + dt * velocity
        return self.env_actions(x)


def load_pi0(path: str | Path, device: str = "cpu", dtype: str = "float32") -> PI0Backend:
    """Load a local π0 checkpoint (transformers' PI0ForConditionalGeneration, no remote code).

    Raises:
        ValueError: not a π0 folder, no normalisation statistics, a corrupt weights file, or
            an action / state space smaller than the env's (each named).
    """
    from transformers import AutoTokenizer, PI0ForConditionalGeneration

    from agents.resolve import check_weight_files

    path = pi0_dir(path)
    check_pi0_folder(path)
    stats, doc = PI0Stats.from_folder(path), processor_doc(path)  # before the weights: refuse early
    check_weight_files(path)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = PI0ForConditionalGeneration.from_pretrained(
        path, dtype=getattr(torch, dtype), local_files_only=True
    )
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    backend = PI0Backend(model.to(device), tokenizer, stats, name=path.name)
    backend.n_action_steps = int(doc.get("n_action_steps") or backend.chunk_size)
    backend.noise_scale = float(doc.get("noise_scale", 1.0))
    backend.blend = float(doc.get("blend", 0.0))
    return backend
