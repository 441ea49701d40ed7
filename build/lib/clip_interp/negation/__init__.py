"""Where CLIP processes negation: causal tracing in the text tower and component ablation in the image tower."""
