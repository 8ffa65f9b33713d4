#!/usr/bin/env bash
# The project's test command (README): formatting, the full test suite with the GUI, and
# the headless core alone. Real-data tests read $ICSEG_DATA (default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
export ICSEG_DATA="${ICSEG_DATA:-$(cd .. && pwd)/shared/data}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== rustfmt"
cargo fmt --all -- --check

echo "== tests (all features: GUI, GPU path, headless core)"
cargo test --all-targets

echo "== tests (headless core only: --no-default-features)"
cargo test --no-default-features --lib
