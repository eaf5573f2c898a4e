//! `Link` header parsing for Canvas pagination (canvas-api.md §5).

/// Returns the URL of the entry with `rel="<rel>"` in a `Link` header value such as
/// `<https://c/api/v1/x?page=1>; rel="current",<https://c/api/v1/x?page=2>; rel="next"`.
pub fn find_rel(header: &str, rel: &str) -> Option<String> {
    split_entries(header).find_map(|entry| {
        let (target, params) = entry.trim().split_once(';')?;
        let url = target.trim().strip_prefix('<')?.strip_suffix('>')?;
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
        assert_eq!(find_rel("", "next"), None);
        assert_eq!(find_rel("garbage", "next"), None);
    }
}
