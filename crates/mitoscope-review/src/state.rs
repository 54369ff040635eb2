//! The review state: every detection with the reviewer's decision, the
//! points the reviewer added, and the score filter. It is the decisions file,
//! saved whole and atomically after every change, so a crash loses nothing
//! and a restart resumes where the reviewer stopped.

use std::path::{Path, PathBuf};

use mitoscope_annotations::{Annotation, AnnotationSet, ImageAnnotations, ObjectClass};
use mitoscope_geom::{Mpp, Point};
use serde::{Deserialize, Serialize};

use crate::ReviewError;

/// Version of the decisions file layout.
pub const FORMAT_VERSION: u32 = 1;

/// Where an item came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The predictions file.
    Detector,
    /// Added by the reviewer.
    Added,
}

/// The reviewer's verdict on an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Not looked at yet.
    Pending,
    /// A mitosis.
    Accepted,
    /// Not a mitosis (for an added item: removed).
    Rejected,
}

/// One detection or added point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Stable identifier (index of creation).
    pub id: u64,
    /// Column, level-0 pixels.
    pub x: f64,
    /// Row, level-0 pixels.
    pub y: f64,
    /// Detector score; `None` for added points.
    pub score: Option<f64>,
    /// Detector or reviewer.
    pub origin: Origin,
    /// Verdict.
    pub decision: Decision,
}

/// Live numbers shown beside the viewer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Detector items not yet decided.
    pub pending: usize,
    /// Of those, how many are at or above the score filter.
    pub pending_shown: usize,
    /// Accepted detector items.
    pub accepted: usize,
    /// Rejected detector items.
    pub rejected: usize,
    /// Points added (and not removed again).
    pub added: usize,
    /// The count the export holds: accepted + added + pending at or above the filter.
    pub count: usize,
    /// Area of the image, mm², when the mpp is known.
    pub area_mm2: Option<f64>,
    /// Count per mm².
    pub density_per_mm2: Option<f64>,
    /// Nottingham mitotic score of `count` over the area (10 HPF = 2 mm²).
    pub mitotic_score: Option<u8>,
}

/// The decisions file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decisions {
    /// Layout version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// Image identifier (file stem).
    pub image: String,
    /// The image or slide reviewed.
    pub source: PathBuf,
    /// Level-0 width.
    pub width: u64,
    /// Level-0 height.
    pub height: u64,
    /// Microns per pixel, when known.
    pub mpp: Option<f64>,
    /// Pending detections below this score are hidden and not exported.
    pub min_score: f64,
    /// Every item, in creation order.
    pub items: Vec<Item>,
}

impl Decisions {
    /// A fresh review of `image` with the detections of `pred` that belong to
    /// it (by image id, or the only image of `pred`).
    pub fn new(
        image: &str,
        source: &Path,
        (width, height): (u64, u64),
        mpp: Option<Mpp>,
        pred: Option<&AnnotationSet>,
    ) -> Result<Self, ReviewError> {
        let mut items = Vec::new();
        if let Some(pred) = pred {
            let found = match pred.image(image) {
                Some(img) => Some(img),
                None if pred.images.len() == 1 => {
                    tracing::warn!(
                        "predictions name image {:?}, reviewing {image:?}: using them as this image's",
                        pred.images[0].image
                    );
                    Some(&pred.images[0])
                }
                None if pred.images.is_empty() => None,
                None => {
                    let names: Vec<&str> = pred.images.iter().take(8).map(|i| i.image.as_str()).collect();
                    return Err(ReviewError::BadInput(format!(
                        "the predictions hold no image {image:?} (they hold {}{})",
                        names.join(", "),
                        if pred.images.len() > 8 { ", ..." } else { "" }
                    )));
                }
            };
            for o in found.iter().flat_map(|img| img.objects.iter()).filter(|o| o.class == ObjectClass::Mitosis) {
                items.push(Item {
                    id: items.len() as u64,
                    x: o.centroid.x,
                    y: o.centroid.y,
                    score: o.score,
                    origin: Origin::Detector,
                    decision: Decision::Pending,
                });
            }
        }
        Ok(Self {
            version: FORMAT_VERSION,
            image: image.to_owned(),
            source: source.to_owned(),
            width,
            height,
            mpp: mpp.map(Mpp::get),
            min_score: 0.0,
            items,
        })
    }

    /// Reads a decisions file written by [`Decisions::save`].
    pub fn load(path: &Path) -> Result<Self, ReviewError> {
        let bytes = std::fs::read(path).map_err(|e| ReviewError::Io { path: path.to_owned(), source: e })?;
        let d: Decisions = serde_json::from_slice(&bytes)
            .map_err(|e| ReviewError::BadInput(format!("{}: not a decisions file: {e}", path.display())))?;
        if d.version != FORMAT_VERSION {
            return Err(ReviewError::BadInput(format!(
                "{}: decisions file version {} (this build reads {FORMAT_VERSION})",
                path.display(),
                d.version
            )));
        }
        // A hand-edited or foreign file: everything the tool relies on is checked here.
        let bad = |why: String| Err(ReviewError::BadInput(format!("{}: {why}", path.display())));
        if let Some(i) = d.items.iter().find(|i| {
            !(i.x.is_finite() && i.y.is_finite() && i.x >= 0.0 && i.y >= 0.0)
                || i.x >= d.width as f64
                || i.y >= d.height as f64
        }) {
            return bad(format!("item {} at ({}, {}) is outside the {} x {} image", i.id, i.x, i.y, d.width, d.height));
        }
        let mut ids = std::collections::HashSet::new();
        if let Some(i) = d.items.iter().find(|i| !ids.insert(i.id) || i.id == u64::MAX) {
            return bad(format!("item id {} is repeated or out of range", i.id));
        }
        if let Some(m) = d.mpp.filter(|m| !(m.is_finite() && *m > 0.0)) {
            return bad(format!("mpp {m} is not a resolution"));
        }
        if !(d.min_score.is_finite() && (0.0..=1.0).contains(&d.min_score)) {
            return bad(format!("min_score {} is not in [0, 1]", d.min_score));
        }
        Ok(d)
    }

    /// Writes the whole state atomically.
    pub fn save(&self, path: &Path) -> Result<(), ReviewError> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| ReviewError::BadInput(e.to_string()))?;
        bytes.push(b'\n');
        mitoscope_formats::atomic::write_atomic(path, &bytes)?;
        Ok(())
    }

    /// Sets the verdict on an item.
    pub fn decide(&mut self, id: u64, decision: Decision) -> Result<(), ReviewError> {
        let item =
            self.items.iter_mut().find(|i| i.id == id).ok_or_else(|| ReviewError::BadInput(format!("no item {id}")))?;
        item.decision = decision;
        Ok(())
    }

    /// Adds a reviewer's point (accepted); returns its id.
    pub fn add(&mut self, x: f64, y: f64) -> Result<u64, ReviewError> {
        if !(x.is_finite() && y.is_finite() && x >= 0.0 && y >= 0.0 && x < self.width as f64 && y < self.height as f64)
        {
            return Err(ReviewError::BadInput(format!(
                "point ({x}, {y}) is outside the image ({} x {})",
                self.width, self.height
            )));
        }
        let id = self.items.iter().map(|i| i.id + 1).max().unwrap_or(0);
        self.items.push(Item { id, x, y, score: None, origin: Origin::Added, decision: Decision::Accepted });
        Ok(id)
    }

    /// Sets the score filter.
    pub fn set_min_score(&mut self, min_score: f64) -> Result<(), ReviewError> {
        if !min_score.is_finite() {
            return Err(ReviewError::BadInput(format!("score filter must be a finite number, got {min_score}")));
        }
        self.min_score = min_score;
        Ok(())
    }

    fn shown(&self, i: &Item) -> bool {
        i.score.is_none_or(|s| s >= self.min_score)
    }

    /// Whether `item` is in the corrected set.
    pub fn kept(&self, i: &Item) -> bool {
        match i.decision {
            Decision::Accepted => true,
            Decision::Rejected => false,
            Decision::Pending => self.shown(i),
        }
    }

    /// The live numbers.
    pub fn summary(&self) -> Summary {
        let det = |d: Decision| self.items.iter().filter(|i| i.origin == Origin::Detector && i.decision == d).count();
        let count = self.items.iter().filter(|i| self.kept(i)).count();
        let area = self
            .mpp
            .and_then(|m| Mpp::new(m).ok())
            .map(|m| m.area_mm2(self.width as f64, self.height as f64))
            .filter(|a| *a > 0.0);
        let score = area.and_then(|a| mitoscope_eval::score::mitotic_score(count, a, Default::default()).ok());
        Summary {
            pending: det(Decision::Pending),
            pending_shown: self
                .items
                .iter()
                .filter(|i| i.origin == Origin::Detector && i.decision == Decision::Pending && self.shown(i))
                .count(),
            accepted: det(Decision::Accepted),
            rejected: det(Decision::Rejected),
            added: self.items.iter().filter(|i| i.origin == Origin::Added && i.decision != Decision::Rejected).count(),
            count,
            area_mm2: area,
            density_per_mm2: area.map(|a| count as f64 / a),
            mitotic_score: score.map(|s| s.score),
        }
    }

    /// The corrected set, for the writers.
    pub fn corrected(&self) -> AnnotationSet {
        let mut img = ImageAnnotations::new(self.image.clone());
        img.width = u32::try_from(self.width).ok();
        img.height = u32::try_from(self.height).ok();
        img.mpp = self.mpp.and_then(|m| Mpp::new(m).ok());
        img.path = Some(self.source.clone());
        for i in self.items.iter().filter(|i| self.kept(i)) {
            let mut a = Annotation::point(Point::new(i.x, i.y), ObjectClass::Mitosis);
            a.score = i.score;
            img.objects.push(a);
        }
        AnnotationSet::from_images(vec![img])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred() -> AnnotationSet {
        let mut s = AnnotationSet::default();
        for (x, score) in [(10.0, 0.9), (20.0, 0.5), (30.0, 0.2)] {
            s.image_mut_or_insert("A")
                .objects
                .push(Annotation::point(Point::new(x, 5.0), ObjectClass::Mitosis).with_score(score));
        }
        s.image_mut_or_insert("A").objects.push(Annotation::point(Point::new(1.0, 1.0), ObjectClass::NonMitosis));
        s
    }

    #[test]
    fn decisions_filter_and_count() {
        let mpp = Mpp::new(0.25).unwrap();
        let mut d = Decisions::new("A", Path::new("A.png"), (2000, 2000), Some(mpp), Some(&pred())).unwrap();
        assert_eq!(d.items.len(), 3, "look-alikes are not detections");
        d.set_min_score(0.4).unwrap();
        assert_eq!(d.summary().count, 2);
        d.decide(0, Decision::Rejected).unwrap();
        d.decide(2, Decision::Accepted).unwrap();
        let id = d.add(100.0, 100.0).unwrap();
        assert_eq!(id, 3);
        let s = d.summary();
        assert_eq!((s.pending, s.accepted, s.rejected, s.added, s.count), (1, 1, 1, 1, 3));
        assert!((s.area_mm2.unwrap() - 0.25).abs() < 1e-12);
        assert!(s.mitotic_score.is_some());
        let xs: Vec<f64> = d.corrected().images[0].objects.iter().map(|o| o.centroid.x).collect();
        assert_eq!(xs, [20.0, 30.0, 100.0]);
        assert!(d.add(5000.0, 1.0).is_err());
        assert!(d.add(f64::NAN, 1.0).is_err());
        assert!(d.decide(99, Decision::Accepted).is_err());
        assert!(d.set_min_score(f64::INFINITY).is_err());
    }

    #[test]
    fn save_and_resume() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("A.review.json");
        let mut d = Decisions::new("A", Path::new("A.png"), (100, 100), None, Some(&pred())).unwrap();
        d.decide(1, Decision::Accepted).unwrap();
        d.save(&p).unwrap();
        assert_eq!(Decisions::load(&p).unwrap(), d);
        std::fs::write(&p, b"{\"version\": 1").unwrap();
        assert!(Decisions::load(&p).unwrap_err().to_string().contains("not a decisions file"));
        // Hand-edited files: whatever the tool relies on is checked on load.
        type Edit = fn(&mut serde_json::Value);
        let edits: [(&str, Edit); 5] = [
            ("outside", |v| v["items"][0]["y"] = 1e9.into()),
            ("repeated", |v| v["items"][1]["id"] = v["items"][0]["id"].clone()),
            ("out of range", |v| v["items"][0]["id"] = u64::MAX.into()),
            ("not a resolution", |v| v["mpp"] = (-3.0).into()),
            ("min_score", |v| v["min_score"] = 2.0.into()),
        ];
        for (said, edit) in edits {
            let mut v = serde_json::to_value(&d).unwrap();
            edit(&mut v);
            std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
            let err = Decisions::load(&p).unwrap_err().to_string();
            assert!(err.contains(said) && err.contains("A.review.json"), "{said}: {err}");
        }
    }

    #[test]
    fn predictions_of_another_image_are_refused() {
        let mut p = pred();
        p.image_mut_or_insert("B");
        let err = Decisions::new("C", Path::new("C.png"), (10, 10), None, Some(&p)).unwrap_err();
        assert!(err.to_string().contains("no image \"C\""), "{err}");
        // A single-image file is taken as this image's.
        assert_eq!(Decisions::new("C", Path::new("C.png"), (10, 10), None, Some(&pred())).unwrap().items.len(), 3);
    }
}
