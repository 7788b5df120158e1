//! The ingest writer's group commit on PostgreSQL: the requests, events and
//! deliveries of every request in the group, and its refusals, in one
//! transaction. The writer loop itself (`store::writer`) is shared.
//!
//! Dedupe holds across nodes: an event's `(dedupe_key, source)` and a
//! request's `(payload_id, source)` are unique indexes, and rows that would
//! break them are skipped (`ON CONFLICT DO NOTHING`). A node inserting a
//! key another node's open transaction holds waits for that commit, then
//! sees it.

use std::collections::HashMap;

use sqlx::{Connection, PgConnection};

use crate::store::writer::{tally, Committed, Done, Job};

/// Commits `group` in one transaction; answers each job's stored and
/// duplicate counts in order.
pub(in crate::store) async fn commit(
    conn: &mut PgConnection,
    group: &mut [Job],
    refusal_rows: u64,
) -> Result<Done, sqlx::Error> {
    let mut tx = conn.begin().await?;
    // Each job's request id, or `None` when its request was seen before.
    let mut requests: Vec<Option<Option<i64>>> = Vec::with_capacity(group.len());
    for job in group.iter() {
        requests.push(insert_request(&mut tx, job).await?);
    }
    let mut sources = Vec::new();
    let mut protocols = Vec::new();
    let mut keys = Vec::new();
    let mut request_ids = Vec::new();
    let mut kinds = Vec::new();
    let mut received = Vec::new();
    let mut bodies = Vec::new();
    for (job, request) in group.iter_mut().zip(&requests) {
        let Some(request) = request else { continue };
        let batch = &mut job.batch;
        for event in &mut batch.events {
            sources.push(batch.source.clone());
            protocols.push(batch.protocol.as_str());
            keys.push(event.dedupe_key.clone());
            request_ids.push(*request);
            kinds.push(std::mem::take(&mut event.kind));
            received.push(batch.received_at);
            bodies.push(std::mem::take(&mut event.body));
        }
    }
    let stored: Vec<(i64, String, String)> = if keys.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(
            "INSERT INTO events (source, protocol, dedupe_key, request, kind, received_at, body) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], \
                                  $6::int8[], $7::text[]) \
             ON CONFLICT (dedupe_key, source) DO NOTHING RETURNING id, dedupe_key, source",
        )
        .bind(&sources)
        .bind(&protocols)
        .bind(&keys)
        .bind(&request_ids)
        .bind(&kinds)
        .bind(&received)
        .bind(&bodies)
        .fetch_all(&mut *tx)
        .await?
    };
    // The first event of the group with a key is the one stored.
    let mut ids: HashMap<(&str, &str), i64> = stored
        .iter()
        .map(|(id, key, source)| ((source.as_str(), key.as_str()), *id))
        .collect();
    let mut counts = Vec::with_capacity(group.len());
    let mut delivery_events = Vec::new();
    let mut delivery_routes = Vec::new();
    let mut unused_requests = Vec::new();
    let mut at = 0;
    for (job, request) in group.iter().zip(&requests) {
        let batch = &job.batch;
        let Some(request) = request else {
            counts.push(Committed {
                stored: 0,
                duplicates: batch.events.len(),
            });
            continue;
        };
        let mut stored = 0;
        let mut codes: Vec<i64> = batch.routes.iter().map(|route| route.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        for key in &keys[at..at + batch.events.len()] {
            if let Some(id) = ids.remove(&(batch.source.as_str(), key.as_str())) {
                stored += 1;
                for code in &codes {
                    delivery_events.push(id);
                    delivery_routes.push(*code);
                }
            }
        }
        at += batch.events.len();
        if let (Some(request), 0) = (request, stored) {
            unused_requests.push(*request);
        }
        counts.push(Committed {
            stored,
            duplicates: batch.events.len() - stored,
        });
    }
    if !delivery_events.is_empty() {
        sqlx::query(
            "INSERT INTO deliveries (event_id, route, status) \
             SELECT e, r, 'pending' FROM UNNEST($1::int8[], $2::int8[]) AS t (e, r)",
        )
        .bind(&delivery_events)
        .bind(&delivery_routes)
        .execute(&mut *tx)
        .await?;
    }
    if !unused_requests.is_empty() {
        sqlx::query("DELETE FROM requests WHERE id = ANY($1)")
            .bind(&unused_requests)
            .execute(&mut *tx)
            .await?;
    }
    let refusals: Vec<_> = group.iter().flat_map(|job| &job.batch.refusals).collect();
    let evicted = super::refusals::insert(&mut tx, &refusals, refusal_rows).await?;
    super::counts::write(&mut tx, tally(group)).await?;
    tx.commit().await?;
    Ok(Done {
        counts,
        refusals_evicted: evicted,
        next_id: 0,
    })
}

/// Stores the request row of `job` when it has a payload id or metadata:
/// `Some(Some(id))`; `Some(None)` when it needs none; `None` when a request
/// with its payload id is stored already (all its events are duplicates).
async fn insert_request(
    conn: &mut PgConnection,
    job: &Job,
) -> Result<Option<Option<i64>>, sqlx::Error> {
    let batch = &job.batch;
    if batch.events.is_empty() || (batch.meta.is_none() && batch.payload_id.is_none()) {
        return Ok(Some(None));
    }
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO requests (source, payload_id, meta, first_event, event_count) \
         VALUES ($1, $2, $3, 0, $4) \
         ON CONFLICT (payload_id, source) WHERE payload_id IS NOT NULL DO NOTHING RETURNING id",
    )
    .bind(&batch.source)
    .bind(&batch.payload_id)
    .bind(&batch.meta)
    .bind(batch.events.len() as i64)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(id.map(Some))
}
