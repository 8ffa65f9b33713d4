#!/usr/bin/env python3
"""Independent check of a DICOM SEG written by ICSeg, with pydicom and highdicom.

Usage: validate_seg.py SEG.dcm EXPECTED.json

EXPECTED.json maps each segment number to {"count": N, "sum_mm": [x, y, z]}: the
number of voxels of that segment and the sum of their centres in patient space (LPS,
mm). highdicom must accept the file as a Segmentation, and the voxels decoded here from
the frames (pixel data unpacked by pydicom, positions from the functional groups)
must match. Exit 0: all good; 1: mismatch; 77: pydicom/highdicom not installed.
"""

import json
import sys

try:
    import numpy as np
    import pydicom
    import highdicom as hd
except ImportError as e:  # the Rust test decides whether a missing tool is fatal
    print(f"missing Python package: {e}", file=sys.stderr)
    sys.exit(77)


def main() -> int:
    seg_path, expected_path = sys.argv[1], sys.argv[2]
    with open(expected_path) as f:
        expected = {int(k): v for k, v in json.load(f).items()}

    ds = pydicom.dcmread(seg_path)
    seg = hd.seg.Segmentation.from_dataset(ds)  # highdicom's own validation
    numbers = sorted(int(n) for n in seg.segment_numbers)
    if numbers != sorted(expected):
        print(f"segments {numbers}, expected {sorted(expected)}")
        return 1
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in ds.SegmentSequence}
    print("segments:", labels)

    # highdicom assembles the frames into a volume with its own geometry code:
    # array [slice, row, column, segment] and an affine from (slice, row, column) to LPS.
    volume = seg.get_volume(combine_segments=False, segment_numbers=numbers)
    array = np.asarray(volume.array)
    found = {}
    for index, n in enumerate(numbers):
        ijk = np.argwhere(array[..., index] > 0)
        homogeneous = np.hstack([ijk, np.ones((len(ijk), 1))])
        points = (volume.affine @ homogeneous.T).T[:, :3]
        found[n] = {"count": len(ijk), "sum_mm": points.sum(axis=0)}

    ok = True
    for n in numbers:
        want, got = expected[n], found[n]
        if got["count"] != want["count"]:
            print(f"segment {n}: {got['count']} voxels, expected {want['count']}")
            ok = False
        diff = np.abs(got["sum_mm"] - np.array(want["sum_mm"]))
        # one voxel moved by half a millimetre changes a sum by 0.5; rounding stays far below
        if np.any(diff > 1e-2):
            print(f"segment {n}: voxel positions differ (sum {got['sum_mm']} vs {want['sum_mm']})")
            ok = False
        print(f"segment {n} '{labels.get(n)}': {got['count']} voxels")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
