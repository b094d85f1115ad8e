"""Typed schema of a run. Hydra validates every composed config against it, so an unknown key or a
wrongly typed value fails at compose time; ``__post_init__`` checks ranges and files before training."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore

# conf/ sits beside the package (editable install); absolute so entry points work from any cwd.
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

from squat.quant.config import Choice, QuantConfig


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
        if not self.temperature > 0:
            raise ValueError(f"data.teacher_samples.temperature={self.temperature} must be positive")


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
        if self.lr <= 0:
            raise ValueError(f"stage.lr={self.lr} must be positive")
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
        if self.temperature <= 0:
            raise ValueError(f"method.temperature={self.temperature} must be positive")
        if self.entropy_form not in ("code", "paper"):
            raise ValueError(f"method.entropy_form={self.entropy_form!r}: use code or paper")
        if self.distribution_form not in ("corrected", "paper"):
            raise ValueError(f"method.distribution_form={self.distribution_form!r}: use corrected or paper")


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
    devices: int = 1
    deterministic: bool = False
    enable_progress_bar: bool = True
    num_sanity_val_steps: int = 0

    def __post_init__(self) -> None:
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"trainer.max_steps={self.max_steps} must be positive or -1")
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
    quant: QuantConfig = field(default_factory=QuantConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: Dict[str, Any] = field(default_factory=dict)
    callbacks: Dict[str, Any] = field(default_factory=dict)
    seed: int = 1234
    ckpt_path: Optional[str] = None  # resume a Lightning checkpoint
    output_dir: str = "${hydra:runtime.output_dir}"
    torch_threads: Optional[int] = None
    tags: List[str] = field(default_factory=list)  # attached to the wandb run

    def __post_init__(self) -> None:
        if self.ckpt_path is not None and not Path(self.ckpt_path).is_file():
            raise FileNotFoundError(f"ckpt_path={self.ckpt_path!r} does not exist: pass a Lightning .ckpt file")
        if self.data.train_data == TrainData.teacher and self.stage.name != Stage.qat:
            raise ValueError("data.train_data=teacher samples distillation data from a teacher: it needs stage=qat "
                             "stage.teacher=<teacher folder>")
        if self.stage.name == Stage.pretrain and not self.quant.is_float:
            raise ValueError(
                f"stage=pretrain trains the float teacher but quant={self.quant.name} is set: "
                "use stage=qat stage.teacher=<teacher folder> for a quantized student"
            )


@dataclass
class EvalConfig:
    """``squat-eval``: perplexity and bits per byte of a saved model on a data config's eval split."""

    model_path: str = "???"
    data: DataConfig = field(default_factory=DataConfig)
    max_batches: Optional[int] = None
    blimp_dir: Optional[str] = None  # e.g. ../shared/data/blimp_filtered_sample
    blimp_max_pairs: Optional[int] = None  # per phenomenon
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
        if self.harness_blimp and self.blimp_dir is None:
            raise ValueError("harness_blimp=true runs blimp_dir's files through lm-evaluation-harness: set blimp_dir")
        if self.harness_tasks or self.harness_blimp:
            try:
                import lm_eval  # noqa: F401
            except ImportError:
                raise ImportError('harness_tasks / harness_blimp need lm-evaluation-harness: pip install -e ".[lmeval]"')


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(name="eval_schema", node=EvalConfig)
