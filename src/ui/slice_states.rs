//! How a slice's review state is named and coloured, the same in the scrubber, the
//! structure overview and the side panel.

use eframe::egui::Color32;

use crate::session::SliceState;

/// Human name of a slice state.
pub fn state_name(state: SliceState) -> &'static str {
    match state {
        SliceState::Unlabelled => "unlabelled",
        SliceState::Manual => "manual",
        SliceState::Predicted => "predicted",
        SliceState::Accepted => "accepted",
        SliceState::Rejected => "rejected",
    }
}

/// Scrubber colour of a slice state.
pub fn state_colour(state: SliceState) -> Color32 {
    match state {
        SliceState::Unlabelled => Color32::TRANSPARENT,
        SliceState::Manual => Color32::from_rgb(80, 160, 255),
        SliceState::Predicted => Color32::from_rgb(255, 190, 60),
        SliceState::Accepted => Color32::from_rgb(70, 210, 110),
        SliceState::Rejected => Color32::from_rgb(220, 70, 70),
    }
}
