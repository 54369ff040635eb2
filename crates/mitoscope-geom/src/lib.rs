//! Geometry shared by every Mitoscope crate: [`Point`], [`BBox`], [`Polygon`]
//! and the micron/pixel conversion [`Mpp`].
//!
//! Coordinate convention everywhere in Mitoscope: `x` is the column, `y` the
//! row, in pixels of the image at level 0, origin at the top-left pixel. A
//! pixel's centre sits on integer coordinates, so a bounding box derived from a
//! pixel set is *inclusive* (`x_max` is the last covered column).
//!
//! ```
//! use mitoscope_geom::{BBox, Mpp, Point};
//! let mpp = Mpp::new(0.25).unwrap();
//! assert_eq!(mpp.um_to_px(8.0), 32.0);
//! let a = BBox::new(0.0, 0.0, 9.0, 9.0).unwrap();
//! assert_eq!(a.center(), Point::new(4.5, 4.5));
//! assert_eq!(a.iou(&a), 1.0);
//! ```
#![deny(missing_docs)]

use serde::{Deserialize, Serialize};

/// Why a geometric value was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeomError {
    /// A coordinate or length was NaN or infinite.
    #[error("{what} is not a finite number ({value})")]
    NotFinite {
        /// Which quantity.
        what: &'static str,
        /// The offending value.
        value: f64,
    },
    /// A box whose max corner lies before its min corner.
    #[error("box is inverted: x {x_min}..{x_max}, y {y_min}..{y_max}")]
    InvertedBox {
        /// Left.
        x_min: f64,
        /// Top.
        y_min: f64,
        /// Right.
        x_max: f64,
        /// Bottom.
        y_max: f64,
    },
    /// Microns per pixel must be a positive finite number.
    #[error("microns per pixel must be positive and finite, got {0}")]
    BadMpp(f64),
}

fn finite(what: &'static str, value: f64) -> Result<f64, GeomError> {
    if value.is_finite() { Ok(value) } else { Err(GeomError::NotFinite { what, value }) }
}

/// A position in pixels (`x` = column, `y` = row).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Column.
    pub x: f64,
    /// Row.
    pub y: f64,
}

impl Point {
    /// A point; use [`Point::checked`] for untrusted input.
    pub const fn new(x: f64, y: f64) -> Self {
        Self { x, y }
    }

    /// A point whose coordinates must be finite.
    pub fn checked(x: f64, y: f64) -> Result<Self, GeomError> {
        Ok(Self::new(finite("x", x)?, finite("y", y)?))
    }

    /// Euclidean distance.
    pub fn distance(&self, other: &Point) -> f64 {
        (self.x - other.x).hypot(self.y - other.y)
    }

    /// Squared Euclidean distance (cheaper; same ordering as [`Point::distance`]).
    pub fn distance_sq(&self, other: &Point) -> f64 {
        let (dx, dy) = (self.x - other.x, self.y - other.y);
        dx * dx + dy * dy
    }
}

/// An axis-aligned rectangle, inclusive pixel coordinates (`x_max` is the last
/// column covered).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    /// Leftmost column.
    pub x_min: f64,
    /// Top row.
    pub y_min: f64,
    /// Rightmost column.
    pub x_max: f64,
    /// Bottom row.
    pub y_max: f64,
}

impl BBox {
    /// A box from its corners; rejects NaN and inverted boxes.
    pub fn new(x_min: f64, y_min: f64, x_max: f64, y_max: f64) -> Result<Self, GeomError> {
        let b = Self {
            x_min: finite("x_min", x_min)?,
            y_min: finite("y_min", y_min)?,
            x_max: finite("x_max", x_max)?,
            y_max: finite("y_max", y_max)?,
        };
        if b.x_max < b.x_min || b.y_max < b.y_min {
            return Err(GeomError::InvertedBox { x_min, y_min, x_max, y_max });
        }
        Ok(b)
    }

    /// A box of `width` x `height` centred on `c`, as COCO/YOLO sizes are given.
    pub fn from_center(c: Point, width: f64, height: f64) -> Result<Self, GeomError> {
        Self::new(c.x - width / 2.0, c.y - height / 2.0, c.x + width / 2.0, c.y + height / 2.0)
    }

    /// The smallest box holding every point; `None` when there is none.
    pub fn enclosing<'a>(points: impl IntoIterator<Item = &'a Point>) -> Option<Self> {
        let mut it = points.into_iter();
        let first = it.next()?;
        let mut b = Self { x_min: first.x, y_min: first.y, x_max: first.x, y_max: first.y };
        for p in it {
            b.x_min = b.x_min.min(p.x);
            b.y_min = b.y_min.min(p.y);
            b.x_max = b.x_max.max(p.x);
            b.y_max = b.y_max.max(p.y);
        }
        Some(b)
    }

    /// Centre of the box.
    pub fn center(&self) -> Point {
        Point::new((self.x_min + self.x_max) / 2.0, (self.y_min + self.y_max) / 2.0)
    }

    /// `x_max - x_min`.
    pub fn width(&self) -> f64 {
        self.x_max - self.x_min
    }

    /// `y_max - y_min`.
    pub fn height(&self) -> f64 {
        self.y_max - self.y_min
    }

    /// Area as a continuous rectangle (`width * height`).
    pub fn area(&self) -> f64 {
        self.width() * self.height()
    }

    /// Whether `p` lies inside or on the border.
    pub fn contains(&self, p: &Point) -> bool {
        p.x >= self.x_min && p.x <= self.x_max && p.y >= self.y_min && p.y <= self.y_max
    }

    /// Intersection over union of two boxes as continuous rectangles, in [0, 1].
    /// Two identical degenerate (zero-area) boxes have IoU 1.
    pub fn iou(&self, other: &BBox) -> f64 {
        if self == other {
            return 1.0;
        }
        let w = (self.x_max.min(other.x_max) - self.x_min.max(other.x_min)).max(0.0);
        let h = (self.y_max.min(other.y_max) - self.y_min.max(other.y_min)).max(0.0);
        let inter = w * h;
        let union = self.area() + other.area() - inter;
        if union <= 0.0 { 0.0 } else { (inter / union).clamp(0.0, 1.0) }
    }

    /// This box moved by (`dx`, `dy`).
    pub fn translate(&self, dx: f64, dy: f64) -> Self {
        Self { x_min: self.x_min + dx, y_min: self.y_min + dy, x_max: self.x_max + dx, y_max: self.y_max + dy }
    }
}

/// A simple polygon (closed implicitly: the last vertex joins the first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Polygon {
    /// Vertices in order.
    pub vertices: Vec<Point>,
}

impl Polygon {
    /// A polygon from its vertices; a repeated closing vertex is dropped.
    pub fn new(mut vertices: Vec<Point>) -> Self {
        if vertices.len() > 1 && vertices.first() == vertices.last() {
            vertices.pop();
        }
        Self { vertices }
    }

    /// Signed-area-free absolute area (shoelace formula).
    pub fn area(&self) -> f64 {
        let n = self.vertices.len();
        if n < 3 {
            return 0.0;
        }
        let mut twice = 0.0;
        for i in 0..n {
            let (a, b) = (self.vertices[i], self.vertices[(i + 1) % n]);
            twice += a.x * b.y - b.x * a.y;
        }
        twice.abs() / 2.0
    }

    /// Area centroid; falls back to the vertex mean for degenerate polygons.
    pub fn centroid(&self) -> Option<Point> {
        let n = self.vertices.len();
        if n == 0 {
            return None;
        }
        let mut a2 = 0.0;
        let (mut cx, mut cy) = (0.0, 0.0);
        for i in 0..n {
            let (p, q) = (self.vertices[i], self.vertices[(i + 1) % n]);
            let cross = p.x * q.y - q.x * p.y;
            a2 += cross;
            cx += (p.x + q.x) * cross;
            cy += (p.y + q.y) * cross;
        }
        if a2.abs() < 1e-12 {
            let (sx, sy) = self.vertices.iter().fold((0.0, 0.0), |(sx, sy), p| (sx + p.x, sy + p.y));
            return Some(Point::new(sx / n as f64, sy / n as f64));
        }
        Some(Point::new(cx / (3.0 * a2), cy / (3.0 * a2)))
    }

    /// Bounding box of the vertices.
    pub fn bbox(&self) -> Option<BBox> {
        BBox::enclosing(&self.vertices)
    }

    /// Even-odd point-in-polygon test.
    pub fn contains(&self, p: &Point) -> bool {
        let v = &self.vertices;
        let n = v.len();
        let mut inside = false;
        let mut j = n.wrapping_sub(1);
        for i in 0..n {
            let (a, b) = (v[i], v[j]);
            if (a.y > p.y) != (b.y > p.y) && p.x < (b.x - a.x) * (p.y - a.y) / (b.y - a.y) + a.x {
                inside = !inside;
            }
            j = i;
        }
        inside
    }
}

/// Microns per pixel of an image: the bridge between distances in µm (as
/// evaluation protocols state them) and pixels.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
pub struct Mpp(f64);

impl Mpp {
    /// ICPR 2012 MITOS scanner A (Aperio XT).
    pub const ICPR2012_APERIO: Mpp = Mpp(0.2456);

    /// Checked constructor: positive and finite.
    pub fn new(mpp: f64) -> Result<Self, GeomError> {
        if mpp.is_finite() && mpp > 0.0 { Ok(Self(mpp)) } else { Err(GeomError::BadMpp(mpp)) }
    }

    /// The raw value in µm per pixel.
    pub fn get(self) -> f64 {
        self.0
    }

    /// Microns to pixels.
    pub fn um_to_px(self, um: f64) -> f64 {
        um / self.0
    }

    /// Pixels to microns.
    pub fn px_to_um(self, px: f64) -> f64 {
        px * self.0
    }

    /// Pixels to millimetres (MIDOG JSON coordinates are in mm).
    pub fn px_to_mm(self, px: f64) -> f64 {
        px * self.0 / 1000.0
    }

    /// Millimetres to pixels.
    pub fn mm_to_px(self, mm: f64) -> f64 {
        mm * 1000.0 / self.0
    }

    /// Area in mm² of a `width` x `height` pixel region.
    pub fn area_mm2(self, width_px: f64, height_px: f64) -> f64 {
        self.px_to_mm(width_px) * self.px_to_mm(height_px)
    }
}

impl std::fmt::Display for Mpp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} µm/px", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_bad_values() {
        assert!(Point::checked(f64::NAN, 1.0).is_err());
        assert!(BBox::new(5.0, 0.0, 4.0, 1.0).is_err());
        assert!(Mpp::new(0.0).is_err());
        assert!(Mpp::new(f64::INFINITY).is_err());
    }

    #[test]
    fn iou_hand_worked() {
        let a = BBox::new(0.0, 0.0, 2.0, 2.0).unwrap();
        let b = BBox::new(1.0, 1.0, 3.0, 3.0).unwrap();
        assert!((a.iou(&b) - 1.0 / 7.0).abs() < 1e-12);
        let c = BBox::new(5.0, 5.0, 6.0, 6.0).unwrap();
        assert_eq!(a.iou(&c), 0.0);
    }

    #[test]
    fn polygon_square() {
        let sq = Polygon::new(vec![
            Point::new(0.0, 0.0),
            Point::new(4.0, 0.0),
            Point::new(4.0, 2.0),
            Point::new(0.0, 2.0),
            Point::new(0.0, 0.0),
        ]);
        assert_eq!(sq.vertices.len(), 4);
        assert_eq!(sq.area(), 8.0);
        assert_eq!(sq.centroid().unwrap(), Point::new(2.0, 1.0));
        assert!(sq.contains(&Point::new(1.0, 1.0)));
        assert!(!sq.contains(&Point::new(5.0, 1.0)));
    }

    #[test]
    fn mpp_round_trip() {
        let m = Mpp::ICPR2012_APERIO;
        assert!((m.um_to_px(8.0) - 32.573_29).abs() < 1e-3);
        assert!((m.mm_to_px(m.px_to_mm(1234.0)) - 1234.0).abs() < 1e-9);
    }

    proptest! {
        #[test]
        fn iou_in_unit_interval(a in 0.0..100.0f64, b in 0.0..100.0f64, w in 0.0..50.0f64, h in 0.0..50.0f64,
                                c in 0.0..100.0f64, d in 0.0..100.0f64, w2 in 0.0..50.0f64, h2 in 0.0..50.0f64) {
            let x = BBox::new(a, b, a + w, b + h).unwrap();
            let y = BBox::new(c, d, c + w2, d + h2).unwrap();
            let iou = x.iou(&y);
            prop_assert!((0.0..=1.0).contains(&iou));
            prop_assert!((iou - y.iou(&x)).abs() < 1e-12);
        }
    }
}
