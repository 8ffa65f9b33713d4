//! Any bytes given to the DICOM SEG reader, placed on the grid of the shared
//! `ct-3slice` series (512 × 512 × 3, 0.81 mm, 1 mm slices), give an error or a
//! segmentation on exactly that grid.
#![no_main]

use icseg::volume::Geometry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let reference = Geometry {
        dims: [512, 512, 3],
        spacing_mm: [0.810547, 0.810547, 1.0],
        origin_mm: [-235.199997, -226.800003, -128.690002],
        direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    };
    let name = std::path::Path::new("fuzz-seg.dcm");
    if let Ok(s) = icseg::io::dicom::seg::read_seg_bytes(data, name, &reference) {
        assert_eq!(s.labels.geometry(), &reference);
    }
});
