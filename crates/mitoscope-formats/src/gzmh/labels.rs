//! Detection label files: CSV/TXT tables (with or without a header), JSON and
//! Pascal-VOC XML, each giving per mitosis a bounding rectangle, a centroid,
//! or both. Problems in a line are reported (file and line named) and the line
//! skipped; reading goes on.

use std::collections::HashMap;
use std::path::Path;

use mitoscope_annotations::ObjectClass;
use mitoscope_geom::{BBox, Point};
use serde_json::Value;

use super::layout::{IMAGE_COLUMN_NAMES, normalise_name};

/// One labelled object as the label file gives it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LabelObject {
    pub(crate) bbox: Option<BBox>,
    /// The centroid as written; `None` when the file gives only a box (its
    /// centre is then no label of the mitosis' centre of mass).
    pub(crate) centroid: Option<Point>,
    pub(crate) class: ObjectClass,
    /// `file line N` / `file item N`, for messages.
    pub(crate) origin: String,
    /// The box is the axis-aligned hull of a rotated rectangle given by its
    /// corners (OpenCV's `minAreaRect` / `boxPoints`), so it can be wider than
    /// the figure's own axis-aligned rectangle.
    pub(crate) rotated: bool,
    /// The subset (split) a dataset-level table names beside the image, to
    /// tell apart images of one name in different splits.
    pub(crate) subset: Option<String>,
}

impl LabelObject {
    /// The centroid as given, else the box centre.
    pub(crate) fn position(&self) -> Point {
        self.centroid.or(self.bbox.map(|b| b.center())).unwrap_or(Point::new(0.0, 0.0))
    }
}

/// What a label file held: objects (with the image they name, in a
/// dataset-level file) and what was wrong with it.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub(crate) objects: Vec<(Option<String>, LabelObject)>,
    pub(crate) problems: Vec<String>,
}

/// What a table column or JSON key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Col {
    Image,
    XMin,
    YMin,
    XMax,
    YMax,
    Width,
    Height,
    Cx,
    Cy,
    /// A bare `x`: the centroid, unless a width is given (then the left edge).
    PlainX,
    /// A bare `y`, as [`Col::PlainX`].
    PlainY,
    Class,
    /// The image's subset (split) in a dataset-level table.
    Subset,
    /// The rotation of a `cx, cy, w, h` rectangle, in degrees (OpenCV's minAreaRect).
    Angle,
    /// Corner `n` (0-3) of a rectangle given by four corners.
    CornerX(u8),
    CornerY(u8),
}

/// Corners given by a table with `x1..x4`, `y1..y4` columns, or a JSON box of
/// eight numbers or four points: a rectangle, possibly rotated.
const CORNERS: usize = 4;

/// How four numbers in a row give a box: its corners (`xmin ymin xmax ymax`,
/// as Pascal-VOC) or a corner and its size (`x y w h`, as OpenCV's
/// `boundingRect` and COCO). Named columns say which they are; for numbers
/// by position, each file is read both ways and the reading under which more
/// lines give a valid box (and more centroids sit in the middle of their
/// boxes) wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BoxOrder {
    Corners,
    Sized,
}

impl BoxOrder {
    fn cols(self) -> [Col; 4] {
        match self {
            BoxOrder::Corners => [Col::XMin, Col::YMin, Col::XMax, Col::YMax],
            BoxOrder::Sized => [Col::XMin, Col::YMin, Col::Width, Col::Height],
        }
    }

    /// `b` as `[xmin, ymin, xmax, ymax]`.
    fn corners(self, b: &[f64]) -> [f64; 4] {
        match self {
            BoxOrder::Corners => [b[0], b[1], b[2], b[3]],
            BoxOrder::Sized => [b[0], b[1], b[0] + b[2], b[1] + b[3]],
        }
    }
}

/// Parses a file under each [`BoxOrder`] and keeps the better reading (see
/// there); corners win a tie. `x y w h` needs corners to fail on at least
/// half the lines: one bad line in a file of corners is that line's problem
/// (reported), not a reason to read every other line as sizes.
fn best_reading(parse: impl Fn(BoxOrder) -> Parsed) -> Parsed {
    let fits = |p: &Parsed| {
        p.objects.iter().fold((0, 0), |acc, (_, o)| match (o.bbox, o.centroid) {
            (Some(b), Some(c)) => add(acc, fit(&[c.x, c.y], &[b.x_min, b.y_min, b.x_max, b.y_max])),
            _ => acc,
        })
    };
    let corners = parse(BoxOrder::Corners);
    let sized = parse(BoxOrder::Sized);
    let (n_corners, n_sized) = (corners.objects.len(), sized.objects.len());
    let corners_mostly_fail = corners.problems.len() >= n_corners;
    let sized_wins =
        (n_sized > n_corners && corners_mostly_fail) || (n_sized == n_corners && fits(&sized) > fits(&corners));
    if sized_wins { sized } else { corners }
}

/// The four corners of OpenCV's `minAreaRect`: centre, size and angle in degrees.
fn rotated_rect_corners(cx: f64, cy: f64, w: f64, h: f64, angle_deg: f64) -> Vec<f64> {
    let (sin, cos) = angle_deg.to_radians().sin_cos();
    [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)]
        .into_iter()
        .flat_map(|(u, v)| {
            let (dx, dy) = (u * w, v * h);
            [cx + dx * cos - dy * sin, cy + dx * sin + dy * cos]
        })
        .collect()
}

fn col_role(name: &str) -> Option<Col> {
    let n = normalise_name(name);
    let n = n.as_str();
    if IMAGE_COLUMN_NAMES.contains(&n) {
        return Some(Col::Image);
    }
    Some(match n {
        "xmin" | "x1" | "x0" | "left" | "minx" | "xleft" | "xstart" | "bboxxmin" | "boxxmin" | "bboxx1"
        | "topleftx" => Col::XMin,
        "ymin" | "y1" | "y0" | "top" | "miny" | "ytop" | "ystart" | "bboxymin" | "boxymin" | "bboxy1" | "toplefty" => {
            Col::YMin
        }
        "xmax" | "x2" | "right" | "maxx" | "xright" | "xend" | "bboxxmax" | "boxxmax" | "bboxx2" | "bottomrightx" => {
            Col::XMax
        }
        "ymax" | "y2" | "bottom" | "maxy" | "ybottom" | "yend" | "bboxymax" | "boxymax" | "bboxy2" | "bottomrighty" => {
            Col::YMax
        }
        "w" | "width" | "bboxw" | "bboxwidth" | "boxwidth" | "boxw" => Col::Width,
        "h" | "height" | "bboxh" | "bboxheight" | "boxheight" | "boxh" => Col::Height,
        "cx" | "xc" | "centerx" | "centrex" | "centroidx" | "xcenter" | "xcentre" | "xcentroid" | "col" | "column"
        | "mx" | "centerofmassx" | "cenx" => Col::Cx,
        "cy" | "yc" | "centery" | "centrey" | "centroidy" | "ycenter" | "ycentre" | "ycentroid" | "row" | "my"
        | "centerofmassy" | "ceny" => Col::Cy,
        "x3" => Col::CornerX(2),
        "y3" => Col::CornerY(2),
        "x4" => Col::CornerX(3),
        "y4" => Col::CornerY(3),
        "x" => Col::PlainX,
        "y" => Col::PlainY,
        "class" | "label" | "category" | "type" | "classname" | "cls" | "name" | "categoryname" => Col::Class,
        "subset" | "split" | "partition" | "testset" => Col::Subset,
        "angle" | "theta" | "rotation" | "angledeg" => Col::Angle,
        _ => return None,
    })
}

/// The values of one record, by role.
#[derive(Debug, Default)]
struct Fields {
    nums: HashMap<Col, f64>,
    class: Option<String>,
    image: Option<String>,
    subset: Option<String>,
}

impl Fields {
    fn set(&mut self, col: Col, text: &str) -> Result<(), String> {
        match col {
            Col::Image => self.image = Some(text.trim().to_owned()),
            Col::Class => self.class = Some(text.trim().to_owned()),
            Col::Subset => self.subset = Some(text.trim().to_owned()).filter(|s| !s.is_empty()),
            _ => {
                let v = parse_number(text).ok_or_else(|| format!("'{}' is not a number", text.trim()))?;
                self.nums.insert(col, v);
            }
        }
        Ok(())
    }

    /// The object these values describe (see [`Col::PlainX`] for bare x/y).
    fn build(&self, origin: String) -> Result<(Option<String>, LabelObject), String> {
        let g = |c: Col| self.nums.get(&c).copied();
        if let Some(angle) = g(Col::Angle) {
            // A rotated rectangle by centre, size and angle; the centre is the
            // rectangle's, no centroid label.
            let (Some(x), Some(y), Some(w), Some(h)) =
                (g(Col::Cx).or(g(Col::PlainX)), g(Col::Cy).or(g(Col::PlainY)), g(Col::Width), g(Col::Height))
            else {
                return Err("has an angle but not the rectangle's cx, cy, w and h".into());
            };
            let corners: Vec<(f64, f64)> =
                rotated_rect_corners(x, y, w, h, angle).chunks(2).map(|p| (p[0], p[1])).collect();
            let (bbox, rotated) = corner_box(&corners)?;
            let class = parse_class(self.class.as_deref())?;
            let subset = self.subset.clone();
            return Ok((
                self.image.clone(),
                LabelObject { bbox: Some(bbox), centroid: None, class, origin, rotated, subset },
            ));
        }
        if let Some(corners) = self.corners()? {
            let (bbox, rotated) = corner_box(&corners)?;
            let centroid = match (g(Col::Cx).or(g(Col::PlainX)), g(Col::Cy).or(g(Col::PlainY))) {
                (Some(x), Some(y)) => Some(make_point(x, y)?),
                (None, None) => None,
                _ => return Err("gives only one centroid coordinate".into()),
            };
            let class = parse_class(self.class.as_deref())?;
            return Ok((
                self.image.clone(),
                LabelObject { bbox: Some(bbox), centroid, class, origin, rotated, subset: self.subset.clone() },
            ));
        }
        let sized = g(Col::Width).is_some() || g(Col::Height).is_some();
        let plain_is_corner = sized && g(Col::XMin).is_none() && g(Col::Cx).is_none();
        let (left, top) = if plain_is_corner { (g(Col::PlainX), g(Col::PlainY)) } else { (g(Col::XMin), g(Col::YMin)) };
        let (cx, cy) = if plain_is_corner {
            (g(Col::Cx), g(Col::Cy))
        } else {
            (g(Col::Cx).or(g(Col::PlainX)), g(Col::Cy).or(g(Col::PlainY)))
        };
        let bbox = match (left, top, cx, cy) {
            (Some(x0), Some(y0), ..) => {
                let x1 = g(Col::XMax)
                    .or(g(Col::Width).map(|w| x0 + w))
                    .ok_or("has a left edge but no right edge or width")?;
                let y1 = g(Col::YMax)
                    .or(g(Col::Height).map(|h| y0 + h))
                    .ok_or("has a top edge but no bottom edge or height")?;
                Some(make_box(x0, y0, x1, y1)?)
            }
            (None, None, Some(x), Some(y)) if sized => {
                let (w, h) = (
                    g(Col::Width).ok_or("has a height but no width")?,
                    g(Col::Height).ok_or("has a width but no height")?,
                );
                Some(make_box(x - w / 2.0, y - h / 2.0, x + w / 2.0, y + h / 2.0)?)
            }
            (None, None, ..) if g(Col::XMax).is_some() || g(Col::YMax).is_some() => {
                return Err("has a right/bottom edge but no left/top".into());
            }
            (Some(_), None, ..) | (None, Some(_), ..) => {
                return Err("gives only one of the left and top edges".into());
            }
            _ => None,
        };
        let centroid = match (cx, cy) {
            (Some(x), Some(y)) => Some(make_point(x, y)?),
            (None, None) => None,
            _ => return Err("gives only one centroid coordinate".into()),
        };
        if bbox.is_none() && centroid.is_none() {
            return Err("has neither a box nor a centroid".into());
        }
        let class = parse_class(self.class.as_deref())?;
        Ok((
            self.image.clone(),
            LabelObject { bbox, centroid, class, origin, rotated: false, subset: self.subset.clone() },
        ))
    }

    /// The four corners, where the record gives any corner beyond the second.
    fn corners(&self) -> Result<Option<Vec<(f64, f64)>>, String> {
        let given = (0..CORNERS as u8).any(|i| self.nums.contains_key(&Col::CornerX(i)));
        if !given {
            return Ok(None);
        }
        (0..CORNERS as u8)
            .map(|i| match (self.nums.get(&Col::CornerX(i)), self.nums.get(&Col::CornerY(i))) {
                (Some(&x), Some(&y)) => Ok((x, y)),
                _ => Err(format!("gives corners of a rectangle but not x{0} and y{0}", i + 1)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Sets the four corners from eight numbers `x1 y1 ... x4 y4`.
    fn set_corners(&mut self, v: &[f64]) {
        for (i, xy) in v.chunks(2).enumerate().take(CORNERS) {
            self.nums.insert(Col::CornerX(i as u8), xy[0]);
            self.nums.insert(Col::CornerY(i as u8), xy[1]);
        }
    }
}

/// The axis-aligned box around a rectangle's corners, and whether the
/// rectangle is rotated (its corners are not the box's). A corner a little
/// outside the image (a rotated rectangle around a figure at the edge) is
/// cut at 0; one far outside is an error.
fn corner_box(corners: &[(f64, f64)]) -> Result<(BBox, bool), String> {
    const EDGE_SLACK_PX: f64 = 8.0;
    for &(x, y) in corners {
        if !x.is_finite() || !y.is_finite() {
            return Err(format!("corner ({x}, {y}) is not a finite point"));
        }
        if x < -EDGE_SLACK_PX || y < -EDGE_SLACK_PX {
            return Err(format!("corner ({x}, {y}) lies outside the image"));
        }
    }
    let (x0, x1) = corners.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = corners.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let on_edge = |v: f64, lo: f64, hi: f64| (v - lo).abs() < 1e-6 || (v - hi).abs() < 1e-6;
    let rotated = corners.iter().any(|&(x, y)| !(on_edge(x, x0, x1) && on_edge(y, y0, y1)));
    Ok((make_box(x0.max(0.0), y0.max(0.0), x1.max(0.0), y1.max(0.0))?, rotated))
}

fn parse_number(text: &str) -> Option<f64> {
    text.trim().trim_matches('"').parse::<f64>().ok()
}

fn check_coordinate(v: f64) -> Result<f64, String> {
    if !v.is_finite() {
        Err(format!("coordinate {v} is not a finite number"))
    } else if v < 0.0 {
        Err(format!("coordinate {v} is negative"))
    } else {
        Ok(v)
    }
}

fn make_box(x0: f64, y0: f64, x1: f64, y1: f64) -> Result<BBox, String> {
    for v in [x0, y0, x1, y1] {
        check_coordinate(v)?;
    }
    BBox::new(x0, y0, x1, y1).map_err(|e| e.to_string())
}

fn make_point(x: f64, y: f64) -> Result<Point, String> {
    Ok(Point::new(check_coordinate(x)?, check_coordinate(y)?))
}

fn parse_class(name: Option<&str>) -> Result<ObjectClass, String> {
    match name.map(str::trim) {
        None | Some("") => Ok(ObjectClass::Mitosis),
        Some(n) => ObjectClass::parse(n).ok_or_else(|| format!("unknown class '{n}'")),
    }
}

/// Parses a label file of extension `ext`. `shown` names it in messages.
pub(crate) fn parse(bytes: &[u8], shown: &Path, ext: &str) -> Parsed {
    match ext {
        "xml" => parse_voc(bytes, shown),
        "json" => parse_json(bytes, shown),
        _ => parse_table(&String::from_utf8_lossy(bytes), shown),
    }
}

fn parse_voc(bytes: &[u8], shown: &Path) -> Parsed {
    match crate::voc::parse(bytes, shown) {
        Ok(img) => Parsed {
            objects: img
                .objects
                .into_iter()
                .enumerate()
                // VOC gives boxes only; the box centre is no centroid label.
                .map(|(i, o)| {
                    (
                        None,
                        LabelObject {
                            bbox: o.bbox,
                            centroid: None,
                            class: o.class,
                            origin: format!("{} object {}", shown.display(), i + 1),
                            rotated: false,
                            subset: None,
                        },
                    )
                })
                .collect(),
            problems: Vec::new(),
        },
        Err(e) => Parsed { objects: Vec::new(), problems: vec![format!("{e} (file skipped)")] },
    }
}

/// Whether a txt file is YOLO: every line `class cx cy w h [score]` with an
/// integer class and the four box values within [0, 1].
pub(crate) fn looks_like_yolo(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty()).peekable();
    lines.peek().is_some()
        && lines.all(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 || f.len() == 6)
                && f[0].parse::<u32>().is_ok()
                && f[1..5].iter().all(|v| v.parse::<f64>().is_ok_and(|x| (0.0..=1.0).contains(&x)))
        })
}

/// Splits text into records of fields, with 1-based line numbers; blank and
/// `#` lines are skipped. Delimiter: comma, tab or semicolon if the first
/// record has one, else whitespace.
fn records(text: &str) -> Vec<(usize, Vec<String>)> {
    let lines: Vec<(usize, &str)> = text
        .trim_start_matches('\u{feff}')
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let Some(&(_, first)) = lines.first() else {
        return Vec::new();
    };
    let delim = [',', '\t', ';'].into_iter().find(|d| first.contains(*d));
    lines
        .into_iter()
        .map(|(n, l)| {
            let fields: Vec<String> = match delim {
                Some(d) => split_quoted(l, d),
                None => l.split_whitespace().map(str::to_owned).collect(),
            };
            (n, fields)
        })
        .collect()
}

/// Splits on `delim` outside double quotes (file names may hold commas).
fn split_quoted(line: &str, delim: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c == delim && !quoted => out.push(String::new()),
            c => out.last_mut().map_or((), |f| f.push(c)),
        }
    }
    out.into_iter().map(|f| f.trim().to_owned()).collect()
}

fn parse_table(text: &str, shown: &Path) -> Parsed {
    let recs = records(text);
    let mut parsed = Parsed::default();
    let Some((_, first)) = recs.first() else {
        return parsed;
    };
    let header: Option<Vec<Option<Col>>> = first
        .iter()
        .any(|f| parse_number(f).is_none() && col_role(f).is_some())
        .then(|| first.iter().map(|f| col_role(f)).collect());
    // With x3/y3/x4/y4 columns, x1/y1/x2/y2 are corners too, not box edges.
    let header = header.map(|cols| {
        if !cols.iter().any(|c| matches!(c, Some(Col::CornerX(_) | Col::CornerY(_)))) {
            return cols;
        }
        first
            .iter()
            .zip(cols)
            .map(|(name, c)| match normalise_name(name).as_str() {
                "x1" => Some(Col::CornerX(0)),
                "y1" => Some(Col::CornerY(0)),
                "x2" => Some(Col::CornerX(1)),
                "y2" => Some(Col::CornerY(1)),
                _ => c,
            })
            .collect()
    });
    match header {
        Some(cols) => parse_headed(&recs[1..], &cols, shown, &mut parsed),
        None => return best_reading(|order| parse_headerless(&recs, shown, order)),
    }
    parsed
}

fn parse_headed(recs: &[(usize, Vec<String>)], cols: &[Option<Col>], shown: &Path, parsed: &mut Parsed) {
    for (line, fields) in recs {
        let at = format!("{} line {line}", shown.display());
        if fields.len() != cols.len() {
            parsed.problems.push(format!(
                "{at}: {} fields, the header has {} (line skipped)",
                fields.len(),
                cols.len()
            ));
            continue;
        }
        let mut f = Fields::default();
        let result = cols
            .iter()
            .zip(fields)
            .filter_map(|(c, v)| c.map(|c| (c, v)))
            .try_for_each(|(c, v)| f.set(c, v))
            .and_then(|()| f.build(at.clone()));
        match result {
            Ok(obj) => parsed.objects.push(obj),
            Err(e) => parsed.problems.push(format!("{at}: {e} (line skipped)")),
        }
    }
}

/// A headerless row's numbers and optional class word.
type Row = (Vec<f64>, Option<String>, Option<String>);

/// A headerless row: numbers, optionally with a class word first or last and
/// an image file name first (a dataset-level table without a header).
fn split_row(fields: &[String]) -> Result<Row, String> {
    let mut nums = Vec::with_capacity(fields.len());
    let (mut class, mut image) = (None, None);
    for (i, f) in fields.iter().enumerate() {
        match parse_number(f) {
            Some(v) => nums.push(v),
            None if i == 0 && mitoscope_imaging::is_image_path(Path::new(f.trim().trim_matches('"'))) => {
                image = Some(f.trim().trim_matches('"').to_owned())
            }
            None if (i == usize::from(image.is_some()) || i + 1 == fields.len())
                && class.is_none()
                && ObjectClass::parse(f).is_some() =>
            {
                class = Some(f.clone())
            }
            None => return Err(format!("'{f}' is not a number")),
        }
    }
    Ok((nums, class, image))
}

/// `[xmin, ymin, xmax, ymax]` around points given as `x y x y ...`.
fn bounds(v: &[f64]) -> [f64; 4] {
    v.chunks(2).fold([f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY], |b, p| {
        [b[0].min(p[0]), b[1].min(p[1]), b[2].max(p[0]), b[3].max(p[1])]
    })
}

/// Whether a centroid lies within a box given as four numbers.
fn inside(p: &[f64], b: &[f64]) -> bool {
    p[0] >= b[0] && p[0] <= b[2] && p[1] >= b[1] && p[1] <= b[3]
}

/// How well a centroid fits a box, to tell the columns' order: (lies in the
/// box's central half, lies in the box). A figure's centroid sits near the
/// middle of its minimum bounding rectangle; under a wrong reading it lands
/// at a far corner of an outsized box, or outside.
fn fit(p: &[f64], b: &[f64]) -> (usize, usize) {
    let central = (p[0] - (b[0] + b[2]) / 2.0).abs() <= (b[2] - b[0]) / 4.0
        && (p[1] - (b[1] + b[3]) / 2.0).abs() <= (b[3] - b[1]) / 4.0;
    (usize::from(central), usize::from(inside(p, b)))
}

fn add(a: (usize, usize), b: (usize, usize)) -> (usize, usize) {
    (a.0 + b.0, a.1 + b.1)
}

/// Whether, over the rows of `len` numbers, a centroid written first fits
/// them better than one written last (see [`fit`]); `shape_box` turns the
/// other numbers into `[xmin, ymin, xmax, ymax]`.
fn centroid_first(rows: &[(usize, Result<Row, String>)], len: usize, shape_box: impl Fn(&[f64]) -> [f64; 4]) -> bool {
    let (mut last, mut first) = ((0, 0), (0, 0));
    for (_, r) in rows {
        if let Ok((v, ..)) = r
            && v.len() == len
        {
            last = add(last, fit(&v[len - 2..], &shape_box(&v[..len - 2])));
            first = add(first, fit(&v[..2], &shape_box(&v[2..])));
        }
    }
    first > last
}

fn parse_headerless(recs: &[(usize, Vec<String>)], shown: &Path, order: BoxOrder) -> Parsed {
    let mut parsed = Parsed::default();
    let rows: Vec<(usize, Result<Row, String>)> = recs.iter().map(|(n, f)| (*n, split_row(f))).collect();
    // A box and a centroid (6 numbers), four corners and a centroid (10): the
    // centroid first or last, whichever order fits more rows, file-wide.
    let centroid_leads = centroid_first(&rows, 6, |b| order.corners(b));
    let centroid_leads_corners = centroid_first(&rows, 10, bounds);
    for (line, row) in rows {
        let at = format!("{} line {line}", shown.display());
        let result = row.and_then(|(v, class, image)| {
            let mut f = Fields { class, image, ..Default::default() };
            match (v.len(), centroid_leads_corners) {
                (8, _) | (10, false) => {
                    f.set_corners(&v[..8]);
                    if v.len() == 10 {
                        f.nums.extend([(Col::Cx, v[8]), (Col::Cy, v[9])]);
                    }
                    return f.build(at.clone());
                }
                (10, true) => {
                    f.nums.extend([(Col::Cx, v[0]), (Col::Cy, v[1])]);
                    f.set_corners(&v[2..]);
                    return f.build(at.clone());
                }

                _ => {}
            }
            let [x0, y0, x1, y1] = order.cols();
            let cols: &[Col] = match (v.len(), centroid_leads) {
                (2, _) => &[Col::Cx, Col::Cy],
                (4, _) => &[x0, y0, x1, y1],
                (6, false) => &[x0, y0, x1, y1, Col::Cx, Col::Cy],
                (6, true) => &[Col::Cx, Col::Cy, x0, y0, x1, y1],
                (5, _) if v.iter().all(|x| (0.0..=1.0).contains(x) || *x == v[0]) => {
                    return Err(
                        "5 numbers look like YOLO (class cx cy w h, normalised), but the file as a whole is not YOLO"
                            .into(),
                    );
                }
                (5 | 7, _) => {
                    // A box with a class id or score, or OpenCV's minAreaRect
                    // (cx cy w h angle)? Both occur and nothing tells them apart.
                    return Err(format!(
                        "{} numbers: a box with a class or score, or a rotated rectangle (cx cy w h angle){}? \
                         Give the file a header naming its columns (e.g. xmin,ymin,xmax,ymax,score or \
                         cx,cy,w,h,angle)",
                        v.len(),
                        if v.len() == 7 { " with a centroid" } else { "" }
                    ));
                }
                (n, _) => {
                    return Err(format!(
                        "{n} numbers; expected 2 (centroid), 4 (box), 6 (box and centroid), 8 (rectangle corners) or 10 (corners and centroid)"
                    ));
                }
            };
            f.nums = cols.iter().copied().zip(v).collect();
            f.build(at.clone())
        });
        match result {
            Ok(obj) => parsed.objects.push(obj),
            Err(e) => parsed.problems.push(format!("{at}: {e} (line skipped)")),
        }
    }
    parsed
}

/// Keys holding the list of objects in a JSON label file.
const LIST_KEYS: &[&str] = &[
    "objects",
    "annotations",
    "labels",
    "mitoses",
    "mitosis",
    "boxes",
    "bboxes",
    "detections",
    "shapes",
    "instances",
    "items",
    "cells",
];
const BOX_KEYS: &[&str] =
    &["bbox", "box", "bndbox", "rect", "rectangle", "boundingbox", "boundingrect", "boundingrectangle", "mbr"];
const CENTROID_KEYS: &[&str] =
    &["centroid", "center", "centre", "point", "position", "location", "centerofmass", "centroids"];

fn parse_json(bytes: &[u8], shown: &Path) -> Parsed {
    let mut parsed = Parsed::default();
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            parsed.problems.push(format!("{}: not valid JSON: {e} (file skipped)", shown.display()));
            return parsed;
        }
    };
    if is_coco(&value) {
        return parse_coco(bytes, shown);
    }
    let items = json_items(&value);
    best_reading(|order| {
        let mut parsed = Parsed::default();
        for (i, (image, item)) in items.iter().enumerate() {
            let at = format!("{} object {}", shown.display(), i + 1);
            match json_object(item, at.clone(), order) {
                Ok((own_image, obj)) => parsed.objects.push((own_image.or_else(|| image.clone()), obj)),
                Err(e) => parsed.problems.push(format!("{at}: {e} (object skipped)")),
            }
        }
        parsed
    })
}

/// COCO / MIDOG JSON: `images` and `annotations` lists, annotations naming
/// their image by id (not by name, so the generic reading would misplace them).
fn is_coco(value: &Value) -> bool {
    value.get("images").is_some_and(Value::is_array) && value.get("annotations").is_some_and(Value::is_array)
}

/// A COCO file in a dataset, through the COCO reader (its box convention
/// detected as for a COCO file on its own): objects keyed by image stem.
fn parse_coco(bytes: &[u8], shown: &Path) -> Parsed {
    let mut parsed = Parsed::default();
    match crate::coco::parse_with(bytes, shown, &crate::ReadOptions::default(), None) {
        Ok(set) => {
            parsed.problems.extend(set.inconsistencies.iter().map(|i| format!("{}: {i}", shown.display())));
            for img in set.images {
                for (k, o) in img.objects.into_iter().enumerate() {
                    // A box centre is no centroid label; an outline's centroid is.
                    let centroid = o.bbox.is_none().then_some(o.centroid);
                    let origin = format!("{} image {} object {}", shown.display(), img.image, k + 1);
                    parsed.objects.push((
                        Some(img.image.clone()),
                        LabelObject { bbox: o.bbox, centroid, class: o.class, origin, rotated: false, subset: None },
                    ));
                }
            }
        }
        Err(e) => parsed.problems.push(format!("{e} (file skipped)")),
    }
    parsed
}

/// The object records of a JSON label file, with the image a `{image: [...]}`
/// map or a per-image record (`{"file_name": ..., "mitoses": [...]}`) names.
fn json_items(value: &Value) -> Vec<(Option<String>, &Value)> {
    match value {
        Value::Array(a) => a.iter().flat_map(|v| per_image_record(None, v)).collect(),
        Value::Object(o) => {
            if let Some(list) = o.iter().find(|(k, v)| {
                let k = normalise_name(k);
                (LIST_KEYS.contains(&k.as_str()) || k == "images") && v.is_array()
            }) {
                return json_items(list.1);
            }
            if !o.is_empty() && o.values().all(Value::is_array) {
                return o
                    .iter()
                    .flat_map(|(k, v)| {
                        v.as_array().into_iter().flatten().flat_map(move |x| per_image_record(Some(k.clone()), x))
                    })
                    .collect();
            }
            per_image_record(None, value)
        }
        _ => vec![(None, value)],
    }
}

/// An item that names an image and lists its objects (`{"file_name": "a.png",
/// "mitoses": [...]}`) gives those objects; any other item is one object.
fn per_image_record(image: Option<String>, item: &Value) -> Vec<(Option<String>, &Value)> {
    let Some(o) = item.as_object() else {
        return vec![(image, item)];
    };
    let list = o.iter().find(|(k, v)| LIST_KEYS.contains(&normalise_name(k).as_str()) && v.is_array());
    let name =
        o.iter().find(|(k, _)| IMAGE_COLUMN_NAMES.contains(&normalise_name(k).as_str())).map(|(_, v)| json_text(v));
    match list {
        Some((_, objects)) if name.is_some() || image.is_some() => {
            let name = name.or(image);
            objects.as_array().into_iter().flatten().map(|x| (name.clone(), x)).collect()
        }
        _ => vec![(image, item)],
    }
}

fn json_number(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str().and_then(parse_number))
}

fn json_numbers(v: &Value) -> Option<Vec<f64>> {
    v.as_array()?.iter().map(json_number).collect()
}

fn json_text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// One object: flat keys (`xmin`, `cx`, ...), nested `bbox`/`centroid`
/// (arrays or objects), LabelMe `points`, or a bare array of 2/4/6 numbers.
fn json_object(item: &Value, origin: String, order: BoxOrder) -> Result<(Option<String>, LabelObject), String> {
    let mut f = Fields::default();
    if let Some(corners) = json_min_area_rect(item) {
        f.set_corners(&corners);
        return f.build(origin);
    }
    let [x0, y0, x1, y1] = order.cols();
    if let Some(v) = json_numbers(item) {
        let cols: &[Col] = match v.len() {
            2 => &[Col::Cx, Col::Cy],
            4 => &[x0, y0, x1, y1],
            6 => &[x0, y0, x1, y1, Col::Cx, Col::Cy],
            8 => {
                f.set_corners(&v);
                return f.build(origin);
            }
            n => return Err(format!("an array of {n} numbers; expected 2, 4, 6 or 8 (rectangle corners)")),
        };
        f.nums = cols.iter().copied().zip(v).collect();
        return f.build(origin);
    }
    let obj = item.as_object().ok_or_else(|| format!("expected an object, found {item}"))?;
    for (k, v) in obj {
        let key = normalise_name(k);
        if BOX_KEYS.contains(&key.as_str()) {
            json_box(v, &mut f, order)?;
        } else if CENTROID_KEYS.contains(&key.as_str()) {
            let p = json_point(v).ok_or_else(|| format!("'{k}' is {v}, expected [x, y] or {{\"x\", \"y\"}}"))?;
            f.nums.insert(Col::Cx, p.0);
            f.nums.insert(Col::Cy, p.1);
        } else if key == "points" {
            labelme_points(v, &mut f)?;
        } else if let Some(col) = col_role(k) {
            match col {
                Col::Image | Col::Class | Col::Subset => f.set(col, &json_text(v))?,
                _ => {
                    f.nums.insert(col, json_number(v).ok_or_else(|| format!("'{k}' is {v}, not a number"))?);
                }
            }
        }
    }
    f.build(origin)
}

fn json_point(v: &Value) -> Option<(f64, f64)> {
    if let Some(p) = json_numbers(v).filter(|p| p.len() == 2) {
        return Some((p[0], p[1]));
    }
    let o = v.as_object()?;
    let get = |names: &[&str]| {
        o.iter().find(|(k, _)| names.contains(&normalise_name(k).as_str())).and_then(|(_, v)| json_number(v))
    };
    Some((get(&["x", "cx", "col"])?, get(&["y", "cy", "row"])?))
}

/// OpenCV's `minAreaRect` as JSON: `[[cx, cy], [w, h], angle]`.
/// Returns its four corners.
fn json_min_area_rect(v: &Value) -> Option<Vec<f64>> {
    match v.as_array()?.as_slice() {
        [centre, size, angle] => {
            let pair = |p: &Value| json_numbers(p).filter(|p| p.len() == 2);
            let (c, s) = (pair(centre)?, pair(size)?);
            Some(rotated_rect_corners(c[0], c[1], s[0], s[1], json_number(angle)?))
        }
        _ => None,
    }
}

/// A box as four numbers (see [`BoxOrder`]), four corners, a `minAreaRect`,
/// or an object with corner/size keys.
fn json_box(v: &Value, f: &mut Fields, order: BoxOrder) -> Result<(), String> {
    if let Some(corners) = json_min_area_rect(v) {
        f.set_corners(&corners);
        return Ok(());
    }
    if let Some(corners) = json_corner_points(v) {
        f.set_corners(&corners);
        return Ok(());
    }
    if let Some(b) = json_numbers(v) {
        if b.len() == 2 * CORNERS {
            f.set_corners(&b);
            return Ok(());
        }
        if b.len() != 4 {
            return Err(format!("box {v} has {} numbers, expected [xmin, ymin, xmax, ymax] or four corners", b.len()));
        }
        for (c, x) in order.cols().into_iter().zip(b) {
            f.nums.insert(c, x);
        }
        return Ok(());
    }
    let o = v.as_object().ok_or_else(|| format!("box is {v}, expected [xmin, ymin, xmax, ymax] or an object"))?;
    for (k, x) in o {
        if let Some(col) = col_role(k).filter(|c| !matches!(c, Col::Image | Col::Class | Col::Subset)) {
            // Inside a box, a bare x/y is its corner.
            let col = match col {
                Col::PlainX => Col::XMin,
                Col::PlainY => Col::YMin,
                c => c,
            };
            f.nums.insert(col, json_number(x).ok_or_else(|| format!("box '{k}' is {x}, not a number"))?);
        }
    }
    Ok(())
}

/// A box given as four `[x, y]` points: `x1 y1 ... x4 y4`.
fn json_corner_points(v: &Value) -> Option<Vec<f64>> {
    let pts = v.as_array()?;
    (pts.len() == CORNERS).then_some(())?;
    pts.iter().map(json_point).collect::<Option<Vec<_>>>().map(|p| p.into_iter().flat_map(|(x, y)| [x, y]).collect())
}

/// LabelMe `points`: one point = centroid, two = rectangle corners, four = a
/// rectangle (possibly rotated), more = a polygon whose enclosing box is taken.
fn labelme_points(v: &Value, f: &mut Fields) -> Result<(), String> {
    let pts: Vec<(f64, f64)> = v
        .as_array()
        .and_then(|a| a.iter().map(json_point).collect())
        .ok_or_else(|| format!("points {v} is not a list of [x, y]"))?;
    match pts.as_slice() {
        [] => Err("points is empty".into()),
        [(x, y)] => {
            f.nums.extend([(Col::Cx, *x), (Col::Cy, *y)]);
            Ok(())
        }
        [_, _, _, _] => {
            f.set_corners(&pts.iter().flat_map(|&(x, y)| [x, y]).collect::<Vec<_>>());
            Ok(())
        }
        _ => {
            let (x0, x1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
            let (y0, y1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
            f.nums.extend([(Col::XMin, x0), (Col::YMin, y0), (Col::XMax, x1), (Col::YMax, y1)]);
            Ok(())
        }
    }
}

/// Joins centroid-only labels to the box-only label whose box holds them
/// (nearest box centre first), for datasets that ship boxes and centroids in
/// separate files.
pub(crate) fn combine(objects: Vec<LabelObject>) -> Vec<LabelObject> {
    let (points, mut rest): (Vec<LabelObject>, Vec<LabelObject>) = objects.into_iter().partition(|o| o.bbox.is_none());
    let mut unjoined = Vec::new();
    for p in points {
        let Some(c) = p.centroid else { continue };
        let target = rest.iter_mut().filter(|o| o.centroid.is_none() && o.bbox.is_some_and(|b| b.contains(&c))).min_by(
            |a, b| {
                let d = |o: &LabelObject| o.bbox.map_or(f64::INFINITY, |b| b.center().distance_sq(&c));
                d(a).total_cmp(&d(b))
            },
        );
        match target {
            Some(o) => {
                o.centroid = Some(c);
                o.origin = format!("{} + {}", o.origin, p.origin);
            }
            None => unjoined.push(p),
        }
    }
    rest.extend(unjoined);
    rest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Parsed {
        parse(text.as_bytes(), Path::new("l.csv"), "csv")
    }

    fn only(p: &Parsed) -> &LabelObject {
        assert_eq!(p.objects.len(), 1, "{:?}", p.problems);
        &p.objects[0].1
    }

    #[test]
    fn headers_in_any_order_and_naming() {
        let p = table("cy,cx,x2,y2,x1,y1\n20,10,15,25,5,15\n");
        let o = only(&p);
        assert_eq!(o.bbox, Some(BBox { x_min: 5.0, y_min: 15.0, x_max: 15.0, y_max: 25.0 }));
        assert_eq!(o.centroid, Some(Point::new(10.0, 20.0)));
        let o = only(&table("Left;Top;Right;Bottom\n1;2;3;4\n")).clone();
        assert_eq!(o.bbox, Some(BBox { x_min: 1.0, y_min: 2.0, x_max: 3.0, y_max: 4.0 }));
        assert_eq!(o.centroid, None);
        assert_eq!(only(&table("x,y\n7,8\n")).centroid, Some(Point::new(7.0, 8.0)));
        let o = only(&table("x y w h\n10 20 4 6\n")).clone();
        assert_eq!(
            o.bbox,
            Some(BBox { x_min: 10.0, y_min: 20.0, x_max: 14.0, y_max: 26.0 }),
            "bare x,y with a size are the corner"
        );
        let o = only(&table("centroid_x,centroid_y,width,height,class\n10,20,4,6,hard negative\n")).clone();
        assert_eq!(o.bbox, Some(BBox { x_min: 8.0, y_min: 17.0, x_max: 12.0, y_max: 23.0 }));
        assert_eq!(o.class, ObjectClass::NonMitosis);
    }

    #[test]
    fn headerless_six_columns_decide_order_by_containment() {
        let box_first = table("10 10 20 20 15 16\n30 30 40 44 35 37\n");
        assert_eq!(box_first.objects[1].1.centroid, Some(Point::new(35.0, 37.0)));
        assert_eq!(box_first.objects[1].1.bbox, Some(BBox { x_min: 30.0, y_min: 30.0, x_max: 40.0, y_max: 44.0 }));
        let centroid_first = table("15,16,10,10,20,20\n35,37,30,30,40,44\n");
        assert_eq!(centroid_first.objects[1].1.centroid, Some(Point::new(35.0, 37.0)));
        assert_eq!(centroid_first.objects[1].1.bbox, Some(BBox { x_min: 30.0, y_min: 30.0, x_max: 40.0, y_max: 44.0 }));
        assert_eq!(table("mitosis 1 2\n").objects[0].1.centroid, Some(Point::new(1.0, 2.0)));
    }

    #[test]
    fn bad_lines_are_reported_with_line_numbers() {
        let p = table("xmin,ymin,xmax,ymax\n1,2,3,4\n1,2,3\n1,abc,3,4\nNaN,1,2,3\n-5,1,2,3\n5,5,1,1\n");
        assert_eq!(p.objects.len(), 1);
        let all = p.problems.join("\n");
        for needle in
            ["l.csv line 3", "line 4: 'abc'", "line 5: coordinate NaN", "line 6: coordinate -5 is negative", "line 7"]
        {
            assert!(all.contains(needle), "{needle} missing in:\n{all}");
        }
        let p = table("1 2 3\n");
        assert!(p.problems[0].contains("3 numbers"), "{:?}", p.problems);
    }

    #[test]
    fn json_shapes() {
        let j = |s: &str| parse(s.as_bytes(), Path::new("l.json"), "json");
        let p = j(r#"[{"bbox":[1,2,5,6],"centroid":[3,4]},{"xmin":1,"ymin":1,"xmax":2,"ymax":2,"label":"mitosis"}]"#);
        assert_eq!(p.objects.len(), 2, "{:?}", p.problems);
        assert_eq!(p.objects[0].1.centroid, Some(Point::new(3.0, 4.0)));
        let p = j(r#"{"objects":[{"box":{"x":1,"y":2,"w":3,"h":4},"center":{"x":2,"y":3}}]}"#);
        assert_eq!(only(&p).bbox, Some(BBox { x_min: 1.0, y_min: 2.0, x_max: 4.0, y_max: 6.0 }));
        let p = j(r#"{"shapes":[{"label":"mitosis","points":[[5,6],[1,2]],"shape_type":"rectangle"}]}"#);
        assert_eq!(only(&p).bbox, Some(BBox { x_min: 1.0, y_min: 2.0, x_max: 5.0, y_max: 6.0 }));
        let p = j(r#"{"a.png":[[1,2]],"b.png":[]}"#);
        assert_eq!(p.objects[0].0.as_deref(), Some("a.png"));
        assert!(j("{oops").problems[0].contains("not valid JSON"));
        assert!(j(r#"[{"centroid":"here"}]"#).problems[0].contains("object 1"));
    }

    #[test]
    fn rotated_rectangles_by_their_corners() {
        // A diamond (45 degrees) around (10, 10), and an axis-aligned one written as corners.
        let diamond = BBox { x_min: 6.0, y_min: 6.0, x_max: 14.0, y_max: 14.0 };
        let p = table("10,6,14,10,10,14,6,10\n1,1,3,1,3,2,1,2\n");
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!((p.objects[0].1.bbox, p.objects[0].1.rotated), (Some(diamond), true));
        assert_eq!(p.objects[1].1.bbox, Some(BBox { x_min: 1.0, y_min: 1.0, x_max: 3.0, y_max: 2.0 }));
        assert!(!p.objects[1].1.rotated, "corners of an upright rectangle are its box");
        // Ten numbers: the centroid before or after the corners, decided file-wide.
        for text in ["10,6,14,10,10,14,6,10,10,10.5\n", "10,10.5,10,6,14,10,10,14,6,10\n"] {
            let o = only(&table(text)).clone();
            assert_eq!((o.bbox, o.centroid), (Some(diamond), Some(Point::new(10.0, 10.5))), "{text}");
        }
        // A header with x1..x4 / y1..y4: x1, y1, x2, y2 are corners, not box edges.
        let o = only(&table("x1,y1,x2,y2,x3,y3,x4,y4,cx,cy\n10,6,14,10,10,14,6,10,10,10\n")).clone();
        assert_eq!((o.bbox, o.rotated), (Some(diamond), true));
        let p = table("x1,y1,x2,y2,x3,y3,cx,cy\n10,6,14,10,10,14,10,10\n");
        assert!(p.problems[0].contains("not x4 and y4"), "{:?}", p.problems);
        // JSON: eight numbers or four points; a corner a little off the image is cut at 0.
        let j = |s: &str| parse(s.as_bytes(), Path::new("l.json"), "json");
        let o = only(&j(r#"[{"bbox":[[10,6],[14,10],[10,14],[6,10]],"centroid":[10,10]}]"#)).clone();
        assert_eq!((o.bbox, o.rotated), (Some(diamond), true));
        let o = only(&j(r#"[{"mbr":[2,-1,5,2,2,5,-1,2]}]"#)).clone();
        assert_eq!(o.bbox, Some(BBox { x_min: 0.0, y_min: 0.0, x_max: 5.0, y_max: 5.0 }));
        assert!(j(r#"[{"bbox":[2,-100,5,2,2,5,-1,2]}]"#).problems[0].contains("outside the image"));
    }

    #[test]
    fn boxes_as_corner_and_size_are_told_from_corners() {
        // OpenCV boundingRect rows (x y w h), then with the centroid after and before.
        let b = BBox { x_min: 100.0, y_min: 200.0, x_max: 120.0, y_max: 230.0 };
        let p = table("100 200 20 30\n300 40 12 12\n");
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(p.objects[0].1.bbox, Some(b));
        for text in ["100,200,20,30,110,215\n300,40,12,12,306,46\n", "110,215,100,200,20,30\n306,46,300,40,12,12\n"] {
            let p = table(text);
            assert!(p.problems.is_empty(), "{text}: {:?}", p.problems);
            assert_eq!((p.objects[0].1.bbox, p.objects[0].1.centroid), (Some(b), Some(Point::new(110.0, 215.0))));
        }
        // One bad line does not turn a file of corners into sizes: it is reported.
        let p = table("72 72 88 88\n190 140 210 160\n255 35 245 45\n");
        assert_eq!(p.objects.len(), 2, "{:?}", p.problems);
        assert_eq!(p.objects[1].1.bbox, Some(BBox { x_min: 190.0, y_min: 140.0, x_max: 210.0, y_max: 160.0 }));
        assert!(p.problems[0].contains("line 3"), "{:?}", p.problems);
        // Corners stay corners where both readings give valid boxes.
        assert_eq!(only(&table("1,2,30,40\n")).bbox, Some(BBox { x_min: 1.0, y_min: 2.0, x_max: 30.0, y_max: 40.0 }));
        // JSON, COCO-style: the file decides as a whole.
        let j = |s: &str| parse(s.as_bytes(), Path::new("l.json"), "json");
        let p = j(r#"[{"bbox":[100,200,20,30],"centroid":[110,215]},{"bbox":[5,5,30,30],"centroid":[18,18]}]"#);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(p.objects[0].1.bbox, Some(b));
        assert_eq!(p.objects[1].1.bbox, Some(BBox { x_min: 5.0, y_min: 5.0, x_max: 35.0, y_max: 35.0 }));
    }

    #[test]
    fn min_area_rects_by_centre_size_and_angle() {
        // A 10x4 rectangle at (50, 60) turned 90 degrees stands 4 wide and 10 tall.
        let upright = BBox { x_min: 48.0, y_min: 55.0, x_max: 52.0, y_max: 65.0 };
        let close = |a: Option<BBox>| {
            let a = a.unwrap();
            [a.x_min - upright.x_min, a.y_min - upright.y_min, a.x_max - upright.x_max, a.y_max - upright.y_max]
                .iter()
                .all(|d| d.abs() < 1e-9)
        };
        let o = only(&table("cx,cy,w,h,angle\n50,60,10,4,90\n")).clone();
        assert!(close(o.bbox), "{o:?}");
        // Without a header, five or seven numbers could be a box with a class
        // or score as well: refused, saying how to tell.
        for text in ["50 60 10 4 90\n", "72 72 88 88 1\n", "72 72 88 88 80 80 1\n"] {
            let p = table(text);
            assert!(p.objects.is_empty() && p.problems[0].contains("Give the file a header"), "{text}: {p:?}");
        }
        let j = |s: &str| parse(s.as_bytes(), Path::new("l.json"), "json");
        let o = only(&j(r#"[{"rect":[[50,60],[10,4],90],"centroid":[50,60]}]"#)).clone();
        assert!(close(o.bbox) && o.centroid == Some(Point::new(50.0, 60.0)), "{o:?}");
        // Still refused: five normalised numbers (YOLO) outside a YOLO file.
        assert!(table("0 0.5 0.5 0.1 0.1\n").problems[0].contains("YOLO"));
    }

    #[test]
    fn separate_box_and_centroid_records_join() {
        let b = LabelObject {
            bbox: Some(BBox::new(0.0, 0.0, 10.0, 10.0).unwrap()),
            centroid: None,
            class: ObjectClass::Mitosis,
            origin: "b".into(),
            rotated: false,
            subset: None,
        };
        let c = LabelObject {
            bbox: None,
            centroid: Some(Point::new(4.0, 5.0)),
            class: ObjectClass::Mitosis,
            origin: "c".into(),
            rotated: false,
            subset: None,
        };
        let far = LabelObject { centroid: Some(Point::new(40.0, 5.0)), ..c.clone() };
        let out = combine(vec![b, c, far]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].centroid, Some(Point::new(4.0, 5.0)));
    }
}
