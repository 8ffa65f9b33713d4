#!/usr/bin/env bash
# The project's test command (README): formatting, clippy with warnings as errors (with
# and without the GUI), the full test suite with the GUI (the crate's layering included:
# tests/layering.rs), the headless core alone, and the real app window under Xvfb.
# Real-data tests read $ICSEG_DATA (default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
export ICSEG_DATA="${ICSEG_DATA:-$(cd .. && pwd)/shared/data}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# A private Orthanc for the DICOMweb tests (tests/pacs.rs), stopped when this script ends.
# Without Orthanc installed those tests skip, except under CI=true.
if command -v Orthanc >/dev/null; then
  echo "== test PACS (Orthanc with DICOMweb on 127.0.0.1)"
  export ORTHANC_STATE="${ORTHANC_STATE:-$(mktemp -d -t icseg-orthanc-XXXXXX)}"
  trap 'scripts/orthanc.sh stop' EXIT
  scripts/orthanc.sh start
  # shellcheck disable=SC1091
  source "$ORTHANC_STATE/env"
elif [ "${CI:-}" = true ]; then
  echo "Orthanc is required under CI (apt-get install orthanc orthanc-dicomweb curl)" >&2
  exit 1
else
  echo "no Orthanc: the DICOMweb round trip is skipped (apt-get install orthanc orthanc-dicomweb curl)"
fi

echo "== rustfmt"
cargo fmt --all -- --check

echo "== clippy (all targets, all features; and the headless core alone)"
cargo clippy --all-targets -- -D warnings
cargo clippy --no-default-features --lib -- -D warnings

echo "== tests (all features: GUI, GPU path, headless core)"
cargo test --all-targets

echo "== tests (headless core only: --no-default-features)"
cargo test --no-default-features --lib

echo "== real window under Xvfb (GUI smoke test with screenshots)"
if command -v xvfb-run >/dev/null && command -v import >/dev/null; then
  # `cargo test` above built the app binary (test profile) next to the tests.
  scripts/gui-smoke.sh "${CARGO_TARGET_DIR:-target}/debug/icseg" "${CARGO_TARGET_DIR:-target}/gui-smoke"
  if [ -n "${ICSEG_PACS_URL:-}" ]; then
    echo "== PACS round trip in the real window (Open from PACS, Send SEG to PACS)"
    scripts/pacs-smoke.sh "${CARGO_TARGET_DIR:-target}/debug/icseg" "${CARGO_TARGET_DIR:-target}/pacs-smoke"
  fi
elif [ "${CI:-}" = true ]; then
  echo "xvfb-run and imagemagick are required under CI (apt-get install xvfb xauth imagemagick)" >&2
  exit 1
else
  echo "skipped: install xvfb xauth imagemagick to run it"
fi
