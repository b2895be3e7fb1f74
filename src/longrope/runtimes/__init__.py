"""Stock runtimes: GGUF export for llama.cpp (built on llama.cpp's own converter plus the `gguf`
package) and next-token parity checks of llama.cpp and vLLM against transformers."""
