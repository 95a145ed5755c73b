"""synth: build instruction-tuning and preference datasets for text and image-text LLMs."""

__version__ = "0.1.0"
