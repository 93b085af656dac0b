//! `docs/protocol.md`, for the tests that hold its examples to the code: a block marked
//! `<!-- checked: <name> -->` … `<!-- end -->`, or a sentence of its prose.

/// The document, as built into the tests.
const DOCUMENT: &str = include_str!("../../../docs/protocol.md");

/// The lines of the example block `name`: its fenced text or its table rows, without the
/// fences and blank lines. Panics when the document has no such block (a test that checks a
/// missing example must fail).
pub fn example(name: &str) -> Vec<&'static str> {
    let marker = format!("<!-- checked: {name} -->");
    let start = DOCUMENT
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/protocol.md has no block {marker}"));
    let block = &DOCUMENT[start + marker.len()..];
    let block = &block[..block
        .find("<!-- end -->")
        .unwrap_or_else(|| panic!("docs/protocol.md: {marker} has no end"))];
    block
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("```"))
        .collect()
}

/// Whether the document says `sentence` (whitespace, line breaks included, compared as one
/// space), for examples written in its prose.
pub fn says(sentence: &str) -> bool {
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    words(DOCUMENT).contains(&words(sentence))
}
