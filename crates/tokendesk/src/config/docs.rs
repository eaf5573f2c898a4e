//! The tables of `docs/configuration.md`, made from the declarations: one table per section,
//! between `<!-- keys: TABLE -->` and `<!-- end keys -->` markers (`top` for the top level).
//! A test checks the file holds exactly what [`tables`] makes; `UPDATE_DOCS=1` rewrites it.

use super::load::env_name;
use super::sections;

/// The marker name of a section.
fn marker(table: Option<&str>) -> &str {
    table.unwrap_or("top")
}

/// The Markdown table of one section.
pub fn table(table: Option<&str>, keys: &[crate::settings::KeyDoc]) -> String {
    let mut out = String::from(
        "| key | type | default | variable | meaning |\n| --- | --- | --- | --- | --- |\n",
    );
    for k in keys {
        out.push_str(&format!(
            "| `{}` | {} | {} | `{}` | {} |\n",
            k.key,
            k.kind,
            k.default,
            env_name(table, &k.key),
            k.doc.replace('|', "\\|")
        ));
    }
    out
}

/// `docs` with every marked table replaced by the one the declarations make; `Err` names a
/// section whose markers are missing.
pub fn tables(docs: &str) -> Result<String, String> {
    let mut out = docs.to_owned();
    for (t, keys) in sections() {
        let begin = format!("<!-- keys: {} -->\n", marker(t));
        let end = "<!-- end keys -->";
        let start = out
            .find(&begin)
            .ok_or_else(|| format!("docs/configuration.md has no `{}` marker", begin.trim()))?
            + begin.len();
        let stop = out[start..]
            .find(end)
            .map(|i| start + i)
            .ok_or_else(|| format!("the `{}` table has no end marker", marker(t)))?;
        out.replace_range(start..stop, &table(t, &keys));
    }
    Ok(out)
}
