"""callbacks.eval during training: DDP ranks split the items and reduce the counts (the score
equals one process scoring them all), TensorBoard tags, result.json and the sweep summary."""

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import compose_config, run_script
from eval_fixtures import LAMBADA, write_lambada
from gpt_lightning.weights.hf_io import load_pretrained
from gpt_lightning import GPT, ConfigError
from gpt_lightning.evaluate import lambada
from gpt_lightning.train.callbacks.evaluation import eval_callbacks
from gpt_lightning.evaluate.tasks import evaluate
from gpt_lightning.runs.sweep import write_summary

SMOKE = ["debug=smoke", "trainer.enable_progress_bar=false", "callbacks.samples.enabled=false"]


def test_ddp_score_equals_one_process(tmp_path, tokenizer):
    path = write_lambada(tmp_path / "lambada.jsonl")
    run = tmp_path / "run"
    proc = run_script("train.py", SMOKE + [
        "trainer.devices=2", "trainer.accelerator=cpu", "callbacks.eval.tasks=[lambada]",
        f"callbacks.eval.lambada.path={path}", "callbacks.eval.every_n_steps=2", "callbacks.eval.batch_size=3",
        f"hydra.run.dir={run}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run / "result.json").read_text())
    # one process, every passage, on the final weights (the export): the same score
    task = lambada.Lambada(lambada.load_records(str(path)))
    single = {r["metric"]: r for r in evaluate(load_pretrained(run / "export"), [task], progress=False)}
    assert single["acc"]["n"] == len(LAMBADA)
    assert result["eval/lambada/perplexity"] == pytest.approx(single["perplexity"]["value"], rel=1e-5)
    assert result["eval/lambada/acc"] == pytest.approx(single["acc"]["value"], abs=1e-9)
    assert result["best_eval/lambada/perplexity"] <= result["eval/lambada/perplexity"]
    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    logged = [(e.step, e.value) for e in acc.Scalars("eval/lambada/perplexity")]
    assert [s for s, _ in logged] == [2, 4]  # every 2 steps; the last step is not scored twice
    assert logged[-1][1] == pytest.approx(result["eval/lambada/perplexity"], rel=1e-6)
    assert min(v for _, v in logged) == pytest.approx(result["best_eval/lambada/perplexity"], rel=1e-6)


def test_sweep_summary_has_a_column_per_metric(tmp_path):
    for job, ppl in (("0_model.n_layers-1", 40.5), ("1_model.n_layers-2", 30.25)):
        (tmp_path / job).mkdir()
        (tmp_path / job / "result.json").write_text(json.dumps({
            "overrides": [f"model.n_layers={job[-1]}"], "params": 10, "eval/lambada/perplexity": ppl,
            "best_eval/lambada/perplexity": ppl - 1, "eval/hellaswag/acc_norm": 0.25}))
    table = write_summary(tmp_path).splitlines()
    head = [c.strip() for c in table[0].strip("|").split("|")]
    assert head[-4:] == ["eval/hellaswag/acc_norm", "eval/lambada/perplexity", "best_eval/lambada/perplexity", "status"]
    assert "| 30.2500 | 29.2500 | ok |" in table[3]
    csv_head = (tmp_path / "summary.csv").read_text().splitlines()[0].split(",")
    assert "eval/lambada/perplexity" in csv_head and "best_eval/lambada/perplexity" in csv_head


def test_callback_config_is_checked(tmp_path):
    from gpt_lightning.config.schemas import train_spec
    from gpt_lightning.cli.hydra_adapter import plain

    assert eval_callbacks(train_spec(plain(compose_config("train", []))).callbacks.eval) == []  # off by default
    with pytest.raises(ConfigError, match=r"callbacks.eval.tasks=\['judge'\] is invalid: tasks are perplexity, "
                                          "hellaswag, lambada"):
        train_spec(plain(compose_config("train", ["callbacks.eval.tasks=[judge]"])))
    with pytest.raises(ConfigError, match=r"callbacks.eval.every_n_steps=0 is invalid"):
        train_spec(plain(compose_config("train", ["callbacks.eval.tasks=[hellaswag]", "callbacks.eval.every_n_steps=0"])))


def test_yaml_defaults_and_library_agree():
    from dataclasses import fields

    from omegaconf import OmegaConf

    from helpers import ROOT
    from gpt_lightning.config.tasks import JudgeConfig
    from gpt_lightning.evaluate.scoring import BATCH_SIZE

    conf = ROOT / "conf"
    assert OmegaConf.load(conf / "evaluate.yaml").batch_size == BATCH_SIZE
    assert OmegaConf.load(conf / "callbacks" / "default.yaml").eval.batch_size == BATCH_SIZE
    judge = OmegaConf.load(conf / "judge" / "default.yaml")
    assert set(judge) == {f.name for f in fields(JudgeConfig)}
    assert JudgeConfig(**judge) == JudgeConfig()  # the YAML's defaults are the schema's
    evaluate_sections = OmegaConf.load(conf / "evaluate.yaml")
    for section in ("text", "hellaswag", "lambada"):  # the same task settings in both places
        assert set(OmegaConf.load(conf / "callbacks" / "default.yaml").eval[section]) == set(evaluate_sections[section])
