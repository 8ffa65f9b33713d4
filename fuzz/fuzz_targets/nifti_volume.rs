//! Any bytes given to the NIfTI volume reader give an error or a well-formed volume.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = icseg::io::nifti::read_volume_bytes(data, std::path::Path::new("fuzz.nii")) {
        assert_eq!(v.volume.voxels().len(), v.volume.geometry().voxel_count());
    }
});
