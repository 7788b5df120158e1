//! The refusal log as operators see it: `ldbridge refusals`,
//! `GET /api/refusals`, and the "refused at ingest" lines of `explain`.
//!
//! One JSON form (`--json` and the API) and one table; reads go through
//! `store::refusals`.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::truncate;
use crate::{
    clock,
    store::{
        refusals::{self, Refusal, RefusalFilter},
        Store, StoreError,
    },
};

/// `ldbridge refusals`: matching refusals, newest first.
pub async fn list(store: &Store, filter: &RefusalFilter) -> Result<Vec<Refusal>, StoreError> {
    refusals::list(store, filter).await
}

/// Refusals of messages whose `messageId` (or payload id) is `id`.
pub async fn of_message(store: &Store, id: &str) -> Result<Vec<Refusal>, StoreError> {
    let filter = RefusalFilter {
        message_id: Some(id.to_owned()),
        limit: 100,
        ..RefusalFilter::default()
    };
    refusals::list(store, &filter).await
}

/// "unknown key" for a refusal with no known source.
fn source_name(refusal: &Refusal) -> &str {
    refusal.refusal.source.as_deref().unwrap_or("unknown key")
}

/// The sentence `explain` prints for a refused message.
pub fn sentence(refusal: &Refusal) -> String {
    let r = &refusal.refusal;
    let place = r.item.map_or_else(String::new, |item| {
        format!(" (message {item} of its request)")
    });
    format!(
        "refused at ingest at {} on {}{place}: {} [{}]",
        clock::format_ms(r.at),
        r.path,
        r.reason,
        r.code
    )
}

/// One refusal as `--json` and the API show it.
pub fn json(refusal: &Refusal) -> Value {
    let r = &refusal.refusal;
    json!({
        "id": refusal.id,
        "at": clock::format_ms(r.at),
        "source": r.source,
        "path": r.path,
        "index": r.item,
        "status": r.status,
        "reason": r.code,
        "message": r.reason,
        "message_id": r.message_id,
        "excerpt": r.excerpt,
    })
}

/// The refusal log as a table within 100 columns; below each row, the
/// message id (if any) and the reason.
pub fn table(refusals: &[Refusal]) -> String {
    let mut out = format!(
        "{:<24}  {:<12}  {:<24}  {:>5}  {:<20}\n",
        "AT", "SOURCE", "PATH", "INDEX", "REASON"
    );
    for refusal in refusals {
        let r = &refusal.refusal;
        let _ = writeln!(
            out,
            "{:<24}  {:<12}  {:<24}  {:>5}  {:<20}",
            clock::format_ms(r.at),
            truncate(source_name(refusal), 12),
            truncate(&r.path, 24),
            r.item.map_or("-".to_owned(), |item| item.to_string()),
            truncate(&r.code, 20),
        );
        let detail = match &r.message_id {
            Some(id) => format!("{id}: {}", r.reason),
            None => r.reason.clone(),
        };
        let _ = writeln!(out, "  └ {}", truncate(&detail, 96));
    }
    if refusals.is_empty() {
        out.push_str("(no refusals)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::accepted::NewRefusal;

    fn refusal(item: Option<i64>, source: Option<&str>) -> Refusal {
        Refusal {
            id: 7,
            refusal: NewRefusal {
                at: 1_715_679_087_412,
                source: source.map(str::to_owned),
                path: "/v1/batch".to_owned(),
                item,
                status: 200,
                code: "missing_event".to_owned(),
                reason: "batch[3].event: track calls need a non-empty event name".to_owned(),
                message_id: Some("m-3".to_owned()),
                excerpt: "{}".to_owned(),
            },
        }
    }

    #[test]
    fn explain_says_when_where_and_why_a_message_was_refused() {
        assert_eq!(
            sentence(&refusal(Some(3), Some("web"))),
            "refused at ingest at 2024-05-14T09:31:27.412Z on /v1/batch (message 3 of its request): \
             batch[3].event: track calls need a non-empty event name [missing_event]"
        );
    }

    #[test]
    fn the_table_names_an_unknown_key_and_puts_the_reason_under_its_row() {
        let text = table(&[refusal(None, None)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].contains("unknown key"), "{text}");
        assert!(
            lines[2].contains("m-3: batch[3].event: track calls need"),
            "{text}"
        );
        assert!(
            lines.iter().all(|line| line.chars().count() <= 100),
            "{text}"
        );
        assert_eq!(table(&[]).lines().nth(1), Some("(no refusals)"));
    }
}
