//! The nearest-profile classifier: which profile a request belongs to.
//!
//! Built from a saved [`ProfileSet`]: the path templates of its profiles rebuild
//! the templater, its feature space rebuilds the encoder, and a request goes to
//! the profile with the nearest centroid. `learn --update` uses it to fold new
//! traffic in; the proxy uses it to measure per profile.

use umbra_core::{ProfileSet, RequestRecord};

use crate::features::{Encoder, RawFeatures};
use crate::kmeans::{Matrix, nearest};
use crate::template::Templater;

pub struct Classifier {
    templater: Templater,
    encoder: Encoder,
    centroids: Matrix,
    row: Vec<f32>,
}

/// Where a request landed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Classified {
    /// Index into the set's `profiles`.
    pub profile: usize,
    /// Squared distance to that profile's centroid, in feature space.
    pub sq_distance: f32,
}

impl Classifier {
    pub fn new(set: &ProfileSet) -> Classifier {
        let templater = set_templater(set);
        let encoder = Encoder::new(set.features.clone());
        let mut centroids = Matrix::with_capacity(set.profiles.len(), encoder.dims());
        for p in &set.profiles {
            let row: Vec<f32> = p.centroid.iter().map(|v| *v as f32).collect();
            centroids.push(&row);
        }
        let row = vec![0.0; encoder.dims()];
        Classifier {
            templater,
            encoder,
            centroids,
            row,
        }
    }

    /// The feature vector of a request in the set's space.
    pub fn features(&mut self, r: &RequestRecord) -> &[f32] {
        let template = match self.templater.template_of(&r.path) {
            Some(m) => self.templater.template(m.template).to_string(),
            None => Templater::pattern_template(&r.path),
        };
        let ua = self.encoder.ua_class(r.user_agent.as_deref());
        let raw = RawFeatures::of(r, &template, ua);
        self.encoder.encode(&raw, &mut self.row);
        &self.row
    }

    pub fn classify(&mut self, r: &RequestRecord) -> Classified {
        self.features(r);
        let (profile, sq_distance) = nearest(&self.row, &self.centroids);
        Classified {
            profile,
            sq_distance,
        }
    }
}

/// The templater of a saved set: every template of every profile.
pub fn set_templater(set: &ProfileSet) -> Templater {
    Templater::from_templates(
        set.profiles
            .iter()
            .flat_map(|p| p.templates.iter().map(|t| t.path.as_str())),
    )
}
