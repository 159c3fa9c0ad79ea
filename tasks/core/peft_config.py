"""The ``peft`` config section and the one table of which option each PEFT method reads.

:data:`METHOD_OPTIONS` is read by config validation (an option the chosen method does not read is refused), by the
method comparison (which options carry over from the configured method to another) and by
``tasks.training.methods`` (the keyword each option becomes in the method's peft config).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    """A config section: unknown keys are refused, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


PeftMethod = Literal["lora", "ia3", "prompt_tuning", "prefix_tuning", "loha", "lokr", "vera", "bottleneck", "full"]

#: Method -> {option of the ``peft`` section it reads -> the keyword that option becomes in its peft/adapters config}.
METHOD_OPTIONS: dict[str, dict[str, str]] = {
    "lora": {"target_modules": "target_modules", "r": "r", "alpha": "lora_alpha", "dropout": "lora_dropout",
             "use_dora": "use_dora", "use_rslora": "use_rslora"},
    "ia3": {"target_modules": "target_modules", "feedforward_modules": "feedforward_modules"},
    "loha": {"target_modules": "target_modules", "r": "r", "alpha": "alpha", "dropout": "rank_dropout"},
    "lokr": {"target_modules": "target_modules", "r": "r", "alpha": "alpha", "dropout": "rank_dropout"},
    "vera": {"target_modules": "target_modules", "r": "r", "dropout": "vera_dropout"},
    "prompt_tuning": {"num_virtual_tokens": "num_virtual_tokens", "prompt_init": "prompt_tuning_init"},
    "prefix_tuning": {"num_virtual_tokens": "num_virtual_tokens"},
    "bottleneck": {"bottleneck": "bottleneck", "reduction_factor": "reduction_factor"},
    "full": {},
}
#: Every option some method reads. One set (to a value other than its default) for a method that does not read it is
#: refused: ``peft.r: 16`` with ``ia3`` would otherwise train something other than what the config says.
METHOD_SPECIFIC: tuple[str, ...] = tuple(dict.fromkeys(o for opts in METHOD_OPTIONS.values() for o in opts))


def methods_reading(option: str) -> tuple[str, ...]:
    """The methods whose config reads ``option``."""
    return tuple(m for m, opts in METHOD_OPTIONS.items() if option in opts)


def shared_between(source: str, target: str) -> tuple[str, ...]:
    """Options both methods read: what a comparison carries over from the configured method to another."""
    return tuple(o for o in METHOD_OPTIONS[target] if o in METHOD_OPTIONS[source])


class PeftConfig(Section):
    """What is trained on top of the frozen base; ``tasks/training/methods.py`` turns it into a peft/adapters setup
    through :data:`METHOD_OPTIONS`."""

    method: PeftMethod = Field(
        "lora", description="lora, ia3, prompt_tuning, prefix_tuning, loha, lokr, vera (peft); bottleneck "
        "(AdapterHub adapters); full (every weight trained: the reference the others are measured against)")
    r: int = Field(8, le=4096, description="rank of lora, loha, lokr and vera")
    alpha: float = Field(16.0, description="scaling of lora, loha and lokr")
    dropout: float = Field(0.0, description="dropout of lora and vera; rank dropout of loha and lokr (lora with "
                           "dropout trains about 2.5x slower on a CPU; early stopping guards against overfitting)")
    target_modules: list[str] = Field(default_factory=lambda: ["all-linear"],
                                      description="linear layers lora, ia3, loha, lokr and vera attach to, by name "
                                      "(e.g. [query, value]); [all-linear]: every linear layer but the output head")
    use_dora: bool = Field(False, description="lora only: weight-decomposed LoRA (DoRA)")
    use_rslora: bool = Field(False, description="lora only: rank-stabilised scaling alpha/sqrt(r)")
    feedforward_modules: list[str] = Field(
        default_factory=list, description="ia3 only: the target_modules that are feed-forward layers (scaled on "
        "their input), e.g. [output.dense]")
    num_virtual_tokens: int = Field(20, le=4096, description="prompt_tuning and prefix_tuning: learned virtual tokens")
    prompt_init: Literal["sample_vocab", "random"] = Field(
        "sample_vocab", description="prompt_tuning only: start the virtual tokens from the embeddings of sampled "
        "vocabulary tokens (Lester et al. 2021: better than random) or at random")
    bottleneck: Literal["pfeiffer", "houlsby"] = Field(
        "pfeiffer", description="bottleneck only: pfeiffer (one adapter after the feed-forward block) or houlsby "
        "(after attention and after the feed-forward block)")
    reduction_factor: int = Field(16, description="bottleneck only: hidden size / bottleneck size")

    @model_validator(mode="after")
    def _check(self) -> "PeftConfig":
        if self.r <= 0:
            raise ValueError(f"peft.r must be a positive integer (got {self.r}); typical values are 4, 8 or 16")
        if self.alpha <= 0:
            raise ValueError(f"peft.alpha must be > 0 (got {self.alpha}); a common choice is 2 * r")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"peft.dropout must be in [0, 1) (got {self.dropout})")
        if not self.target_modules:
            raise ValueError("peft.target_modules must name at least one module, e.g. [query, value]")
        if self.num_virtual_tokens <= 0:
            raise ValueError(f"peft.num_virtual_tokens must be a positive integer (got {self.num_virtual_tokens}), "
                             "e.g. 20")
        if self.reduction_factor <= 0:
            raise ValueError(f"peft.reduction_factor must be a positive integer (got {self.reduction_factor}), "
                             "e.g. 16")
        extra = sorted(set(self.feedforward_modules) - set(self.target_modules))
        if extra:
            raise ValueError(f"peft.feedforward_modules {extra} must also be in peft.target_modules "
                             f"{self.target_modules}; add them there")
        defaults = PeftConfig.model_fields
        for option in METHOD_SPECIFIC:
            readers = methods_reading(option)
            value, default = getattr(self, option), defaults[option].get_default(call_default_factory=True)
            if self.method not in readers and value != default:
                raise ValueError(f"peft.{option} applies to method {' or '.join(readers)} only, not "
                                 f"{self.method}; remove it or set peft.method: {readers[0]}")
        return self


# Short names accepted by compare.methods / --methods for a method variant.
METHOD_ALIASES: dict[str, dict[str, Any]] = {
    "dora": {"method": "lora", "use_dora": True},
    "rslora": {"method": "lora", "use_rslora": True},
    "houlsby": {"method": "bottleneck", "bottleneck": "houlsby"},
    "pfeiffer": {"method": "bottleneck", "bottleneck": "pfeiffer"},
}
