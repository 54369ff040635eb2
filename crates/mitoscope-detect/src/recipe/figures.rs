//! Which figure crops stage 2 trains on when they are capped
//! (`classifier_figure_selection`): evenly spread, one scanner first, or
//! as many slides as possible.

use std::path::Path;

use mitoscope_formats::amibr::{AmiBrCrop, AmiBrTable, read_amibr_table};
use mitoscope_model::data::LabelledCrop;

use super::{FigureSelection, RecipeConfig};
use crate::DetectError;

/// At most `keep` items, evenly spaced over `items` (all when `None`).
fn evenly_spread<T>(items: Vec<T>, keep: Option<usize>) -> Vec<T> {
    let n = items.len();
    match keep {
        Some(k) if k < n => {
            let wanted: std::collections::BTreeSet<usize> = (0..k).map(|j| j * n / k).collect();
            items.into_iter().enumerate().filter(|(i, _)| wanted.contains(i)).map(|(_, t)| t).collect()
        }
        _ => items,
    }
}

/// Stage 2's figure crops, as `config.classifier_figure_selection` says.
pub(super) fn select_figures(
    figures: Vec<LabelledCrop>,
    config: &RecipeConfig,
    amibr_table: Option<&Path>,
    say: &dyn Fn(&str),
) -> Result<Vec<LabelledCrop>, DetectError> {
    let keep = config.classifier_figure_crops;
    let load_table = || {
        let path = amibr_table.ok_or_else(|| {
            DetectError::Config(
                "classifier_figure_selection by slide or scanner needs AMi-Br's AMI-BR.csv (the shared data)".into(),
            )
        })?;
        read_amibr_table(path).map_err(|e| DetectError::Config(e.to_string()))
    };
    let (figures, note) = match config.classifier_figure_selection {
        FigureSelection::Even => return Ok(evenly_spread(figures, keep)),
        FigureSelection::ScannerFirst(scanner) => {
            let table = load_table()?;
            let of_scanner =
                |crop: &LabelledCrop| amibr_row(&table, crop).and_then(AmiBrCrop::scanner) == Some(scanner);
            let figures = preferred_then_spread(figures, keep, of_scanner);
            let n = figures.iter().filter(|c| of_scanner(c)).count();
            (figures, format!("{n} from {scanner:?} scans first"))
        }
        FigureSelection::PerSlide => {
            let table = load_table()?;
            let slide_of = |crop: &LabelledCrop| match amibr_row(&table, crop) {
                Some(c) => format!("{}/{}", c.dataset, c.slide),
                None => crop.origin.clone(),
            };
            let figures = per_group_spread(figures, keep, slide_of);
            let slides: std::collections::BTreeSet<String> = figures.iter().map(slide_of).collect();
            (figures, format!("{} slides (unlisted crops one each)", slides.len()))
        }
    };
    say(&format!("stage 2 figure crops: {} kept, {note}", figures.len()));
    Ok(figures)
}

/// The AMi-Br table's row for a crop read from its file (`TUPAC16_1000.png`).
fn amibr_row<'t>(table: &'t AmiBrTable, crop: &LabelledCrop) -> Option<&'t AmiBrCrop> {
    let stem = Path::new(&crop.origin).file_stem()?.to_string_lossy();
    table.get(&stem)
}

/// At most `keep` items, taking as many groups as possible: every group gives
/// at most the same number `c` (the largest that fits, a few groups `c + 1`
/// to fill `keep`), evenly spread over its own items. Groups keep their first
/// appearance order, items their order within the group.
fn per_group_spread<T, K: Ord + Clone>(items: Vec<T>, keep: Option<usize>, group_of: impl Fn(&T) -> K) -> Vec<T> {
    let Some(keep) = keep.filter(|&k| k < items.len()) else {
        return items;
    };
    let mut order: Vec<K> = Vec::new();
    let mut groups: std::collections::BTreeMap<K, Vec<T>> = std::collections::BTreeMap::new();
    for item in items {
        let key = group_of(&item);
        let group = groups.entry(key.clone()).or_default();
        if group.is_empty() {
            order.push(key);
        }
        group.push(item);
    }
    // Largest per-group cap whose total still fits (at least one group is larger).
    let total = |cap: usize| groups.values().map(|g| g.len().min(cap)).sum::<usize>();
    let mut cap = 0;
    while total(cap + 1) <= keep {
        cap += 1;
    }
    let mut extra = keep - total(cap);
    let mut kept = Vec::with_capacity(keep);
    for key in order {
        let group = groups.remove(&key).unwrap_or_default();
        let mut take = group.len().min(cap);
        if extra > 0 && group.len() > cap {
            take += 1;
            extra -= 1;
        }
        kept.extend(evenly_spread(group, Some(take)));
    }
    kept
}

/// At most `keep` items: every `preferred` one first (evenly spread if they
/// alone are more than `keep`), then the rest evenly spread over the others.
fn preferred_then_spread<T>(items: Vec<T>, keep: Option<usize>, preferred: impl Fn(&T) -> bool) -> Vec<T> {
    let keep = keep.unwrap_or(items.len());
    let (first, rest): (Vec<T>, Vec<T>) = items.into_iter().partition(|t| preferred(t));
    let mut kept = evenly_spread(first, Some(keep));
    let room = keep - kept.len();
    kept.extend(evenly_spread(rest, Some(room)));
    kept
}

#[cfg(test)]
mod tests {
    use image::RgbImage;
    use mitoscope_formats::amibr::Scanner;

    use super::*;

    #[test]
    fn preferred_items_come_first_and_the_rest_fill_evenly() {
        // 5 preferred of 20, room for 14: all 5, then 9 spread over the 15 others.
        let kept = preferred_then_spread((0..20).collect::<Vec<i32>>(), Some(14), |n| *n < 5);
        assert_eq!(kept[..5], [0, 1, 2, 3, 4]);
        assert_eq!(kept.len(), 14);
        assert!(kept[5..].iter().all(|n| *n >= 5));
        // More preferred than room: only preferred, spread over them.
        let kept = preferred_then_spread((0..20).collect::<Vec<i32>>(), Some(4), |n| *n < 10);
        assert_eq!(kept, [0, 2, 5, 7]);
        // No cap: everything, preferred first.
        let kept = preferred_then_spread((0..6).collect::<Vec<i32>>(), None, |n| *n >= 4);
        assert_eq!(kept, [4, 5, 0, 1, 2, 3]);
    }

    #[test]
    fn figure_selection_reads_each_crops_slide_from_the_amibr_table() {
        let root = tempfile::tempdir().unwrap();
        let crop =
            |origin: &str| LabelledCrop { image: RgbImage::new(4, 4), positive: true, origin: origin.to_owned() };
        // Two crops of one Leica slide, one Hamamatsu, one Aperio XT, one unlisted (AtNorM-Br).
        let figures = vec![
            crop("amibr/patches/normal/TUPAC16_7.png"),
            crop("amibr/patches/normal/TUPAC16_8.png"),
            crop("amibr/patches/atypical/MIDOG21_3.png"),
            crop("amibr/patches/normal/TUPAC16_1.png"),
            crop("atnorm-br/Normal/5.png"),
        ];
        let mut config = RecipeConfig {
            classifier_figure_crops: Some(2),
            classifier_figure_selection: FigureSelection::ScannerFirst(Scanner::AperioXt),
            ..RecipeConfig::default()
        };
        let quiet = |_: &str| {};
        let table = root.path().join("amibr/AMI-BR.csv");
        let missing = select_figures(figures.clone(), &config, Some(&table), &quiet).unwrap_err();
        assert!(missing.to_string().contains("AMI-BR.csv"), "{missing}");
        // No table at all (a run on other datasets) says what the selection needs.
        let none = select_figures(figures.clone(), &config, None, &quiet).unwrap_err();
        assert!(none.to_string().contains("AMI-BR.csv"), "{none}");

        std::fs::create_dir_all(root.path().join("amibr")).unwrap();
        std::fs::write(
            root.path().join("amibr/AMI-BR.csv"),
            "slide,dataset,uid,x,y\n30.tif,TUPAC16,7,1,1\n30.tif,TUPAC16,8,2,2\n\
             002.tiff,MIDOG21,3,1,1\n04_stitched1.tif,TUPAC16,1,5,5\n",
        )
        .unwrap();
        let origins = |kept: Vec<LabelledCrop>| kept.into_iter().map(|c| c.origin).collect::<Vec<_>>();
        let kept = origins(select_figures(figures.clone(), &config, Some(&table), &quiet).unwrap());
        assert_eq!(kept[0], "amibr/patches/normal/TUPAC16_1.png");
        assert_eq!(kept.len(), 2);
        // Per slide, room for 4: one crop of each of the 4 slides (the unlisted crop is its own).
        config.classifier_figure_crops = Some(4);
        config.classifier_figure_selection = FigureSelection::PerSlide;
        let kept = origins(select_figures(figures.clone(), &config, Some(&table), &quiet).unwrap());
        assert_eq!(kept.len(), 4);
        assert_eq!(kept.iter().filter(|o| o.contains("TUPAC16_7") || o.contains("TUPAC16_8")).count(), 1);
        assert!(kept.iter().any(|o| o.contains("atnorm")));
        // Evenly spread needs no table.
        config.classifier_figure_selection = FigureSelection::Even;
        let kept = select_figures(figures, &config, None, &quiet).unwrap();
        assert_eq!(kept.len(), 4);
    }

    #[test]
    fn per_group_spread_takes_every_group_before_more_of_the_large_ones() {
        // Groups by tens digit: sizes 10, 3, 1, 6 (20 items); room for 10.
        let items: Vec<i32> = (0..10).chain(10..13).chain(20..21).chain(30..36).collect();
        let kept = per_group_spread(items.clone(), Some(10), |n| n / 10);
        assert_eq!(kept.len(), 10);
        let per_group = |g: i32| kept.iter().filter(|n| *n / 10 == g).count();
        // Cap 3 fits (3 + 3 + 1 + 3 = 10): the small groups whole, the large ones 3 each.
        assert_eq!([per_group(0), per_group(1), per_group(2), per_group(3)], [3, 3, 1, 3]);
        // Spread within a group, not its first items.
        assert_eq!(kept[..3], [0, 3, 6]);
        // Cap 2 gives 2 + 2 + 1 + 2 = 7 of 8: one group that has more gives one extra.
        let kept = per_group_spread(items.clone(), Some(8), |n| n / 10);
        assert_eq!(kept.len(), 8);
        assert!(kept.iter().filter(|n| **n / 10 == 2).count() == 1);
        // No cap, or room for all: unchanged.
        assert_eq!(per_group_spread(items.clone(), None, |n| n / 10), items);
        assert_eq!(per_group_spread(items.clone(), Some(50), |n| n / 10), items);
    }

    #[test]
    fn evenly_spread_keeps_a_spread_subset() {
        let kept = evenly_spread((0..10).collect(), Some(4));
        assert_eq!(kept, vec![0, 2, 5, 7]);
        assert_eq!(evenly_spread((0..3).collect::<Vec<i32>>(), Some(5)).len(), 3);
        assert_eq!(evenly_spread((0..3).collect::<Vec<i32>>(), None).len(), 3);
    }
}
