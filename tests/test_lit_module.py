"""lit_module.py: the LightningModule's optimizer groups."""

from gpt_lightning import GPT


def test_weight_decay_groups(tiny_config):
    """Linear matrices are decayed; biases, LayerNorms and the (tied) embeddings are not."""
    from types import SimpleNamespace

    from gpt_lightning.config.schemas import OptimConfig
    from gpt_lightning.train.module import GPTLitModule

    model = GPT(tiny_config)
    module = GPTLitModule(model, OptimConfig(lr=1e-3))
    module.trainer = SimpleNamespace(estimated_stepping_batches=10)
    groups = module.configure_optimizers()["optimizer"].param_groups
    decayed = {id(p) for p in groups[0]["params"]}
    names = {name for name, p in model.named_parameters() if id(p) in decayed}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert names == {n for n, _ in model.named_parameters() if n.endswith(("qkv.weight", "proj.weight", "fc.weight"))}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
