//! Merges the outputs of several `eval` runs over disjoint `--rows` (run side by side to use
//! every core) into the one table the README shows, rows in the table's order. Files measured
//! under different settings, or disagreeing on a row, are refused rather than mixed.

use crate::data::Result;
use crate::eval::Row;
use std::path::{Path, PathBuf};

/// The line `eval` starts its table output with: scene count and sampler settings.
const SETTINGS_PREFIX: &str = "held-out scenes:";

/// One table of the merged output.
struct Table {
    header: String,
    separator: String,
    /// Text lines written above the table (its caption, notes), in first-seen order.
    captions: Vec<String>,
    /// (row order, line, file it came from).
    rows: Vec<(usize, String, PathBuf)>,
}

/// Reads `files` (each an `eval.md` or the saved stdout of one `eval` run) and returns the
/// merged table output, line by line.
pub fn merge_tables(files: &[PathBuf]) -> Result<Vec<String>> {
    let mut settings: Option<(String, &Path)> = None;
    let mut tables: Vec<Table> = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let lines: Vec<&str> = text.lines().collect();
        let Some(start) = lines.iter().position(|l| l.starts_with(SETTINGS_PREFIX)) else {
            return Err(format!(
                "{} has no line starting {SETTINGS_PREFIX:?}: not the table output of \
                 `lct-train eval` (an --only-extras run has no table)",
                file.display()
            )
            .into());
        };
        match &settings {
            None => settings = Some((lines[start].to_string(), file)),
            Some((first, origin)) if first != lines[start] => {
                return Err(format!(
                    "{} and {} were measured under different settings:\n  {first}\n  {}",
                    origin.display(),
                    file.display(),
                    lines[start]
                )
                .into())
            }
            Some(_) => {}
        }
        let mut pending: Vec<String> = Vec::new();
        let mut i = start + 1;
        while i < lines.len() {
            let line = lines[i];
            let opens_table = line.starts_with('|')
                && lines
                    .get(i + 1)
                    .is_some_and(|next| next.starts_with("|---"));
            if !opens_table {
                if !line.trim().is_empty() && !line.starts_with('|') && !line.starts_with("wrote ")
                {
                    pending.push(line.to_string());
                }
                i += 1;
                continue;
            }
            let index = match tables.iter().position(|t| t.header == line) {
                Some(index) => index,
                None => {
                    tables.push(Table {
                        header: line.to_string(),
                        separator: lines[i + 1].to_string(),
                        captions: Vec::new(),
                        rows: Vec::new(),
                    });
                    tables.len() - 1
                }
            };
            let table = &mut tables[index];
            for caption in pending.drain(..) {
                if !table.captions.contains(&caption) {
                    table.captions.push(caption);
                }
            }
            i += 2;
            while i < lines.len() && lines[i].starts_with('|') {
                add_row(table, lines[i], file, i + 1)?;
                i += 1;
            }
        }
    }
    let Some((settings, _)) = settings else {
        return Err("merge-tables needs at least one file".into());
    };
    let mut out = vec![settings, String::new()];
    for mut table in tables {
        for caption in table.captions {
            out.extend([caption, String::new()]);
        }
        table.rows.sort_by_key(|(order, _, _)| *order);
        out.extend([table.header, table.separator]);
        out.extend(table.rows.into_iter().map(|(_, line, _)| line));
        out.push(String::new());
    }
    out.pop();
    Ok(out)
}

/// Adds one table line (line `number` of `file`) to `table`, keyed by its row name.
fn add_row(table: &mut Table, line: &str, file: &Path, number: usize) -> Result<()> {
    let name = line.split('|').nth(1).unwrap_or("").trim();
    let Some(order) = Row::ALL.iter().position(|row| row.name() == name) else {
        let known: Vec<&str> = Row::ALL.iter().map(|row| row.name()).collect();
        return Err(format!(
            "{} line {number}: unknown row {name:?}; eval's rows are: {}",
            file.display(),
            known.join("; ")
        )
        .into());
    };
    if let Some((_, seen, origin)) = table.rows.iter().find(|(o, _, _)| *o == order) {
        if seen == line {
            return Ok(()); // The same measurement read twice (e.g. the same file given again).
        }
        return Err(format!(
            "row {name:?} of the table headed {:?} differs between {} and {} (line {number}):\n  {seen}\n  {line}",
            table.header,
            origin.display(),
            file.display()
        )
        .into());
    }
    table
        .rows
        .push((order, line.to_string(), file.to_path_buf()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed outputs of the embedded model's three side-by-side runs.
    fn saved(part: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("eval/copy4/{part}"))
    }

    #[test]
    fn merging_the_saved_runs_gives_every_row_once_in_table_order() {
        let files: Vec<PathBuf> = ["eval-c.md", "eval-a.md", "eval-b.md"]
            .iter()
            .map(|p| saved(p))
            .collect();
        let merged = merge_tables(&files).unwrap();
        let sources: Vec<String> = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        assert!(merged[0].starts_with(SETTINGS_PREFIX));
        // Three tables, each with all eight rows in Row::ALL order.
        let headers: Vec<usize> = (0..merged.len())
            .filter(|&i| merged.get(i + 1).is_some_and(|l| l.starts_with("|---")))
            .collect();
        assert_eq!(headers.len(), 3, "{merged:#?}");
        for &h in &headers {
            let rows: Vec<&String> = merged[h + 2..]
                .iter()
                .take_while(|l| l.starts_with('|'))
                .collect();
            let names: Vec<&str> = rows
                .iter()
                .map(|l| l.split('|').nth(1).unwrap().trim())
                .collect();
            let expected: Vec<&str> = Row::ALL.iter().map(|r| r.name()).collect();
            assert_eq!(names, expected, "table at line {h}");
            for row in rows {
                assert!(sources.iter().any(|s| s.contains(row.as_str())), "{row}");
            }
        }
        // Text that only one run writes (the compositional split) is kept.
        assert!(merged
            .iter()
            .any(|l| l.starts_with("compositional, the given looks")));
    }

    #[test]
    fn the_same_run_given_twice_merges_to_itself() {
        let a = saved("eval-a.md");
        let once = merge_tables(std::slice::from_ref(&a)).unwrap();
        let twice = merge_tables(&[a.clone(), a]).unwrap();
        assert_eq!(once, twice);
    }

    #[test]
    fn disagreeing_runs_are_refused_with_both_files_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = saved("eval-a.md");
        let text = std::fs::read_to_string(&a).unwrap();

        let other_settings = dir.path().join("g1.md");
        std::fs::write(
            &other_settings,
            text.replace("context guidance 2.0", "context guidance 1.0"),
        )
        .unwrap();
        let err = merge_tables(&[a.clone(), other_settings.clone()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("different settings"), "{err}");
        assert!(err.contains("g1.md") && err.contains("eval-a.md"), "{err}");

        let joint = text
            .lines()
            .find(|l| l.starts_with("| LCT, bidirectional, joint |"))
            .unwrap();
        let other_numbers = dir.path().join("changed.md");
        std::fs::write(
            &other_numbers,
            text.replacen(joint, &joint.replacen("| 0.", "| 1.", 1), 1),
        )
        .unwrap();
        let err = merge_tables(&[a.clone(), other_numbers])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("LCT, bidirectional, joint") && err.contains("changed.md"),
            "{err}"
        );

        let unknown = dir.path().join("unknown.md");
        std::fs::write(
            &unknown,
            text.replace("| LCT, bidirectional, joint |", "| joint |"),
        )
        .unwrap();
        let err = merge_tables(&[unknown]).unwrap_err().to_string();
        assert!(
            err.contains("unknown row \"joint\"") && err.contains("line "),
            "{err}"
        );

        let err = merge_tables(&[saved("extras.md")]).unwrap_err().to_string();
        assert!(
            err.contains("extras.md") && err.contains("only-extras"),
            "{err}"
        );
    }
}
