//! Any bytes given to the NIfTI label-map reader (on its own grid and placed on a fixed
//! reference grid) give an error or a label map of the right size.
#![no_main]

use icseg::volume::Geometry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let name = std::path::Path::new("fuzz-labels.nii");
    if let Ok(m) = icseg::io::nifti::read_label_map_bytes(data, name, None) {
        assert_eq!(m.labels().len(), m.geometry().voxel_count());
        let reference = m.geometry().clone();
        let _ = icseg::io::labels_onto_reference(&m, &reference).expect("a map lies on its own grid");
    }
    let reference = Geometry::axis_aligned([16, 16, 4], [1.0, 1.0, 2.0]);
    if let Ok(m) = icseg::io::nifti::read_label_map_bytes(data, name, Some(&reference)) {
        assert_eq!(m.geometry(), &reference);
    }
});
