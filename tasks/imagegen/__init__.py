"""Image generation jobs: Stable Diffusion / LCM pipelines on openvino_genai, LoRA adapters, PNG outputs."""
