"""Making an adapter: base models, PEFT methods, the one training path (in-process and torchrun ranks), adapter files."""
