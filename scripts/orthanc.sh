#!/usr/bin/env bash
# A private Orthanc (Debian packages `orthanc`, `orthanc-dicomweb`) for the PACS tests:
# listens on 127.0.0.1 only, stores into a temporary folder, DICOMweb enabled, HTTP
# basic authentication on, no DICOM network port. `start` loads the DICOM series of
# $ICSEG_DATA/dicom through Orthanc's REST API and writes the server's address and
# credentials to $ORTHANC_STATE/env (sourced by scripts/test.sh); `stop` ends it and
# removes its storage.
#
#   scripts/orthanc.sh start [PORT]     # default: the first free port from 8043
#   scripts/orthanc.sh stop
#   scripts/orthanc.sh status
set -euo pipefail
cd "$(dirname "$0")/.."
STATE="${ORTHANC_STATE:-${TMPDIR:-/tmp}/icseg-orthanc-$(id -u)}"
DATA="${ICSEG_DATA:-$(cd .. && pwd)/shared/data}"
PLUGIN_DIRS="/usr/share/orthanc/plugins /usr/lib/orthanc /usr/lib/x86_64-linux-gnu/orthanc"

running() { [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; }

start() {
  if running; then echo "orthanc already running ($STATE)"; return 0; fi
  local port="${1:-}"
  if [ -z "$port" ]; then
    for p in $(seq 8043 8142); do
      if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
    done
  fi
  command -v Orthanc >/dev/null || { echo "Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)" >&2; return 1; }
  local plugin=""
  for d in $PLUGIN_DIRS; do
    for f in "$d"/libOrthancDicomWeb.so*; do [ -f "$f" ] && plugin="$f" && break 2; done
  done
  [ -n "$plugin" ] || { echo "the Orthanc DICOMweb plugin is missing (apt-get install orthanc-dicomweb)" >&2; return 1; }
  rm -rf "$STATE"; mkdir -p "$STATE/storage"; chmod 700 "$STATE"
  local user="pacs-tester" password
  password="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
  cat > "$STATE/orthanc.json" <<JSON
{
  "Name" : "ICSEG-TEST",
  "StorageDirectory" : "$STATE/storage",
  "IndexDirectory" : "$STATE/storage",
  "Plugins" : [ "$plugin" ],
  "HttpPort" : $port,
  "RemoteAccessAllowed" : false,
  "AuthenticationEnabled" : true,
  "RegisteredUsers" : { "$user" : "$password" },
  "DicomServerEnabled" : false,
  "HttpServerEnabled" : true,
  "StableAge" : 1,
  "DicomWeb" : { "Enable" : true, "Root" : "/dicom-web/", "EnableWado" : false,
                 "StudiesMetadata" : "Full", "SeriesMetadata" : "Full" }
}
JSON
  chmod 600 "$STATE/orthanc.json"
  Orthanc "$STATE/orthanc.json" > "$STATE/orthanc.log" 2>&1 &
  echo $! > "$STATE/pid"
  local base="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do
    curl -fsS -u "$user:$password" "$base/system" >/dev/null 2>&1 && break
    running || { echo "Orthanc stopped while starting; see $STATE/orthanc.log" >&2; tail -20 "$STATE/orthanc.log" >&2; return 1; }
    sleep 0.2
  done
  curl -fsS -u "$user:$password" "$base/system" >/dev/null || { echo "Orthanc did not answer on $base" >&2; return 1; }
  local loaded=0 refused=0
  if [ -d "$DATA/dicom" ]; then
    # Every file of the shared DICOM folders. Orthanc stores only instances with study,
    # series and instance UIDs; the anonymised J2K series has them blanked, so (when
    # pydicom is there) it is uploaded from a copy with UIDs derived from its folder and
    # Frame of Reference, the same on every run.
    mkdir -p "$STATE/upload"
    if python3 -c 'import pydicom' 2>/dev/null; then
      python3 - "$DATA/dicom" "$STATE/upload" <<'PY'
import hashlib, os, sys, pydicom
src, out = sys.argv[1], sys.argv[2]
def uid(*parts):
    return "2.25." + str(int(hashlib.sha256("/".join(parts).encode()).hexdigest()[:30], 16))
for root, _, files in os.walk(src):
    for name in sorted(files):
        path = os.path.join(root, name)
        try:
            ds = pydicom.dcmread(path)
        except Exception:
            continue
        if ds.get("StudyInstanceUID") and ds.get("SeriesInstanceUID") and ds.get("SOPInstanceUID"):
            continue
        folder = os.path.relpath(root, src)
        frame = str(ds.get("FrameOfReferenceUID", ""))
        ds.StudyInstanceUID = ds.get("StudyInstanceUID") or uid(folder, frame, "study")
        ds.SeriesInstanceUID = ds.get("SeriesInstanceUID") or uid(folder, frame, "series")
        sop = ds.get("SOPInstanceUID") or str(ds.file_meta.get("MediaStorageSOPInstanceUID", "")) or uid(folder, name)
        ds.SOPInstanceUID = sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.save_as(os.path.join(out, folder.replace("/", "_") + "_" + name), enforce_file_format=True)
PY
    fi
    while IFS= read -r -d '' f; do
      if curl -fsS -u "$user:$password" -H "Expect:" --data-binary "@$f" "$base/instances" >/dev/null 2>&1; then
        loaded=$((loaded + 1))
      else
        refused=$((refused + 1))
      fi
    done < <(find "$DATA/dicom" "$STATE/upload" -type f ! -name '*.nii*' ! -name '*.md' -print0)
  fi
  cat > "$STATE/env" <<ENV
export ICSEG_PACS_URL="$base/dicom-web"
export ICSEG_PACS_USER="$user"
export ICSEG_PACS_PASSWORD="$password"
ENV
  chmod 600 "$STATE/env"
  echo "orthanc running on $base (DICOMweb at $base/dicom-web, $loaded files loaded, $refused refused); source $STATE/env"
}

stop() {
  if running; then
    local pid; pid="$(cat "$STATE/pid")"
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$STATE"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  status) if running; then echo "running ($STATE)"; else echo "not running"; exit 1; fi ;;
  *) echo "usage: $0 start [PORT] | stop | status" >&2; exit 2 ;;
esac
