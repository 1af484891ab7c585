"""Every config's typed schema, one module per job, and the one strict parser.

schemas   the parser (parse, build, locate), the training run's groups (model's GPTConfig lives
          with the model; init, optim, trainer, strategy, callbacks, perf, finetune, card) and
          train_spec, which checks a whole train.py / finetune.py config
tasks     the benchmark task sections, the judge group and callbacks.eval
generate  generate.py's keys (GenerateConfig, DraftConfig)
serve     serve.py's keys (ServeConfig)
evaluate  evaluate.py's keys (EvaluateConfig)
legacy    the module paths of earlier versions, mapped to the current ones

A group that builds a class of a library (data modules, trackers) is checked against that
class's signature instead (config.schemas.build).
"""
