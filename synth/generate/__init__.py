"""Generation engines: responses, Self-Instruct, Evol-Instruct, MMEvol (all through synth.llm.Backend)."""
