//! Training the network on real and synthetic episodes (`icseg train`).

pub mod augment;
pub mod synthetic;
