"""slm-export: small language models to ExecuTorch, Core ML and ONNX Runtime Mobile, verified."""

__version__ = "0.1.0"
