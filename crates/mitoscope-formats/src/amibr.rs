//! AMi-Br's crop table (`AMI-BR.csv`): where each mitotic-figure crop came
//! from (dataset, slide, position), its subtype from two experts and the
//! atypia votes of three, and the scanner that digitised its slide.
//!
//! The crops themselves are `patches/{normal,atypical}/<dataset>_<uid>.png`;
//! [`AmiBrCrop::file_stem`] gives that stem, so a training pipeline can ask
//! which scanner a crop comes from ([`AmiBrTable::scanner_of_stem`]).
//! Columns are found by name (order free; extra columns ignored).

use std::collections::HashMap;
use std::path::Path;

use crate::{FormatError, Result};

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct AmiBrCrop {
    /// Source dataset: `MIDOG21` or `TUPAC16`.
    pub dataset: String,
    /// The crop's id within its dataset (the number in its file name).
    pub uid: u64,
    /// Source slide file (`002.tiff`, `04_stitched1.tif`).
    pub slide: String,
    /// Centre in the source slide, pixels (x = column, y = row).
    pub x: f64,
    /// See `x`.
    pub y: f64,
    /// Majority vote of the three experts: atypical figure.
    pub atypical: bool,
}

impl AmiBrCrop {
    /// Stem of the crop's PNG (`TUPAC16_1000`).
    pub fn file_stem(&self) -> String {
        format!("{}_{}", self.dataset, self.uid)
    }

    /// The scanner that digitised the crop's slide, where the source
    /// dataset documents it ([`source_scanner`]).
    pub fn scanner(&self) -> Option<Scanner> {
        source_scanner(&self.dataset, &self.slide)
    }
}

/// Whole-slide scanners of the public mitosis datasets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scanner {
    /// Aperio ScanScope XT: ICPR 2012 scanner A, AMIDA13, TUPAC16 cases 1-23.
    AperioXt,
    /// Aperio ScanScope CS2: MIDOG 2021 slides 101-150.
    AperioCs2,
    /// Hamamatsu XR (C12740): MIDOG 2021 slides 1-50.
    HamamatsuXr,
    /// Hamamatsu S360 (C13220): MIDOG 2021 slides 51-100.
    HamamatsuS360,
    /// Leica GT450: MIDOG 2021 slides 151-200 (unlabelled there).
    LeicaGt450,
    /// Leica SCN400: TUPAC16 cases 24-73.
    LeicaScn400,
}

/// The scanner of `slide` in `dataset`, from the datasets' papers: MIDOG 2021
/// numbers its slides by scanner in blocks of 50 (Aubreville et al., Medical
/// Image Analysis 2023); TUPAC16's auxiliary mitosis set is AMIDA13's 23
/// cases (Aperio ScanScope XT) then 50 cases scanned with a Leica SCN400
/// (Veta et al., Medical Image Analysis 2019). The MIDOG blocks agree with
/// `MIDOG.json`, whose image sizes (the same field at each scanner's
/// resolution) change exactly at slides 51, 101 and 151. `None` for other
/// datasets and for names without a leading slide number.
pub fn source_scanner(dataset: &str, slide: &str) -> Option<Scanner> {
    let digits: String = slide.chars().take_while(char::is_ascii_digit).collect();
    let number: u32 = digits.parse().ok()?;
    match dataset.to_ascii_uppercase().as_str() {
        "MIDOG21" | "MIDOG2021" | "MIDOG" => match number {
            1..=50 => Some(Scanner::HamamatsuXr),
            51..=100 => Some(Scanner::HamamatsuS360),
            101..=150 => Some(Scanner::AperioCs2),
            151..=200 => Some(Scanner::LeicaGt450),
            _ => None,
        },
        "TUPAC16" | "TUPAC" => match number {
            1..=23 => Some(Scanner::AperioXt),
            24..=73 => Some(Scanner::LeicaScn400),
            _ => None,
        },
        _ => None,
    }
}

/// The whole table, indexed by crop file stem.
#[derive(Debug, Clone, Default)]
pub struct AmiBrTable {
    /// Rows in file order.
    pub crops: Vec<AmiBrCrop>,
    by_stem: HashMap<String, usize>,
}

impl AmiBrTable {
    /// The row of the crop whose file stem is `stem` (`TUPAC16_1000`).
    pub fn get(&self, stem: &str) -> Option<&AmiBrCrop> {
        self.by_stem.get(stem).map(|&i| &self.crops[i])
    }

    /// The scanner of the crop whose file stem is `stem`, where known.
    pub fn scanner_of_stem(&self, stem: &str) -> Option<Scanner> {
        self.get(stem).and_then(AmiBrCrop::scanner)
    }
}

/// Reads `AMI-BR.csv`. Needs the columns `dataset`, `uid`, `slide`, `x`, `y`;
/// `majority_atypical` (`True`/`False`) is read when present. A malformed row
/// or a repeated crop is an error naming its line.
pub fn read_amibr_table(path: &Path) -> Result<AmiBrTable> {
    let malformed = |line: u64, message: String| FormatError::Malformed {
        path: path.to_path_buf(),
        location: format!("line {line}"),
        message,
    };
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_path(path).map_err(|e| csv_error(path, e))?;
    let headers = reader.headers().map_err(|e| csv_error(path, e))?.clone();
    let column = |name: &str| headers.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
    let required = ["dataset", "uid", "slide", "x", "y"].map(|name| column(name).ok_or(name));
    let missing: Vec<&str> = required.iter().filter_map(|c| c.err()).collect();
    if !missing.is_empty() {
        return Err(malformed(1, format!("missing column(s) {}; header is {:?}", missing.join(", "), headers)));
    }
    let [dataset_col, uid_col, slide_col, x_col, y_col] = required.map(|c| c.unwrap_or_default());
    let atypical_col = column("majority_atypical");

    let mut table = AmiBrTable::default();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(path, e))?;
        let line = record.position().map_or(0, csv::Position::line);
        let cell = |i: usize, name: &str| {
            record.get(i).map(str::trim).ok_or_else(|| malformed(line, format!("no `{name}` cell")))
        };
        let number = |i: usize, name: &str| -> Result<f64> {
            let text = cell(i, name)?;
            text.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| malformed(line, format!("`{name}` must be a finite number, found {text:?}")))
        };
        let uid_text = cell(uid_col, "uid")?;
        let uid = uid_text
            .parse::<u64>()
            .map_err(|_| malformed(line, format!("`uid` must be a whole number, found {uid_text:?}")))?;
        let atypical = match atypical_col.map(|i| cell(i, "majority_atypical")).transpose()? {
            None | Some("") => false,
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
            Some(v) => return Err(malformed(line, format!("`majority_atypical` must be True or False, found {v:?}"))),
        };
        let crop = AmiBrCrop {
            dataset: cell(dataset_col, "dataset")?.to_owned(),
            uid,
            slide: cell(slide_col, "slide")?.to_owned(),
            x: number(x_col, "x")?,
            y: number(y_col, "y")?,
            atypical,
        };
        let stem = crop.file_stem();
        if table.by_stem.insert(stem.clone(), table.crops.len()).is_some() {
            return Err(malformed(line, format!("crop {stem} is listed twice")));
        }
        table.crops.push(crop);
    }
    Ok(table)
}

fn csv_error(path: &Path, e: csv::Error) -> FormatError {
    let location = e.position().map_or_else(|| "reading".to_owned(), |p| format!("line {}", p.line()));
    FormatError::Malformed { path: path.to_path_buf(), location, message: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("AMI-BR.csv");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn scanners_follow_the_datasets_slide_numbering() {
        assert_eq!(source_scanner("MIDOG21", "002.tiff"), Some(Scanner::HamamatsuXr));
        assert_eq!(source_scanner("MIDOG21", "050.tiff"), Some(Scanner::HamamatsuXr));
        assert_eq!(source_scanner("MIDOG21", "051.tiff"), Some(Scanner::HamamatsuS360));
        assert_eq!(source_scanner("MIDOG21", "150.tiff"), Some(Scanner::AperioCs2));
        assert_eq!(source_scanner("TUPAC16", "23_stitched1.tif"), Some(Scanner::AperioXt));
        assert_eq!(source_scanner("TUPAC16", "24.tif"), Some(Scanner::LeicaScn400));
        assert_eq!(source_scanner("TUPAC16", "74.tif"), None);
        assert_eq!(source_scanner("CCMCT", "01.tif"), None);
        assert_eq!(source_scanner("MIDOG21", "slide.tiff"), None);
    }

    #[test]
    fn reads_rows_by_column_name_and_indexes_them_by_file_stem() {
        let (_dir, path) = write(
            ",slide,dataset,uid,x,y,majority_atypical\n\
             0,002.tiff,MIDOG21,6,4422,216,False\n\
             1,04_stitched1.tif,TUPAC16,625,14478,9124,True\n",
        );
        let table = read_amibr_table(&path).unwrap();
        assert_eq!(table.crops.len(), 2);
        let tupac = table.get("TUPAC16_625").unwrap();
        assert_eq!(
            (tupac.slide.as_str(), tupac.x, tupac.y, tupac.atypical),
            ("04_stitched1.tif", 14478.0, 9124.0, true)
        );
        assert_eq!(table.scanner_of_stem("TUPAC16_625"), Some(Scanner::AperioXt));
        assert_eq!(table.scanner_of_stem("MIDOG21_6"), Some(Scanner::HamamatsuXr));
        assert_eq!(table.scanner_of_stem("MIDOG21_7"), None);
    }

    #[test]
    fn malformed_tables_name_the_line_and_the_problem() {
        let cases = [
            ("slide,dataset,x,y\n002.tiff,MIDOG21,1,2\n", "missing column(s) uid"),
            ("slide,dataset,uid,x,y\n002.tiff,MIDOG21,six,1,2\n", "line 2"),
            ("slide,dataset,uid,x,y\n002.tiff,MIDOG21,6,NaN,2\n", "finite number"),
            ("slide,dataset,uid,x,y\n002.tiff,MIDOG21,6,1,2\n003.tiff,MIDOG21,6,1,2\n", "listed twice"),
            ("slide,dataset,uid,x,y,majority_atypical\n002.tiff,MIDOG21,6,1,2,maybe\n", "True or False"),
        ];
        for (text, expected) in cases {
            let (_dir, path) = write(text);
            let message = read_amibr_table(&path).unwrap_err().to_string();
            assert!(message.contains(expected), "{text:?}: {message}");
        }
    }

    #[test]
    fn the_shared_table_knows_every_crop_file() {
        let dir = mitoscope_testdata::require_data!("amibr");
        let table = read_amibr_table(&dir.join("AMI-BR.csv")).unwrap();
        let mut files = 0;
        let mut aperio_xt = 0;
        for class in ["normal", "atypical"] {
            for entry in std::fs::read_dir(dir.join("patches").join(class)).unwrap() {
                let path = entry.unwrap().path();
                let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
                let crop = table.get(&stem).unwrap_or_else(|| panic!("{stem} is not in the table"));
                assert_eq!(crop.atypical, class == "atypical", "{stem}");
                assert!(crop.scanner().is_some(), "{stem}: slide {}", crop.slide);
                files += 1;
                aperio_xt += usize::from(crop.scanner() == Some(Scanner::AperioXt));
            }
        }
        assert_eq!(files, table.crops.len());
        // TUPAC16 cases 1-23 (AMIDA13) hold a large share of the figures.
        assert!(aperio_xt > 1000 && aperio_xt < files / 2, "{aperio_xt} of {files}");
    }
}
