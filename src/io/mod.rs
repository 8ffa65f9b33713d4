//! Reading and writing medical files: NIfTI, DICOM series and DICOM SEG.
//!
//! Every loader returns a typed error for bad input and never panics on user data.

mod atomic;

pub use atomic::write_atomic;
