//! # lct-text: how prompts become token ids
//!
//! One word rule and one vocabulary type, shared by the model's text encoder (`lct-model`)
//! and the procedural world's captions (`lct-world`), so that a caption written for training
//! tokenises exactly as it will at inference.
//!
//! The rule: text is lower-cased; letters, digits, `-` and `'` build words; whitespace
//! separates; every other character is a token of its own (so an unexpected symbol surfaces as
//! an unknown word instead of vanishing). Id 0 pads; the vocabulary's words take ids 1, 2, ...
//!
//! Must not depend on anything heavier than `thiserror`.

use std::collections::HashMap;

/// Id of the padding token; words start at 1.
pub const PAD_ID: u32 = 0;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TextError {
    #[error("unknown word '{word}' in the prompt; the vocabulary is: {vocabulary}")]
    UnknownWord { word: String, vocabulary: String },
    #[error("token id {0} is outside the vocabulary")]
    UnknownTokenId(u32),
    #[error("vocabulary entry {index} ('{word}') {problem}")]
    BadVocabulary {
        index: usize,
        word: String,
        problem: &'static str,
    },
}

/// Splits text into lower-case words and single punctuation tokens.
pub fn split_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for ch in text.chars() {
        if ch.is_alphanumeric() || matches!(ch, '-' | '\'') {
            word.extend(ch.to_lowercase());
        } else {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            if !ch.is_whitespace() {
                out.push(ch.to_string());
            }
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// A closed vocabulary: each word one token under [`split_words`], no repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocabulary {
    words: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Vocabulary {
    pub fn new<S: AsRef<str>>(words: &[S]) -> Result<Self, TextError> {
        let mut ids = HashMap::with_capacity(words.len());
        for (index, word) in words.iter().enumerate() {
            let word = word.as_ref();
            let bad = |problem| TextError::BadVocabulary {
                index,
                word: word.to_owned(),
                problem,
            };
            if split_words(word) != [word] {
                return Err(bad("is not one lower-case token"));
            }
            if ids.insert(word.to_owned(), index as u32 + 1).is_some() {
                return Err(bad("appears twice"));
            }
        }
        Ok(Self {
            words: words.iter().map(|w| w.as_ref().to_owned()).collect(),
            ids,
        })
    }

    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// Words plus the padding id.
    pub fn len(&self) -> usize {
        self.words.len() + 1
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Token ids of `text`; fails on the first word outside the vocabulary, naming it.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, TextError> {
        split_words(text)
            .into_iter()
            .map(|word| {
                self.ids
                    .get(&word)
                    .copied()
                    .ok_or_else(|| TextError::UnknownWord {
                        word,
                        vocabulary: self.words.join(" "),
                    })
            })
            .collect()
    }

    /// Tokenises and pads with [`PAD_ID`] (or truncates) to exactly `len` tokens.
    pub fn tokenize_padded(&self, text: &str, len: usize) -> Result<Vec<u32>, TextError> {
        let mut ids = self.tokenize(text)?;
        ids.resize(len, PAD_ID);
        Ok(ids)
    }

    /// The words of `ids` joined by single spaces, padding dropped.
    pub fn detokenize(&self, ids: &[u32]) -> Result<String, TextError> {
        let words = ids
            .iter()
            .filter(|&&id| id != PAD_ID)
            .map(|&id| {
                self.words
                    .get(id as usize - 1)
                    .map(String::as_str)
                    .ok_or(TextError::UnknownTokenId(id))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(words.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_punctuation_split_and_lower_case() {
        assert_eq!(
            split_words("[SHOT 2] Close-up of Character 1's hat."),
            [
                "[",
                "shot",
                "2",
                "]",
                "close-up",
                "of",
                "character",
                "1's",
                "hat",
                "."
            ]
        );
    }

    #[test]
    fn tokenize_round_trips_and_names_unknown_words() {
        let v = Vocabulary::new(&["red", "circle", "."]).unwrap();
        assert_eq!(v.tokenize("Red circle.").unwrap(), [1, 2, 3]);
        assert_eq!(v.tokenize_padded("red", 3).unwrap(), [1, PAD_ID, PAD_ID]);
        assert_eq!(v.detokenize(&[1, 2, 0]).unwrap(), "red circle");
        let err = v.tokenize("blue circle").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown word 'blue' in the prompt; the vocabulary is: red circle ."
        );
        assert_eq!(v.detokenize(&[9]), Err(TextError::UnknownTokenId(9)));
    }

    #[test]
    fn bad_vocabularies_are_refused() {
        assert!(Vocabulary::new(&["red", "red"]).is_err());
        assert!(Vocabulary::new(&["two words"]).is_err());
        assert!(Vocabulary::new(&["Red"]).is_err());
    }
}
