"""`slm-export bench`: ours vs each format's own tool, on the same weights, in one run.

For a checkpoint and a target recipe (targets/<target>.toml, so the benchmark measures what
`--target` ships), per format:

1. export   ours (runtimes/<format>.emit) and the peer tool (ExecuTorch's export_llama for .pte,
            the onnxruntime-genai model builder for ONNX), each in its own subprocess: wall, CPU,
            the child's peak RSS                                                 (exports.py)
2. bytes    artifact bytes, ours vs peer; the bytes a decoded token reads      (bandwidth.py)
3. runtime  prefill and decode tokens/s through the real runtimes (ExecuTorch's LLM runner,
            onnxruntime-genai), ours and peer alternating in this process, best of N, per thread
            setting                                                            (runtime.py)
4. bound    the machine's measured memory bandwidth, the decode bound it implies
            (bandwidth / bytes per token), and each decode speed as a fraction of it
5. report   a Markdown table and a JSON document with ours/peer ratios        (report.py)

`run.run_bench(BenchRequest)` runs the stages (modules are imported on use: the export
children import only what they need); `checkpoints.make_smollm2_shape` makes the random
SmolLM2-135M-shaped checkpoint of issue #9. Core ML has no peer tool: for it only ours is
exported (time, memory, bytes). The benchmark prints; it does not judge.
"""

