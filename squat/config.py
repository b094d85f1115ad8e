"""Typed schema of a run. Hydra validates every composed config against it, so an unknown key or a
wrongly typed value fails at compose time; ``__post_init__`` checks ranges and files before training."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

# conf/ sits beside the package (editable install); absolute so entry points work from any cwd.
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

from squat.quant.config import Choice, QuantConfig


def need(ok: bool, key: str, value: Any, rule: str) -> None:
    """One range check, one message: the key, the value as composed, and what it must be. Written ``not ok``
    style by the callers (``need(x >= 0, ...)``) so that nan, which fails every comparison, is refused too."""
    if not ok:
        raise ValueError(f"{key}={value!r} {rule}")


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def need_positive_int(key: str, value: Optional[int], optional: bool = True) -> None:
    if value is not None or not optional:
        need(value is not None and value >= 1, key, value, "must be a positive integer" + (" or null" if optional else ""))


def model_positions(folder: str) -> Optional[int]:
    """Positions a saved model supports (its config.json), without loading weights; None if unknown (hub id)."""
    f = Path(folder) / "config.json"
    if not f.is_file():
        return None
    cfg = json.loads(f.read_text())
    return cfg.get("max_position_embeddings") or cfg.get("n_positions")


def check_seq_len(seq_len: int, positions: Optional[int], where: str, fix: str) -> None:
    if positions is not None and seq_len > positions:
        raise ValueError(f"data.seq_len={seq_len} exceeds the {positions} positions of {where}: "
                         f"use data.seq_len<={positions}{fix}")


class DataSource(Choice):
    builtin = "builtin"  # CPython's bundled language reference text: offline everywhere
    babylm = "babylm"  # a folder of *.train / *.dev plain-text files
    hf = "hf"  # datasets.load_dataset(name, config)


class EosAfter(Choice):
    document = "document"  # EOS only between the source's documents; lines keep their newline
    line = "line"  # every line (segment) is a document: its newline becomes EOS, so EOS means "utterance starts"


@dataclass
class TokenizerConfig:
    """Byte-level BPE trained on the training split (cached), or any HF tokenizer by ``path``."""

    path: Optional[str] = None
    vocab_size: int = 4096
    min_frequency: int = 2

    def __post_init__(self) -> None:
        if self.path is None and not 256 < self.vocab_size <= 262144:
            raise ValueError(f"data.tokenizer.vocab_size={self.vocab_size} must be in (256, 262144]")
        need_positive_int("data.tokenizer.min_frequency", self.min_frequency, optional=False)
        if self.path is not None and not Path(self.path).is_dir() and not _is_hub_id(self.path):
            raise FileNotFoundError(
                f"data.tokenizer.path={self.path!r} is not a folder: point it at a folder holding tokenizer.json "
                "(e.g. a run's model/ folder) or a hub id, or drop it to train a BPE on the training text")


class TrainData(Choice):
    corpus = "corpus"  # chunks of the data source's training text
    teacher = "teacher"  # LLM-QAT's data-free option: sequences sampled from the (first) teacher, cached


@dataclass
class TeacherSamplesConfig:
    """LLM-QAT's data-free distillation data: each sequence starts from a uniformly random token, continues with
    ``greedy_tokens`` top-1 tokens, then samples from the teacher's softmax (LLM-QAT, Liu et al. 2023, sec. 2.1)."""

    num_sequences: int = 2048
    greedy_tokens: int = 4  # LLM-QAT: the first 3-5 tokens deterministically
    temperature: float = 1.0
    seed: int = 0
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.num_sequences < 1 or self.batch_size < 1 or self.greedy_tokens < 0:
            raise ValueError("data.teacher_samples: num_sequences and batch_size must be positive, greedy_tokens >= 0")
        need(finite(self.temperature) and self.temperature > 0, "data.teacher_samples.temperature", self.temperature,
             "must be a positive number")
        need(self.seed >= 0, "data.teacher_samples.seed", self.seed, "must be >= 0")


@dataclass
class DataConfig:
    source: DataSource = DataSource.builtin
    train_dir: Optional[str] = None  # babylm: folder with *.train
    dev_dir: Optional[str] = None  # babylm: folder with *.dev
    hf_name: Optional[str] = None  # hf: dataset name or local script/folder
    hf_config: Optional[str] = None
    hf_text_field: str = "text"
    hf_train_split: str = "train"
    hf_val_split: str = "validation"
    hf_data_files: Optional[Dict[str, Any]] = None  # hf: e.g. {train: a.txt, validation: b.txt} with hf_name=text
    val_fraction: float = 0.1  # builtin: share of paragraphs held out (every k-th, deterministic)
    max_train_chars: Optional[int] = None  # truncate the training text (quick runs)
    max_val_chars: Optional[int] = None
    max_val_chunks: Optional[int] = None  # in-run validation on this many chunks spread over the split
    eos_after: EosAfter = EosAfter.document  # line: what line-by-line scoring and BLiMP condition on (after EOS)
    train_data: TrainData = TrainData.corpus  # qat: corpus text, or teacher-generated sequences (LLM-QAT data-free)
    teacher_samples: TeacherSamplesConfig = field(default_factory=TeacherSamplesConfig)
    seq_len: int = 128
    batch_size: int = 16
    eval_batch_size: int = 32
    num_workers: int = 0
    cache_dir: str = "${oc.env:SQUAT_CACHE,${oc.env:HOME}/.cache/squat}"
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)

    def __post_init__(self) -> None:
        self.source = DataSource(self.source)
        self.eos_after = EosAfter(self.eos_after)
        self.train_data = TrainData(self.train_data)
        if self.seq_len < 2:
            raise ValueError(f"data.seq_len={self.seq_len} must be at least 2")
        if self.max_val_chunks is not None and self.max_val_chunks < 1:
            raise ValueError(f"data.max_val_chunks={self.max_val_chunks} must be positive (or null for all)")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("data.batch_size and data.eval_batch_size must be positive")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction={self.val_fraction} must lie in (0, 1)")
        need_positive_int("data.max_train_chars", self.max_train_chars)
        need_positive_int("data.max_val_chars", self.max_val_chars)
        need(self.num_workers >= 0, "data.num_workers", self.num_workers, "must be >= 0 (0 loads in the main process)")
        if self.source == DataSource.babylm:
            for key in ("train_dir", "dev_dir"):
                d = getattr(self, key)
                if d is None or not Path(d).is_dir():
                    raise FileNotFoundError(
                        f"data.{key}={d!r} is not a folder: point it at BabyLM text, "
                        f"e.g. data.{key}=/path/to/babylm_10M (files *.train / *.dev)"
                    )
        if self.source == DataSource.hf and not self.hf_name:
            raise ValueError("data=hf needs data.hf_name (e.g. data.hf_name=wikitext data.hf_config=wikitext-2-raw-v1)")


class ModelFamily(Choice):
    llama = "llama"
    gpt2 = "gpt2"


@dataclass
class ModelConfig:
    """A preset architecture trained from scratch, or any causal LM by ``pretrained`` path/hub id."""

    name: str = "tiny_llama"
    family: ModelFamily = ModelFamily.llama
    pretrained: Optional[str] = None
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 768
    max_position_embeddings: int = 512
    tie_word_embeddings: bool = True

    def __post_init__(self) -> None:
        self.family = ModelFamily(self.family)
        for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings"):
            need_positive_int(f"model.{key}", getattr(self, key), optional=False)
        if self.pretrained is not None and not Path(self.pretrained).is_dir() and not _is_hub_id(self.pretrained):
            raise FileNotFoundError(f"model.pretrained={self.pretrained!r} is not a folder: pass a save_pretrained "
                                    "folder (e.g. a run's model/) or a hub id")
        if self.pretrained is None and self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size={self.hidden_size} must be divisible by model.num_heads={self.num_heads}"
            )


class Stage(Choice):
    pretrain = "pretrain"  # train the full-precision teacher
    qat = "qat"  # train the quantized student from a teacher


class KLDirection(Choice):
    forward = "forward"  # KL(teacher || student), the paper's
    reverse = "reverse"
    jsd = "jsd"


@dataclass
class StageConfig:
    name: Stage = Stage.pretrain
    lr: float = 3e-3
    weight_decay: float = 0.1
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    # qat: the FP checkpoint (a save_pretrained folder) the student starts from; also teacher #1
    teacher: Optional[str] = None
    # qat: further teachers whose logits join the ensemble average (paper: LLaMA-360M, GPT2-705M)
    extra_teachers: List[str] = field(default_factory=list)
    teacher_dtype: str = "fp32"

    def __post_init__(self) -> None:
        self.name = Stage(self.name)
        need(finite(self.lr) and self.lr > 0, "stage.lr", self.lr, "must be a positive number (e.g. 1e-3)")
        need(finite(self.weight_decay) and self.weight_decay >= 0, "stage.weight_decay", self.weight_decay,
             "must be a number >= 0")
        need(len(self.betas) == 2 and all(finite(b) and 0 <= b < 1 for b in self.betas), "stage.betas",
             list(self.betas), "must be two numbers in [0, 1), e.g. [0.9,0.95]")
        need(self.warmup_steps >= 0, "stage.warmup_steps", self.warmup_steps, "must be >= 0")
        need(0 <= self.min_lr_ratio <= 1, "stage.min_lr_ratio", self.min_lr_ratio, "must lie in [0, 1]")
        if self.teacher_dtype not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"stage.teacher_dtype={self.teacher_dtype!r}: use fp32, bf16 or fp16")
        if self.name == Stage.qat:
            if not self.teacher:
                raise ValueError(
                    "stage=qat needs stage.teacher=<folder saved by a pretrain run>, "
                    "e.g. stage.teacher=outputs/runs/<date>/<time>/model"
                )
        for t in ([self.teacher] if self.teacher else []) + list(self.extra_teachers):
            if not _is_hub_id(t) and not Path(t).is_dir():
                raise FileNotFoundError(
                    f"teacher {t!r} is not a folder: run `squat-train stage=pretrain` first and pass its "
                    f"`model/` folder, or give a hub id"
                )


def _is_hub_id(s: str) -> bool:
    return "/" in s and not s.startswith((".", "/", "~")) and not Path(s).exists() and s.count("/") == 1


@dataclass
class MethodConfig:
    """Quantizer family plus the loss recipe (paper section 4). All methods share the distillation."""

    name: str = "squat"
    quantizer: str = "lsq"  # lsq | pact | nipq | llmqat
    distill_gamma: float = 0.5
    temperature: float = 2.0
    kl_direction: KLDirection = KLDirection.forward
    r_entropy: float = 0.5
    r_distribution: float = 1.0
    entropy_form: str = "code"  # code | paper
    distribution_form: str = "corrected"  # corrected | paper
    # nipq only: final share of training steps with hard quantization after the noise phase (NIPQ's ft_epoch)
    hard_fraction: Optional[float] = None

    def __post_init__(self) -> None:
        self.kl_direction = KLDirection(self.kl_direction)
        if self.quantizer not in ("lsq", "pact", "nipq", "llmqat"):
            raise ValueError(f"method.quantizer={self.quantizer!r}: use lsq, pact, nipq or llmqat")
        if self.quantizer == "nipq" and self.hard_fraction is None:
            self.hard_fraction = 0.1
        if self.hard_fraction is not None:
            if self.quantizer != "nipq":
                raise ValueError(f"method.hard_fraction={self.hard_fraction} applies to NIPQ's noise phase only "
                                 f"(method.quantizer=nipq); method.quantizer={self.quantizer} always trains hard")
            if not 0.0 <= self.hard_fraction <= 1.0:
                raise ValueError(f"method.hard_fraction={self.hard_fraction} must lie in [0, 1]")
        if not 0.0 <= self.distill_gamma <= 1.0:
            raise ValueError(f"method.distill_gamma={self.distill_gamma} must lie in [0, 1]")
        need(finite(self.temperature) and self.temperature > 0, "method.temperature", self.temperature,
             "must be a positive number")
        for key in ("r_entropy", "r_distribution"):  # a negative ratio would reward the loss it is meant to lower
            v = getattr(self, key)
            need(finite(v) and v >= 0, f"method.{key}", v, "must be a number >= 0 (0 switches the loss off)")
        if self.entropy_form not in ("code", "paper"):
            raise ValueError(f"method.entropy_form={self.entropy_form!r}: use code or paper")
        if self.distribution_form not in ("corrected", "paper"):
            raise ValueError(f"method.distribution_form={self.distribution_form!r}: use corrected or paper")


PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "32", "16", "bf16", "64")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")


@dataclass
class TrainerConfig:
    """The subset of ``lightning.Trainer`` arguments the project uses, typed."""

    max_steps: int = 400
    max_epochs: int = -1
    max_time: Optional[str] = None  # "DD:HH:MM:SS"
    val_check_interval: Optional[int] = 200
    check_val_every_n_epoch: Optional[int] = None
    limit_val_batches: Optional[float] = None
    limit_train_batches: Optional[float] = None
    log_every_n_steps: int = 10
    gradient_clip_val: float = 1.0
    accumulate_grad_batches: int = 1
    precision: str = "32-true"
    accelerator: str = "cpu"
    devices: int = 1  # processes per node (DDP when > 1)
    num_nodes: int = 1
    strategy: str = "auto"  # e.g. ddp (gloo on CPU, NCCL on GPU)
    deterministic: bool = False
    enable_progress_bar: bool = True
    num_sanity_val_steps: int = 0

    def __post_init__(self) -> None:
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"trainer.max_steps={self.max_steps} must be positive or -1")
        need(self.max_epochs == -1 or self.max_epochs >= 1, "trainer.max_epochs", self.max_epochs,
             "must be positive or -1")
        for key in ("val_check_interval", "check_val_every_n_epoch"):
            need_positive_int(f"trainer.{key}", getattr(self, key))
        for key in ("log_every_n_steps", "accumulate_grad_batches", "devices", "num_nodes"):
            need_positive_int(f"trainer.{key}", getattr(self, key), optional=False)
        for key in ("limit_val_batches", "limit_train_batches"):  # a share in (0, 1] or a number of batches
            v = getattr(self, key)
            need(v is None or (finite(v) and v > 0 and (v <= 1 or float(v).is_integer())), f"trainer.{key}", v,
                 "must be a share in (0, 1] or a whole number of batches (validation runs before and after training)")
        need(finite(self.gradient_clip_val) and self.gradient_clip_val >= 0, "trainer.gradient_clip_val",
             self.gradient_clip_val, "must be a number >= 0 (0 turns clipping off)")
        need(self.precision in PRECISIONS, "trainer.precision", self.precision, f"is not one of {list(PRECISIONS)}")
        need(self.accelerator in ACCELERATORS, "trainer.accelerator", self.accelerator,
             f"is not one of {list(ACCELERATORS)}")
        need(self.max_time is None or re.fullmatch(r"\d+:\d{1,2}:\d{1,2}:\d{1,2}", self.max_time) is not None,
             "trainer.max_time", self.max_time, 'must read "DD:HH:MM:SS", e.g. trainer.max_time=00:01:30:00')
        from lightning.pytorch.strategies import StrategyRegistry

        need(self.strategy == "auto" or self.strategy in StrategyRegistry, "trainer.strategy", self.strategy,
             "is not a Lightning strategy: use auto or ddp (gloo on CPU, NCCL on GPU)")
        if self.max_steps == -1 and self.max_epochs == -1:
            raise ValueError(
                "the cosine schedule needs a length: set trainer.max_steps (or trainer.max_epochs); "
                "trainer.max_time only adds a wall-clock cap"
            )


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    quant: QuantConfig = field(default_factory=QuantConfig.schema)
    method: MethodConfig = field(default_factory=MethodConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: Dict[str, Any] = field(default_factory=dict)
    callbacks: Dict[str, Any] = field(default_factory=dict)
    seed: int = 1234
    # resume: a Lightning .ckpt file, or "last" for this run folder's checkpoints/last.ckpt (docs/reliability.md)
    ckpt_path: Optional[str] = None
    overwrite: bool = False  # start afresh in a run folder that already holds a run's outputs (they are deleted)
    output_dir: str = "${hydra:runtime.output_dir}"
    torch_threads: Optional[int] = None
    tags: List[str] = field(default_factory=list)  # attached to the wandb run

    def __post_init__(self) -> None:
        self.quant.check_name()
        need(0 <= self.seed < 2**32, "seed", self.seed, "must lie in [0, 2^32)")
        need_positive_int("torch_threads", self.torch_threads)
        if self.ckpt_path not in (None, "last") and not Path(self.ckpt_path).is_file():
            raise FileNotFoundError(f"ckpt_path={self.ckpt_path!r} does not exist: pass a Lightning .ckpt file, or "
                                    "ckpt_path=last to resume this run folder's last checkpoint")
        if self.ckpt_path is not None and self.overwrite:
            raise ValueError(f"ckpt_path={self.ckpt_path} resumes but overwrite=true deletes the run folder: "
                             "choose one")
        if self.data.train_data == TrainData.teacher and self.stage.name != Stage.qat:
            raise ValueError("data.train_data=teacher samples distillation data from a teacher: it needs stage=qat "
                             "stage.teacher=<teacher folder>")
        if self.stage.name == Stage.pretrain and not self.quant.is_float:
            bits = [f"quant.{k}={getattr(self.quant, k)}" for k in ("weight_bits", "act_bits", "probs_bits")
                    if getattr(self.quant, k) is not None]
            raise ValueError(
                f"stage=pretrain trains the float teacher but {' '.join(bits)} is set (quant={self.quant.name}): "
                "use stage=qat stage.teacher=<teacher folder> for a quantized student"
            )
        if self.stage.name == Stage.qat:
            for t in [self.stage.teacher] + list(self.stage.extra_teachers):
                check_seq_len(self.data.seq_len, model_positions(t), f"the teacher {t}",
                              " (the student is a copy of the teacher)")
            tok = self.data.tokenizer.path
            if tok is not None and Path(tok).resolve() != Path(self.stage.teacher).resolve():
                raise ValueError(
                    f"data.tokenizer.path={tok!r} is not used by stage=qat: the student is a copy of the teacher and "
                    f"keeps its tokenizer (stage.teacher={self.stage.teacher}), so both share one vocabulary; "
                    "drop data.tokenizer.path")
        elif self.model.pretrained is not None:
            check_seq_len(self.data.seq_len, model_positions(self.model.pretrained),
                          f"model.pretrained={self.model.pretrained}", "")
        else:
            check_seq_len(self.data.seq_len, self.model.max_position_embeddings,
                          f"model={self.model.name} (model.max_position_embeddings)",
                          " or raise model.max_position_embeddings")


@dataclass
class EvalConfig:
    """``squat-eval``: perplexity and bits per byte of a saved model on a data config's eval split."""

    model_path: str = "???"
    data: DataConfig = field(default_factory=DataConfig)
    max_batches: Optional[int] = None
    blimp_dir: Optional[str] = None  # e.g. ../shared/data/blimp_filtered_sample
    blimp_max_pairs: Optional[int] = None  # per phenomenon, spread evenly over each file
    line_eval_max_lines: Optional[int] = 5000  # line-by-line bpb on every k-th eval line; null skips it
    harness_tasks: List[str] = field(default_factory=list)  # lm-evaluation-harness tasks (pip install -e ".[lmeval]")
    harness_blimp: bool = False  # also run blimp_dir's BLiMP through the harness (a local task definition)
    harness_limit: Optional[int] = None  # documents per harness task (quick runs)
    output_dir: str = "${hydra:runtime.output_dir}"

    def __post_init__(self) -> None:
        if not Path(self.model_path).is_dir():
            raise FileNotFoundError(f"model_path={self.model_path!r} is not a folder: pass a run's model/ folder")
        if self.blimp_dir is not None and not Path(self.blimp_dir).is_dir():
            raise FileNotFoundError(f"blimp_dir={self.blimp_dir!r} is not a folder of BLiMP *.json files")
        for key in ("max_batches", "blimp_max_pairs", "line_eval_max_lines", "harness_limit"):
            need_positive_int(key, getattr(self, key))
        check_seq_len(self.data.seq_len, model_positions(self.model_path), f"model_path={self.model_path}", "")
        tok = self.data.tokenizer.path
        if tok is not None and Path(tok).resolve() != Path(self.model_path).resolve():
            raise ValueError(f"data.tokenizer.path={tok!r} is not used by squat-eval: a model is scored with its own "
                             f"tokenizer (model_path={self.model_path}); drop data.tokenizer.path")
        if self.harness_blimp and self.blimp_dir is None:
            raise ValueError("harness_blimp=true runs blimp_dir's files through lm-evaluation-harness: set blimp_dir")
        if self.harness_tasks or self.harness_blimp:
            try:
                import lm_eval  # noqa: F401
            except ImportError:
                raise ImportError('harness_tasks / harness_blimp need lm-evaluation-harness: pip install -e ".[lmeval]"')


@dataclass
class GenerateConfig:
    """``squat-generate``: greedy text from an integer export through the C runtime (squat.kernels.runtime)."""

    export_dir: str = "???"  # a run's export/ folder (manifest.json + quantized.safetensors)
    prompt: str = "???"
    max_new_tokens: int = 32
    tokenizer: Optional[str] = None  # default: the export folder, else the run's model/ beside it
    max_seq: Optional[int] = None  # runtime buffers; default prompt + max_new_tokens
    stop_at_eos: bool = True

    def __post_init__(self) -> None:
        if not Path(self.export_dir).is_dir():
            raise FileNotFoundError(f"export_dir={self.export_dir!r} is not a folder: pass a run's export/ folder")
        need_positive_int("max_new_tokens", self.max_new_tokens, optional=False)
        need_positive_int("max_seq", self.max_seq)
        if self.tokenizer is not None and not Path(self.tokenizer).is_dir():
            raise FileNotFoundError(f"tokenizer={self.tokenizer!r} is not a folder: pass the run's model/ folder")


def job_name(*, _root_) -> str:
    """Short, override-safe folder name of a job: ``qat-w4a4-squat-s1234`` / ``pretrain-fp-s1234`` / ``eval``."""
    stage = OmegaConf.select(_root_, "stage.name")
    if stage is None:
        return "eval"
    parts = [str(stage), str(OmegaConf.select(_root_, "quant.name"))]
    if str(stage) == Stage.qat.value:
        parts.append(str(OmegaConf.select(_root_, "method.name")))
    return re.sub(r"[^\w.-]", "_", "-".join(parts) + f"-s{OmegaConf.select(_root_, 'seed')}")


OmegaConf.register_new_resolver("squat_job_name", job_name, replace=True)


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(name="eval_schema", node=EvalConfig)
    cs.store(name="generate_schema", node=GenerateConfig)
