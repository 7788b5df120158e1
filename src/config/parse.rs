//! TOML text → raw structs, and error messages that name file, line and
//! key but never quote the source line (it may hold a secret).

use std::path::Path;

use super::*;

pub(super) fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })
}

pub(super) fn parse_raw(text: &str, origin: &str) -> Result<raw::File, ConfigError> {
    toml::from_str(text).map_err(|e| {
        // Not `e.to_string()`: its snippet quotes the source line.
        let at = e
            .span()
            .map(|span| location(text, span.start, None))
            .unwrap_or_default();
        ConfigError::Parse(format!("{origin}{at}: {}", redact_strings(e.message())))
    })
}

/// Drops the value from serde's `invalid type: string "…", expected …`, in
/// case a secret was pasted into a non-secret field.
pub(super) fn redact_strings(message: &str) -> String {
    let Some(start) = message.find("string \"") else {
        return message.to_owned();
    };
    let value_start = start + "string ".len();
    match message[value_start..].rfind("\", expected") {
        Some(end) => format!(
            "{}{}",
            &message[..value_start - 1],
            &message[value_start + end + 1..]
        ),
        None => message[..start + "string".len()].to_owned(),
    }
}

/// `": line L, column C (key)"` for byte `offset` of `text`. `key` is the
/// known key; without one, the key is guessed from the text before `=` on
/// that line and the nearest table header, keeping only bare-key characters
/// so a value can never leak into the message.
pub(super) fn location(text: &str, offset: usize, key: Option<&str>) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let key = match key {
        Some(key) => Some(key.to_owned()),
        None => guess_key(text, line_start),
    };
    match key {
        Some(key) => format!(": line {line_no}, column {column} ({key})"),
        None => format!(": line {line_no}, column {column}"),
    }
}

pub(super) fn guess_key(text: &str, line_start: usize) -> Option<String> {
    let line = text[line_start..].lines().next().unwrap_or("");
    if let Some(header) = table_header(line) {
        return Some(header.to_owned());
    }
    let header = text[..line_start].lines().rev().find_map(table_header);
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| is_bare_key(k));
    match (header, key) {
        (Some(h), Some(k)) => Some(format!("{h}.{k}")),
        (Some(h), None) => Some(h.to_owned()),
        (None, Some(k)) => Some(k.to_owned()),
        (None, None) => None,
    }
}

pub(super) fn table_header(line: &str) -> Option<&str> {
    // Headers often carry a trailing comment (the architecture example does).
    let line = line.split('#').next().unwrap_or("").trim();
    let inner = line
        .strip_prefix("[[")
        .and_then(|l| l.strip_suffix("]]"))
        .or_else(|| line.strip_prefix('[').and_then(|l| l.strip_suffix(']')))?
        .trim();
    is_bare_key(inner).then_some(inner)
}

pub(super) fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}
