"""The operator core: what an operator is (`operator`), the field types its config may use (`fields`), every
operator by name, built-in and plugin (`registry`). The docs pages made from their configs: `synth.run.docs`.

Layers: this package sits above `synth.pipeline`, `synth.llm` and the io/records modules, and below the
operators themselves, the runner and the CLI.
"""
