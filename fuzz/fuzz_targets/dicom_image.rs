//! Any bytes given to the DICOM image reader give an error or a well-formed volume.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = icseg::io::dicom::read_bytes(data, std::path::Path::new("fuzz.dcm")) {
        assert_eq!(v.volume.voxels().len(), v.volume.geometry().voxel_count());
    }
});
