# Common tasks. `just --list` shows them.

# Start an all-in-one cluster
up *ARGS:
    cargo run --release -- up {{ARGS}}

# Run the whole test suite (the README's test command)
test:
    cargo test --workspace --locked

# Build the sample guest components
samples:
    cd samples && cargo build --release --target wasm32-wasip2 --locked

# Store benchmark against etcd (needs the Debian package etcd-server)
bench:
    cargo build --release -p wasmkube -p wasmkube-bench
    target/release/store-bench --wasmkube target/release/wasmkube --etcd /usr/bin/etcd

# Pod benchmarks: `just pod-bench start-latency|density|http [FLAGS]` (see docs/benchmarks.md)
pod-bench BENCH *ARGS: samples
    cargo build --release -p wasmkube -p wasmkube-bench
    target/release/pod-bench {{BENCH}} {{ARGS}}

# Scheduler throughput and the control plane's envelope with hollow nodes:
# `just sched-bench backlog|throughput|envelope [FLAGS]` (see docs/benchmarks.md)
sched-bench BENCH *ARGS:
    cargo build --release -p wasmkube -p wasmkube-bench
    target/release/sched-bench {{BENCH}} {{ARGS}}

# Formatting and lints, as CI runs them
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
