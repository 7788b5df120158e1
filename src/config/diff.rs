//! What a reload changes: the settings a running daemon applies at once,
//! named for the log, and those it cannot apply before a restart, compared
//! with what it started with (not with the previous file: a reload that
//! restores the running listen address needs no restart).
//!
//! Pure: compares two configs, names keys and sources, never values (a
//! value may be a secret).

use super::Config;

/// Restart-only settings in which `fresh` differs from `started`, the
/// config the daemon runs with since its start.
pub fn restart_only(started: &Config, fresh: &Config) -> Vec<&'static str> {
    let store = |config: &Config| {
        // All of [store] is read at start but these, which apply at once.
        let mut store = config.store.clone();
        store.retain = Default::default();
        store.refusal_log_per_second = 0;
        store
    };
    [
        (
            "server.listen",
            started.server.listen != fresh.server.listen,
        ),
        (
            "server.admin_listen",
            started.server.admin_listen != fresh.server.admin_listen,
        ),
        ("store", store(started) != store(fresh)),
        (
            "dispatch.schedule",
            started.dispatch.schedule != fresh.dispatch.schedule,
        ),
        (
            "dispatch.writer_queue",
            started.dispatch.writer_queue != fresh.dispatch.writer_queue,
        ),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// What applies at once from `old` (the running config) to `fresh`:
/// sources added, removed or changed (by name), destination hosts, dispatch
/// and retention settings, the log filter. Empty when nothing did.
pub fn applied(old: &Config, fresh: &Config) -> Vec<String> {
    let mut changes = Vec::new();
    sources(
        &mut changes,
        "segment_source",
        &old.segment_sources,
        &fresh.segment_sources,
        |source| &source.name,
    );
    sources(
        &mut changes,
        "launchdarkly_source",
        &old.launchdarkly_sources,
        &fresh.launchdarkly_sources,
        |source| &source.name,
    );
    let (a, b) = (&old.dispatch, &fresh.dispatch);
    let keys = [
        (
            "launchdarkly.events_url",
            old.launchdarkly.events_url != fresh.launchdarkly.events_url,
        ),
        ("segment.api_url", old.segment != fresh.segment),
        (
            "dispatch.max_batch_events",
            a.max_batch_events != b.max_batch_events,
        ),
        (
            "dispatch.max_batch_bytes",
            a.max_batch_bytes != b.max_batch_bytes,
        ),
        (
            "dispatch.request_timeout",
            a.request_timeout != b.request_timeout,
        ),
        (
            "dispatch.retry_schedule",
            a.retry_schedule != b.retry_schedule,
        ),
        ("dispatch.give_up_after", a.give_up_after != b.give_up_after),
        ("dispatch.max_in_flight", a.max_in_flight != b.max_in_flight),
        ("dispatch.claim_timeout", a.claim_timeout != b.claim_timeout),
        ("store.retain", old.store.retain != fresh.store.retain),
        (
            "store.refusal_log_per_second",
            old.store.refusal_log_per_second != fresh.store.refusal_log_per_second,
        ),
        (
            "server.log_filter",
            old.server.log_filter != fresh.server.log_filter,
        ),
    ];
    changes.extend(
        keys.into_iter()
            .filter(|(_, changed)| *changed)
            .map(|(key, _)| key.to_owned()),
    );
    changes
}

/// `<kind> added: a`, `<kind> removed: b`, `<kind> changed: c`.
fn sources<S: PartialEq>(
    changes: &mut Vec<String>,
    kind: &str,
    old: &[S],
    fresh: &[S],
    name: impl Fn(&S) -> &String,
) {
    let find = |list: &'_ [S], wanted: &String| list.iter().position(|s| name(s) == wanted);
    let names = |list: Vec<&S>| {
        list.into_iter()
            .map(&name)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    let added: Vec<&S> = fresh
        .iter()
        .filter(|s| find(old, name(s)).is_none())
        .collect();
    let removed: Vec<&S> = old
        .iter()
        .filter(|s| find(fresh, name(s)).is_none())
        .collect();
    let changed: Vec<&S> = fresh
        .iter()
        .filter(|s| find(old, name(s)).is_some_and(|at| old[at] != **s))
        .collect();
    for (verb, list) in [("added", added), ("removed", removed), ("changed", changed)] {
        if !list.is_empty() {
            changes.push(format!("{kind} {verb}: {}", names(list)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::from_toml_with_env(text, "test.toml", &|_| None).unwrap()
    }

    const BASE: &str = "[server]\nlisten = \"127.0.0.1:8088\"\n\
        [[segment_source]]\nname = \"web\"\nwrite_key = \"k1\"\n\
        [[segment_source]]\nname = \"app\"\nwrite_key = \"k2\"\n";

    #[test]
    fn a_reload_names_sources_added_removed_and_changed_and_settings_but_never_values() {
        let old = parse(BASE);
        let fresh = parse(
            "[server]\nlisten = \"127.0.0.1:8088\"\n[launchdarkly]\nevents_url = \"https://relay.example\"\n\
             [dispatch]\nmax_in_flight = 8\n\
             [[segment_source]]\nname = \"web\"\nwrite_key = \"k1-rotated\"\n\
             [[segment_source]]\nname = \"shop\"\nwrite_key = \"k3\"\n",
        );
        let changes = applied(&old, &fresh);
        assert_eq!(
            changes,
            [
                "segment_source added: shop",
                "segment_source removed: app",
                "segment_source changed: web",
                "launchdarkly.events_url",
                "dispatch.max_in_flight",
            ]
        );
        assert!(!changes.join(" ").contains("k1"), "no value is named");
        assert!(applied(&old, &old).is_empty());
    }

    #[test]
    fn restart_only_settings_compare_with_what_the_daemon_started_with() {
        let started = parse(BASE);
        let moved = parse(&BASE.replace("8088", "9999"));
        assert_eq!(restart_only(&started, &moved), ["server.listen"]);
        // Moved back to what is running: nothing needs a restart.
        assert!(restart_only(&started, &parse(BASE)).is_empty());
        // retain applies at once; the reserve does not.
        let retain = parse(&format!("{BASE}[store]\nretain = \"1d\"\n"));
        assert!(restart_only(&started, &retain).is_empty());
        let reserve = parse(&format!("{BASE}[store]\nreserve_bytes = 0\n"));
        assert_eq!(restart_only(&started, &reserve), ["store"]);
    }
}
