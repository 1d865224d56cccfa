//! The built-in disposable-number list, plus an optional operator-supplied file.

use std::path::Path;

/// The list shipped with the host (`host/data/disposable-numbers.txt`).
const BUILT_IN: &str = include_str!("../data/disposable-numbers.txt");

/// Number prefixes known to be disposable.
#[derive(Debug, Clone, Default)]
pub struct DisposableList {
    prefixes: Vec<String>,
}

/// A malformed line in a disposable-number list.
#[derive(Debug, thiserror::Error)]
#[error("{source_name} line {line}: {message}")]
pub struct ListError {
    pub source_name: String,
    pub line: usize,
    pub message: String,
}

impl DisposableList {
    /// The built-in list.
    pub fn built_in() -> Self {
        let mut list = Self::default();
        list.extend_from_text("built-in list", BUILT_IN)
            .expect("the built-in disposable list is well-formed");
        list
    }

    /// The built-in list plus the entries of `file`.
    pub fn with_file(file: &Path) -> anyhow::Result<Self> {
        let mut list = Self::built_in();
        let text = std::fs::read_to_string(file).map_err(|err| {
            anyhow::anyhow!("cannot read disposable list {}: {err}", file.display())
        })?;
        list.extend_from_text(&file.display().to_string(), &text)?;
        Ok(list)
    }

    fn extend_from_text(&mut self, source_name: &str, text: &str) -> Result<(), ListError> {
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let digits = line.strip_prefix('+').unwrap_or("");
            if digits.len() < 2 || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(ListError {
                    source_name: source_name.to_owned(),
                    line: index + 1,
                    message: format!(
                        "{line:?} is not an E.164 number or prefix such as \"+447700900\""
                    ),
                });
            }
            self.prefixes.push(line.to_owned());
        }
        Ok(())
    }

    /// Whether `e164` starts with a listed prefix.
    pub fn contains(&self, e164: &str) -> bool {
        self.prefixes
            .iter()
            .any(|prefix| e164.starts_with(prefix.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_list_covers_the_drama_ranges() {
        let list = DisposableList::built_in();
        assert!(list.contains("+442079460123"));
        assert!(!list.contains("+442079470123"));
    }

    #[test]
    fn every_built_in_entry_can_match_a_valid_number() {
        let list = DisposableList::built_in();
        for prefix in &list.prefixes {
            let number = format!("{prefix}123");
            assert_eq!(
                crate::phone::to_e164(&number).as_deref(),
                Ok(number.as_str()),
                "{prefix}"
            );
        }
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let mut list = DisposableList::default();
        let err = list
            .extend_from_text("f", "# ok\n+4477\nnot-a-number\n")
            .expect_err("bad line");
        assert_eq!(err.line, 3);
    }
}
