//! Filter and score plugins (see [`super::framework`]).

use super::framework::{FilterPlugin, ScorePlugin};

// Placeholder until the plugin modules land in this directory: no filters, no scores.
pub fn default_filters() -> Vec<Box<dyn FilterPlugin>> {
    Vec::new()
}

pub fn default_scores() -> Vec<Box<dyn ScorePlugin>> {
    Vec::new()
}
