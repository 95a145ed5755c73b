"""Generation engines, all on the record spine (`synth.data` reader and writer, `synth.pipeline` stages)
and all asking the LLM through `synth.llm.Backend`:

- `responses`: answers for an instruction dataset (`synth generate`);
- `self_instruct/`: Self-Instruct from seed tasks (`synth self-instruct`), with `novelty` (exact ROUGE-L);
- `evolution/`: Evol-Instruct and MMEvol on one round loop with elimination (`synth evolve`).
"""
