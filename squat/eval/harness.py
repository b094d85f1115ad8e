"""lm-evaluation-harness on squat models, in memory: float teachers and fake-quantized students alike.

``SquatLM`` is the harness's own Hugging Face wrapper (``HFLM``) around a model object that is already loaded
(``squat.quant.load_quantized``), so the harness's tokenisation and scoring are used unchanged. The harness calls
the model without an attention mask on right-padded batches; under causal attention and squat's default causal
token rule that cannot change a real token's logits. The paper's ``rule=topk`` is not causal, so such a student is
scored one sequence at a time (batch size 1, no padding).

``blimp_tasks`` writes a local task definition for a folder of BLiMP JSON-lines files (one task per phenomenon,
the harness's BLiMP template: empty context, choices [good, bad]), so BLiMP runs without the hub. One change:
``target_delimiter: ""``, so each sentence is scored as written after the document separator, as ``squat-eval``
and the BabyLM pipeline score it (the harness's default would prepend a space to every sentence). Every other harness task (the paper's Table III) works for users with internet.

Needs the optional extra: ``pip install -e ".[lmeval]"``.
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("squat")

_TEMPLATE = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    train: {path}
output_type: multiple_choice
test_split: train
doc_to_text: ""
doc_to_target: 0
doc_to_choice: "{{{{[sentence_good, sentence_bad]}}}}"
target_delimiter: ""
num_fewshot: 0
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def _require():
    try:
        import lm_eval  # noqa: F401
    except ImportError as e:
        raise ImportError("lm-evaluation-harness is an optional extra: pip install -e \".[lmeval]\"") from e


def blimp_tasks(blimp_dir: str | Path, out_dir: str | Path) -> list[str]:
    """One harness task per ``*.json``/``*.jsonl`` file of ``blimp_dir`` (``squat_blimp_<stem>``), written as YAML
    into ``out_dir`` (pass it as the task manager's include path). Returns the task names."""
    files = sorted(Path(blimp_dir).glob("*.json")) + sorted(Path(blimp_dir).glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no BLiMP *.json / *.jsonl files in {blimp_dir}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for f in files:
        name = f"squat_blimp_{f.stem}"
        (out / f"{name}.yaml").write_text(_TEMPLATE.format(task=name, path=f.resolve()))
        names.append(name)
    return names


def squat_lm(model, tokenizer, batch_size: int = 64):
    """The harness's ``HFLM`` around an in-memory model (float or fake-quantized student)."""
    _require()
    from lm_eval.models.huggingface import HFLM

    handle = getattr(model, "squat_quant", None)
    tp = handle.config.token_policy if handle is not None else None
    if tp is not None and tp.enabled and tp.rule.value == "topk":
        log.info("rule=topk is not causal: the harness pads without a mask, so this student is scored one "
                 "sequence at a time")
        batch_size = 1
    return HFLM(pretrained=model.eval(), tokenizer=tokenizer, batch_size=batch_size, device="cpu"
                if next(model.parameters()).device.type == "cpu" else str(next(model.parameters()).device))


def run_harness(model, tokenizer, tasks: list[str], include_path: str | Path | None = None, batch_size: int = 64,
                limit: int | None = None) -> dict[str, dict[str, float]]:
    """``lm_eval.simple_evaluate`` on the in-memory model; returns ``{task: {metric: value}}``."""
    _require()
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(include_path) if include_path else None)
    res = simple_evaluate(model=squat_lm(model, tokenizer, batch_size), tasks=list(tasks), task_manager=tm,
                          limit=limit, log_samples=False, bootstrap_iters=0)
    out = {}
    for task, metrics in res["results"].items():
        out[task] = {k.split(",")[0]: float(v) for k, v in metrics.items()
                     if isinstance(v, (int, float)) and not k.startswith("alias") and "stderr" not in k}
    return out


def harness_blimp(model, tokenizer, blimp_dir: str | Path, work_dir: str | Path, batch_size: int = 64) -> dict[str, float]:
    """BLiMP through the harness on local files: accuracy (%) per phenomenon and their average, keyed like
    ``squat.eval.blimp.evaluate_blimp``."""
    tasks = blimp_tasks(blimp_dir, work_dir)
    res = run_harness(model, tokenizer, tasks, include_path=work_dir, batch_size=batch_size)
    acc = {t.removeprefix("squat_blimp_"): 100 * res[t]["acc"] for t in tasks}
    acc["average"] = sum(acc.values()) / len(acc)
    return acc
