"""Text-based decomposition of the image tower (Gandelsman et al., ICLR 2024): per layer, head and source
contributions in the joint space, mean-ablation, TEXTSPAN, zero-shot segmentation, spurious features and
per-head neighbours. A study package: it imports the core (models, store, images, io, plotting), no other study."""
