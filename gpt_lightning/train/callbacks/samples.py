"""SampleText: after each validation, continue a fixed prompt and show the text."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from gpt_lightning.train.trackers import log_text


class SampleText(L.Callback):
    """After each validation, continue a fixed prompt and log the text.

    Written to the trackers (TensorBoard's TEXT tab, a W&B table, MLflow text files; tag
    ``samples``), appended to ``samples.txt`` in the run folder and printed, so a user sees
    the samples turn from noise into words. With ``instruct`` the prompt is wrapped in the
    data module's template (``data.template.*``), the one the model is trained on. Every rank
    generates (a sharded model's forward needs them all, see :meth:`GPTLitModule.on_every_rank`);
    rank 0 alone prints and writes.
    """

    def __init__(self, prompt: str = "Every effort moves you", max_new_tokens: int = 40,
                 temperature: float = 0.0, top_k: int | None = None, out_dir: str | None = None,
                 instruct: bool = False) -> None:
        self.prompt, self.max_new_tokens, self.instruct = prompt, max_new_tokens, instruct
        self.temperature, self.top_k = temperature, top_k
        self.out_dir = Path(out_dir) if out_dir else None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        template = getattr(trainer.datamodule, "template", None) if self.instruct else None
        text = pl_module.on_every_rank(self.sample, template)
        if not trainer.is_global_zero:
            return
        step = trainer.global_step
        line = f"[step {step}, {pl_module.tokens_seen:,} tokens] {self.prompt}{text}".replace("\n", " ")
        print("\n" + line, flush=True)
        log_text(trainer, "samples", self.prompt, text, step)  # TensorBoard, W&B, MLflow
        if self.out_dir is not None:
            with open(self.out_dir / "samples.txt", "a", encoding="utf-8") as fh:
                fh.write(line + "\n")

    def sample(self, model, template=None) -> str:
        """The continuation of the prompt (in ``template``, default Alpaca, when instruct)."""
        from gpt_lightning.generate.sampling import generate
        from gpt_lightning.tokenizer import get_tokenizer

        tok = get_tokenizer()
        text = self.prompt
        if self.instruct:
            from gpt_lightning.data.template import format_prompt

            text = format_prompt(self.prompt, template=template)
        ids = tok.encode(text)[-(model.config.context_length - self.max_new_tokens):]
        was_training = model.training
        model.eval()
        try:
            out = generate(model, [ids], max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                           top_k=self.top_k or 0, seed=0, eos_id=tok.eot_id if self.instruct else None)
        finally:
            model.clear_kv_cache()
            model.train(was_training)
        return tok.decode(out[0])
