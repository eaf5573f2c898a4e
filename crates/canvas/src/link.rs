//! `Link` header parsing for Canvas pagination (canvas-api.md §5).

/// Returns the URL of the entry with `rel="<rel>"` in a `Link` header value such as
/// `<https://c/api/v1/x?page=1>; rel="current",<https://c/api/v1/x?page=2>; rel="next"`.
pub fn find_rel(header: &str, rel: &str) -> Option<String> {
    split_entries(header).find_map(|entry| {
        // `<URL>` first: the URL may hold `;` and `,` (RFC 8288 §3), the parameters follow it.
        let (url, params) = entry.trim().strip_prefix('<')?.split_once('>')?;
        let params = params.trim_start().strip_prefix(';')?;
        let matches = params.split(';').any(|param| {
            let Some((name, value)) = param.split_once('=') else {
                return false;
            };
            name.trim().eq_ignore_ascii_case("rel")
                && value
                    .trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case(rel))
        });
        matches.then(|| url.to_owned())
    })
}

/// Splits on commas that are not inside `<...>` (URLs may contain commas).
fn split_entries(header: &str) -> impl Iterator<Item = &str> {
    let mut entries = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in header.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                entries.push(&header[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    entries.push(&header[start..]);
    entries.into_iter().filter(|e| !e.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_next_among_canvas_entries() {
        let h = "<https://c.test/api/v1/users/1/user_generated_tokens?page=first&per_page=10>; rel=\"current\",\
                 <https://c.test/api/v1/users/1/user_generated_tokens?page=bookmark:WzJd&per_page=10>; rel=\"next\",\
                 <https://c.test/api/v1/users/1/user_generated_tokens?page=first&per_page=10>; rel=\"first\"";
        assert_eq!(
            find_rel(h, "next").as_deref(),
            Some(
                "https://c.test/api/v1/users/1/user_generated_tokens?page=bookmark:WzJd&per_page=10"
            )
        );
        assert_eq!(find_rel(h, "last"), None);
    }

    #[test]
    fn tolerates_spaces_commas_in_urls_and_unquoted_rel() {
        let h = "<https://c.test/x?a=1,2&page=2>; rel=next , <https://c.test/x?page=1>; rel=\"prev first\"";
        assert_eq!(
            find_rel(h, "next").as_deref(),
            Some("https://c.test/x?a=1,2&page=2")
        );
        assert_eq!(
            find_rel(h, "first").as_deref(),
            Some("https://c.test/x?page=1")
        );
        // RFC 8288: the URL may hold `;` too (the parameters come after the `>`).
        assert_eq!(
            find_rel("<https://c.test/x?a=1;b=2>; rel=next", "next").as_deref(),
            Some("https://c.test/x?a=1;b=2")
        );
        assert_eq!(find_rel("", "next"), None);
        assert_eq!(find_rel("garbage", "next"), None);
    }
}

/// Fuzz target: any header, and headers built from entries whose URLs hold the characters that
/// trip naive parsers (`,` `;` `=` `"` and spaces).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::find_rel;

    fn url() -> impl Strategy<Value = String> {
        // What RFC 3986 allows in a URL's path and query (no `<` `>` and no spaces inside).
        "https://c\\.test/api/v1/[a-z_/]{0,20}\\?[a-zA-Z0-9=&;,:\"'%_.~!$()*+-]{0,40}"
    }

    fn rel_value() -> impl Strategy<Value = String> {
        proptest::sample::select(vec!["next", "prev", "first", "last", "current"])
            .prop_map(|r: &str| r.to_owned())
    }

    proptest! {
        #[test]
        fn any_header_is_read_without_panicking(header in "\\PC{0,200}", rel in "\\PC{0,10}") {
            let _ = find_rel(&header, &rel);
        }

        #[test]
        fn every_entry_is_found_by_its_rel(
            entries in proptest::collection::vec((url(), rel_value(), any::<bool>(), " {0,2}"), 1..6)
        ) {
            let header: Vec<String> = entries
                .iter()
                .map(|(url, rel, quoted, space)| {
                    let rel = if *quoted { format!("\"{rel}\"") } else { rel.clone() };
                    format!("{space}<{url}>;{space}rel={rel}")
                })
                .collect();
            let header = header.join(",");
            for (url, rel, _, _) in &entries {
                // The first entry with that rel.
                let first = entries.iter().find(|(_, r, _, _)| r == rel).map(|(u, ..)| u);
                let found = find_rel(&header, rel);
                prop_assert_eq!(found.as_ref(), first, "{} in {}", url, header);
            }
        }
    }
}
