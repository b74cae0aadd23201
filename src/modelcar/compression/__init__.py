"""Quantization with LLM Compressor, one concept per module.

settings     what to do, taken from the pipeline parameters
extra        the optional packages (torch, llmcompressor), imported only when compressing
modelcheck   what the model directory says before anything is loaded
recipe       the LLM Compressor recipe built from the settings
calibration  calibration text: c4, a Hub dataset or a local file, tokenized
device       where it runs, and out-of-memory errors
quantize     load, one-shot, save compressed
evaluate     perplexity before and after
staging      the crash-safe swap of <workspace>/model and model-original
"""
