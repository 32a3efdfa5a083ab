//! Arabic-aware text normalisation for search and duplicate detection.
//!
//! Free text is always stored exactly as typed; only the search index and the query words go
//! through [`normalize_for_search`]. Both sides are normalised by the same function, so a
//! query written with or without diacritics, any alef form or a taa marbuta finds the same
//! tickets.

/// Folds the spellings people use interchangeably into one form:
/// alef with hamza or madda and alef wasla to bare alef, taa marbuta to haa, alef maqsura to
/// yaa; drops diacritics (tashkeel, Quranic marks, superscript alef) and tatweel; maps
/// Arabic-Indic and Eastern Arabic-Indic digits to ASCII; lower-cases Latin letters; and
/// collapses every run of whitespace or punctuation into a single space.
pub fn normalize_for_search(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    let mut pending_space = false;
    for c in input.chars() {
        let mapped = match c {
            '\u{0622}' | '\u{0623}' | '\u{0625}' | '\u{0671}' | '\u{0672}' | '\u{0673}' => {
                Some('\u{0627}')
            }
            '\u{0629}' => Some('\u{0647}'),
            '\u{0649}' => Some('\u{064A}'),
            '\u{0640}' => None,
            '\u{064B}'..='\u{065F}' | '\u{0670}' | '\u{0610}'..='\u{061A}' => None,
            '\u{06D6}'..='\u{06DC}' | '\u{06DF}'..='\u{06E8}' | '\u{06EA}'..='\u{06ED}' => None,
            '\u{0660}'..='\u{0669}' => char::from_digit(c as u32 - 0x0660, 10),
            '\u{06F0}'..='\u{06F9}' => char::from_digit(c as u32 - 0x06F0, 10),
            // Zero-width joiners and marks carry no meaning for search.
            '\u{200B}'..='\u{200F}' | '\u{FEFF}' => None,
            c if c.is_alphanumeric() => Some(c),
            '-' => Some('-'),
            _ => {
                pending_space = !out.is_empty();
                None
            }
        };
        if let Some(m) = mapped {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.extend(m.to_lowercase());
        }
    }
    out
}

/// Prefixes of the definite article (with the conjunctions and prepositions that fuse with
/// it), longest first: "والمدرسة" is indexed as itself and as "مدرسه".
const ARTICLE_PREFIXES: [&str; 6] = ["وال", "بال", "كال", "فال", "لل", "ال"];

/// The text to index for search: the normalised text, followed by each word that carries the
/// definite article once more without it, so a search for "مدرسة" finds "المدرسة".
/// Query words are only normalised; the expansion on the index side is enough.
pub fn index_terms(input: &str) -> String {
    let normalized = normalize_for_search(input);
    let mut extra = String::new();
    for word in normalized.split(' ') {
        for prefix in ARTICLE_PREFIXES {
            if let Some(stem) = word.strip_prefix(prefix)
                && stem.chars().count() >= 2
            {
                extra.push(' ');
                extra.push_str(stem);
                break;
            }
        }
    }
    normalized + &extra
}

/// The normalised words of a search query, at most `max_words`, each non-empty.
pub fn search_words(query: &str, max_words: usize) -> Vec<String> {
    normalize_for_search(query)
        .split(' ')
        .filter(|w| !w.is_empty())
        .take(max_words)
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_alef_forms_taa_marbuta_and_maqsura() {
        assert_eq!(normalize_for_search("أإآٱا"), "ااااا");
        assert_eq!(normalize_for_search("مدرسة"), normalize_for_search("مدرسه"));
        assert_eq!(
            normalize_for_search("مستشفى"),
            normalize_for_search("مستشفي")
        );
    }

    #[test]
    fn drops_diacritics_and_tatweel() {
        assert_eq!(normalize_for_search("مَدْرَسَةٌ"), "مدرسه");
        assert_eq!(normalize_for_search("شـــارع"), "شارع");
    }

    #[test]
    fn maps_digits_and_latin_case_and_collapses_separators() {
        assert_eq!(
            normalize_for_search("  Pothole،  شارع ١٨ نوفمبر!! "),
            "pothole شارع 18 نوفمبر"
        );
        assert_eq!(normalize_for_search("MCT-2026-000001"), "mct-2026-000001");
    }

    #[test]
    fn index_terms_add_words_without_the_article() {
        assert_eq!(index_terms("أمام المدرسة"), "امام المدرسه مدرسه");
        assert_eq!(
            index_terms("والحديقة للأطفال"),
            "والحديقه للاطفال حديقه اطفال"
        );
        // Too short a stem is not a word.
        assert_eq!(index_terms("الى"), "الي");
    }

    #[test]
    fn search_words_are_bounded() {
        assert_eq!(search_words("a b c d", 2), vec!["a", "b"]);
        assert!(search_words("  ،، ", 8).is_empty());
    }
}
