#!/usr/bin/env bash
# Two modelyard hosts on one machine, as endpoints.yaml lists them: the demo's models (from
# `modelyard setup`) on 127.0.0.1:8101 and :8102, each with its own state folder, smollm2
# loaded on the first and gemma3 on the second. Prints what each tells the endpoint picker on
# /metrics, then serves until Ctrl-C. Run from the repository root:
#   deploy/llm-d/standalone/start-hosts.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
bin=target/release/modelyard
cargo build --release -q
demo=target/demo
[ -f "$demo/modelyard.toml" ] || "$bin" setup
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
for host in a:8101:smollm2 b:8102:gemma3; do
    IFS=: read -r name port model <<<"$host"
    # Beside the demo's config, so that its relative paths (the policies folder) still hold.
    sed -e "s/^listen = .*/listen = \"127.0.0.1:$port\"\nstate_dir = \"state-$name\"/" \
        "$demo/modelyard.toml" >"$demo/host-$name.toml"
    "$bin" serve --config "$demo/host-$name.toml" >"$demo/host-$name.log" 2>&1 &
    pids+=($!)
    until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 0.2; done
    curl -sf -X POST "http://127.0.0.1:$port/admin/models/$model/load" >/dev/null
    echo "host $name on 127.0.0.1:$port, $model loaded; it tells the endpoint picker:"
    curl -sf "http://127.0.0.1:$port/metrics" | grep '^vllm:'
done
echo "serving; logs in $demo/host-a.log and $demo/host-b.log; Ctrl-C stops both"
wait
