"""Recovery fine-tune: short quantization-aware training of a compressed configuration with distillation from the
fp32 model, and the recovered-weights file that carries the result to evaluation and export."""
