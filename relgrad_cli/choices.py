"""Names of the model's and the trainer's options, importable without torch (the config checks answer before torch
is loaded)."""

INITS: tuple[str, ...] = ("orthogonal", "identity", "data")
ACTIVATIONS: tuple[str, ...] = ("slrelu", "slrelu_learned", "spline")
FINAL_ACTIVATIONS: tuple[str, ...] = ("none", "slrelu_learned", "spline")
DENSE: tuple[str, ...] = ("full", "lu")
COMPILE_MODES: tuple[str, ...] = ("none", "default", "reduce-overhead")  # trainer.compile: fit.CompiledLoss
